"""build_hierarchy on the built-in templates: operators, invariants, meta, errors and the cache."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import mesh_decoder
from mesh_decoder.errors import HierarchyError, MeshValidationError
from mesh_decoder.hierarchy import build as build_module
from mesh_decoder.hierarchy.build import build_hierarchy, hierarchy_table
from mesh_decoder.hierarchy.laplacian import scaled_laplacian
from mesh_decoder.hierarchy.spirals import compute_spirals
from mesh_decoder.hierarchy.storage import _canonical_json, _checksum, check_hierarchy, default_cache_dir, load_hierarchy
from mesh_decoder.mesh.container import Mesh
from mesh_decoder.mesh.templates import face_template, head_template, icosphere
from mesh_decoder.mesh.uv import ensure_uv, texel_map


@pytest.fixture(scope="module")
def face():
    return face_template()


@pytest.fixture(scope="module")
def face_hierarchy(face):
    return build_hierarchy(face)  # the defaults: factors (4, 4, 4, 4), spirals of 9, 256 x 256 texels


@pytest.fixture(scope="module")
def small():
    return face_template(600, seed=1)


def fine_vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, f[:, k], n)
    return out


def check_invariants(h, mesh: Mesh) -> None:
    """What every built hierarchy satisfies, checked from first principles."""
    check_hierarchy(h)
    v0 = torch.from_numpy(mesh.vertices).float()
    for l, lvl in enumerate(h.levels):
        assert lvl.vertices.dtype == torch.float32 and lvl.faces.dtype == torch.int64
        V = lvl.num_vertices
        # vertices are the template's, through original_index
        assert torch.equal(lvl.vertices, v0[lvl.original_index])
        Mesh(lvl.vertices.double().numpy(), lvl.faces.numpy()).validate()
        # spirals start at their centre
        assert torch.equal(lvl.spirals[:, 0], torch.arange(V))
        if l == 0:
            continue
        fine, d = h.levels[l - 1], h.down[l - 1]
        assert torch.equal(lvl.vertices, fine.vertices[d])  # exact
        assert torch.equal(lvl.original_index, fine.original_index[d])
        # no coarse face opposes the fine surface, none is degenerate
        fv, ff = fine.vertices.double().numpy(), fine.faces.numpy()
        cf = d.numpy()[lvl.faces.numpy()]  # coarse faces as fine indices
        n = np.cross(fv[cf[:, 1]] - fv[cf[:, 0]], fv[cf[:, 2]] - fv[cf[:, 0]])
        ref = fine_vertex_normals(fv, ff)[cf].sum(1)
        assert (np.einsum("ij,ij->i", n, ref) > 0).all()
        # up-sampling: kept vertices exact, the rest on the coarse surface, weights a partition of unity
        ui, uw = h.up_index[l - 1], h.up_weight[l - 1]
        assert (uw >= 0).all() and torch.allclose(uw.sum(1), torch.ones(len(uw)), atol=1e-6)
        assert torch.equal(ui[d], torch.arange(V)[:, None].expand(V, 3))
        up = (lvl.vertices.double()[ui] * uw.double()[..., None]).sum(1)  # (V_fine, 3)
        assert torch.equal(up[d].float(), fine.vertices[d])
        faces = {tuple(x) for x in lvl.faces.tolist()}
        rest = np.setdiff1d(np.arange(fine.num_vertices), d.numpy())
        assert all(tuple(x) in faces for x in ui[rest].tolist())


def test_face_template_defaults(face, face_hierarchy):
    h = face_hierarchy
    assert h.sizes == [5023, 1256, 314, 79, 20]
    check_invariants(h, face)
    assert h.meta == {
        "template_hash": face.content_hash(),
        "factors": [4, 4, 4, 4],
        "sizes": [5023, 1256, 314, 79, 20],
        "spiral_lengths": [9] * 5,
        "dilations": [1] * 5,
        "texture_size": [256, 256],
        "uv_hash": face.uv_hash(),
        "format_version": 1,
        "library_version": mesh_decoder.__version__,
    }
    assert h.template_hash == face.content_hash()
    # the operators are the functions' own results
    for lvl in h.levels:
        f = lvl.faces.numpy()
        np.testing.assert_array_equal(
            lvl.spirals.numpy(), compute_spirals(lvl.vertices.double().numpy(), f, 9, 1)
        )
        index, weight = scaled_laplacian(f, lvl.num_vertices)
        assert torch.equal(lvl.laplacian_index, index) and torch.equal(lvl.laplacian_weight, weight)
    tm = texel_map(ensure_uv(face), 256)
    assert h.texel_map.size == (256, 256)
    assert torch.equal(h.texel_map.index, tm.index) and torch.equal(h.texel_map.mask, tm.mask)
    torch.testing.assert_close(h.texel_map.weight, tm.weight.float())
    # up-sampling the coarse level reproduces the template to within a fraction of an edge
    up = (h.levels[1].vertices[h.up_index[0]] * h.up_weight[0][..., None]).sum(1)
    edge = (h.levels[0].vertices[h.levels[0].faces[:, 0]] - h.levels[0].vertices[h.levels[0].faces[:, 1]]).norm(dim=1)
    assert (up - h.levels[0].vertices).norm(dim=1).mean() < 0.5 * edge.mean()


def test_hierarchy_table(face, face_hierarchy):
    rows = hierarchy_table(face_hierarchy)
    assert [r["vertices"] for r in rows] == [5023, 1256, 314, 79, 20]
    for r, lvl in zip(rows, face_hierarchy.levels):
        m = Mesh(lvl.vertices.double().numpy(), lvl.faces.numpy())
        assert r["faces"] == m.num_faces
        assert r["boundary_vertices"] == len(m.boundary_vertices()) > 0
        assert r["padded_spirals"] == sum(int(lvl.num_vertices in row) for row in lvl.spirals.tolist())
        assert (r["spiral_length"], r["dilation"]) == (9, 1)
    assert set(rows[0]) == {"level", "vertices", "faces", "spiral_length", "dilation", "boundary_vertices",
                            "padded_spirals"}


def test_hierarchy_table_counts_padded_spirals(small):
    h = build_hierarchy(small, factors=(4, 4), spiral_lengths=(9, 9, 40), texture_size=None)
    rows = hierarchy_table(h)
    assert rows[2]["vertices"] == 38 and rows[2]["padded_spirals"] == 38  # 40 > 38 vertices: all padded
    assert rows[2]["spiral_length"] == 40


def test_head_template_with_per_level_parameters():
    head = head_template(2000, seed=2)
    h = build_hierarchy(head, factors=(4, 3, 2), spiral_lengths=(12, 9, 9, 5), dilations=(2, 1, 1, 1),
                        texture_size=(32, 64))
    assert h.sizes == [2000, 500, 167, 84]
    assert [l.spiral_length for l in h.levels] == [12, 9, 9, 5]
    assert [l.dilation for l in h.levels] == [2, 1, 1, 1]
    assert h.levels[0].spirals.shape == (2000, 12)
    assert h.texel_map.size == (32, 64)
    check_invariants(h, head)


def test_icosphere_and_two_components():
    sphere = icosphere(3)
    h = build_hierarchy(sphere, factors=(4, 4, 4), texture_size=None)
    assert h.sizes == [642, 161, 41, 11] and h.texel_map is None
    check_invariants(h, sphere)
    assert all(row["boundary_vertices"] == 0 for row in hierarchy_table(h))

    a, b = icosphere(3, radius=1.0), face_template(600, seed=5)
    both = Mesh(np.concatenate([a.vertices + [500.0, 0, 0], b.vertices]),
                np.concatenate([a.faces, b.faces + a.num_vertices]))
    h = build_hierarchy(both, factors=(4, 4), texture_size=None)
    check_invariants(h, both)
    in_a = [lvl.original_index < a.num_vertices for lvl in h.levels]
    for l in range(2):
        # up-sampling never mixes the components
        assert torch.equal(in_a[l + 1][h.up_index[l]].all(1), in_a[l])
        assert torch.equal(in_a[l + 1][h.up_index[l]].any(1), in_a[l])
    for l, lvl in enumerate(h.levels):
        s = lvl.spirals
        comp = torch.cat([in_a[l], torch.tensor([False])])  # the pad index belongs to neither
        valid = s < lvl.num_vertices
        assert torch.equal((comp[s] == comp[s[:, :1]]) | ~valid, torch.ones_like(valid))


def torus(n: int = 40, m: int = 20) -> Mesh:
    """A genus-1 surface without UVs, outward CCW faces."""
    u, v = np.meshgrid(np.arange(n) * 2 * np.pi / n, np.arange(m) * 2 * np.pi / m, indexing="ij")
    pts = np.stack([(3 + np.cos(v)) * np.cos(u), (3 + np.cos(v)) * np.sin(u), np.sin(v)], -1).reshape(-1, 3)
    a = np.arange(n * m).reshape(n, m)
    b, c = np.roll(a, -1, 0), np.roll(a, -1, 1)
    d = np.roll(b, -1, 1)
    faces = np.concatenate([np.stack([a, d, b], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return Mesh(pts, faces).validate()


def test_torus_and_a_clear_error_when_automatic_uvs_fail():
    mesh = torus()
    h = build_hierarchy(mesh, factors=(4, 4), texture_size=None)
    assert h.sizes == [800, 200, 50]
    check_invariants(h, mesh)
    with pytest.raises(MeshValidationError, match=r"texel map of the template: .*texture_size=None"):
        build_hierarchy(mesh, factors=(4, 4), texture_size=32)
    with pytest.raises(HierarchyError, match="cannot decimate 50 -> 4 vertices") as caught:
        build_hierarchy(mesh, factors=(4, 4, 12.5), texture_size=None)  # a torus needs at least 7 vertices
    # which level failed, so that the user need not work it out from the sizes
    assert str(caught.value).endswith(" (level 3 of the level sizes [800, 200, 50, 4])"), caught.value


def test_bad_input(small):
    with pytest.raises(TypeError, match="expected a mesh_decoder Mesh"):
        build_hierarchy(small.vertices)
    bad = small.copy()
    bad.vertices[7, 2] = np.nan
    with pytest.raises(MeshValidationError, match="finite"):
        build_hierarchy(bad, texture_size=None)
    dup = small.copy(faces=np.concatenate([small.faces, small.faces[:1, [1, 0, 2]]]), uv=None, uv_faces=None)
    with pytest.raises(MeshValidationError):
        build_hierarchy(dup, texture_size=None)
    with pytest.raises(HierarchyError, match=r"leave 3 vertices at level 4 \(sizes \[600, 150, 38, 10, 3\]\)"):
        build_hierarchy(small, factors=(4, 4, 4, 4, 4), texture_size=None)
    with pytest.raises(ValueError, match=r"spiral_lengths: expected 5 values"):
        build_hierarchy(small, spiral_lengths=(9, 9), texture_size=None)
    with pytest.raises(ValueError, match=r"dilations\[1\]: expected an int >= 1"):
        build_hierarchy(small, factors=(4,), dilations=(1, 0), texture_size=None)
    with pytest.raises(TypeError, match="texture_size"):
        build_hierarchy(small, texture_size=(16, 16, 3))
    # a huge texel map was built until the memory ran out and the process was killed
    with pytest.raises(ValueError, match=r"texture_size: expected at most 8192 texels per side, got \(16, 1000000\)"):
        build_hierarchy(small, texture_size=(16, 1_000_000))
    with pytest.raises(TypeError, match="cache_dir"):
        build_hierarchy(small, cache_dir=3)


def test_positions_beyond_float32_are_refused(small):
    """The hierarchy stores float32 positions: 1e39 became infinity, silently, in a returned hierarchy."""
    huge = small.copy(vertices=small.vertices * 1e37)  # |v| up to ~1e39
    with pytest.raises(MeshValidationError, match=r"vertices: expected magnitudes float32 can hold .* got 1\.\d+e\+39"):
        build_hierarchy(huge, factors=(), texture_size=None)
    large = small.copy(vertices=small.vertices * 1e35)  # still within float32
    h = build_hierarchy(large, factors=(), texture_size=None)
    assert torch.isfinite(h.levels[0].vertices).all()


def test_bowtie_is_rejected(small):
    # glue a second copy of the mesh to the first at one boundary vertex
    b = small.boundary_vertices()
    shift = small.num_vertices
    f2 = small.faces + shift
    f2[f2 == b[0] + shift] = b[0]
    v = np.concatenate([small.vertices, small.vertices + [300.0, 0, 0]])
    keep = np.setdiff1d(np.arange(len(v)), [b[0] + shift])
    remap = np.full(len(v), -1)
    remap[keep] = np.arange(len(keep))
    mesh = Mesh(v[keep], remap[np.concatenate([small.faces, f2])])
    with pytest.raises(MeshValidationError, match=f"non-manifold vertex {b[0]}"):
        build_hierarchy(mesh, texture_size=None)


def test_timings(small, monkeypatch):
    """Every stage is timed with the module's clock, and repeated stages add up."""
    step = float(np.random.default_rng().uniform(0.5, 2.0))  # a fake clock: each reading is `step` later
    readings = []

    def fake_perf_counter():
        readings.append(len(readings) * step)
        return readings[-1]

    monkeypatch.setattr(build_module, "time", SimpleNamespace(perf_counter=fake_perf_counter))
    timings: dict = {}
    h = build_hierarchy(small, factors=(4, 4), texture_size=16, timings=timings)
    levels = len(h.levels)
    assert levels == 3
    # blocks per stage: validate and texel_map once, decimate/operators per coarser level, the rest per level
    blocks = {"validate": 1, "decimate": levels - 1, "operators": levels - 1, "spirals": levels,
              "laplacian": levels, "texel_map": 1}  # fmt: skip
    assert timings == pytest.approx({stage: n * step for stage, n in blocks.items()})
    assert len(readings) == 2 * sum(blocks.values())  # one start and one end reading per block


