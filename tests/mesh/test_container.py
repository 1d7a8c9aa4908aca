"""Tests of the Mesh container: constructor checks, validate(), content_hash, topology helpers."""

from __future__ import annotations

import itertools
import re
import warnings

import numpy as np
import pytest

from mesh_decoder.errors import MeshError, MeshValidationError
from mesh_decoder.mesh import Mesh

# two triangles forming the unit square, sharing the diagonal 1-2, consistently wound
SQUARE_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
SQUARE_F = np.array([[0, 1, 2], [1, 3, 2]])
# a closed tetrahedron, outward-facing
TET_V = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
TET_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])


def edges_reference(faces):
    """Unique undirected edges by explicit loops."""
    out = set()
    for f in faces.tolist():
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            out.add((min(a, b), max(a, b)))
    return sorted(out)


def boundary_reference(faces):
    """Directed half-edges whose undirected edge is used by exactly one face, by loops."""
    uses = {}
    for f in faces.tolist():
        for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0])):
            uses.setdefault((min(a, b), max(a, b)), []).append((a, b))
    return sorted(he[0] for he in uses.values() if len(he) == 1)


# ----------------------------------------------------------------------------- constructor
def test_constructor_converts_dtypes_and_copies_landmarks():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 3)).astype(np.float32)
    m = Mesh(v, SQUARE_F.astype(np.int32), landmarks={"a": np.int64(2)})
    assert m.vertices.dtype == np.float64 and m.faces.dtype == np.int64
    assert np.array_equal(m.vertices, v.astype(np.float64))
    assert m.landmarks == {"a": 2} and type(m.landmarks["a"]) is int
    assert (m.num_vertices, m.num_faces) == (4, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(vertices=np.zeros((4, 2)), faces=SQUARE_F), r"vertices: expected shape \(N, 3\), got \(4, 2\)"),
        (dict(vertices=np.zeros(12), faces=SQUARE_F), r"vertices: expected shape \(N, 3\), got \(12,\)"),
        (dict(vertices=SQUARE_V, faces=SQUARE_F.T), r"faces: expected shape \(N, 3\), got \(3, 2\)"),
        (dict(vertices=SQUARE_V, faces=SQUARE_F + 0.5), "faces: expected integer indices"),
        (dict(vertices=SQUARE_V, faces=np.array([[0, 1, np.nan]])), "faces: expected integer indices"),
        (dict(vertices=np.array([[None, 1, 2]]), faces=SQUARE_F), "vertices: expected a numeric array"),
        (dict(vertices=SQUARE_V, faces=SQUARE_F, uv=np.zeros((4, 2))), "uv and uv_faces: expected both or neither"),
        (dict(vertices=SQUARE_V, faces=SQUARE_F, uv_faces=SQUARE_F), "uv and uv_faces: expected both or neither"),
        (
            dict(vertices=SQUARE_V, faces=SQUARE_F, uv=np.zeros((4, 3)), uv_faces=SQUARE_F),
            r"uv: expected shape \(N, 2\), got \(4, 3\)",
        ),
        (
            dict(vertices=SQUARE_V, faces=SQUARE_F, uv=np.zeros((4, 2)), uv_faces=SQUARE_F[:1]),
            "uv_faces: expected 2 rows .one per face., got 1",
        ),
        (
            dict(vertices=SQUARE_V, faces=SQUARE_F, colors=np.zeros((3, 3))),
            "colors: expected 4 rows .one per vertex., got 3",
        ),
        (
            dict(vertices=SQUARE_V, faces=SQUARE_F, colors=np.zeros((4, 4))),
            r"colors: expected shape \(N, 3\), got \(4, 4\)",
        ),
    ],
)
def test_constructor_rejects_bad_shapes_and_dtypes(kwargs, message):
    with pytest.raises(MeshValidationError, match=message):
        Mesh(**kwargs)


def test_errors_are_value_errors():
    assert issubclass(MeshValidationError, MeshError) and issubclass(MeshValidationError, ValueError)


# ----------------------------------------------------------------------------- validate
def _grid(make_grid_mesh, seed, **kw):
    return make_grid_mesh(np.random.default_rng(seed), 4, 5, **kw)


def test_validate_accepts_random_valid_meshes(make_grid_mesh):
    for seed in range(5):
        m = _grid(make_grid_mesh, seed, colors=True, uv="corner", landmarks=3)
        assert m.validate() is m


