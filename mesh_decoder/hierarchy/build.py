"""Build a :class:`MeshHierarchy` from a template mesh, with an optional file cache.

The recipe follows COMA (Ranjan et al., "Generating 3D faces using Convolutional
Mesh Autoencoders", ECCV 2018) and SpiralNet++ (Gong et al., ICCV-W 2019):

1. level ``l + 1`` is level ``l`` decimated by quadric edge collapses to
   ``ceil(V_l / factor_l)`` vertices (:func:`~mesh_decoder.hierarchy.decimate.decimate_mesh`);
2. down-sampling keeps those vertices (``down[l]``), up-sampling projects every
   vertex of level ``l`` onto the surface of level ``l + 1``
   (:func:`~mesh_decoder.hierarchy.operators.upsample_operator`);
3. every level gets spiral indices (:func:`~mesh_decoder.hierarchy.spirals.compute_spirals`)
   and the scaled Laplacian ``-D^-1/2 A D^-1/2`` (:func:`~mesh_decoder.hierarchy.laplacian.scaled_laplacian`);
4. the template gets a UV texel map (:func:`mesh_decoder.mesh.uv.texel_map`).

Float tensors are stored as float32 (``MeshHierarchy.to(dtype=...)`` casts);
index tensors are int64.
"""

from __future__ import annotations

import numbers
import os
import time
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .. import __version__
from .._checks import check_bool, check_int
from ..errors import HierarchyError, MeshValidationError, UVOverlapError
from ..mesh.container import Mesh
from ..mesh.uv import MAX_MAP_SIZE, ensure_uv, texel_map
from .container import HierarchyLevel, MeshHierarchy, TexelMap
from .decimate import check_manifold, decimate_mesh, level_sizes
from .laplacian import scaled_laplacian
from .operators import upsample_operator
from .spirals import compute_spirals
from .storage import (BUILD_REVISION, FORMAT_VERSION, cache_file, cache_key, load_hierarchy, resolve_cache_dir,
                      save_hierarchy)

__all__ = ["build_hierarchy", "hierarchy_table"]

_FLOAT = torch.float32


@contextmanager
def _timed(timings: dict | None, stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


def _normalise_factors(factors) -> list[int | float]:
    if isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence):
        raise TypeError(f"factors: expected a sequence of numbers, got {type(factors).__name__}")
    out = []
    for i, f in enumerate(factors):
        if isinstance(f, bool) or not isinstance(f, numbers.Real):
            raise TypeError(f"factors[{i}]: expected a real number > 1, got {type(f).__name__} {f!r}")
        f = float(f)
        out.append(int(f) if f.is_integer() else f)
    return out


def _per_level(value, num_levels: int, name: str, counted: str = "len(factors) + 1") -> list[int]:
    values = [value] * num_levels if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name}: expected an int or a sequence of {num_levels} ints, got {type(value).__name__}")
    if len(values) != num_levels:
        raise ValueError(f"{name}: expected {num_levels} values (one per level, {counted}), got {len(values)}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name}[{i}]: expected an int >= 1, got {type(v).__name__} {v!r}")
        if v < 1:
            raise ValueError(f"{name}[{i}]: expected an int >= 1, got {v}")
        out.append(int(v))
    return out


#: The largest texel map side :func:`build_hierarchy` builds (:data:`mesh_decoder.mesh.uv.MAX_MAP_SIZE`).
#: Building takes about 150 bytes a texel (a 4096 x 4096 map peaked at about 2.5 GB and took 21 s on
#: 2 cores); far larger sizes would exhaust the memory and get the process killed instead of raising.
MAX_TEXTURE_SIZE = MAX_MAP_SIZE


