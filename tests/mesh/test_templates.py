"""Built-in templates: exact counts, irregular blue-noise triangulation, UVs, seam, landmarks."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from mesh_decoder.errors import MeshValidationError
from mesh_decoder.mesh import Mesh
from mesh_decoder.mesh.landmarks import FACE_LANDMARKS, MIRROR_PAIRS, SPHERE_LANDMARKS
from mesh_decoder.mesh.templates import (
    NEUTRAL_CONTROLS,
    R0,
    canonical_coordinates,
    face_surface,
    face_template,
    head_template,
    icosphere,
    template,
    template_info,
)

HEAD_PERIOD = 2.0 * math.pi * R0
HEAD_Y = (-125.0, 115.0)


@pytest.fixture(scope="module")
def face() -> Mesh:
    return face_template(5023, seed=0)


@pytest.fixture(scope="module")
def head() -> Mesh:
    return head_template(5023, seed=0)


# ----------------------------------------------------------------------- helpers
def min_angles(points: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Smallest corner angle (degrees) of each triangle, by explicit law of cosines."""
    p = points[faces]  # (F, 3, D)
    out = np.full(faces.shape[0], 180.0)
    for k in range(3):
        a = p[:, (k + 1) % 3] - p[:, k]
        b = p[:, (k + 2) % 3] - p[:, k]
        cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        out = np.minimum(out, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))
    return out


def valences(mesh: Mesh) -> np.ndarray:
    e = mesh.edges()
    return np.bincount(e.ravel(), minlength=mesh.num_vertices)


def head_parameter_points(mesh: Mesh) -> np.ndarray:
    """Per-corner parameter-domain points ``(p, y)`` of the head recovered from its UVs, ``(F, 3, 2)``."""
    uv = mesh.uv[mesh.uv_faces]  # (F, 3, 2)
    p = uv[..., 0] * HEAD_PERIOD
    y = HEAD_Y[0] + (uv[..., 1] - 0.01) / 0.98 * (HEAD_Y[1] - HEAD_Y[0])
    return np.stack([p, y], axis=-1)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    p = vertices[faces]
    n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    return n / np.linalg.norm(n, axis=1, keepdims=True)


# -------------------------------------------------------------------- vertex count
@pytest.mark.parametrize("builder", [face_template, head_template])
@pytest.mark.parametrize("n", [500, 5023, 12345])
def test_exact_vertex_count_and_valid(builder, n):
    mesh = builder(n, seed=1)
    assert mesh.num_vertices == n
    mesh.validate()
    assert np.unique(mesh.faces).size == n  # no unreferenced vertex
    b = mesh.boundary_edges().shape[0]
    chi = 1 if builder is face_template else 0  # disk / tube
    assert mesh.num_faces == 2 * n - b - 2 * chi  # Euler: V - E + F = chi with 3F = 2E - B


@pytest.mark.slow
@pytest.mark.parametrize("builder", [face_template, head_template])
def test_100k_vertices(builder):
    mesh = builder(100_000)
    assert mesh.num_vertices == 100_000
    mesh.validate()


@pytest.mark.parametrize("n", [499, 100_001, 0, -5])
def test_vertex_count_out_of_range(n):
    with pytest.raises(ValueError, match=r"\[500, 100000\].*got"):
        face_template(n)
    with pytest.raises(ValueError, match="got"):
        head_template(n)


@pytest.mark.parametrize("n", [5023.0, "5023", True])
def test_vertex_count_type(n):
    with pytest.raises(TypeError, match="expected an int"):
        face_template(n)


def test_negative_seed_is_value_error():
    rng = np.random.default_rng(40)
    for seed in (-1, int(-rng.integers(2, 10**6)), np.int64(-rng.integers(1, 100))):
        for builder in (face_template, head_template):
            with pytest.raises(ValueError, match=rf"seed: expected a non-negative int, got {int(seed)}"):
                builder(500, seed=seed)
        with pytest.raises(ValueError, match="seed"):
            template("face", 500, seed=seed)
    for seed in (1.0, "1", True, None):
        with pytest.raises(TypeError, match="seed: expected a non-negative int"):
            face_template(500, seed=seed)


