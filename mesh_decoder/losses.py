r"""Mesh losses for training and fitting decoders: Chamfer distance and the mesh regularisers.

Batched over meshes of one topology, ``vertices (B, V, 3)`` with shared ``faces
(F, 3)``, which is what the decoders here output. The definitions follow
PyTorch3D's ``pytorch3d.loss`` functions of the same names, so a loss ported from
code that uses them keeps its meaning and its weights:

* :func:`chamfer_distance`: for each point of ``x`` the squared distance to the
  nearest point of ``y``, averaged over ``x``, plus the same from ``y`` to ``x``;
  averaged over the batch.
* :func:`mesh_edge_loss`: :math:`\mathrm{mean}_{(i,j) \in E} (\lVert x_i - x_j\rVert - t)^2`,
  the edges counted once.
* :func:`mesh_laplacian_smoothing`: :math:`\mathrm{mean}_i \lVert \delta_i \rVert`
  (not squared), with :math:`\delta_i = \sum_j w_{ij} x_j / \sum_j w_{ij} - x_i`;
  ``"uniform"`` weights are 1 per edge, ``"cot"`` weights are
  :math:`\cot\alpha_{ij} + \cot\beta_{ij}` (the angles opposite the edge), and
  ``"cotcurv"`` gives :math:`\delta_i = \sum_j w_{ij}(x_j - x_i) / (4 A_i)` with
  :math:`A_i` the area of the faces around vertex ``i`` (mean curvature normal).
  Cotangent weights and areas are computed from the vertices without gradient, as
  PyTorch3D does, and each face's area is floored at :data:`MIN_FACE_AREA` as
  PyTorch3D floors it, so a zero-area face gives large but finite weights.
* :func:`mesh_normal_consistency`: :math:`\mathrm{mean} (1 - \cos(n_0, n_1))` over
  the pairs of faces that share an edge; the normals are taken from the shared
  edge ``(v_0, v_1)`` and each face's third vertex ``a`` / ``b`` as
  :math:`n_0 = (v_1 - v_0)\times(a - v_0)`, :math:`n_1 = (b - v_0)\times(v_1 - v_0)`,
  so the loss does not depend on the faces' winding.

Each mesh's loss is its mean over its points, edges, vertices or face pairs; the
batch loss is the mean over meshes (``reduction="none"`` returns the ``(B,)``
losses). Differences from PyTorch3D: :func:`chamfer_distance` returns the loss
alone (no normal term); a vertex on no face adds nothing to
:func:`mesh_laplacian_smoothing` (PyTorch3D adds its norm ``|x_i|``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import nn

from ._checks import as_faces, real_number
from .nn.graph import mesh_edge_index

__all__ = [
    "chamfer_distance",
    "mesh_edge_loss",
    "mesh_laplacian_smoothing",
    "mesh_normal_consistency",
    "mesh_edges",
    "MeshTopology",
]

_REDUCTIONS = ("mean", "sum", "none")
_LAPLACIAN_METHODS = ("uniform", "cot", "cotcurv")
#: The floor of a face's area in the cotangent weights, in squared data units: PyTorch3D's
#: ``cot_laplacian`` floors the squared area (Heron's formula) at 1e-12. Far below any face of a
#: mesh in millimetres; in metres it reaches faces under 1 mm^2 (a dense 5,023-vertex face's
#: smallest is about 2 mm^2).
MIN_FACE_AREA = 1e-6
#: Elements of one block of the point-to-point distance matrix of :func:`chamfer_distance` off the CPU.
_CHAMFER_BLOCK = 1 << 22


def _check_points(x: Any, name: str, dims: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or (dims is not None and x.shape[-1] != dims):
        want = f"(B, N, {dims})" if dims is not None else "(B, N, D)"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one set, got an empty batch {tuple(x.shape)}")
    return x


def _reduce(per_mesh: torch.Tensor, reduction: str) -> torch.Tensor:
    """``(B,)`` losses -> their mean, sum, or themselves (``"none"``)."""
    if reduction == "mean":
        return per_mesh.mean()
    if reduction == "sum":
        return per_mesh.sum()
    return per_mesh


def _check_reduction(reduction: Any) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {list(_REDUCTIONS)}, got {reduction!r}")
    return reduction


def mesh_edges(faces: Any) -> torch.Tensor:
    """The undirected edges of ``faces``, each once as ``(i, j)`` with ``i < j``, sorted: the
    forward half of :func:`~mesh_decoder.nn.mesh_edge_index` (which drops a degenerate face's self-loop).

    Shapes: ``(F, 3) -> (E, 2)`` int64, on ``faces``' device.
    """
    device = faces.device if isinstance(faces, torch.Tensor) else torch.device("cpu")
    f = as_faces(faces, None, device)
    directed = mesh_edge_index(f, int(f.max()) + 1 if f.numel() else 0)  # (2, 2E), sorted by (i, j)
    return directed[:, directed[0] < directed[1]].t()  # (E, 2)


class MeshTopology(nn.Module):
    """A topology's index data, computed once for losses evaluated every step.

    Pass it wherever a loss takes ``faces``: the edges and the pairs of faces that
    share an edge are then not recomputed on each call. The data are buffers, so
    ``.to(device)`` moves them with the model.

    Args:
        faces: ``(F, 3)`` integer indices (tensor or array).

    Attributes (buffers):
        faces: ``(F, 3)`` int64.
        edges: ``(E, 2)`` int64, each edge once with ``i < j`` (:func:`mesh_edges`).
        pair_edge: ``(P, 2)`` int64, the shared edge of each pair of faces that share one.
        pair_third: ``(P, 2)`` int64, the third vertex of each face of the pair.
    """

    def __init__(self, faces: Any) -> None:
        super().__init__()
        device = faces.device if isinstance(faces, torch.Tensor) else torch.device("cpu")
        f = as_faces(faces, None, device)
        pair_edge, pair_third = _face_pairs(f)
        self.register_buffer("faces", f)
        self.register_buffer("edges", mesh_edges(f))
        self.register_buffer("pair_edge", pair_edge)
        self.register_buffer("pair_third", pair_third)

    def extra_repr(self) -> str:
        return f"faces={self.faces.shape[0]}, edges={self.edges.shape[0]}, face_pairs={self.pair_edge.shape[0]}"

    def check_vertices(self, num_vertices: int) -> None:
        """``ValueError`` unless every face index is below ``num_vertices``."""
        as_faces(self.faces, num_vertices, self.faces.device)


def _topology(faces: Any, num_vertices: int, device: torch.device) -> MeshTopology | torch.Tensor:
    """``faces`` checked against the vertices: a :class:`MeshTopology` as given, else ``(F, 3)`` int64."""
    if isinstance(faces, MeshTopology):
        faces.check_vertices(num_vertices)
        if faces.faces.device != device:
            raise ValueError(f"faces: expected a MeshTopology on {device} (the vertices'), got one on "
                             f"{faces.faces.device}")
        return faces
    return as_faces(faces, num_vertices, device)


def _mesh_vertices(vertices: Any) -> torch.Tensor:
    """``(V, 3)`` or ``(B, V, 3)`` -> ``(B, V, 3)``."""
    if isinstance(vertices, torch.Tensor) and vertices.dim() == 2:
        return _check_points(vertices.unsqueeze(0), "vertices", 3)
    if isinstance(vertices, torch.Tensor) and vertices.dim() != 3:
        raise ValueError(f"vertices: expected shape (V, 3) or (B, V, 3), got {tuple(vertices.shape)}")
    return _check_points(vertices, "vertices", 3)


def chamfer_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
    single_directional: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Chamfer distance between point sets, batched (squared Euclidean distances).

    :math:`\mathrm{mean}_{p \in x} \min_{q \in y} \lVert p - q\rVert^2 +
    \mathrm{mean}_{q \in y} \min_{p \in x} \lVert p - q\rVert^2` per batch element.
    The nearest neighbours are found without gradient (on the CPU with a k-d tree,
    on a GPU in blocks of the distance matrix, so memory stays bounded for
    100,000-point sets); the loss is then computed exactly from the chosen pairs,
    so gradients reach both ``x`` and ``y`` as in PyTorch3D.

    Args:
        x: ``(B, P1, D)`` points (a decoder's vertices, say).
        y: ``(B, P2, D)`` points (a scan's), same ``B`` and ``D``.
        x_lengths: ``(B,)`` int, the points of each ``x`` that count (the rest is
            padding), or ``None`` (all ``P1``). Likewise ``y_lengths``.
        single_directional: only the ``x`` -> ``y`` term. Default ``False``.
        reduction: ``"mean"`` (default) or ``"sum"`` over the batch, or ``"none"``.

    Returns:
        A scalar, or ``(B,)`` with ``reduction="none"``.

    Shapes:
        ``(B, P1, D), (B, P2, D) -> ()``.
    """
    x = _check_points(x, "x")
    y = _check_points(y, "y")
    if y.shape[0] != x.shape[0] or y.shape[2] != x.shape[2]:
        raise ValueError(f"y: expected shape ({x.shape[0]}, P2, {x.shape[2]}) to match x {tuple(x.shape)}, "
                         f"got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"y: expected a tensor on {x.device} (x's), got one on {y.device}")
    reduction = _check_reduction(reduction)
    nx = _lengths(x_lengths, x, "x")
    ny = _lengths(y_lengths, y, "y")
    per_mesh = _one_way(x, y, nx, ny)
    if not single_directional:
        per_mesh = per_mesh + _one_way(y, x, ny, nx)
    return _reduce(per_mesh, reduction)


def _lengths(lengths: Any, points: torch.Tensor, points_name: str) -> torch.Tensor:
    """``(B,)`` int64: how many of each set's points count (``lengths``, or all)."""
    B, P = int(points.shape[0]), int(points.shape[1])
    name = f"{points_name}_lengths"
    if lengths is None:
        if P == 0:
            raise ValueError(f"{points_name}: expected at least one point per set, got shape {tuple(points.shape)}")
        return torch.full((B,), P, dtype=torch.long, device=points.device)
    if not isinstance(lengths, torch.Tensor) or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise TypeError(f"{name}: expected an integer torch.Tensor, got {getattr(lengths, 'dtype', type(lengths))}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"{name}: expected shape ({B},), got {tuple(lengths.shape)}")
    lengths = lengths.to(device=points.device, dtype=torch.long)
    if int(lengths.min()) < 1 or int(lengths.max()) > P:
        raise ValueError(f"{name}: expected lengths in [1, {P}], got {int(lengths.min())} to {int(lengths.max())}")
    return lengths


def _nearest(x: torch.Tensor, y: torch.Tensor, nx: torch.Tensor, ny: torch.Tensor) -> torch.Tensor:
    """``(B, P1)`` int64: for each of ``x``'s first ``nx`` points the index of the nearest
    of ``y``'s first ``ny`` (0 for padding), without gradient: :func:`_nearest_tree` on
    the CPU, :func:`_nearest_blocks` elsewhere."""
    return (_nearest_tree if x.device.type == "cpu" else _nearest_blocks)(x.detach(), y.detach(), nx, ny)


def _nearest_tree(x: torch.Tensor, y: torch.Tensor, nx: torch.Tensor, ny: torch.Tensor) -> torch.Tensor:
    """:func:`_nearest` by a k-d tree per set (scipy's ``cKDTree``), on the CPU."""
    B, P1, _ = x.shape
    out = np.zeros((B, P1), dtype=np.int64)
    for b in range(B):
        n, m = int(nx[b]), int(ny[b])
        tree = cKDTree(y[b, :m].cpu().double().numpy())
        out[b, :n] = tree.query(x[b, :n].cpu().double().numpy(), k=1, workers=torch.get_num_threads())[1]
    return torch.from_numpy(out).to(x.device)


def _nearest_blocks(x: torch.Tensor, y: torch.Tensor, nx: torch.Tensor, ny: torch.Tensor) -> torch.Tensor:
    """:func:`_nearest` by blocks of :data:`_CHAMFER_BLOCK` distances, one batched product each (GPUs)."""
    B, P1, _ = x.shape
    P2 = int(y.shape[1])
    nearest = torch.zeros(B, P1, dtype=torch.long, device=x.device)  # (B, P1)
    rows = max(1, _CHAMFER_BLOCK // max(1, B * P2))
    padded_y = torch.arange(P2, device=x.device).view(1, 1, P2) >= ny.view(B, 1, 1)  # (B, 1, P2)
    yy = y.pow(2).sum(dim=-1).unsqueeze(1)  # (B, 1, P2)
    for r0 in range(0, P1, rows):  # x and y come detached: no graph is recorded
        # |p - q|^2 less |p|^2 (the same for every q of a row): |q|^2 - 2 p.q
        d = torch.baddbmm(yy, x[:, r0 : r0 + rows], y.transpose(1, 2), alpha=-2)  # (B, r, P2)
        nearest[:, r0 : r0 + rows] = d.masked_fill_(padded_y, math.inf).argmin(dim=2)
    padded_x = torch.arange(P1, device=x.device).view(1, P1) >= nx.view(B, 1)  # (B, P1)
    return nearest.masked_fill_(padded_x, 0)


def _one_way(x: torch.Tensor, y: torch.Tensor, nx: torch.Tensor, ny: torch.Tensor) -> torch.Tensor:
    """``(B,)``: the mean over each ``x``'s first ``nx`` points of the squared distance
    to the nearest of ``y``'s first ``ny`` points, in ``x``'s dtype; squared and summed in
    at least float32 (a float16 sum over a millimetre-scale face overflowed to inf)."""
    B, P1, D = x.shape
    nearest = _nearest(x, y, nx, ny)  # (B, P1)
    q = torch.gather(y, 1, nearest.unsqueeze(-1).expand(B, P1, D))  # (B, P1, D)
    sq = (x - q).to(torch.promote_types(x.dtype, torch.float32)).pow(2).sum(dim=-1)  # (B, P1)
    counted = torch.arange(P1, device=x.device).view(1, P1) < nx.view(B, 1)  # (B, P1)
    return ((sq * counted).sum(dim=1) / nx.to(sq.dtype)).to(x.dtype)  # (B,)


def _faces_and_edges(faces: Any, x: torch.Tensor, need_edges: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(F, 3)`` faces checked against ``x`` ``(B, V, 3)``, and their edges ``(E, 2)`` when needed."""
    topo = _topology(faces, int(x.shape[1]), x.device)
    f = topo.faces if isinstance(topo, MeshTopology) else topo
    if f.shape[0] == 0:
        raise ValueError("faces: expected at least one face, got none")
    if not need_edges:
        return f, None
    return f, (topo.edges if isinstance(topo, MeshTopology) else mesh_edges(f))


def mesh_edge_loss(vertices: torch.Tensor, faces: Any, target_length: float = 0.0,
                   reduction: str = "mean") -> torch.Tensor:
    """Mean squared difference of the edge lengths from ``target_length`` (module docstring).

    Args:
        vertices: ``(B, V, 3)`` or ``(V, 3)``.
        faces: ``(F, 3)`` integer indices shared by the batch, or their :class:`MeshTopology`.
        target_length: default 0 (shrinks every edge; PyTorch3D's default).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (``(B,)``) over the batch.

    Shapes:
        ``(B, V, 3), (F, 3) -> ()``.
    """
    x = _mesh_vertices(vertices)
    reduction = _check_reduction(reduction)
    target = real_number(target_length)
    if target is None or not math.isfinite(target):
        raise TypeError(f"target_length: expected a finite number, got {target_length!r}")
    _, edges = _faces_and_edges(faces, x, need_edges=True)  # (E, 2)
    xv = x.transpose(0, 1)  # (V, B, 3): gathers and their gradients run over the first dimension
    length = (xv[edges[:, 0]] - xv[edges[:, 1]]).norm(dim=-1)  # (E, B)
    return _reduce((length - target).pow(2).mean(dim=0), reduction)


def _cotangents(x: torch.Tensor, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per face, the cotangents of its three angles and its area, floored at :data:`MIN_FACE_AREA` (no gradient).

    Shapes: ``(B, V, 3), (F, 3) -> (B, F, 3), (B, F)``; ``cot[..., k]`` is at corner ``k``,
    opposite the edge ``(f[k+1], f[k+2])``.
    """
    with torch.no_grad():
        v0, v1, v2 = x[:, f[:, 0]], x[:, f[:, 1]], x[:, f[:, 2]]  # (B, F, 3) each
        a2 = (v1 - v2).pow(2).sum(-1)  # (B, F) squared side opposite corner 0
        b2 = (v2 - v0).pow(2).sum(-1)
        c2 = (v0 - v1).pow(2).sum(-1)
        area = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1).norm(dim=-1) / 2  # (B, F)
        area = area.clamp(min=MIN_FACE_AREA)  # a zero-area face: large finite weights, not inf and NaN
        cot = torch.stack([b2 + c2 - a2, c2 + a2 - b2, a2 + b2 - c2], dim=-1) / (4 * area).unsqueeze(-1)  # (B, F, 3)
    return cot, area


def mesh_laplacian_smoothing(vertices: torch.Tensor, faces: Any, method: str = "uniform",
                             reduction: str = "mean") -> torch.Tensor:
    """Mean norm of the Laplacian of the vertices (module docstring).

    Args:
        vertices: ``(B, V, 3)`` or ``(V, 3)``.
        faces: ``(F, 3)`` integer indices shared by the batch, or their :class:`MeshTopology`.
        method: ``"uniform"`` (default), ``"cot"`` or ``"cotcurv"``. The cotangent weights and
            areas are held constant in the gradient (module docstring), so for these two the
            gradient is not the full derivative and ``gradcheck`` against finite differences fails.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (``(B,)``) over the batch.

    Shapes:
        ``(B, V, 3), (F, 3) -> ()``.
    """
    x = _mesh_vertices(vertices)
    reduction = _check_reduction(reduction)
    if method not in _LAPLACIAN_METHODS:
        raise ValueError(f"method: expected one of {list(_LAPLACIAN_METHODS)}, got {method!r}")
    B, V, _ = x.shape
    f, e = _faces_and_edges(faces, x, need_edges=method == "uniform")
    xv = x.transpose(0, 1)  # (V, B, 3)
    if method == "uniform":
        i, j = torch.cat([e[:, 0], e[:, 1]]), torch.cat([e[:, 1], e[:, 0]])  # (2E,) both directions
        weight_sum = x.new_zeros(V).index_add_(0, i, x.new_ones(i.shape[0])).view(V, 1)  # (V, 1)
        neighbours = x.new_zeros(V, B, 3).index_add_(0, i, xv[j])  # (V, B, 3)
    else:
        cot, area = _cotangents(x, f)  # (B, F, 3), (B, F)
        # corner k's cotangent weighs the edge opposite it, (f[k+1], f[k+2]), both ways
        i = torch.cat([f[:, 1], f[:, 2], f[:, 0], f[:, 2], f[:, 0], f[:, 1]])  # (6F,)
        j = torch.cat([f[:, 2], f[:, 0], f[:, 1], f[:, 1], f[:, 2], f[:, 0]])  # (6F,)
        w = torch.cat([cot[..., 0], cot[..., 1], cot[..., 2]] * 2, dim=1).t()  # (6F, B)
        weight_sum = x.new_zeros(V, B).index_add_(0, i, w)  # (V, B)
        neighbours = x.new_zeros(V, B, 3).index_add_(0, i, w.unsqueeze(-1) * xv[j])  # (V, B, 3)
    on_a_face = torch.zeros(V, dtype=torch.bool, device=x.device)
    on_a_face[f.reshape(-1)] = True
    if method == "cotcurv":
        vertex_area = x.new_zeros(V, B).index_add_(0, f.reshape(-1), area.t().repeat_interleave(3, dim=0))  # (V, B)
        scale = torch.where(vertex_area > 0, 0.25 / vertex_area, torch.zeros_like(vertex_area))  # (V, B)
        delta = (neighbours - weight_sum.unsqueeze(-1) * xv) * scale.unsqueeze(-1)  # (V, B, 3)
    else:
        scale = torch.where(weight_sum != 0, 1.0 / weight_sum, torch.zeros_like(weight_sum))  # (V, B) or (V, 1)
        delta = neighbours * scale.unsqueeze(-1) - xv  # (V, B, 3)
    delta = delta * on_a_face.view(V, 1, 1)  # a vertex on no face adds nothing
    return _reduce(delta.norm(dim=-1).mean(dim=0), reduction)


def _face_pairs(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair of faces sharing an edge: the edge ``(v0, v1)`` (``v0 < v1``) and each face's third vertex.

    Shapes: ``(F, 3) -> (P, 2), (P, 2)``.
    """
    faces = f.cpu().numpy()
    F = faces.shape[0]
    corner = np.arange(3)
    a, b = faces[:, corner], faces[:, (corner + 1) % 3]  # (F, 3) each: edge k from corner k
    third = faces[:, (corner + 2) % 3].reshape(-1)  # (3F,)
    key = np.sort(np.stack([a.reshape(-1), b.reshape(-1)], axis=1), axis=1)  # (3F, 2)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key, third = key[order], third[order]
    start = np.flatnonzero(np.r_[True, np.any(key[1:] != key[:-1], axis=1)])  # first half-edge of each edge
    size = np.diff(np.r_[start, 3 * F])
    edges, o0, o1 = [], [], []
    for k in range(2, int(size.max(initial=0)) + 1):  # edges shared by k faces: all their pairs
        first = start[size == k]
        for s in range(k):
            for t in range(s + 1, k):
                edges.append(key[first]); o0.append(third[first + s]); o1.append(third[first + t])
    if not edges:
        empty = torch.empty(0, 2, dtype=torch.long, device=f.device)
        return empty, empty
    pair_edge = torch.from_numpy(np.concatenate(edges)).to(f.device)  # (P, 2)
    pair_third = torch.from_numpy(np.stack([np.concatenate(o0), np.concatenate(o1)], axis=1)).to(f.device)  # (P, 2)
    return pair_edge, pair_third


def mesh_normal_consistency(vertices: torch.Tensor, faces: Any, reduction: str = "mean") -> torch.Tensor:
    """Mean of ``1 - cos`` of the angle between the normals of faces sharing an edge
    (module docstring); 0 for a flat mesh, up to 2 for a folded one.

    Args:
        vertices: ``(B, V, 3)`` or ``(V, 3)``.
        faces: ``(F, 3)`` integer indices shared by the batch, or their :class:`MeshTopology`;
            at least two faces must share an edge.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (``(B,)``) over the batch.

    Shapes:
        ``(B, V, 3), (F, 3) -> ()``.
    """
    x = _mesh_vertices(vertices)
    reduction = _check_reduction(reduction)
    topo = _topology(faces, int(x.shape[1]), x.device)
    edge, third = (topo.pair_edge, topo.pair_third) if isinstance(topo, MeshTopology) else _face_pairs(topo)
    if edge.shape[0] == 0:
        raise ValueError("faces: expected two faces sharing an edge, got none that do")
    xv = x.transpose(0, 1)  # (V, B, 3)
    v0 = xv[edge[:, 0]]  # (P, B, 3)
    e = xv[edge[:, 1]] - v0
    n0 = torch.linalg.cross(e, xv[third[:, 0]] - v0, dim=-1)  # (P, B, 3)
    n1 = torch.linalg.cross(xv[third[:, 1]] - v0, e, dim=-1)
    cos = torch.nn.functional.cosine_similarity(n0, n1, dim=-1, eps=1e-6)  # (P, B)
    return _reduce((1 - cos).mean(dim=0), reduction)
