"""The linear 3D morphable model: principal component analysis of registered meshes.

Blanz & Vetter, "A Morphable Model for the Synthesis of 3D Faces", SIGGRAPH 1999.
A face is the mean plus a linear combination of the principal directions of the
training faces' vertex positions, with coefficients measured in standard
deviations of the training distribution and a standard normal prior on them.
Shape and colour are two separate linear models with their own coefficients,
as in the original paper (``alpha`` for shape, ``beta`` for texture).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ._checks import check_int, check_tensor, int_value
from ._random import standard_normal_rows

__all__ = ["PCAModel", "PCAOutput", "randomized_svd"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
#: Dtypes without LAPACK kernels (SVD, QR): fitted in float32, the results cast back.
_HALF_DTYPES = (torch.float16, torch.bfloat16)
_DTYPE_NAMES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}

#: ``method="auto"`` uses the randomized SVD from this many data-matrix entries on ...
_AUTO_MIN_ENTRIES = 10_000_000
#: ... and only when ``K + oversample`` is below this fraction of ``min(N, 3V)``.
_AUTO_MAX_RANK_FRACTION = 0.25


class PCAOutput(NamedTuple):
    """Shape and colour decoded together by :meth:`PCAModel.decode_joint`.

    Attributes:
        vertices: ``(B, V, 3)`` positions in data units (millimetres for the built-in data).
        colors: ``(B, V, 3)`` per-vertex RGB in data units (``[0, 1]`` for the built-in
            data; linear combinations are not clamped, so values may leave that range).
    """

    vertices: torch.Tensor
    colors: torch.Tensor


def randomized_svd(
    a: torch.Tensor,
    rank: int,
    *,
    oversample: int = 10,
    n_iter: int = 7,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Leading singular triplets by randomized range finding with power iterations.

    Halko, Martinsson & Tropp, "Finding structure with randomness", SIAM Review 2011
    (Algorithm 4.4, randomized subspace iteration, followed by Algorithm 5.1):

    .. math::
        Y = A\\Omega,\\quad Q = \\mathrm{qr}(Y),\\quad
        Q \\leftarrow \\mathrm{qr}(A\\,\\mathrm{qr}(A^\\top Q))\\ (n_{iter}\\text{ times}),\\quad
        B = Q^\\top A = \\tilde U S V^\\top,\\quad U = Q\\tilde U.

    Args:
        a: the ``(M, N)`` matrix.
        rank: number ``k`` of singular triplets returned.
        oversample: extra random directions ``p`` (default 10).
        n_iter: power iterations (default 7); each one re-orthonormalises, so the
            result stays accurate for slowly decaying spectra.
        generator: random generator for the test matrix ``Omega``. ``None`` uses a
            fresh generator seeded with 0, so the result is deterministic.

    Returns:
        ``U (M, k)``, ``S (k,)`` (descending), ``Vh (k, N)``, in ``a``'s dtype (float16
        and bfloat16 are computed in float32).

    Shapes:
        ``(M, N) -> (M, k), (k,), (k, N)``
    """
    check_tensor(a, "a", shape=("M", "N"), dtype=_FLOAT_DTYPES)
    m, n = a.shape
    rank = int_value(rank, "rank", f"an integer in [1, min(M, N) = {min(m, n)}]")
    if not 1 <= rank <= min(m, n):
        raise ValueError(f"rank: expected an integer in [1, min(M, N) = {min(m, n)}], got {rank}")
    check_int(oversample, "oversample", 0)
    check_int(n_iter, "n_iter", 0)
    _check_generator(generator)
    if not bool(torch.isfinite(a).all()):
        bad = int((~torch.isfinite(a)).sum())
        raise ValueError(f"a: expected finite values, found NaN or infinity in {bad} entries")
    if a.dtype in _HALF_DTYPES:
        u, s, vh = randomized_svd(a.float(), rank, oversample=oversample, n_iter=n_iter, generator=generator)
        return u.to(a.dtype), s.to(a.dtype), vh.to(a.dtype)
    width = min(rank + oversample, m, n)
    if generator is None:
        generator = torch.Generator(device=a.device).manual_seed(0)
    omega = torch.randn(n, width, generator=generator, device=generator.device, dtype=a.dtype).to(a.device)  # (N, l)
    q, _ = torch.linalg.qr(a @ omega)  # (M, l)
    for _ in range(n_iter):
        z, _ = torch.linalg.qr(a.T @ q)  # (N, l)
        q, _ = torch.linalg.qr(a @ z)  # (M, l)
    b = q.T @ a  # (l, N)
    ub, s, vh = _thin_svd(b)  # (l, l), (l,), (l, N)
    return (q @ ub)[:, :rank], s[:rank], vh[:rank]


