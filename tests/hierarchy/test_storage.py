"""Hierarchy files: round trip, schema, every kind of damage detected, no openmesh, crash safety."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mesh_decoder.errors import HierarchyError
from mesh_decoder.hierarchy import build as build_module
from mesh_decoder.hierarchy.build import build_hierarchy
from mesh_decoder.hierarchy.container import MeshHierarchy
from mesh_decoder.hierarchy.storage import (
    FORMAT_VERSION,
    _canonical_json,
    _checksum,
    cache_file,
    cache_key,
    check_hierarchy,
    load_hierarchy,
    save_hierarchy,
)
from mesh_decoder.mesh.templates import face_template, icosphere

PARAMS = dict(factors=(4, 4), spiral_lengths=(9, 7, 5), dilations=(1, 2, 1), texture_size=(16, 24))


@pytest.fixture(scope="module")
def template():
    return face_template(500, seed=3)


@pytest.fixture(scope="module")
def hierarchy(template):
    return build_hierarchy(template, **PARAMS)


def assert_same(a: MeshHierarchy, b: MeshHierarchy) -> None:
    assert a.meta == b.meta
    assert len(a.levels) == len(b.levels)
    for la, lb in zip(a.levels, b.levels):
        assert (la.spiral_length, la.dilation) == (lb.spiral_length, lb.dilation)
        for name in ("vertices", "faces", "spirals", "laplacian_index", "laplacian_weight", "original_index"):
            x, y = getattr(la, name), getattr(lb, name)
            assert x.dtype == y.dtype and torch.equal(x, y), name
    for name in ("down", "up_index", "up_weight"):
        for x, y in zip(getattr(a, name), getattr(b, name)):
            assert x.dtype == y.dtype and torch.equal(x, y), name
    assert (a.texel_map is None) == (b.texel_map is None)
    if a.texel_map is not None:
        for name in ("index", "weight", "face", "mask"):
            x, y = getattr(a.texel_map, name), getattr(b.texel_map, name)
            assert x.dtype == y.dtype and torch.equal(x, y), name


def rewrite(path: Path, arrays: dict, document: dict, fix_checksum: bool = True) -> None:
    """Write an archive by hand (bypassing save_hierarchy's checks)."""
    arrays = {k: v for k, v in arrays.items() if k != "meta_json"}
    if fix_checksum:
        document = dict(document, checksum=_checksum(arrays, document))
    with open(path, "wb") as fh:
        np.savez(fh, meta_json=np.array(_canonical_json(document)), **arrays)


def read_raw(path: Path) -> tuple[dict, dict]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(str(arrays["meta_json"][()]))


# ----------------------------------------------------------------------------- round trip
def test_round_trip(hierarchy, template, tmp_path):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    assert path == tmp_path / "h.npz"
    loaded = load_hierarchy(path, expected_template_hash=template.content_hash())
    assert_same(hierarchy, loaded)
    assert_same(hierarchy, load_hierarchy(str(path), expected_template_hash=template))
    assert [tmp_path / "h.npz"] == list(tmp_path.iterdir())  # no temporary file left


def test_round_trip_without_texel_map_and_single_level(template, tmp_path):
    h = build_hierarchy(template, factors=(), texture_size=None)
    assert len(h.levels) == 1 and h.texel_map is None
    assert_same(h, load_hierarchy(save_hierarchy(h, tmp_path / "one.npz")))
    other = build_hierarchy(icosphere(2), factors=(4,), texture_size=None)
    assert_same(other, load_hierarchy(save_hierarchy(other, tmp_path / "ico.npz")))


def test_round_trip_in_half_precision(hierarchy, tmp_path):
    """A hierarchy cast with .to(dtype=...) passes the checks; float16 saves, bfloat16 is refused clearly."""
    half = hierarchy.to(dtype=torch.float16)
    check_hierarchy(half)
    assert_same(half, load_hierarchy(save_hierarchy(half, tmp_path / "half.npz")))
    bf16 = hierarchy.to(dtype=torch.bfloat16)
    check_hierarchy(bf16)
    with pytest.raises(HierarchyError, match=r"bf16\.npz: expected float16, float32 or float64 tensors, got bfloat16"):
        save_hierarchy(bf16, tmp_path / "bf16.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["half.npz"]
    # the looser tolerance is the dtype's rounding, not a licence for wrong weights
    wrong = hierarchy.to(dtype=torch.float16)
    wrong.up_weight[0][0, 0] += 0.05
    with pytest.raises(HierarchyError, match=r"up_weight\[0\]: expected weights summing to 1"):
        check_hierarchy(wrong)


@pytest.mark.parametrize("field", ["laplacian_weight", "texel_weight"])
def test_bfloat16_anywhere_is_refused_naming_the_file(hierarchy, tmp_path, field):
    """Not only vertices and up-sampling weights: every float tensor is checked before writing."""
    h = hierarchy.to()
    if field == "laplacian_weight":
        h.levels[1].laplacian_weight = h.levels[1].laplacian_weight.to(torch.bfloat16)
        name = "level1/laplacian_weight"
    else:
        h.texel_map.weight = h.texel_map.weight.to(torch.bfloat16)
        name = "texel/weight"
    with pytest.raises(HierarchyError, match=rf"bf\.npz: expected float16, float32 or float64 tensors, got bfloat16 \({name}\)"):
        save_hierarchy(h, tmp_path / "bf.npz")
    assert list(tmp_path.iterdir()) == []


def test_weights_that_require_grad_are_checked_without_warnings(hierarchy):
    h = hierarchy.to(torch.float64)
    h.up_weight[0].requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_hierarchy(h)


def test_schema(hierarchy, tmp_path):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    arrays, doc = read_raw(path)  # plain arrays, no pickle needed
    expected = {"meta_json", "down0", "down1", "up0/index", "up0/weight", "up1/index", "up1/weight",
                "texel/index", "texel/weight", "texel/face", "texel/mask"}
    for l in range(3):
        expected |= {f"level{l}/{n}" for n in ("vertices", "faces", "spirals", "laplacian_index",
                                                "laplacian_weight", "original_index")}
    assert set(arrays) == expected
    assert all(a.dtype != object for a in arrays.values())
    assert arrays["level1/vertices"].shape == (125, 3) and arrays["down0"].dtype == np.int64
    assert arrays["texel/index"].shape == (16, 24, 3)
    assert doc["format"] == "mesh_decoder.hierarchy" and doc["format_version"] == FORMAT_VERSION == 1
    assert doc["levels"] == [{"spiral_length": 9, "dilation": 1}, {"spiral_length": 7, "dilation": 2},
                             {"spiral_length": 5, "dilation": 1}]
    assert doc["meta"] == hierarchy.meta and doc["checksum"].startswith("sha256:")


# ----------------------------------------------------------------------------- damage
def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(HierarchyError, match=r"nope\.npz: expected a saved hierarchy \(\.npz\), found nothing at this path"):
        load_hierarchy(tmp_path / "nope.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(np.random.default_rng(0).bytes(1000))
    # numpy calls any file that is neither a zip nor a .npy "pickled (object) data"; the error says what it is
    with pytest.raises(HierarchyError, match=r"junk\.npz: not a \.npz archive \(expected a zip file") as info:
        load_hierarchy(junk)
    assert "pickle" not in str(info.value)
    with pytest.raises(HierarchyError, match="not a regular file"):
        load_hierarchy(tmp_path)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.99])
def test_truncated_file(hierarchy, tmp_path, keep):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(HierarchyError, match=r"h\.npz: not a readable hierarchy archive"):
        load_hierarchy(path)


def test_flipped_byte_is_detected(hierarchy, tmp_path):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for pos in rng.integers(100, len(data) - 100, size=5):
        damaged = bytearray(data)
        damaged[pos] ^= 0x40
        path.write_bytes(bytes(damaged))
        with pytest.raises(HierarchyError, match=r"h\.npz: "):
            load_hierarchy(path)


def test_modified_array_fails_checksum(hierarchy, tmp_path):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    arrays, doc = read_raw(path)
    arrays["level1/vertices"] = arrays["level1/vertices"] + np.float32(1e-3)  # a valid zip, stale checksum
    rewrite(path, arrays, doc, fix_checksum=False)
    with pytest.raises(HierarchyError, match="checksum mismatch"):
        load_hierarchy(path)
    arrays, doc = read_raw(save_hierarchy(hierarchy, path))
    doc["meta"]["template_hash"] = "0" * 64  # the document is covered too
    rewrite(path, arrays, doc, fix_checksum=False)
    with pytest.raises(HierarchyError, match="checksum mismatch"):
        load_hierarchy(path)


def test_format_version_and_keys(hierarchy, tmp_path):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    arrays, doc = read_raw(path)
    rewrite(path, arrays, dict(doc, format_version=2))
    with pytest.raises(HierarchyError, match="expected format version 1, got 2"):
        load_hierarchy(path)
    for equal_to_one in (1.0, True):  # equal to 1 in Python, but not the integer the format writes
        rewrite(path, arrays, dict(doc, format_version=equal_to_one))
        with pytest.raises(HierarchyError, match=f"expected format version 1, got {equal_to_one!r}"):
            load_hierarchy(path)
    rewrite(path, arrays, dict(doc, format="something.else"))
    with pytest.raises(HierarchyError, match="expected format 'mesh_decoder.hierarchy'"):
        load_hierarchy(path)
    rewrite(path, {k: v for k, v in arrays.items() if k != "up1/weight"}, doc)
    with pytest.raises(HierarchyError, match=r"missing arrays \['up1/weight'\]"):
        load_hierarchy(path)
    rewrite(path, dict(arrays, extra=np.zeros(3)), doc)
    with pytest.raises(HierarchyError, match=r"unexpected arrays \['extra'\]"):
        load_hierarchy(path)
    with open(path, "wb") as fh:
        np.savez(fh, **{k: v for k, v in arrays.items() if k != "meta_json"})
    with pytest.raises(HierarchyError, match="missing 'meta_json'"):
        load_hierarchy(path)


def test_pickled_content_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    with open(path, "wb") as fh:
        np.savez(fh, meta_json=np.array([{"format": "mesh_decoder.hierarchy"}], dtype=object))
    # named as what it is, not 'not a readable hierarchy archive (truncated or corrupt?)'
    with pytest.raises(HierarchyError, match=r"evil\.npz: member 'meta_json': expected a numeric array, found an "
                                             r"object array \(Python objects, read only by unpickling, which is "
                                             r"never done\)$"):
        load_hierarchy(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(num_levels=str(d["num_levels"])), r"expected 'num_levels' to be an int >= 1, got str '3'"),
        (lambda d: d.update(num_levels=0), r"expected 'num_levels' to be an int >= 1, got 0"),
        (lambda d: d.update(levels=len(d["levels"])), r"expected 'levels' to be a list of \{spiral_length, dilation\} objects, got int 3"),
        (lambda d: d.update(levels=[[9, 1]] * len(d["levels"])), r"expected levels\[0\] to be a \{spiral_length, dilation\} object, got list"),
        (lambda d: d["levels"][1].pop("dilation"), r"levels\[1\]: expected 'dilation' \(an int\), got none"),
        (lambda d: d["levels"][2].update(spiral_length=5.5), r"levels\[2\]: expected 'spiral_length' to be an int, got float 5.5"),
        (lambda d: d.update(texel_map="no"), r"expected 'texel_map' to be true or false, got str 'no'"),
        (lambda d: d.update(meta=sorted(d["meta"])), r"expected 'meta' to be an object, got list"),
        (lambda d: d.update(checksum=7), r"expected 'checksum' to be a string, got int 7"),
    ],
)
def test_document_fields_of_the_wrong_type_are_named(hierarchy, tmp_path, change, message):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    arrays, doc = read_raw(path)
    change(doc)
    rewrite(path, arrays, doc, fix_checksum=not isinstance(doc["checksum"], int))
    with pytest.raises(HierarchyError, match=r"h\.npz: meta_json.*" + message):
        load_hierarchy(path)