def _normalise_texture_size(texture_size) -> list[int] | None:
    if texture_size is None or (isinstance(texture_size, numbers.Integral) and not isinstance(texture_size, bool)
                                and texture_size == 0):  # 0: none, as the commands and configs say it
        return None
    if isinstance(texture_size, numbers.Integral) and not isinstance(texture_size, bool):
        texture_size = (texture_size, texture_size)
    if (
        not isinstance(texture_size, Sequence)
        or len(texture_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in texture_size)
    ):
        raise TypeError(f"texture_size: expected None, an int or (H, W) ints, got {texture_size!r}")
    if min(texture_size) < 1:
        raise ValueError(f"texture_size: expected positive sizes, got {tuple(texture_size)}")
    if max(texture_size) > MAX_TEXTURE_SIZE:
        raise ValueError(f"texture_size: expected at most {MAX_TEXTURE_SIZE} texels per side, got "
                         f"{tuple(texture_size)} (building grows with H x W: a 4096 x 4096 map peaked at about "
                         "2.5 GB)")
    return [int(texture_size[0]), int(texture_size[1])]


def build_hierarchy(
    mesh: Mesh,
    factors: Sequence[float] = (4, 4, 4, 4),
    spiral_lengths: int | Sequence[int] = 9,
    dilations: int | Sequence[int] = 1,
    texture_size: int | tuple[int, int] | None = 256,
    cache_dir: str | os.PathLike | bool | None = None,
    *,
    allow_uv_overlap: bool = False,
    timings: dict[str, float] | None = None,
    revision: int = BUILD_REVISION,
) -> MeshHierarchy:
    """Precompute the multi-resolution operators of a template mesh.

    Args:
        mesh: the template :class:`Mesh` (manifold, consistently wound, finite); built
            from its positions and UVs rounded to float32, as its hash reads them, so a
            template saved to a file and read back builds the same hierarchy.
        factors: down-sampling factor per level, default ``(4, 4, 4, 4)``;
            ``V_{l+1} = ceil(V_l / f_l)``, e.g. 5,023 -> 1,256 -> 314 -> 79 -> 20.
        spiral_lengths: spiral length per level (``len(factors) + 1`` values) or one
            int for all, default ``9``.
        dilations: spiral dilation per level or one int for all, default ``1``.
        texture_size: UV texel map size of the template, ``S`` or ``(H, W)``;
            ``None`` (or ``0``, as the commands and configs write it) for no texel map. Default ``256``; at most :data:`MAX_TEXTURE_SIZE`
            (8192) per side. A template without UVs gets
            automatic ones (:func:`mesh_decoder.mesh.uv.ensure_uv`).
        cache_dir: ``None`` (default, no cache), ``True`` (``$MESH_DECODER_CACHE`` or
            ``~/.cache/mesh_decoder``) or a directory. The cache file is keyed by the
            template hash, all parameters and the build's revision
            (:data:`~mesh_decoder.hierarchy.storage.BUILD_REVISION`); a corrupt or mismatched file is
            reported with a warning and rebuilt.
        allow_uv_overlap: let UV triangles overlap in the texel map (mirrored or
            stacked islands; the lowest face colours a shared texel, see
            :func:`~mesh_decoder.mesh.uv.texel_map`'s ``allow_overlap``). Default
            ``False``: an overlap raises :class:`~mesh_decoder.errors.UVOverlapError`.
            Recorded in ``meta`` (``"allow_uv_overlap"``) when ``True``.
        revision: the build to reproduce, default :data:`~mesh_decoder.hierarchy.storage.BUILD_REVISION`
            (2); ``1`` builds from the positions and UVs as given, as the toolkit did before, for
            the hierarchies (and cache files) of runs started then.
        timings: if a dict is given, per-stage wall times in seconds are added to it
            (keys ``"validate"``, ``"decimate"``, ``"operators"``, ``"spirals"``,
            ``"laplacian"``, ``"texel_map"``, and ``"cache_load"``/``"cache_save"``).

    Returns:
        A :class:`MeshHierarchy` with ``len(factors) + 1`` levels; its ``meta`` holds
        ``template_hash``, ``factors``, ``spiral_lengths``, ``dilations``,
        ``texture_size``, ``uv_hash``, ``format_version`` and ``library_version``.

    Shapes:
        ``levels[l].vertices (V_l, 3)``, ``spirals (V_l, S_l)``, ``down[l] (V_{l+1},)``,
        ``up_index[l]``/``up_weight[l]`` ``(V_l, 3)``, texel map ``(H, W, 3)``.

    Raises:
        TypeError: ``mesh`` is not a :class:`Mesh` or a parameter (``timings`` included) has the wrong type.
        MeshValidationError: the mesh is invalid (NaN, non-manifold, inconsistent winding,
            coordinates beyond the float32 range, ...), or its UV triangles overlap
            (:class:`~mesh_decoder.errors.UVOverlapError`).
        HierarchyError: the factors leave fewer than 4 vertices, or the decimation fails.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a mesh_decoder Mesh, got {type(mesh).__name__}")
    factors = _normalise_factors(factors)
    num_levels = len(factors) + 1
    spiral_lengths = _per_level(spiral_lengths, num_levels, "spiral_lengths")
    dilations = _per_level(dilations, num_levels, "dilations")
    tex = _normalise_texture_size(texture_size)
    allow_uv_overlap = check_bool(allow_uv_overlap, "allow_uv_overlap")
    revision = check_int(revision, "revision", 1, BUILD_REVISION)
    directory = resolve_cache_dir(cache_dir)
    if timings is not None and not isinstance(timings, dict):
        raise TypeError(f"timings: expected None or a dict to add the stage times to, got {type(timings).__name__}")

    with _timed(timings, "validate"):
        _check_template(mesh)
        sizes = level_sizes(mesh.num_vertices, factors)
        if revision >= 2:
            mesh = _as_hashed(mesh)
    meta = _meta(mesh, sizes, spiral_lengths, dilations, tex, allow_uv_overlap, factors=factors)
    path = None
    if directory is not None:
        path = cache_file(directory, cache_key(meta, revision))
        if path.exists():
            with _timed(timings, "cache_load"):
                cached = _load_cached(path, meta)
            if cached is not None:
                return cached
    h = _build(mesh, sizes, spiral_lengths, dilations, tex, meta, timings)
    if path is not None:
        with _timed(timings, "cache_save"):
            try:
                save_hierarchy(h, path)
            except OSError as err:
                why = str(err) if str(path) in str(err) else f"{path}: {err}"  # the path once
                warnings.warn(f"could not write the hierarchy cache file {why}", RuntimeWarning, stacklevel=2)
    return h


def _as_hashed(mesh: Mesh) -> Mesh:
    """``mesh`` with its positions and UVs rounded to float32, what :meth:`~Mesh.content_hash` and
    :meth:`~Mesh.uv_hash` read, so that one hash builds one hierarchy (and a cache file keyed by it holds
    what the build would give): decimation tells apart differences below float32's precision, such as a
    template's after it was saved to a file and read back."""
    with np.errstate(over="ignore"):
        uv = None if mesh.uv is None else mesh.uv.astype(np.float32).astype(np.float64)
    return mesh.copy(vertices=mesh.vertices.astype(np.float32).astype(np.float64), uv=uv)


