"""UV utilities: texel maps against a per-texel brute force, automatic UVs, overlap and coverage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mesh_decoder.errors import MeshValidationError
from mesh_decoder.hierarchy.container import TexelMap
from mesh_decoder.mesh.container import Mesh
from mesh_decoder.mesh.uv import (
    MAX_MAP_SIZE,
    _overlap_pairs,
    automatic_uv,
    check_uv_overlap,
    ensure_uv,
    flipped_uv_faces,
    texel_map,
    uv_coverage,
)


# ----------------------------------------------------------------------------- meshes
def grid_faces(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """Triangles of an ``n x m`` vertex grid (row-major), random diagonals, CCW in (x, y)."""
    faces = []
    for j in range(m - 1):
        for i in range(n - 1):
            a = j * n + i
            b, c, d = a + 1, a + n, a + n + 1
            faces += [[a, b, d], [a, d, c]] if rng.random() < 0.5 else [[a, b, c], [b, d, c]]
    return np.array(faces, dtype=np.int64)


def jittered_grid(n: int, m: int, rng: np.random.Generator) -> Mesh:
    """Height-field grid whose UVs are its jittered (x, y), fitted into [0.05, 0.95]^2."""
    xs, ys = np.meshgrid(np.arange(n, dtype=float), np.arange(m, dtype=float), indexing="xy")
    xy = np.stack([xs.ravel(), ys.ravel()], axis=1) + rng.uniform(-0.3, 0.3, size=(n * m, 2))
    z = 0.3 * np.sin(xy[:, 0]) + 0.1 * rng.normal(size=n * m)
    faces = grid_faces(n, m, rng)
    uv = 0.05 + 0.9 * (xy - xy.min(axis=0)) / (xy.max(axis=0) - xy.min(axis=0))
    return Mesh(np.column_stack([xy, z]), faces, uv=uv, uv_faces=faces.copy())


def seamed_tube(n: int, m: int, rng: np.random.Generator) -> Mesh:
    """Open cylinder (``n`` around, ``m`` rings); UV column ``n`` duplicates column 0 (a seam)."""
    ang = 2 * np.pi * np.arange(n) / n
    verts = np.array([[np.cos(a), np.sin(a), 0.7 * r] for r in range(m) for a in ang])
    faces, uv_faces = [], []
    for r in range(m - 1):
        for k in range(n):
            a, b = r * n + k, r * n + (k + 1) % n
            ua, ub = r * (n + 1) + k, r * (n + 1) + k + 1  # UV grid has n + 1 columns
            faces += [[a, b, b + n], [a, b + n, a + n]]
            uv_faces += [[ua, ub, ub + n + 1], [ua, ub + n + 1, ua + n + 1]]
    cols, rows = np.meshgrid(np.arange(n + 1), np.arange(m), indexing="xy")
    uv = np.stack([0.04 + 0.92 * cols.ravel() / n, 0.1 + 0.8 * rows.ravel() / (m - 1)], axis=1)
    uv[:, 1] += rng.uniform(-0.01, 0.01, size=len(uv))  # break exact texel alignment
    return Mesh(verts, np.array(faces), uv=uv, uv_faces=np.array(uv_faces))


def open_tube(n: int, m: int) -> Mesh:
    ang = 2 * np.pi * np.arange(n) / n
    verts = np.array([[np.cos(a), np.sin(a), 0.6 * r] for r in range(m) for a in ang])
    faces = []
    for r in range(m - 1):
        for k in range(n):
            a, b = r * n + k, r * n + (k + 1) % n
            faces += [[a, b, b + n], [a, b + n, a + n]]
    return Mesh(verts, np.array(faces))


def torus(n: int, m: int) -> Mesh:
    verts, faces = [], []
    for i in range(n):
        a = 2 * np.pi * i / n
        for j in range(m):
            b = 2 * np.pi * j / m
            verts.append([(3 + np.cos(b)) * np.cos(a), (3 + np.cos(b)) * np.sin(a), np.sin(b)])
    for i in range(n):
        for j in range(m):
            a, b = i * m + j, ((i + 1) % n) * m + j
            c, d = ((i + 1) % n) * m + (j + 1) % m, i * m + (j + 1) % m
            faces += [[a, b, c], [a, c, d]]
    return Mesh(np.array(verts), np.array(faces))


def uv_cross(mesh: Mesh) -> np.ndarray:
    """Twice the signed UV area of every face, positive when counter-clockwise in (u, v)."""
    tri = mesh.uv[mesh.uv_faces]
    return (tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1]) \
        - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0])


def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# -------------------------------------------------------------------------- reference
def brute_force_texels(mesh: Mesh, h: int, w: int, tol: float = 1e-9):
    """Per texel: barycentrics of its centre in every UV triangle (Cramer's rule)."""
    tri = mesh.uv[mesh.uv_faces]  # (F, 3, 2)
    result = {}
    for i in range(h):
        for j in range(w):
            p = np.array([(j + 0.5) / w, 1 - (i + 0.5) / h])
            a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
            det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
            l1 = ((p[0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (p[1] - a[:, 1])) / det
            l2 = ((b[:, 0] - a[:, 0]) * (p[1] - a[:, 1]) - (p[0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / det
            bary = np.stack([1 - l1 - l2, l1, l2], axis=1)  # (F, 3)
            closed = np.flatnonzero((bary >= -tol).all(axis=1))
            strict = np.flatnonzero((bary > tol).all(axis=1))
            result[i, j] = (closed, strict, bary)
    return result


def check_against_brute_force(mesh: Mesh, h: int, w: int):
    tm = texel_map(mesh, (h, w))
    ref = brute_force_texels(mesh, h, w)
    face, mask = tm.face.numpy(), tm.mask.numpy()
    index, weight = tm.index.numpy(), tm.weight.double().numpy()
    for (i, j), (closed, strict, bary) in ref.items():
        if strict.size:
            assert mask[i, j] and face[i, j] in strict, (i, j)
        if not mask[i, j]:
            assert face[i, j] == -1
            assert strict.size == 0, (i, j)
            continue
        f = face[i, j]
        assert f in closed, (i, j)
        np.testing.assert_array_equal(index[i, j], mesh.faces[f])
        np.testing.assert_allclose(weight[i, j], bary[f], atol=1e-6)
    return tm


# ------------------------------------------------------------------------- texel maps
def test_texel_map_matches_brute_force_on_jittered_grid():
    mesh = jittered_grid(6, 5, np.random.default_rng(0))
    tm = check_against_brute_force(mesh, 24, 20)
    assert isinstance(tm, TexelMap) and tm.size == (24, 20)
    assert tm.index.dtype == torch.int64 and tm.face.dtype == torch.int64 and tm.mask.dtype == torch.bool
    assert tm.weight.dtype == torch.get_default_dtype() and tm.weight.shape == (24, 20, 3)
    assert 0.6 < tm.mask.float().mean() < 0.9  # the chart covers [0.05, 0.95]^2
    assert (tm.weight >= 0).all()
    torch.testing.assert_close(tm.weight.sum(-1), torch.ones(24, 20))


def test_texel_map_matches_brute_force_across_a_uv_seam():
    mesh = seamed_tube(10, 4, np.random.default_rng(1))
    tm = check_against_brute_force(mesh, 32, 40)
    # Texels at the right end of the chart are coloured by the seam faces, whose corners
    # at u ~ 0.96 are the vertices of column 0 (shared with the left end).
    right = tm.face[:, 37][tm.mask[:, 37]].numpy()
    assert right.size and np.isin(right % 20, [18, 19]).all()
    assert (tm.index[:, 37][tm.mask[:, 37]] % 10 == 0).any(dim=-1).all()


def test_every_texel_centre_on_shared_edges_and_vertices_is_covered_once():
    # UV vertices exactly on texel centres: many centres lie on edges and vertices.
    rng = np.random.default_rng(2)
    n = 6
    cols, rows = np.meshgrid(np.arange(n), np.arange(n), indexing="xy")
    uv = np.stack([(3 * cols.ravel() + 2.5) / 32, 1 - (3 * rows.ravel() + 2.5) / 32], axis=1)
    faces = grid_faces(n, n, rng)[:, ::-1].copy()  # rows go down in v: reverse to keep CCW in UV
    mesh = Mesh(np.column_stack([uv, np.zeros(n * n)]), faces, uv=uv, uv_faces=faces)
    tm = texel_map(mesh, 32)  # would raise if a centre were covered twice
    assert check_uv_overlap(mesh, 32).shape == (0, 2)
    inner = np.zeros((32, 32), dtype=bool)
    inner[3:17, 3:17] = True  # strictly inside the chart spanning texels 2 .. 17
    assert tm.mask.numpy()[inner].all()
    ref = brute_force_texels(mesh, 32, 32)
    for (i, j), (closed, _, _) in ref.items():
        if tm.mask[i, j]:
            assert tm.face[i, j].item() in closed
        else:
            assert not inner[i, j]


@pytest.mark.parametrize("edge, seed", [("horizontal", 40), ("horizontal", 41), ("vertical", 42), ("vertical", 43)])
def test_texel_centres_on_a_shared_edge_go_to_the_face_the_fill_rule_names(edge, seed):
    """The tie-break for horizontal edges (dy == 0, dx < 0) could be flipped to dx > 0 unnoticed."""
    # Module docstring: oriented with the interior on the left of each edge (counter-clockwise in
    # texel space (x = column, y = row)), an edge owns the centres on it when dy > 0, or dy == 0 and
    # dx < 0. A horizontal edge at row r goes in -x for the face above it (interior at y < r, smaller
    # rows, larger v) and in +x for the face below: the face above owns. A vertical edge at column c
    # goes in +y for the face on its left (interior at x < c) and in -y for the face on its right:
    # the face on the left owns.
    rng = np.random.default_rng(seed)
    size = int(rng.choice([16, 32]))  # a power of two: texel space <-> UV is exact
    line = int(rng.integers(6, size - 6))  # the row (horizontal) or column (vertical) of the shared edge
    mid = int(rng.integers(6, size - 6))
    lo, hi = mid - 1 - rng.choice([0.25, 0.5, 0.75]), mid + 1 + rng.choice([0.25, 0.5, 0.75])  # off the centres
    apex_owner = (rng.uniform(lo, hi), line - rng.choice([1.25, 2.5, 3.75]))  # (along, across): across < line
    apex_other = (rng.uniform(lo, hi), line + rng.choice([1.25, 2.5, 3.75]))
    along_across = np.array([(lo, line), (hi, line), apex_owner, apex_other], dtype=np.float64)  # (4, 2)
    along_across = np.round(along_across * 4) / 4  # quarter texels: exact in UV
    xy = along_across if edge == "horizontal" else along_across[:, ::-1]  # texel space (x, y)
    uv = np.column_stack([(xy[:, 0] + 0.5) / size, 1 - (xy[:, 1] + 0.5) / size])  # (4, 2)
    owner, other = [0, 1, 2], [0, 1, 3]
    faces = [list(rng.permutation(owner)), list(rng.permutation(other))]  # either winding
    order = rng.permutation(2)  # either face index
    faces = np.array([faces[k] for k in order], dtype=np.int64)
    owner_index = int(np.flatnonzero(order == 0)[0])
    mesh = Mesh(np.column_stack([uv, rng.normal(size=4)]), faces, uv=uv, uv_faces=faces.copy())
    tm = texel_map(mesh, size)  # raises if a centre on the edge went to both faces
    centres = [(line, k) if edge == "horizontal" else (k, line) for k in range(mid - 1, mid + 2)]  # (row, col)
    for i, j in centres:
        assert tm.mask[i, j], (i, j)
        assert tm.face[i, j].item() == owner_index, (edge, (i, j), faces.tolist())
        corner = int(np.flatnonzero(faces[owner_index] == 2)[0])
        assert tm.weight[i, j, corner].item() == 0.0  # on the edge: no weight on the owner's apex


def test_gutter_copies_the_nearest_covered_texel():
    mesh = jittered_grid(4, 4, np.random.default_rng(3))
    tm = texel_map(mesh, (20, 16))
    mask = tm.mask.numpy()
    covered = np.argwhere(mask)
    for i, j in np.argwhere(~mask):
        d2 = ((covered - [i, j]) ** 2).sum(axis=1)
        nearest = covered[d2 == d2.min()]
        assert any(
            torch.equal(tm.index[i, j], tm.index[a, b]) and torch.equal(tm.weight[i, j], tm.weight[a, b])
            for a, b in nearest
        ), (i, j)
    assert (tm.face[~tm.mask] == -1).all() and (tm.face[tm.mask] >= 0).all()


def test_overlapping_uv_triangles_are_named():
    uv = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.3, 0.3], [0.95, 0.35], [0.35, 0.95]])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    mesh = Mesh(np.random.default_rng(4).normal(size=(6, 3)), faces, uv=uv, uv_faces=faces)
    with pytest.raises(MeshValidationError, match="faces 0 and 1 overlap"):
        texel_map(mesh, 32)
    np.testing.assert_array_equal(check_uv_overlap(mesh, 32), [[0, 1]])
    tm = texel_map(mesh, 32, allow_overlap=True)
    both = np.zeros((32, 32), dtype=bool)
    ref = brute_force_texels(mesh, 32, 32)
    for (i, j), (_, strict, _) in ref.items():
        both[i, j] = strict.size == 2
    assert both.any() and (tm.face.numpy()[both] == 0).all()


def test_check_uv_overlap_reports_every_pair_on_a_shared_texel():
    """Three or more UV triangles on one texel give all their pairs, not just neighbours."""
    rng = np.random.default_rng(30)
    for _ in range(4):
        n = int(rng.integers(3, 8))  # triangles, all around a common point
        centre = rng.uniform(0.4, 0.6, size=2)
        gaps = 2 * np.pi / 3 + rng.uniform(-0.5, 0.5, size=(n, 2))  # CCW corners, every gap below pi
        angles = rng.uniform(0, 2 * np.pi, size=(n, 1)) + np.concatenate([np.zeros((n, 1)), np.cumsum(gaps, 1)], 1)
        radius = rng.uniform(0.15, 0.35, size=(n, 3, 1))
        uv = (centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=-1)).reshape(-1, 2)
        faces = np.arange(3 * n).reshape(n, 3)
        extra = jittered_grid(3, 3, rng)  # a chart elsewhere that overlaps nothing
        uv = np.concatenate([uv, 0.02 + 0.1 * extra.uv])
        faces = np.concatenate([faces, extra.faces + 3 * n])
        mesh = Mesh(rng.normal(size=(uv.shape[0], 3)), faces, uv=uv, uv_faces=faces)
        ref = brute_force_texels(mesh, 24, 24)
        assert all(np.array_equal(closed, strict) for closed, strict, _ in ref.values())  # no centre on an edge
        expected = sorted({(int(a), int(b)) for _, strict, _ in ref.values() for a, b in itertools.combinations(strict, 2)})
        assert max(len(strict) for _, strict, _ in ref.values()) >= 3
        assert check_uv_overlap(mesh, 24).tolist() == [list(p) for p in expected]


def test_overlap_pairs_match_all_pairs_per_texel():
    rng = np.random.default_rng(31)
    for _ in range(20):
        texel = rng.integers(0, 30, size=int(rng.integers(1, 200)))
        face = rng.integers(0, 25, size=texel.size)
        keep = np.unique(np.stack([face, texel], 1), axis=0, return_index=True)[1]  # a face covers a texel once
        perm = rng.permutation(keep)
        face, texel = face[perm], texel[perm]
        first = {}
        for t in np.unique(texel):
            for pair in itertools.combinations(sorted(face[texel == t].tolist()), 2):
                first.setdefault(pair, int(t))  # texels ascend: the lowest one sharing the pair
        pairs, where = _overlap_pairs(face, texel)
        assert pairs.tolist() == [list(p) for p in sorted(first)]
        assert where.tolist() == [first[p] for p in sorted(first)]


def test_texel_map_rejects_bad_input():
    mesh = jittered_grid(3, 3, np.random.default_rng(5))
    with pytest.raises(MeshValidationError, match="expected UVs"):
        texel_map(mesh.copy(uv=None, uv_faces=None), 16)
    with pytest.raises(TypeError, match="size"):
        texel_map(mesh, 16.0)
    with pytest.raises(ValueError, match="positive"):
        texel_map(mesh, (0, 16))
    with pytest.raises(MeshValidationError, match="no texel centre"):
        texel_map(mesh.copy(uv=mesh.uv + 5.0), 16)


def test_map_size_is_bounded():
    mesh = jittered_grid(3, 3, np.random.default_rng(12))
    side = MAX_MAP_SIZE + int(np.random.default_rng(12).integers(1, 10**6))
    # texel_map(mesh, 10**6) used to allocate until the kernel killed the process (11.7 GiB at the first array)
    for size in (side, (16, side), (side, 16)):
        with pytest.raises(ValueError, match=f"size: expected at most {MAX_MAP_SIZE} texels per side"):
            texel_map(mesh, size)
        with pytest.raises(ValueError, match=f"size: expected at most {MAX_MAP_SIZE} texels per side"):
            check_uv_overlap(mesh, size)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, np.float32, "float32"])
