"""Datasets: synthetic splits and items, folder loading with face checks, rigid alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesh_decoder.data import (
    GENERATOR_VERSION,
    PARAM_NAMES,
    MeshFolderDataset,
    SyntheticFaceDataset,
    SyntheticFaces,
    rigid_align,
)
from mesh_decoder.errors import MeshFileError
from mesh_decoder.mesh.io import save_mesh
from mesh_decoder.mesh.templates import face_template, icosphere


@pytest.fixture(scope="module")
def small():
    return face_template(600, seed=1)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


# ---------------------------------------------------------------- synthetic set
def test_synthetic_splits_and_items(small):
    common = dict(n=40, seed=2, template=small)
    train = SyntheticFaceDataset(split="train", **common)
    test = SyntheticFaceDataset(split="test", **common)
    full = SyntheticFaceDataset(split="all", **common)
    assert len(train) == 36 and len(test) == 4 and len(full) == 40
    assert np.intersect1d(train.indices, test.indices).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train.indices, test.indices])), np.arange(40))
    assert train.generator_version == GENERATOR_VERSION == train.meta["generator_version"]
    assert train.meta["template_hash"] == small.content_hash()
    item = test[1]
    assert set(item) == {"vertices", "colors", "params"}
    assert item["vertices"].shape == (600, 3) and item["vertices"].dtype == torch.float32
    assert item["colors"].shape == (600, 3) and item["params"].shape == (len(PARAM_NAMES),)
    # the same face as the full set holds at that index, and as the generator makes it
    j = int(test.indices[1])
    torch.testing.assert_close(item["vertices"], full[j]["vertices"], rtol=0, atol=0)
    v, c = SyntheticFaces(small).generate(full.params[j])
    np.testing.assert_allclose(item["vertices"].numpy(), v[0], atol=1e-5)
    np.testing.assert_allclose(item["colors"].numpy(), c[0], atol=1e-6)
    np.testing.assert_allclose(item["params"].numpy(), full.params.values[j], atol=1e-7)
    assert test[-1]["vertices"].equal(test[3]["vertices"])
    with pytest.raises(IndexError):
        test[4]
    # deterministic
    again = SyntheticFaceDataset(split="test", **common)
    assert again.vertices.equal(test.vertices) and again.colors.equal(test.colors)
    # a data loader batches the dicts
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=8)))
    assert batch["vertices"].shape == (8, 600, 3)


def test_synthetic_extrapolation(small):
    common = dict(n=60, seed=0, kind="extrapolation", template=small)
    train = SyntheticFaceDataset(split="train", **common)
    test = SyntheticFaceDataset(split="test", **common)
    jaw = PARAM_NAMES.index("jaw_open")
    assert (test.params.values[:, jaw] > 0.7).all() and (train.params.values[:, jaw] <= 0.7).all()
    assert len(train) + len(test) == 60 and len(test) > 5
    assert test.meta["threshold"] == 0.7 and test.meta["key"] == "jaw_open"
    other = SyntheticFaceDataset(split="test", key="smile", threshold=0.5, **common)
    assert (other.params["smile"] > 0.5).all()


def test_synthetic_normalization(small):
    ds = SyntheticFaceDataset(n=30, split="all", template=small)
    mean, std = ds.normalization()
    x = ds.vertices.numpy().astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), x.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(std.numpy(), np.maximum(x.std(0), 1e-3), rtol=1e-4, atol=1e-6)
    assert std.shape == (600, 3) and (std >= 1e-3).all()
    # clamping: with eps at the median std, half of the entries are raised to eps
    eps = float(np.median(x.std(0)))
    _, clamped = ds.normalization(eps=eps)
    np.testing.assert_allclose(clamped.numpy(), np.maximum(x.std(0), eps), rtol=1e-4)
    assert (clamped.numpy() == np.float32(eps)).mean() >= 0.5
    cmean, cstd = ds.normalization("colors", eps=0.5)
    assert (cstd == 0.5).all()
    with pytest.raises(ValueError, match="'vertices', 'colors'"):
        ds.normalization("params")
    for bad in (float("inf"), float("nan"), 0.0, "1e-3", None):  # inf made every std inf
        with pytest.raises(ValueError, match=rf"^eps: expected a finite positive number, got {bad!r}$"):
            ds.normalization(eps=bad)


def test_synthetic_argument_errors(small):
    with pytest.raises(ValueError, match="'train', 'test', 'all'"):
        SyntheticFaceDataset(10, split="val", template=small)
    with pytest.raises(ValueError, match="'interpolation', 'extrapolation'"):
        SyntheticFaceDataset(10, kind="random", template=small)
    with pytest.raises(ValueError, match="positive int"):
        SyntheticFaceDataset(0, template=small)
    with pytest.raises(ValueError, match="key"):
        SyntheticFaceDataset(10, kind="extrapolation", key="mouth_size", template=small)


# ---------------------------------------------------------------- rigid align
def horn_rotation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Reference: Horn's closed-form quaternion solution (J. Opt. Soc. Am. A, 1987)."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    s = xc.T @ yc  # S_ab = sum x_a y_b
    sxx, sxy, sxz = s[0]
    syx, syy, syz = s[1]
    szx, szy, szz = s[2]
    n = np.array([
        [sxx + syy + szz, syz - szy, szx - sxz, sxy - syx],
        [syz - szy, sxx - syy - szz, sxy + syx, szx + sxz],
        [szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy],
        [sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz],
    ])
    w, v = np.linalg.eigh(n)
    q0, qx, qy, qz = v[:, np.argmax(w)]
    return np.array([
        [q0**2 + qx**2 - qy**2 - qz**2, 2 * (qx * qy - q0 * qz), 2 * (qx * qz + q0 * qy)],
        [2 * (qy * qx + q0 * qz), q0**2 - qx**2 + qy**2 - qz**2, 2 * (qy * qz - q0 * qx)],
        [2 * (qz * qx - q0 * qy), 2 * (qz * qy + q0 * qx), q0**2 - qx**2 - qy**2 + qz**2],
    ])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rigid_align_recovers_transform(seed):
    rng = np.random.default_rng(seed)
    y = rng.normal(0, 50, (200, 3))
    rot, t = random_rotation(rng), rng.normal(0, 100, 3)
    x = (y - t) @ rot  # y = x @ rot.T + t
    aligned, r, tt, c = rigid_align(x, y)
    np.testing.assert_allclose(r, rot, atol=1e-10)
    np.testing.assert_allclose(tt, t, atol=1e-8)
    assert c == 1.0
    np.testing.assert_allclose(aligned, y, atol=1e-8)
    # with a scale
    aligned, r, tt, c = rigid_align(x / 1.7, y, scale=True)
    assert c == pytest.approx(1.7, rel=1e-10)
    np.testing.assert_allclose(aligned, y, atol=1e-8)
    # with noise: the optimum agrees with Horn's quaternion method and beats perturbations
    noisy = y + rng.normal(0, 3.0, y.shape)
    aligned, r, tt, _ = rigid_align(x, noisy)
    np.testing.assert_allclose(r, horn_rotation(x, noisy), atol=1e-9)
    best = ((aligned - noisy) ** 2).sum()
    for _ in range(5):
        a = rng.normal(0, 0.01, 3)  # a small rotation: orthonormalised I + skew(a)
        u, _, vt = np.linalg.svd(np.eye(3) + np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]]))
        other = x @ (u @ vt @ r).T + tt
        assert ((other - noisy) ** 2).sum() >= best


def test_rigid_align_never_reflects():
    rng = np.random.default_rng(7)
    y = rng.normal(size=(50, 3))
    _, r, _, _ = rigid_align(y * [1, 1, -1], y)  # a mirror image
    assert np.linalg.det(r) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        rigid_align(y, y[:10])


def test_rigid_align_refuses_non_finite_empty_and_degenerate_input():
    rng = np.random.default_rng(8)
    y = rng.normal(size=(20, 3))
    i = int(rng.integers(20))
    for value in (np.nan, np.inf):
        bad = y.copy()
        bad[i, int(rng.integers(3))] = value
        # numpy's LinAlgError "SVD did not converge" before
        with pytest.raises(ValueError, match=rf"source: expected finite points, .* \(first: point {i}\)"):
            rigid_align(bad, y)
        with pytest.raises(ValueError, match=rf"target: expected finite points, .* \(first: point {i}\)"):
            rigid_align(y, bad)
    with pytest.raises(ValueError, match="V >= 1"):
        rigid_align(np.zeros((0, 3)), np.zeros((0, 3)))
    # scale=True on one repeated point returned NaN points, rotation and scale with a RuntimeWarning
    with pytest.raises(ValueError, match="not all equal to fit a scale"):
        rigid_align(np.repeat(y[:1], 5, axis=0), y[:5], scale=True)
    aligned, _, t, c = rigid_align(np.repeat(y[:1], 5, axis=0), y[:5])  # without scale: a translation
    np.testing.assert_allclose(aligned, np.repeat(y[:5].mean(axis=0, keepdims=True), 5, axis=0), atol=1e-12)
    assert c == 1.0 and np.isfinite(t).all()


# ------------------------------------------------------------------ folder set
def _write_set(root, template, rng, n=4, transform=True, colors=True):
    expected = []
    exts = [".obj", ".ply", ".off", ".ply"]
    gen = SyntheticFaces(template)
    v, c = gen.generate(gen.sample_params(n, rng=int(rng.integers(1000))))
    for i in range(n):
        verts = v[i].astype(np.float64)
        expected.append(verts)
        if transform:
            rot, t = random_rotation(rng), rng.normal(0, 200, 3)
            verts = verts @ rot.T + t
        mesh = template.copy(vertices=verts, colors=c[i] if colors else None, uv=None, uv_faces=None)
        save_mesh(mesh, root / f"face_{i:02d}{exts[i % len(exts)]}")
    return np.stack(expected)


def test_folder_loads_and_aligns(tmp_path, small):
    rng = np.random.default_rng(3)
    expected = _write_set(tmp_path, small, rng)
    (tmp_path / "notes.txt").write_text("not a mesh")
    ds = MeshFolderDataset(tmp_path, small, align=True)
    assert len(ds) == 4 and [p.rsplit("/", 1)[-1] for p in ds.files] == [f"face_0{i}" + e for i, e in
                                                                         enumerate([".obj", ".ply", ".off", ".ply"])]
    assert ds.has_colors and ds[0]["colors"].shape == (600, 3) and ds[2]["index"] == 2
    # each synthetic face differs from the template, yet alignment to it undoes the random
    # rigid motion: compare with aligning the untransformed face directly
    for i in range(4):
        direct, _, _, _ = rigid_align(expected[i], small.vertices)
        np.testing.assert_allclose(ds[i]["vertices"].numpy(), direct, atol=0.02)
        rot, t, c = ds.transforms[i]
        assert np.linalg.det(rot) == pytest.approx(1.0) and c == 1.0
    mean, std = ds.normalization()
    x = ds.vertices.numpy().astype(np.float64)
    np.testing.assert_allclose(mean.numpy(), x.mean(0), atol=1e-4)
    np.testing.assert_allclose(std.numpy(), np.maximum(x.std(0), 1e-3), rtol=1e-4, atol=1e-6)
    # without alignment the stored positions come back (float32 files)
    raw = MeshFolderDataset(tmp_path, small, pattern="*.obj")
    assert len(raw) == 1 and raw.transforms is None


def test_folder_alignment_recovers_template_exactly(tmp_path, small):
    rng = np.random.default_rng(4)
    for i in range(2):
        rot, t = random_rotation(rng), rng.normal(0, 300, 3)
        save_mesh(small.copy(vertices=small.vertices @ rot.T + t, uv=None, uv_faces=None), tmp_path / f"m{i}.ply")
    ds = MeshFolderDataset(tmp_path, small, align=True)
    for i in range(2):
        np.testing.assert_allclose(ds[i]["vertices"].numpy(), small.vertices, atol=1e-3)
    assert not ds.has_colors and "colors" not in ds[0]
    with pytest.raises(ValueError, match="colours"):
        ds.normalization("colors")
    scaled = small.copy(vertices=small.vertices * 0.5, uv=None, uv_faces=None)
    save_mesh(scaled, tmp_path / "m2.off")
    ds = MeshFolderDataset(tmp_path, small, align=True, scale=True)
    np.testing.assert_allclose(ds[2]["vertices"].numpy(), small.vertices, atol=1e-3)
    assert ds.transforms[2][2] == pytest.approx(2.0, rel=1e-5)


@pytest.mark.parametrize("name", ["scans[1]", "faces?[2]*"])
def test_folder_name_with_glob_characters(tmp_path, small, name):
    """The folder's own name is a path, not a pattern: only ``pattern`` is globbed."""
    root = tmp_path / name
    root.mkdir()
    rng = np.random.default_rng(6)
    expected = _write_set(root, small, rng, n=2, transform=False, colors=False)
    ds = MeshFolderDataset(root, small)
    assert len(ds) == 2 and all(p.startswith(str(root)) for p in ds.files)
    np.testing.assert_allclose(ds[1]["vertices"].numpy(), expected[1], atol=1e-4)


