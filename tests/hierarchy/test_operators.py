"""Up-sampling operators: the vectorised exact closest-point search vs. per-point brute force."""

from __future__ import annotations

import numpy as np
import pytest

from mesh_decoder.errors import HierarchyError
from mesh_decoder.hierarchy.decimate import decimate_mesh
from mesh_decoder.hierarchy.operators import (
    closest_point_on_triangle,
    closest_points_on_surface,
    upsample_operator,
)


def wavy_grid(rng: np.random.Generator, n: int = 24, m: int = 20):
    """Smooth height field over a jittered ``n x m`` grid, CCW faces seen from +z."""
    h = 1.0 / (n - 1)
    xs, ys = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, (m - 1) * h, m))
    x = xs.ravel() + rng.uniform(-0.2 * h, 0.2 * h, n * m)
    y = ys.ravel() + rng.uniform(-0.2 * h, 0.2 * h, n * m)
    z = 0.15 * np.sin(3 * x + rng.uniform(0, 6)) * np.cos(2 * y)
    idx = np.arange(n * m).reshape(m, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    return np.stack([x, y, z], 1), faces


# ----------------------------------------------------------------------------- references
def closest_on_segment(p, a, b):
    ab = b - a
    t = 0.0 if ab @ ab == 0 else min(1.0, max(0.0, float((p - a) @ ab / (ab @ ab))))
    return a + t * ab


def reference_closest(p, a, b, c):
    """Inside the triangle: the plane projection; else the best of the three edges."""
    n = np.cross(b - a, c - a)
    q = p - ((p - a) @ n) / (n @ n) * n
    # barycentrics of the projection by solving the 2x2 normal equations
    M = np.array([[(b - a) @ (b - a), (b - a) @ (c - a)], [(b - a) @ (c - a), (c - a) @ (c - a)]])
    v, w = np.linalg.solve(M, [(q - a) @ (b - a), (q - a) @ (c - a)])
    if v >= 0 and w >= 0 and v + w <= 1:
        return q
    cands = [closest_on_segment(p, a, b), closest_on_segment(p, b, c), closest_on_segment(p, c, a)]
    return min(cands, key=lambda x: float((p - x) @ (p - x)))


def brute_force_sqdist(points, vertices, faces):
    """Squared distance to the surface: every triangle, point by point."""
    out = []
    for p in points:
        best = np.inf
        for f in faces:
            q = reference_closest(p, *vertices[f])
            best = min(best, float((p - q) @ (p - q)))
        out.append(best)
    return np.array(out)


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closest_point_on_triangle_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n = 300
    tri = rng.normal(size=(n, 3, 3))
    # points around the triangles: every Voronoi region gets hit
    p = tri.mean(1) + rng.normal(scale=1.5, size=(n, 3))
    q, bary = closest_point_on_triangle(p, tri[:, 0], tri[:, 1], tri[:, 2])
    ref = np.array([reference_closest(p[i], *tri[i]) for i in range(n)])
    np.testing.assert_allclose(q, ref, atol=1e-9)
    assert (bary >= 0).all()
    np.testing.assert_allclose(bary.sum(1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.einsum("nk,nkc->nc", bary, tri), q, atol=1e-12)
    # no sampled point of the triangle is closer
    s = rng.dirichlet(np.ones(3), size=(n, 50))  # (n, 50, 3)
    samples = np.einsum("nsk,nkc->nsc", s, tri)
    d_samples = ((samples - p[:, None]) ** 2).sum(-1).min(1)
    assert (((q - p) ** 2).sum(-1) <= d_samples + 1e-12).all()


def test_closest_point_on_degenerate_triangle_is_finite():
    a = np.array([[0.0, 0, 0]])
    b = np.array([[1.0, 0, 0]])
    c = np.array([[2.0, 0, 0]])  # collinear
    q, bary = closest_point_on_triangle(np.array([[0.5, 1.0, 0]]), a, b, c)
    np.testing.assert_allclose(q, [[0.5, 0, 0]], atol=1e-12)
    assert np.isfinite(bary).all() and (bary >= 0).all()


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("k", [1, 4])
def test_closest_points_on_surface_equals_brute_force(seed, k):
    rng = np.random.default_rng(seed)
    v, f = wavy_grid(rng)
    coarse = decimate_mesh(v, f, 50)
    near = rng.choice(len(v), size=150, replace=False)
    points = np.concatenate([
        v[near] + rng.normal(scale=0.01, size=(150, 3)),  # near the surface
        rng.uniform(-0.5, 1.5, size=(30, 3)),  # far away, off the boundary
    ])
    face, bary, sqdist = closest_points_on_surface(points, coarse.vertices, coarse.faces, k=k)
    ref = brute_force_sqdist(points, coarse.vertices, coarse.faces)
    np.testing.assert_allclose(sqdist, ref, rtol=1e-9, atol=1e-15)
    q = np.einsum("nk,nkc->nc", bary, coarse.vertices[coarse.faces[face]])
    np.testing.assert_allclose(((points - q) ** 2).sum(1), sqdist, rtol=1e-9, atol=1e-15)


def test_certificate_finds_triangles_missed_by_nearest_centroids():
    # One huge triangle whose centroid is far away, under many tiny ones: a query point
    # just above the huge triangle's corner region is closest to it, though its
    # centroid is not among the nearest centroids.
    rng = np.random.default_rng(5)
    small = []
    verts = [[0.0, 0.0, 0.0], [100.0, 0.0, 0.0], [0.0, 100.0, 0.0]]
    for i in range(30):
        o = np.array([60.0 + i, 60.0, 5.0])
        base = len(verts)
        verts += [o, o + [0.5, 0, 0], o + [0, 0.5, 0]]
        small.append([base, base + 1, base + 2])
    verts = np.array(verts)
    faces = np.array([[0, 1, 2]] + small)
    points = np.array([[70.0, 25.0, 0.3]]) + rng.normal(scale=0.01, size=(5, 3))
    face, _, sqdist = closest_points_on_surface(points, verts, faces, k=1)
    assert (face == 0).all()
    np.testing.assert_allclose(sqdist, brute_force_sqdist(points, verts, faces), rtol=1e-12)


@pytest.mark.parametrize("seed", [6, 7])
def test_upsample_operator(seed):
    rng = np.random.default_rng(seed)
    v, f = wavy_grid(rng)
    coarse = decimate_mesh(v, f, 120)
    index, weight = upsample_operator(v, coarse.vertices, coarse.faces, coarse.kept)
    assert index.shape == weight.shape == (len(v), 3) and index.dtype == np.int64
    assert (weight >= 0).all()
    np.testing.assert_allclose(weight.sum(1), 1.0, atol=1e-12)
    assert index.min() >= 0 and index.max() < len(coarse.vertices)
    # kept vertices map to themselves with weight one
    np.testing.assert_array_equal(index[coarse.kept], np.repeat(np.arange(120)[:, None], 3, axis=1))
    np.testing.assert_array_equal(weight[coarse.kept], np.tile([1.0, 0.0, 0.0], (120, 1)))
    # every row is a coarse face and the point it gives is the closest point of the surface
    rest = np.setdiff1d(np.arange(len(v)), coarse.kept)
    face_set = {tuple(x) for x in coarse.faces.tolist()}
    assert all(tuple(x) in face_set for x in index[rest].tolist())
    up = np.einsum("nk,nkc->nc", weight, coarse.vertices[index])  # (V_f, 3)
    np.testing.assert_array_equal(up[coarse.kept], v[coarse.kept])
    d_ref = brute_force_sqdist(v[rest[:60]], coarse.vertices, coarse.faces)
    np.testing.assert_allclose(((up[rest[:60]] - v[rest[:60]]) ** 2).sum(1), d_ref, rtol=1e-9, atol=1e-15)


def test_upsample_is_exact_for_points_on_a_planar_coarse_surface():
    rng = np.random.default_rng(8)
    v, f = wavy_grid(rng)
    v[:, 2] = 0.0  # flat: every fine vertex lies on the coarse surface (inside it, or on its boundary)
    coarse = decimate_mesh(v, f, 80)
    index, weight = upsample_operator(v, coarse.vertices, coarse.faces, coarse.kept)
    up = np.einsum("nk,nkc->nc", weight, coarse.vertices[index])
    _, _, d2 = closest_points_on_surface(v, coarse.vertices, coarse.faces)
    inside = d2 < 1e-20
    assert inside.mean() > 0.5
    np.testing.assert_allclose(up[inside], v[inside], atol=1e-12)


def test_bad_down():
    rng = np.random.default_rng(9)
    v, f = wavy_grid(rng, 8, 8)
    coarse = decimate_mesh(v, f, 20)
    with pytest.raises(HierarchyError, match=r"down: expected shape \(20,\)"):
        upsample_operator(v, coarse.vertices, coarse.faces, coarse.kept[:-1])
    bad = coarse.kept.copy()
    bad[0] = len(v)
    with pytest.raises(HierarchyError, match="expected indices in"):
        upsample_operator(v, coarse.vertices, coarse.faces, bad)
    with pytest.raises(HierarchyError, match="no faces"):
        closest_points_on_surface(v, coarse.vertices, np.zeros((0, 3), dtype=np.int64))


def test_bad_points_faces_and_k_raise_clear_errors():
    rng = np.random.default_rng(15)
    v, f = wavy_grid(rng, 6, 6)
    points = rng.normal(size=(7, 3))
    with pytest.raises(HierarchyError, match="k: expected an int >= 1, got 0"):
        closest_points_on_surface(points, v, f, k=0)
    with pytest.raises(HierarchyError, match=r"points: expected shape \(N, 3\), got \(7, 2\)"):
        closest_points_on_surface(points[:, :2], v, f)
    with pytest.raises(HierarchyError, match=r"faces: expected indices in \[0, 36\), got \[0, 40\]"):
        closest_points_on_surface(points, v, np.concatenate([f, [[0, 1, 40]]]))
    with pytest.raises(HierarchyError, match=r"faces: expected indices in \[0, 36\), got \[-1, 35\]"):
        closest_points_on_surface(points, v, np.concatenate([f, [[0, 1, -1]]]))
    bad = points.copy()
    bad[4, 2] = np.nan
    with pytest.raises(HierarchyError, match=r"points: expected finite values, got NaN or infinity \(row 4"):
        closest_points_on_surface(bad, v, f)
    with pytest.raises(TypeError, match="faces: expected an integer array, got dtype float64"):
        closest_points_on_surface(points, v, f.astype(np.float64))


def test_no_points_give_empty_results():
    """With more faces than k, an empty query failed inside np.quantile (IndexError)."""
    v, f = wavy_grid(np.random.default_rng(17), 6, 6)
    face, bary, d2 = closest_points_on_surface(np.zeros((0, 3)), v, f)
    assert face.shape == d2.shape == (0,) and bary.shape == (0, 3)
    assert face.dtype == np.int64 and bary.dtype == d2.dtype == np.float64


def test_repeated_down_index_is_refused():
    """Two coarse vertices on one fine vertex silently lost the first one's self-mapping."""
    rng = np.random.default_rng(16)
    v, f = wavy_grid(rng, 8, 8)
    coarse = decimate_mesh(v, f, 20)
    bad = coarse.kept.copy()
    bad[1] = bad[0]
    with pytest.raises(HierarchyError, match=rf"down: expected distinct indices .* got fine vertex {bad[0]} 2 times"):
        upsample_operator(v, coarse.vertices, coarse.faces, bad)