def test_deterministic_per_seed():
    a, b, c = face_template(900, seed=3), face_template(900, seed=3), face_template(900, seed=4)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(a.faces, b.faces)
    np.testing.assert_array_equal(a.uv, b.uv)
    assert a.landmarks == b.landmarks
    assert a.content_hash() == b.content_hash() != c.content_hash()
    h1, h2 = head_template(900, seed=3), head_template(900, seed=3)
    np.testing.assert_array_equal(h1.vertices, h2.vertices)
    np.testing.assert_array_equal(h1.uv_faces, h2.uv_faces)


# --------------------------------------------------------------- triangulation
@pytest.mark.parametrize("builder", [face_template, head_template])
def test_irregular_not_a_grid(builder):
    mesh = builder(5023, seed=2)
    boundary = np.zeros(mesh.num_vertices, bool)
    boundary[mesh.boundary_vertices()] = True
    val = valences(mesh)[~boundary]
    assert set(np.unique(val)) >= {5, 6, 7}
    assert np.mean(val == 6) < 0.75  # a (jittered) grid would be ~100 % valence 6
    assert val.mean() == pytest.approx(6.0, abs=0.05)  # still a planar-like triangulation
    e = mesh.edges()
    length = np.linalg.norm(mesh.vertices[e[:, 0]] - mesh.vertices[e[:, 1]], axis=1)
    assert length.std() / length.mean() > 0.12


def test_no_slivers_face(face):
    two_d = min_angles(face.uv, face.uv_faces)  # the UVs are the parameter domain, scaled isotropically
    three_d = min_angles(face.vertices, face.faces)
    assert two_d.min() > 15.0
    assert three_d.min() > 10.0
    assert np.percentile(three_d, 1) > 20.0


def test_no_slivers_head(head):
    param = head_parameter_points(head)  # (F, 3, 2)
    flat = param.reshape(-1, 2)
    two_d = min_angles(flat, np.arange(flat.shape[0]).reshape(-1, 3))
    assert two_d.min() > 15.0
    assert min_angles(head.vertices, head.faces).min() > 10.0


def _circumcircles(p: np.ndarray):
    a, b, c = p[:, 0], p[:, 1], p[:, 2]
    d = 2 * (a[:, 0] * (b[:, 1] - c[:, 1]) + b[:, 0] * (c[:, 1] - a[:, 1]) + c[:, 0] * (a[:, 1] - b[:, 1]))
    sa, sb, sc = (a**2).sum(1), (b**2).sum(1), (c**2).sum(1)
    ux = (sa * (b[:, 1] - c[:, 1]) + sb * (c[:, 1] - a[:, 1]) + sc * (a[:, 1] - b[:, 1])) / d
    uy = (sa * (c[:, 0] - b[:, 0]) + sb * (a[:, 0] - c[:, 0]) + sc * (b[:, 0] - a[:, 0])) / d
    centre = np.stack([ux, uy], 1)
    return centre, np.linalg.norm(a - centre, axis=1)


def test_face_triangulation_is_delaunay():
    """Empty-circumcircle property, checked triangle by triangle against every vertex."""
    mesh = face_template(600, seed=5)
    pts = mesh.uv
    centre, radius = _circumcircles(pts[mesh.faces])
    for f in range(mesh.num_faces):
        d = np.linalg.norm(pts - centre[f], axis=1)
        d[mesh.faces[f]] = np.inf
        assert d.min() > radius[f] * (1 - 1e-9), f"vertex inside the circumcircle of face {f}"


