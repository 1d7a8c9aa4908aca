"""Tests of strict mesh I/O (OBJ, OFF, PLY): round trips, order, polygons, errors, atomic writes.

The loaders are compared with slow line-by-line reference parsers written here
(and, for PLY, with plain :mod:`plyfile`), on random files built from known
arrays, so every expected value is known independently of the code under test.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tracemalloc
import zlib

import numpy as np
import plyfile
import pytest

import mesh_decoder.mesh.io as mio
from mesh_decoder._atomic import atomic_write
from mesh_decoder.errors import MeshFileError
from mesh_decoder.mesh import Mesh, load_mesh, save_mesh
from mesh_decoder.render.render import encode_png


# =============================================================================
# helpers and slow references
# =============================================================================
def f32_equal(a, b) -> bool:
    """Exact equality after rounding to float32 (the precision the writers promise)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all(np.float32(a) == np.float32(b)))


def fan_reference(polygons):
    """Fan triangulation by explicit loops: (v0, v_i, v_i+1) for i = 1..n-2."""
    return [[p[0], p[i], p[i + 1]] for p in polygons for i in range(1, len(p) - 1)]


def polygon_grid(rng, rows=4, cols=6):
    """Random positions and consistently wound polygons (triangles, quads, hexagons) on a grid.

    Vertex ids are shuffled, polygon corners rotated (same winding) and polygons
    shuffled, so the file order is arbitrary. Returns ``(vertices (V, 3), polygons)``.
    """
    V = rows * cols
    polygons = []
    for r in range(rows - 1):
        c = 0
        while c < cols - 1:
            a = r * cols + c
            # hexagons only in even rows: stacked ones would share a row and both fan
            # into the same (collinear) triangle
            kind = rng.integers(3) if c < cols - 2 and r % 2 == 0 else rng.integers(2)
            if kind == 0:  # two triangles
                polygons += [[a, a + 1, a + cols], [a + 1, a + cols + 1, a + cols]]
                c += 1
            elif kind == 1:  # quad
                polygons.append([a, a + 1, a + cols + 1, a + cols])
                c += 1
            else:  # hexagon spanning two cells
                polygons.append([a, a + 1, a + 2, a + cols + 2, a + cols + 1, a + cols])
                c += 2
    perm = rng.permutation(V)
    polygons = [np.roll(perm[p], rng.integers(len(p))).tolist() for p in polygons]
    polygons = [polygons[i] for i in rng.permutation(len(polygons))]
    vertices = rng.normal(size=(V, 3)) * rng.uniform(0.01, 1000.0)
    return vertices, polygons


def reference_obj(text: str) -> dict:
    """A slow, obviously correct OBJ parser for valid files."""
    v, vt, col, faces, uv_faces, landmarks = [], [], [], [], [], {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if "#" in line:
            line, _, comment = line.partition("#")
            words = comment.split()
            if not line.strip() and words and words[0] == "landmark":
                landmarks[words[1]] = int(words[2])
        words = line.split()
        if not words:
            continue
        if words[0] == "v":
            v.append([float(x) for x in words[1:4]])
            if len(words) == 7:
                col.append([float(x) for x in words[4:7]])
        elif words[0] == "vt":
            vt.append([float(words[1]), float(words[2])])
        elif words[0] == "f":
            vs, ts = [], []
            for corner in words[1:]:
                parts = corner.split("/")
                i = int(parts[0])
                vs.append(i - 1 if i > 0 else len(v) + i)
                if len(parts) > 1 and parts[1]:
                    t = int(parts[1])
                    ts.append(t - 1 if t > 0 else len(vt) + t)
            faces += fan_reference([vs])
            if ts:
                uv_faces += fan_reference([ts])
    return dict(
        vertices=np.array(v),
        faces=np.array(faces),
        uv=np.array(vt) if uv_faces else None,
        uv_faces=np.array(uv_faces) if uv_faces else None,
        colors=np.array(col) if col else None,
        landmarks=landmarks,
    )


def reference_off(text: str) -> dict:
    """A slow, obviously correct OFF/COFF parser for valid files."""
    words, landmarks = [], {}
    for line in text.split("\n"):
        line, _, comment = line.partition("#")
        c = comment.split()
        if not line.strip() and c and c[0] == "landmark":
            landmarks[c[1]] = int(c[2])
        if line.split():
            words.append(line.split())
    head = words.pop(0)
    counts = head[1:] if len(head) > 1 else words.pop(0)
    nv, nf = int(counts[0]), int(counts[1])
    v = [[float(x) for x in w[:3]] for w in words[:nv]]
    colors = None
    if head[0] == "COFF":
        colors = np.array([[float(x) for x in w[3:6]] for w in words[:nv]])
        if colors.max() > 1:
            colors = colors / 255.0
    polygons = [[int(x) for x in w[1:]] for w in words[nv : nv + nf]]
    return dict(vertices=np.array(v), faces=np.array(fan_reference(polygons)), uv=None, uv_faces=None,
                colors=colors, landmarks=landmarks)


def assert_mesh_equals(mesh: Mesh, expected: dict, *, exact_uv_table=True):
    """Exact comparison (float64 where the file text is exact) against expected arrays."""
    assert isinstance(mesh, Mesh)
    assert np.array_equal(mesh.vertices, expected["vertices"])
    assert np.array_equal(mesh.faces, expected["faces"])
    if expected["colors"] is None:
        assert mesh.colors is None
    else:
        assert np.array_equal(mesh.colors, expected["colors"])
    if expected["uv"] is None:
        assert mesh.uv is None and mesh.uv_faces is None
    else:
        assert np.array_equal(mesh.uv[mesh.uv_faces], expected["uv"][expected["uv_faces"]])
        if exact_uv_table:
            assert np.array_equal(mesh.uv, expected["uv"]) and np.array_equal(mesh.uv_faces, expected["uv_faces"])
    assert mesh.landmarks == expected["landmarks"]


def assert_round_trip(mesh: Mesh, loaded: Mesh, *, exact_uv_table=True):
    """What save+load must preserve: order, topology, float32 values, landmarks, hash."""
    assert loaded.num_vertices == mesh.num_vertices
    assert f32_equal(loaded.vertices, mesh.vertices)
    assert np.array_equal(loaded.faces, mesh.faces)
    if mesh.colors is None:
        assert loaded.colors is None
    else:
        assert f32_equal(loaded.colors, mesh.colors)
    if mesh.uv is None:
        assert loaded.uv is None
    else:
        assert f32_equal(loaded.uv[loaded.uv_faces], mesh.uv[mesh.uv_faces])
        if exact_uv_table:
            assert f32_equal(loaded.uv, mesh.uv) and np.array_equal(loaded.uv_faces, mesh.uv_faces)
    assert loaded.landmarks == mesh.landmarks
    assert loaded.content_hash() == mesh.content_hash()


def parts_equal(a, b) -> bool:
    """Two reader results are identical (arrays and landmark indices)."""
    for x, y in zip(a[:5], b[:5]):
        if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y)):
            return False
    return {k: v[0] for k, v in a.landmarks.items()} == {k: v[0] for k, v in b.landmarks.items()}


# =============================================================================
# random text files with every supported feature
# =============================================================================
def random_obj(rng, *, style=None, negative=None, noise=None, colors=None, crlf=None):
    """A random valid OBJ text and the arrays it encodes."""
    vertices, polygons = polygon_grid(rng)
    V = vertices.shape[0]
    style = style or ["v", "v/vt", "v/vt/vn", "v//vn"][rng.integers(4)]
    negative = bool(rng.integers(2)) if negative is None else negative
    noise = bool(rng.integers(2)) if noise is None else noise
    colors = bool(rng.integers(2)) if colors is None else colors
    crlf = bool(rng.integers(2)) if crlf is None else crlf
    col = rng.random((V, 3)) if colors else None
    T = 7 if "vt" in style else 0
    N = 5 if "vn" in style else 0
    uv = rng.random((T, 2))
    landmarks = {f"pt{i}": int(rng.integers(V)) for i in range(rng.integers(0, 3))}

    out = ["# random test OBJ"] + [f"# landmark {k} {i}" for k, i in landmarks.items()]
    if noise:
        out += ["mtllib scene.mtl", "o face", "", "g group1", "s 1", "usemtl skin", "   "]
    out += [f"vt {float(u)!r} {float(w)!r}" for u, w in uv]
    out += [f"vn 0 0 {k}" for k in range(N)]
    faces_emitted, uvf_emitted = [], []
    pending = sorted(range(len(polygons)), key=lambda p: max(polygons[p]))
    for k in range(V):
        line = "v " + " ".join(repr(float(x)) for x in vertices[k])
        if colors:
            line += " " + " ".join(repr(float(x)) for x in col[k])
        if noise and rng.random() < 0.2:
            line = line.replace(" ", "\t", 1) + "  # trailing comment"
        out.append(line)
        if not negative:
            continue
        while pending and max(polygons[pending[0]]) == k:  # emit as soon as defined
            out.append(_obj_face(rng, polygons[pending.pop(0)], style, k + 1, T, N, True, faces_emitted, uvf_emitted))
    for p in pending:
        out.append(_obj_face(rng, polygons[p], style, V, T, N, negative, faces_emitted, uvf_emitted))
    text = ("\r\n" if crlf else "\n").join(out) + "\n"
    expected = dict(
        vertices=vertices,
        faces=np.array(fan_reference(faces_emitted)),
        uv=uv if T else None,
        uv_faces=np.array(fan_reference(uvf_emitted)) if T else None,
        colors=col,
        landmarks=landmarks,
    )
    return text, expected