def _meta(mesh: Mesh, sizes: list[int], spiral_lengths: list[int], dilations: list[int], tex: list[int] | None,
          allow_uv_overlap: bool, **how: Any) -> dict[str, Any]:
    """A hierarchy's ``meta``: how it was made (``how``: ``factors``, or ``source``), the template and UV
    hashes, the sizes and spiral parameters, and the format and library versions."""
    meta = {
        "template_hash": mesh.content_hash(),
        **how,
        "sizes": sizes,
        "spiral_lengths": spiral_lengths,
        "dilations": dilations,
        "texture_size": tex,
        # the texel map depends on the template's UVs, which content_hash leaves out;
        # None: no texel map, or UVs made by automatic_uv (deterministic per library version)
        "uv_hash": mesh.uv_hash() if tex is not None else None,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
    }
    if allow_uv_overlap and tex is not None:  # only then: hierarchies (and cache keys) without it are unchanged
        meta["allow_uv_overlap"] = True
    return meta


def _check_template(mesh: Mesh) -> None:
    """Raise unless ``mesh`` is valid, manifold and within float32's range; warn about an unwelded seam."""
    mesh.validate()
    with np.errstate(over="ignore"):
        fits = bool(np.isfinite(mesh.vertices.astype(np.float32)).all())
    if not fits:
        raise MeshValidationError(
            f"vertices: expected magnitudes float32 can hold (up to {float(np.finfo(np.float32).max):.4g}; "
            f"the hierarchy stores float32 positions), got {float(np.abs(mesh.vertices).max()):.4g}"
        )
    check_manifold(mesh.vertices, mesh.faces)
    coincident = mesh.coincident_vertices()  # (K,)
    if coincident.size:  # an unwelded seam: coincident vertices in different components
        labels = mesh.components()  # (V,)
        _, group = np.unique(mesh.vertices[coincident], axis=0, return_inverse=True)  # (K,) position of each
        group = group.ravel()
        low = np.full(int(group.max()) + 1, labels.max() + 1)
        high = np.full_like(low, -1)
        np.minimum.at(low, group, labels[coincident])
        np.maximum.at(high, group, labels[coincident])
        seam = coincident[(low != high)[group]]  # (S,)
        if seam.size:
            warnings.warn(
                f"{seam.size} vertices of the template share their exact position with a vertex of another "
                f"connected component (first: vertex {seam[0]}), as an unwelded seam leaves them; the mesh has "
                f"{int(labels.max()) + 1} components and no convolution crosses between them: merge the coincident "
                "vertices before building if they are one surface",
                RuntimeWarning, stacklevel=3,
            )