def test_validate_index_out_of_range(make_grid_mesh):
    m = _grid(make_grid_mesh, 1)
    faces = m.faces.copy()
    faces[3, 1] = m.num_vertices
    with pytest.raises(MeshValidationError, match=rf"face 3 has vertex index out of range \[0, {m.num_vertices}\)"):
        m.copy(faces=faces).validate()
    faces[3, 1] = -1
    with pytest.raises(MeshValidationError, match="face 3 has vertex index out of range"):
        m.copy(faces=faces).validate()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_validate_non_finite_positions(make_grid_mesh, bad):
    m = _grid(make_grid_mesh, 2)
    v = m.vertices.copy()
    v[7, 2] = bad
    with pytest.raises(MeshValidationError, match="vertices: expected finite values, got .* at row 7"):
        m.copy(vertices=v).validate()


def test_validate_non_finite_uv_and_colors(make_grid_mesh):
    m = _grid(make_grid_mesh, 3, colors=True, uv="vertex")
    uv = m.uv.copy()
    uv[2, 0] = np.nan
    with pytest.raises(MeshValidationError, match="uv: expected finite values, got .* at row 2"):
        m.copy(uv=uv).validate()
    colors = m.colors.copy()
    colors[5, 1] = np.inf
    with pytest.raises(MeshValidationError, match="colors: expected finite values, got .* at row 5"):
        m.copy(colors=colors).validate()


def test_validate_refuses_colours_outside_0_1(make_grid_mesh):
    """8-bit colours in a Mesh passed validate() and were trained on 255 times too bright; only saving refused."""
    m = _grid(make_grid_mesh, 3, colors=True)
    rng = np.random.default_rng()
    eight_bit = rng.integers(0, 256, m.colors.shape).astype(np.float64)
    eight_bit[0, 0] = 200.0  # at least one value above 1
    with pytest.raises(MeshValidationError, match=r"^colors: expected RGB values in \[0, 1\], got range "
                                                  r"\[\S+, \S+\] \(8-bit colours\? divide them by 255\)$"):
        m.copy(colors=eight_bit).validate()
    slightly = m.colors.copy()
    slightly[1, 2] = -rng.uniform(0.01, 0.5)
    with pytest.raises(MeshValidationError, match=r"^colors: expected RGB values in \[0, 1\], got range \[-0\.\d+, "):
        m.copy(colors=slightly).validate()
    m.copy(colors=eight_bit / 255).validate()  # the scaled colours pass


def test_validate_degenerate_face():
    faces = np.array([[0, 1, 2], [1, 3, 1]])
    with pytest.raises(MeshValidationError, match=r"face 1 is degenerate \(repeated vertex\): \[1, 3, 1\]"):
        Mesh(SQUARE_V, faces).validate()


def test_validate_duplicate_face():
    faces = np.array([[0, 1, 2], [1, 3, 2], [2, 0, 1]])  # the same vertex set as face 0, rotated
    with pytest.raises(MeshValidationError, match=r"face 0 \[0, 1, 2\] is duplicated"):
        Mesh(SQUARE_V, faces).validate()


def test_validate_non_manifold_edge_names_vertices():
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]])
    faces = np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]])  # edge (0, 1) used by three faces
    with pytest.raises(MeshValidationError, match=r"non-manifold edge \(0, 1\) is shared by 3 faces"):
        Mesh(v, faces).validate()


def test_validate_non_manifold_edge_reports_that_edges_count():
    """The message gives the named edge's own face count, not the worst edge's."""
    rng = np.random.default_rng(20)
    for _ in range(5):
        n_edges = int(rng.integers(2, 5))
        counts = rng.integers(3, 7, size=n_edges)  # faces on each non-manifold edge
        V = 2 * n_edges + int(counts.sum())
        ids = rng.permutation(V)
        edges = ids[: 2 * n_edges].reshape(n_edges, 2)
        apexes = iter(ids[2 * n_edges :].tolist())
        faces = [[a, b, next(apexes)] for (a, b), k in zip(edges.tolist(), counts) for _ in range(k)]
        faces = np.array(faces)[rng.permutation(len(faces))]
        keys = [tuple(sorted(e)) for e in edges.tolist()]
        first = min(range(n_edges), key=lambda i: keys[i])  # the edge validate() names
        if counts[first] == counts.max():  # make the named edge differ from the worst one
            counts_worst = int(counts.max())
            other = (first + 1) % n_edges
            extra = [[*edges[other].tolist(), V + j] for j in range(counts_worst + 1 - int(counts[other]))]
            faces = np.concatenate([faces, np.array(extra)])
            V += len(extra)
        with pytest.raises(MeshValidationError) as info:
            Mesh(rng.random((V, 3)), faces).validate()
        a, b = keys[first]
        assert f"non-manifold edge ({a}, {b}) is shared by {int(counts[first])} faces" in str(info.value)
        assert f"({n_edges} such edges)" in str(info.value)