def _obj_face(rng, polygon, style, nv, T, N, negative, faces_out, uvf_out):
    def ref(i, count):  # 1-based or, at random, relative (negative) index
        return str(i - count) if negative and rng.random() < 0.6 else str(i + 1)

    ts = rng.integers(0, max(T, 1), size=len(polygon)).tolist()
    corners = []
    for i, t in zip(polygon, ts):
        v = ref(i, nv)
        if style == "v":
            corners.append(v)
        elif style == "v/vt":
            corners.append(f"{v}/{ref(t, T)}")
        elif style == "v/vt/vn":
            corners.append(f"{v}/{ref(t, T)}/{rng.integers(1, N + 1)}")
        else:
            corners.append(f"{v}//{-rng.integers(1, N + 1)}")
    faces_out.append(list(polygon))
    uvf_out.append(ts)
    return "f " + " ".join(corners)


def random_off(rng, *, plain=False):
    """A random valid OFF/COFF text and the arrays it encodes."""
    vertices, polygons = polygon_grid(rng)
    V = vertices.shape[0]
    colored = not plain and bool(rng.integers(2))
    int_colors = colored and bool(rng.integers(2))
    if int_colors:
        raw = rng.integers(0, 256, size=(V, 3))
        raw[0, 0] = 255
        col, col_txt = raw / 255.0, raw.astype(str)
    elif colored:
        col = rng.random((V, 3))
        col_txt = np.array([[repr(float(x)) for x in row] for row in col])
    else:
        col = None
    alpha = colored and bool(rng.integers(2))
    landmarks = {f"lm{i}": int(rng.integers(V)) for i in range(rng.integers(0, 3))}
    noise = not plain and bool(rng.integers(2))
    head = "COFF" if colored else "OFF"
    counts = f"{V} {len(polygons)} 0"
    out = ["# comment before the header"] if noise else []
    out += [f"{head} {counts}"] if noise and rng.random() < 0.5 else [head, counts]
    out += [f"# landmark {k} {i}" for k, i in landmarks.items()]
    for k in range(V):
        line = " ".join(repr(float(x)) for x in vertices[k])
        if colored:
            line += " " + " ".join(col_txt[k]) + (" 1" if alpha else "")
        if noise and rng.random() < 0.2:
            out += ["", "# a comment between vertices"]
            line += "   # trailing"
        out.append(line)
    for p in polygons:
        out.append(f"{len(p)} " + " ".join(map(str, p)))
    expected = dict(vertices=vertices, faces=np.array(fan_reference(polygons)), uv=None, uv_faces=None,
                    colors=col, landmarks=landmarks)
    return "\n".join(out) + "\n", expected


def random_plyfile(rng, path, *, fmt, per_face_uv=None):
    """Write a random polygon mesh with plain plyfile (an independent writer); return the expected arrays."""
    vertices, polygons = polygon_grid(rng)
    V = vertices.shape[0]
    pos_type = ["f4", "f8"][rng.integers(2)]
    vertices = vertices.astype(pos_type).astype(np.float64)
    color_kind = ["none", "u1", "f4"][rng.integers(3)]
    per_face_uv = bool(rng.integers(2)) if per_face_uv is None else per_face_uv
    uv_names = [("u", "v"), ("s", "t"), ("texture_u", "texture_v")][rng.integers(3)]

    fields = [("x", pos_type), ("y", pos_type), ("z", pos_type), ("nx", "f4"), ("ny", "f4"), ("nz", "f4")]
    if color_kind != "none":
        fields += [("red", color_kind), ("green", color_kind), ("blue", color_kind), ("alpha", "u1")]
    if not per_face_uv:
        fields += [(uv_names[0], "f4"), (uv_names[1], "f4")]
    va = np.zeros(V, dtype=fields)
    for k, a in enumerate("xyz"):
        va[a] = vertices[:, k]
    va["nx"] = rng.normal(size=V)
    col = None
    if color_kind == "u1":
        raw = rng.integers(0, 256, size=(V, 3))
        for k, c in enumerate(("red", "green", "blue")):
            va[c] = raw[:, k]
        col = raw / 255.0
    elif color_kind == "f4":
        col = rng.random((V, 3)).astype(np.float32).astype(np.float64)
        for k, c in enumerate(("red", "green", "blue")):
            va[c] = col[:, k]
    vuv = rng.random((V, 2)).astype(np.float32).astype(np.float64)
    if not per_face_uv:
        va[uv_names[0]], va[uv_names[1]] = vuv[:, 0], vuv[:, 1]

    face_fields = [("vertex_indices", "O"), ("quality", "f4")] + ([("texcoord", "O")] if per_face_uv else [])
    fa = np.empty(len(polygons), dtype=face_fields)
    corner_uv = []
    for i, p in enumerate(polygons):
        fa["vertex_indices"][i] = np.array(p, dtype=np.int32)
        tc = rng.integers(0, 4, size=(len(p), 2)) / 4.0  # few distinct values: shared UVs
        if per_face_uv:
            fa["texcoord"][i] = tc.ravel().astype(np.float32)
        corner_uv.append(tc)
        fa["quality"][i] = rng.random()
    face_el = plyfile.PlyElement.describe(
        fa, "face", len_types={"vertex_indices": "u1", "texcoord": "u1"},
        val_types={"vertex_indices": "i4", "texcoord": "f4"},
    )
    edge_el = plyfile.PlyElement.describe(
        np.array([(0, 1), (1, 2)], dtype=[("vertex1", "i4"), ("vertex2", "i4")]), "edge"
    )
    landmarks = {f"m{i}": int(rng.integers(V)) for i in range(rng.integers(0, 3))}
    ply = plyfile.PlyData(
        [plyfile.PlyElement.describe(va, "vertex"), face_el, edge_el],
        text=fmt == "ascii",
        byte_order={"ascii": "=", "le": "<", "be": ">"}[fmt],
        comments=["made by plyfile"] + [f"landmark {k} {i}" for k, i in landmarks.items()],
    )
    ply.write(str(path))

    faces = np.array(fan_reference(polygons))
    if per_face_uv:
        corners = np.concatenate(corner_uv)  # (C, 2) in file order
        table, ids = [], []
        for row in map(tuple, corners.tolist()):  # merge equal UVs, in order of first use
            if row not in table:
                table.append(row)
            ids.append(table.index(row))
        offsets = np.cumsum([0] + [len(p) for p in polygons])
        uvf = fan_reference([list(range(offsets[i], offsets[i + 1])) for i in range(len(polygons))])
        uv, uv_faces = np.array(table), np.array(ids)[np.array(uvf)]
    else:
        uv, uv_faces = vuv, faces
    return dict(vertices=vertices, faces=faces, uv=uv, uv_faces=uv_faces, colors=col, landmarks=landmarks)


# =============================================================================
# reading: random files against the references
# =============================================================================
def test_obj_random_files_match_reference(tmp_path):
    rng = np.random.default_rng(100)
    fast_used = 0
    for case in range(24):
        style = ["v", "v/vt", "v/vt/vn", "v//vn"][case % 4]
        text, expected = random_obj(rng, style=style, negative=case % 3 == 0, noise=case % 5 == 1)
        path = tmp_path / f"r{case}.OBJ"
        path.write_bytes(text.encode())
        ref = reference_obj(text)
        assert_mesh_equals(load_mesh(path), expected)
        assert_mesh_equals(load_mesh(path), ref)  # the reference parser agrees with the construction
        lines = mio._text_lines(str(path), text.encode())
        careful = mio._read_obj_careful(str(path), lines)
        fast = mio._read_obj_fast(str(path), lines)
        if fast is not None:
            fast_used += 1
            assert parts_equal(fast, careful)
    assert fast_used >= 8  # the plain variants go through the bulk path


def test_off_random_files_match_reference(tmp_path):
    rng = np.random.default_rng(101)
    for case in range(16):
        text, expected = random_off(rng, plain=case % 4 == 0)
        path = tmp_path / f"r{case}.off"
        path.write_bytes(text.encode())
        assert_mesh_equals(load_mesh(path), expected)
        assert_mesh_equals(load_mesh(path), reference_off(text))
        lines = mio._text_lines(str(path), text.encode())
        fast = mio._read_off_fast(str(path), lines)  # polygons: usually the careful path decides
        if fast is not None:
            assert parts_equal(fast, mio._read_off_careful(str(path), lines))


@pytest.mark.parametrize("fmt", ["ascii", "le", "be"])
def test_ply_written_by_plyfile(tmp_path, fmt):
    rng = np.random.default_rng({"ascii": 1, "le": 2, "be": 3}[fmt])
    for case in range(4):
        path = tmp_path / f"p{case}.ply"
        expected = random_plyfile(rng, path, fmt=fmt, per_face_uv=bool(case % 2))
        assert_mesh_equals(load_mesh(path), expected)


def test_fast_paths_agree_with_careful_readers_on_saved_triangle_meshes(tmp_path, make_grid_mesh):
    rng = np.random.default_rng(102)
    for case in range(6):
        mesh = make_grid_mesh(rng, 5, 4, colors=case % 2 == 0, uv=[None, "corner", "vertex"][case % 3], landmarks=2)
        for ext, fast, careful in [
            ("obj", mio._read_obj_fast, mio._read_obj_careful),
            ("off", mio._read_off_fast, mio._read_off_careful),
        ]:
            m = mesh if ext == "obj" else mesh.copy(uv=None, uv_faces=None)
            path = tmp_path / f"t.{ext}"
            save_mesh(m, path)
            lines = mio._text_lines(str(path), path.read_bytes())
            a, b = fast(str(path), lines), careful(str(path), lines)
            assert a is not None, f"bulk {ext} path rejected a file written by save_mesh"
            assert parts_equal(a, b)