def test_deeply_nested_document_and_members_without_npy_header(hierarchy, tmp_path):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    arrays, _ = read_raw(path)
    arrays.pop("meta_json")
    with open(path, "wb") as fh:  # deeper than json's recursion limit: RecursionError, not ValueError
        np.savez(fh, meta_json=np.array("[" * 100_000 + "]" * 100_000), **arrays)
    with pytest.raises(HierarchyError, match=r"h\.npz: meta_json: expected a JSON document, got invalid JSON"):
        load_hierarchy(path)
    junk = np.random.default_rng(3).bytes(50)  # np.load returns a member without the .npy header as bytes
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta_json.npy", junk)
        z.writestr("down0.npy", junk)
    with pytest.raises(HierarchyError, match=r"h\.npz: member 'down0': expected a \.npy array, got 50 bytes"):
        load_hierarchy(path)


def test_meta_that_is_not_a_dict_is_refused_before_writing(hierarchy, tmp_path):
    h = replace(hierarchy, meta=json.dumps(hierarchy.meta))  # load_hierarchy could not read this file back
    with pytest.raises(HierarchyError, match="meta: expected a dict of JSON-able build parameters, got str"):
        save_hierarchy(h, tmp_path / "h.npz")
    assert not os.listdir(tmp_path)
    with pytest.raises(HierarchyError, match="meta: expected a dict"):
        check_hierarchy(h)


