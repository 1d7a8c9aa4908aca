"""Per-vertex errors and the three measures of a statistical shape model.

Compactness, generalisation and specificity as defined for 3D morphable models by
Styner et al., "Evaluation of 3D correspondence methods for model building"
(IPMI 2003), and used for face models by Booth et al., "Large Scale 3D Morphable
Models" (IJCV 2018):

- **compactness**: the fraction of the training variance the first ``k``
  components (or latent dimensions) capture;
- **generalisation**: how well the model reconstructs faces it was not trained on,
  against the number of components / the latent size;
- **specificity**: how close random samples of the model are to a real face, here
  the mean per-vertex distance of a sample to its nearest training face.

Distances are Euclidean per vertex, in data units (millimetres for the built-in
templates and synthetic faces).
"""

from __future__ import annotations

import math
import operator
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ._checks import check_int, check_tensor

__all__ = [
    "per_vertex_error",
    "error_summary",
    "compactness",
    "reconstruct",
    "generalisation",
    "nearest_face_distance",
    "specificity",
]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: Relative shortfall of a given total variance below the sum of the variances accepted as rounding.
_TOTAL_ROUNDING = 1e-6


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    if isinstance(x, torch.Tensor):
        return x
    raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")


def per_vertex_error(pred, target):
    """Euclidean distance between corresponding vertices.

    .. math:: e_{b,v} = \\lVert \\hat{\\mathbf{x}}_{b,v} - \\mathbf{x}_{b,v} \\rVert_2

    Args:
        pred: predicted vertices (torch tensor or numpy array).
        target: ground truth, same shape as ``pred`` (or broadcastable ``(V, 3)``).

    Returns:
        The errors, as a numpy array if ``pred`` is one, else a tensor.

    Shapes:
        ``(B, V, 3), (B, V, 3) -> (B, V)``; ``(V, 3), (V, 3) -> (V,)``
    """
    is_numpy = isinstance(pred, np.ndarray)
    p, t = _as_tensor(pred, "pred"), _as_tensor(target, "target")
    check_tensor(p, "pred", dtype=_FLOAT_DTYPES)
    check_tensor(t, "target", dtype=_FLOAT_DTYPES)
    if p.dim() not in (2, 3) or p.shape[-1] != 3:
        raise ValueError(f"pred: expected shape (B, V, 3) or (V, 3), got {tuple(p.shape)}")
    if t.shape != p.shape and t.shape != p.shape[-2:]:
        raise ValueError(f"target: expected shape {tuple(p.shape)} (as pred) or {tuple(p.shape[-2:])}, got {tuple(t.shape)}")
    if t.dtype != p.dtype or t.device != p.device:
        t = t.to(dtype=torch.promote_types(p.dtype, t.dtype), device=p.device)
        p = p.to(t.dtype)
    err = torch.linalg.vector_norm(p - t, dim=-1)  # (B, V)
    return err.numpy(force=True) if is_numpy else err


def error_summary(pred, target, mask=None) -> dict[str, float]:
    """Statistics of :func:`per_vertex_error` over all samples and vertices.

    Args:
        pred, target: as for :func:`per_vertex_error`.
        mask: optional ``(V,)`` bool array/tensor; only these vertices count
            (e.g. the face region without the neck). Default ``None``: all.

    Returns:
        ``{"mean", "median", "std", "max", "count"}`` (population std; ``count`` is
        the number of vertex errors summarised).

    Shapes:
        ``(B, V, 3), (B, V, 3), (V,) -> dict``
    """
    err = per_vertex_error(_as_tensor(pred, "pred"), _as_tensor(target, "target"))  # (B, V)
    if mask is not None:
        m = _as_tensor(mask, "mask")
        check_tensor(m, "mask", shape=(err.shape[-1],), dtype=torch.bool)
        err = err[..., m.to(err.device)]  # (B, V_mask)
    flat = err.detach().reshape(-1).to("cpu", torch.float64).numpy()  # (B*V,)
    if flat.size == 0:
        raise ValueError("error_summary: expected at least one vertex error, got none (empty input or mask)")
    return {
        "mean": float(flat.mean()),
        "median": float(np.median(flat)),
        "std": float(flat.std()),
        "max": float(flat.max()),
        "count": int(flat.size),
    }