def test_off_landmarks_leave_the_file_readable_by_openmesh(tmp_path, make_grid_mesh):
    """Landmark comments between an OFF file's counts and its vertices made OpenMesh read no faces (and trimesh
    fail): they go after the faces, are read back in their order, and files with them after the counts still
    read."""
    om = pytest.importorskip("openmesh")
    rng = np.random.default_rng()
    mesh = make_grid_mesh(rng, 6, 5, colors=False, uv=None, landmarks=4)
    path = tmp_path / "lm.off"
    save_mesh(mesh, path)
    text = path.read_text()
    assert text.split("\n")[2].startswith(tuple("-0123456789")), text[:200]  # the first vertex follows the counts
    read = om.read_trimesh(str(path))
    assert read.n_vertices() == mesh.num_vertices and read.n_faces() == mesh.num_faces
    np.testing.assert_array_equal(read.face_vertex_indices(), mesh.faces)
    back = load_mesh(path)
    assert list(back.landmarks.items()) == list(mesh.landmarks.items())
    lines = text.rstrip("\n").split("\n")
    comments = [line for line in lines if line.startswith("#")]
    old_layout = tmp_path / "old.off"
    old_layout.write_text("\n".join(lines[:2] + comments + [line for line in lines[2:] if line not in comments]) + "\n")
    assert list(load_mesh(old_layout).landmarks.items()) == list(mesh.landmarks.items())
    np.testing.assert_array_equal(load_mesh(old_layout).faces, mesh.faces)


def test_fan_corners_match_loops():
    rng = np.random.default_rng(103)
    for _ in range(5):
        sizes = rng.integers(3, 9, size=rng.integers(1, 40))
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        polygons = [list(range(offsets[i], offsets[i + 1])) for i in range(sizes.size)]
        assert mio._fan_corners(sizes).tolist() == fan_reference(polygons)


def test_merge_rows_matches_loop_reference():
    rng = np.random.default_rng(104)
    for n in (1, 3, 50, 700):
        rows = rng.integers(-3, 4, size=(n, 2)) / 4.0  # many repeats, and -0.0 == 0.0
        rows[rng.random(n) < 0.2] *= -1
        table, ids = [], []
        for row in map(tuple, rows.tolist()):
            if row not in table:
                table.append(row)
            ids.append(table.index(row))
        uniq, index = mio._merge_rows(rows)
        assert uniq.tolist() == [list(row) for row in table] and index.tolist() == ids


def test_fan_triangulation_and_order_are_exact(tmp_path):
    text = "\n".join(
        ["v 0 0 0", "v 1 0 0", "v 2 0.5 0", "v 1 1 0", "v 0 1 0", "v 0.5 -1 0",
         "f 1 2 3 4 5", "f 6 2 1"]
    )
    path = tmp_path / "poly.obj"
    path.write_text(text)
    m = load_mesh(path)
    assert m.faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4], [5, 1, 0]]
    assert m.vertices[:, 0].tolist() == [0, 1, 2, 1, 0, 0.5]
    off = tmp_path / "poly.off"
    off.write_text("OFF\n6 2 0\n" + "\n".join(line[2:] for line in text.split("\n")[:6]) + "\n5 0 1 2 3 4\n3 5 1 0\n")
    assert load_mesh(off).faces.tolist() == m.faces.tolist()


def test_obj_negative_indices_relative_to_definitions_so_far(tmp_path):
    text = "v 0 0 0\nv 1 0 0\nv 0 1 0\nf -3 -2 -1\nv 1 1 0\nf -3 -1 -2\n"
    path = tmp_path / "neg.obj"
    path.write_text(text)
    assert load_mesh(path).faces.tolist() == [[0, 1, 2], [1, 3, 2]]
    text = "v 0 0 0\nv 1 0 0\nvt 0 0\nvt 1 0\nvt 0 1\nv 0 1 0\nf 1/-3 -2/2 -1/-1\n"
    path.write_text(text)
    m = load_mesh(path)
    assert m.faces.tolist() == [[0, 1, 2]] and m.uv_faces.tolist() == [[0, 1, 2]]


def test_landmark_comments_and_ignored_statements(tmp_path):
    path = tmp_path / "lm.obj"
    path.write_text(
        "# landmark nose_tip 2\nmtllib a.mtl\no head\ng g1\ns off\nusemtl skin\n"
        "v 0 0 0\nv 1 0 0\nv 0 1 0\nvn 0 0 1\n#landmark chin 0\n# landmarks are comments\nf 1//1 2//1 3//1\n"
    )
    assert load_mesh(path).landmarks == {"nose_tip": 2, "chin": 0}


# =============================================================================
# round trips through save_mesh
# =============================================================================
SAVE_CASES = [("obj", None), ("off", None), ("ply", None), ("ply", False), ("ply", True)]


@pytest.mark.parametrize("ext, binary", SAVE_CASES)
@pytest.mark.parametrize("uv", [None, "vertex", "corner"])
def test_round_trip(tmp_path, make_grid_mesh, ext, binary, uv):
    rng = np.random.default_rng(zlib.crc32(f"{ext}-{binary}-{uv}".encode()))
    for case in range(3):
        mesh = make_grid_mesh(rng, 4 + case, 5, colors=case != 1, uv=uv, landmarks=case)
        if ext == "off":
            mesh = mesh.copy(uv=None, uv_faces=None)
        path = tmp_path / f"m{case}.{ext}"
        save_mesh(mesh, path, binary=binary)
        loaded = load_mesh(path)
        assert_round_trip(mesh, loaded)
        # saving what was loaded reproduces the file byte for byte
        again = tmp_path / f"again.{ext}"
        save_mesh(loaded, again, binary=binary)
        assert again.read_bytes() == path.read_bytes()


def test_round_trip_keeps_float32_extremes(tmp_path):
    rng = np.random.default_rng(7)
    v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    v += rng.normal(size=v.shape) * np.array([1e-30, 1e30, 1e-7])  # tiny, huge and ordinary magnitudes
    v[0, 0] = np.finfo(np.float32).max
    v[1, 1] = np.finfo(np.float32).smallest_subnormal
    v[2, 2] = -0.0
    mesh = Mesh(v, [[0, 1, 2], [1, 3, 2]], colors=[[0, 1, 0.5], [1e-9, 1, 1], [0.1, 0.2, 0.3], [1, 1, 1]])
    for ext, binary in SAVE_CASES:
        path = tmp_path / f"x.{ext}"
        save_mesh(mesh, path, binary=binary)
        assert_round_trip(mesh, load_mesh(path))


def test_ply_uv_layout_choice(tmp_path, make_grid_mesh):
    rng = np.random.default_rng(8)
    per_vertex = make_grid_mesh(rng, 4, 4, uv="vertex")
    per_corner = make_grid_mesh(rng, 4, 4, uv="corner")
    # a per-corner table that is still one UV per vertex: shuffled table, written per vertex
    perm = rng.permutation(per_vertex.num_vertices)
    inv = np.argsort(perm)
    expressible = per_vertex.copy(uv=per_vertex.uv[perm], uv_faces=inv[per_vertex.faces])
    for name, mesh, layout in [("pv", per_vertex, "vertex"), ("pc", per_corner, "face"), ("ex", expressible, "vertex")]:
        path = tmp_path / f"{name}.ply"
        save_mesh(mesh, path)
        raw = plyfile.PlyData.read(str(path))
        vprops = [p.name for p in raw["vertex"].properties]
        fprops = [p.name for p in raw["face"].properties]
        assert ("s" in vprops and "t" in vprops) == (layout == "vertex")
        assert ("texcoord" in fprops) == (layout == "face")
        loaded = load_mesh(path)
        assert_round_trip(mesh, loaded, exact_uv_table=name != "ex")
        if layout == "vertex":
            assert np.array_equal(loaded.uv_faces, loaded.faces) and loaded.uv.shape == (mesh.num_vertices, 2)


@pytest.mark.parametrize("binary", [True, False])
def test_ply_written_here_reads_identically_with_plain_plyfile(tmp_path, make_grid_mesh, binary):
    mesh = make_grid_mesh(np.random.default_rng(9), 5, 6, colors=True, uv="corner", landmarks=3)
    path = tmp_path / "m.ply"
    save_mesh(mesh, path, binary=binary)
    raw = plyfile.PlyData.read(str(path))
    assert raw.text is (not binary) and (binary is False or raw.byte_order == "<")
    vert = raw["vertex"].data
    assert np.array_equal(np.stack([vert["x"], vert["y"], vert["z"]], 1), mesh.vertices.astype(np.float32))
    assert np.array_equal(np.stack([vert["red"], vert["green"], vert["blue"]], 1), mesh.colors.astype(np.float32))
    assert np.array_equal(np.stack(raw["face"].data["vertex_indices"]), mesh.faces)
    tc = np.stack(raw["face"].data["texcoord"]).reshape(-1, 3, 2)
    assert np.array_equal(tc, mesh.uv[mesh.uv_faces].astype(np.float32))
    assert [c for c in raw.comments if c.startswith("landmark")] == [f"landmark {k} {i}" for k, i in mesh.landmarks.items()]


def test_text_writers_use_nine_significant_digits(tmp_path):
    mesh = Mesh([[0.1, 1 / 3, 2.0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]])
    save_mesh(mesh, tmp_path / "a.obj")
    lines = (tmp_path / "a.obj").read_text().splitlines()
    assert "v 0.100000001 0.333333343 2" in lines and "f 1 2 3" in lines


# =============================================================================
# malformed files: MeshFileError naming the file, the line and the reason
# =============================================================================
OBJ_OK = "v 0 0 0\nv 1 0 0\nv 0 1 0\n"
PLY_HEAD = "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
PLY_FACE = "element face 1\nproperty list uchar int vertex_indices\nend_header\n"
PLY_OK_BODY = "0 0 0\n1 0 0\n0 1 0\n"