# ----------------------------------------------------------------------------- cache
PARAMS = dict(factors=(4, 4), texture_size=16)


@pytest.fixture
def counting(monkeypatch):
    """Counts decimation calls; ``counting.fail = True`` makes them raise."""
    real = build_module.decimate_mesh

    class Counter:
        calls = 0
        fail = False

    def wrapper(*args, **kwargs):
        if Counter.fail:
            raise RuntimeError("decimation must not run: the cache should be used")
        Counter.calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(build_module, "decimate_mesh", wrapper)
    return Counter


def same(a, b) -> bool:
    return a.meta == b.meta and all(
        torch.equal(x.vertices, y.vertices) and torch.equal(x.spirals, y.spirals) for x, y in zip(a.levels, b.levels)
    ) and all(torch.equal(x, y) for x, y in zip(a.up_weight, b.up_weight))


def test_cache_hit_is_a_load(small, tmp_path, counting):
    first = build_hierarchy(small, cache_dir=tmp_path, **PARAMS)
    assert counting.calls == 2
    files = list(tmp_path.glob("hierarchy-*.npz"))
    assert len(files) == 1 and same(load_hierarchy(files[0], small), first)
    counting.fail = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = build_hierarchy(small, cache_dir=str(tmp_path), **PARAMS)
    assert same(first, second)
    # other parameters or another template: another key
    counting.fail = False
    build_hierarchy(small, cache_dir=tmp_path, factors=(4, 4), spiral_lengths=5, texture_size=16)
    build_hierarchy(small.copy(vertices=small.vertices * 1.01), cache_dir=tmp_path, **PARAMS)
    assert counting.calls == 6 and len(list(tmp_path.glob("hierarchy-*.npz"))) == 3


