"""Down- and up-sampling operators between hierarchy levels.

Down-sampling keeps a subset of the vertices, so it is an index ``down``
``(V_{l+1},)`` into level ``l`` (see :mod:`mesh_decoder.hierarchy.decimate`).

Up-sampling follows COMA (Ranjan et al., ECCV 2018): every fine vertex is
mapped to the closest point of the coarse *surface* and expressed by the
barycentric coordinates of that point in its coarse triangle, so that
``x_fine = sum_k w_k x_coarse[i_k]``. Vertices kept by the decimation map to
themselves with weight 1.

The closest point is exact: candidate triangles come from a k-d tree of
triangle centroids; a second pass adds every triangle whose bounding sphere is
nearer than the best distance found, so no triangle that could be closer is
ever skipped. Point-triangle distances use the region-based closest-point
routine of Ericson ("Real-Time Collision Detection", 2005, section 5.1.5),
vectorised in numpy.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.spatial import cKDTree

from .._checks import int_value
from ..errors import HierarchyError

__all__ = ["closest_point_on_triangle", "closest_points_on_surface", "upsample_operator"]


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", x, y)


def closest_point_on_triangle(
    points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of triangle ``(a, b, c)`` to ``p``, row by row (Ericson, 5.1.5).

    The point is found by classifying ``p`` into the seven Voronoi regions of the
    triangle (3 vertices, 3 edges, the face) and projecting onto that feature.

    Args:
        points: ``(N, 3)`` query points.
        a, b, c: ``(N, 3)`` triangle corners, one triangle per point.

    Returns:
        ``(closest (N, 3), bary (N, 3))``: the closest points and their barycentric
        coordinates ``(u, v, w)`` with ``closest = u a + v b + w c``, ``u, v, w >= 0``
        and ``u + v + w = 1``.

    Shapes:
        ``(N, 3)`` x 4 -> ``(N, 3)``, ``(N, 3)``.
    """
    p, a, b, c = (np.asarray(x, dtype=np.float64) for x in (points, a, b, c))
    ab, ac, ap = b - a, c - a, p - a
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    bp = p - b
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    cp = p - c
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    vc = d1 * d4 - d3 * d2
    vb = d5 * d2 - d1 * d6
    va = d3 * d6 - d5 * d4

    n = p.shape[0]
    bary = np.empty((n, 3), dtype=np.float64)
    todo = np.ones(n, dtype=bool)

    def assign(mask, u, v, w):
        m = todo & mask
        for col, value in enumerate((u, v, w)):
            bary[m, col] = value[m] if isinstance(value, np.ndarray) else value
        todo[m] = False

    with np.errstate(divide="ignore", invalid="ignore"):
        assign((d1 <= 0) & (d2 <= 0), 1.0, 0.0, 0.0)  # vertex region A
        assign((d3 >= 0) & (d4 <= d3), 0.0, 1.0, 0.0)  # vertex region B
        t = d1 / (d1 - d3)
        assign((vc <= 0) & (d1 >= 0) & (d3 <= 0), 1.0 - t, t, 0.0)  # edge region AB
        assign((d6 >= 0) & (d5 <= d6), 0.0, 0.0, 1.0)  # vertex region C
        t = d2 / (d2 - d6)
        assign((vb <= 0) & (d2 >= 0) & (d6 <= 0), 1.0 - t, 0.0, t)  # edge region AC
        t = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        assign((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), 0.0, 1.0 - t, t)  # edge region BC
        denom = 1.0 / (va + vb + vc)
        v, w = vb * denom, vc * denom
        assign(np.ones(n, dtype=bool), 1.0 - v - w, v, w)  # face region
    # Guard the face region against rounding (and degenerate triangles against NaN).
    bad = ~np.isfinite(bary).all(axis=1)
    if bad.any():
        bary[bad] = _closest_on_degenerate(p[bad], a[bad], b[bad], c[bad])
    np.clip(bary, 0.0, 1.0, out=bary)
    bary /= bary.sum(axis=1, keepdims=True)
    closest = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c  # (N, 3)
    return closest, bary


def _closest_on_degenerate(p, a, b, c):
    """Barycentrics of the closest point on the three edges (for zero-area triangles)."""
    best = np.full(p.shape[0], np.inf)
    out = np.zeros((p.shape[0], 3))
    for i, j in ((0, 1), (1, 2), (2, 0)):
        x, y = (a, b, c)[i], (a, b, c)[j]
        e = y - x
        ee = _dot(e, e)
        t = np.clip(np.divide(_dot(p - x, e), ee, out=np.zeros_like(ee), where=ee > 0), 0.0, 1.0)
        q = x + t[:, None] * e  # (N, 3)
        d = _dot(p - q, p - q)
        better = d < best
        best[better] = d[better]
        out[better] = 0.0
        out[better, i] = 1.0 - t[better]
        out[better, j] = t[better]
    return out