@pytest.mark.parametrize("path", [None, 3, ["h.npz"]])
def test_path_of_the_wrong_type(hierarchy, path):
    with pytest.raises(TypeError, match=r"path: expected a file path \(str or os.PathLike\), got"):
        save_hierarchy(hierarchy, path)
    with pytest.raises(TypeError, match=r"path: expected a file path \(str or os.PathLike\), got"):
        load_hierarchy(path)


def test_an_empty_path_is_refused(hierarchy, tmp_path, monkeypatch):
    """load_hierarchy('') said '.: not a regular file' (Path('') is the working folder)."""
    monkeypatch.chdir(tmp_path)
    for call in (lambda: save_hierarchy(hierarchy, ""), lambda: load_hierarchy("")):
        with pytest.raises(ValueError, match=r"^path: expected a file path, got ''$"):
            call()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "key, change, message",
    [
        ("down0", lambda a: np.where(a == a.max(), 10**6, a), r"down\[0\]: expected indices in \[0, 499\]"),
        ("down1", lambda a: a[::-1].copy(), r"levels\[2\].vertices == levels\[1\].vertices\[down\[1\]\]"),
        ("up0/weight", lambda a: a * np.float32(1.5), r"up_weight\[0\]: expected weights summing to 1"),
        ("up0/index", lambda a: a + 125, r"up_index\[0\]: expected indices in \[0, 124\]"),
        ("level1/spirals", lambda a: a + 2, r"levels\[1\].spirals: expected indices in \[0, 125\]"),
        ("level2/spirals", lambda a: a[:, :3].copy(), r"levels\[2\].spirals: expected shape \(32, 5\)"),
        ("level0/faces", lambda a: a.astype(np.int32), r"levels\[0\].faces: expected torch.int64"),
        ("level0/laplacian_weight", lambda a: a[:-1].copy(), r"laplacian_weight: expected shape"),
        ("level1/vertices", lambda a: np.where(a == a[0, 0], np.nan, a), r"expected finite values"),
        ("texel/index", lambda a: a + 500, r"texel_map.index: expected indices in \[0, 499\]"),
        ("texel/face", lambda a: a - 5, r"texel_map.face: expected indices in \[-1, "),
    ],
)
def test_inconsistent_arrays_with_valid_checksum(hierarchy, tmp_path, key, change, message):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    arrays, doc = read_raw(path)
    arrays[key] = change(arrays[key])
    rewrite(path, arrays, doc)
    with pytest.raises(HierarchyError, match=message):
        load_hierarchy(path)