def test_head_triangulation_is_periodic_delaunay():
    mesh = head_template(600, seed=5)
    param = head_parameter_points(mesh)  # (F, 3, 2), each triangle contiguous
    pts = np.zeros((mesh.num_vertices, 2))
    pts[mesh.faces.ravel()] = param.reshape(-1, 2)
    pts[:, 0] = np.mod(pts[:, 0], HEAD_PERIOD)
    ext = np.concatenate([pts, pts + (HEAD_PERIOD, 0.0), pts - (HEAD_PERIOD, 0.0)])
    centre, radius = _circumcircles(param)
    for f in range(mesh.num_faces):
        d = np.linalg.norm(ext - centre[f], axis=1)
        d[(mesh.faces[f][None, :] + mesh.num_vertices * np.arange(3)[:, None]).ravel()] = np.inf  # its own corners
        assert d.min() > radius[f] * (1 - 1e-9)


def _boundary_loops(mesh: Mesh) -> list[list[int]]:
    nxt = {int(a): int(b) for a, b in mesh.boundary_edges()}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(loop)
    return loops


def test_face_topology_disk(face):
    loops = _boundary_loops(face)
    assert len(loops) == 1
    chi = face.num_vertices - face.edges().shape[0] + face.num_faces
    assert chi == 1
    # boundary vertices lie on the domain ellipse (UV disk of radius 0.49 around the centre)
    uv = face.uv[loops[0]]
    a = 0.98 / 2.0
    b = 0.98 * 105.0 / (2.0 * 111.0)
    rho = ((uv[:, 0] - 0.5) / a) ** 2 + ((uv[:, 1] - 0.5) / b) ** 2
    np.testing.assert_allclose(rho, 1.0, atol=1e-6)


def test_head_topology_tube(head):
    loops = _boundary_loops(head)
    assert len(loops) == 2
    assert head.num_vertices - head.edges().shape[0] + head.num_faces == 0
    ys = sorted(np.unique(np.round(head.vertices[loop, 1], 9)).tolist() for loop in loops)
    assert ys == [[HEAD_Y[0]], [HEAD_Y[1]]]


def test_outward_ccw_winding(face, head):
    """The surface is radial: each face normal must point away from the vertical axis."""
    for mesh in (face, head):
        n = face_normals(mesh.vertices, mesh.faces)
        c = mesh.vertices[mesh.faces].mean(axis=1)
        radial = c * np.array([1.0, 0.0, 1.0])
        radial /= np.linalg.norm(radial, axis=1, keepdims=True)
        assert ((n * radial).sum(1) > 0.05).all()
    # seen from +z, the front of the face is counter-clockwise in (x, y)
    p = face.vertices[face.faces]
    front = p[:, :, 2].min(1) > 60
    d1, d2 = p[front, 1] - p[front, 0], p[front, 2] - p[front, 0]
    assert (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] > 0).all()


# -------------------------------------------------------------------- geometry
def test_face_scale_mm(face):
    size = np.ptp(face.vertices, axis=0)
    assert 140 < size[0] < 165  # width
    assert 195 < size[1] < 220  # height
    assert 85 < size[2] < 115  # depth
    # the nose tip is the most forward point
    tip = face.vertices[face.landmarks["nose_tip"]]
    assert tip[2] > face.vertices[:, 2].max() - 2.5
    assert abs(tip[0]) < 2.0


def test_head_scale_mm(head):
    size = np.ptp(head.vertices, axis=0)
    assert 145 < size[0] < 170
    assert size[1] == pytest.approx(240.0)
    assert 200 < size[2] < 240


def test_canonical_coordinates_round_trip(face, head):
    for mesh in (face, head):
        c = canonical_coordinates(mesh)
        again = face_surface(c[:, 0], c[:, 1])[0]
        np.testing.assert_allclose(again, mesh.vertices, atol=1e-9)
        np.testing.assert_allclose(canonical_coordinates(mesh.vertices), c)
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        canonical_coordinates(np.zeros((4, 2)))