def _load_cached(path, meta: dict) -> MeshHierarchy | None:
    """The cached hierarchy, or ``None`` (with a warning) if the file is unusable."""
    try:
        h = load_hierarchy(path, expected_template_hash=meta["template_hash"])
        if h.meta != meta:
            diff = sorted(k for k in meta.keys() | h.meta.keys() if meta.get(k) != h.meta.get(k))
            raise HierarchyError(f"{path}: parameters differ from the requested ones ({', '.join(diff)})")
    except HierarchyError as err:
        warnings.warn(f"ignoring the hierarchy cache file and rebuilding it: {err}", RuntimeWarning, stacklevel=3)
        return None
    return h


def _build(mesh, sizes, spiral_lengths, dilations, tex, meta, timings) -> MeshHierarchy:
    vertices = [mesh.vertices]
    faces = [mesh.faces]
    original = [np.arange(mesh.num_vertices, dtype=np.int64)]
    down, up_index, up_weight = [], [], []
    for level, target in enumerate(sizes[1:], start=1):
        with _timed(timings, "decimate"):
            try:  # level 0 passed check_manifold above; later levels come from OpenMesh, manifold by construction
                coarse = decimate_mesh(vertices[-1], faces[-1], target, check=False)
            except HierarchyError as err:
                raise HierarchyError(f"{err} (level {level} of the level sizes {list(sizes)})") from err
        with _timed(timings, "operators"):
            idx, w = upsample_operator(vertices[-1], coarse.vertices, coarse.faces, coarse.kept)
        down.append(torch.from_numpy(coarse.kept))
        up_index.append(torch.from_numpy(idx))
        up_weight.append(torch.from_numpy(w).to(_FLOAT))
        vertices.append(coarse.vertices)
        faces.append(coarse.faces)
        original.append(original[-1][coarse.kept])

    levels = [_level(l, v, f, o, spiral_lengths[l], dilations[l], timings)
              for l, (v, f, o) in enumerate(zip(vertices, faces, original))]
    texels = None if tex is None else _template_texels(mesh, tex, bool(meta.get("allow_uv_overlap")), timings)
    return MeshHierarchy(levels=levels, down=down, up_index=up_index, up_weight=up_weight, texel_map=texels, meta=meta)


