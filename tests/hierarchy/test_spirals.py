"""Spiral indices: fast numpy walk vs. an explicit per-vertex reference, and the ordering properties."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from mesh_decoder.errors import MeshValidationError
from mesh_decoder.hierarchy.spirals import compute_spirals


# ----------------------------------------------------------------------------- meshes
def grid_mesh(n: int, m: int, rng: np.random.Generator, jitter: float = 0.25):
    """``n x m`` grid in the xy plane, random diagonals, CCW faces seen from +z."""
    xs, ys = np.meshgrid(np.arange(n, dtype=float), np.arange(m, dtype=float), indexing="xy")
    v = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * m)], axis=1)
    v[:, :2] += rng.uniform(-jitter, jitter, size=(n * m, 2))
    v[:, 2] = rng.normal(scale=0.1, size=n * m)
    faces = []
    for j in range(m - 1):
        for i in range(n - 1):
            a = j * n + i
            b, c, d = a + 1, a + n, a + n + 1
            faces += [[a, b, d], [a, d, c]] if rng.random() < 0.5 else [[a, b, c], [b, d, c]]
    return v, np.array(faces, dtype=np.int64)


def icosphere(subdivisions: int):
    """Icosahedron with each triangle split in four ``subdivisions`` times; outward CCW faces."""
    t = (1 + 5 ** 0.5) / 2
    v = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    f = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
         [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
         [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    v = [np.array(p, dtype=float) / np.linalg.norm(p) for p in v]
    for _ in range(subdivisions):
        mid = {}

        def midpoint(a, b):
            key = (min(a, b), max(a, b))
            if key not in mid:
                p = v[a] + v[b]
                v.append(p / np.linalg.norm(p))
                mid[key] = len(v) - 1
            return mid[key]

        new = []
        for a, b, c in f:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            new += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        f = new
    return np.array(v), np.array(f, dtype=np.int64)


def tube(n: int, m: int):
    """Open cylinder: ``n`` vertices around, ``m`` rings; two boundary loops."""
    ang = 2 * np.pi * np.arange(n) / n
    v = np.array([[np.cos(a), np.sin(a), z] for z in range(m) for a in ang])
    faces = []
    for r in range(m - 1):
        for k in range(n):
            a, b = r * n + k, r * n + (k + 1) % n
            faces += [[a, b, b + n], [a, b + n, a + n]]
    return v, np.array(faces, dtype=np.int64)


def two_components(rng):
    v1, f1 = grid_mesh(5, 4, rng)
    v2, f2 = icosphere(1)
    return np.concatenate([v1, v2 + 10.0]), np.concatenate([f1, f2 + len(v1)]), len(v1)


def mesh_cases():
    return {
        "grid": grid_mesh(7, 6, np.random.default_rng(1)),
        "icosphere": icosphere(1),
        "tube": tube(7, 4),
        "two_components": two_components(np.random.default_rng(2))[:2],
    }


# -------------------------------------------------------------------------- reference
def reference_fan(faces: np.ndarray, v: int) -> list[int]:
    """One-ring of ``v`` in fan order, from explicit face lookups."""
    succ = {}
    for face in faces.tolist():
        if v in face:
            k = face.index(v)
            succ[face[(k + 1) % 3]] = face[(k + 2) % 3]
    targets = set(succ.values())
    fans, seen = [], set()
    for start in sorted(b for b in succ if b not in targets):  # boundary fans
        fan, x = [start], start
        while x in succ:
            x = succ[x]
            fan.append(x)
        seen.update(fan[:-1])
        fans.append(fan)
    while set(succ) - seen:  # closed fans, from their smallest neighbour
        start = min(set(succ) - seen)
        fan, x = [start], succ[start]
        while x != start:
            fan.append(x)
            x = succ[x]
        seen.update(fan)
        fans.append(fan)
    return [x for fan in sorted(fans, key=lambda fan: fan[0]) for x in fan]


def reference_spirals(faces: np.ndarray, num_vertices: int, length: int, dilation: int = 1) -> np.ndarray:
    """The documented rule, one vertex and one neighbour at a time."""
    total = length * dilation
    fans = [reference_fan(faces, v) for v in range(num_vertices)]
    out = []
    for c in range(num_vertices):
        spiral, prev, ring = [c], [], [c]
        while len(spiral) < total:
            new = []
            for u in ring:
                nbs = fans[u]
                m = len(nbs)
                inner = [x in prev for x in nbs]
                s = 0
                for j in range(m):
                    if inner[j] and not inner[(j + 1) % m]:
                        s = j + 1
                        break
                for t in range(m):
                    x = nbs[(s + t) % m]
                    if x not in spiral and x not in new:
                        new.append(x)
            if not new:
                break
            spiral += new
            prev, ring = ring, new
        spiral = spiral[:total] + [num_vertices] * (total - len(spiral))
        out.append(spiral[::dilation][:length])
    return np.array(out, dtype=np.int64)


def bfs_distances(faces: np.ndarray, num_vertices: int, source: int) -> np.ndarray:
    adj = [set() for _ in range(num_vertices)]
    for a, b, c in faces.tolist():
        adj[a] |= {b, c}
        adj[b] |= {a, c}
        adj[c] |= {a, b}
    dist = np.full(num_vertices, -1)
    dist[source] = 0
    queue = deque([source])
    while queue:
        x = queue.popleft()
        for y in adj[x]:
            if dist[y] < 0:
                dist[y] = dist[x] + 1
                queue.append(y)
    return dist


def oriented_faces(faces: np.ndarray) -> set[tuple[int, int, int]]:
    return {tuple(np.roll(f, k).tolist()) for f in faces for k in range(3)}


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", ["grid", "icosphere", "tube", "two_components"])
@pytest.mark.parametrize("length,dilation", [(9, 1), (12, 2), (25, 1), (7, 3)])
def test_matches_reference(name, length, dilation):
    v, f = mesh_cases()[name]
    fast = compute_spirals(v, f, length, dilation)
    assert fast.shape == (len(v), length) and fast.dtype == np.int64
    np.testing.assert_array_equal(fast, reference_spirals(f, len(v), length, dilation))


@pytest.mark.parametrize("name", ["grid", "icosphere", "tube", "two_components"])
def test_rings_are_bfs_rings(name):
    v, f = mesh_cases()[name]
    V = len(v)
    spirals = compute_spirals(v, f, V)  # long enough to hold a whole component
    for c in range(V):
        dist = bfs_distances(f, V, c)
        s = spirals[c]
        real = s[s < V]
        assert (s[len(real):] == V).all(), "padding only at the end"
        assert real[0] == c and len(set(real.tolist())) == len(real)
        assert set(real.tolist()) == set(np.flatnonzero(dist >= 0).tolist()), "exactly the component"
        assert (np.diff(dist[real]) >= 0).all() and (np.diff(dist[real]) <= 1).all(), "ring after ring"


@pytest.mark.parametrize("name", ["grid", "icosphere", "tube", "two_components"])
def test_first_ring_follows_winding(name):
    v, f = mesh_cases()[name]
    V = len(v)
    tri = oriented_faces(f)
    he = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
    directed = set(map(tuple, he.tolist()))
    boundary_he = {(a, b) for a, b in directed if (b, a) not in directed}
    degree = np.array([len(set(f[(f == x).any(axis=1)].ravel().tolist()) - {x}) for x in range(V)])
    spirals = compute_spirals(v, f, int(degree.max()) + 1)
    on_boundary = {a for a, _ in boundary_he}
    for c in range(V):
        ring = spirals[c, 1:degree[c] + 1].tolist()
        pairs = list(zip(ring[:-1], ring[1:]))
        if c in on_boundary:
            assert (c, ring[0]) in boundary_he, "boundary ring starts at the boundary neighbour"
            assert (ring[-1], c) in boundary_he, "... and covers the whole fan"
        else:
            pairs.append((ring[-1], ring[0]))
        for a, b in pairs:
            assert (c, a, b) in tri, f"(centre, a, b) = ({c}, {a}, {b}) is not a face with the mesh's winding"


def test_rings_turn_in_one_direction_on_a_plane():
    # Undistorted grid seen from +z: every ring of an interior vertex turns counter-clockwise.
    v, f = grid_mesh(11, 11, np.random.default_rng(3), jitter=0.0)
    spirals = compute_spirals(v, f, 200)
    for c in range(len(v)):
        x, y = v[c, :2]
        if min(x, y, 10 - x, 10 - y) < 4:
            continue
        dist = bfs_distances(f, len(v), c)
        for k in (1, 2):
            ring = [s for s in spirals[c] if s < len(v) and dist[s] == k]
            ang = np.arctan2(v[ring, 1] - y, v[ring, 0] - x)
            step = np.mod(np.diff(np.append(ang, ang[0])), 2 * np.pi)
            assert (step > 0).all() and (step < np.pi).all()
            assert step.sum() == pytest.approx(2 * np.pi)


@pytest.mark.parametrize("length,dilation", [(9, 2), (5, 3), (4, 4)])
def test_dilation_keeps_every_dth_entry(length, dilation):
    v, f = icosphere(2)
    full = compute_spirals(v, f, length * dilation)
    np.testing.assert_array_equal(compute_spirals(v, f, length, dilation), full[:, ::dilation])


def test_components_never_mix_and_short_spirals_pad_with_V():
    rng = np.random.default_rng(4)
    v, f, n_first = two_components(rng)
    # A lone triangle as a third component and an isolated vertex.
    v = np.concatenate([v, rng.normal(size=(4, 3)) + 20])
    V = len(v)
    tri = [V - 4, V - 3, V - 2]
    f = np.concatenate([f, [tri]])
    spirals = compute_spirals(v, f, 30)
    comp = np.zeros(V, dtype=int)
    comp[n_first:V - 4] = 1
    comp[V - 4:V - 1] = 2
    comp[V - 1] = 3
    for c in range(V):
        real = spirals[c][spirals[c] < V]
        assert (comp[real] == comp[c]).all()
    np.testing.assert_array_equal(spirals[V - 4], [V - 4, V - 3, V - 2] + [V] * 27)
    np.testing.assert_array_equal(spirals[V - 1], [V - 1] + [V] * 29)
    # Dilation pads the same way: entries 0, 2, 4 of [c, a, b, V, V, V].
    np.testing.assert_array_equal(compute_spirals(v, f, 3, 2)[V - 3], [V - 3, V - 4, V])


def test_independent_of_face_order_and_corner_rotation():
    rng = np.random.default_rng(5)
    for v, f in (grid_mesh(6, 7, rng), icosphere(1), two_components(rng)[:2]):
        perm = rng.permutation(len(f))
        rolls = rng.integers(0, 3, size=len(f))
        g = np.array([np.roll(face, r) for face, r in zip(f[perm], rolls)])
        np.testing.assert_array_equal(compute_spirals(v, f, 16, 1), compute_spirals(v, g, 16, 1))


def test_deterministic_and_chunking_does_not_matter():
    v, f = grid_mesh(9, 8, np.random.default_rng(6))
    a = compute_spirals(v, f, 12, 2)
    np.testing.assert_array_equal(a, compute_spirals(v, f, 12, 2))
    np.testing.assert_array_equal(a, compute_spirals(v, f, 12, 2, chunk_size=7))


def test_length_one_is_the_centre():
    v, f = icosphere(1)
    np.testing.assert_array_equal(compute_spirals(v, f, 1), np.arange(len(v))[:, None])


def test_mesh_without_faces_gives_padded_centres():
    v = np.random.default_rng(9).normal(size=(3, 3))
    out = compute_spirals(v, np.zeros((0, 3), dtype=np.int64), 4)
    np.testing.assert_array_equal(out, [[0, 3, 3, 3], [1, 3, 3, 3], [2, 3, 3, 3]])


def test_non_manifold_vertex_lists_each_fan():
    # Two triangle fans touching at vertex 0 (a bow tie).
    v = np.random.default_rng(7).normal(size=(5, 3))
    f = np.array([[0, 1, 2], [0, 3, 4]])
    s = compute_spirals(v, f, 6)
    np.testing.assert_array_equal(s[0], [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(s, reference_spirals(f, 5, 6))


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(8)
    v, f = grid_mesh(4, 4, rng)
    flipped = f.copy()
    flipped[3] = flipped[3, ::-1]
    with pytest.raises(MeshValidationError, match="directed edge .* used by faces"):
        compute_spirals(v, flipped, 9)
    with pytest.raises(MeshValidationError, match="out of range"):
        compute_spirals(v, np.concatenate([f, [[0, 1, len(v)]]]), 9)
    with pytest.raises(MeshValidationError, match="degenerate"):
        compute_spirals(v, np.concatenate([f, [[0, 0, 1]]]), 9)
    with pytest.raises(MeshValidationError, match=r"expected shape \(V, 3\)"):
        compute_spirals(v[:, :2], f, 9)
    with pytest.raises(MeshValidationError, match=r"expected shape \(F, 3\)"):
        compute_spirals(v, f[:, :2], 9)
    with pytest.raises(TypeError, match="integer"):
        compute_spirals(v, f.astype(float), 9)
    with pytest.raises(ValueError, match="length"):
        compute_spirals(v, f, 0)
    with pytest.raises(TypeError, match="dilation"):
        compute_spirals(v, f, 9, 1.5)


@pytest.mark.parametrize("length,dilation", [(50, 1), (11, 7), (3, 10**12)])
def test_spirals_longer_than_the_mesh_are_padding_past_V_entries(length, dilation):
    """Entries past the V-th of an undilated spiral are padding; they are not computed (no L*d*V array)."""
    v, f = grid_mesh(6, 7, np.random.default_rng(11))  # 42 vertices
    V = v.shape[0]
    got = compute_spirals(v, f, length, dilation)
    assert got.shape == (V, length)
    full = reference_spirals(f, V, V)  # every vertex, in spiral order
    want = np.full((V, length), V, dtype=np.int64)
    kept = full[:, ::dilation][:, :length]
    want[:, :kept.shape[1]] = kept
    np.testing.assert_array_equal(got, want)
