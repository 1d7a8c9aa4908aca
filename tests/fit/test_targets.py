"""Target dataclasses and target files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mesh_decoder.errors import MeshFileError
from mesh_decoder.fit import (
    ImageTarget,
    LandmarkTarget,
    MeshTarget,
    PointCloudTarget,
    load_landmarks,
    load_target,
    read_image,
    save_landmarks,
)
from mesh_decoder.mesh.io import save_mesh


def test_targets_convert_and_validate():
    rng = np.random.default_rng(1)
    t = MeshTarget(rng.normal(size=(10, 3)).astype(np.float32), weights=rng.random(10))
    assert t.vertices.dtype == torch.float64 and t.kind == "mesh"
    with pytest.raises(ValueError, match=r"expected shape \(N, 3\)"):
        MeshTarget(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="finite"):
        MeshTarget(np.full((10, 3), np.nan))
    with pytest.raises(ValueError, match=r"expected shape \(10,\)"):
        MeshTarget(np.zeros((10, 3)), weights=np.ones(9))
    p = PointCloudTarget(rng.normal(size=(20, 3)), normals=rng.normal(size=(20, 3)) * 5)
    torch.testing.assert_close(p.normals.norm(dim=1), torch.ones(20, dtype=torch.float64))
    with pytest.raises(ValueError, match="correspondence_every"):
        PointCloudTarget(rng.normal(size=(20, 3)), correspondence_every=0)
    lm = LandmarkTarget(rng.random((5, 2)) * 100, ["a", "b", "c", "d", "e"], 128)
    assert lm.image_size == (128, 128)
    assert lm.subset(["c", "a", "e", "b"]).points.tolist() == lm.points[[2, 0, 4, 1]].tolist()
    with pytest.raises(ValueError, match="distinct"):
        LandmarkTarget(rng.random((5, 2)), ["a", "a", "c", "d", "e"], 128)
    with pytest.raises(ValueError, match="expected 5 names"):
        LandmarkTarget(rng.random((5, 2)), ["a", "b"], 128)


def test_image_target_layouts_and_checks():
    rng = np.random.default_rng(2)
    hwc = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    t = ImageTarget(hwc)
    assert t.image.shape == (3, 6, 8) and t.image_size == (6, 8)
    torch.testing.assert_close(t.image[:, 2, 3], torch.tensor(hwc[2, 3] / 255.0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ImageTarget(torch.full((3, 6, 8), 2.0))
    with pytest.raises(ValueError, match=r"mask: expected shape \(6, 8\)"):
        ImageTarget(hwc, mask=np.ones((5, 8), bool))
    lm = LandmarkTarget(rng.random((4, 2)), list("abcd"), (7, 8))
    with pytest.raises(ValueError, match=r"image size \(6, 8\)"):
        ImageTarget(hwc, landmarks=lm)


def test_load_target_mesh_files(tmp_path, template):
    rng = np.random.default_rng(3)
    registered = template.copy(vertices=template.vertices + rng.normal(size=template.vertices.shape))
    save_mesh(registered, tmp_path / "reg.obj")
    t = load_target(tmp_path / "reg.obj", template)
    assert isinstance(t, MeshTarget)
    np.testing.assert_allclose(t.vertices.numpy(), registered.vertices, atol=1e-4)
    assert isinstance(load_target(tmp_path / "reg.obj", template, kind="points"), PointCloudTarget)
    scan = registered.copy(faces=registered.faces[rng.permutation(registered.num_faces)])
    save_mesh(scan, tmp_path / "scan.ply")
    s = load_target(tmp_path / "scan.ply", template)
    assert isinstance(s, PointCloudTarget) and s.normals is not None
    # normals point outwards (+z on the face) on the whole
    assert float(s.normals[:, 2].mean()) > 0.5


def test_a_scan_with_flipped_degenerate_and_duplicate_faces_is_read_for_its_points(tmp_path, template):
    """A raw scan's few bad triangles refused the whole fit ('invalid mesh: inconsistent winding'), though a scan
    gives only its points and normals; a registered mesh target keeps the full check."""
    from mesh_decoder.mesh.io import load_mesh

    rng = np.random.default_rng(5)
    faces = template.faces.copy()
    faces[10] = faces[10, ::-1]  # flipped
    faces[20] = [faces[20, 0], faces[20, 0], faces[20, 1]]  # degenerate
    faces = np.concatenate([faces, faces[30:31]])  # duplicate
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in template.vertices + rng.normal(size=template.vertices.shape)]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    (tmp_path / "scan.obj").write_text("\n".join(lines) + "\n")
    with pytest.raises(MeshFileError, match="inconsistent winding|degenerate"):
        load_mesh(tmp_path / "scan.obj")
    target = load_target(tmp_path / "scan.obj", template, kind="points")
    assert isinstance(target, PointCloudTarget) and target.points.shape == (template.num_vertices, 3)
    assert bool(torch.isfinite(target.normals).all()) and float(target.normals[:, 2].mean()) > 0.5
    with pytest.raises(MeshFileError, match="degenerate"):
        load_target(tmp_path / "scan.obj", template, kind="mesh")
    loose = load_mesh(tmp_path / "scan.obj", topology=False)
    assert np.array_equal(loose.faces, faces)


def test_load_target_point_clouds_and_landmarks(tmp_path):
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(30, 6))
    np.savetxt(tmp_path / "p.xyz", pts)
    np.save(tmp_path / "p.npy", pts[:, :3])
    a = load_target(tmp_path / "p.xyz")
    np.testing.assert_allclose(a.points.numpy(), pts[:, :3])
    assert a.normals is not None
    b = load_target(tmp_path / "p.npy")
    assert b.normals is None and b.points.shape == (30, 3)
    lm = LandmarkTarget(rng.random((5, 2)) * 50, list("vwxyz"), (40, 60), weights=rng.random(5))
    save_landmarks(lm, tmp_path / "lm.json")
    back = load_target(tmp_path / "lm.json")
    assert isinstance(back, LandmarkTarget) and back.names == lm.names and back.image_size == (40, 60)
    torch.testing.assert_close(back.points, lm.points)
    torch.testing.assert_close(back.weights, lm.weights)


def test_target_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_landmarks(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError, match="missing.xyz"):
        load_target(tmp_path / "missing.xyz")
    (tmp_path / "bad.json").write_text(json.dumps({"image_size": [4, 4], "landmarks": {"a": [1, "x"]}}))
    with pytest.raises(MeshFileError, match=r"bad\.json.*\[x, y\]"):
        load_landmarks(tmp_path / "bad.json")
    rng = np.random.default_rng()
    marks = {n: rng.uniform(0, 4, 2).tolist() for n in ("nose_tip", "chin", "eye_l", "eye_r")}
    name = str(rng.choice(list(marks)))
    for value in ("x", [1], None, True, float("nan"), float("inf"), -float(rng.uniform(0.1, 5))):
        (tmp_path / "lm.json").write_text(json.dumps({"image_size": [4, 4], "landmarks": marks,
                                                      "weights": {name: value}}))
        with pytest.raises(MeshFileError) as err:
            load_landmarks(tmp_path / "lm.json")
        assert str(err.value) == (f'{tmp_path / "lm.json"}: "weights"[{name!r}]: expected a finite number >= 0, '
                                  f"got {value!r}")
    weight = float(rng.uniform(0, 5))
    (tmp_path / "lm.json").write_text(json.dumps({"image_size": [4, 4], "landmarks": marks, "weights": {name: weight}}))
    loaded = load_landmarks(tmp_path / "lm.json")
    assert loaded.weights.tolist() == [weight if n == name else 1.0 for n in marks]
    (tmp_path / "few.json").write_text(json.dumps({"image_size": [4, 4], "landmarks": {"a": [1, 2]}}))
    with pytest.raises(MeshFileError, match=r"few\.json.*at least 4"):
        load_landmarks(tmp_path / "few.json")
    (tmp_path / "p.xyz").write_text("1 2\n3 4\n5 6\n")
    with pytest.raises(MeshFileError, match=r"p\.xyz.*\(N, 3\)"):
        load_target(tmp_path / "p.xyz")
    with pytest.raises(MeshFileError, match=r"x\.stl.*unknown target file type"):
        load_target(tmp_path / "x.stl")


def test_point_arrays_of_complex_numbers_are_refused(tmp_path):
    """A complex .npy is not a point cloud: refused naming the file and dtype, not cast to its real parts."""
    rng = np.random.default_rng(5)
    points = rng.normal(size=(20, 3)) + 1j * rng.normal(size=(20, 3))
    np.save(tmp_path / "c.npy", points)
    with pytest.raises(MeshFileError) as err:
        load_target(tmp_path / "c.npy")
    assert str(err.value) == (f"{tmp_path / 'c.npy'}: expected real numbers (an integer or float array), "
                              "got dtype complex128")
    np.save(tmp_path / "i.npy", rng.integers(-50, 50, size=(20, 3)))
    assert load_target(tmp_path / "i.npy").points.dtype == torch.float64


def test_read_image_round_trip(tmp_path):
    pytest.importorskip("PIL", reason="reading photographs needs Pillow")
    from mesh_decoder.render import save_png

    rng = np.random.default_rng(5)
    img = (rng.random((9, 7, 3)) * 255).astype(np.uint8)
    save_png(img, tmp_path / "a.png")
    back = read_image(tmp_path / "a.png")
    assert back.shape == (3, 9, 7)
    np.testing.assert_allclose(back.permute(1, 2, 0).numpy() * 255.0, img, atol=1e-9)
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(MeshFileError, match=r"b\.png"):
        read_image(tmp_path / "b.png")


def test_load_photograph_with_landmarks_and_mask(tmp_path):
    pytest.importorskip("PIL", reason="reading photographs needs Pillow")
    from mesh_decoder.render import save_png

    rng = np.random.default_rng(6)
    img = rng.random((3, 10, 12))
    mask = np.zeros((10, 12, 3))
    mask[2:8, 3:9] = 1.0
    save_png(torch.from_numpy(img), tmp_path / "photo.png")
    save_png(mask, tmp_path / "mask.png")
    save_landmarks(LandmarkTarget(rng.random((4, 2)) * 9, list("abcd"), (10, 12)), tmp_path / "lm.json")
    t = load_target(tmp_path / "photo.png", landmarks=tmp_path / "lm.json", mask=tmp_path / "mask.png")
    assert isinstance(t, ImageTarget) and t.image_size == (10, 12) and t.landmarks.names == tuple("abcd")
    assert int(t.mask.sum()) == 36 and bool(t.mask[2, 3]) and not bool(t.mask[0, 0])
    save_png(mask[:5], tmp_path / "small.png")
    with pytest.raises(MeshFileError, match=r"small\.png.*\(10, 12\)"):
        load_target(tmp_path / "photo.png", mask=tmp_path / "small.png")


def test_read_image_16bit_greyscale(tmp_path):
    pytest.importorskip("PIL", reason="reading photographs needs Pillow")
    from PIL import Image

    rng = np.random.default_rng()
    h, w = int(rng.integers(20, 40)), int(rng.integers(41, 60))
    ramp = np.round(np.linspace(0, 65535, h * w)).astype(np.uint16).reshape(h, w)  # dark to white, 16 bits
    ramp[rng.integers(h), rng.integers(w)] = rng.integers(1, 65535)  # and one random grey
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    with Image.open(tmp_path / "grey16.png") as img:
        assert img.mode in ("I;16", "I")  # a 16-bit greyscale file
    image = read_image(tmp_path / "grey16.png")
    assert image.shape == (3, h, w) and image.dtype == torch.float64
    expected = torch.from_numpy(ramp / 65535.0)
    for channel in image:
        torch.testing.assert_close(channel, expected, atol=1e-12, rtol=0)
    target = load_target(tmp_path / "grey16.png")
    assert isinstance(target, ImageTarget)
    assert float(target.image.mean()) == pytest.approx(float(expected.mean()), abs=1e-9)


def test_landmark_image_size_must_be_whole_pixel_counts(tmp_path):
    rng = np.random.default_rng()
    points = rng.random((4, 2)) * 50
    h, w = int(rng.integers(20, 500)), int(rng.integers(20, 500))
    assert LandmarkTarget(points, list("abcd"), [float(h), float(w)]).image_size == (h, w)
    assert LandmarkTarget(points, list("abcd"), (np.int64(h), w)).image_size == (h, w)
    fraction = float(rng.uniform(0.1, 0.9))
    for size in ([h + fraction, w], (h, w + fraction), (h, float("nan")), h + fraction):  # numbers, not whole
        with pytest.raises(ValueError, match=r"^image_size: expected an int or a pair \(H, W\) of positive whole "
                                             r"numbers of pixels, got "):
            LandmarkTarget(points, list("abcd"), size)
    for size, kind in (((True, w), "bool"), ([str(h), w], "str"), (str(h), "str"), (None, "NoneType")):  # not numbers
        with pytest.raises(TypeError, match=r"^image_size: expected an int or a pair \(H, W\) of positive whole "
                                            rf"numbers of pixels, got {kind} "):
            LandmarkTarget(points, list("abcd"), size)
    marks = {n: p for n, p in zip("abcd", points.tolist())}
    for text in (f"[{h + fraction}, {w}]", f"[Infinity, {w}]", f'["{h}", {w}]', f"[{h}, true]"):
        (tmp_path / "lm.json").write_text('{"image_size": %s, "landmarks": %s}' % (text, json.dumps(marks)))
        with pytest.raises(MeshFileError, match=r"lm\.json: image_size: expected an int or a pair \(H, W\)"):
            load_landmarks(tmp_path / "lm.json")
    (tmp_path / "lm.json").write_text(json.dumps({"image_size": [float(h), float(w)], "landmarks": marks}))
    assert load_landmarks(tmp_path / "lm.json").image_size == (h, w)


def test_targets_whose_points_all_coincide_are_refused(tmp_path):
    """A mesh or landmarks all at one point were fitted by collapsing the face onto it (loss 0, no error), and a scan
    at one point failed with 'init scale: expected a positive number, got 0.0', a value nobody gave."""
    rng = np.random.default_rng(7)
    p = rng.normal(size=3) * 50
    n = int(rng.integers(5, 40))
    same = np.repeat(p[None], n, 0)
    at = re.escape(str(tuple(round(v, 6) for v in p.tolist())))
    with pytest.raises(ValueError, match=rf"^vertices: expected at least two distinct points, got all {n} points at "
                                         rf"{at}$"):
        MeshTarget(same)
    with pytest.raises(ValueError, match=rf"^points: expected at least two distinct points, got all {n} points at "):
        PointCloudTarget(same)
    with pytest.raises(ValueError, match=rf"^points: expected at least two distinct points, got all {n} points at "):
        LandmarkTarget(same[:, :2], [f"l{i}" for i in range(n)], 256)
    # only the points of positive weight count
    spread = rng.normal(size=(n, 3))
    weights = np.zeros(n)
    weights[:3] = rng.uniform(0.5, 2.0, 3)
    spread[:3] = p
    with pytest.raises(ValueError, match=r"^vertices: expected at least two distinct points, got all 3 points of "
                                         r"positive weight at "):
        MeshTarget(spread, weights=weights)
    weights[:3] = [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"^points: expected at least two distinct points, got one point of positive "
                                         r"weight at "):
        LandmarkTarget(spread[:, :2], [f"l{i}" for i in range(n)], 256, weights=weights)
    assert MeshTarget(spread).vertices.shape == (n, 3)  # distinct points pass
    # a point cloud file of one repeated point names the file
    np.savetxt(tmp_path / "one.xyz", same)
    with pytest.raises(MeshFileError, match=r"one\.xyz: points: expected at least two distinct points"):
        load_target(tmp_path / "one.xyz")


def test_point_cloud_options_are_checked_not_coerced():
    """model_to_scan='no' was read as True; trim=True passed as 1.0 while numpy's float32 and 0-d tensors were
    refused as 'expected a positive number'."""
    rng = np.random.default_rng(8)
    points = rng.normal(size=(30, 3))
    trim = float(rng.uniform(1.5, 6.0))
    for value in (np.float32(trim), torch.tensor(trim, dtype=torch.float64), np.float64(trim), np.array(trim)):
        assert PointCloudTarget(points, trim=value).trim == pytest.approx(trim, rel=1e-6)
    for value in (True, "5", torch.tensor([trim]), None):
        with pytest.raises(ValueError, match=r"^trim: expected a positive number \(or inf\), got "):
            PointCloudTarget(points, trim=value)
    for value in ("no", "False", 0, None):
        with pytest.raises(TypeError, match=rf"^model_to_scan: expected True or False, got {re.escape(repr(value))}"):
            PointCloudTarget(points, model_to_scan=value)
    assert PointCloudTarget(points, model_to_scan=np.bool_(False)).model_to_scan is False


def test_landmarks_far_outside_their_image_are_refused(tmp_path):
    """[5000, -300] in a 256 x 256 image was taken, and the fit ended with an RMS of 1.7e5 px; points just
    outside the image (a cropped face) stay allowed."""
    rng = np.random.default_rng()
    h, w = int(rng.integers(64, 400)), int(rng.integers(64, 400))
    points = rng.random((5, 2)) * [w, h]
    points[1] = [-0.5 * w, 1.5 * h]  # outside, within one image size: a cropped face's landmark
    LandmarkTarget(points, list("abcde"), (h, w))
    far = points.copy()
    far[3] = [20.0 * w, -300.0 - h]
    with pytest.raises(ValueError, match=rf"^points: expected pixels \(x, y\) of the {h} x {w} image, within one "
                                         rf"image size of it, got d at \({20 * w:g}, {-300 - h:g}\) \(1 such "
                                         r"landmarks\): another image size, or coordinates not in pixels\?$"):
        LandmarkTarget(far, list("abcde"), (h, w))
    marks = {n: p for n, p in zip("abcde", (points / [w, h]).tolist())}  # normalised, not pixels
    LandmarkTarget(points / [w, h], list("abcde"), (1, 1))  # within [-1, 2] of a 1 x 1 image: allowed
    # fractions of the image's size were taken as pixels, and fitted as a one-pixel face without a word
    with pytest.raises(ValueError, match=rf"^points: expected pixels \(x, y\) of the {h} x {w} image, got all 5 "
                                         rf"landmarks within [0-9.]+ pixels of each other: fractions of the image "
                                         rf"size\? multiply x by {w} and y by {h}$"):
        LandmarkTarget(rng.random((5, 2)), list("abcde"), (h, w))
    (tmp_path / "lm.json").write_text(json.dumps({"image_size": [2, 2], "landmarks": {k: [v[0] * w, v[1] * h]
                                                                                     for k, v in marks.items()}}))
    with pytest.raises(MeshFileError, match=r"lm\.json: points: expected pixels \(x, y\) of the 2 x 2 image"):
        load_landmarks(tmp_path / "lm.json")


def test_landmark_names_must_be_a_sequence():
    """names=None failed with Python's "'NoneType' object is not iterable", naming no argument."""
    points = np.random.default_rng(9).random((4, 2)) * 30
    for names in (None, 4, 2.5):
        with pytest.raises(TypeError, match=rf"^names: expected a sequence of landmark names, got "
                                            rf"{type(names).__name__}$"):
            LandmarkTarget(points, names, 32)