def test_folder_rejects_other_faces(tmp_path, small):
    rng = np.random.default_rng(5)
    _write_set(tmp_path, small, rng, n=2, transform=False, colors=False)
    bad_path = tmp_path / "zz_bad.obj"
    perm = small.faces.copy()
    perm[[17, 18]] = perm[[18, 17]]  # same triangles, different order
    save_mesh(small.copy(faces=perm, uv=None, uv_faces=None), bad_path)
    with pytest.raises(MeshFileError, match=r"zz_bad\.obj.*face 17 is .*expected the template's") as err:
        MeshFolderDataset(tmp_path, small)
    assert err.value.path == str(bad_path)
    bad_path.unlink()
    other = icosphere(2)
    save_mesh(other, tmp_path / "zz_sphere.ply")
    with pytest.raises(MeshFileError, match=r"zz_sphere\.ply.*600 vertices and \d+ faces, found 162 vertices and 320"):
        MeshFolderDataset(tmp_path, small)


def test_folder_errors(tmp_path, small):
    with pytest.raises(MeshFileError, match="found none"):
        MeshFolderDataset(tmp_path, small)
    with pytest.raises(MeshFileError, match="directory") as missing:  # also the FileNotFoundError the README says
        MeshFolderDataset(tmp_path / "missing", small)
    assert isinstance(missing.value, FileNotFoundError) and missing.value.filename == str(tmp_path / "missing")
    assert str(missing.value) == f"{tmp_path / 'missing'}: expected a directory of mesh files, found none at this path"
    assert missing.value.path == str(tmp_path / "missing") and missing.value.line is None
    with pytest.raises(TypeError):
        MeshFolderDataset(tmp_path, small.vertices)


