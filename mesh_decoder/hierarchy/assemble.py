"""Assemble a :class:`MeshHierarchy` from down- and up-sampling matrices made elsewhere.

COMA (Ranjan et al., ECCV 2018) and Neural3DMM / SpiralNet++ (Bouritsas et al.,
ICCV 2019; Gong et al., ICCV-W 2019) store their hierarchies as a list of meshes
and two lists of sparse matrices: ``D[l]`` ``(V_{l+1}, V_l)`` keeps one fine vertex
per row (quadric decimation by half-edge collapses moves no vertex) and ``U[l]``
``(V_l, V_{l+1})`` puts each fine vertex at barycentric coordinates on a coarse
face. :func:`hierarchy_from_matrices` reads such matrices, checks that they are
of that kind, and adds what the toolkit's decoders also need: spirals, scaled
Laplacians and, optionally, the template's texel map. The result trains, decodes
and saves like a built hierarchy (``save_hierarchy``, then a training config's
``hierarchy.path``), so a model keeps the exact operators of published work.

Nothing here needs openmesh.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
import torch

from .._checks import check_bool
from ..errors import HierarchyError, MeshValidationError
from ..mesh.container import Mesh
from .build import (_FLOAT, _as_hashed, _check_template, _level, _meta, _normalise_texture_size, _per_level,
                    _template_texels)
from .container import MeshHierarchy
from .decimate import check_manifold
from .storage import check_hierarchy

__all__ = ["hierarchy_from_matrices"]

#: How far a selection entry may be from 1, and a row of up-sampling weights from summing to 1, as given.
_ATOL = 1e-5
#: With ``renormalize``: how far a row may sum from 1 (or a weight fall below 0) and still be rescaled.
#: COMA's rows for fine vertices nearest a coarse edge are least-squares fits that sum to 0.99-1.01.
_RESCALE_TOL = 0.05
#: A level whose up-sampling puts its vertices on average farther than this many of its mean edge
#: lengths from where they are was made for another vertex order or template (the toolkit's own
#: hierarchies measured 0.02 to 0.33: the coarsest levels of closed or small meshes are the farthest).
_GEOMETRY_EDGES = 1.0


def hierarchy_from_matrices(
    template: Mesh,
    down: Sequence[Any],
    up: Sequence[Any],
    faces: Sequence[Any],
    spiral_lengths: int | Sequence[int] = 9,
    dilations: int | Sequence[int] = 1,
    texture_size: int | tuple[int, int] | None = None,
    *,
    allow_uv_overlap: bool = False,
    renormalize: bool = True,
) -> MeshHierarchy:
    """A hierarchy on given down- and up-sampling matrices (COMA's ``D`` and ``U``).

    Args:
        template: the full-resolution :class:`Mesh` (level 0), with the vertex order the
            matrices' columns (``down[0]``) and rows (``up[0]``) use.
        down: ``L`` matrices, ``down[l]`` of shape ``(V_{l+1}, V_l)``, each row a single
            entry equal to 1 that selects a distinct fine vertex: scipy sparse matrices or
            arrays (any format), torch tensors (sparse or dense) or numpy arrays (a 0-d
            object array holding one, as ``np.load`` gives back a saved sparse matrix, too).
        up: ``L`` matrices of the same kinds, ``up[l]`` of shape ``(V_l, V_{l+1})``, each row
            1 to 3 non-negative entries summing to 1 (barycentric coordinates on a coarse
            face, edge or vertex) whose columns are a face, an edge or a vertex of level
            ``l + 1``; the row of a kept vertex must put weight 1 on its own coarse copy.
        faces: ``L`` ``(F_{l+1}, 3)`` integer arrays or tensors (floats holding whole numbers,
            as MATLAB saves them, are taken), the faces of levels ``1..L``
            (COMA: ``[m.f for m in M[1:]]``). Each level's positions are the template's
            vertices that ``down`` keeps.
        spiral_lengths: spiral length per level (``L + 1`` values) or one int, default 9.
        dilations: spiral dilation per level or one int, default 1.
        texture_size: the template's texel map size, ``S`` or ``(H, W)``, or ``None`` (the
            default) for none; a template without UVs gets automatic ones.
        allow_uv_overlap: as in :func:`~mesh_decoder.hierarchy.build_hierarchy`.
        renormalize: rescale up-sampling rows that sum to within 5 % of 1 (negative weights
            above -0.05 clipped to 0 first) to sum to 1, with a warning that counts them
            (default ``True``). COMA's rows for a fine vertex nearest a coarse edge are
            least-squares fits that sum to 0.99 to 1.01; the decoders and
            :func:`~mesh_decoder.hierarchy.check_hierarchy` need convex weights. ``False``
            refuses any row off by more than 1e-5.

    Returns:
        A checked :class:`MeshHierarchy` (:func:`~mesh_decoder.hierarchy.check_hierarchy`)
        with ``L + 1`` levels. Its ``meta`` records ``"source": "matrices"``, the level
        sizes, template and UV hashes and the spiral parameters, but no ``factors``: a
        training config that loads it through ``hierarchy.path`` states them (checked
        against the sizes).

    Raises:
        TypeError: a matrix or parameter of the wrong type.
        HierarchyError: a matrix of the wrong shape or kind, naming it (``down[1]``,
            ``up[0]``, ...), the first offending row and what it holds; or matrices that
            do not fit the template's geometry (up-sampling that puts the fine vertices
            far from where they are, or onto vertices that share no coarse face: made for
            another vertex order or template).
        MeshValidationError: the template or a level's faces are invalid (non-manifold, ...).
    """
    if not isinstance(template, Mesh):
        raise TypeError(f"template: expected a mesh_decoder Mesh, got {type(template).__name__}")
    down, up, faces = (_as_list(value, name) for name, value in (("down", down), ("up", up), ("faces", faces)))
    L = len(down)
    if L == 0:
        raise HierarchyError("down: expected at least one down-sampling matrix, got none")
    if len(up) != L or len(faces) != L:
        hint = (" (faces holds the levels below the template only, 1..L: leave out the template's)"
                if len(faces) == L + 1 else "")
        raise HierarchyError(f"expected as many up-sampling matrices and face arrays as down-sampling matrices "
                             f"({L}), got {len(up)} up and {len(faces)} faces{hint}")
    spiral_lengths = _per_level(spiral_lengths, L + 1, "spiral_lengths", "len(down) + 1")
    dilations = _per_level(dilations, L + 1, "dilations", "len(down) + 1")
    tex = _normalise_texture_size(texture_size)
    allow_uv_overlap = check_bool(allow_uv_overlap, "allow_uv_overlap")
    renormalize = check_bool(renormalize, "renormalize")
    _check_template(template)
    template = _as_hashed(template)  # as build_hierarchy: one template hash, one hierarchy

    vertices = [np.asarray(template.vertices)]
    level_faces = [np.asarray(template.faces)]
    original = [np.arange(template.num_vertices, dtype=np.int64)]
    down_index, up_index, up_weight = [], [], []
    rescaled: list[str] = []
    for l in range(L):
        fine = vertices[-1].shape[0]
        kept = _selection(down[l], f"down[{l}]", fine)
        rows, note = _barycentric(up[l], f"up[{l}]", fine, kept.shape[0], renormalize)
        if note:
            rescaled.append(note)
        index, weight = _padded(rows)
        _check_kept(rows, index, weight, kept, l)
        f = _faces(faces[l], f"faces[{l}]", kept.shape[0])
        v = vertices[-1][kept]
        try:
            Mesh(v, f).validate()
            check_manifold(v, f)
        except MeshValidationError as err:
            raise MeshValidationError(f"level {l + 1} (faces[{l}] on the vertices down[{l}] keeps): {err}"
                                      f"{_level_hint(err, l)}") from None
        _check_on_faces(rows, f, l)
        _check_geometry(index, weight, vertices[-1], level_faces[-1], v, l)
        down_index.append(torch.from_numpy(kept))
        up_index.append(torch.from_numpy(index))
        up_weight.append(torch.from_numpy(weight).to(_FLOAT))
        vertices.append(v)
        level_faces.append(f)
        original.append(original[-1][kept])
    if rescaled:
        warnings.warn(f"hierarchy_from_matrices: rescaled up-sampling rows to sum to 1: {'; '.join(rescaled)} "
                      "(renormalize=False refuses them)", RuntimeWarning, stacklevel=2)

    meta = _meta(template, [int(v.shape[0]) for v in vertices], spiral_lengths, dilations, tex, allow_uv_overlap,
                 source="matrices")
    levels = [_level(l, v, f, o, spiral_lengths[l], dilations[l], None)
              for l, (v, f, o) in enumerate(zip(vertices, level_faces, original))]
    texels = None if tex is None else _template_texels(template, tex, allow_uv_overlap, None)
    h = MeshHierarchy(levels=levels, down=down_index, up_index=up_index, up_weight=up_weight, texel_map=texels,
                      meta=meta)
    return check_hierarchy(h)


def _as_list(value: Any, name: str) -> list:
    """``value`` (a list or tuple, or a 1-D numpy object array as an ``.npz`` holds one) as a list."""
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 1:
        return list(value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name}: expected a list with one entry per pair of levels, got {type(value).__name__}")
    return list(value)


def _unwrap(matrix: Any) -> Any:
    """The matrix a 0-d numpy object array holds (``np.load`` of a saved scipy matrix), else ``matrix``."""
    if isinstance(matrix, np.ndarray) and matrix.dtype == object and matrix.ndim == 0:
        return matrix.item()
    return matrix


def _rows(matrix: Any, name: str, shape: tuple[int, int]):
    """``matrix`` as a scipy CSR array of ``shape`` with sorted, summed entries and no stored zeros."""
    import scipy.sparse as sp

    matrix = _unwrap(matrix)
    if isinstance(matrix, torch.Tensor):
        if matrix.is_meta or matrix.is_complex():
            raise TypeError(f"{name}: expected a real tensor with values, got "
                            f"{'a meta tensor' if matrix.is_meta else matrix.dtype}")
        t = matrix.detach().cpu()
        if t.layout != torch.strided:
            t = t.to_sparse_coo().coalesce()
            rows, cols = t.indices().numpy()
            matrix = sp.coo_array((t.values().double().numpy(), (rows, cols)), shape=tuple(t.shape))
        else:
            matrix = t.double().numpy()
    if isinstance(matrix, np.ndarray):
        if np.issubdtype(matrix.dtype, np.complexfloating):
            raise TypeError(f"{name}: expected real entries, got complex ({matrix.dtype})")
        if matrix.ndim != 2 or not (np.issubdtype(matrix.dtype, np.number) or matrix.dtype == bool):
            raise TypeError(f"{name}: expected a 2-D numeric matrix, got an array of shape {matrix.shape} "
                            f"and dtype {matrix.dtype}")
        matrix = sp.coo_array(matrix.astype(np.float64))
    if not sp.issparse(matrix):
        raise TypeError(f"{name}: expected a scipy sparse matrix, a torch tensor or a numpy array, "
                        f"got {type(matrix).__name__}")
    if tuple(matrix.shape) != shape:
        flipped = " (transposed? expected rows, then columns)" if tuple(matrix.shape) == shape[::-1] else ""
        raise HierarchyError(f"{name}: expected shape {shape}, got {tuple(matrix.shape)}{flipped}")
    if np.issubdtype(matrix.dtype, np.complexfloating):
        raise TypeError(f"{name}: expected real entries, got complex ({matrix.dtype})")
    m = sp.csr_array(matrix, dtype=np.float64, copy=True)  # a copy: the in-place clean-up below must not change
    m.sum_duplicates()  # the caller's matrix (a CSR of float64 was shared, and left inconsistent)
    m.eliminate_zeros()
    if not np.isfinite(m.data).all():
        raise HierarchyError(f"{name}: expected finite entries, got {m.data[~np.isfinite(m.data)][0]}")
    return m


def _selection(matrix: Any, name: str, fine: int) -> np.ndarray:
    """The ``(V_coarse,)`` fine vertices a selection matrix ``(V_coarse, fine)`` keeps."""
    import scipy.sparse as sp

    matrix = _unwrap(matrix)
    if not isinstance(matrix, (torch.Tensor, np.ndarray)) and not sp.issparse(matrix):
        raise TypeError(f"{name}: expected a scipy sparse matrix, a torch tensor or a numpy array, "
                        f"got {type(matrix).__name__}")
    shape = tuple(matrix.shape)
    if len(shape) != 2 or shape[1] != fine or not 1 <= shape[0] < fine:
        flipped = (" (transposed? a down-sampling matrix is (V_coarse, V_fine), COMA's D)"
                   if len(shape) == 2 and shape[0] == fine and shape[1] < fine else "")
        raise HierarchyError(f"{name}: expected a (V_coarse, {fine}) matrix with 1 <= V_coarse < {fine} "
                             f"(level {name[5:-1]} has {fine} vertices), got shape {shape}{flipped}")
    coarse = shape[0]
    m = _rows(matrix, name, (coarse, fine))
    count = np.diff(m.indptr)  # (V_coarse,) entries per row
    if (count != 1).any():
        row = int(np.flatnonzero(count != 1)[0])
        raise HierarchyError(f"{name}: expected a selection matrix (one entry equal to 1 per row, as quadric "
                             f"decimation keeps vertices), got {int(count[row])} entries in row {row}")
    off = np.abs(m.data - 1.0) > _ATOL
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise HierarchyError(f"{name}: expected a selection matrix (one entry equal to 1 per row), got "
                             f"{m.data[row]:.9g} in row {row}")
    kept = m.indices.astype(np.int64)  # (V_coarse,) one column per row, in row order
    if np.unique(kept).shape[0] != coarse:
        raise HierarchyError(f"{name}: expected each fine vertex kept at most once, got "
                             f"{coarse - np.unique(kept).shape[0]} kept twice or more")
    return kept


def _barycentric(matrix: Any, name: str, fine: int, coarse: int, renormalize: bool):
    """An up-sampling matrix ``(fine, coarse)`` as scipy CSR rows of 1 to 3 non-negative entries summing to 1,
    and a note of the rows ``renormalize`` rescaled (empty when none)."""
    m = _rows(matrix, name, (fine, coarse))
    count = np.diff(m.indptr)  # (fine,)
    bad = (count < 1) | (count > 3)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise HierarchyError(f"{name}: expected 1 to 3 entries per row (barycentric coordinates on a coarse face), "
                             f"got {int(count[row])} in row {row}")
    rows_of = np.repeat(np.arange(fine), count)  # (nnz,) row of each entry
    tol = (_RESCALE_TOL if renormalize else _ATOL) * (1 + 1e-9)  # the stated limits themselves pass
    if (m.data < -tol).any():
        k = int(np.argmin(m.data))
        raise HierarchyError(f"{name}: expected non-negative weights, got {m.data[k]:.9g} in row {rows_of[k]}")
    data = np.clip(m.data, 0.0, None)
    sums = np.bincount(rows_of, weights=data, minlength=fine)  # (fine,)
    off = np.abs(sums - 1.0)
    if (off > tol).any():
        row = int(np.flatnonzero(off > tol)[0])
        allowed = "" if renormalize else " (renormalize=True rescales rows within 5 % of 1)"
        raise HierarchyError(f"{name}: expected each row's weights to sum to 1, got {sums[row]:.9g} in row "
                             f"{row}{allowed}")
    changed = off > _ATOL * (1 + 1e-9)  # (fine,) rows rescaled, or with a negative weight clipped
    changed[rows_of[m.data < -_ATOL]] = True
    note = ""
    if changed.any():
        note = (f"{name}: {int(changed.sum())} of {fine} rows, sums {float(sums[changed].min()):.6g} to "
                f"{float(sums[changed].max()):.6g}")
    m.data = data / np.where(changed, sums, 1.0)[rows_of]  # rows within 1e-5 of 1 kept as given
    return m, note


def _padded(rows) -> tuple[np.ndarray, np.ndarray]:
    """CSR rows of 1 to 3 entries as ``(V, 3)`` indices and weights, padded with a row's first index at weight 0."""
    V = rows.shape[0]
    count = np.diff(rows.indptr)
    slot = np.arange(rows.nnz) - np.repeat(rows.indptr[:-1], count)  # position of each entry in its row
    which = np.repeat(np.arange(V), count)
    index = np.repeat(rows.indices[rows.indptr[:-1]].astype(np.int64)[:, None], 3, axis=1)  # (V, 3)
    weight = np.zeros((V, 3))
    index[which, slot] = rows.indices
    weight[which, slot] = rows.data
    return index, weight