BAD_FILES = [
    # (name, content, reason regex, line)
    ("fields.obj", "v 0 0 0\nv 1 0\nv 0 1 0\nf 1 2 3\n", r"expected 3 values \(x y z\) or 6 .* found 2", 2),
    ("token.obj", OBJ_OK + "v 1 x 0\nf 1 2 3\n", r"vertex: expected a number, found 'x'", 4),
    ("range.obj", OBJ_OK + "f 1 2 4\n", r"vertex index 4 out of range: expected 1\.\.3", 4),
    ("zero.obj", OBJ_OK + "f 0 1 2\n", r"index 0 is invalid", 4),
    ("neg.obj", OBJ_OK + "f -1 -2 -4\n", r"index -4 out of range: only 3 vertex entries are defined before", 4),
    ("huge_index.obj", OBJ_OK + "f 1 2 99999999999999999999999\n", r"expected an index below 2\*\*62 in magnitude, found '99999999999999999999999'", 4),
    ("short.obj", OBJ_OK + "f 1 2\n", r"face: expected at least 3 vertices, found 2", 4),
    ("nan.obj", "v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n", r"expected finite numbers, found 'nan' \(value 1 of 3\) in 'nan 0 0'", 2),
    # a long row's non-finite colour was cut off in the quoted text
    ("nan_colour.obj", "v 64.1588211 76.4555817 52.6121445 0.90880 0.5000000 nan\nv 0 1 0 1 1 1\nv 1 0 0 1 1 1\nf 1 2 3\n",
     r"expected finite numbers, found 'nan' \(value 6 of 6\) in '64\.1588211", 1),
    ("inf.obj", OBJ_OK + "v 1e999 0 0\nf 1 2 3\n", r"expected finite numbers", 4),
    ("mixvt.obj", OBJ_OK + "vt 0 0\nf 1/1 2 3/1\n", r"mix with and without texture index", 5),
    ("facevt.obj", OBJ_OK + "v 1 1 0\nvt 0 0\nf 1/1 2/1 3/1\nf 2 4 3\n", r"face has no texture indices", 7),
    ("unusedvt.obj", OBJ_OK + "vt 0 0\nf 1 2 3\n", r"'vt' texture coordinates but no face uses them", None),
    ("corner.obj", OBJ_OK + "f 1/ 2/ 3/\n", r"expected 'v', 'v/vt', 'v/vt/vn' or 'v//vn', found '1/'", 4),
    ("vn.obj", OBJ_OK + "vn 0 0 1\nf 1//1 2//1 3//2\n", r"normal index 2 out of range", 5),
    ("mixcolor.obj", "v 0 0 0 1 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", r"vertex has no colour but earlier", 2),
    ("color.obj", "v 0 0 0 1 0 0\nv 1 0 0 1.5 0 0\nv 0 1 0 0 0 0\nf 1 2 3\n", r"colour values in \[0, 1\], found "
     r"\[1\.5, 0\.0, 0\.0\] \(8-bit colours\? divide them by 255\)", 2),
    ("negcolor.obj", "v 0 0 0 1 0 0\nv 1 0 0 -0.5 0 0\nv 0 1 0 0 0 0\nf 1 2 3\n", r"colour values in \[0, 1\], found "
     r"\[-0\.5, 0\.0, 0\.0\]$", 2),
    ("statement.obj", OBJ_OK + "l 1 2\n", r"unsupported OBJ statement 'l'.*\(a line element, as a wireframe export "
     r"writes: export the faces alone\)", 4),
    ("lmform.obj", "# landmark nose\n" + OBJ_OK + "f 1 2 3\n", r"expected 'landmark <name> <vertex index>'", 1),
    ("lmidx.obj", "# landmark nose x\n" + OBJ_OK + "f 1 2 3\n", r"landmark 'nose': expected an integer", 1),
    ("lmrange.obj", OBJ_OK + "f 1 2 3\n# landmark nose 3\n", r"landmark 'nose': expected a vertex index in \[0, 3\), found 3", 5),
    ("lmdup.obj", "# landmark a 0\n# landmark a 1\n" + OBJ_OK + "f 1 2 3\n", r"landmark 'a' defined twice", 2),
    ("noface.obj", OBJ_OK, r"no faces", None),
    ("degenerate.obj", OBJ_OK + "f 1 2 2\n", r"invalid mesh: face 0 is degenerate", None),
    ("duplicate.obj", OBJ_OK + "f 1 2 3\nf 2 3 1\n", r"invalid mesh: face 0 .* is duplicated", None),
    ("winding.obj", OBJ_OK + "v 1 1 0\nf 1 2 3\nf 2 3 4\n", r"invalid mesh: inconsistent winding", None),
    ("nonmanifold.obj", OBJ_OK + "v 1 1 0\nv 1 1 1\nf 1 2 3\nf 2 1 4\nf 1 2 5\n", r"invalid mesh: non-manifold edge \(0, 1\)"
     r".* \(vertex and face indices count from 0, in file order\)", None),
    ("empty.obj", "", r"empty file", None),
    ("blank.off", "  \n\n ", r"empty file", None),
    ("nul.obj", "v 0 0 0\nv 1\x00\x01 0 0\n", r"binary data \(NUL byte", 2),
    ("garbage.obj", "\x7fELF\x02\x01 \x90\x91 junk", r"unsupported OBJ statement", 1),
    # OFF
    ("header.off", "OFX\n3 1 0\n", r"not an OFF file: expected the header 'OFF' or 'COFF'", 1),
    ("variant.off", "NOFF\n3 1 0\n", r"unsupported OFF variant 'NOFF'", 1),
    ("counts.off", "OFF\n3 1\n0 0 0\n", r"OFF counts: expected 3 integers 'V F E', found '3 1'", 2),
    ("countsdigit.off", "OFF\n3 \u00b2 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", r"OFF counts: expected 3 integers", 2),
    ("countsnum.off", "OFF\n3 one 0\n", r"OFF counts: expected 3 integers", 2),
    ("truncated.off", "OFF\n4 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", r"truncated OFF file: header declares 4 vertices and 1 faces \(5 lines\), found 4", 2),
    ("extra.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n3 0 2 1\n", r"OFF counts mismatch", 7),
    ("huge.off", "OFF\n1000000000000 2000000000000 0\n0 0 0\n", r"truncated OFF file: header declares 1000000000000 vertices", 2),
    ("vfields.off", "OFF\n3 1 0\n0 0 0\n1 0\n0 1 0\n3 0 1 2\n", r"OFF vertex: expected 3 .* found 2", 4),
    ("coff.off", "COFF\n3 1 0\n0 0 0 1 1 1\n1 0 0\n0 1 0 0 0 0\n3 0 1 2\n", r"expected 6 .* found 3", 4),
    ("intcolor.off", "COFF\n3 1 0\n0 0 0 255 0 0\n1 0 0 300 0 0\n0 1 0 0 0 0\n3 0 1 2\n", r"integers in \[0, 255\]", 4),
    ("ftoken.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 b\n", r"expected an integer, found 'b'", 6),
    ("fcount.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1\n", r"expected 3 vertex indices after the size 3 .* found 2", 6),
    ("fsize.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n2 0 1\n", r"expected at least 3 vertices, found 2", 6),
    ("frange.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 5\n", r"vertex index 5 out of range: expected 0\.\.2 \(V=3\)", 6),
    ("nan.off", "OFF\n3 1 0\n0 0 0\n1 nan 0\n0 1 0\n3 0 1 2\n", r"expected finite numbers", 4),
    ("nocounts.off", "OFF\n", r"expected a counts line", 1),
    # PLY
    ("magic.ply", "plx\nformat ascii 1.0\n", r"not a PLY file: expected the magic line 'ply'", 1),
    ("noend.ply", PLY_HEAD + "element face 1\n", r"expected an 'end_header' line", None),
    ("format.ply", "ply\nformat ascii 2.0\nend_header\n", r"expected 'format ascii\|binary_little_endian\|binary_big_endian 1.0'", 2),
    ("keyword.ply", "ply\nformat ascii 1.0\nelemnt vertex 3\nend_header\n", r"found 'elemnt'", 3),
    ("ptype.ply", "ply\nformat ascii 1.0\nelement vertex 3\nproperty float3 x\nend_header\n", r"expected 'property <type> <name>'", 4),
    ("count.ply", "ply\nformat ascii 1.0\nelement vertex -3\nend_header\n", r"non-negative element count, found '-3'", 3),
    ("huge.ply", PLY_HEAD.replace("vertex 3", "vertex 999999999999") + PLY_FACE + PLY_OK_BODY + "3 0 1 2\n",
     r"truncated PLY file or corrupt count: header declares 999999999999 'vertex' elements", 3),
    ("noface.ply", PLY_HEAD + "end_header\n" + PLY_OK_BODY, r"expected a 'face' element", None),
    ("noxyz.ply", PLY_HEAD.replace("property float z\n", "") + PLY_FACE + "0 0\n1 0\n0 1\n3 0 1 2\n", r"expected scalar properties x, y, z", 3),
    ("partialrgb.ply", PLY_HEAD + "property uchar red\n" + PLY_FACE + "0 0 0 1\n1 0 0 1\n0 1 0 1\n3 0 1 2\n", r"all of red, green, blue or none, found only \['red'\]", 3),
    ("frange.ply", PLY_HEAD + PLY_FACE + PLY_OK_BODY + "3 0 1 7\n", r"vertex index 7 out of range: expected 0\.\.2 \(V=3\)", 13),
    ("fsize.ply", PLY_HEAD + PLY_FACE + PLY_OK_BODY + "2 0 1\n", r"expected at least 3 vertices, found 2", 13),
    ("nan.ply", PLY_HEAD + PLY_FACE + "0 0 0\n1 nan 0\n0 1 0\n3 0 1 2\n", r"expected finite x y z", 11),
    ("token.ply", PLY_HEAD + PLY_FACE + "0 0 0\n1 q 0\n0 1 0\n3 0 1 2\n", r"element 'vertex' row 1 property 'y': malformed input", 11),
    ("fields.ply", PLY_HEAD + PLY_FACE + "0 0 0\n1 0 0 5\n0 1 0\n3 0 1 2\n", r"row 1: expected end-of-line", 11),
    ("nonascii.ply", PLY_HEAD + PLY_FACE + "0 0 0\n1 0 \udce9\n0 1 0\n3 0 1 2\n", r"PLY ascii body: expected ASCII text, found byte 0xe9", 11),
    ("longtoken.obj", OBJ_OK + "v 1 " + "7" * 5000 + "x 0\nf 1 2 3\n", r"expected a number, found '7{40}'\.\.\. \(5001 characters\)$", 4),
    ("missing.ply", PLY_HEAD + PLY_FACE + PLY_OK_BODY, r"truncated PLY file|early end-of-file", None),
    ("trailing.ply", PLY_HEAD + PLY_FACE + PLY_OK_BODY + "3 0 1 2\n3 0 2 1\n", r"PLY body longer than declared", 14),
    ("color.ply", PLY_HEAD + "property float red\nproperty float green\nproperty float blue\n" + PLY_FACE
     + "0 0 0 1 1 1\n1 0 0 2 0 0\n0 1 0 0 0 0\n3 0 1 2\n", r"expected float colours in \[0, 1\]", 14),
    ("texcoord.ply", PLY_HEAD + PLY_FACE.replace("end_header", "property list uchar float texcoord\nend_header")
     + PLY_OK_BODY + "3 0 1 2 4 0 0 1 0\n", r"expected 6 values \(u v per corner\), found 4", 14),
    ("lm.ply", PLY_HEAD.replace("ply\n", "ply\ncomment landmark a 9\n", 1) + PLY_FACE + PLY_OK_BODY + "3 0 1 2\n",
     r"landmark 'a': expected a vertex index in \[0, 3\), found 9", 2),
    ("underscore.obj", "v 1_5 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", r"vertex: expected a number, found '1_5'$", 1),
    ("underscoref.obj", OBJ_OK + "v 1 1 0\n" * 8 + "f 1 2 1_1\n", r"face vertex index: expected an integer, found '1_1'$", 12),
    ("arabic.obj", "v \u0663 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "vertex: expected a number, found '\u0663'$", 1),
    ("underscore.off", "OFF\n3 1 0\n1_5 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", r"OFF vertex: expected a number, found '1_5'$", 3),
    ("countunderscore.off", "OFF\n3 1 0_0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", r"OFF counts: expected 3 integers", 2),
    ("underscore.ply", PLY_HEAD + PLY_FACE + "0 0 0\n1_5 0 0\n0 1 0\n3 0 1 2\n", r"PLY ascii body: expected a number, found '1_5'$", 11),
    ("countunderscore.ply", PLY_HEAD.replace("vertex 3", "vertex 0_3") + PLY_FACE + PLY_OK_BODY + "3 0 1 2\n",
     r"expected a non-negative element count, found '0_3'$", 3),
    ("lmunderscore.obj", "# landmark nose_tip 1_0\n" + OBJ_OK + "f 1 2 3\n", r"landmark 'nose_tip': expected an integer vertex index, found '1_0'$", 1),
    ("bad.ply", PLY_HEAD + PLY_FACE + PLY_OK_BODY + "3 0 1 2\n", None, None),  # control: valid
    # extension
    ("mesh.stl", "solid x\n", r"unknown mesh format: expected extension one of \.obj, \.off, \.ply, found '\.stl'", None),
    ("noext", "v 0 0 0\n", r"unknown mesh format: .* found no extension", None),
]


@pytest.mark.parametrize("name, content, reason, line", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_malformed_file_raises_mesh_file_error(tmp_path, name, content, reason, line):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8", errors="surrogateescape"))
    if reason is None:  # the control case loads
        assert load_mesh(path).num_faces == 1
        return
    with pytest.raises(MeshFileError, match=reason) as info:
        load_mesh(path)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.path == str(path) and str(err).startswith(str(path))
    if line is not None:
        assert err.line == line and f"line {line}:" in str(err)


def _sneak_into(token: str, rng) -> str:
    """``token`` with an underscore or a non-ASCII digit: Python's int()/float() still read it, a mesh file must not."""
    digits = [i for i, ch in enumerate(token) if ch.isdigit()]
    adjacent = [i + 1 for i in digits if i + 1 in digits]
    if adjacent and rng.random() < 0.6:
        i = int(rng.choice(adjacent))
        return token[:i] + "_" + token[i:]
    i = int(rng.choice(digits))
    return token[:i] + chr(0x660 + int(token[i])) + token[i + 1 :]  # ARABIC-INDIC DIGIT of the same value


def _number_targets(ext: str, lines: list[str]):
    """``(line index, token index, expected reason)`` of every numeric token a saved file holds."""
    out = []
    body = False  # PLY: after end_header
    for i, line in enumerate(lines):
        tokens = line.split()
        if not tokens:
            continue
        if tokens[:2] in (["#", "landmark"], ["comment", "landmark"]):
            reason = r"landmark '.*': expected an integer vertex index"
            out.append((i, 3, reason + r"|PLY header: expected ASCII text" if ext == "ply" else reason))
        elif ext == "obj" and tokens[0] in ("v", "vt", "f"):
            reason = {"v": r"vertex: expected a number", "vt": r"texture coordinate: expected a number",
                      "f": r"face (vertex|texture) index: expected an integer"}[tokens[0]]
            out += [(i, j, reason) for j in range(1, len(tokens))]
        elif ext == "off" and i == 1:
            out += [(i, j, r"OFF counts: expected 3 integers") for j in range(3)]
        elif ext == "off" and i > 1 and tokens[0] != "#":
            if len(tokens) == 4 and tokens[0] == "3" and "." not in line:
                out += [(i, 0, r"OFF face size: expected an integer")]
                out += [(i, j, r"OFF face vertex index: expected an integer") for j in (1, 2, 3)]
            else:
                out += [(i, j, r"OFF vertex: expected a number") for j in range(len(tokens))]
        elif ext == "ply" and tokens[0] == "element":
            out.append((i, 2, r"PLY header: expected (a non-negative element count|ASCII text)"))
        elif ext == "ply" and body:
            out += [(i, j, r"PLY ascii body: expected (a number|ASCII text)") for j in range(len(tokens))]
        body = body or tokens == ["end_header"]
    return out


@pytest.mark.parametrize("ext", ["obj", "off", "ply"])
def test_numbers_with_underscores_or_non_ascii_digits_are_errors(tmp_path, make_grid_mesh, ext):
    """Python's float("1_5") is 15.0 and int("\u0663") is 3; a mesh file holding them is malformed."""
    rng = np.random.default_rng(103)
    path = tmp_path / f"m.{ext}"
    for case in range(12):
        mesh = make_grid_mesh(rng, 6, 6, colors=case % 3 == 0, uv="corner" if ext != "off" else None, landmarks=3)
        save_mesh(mesh, path, binary=False if ext == "ply" else None)
        text = path.read_text(encoding="utf-8")
        if case % 4 == 1 and ext != "ply":  # a comment forces the careful line-by-line reader
            text = text.replace("\n", " # c\n", 1) if ext == "obj" else text + "# the end\n"
        path.write_text(text, encoding="utf-8")
        assert load_mesh(path).landmarks == mesh.landmarks  # names with underscores are fine
        lines = text.split("\n")
        targets = _number_targets(ext, lines)
        if case % 3 == 2:  # the rarer header counts and landmark indices
            targets = [t for t in targets if "landmark" in t[2] or "count" in t[2]]
        i, j, reason = targets[int(rng.integers(len(targets)))]
        tokens = lines[i].split()
        parts = tokens[j].split("/")
        k = int(rng.choice([n for n, part in enumerate(parts) if any(ch.isdigit() for ch in part)]))
        bad = _sneak_into(parts[k], rng)
        assert float(bad) == float(parts[k])  # Python itself reads it as the same number
        tokens[j] = "/".join(parts[:k] + [bad] + parts[k + 1 :])
        lines[i] = " ".join(tokens)
        path.write_text("\n".join(lines), encoding="utf-8")
        with pytest.raises(MeshFileError, match=reason) as info:
            load_mesh(path)
        assert info.value.line == i + 1, str(info.value)
        if "ASCII text" not in str(info.value):
            assert f"found {bad!r}" in str(info.value) or bad in str(info.value), str(info.value)


def _binary_ply(tmp_path, *, vertex_count=3, face_list_type="uchar", list_len=None, cut=0, extra=b""):
    head = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {vertex_count}\nproperty float x\nproperty float y\nproperty float z\n"
        f"element face 1\nproperty list {face_list_type} int vertex_indices\nend_header\n"
    ).encode()
    body = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], "<f4").tobytes()
    n = 3 if list_len is None else list_len
    body += np.array([n], {"uchar": "u1", "uint": "<u4"}[face_list_type]).tobytes()
    body += np.array([0, 1, 2], "<i4").tobytes()
    data = head + body + extra
    path = tmp_path / "b.ply"
    path.write_bytes(data[: len(data) - cut])
    return path