def _swap(a: np.ndarray, rng: np.random.Generator, axis: int = 0) -> np.ndarray:
    """``a`` with two distinct random entries along ``axis`` exchanged."""
    i, j = rng.choice(a.shape[axis], size=2, replace=False)
    out = a.copy()
    idx = [slice(None)] * a.ndim
    idx[axis] = [i, j]
    src = [slice(None)] * a.ndim
    src[axis] = [j, i]
    out[tuple(idx)] = a[tuple(src)]
    return out


def _spiral_centre(a, arrays, rng):
    v, c = int(rng.integers(a.shape[0])), int(rng.integers(1, a.shape[1]))
    a = a.copy()
    a[v, [0, c]] = a[v, [c, 0]]  # the spiral holds the same vertices, not starting at its own
    return a


def _scale_one(a, arrays, rng):
    a = a.copy()
    a[rng.integers(a.size)] *= np.float32(1.0 + rng.uniform(0.01, 0.5))
    return a


def _self_loop(a, arrays, rng):
    a = a.copy()
    e = rng.integers(a.shape[1])
    a[1, e] = a[0, e]
    return a


def _drop_one_direction(a, arrays, rng):
    e = rng.integers(a.shape[1])  # still sorted, but (j, i) lacks its (i, j)
    arrays["level1/laplacian_weight"] = np.delete(arrays["level1/laplacian_weight"], e)
    return np.delete(a, e, axis=1)