def _entries(rows, r: int) -> str:
    """Row ``r``'s stored entries, as a message shows them."""
    a, b = rows.indptr[r], rows.indptr[r + 1]
    return f"columns {rows.indices[a:b].tolist()}, weights {[float(f'{w:.9g}') for w in rows.data[a:b]]}"


def _check_kept(rows, index: np.ndarray, weight: np.ndarray, kept: np.ndarray, l: int) -> None:
    """Row ``kept[j]`` of the up-sampling puts weight 1 on coarse vertex ``j`` (a kept vertex stays put).

    ``rows``: the CSR rows (for messages); ``index``, ``weight``: them padded, ``(V_fine, 3)``."""
    own = (weight[kept] * (index[kept] == np.arange(kept.shape[0])[:, None])).sum(1)  # (V_coarse,)
    bad = np.abs(own - 1.0) > _ATOL
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        hint = (f"; all {bad.size} kept rows miss: down[{l}]'s row order and up[{l}]'s column order differ?"
                if bad.all() else "")
        raise HierarchyError(f"up[{l}]: expected each vertex down[{l}] keeps to up-sample from its own coarse copy "
                             f"(weight 1), got row {int(kept[j])} with weight {own[j]:.9g} on coarse vertex {j} "
                             f"(its entries: {_entries(rows, int(kept[j]))}){hint}")


