"""The ``mesh-decoder fit`` command: arguments, outputs and one-line errors."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import torch

from mesh_decoder.errors import MeshFileError, ModelFileError, UsageError
from mesh_decoder.fit import LandmarkTarget, add_fit_arguments, apply_similarity, run_fit, save_landmarks
from mesh_decoder.mesh.io import load_mesh, save_mesh
from mesh_decoder.mesh.templates import face_template
from mesh_decoder.model_files import save_model

from .conftest import make_autoencoder, random_similarity

_SHORT = ["--stages", "pose:20", "pose+shape:60", "--quiet"]


def _run(argv) -> int:
    parser = add_fit_arguments(argparse.ArgumentParser(prog="mesh-decoder fit"))
    return run_fit(parser.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def pca_file(tmp_path_factory, pca):
    path = tmp_path_factory.mktemp("model") / "pca.safetensors"
    save_model(pca, path)
    return path


def test_registered_mesh_outputs(tmp_path, pca_file, faces, template, capsys):
    g = torch.Generator().manual_seed(61)
    s, R, t = random_similarity(g)
    clean = apply_similarity(faces[0][205].double(), s, R, t)
    save_mesh(template.copy(vertices=clean.numpy()), tmp_path / "target.obj")
    code = _run([pca_file, "--target", tmp_path / "target.obj", "-o", tmp_path / "fitted.ply", "--json",
                 tmp_path / "fit.json", "--overlay", tmp_path / "overlay.png", "--quiet"])
    assert code == 0
    out = capsys.readouterr().out
    assert "mesh target" in out and "built-in face template (800 vertices, seed 0)" in out
    fitted = load_mesh(tmp_path / "fitted.ply")
    assert fitted.num_vertices == 800 and set(fitted.landmarks) == set(template.landmarks)
    assert float(np.linalg.norm(fitted.vertices - clean.numpy(), axis=1).mean()) < 1.0
    data = json.loads((tmp_path / "fit.json").read_text())
    assert data["target_kind"] == "mesh" and len(data["losses"]["vertex"]) == len(data["losses"]["total"])
    assert (tmp_path / "overlay.png").stat().st_size > 1000


def test_landmarks_with_perspective_camera(tmp_path, pca_file, template):
    rng = np.random.default_rng(62)
    names = sorted(template.landmarks)
    # a frontal view through a pinhole 650 mm away (y up, looking along -z; OpenCV pixel rows go down)
    X = template.vertices[[template.landmarks[n] for n in names]] + np.array([0.0, 0.0, -650.0])
    f = 600.0
    pixels = np.stack([f * X[:, 0] / -X[:, 2] + 127.5, -f * X[:, 1] / -X[:, 2] + 127.5], 1) + rng.normal(size=(33, 2))
    save_landmarks(LandmarkTarget(pixels, names, 256), tmp_path / "lm.json")
    assert _run([pca_file, "--target", tmp_path / "lm.json", "--camera", "perspective", "--focal", 600,
                 "--json", tmp_path / "fit.json", *_SHORT]) == 0
    data = json.loads((tmp_path / "fit.json").read_text())
    assert data["camera"]["type"] == "perspective" and data["camera"]["K"][0] == pytest.approx(600.0)
    # about 4 degrees after these 80 iterations from a frontal start (3.9 or 4.0, whether the 20-step pose stage,
    # whose loss rises at its end, ends at its last or its lowest-loss iterate); the truth is 0
    assert data["rotation_angle_deg"] < 4.5 and abs(data["translation"][2] + 650.0) < 60.0


def test_photograph_with_landmarks_and_overlay(tmp_path, pca_file, template, photo_target):
    pytest.importorskip("PIL", reason="reading photographs needs Pillow")
    from mesh_decoder.render import save_png

    target = photo_target[0]
    save_png(target.image, tmp_path / "photo.png")
    save_landmarks(target.landmarks, tmp_path / "lm.json")
    assert _run([pca_file, "--target", tmp_path / "photo.png", "--landmarks", tmp_path / "lm.json", "--overlay",
                 tmp_path / "overlay.png", "--stages", "pose:20", "pose+shape:40", "appearance+pose+shape:10",
                 "--quiet"]) == 0
    assert (tmp_path / "overlay.png").stat().st_size > 500


def test_autoencoder_with_hierarchy_beside(tmp_path, hierarchy, template, faces):
    from mesh_decoder.hierarchy import save_hierarchy

    ae = make_autoencoder(hierarchy, template)
    save_model(ae, tmp_path / "model.safetensors", hierarchy=hierarchy)
    save_mesh(template.copy(vertices=template.vertices + 1.0), tmp_path / "target.obj")
    with pytest.raises(ModelFileError, match="--hierarchy"):
        _run([tmp_path / "model.safetensors", "--target", tmp_path / "target.obj", "-o", tmp_path / "o.obj"])
    cut = tmp_path / "cut" / "model.safetensors"  # cut off after its header, no hierarchy beside it
    cut.parent.mkdir()
    cut.write_bytes((tmp_path / "model.safetensors").read_bytes()[:-100])
    with pytest.raises(ModelFileError, match=r"model\.safetensors: truncated: its header describes \d+ bytes of "
                                             r"tensor data, the file holds \d+") as info:
        _run([cut, "--target", tmp_path / "target.obj", "-o", tmp_path / "o.obj"])
    assert "--hierarchy" not in str(info.value)  # the file is what is wrong, not a missing option
    save_hierarchy(hierarchy, tmp_path / "hierarchy.npz")
    assert _run([tmp_path / "model.safetensors", "--target", tmp_path / "target.obj", "-o", tmp_path / "o.obj",
                 *_SHORT]) == 0
    other = face_template(800, seed=1)
    save_mesh(other, tmp_path / "other.obj")
    # the error gave two hashes only: the counts say whether the file is another mesh or another shape of it
    V, F = template.num_vertices, template.num_faces
    same = rf"\({V} vertices, {F} faces as the model's, other positions\)" if other.num_vertices == V else \
        rf"\({other.num_vertices} vertices, {other.num_faces} faces; the model's: {V} vertices, {F} faces\)"
    with pytest.raises(ModelFileError, match=same + "; pass --template"):
        _run([tmp_path / "model.safetensors", "--target", tmp_path / "target.obj", "--template",
              tmp_path / "other.obj", "-o", tmp_path / "o.obj"])
    save_mesh(face_template(900, seed=0), tmp_path / "t900.obj")
    with pytest.raises(ModelFileError, match=rf"has hash \w+\.\.\. \(900 vertices, \d+ faces; the model's: {V} "
                                             rf"vertices, {F} faces\); pass --template"):
        _run([tmp_path / "model.safetensors", "--target", tmp_path / "target.obj", "--template",
              tmp_path / "t900.obj", "-o", tmp_path / "o.obj"])
    save_model(ae.encoder, tmp_path / "encoder.safetensors", hierarchy=hierarchy)
    with pytest.raises(ModelFileError, match="SpiralEncoder"):
        _run([tmp_path / "encoder.safetensors", "--target", tmp_path / "target.obj", "-o", tmp_path / "o.obj"])


def test_argument_errors(tmp_path, pca_file, template):
    save_mesh(template, tmp_path / "t.obj")
    with pytest.raises(ValueError, match="at least one of -o"):
        _run([pca_file, "--target", tmp_path / "t.obj"])
    with pytest.raises(FileNotFoundError, match="missing.obj"):
        _run([pca_file, "--target", tmp_path / "missing.obj", "-o", tmp_path / "o.obj"])
    with pytest.raises(ValueError, match="only a photograph"):
        _run([pca_file, "--target", tmp_path / "t.obj", "--landmarks", tmp_path / "x.json", "-o", tmp_path / "o.obj"])
    with pytest.raises(ValueError, match="GROUPS:ITERATIONS"):
        _run([pca_file, "--target", tmp_path / "t.obj", "-o", tmp_path / "o.obj", "--stages", "pose"])
    save_mesh(face_template(900, seed=0), tmp_path / "t900.obj")
    with pytest.raises(ModelFileError, match="decodes 800 vertices"):
        _run([pca_file, "--target", tmp_path / "t.obj", "--template", tmp_path / "t900.obj", "-o", tmp_path / "o.obj"])


def test_options_the_target_or_camera_would_ignore_are_refused(tmp_path, pca_file, template):
    """--focal without the perspective camera, and --mask with a target other than a photograph, did nothing."""
    rng = np.random.default_rng(64)
    save_mesh(template.copy(vertices=template.vertices + rng.normal(size=(template.num_vertices, 3))), tmp_path / "t.obj")
    names = sorted(template.landmarks)
    save_landmarks(LandmarkTarget(rng.uniform(10, 50, size=(len(names), 2)), names, 64), tmp_path / "lm.json")
    with pytest.raises(ValueError, match=r"^--focal: only the perspective camera has a focal length; add --camera "
                                         r"perspective \(got --camera weak\)$"):
        _run([pca_file, "--target", tmp_path / "lm.json", "--json", tmp_path / "f.json", "--focal", "500"])
    (tmp_path / "mask.png").write_bytes(b"")  # never read: refused before
    with pytest.raises(ValueError, match="^--mask: only a photograph target takes a mask, got a mesh target$"):
        _run([pca_file, "--target", tmp_path / "t.obj", "--mask", tmp_path / "mask.png", "-o", tmp_path / "o.obj"])
    with pytest.raises(ValueError, match=rf"^--camera perspective: {re.escape(str(tmp_path / 't.obj'))} is a mesh "
                                         r"target, fitted in 3D with no camera; leave --camera out$"):
        _run([pca_file, "--target", tmp_path / "t.obj", "--camera", "perspective", "-o", tmp_path / "o.obj"])
    assert not (tmp_path / "f.json").exists() and not (tmp_path / "o.obj").exists()


def test_landmark_names_the_template_lacks_name_the_file(tmp_path, pca_file, template, photo_target):
    rng = np.random.default_rng()
    names = [str(n) for n in rng.choice(sorted(template.landmarks), 5, replace=False)]
    unknown = f"not_a_landmark_{rng.integers(1000)}"
    target = LandmarkTarget(rng.uniform(10, 80, (6, 2)), [*names, unknown], photo_target[0].image_size)
    save_landmarks(target, tmp_path / "lm.json")
    expected = (rf"^{re.escape(str(tmp_path / 'lm.json'))}: landmarks \['{unknown}'\] are not landmarks of the "
                rf"built-in face template \(800 vertices, seed 0\); expected names from ")
    with pytest.raises(MeshFileError, match=expected):
        _run([pca_file, "--target", tmp_path / "lm.json", "--json", tmp_path / "fit.json", *_SHORT])
    pytest.importorskip("PIL", reason="reading photographs needs Pillow")
    from mesh_decoder.render import save_png

    save_png(photo_target[0].image, tmp_path / "photo.png")
    with pytest.raises(MeshFileError, match=expected):
        _run([pca_file, "--target", tmp_path / "photo.png", "--landmarks", tmp_path / "lm.json", "--json",
              tmp_path / "fit.json", *_SHORT])
    assert not (tmp_path / "fit.json").exists()


def test_device_and_output_paths_are_checked_before_loading(tmp_path, template, monkeypatch):
    import mesh_decoder.fit.command as command

    def no_load(args):
        raise AssertionError("the model was loaded before the checks")

    monkeypatch.setattr(command, "_load", no_load)
    save_mesh(template, tmp_path / "t.obj")
    common = ["model.safetensors", "--target", tmp_path / "t.obj"]
    missing = f"cuda:{torch.cuda.device_count()}"
    with pytest.raises(ValueError, match=rf"^--device {missing}: ") as caught:
        _run([*common, "-o", tmp_path / "o.obj", "--device", missing])
    assert not isinstance(caught.value, UsageError)  # a device this machine lacks: exit status 1
    # a malformed device is a usage error (exit status 2, as in bench); it was 1
    with pytest.raises(UsageError, match=r"^--device: expected cpu, cuda, cuda:N or mps, got 'tpu'$"):
        _run([*common, "-o", tmp_path / "o.obj", "--device", "tpu"])
    a_dir = tmp_path / f"d{np.random.default_rng().integers(100)}"
    a_dir.mkdir()
    for option in ("-o", "--json", "--overlay"):
        with pytest.raises(ValueError, match=rf"^{option}.* {a_dir}: expected a file path, found a directory$"):
            _run([*common, option, a_dir])


def test_a_template_file_missing_from_here_asks_for_template(tmp_path, pca, template, monkeypatch):
    """A model trained on a template file names it by the path its config gave (relative to where it trained);
    from another folder the file is missing: a ModelFileError naming the model, the path and --template."""
    model = tmp_path / "pca.safetensors"
    save_model(pca, model, extra_meta={"template": {"kind": "file", "path": "data/template.obj"}})
    save_mesh(template, tmp_path / "t.obj")
    monkeypatch.chdir(tmp_path)  # no data/ here
    with pytest.raises(ModelFileError) as info:
        _run([model, "--target", tmp_path / "t.obj", "-o", tmp_path / "o.obj", "--quiet"])
    assert str(info.value) == (f"{model}: cannot build the model's template (data/template.obj: No such file or "
                               "directory); pass --template with the model's template")
    assert _run([model, "--target", tmp_path / "t.obj", "--template", tmp_path / "t.obj", "-o", tmp_path / "o.obj",
                 "--stages", "pose:2", "--quiet"]) == 0


def test_a_training_checkpoint_is_named_as_such(tmp_path, template):
    """render and evaluate read a checkpoint; fit needs the model file (with its fitted prior) and says so."""
    from mesh_decoder.train import save_checkpoint

    torch.manual_seed(63)
    save_checkpoint(tmp_path / "checkpoint.safetensors", torch.nn.Linear(3, 2), meta={"epoch": 1})
    save_mesh(template, tmp_path / "t.obj")
    expected = f"{tmp_path / 'checkpoint.safetensors'}: a training checkpoint, not a model file; use the run's "
    with pytest.raises(ModelFileError, match=re.escape(expected + "model.safetensors")):
        _run([tmp_path / "checkpoint.safetensors", "--target", tmp_path / "t.obj", "-o", tmp_path / "o.obj"])


def test_a_decoder_file_fits_with_the_latent_prior_it_stores(tmp_path, hierarchy, template):
    """A training run's decoder.safetensors stores the fitted prior in its metadata; fitting the decoder file
    uses it, so the fit equals the autoencoder file's (the decoders are the same)."""
    from mesh_decoder.hierarchy import save_hierarchy

    ae = make_autoencoder(hierarchy, template, seed=3)
    save_hierarchy(hierarchy, tmp_path / "hierarchy.npz")
    save_model(ae, tmp_path / "model.safetensors", hierarchy=hierarchy)
    prior = {"mean": ae.latent_mean.tolist(), "cov_cholesky": ae.latent_cov_cholesky.tolist()}
    save_model(ae.decoder, tmp_path / "decoder.safetensors", hierarchy=hierarchy, extra_meta={"latent_prior": prior})
    save_model(ae.decoder, tmp_path / "plain.safetensors", hierarchy=hierarchy)
    with torch.no_grad():
        truth = ae.decode(ae.sample_latents(1, generator=torch.Generator().manual_seed(9)))[0]
    save_mesh(template.copy(vertices=truth.double().numpy()), tmp_path / "target.obj")
    losses = {}
    for name in ("model", "decoder", "plain"):
        assert _run([tmp_path / f"{name}.safetensors", "--target", tmp_path / "target.obj", "--json",
                     tmp_path / f"{name}.json", *_SHORT]) == 0
        losses[name] = json.loads((tmp_path / f"{name}.json").read_text())["final_losses"]
    assert losses["decoder"] == pytest.approx(losses["model"], rel=1e-4, abs=1e-6)
    assert losses["plain"]["prior"] != pytest.approx(losses["model"]["prior"], rel=0.1)  # N(0, I) differs

    damaged = dict(prior, cov_cholesky=prior["cov_cholesky"][:-1])
    save_model(ae.decoder, tmp_path / "damaged.safetensors", hierarchy=hierarchy, extra_meta={"latent_prior": damaged})
    with pytest.raises(ModelFileError, match=r"damaged\.safetensors: extra_meta\.latent_prior: expected"):
        _run([tmp_path / "damaged.safetensors", "--target", tmp_path / "target.obj", "--json", tmp_path / "d.json"])