@pytest.mark.parametrize("align", [False, True])
def test_folder_refuses_positions_beyond_float32(tmp_path, small, align):
    """A position float32 cannot hold became inf in the dataset (then 'mean: expected finite values', naming no file)."""
    rng = np.random.default_rng(8)
    _write_set(tmp_path, small, rng, n=2, transform=False, colors=False)
    v = small.vertices.copy()
    row = int(rng.integers(small.num_vertices))
    v[row] = rng.uniform(1e39, 1e300, 3) * rng.choice([-1.0, 1.0], 3)
    bad = tmp_path / "face_09.obj"  # save_mesh refuses such a mesh: written by hand
    bad.write_text("".join(f"v {x:.17g} {y:.17g} {z:.17g}\n" for x, y, z in v)
                   + "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in small.faces))
    with pytest.raises(MeshFileError, match=rf"vertex {row} is .*: expected magnitudes float32 can hold \(up to "
                                            rf"3.403e\+38; .*\), 1 of {small.num_vertices} vertices exceed it") as err:
        MeshFolderDataset(tmp_path, small, align=align)
    assert err.value.path == str(bad)


def test_folder_names_a_broken_link(tmp_path, small):
    """A link to a scan on a drive that is not mounted was left out of the set silently."""
    rng = np.random.default_rng(9)
    expected = _write_set(tmp_path, small, rng, n=2, transform=False, colors=False)
    link = tmp_path / "face_05.ply"
    link.symlink_to(tmp_path / "unmounted" / "face_05.ply")
    (tmp_path / "folder.ply").mkdir()  # a folder that matches the pattern is no scan: still skipped
    with pytest.raises(MeshFileError, match="expected a mesh file, found a broken symbolic link to .*unmounted") as err:
        MeshFolderDataset(tmp_path, small)
    assert err.value.path == str(link)
    link.unlink()
    ds = MeshFolderDataset(tmp_path, small)
    assert len(ds) == 2
    np.testing.assert_allclose(ds.vertices.numpy(), expected, atol=1e-4)


def test_folder_reads_a_linked_scan_once_and_names_mesh_files_the_pattern_passed_over(tmp_path, small):
    """A symbolic link to a scan was read as a second scan (it could be in both splits), and SCAN.OBJ or a
    hidden .x.ply were left out of the default pattern without a word."""
    import warnings

    rng = np.random.default_rng()
    expected = _write_set(tmp_path, small, rng, n=3, transform=False, colors=False)
    (tmp_path / "zz_alias.obj").symlink_to(tmp_path / "face_00.obj")
    with pytest.warns(UserWarning, match=r"^1 matched file is another name of a file already read, and left out "
                                         rf"\(first: {tmp_path / 'zz_alias.obj'}, the same file as "
                                         rf"{tmp_path / 'face_00.obj'}\)"):
        ds = MeshFolderDataset(tmp_path, small)
    assert len(ds) == 3 and str(tmp_path / "zz_alias.obj") not in ds.files
    np.testing.assert_allclose(ds.vertices.numpy(), expected, atol=1e-4)
    (tmp_path / "zz_alias.obj").unlink()
    (tmp_path / "SCAN.OBJ").write_bytes((tmp_path / "face_00.obj").read_bytes())
    (tmp_path / ".hidden.ply").write_bytes((tmp_path / "face_01.ply").read_bytes())
    with pytest.warns(UserWarning, match=rf"^{tmp_path}: 2 mesh files not matched by pattern '\*\.obj\|\*\.ply\|\*\.off' "
                                         r"left out \(\.hidden\.ply, SCAN\.OBJ; patterns are case-sensitive"):
        assert len(MeshFolderDataset(tmp_path, small)) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(MeshFolderDataset(tmp_path, small, pattern="*.obj|*.ply|*.off|*.OBJ|.*.ply")) == 5


def test_negative_seeds_are_value_errors_naming_their_argument(small):
    """SyntheticFaceDataset(seed=-1) was a TypeError (a bad value is a ValueError), and generator_seed=-1 was
    reported as 'seed'."""
    for name in ("seed", "generator_seed"):
        bad = -int(np.random.default_rng().integers(1, 1000))
        with pytest.raises(ValueError, match=rf"^{name}: expected an integer >= 0, got {bad}$"):
            SyntheticFaceDataset(n=4, template=small, **{name: bad})
        with pytest.raises(TypeError, match=rf"^{name}: expected an integer, got 1.5 \(float\)$"):
            SyntheticFaceDataset(n=4, template=small, **{name: 1.5})
    with pytest.raises(ValueError, match=r"^seed: expected an integer >= 0, got -2$"):
        SyntheticFaces(small, seed=-2)


def test_folder_files_sort_alike_with_either_separator(monkeypatch):
    """A recursive pattern's files were sorted as full paths, so Windows' '\\' (after digits and capitals) and
    POSIX's '/' (before them) ordered a folder differently, and with it the split."""
    import os

    from mesh_decoder.data import datasets

    posix = ["root/A/b.obj", "root/A0.obj", "root/A-b.obj", "root/a/b.obj", "root/a.obj"]
    want = sorted(posix)
    monkeypatch.setattr(os, "sep", "\\")
    windows = [p.replace("/", "\\") for p in posix]
    assert sorted(windows, key=datasets._posix_order) == [p.replace("/", "\\") for p in want]
    assert sorted(windows) != [p.replace("/", "\\") for p in want]  # plain sorting differs