def _level(l: int, v: np.ndarray, f: np.ndarray, original: np.ndarray, spiral_length: int, dilation: int,
           timings: dict | None) -> HierarchyLevel:
    """Level ``l`` of ``(V, 3)`` positions ``v`` and ``(F, 3)`` faces ``f``: its spirals and scaled Laplacian.

    ``original``: ``(V,)`` index of each vertex in the template.
    """
    V = v.shape[0]
    with _timed(timings, "spirals"):
        spirals = np.asarray(compute_spirals(v, f, spiral_length, dilation))
    if spirals.shape != (V, spiral_length) or spirals.min() < 0 or spirals.max() > V:
        raise HierarchyError(
            f"level {l}: expected spirals of shape ({V}, {spiral_length}) with values in [0, {V}], "
            f"got shape {spirals.shape}"
        )
    with _timed(timings, "laplacian"):
        lap_index, lap_weight = scaled_laplacian(f, V, dtype=_FLOAT)
    return HierarchyLevel(
        vertices=torch.from_numpy(np.asarray(v)).to(_FLOAT),
        faces=torch.from_numpy(np.ascontiguousarray(f, dtype=np.int64)),
        spirals=torch.from_numpy(spirals.astype(np.int64, copy=False)),
        laplacian_index=lap_index,
        laplacian_weight=lap_weight,
        original_index=torch.from_numpy(np.ascontiguousarray(original, dtype=np.int64)),
        spiral_length=spiral_length,
        dilation=dilation,
    )


def _template_texels(mesh: Mesh, tex: list[int], allow_overlap: bool, timings: dict | None) -> TexelMap:
    """The ``tex = [H, W]`` texel map of the template ``mesh`` (automatic UVs if it has none)."""
    with _timed(timings, "texel_map"):
        try:
            return texel_map(ensure_uv(mesh), tuple(tex), allow_overlap=allow_overlap, dtype=_FLOAT)
        except UVOverlapError as err:
            raise UVOverlapError(f"texel map of the template: {err.problem}",
                                 "fix the UVs, pass allow_uv_overlap=True (the lowest face colours a shared "
                                 "texel) or build without a texel map: texture_size=None") from None
        except MeshValidationError as err:
            raise MeshValidationError(
                f"texel map of the template: {err} (or build without a texel map: texture_size=None)"
            ) from err


def hierarchy_table(h: MeshHierarchy) -> list[dict]:
    """One row per level, for printing.

    Returns:
        dicts with ``level``, ``vertices``, ``faces``, ``spiral_length``,
        ``dilation``, ``boundary_vertices`` (vertices on a boundary edge) and
        ``padded_spirals`` (spirals containing the pad index ``V``).
    """
    if not isinstance(h, MeshHierarchy):
        raise TypeError(f"h: expected a MeshHierarchy, got {type(h).__name__}")
    rows = []
    for l, lvl in enumerate(h.levels):
        V = lvl.num_vertices
        f = lvl.faces.cpu().numpy()
        he = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)  # (3F, 2) half-edges
        key = np.sort(he, axis=1)
        key = key[:, 0] * V + key[:, 1]  # (3F,) undirected edge ids
        uniq, counts = np.unique(key, return_counts=True)
        boundary = uniq[counts == 1]
        rows.append(
            {
                "level": l,
                "vertices": V,
                "faces": int(f.shape[0]),
                "spiral_length": int(lvl.spiral_length),
                "dilation": int(lvl.dilation),
                "boundary_vertices": int(np.unique(np.concatenate([boundary // V, boundary % V])).size),
                "padded_spirals": int((lvl.spirals == V).any(dim=1).sum()),
            }
        )
    return rows