def test_templates_of_one_hash_build_one_hierarchy(tmp_path):
    """A template saved to a file and read back (positions rounded to float32) keeps its hash, and so its cache
    key, but decimation told the two apart below float32's precision: the same config built another hierarchy
    (up-sampling weights off by 0.01) depending on which of them had filled the cache."""
    from mesh_decoder.mesh.io import load_mesh, save_mesh

    template = face_template(800, seed=2)
    save_mesh(template, tmp_path / "template.obj")
    read_back = load_mesh(tmp_path / "template.obj")
    assert read_back.content_hash() == template.content_hash()
    assert not np.array_equal(read_back.vertices, template.vertices)
    params = dict(factors=(4, 4, 4), spiral_lengths=9, texture_size=32)
    a, b = build_hierarchy(template, **params), build_hierarchy(read_back, **params)
    assert same(a, b) and all(torch.equal(x, y) for x, y in zip(a.up_index, b.up_index))
    assert torch.equal(a.texel_map.weight, b.texel_map.weight) and torch.equal(a.texel_map.index, b.texel_map.index)


def test_a_cache_filled_by_an_earlier_build_revision_is_not_read(small, tmp_path):
    """Files cached before the build changed its operators (keyed by the parameters alone) are left alone."""
    from dataclasses import replace

    import hashlib

    from mesh_decoder.hierarchy.storage import cache_file, save_hierarchy

    fresh = build_hierarchy(small, **PARAMS)
    earlier = replace(fresh, levels=[replace(l, vertices=l.vertices * 2) for l in fresh.levels])
    revision_1 = hashlib.sha256(_canonical_json(fresh.meta).encode("utf-8")).hexdigest()  # the parameters alone
    save_hierarchy(earlier, cache_file(tmp_path, revision_1))
    assert same(build_hierarchy(small, cache_dir=tmp_path, **PARAMS), fresh)
    assert len(list(tmp_path.glob("hierarchy-*.npz"))) == 2
    assert same(build_hierarchy(small, cache_dir=tmp_path, revision=1, **PARAMS), earlier)  # its own files, read
    assert not same(build_hierarchy(small, revision=1, **PARAMS), fresh)  # the float64 positions: other operators
    with pytest.raises(ValueError, match="revision: expected an integer in \\[1, 2\\], got 3"):
        build_hierarchy(small, revision=3, **PARAMS)