def test_texel_map_dtype_must_be_a_torch_float_dtype(dtype):
    mesh = jittered_grid(3, 3, np.random.default_rng(6))
    # torch.int64 used to give all-zero weights silently
    with pytest.raises(TypeError, match="dtype: expected a torch floating-point dtype"):
        texel_map(mesh, 16, dtype=dtype)
    assert texel_map(mesh, 16, dtype=torch.float64).weight.dtype == torch.float64


def test_uv_functions_refuse_out_of_range_faces_and_non_finite_vertices():
    rng = np.random.default_rng(7)
    mesh = jittered_grid(4, 4, rng)
    bad_faces = mesh.faces.copy()
    bad_faces[3, 1] = mesh.num_vertices + int(rng.integers(1, 100))
    # texel_map used to return vertex indices past the end of the mesh
    with pytest.raises(MeshValidationError, match=r"faces: expected vertex indices in \[0, 16\)"):
        texel_map(mesh.copy(faces=bad_faces), 16)
    plain = mesh.copy(uv=None, uv_faces=None)
    for method in ("planar", "cylindrical", "auto"):
        with pytest.raises(MeshValidationError, match=r"faces: expected vertex indices in \[0, 16\)"):  # was IndexError
            automatic_uv(plain.copy(faces=bad_faces), method)
        vertices = plain.vertices.copy()
        vertices[5, 1] = np.nan
        with pytest.raises(MeshValidationError, match="vertices: expected finite values, .* at row 5"):  # was LinAlgError
            automatic_uv(plain.copy(vertices=vertices), method)