def test_binary_ply_errors(tmp_path):
    assert load_mesh(_binary_ply(tmp_path)).num_faces == 1  # control
    with pytest.raises(MeshFileError, match="truncated PLY file or corrupt count") as info:
        load_mesh(_binary_ply(tmp_path, cut=13))
    assert info.value.line == 7  # the face element's header line
    with pytest.raises(MeshFileError, match=r"element 'face' row 0 property 'vertex_indices': early end-of-file") as info:
        load_mesh(_binary_ply(tmp_path, list_len=200))
    assert info.value.line == "element 'face' row 0"
    with pytest.raises(MeshFileError, match="PLY body longer than declared: 16 bytes"):
        load_mesh(_binary_ply(tmp_path, extra=b"\x01" * 16))
    assert load_mesh(_binary_ply(tmp_path, extra=b"\n")).num_faces == 1  # a trailing newline is tolerated


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: _binary_ply(tmp, vertex_count=2**40),
        lambda tmp: _binary_ply(tmp, face_list_type="uint", list_len=2**31),  # a list length of 8 GiB
        lambda tmp: _write(tmp / "h.off", "OFF\n" + "9" * 15 + " 3 0\n0 0 0\n"),
        lambda tmp: _write(tmp / "h.ply", PLY_HEAD + PLY_FACE.replace(" 1\n", " 4000000000\n")
                           + PLY_OK_BODY + "3 0 1 2\n"),
    ],
    ids=["ply-vertex-count", "ply-list-length", "off-counts", "ply-face-count"],
)
def test_huge_declared_sizes_fail_fast_without_allocating(tmp_path, make):
    path = make(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(MeshFileError):
            load_mesh(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"loading a tiny corrupt file allocated {peak / 2**20:.1f} MiB"


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_nul_byte_is_placed_by_line_and_file_offset(tmp_path, newline, bom):
    rng = np.random.default_rng(51)
    rows = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in rng.normal(size=(4, 3))]
    rows += ["f 1 2 3", "f 2 \x004 3", ""]  # the NUL is on line 6
    data = bom + newline.join(rows).encode()
    path = tmp_path / "nul.obj"
    path.write_bytes(data)
    # a CR-only file was reported at line 1, and the offset skipped the byte-order mark
    offset = data.index(b"\x00")
    with pytest.raises(MeshFileError, match=f"NUL byte at offset {offset}") as info:
        load_mesh(path)
    assert info.value.line == 6


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_mesh(tmp_path / "absent.obj")


# =============================================================================
# save errors
# =============================================================================
def test_save_rejects_what_the_format_cannot_hold(tmp_path, make_grid_mesh):
    rng = np.random.default_rng(11)
    mesh = make_grid_mesh(rng, 3, 3, uv="corner", colors=True)
    with pytest.raises(MeshFileError, match="OFF cannot store texture coordinates"):
        save_mesh(mesh, tmp_path / "a.off")
    with pytest.raises(MeshFileError, match="binary=True: OBJ is a text format"):
        save_mesh(mesh, tmp_path / "a.obj", binary=True)
    with pytest.raises(MeshFileError, match="unknown mesh format"):
        save_mesh(mesh, tmp_path / "a.stl")
    with pytest.raises(TypeError, match="expected a mesh_decoder.mesh.Mesh, got dict"):
        save_mesh({"vertices": 1}, tmp_path / "a.obj")
    with pytest.raises(MeshFileError, match="refusing to write an invalid mesh: face 0 is degenerate"):
        save_mesh(mesh.copy(faces=np.array([[0, 0, 1]]), uv=None, uv_faces=None), tmp_path / "b.obj")
    with pytest.raises(MeshFileError,
                       match=r"refusing to write an invalid mesh: colors: expected RGB values in \[0, 1\], got range \["):
        save_mesh(mesh.copy(colors=mesh.colors * 2), tmp_path / "c.ply")
    big = mesh.vertices.copy()
    big[0, 0] = 1e39
    with pytest.raises(MeshFileError, match="vertices: expected values within float32 range"):
        save_mesh(mesh.copy(vertices=big), tmp_path / "d.ply")
    with pytest.raises(MeshFileError, match="landmark name 'two words': expected a non-empty name without whitespace"):
        save_mesh(mesh.copy(landmarks={"two words": 1}), tmp_path / "e.obj")
    with pytest.raises(MeshFileError, match="PLY header comments must be ASCII"):
        save_mesh(mesh.copy(landmarks={"nasenspitze_ä": 1}), tmp_path / "f.ply")
    assert sorted(os.listdir(tmp_path)) == []  # nothing was written
    save_mesh(mesh.copy(landmarks={"nasenspitze_ä": 1}), tmp_path / "f.obj")  # UTF-8 names are fine in OBJ
    assert load_mesh(tmp_path / "f.obj").landmarks == {"nasenspitze_ä": 1}


class _DiskFull:
    """A file handle that accepts ``limit`` bytes and then fails like a full disk."""

    def __init__(self, handle, limit):
        self.handle, self.limit, self.written = handle, limit, 0

    def write(self, data):
        room = self.limit - self.written
        if len(data) > room:
            self.handle.write(data[:room])
            self.written += room
            raise OSError(28, "No space left on device (simulated)")
        self.written += len(data)
        return self.handle.write(data)

    def __getattr__(self, name):
        return getattr(self.handle, name)


@pytest.mark.parametrize("ext, binary", SAVE_CASES)
def test_failed_save_leaves_old_file_intact_and_no_temp(tmp_path, monkeypatch, make_grid_mesh, ext, binary):
    rng = np.random.default_rng(12)
    old = make_grid_mesh(rng, 3, 3)
    new = make_grid_mesh(rng, 6, 6, colors=True)
    path = tmp_path / f"mesh.{ext}"
    save_mesh(old, path, binary=binary)
    before = path.read_bytes()
    real = mio.atomic_write
    handles = []

    @contextlib.contextmanager
    def failing_atomic_write(target, mode="wb", suffix=None):
        with real(target, mode, suffix) as handle:
            handles.append(_DiskFull(handle, limit=300))
            yield handles[-1]

    monkeypatch.setattr(mio, "atomic_write", failing_atomic_write)
    with pytest.raises(OSError, match="No space left on device"):
        save_mesh(new, path, binary=binary)
    assert handles and handles[0].written == 300  # the writer went through atomic_write and wrote part of the file
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == [path.name]
    assert load_mesh(path).content_hash() == old.content_hash()


def test_successful_save_leaves_no_temp(tmp_path, make_grid_mesh):
    mesh = make_grid_mesh(np.random.default_rng(13), 3, 4)
    for ext in ("obj", "off", "ply"):
        save_mesh(mesh, tmp_path / f"m.{ext.upper()}")
    assert sorted(os.listdir(tmp_path)) == ["m.OBJ", "m.OFF", "m.PLY"]


def test_atomic_write_keeps_the_targets_permissions(tmp_path, make_grid_mesh):
    rng = np.random.default_rng(14)
    for ext, binary in SAVE_CASES:
        path = tmp_path / f"m.{ext}"
        save_mesh(make_grid_mesh(rng, 3, 3), path, binary=binary)
        mode = 0o600 | int(rng.integers(0, 0o100)) & 0o055  # owner read-write plus random group/other bits
        os.chmod(path, mode)
        new = make_grid_mesh(rng, 3, 4)
        save_mesh(new, path, binary=binary)
        assert stat.S_IMODE(os.stat(path).st_mode) == mode
        assert load_mesh(path).content_hash() == new.content_hash()
    payload = rng.bytes(int(rng.integers(1, 5000)))
    target = tmp_path / "blob.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    with atomic_write(target) as handle:
        handle.write(payload)
    assert target.read_bytes() == payload and stat.S_IMODE(os.stat(target).st_mode) == 0o640
    mask = int(rng.choice([0o002, 0o022, 0o027, 0o077]))
    old_mask = os.umask(mask)
    try:  # a new file gets the umask default
        with atomic_write(tmp_path / "fresh.bin") as handle:
            handle.write(payload)
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE(os.stat(tmp_path / "fresh.bin").st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["blob.bin", "fresh.bin"] + [f"m.{e}" for e in ("obj", "off", "ply")])


def test_atomic_write_through_a_symlink_replaces_its_target(tmp_path, make_grid_mesh):
    rng = np.random.default_rng(15)
    real_dir, link_dir = tmp_path / "real", tmp_path / "links"
    real_dir.mkdir()
    link_dir.mkdir()
    for ext, binary in SAVE_CASES:
        real = real_dir / f"mesh.{ext}"
        save_mesh(make_grid_mesh(rng, 3, 3), real, binary=binary)
        os.chmod(real, 0o640)
        link = link_dir / f"link.{ext}"
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(real, link_dir) if rng.random() < 0.5 else real)
        chain = link_dir / f"chain.{ext}"  # a link to the link
        chain.unlink(missing_ok=True)
        chain.symlink_to(link.name)
        new = make_grid_mesh(rng, 4, 3, colors=True)
        save_mesh(new, chain, binary=binary)
        assert link.is_symlink() and chain.is_symlink() and os.path.samefile(chain, real)
        assert load_mesh(real).content_hash() == new.content_hash()
        assert stat.S_IMODE(os.stat(real).st_mode) == 0o640
    dangling = link_dir / "later.obj"  # a link whose target does not exist yet
    dangling.symlink_to(real_dir / "later.obj")
    new = make_grid_mesh(rng, 3, 3)
    save_mesh(new, dangling)
    assert dangling.is_symlink() and load_mesh(real_dir / "later.obj").content_hash() == new.content_hash()
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