def _kept_elsewhere(a, arrays, rng):
    down = arrays["down0"]
    j = int(rng.integers(down.size))
    a = a.copy()
    a[down[j]] = (j + rng.integers(1, down.size)) % down.size  # another coarse vertex
    return a


def _covered_texel(arrays, rng):
    face = arrays["texel/face"]
    rows, cols = np.nonzero(face >= 0)
    k = rng.integers(rows.size)
    return rows[k], cols[k]


def _uncover(a, arrays, rng):
    a = a.copy()
    a[_covered_texel(arrays, rng)] = False
    return a


def _rotate_corners(a, arrays, rng):
    i, j = _covered_texel(arrays, rng)
    a = a.copy()
    a[i, j] = np.roll(a[i, j], int(rng.integers(1, 3)))  # the face's vertices, in another order
    return a


@pytest.mark.parametrize(
    "key, change, message",
    [
        ("level1/spirals", _spiral_centre,
         r"levels\[1\]\.spirals: expected each spiral to start at its own vertex \(spirals\[:, 0\] == arange\(125\)\), "
         r"got spirals\[\d+, 0\] = \d+"),
        ("level0/original_index", lambda a, arrays, rng: _swap(a, rng),
         r"levels\[0\]\.original_index: expected arange\(500\) \(level 0 is the template\), got original_index\[\d+\]"),
        ("level2/original_index", lambda a, arrays, rng: _swap(a, rng),
         r"levels\[2\]\.original_index: expected levels\[1\]\.original_index\[down\[1\]\], got original_index\[\d+\]"),
        ("level1/laplacian_weight", _scale_one,
         r"levels\[1\]\.laplacian_weight: expected -1/sqrt\(deg\(i\) deg\(j\)\) .*, got -[\d.]+ instead of -[\d.]+ "
         r"at entry \d+"),
        ("level0/laplacian_weight", lambda a, arrays, rng: -a,
         r"levels\[0\]\.laplacian_weight: expected -1/sqrt\(deg\(i\) deg\(j\)\) .*, got [\d.]+ instead of -[\d.]+"),
        ("level0/laplacian_index", _self_loop,
         r"levels\[0\]\.laplacian_index: expected no self loops \(the zero diagonal is not stored\), "
         r"got entry \d+ = \((\d+), \1\)"),
        ("level0/laplacian_index", lambda a, arrays, rng: _swap(a, rng, axis=1),
         r"levels\[0\]\.laplacian_index: expected entries sorted by \(row, col\) without repeats"),
        ("level1/laplacian_index", _drop_one_direction,
         r"levels\[1\]\.laplacian_index: expected a symmetric matrix \(every \(i, j\) with its \(j, i\)\), "
         r"got entry \d+ = \((\d+), (\d+)\) without \(\2, \1\)"),
        ("up0/index", _kept_elsewhere,
         r"up_index\[0\]: expected each kept vertex to up-sample from itself, row down\[0\]\[j\] of "
         r"up_index\[0\]/up_weight\[0\] with weight 1 on j \(within 0\.0001\), got indices \[\d+, \d+, \d+\] with weight 0 "
         r"on j = \d+"),
        ("texel/mask", _uncover,
         r"texel_map\.mask: expected True exactly where a face covers the texel \(texel_map\.face >= 0\), "
         r"got mask\[\d+, \d+\] = False with face \d+"),
        ("texel/index", _rotate_corners,
         r"texel_map\.index: expected the vertices of the covering face \(levels\[0\]\.faces\[texel_map\.face\]\), "
         r"got \[\d+, \d+, \d+\] at texel \(\d+, \d+\), whose face \d+ is"),
    ],
)
def test_builder_invariants_are_checked_on_load(hierarchy, tmp_path, key, change, message):
    """Damage within every index range, with a valid checksum, that breaks what the builder guarantees."""
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    arrays, doc = read_raw(path)
    arrays[key] = change(arrays[key], arrays, np.random.default_rng(11))
    rewrite(path, arrays, doc)
    with pytest.raises(HierarchyError, match=r"h\.npz: " + message):
        load_hierarchy(path)