def _thin_svd(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.linalg.svd(a, full_matrices=False)`` computed in float64 (on the CPU for MPS, which lacks it)
    and returned in ``a``'s dtype: a float32 SVD of a wide matrix gives rows of ``vh`` off orthonormal by more
    than float32 rounding (2e-4 at 150,000 columns of face data), a float64 one rows that rounding keeps.

    Shapes: ``(M, N) -> (M, K), (K,), (K, N)`` with ``K = min(M, N)``.
    """
    wide = a.to("cpu" if a.device.type == "mps" else a.device, torch.float64)
    u, s, vh = torch.linalg.svd(wide, full_matrices=False)
    return u.to(a.device, a.dtype), s.to(a.device, a.dtype), vh.to(a.device, a.dtype)


def _check_generator(generator) -> None:
    """``None`` or a ``torch.Generator`` (``TypeError`` naming the value otherwise)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator: expected a torch.Generator or None, "
                        f"got {generator!r} ({type(generator).__name__})")


def _flip_signs(components: torch.Tensor) -> torch.Tensor:
    """Make each row's entry of largest magnitude positive (a deterministic sign)."""
    pivot = components.abs().argmax(dim=1, keepdim=True)  # (K, 1)
    signs = torch.sign(components.gather(1, pivot))  # (K, 1)
    signs[signs == 0] = 1
    return components * signs


def _fit_linear(
    data: torch.Tensor, num_components: int, method: str, generator, oversample: int, n_iter: int, name: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PCA of ``data (N, D)``: mean ``(D,)``, components ``(K, D)``, singular values ``(K,)``, total variance."""
    n, d = data.shape
    max_k = min(n - 1, d)
    if isinstance(num_components, bool) or not isinstance(num_components, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(num_components).__name__}")
    num_components = int(num_components)
    if not 1 <= num_components <= max_k:
        raise ValueError(
            f"{name}: expected an integer in [1, min(N - 1, 3V) = {max_k}] for N = {n} samples "
            f"of dimension {d}, got {num_components}"
        )
    if method not in ("auto", "svd", "randomized"):
        raise ValueError(f"method: expected 'auto', 'svd' or 'randomized', got {method!r}")
    if method == "auto":
        small_rank = num_components + oversample < _AUTO_MAX_RANK_FRACTION * min(n, d)
        method = "randomized" if n * d >= _AUTO_MIN_ENTRIES and small_rank else "svd"
    mean = data.mean(dim=0)  # (D,)
    centred = data - mean  # (N, D)
    total = centred.square().sum() / (n - 1)
    if method == "svd":
        _, s, vh = _thin_svd(centred)  # (min(N,D),), (min(N,D), D)
        s, vh = s[:num_components], vh[:num_components]
    else:
        _, s, vh = randomized_svd(centred, num_components, oversample=oversample, n_iter=n_iter, generator=generator)
    # Directions whose spread is rounding noise (data of lower rank than K, as numpy's matrix_rank tells them)
    # were kept silently with standard deviations near 0: coefficients in standard deviations (encode,
    # log_prior) blew up to 1e27. They still reconstruct and count in compactness, so they are kept, and said.
    floor = float(s[0]) * max(n, d) * torch.finfo(s.dtype).eps
    if float(s[-1]) <= floor:
        rank = int((s > floor).sum())
        what = (f"the {n} samples are all the same up to rounding" if rank == 0 else
                f"the {n} samples have numerical rank {rank}: singular value {rank + 1} is {float(s[rank]):.3g}, "
                f"below the rounding floor {floor:.3g}")
        warnings.warn(f"{name} {num_components}: {what}; components {rank + 1} to {num_components} are noise, and "
                      "their coefficients (encode, log_prior) meaningless: fit at most "
                      f"{max(rank, 1)}", stacklevel=3)
    return mean, _flip_signs(vh).contiguous(), s, total


#: Largest |C C^T - I| accepted of a basis given to :meth:`PCAModel.from_tensors`, per dtype (rounding).
_ORTHONORMAL_ATOL = {torch.float64: 1e-8, torch.float32: 1e-4}


def _check_basis(prefix: str, components: torch.Tensor, stddev: torch.Tensor) -> None:
    """Orthonormal rows and non-increasing standard deviations: a basis scaled by its standard deviations
    was taken, and encode was then no projection (coefficients off by the scale)."""
    if components.shape[0]:
        gram = components.to(torch.float64) @ components.to(torch.float64).T  # (K, K)
        off = float((gram - torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)).abs().max())
        atol = _ORTHONORMAL_ATOL.get(components.dtype, 5e-2)
        if not off <= atol:
            norms = gram.diagonal().sqrt()
            raise ValueError(
                f"{prefix}components: expected orthonormal rows (|C C^T - I| at most {atol:g}), got {off:.3g} (row "
                f"norms {float(norms.min()):.4g} to {float(norms.max()):.4g}): rows scaled by their standard "
                "deviations? divide each by its stddev")
    if stddev.numel() > 1 and bool((stddev[1:] > stddev[:-1]).any()):
        i = int(torch.nonzero(stddev[1:] > stddev[:-1])[0]) + 1
        raise ValueError(f"{prefix}stddev: expected non-increasing values (components in order of variance), "
                         f"got {float(stddev[i]):.4g} after {float(stddev[i - 1]):.4g} at component {i}")


def _as_float_tensor(x, name: str) -> torch.Tensor:
    """``x`` as an ``(N, V, 3)`` floating tensor of finite values (training data)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    check_tensor(x, name, shape=("N", "V", 3), dtype=_FLOAT_DTYPES)
    bad = ~torch.isfinite(x).all(dim=-1)  # (N, V)
    if bool(bad.any()):
        mesh, vertex = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name}: expected finite values, found NaN or infinity at {int(bad.sum())} vertices "
                         f"(first: mesh {mesh}, vertex {vertex})")
    return x