# =============================================================================
# large files
# =============================================================================
@pytest.mark.slow
def test_obj_100k_vertices_round_trip(tmp_path):
    """A 100k-vertex, 200k-face OBJ with UVs takes the bulk path and reads back exactly."""
    rng = np.random.default_rng(14)
    n = 317  # 100,489 vertices
    vertices = rng.normal(size=(n * n, 3)) * 100  # (V, 3)
    cells = (np.arange(n - 1)[:, None] * n + np.arange(n - 1)[None, :]).ravel()
    faces = np.concatenate([np.stack([cells, cells + 1, cells + n], 1), np.stack([cells + 1, cells + n + 1, cells + n], 1)])
    faces = rng.permutation(n * n)[faces]  # (F, 3), vertex order scrambled
    uv = rng.random((n * n, 2))
    corners = np.stack([faces + 1, faces + 1], axis=2).reshape(-1, 6)  # (F, 6): v/vt pairs
    text = "".join(
        ["v %r %r %r\n" % tuple(r) for r in vertices.tolist()]
        + ["vt %r %r\n" % tuple(r) for r in uv.tolist()]
        + ["f %d/%d %d/%d %d/%d\n" % tuple(r) for r in corners.tolist()]
    )
    path = str(tmp_path / "big.obj")
    data = text.encode()
    parts = mio._read_obj(path, data)
    lines = mio._text_lines(path, data)
    assert mio._read_obj_fast(path, lines) is not None  # a file this size takes the bulk path
    assert np.array_equal(parts.vertices, vertices) and np.array_equal(parts.faces, faces)
    assert np.array_equal(parts.uv, uv) and np.array_equal(parts.uv_faces, faces)