@pytest.mark.parametrize("key, name, seed", [("up0/weight", "up_weight[0]", 13),
                                             ("texel/weight", "texel_map.weight", 17)])
def test_negative_weights_summing_to_one_are_refused_on_load(hierarchy, tmp_path, key, name, seed):
    """A row like (1.5, -0.5, 0), summing to 1 with a valid checksum, loaded: the sign of the weights was unchecked."""
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    arrays, doc = read_raw(path)
    rng = np.random.default_rng(seed)
    w = arrays[key].copy()
    if key == "texel/weight":  # a covered texel
        row = _covered_texel(arrays, rng)
    else:  # a vertex that is not kept: a kept one has its own check (weight 1 on itself)
        row = (int(rng.choice(np.setdiff1d(np.arange(w.shape[0]), arrays["down0"]))),)
    big = 1.0 + rng.uniform(0.1, 1.0)
    w[row] = rng.permutation(np.array([big, 1.0 - big, 0.0], dtype=w.dtype))
    assert abs(float(w[row].astype(np.float64).sum()) - 1.0) < 1e-6 and float(w.min()) < -0.05
    arrays[key] = w
    rewrite(path, arrays, doc)
    want = f"{name}: expected non-negative weights, got minimum {float(w.min()):.3g}"
    with pytest.raises(HierarchyError, match=r"h\.npz: " + re.escape(want) + "$"):
        load_hierarchy(path)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_laplacian_weight_tolerance_is_the_rounding_only(hierarchy, dtype):
    """Built weights pass in every dtype (float32 rounding carried into float64, float16 and bfloat16
    rounding), and a change of a few units in the last place of one weight does not."""
    h = hierarchy.to(dtype)
    check_hierarchy(h)
    rtol = max(torch.finfo(torch.float32).eps, torch.finfo(dtype).eps)
    w = h.levels[2].laplacian_weight.clone()  # .to(torch.float32) shares the fixture's tensors
    e = int(np.random.default_rng(5).integers(w.numel()))
    w[e] = w[e] * (1 + 4 * rtol)
    h.levels[2].laplacian_weight = w
    with pytest.raises(HierarchyError, match=rf"levels\[2\]\.laplacian_weight: expected .* at entry {e} "):
        check_hierarchy(h)