def _check_on_faces(rows, faces: np.ndarray, l: int) -> None:
    """Each up-sampling row's columns are a face, an edge or a vertex of the coarse level."""
    V = rows.shape[1]
    count = np.diff(rows.indptr)
    f = np.sort(faces, axis=1).astype(np.int64)  # (F, 3)
    tri = (f[:, 0] * V + f[:, 1]) * V + f[:, 2]  # (F,) face keys
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [0, 2]]]), axis=1)
    edge = e[:, 0] * V + e[:, 1]  # (3F,) edge keys
    bad = np.zeros(rows.shape[0], dtype=bool)
    for n, table in ((3, tri), (2, edge)):
        r = np.flatnonzero(count == n)  # rows with n entries
        if r.size:
            cols = np.sort(rows.indices[rows.indptr[r][:, None] + np.arange(n)], axis=1).astype(np.int64)
            key = (cols[:, 0] * V + cols[:, 1]) * V + cols[:, 2] if n == 3 else cols[:, 0] * V + cols[:, 1]
            bad[r] = ~np.isin(key, table)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise HierarchyError(f"up[{l}]: expected each row's columns to be a face, an edge or a vertex of level "
                             f"{l + 1} (faces[{l}]), got row {r} with {_entries(rows, r)} ({int(bad.sum())} such "
                             f"rows): up[{l}]'s columns and faces[{l}] number the coarse vertices differently?")