# ---------------------------------------------------------------------- automatic UVs
def test_planar_uv_of_a_flat_mesh_is_a_similarity():
    rng = np.random.default_rng(6)
    n = 7
    xs, ys = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float) * 0.6, indexing="xy")
    flat = np.stack([xs.ravel(), ys.ravel(), np.zeros(n * n)], axis=1) + [[0.2, 0.1, 0]] * rng.random((n * n, 3))
    verts = flat @ random_rotation(rng).T + rng.normal(size=3)
    mesh = Mesh(verts, grid_faces(n, n, rng))
    out = automatic_uv(mesh, "planar", margin=0.05)
    assert out.uv.shape == (n * n, 2) and out.uv_faces is not None
    np.testing.assert_array_equal(out.uv_faces, mesh.faces)
    # Pairwise distances scale by one factor (an orthographic projection of a plane).
    d3 = np.linalg.norm(verts[:, None] - verts[None], axis=-1)
    d2 = np.linalg.norm(out.uv[:, None] - out.uv[None], axis=-1)
    off = ~np.eye(n * n, dtype=bool)
    ratio = d2[off] / d3[off]
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-9)
    # Fitted into [margin, 1 - margin], the larger side spanning it exactly.
    assert out.uv.min() >= 0.05 - 1e-12 and out.uv.max() <= 0.95 + 1e-12
    assert (out.uv.max(axis=0) - out.uv.min(axis=0)).max() == pytest.approx(0.9)
    # Faces keep their winding in UV, whichever way the mesh is wound.
    assert flipped_uv_faces(out).size == 0
    assert (uv_cross(out) > 0).all()
    assert (uv_cross(automatic_uv(mesh.copy(faces=mesh.faces[:, ::-1].copy()), "planar")) > 0).all()
    assert mesh.uv is None  # the input is not modified