def test_validate_duplicate_faces_with_more_than_2_21_vertices():
    """Above 2**21 vertices the packed face key would overflow int64 and make distinct faces collide."""
    rng = np.random.default_rng(21)
    V = 2**22
    vertices = rng.random((V, 3))
    # {a, b, c} and {a + 2**20, b, c} share a packed key modulo 2**64 when V = 2**22
    picks = rng.choice(np.arange(2**21, V), size=(6, 2), replace=False)  # (6, 2) distinct b, c
    low = rng.choice(2**20, size=6, replace=False)
    faces = np.concatenate([
        np.stack([low, picks[:, 0], picks[:, 1]], axis=1),
        np.stack([low + 2**20, picks[:, 1], picks[:, 0]], axis=1),  # the shared edge, traversed back
    ])
    faces = np.roll(faces[rng.permutation(12)], int(rng.integers(3)), axis=1)
    mesh = Mesh(vertices, faces)
    assert mesh.validate() is mesh
    j = int(rng.integers(12))
    duplicate = np.concatenate([faces, np.roll(faces[j : j + 1], 1, axis=1)])  # same vertex set, rotated
    with pytest.raises(MeshValidationError, match=rf"face {j} {re.escape(str(faces[j].tolist()))} is duplicated \(1 "):
        Mesh(vertices, duplicate).validate()


def test_validate_inconsistent_winding():
    faces = np.array([[0, 1, 2], [1, 2, 3]])  # both traverse 1 -> 2
    with pytest.raises(MeshValidationError, match=r"inconsistent winding: faces \[0, 1\] both traverse edge \(1 -> 2\)"):
        Mesh(SQUARE_V, faces).validate()


def test_validate_flipped_face_in_random_mesh(make_grid_mesh):
    m = _grid(make_grid_mesh, 4)
    faces = m.faces.copy()
    faces[5] = faces[5, ::-1]
    with pytest.raises(MeshValidationError, match="inconsistent winding"):
        m.copy(faces=faces).validate()


@pytest.mark.parametrize("index", [-1, 4, 100])
def test_validate_bad_landmark(index):
    with pytest.raises(MeshValidationError, match=rf"landmark 'tip': expected a vertex index in \[0, 4\), got {index}"):
        Mesh(SQUARE_V, SQUARE_F, landmarks={"tip": index}).validate()


def test_landmarks_accept_python_and_numpy_integers():
    rng = np.random.default_rng(22)
    for dtype in (int, np.int8, np.int32, np.int64, np.uint16, np.uint64):
        index = dtype(rng.integers(0, 4))
        m = Mesh(SQUARE_V, SQUARE_F, landmarks={"tip": index, "chin": np.array(index)})
        assert m.landmarks == {"tip": int(index), "chin": int(index)}
        assert type(m.landmarks["tip"]) is int and type(m.landmarks["chin"]) is int


@pytest.mark.parametrize("make_bad", [
    lambda rng: float(rng.integers(0, 4)) + rng.uniform(0.05, 0.95),  # truncation would hide it
    lambda rng: np.float64(rng.integers(0, 4)),  # integral, but a float
    lambda rng: str(rng.integers(0, 4)),
    lambda rng: bool(rng.integers(0, 2)),
    lambda rng: None,
], ids=["fraction", "integral-float", "str", "bool", "none"])
def test_landmarks_reject_non_integers(make_bad):
    rng = np.random.default_rng(23)
    value = make_bad(rng)
    name = f"lm_{int(rng.integers(1000))}"
    with pytest.raises(MeshValidationError, match=rf"landmark '{name}': expected an integer vertex index, got {re.escape(repr(value))}"):
        Mesh(SQUARE_V, SQUARE_F, landmarks={"ok": 1, name: value})