def _positions(x, name: str) -> np.ndarray:
    """``x`` as a contiguous finite float64 ``(N, 3)`` array, or a :class:`HierarchyError`."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 3:
        raise HierarchyError(f"{name}: expected shape (N, 3), got {x.shape}")
    if x.dtype == object or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise HierarchyError(f"{name}: expected a real-valued array, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise HierarchyError(f"{name}: expected finite values, got NaN or infinity (row {bad}: {x[bad].tolist()})")
    return x


def _flatten_ball(lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(point, item) pairs from ``cKDTree.query_ball_point``'s array of lists."""
    counts = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
    items = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int64, count=int(counts.sum()))
    return np.repeat(np.arange(len(lists), dtype=np.int64), counts), items


def closest_points_on_surface(
    points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, k: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact closest point on a triangle mesh for every query point.

    1. Candidates: the ``k`` triangles with the nearest centroids; best squared
       distance ``d^2`` by :func:`closest_point_on_triangle`.
    2. Certificate: a triangle with centroid ``m`` and bounding radius ``r``
       (around ``m``) is at distance at least ``|p - m| - r``. Every triangle with
       ``|p - m| - r <= d`` is evaluated too. For points with ``d <= D0`` (the
       95th percentile of the first-pass distances: nearly all points)
       these triangles are found from the triangles' side, one ball query of
       radius ``r + D0`` per triangle over a tree of the points; the remaining
       points query the centroid tree with radius ``d + max(r)``. Triangles never
       evaluated are provably no closer, so the result equals a brute-force search
       over all triangles (up to ties).

    Args:
        points: ``(N, 3)`` query points.
        vertices: ``(V, 3)`` mesh positions.
        faces: ``(F, 3)`` int64 triangles.
        k: first-pass candidates per point, default 4.

    Returns:
        ``(face (N,) int64, bary (N, 3) float64, sqdist (N,) float64)``: the
        closest triangle, the barycentrics of the closest point in it, and the
        squared distance.

    Raises:
        HierarchyError: bad shapes, non-finite positions, face indices out of range,
            no faces, or ``k < 1``.
        TypeError: a ``k`` that is not an int, or faces that are not integers.
    """
    if int_value(k, "k", "an int >= 1") < 1:
        raise HierarchyError(f"k: expected an int >= 1, got {k!r}")
    points = _positions(points, "points")
    vertices = _positions(vertices, "vertices")
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise HierarchyError(f"faces: expected shape (F, 3), got {faces.shape}")
    if faces.size and not np.issubdtype(faces.dtype, np.integer):
        raise TypeError(f"faces: expected an integer array, got dtype {faces.dtype}")
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    N, F = points.shape[0], faces.shape[0]
    if F == 0:
        raise HierarchyError("closest point on a surface: the mesh has no faces")
    if faces.min() < 0 or faces.max() >= vertices.shape[0]:
        raise HierarchyError(
            f"faces: expected indices in [0, {vertices.shape[0]}), got [{int(faces.min())}, {int(faces.max())}]"
        )
    if N == 0:  # np.quantile of no distances below would fail
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3)), np.zeros(0)
    tri = vertices[faces]  # (F, 3, 3)
    centroid = tri.mean(axis=1)  # (F, 3)
    radius = np.sqrt(((tri - centroid[:, None]) ** 2).sum(-1).max(-1))  # (F,)

    def evaluate(pi: np.ndarray, fi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = tri[fi]  # (P, 3, 3)
        q, bary = closest_point_on_triangle(points[pi], t[:, 0], t[:, 1], t[:, 2])
        return ((points[pi] - q) ** 2).sum(-1), bary

    kk = min(int(k), F)
    tree = cKDTree(centroid)
    _, cand = tree.query(points, k=kk)  # (N, kk)
    cand = np.asarray(cand, dtype=np.int64).reshape(N, kk)  # (N, kk)
    pi = np.repeat(np.arange(N, dtype=np.int64), kk)  # (N*kk,)
    d2, bary = evaluate(pi, cand.reshape(-1))  # (N*kk,), (N*kk, 3)
    d2 = d2.reshape(N, kk)  # (N, kk)
    j = np.argmin(d2, axis=1)
    rows = np.arange(N)
    best_face = cand[rows, j]
    best_d2 = d2[rows, j]
    best_bary = bary.reshape(N, kk, 3)[rows, j]  # (N, 3)

    if kk < F:
        best_d = np.sqrt(best_d2)
        # Points near the surface (the vast majority) are certified from the triangles'
        # side: one ball query per triangle over a tree of those points, radius r + D0.
        # The few far points query the centroid tree with their own radius d + r_max.
        D0 = float(np.quantile(best_d, 0.95))
        near = np.flatnonzero(best_d <= D0)
        far = np.flatnonzero(best_d > D0)
        extra_p, extra_f = [], []
        if near.size:
            lists = cKDTree(points[near]).query_ball_point(centroid, r=radius + D0, return_sorted=False)
            f_i, p_local = _flatten_ball(lists)
            extra_p.append(near[p_local])
            extra_f.append(f_i)
        if far.size:
            lists = tree.query_ball_point(points[far], r=best_d[far] + radius.max(), return_sorted=False)
            p_local, f_i = _flatten_ball(lists)
            extra_p.append(far[p_local])
            extra_f.append(f_i)
        p_i, f_i = np.concatenate(extra_p), np.concatenate(extra_f)
        lower = np.linalg.norm(points[p_i] - centroid[f_i], axis=1) - radius[f_i]
        keep = lower <= best_d[p_i]
        p_i, f_i = p_i[keep], f_i[keep]
        # Drop pairs already evaluated in the first pass.
        fresh = ~(cand[p_i] == f_i[:, None]).any(axis=1)  # (P, kk) -> (P,)
        p_i, f_i = p_i[fresh], f_i[fresh]
        if p_i.size:
            d2, bary = evaluate(p_i, f_i)
            # Per point, the best of the extra pairs: sort by (point, d2), take the first.
            order = np.lexsort((d2, p_i))
            p_s = p_i[order]
            first = np.ones(p_s.size, dtype=bool)
            first[1:] = p_s[1:] != p_s[:-1]
            sel = order[first]
            p_b = p_i[sel]
            better = d2[sel] < best_d2[p_b]
            p_b, sel = p_b[better], sel[better]
            best_face[p_b] = f_i[sel]
            best_d2[p_b] = d2[sel]
            best_bary[p_b] = bary[sel]
    return best_face, best_bary, best_d2


def upsample_operator(
    fine_vertices: np.ndarray,
    coarse_vertices: np.ndarray,
    coarse_faces: np.ndarray,
    down: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Barycentric up-sampling from a coarse level to a fine one.

    Each fine vertex ``i`` is written as ``x_i = sum_k weight[i, k] * y[index[i, k]]``
    where ``index[i]`` is the coarse triangle holding the closest point of the
    coarse surface and ``weight[i]`` its barycentric coordinates. If ``down`` is
    given, the kept vertex ``down[j]`` maps to ``index = [j, j, j]`` with weights
    ``[1, 0, 0]``, so up-sampling reproduces kept vertices exactly.

    Args:
        fine_vertices: ``(V_f, 3)`` positions of the fine level.
        coarse_vertices: ``(V_c, 3)`` positions of the coarse level.
        coarse_faces: ``(F_c, 3)`` int64 faces of the coarse level.
        down: optional ``(V_c,)`` int64 index of each coarse vertex in the fine level.

    Returns:
        ``(index (V_f, 3) int64, weight (V_f, 3) float64)`` with non-negative
        weights summing to 1.

    Raises:
        HierarchyError: bad shapes, non-finite positions, or ``down`` out of range or
            with a repeated index.
        TypeError: ``coarse_faces`` that are not integers.
    """
    fine_vertices = _positions(fine_vertices, "fine_vertices")
    coarse_vertices = _positions(coarse_vertices, "coarse_vertices")
    coarse_faces = np.asarray(coarse_faces)
    if coarse_faces.size and not np.issubdtype(coarse_faces.dtype, np.integer):
        raise TypeError(f"coarse_faces: expected an integer array, got dtype {coarse_faces.dtype}")
    coarse_faces = coarse_faces.astype(np.int64, copy=False)
    Vf = fine_vertices.shape[0]
    index = np.empty((Vf, 3), dtype=np.int64)
    weight = np.empty((Vf, 3), dtype=np.float64)
    search = np.ones(Vf, dtype=bool)
    if down is not None:
        down = np.asarray(down, dtype=np.int64)
        Vc = np.asarray(coarse_vertices).shape[0]
        if down.shape != (Vc,):
            raise HierarchyError(f"down: expected shape ({Vc},), got {down.shape}")
        if down.size and (down.min() < 0 or down.max() >= Vf):
            raise HierarchyError(f"down: expected indices in [0, {Vf}), got [{down.min()}, {down.max()}]")
        repeated = np.unique(down, return_counts=True)
        if (repeated[1] > 1).any():
            i = int(repeated[0][np.flatnonzero(repeated[1] > 1)[0]])
            raise HierarchyError(
                f"down: expected distinct indices (one fine vertex per coarse vertex), got fine vertex {i} "
                f"{int(repeated[1].max())} times"
            )
        index[down] = np.arange(Vc, dtype=np.int64)[:, None]  # (V_c, 1) broadcast to (V_c, 3)
        weight[down] = (1.0, 0.0, 0.0)
        search[down] = False
    rest = np.flatnonzero(search)
    if rest.size:
        face, bary, _ = closest_points_on_surface(fine_vertices[rest], coarse_vertices, coarse_faces)
        index[rest] = coarse_faces[face]
        weight[rest] = bary
    return index, weight