# =============================================================================
# UV texture maps written beside the mesh
# =============================================================================
def _png_pixels(path) -> np.ndarray:
    """A PNG's ``(H, W, 3)`` uint8 pixels, decoded by Pillow (not by the writer's code)."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("ext, binary", [("obj", None), ("ply", True), ("ply", False)])
@pytest.mark.parametrize("kind", ["numpy_float", "numpy_uint8", "torch_chw"])
def test_a_texture_is_written_beside_the_mesh_and_referenced(tmp_path, make_grid_mesh, ext, binary, kind):
    import torch

    rng = np.random.default_rng()
    mesh = make_grid_mesh(rng, 3, 4, uv="corner", colors=True, landmarks=2)
    H, W = int(rng.integers(5, 40)), int(rng.integers(5, 40))  # not square: rows and columns stay apart
    pixels = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    texture = {"numpy_float": pixels / 255.0, "numpy_uint8": pixels,
               "torch_chw": torch.from_numpy(pixels).permute(2, 0, 1).float() / 255}[kind]
    path = tmp_path / f"head.{ext}"
    save_mesh(mesh, path, binary=binary, texture=texture)
    png, mtl = mio.texture_paths(path)
    assert png == str(tmp_path / "head.png") and mtl == str(tmp_path / "head.mtl")
    assert sorted(os.listdir(tmp_path)) == (["head.mtl", "head.obj", "head.png"] if ext == "obj"
                                             else ["head.ply", "head.png"])
    np.testing.assert_array_equal(_png_pixels(png), pixels)
    loaded = load_mesh(path)  # the references are skipped: the mesh reads back whole
    assert loaded.content_hash() == mesh.content_hash()
    if ext == "obj":
        lines = (tmp_path / "head.obj").read_text().splitlines()
        assert lines.count("mtllib head.mtl") == 1 and lines.count(f"usemtl {mio.OBJ_MATERIAL}") == 1
        assert lines.index("mtllib head.mtl") < next(i for i, l in enumerate(lines) if l.startswith("v "))
        assert lines.index(f"usemtl {mio.OBJ_MATERIAL}") < next(i for i, l in enumerate(lines) if l.startswith("f "))
        material = (tmp_path / "head.mtl").read_text().splitlines()
        assert f"newmtl {mio.OBJ_MATERIAL}" in material and material[-1] == "map_Kd head.png"
    else:
        header = plyfile.PlyData.read(str(path)).comments
        assert header[:2] == ["written by mesh_decoder", "TextureFile head.png"]


def test_a_texture_needs_uvs_an_rgb_image_and_a_referable_name(tmp_path, make_grid_mesh):
    import torch

    rng = np.random.default_rng()
    mesh = make_grid_mesh(rng, 3, 3, uv="corner")
    texture = rng.random((8, 8, 3))
    with pytest.raises(MeshFileError, match="OFF cannot store texture coordinates"):
        save_mesh(mesh.copy(uv=None, uv_faces=None), tmp_path / "a.off", texture=texture)
    with pytest.raises(MeshFileError, match="texture: expected a mesh with UV coordinates"):
        save_mesh(mesh.copy(uv=None, uv_faces=None), tmp_path / "a.obj", texture=texture)
    for name in ("a b.obj", "face#1.obj", "-face.obj", "a\tb.ply"):
        with pytest.raises(MeshFileError, match=r"name without whitespace or '#' that does not start with '-' "
                                                r"\((OBJ's mtllib and map_Kd|a PLY header comment)\), found '"):
            save_mesh(mesh, tmp_path / name, texture=texture)
    with pytest.raises(MeshFileError, match="an ASCII name without whitespace .* found 'gesicht_ä.png'"):
        save_mesh(mesh, tmp_path / "gesicht_ä.ply", texture=texture)
    bad = {r"an RGB image \(\(3, H, W\) tensor or \(H, W, 3\) array\), found 4 channels in shape \(8, 8, 4\)$":
           rng.random((8, 8, 4)),
           # a 2-D array read 'expected an RGB image (3 channels), found 1'
           r"an RGB image \(3 channels, not a 2-D array\), found 1 channel in shape \(8, 3\)$": rng.random((8, 3)),
           "expected finite values": np.full((8, 8, 3), np.nan),
           "expected real values, got complex64": (rng.random((8, 8, 3)) + 1j).astype(np.complex64),
           "expected floats in \\[0, 1\\] or uint8, got int32": rng.integers(0, 255, (8, 8, 3), dtype=np.int32),
           "expected one image \\(1, C, H, W\\), got a batch of 2": torch.rand(2, 3, 8, 8),
           # an 8-bit image cast to float was clipped to an all but white texture
           r"expected floats in \[0, 1\], got whole numbers up to 255 \(8-bit values\? divide them by 255, or pass "
           r"a uint8 array\)$": np.concatenate([rng.integers(0, 255, (8, 8, 3)), np.full((1, 8, 3), 255)]).astype(
               np.float32)}
    for message, image in bad.items():
        with pytest.raises(MeshFileError, match=f"a.obj: texture: .*{message}"):
            save_mesh(mesh, tmp_path / "a.obj", texture=image)
    assert os.listdir(tmp_path) == []  # every refusal came before the first file
    save_mesh(mesh, tmp_path / "gesicht_ä.obj", texture=texture)  # UTF-8 names are fine in OBJ
    assert "map_Kd gesicht_ä.png" in (tmp_path / "gesicht_ä.mtl").read_text(encoding="utf-8")


@pytest.mark.parametrize("failure", ["mesh_write", "mesh_path_is_a_folder", "mtl_path_is_a_folder", "interrupt"])
def test_a_failed_textured_save_leaves_every_earlier_file(tmp_path, make_grid_mesh, monkeypatch, failure):
    """The texture files were written first: a failing mesh write left a new texture beside the old mesh."""
    rng = np.random.default_rng()
    mesh = make_grid_mesh(rng, 3, 4, uv="corner")
    path = tmp_path / "face.obj"
    save_mesh(mesh, path, texture=rng.random((6, 5, 3)))
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    assert sorted(before) == ["face.mtl", "face.obj", "face.png"]
    moved = make_grid_mesh(rng, 3, 4, uv="corner")
    if failure in ("mesh_write", "interrupt"):
        error = OSError(28, "No space left on device (simulated)") if failure == "mesh_write" else KeyboardInterrupt()

        def failing(mesh, target, **kwargs):
            with mio.atomic_write(target, "wb") as handle:
                handle.write(b"v 1 2 3\n")
                raise error

        monkeypatch.setattr(mio, "_write_obj", failing)
        with pytest.raises(type(error)):
            save_mesh(moved, path, texture=rng.random((6, 5, 3)))
    elif failure == "mesh_path_is_a_folder":
        os.mkdir(tmp_path / "other.obj")
        with pytest.raises(OSError, match="expected a file path, found a directory"):
            save_mesh(moved, tmp_path / "other.obj", texture=rng.random((6, 5, 3)))
        os.rmdir(tmp_path / "other.obj")
        assert not (tmp_path / "other.png").exists() and not (tmp_path / "other.mtl").exists()
    else:
        (tmp_path / "face.mtl").unlink()
        os.mkdir(tmp_path / "face.mtl")
        del before["face.mtl"]
        with pytest.raises(MeshFileError, match="texture: expected .*face.mtl to be free for a file, found a folder"):
            save_mesh(moved, path, texture=rng.random((6, 5, 3)))
        os.rmdir(tmp_path / "face.mtl")
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before


def test_load_texture_reads_back_what_save_mesh_wrote(tmp_path, make_grid_mesh):
    rng = np.random.default_rng()
    mesh = make_grid_mesh(rng, 3, 4, uv="corner")
    pixels = rng.integers(0, 256, size=(int(rng.integers(4, 30)), int(rng.integers(4, 30)), 3), dtype=np.uint8)
    for ext in ("obj", "ply"):
        save_mesh(mesh, tmp_path / f"m.{ext}", texture=pixels)
        texture = mio.load_texture(tmp_path / f"m.{ext}")
        assert texture.dtype == np.float32 and texture.shape == pixels.shape
        np.testing.assert_allclose(texture, pixels / 255.0, atol=1e-6)
    save_mesh(mesh, tmp_path / "plain.obj")
    save_mesh(mesh.copy(uv=None, uv_faces=None), tmp_path / "plain.off")
    assert mio.load_texture(tmp_path / "plain.obj") is None and mio.load_texture(tmp_path / "plain.off") is None


def test_texture_file_follows_what_other_writers_write(tmp_path, make_grid_mesh):
    """Material files without a map, options before the file name, several libraries, names with spaces,
    sub-folders, PLY's TextureFile comment."""
    mesh = make_grid_mesh(np.random.default_rng(), 3, 3, uv="corner")
    save_mesh(mesh, tmp_path / "base.obj")
    body = (tmp_path / "base.obj").read_text()
    (tmp_path / "tex").mkdir()
    for name in ("skin.png", "my skin.png"):
        (tmp_path / "tex" / name).write_bytes(b"")
    (tmp_path / "plain.mtl").write_text("newmtl plain\nKd 0.5 0.5 0.5\n")
    (tmp_path / "skin.mtl").write_text("newmtl skin\r\nmap_Ka tex/other.png\r\nmap_Kd -s 1 1 1 -clamp on tex/skin.png\r\n")
    (tmp_path / "spaced.mtl").write_text("newmtl s\nmap_Kd tex/my skin.png\n")
    (tmp_path / "a.obj").write_text("mtllib plain.mtl skin.mtl\nusemtl skin\n" + body)
    (tmp_path / "b.obj").write_text("# exported\nmtllib spaced.mtl\n" + body)
    assert mio.texture_file(tmp_path / "a.obj") == str(tmp_path / "tex" / "skin.png")
    assert mio.texture_file(tmp_path / "b.obj") == str(tmp_path / "tex" / "my skin.png")
    (tmp_path / "c.obj").write_text("mtllib gone.mtl\n" + body)
    with pytest.raises(MeshFileError, match=r"c.obj: mtllib gone.mtl: expected a material file beside the OBJ, "
                                            r"found nothing at .*gone.mtl"):
        mio.texture_file(tmp_path / "c.obj")
    save_mesh(mesh, tmp_path / "d.ply", binary=False)
    head = (tmp_path / "d.ply").read_bytes().replace(b"comment written by mesh_decoder\n",
                                                     b"comment written by mesh_decoder\ncomment TextureFile tex/skin.png\n")
    (tmp_path / "d.ply").write_bytes(head)
    assert mio.texture_file(tmp_path / "d.ply") == str(tmp_path / "tex" / "skin.png")
    assert load_mesh(tmp_path / "d.ply").content_hash() == mesh.content_hash()
    with pytest.raises(MeshFileError, match=r"d.ply: expected an image file, could not decode it|"
                                            r"skin.png: expected an image file"):
        mio.load_texture(tmp_path / "d.ply")  # an empty file is no image
    (tmp_path / "tex" / "skin.png").unlink()
    with pytest.raises(MeshFileError, match=r"a.obj: expected the texture map it references at .*skin.png, found "
                                            r"nothing there"):
        mio.load_texture(tmp_path / "a.obj")