def _check_geometry(index: np.ndarray, weight: np.ndarray, fine_v: np.ndarray, fine_f: np.ndarray,
                    coarse_v: np.ndarray, l: int) -> None:
    """The up-sampled coarse vertices land near the fine ones: on average within one mean fine edge."""
    placed = np.einsum("vk,vkd->vd", weight, coarse_v[index])  # (V_fine, 3)
    miss = float(np.linalg.norm(placed - fine_v, axis=1).mean())
    e = np.concatenate([fine_f[:, [0, 1]], fine_f[:, [1, 2]], fine_f[:, [2, 0]]])
    edge = float(np.linalg.norm(fine_v[e[:, 0]] - fine_v[e[:, 1]], axis=1).mean())
    if miss > _GEOMETRY_EDGES * edge:
        raise HierarchyError(f"up[{l}]: expected the up-sampled level {l + 1} to land near level {l}'s vertices, "
                             f"got them {miss:.4g} away on average, {miss / edge:.2g} times level {l}'s mean edge "
                             f"length {edge:.4g}: matrices made for another template or vertex order?")


def _faces(value: Any, name: str, num_vertices: int) -> np.ndarray:
    """``(F, 3)`` int64 faces into ``num_vertices`` vertices."""
    if isinstance(value, torch.Tensor) and value.is_meta:
        raise TypeError(f"{name}: expected faces with values, got a meta tensor")
    f = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] == 0:
        raise HierarchyError(f"{name}: expected an (F, 3) array of triangles, got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        if not (np.issubdtype(f.dtype, np.floating) and np.array_equal(f, np.round(f))):
            raise TypeError(f"{name}: expected integer vertex indices (or floats holding whole numbers), got "
                            f"dtype {f.dtype}" + (" with fractions" if np.issubdtype(f.dtype, np.floating) else ""))
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= num_vertices:
        hint = " (1-based? subtract 1)" if f.min() == 1 and f.max() == num_vertices else ""
        raise HierarchyError(f"{name}: expected indices in [0, {num_vertices}) (the vertices the down-sampling "
                             f"keeps), got [{f.min()}, {f.max()}]{hint}")
    return f


def _level_hint(err: MeshValidationError, l: int) -> str:
    """A hint for a level whose faces leave vertices out: the faces of another level."""
    if "not used by any face" in str(err):
        return f" (faces[{l}] must be level {l + 1}'s faces, COMA's M[{l + 1}].f)"
    return ""