def test_auto_uses_planar_for_a_height_field():
    mesh = jittered_grid(8, 7, np.random.default_rng(7)).copy(uv=None, uv_faces=None)
    out = automatic_uv(mesh)
    np.testing.assert_array_equal(out.uv, automatic_uv(mesh, "planar").uv)
    assert check_uv_overlap(out).shape == (0, 2) and flipped_uv_faces(out).size == 0


def test_auto_falls_back_to_cylindrical_for_a_tube():
    mesh = open_tube(16, 10)
    assert flipped_uv_faces(automatic_uv(mesh, "planar")).size > 0
    out = automatic_uv(mesh)
    cyl = automatic_uv(mesh, "cylindrical")
    np.testing.assert_array_equal(out.uv, cyl.uv)
    np.testing.assert_array_equal(out.uv_faces, cyl.uv_faces)
    assert flipped_uv_faces(out).size == 0 and check_uv_overlap(out).shape == (0, 2)
    assert (uv_cross(out) > 0).all()
    reversed_tube = mesh.copy(faces=mesh.faces[:, ::-1].copy())
    assert (uv_cross(automatic_uv(reversed_tube, "cylindrical")) > 0).all()
    # The cut: seam faces use shifted copies instead of wrapping across the map.
    assert out.uv.shape[0] > mesh.num_vertices
    tri = out.uv[out.uv_faces]  # (F, 3, 2)
    assert (np.ptp(tri[..., 0], axis=1) < 0.1).all()
    np.testing.assert_allclose(out.uv[out.uv_faces[:, 0]][:, 1], out.uv[mesh.faces[:, 0]][:, 1])
    assert out.uv.min() >= 0.02 - 1e-12 and out.uv.max() <= 0.98 + 1e-12
    # Unrolled tube: the chart is the full rectangle, so texel maps are hole-free inside it.
    tm = texel_map(out, 64)
    rows = np.flatnonzero(tm.mask.numpy().any(axis=1))
    cols = np.flatnonzero(tm.mask.numpy().any(axis=0))
    assert tm.mask.numpy()[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()


def test_auto_raises_when_both_projections_fold():
    with pytest.raises(MeshValidationError, match="planar: .*cylindrical: "):
        automatic_uv(torus(24, 12))


def test_automatic_uv_rejects_bad_arguments():
    mesh = open_tube(6, 3)
    with pytest.raises(ValueError, match="method"):
        automatic_uv(mesh, "spherical")
    with pytest.raises(ValueError, match="margin"):
        automatic_uv(mesh, margin=0.5)
    with pytest.raises(TypeError, match="Mesh"):
        automatic_uv(mesh.vertices)


def test_ensure_uv():
    mesh = jittered_grid(4, 4, np.random.default_rng(8))
    assert ensure_uv(mesh) is mesh
    bare = mesh.copy(uv=None, uv_faces=None)
    out = ensure_uv(bare)
    assert out is not bare and out.uv is not None and bare.uv is None


def test_flipped_faces_are_found():
    mesh = jittered_grid(5, 5, np.random.default_rng(9))
    uv_faces = mesh.uv_faces.copy()
    uv_faces[7] = uv_faces[7, ::-1]  # mirror one triangle's UV orientation
    np.testing.assert_array_equal(flipped_uv_faces(mesh.copy(uv_faces=uv_faces)), [7])
    assert flipped_uv_faces(mesh).size == 0
    # a negative rtol used to report every face of a clean chart as flipped
    for rtol in (-float(np.random.default_rng(9).uniform(0.1, 1.0)), float("nan"), float("inf"), "1e-12", True):
        with pytest.raises(ValueError, match="rtol: expected a finite number >= 0"):
            flipped_uv_faces(mesh, rtol=rtol)


# --------------------------------------------------------------------------- coverage
def test_coverage_of_the_unit_square_and_of_a_chart():
    sq = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    mesh = Mesh(np.column_stack([sq, np.zeros(4)]), faces, uv=sq, uv_faces=faces)
    assert uv_coverage(mesh) == pytest.approx(1.0)
    grid = jittered_grid(6, 6, np.random.default_rng(10))
    # The grid's chart is its jittered outline inside [0.05, 0.95]^2: compare with the shoelace area.
    tri = grid.uv[grid.uv_faces]
    area = 0.5 * np.abs((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
                        - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0])).sum()
    assert uv_coverage(grid) == pytest.approx(area, rel=1e-12)