def test_face_surface_batch_consistency():
    rng = np.random.default_rng(11)
    s = rng.uniform(-100, 100, 300)
    y = rng.uniform(-110, 100, 300)
    n = 4
    controls = {k: v + rng.uniform(-0.1, 0.1, n) for k, v in NEUTRAL_CONTROLS.items()}
    controls["jaw_open"] = rng.uniform(0, 0.3, n)
    controls["detail"] = rng.normal(0, 1, (n, 300))
    batched = face_surface(s, y, controls)
    assert batched.shape == (n, 300, 3)
    for i in range(n):
        single = {k: v[i] for k, v in controls.items() if k != "detail"}
        single["detail"] = controls["detail"][i:i + 1]
        one = face_surface(s, y, single)
        np.testing.assert_allclose(batched[i], one[0], rtol=0, atol=1e-12)


def test_face_surface_errors():
    s = np.zeros(5)
    with pytest.raises(ValueError, match="unknown names"):
        face_surface(s, s, {"nose_size": 1.0})
    with pytest.raises(ValueError, match="one batch size"):
        face_surface(s, s, {"width": np.ones(2), "depth": np.ones(3)})
    with pytest.raises(ValueError, match=r"\(N, 5\)"):
        face_surface(s, s, {"detail": np.ones((2, 4))})
    with pytest.raises(ValueError, match=r"\(V,\)"):
        face_surface(s, np.zeros(4))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_face_surface_refuses_non_finite_detail_and_coordinates(bad):
    rng = np.random.default_rng(31)
    s, y = rng.uniform(-60, 60, 6), rng.uniform(-90, 50, 6)
    detail = rng.normal(size=(2, 6))
    detail[1, 4] = bad  # used to give NaN positions silently, unlike every named control
    with pytest.raises(ValueError, match=r"controls\['detail'\]: expected finite values"):
        face_surface(s, y, {"detail": detail})
    for k in (0, 1):
        coords = [s.copy(), y.copy()]
        coords[k][2] = bad
        with pytest.raises(ValueError, match="s, y: expected finite canonical coordinates"):
            face_surface(*coords)
    assert np.isfinite(face_surface(s, y, {"detail": rng.normal(size=(2, 6))})).all()


# ------------------------------------------------------------------------- UVs
def test_face_uv(face):
    np.testing.assert_array_equal(face.uv_faces, face.faces)
    assert face.uv.min() >= 0.0 and face.uv.max() <= 1.0
    info = template_info(face)
    ellipse = math.pi * (0.98 / 2) * (0.98 * 105.0 / 222.0)
    assert info["uv_coverage"] == pytest.approx(ellipse, rel=0.01)
    assert info["uv_coverage"] < ellipse  # an inscribed polygon
    assert info["uv_flipped_faces"] == 0 and info["uv_overlapping_pairs"] == 0


def test_head_uv_seam(head):
    # vertices with two distinct UVs
    uv_of: dict[int, set[int]] = {}
    for v, t in zip(head.faces.ravel(), head.uv_faces.ravel()):
        uv_of.setdefault(int(v), set()).add(int(t))
    split = sorted(v for v, ts in uv_of.items() if len(ts) > 1)
    assert len(split) > 10
    assert all(len(uv_of[v]) == 2 for v in split)
    for v in split:
        a, b = (head.uv[t] for t in sorted(uv_of[v]))
        assert sorted([a[0], b[0]]) == [0.0, 1.0] and a[1] == b[1]
    # the seam runs down the back of the head, on the midline
    seam_xyz = head.vertices[split]
    assert np.abs(seam_xyz[:, 0]).max() < 1e-9 and (seam_xyz[:, 2] < 0).all()
    assert head.uv.shape[0] == head.num_vertices + len(split)
    # closed around in 3D: the seam vertices are interior (not on a boundary) except at the ends
    interior = set(split) - set(head.boundary_vertices().tolist())
    assert len(interior) == len(split) - 2
    # no UV triangle wraps around: all are small and counter-clockwise
    uv = head.uv[head.uv_faces]
    assert np.ptp(uv[..., 0], axis=1).max() < 0.1
    d1, d2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    assert (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] > 0).all()
    info = template_info(head)
    assert info["uv_coverage"] == pytest.approx(0.98, abs=1e-6)
    assert info["uv_flipped_faces"] == 0 and info["uv_overlapping_pairs"] == 0
    assert info["num_uv"] == head.uv.shape[0]


