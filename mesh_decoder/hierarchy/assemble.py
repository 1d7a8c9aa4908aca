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

from typing import Any, Sequence

import numpy as np
import torch

from .. import __version__
from .._checks import check_bool
from ..errors import HierarchyError, MeshValidationError
from ..mesh.container import Mesh
from .build import _FLOAT, _check_template, _level, _normalise_texture_size, _per_level, _template_texels
from .container import MeshHierarchy
from .decimate import check_manifold
from .storage import FORMAT_VERSION, check_hierarchy

__all__ = ["hierarchy_from_matrices"]

#: How far a selection entry may be from 1, and a row of up-sampling weights from summing to 1.
_ATOL = 1e-5


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
) -> MeshHierarchy:
    """A hierarchy on given down- and up-sampling matrices (COMA's ``D`` and ``U``).

    Args:
        template: the full-resolution :class:`Mesh` (level 0), with the vertex order the
            matrices' columns (``down[0]``) and rows (``up[0]``) use.
        down: ``L`` matrices, ``down[l]`` of shape ``(V_{l+1}, V_l)``, each row a single
            entry equal to 1 that selects a distinct fine vertex: scipy sparse matrices or
            arrays (any format), torch tensors (sparse or dense) or numpy arrays.
        up: ``L`` matrices of the same kinds, ``up[l]`` of shape ``(V_l, V_{l+1})``, each row
            1 to 3 non-negative entries summing to 1 (barycentric coordinates on a coarse
            face); the row of a kept vertex must put weight 1 on its own coarse copy.
        faces: ``L`` ``(F_{l+1}, 3)`` integer arrays or tensors, the faces of levels ``1..L``
            (COMA: ``[m.f for m in M[1:]]``). Each level's positions are the template's
            vertices that ``down`` keeps.
        spiral_lengths: spiral length per level (``L + 1`` values) or one int, default 9.
        dilations: spiral dilation per level or one int, default 1.
        texture_size: the template's texel map size, ``S`` or ``(H, W)``, or ``None`` (the
            default) for none; a template without UVs gets automatic ones.
        allow_uv_overlap: as in :func:`~mesh_decoder.hierarchy.build_hierarchy`.

    Returns:
        A checked :class:`MeshHierarchy` (:func:`~mesh_decoder.hierarchy.check_hierarchy`)
        with ``L + 1`` levels. Its ``meta`` records ``"source": "matrices"``, the level
        sizes, template and UV hashes and the spiral parameters, but no ``factors``: a
        training config that loads it through ``hierarchy.path`` states them.

    Raises:
        TypeError: a matrix or parameter of the wrong type.
        HierarchyError: a matrix of the wrong shape or kind, naming it (``down[1]``,
            ``up[0]``, ...), the first offending row and what it holds.
        MeshValidationError: the template or a level's faces are invalid (non-manifold, ...).
    """
    if not isinstance(template, Mesh):
        raise TypeError(f"template: expected a mesh_decoder Mesh, got {type(template).__name__}")
    for name, value in (("down", down), ("up", up), ("faces", faces)):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise TypeError(f"{name}: expected a list with one entry per pair of levels, got {type(value).__name__}")
    L = len(down)
    if L == 0:
        raise HierarchyError("down: expected at least one down-sampling matrix, got none")
    if len(up) != L or len(faces) != L:
        raise HierarchyError(f"expected as many up-sampling matrices and face arrays as down-sampling matrices "
                             f"({L}), got {len(up)} up and {len(faces)} faces")
    spiral_lengths = _per_level(spiral_lengths, L + 1, "spiral_lengths")
    dilations = _per_level(dilations, L + 1, "dilations")
    tex = _normalise_texture_size(texture_size)
    allow_uv_overlap = check_bool(allow_uv_overlap, "allow_uv_overlap")
    _check_template(template)

    vertices = [np.asarray(template.vertices)]
    level_faces = [np.asarray(template.faces)]
    original = [np.arange(template.num_vertices, dtype=np.int64)]
    down_index, up_index, up_weight = [], [], []
    for l in range(L):
        fine = vertices[-1].shape[0]
        kept = _selection(down[l], f"down[{l}]", fine)
        index, weight = _barycentric(up[l], f"up[{l}]", fine, kept.shape[0])
        _check_kept(index, weight, kept, l)
        f = _faces(faces[l], f"faces[{l}]", kept.shape[0])
        v = vertices[-1][kept]
        try:
            Mesh(v, f).validate()
            check_manifold(v, f)
        except MeshValidationError as err:
            raise MeshValidationError(f"level {l + 1} (faces[{l}] on the vertices down[{l}] keeps): {err}") from None
        down_index.append(torch.from_numpy(kept))
        up_index.append(torch.from_numpy(index))
        up_weight.append(torch.from_numpy(weight).to(_FLOAT))
        vertices.append(v)
        level_faces.append(f)
        original.append(original[-1][kept])

    meta = {
        "template_hash": template.content_hash(),
        "source": "matrices",
        "sizes": [int(v.shape[0]) for v in vertices],
        "spiral_lengths": spiral_lengths,
        "dilations": dilations,
        "texture_size": tex,
        "uv_hash": template.uv_hash() if tex is not None else None,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
    }
    if allow_uv_overlap and tex is not None:
        meta["allow_uv_overlap"] = True
    levels = [_level(l, v, f, o, spiral_lengths[l], dilations[l], None)
              for l, (v, f, o) in enumerate(zip(vertices, level_faces, original))]
    texels = None if tex is None else _template_texels(template, tex, allow_uv_overlap, None)
    h = MeshHierarchy(levels=levels, down=down_index, up_index=up_index, up_weight=up_weight, texel_map=texels,
                      meta=meta)
    return check_hierarchy(h)