def test_a_kept_vertex_nearly_on_itself_shows_the_weight_and_the_tolerance(hierarchy):
    """Weights (0.9998, 1e-4, 1e-4) were reported as 'with weight 1 on j, got ... with weight 1 on j'."""
    h = hierarchy.to(torch.float64)
    j = int(np.random.default_rng().integers(h.down[0].numel()))
    row = int(h.down[0][j])
    others = [k for k in range(h.sizes[1]) if k != j][:2]
    h.up_index[0] = h.up_index[0].clone()
    h.up_weight[0] = h.up_weight[0].clone()
    h.up_index[0][row] = torch.tensor([j, *others])
    h.up_weight[0][row] = torch.tensor([0.9998, 1e-4, 1e-4], dtype=torch.float64)
    with pytest.raises(HierarchyError, match=rf"with weight 1 on j \(within 0\.0001\), got indices \[{j}, "
                                             rf"{others[0]}, {others[1]}\] with weight 0\.9998\d* on j = {j} "):
        check_hierarchy(h)


@pytest.mark.parametrize(
    "make, params",
    [
        (lambda: face_template(500, seed=6), dict(factors=(2.5, 3.7), spiral_lengths=1, dilations=3, texture_size=1)),
        (lambda: icosphere(2), dict(factors=(4, 4), spiral_lengths=(30, 20, 12), dilations=(2, 3, 4),
                                    texture_size=(5, 40))),
    ],
)
def test_every_builder_option_passes_and_damage_is_still_found(tmp_path, make, params):
    """Builder options at their edges (real factors, spirals of length 1 or longer than a level, dilations,
    tiny texel maps) give hierarchies the new checks accept; the same damage in them is refused."""
    h = build_hierarchy(make(), **params)
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        check_hierarchy(h.to(dtype))
    loaded = load_hierarchy(save_hierarchy(h, tmp_path / "h.npz"))
    rng = np.random.default_rng(3)
    last = loaded.levels[-1]
    v = int(rng.integers(last.num_vertices))
    last.spirals[v, 0] = (v + int(rng.integers(1, last.num_vertices))) % last.num_vertices
    L = len(loaded.levels) - 1
    with pytest.raises(HierarchyError, match=rf"levels\[{L}\]\.spirals: expected each spiral to start at its own"):
        check_hierarchy(loaded)


@pytest.mark.parametrize(
    "key, change, dtype",
    [
        ("level0/vertices", lambda a: a.astype(">f4"), ">f4"),
        ("up1/index", lambda a: a.astype(">i8"), ">i8"),
        ("level0/faces", lambda a: a.astype("U8"), "<U8"),
    ],
)
def test_unconvertible_arrays_with_valid_checksum_name_the_file(hierarchy, tmp_path, key, change, dtype):
    """Arrays torch cannot take (other byte order, strings) give a HierarchyError naming the file and
    array, not a bare ValueError/TypeError, so the cache warns and rebuilds instead of crashing."""
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    arrays, doc = read_raw(path)
    arrays[key] = change(arrays[key])
    rewrite(path, arrays, doc)
    with pytest.raises(HierarchyError, match=rf"h\.npz: {key}: expected a native-byte-order int64, bool or float array, "
                                             rf"got dtype {dtype}"):
        load_hierarchy(path)


def test_template_hash_mismatch(hierarchy, template, tmp_path):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    other = face_template(500, seed=4)
    with pytest.raises(HierarchyError, match=r"h\.npz: built for another template"):
        load_hierarchy(path, expected_template_hash=other)
    with pytest.raises(HierarchyError, match="built for another template"):
        load_hierarchy(path, expected_template_hash=other.content_hash())
    load_hierarchy(path, expected_template_hash=template)