def test_validate_uv_faces_out_of_range():
    uv = np.random.default_rng(5).random((3, 2))
    with pytest.raises(MeshValidationError, match=r"uv_faces: expected indices in \[0, 3\), got range \[0, 3\]"):
        Mesh(SQUARE_V, SQUARE_F, uv=uv, uv_faces=np.array([[0, 1, 2], [1, 3, 2]])).validate()


def test_validate_empty_mesh():
    with pytest.raises(MeshValidationError, match="expected at least one vertex and one face, got V=4, F=0"):
        Mesh(SQUARE_V, np.zeros((0, 3), dtype=np.int64)).validate()


# ----------------------------------------------------------------------------- content hash
def test_content_hash_stable_below_float32_precision(make_grid_mesh):
    rng = np.random.default_rng(6)
    m = _grid(make_grid_mesh, 6)
    v32 = m.vertices.astype(np.float32).astype(np.float64)  # exactly representable in float32
    base = m.copy(vertices=v32)
    spacing = np.spacing(np.abs(v32).astype(np.float32)).astype(np.float64)  # float32 ulp per coordinate
    noise = rng.uniform(-0.25, 0.25, size=v32.shape) * spacing  # well below half an ulp: rounds back
    noisy = base.copy(vertices=v32 + noise)
    assert not np.array_equal(noisy.vertices, base.vertices)
    assert noisy.content_hash() == base.content_hash()
    # extras do not enter the hash
    assert base.copy(colors=rng.random((m.num_vertices, 3)), landmarks={"x": 1}).content_hash() == base.content_hash()


def test_content_hash_changes_on_real_change(make_grid_mesh):
    m = _grid(make_grid_mesh, 7)
    h = m.content_hash()
    assert len(h) == 64 and h == m.copy().content_hash()
    v = m.vertices.copy()
    v[3, 0] = np.nextafter(np.float32(v[3, 0]), np.float32(np.inf))  # one float32 ulp
    assert m.copy(vertices=v).content_hash() != h
    faces = np.roll(m.faces, 1, axis=1)  # same triangles, different corner order
    assert m.copy(faces=faces).content_hash() != h
    assert m.copy(faces=m.faces[::-1]).content_hash() != h
    assert m.copy(vertices=m.vertices[:, [1, 0, 2]]).content_hash() != h


# ----------------------------------------------------------------------------- topology
def test_edges_and_boundary_of_square():
    m = Mesh(SQUARE_V, SQUARE_F)
    assert m.edges().tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    assert sorted(map(tuple, m.boundary_edges().tolist())) == [(0, 1), (1, 3), (2, 0), (3, 2)]
    assert m.boundary_vertices().tolist() == [0, 1, 2, 3]


def test_edges_and_boundary_of_closed_tetrahedron():
    m = Mesh(TET_V, TET_F).validate()
    assert m.edges().tolist() == [list(e) for e in itertools.combinations(range(4), 2)]
    assert m.boundary_edges().shape == (0, 2)
    assert m.boundary_vertices().size == 0


def test_edges_and_boundary_match_loops_on_random_meshes(make_grid_mesh):
    for seed in range(4):
        m = _grid(make_grid_mesh, 10 + seed)
        assert m.edges().tolist() == [list(e) for e in edges_reference(m.faces)]
        assert sorted(map(tuple, m.boundary_edges().tolist())) == boundary_reference(m.faces)
        # a 4 x 5 grid: V + F - E = 1 (a disc), and the boundary is the 14-vertex rim
        assert m.num_vertices + m.num_faces - m.edges().shape[0] == 1
        assert m.boundary_vertices().size == 14


def test_copy_is_deep_and_applies_changes():
    m = Mesh(SQUARE_V, SQUARE_F, colors=np.random.default_rng(8).random((4, 3)), landmarks={"a": 1})
    c = m.copy()
    c.vertices[0, 0] = 9.0
    c.colors[0, 0] = 0.5
    c.landmarks["b"] = 2
    assert m.vertices[0, 0] == 0.0 and m.colors[0, 0] != 0.5 and "b" not in m.landmarks
    assert m.copy(landmarks={}).landmarks == {} and m.landmarks == {"a": 1}
    assert repr(m) == "Mesh(V=4, F=2, colors, 1 landmarks)"