# ------------------------------------------------------------------- landmarks
@pytest.mark.parametrize("which", ["face", "head"])
def test_landmarks(which, face, head):
    mesh = face if which == "face" else head
    assert len(mesh.landmarks) >= 20 and set(mesh.landmarks) == set(FACE_LANDMARKS)
    names = set(mesh.landmarks)
    assert {"eye_outer_left", "eye_inner_left", "eye_outer_right", "eye_inner_right"} <= names
    assert sum(n.startswith("brow") for n in names) >= 6
    assert sum(n.startswith("jaw") or n == "chin" for n in names) >= 5
    idx = np.array(list(mesh.landmarks.values()))
    assert ((idx >= 0) & (idx < mesh.num_vertices)).all() and np.unique(idx).size == idx.size
    e = mesh.edges()
    spacing = np.linalg.norm(mesh.vertices[e[:, 0]] - mesh.vertices[e[:, 1]], axis=1).mean()
    v = mesh.vertices
    for left, right in MIRROR_PAIRS:
        pl, pr = v[mesh.landmarks[left]], v[mesh.landmarks[right]]
        assert pl[0] > 5 and pr[0] < -5, (left, pl, pr)  # subject's left is +x
        assert abs(pl[0] + pr[0]) < 2 * spacing, (left, pl, pr)
        assert abs(pl[1] - pr[1]) < 2 * spacing
        assert abs(pl[2] - pr[2]) < 2 * spacing + 3
    # each landmark is the vertex nearest to its canonical position (reference: a loop)
    canon = canonical_coordinates(mesh)
    for name, target in FACE_LANDMARKS.items():
        d = np.linalg.norm(canon - np.asarray(target), axis=1)
        assert mesh.landmarks[name] == int(np.argmin(d))
    y = {n: v[i, 1] for n, i in mesh.landmarks.items()}
    assert y["brow_mid_left"] > y["eye_top_left"] > y["eye_bottom_left"] > y["nose_tip"] > y["upper_lip"]
    assert y["upper_lip"] > y["lower_lip"] > y["chin"]
    assert abs(v[mesh.landmarks["eye_outer_left"], 0]) > abs(v[mesh.landmarks["eye_inner_left"], 0])


# --------------------------------------------------------------------- sphere
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_icosphere(k):
    radius = 37.5
    mesh = icosphere(k, radius=radius).validate()
    assert mesh.num_vertices == 10 * 4**k + 2 and mesh.num_faces == 20 * 4**k
    np.testing.assert_allclose(np.linalg.norm(mesh.vertices, axis=1), radius, rtol=1e-12)
    assert mesh.boundary_edges().shape[0] == 0
    assert mesh.num_vertices - mesh.edges().shape[0] + mesh.num_faces == 2
    n = face_normals(mesh.vertices, mesh.faces)
    assert ((n * mesh.vertices[mesh.faces].mean(1)).sum(1) > 0).all()
    # enclosed volume (divergence theorem) approaches the ball's from below
    p = mesh.vertices[mesh.faces]
    volume = np.einsum("ij,ij->i", p[:, 0], np.cross(p[:, 1], p[:, 2])).sum() / 6.0
    assert 0.6 * 4 / 3 * math.pi * radius**3 < volume < 4 / 3 * math.pi * radius**3
    assert set(mesh.landmarks) == set(SPHERE_LANDMARKS)
    for name, direction in SPHERE_LANDMARKS.items():
        u = mesh.vertices[mesh.landmarks[name]] / radius
        assert u @ np.asarray(direction) > 0.8