def compactness(source, total_variance: float | None = None) -> np.ndarray:
    """Cumulative explained variance against the number of components.

    Entry ``k - 1`` is the fraction of the variance captured by the first ``k``
    components: ``sum_{i<k} lambda_i / total``.

    Args:
        source: one of
            - a :class:`~mesh_decoder.pca.PCAModel`: its eigenvalues over the total
              variance of its training data, i.e. its ``explained_variance_ratio``
              (so the curve ends below 1 when ``K`` is smaller than the data's rank);
            - a 1-D array of variances (eigenvalues, or per-dimension latent
              variances), sorted here in decreasing order;
            - a 2-D ``(N, Z)`` array of latent codes of an autoencoder: the
              eigenvalues of their sample covariance (PCA of the latent space, which
              does not depend on how the latent axes are rotated and equals the
              sorted per-dimension variances when the codes are uncorrelated).
        total_variance: denominator; ``None`` (default) uses the PCA model's total
            variance, or the sum of the given variances. A value given must be
            finite and at least the sum of the variances (up to a relative rounding
            of 1e-6), else ``ValueError``: the fractions would pass 1.

    Returns:
        ``(K,)`` float64 numpy array, non-decreasing.
    """
    if hasattr(source, "explained_variance") and hasattr(source, "total_variance"):
        if total_variance is None and hasattr(source, "explained_variance_ratio"):
            # the model's own ratios: its float16 variances and total may have overflowed to infinity
            ratio = source.explained_variance_ratio.detach().to("cpu", torch.float64).numpy()
            return np.cumsum(ratio)
        variances = source.explained_variance.detach().to("cpu", torch.float64).numpy()
        if total_variance is None:
            total_variance = float(source.total_variance)
    else:
        arr = _as_tensor(source, "source").detach().to("cpu", torch.float64)
        if arr.dim() == 2:
            if arr.shape[0] < 2:
                raise ValueError(f"source: expected at least 2 latent codes, got {arr.shape[0]}")
            bad = ~torch.isfinite(arr).all(dim=1)  # (N,)
            if bool(bad.any()):
                raise ValueError(f"source: expected finite latent codes, found NaN or infinity in {int(bad.sum())} "
                                 f"of {arr.shape[0]} codes (first: code {int(bad.nonzero()[0])})")
            centred = arr - arr.mean(dim=0)  # (N, Z)
            cov = centred.T @ centred / (arr.shape[0] - 1)  # (Z, Z)
            variances = torch.linalg.eigvalsh(cov).clamp_min(0).numpy()
        elif arr.dim() == 1:
            if not bool(torch.isfinite(arr).all()) or bool((arr < 0).any()):
                raise ValueError(f"source: expected finite non-negative variances, got {arr.tolist()[:8]}")
            variances = arr.numpy()
        else:
            raise ValueError(f"source: expected a PCA model, (K,) variances or (N, Z) latents, got shape {tuple(arr.shape)}")
        variances = np.sort(variances)[::-1]
    captured = float(np.sum(variances))
    total = captured if total_variance is None else float(total_variance)
    if not total > 0:
        raise ValueError(f"total_variance: expected a positive value, got {total}")
    if total_variance is not None and not (math.isfinite(total) and total >= captured * (1.0 - _TOTAL_ROUNDING)):
        raise ValueError(f"total_variance: expected a finite value at least the sum of the {len(variances)} "
                         f"variances, {captured:.6g} (a smaller total gives fractions above 1), got {total:.6g}")
    return np.cumsum(variances) / total


def reconstruct(model, vertices: torch.Tensor) -> torch.Tensor:
    """The model's reconstruction of ``vertices``: ``model.reconstruct(x)`` if it has
    one, else ``model.decode(model.encode(x))``.

    Shapes:
        ``(B, V, 3) -> (B, V, 3)``
    """
    if hasattr(model, "reconstruct"):
        out = model.reconstruct(vertices)
    elif hasattr(model, "encode") and hasattr(model, "decode"):
        out = model.decode(model.encode(vertices))
    else:
        raise TypeError(f"model: expected an object with reconstruct() or encode() and decode(), got {type(model).__name__}")
    return out.vertices if hasattr(out, "vertices") else out


def _model_dtype(model, default: torch.dtype) -> tuple[torch.dtype, torch.device]:
    if isinstance(model, torch.nn.Module):
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                return t.dtype, t.device
    return default, torch.device("cpu")


def _mean_reconstruction_error(model, test: torch.Tensor, batch_size: int) -> float:
    dtype, device = _model_dtype(model, test.dtype)
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, test.shape[0], batch_size):
            x = test[start:start + batch_size].to(dtype=dtype, device=device)  # (b, V, 3)
            err = per_vertex_error(reconstruct(model, x), x)  # (b, V)
            total += float(err.to(torch.float64).sum())
            count += err.numel()
    return total / count