def test_check_hierarchy_and_save_refuse_bad_objects(hierarchy, tmp_path):
    with pytest.raises(TypeError, match="MeshHierarchy"):
        check_hierarchy({"levels": []})
    bad = replace(hierarchy, down=hierarchy.down[:1])
    with pytest.raises(HierarchyError, match=r"down: expected 2 tensors"):
        save_hierarchy(bad, tmp_path / "bad.npz")
    with pytest.raises(TypeError, match="JSON"):
        save_hierarchy(replace(hierarchy, meta={"x": object()}), tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


def test_failed_save_keeps_previous_file(hierarchy, tmp_path, monkeypatch):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    before = path.read_bytes()
    real = np.savez

    def failing(fh, **arrays):
        real(fh, **{k: v for i, (k, v) in enumerate(arrays.items()) if i < 3})
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing)
    with pytest.raises(OSError, match="disk full"):
        save_hierarchy(hierarchy, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.npz"]


# ----------------------------------------------------------------------------- no openmesh
def test_load_and_use_without_openmesh(hierarchy, tmp_path):
    path = save_hierarchy(hierarchy, tmp_path / "h.npz")
    code = textwrap.dedent(
        """
        import sys
        sys.modules["openmesh"] = None  # any import of openmesh now fails
        import torch
        from mesh_decoder.hierarchy import load_hierarchy
        h = load_hierarchy(sys.argv[1])
        x = torch.randn(h.sizes[1], 4, generator=torch.Generator().manual_seed(0))
        up = (x[h.up_index[0]] * h.up_weight[0][..., None]).sum(1)            # (V0, 4)
        L = torch.sparse_coo_tensor(h.levels[0].laplacian_index, h.levels[0].laplacian_weight,
                                    (h.sizes[0], h.sizes[0]))
        y = torch.sparse.mm(L, up)                                           # (V0, 4)
        padded = torch.cat([up, up.new_zeros(1, 4)])                         # (V0 + 1, 4)
        s = padded[h.levels[0].spirals].reshape(h.sizes[0], -1)              # (V0, S*4)
        down = up[h.down[0]]
        print(tuple(y.shape), tuple(s.shape), bool(torch.equal(down, x)))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(500, 4) (500, 36) True"


# ----------------------------------------------------------------------------- crash safety
SLOW_SAVER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from mesh_decoder.hierarchy.storage import load_hierarchy, save_hierarchy

    source, target = sys.argv[1], sys.argv[2]
    h = load_hierarchy(source)
    real_savez = np.savez

    class SlowFile:
        def __init__(self, handle):
            self.handle, self.writes = handle, 0
        def write(self, data):
            out = self.handle.write(data)
            self.handle.flush()
            self.writes += 1
            if self.writes == 20:
                print("writing", flush=True)
            if self.writes >= 20:
                time.sleep(0.05)
            return out
        def __getattr__(self, name):
            return getattr(self.handle, name)

    np.savez = lambda handle, **arrays: real_savez(SlowFile(handle), **arrays)
    save_hierarchy(h, target)
    print("finished", flush=True)
    """
)


def test_sigkill_during_save_keeps_previous_file(hierarchy, template, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    target = cache_file(cache_dir, cache_key(hierarchy.meta))
    save_hierarchy(hierarchy, target)  # the previous, valid version
    before = target.read_bytes()
    # a different but valid hierarchy for the same key: all positions scaled
    newer = replace(
        hierarchy, levels=[replace(l, vertices=l.vertices * 2) for l in hierarchy.levels]
    )
    source = save_hierarchy(newer, tmp_path / "newer.npz")

    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVER, str(source), str(target)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 120)
        line = proc.stdout.readline().strip() if ready else ""
        assert line == "writing", f"saver did not start writing: {line!r} {proc.stderr.read() if not ready else ''}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    assert target.read_bytes() == before  # untouched
    assert_same(load_hierarchy(target), hierarchy)
    leftovers = [p for p in cache_dir.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f".{target.name}.") and leftovers[0].name.endswith(".tmp")
    assert leftovers[0].stat().st_size > 0  # killed mid-write
    with pytest.raises(HierarchyError):
        load_hierarchy(leftovers[0])  # the partial file is never valid

    def no_decimation(*args, **kwargs):
        raise RuntimeError("the cache should have been used")

    monkeypatch.setattr(build_module, "decimate_mesh", no_decimation)
    assert_same(build_hierarchy(template, cache_dir=cache_dir, **PARAMS), hierarchy)