@pytest.mark.parametrize("k", [1, 3])
def test_icosphere_uv_seam(k):
    from mesh_decoder.mesh.uv import check_uv_overlap, flipped_uv_faces, texel_map

    mesh = icosphere(k)
    assert mesh.uv is not None and mesh.uv.min() >= 0.0 and mesh.uv.max() <= 1.0
    assert flipped_uv_faces(mesh).size == 0
    assert len(check_uv_overlap(mesh, 256)) == 0
    # the seam: some vertices carry several UV corners (the poles one per incident face)
    corners_per_vertex = np.zeros(mesh.num_vertices, dtype=int)
    pairs = np.unique(np.stack([mesh.faces.ravel(), mesh.uv_faces.ravel()], 1), axis=0)
    np.add.at(corners_per_vertex, pairs[:, 0], 1)
    assert (corners_per_vertex > 1).sum() > 2
    assert corners_per_vertex.max() == 5  # a pole is an icosahedron vertex of valence 5
    # texels map back to points on the sphere (interpolated vertices stay near radius)
    tm = texel_map(mesh, 64)
    pts = (mesh.vertices[tm.index.numpy()] * tm.weight.numpy()[..., None]).sum(-2)[tm.mask.numpy()]
    r = np.linalg.norm(pts, axis=1)
    assert r.max() <= 100.0 + 1e-6 and r.min() > 80.0


def test_icosphere_errors():
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        icosphere(8)
    with pytest.raises(TypeError):
        icosphere(2.0)
    with pytest.raises(ValueError, match="radius"):
        icosphere(1, radius=-1.0)


@pytest.mark.parametrize("radius", ["50", True, np.array([50.0]), None])
def test_icosphere_radius_must_be_a_number(radius):
    with pytest.raises(TypeError, match="radius: expected a positive finite number"):  # "50" and True were accepted
        icosphere(1, radius=radius)


def test_icosphere_radius_takes_numpy_and_torch_scalars():
    torch = pytest.importorskip("torch")
    r = float(np.random.default_rng(32).uniform(10, 200))
    for value in (np.float32(r), np.array(r), torch.tensor(r, dtype=torch.float64)):
        np.testing.assert_allclose(np.linalg.norm(icosphere(1, radius=value).vertices, axis=1), float(value))


def test_template_dispatch():
    assert template("face", 700).num_vertices == 700
    assert template("head", 700).num_vertices == 700
    assert template("sphere", 642).num_vertices == 642
    assert template("sphere", 643).num_vertices == 2562
    assert template("sphere", 5023).num_vertices == 10242
    assert template("sphere", None).num_vertices == 642
    np.testing.assert_array_equal(template("face", 700, seed=2).vertices, face_template(700, seed=2).vertices)
    with pytest.raises(ValueError, match="'face', 'head' or 'sphere'"):
        template("cube")
    with pytest.raises(ValueError, match="at most 163842"):
        template("sphere", 200_000)


def test_template_sphere_rejects_non_positive_counts():
    rng = np.random.default_rng(41)
    for n in (0, -1, int(-rng.integers(2, 10**6)), np.int32(-rng.integers(1, 100))):
        with pytest.raises(ValueError, match=rf"num_vertices: expected an integer in \[1, 163842\].*got {int(n)}"):
            template("sphere", n)
    n = int(rng.integers(1, 13))
    assert template("sphere", n).num_vertices == 12
    with pytest.raises(TypeError, match="expected an int"):
        template("sphere", 12.0)


