r"""Data terms of the fit and the correspondence search of iterative closest points.

All terms are means, so their weights do not depend on the number of vertices,
points, landmarks or pixels:

* vertex loss (registered meshes), in squared target units:
  :math:`\sum_i w_i \lVert X_i - Y_i\rVert^2 / \sum_i w_i`; the colour loss of registered
  meshes with per-vertex colours is the same mean over the RGB colours of corresponding
  vertices, in squared RGB units;
* point-to-point and point-to-plane losses (scans; Besl & McKay, "A Method for
  Registration of 3-D Shapes", TPAMI 1992, and Chen & Medioni, "Object Modelling by
  Registration of Multiple Range Images", IVC 1992):
  :math:`\mathrm{mean}_j \lVert p_j - q_j\rVert^2` and
  :math:`\mathrm{mean}_j ((p_j - q_j)\cdot n_j)^2` over corresponding pairs;
* landmark loss, in squared pixels: :math:`\sum_k w_k \lVert \pi(X_{l_k}) - u_k\rVert^2 / \sum_k w_k`;
* photometric loss: mean squared RGB difference over the pixels the fitted face covers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree

from .._checks import check_tensor

__all__ = [
    "vertex_loss",
    "landmark_loss",
    "point_to_point_loss",
    "point_to_plane_loss",
    "photometric_loss",
    "face_normals",
    "surface_points",
    "Correspondences",
    "find_correspondences",
]


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """Mean over the last dimension, weighted. Shapes: ``(B, N), (N,) -> (B,)``."""
    if weights is None:
        return values.mean(-1)
    w = weights.to(values)
    return (values * w).sum(-1) / w.sum()


def vertex_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean squared vertex distance.

    Args:
        pred: ``(B, V, 3)`` fitted vertices.
        target: ``(V, 3)`` or ``(B, V, 3)`` registered target.
        weights: ``(V,)`` non-negative, or ``None`` (default) for all 1.

    Shapes:
        ``(B, V, 3), (V, 3) -> (B,)``.
    """
    check_tensor(pred, "pred", shape=("B", "V", 3))
    if tuple(target.shape[-2:]) != tuple(pred.shape[-2:]):
        raise ValueError(f"target: expected shape {tuple(pred.shape[-2:])} (as pred), got {tuple(target.shape)}")
    d2 = (pred - target).square().sum(-1)  # (B, V)
    return _weighted_mean(d2, weights)


def landmark_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean squared 2D distance of projected landmarks (squared pixels).

    Shapes:
        ``(B, K, 2), (K, 2) -> (B,)``.
    """
    check_tensor(pred, "pred", shape=("B", "K", 2))
    if tuple(target.shape[-2:]) != tuple(pred.shape[-2:]):
        raise ValueError(f"target: expected shape {tuple(pred.shape[-2:])} (as pred), got {tuple(target.shape)}")
    d2 = (pred - target).square().sum(-1)  # (B, K)
    return _weighted_mean(d2, weights)


def point_to_point_loss(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of corresponding points; ``0`` for no pairs.

    Shapes:
        ``(..., P, 3), (..., P, 3) -> (...)``.
    """
    if p.shape[-2] == 0:
        return p.new_zeros(p.shape[:-2])
    return (p - q).square().sum(-1).mean(-1)


