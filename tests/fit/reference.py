"""Slow, obviously correct references for the fitting code: loops, dense matrices, brute force."""

from __future__ import annotations

import numpy as np
import torch


def closest_points_on_triangles(p, a, b, c):
    """Closest point to ``p`` on each triangle ``(a_k, b_k, c_k)``: the nearest of the corners, the clamped
    projections onto the three edges and the projection onto the plane when it falls inside (brute force over
    these seven candidates, numpy, vectorised over triangles only).

    Shapes: ``p (3,)``, ``a, b, c (T, 3)`` -> ``(T, 3)``.
    """
    candidates = [a, b, c]
    for u, v in ((a, b), (b, c), (c, a)):
        d = v - u
        t = np.clip(((p - u) * d).sum(1) / (d * d).sum(1), 0.0, 1.0)
        candidates.append(u + t[:, None] * d)
    n = np.cross(b - a, c - a)
    q = p - (((p - a) * n).sum(1) / (n * n).sum(1))[:, None] * n  # projection onto each plane
    # barycentrics of q by Cramer's rule on the 2 x 2 Gram system
    e1, e2, r = b - a, c - a, q - a
    d11, d12, d22 = (e1 * e1).sum(1), (e1 * e2).sum(1), (e2 * e2).sum(1)
    r1, r2 = (r * e1).sum(1), (r * e2).sum(1)
    det = d11 * d22 - d12 * d12
    u = (d22 * r1 - d12 * r2) / det
    v = (d11 * r2 - d12 * r1) / det
    inside = (u >= 0) & (v >= 0) & (u + v <= 1)
    candidates.append(np.where(inside[:, None], q, a))  # outside: a corner (already a candidate)
    cand = np.stack(candidates, 1)  # (T, 7, 3)
    best = ((cand - p) ** 2).sum(-1).argmin(1)  # (T,)
    return cand[np.arange(len(a)), best]


def surface_distance(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Distance of every point to the surface: a loop over points, each against every triangle."""
    out = np.empty(len(points))
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    for i, p in enumerate(points):
        q = closest_points_on_triangles(p, a, b, c)
        out[i] = float(np.sqrt(((q - p) ** 2).sum(1)).min())
    return out


def rodrigues_reference(w: torch.Tensor) -> torch.Tensor:
    """Rotation matrix as the matrix exponential of the skew matrix (``torch.linalg.matrix_exp``).

    Shapes: ``(3,) -> (3, 3)``.
    """
    x, y, z = w.tolist()
    k = torch.tensor([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]], dtype=w.dtype)
    return torch.linalg.matrix_exp(k)


def gram_schmidt_reference(d6: torch.Tensor) -> torch.Tensor:
    """6D -> matrix with explicit Python Gram-Schmidt on one vector pair."""
    a1, a2 = d6[:3].double(), d6[3:].double()
    b1 = a1 / torch.sqrt((a1 * a1).sum())
    proj = (b1 * a2).sum() * b1
    b2 = (a2 - proj) / torch.sqrt(((a2 - proj) ** 2).sum())
    b3 = torch.tensor([b1[1] * b2[2] - b1[2] * b2[1], b1[2] * b2[0] - b1[0] * b2[2], b1[0] * b2[1] - b1[1] * b2[0]],
                      dtype=torch.float64)
    return torch.stack([b1, b2, b3], dim=1)