def _positive_ints(values, name: str) -> list[int]:
    """``values`` as a non-empty list of ints >= 1 (a float such as 2.5 is refused, not truncated)."""
    try:
        items = [] if isinstance(values, (str, bytes)) else list(values)
    except TypeError:
        items = []
    out = []
    for k in items:
        try:
            out.append(-1 if isinstance(k, bool) else operator.index(k))
        except TypeError:
            out.append(-1)
    if not out or min(out) < 1:
        raise ValueError(f"{name}: expected a non-empty list of positive integers, got {values!r}")
    return out


def generalisation(
    models,
    train,
    test,
    sizes: Sequence[int],
    *,
    batch_size: int = 256,
) -> dict[int, float]:
    """Mean per-vertex reconstruction error on held-out faces against model size.

    Args:
        models: how to get a model of each size ``k``:
            - the :class:`~mesh_decoder.pca.PCAModel` class: fitted once on ``train``
              with ``max(sizes)`` components, then truncated to each ``k``;
            - a fitted ``PCAModel`` instance: truncated to each ``k`` (it must have at
              least ``max(sizes)`` components; ``train`` is not used);
            - a mapping ``k -> model``, models already trained;
            - a callable ``fit_fn(train, k) -> model``.
            Each model reconstructs with :func:`reconstruct`.
        train: ``(N, V, 3)`` training faces (torch or numpy).
        test: ``(M, V, 3)`` held-out faces.
        sizes: numbers of components / latent sizes to evaluate.
        batch_size: test faces reconstructed at a time, at least 1 (default 256).

    Returns:
        ``{k: mean error}`` in data units, in the order of ``sizes``.

    Raises:
        ValueError: an empty test set, ``batch_size`` below 1, or bad ``sizes``.

    Shapes:
        ``(N, V, 3), (M, V, 3) -> {k: float}``
    """
    from .pca import PCAModel

    test_t = _as_tensor(test, "test")
    check_tensor(test_t, "test", shape=("M", "V", 3), dtype=_FLOAT_DTYPES)
    if test_t.shape[0] == 0 or test_t.shape[1] == 0:
        raise ValueError(f"test: expected at least one held-out face with vertices, got shape {tuple(test_t.shape)}")
    check_int(batch_size, "batch_size", 1)
    sizes = _positive_ints(sizes, "sizes")
    if isinstance(models, type) and issubclass(models, PCAModel):
        train_t = _as_tensor(train, "train")
        check_tensor(train_t, "train", shape=("N", test_t.shape[1], 3), dtype=_FLOAT_DTYPES)
        models = models.fit(train_t, num_components=max(sizes))
    if isinstance(models, PCAModel):
        if max(sizes) > models.latent_size:
            raise ValueError(f"sizes: expected at most the model's {models.latent_size} components, got {max(sizes)}")
        get = models.truncate
    elif isinstance(models, Mapping):
        missing = [k for k in sizes if k not in models]
        if missing:
            raise ValueError(f"models: expected a model for every size in {sizes}, missing {missing}")
        get = models.__getitem__
    elif callable(models):
        def get(k, _fit=models):
            return _fit(train, k)
    else:
        raise TypeError(f"models: expected PCAModel, a PCAModel, a mapping or a callable, got {type(models).__name__}")
    return {k: _mean_reconstruction_error(get(k), test_t, batch_size) for k in sizes}