def test_a_stored_prior_of_another_latent_size_names_the_file(tmp_path, hierarchy, template):
    """A decoder file whose stored prior is a valid Gaussian of another size was refused by the fit as
    'prior: expected size 8 ...', naming neither the file nor the metadata entry."""
    from mesh_decoder.hierarchy import save_hierarchy

    ae = make_autoencoder(hierarchy, template, seed=4)
    save_hierarchy(hierarchy, tmp_path / "hierarchy.npz")
    g = torch.Generator().manual_seed(12)
    z = ae.latent_size + 2
    chol = torch.tril(torch.randn(z, z, generator=g), diagonal=-1) + torch.diag(torch.rand(z, generator=g) + 0.5)
    prior = {"mean": torch.randn(z, generator=g).tolist(), "cov_cholesky": chol.tolist()}
    save_model(ae.decoder, tmp_path / "decoder.safetensors", hierarchy=hierarchy, extra_meta={"latent_prior": prior})
    save_mesh(template, tmp_path / "target.obj")
    expected = (f"{tmp_path / 'decoder.safetensors'}: extra_meta.latent_prior: expected Z = {ae.latent_size} "
                f"(the model's latent size), got a prior of size {z}")
    with pytest.raises(ModelFileError, match=re.escape(expected)):
        _run([tmp_path / "decoder.safetensors", "--target", tmp_path / "target.obj", "--json", tmp_path / "f.json",
              *_SHORT])
    assert not (tmp_path / "f.json").exists()


