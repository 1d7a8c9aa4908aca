"""Property tests of the mesh readers on random, truncated and mutated files.

Every case must either load as a mesh that passes ``validate()`` or raise
:class:`MeshFileError` naming the file, never another exception type and never
a large allocation. Where the bulk OBJ/OFF paths accept a file, the careful
line-by-line readers must agree.
The number of cases tried is reported at the end of the run (see
``tests/conftest.py``), and the last test checks that a full run tried at
least 1,000.
"""

from __future__ import annotations

import re

import numpy as np
import plyfile
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mesh_decoder.mesh.io as mio
from mesh_decoder.errors import MeshFileError
from mesh_decoder.mesh import Mesh, load_mesh, save_mesh

#: test name -> examples per run; a full run of this module tries their sum.
FUZZ_EXAMPLES = {
    "test_fuzz_obj": 250,
    "test_fuzz_off": 180,
    "test_fuzz_ply_ascii": 180,
    "test_fuzz_ply_binary": 220,
    "test_fuzz_random_bytes": 150,
    "test_fuzz_huge_counts": 100,
}
MIN_CASES = 1000


def fuzz_settings(name):
    return settings(
        max_examples=FUZZ_EXAMPLES[name],
        deadline=None,  # no per-case time limit: shared machines are noisy
        derandomize=False,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


NASTY_TOKENS = [
    b"nan", b"inf", b"-inf", b"1e999", b"-1", b"0", b"-0", b"1.5", b"abc", b"", b"3",
    b"99999999999999999999", b"-99999999999", b"2147483648", b"4294967296", b"1000000000000",
    b"1/", b"//", b"/1", b"3/4/5/6", b"1//2", b"#", b"landmark", b"\xff\xfe", b"\x00",
    b"f", b"v", b"vt", b"vn", b"l", b"OFF", b"COFF", b"ply", b"end_header", b"element",
    b"property", b"list", b"uchar", b"double", b"vertex", b"face", b"texcoord", b"red",
    "\u00b2".encode(), "\u0663".encode(), "\u00a0".encode(), b"1_0", b"0x10", b"+3", b"\x1c", b"\r",
]  # fmt: skip

EXTRA_BASES = {
    "obj": [
        b"v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 2 0 0\nvt 0 0\nvt 1 0\nvt 1 1\n"
        b"f 1/1 2/2 3/3 4/1\nf -4/-3 -1/-2 -3/-1\n# landmark a 2\n",
        b"o x\ng y\nv 0 0 0\nv 1 0 0\nv 0 1 0\nvn 0 0 1\ns 1\nusemtl m\nf 1//1 2//1 3//1\r\n",
    ],
    "off": [
        b"OFF\n# c\n5 2 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n2 0 0\n4 0 1 2 3\n3 1 0 4\n",
        b"COFF 3 1 0\n0 0 0 255 0 0\n1 0 0 0 255 0 1\n0 1 0 0 0 255\n3 0 1 2\n",
    ],
    "ply": [
        b"ply\nformat ascii 1.0\ncomment landmark x 1\nelement vertex 4\nproperty float x\nproperty float y\n"
        b"property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
        b"element face 1\nproperty list uchar int vertex_indices\nproperty list uchar float texcoord\n"
        b"end_header\n0 0 0 255 0 0\n1 0 0 0 255 0\n1 1 0 0 0 255\n0 1 0 9 9 9\n4 0 1 2 3 8 0 0 1 0 1 1 0 1\n",
    ],
}


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mesh_io_fuzz")


def check_load(path, name, counter):
    """Load ``path``: a valid mesh or MeshFileError naming the file; anything else fails the test."""
    counter[name] = counter.get(name, 0) + 1
    try:
        mesh = load_mesh(path)
    except MeshFileError as exc:
        assert exc.path == str(path) and str(exc).startswith(str(path))
        return None
    assert isinstance(mesh, Mesh)
    mesh.validate()
    ext = path.suffix.lower()
    if ext in (".obj", ".off"):  # the careful reader agrees with whatever path loaded it
        careful = mio._read_obj_careful if ext == ".obj" else mio._read_off_careful
        parts = careful(str(path), mio._text_lines(str(path), path.read_bytes()))
        assert np.array_equal(parts.vertices, mesh.vertices) and np.array_equal(parts.faces, mesh.faces)
        assert (parts.colors is None) == (mesh.colors is None)
        if parts.colors is not None:
            assert np.array_equal(parts.colors, mesh.colors)
        if parts.uv is not None:
            assert np.array_equal(parts.uv[parts.uv_faces], mesh.uv[mesh.uv_faces])
        assert {k: v[0] for k, v in parts.landmarks.items()} == mesh.landmarks
    return mesh


@st.composite
def base_file(draw, make_grid_mesh, fuzz_dir, ext, binary=None):
    """A valid file: a random grid mesh saved by save_mesh, or one of the hand-written extras."""
    if draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from(EXTRA_BASES[ext]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    uv = None if ext == "off" else draw(st.sampled_from([None, "vertex", "corner"]))
    mesh = make_grid_mesh(
        rng, draw(st.integers(2, 4)), draw(st.integers(2, 4)),
        colors=draw(st.booleans()), uv=uv, landmarks=draw(st.integers(0, 2)),
    )
    path = fuzz_dir / f"base.{ext}"
    save_mesh(mesh, path, binary=binary)
    return path.read_bytes()


@st.composite
def mutated(draw, content: bytes):
    """Apply 0-3 random mutations: truncation, byte flips, insertions, token and line edits."""
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "token", "line"]))
        n = len(content)
        pos = draw(st.integers(0, n))
        if kind == "truncate":
            content = content[:pos]
        elif kind == "flip" and n:
            pos = min(pos, n - 1)
            content = content[:pos] + bytes([draw(st.integers(0, 255))]) + content[pos + 1 :]
        elif kind == "insert":
            content = content[:pos] + draw(st.binary(min_size=1, max_size=8)) + content[pos:]
        elif kind == "delete":
            content = content[:pos] + content[pos + draw(st.integers(1, 16)) :]
        elif kind == "token":
            spans = [m.span() for m in re.finditer(rb"[^\s]+", content)]
            if spans:  # half the time one of the first tokens: headers and counts
                k = draw(st.one_of(st.integers(0, min(9, len(spans) - 1)), st.integers(0, len(spans) - 1)))
                a, b = spans[k]
                content = content[:a] + draw(st.sampled_from(NASTY_TOKENS)) + content[b:]
        elif kind == "line":
            lines = content.split(b"\n")
            i, j = (draw(st.integers(0, len(lines) - 1)) for _ in range(2))
            op = draw(st.sampled_from(["dup", "del", "swap"]))
            if op == "dup":
                lines.insert(i, lines[j])
            elif op == "del":
                del lines[i]
            else:
                lines[i], lines[j] = lines[j], lines[i]
            content = b"\n".join(lines)
    return content