class PCAModel(nn.Module):
    r"""The linear 3DMM of Blanz & Vetter (SIGGRAPH 1999), as a decoder.

    .. math::
        \mathbf{x}(\mathbf{z}) = \bar{\mathbf{x}} + \sum_{k=1}^{K} z_k\,\sigma_k\,\mathbf{c}_k,
        \qquad \mathbf{z} \sim \mathcal{N}(0, I),

    where :math:`\mathbf{c}_k` are orthonormal principal directions of the centred
    training data and :math:`\sigma_k^2` their variances (eigenvalues of the sample
    covariance, denominator :math:`N - 1`). Coefficients ``z`` are in standard
    deviations, unbounded and never clamped: ``decode`` is affine in ``z``.

    The colour model is a second, independent linear model with its own latent
    (``color_latent_size`` coefficients), as the texture model of the paper:
    :meth:`forward` / :meth:`decode` decode shape only, so a ``PCAModel`` has the
    interface of every other decoder (``decoder(z) -> (B, V, 3)``);
    :meth:`decode_colors` decodes colour and :meth:`decode_joint` both at once.

    The constructor makes a model of the given size whose buffers are a valid
    placeholder (zero mean, the first ``K`` coordinate axes, unit deviations);
    :meth:`fit` computes one from data and :meth:`from_config` plus
    ``load_state_dict`` restores a saved one.

    Args:
        num_vertices: ``V``.
        num_components: ``K``, the shape latent size.
        num_color_components: ``Kc``, the colour latent size; ``0`` (default) means
            no colour model (the colour buffers are ``None``).
        dtype: floating dtype of the buffers (default ``torch.float32``).

    Buffers:
        ``mean (V, 3)``, ``components (K, 3V)`` (orthonormal rows, vertex-major:
        entry ``3v + c`` is coordinate ``c`` of vertex ``v``), ``stddev (K,)``,
        ``explained_variance (K,)``, ``explained_variance_ratio (K,)`` (of the total
        variance of the training data), ``total_variance ()``; and the same with a
        ``color_`` prefix for the colour model.

    Shapes:
        - decode / forward: ``(B, K) -> (B, V, 3)`` and ``(K,) -> (V, 3)``
        - decode_colors: ``(B, Kc) -> (B, V, 3)``
        - encode: ``(B, V, 3) -> (B, K)``
    """

    def __init__(
        self,
        num_vertices: int,
        num_components: int,
        num_color_components: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        for name, value, low in (("num_vertices", num_vertices, 1), ("num_components", num_components, 1),
                                 ("num_color_components", num_color_components, 0)):
            if int_value(value, name, f"an integer >= {low}") < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if dtype not in _FLOAT_DTYPES:
            raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
        dim = 3 * num_vertices
        for prefix, k in (("", num_components), ("color_", num_color_components)):
            if k > dim:
                raise ValueError(f"num_{prefix}components: expected at most 3V = {dim}, got {k}")
            if prefix and k == 0:
                for name in ("mean", "components", "stddev", "explained_variance",
                             "explained_variance_ratio", "total_variance"):
                    self.register_buffer(prefix + name, None)
                continue
            self.register_buffer(prefix + "mean", torch.zeros(num_vertices, 3, dtype=dtype))
            self.register_buffer(prefix + "components", torch.eye(k, dim, dtype=dtype))
            self.register_buffer(prefix + "stddev", torch.ones(k, dtype=dtype))
            self.register_buffer(prefix + "explained_variance", torch.ones(k, dtype=dtype))
            self.register_buffer(prefix + "explained_variance_ratio", torch.full((k,), 1.0 / k, dtype=dtype))
            self.register_buffer(prefix + "total_variance", torch.tensor(float(k), dtype=dtype))

    # ------------------------------------------------------------------ sizes
    @property
    def num_vertices(self) -> int:
        return int(self.mean.shape[0])

    @property
    def latent_size(self) -> int:
        """``K``: the number of shape coefficients ``decode`` takes."""
        return int(self.components.shape[0])

    @property
    def color_latent_size(self) -> int:
        """``Kc``: the number of colour coefficients (0 without a colour model)."""
        return 0 if self.color_components is None else int(self.color_components.shape[0])

    @property
    def has_colors(self) -> bool:
        return self.color_components is not None

    def extra_repr(self) -> str:
        return (f"num_vertices={self.num_vertices}, num_components={self.latent_size}, "
                f"num_color_components={self.color_latent_size}, dtype={self.mean.dtype}")

    # -------------------------------------------------------------------- fit
    @classmethod
    def from_tensors(
        cls,
        mean: torch.Tensor,
        components: torch.Tensor,
        stddev: torch.Tensor,
        total_variance: torch.Tensor | float | None = None,
        *,
        color_mean: torch.Tensor | None = None,
        color_components: torch.Tensor | None = None,
        color_stddev: torch.Tensor | None = None,
        color_total_variance: torch.Tensor | float | None = None,
    ) -> "PCAModel":
        """A model from explicit parts.

        Args:
            mean: ``(V, 3)``.
            components: ``(K, 3V)`` with orthonormal rows (checked, not re-orthonormalised:
                a basis whose rows are scaled by their standard deviations, as some 3DMM
                files store it, is refused; divide each row by its ``stddev`` first).
            stddev: ``(K,)`` non-negative standard deviations, non-increasing.
            total_variance: total variance of the data the ratios refer to, at least
                ``sum(stddev**2)``; ``None`` (default) uses ``sum(stddev**2)``.
            color_mean, color_components, color_stddev, color_total_variance: the same
                for the colour model, or ``None`` for none.
        """
        check_tensor(mean, "mean", shape=("V", 3), dtype=_FLOAT_DTYPES)
        v, dtype = mean.shape[0], mean.dtype
        check_tensor(components, "components", shape=("K", 3 * v), dtype=dtype)
        check_tensor(stddev, "stddev", shape=(components.shape[0],), dtype=dtype)
        parts = [("", mean, components, stddev, total_variance)]
        if color_mean is not None or color_components is not None or color_stddev is not None:
            check_tensor(color_mean, "color_mean", shape=(v, 3), dtype=dtype)
            check_tensor(color_components, "color_components", shape=("Kc", 3 * v), dtype=dtype)
            check_tensor(color_stddev, "color_stddev", shape=(color_components.shape[0],), dtype=dtype)
            parts.append(("color_", color_mean, color_components, color_stddev, color_total_variance))
        model = cls(v, components.shape[0], 0 if len(parts) == 1 else color_components.shape[0], dtype=dtype)
        model = model.to(mean.device)
        exact = torch.promote_types(dtype, torch.float32)  # float16 variances of mm data overflow: ratios in float32
        with torch.no_grad():
            for prefix, m, c, s, total in parts:
                if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
                    raise ValueError(f"{prefix}stddev: expected finite non-negative values, got {s.tolist()[:8]}")
                _check_basis(prefix, c, s)
                variance = s.to(exact).square()
                total = variance.sum() if total is None else torch.as_tensor(total, dtype=exact, device=m.device)
                # (an overflowed half-precision total, inf, is kept: the ratios are computed in float32)
                if bool(torch.isnan(total)) or float(total) < float(variance.sum()) * (1 - 1e-6):
                    # ratios above 1 and compactness past 1 (22,887 for a total of 1), as metrics.compactness refuses
                    raise ValueError(f"{prefix}total_variance: expected at least the sum of the variances, "
                                     f"{float(variance.sum()):.6g}, got {float(total):.6g}")
                getattr(model, prefix + "mean").copy_(m)
                getattr(model, prefix + "components").copy_(c)
                getattr(model, prefix + "stddev").copy_(s)
                getattr(model, prefix + "explained_variance").copy_(variance)
                ratio = variance / total if float(total) > 0 else torch.zeros_like(variance)
                getattr(model, prefix + "explained_variance_ratio").copy_(ratio)
                getattr(model, prefix + "total_variance").copy_(total)
        return model

    @classmethod
    def fit(
        cls,
        vertices: torch.Tensor | np.ndarray,
        colors: torch.Tensor | np.ndarray | None = None,
        num_components: int = 50,
        color_components: int | None = None,
        method: str = "auto",
        generator: torch.Generator | None = None,
        *,
        oversample: int = 10,
        n_iter: int = 7,
    ) -> "PCAModel":
        """Fit the model to ``N`` registered meshes (same vertex order and count).

        The centred data matrix ``X - mean`` ``(N, 3V)`` is decomposed as
        ``U S V^T``; the components are the first ``K`` rows of ``V^T`` (sign fixed so
        each row's largest-magnitude entry is positive) and
        ``stddev = S / sqrt(N - 1)``.

        Args:
            vertices: ``(N, V, 3)`` finite floating positions (torch or numpy); the
                model keeps their dtype and device (float16 and bfloat16 data are fitted
                in float32, then cast).
            colors: ``(N, V, 3)`` per-vertex colours, or ``None`` (default) for a
                shape-only model.
            num_components: ``K`` (default 50), at most ``min(N - 1, 3V)``.
            color_components: ``Kc``; ``None`` (default) uses ``num_components``.
            method: ``"svd"`` (``torch.linalg.svd`` of the centred data,
                ``full_matrices=False``), ``"randomized"`` (:func:`randomized_svd`),
                or ``"auto"`` (default): randomized when the data matrix has at least
                10^7 entries and ``K + oversample < min(N, 3V) / 4``, else the full SVD.
            generator: random generator of the randomized method (``None``: seeded 0).
            oversample: randomized method's extra directions (default 10).
            n_iter: randomized method's power iterations (default 7).

        Shapes:
            ``(N, V, 3) -> `` a model with ``components (K, 3V)``
        """
        vertices = _as_float_tensor(vertices, "vertices")
        if vertices.dtype in _HALF_DTYPES:
            # No LAPACK kernel takes half precision: the whole fit, variances and ratios included,
            # runs in float32 and the model is cast at the end (variances of millimetre data
            # overflow float16, and their ratios would come out NaN).
            colors = None if colors is None else _as_float_tensor(colors, "colors").float()
            return cls.fit(vertices.float(), colors, num_components, color_components, method, generator,
                           oversample=oversample, n_iter=n_iter).to(vertices.dtype)
        n, v, _ = vertices.shape
        if n < 2:
            raise ValueError(f"vertices: expected at least 2 meshes to fit a PCA model, got {n}")
        shape = _fit_linear(vertices.reshape(n, 3 * v), num_components, method, generator,  # (N, 3V)
                            oversample, n_iter, "num_components")
        color = (None,) * 4
        if colors is not None:
            colors = _as_float_tensor(colors, "colors")
            if colors.shape != vertices.shape:
                raise ValueError(f"colors: expected shape {tuple(vertices.shape)} (as vertices), got {tuple(colors.shape)}")
            colors = colors.to(dtype=vertices.dtype, device=vertices.device)
            kc = num_components if color_components is None else color_components
            color = _fit_linear(colors.reshape(n, 3 * v), kc, method, generator,  # (N, 3V)
                                oversample, n_iter, "color_components")
        elif color_components is not None:
            raise ValueError("color_components: given without colors; pass colors=(N, V, 3) or leave it None")
        scale = 1.0 / math.sqrt(n - 1)
        return cls.from_tensors(
            shape[0].reshape(v, 3), shape[1], shape[2] * scale, shape[3],  # mean (V, 3)
            color_mean=None if color[0] is None else color[0].reshape(v, 3),  # (V, 3)
            color_components=color[1],
            color_stddev=None if color[2] is None else color[2] * scale,
            color_total_variance=color[3],
        )

    def truncate(self, num_components: int, num_color_components: int | None = None) -> "PCAModel":
        """A model with only the leading ``num_components`` (and colour) components.

        Ratios keep referring to the total variance of the training data, so
        ``truncate(k).compactness()`` is the first ``k`` entries of ``compactness()``.
        ``num_color_components=None`` keeps all colour components, ``0`` drops the colour model.
        """
        expected = f"an integer in [1, {self.latent_size}]"
        num_components = int_value(num_components, "num_components", expected)
        if not 1 <= num_components <= self.latent_size:
            raise ValueError(f"num_components: expected {expected}, got {num_components}")
        expected = f"None or an integer in [0, {self.color_latent_size}]"
        if num_color_components is not None:  # 0.0 or False is not taken for 0
            num_color_components = int_value(num_color_components, "num_color_components", expected)
        kwargs: dict[str, Any] = {}
        kc = 0
        if self.has_colors and num_color_components != 0:
            kc = self.color_latent_size if num_color_components is None else num_color_components
            if not 1 <= kc <= self.color_latent_size:
                raise ValueError(f"num_color_components: expected {expected}, got {kc}")
            kwargs = dict(color_mean=self.color_mean, color_components=self.color_components[:kc],
                          color_stddev=self.color_stddev[:kc], color_total_variance=self.color_total_variance)
        elif not self.has_colors and num_color_components not in (None, 0):
            raise ValueError("num_color_components: this model has no colour part")
        out = type(self).from_tensors(self.mean, self.components[:num_components], self.stddev[:num_components],
                                      self.total_variance, **kwargs)
        with torch.no_grad():  # the ratios as they are (a float16 total variance may be infinite)
            out.explained_variance_ratio.copy_(self.explained_variance_ratio[:num_components])
            if kc:
                out.color_explained_variance_ratio.copy_(self.color_explained_variance_ratio[:kc])
        return out

    # ------------------------------------------------------ decode / encode
    def _check_latent(self, z: torch.Tensor, size: int, name: str) -> tuple[torch.Tensor, bool]:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(z).__name__}")
        if z.dim() not in (1, 2) or z.shape[-1] != size:
            raise ValueError(f"{name}: expected shape (B, {size}) or ({size},), got {tuple(z.shape)}")
        check_tensor(z, name, dtype=self.mean.dtype, device=self.mean.device)
        return (z.unsqueeze(0), True) if z.dim() == 1 else (z, False)

    @staticmethod
    def _linear_decode(z, mean, components, stddev) -> torch.Tensor:
        flat = torch.addmm(mean.reshape(1, -1), z * stddev, components)  # (B, 3V)
        return flat.reshape(z.shape[0], mean.shape[0], 3)  # (B, V, 3); sizes explicit for B = 0

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Vertices ``mean + (z * stddev) @ components`` for shape coefficients ``z``.

        Shapes:
            ``(B, K) -> (B, V, 3)``; ``(K,) -> (V, 3)``
        """
        z, single = self._check_latent(z, self.latent_size, "z")
        out = self._linear_decode(z, self.mean, self.components, self.stddev)  # (B, V, 3)
        return out[0] if single else out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`decode`: the decoder interface ``decoder(z) -> (B, V, 3)``."""
        return self.decode(z)

    def decode_colors(self, z: torch.Tensor) -> torch.Tensor:
        """Per-vertex colours for colour coefficients ``z`` (not clamped to ``[0, 1]``).

        Shapes:
            ``(B, Kc) -> (B, V, 3)``; ``(Kc,) -> (V, 3)``
        """
        self._require_colors()
        z, single = self._check_latent(z, self.color_latent_size, "z")
        out = self._linear_decode(z, self.color_mean, self.color_components, self.color_stddev)  # (B, V, 3)
        return out[0] if single else out

    def decode_joint(self, z: torch.Tensor, z_color: torch.Tensor) -> PCAOutput:
        """Shape and colour at once.

        Shapes:
            ``(B, K), (B, Kc) -> PCAOutput((B, V, 3), (B, V, 3))``
        """
        return PCAOutput(self.decode(z), self.decode_colors(z_color))

    def _project(self, x, mean, components, stddev, name: str) -> torch.Tensor:
        check_tensor(x, name, shape=("B", self.num_vertices, 3), dtype=self.mean.dtype, device=self.mean.device)
        coords = (x - mean).flatten(1) @ components.T  # (B, K)
        positive = stddev > 0
        # A component of zero variance carries no coefficient: it encodes to 0.
        return torch.where(positive, coords / torch.where(positive, stddev, torch.ones_like(stddev)),
                           torch.zeros_like(coords))

    def encode(self, vertices: torch.Tensor) -> torch.Tensor:
        """Coefficients (in standard deviations) of the orthogonal projection onto the model.

        ``decode(encode(x))`` is the closest point to ``x`` in the model's affine
        subspace (least squares, all vertices weighted equally).

        Shapes:
            ``(B, V, 3) -> (B, K)``; ``(V, 3) -> (K,)``
        """
        single = isinstance(vertices, torch.Tensor) and vertices.dim() == 2
        x = vertices.unsqueeze(0) if single else vertices
        z = self._project(x, self.mean, self.components, self.stddev, "vertices")  # (B, K)
        return z[0] if single else z

    def encode_colors(self, colors: torch.Tensor) -> torch.Tensor:
        """Colour coefficients of the projection of ``colors`` onto the colour model.

        Shapes:
            ``(B, V, 3) -> (B, Kc)``; ``(V, 3) -> (Kc,)``
        """
        self._require_colors()
        single = isinstance(colors, torch.Tensor) and colors.dim() == 2
        x = colors.unsqueeze(0) if single else colors
        z = self._project(x, self.color_mean, self.color_components, self.color_stddev, "colors")  # (B, Kc)
        return z[0] if single else z

    def reconstruct(self, vertices: torch.Tensor) -> torch.Tensor:
        """``decode(encode(vertices))``: the model's best approximation.

        Shapes:
            ``(B, V, 3) -> (B, V, 3)``
        """
        return self.decode(self.encode(vertices))

    def _require_colors(self) -> None:
        if not self.has_colors:
            raise ValueError("this PCAModel has no colour model (fit it with colors=... to get one)")

    # ------------------------------------------------------------ the prior
    def _randn(self, n: int, size: int, generator: torch.Generator | None) -> torch.Tensor:
        if int_value(n, "n", "a non-negative integer") < 0:
            raise ValueError(f"n: expected a non-negative integer, got {n!r}")
        _check_generator(generator)
        device = self.mean.device if generator is None else generator.device
        z = standard_normal_rows(int(n), size, generator, device=device, dtype=self.mean.dtype)  # (n, K)
        return z.to(self.mean.device)

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` shape coefficient vectors from the standard normal prior; with a fresh seeded ``generator`` the
        first ``k`` are the same for any ``n >= k`` (:func:`~mesh_decoder._random.standard_normal_rows`).
        Shapes: ``-> (n, K)``"""
        return self._randn(n, self.latent_size, generator)

    def sample_color_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` colour coefficient vectors from the standard normal prior (drawn as :meth:`sample_latents`
        draws; after it, from the same generator, they depend on its ``n``). Shapes: ``-> (n, Kc)``"""
        self._require_colors()
        return self._randn(n, self.color_latent_size, generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` random shapes ``decode(z)``, ``z ~ N(0, I)``. Shapes: ``-> (n, V, 3)``"""
        return self.decode(self.sample_latents(n, generator))

    def sample_colors(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` random colourings from the colour model. Shapes: ``-> (n, V, 3)``"""
        return self.decode_colors(self.sample_color_latents(n, generator))

    @staticmethod
    def log_prior(z: torch.Tensor) -> torch.Tensor:
        r"""Log density of the standard normal prior, summed over the last dimension.

        .. math:: \log p(\mathbf{z}) = -\tfrac12 \lVert \mathbf{z} \rVert^2 - \tfrac{K}{2}\log 2\pi

        Shapes:
            ``(B, K) -> (B,)``; ``(K,) -> ()``
        """
        check_tensor(z, "z", dtype=_FLOAT_DTYPES)
        if z.dim() == 0:
            raise ValueError("z: expected shape (B, K) or (K,), got a 0-dimensional tensor")
        k = z.shape[-1]
        return -0.5 * z.square().sum(dim=-1) - 0.5 * k * math.log(2.0 * math.pi)

    # --------------------------------------------------------------- measures
    def compactness(self) -> torch.Tensor:
        """Cumulative explained variance ratio: entry ``k - 1`` is the fraction of the
        training data's variance captured by the first ``k`` components. Shapes: ``-> (K,)``"""
        return torch.cumsum(self.explained_variance_ratio, dim=0)

    # ----------------------------------------------------------------- config
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        # load_state_dict(assign=True) takes the given tensors as they are: one of another dtype
        # would leave a model of mixed dtypes, which decode() cannot use. (Without assign they are cast.)
        if local_metadata.get("assign_to_params_buffers", False):
            bad = [f"{prefix}{name}: expected dtype {buffer.dtype} (the model's), got {given.dtype}; build the "
                   f"model with dtype={given.dtype} to assign these"
                   for name, buffer in self._buffers.items()
                   if buffer is not None and isinstance(given := state_dict.get(prefix + name), torch.Tensor)
                   and given.dtype != buffer.dtype]
            if bad:  # assign nothing: the model keeps its buffers
                error_msgs.extend(bad)
                return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def config(self) -> dict[str, Any]:
        """JSON-able architecture description; :meth:`from_config` rebuilds the model
        (its buffers then come from a state dict)."""
        return {
            "class": type(self).__name__,
            "num_vertices": self.num_vertices,
            "num_components": self.latent_size,
            "num_color_components": self.color_latent_size,
            "dtype": str(self.mean.dtype).removeprefix("torch."),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], hierarchy=None) -> "PCAModel":
        """A model of the size ``config`` describes (placeholder buffers).

        ``hierarchy`` is not needed; when given, its template's vertex count must
        equal the model's.
        """
        if not isinstance(config, dict):
            raise TypeError(f"config: expected a dict, got {type(config).__name__}")
        if config.get("class", cls.__name__) != cls.__name__:
            raise ValueError(f"config: expected class {cls.__name__!r}, got {config.get('class')!r}")
        unknown = sorted(set(config) - {"class", "num_vertices", "num_components", "num_color_components", "dtype"})
        if unknown:  # a misspelt key (num_colour_components) would otherwise be ignored silently
            raise ValueError(f"config: unknown keys {unknown}; expected num_vertices, num_components and "
                             f"optionally class, num_color_components, dtype")
        missing = [k for k in ("num_vertices", "num_components") if k not in config]
        if missing:
            raise ValueError(f"config: missing keys {missing} (expected num_vertices, num_components)")
        dtype_name = config.get("dtype", "float32")
        if dtype_name not in _DTYPE_NAMES:
            raise ValueError(f"config: expected dtype in {sorted(_DTYPE_NAMES)}, got {dtype_name!r}")
        if hierarchy is not None:
            v = hierarchy.levels[0].num_vertices
            if v != config["num_vertices"]:
                raise ValueError(f"hierarchy: expected a template of {config['num_vertices']} vertices, got {v}")
        return cls(config["num_vertices"], config["num_components"], config.get("num_color_components", 0),
                   dtype=_DTYPE_NAMES[dtype_name])