def nearest_face_distance(
    samples,
    train,
    *,
    chunk_elements: int = 2**24,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each sample, the training face of smallest mean per-vertex distance.

    .. math::
        d(\\mathbf{s}) = \\min_j \\frac{1}{V} \\sum_v \\lVert \\mathbf{s}_v - \\mathbf{t}_{j,v} \\rVert_2

    Computed by broadcasting over blocks of samples x training faces so that at
    most about ``chunk_elements`` differences are alive at once.

    Args:
        samples: ``(S, V, 3)``.
        train: ``(N, V, 3)``.
        chunk_elements: memory budget of one block, in scalars (default 2^24).

    Returns:
        ``distance (S,)`` and ``index (S,)`` of the nearest training face (int64). A
        sample with a NaN coordinate gets distance NaN.

    Raises:
        ValueError: no training faces, or a training face with NaN or infinite values.

    Shapes:
        ``(S, V, 3), (N, V, 3) -> (S,), (S,)``
    """
    s = _as_tensor(samples, "samples")
    t = _as_tensor(train, "train")
    check_tensor(s, "samples", shape=("S", "V", 3), dtype=_FLOAT_DTYPES)
    check_tensor(t, "train", shape=("N", s.shape[1], 3), dtype=_FLOAT_DTYPES)
    if t.shape[0] == 0:
        raise ValueError("train: expected at least one training face, got 0")
    bad = ~torch.isfinite(t).flatten(1).all(dim=1)  # (N,)
    if bool(bad.any()):
        raise ValueError(f"train: expected finite vertices, found NaN or infinity in {int(bad.sum())} of "
                         f"{t.shape[0]} faces (first: face {int(bad.nonzero()[0])})")
    dtype = torch.promote_types(s.dtype, t.dtype)
    s, t = s.to(dtype), t.to(dtype=dtype, device=s.device)
    v = s.shape[1]
    per_pair = 3 * v  # scalars of one (sample, face) difference
    block_s = max(1, min(s.shape[0], math.isqrt(max(1, chunk_elements // per_pair))))
    block_t = max(1, min(t.shape[0], chunk_elements // (per_pair * block_s)))
    best = torch.full((s.shape[0],), math.inf, dtype=dtype, device=s.device)
    best_index = torch.zeros(s.shape[0], dtype=torch.int64, device=s.device)
    for i in range(0, s.shape[0], block_s):
        si = s[i:i + block_s].unsqueeze(1)  # (bs, 1, V, 3)
        for j in range(0, t.shape[0], block_t):
            tj = t[j:j + block_t].unsqueeze(0)  # (1, bt, V, 3)
            d = torch.linalg.vector_norm(si - tj, dim=-1).mean(dim=-1)  # (bs, bt)
            value, arg = d.min(dim=1)  # (bs,); NaN for a sample with NaN
            old = best[i:i + block_s]
            better = (value < old) | (value.isnan() & ~old.isnan())  # a NaN sample stays NaN
            best[i:i + block_s] = torch.where(better, value, best[i:i + block_s])
            best_index[i:i + block_s] = torch.where(better, arg + j, best_index[i:i + block_s])
    return best, best_index


def specificity(
    model,
    train,
    num_samples: int = 1000,
    generator: torch.Generator | None = None,
    *,
    batch_size: int = 256,
    chunk_elements: int = 2**24,
    return_all: bool = False,
) -> float | dict[str, Any]:
    """Mean distance of random model samples to their nearest training face.

    Args:
        model: anything with ``sample(n, generator=None)`` returning ``(n, V, 3)``
            vertices (or an output with a ``vertices`` field): a PCA model, an
            autoencoder with a latent prior, ...
        train: ``(N, V, 3)`` training faces.
        num_samples: ``n`` (default 1000).
        generator: random generator passed to ``model.sample``.
        batch_size: samples decoded per call (default 256). A model with
            ``sample_latents(n, generator)`` and ``decode(z)`` (the autoencoder, PCA) draws
            all ``n`` latents first, so the samples do not depend on ``batch_size``; one with
            ``sample`` alone is drawn batch by batch, and another ``batch_size`` then draws
            other samples. ``evaluate`` uses 100 samples.
        chunk_elements: see :func:`nearest_face_distance`.
        return_all: if True, return ``{"mean", "std", "distances" (n,), "nearest" (n,)}``
            instead of the mean alone.

    Returns:
        The mean nearest-face distance (data units), or the dict above.
    """
    if not hasattr(model, "sample"):
        raise TypeError(f"model: expected an object with sample(n, generator), got {type(model).__name__}")
    check_int(num_samples, "num_samples", 1)
    check_int(batch_size, "batch_size", 1)
    t = _as_tensor(train, "train")
    distances, nearest = [], []
    latents = None
    if callable(getattr(model, "sample_latents", None)) and callable(getattr(model, "decode", None)):
        latents = model.sample_latents(int(num_samples), generator)  # (n, Z): one draw, whatever batch_size
    with torch.no_grad():
        for start in range(0, int(num_samples), batch_size):
            if latents is not None:
                samples = model.decode(latents[start:start + batch_size])  # (b, V, 3)
            else:
                samples = model.sample(min(batch_size, int(num_samples) - start), generator=generator)  # (b, V, 3)
            if hasattr(samples, "vertices"):
                samples = samples.vertices
            d, i = nearest_face_distance(samples.detach(), t.to(samples.device), chunk_elements=chunk_elements)
            distances.append(d)
            nearest.append(i)
    distances, nearest = torch.cat(distances), torch.cat(nearest)  # (n,), (n,)
    mean = float(distances.to(torch.float64).mean())
    if not return_all:
        return mean
    return {"mean": mean, "std": float(distances.to(torch.float64).std(correction=0)),
            "distances": distances, "nearest": nearest}