def _run_format(data, make_grid_mesh, fuzz_dir, counter, name, ext, binary=None, big_endian=False):
    content = data.draw(base_file(make_grid_mesh, fuzz_dir, ext, binary))
    if big_endian and content.startswith(b"ply\nformat binary_little_endian"):
        ply = plyfile.PlyData.read(fuzz_dir / "base.ply")
        ply.byte_order = ">"
        ply.write(str(fuzz_dir / "be.ply"))
        content = (fuzz_dir / "be.ply").read_bytes()
    content = data.draw(mutated(content))
    path = fuzz_dir / f"{name}.{ext}"
    path.write_bytes(content)
    check_load(path, name, counter)


@fuzz_settings("test_fuzz_obj")
@given(data=st.data())
def test_fuzz_obj(data, make_grid_mesh, fuzz_dir, mesh_io_fuzz_counter):
    _run_format(data, make_grid_mesh, fuzz_dir, mesh_io_fuzz_counter, "test_fuzz_obj", "obj")


@fuzz_settings("test_fuzz_off")
@given(data=st.data())
def test_fuzz_off(data, make_grid_mesh, fuzz_dir, mesh_io_fuzz_counter):
    _run_format(data, make_grid_mesh, fuzz_dir, mesh_io_fuzz_counter, "test_fuzz_off", "off")