def point_to_plane_loss(p: torch.Tensor, q: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Mean squared distance of ``p`` to the plane through ``q`` with unit normal ``n``; ``0`` for no pairs.

    Shapes:
        ``(..., P, 3), (..., P, 3), (..., P, 3) -> (...)``.
    """
    if p.shape[-2] == 0:
        return p.new_zeros(p.shape[:-2])
    return ((p - q) * normals).sum(-1).square().mean(-1)


def photometric_loss(rendered: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked pixels of the mean squared difference over channels; ``0`` where no pixel is masked.

    Args:
        rendered: ``(B, C, H, W)``.
        target: ``(C, H, W)`` or ``(B, C, H, W)``.
        mask: ``(B, H, W)`` or ``(H, W)`` bool: the pixels that count.

    Shapes:
        ``(B, C, H, W), (C, H, W), (B, H, W) -> (B,)``.
    """
    check_tensor(rendered, "rendered", shape=("B", "C", "H", "W"))
    if tuple(target.shape[-3:]) != tuple(rendered.shape[-3:]):
        raise ValueError(
            f"target: expected shape {tuple(rendered.shape[-3:])} (as rendered), got {tuple(target.shape)}")
    if tuple(mask.shape[-2:]) != tuple(rendered.shape[-2:]):
        raise ValueError(f"mask: expected shape {tuple(rendered.shape[-2:])} (the image's), got {tuple(mask.shape)}")
    m = mask.to(rendered.dtype).expand(rendered.shape[0], *rendered.shape[-2:])  # (B, H, W)
    d2 = (rendered - target).square().mean(1)  # (B, H, W)
    count = m.sum((-2, -1))  # (B,)
    return (d2 * m).sum((-2, -1)) / count.clamp(min=1.0)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit normals of the faces (counter-clockwise side), zero for degenerate faces.

    Shapes:
        ``(B, V, 3), (F, 3) -> (B, F, 3)``.
    """
    p = vertices[:, faces]  # (B, F, 3, 3)
    n = torch.linalg.cross(p[:, :, 1] - p[:, :, 0], p[:, :, 2] - p[:, :, 0], dim=-1)  # (B, F, 3)
    length = torch.linalg.vector_norm(n, dim=-1, keepdim=True)
    return n / length.clamp(min=1e-30)


def surface_points(vertices: torch.Tensor, faces: torch.Tensor, face: torch.Tensor, bary: torch.Tensor) -> torch.Tensor:
    """Points given by face ids and barycentric coordinates, differentiable in ``vertices``.

    Shapes:
        ``(B, V, 3), (F, 3), (P,), (P, 3) -> (B, P, 3)``.
    """
    corners = vertices[:, faces[face]]  # (B, P, 3, 3)
    return (corners * bary.to(vertices)[None, :, :, None]).sum(-2)  # (B, P, 3)


@dataclass
class Correspondences:
    """Pairs between a scan and the fitted surface (see :func:`find_correspondences`).

    Attributes:
        scan_index: ``(P,)`` scan points paired with the surface.
        face: ``(P,)`` the surface triangle of each.
        bary: ``(P, 3)`` barycentric coordinates of the closest point in it.
        model_index: ``(Q,)`` fitted vertices paired with the scan.
        scan_of_model: ``(Q,)`` the nearest scan point of each.
        scan_distance: median distance of the kept scan-to-model pairs.
        model_distance: median distance of the kept model-to-scan pairs (``nan`` if none).
    """

    scan_index: torch.Tensor
    face: torch.Tensor
    bary: torch.Tensor
    model_index: torch.Tensor
    scan_of_model: torch.Tensor
    scan_distance: float
    model_distance: float


def _trimmed(dist: np.ndarray, trim: float, extent: float) -> np.ndarray:
    """Indices of the distances at most ``trim`` times the median (the median never below ``1e-9 extent``)."""
    if dist.size == 0:
        return np.zeros(0, dtype=np.int64)
    limit = trim * max(float(np.median(dist)), 1e-9 * extent)
    return np.flatnonzero(dist <= limit)


def find_correspondences(
    vertices: np.ndarray,
    faces: np.ndarray,
    points: np.ndarray,
    tree: cKDTree | None = None,
    trim: float = 5.0,
    model_to_scan: bool = True,
) -> Correspondences:
    """Closest-point pairs between a scan and a surface, with outlier trimming.

    Scan to model: every scan point's exact closest point on the surface
    (:func:`mesh_decoder.hierarchy.operators.closest_points_on_surface`), as a face
    id and barycentrics. Model to scan (``model_to_scan``): every vertex's nearest scan
    point (a k-d tree over the scan). In each direction, pairs farther apart than
    ``trim`` times the median distance are dropped.

    Args:
        vertices: ``(V, 3)`` current fitted surface.
        faces: ``(F, 3)`` its triangles.
        points: ``(N, 3)`` the scan.
        tree: a ``scipy.spatial.cKDTree`` over ``points`` (built if ``None``).
        trim: outlier threshold in median distances (default 5.0; ``inf`` keeps all).
        model_to_scan: also pair vertices with scan points (default ``True``).

    Returns:
        :class:`Correspondences` (int64 / float64 CPU tensors).
    """
    from ..hierarchy.operators import closest_points_on_surface

    vertices = np.asarray(vertices, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    extent = float(np.linalg.norm(np.ptp(points, axis=0))) or 1.0
    face, bary, sq = closest_points_on_surface(points, vertices, np.asarray(faces, dtype=np.int64))
    dist = np.sqrt(sq)
    keep = _trimmed(dist, trim, extent)
    empty = torch.zeros(0, dtype=torch.int64)
    model_index, scan_of_model, model_distance = empty, empty, float("nan")
    if model_to_scan:
        tree = cKDTree(points) if tree is None else tree
        d, nn = tree.query(vertices)  # (V,), (V,)
        kept = _trimmed(d, trim, extent)
        model_index = torch.from_numpy(kept.astype(np.int64))
        scan_of_model = torch.from_numpy(nn[kept].astype(np.int64))
        model_distance = float(np.median(d[kept])) if kept.size else float("nan")
    return Correspondences(
        scan_index=torch.from_numpy(keep.astype(np.int64)),
        face=torch.from_numpy(face[keep].astype(np.int64)),
        bary=torch.from_numpy(bary[keep]),
        model_index=model_index,
        scan_of_model=scan_of_model,
        scan_distance=float(np.median(dist[keep])) if keep.size else float("nan"),
        model_distance=model_distance,
    )