def test_template_info(face):
    info = template_info(face)
    assert info["num_vertices"] == face.num_vertices and info["num_faces"] == face.num_faces
    assert info["num_landmarks"] == 33
    # boundary length, reference: walk the boundary loop
    loop = _boundary_loops(face)[0]
    walk = sum(np.linalg.norm(face.vertices[loop[i]] - face.vertices[loop[(i + 1) % len(loop)]])
               for i in range(len(loop)))
    assert info["num_boundary_edges"] == len(loop)
    assert info["boundary_length"] == pytest.approx(walk, rel=1e-12)
    np.testing.assert_allclose(info["bbox_size"], np.ptp(face.vertices, axis=0))
    sphere = template_info(icosphere(2))
    assert sphere["num_boundary_edges"] == 0 and 0.7 < sphere["uv_coverage"] <= 1.0
    with pytest.raises(TypeError):
        template_info(face.vertices)


def test_template_info_refuses_out_of_range_faces_and_an_empty_mesh(face):
    rng = np.random.default_rng(11)
    faces = face.faces.copy()
    faces[int(rng.integers(face.num_faces)), 1] = face.num_vertices + int(rng.integers(1, 50))
    # an IndexError from numpy before
    with pytest.raises(MeshValidationError, match=rf"faces: expected vertex indices in \[0, {face.num_vertices}\)"):
        template_info(face.copy(faces=faces))
    # numpy's "zero-size array to reduction operation" before
    with pytest.raises(MeshValidationError, match="expected at least one vertex and one face, got V=0, F=0"):
        template_info(Mesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64)))


def test_import_without_openmesh():
    code = ("import sys; import mesh_decoder.mesh as m; m.face_template(500); m.head_template(500); "
            "from mesh_decoder.data import SyntheticFaces; "
            "assert 'openmesh' not in sys.modules, 'openmesh imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("n", [12, 42, 162])
def test_sphere_landmarks_are_the_vertices_nearest_their_axis_points(n):
    """The docstring said the landmarks are the poles and axis points; the 12-vertex icosahedron has no vertex
    there, so they are the nearest vertices (exactly on them from 42 vertices up)."""
    from mesh_decoder.mesh import template

    t = template("sphere", n)
    unit = t.vertices / np.linalg.norm(t.vertices, axis=1, keepdims=True)  # (V, 3)
    axes = {"north_pole": (0, 1, 0), "south_pole": (0, -1, 0), "front": (0, 0, 1), "back": (0, 0, -1),
            "left": (1, 0, 0), "right": (-1, 0, 0)}
    for name, axis in axes.items():
        cos = unit @ np.asarray(axis, dtype=np.float64)  # (V,)
        assert cos[t.landmarks[name]] == pytest.approx(cos.max(), abs=1e-12), name
        if n >= 42:
            assert cos[t.landmarks[name]] == pytest.approx(1.0, abs=1e-12), name


def test_template_info_counts_components_seams_and_zero_area_faces(face):
    """An unwelded seam (coincident vertices) and zero-area faces passed --info unremarked; the build then cut
    the face in two in silence, or failed blaming the factors."""
    info = template_info(face)
    assert (info["num_components"], info["coincident_vertices"], info["degenerate_faces"]) == (1, 0, 0)
    V = face.num_vertices
    twice = Mesh(np.vstack([face.vertices, face.vertices]), np.vstack([face.faces, face.faces + V]))
    info = template_info(twice)
    assert (info["num_components"], info["coincident_vertices"], info["degenerate_faces"]) == (2, 2 * V, 0)
    rng = np.random.default_rng()
    f = int(rng.integers(face.num_faces))
    vertices = face.vertices.copy()
    vertices[face.faces[f]] = vertices[face.faces[f, 0]]  # one face's corners moved onto one point
    info = template_info(face.copy(vertices=vertices))
    assert info["coincident_vertices"] == 3 and info["degenerate_faces"] >= 1
    np.testing.assert_array_equal(face.copy(vertices=vertices).coincident_vertices(), np.sort(face.faces[f]))