def test_point_files_that_hold_no_array_are_one_line_errors(tmp_path, pca_file, recwarn):
    """An empty .npy raised numpy's EOFError (a traceback), random bytes in a .npy were reported as 'pickled
    data ... load it unsafely', and an empty .xyz printed numpy's UserWarning before the error."""
    rng = np.random.default_rng(66)
    np.save(tmp_path / "cut.npy", rng.normal(size=(40, 3)))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "cut.npy").read_bytes()[:60])
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "noise.npy").write_bytes(bytes([0x80]) + rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    (tmp_path / "empty.xyz").write_text("# no points\n")
    want = "expected rows of 3 or 6 numbers (x y z [nx ny nz])"
    for name, reason in (("empty.npy", f"{want}, found a file that is not .npy (it starts with b'')"),
                         ("noise.npy", f"{want}, found a file that is not .npy (it starts with b'\\x80"),
                         ("cut.npy", f"{want}, could not load it"),
                         ("empty.xyz", "expected rows of 3 or 6 numbers (x y z [nx ny nz]), found none")):
        with pytest.raises(MeshFileError, match="^" + re.escape(f"{tmp_path / name}: {reason}")) as info:
            _run([pca_file, "--target", tmp_path / name, "-o", tmp_path / "o.obj", *_SHORT])
        assert "pickle" not in str(info.value), info.value
    assert [str(w.message) for w in recwarn] == []
    with pytest.raises(MeshFileError, match=r"expected a mesh file or a point cloud \(\.obj, \.off, \.ply, \.xyz, "
                                            r"\.txt, \.npy\) for a points target, got '\.json'"):
        _run([pca_file, "--target", tmp_path / "lm.json", "--target-kind", "points", "-o", tmp_path / "o.obj"])
    assert not (tmp_path / "o.obj").exists()


def test_number_and_stage_errors_name_the_option(tmp_path, pca_file, template, monkeypatch):
    """--prior-weight inf and --focal inf passed the command's checks and were refused inside the fit as
    'prior_weight: ...' / 'focal: ...'; a bad --stages entry was refused as 'iterations: ...' or 'lr: ...'."""
    import mesh_decoder.fit.command as command

    def no_load(args):
        raise AssertionError("the model was loaded before the checks")

    monkeypatch.setattr(command, "_load", no_load)
    rng = np.random.default_rng(67)
    save_mesh(template.copy(vertices=template.vertices + rng.normal(size=(template.num_vertices, 3))), tmp_path / "t.obj")
    common = [pca_file, "--target", tmp_path / "t.obj", "-o", tmp_path / "o.obj"]
    cases = [
        (["--stages", "pose:20", "pose:-3"], "--stages pose:-3: iterations: expected a non-negative int, got -3"),
        (["--stages", "pose:20:nan"], "--stages pose:20:nan: lr: expected a positive number, got nan"),
        (["--stages", "pose"], "--stages pose: expected GROUPS:ITERATIONS[:LR], e.g. 'pose+shape:300:0.02'"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            _run([*common, *options])
    assert not (tmp_path / "o.obj").exists()


@pytest.mark.parametrize("options, message", [
    (["--prior-weight", "inf"], "argument --prior-weight: expected a finite number >= 0, got 'inf'"),
    (["--prior-weight", "-1"], "argument --prior-weight: expected a finite number >= 0, got '-1'"),
    (["--prior-weight", "heavy"], "argument --prior-weight: expected a finite number >= 0, got 'heavy'"),
    (["--camera", "perspective", "--focal", "inf"], "argument --focal: expected a finite number of pixels > 0, got 'inf'"),
    (["--camera", "perspective", "--focal", "wide"], "argument --focal: expected a finite number of pixels > 0, got 'wide'"),
])
def test_fit_number_options_are_usage_errors_in_the_wording_of_the_other_commands(options, message, tmp_path, capsys):
    """--prior-weight and --focal said 'invalid float value' for a word (argparse's wording) and were checked
    apart from it for range, where every other number option of the CLI says what it expected in one place."""
    from mesh_decoder.cli import main

    assert main(["fit", "m.safetensors", "--target", str(tmp_path / "t.obj"), "-o", str(tmp_path / "o.obj"),
                 *options]) == 2
    assert capsys.readouterr().err == f"error: mesh-decoder fit: {message}\n"
    assert list(tmp_path.iterdir()) == []


def test_output_formats_are_checked_before_the_fit(tmp_path, pca_file, template, monkeypatch):
    """-o with no mesh extension (or .off, which cannot hold the template's UVs) failed only after the whole fit,
    and --overlay x.jpg wrote PNG bytes under a .jpg name."""
    import importlib

    fit_module = importlib.import_module("mesh_decoder.fit.fit")  # the module: the package exports fit()

    def no_fit(*args, **kwargs):
        raise AssertionError("the fit ran before the output formats were checked")

    monkeypatch.setattr(fit_module, "fit", no_fit)
    rng = np.random.default_rng(68)
    save_mesh(template.copy(vertices=template.vertices + rng.normal(size=(template.num_vertices, 3))), tmp_path / "t.obj")
    common = [pca_file, "--target", tmp_path / "t.obj", *_SHORT]
    cases = [
        (["-o", tmp_path / "f.xyz"], f"-o/--output {tmp_path / 'f.xyz'}: expected a file name ending in .obj or .off "
                                     "or .ply, got '.xyz'"),
        (["-o", tmp_path / "f"], f"-o/--output {tmp_path / 'f'}: expected a file name ending in .obj or .off or .ply, "
                                 "got no extension"),
        (["--overlay", tmp_path / "o.jpg"], f"--overlay {tmp_path / 'o.jpg'}: expected a file name ending in .png, "
                                            "got '.jpg'"),
        (["-o", tmp_path / "f.off"], f"-o/--output {tmp_path / 'f.off'}: expected .obj or .ply, OFF cannot store the "
                                     "texture coordinates of the built-in face template (800 vertices, seed 0)"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            _run([*common, *options])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.obj"]


def test_landmarks_beyond_float32_range_name_the_file(tmp_path, pca_file, template):
    """Landmarks (or an image size) beyond float32 range are finite in float64 but overflow in the fit's float32:
    the fit's camera SVD ended in a LinAlgError traceback."""
    rng = np.random.default_rng(69)
    names = sorted(template.landmarks)
    marks = {n: [float(x), float(y)] for n, (x, y) in zip(names, rng.uniform(20, 200, size=(len(names), 2)))}
    big = float(rng.uniform(1e300, 1e301))
    for name, data, message in (
        ("far.json", {"image_size": [256, 256], "landmarks": dict(marks, **{names[3]: [big, 5.0]})},
         f"points: expected values within float32 range (|x| <= 3.403e+38), got {big:.4g}"),
        ("huge.json", {"image_size": [big, 256], "landmarks": marks},
         f"image_size: expected at most 3.403e+38 pixels per side, got [{big!r}, 256]"),
    ):
        (tmp_path / name).write_text(json.dumps(data))
        with pytest.raises(MeshFileError, match="^" + re.escape(f"{tmp_path / name}: {message}")):
            _run([pca_file, "--target", tmp_path / name, "-o", tmp_path / "o.obj", *_SHORT])
    assert not (tmp_path / "o.obj").exists()


def test_a_run_folder_fits_its_model_file(tmp_path, pca, faces, template):
    """render and evaluate take a run folder; fit said 'cannot read the model file (Is a directory)'."""
    from mesh_decoder.errors import ModelFileNotFoundError

    run = tmp_path / "run"
    run.mkdir()
    save_model(pca, run / "model.safetensors")
    g = torch.Generator().manual_seed(63)
    s, R, t = random_similarity(g)
    save_mesh(template.copy(vertices=apply_similarity(faces[0][206].double(), s, R, t).numpy()), tmp_path / "t.obj")
    for model, out in ((run, "folder.json"), (run / "model.safetensors", "file.json")):
        assert _run([model, "--target", tmp_path / "t.obj", "--json", tmp_path / out, *_SHORT]) == 0
    folder, file = (json.loads((tmp_path / name).read_text()) for name in ("folder.json", "file.json"))
    assert folder["losses"] == file["losses"] and folder["latent"] == file["latent"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelFileNotFoundError, match=re.escape(f"{empty / 'model.safetensors'}: expected the run "
                                                               "folder's model file, found none")):
        _run([empty, "--target", tmp_path / "t.obj", "--json", tmp_path / "e.json", *_SHORT])


def test_scan_options_reach_the_target_and_are_refused_for_other_targets(tmp_path, pca_file, template, monkeypatch):
    """A partial scan could not switch off model-to-scan pairing from the command line, nor change trim or the
    correspondence interval, although the PointCloudTarget docstring recommends it for partial scans."""
    import importlib

    fit_module = importlib.import_module("mesh_decoder.fit.fit")  # the module (the package exports its function)
    rng = np.random.default_rng(65)
    crop = template.vertices[template.vertices[:, 1] > np.median(template.vertices[:, 1])]  # the upper half
    np.savetxt(tmp_path / "scan.xyz", crop + rng.normal(scale=0.3, size=crop.shape))
    seen = {}
    real_fit = fit_module.fit

    def spy(model, target, **kwargs):
        seen["target"] = target
        return real_fit(model, target, **kwargs)

    monkeypatch.setattr(fit_module, "fit", spy)
    assert _run([pca_file, "--target", tmp_path / "scan.xyz", "--partial-scan", "--trim", "3.5",
                 "--correspondence-every", "4", "--json", tmp_path / "f.json", *_SHORT]) == 0
    target = seen["target"]
    assert (target.kind, target.model_to_scan, target.trim, target.correspondence_every) == ("points", False, 3.5, 4)
    assert _run([pca_file, "--target", tmp_path / "scan.xyz", "--json", tmp_path / "g.json", *_SHORT]) == 0
    target = seen["target"]
    assert (target.model_to_scan, target.trim, target.correspondence_every) == (True, 5.0, 10)  # the defaults
    save_mesh(template, tmp_path / "t.obj")
    with pytest.raises(ValueError, match=r"^--partial-scan, --trim, --correspondence-every: only a scan or "
                                         r"point-cloud target takes them, got a mesh target$"):
        _run([pca_file, "--target", tmp_path / "t.obj", "--trim", "4", "-o", tmp_path / "o.obj"])
    with pytest.raises(ValueError, match=r"^--trim: expected a positive number of median distances"):
        _run([pca_file, "--target", tmp_path / "scan.xyz", "--trim", "0", "-o", tmp_path / "o.obj"])
    with pytest.raises(SystemExit):
        _run([pca_file, "--target", tmp_path / "scan.xyz", "--correspondence-every", "0", "-o", tmp_path / "o.obj"])


def test_the_printed_losses_give_their_root_mean_squares(tmp_path, pca_file, template, capsys):
    """The printed terms are means of squares (mm² for a mesh in mm): each now shows its RMS beside it."""
    rng = np.random.default_rng(66)
    save_mesh(template.copy(vertices=template.vertices + rng.normal(size=template.vertices.shape)), tmp_path / "t.obj")
    assert _run([pca_file, "--target", tmp_path / "t.obj", "--json", tmp_path / "f.json", *_SHORT]) == 0
    out = capsys.readouterr().out
    value, rms = re.search(r"vertex ([0-9.e+-]+) \(RMS ([0-9.e+-]+)\)", out).groups()
    assert float(rms) == pytest.approx(float(value) ** 0.5, rel=1e-3)
    assert re.search(r"prior [0-9.e+-]+(,|;|$)", out, flags=re.M)  # the prior is an energy, not a distance
    # the total is the weighted sum: it was printed beside the unweighted terms as one of them ('total 46.7')
    total = float(re.search(r"; weighted total ([0-9.e+-]+)$", out, flags=re.M).group(1))
    fitted = json.loads((tmp_path / "f.json").read_text())
    assert total == pytest.approx(sum(w * fitted["final_losses"][k] for k, w in fitted["weights"].items()), rel=1e-3)
    assert "total (RMS" not in out and ", total" not in out