@fuzz_settings("test_fuzz_ply_ascii")
@given(data=st.data())
def test_fuzz_ply_ascii(data, make_grid_mesh, fuzz_dir, mesh_io_fuzz_counter):
    _run_format(data, make_grid_mesh, fuzz_dir, mesh_io_fuzz_counter, "test_fuzz_ply_ascii", "ply", binary=False)


@fuzz_settings("test_fuzz_ply_binary")
@given(data=st.data(), big_endian=st.booleans())
def test_fuzz_ply_binary(data, big_endian, make_grid_mesh, fuzz_dir, mesh_io_fuzz_counter):
    _run_format(
        data, make_grid_mesh, fuzz_dir, mesh_io_fuzz_counter, "test_fuzz_ply_binary", "ply",
        binary=True, big_endian=big_endian,
    )


PREFIXES = [
    b"",
    b"v ",
    b"OFF\n",
    b"COFF\n3 1 0\n",
    b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
    b"element face 1\nproperty list uchar int vertex_indices\nend_header\n",
    b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
    b"property float z\nelement face 1\nproperty list uint int vertex_indices\nend_header\n",
    b"ply\nformat binary_big_endian 1.0\nelement vertex 3\nproperty double x\nproperty double y\n"
    b"property double z\nelement face 2\nproperty list uchar uint vertex_indices\nend_header\n",
]


@fuzz_settings("test_fuzz_random_bytes")
@given(ext=st.sampled_from(["obj", "off", "ply", "OBJ"]), prefix=st.sampled_from(PREFIXES),
       body=st.one_of(st.binary(max_size=600), st.text(max_size=200).map(str.encode)))
def test_fuzz_random_bytes(ext, prefix, body, fuzz_dir, mesh_io_fuzz_counter):
    path = fuzz_dir / f"random.{ext}"
    path.write_bytes(prefix + body)
    check_load(path, "test_fuzz_random_bytes", mesh_io_fuzz_counter)


@fuzz_settings("test_fuzz_huge_counts")
@given(
    data=st.data(),
    ext=st.sampled_from(["off", "ply-ascii", "ply-binary"]),
    count=st.one_of(st.integers(10**6, 10**20), st.sampled_from([2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**64])),
)
def test_fuzz_huge_counts(data, ext, count, make_grid_mesh, fuzz_dir, mesh_io_fuzz_counter):
    """A corrupt count fails fast with MeshFileError: no allocation proportional to the count."""
    fmt, _, kind = ext.partition("-")
    content = data.draw(base_file(make_grid_mesh, fuzz_dir, fmt, binary=None if not kind else kind == "binary"))
    if fmt == "off":
        lines = content.split(b"\n")
        records = [k for k, line in enumerate(lines) if line.split() and not line.startswith(b"#")]
        header = lines[records[0]].split()
        i, first = (records[0], 1) if len(header) > 1 else (records[1], 0)  # counts on the header line or the next
        fields = lines[i].split()
        fields[first + data.draw(st.integers(0, 1))] = str(count).encode()
        lines[i] = b" ".join(fields)
        content = b"\n".join(lines)
    else:
        spans = [m.span(1) for m in re.finditer(rb"element \w+ (\d+)", content)]
        if not spans:
            return
        a, b = spans[data.draw(st.integers(0, len(spans) - 1))]
        content = content[:a] + str(count).encode() + content[b:]
    path = fuzz_dir / f"huge.{fmt}"
    path.write_bytes(content)
    assert check_load(path, "test_fuzz_huge_counts", mesh_io_fuzz_counter) is None


def test_fuzz_total_cases(mesh_io_fuzz_counter):
    """A full run of this module tries at least MIN_CASES files (reported in the terminal summary)."""
    ran = set(mesh_io_fuzz_counter)
    if not ran >= set(FUZZ_EXAMPLES):
        pytest.skip(f"only part of the fuzz module ran ({sorted(ran)})")
    total = sum(mesh_io_fuzz_counter[name] for name in FUZZ_EXAMPLES)
    assert total >= MIN_CASES, f"mesh I/O fuzz tried {total} cases, expected at least {MIN_CASES}"