@pytest.mark.parametrize("uvs", ["other", "automatic"])
def test_cache_key_covers_the_uvs(small, tmp_path, uvs):
    """Same geometry, other UVs: another texel map, so another cache entry (never the first map)."""
    other = small.copy(uv=small.uv[:, ::-1].copy()) if uvs == "other" else small.copy(uv=None, uv_faces=None)
    assert other.content_hash() == small.content_hash() and other.uv_hash() != small.uv_hash()
    first = build_hierarchy(small, cache_dir=tmp_path, **PARAMS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached = build_hierarchy(other, cache_dir=tmp_path, **PARAMS)
    fresh = build_hierarchy(other, cache_dir=None, **PARAMS)
    assert not torch.equal(first.texel_map.face, fresh.texel_map.face)
    assert torch.equal(cached.texel_map.face, fresh.texel_map.face)
    assert len(list(tmp_path.glob("hierarchy-*.npz"))) == 2
    # without a texel map the UVs do not matter: one entry serves both
    no_tex = dict(PARAMS, texture_size=None)
    assert same(build_hierarchy(small, cache_dir=tmp_path, **no_tex), build_hierarchy(other, cache_dir=tmp_path, **no_tex))
    assert len(list(tmp_path.glob("hierarchy-*.npz"))) == 3


@pytest.mark.parametrize("damage", ["flip", "truncate", "other_params", "other_template", "garbage", "byte_order"])
def test_bad_cache_file_warns_and_rebuilds(small, tmp_path, counting, damage):
    good = build_hierarchy(small, cache_dir=tmp_path, **PARAMS)
    (path,) = tmp_path.glob("hierarchy-*.npz")
    data = path.read_bytes()
    if damage == "flip":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x10
        path.write_bytes(bytes(b))
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        path.write_bytes(b"\0" * 100)
    elif damage == "byte_order":  # valid checksum, but an array torch cannot take
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        document = json.loads(str(arrays.pop("meta_json")[()]))
        arrays["level0/vertices"] = arrays["level0/vertices"].astype(">f4")
        document["checksum"] = _checksum(arrays, document)
        with open(path, "wb") as fh:
            np.savez(fh, meta_json=np.array(_canonical_json(document)), **arrays)
    else:
        other_dir = tmp_path / "other"
        if damage == "other_params":
            build_hierarchy(small, cache_dir=other_dir, factors=(4, 2), texture_size=16)
        else:
            build_hierarchy(face_template(600, seed=2), cache_dir=other_dir, **PARAMS)
        (other,) = other_dir.glob("hierarchy-*.npz")
        path.write_bytes(other.read_bytes())  # a valid file under the wrong key
    calls = counting.calls
    expected = {"flip": "", "truncate": "not a readable", "garbage": "not a .npz archive",
                "other_params": "parameters differ", "other_template": "another template",
                "byte_order": "native-byte-order"}[damage]
    with pytest.warns(RuntimeWarning, match=f"ignoring the hierarchy cache file.*{expected}"):
        rebuilt = build_hierarchy(small, cache_dir=tmp_path, **PARAMS)
    assert counting.calls == calls + 2  # rebuilt, never a silently wrong hierarchy
    assert same(rebuilt, good)
    assert same(load_hierarchy(path, small), good)  # and the cache file repaired


def test_default_cache_dir(small, tmp_path, monkeypatch, counting):
    monkeypatch.setenv("MESH_DECODER_CACHE", str(tmp_path / "env_cache"))
    assert default_cache_dir() == tmp_path / "env_cache"
    build_hierarchy(small, cache_dir=True, **PARAMS)
    assert len(list((tmp_path / "env_cache").glob("hierarchy-*.npz"))) == 1
    build_hierarchy(small, cache_dir=None, **PARAMS)  # no cache unless asked
    build_hierarchy(small, cache_dir=False, **PARAMS)
    assert len(list((tmp_path / "env_cache").iterdir())) == 1
    monkeypatch.delenv("MESH_DECODER_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "mesh_decoder"


def test_unwritable_cache_dir_warns(small, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.warns(RuntimeWarning, match="could not write the hierarchy cache file"):
        h = build_hierarchy(small, cache_dir=blocker / "cache", **PARAMS)
    assert h.sizes == [600, 150, 38]


def test_wrong_types_of_timings_and_table_argument_are_named():
    mesh = face_template(500, seed=4)
    with pytest.raises(TypeError, match="timings: expected None or a dict to add the stage times to, got list"):
        build_hierarchy(mesh, factors=(4,), texture_size=None, timings=[])
    timings = {}
    build_hierarchy(mesh, factors=(4,), texture_size=None, timings=timings)
    assert timings["spirals"] > 0
    with pytest.raises(TypeError, match="h: expected a MeshHierarchy, got Mesh"):
        hierarchy_table(mesh)


def _mirrored_uv_face() -> Mesh:
    """The 500-vertex face with its right half's UVs mirrored onto its left half, as atlases that share
    texture between the two sides of a face lay them out (the islands overlap)."""
    face = face_template(500)
    uv = face.uv.copy()
    uv[:, 0] = 0.5 - np.abs(uv[:, 0] - 0.5)
    return face.copy(uv=uv)


def test_mirrored_uvs_build_with_allow_uv_overlap_and_the_error_names_that_argument(tmp_path):
    """The overlap error said 'pass allow_overlap=True', an argument build_hierarchy did not take."""
    from mesh_decoder.errors import UVOverlapError
    from mesh_decoder.hierarchy import save_hierarchy

    mesh = _mirrored_uv_face()
    with pytest.raises(UVOverlapError, match=r"^texel map of the template: UV triangles of faces \d+ and \d+ overlap: "
                                             r".*; fix the UVs, pass allow_uv_overlap=True \(the lowest face colours "
                                             r"a shared texel\) or build without a texel map: texture_size=None$"):
        build_hierarchy(mesh, factors=(4, 4), texture_size=32)
    h = build_hierarchy(mesh, factors=(4, 4), texture_size=32, allow_uv_overlap=True)
    assert h.meta["allow_uv_overlap"] is True
    expected = texel_map(mesh, 32, allow_overlap=True)
    assert torch.equal(h.texel_map.face, expected.face) and torch.equal(h.texel_map.index, expected.index)
    check_hierarchy(load_hierarchy(save_hierarchy(h, tmp_path / "h.npz")))
    # without a texel map, or without overlaps, the option leaves the hierarchy (and its cache key) as it was
    assert "allow_uv_overlap" not in build_hierarchy(mesh, factors=(4, 4), texture_size=None,
                                                     allow_uv_overlap=True).meta
    plain = face_template(500)
    assert build_hierarchy(plain, factors=(4, 4), texture_size=16).meta.keys() == \
        (build_hierarchy(plain, factors=(4, 4), texture_size=16, allow_uv_overlap=False).meta.keys())
    with pytest.raises(TypeError, match="allow_uv_overlap: expected True or False"):
        build_hierarchy(plain, factors=(4, 4), texture_size=16, allow_uv_overlap="yes")


def test_an_unwelded_seam_is_warned_about_and_zero_area_faces_are_named(small):
    """A template with coincident vertices built into disconnected halves without a word; one with zero-area faces
    failed to decimate with a hint to change the factors, which no factor fixes."""
    V = small.num_vertices
    twice = Mesh(np.vstack([small.vertices, small.vertices]), np.vstack([small.faces, small.faces + V]))
    with pytest.warns(RuntimeWarning, match=rf"{2 * V} vertices of the template share their exact position with "
                                            r"a vertex of another connected component \(first: vertex 0\).* "
                                            r"the mesh has 2 components"):
        build_hierarchy(twice, factors=(2,), texture_size=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_hierarchy(small, factors=(2,), texture_size=None)  # a welded template: no warning
    rng = np.random.default_rng()
    f = int(rng.integers(small.num_faces))
    vertices = small.vertices.copy()
    vertices[small.faces[f]] = vertices[small.faces[f, 0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its 3 coincident corners are in one component: no seam
        with pytest.raises(HierarchyError, match=r"the mesh itself has \d+ faces? of \(near\) zero area \(first: face "
                                                 r"\d+, vertices \[.*\], 0-based\), which no decimation removes"):
            build_hierarchy(small.copy(vertices=vertices), factors=(1.1,), texture_size=None)


def test_an_unwritable_cache_names_its_file_once(small, tmp_path):
    """The warning printed the cache file's path twice (once of its own, once in the error text)."""
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match=r"could not write the hierarchy cache file") as caught:
        build_hierarchy(small, factors=(2,), texture_size=None, cache_dir=blocker / "cache")
    text = str(caught[0].message)
    assert text.count(str(blocker / "cache")) == 1, text


def test_texture_size_zero_means_none_as_on_the_command_line(small):
    """hierarchy --texture-size 0 and a config's texture_size: 0 mean no texel map; build_hierarchy refused 0."""
    h = build_hierarchy(small, factors=(2,), texture_size=0)
    assert h.texel_map is None and h.meta["texture_size"] is None
    with pytest.raises(ValueError, match=r"texture_size: expected positive sizes, got \(0, 16\)"):
        build_hierarchy(small, factors=(2,), texture_size=(0, 16))