def test_image_target_refuses_empty_images_and_soft_masks():
    """An image without pixels failed inside torch ('min(): Expected reduction dim ...'); a soft or NaN mask was
    read as 'face wherever non-zero'; a mask of strings failed in torch.from_numpy."""
    rng = np.random.default_rng(10)
    for image, shape in ((torch.zeros(3, 0, 5), (3, 0, 5)), (np.zeros((0, 4, 3)), (0, 4, 3))):
        with pytest.raises(ValueError, match=rf"^image: expected at least one pixel, got shape "
                                             rf"{re.escape(str(shape))}$"):
            ImageTarget(image)
    h, w = 6, 9
    image = rng.random((h, w, 3))
    soft = rng.uniform(0.05, 0.95, (h, w))
    for mask in (soft, torch.from_numpy(soft), np.where(soft > 0.5, np.nan, 1.0)):
        with pytest.raises(ValueError, match=r"^mask: expected bool values \(or floats 0 and 1\), got "):
            ImageTarget(image, mask=mask)
    with pytest.raises(TypeError, match=r"^mask: expected a bool array or tensor, got dtype <U"):
        ImageTarget(image, mask=np.full((h, w), "face"))
    # bools, 0/255 bytes and 0/1 floats are masks
    face = soft > 0.5
    for mask in (face, face.astype(np.uint8) * 255, face.astype(np.float32), torch.from_numpy(face).double()):
        assert torch.equal(ImageTarget(image, mask=mask).mask, torch.from_numpy(face))