# ----------------------------------------------------------------------------- assignments
def _two_triangles_with_wrapping_int32_keys():
    """V = 2000 and two disjoint faces whose sorted-face keys ``(a V + b) V + c`` agree modulo 2**32."""
    V = 2000
    for x in range(2, V):
        a, rest = divmod((V + x) + 2**32, V * V)  # face (0, 1, x) has key V + x
        b, c = divmod(rest, V)
        if 1 < a < b < c < V:
            return V, np.array([[0, 1, x], [a, b, c]])
    raise AssertionError("no colliding pair")  # pragma: no cover


def test_assigning_a_field_converts_its_dtype_and_checks_its_shape():
    V, faces = _two_triangles_with_wrapping_int32_keys()
    m = Mesh(np.random.default_rng(21).normal(size=(V, 3)), faces).validate()
    m.faces = faces.astype(np.int32)  # int32 keys would wrap: a false "duplicated face"
    assert m.faces.dtype == np.int64
    assert m.validate() is m
    m.vertices = m.vertices.astype(np.float32)
    assert m.vertices.dtype == np.float64
    with pytest.raises(MeshValidationError, match=r"vertices: expected shape \(N, 3\), got \(6000,\)"):
        m.vertices = np.random.default_rng(22).normal(size=3 * V)
    with pytest.raises(MeshValidationError, match="faces: expected integer indices"):
        m.faces = faces + 0.5


def test_validate_checks_row_counts_after_assignments(tmp_path):
    from mesh_decoder.errors import MeshFileError
    from mesh_decoder.mesh import save_mesh

    rng = np.random.default_rng(23)
    m = Mesh(SQUARE_V, SQUARE_F, uv=rng.random((4, 2)), uv_faces=SQUARE_F, colors=rng.random((4, 3)))
    m.colors = rng.random((3, 3))
    with pytest.raises(MeshValidationError, match=r"colors: expected 4 rows \(one per vertex\), got 3"):
        m.validate()
    with pytest.raises(MeshFileError, match="colors: expected 4 rows"):  # was numpy's ValueError from the writer
        save_mesh(m, tmp_path / "m.ply")
    m.colors = None
    m.uv_faces = SQUARE_F[:1]
    with pytest.raises(MeshValidationError, match=r"uv_faces: expected 2 rows \(one per face\), got 1"):
        m.validate()
    m.uv_faces = None
    with pytest.raises(MeshValidationError, match="uv and uv_faces: expected both or neither"):
        m.validate()
    assert not list(tmp_path.iterdir())


def test_validate_checks_landmarks_edited_in_place(tmp_path):
    from mesh_decoder.errors import MeshFileError
    from mesh_decoder.mesh import load_mesh, save_mesh

    m = Mesh(SQUARE_V, SQUARE_F, landmarks={"a": 1})
    m.landmarks["tip"] = 1.5  # was accepted and written as "# landmark tip 1.5", which load_mesh refuses
    with pytest.raises(MeshValidationError, match=r"landmark 'tip': expected an integer vertex index, got 1.5"):
        m.validate()
    with pytest.raises(MeshFileError, match="landmark 'tip'"):
        save_mesh(m, tmp_path / "m.obj")
    del m.landmarks["tip"]
    m.landmarks[7] = 2  # was a TypeError from the writer's name check
    with pytest.raises(MeshValidationError, match=r"landmark names: expected strings, got 7 \(int\)"):
        m.validate()
    del m.landmarks[7]
    m.landmarks["b"] = np.int64(2)
    save_mesh(m, tmp_path / "m.obj")
    assert load_mesh(tmp_path / "m.obj").landmarks == {"a": 1, "b": 2}
    m.landmarks = {"c": np.int32(3)}  # assignment converts like the constructor
    assert m.landmarks == {"c": 3} and type(m.landmarks["c"]) is int


@pytest.mark.parametrize(
    "value, dtype",
    [
        (np.random.default_rng(24).normal(size=(4, 3)) * (1 + 1j), "complex128"),  # imaginary part was dropped
        (np.random.default_rng(25).normal(size=(4, 3)).astype(str), "<U"),  # text was parsed
        (np.random.default_rng(26).random((4, 3)) > 0.5, "bool"),
    ],
)
def test_constructor_rejects_non_real_dtypes(value, dtype):
    with pytest.raises(MeshValidationError, match=f"vertices: expected a numeric array .*got dtype {dtype}"):
        Mesh(value, SQUARE_F)
    with pytest.raises(MeshValidationError, match="faces: expected a numeric array"):
        Mesh(SQUARE_V, SQUARE_F.astype(complex))