def _rows(matrix: Any, name: str, shape: tuple[int, int]):
    """``matrix`` as a scipy CSR array of ``shape`` with sorted, summed entries and no stored zeros."""
    import scipy.sparse as sp

    if isinstance(matrix, torch.Tensor):
        t = matrix.detach().cpu()
        if t.layout != torch.strided:
            t = t.to_sparse_coo().coalesce()
            rows, cols = t.indices().numpy()
            matrix = sp.coo_array((t.values().double().numpy(), (rows, cols)), shape=tuple(t.shape))
        else:
            matrix = t.double().numpy()
    if isinstance(matrix, np.ndarray):
        if matrix.ndim != 2 or not (np.issubdtype(matrix.dtype, np.number) or matrix.dtype == bool):
            raise TypeError(f"{name}: expected a 2-D numeric matrix, got an array of shape {matrix.shape} "
                            f"and dtype {matrix.dtype}")
        matrix = sp.coo_array(matrix.astype(np.float64))
    if not sp.issparse(matrix):
        raise TypeError(f"{name}: expected a scipy sparse matrix, a torch tensor or a numpy array, "
                        f"got {type(matrix).__name__}")
    if tuple(matrix.shape) != shape:
        raise HierarchyError(f"{name}: expected shape {shape}, got {tuple(matrix.shape)}")
    m = sp.csr_array(matrix, dtype=np.float64)
    m.sum_duplicates()
    m.eliminate_zeros()
    if not np.isfinite(m.data).all():
        raise HierarchyError(f"{name}: expected finite entries, got {m.data[~np.isfinite(m.data)][0]}")
    return m


def _selection(matrix: Any, name: str, fine: int) -> np.ndarray:
    """The ``(V_coarse,)`` fine vertices a selection matrix ``(V_coarse, fine)`` keeps."""
    import scipy.sparse as sp

    if not isinstance(matrix, (torch.Tensor, np.ndarray)) and not sp.issparse(matrix):
        raise TypeError(f"{name}: expected a scipy sparse matrix, a torch tensor or a numpy array, "
                        f"got {type(matrix).__name__}")
    if len(matrix.shape) != 2 or matrix.shape[0] < 1:
        raise HierarchyError(f"{name}: expected a (V_coarse, {fine}) matrix, got shape {tuple(matrix.shape)}")
    coarse = int(matrix.shape[0])
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
    if coarse >= fine:
        raise HierarchyError(f"{name}: expected fewer coarse than fine vertices, got {coarse} from {fine}")
    return kept


def _barycentric(matrix: Any, name: str, fine: int, coarse: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fine, 3)`` coarse indices and weights of an up-sampling matrix ``(fine, coarse)``.

    A row with fewer than 3 entries is padded with its first index at weight 0.
    """
    m = _rows(matrix, name, (fine, coarse))
    count = np.diff(m.indptr)  # (fine,)
    bad = (count < 1) | (count > 3)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise HierarchyError(f"{name}: expected 1 to 3 entries per row (barycentric coordinates on a coarse face), "
                             f"got {int(count[row])} in row {row}")
    if (m.data < -_ATOL).any():
        k = int(np.argmin(m.data))
        row = int(np.searchsorted(m.indptr, k, side="right") - 1)
        raise HierarchyError(f"{name}: expected non-negative weights, got {m.data[k]:.9g} in row {row}")
    sums = m.sum(axis=1)  # (fine,)
    if (np.abs(sums - 1.0) > _ATOL).any():
        row = int(np.flatnonzero(np.abs(sums - 1.0) > _ATOL)[0])
        raise HierarchyError(f"{name}: expected each row's weights to sum to 1, got {sums[row]:.9g} in row {row}")
    slot = np.arange(m.data.shape[0]) - np.repeat(m.indptr[:-1], count)  # position of each entry in its row
    rows = np.repeat(np.arange(fine), count)
    index = np.repeat(m.indices[m.indptr[:-1]].astype(np.int64)[:, None], 3, axis=1)  # (fine, 3) padding
    weight = np.zeros((fine, 3))
    index[rows, slot] = m.indices
    weight[rows, slot] = np.clip(m.data, 0.0, None)
    return index, weight


def _check_kept(index: np.ndarray, weight: np.ndarray, kept: np.ndarray, l: int) -> None:
    """Row ``kept[j]`` of the up-sampling puts weight 1 on coarse vertex ``j`` (a kept vertex stays put)."""
    own = (weight[kept] * (index[kept] == np.arange(kept.shape[0])[:, None])).sum(1)  # (V_coarse,)
    bad = np.abs(own - 1.0) > _ATOL
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise HierarchyError(f"up[{l}]: expected each vertex down[{l}] keeps to up-sample from its own coarse copy "
                             f"(weight 1), got row {int(kept[j])} with weight {own[j]:.9g} on coarse vertex {j} "
                             f"(its entries: columns {index[kept[j]].tolist()}, weights {weight[kept[j]].tolist()})")


def _faces(value: Any, name: str, num_vertices: int) -> np.ndarray:
    """``(F, 3)`` int64 faces into ``num_vertices`` vertices."""
    f = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if f.ndim != 2 or f.shape[1] != 3 or f.shape[0] == 0:
        raise HierarchyError(f"{name}: expected an (F, 3) array of triangles, got shape {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        if not (np.issubdtype(f.dtype, np.floating) and np.array_equal(f, np.round(f))):
            raise HierarchyError(f"{name}: expected integer vertex indices, got dtype {f.dtype}")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= num_vertices:
        raise HierarchyError(f"{name}: expected indices in [0, {num_vertices}) (the vertices the down-sampling "
                             f"keeps), got [{f.min()}, {f.max()}]")
    return f