def test_coverage_clips_triangles_to_the_unit_square():
    rng = np.random.default_rng(11)
    k = 1000  # dense sample grid as the reference
    centres = (np.stack(np.meshgrid(np.arange(k), np.arange(k), indexing="xy"), -1).reshape(-1, 2) + 0.5) / k
    for _ in range(6):
        uv = rng.uniform(-0.6, 1.6, size=(3, 2))
        faces = np.array([[0, 1, 2]])
        mesh = Mesh(rng.normal(size=(3, 3)), faces, uv=uv, uv_faces=faces)
        a, b, c = uv
        s = np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
        inside = np.ones(len(centres), dtype=bool)
        for p, q in ((a, b), (b, c), (c, a)):
            inside &= s * ((q[0] - p[0]) * (centres[:, 1] - p[1]) - (q[1] - p[1]) * (centres[:, 0] - p[0])) >= 0
        assert uv_coverage(mesh) == pytest.approx(inside.mean(), abs=2e-3)


def test_uv_triangles_outside_the_unit_square_are_said_not_dropped_silently():
    """UVs shifted past u = 1 lost half the face's texels without a word (viewers repeat such UVs)."""
    import warnings

    from mesh_decoder.mesh.templates import face_template

    face = face_template(500)
    shift = float(np.random.default_rng().uniform(0.3, 0.6))
    uv = face.uv.copy()
    uv[:, 0] += shift
    outside = int(((uv[face.uv_faces] < 0) | (uv[face.uv_faces] > 1)).any(axis=(1, 2)).sum())
    with pytest.warns(UserWarning, match=rf"^{outside} of {face.num_faces} UV triangles reach outside \[0, 1\]\^2 "
                                         r"\(UV range \[.*\]\): the texel map holds only their parts inside it"):
        tm = texel_map(face.copy(uv=uv), 32)
    assert 0 < float(tm.mask.float().mean()) < float(texel_map(face, 32).mask.float().mean())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        texel_map(face, 32)  # the built-in layout stays inside