def test_landmarks_none_is_no_landmarks_and_bad_containers_are_named():
    assert Mesh(SQUARE_V, SQUARE_F, landmarks=None).landmarks == {}  # was TypeError: 'NoneType' object is not iterable
    with pytest.raises(MeshValidationError, match="landmarks: expected a mapping name -> vertex index, got int"):
        Mesh(SQUARE_V, SQUARE_F, landmarks=3)
    assert Mesh(SQUARE_V, SQUARE_F, landmarks=[("a", 1)]).landmarks == {"a": 1}


def test_constructor_names_the_field_it_cannot_convert():
    torch = pytest.importorskip("torch")
    v = torch.tensor(np.random.default_rng(27).normal(size=(4, 3)), requires_grad=True)
    with pytest.raises(TypeError, match="vertices: expected a numpy array .*requires grad"):  # was a RuntimeError
        Mesh(v, SQUARE_F)
    assert np.array_equal(Mesh(v.detach(), SQUARE_F).vertices, v.detach().numpy())
    with pytest.raises(MeshValidationError, match="faces: expected a rectangular numeric array"):
        Mesh(SQUARE_V, [[0, 1, 2], [1, 3]])


def test_hashes_of_coordinates_beyond_float32_raise_no_overflow_warning():
    rng = np.random.default_rng(17)
    vertices = rng.normal(size=(3, 3))
    mesh = Mesh(vertices, np.array([[0, 1, 2]]), uv=rng.random((3, 2)), uv_faces=np.array([[0, 1, 2]]))
    huge = Mesh(vertices * np.array([1e39, 1.0, 1.0]), mesh.faces, uv=mesh.uv * 1e39, uv_faces=mesh.uv_faces)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert huge.content_hash() != mesh.content_hash()
        assert huge.uv_hash() != mesh.uv_hash()


def test_uv_hash_is_the_layout_whatever_the_tables_order_or_sharing(tmp_path):
    """A PLY keeps UVs per corner and reads them back merged by value in another order: the hash over the table
    changed, so a seamed template reloaded from PLY no longer matched its hierarchy (and missed the cache)."""
    from mesh_decoder.mesh import load_mesh, save_mesh, template

    head = template("head", num_vertices=1500)
    assert head.uv.shape[0] > head.num_vertices  # seams: some vertices have two UVs
    save_mesh(head, tmp_path / "head.ply")
    back = load_mesh(tmp_path / "head.ply")
    assert not np.array_equal(back.uv, head.uv)  # another table ...
    assert back.uv_hash() == head.uv_hash()  # ... of the same layout
    rng = np.random.default_rng()
    order = rng.permutation(head.uv.shape[0])
    shuffled = head.copy(uv=head.uv[order], uv_faces=np.argsort(order)[head.uv_faces])
    unshared = head.copy(uv=head.uv[head.uv_faces].reshape(-1, 2), uv_faces=np.arange(3 * head.num_faces).reshape(-1, 3))
    assert shuffled.uv_hash() == unshared.uv_hash() == head.uv_hash()
    assert shuffled.uv_table_hash() != head.uv_table_hash()  # the hash hierarchies saved before recorded
    moved = head.uv.copy()
    moved[rng.integers(head.uv.shape[0])] += 1e-3
    assert head.copy(uv=moved).uv_hash() != head.uv_hash()
    flipped = head.copy(uv_faces=head.uv_faces[:, [0, 2, 1]])
    assert flipped.uv_hash() != head.uv_hash()
    assert Mesh(head.vertices, head.faces).uv_hash() is None


@pytest.mark.parametrize("field", ["faces", "uv_faces"])
def test_uint64_indices_beyond_int64_are_refused_not_wrapped(field):
    """uint64 2**64 - 1 became -1 (and 2**63 a negative index in the error) when converted to int64."""
    rng = np.random.default_rng()
    tri = np.array([[0, 1, 2]])
    fields = {"vertices": rng.normal(size=(3, 3)), "faces": tri, "uv": rng.random((3, 2)), "uv_faces": tri}
    with pytest.raises(MeshValidationError, match=rf"^{field}: expected indices below 2\*\*63, got 18446744073709551615 "):
        Mesh(**{**fields, field: np.array([[0, 1, 2**64 - 1]], dtype=np.uint64)})
    assert getattr(Mesh(**{**fields, field: tri.astype(np.uint64)}), field).dtype == np.int64