_EXPORTS = {  # case: (mtllib argument, material file name, material file bytes, where the texture is)
    "windows-separators": ("mats\\m.mtl", "mats/m.mtl", b"newmtl a\nmap_Kd ..\\tex\\t.png\n", "tex/t.png"),
    "absolute-windows-path": ("m.mtl", "m.mtl", b"newmtl a\nmap_Kd C:\\Users\\me\\scan\\t.png\n", "t.png"),
    "mtllib-with-a-space": ("my mat.mtl", "my mat.mtl", b"newmtl a\nmap_Kd t.png\n", "t.png"),
    "first-mtllib-missing": ("gone.mtl m.mtl", "m.mtl", b"newmtl a\nmap_Kd t.png\n", "t.png"),
    "latin-1-material": ("m.mtl", "m.mtl", "# Caf\u00e9\nnewmtl a\nmap_Kd t.png\n".encode("latin-1"), "t.png"),
    "quoted-names": ('"m.mtl"', "m.mtl", b'newmtl a\nmap_Kd "my tex.png"\n', "my tex.png"),
    "options-and-a-space": ("m.mtl", "m.mtl", b"newmtl a\nmap_Kd -s 1 1 1 -bm 0.5 -clamp on my tex.png\n",
                            "my tex.png"),
    "trailing-comment": ("m.mtl", "m.mtl", b"newmtl a\nmap_Kd t.png # diffuse\n", "t.png"),
    "lower-case-keywords": ("m.mtl", "m.mtl", b"NEWMTL a\nmap_kd t.png\n", "t.png"),
    "byte-order-mark": ("m.mtl", "m.mtl", b"\xef\xbb\xbfmap_Kd t.png\n", "t.png"),
    "relative-to-the-obj": ("sub/m.mtl", "sub/m.mtl", b"newmtl a\nmap_Kd t.png\n", "t.png"),
    "the-material-most-faces-use": ("m.mtl", "m.mtl", b"newmtl eyes\nmap_Kd eyes.png\nnewmtl skin\nmap_Kd t.png\n",
                                    "t.png"),
}


@pytest.mark.parametrize("case", sorted(_EXPORTS))
def test_texture_file_reads_what_exporters_write(case, tmp_path, make_grid_mesh):
    """Each of these found no texture or another file (a user trial of Blender, 3ds Max and MeshLab styles)."""
    mtllib, mtl_name, mtl, image = _EXPORTS[case]
    mesh = make_grid_mesh(np.random.default_rng(), 3, 3, uv="corner")
    save_mesh(mesh, tmp_path / "base.obj")
    lines = (tmp_path / "base.obj").read_text().splitlines()
    first_face = next(i for i, line in enumerate(lines) if line.startswith("f "))
    if case == "the-material-most-faces-use":  # the first face uses the eyes, the others the skin
        lines[first_face + 1:first_face + 1] = ["usemtl skin"]
        lines.insert(first_face, "usemtl eyes")
    (tmp_path / "m.obj").write_text(f"mtllib {mtllib}\n" + "\n".join(lines) + "\n")
    (tmp_path / mtl_name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / mtl_name).write_bytes(mtl)
    (tmp_path / image).parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng().integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    (tmp_path / image).write_bytes(encode_png(pixels))
    if case == "the-material-most-faces-use":
        (tmp_path / "eyes.png").write_bytes(encode_png(np.zeros((2, 2, 3), np.uint8)))
    found = mio.texture_file(tmp_path / "m.obj")
    assert os.path.samefile(found, tmp_path / image), found
    np.testing.assert_allclose(mio.load_texture(tmp_path / "m.obj"), pixels / 255.0, atol=1e-6)
    assert load_mesh(tmp_path / "m.obj").content_hash() == mesh.content_hash()


def test_a_texture_that_cannot_be_read_names_the_mesh_and_the_image(tmp_path, make_grid_mesh):
    mesh = make_grid_mesh(np.random.default_rng(), 3, 3, uv="corner")
    save_mesh(mesh, tmp_path / "m.obj", texture=np.random.default_rng().random((4, 4, 3)))
    (tmp_path / "m.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(MeshFileError, match=r"m.obj: its texture map .*m.png: expected an image file, could not "
                                            r"decode it"):
        mio.load_texture(tmp_path / "m.obj")
    (tmp_path / "m.png").unlink()
    (tmp_path / "m.png").mkdir()
    with pytest.raises(MeshFileError, match=r"m.obj: expected the texture map it references at .*m.png, found a "
                                            r"folder there"):
        mio.load_texture(tmp_path / "m.obj")


@pytest.mark.parametrize("uv", [None, "corner"])
def test_an_obj_of_save_mesh_cut_at_a_line_end_is_refused_by_its_header(tmp_path, make_grid_mesh, uv):
    """OBJ has no counts of its own: save_mesh's file cut after a face line read as a smaller valid mesh, and
    fit went on with it as a scan."""
    rng = np.random.default_rng()
    mesh = make_grid_mesh(rng, 5, 6, uv=uv)
    path = tmp_path / "m.obj"
    save_mesh(mesh, path)
    lines = path.read_text().splitlines(keepends=True)
    face_lines = [i for i, line in enumerate(lines) if line.startswith("f ")]
    keep = int(rng.integers(face_lines[0] + 1, face_lines[-1]))  # at least one face, not all
    cut = tmp_path / "cut.obj"
    cut.write_text("".join(lines[: keep + 1]))
    found = keep + 1 - face_lines[0]
    with pytest.raises(MeshFileError, match=rf"cut\.obj, line 1: expected the {mesh.num_vertices} vertices and "
                                            rf"{mesh.num_faces} triangles its header comment announces, found "
                                            rf"{mesh.num_vertices} and {found} \(truncated or edited\? if it was "
                                            r"edited on purpose, delete that comment\)$"):
        load_mesh(cut)
    # the whole file, and the cut one without its header, still load
    assert load_mesh(path).num_faces == mesh.num_faces
    cut.write_text("".join(lines[1: keep + 1]))
    assert load_mesh(cut).num_faces == found


@pytest.mark.parametrize("corner, keyword, what", [("1//1", "vn", "normal"), ("1/1", "vt", "texture")])
def test_a_face_referring_to_a_kind_of_line_the_obj_lacks_says_so(tmp_path, corner, keyword, what):
    """'face normal index 1 out of range: expected 1..0' for a file without 'vn' lines."""
    rows = np.random.default_rng().normal(size=(3, 3))
    text = "".join(f"v {x} {y} {z}\n" for x, y, z in rows) + f"f {corner} 2{corner[1:]} 3{corner[1:]}\n"
    path = tmp_path / "m.obj"
    path.write_text(text)
    with pytest.raises(MeshFileError, match=rf"m\.obj, line 4: face {what} index 1: the file has no '{keyword}' "
                                            r"lines for it to refer to$"):
        load_mesh(path)


def test_a_directory_given_as_a_mesh_is_named_a_directory(tmp_path):
    """A folder (even one named like a mesh) read as 'unknown mesh format ... found no extension'."""
    for name in ("faces", "scan.obj"):
        folder = tmp_path / name
        folder.mkdir()
        with pytest.raises(MeshFileError, match=rf"{name}: expected a mesh file \(\.obj, \.off or \.ply\), found a "
                                                r"directory$"):
            load_mesh(folder)


@pytest.mark.parametrize("case", ["uchar colour", "list length", "short coordinate", "negative uchar"])
def test_an_ascii_ply_integer_beyond_its_type_names_its_line(tmp_path, case):
    """An integer beyond its declared type gave 'malformed PLY data: OverflowError: Python integer 300 out of bounds
    for uint8', naming no line, where the other ASCII PLY errors name theirs."""
    head = ["ply", "format ascii 1.0", "element vertex 3", "property short x", "property float y", "property float z",
            "property uchar quality", "element face 1", "property list uchar int vertex_indices", "end_header"]
    rows = ["0 0 0 10", "1 0 0 20", "1 1 0 30", "3 0 1 2"]
    row, value, message = {
        "uchar colour": (1, "1 0 0 300", r"'vertex' row 1 property 'quality': expected values of type uint8 \(0 to 255\), "
                                         r"found 300"),
        "list length": (3, "300 0 1 2", r"'face' row 0 property 'vertex_indices': expected a list length of type "
                                        r"uint8 \(0 to 255\), found 300"),
        "short coordinate": (2, "70000 1 0 30", r"'vertex' row 2 property 'x': expected values of type int16 "
                                                r"\(-32768 to 32767\), found 70000"),
        "negative uchar": (0, "0 0 0 -1", r"'vertex' row 0 property 'quality': expected values of type uint8 \(0 to "
                                          r"255\), found -1"),
    }[case]
    rows[row] = value
    path = tmp_path / "over.ply"
    path.write_text("\n".join(head + rows) + "\n")
    with pytest.raises(MeshFileError, match=rf"over\.ply, line {len(head) + row + 1}: PLY element {message}$"):
        load_mesh(path)
