"""``mesh-decoder sample``: a trained model's faces as mesh files, with the latent codes they decode from."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from mesh_decoder.cli import main
from mesh_decoder.mesh.io import load_mesh
from tests.test_cli import _one_error_line

Z = 4  # the latent size of the tiny_run fixtures (tests/conftest.py)


def _model(run):
    """The trained model of ``run`` and its template faces ``(F, 3)``."""
    from mesh_decoder.train import load_trained

    model, hierarchy, _, _ = load_trained(run)
    return model, hierarchy.levels[0].faces.numpy()


def _decode(model, codes: np.ndarray) -> np.ndarray:
    """What ``model`` decodes from ``codes`` ``(N, Z)``: ``(N, V, C)`` float32."""
    with torch.inference_mode():
        return model.decode(torch.from_numpy(codes)).numpy()


def _written(folder, ext: str = "ply") -> tuple[np.ndarray, list]:
    """The latents and the meshes (in name order) that sample wrote to ``folder``."""
    names = sorted(p.name for p in folder.iterdir())
    faces = [n for n in names if n.startswith("face_")]
    assert names == sorted(faces + ["latents.npy"]) and all(n.endswith(f".{ext}") for n in faces), names
    return np.load(folder / "latents.npy", allow_pickle=False), [load_mesh(folder / n) for n in faces]


def _snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_sampled_meshes_are_the_faces_render_shows(tiny_run, tmp_path, capsys, monkeypatch):
    """The files are the decoded latents, on the template's faces, and the faces render draws for the seed."""
    import mesh_decoder.render as render

    out = tmp_path / "faces"
    assert main(["sample", str(tiny_run), "--n", "3", "--seed", "5", "-o", str(out)]) == 0
    assert capsys.readouterr().out == (f"wrote 3 meshes (500 vertices, shape only) and latents.npy to {out}: "
                                       "sampled from the stored latent prior\n")
    assert sorted(p.name for p in out.iterdir()) == ["face_0000.ply", "face_0001.ply", "face_0002.ply", "latents.npy"]
    latents, meshes = _written(out)
    assert latents.dtype == np.float32 and latents.shape == (3, Z)
    model, faces = _model(tiny_run)
    decoded = _decode(model, latents)  # (3, V, 3)
    for mesh, vertices in zip(meshes, decoded):
        assert mesh.num_vertices == 500 and mesh.colors is None
        np.testing.assert_array_equal(mesh.faces, faces)
        np.testing.assert_allclose(mesh.vertices, vertices, rtol=1e-6, atol=1e-5)
    sampled = model.sample(3, generator=torch.Generator().manual_seed(5)).numpy()
    np.testing.assert_allclose(np.stack([m.vertices for m in meshes]), sampled, rtol=1e-6, atol=1e-5)

    grids = []
    monkeypatch.setattr(render, "face_grid", lambda vertices, *args, **kwargs: grids.append(vertices.clone()))
    assert main(["render", str(tiny_run), "--n", "3", "--seed", "5", "-o", str(tmp_path / "g.png")]) == 0
    np.testing.assert_allclose(np.stack([m.vertices for m in meshes]), grids[0].numpy(), rtol=1e-6, atol=1e-5)

    assert main(["sample", str(tiny_run), "--n", "3", "--seed", "6", "-o", str(tmp_path / "other")]) == 0
    assert not np.allclose(np.load(tmp_path / "other" / "latents.npy"), latents)  # the seed is used
    assert main(["sample", str(tiny_run), "-o", str(tmp_path / "defaults")]) == 0  # --n 16 --seed 0, as render
    default_latents, default_meshes = _written(tmp_path / "defaults")
    assert len(default_meshes) == 16 and default_meshes[-1].num_vertices == 500
    expected = model.sample_latents(16, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_array_equal(default_latents, expected)


def test_a_checkpoint_samples_the_prior_fitted_to_the_training_faces(tiny_run, tmp_path, capsys):
    """As render: a checkpoint's prior is fitted now, and samples the faces the model file samples."""
    for name in ("model.safetensors", "checkpoint.safetensors"):
        assert main(["sample", str(tiny_run / name), "--n", "2", "--seed", "3", "-o", str(tmp_path / name)]) == 0
    assert "sampled from the latent prior of the training faces (fitted now" in capsys.readouterr().out
    (_, from_model), (_, from_checkpoint) = (_written(tmp_path / n) for n in ("model.safetensors",
                                                                              "checkpoint.safetensors"))
    for a, b in zip(from_model, from_checkpoint):
        np.testing.assert_allclose(a.vertices, b.vertices, atol=1e-4)


def test_latents_round_trip(tiny_run, tmp_path, capsys, monkeypatch):
    """latents.npy fed back with --latents writes the same faces; a checkpoint then needs no prior (no data)."""
    import mesh_decoder.train as train

    first = tmp_path / "first"
    assert main(["sample", str(tiny_run), "--n", "2", "--seed", "11", "-o", str(first)]) == 0
    edited = np.load(first / "latents.npy")
    edited[1] *= -1  # an edited code decodes to another face
    np.save(tmp_path / "edited.npy", edited)
    capsys.readouterr()

    def no_data(*args, **kwargs):
        raise AssertionError("the training data was loaded to fit a prior --latents does not use")

    monkeypatch.setattr(train, "load_data", no_data)
    again, changed = tmp_path / "again", tmp_path / "changed"
    assert main(["sample", str(tiny_run), "--latents", str(first / "latents.npy"), "-o", str(again)]) == 0
    assert capsys.readouterr().out == (f"wrote 2 meshes (500 vertices, shape only) and latents.npy to {again}: "
                                       f"decoded from {first / 'latents.npy'}\n")
    assert main(["sample", str(tiny_run / "checkpoint.safetensors"), "--latents", str(tmp_path / "edited.npy"),
                 "-o", str(changed)]) == 0
    (z1, meshes1), (z2, meshes2), (z3, meshes3) = (_written(f) for f in (first, again, changed))
    np.testing.assert_array_equal(z2, z1)
    np.testing.assert_array_equal(z3, edited)
    for a, b in zip(meshes1, meshes2):
        np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_allclose(meshes3[0].vertices, meshes1[0].vertices, atol=1e-5)
    assert not np.allclose(meshes3[1].vertices, meshes1[1].vertices, atol=1e-3)
    np.testing.assert_allclose(meshes3[1].vertices, _decode(_model(tiny_run)[0], edited)[1], rtol=1e-6, atol=1e-5)


def test_one_code_as_a_1d_array(tiny_run, tmp_path, capsys):
    code = np.random.default_rng(2).normal(size=Z)  # float64 (Z,)
    np.save(tmp_path / "one.npy", code)
    assert main(["sample", str(tiny_run), "--latents", str(tmp_path / "one.npy"), "-o", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.startswith("wrote 1 mesh (500 vertices, shape only)")
    latents, meshes = _written(tmp_path / "out")
    assert latents.shape == (1, Z) and latents.dtype == np.float32
    np.testing.assert_array_equal(latents[0], code.astype(np.float32))
    assert len(meshes) == 1
    np.testing.assert_allclose(meshes[0].vertices, _decode(_model(tiny_run)[0], latents)[0], rtol=1e-6, atol=1e-5)


class _MakesADirectory:
    """Unpickling it would create the folder ``path``: proof that a pickled --latents was never loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


def _pickled_mkdir(path: str) -> bytes:
    """The pickle stream (protocol 2, written out by hand) that calls ``os.mkdir(path)`` when unpickled."""
    name = path.encode()
    return b"\x80\x02cos\nmkdir\nX" + len(name).to_bytes(4, "little") + name + b"\x85R."


def _bad_latents(kind: str, path, tmp_path) -> str:
    """Write a ``kind`` of bad latents file at ``path``; return what the error must say after ``path: ``."""
    want = f"expected latent codes: a .npy float array of shape (N, {Z}) or ({Z},)"
    if kind == "wrong Z":
        np.save(path, np.zeros((2, Z + 1), np.float32))
        return f"{want} ({Z}: the model's latent size), found shape (2, {Z + 1})"
    if kind == "wrong ndim":
        np.save(path, np.zeros((2, 1, Z), np.float32))
        return f"{want} ({Z}: the model's latent size), found shape (2, 1, {Z})"
    if kind == "no codes":
        np.save(path, np.zeros((0, Z), np.float32))
        return f"{want} ({Z}: the model's latent size), found shape (0, {Z})"
    if kind == "integers":
        np.save(path, np.ones((2, Z), np.int64))
        return f"{want}, found dtype int64"
    if kind == "NaN":
        np.save(path, np.array([[0.0] * Z, [0.0, np.nan, 0.0, 0.0]], np.float32))
        return f"{want} of finite values within float32 range, found NaN, inf or a larger value in 1 of its 2 codes " \
               "(the first: code 1)"
    if kind == "beyond float32":
        np.save(path, np.full((1, Z), 1e300))
        return f"{want} of finite values within float32 range, found NaN, inf or a larger value in 1 of its 1 codes"
    if kind == "object array":
        np.save(path, np.array([_MakesADirectory(str(tmp_path / "unpickled"))] * Z, dtype=object), allow_pickle=True)
        return f"{want}, could not load it (Object arrays cannot be loaded when allow_pickle=False"
    if kind == "pickle":
        path.write_bytes(_pickled_mkdir(str(tmp_path / "unpickled")))
        return f"{want}, found a file that is not .npy (it starts with b'\\x80"
    if kind == "text":
        path.write_text("0 0 0 0\n")
        return f"{want}, found a file that is not .npy (it starts with b'0 0 0 '"
    if kind == "npz":
        with open(path, "wb") as handle:  # an .npz archive under a .npy name (np.savez(path) would add .npz)
            np.savez(handle, z=np.zeros((2, Z), np.float32))
        return f"{want}, found a file that is not .npy (it starts with b'PK"
    if kind == "truncated":
        np.save(path, np.zeros((50, Z), np.float32))
        path.write_bytes(path.read_bytes()[:200])
        return f"{want}, could not load it ("
    if kind == "directory":
        path.mkdir()
        return f"{want}, found a directory"
    assert kind == "missing"
    return f"no such file: {want}"


@pytest.mark.parametrize("kind", ["wrong Z", "wrong ndim", "no codes", "integers", "NaN", "beyond float32",
                                  "object array", "pickle", "text", "npz", "truncated", "directory", "missing"])
def test_bad_latents_are_one_line_naming_the_file_and_write_nothing(kind, tiny_run, tmp_path, capsys):
    path = tmp_path / "z.npy"
    expected = _bad_latents(kind, path, tmp_path)
    out = tmp_path / "out"
    assert main(["sample", str(tiny_run), "--latents", str(path), "-o", str(out)]) == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"error: {path}: {expected}"), err
    assert not out.exists() and not (tmp_path / "unpickled").exists()


@pytest.mark.parametrize("extra", [["--n", "2"], ["--seed", "0"], ["--n", "16", "--seed", "1"]])
def test_latents_with_n_or_seed_is_refused(extra, tiny_run, tmp_path, capsys):
    np.save(tmp_path / "z.npy", np.zeros((2, Z), np.float32))
    out = tmp_path / "out"
    assert main(["sample", str(tiny_run), "--latents", str(tmp_path / "z.npy"), *extra, "-o", str(out)]) == 2
    err = _one_error_line(capsys)
    assert "--latents gives the codes to decode: expected it without --n and --seed" in err, err
    assert not out.exists()


def test_earlier_samples_are_not_overwritten(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sample", str(tiny_run), "--n", "2", "-o", str(out)]) == 0
    before = _snapshot(out)
    capsys.readouterr()
    assert main(["sample", str(tiny_run), "--n", "2", "--seed", "4", "-o", str(out)]) == 1
    assert _one_error_line(capsys) == (
        f"error: -o/--output {out}: expected a folder without earlier samples, found latents.npy, face_0000.ply, "
        "face_0001.ply; nothing was written (name another folder, or remove them)\n")
    assert _snapshot(out) == before

    (out / "latents.npy").unlink()  # meshes alone, or the codes alone, are refused too
    for n in range(2, 5):
        (out / f"face_{n:04d}.ply").write_bytes(b"mine")
    before = _snapshot(out)
    assert main(["sample", str(tiny_run), "--n", "2", "-o", str(out)]) == 1
    err = _one_error_line(capsys)
    assert "found face_0000.ply, face_0001.ply, face_0002.ply and 2 more; nothing was written" in err, err
    only_codes = tmp_path / "codes"
    only_codes.mkdir()
    (only_codes / "latents.npy").write_bytes(b"mine")
    assert main(["sample", str(tiny_run), "--n", "2", "-o", str(only_codes)]) == 1
    assert "found latents.npy; nothing was written" in _one_error_line(capsys)
    assert _snapshot(out) == before and _snapshot(only_codes) == {"latents.npy": b"mine"}

    other = tmp_path / "other"  # files sample does not write are left alone, and do not block it
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    (other / "face_0000.obj").write_text("keep")
    assert main(["sample", str(tiny_run), "--n", "1", "-o", str(other)]) == 0
    assert sorted(p.name for p in other.iterdir()) == ["face_0000.obj", "face_0000.ply", "latents.npy", "notes.txt"]
    assert (other / "face_0000.obj").read_text() == "keep" and (other / "notes.txt").read_text() == "keep"

    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    assert main(["sample", str(tiny_run), "-o", str(a_file)]) == 1
    assert f"-o/--output {a_file}: expected a directory, found an existing file" in _one_error_line(capsys)
    assert a_file.read_text() == "keep"


@pytest.mark.parametrize("fmt", ["ply", "obj", "off"])
def test_a_joint_model_writes_its_colours(fmt, tiny_joint_run, tmp_path, capsys):
    """Shape and colour models store per-vertex colours in every format, clamped into [0, 1] as render does."""
    model, faces = _model(tiny_joint_run)
    codes = 100 * np.random.default_rng(1).normal(size=(2, Z)).astype(np.float32)  # colours far out of range
    raw = _decode(model, codes)  # (2, V, 6)
    assert raw.shape == (2, 500, 6) and (raw[..., 3:].min() < 0) and (raw[..., 3:].max() > 1)
    np.save(tmp_path / "z.npy", codes)
    out = tmp_path / "out"
    assert main(["sample", str(tiny_joint_run), "--latents", str(tmp_path / "z.npy"), "--format", fmt,
                 "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith("wrote 2 meshes (500 vertices, with colours clamped into [0, 1]) and latents.npy")
    _, meshes = _written(out, fmt)
    for mesh, decoded in zip(meshes, raw):
        np.testing.assert_array_equal(mesh.faces, faces)
        np.testing.assert_allclose(mesh.vertices, decoded[:, :3], rtol=1e-6, atol=1e-5)
        assert mesh.colors is not None
        np.testing.assert_allclose(mesh.colors, np.clip(decoded[:, 3:], 0, 1), atol=1e-6)

    assert main(["sample", str(tiny_joint_run), "--n", "1", "-o", str(tmp_path / "sampled")]) == 0
    (_, [sampled]) = _written(tmp_path / "sampled")
    expected = model.sample(1, generator=torch.Generator().manual_seed(0))[0].numpy()  # (V, 6)
    np.testing.assert_allclose(sampled.colors, expected[:, 3:].clip(0, 1), atol=1e-6)


def test_shape_and_colors_splits_and_clamps():
    from mesh_decoder.cli import _shape_and_colors

    decoded = torch.tensor([[[1.0, 2.0, 3.0, -0.5, 0.25, 1.5]]])  # (1, 1, 6)
    vertices, colors = _shape_and_colors(decoded)
    assert vertices.tolist() == [[[1.0, 2.0, 3.0]]] and colors.tolist() == [[[0.0, 0.25, 1.0]]]
    vertices, colors = _shape_and_colors(decoded[..., :3])
    assert vertices.tolist() == [[[1.0, 2.0, 3.0]]] and colors is None


def test_non_finite_decoded_faces_write_nothing(tiny_run, tmp_path, capsys):
    np.save(tmp_path / "z.npy", np.full((2, Z), 3e38, np.float32))  # finite codes the decoder overflows on
    out = tmp_path / "out"
    assert main(["sample", str(tiny_run), "--latents", str(tmp_path / "z.npy"), "-o", str(out)]) == 1
    err = _one_error_line(capsys)
    assert "expected finite decoded faces, found NaN or inf in 2 of 2 (the first: code 0" in err, err
    assert "nothing was written" in err and not out.exists()


def test_every_option_says_its_default():
    from mesh_decoder.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["sample"]
    options = {a.option_strings[-1]: a.help for a in sub._actions if a.option_strings and a.dest != "help"}
    assert set(options) == {"--threads", "--output-dir", "--n", "--seed", "--latents", "--hierarchy", "--template",
                            "--format", "--texture"}
    assert all("default" in text for name, text in options.items() if name != "--output-dir"), options


def test_many_codes_decode_in_chunks_as_one_batch_does(tiny_run, tmp_path, capsys, monkeypatch):
    """All codes were decoded in one batch (a large --n failed allocating the decoder's intermediates)."""
    import mesh_decoder.cli as cli

    monkeypatch.setattr(cli, "_SAMPLE_CHUNK", 3)
    model, _ = _model(tiny_run)
    calls = []
    real = type(model).decode
    monkeypatch.setattr(type(model), "decode", lambda self, z: calls.append(z.shape[0]) or real(self, z))
    assert main(["sample", str(tiny_run), "--n", "8", "-o", str(tmp_path / "out")]) == 0
    assert calls == [3, 3, 2]
    latents, meshes = _written(tmp_path / "out")
    np.testing.assert_allclose(np.stack([m.vertices for m in meshes]), _decode(model, latents), rtol=1e-6, atol=1e-5)


def test_codes_edited_in_the_output_folder_decode_there(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    codes = np.random.default_rng().normal(size=(2, Z))  # float64, edited by hand
    np.save(out / "latents.npy", codes)
    assert main(["sample", str(tiny_run), "--latents", str(out / "latents.npy"), "-o", str(out)]) == 0
    latents, meshes = _written(out)
    np.testing.assert_array_equal(latents, codes.astype(np.float32))
    assert len(meshes) == 2
    assert main(["sample", str(tiny_run), "--latents", str(out / "latents.npy"), "-o", str(out)]) == 1  # faces there
    assert "found face_0000.ply" in capsys.readouterr().err


def test_an_interrupted_sample_says_what_it_left(tiny_run, tmp_path, capsys, monkeypatch):
    import mesh_decoder.mesh.io as io

    real, saved = io.save_mesh, []

    def stop_at_the_third(mesh, path, **kwargs):
        if len(saved) == 2:
            raise KeyboardInterrupt
        real(mesh, path, **kwargs)
        saved.append(path)

    monkeypatch.setattr(io, "save_mesh", stop_at_the_third)
    assert main(["sample", str(tiny_run), "--n", "5", "-o", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert err == (f"mesh-decoder sample: interrupted after writing 2 of 5 faces: {tmp_path / 'out'} is incomplete "
                   "(latents.npy holds all 5 codes)\nerror: interrupted\n"), err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["face_0000.ply", "face_0001.ply", "latents.npy"]


def test_a_full_disk_says_how_far_sample_got(tiny_run, tmp_path, capsys, monkeypatch):
    """It printed '[Errno 28] No space left on device', naming no file and no count."""
    import mesh_decoder.mesh.io as io

    real, saved = io.atomic_write, []

    def full_at_the_third(path, *args, **kwargs):
        if str(path).endswith(".ply") and len(saved) == 2:
            raise OSError(28, "No space left on device", str(path))
        saved.append(path) if str(path).endswith(".ply") else None
        return real(path, *args, **kwargs)

    monkeypatch.setattr(io, "atomic_write", full_at_the_third)
    out = tmp_path / "out"
    assert main(["sample", str(tiny_run), "--n", "5", "-o", str(out)]) == 1
    assert _one_error_line(capsys) == (f"error: {out / 'face_0002.ply'}: No space left on device (after writing 2 of "
                                       "5 faces; latents.npy holds all 5 codes)\n")


def test_a_checkpoint_of_an_unfinished_run_says_so(tmp_path, capsys):
    from mesh_decoder.train import train

    config = {"template": {"vertices": 500}, "hierarchy": {"factors": [2, 2], "texture_size": 0, "cache_dir": False},
              "data": {"n": 24, "seed": 4}, "model": {"decoder": "spiral", "channels": [8, 8], "latent_size": 4},
              "training": {"epochs": 3, "batch_size": 8, "seed": 9}}

    def stop(info):
        if info.epoch == 2:
            raise KeyboardInterrupt

    assert train(config, tmp_path / "run", progress=False, callback=stop).interrupted
    assert main(["sample", str(tmp_path / "run" / "checkpoint.safetensors"), "--n", "2", "-o",
                 str(tmp_path / "out")]) == 0
    assert "a checkpoint stores none; the checkpoint has trained 1 of 3 epochs)" in capsys.readouterr().out


def test_files_that_hold_no_model_say_what_was_expected(tiny_run, tmp_path, capsys):
    """render (and sample) named the header bytes of a non-safetensors file, and only run inputs as expected."""
    expected = ("expected a training run folder, its model.safetensors or checkpoint.safetensors, or a decoder, "
                "autoencoder or PCA model file")
    cases = [(tiny_run / "hierarchy.npz", f"({expected})"),
             (tmp_path / "nothing.safetensors", f"{expected}, found nothing at this path")]
    for path, found in cases:
        for command in (["render", str(path), "-o", str(tmp_path / "g.png")],
                        ["sample", str(path), "-o", str(tmp_path / "out")]):
            assert main(command) == 1
            err = _one_error_line(capsys)
            assert err.startswith(f"error: {path}") and found in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "g.png").exists()


def test_render_draws_the_faces_sample_writes_for_any_model_file(tiny_run, tiny_joint_run, tmp_path, capsys,
                                                                 monkeypatch):
    """render took trained autoencoders only ('expected ... of a trained autoencoder, found a SpiralDecoder model
    file'); it now draws what sample writes for a seed from a decoder file and a PCA model, with colours."""
    import mesh_decoder.render as render
    from mesh_decoder.model_files import save_model
    from mesh_decoder.pca import PCAModel

    pca = tmp_path / "pca.safetensors"
    save_model(PCAModel.fit(torch.randn(6, 500, 3), colors=torch.rand(6, 500, 3), num_components=3,
                            color_components=2), pca)
    grids = []
    monkeypatch.setattr(render, "face_grid", lambda vertices, faces, path, **kwargs: grids.append((vertices, kwargs)))
    seed = int(np.random.default_rng().integers(1000))
    for i, path in enumerate([tiny_run / "decoder.safetensors", pca, tiny_joint_run / "decoder.safetensors"]):
        assert main(["render", str(path), "--n", "3", "--seed", str(seed), "-o", str(tmp_path / "g.png")]) == 0
        assert main(["sample", str(path), "--n", "3", "--seed", str(seed), "-o", str(tmp_path / f"s{i}")]) == 0
        _, meshes = _written(tmp_path / f"s{i}")
        vertices, kwargs = grids[-1]
        np.testing.assert_allclose(vertices.numpy(), np.stack([m.vertices for m in meshes]), rtol=1e-6, atol=1e-5)
        if meshes[0].colors is None:
            assert kwargs["colors"] is None
        else:
            np.testing.assert_allclose(kwargs["colors"].numpy(), np.stack([m.colors for m in meshes]), atol=1e-6)
    assert [kwargs["colors"] is not None for _, kwargs in grids] == [False, True, True]
    assert "faces sampled from the PCA model's standard normal coefficients" in capsys.readouterr().out


def test_a_decoder_file_samples_its_stored_prior_and_decodes_as_the_model(tiny_run, tmp_path, capsys):
    out = tmp_path / "decoder"
    assert main(["sample", str(tiny_run / "decoder.safetensors"), "--n", "3", "-o", str(out)]) == 0
    assert capsys.readouterr().out.endswith("sampled from the stored latent prior\n")
    latents, meshes = _written(out)
    model, faces = _model(tiny_run)
    np.testing.assert_allclose(np.stack([m.vertices for m in meshes]), _decode(model, latents), rtol=1e-6, atol=1e-5)
    assert all(np.array_equal(m.faces, faces) for m in meshes)
    # the codes follow the stored prior: whitened by its Cholesky factor, they are standard normal draws
    many = tmp_path / "many"
    assert main(["sample", str(tiny_run / "decoder.safetensors"), "--n", "4000", "--seed", "7", "-o", str(many)]) == 0
    z = torch.from_numpy(np.load(many / "latents.npy")).double()  # (4000, Z)
    w = torch.linalg.solve_triangular(model.latent_cov_cholesky.double(), (z - model.latent_mean.double()).T,
                                      upper=False).T
    assert w.mean(0).abs().max() < 0.1 and (w.std(0) - 1).abs().max() < 0.1, (w.mean(0), w.std(0))


def test_a_pca_model_file_samples_shape_then_colour_coefficients(tiny_joint_run, tmp_path, capsys):
    from mesh_decoder.model_files import load_model

    pca_file = tmp_path / "pca.safetensors"
    assert main(["pca", str(tiny_joint_run / "config.yaml"), "-o", str(pca_file), "--components", "4",
                 "--color-components", "3"]) == 0
    pca = load_model(pca_file)
    out = tmp_path / "faces"
    assert main(["sample", str(pca_file), "--n", "5", "--seed", "2", "-o", str(out)]) == 0
    assert "sampled from the PCA model's standard normal coefficients" in capsys.readouterr().out
    latents, meshes = _written(out)
    assert latents.shape == (5, 7)  # 4 shape then 3 colour coefficients
    codes = torch.from_numpy(latents)
    with torch.no_grad():
        vertices, colors = pca.decode(codes[:, :4]), pca.decode_colors(codes[:, 4:]).clamp(0, 1)
    np.testing.assert_allclose(np.stack([m.vertices for m in meshes]), vertices.numpy(), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(np.stack([m.colors for m in meshes]), colors.numpy(), atol=1e-6)
    # codes of the wrong width name the layout
    np.save(tmp_path / "z.npy", np.zeros((2, 4), np.float32))
    assert main(["sample", str(pca_file), "--latents", str(tmp_path / "z.npy"), "-o", str(tmp_path / "bad")]) == 1
    err = _one_error_line(capsys)
    assert "expected latent codes: a .npy float array of shape (N, 7) or (7,) (4 shape then 3 colour coefficients)" \
        in err, err


def test_a_missing_latents_file_beside_a_folder_holding_latents_is_an_earlier_sample(tiny_run, tmp_path, capsys):
    """The in-place check compared a missing --latents file with the folder's (an errno message)."""
    out = tmp_path / "out"
    out.mkdir()
    np.save(out / "latents.npy", np.zeros((1, Z), np.float32))
    assert main(["sample", str(tiny_run), "--latents", str(tmp_path / "gone.npy"), "-o", str(out)]) == 1
    err = _one_error_line(capsys)
    assert "expected a folder without earlier samples, found latents.npy" in err, err


def test_a_decoder_file_alone_takes_its_hierarchy_and_gives_its_runs_faces_for_a_seed(tiny_run, tmp_path, capsys):
    """sample told a lone decoder file to pass --hierarchy, an option it did not have; and a seed drew other
    codes from a run's decoder.safetensors than from its model.safetensors."""
    import shutil

    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tiny_run / "decoder.safetensors", lone / "decoder.safetensors")
    assert main(["sample", str(lone / "decoder.safetensors"), "--n", "2", "-o", str(tmp_path / "a")]) == 1
    assert "pass --hierarchy FILE" in _one_error_line(capsys)
    assert main(["sample", str(lone / "decoder.safetensors"), "--hierarchy", str(tiny_run / "hierarchy.npz"),
                 "--n", "3", "--seed", "4", "-o", str(tmp_path / "decoder")]) == 0
    assert main(["sample", str(tiny_run / "model.safetensors"), "--n", "3", "--seed", "4", "-o",
                 str(tmp_path / "model")]) == 0
    from_decoder, meshes_d = _written(tmp_path / "decoder")
    from_model, meshes_m = _written(tmp_path / "model")
    np.testing.assert_array_equal(from_decoder, from_model)
    for a, b in zip(meshes_d, meshes_m):
        np.testing.assert_allclose(a.vertices, b.vertices, rtol=1e-6, atol=1e-5)
    capsys.readouterr()
    assert main(["sample", str(tiny_run), "--hierarchy", str(tiny_run / "hierarchy.npz"), "-o",
                 str(tmp_path / "b")]) == 1
    assert "--hierarchy: expected only with a decoder or PCA model file" in _one_error_line(capsys)
    # a decoder file with damaged metadata was called 'a trained autoencoder' when given --hierarchy
    from tests.test_model_files import rewrite_meta

    damaged = tmp_path / "damaged.safetensors"
    rewrite_meta(lone / "decoder.safetensors", damaged, lambda m: m.pop("class"))
    for extra in ([], ["--hierarchy", str(tiny_run / "hierarchy.npz")]):
        assert main(["sample", str(damaged), *extra, "-o", str(tmp_path / "c")]) == 1
        assert _one_error_line(capsys).strip() == f"error: {damaged}: corrupt model metadata: missing 'class'"


# ----------------------------------------------------------------------------- --texture
def _png_pixels(path) -> np.ndarray:
    """A PNG's ``(H, W, 3)`` uint8 pixels, decoded by Pillow."""
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _texels(texel_map, colors: np.ndarray) -> np.ndarray:
    """Per-vertex ``colors (V, 3)`` written into a texel map, texel by texel: ``(H, W, 3)`` in ``[0, 1]``."""
    index, weight = texel_map.index.numpy(), texel_map.weight.double().numpy()  # (H, W, 3) each
    H, W = index.shape[:2]
    out = np.zeros((H, W, 3))
    for i in range(H):
        for j in range(W):
            out[i, j] = sum(weight[i, j, k] * colors[index[i, j, k]] for k in range(3))
    return out


def _textured_run(tmp_path):
    """A finished one-epoch joint run whose hierarchy holds a 32 x 32 texel map."""
    from mesh_decoder.train import train

    config = {"template": {"vertices": 500}, "hierarchy": {"factors": [2, 2], "texture_size": 32, "cache_dir": False},
              "data": {"n": 24, "seed": 4}, "model": {"decoder": "spiral", "channels": [8, 8], "latent_size": Z,
                                                      "joint": True},
              "training": {"epochs": 1, "batch_size": 8, "seed": 9}}
    train(config, tmp_path / "run", progress=False)
    return tmp_path / "run"


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_texture_writes_the_colours_into_the_runs_texel_map(fmt, tmp_path, capsys):
    from mesh_decoder.train import load_trained
    from mesh_decoder.train.loop import load_template

    run = _textured_run(tmp_path)
    model, hierarchy, config, _ = load_trained(run)
    codes = 3 * np.random.default_rng().normal(size=(2, Z)).astype(np.float32)
    np.save(tmp_path / "z.npy", codes)
    out = tmp_path / "out"
    assert main(["sample", str(run), "--latents", str(tmp_path / "z.npy"), "--texture", "--format", fmt,
                 "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(
        "wrote 2 meshes (500 vertices, with colours clamped into [0, 1] and 32 x 32 UV textures (face_*.png"
        + (", through face_*.mtl" if fmt == "obj" else "") + ")) and latents.npy")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["latents.npy"] + [f"face_000{i}.{e}" for i in range(2)
                                              for e in ([fmt, "png"] + (["mtl"] if fmt == "obj" else []))])
    template = load_template(config)
    colors = np.clip(_decode(model, codes)[..., 3:], 0, 1)  # (2, V, 3)
    for i in range(2):
        mesh = load_mesh(out / f"face_000{i}.{fmt}")
        np.testing.assert_array_equal(mesh.uv.astype(np.float32), template.uv.astype(np.float32))
        np.testing.assert_array_equal(mesh.uv_faces, template.uv_faces)
        np.testing.assert_allclose(mesh.colors, colors[i], atol=1e-6)
        expected = np.round(_texels(hierarchy.texel_map, colors[i].astype(np.float64)) * 255)
        assert np.abs(_png_pixels(out / f"face_000{i}.png").astype(np.float64) - expected).max() <= 1
    reference = ("mtllib face_0000.mtl" in (out / "face_0000.obj").read_text()) if fmt == "obj" else \
        (b"comment TextureFile face_0000.png\n" in (out / "face_0000.ply").read_bytes()[:2000])
    assert reference


@pytest.mark.parametrize("uvs", ["own", "flipped"])
def test_a_pca_texture_maps_each_vertex_colour_at_its_uv(uvs, tiny_joint_run, tmp_path, capsys):
    """Without a texel map in the model a 256 x 256 one of the template's UVs is built; at the UV of a
    vertex the texture holds that vertex's colour (rows from the top, v from the bottom, as OBJ reads it),
    also for a --template with other UVs (the texture is made on the UVs the mesh files get)."""
    from mesh_decoder.mesh import face_template, save_mesh
    from mesh_decoder.model_files import load_model

    pca_file = tmp_path / "pca.safetensors"
    assert main(["pca", str(tiny_joint_run / "config.yaml"), "-o", str(pca_file), "--components", "4",
                 "--color-components", "3"]) == 0
    template = []
    if uvs == "flipped":
        own = face_template(500)
        save_mesh(own.copy(uv=own.uv * [1, -1] + [0, 1]), tmp_path / "flipped.obj")
        template = ["--template", str(tmp_path / "flipped.obj")]
    out = tmp_path / "faces"
    assert main(["sample", str(pca_file), "--n", "2", "--seed", str(np.random.default_rng().integers(1000)),
                 "--texture", "--format", "obj", "-o", str(out), *template]) == 0
    assert "256 x 256 UV textures" in capsys.readouterr().out
    latents = np.load(out / "latents.npy")
    with torch.no_grad():
        colors = load_model(pca_file).decode_colors(torch.from_numpy(latents[:, 4:])).clamp(0, 1).numpy()
    for i in range(2):
        mesh, pixels = load_mesh(out / f"face_000{i}.obj"), _png_pixels(out / f"face_000{i}.png") / 255.0
        H, W = pixels.shape[:2]
        corner_uv = mesh.uv[mesh.uv_faces].reshape(-1, 2)  # (3F, 2)
        vertex = mesh.faces.reshape(-1)  # (3F,)
        rows = np.clip(((1 - corner_uv[:, 1]) * H).astype(int), 0, H - 1)
        cols = np.clip((corner_uv[:, 0] * W).astype(int), 0, W - 1)
        error = np.abs(pixels[rows, cols] - colors[i][vertex]).mean()
        flipped = np.abs(pixels[H - 1 - rows, cols] - colors[i][vertex]).mean()
        assert error < 0.02 and flipped > 3 * error, (error, flipped)


def test_a_cnn_texture_branch_writes_its_own_texture(tiny_run, tmp_path, capsys, monkeypatch):
    """A joint decoder whose texture comes from its 2D branch (no vertex colours): the map is its output."""
    from mesh_decoder.hierarchy import load_hierarchy
    from mesh_decoder.model_files import save_model
    from mesh_decoder.nn import JointDecoder

    hierarchy = load_hierarchy(tiny_run / "hierarchy.npz")
    torch.manual_seed(int(np.random.default_rng().integers(1 << 31)))
    joint = JointDecoder.from_hierarchy(hierarchy, texture_branch="cnn", latent_size=Z, channels=(8, 8),
                                        texture_size=16, texture_channels=8).eval()
    path = tmp_path / "joint" / "decoder.safetensors"
    save_model(joint, path, hierarchy=hierarchy)
    codes = np.random.default_rng().normal(size=(3, Z)).astype(np.float32)
    np.save(tmp_path / "z.npy", codes)
    assert main(["sample", str(path), "--hierarchy", str(tiny_run / "hierarchy.npz"), "--latents",
                 str(tmp_path / "z.npy"), "--texture", "-o", str(tmp_path / "out")]) == 0
    assert "(500 vertices, shape and 16 x 16 UV textures (face_*.png)) and latents.npy" in capsys.readouterr().out
    with torch.no_grad():
        texture = joint(torch.from_numpy(codes)).texture.clamp(0, 1)  # (3, 3, 16, 16)
    for i in range(3):
        assert load_mesh(tmp_path / "out" / f"face_000{i}.ply").colors is None
        expected = np.round(texture[i].permute(1, 2, 0).double().numpy() * 255)
        assert np.abs(_png_pixels(tmp_path / "out" / f"face_000{i}.png") - expected).max() <= 1

    import mesh_decoder.render as render
    from mesh_decoder.mesh.templates import face_template

    grids = []
    monkeypatch.setattr(render, "face_grid", lambda vertices, faces, path, **kwargs: grids.append(kwargs))
    assert main(["render", str(path), "--hierarchy", str(tiny_run / "hierarchy.npz"), "--n", "2", "--seed", "7",
                 "-o", str(tmp_path / "g.png")]) == 0  # render draws the texture through the template's UVs
    template = face_template(500)
    np.testing.assert_array_equal(grids[0]["uv"], template.uv)
    np.testing.assert_array_equal(grids[0]["uv_faces"], template.uv_faces)
    from mesh_decoder._random import standard_normal_rows

    with torch.no_grad():  # the file stores no prior: the seed's standard normal codes
        drawn = joint(standard_normal_rows(2, Z, torch.Generator().manual_seed(7), dtype=torch.float32))
    drawn = drawn.texture.clamp(0, 1)
    assert grids[0]["colors"] is None
    torch.testing.assert_close(grids[0]["texture"], drawn)


def test_texture_refusals_write_nothing(tiny_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sample", str(tiny_run), "--n", "2", "--texture", "-o", str(out)]) == 1
    err = _one_error_line(capsys)
    assert f"found {tiny_run}, which decodes shape only; nothing was written" in err and \
        "expected a model that decodes colour" in err, err
    assert main(["sample", str(tiny_run), "--n", "2", "--texture", "--format", "off", "-o", str(out)]) == 2
    assert "expected --format obj or ply" in _one_error_line(capsys)
    assert not out.exists()
    out.mkdir()
    (out / "face_0000.png").write_bytes(b"an earlier texture")
    assert main(["sample", str(tiny_run), "--n", "2", "--texture", "-o", str(out)]) == 1
    assert "expected a folder without earlier samples, found face_0000.png" in _one_error_line(capsys)
    assert os.listdir(out) == ["face_0000.png"]


def test_a_texture_branch_with_another_templates_uvs_is_refused(tmp_path, capsys):
    """A --template with the same geometry and other UVs passed: the decoder's texture did not fit the mesh."""
    from mesh_decoder.hierarchy import load_hierarchy
    from mesh_decoder.mesh import face_template, save_mesh
    from mesh_decoder.model_files import save_model
    from mesh_decoder.nn import JointDecoder

    run = _textured_run(tmp_path)
    hierarchy = load_hierarchy(run / "hierarchy.npz")
    joint = JointDecoder.from_hierarchy(hierarchy, texture_branch="cnn", latent_size=Z, channels=(8, 8),
                                        texture_size=32, texture_channels=8)
    save_model(joint, tmp_path / "joint" / "decoder.safetensors", hierarchy=hierarchy)
    own = face_template(500)
    save_mesh(own.copy(uv=own.uv * [1, -1] + [0, 1]), tmp_path / "flipped.obj")
    save_mesh(own, tmp_path / "own.obj")
    command = ["sample", str(tmp_path / "joint" / "decoder.safetensors"), "--hierarchy", str(run / "hierarchy.npz"),
               "--n", "1", "--texture"]
    assert main(command + ["--template", str(tmp_path / "flipped.obj"), "-o", str(tmp_path / "a")]) == 1
    err = _one_error_line(capsys)
    assert "the model's UV texture layout was made on UVs" in err and "flipped.obj has UVs" in err, err
    assert not (tmp_path / "a").exists()
    assert main(command + ["--template", str(tmp_path / "own.obj"), "-o", str(tmp_path / "b")]) == 0


def test_a_hierarchy_saved_with_the_uv_table_hash_still_takes_its_template(tmp_path, capsys):
    """Hierarchies saved before uv_hash hashed per-corner UVs record the hash of the UV table; sample and fit
    still take their template's UVs as the model's (and still refuse other UVs)."""
    from mesh_decoder.hierarchy import load_hierarchy, save_hierarchy
    from mesh_decoder.mesh import face_template, save_mesh
    from mesh_decoder.model_files import save_model
    from mesh_decoder.nn import JointDecoder

    run = _textured_run(tmp_path)
    hierarchy = load_hierarchy(run / "hierarchy.npz")
    own = face_template(500)
    assert hierarchy.meta["uv_hash"] == own.uv_hash() != own.uv_table_hash()
    hierarchy.meta["uv_hash"] = own.uv_table_hash()
    save_hierarchy(hierarchy, tmp_path / "older.npz")
    joint = JointDecoder.from_hierarchy(hierarchy, texture_branch="cnn", latent_size=Z, channels=(8, 8),
                                        texture_size=32, texture_channels=8)
    save_model(joint, tmp_path / "joint" / "decoder.safetensors", hierarchy=hierarchy)
    save_mesh(own, tmp_path / "own.obj")
    save_mesh(own.copy(uv=own.uv * [1, -1] + [0, 1]), tmp_path / "flipped.obj")
    command = ["sample", str(tmp_path / "joint" / "decoder.safetensors"), "--hierarchy", str(tmp_path / "older.npz"),
               "--n", "1", "--texture"]
    assert main(command + ["--template", str(tmp_path / "own.obj"), "-o", str(tmp_path / "b")]) == 0
    capsys.readouterr()
    assert main(command + ["--template", str(tmp_path / "flipped.obj"), "-o", str(tmp_path / "a")]) == 1
    assert "the model's UV texture layout was made on UVs" in _one_error_line(capsys)


def test_only_files_sample_writes_count_as_earlier_samples(tiny_joint_run, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("face_photo.png", "face_notes.mtl", "face_0000.obj.bak", "face_scan.ply"):
        (out / name).write_bytes(b"kept")
    assert main(["sample", str(tiny_joint_run), "--n", "1", "--texture", "-o", str(out)]) == 0
    assert all((out / n).read_bytes() == b"kept" for n in ("face_photo.png", "face_notes.mtl", "face_scan.ply"))
    assert main(["sample", str(tiny_joint_run), "--n", "1", "--texture", "-o", str(out)]) == 1
    assert "found latents.npy, face_0000.ply, face_0000.png;" in _one_error_line(capsys)


def test_an_autoencoder_saved_with_save_model_samples_and_renders_as_its_run(tiny_joint_run, tmp_path, capsys,
                                                                             monkeypatch):
    """Such a file (no training config: not a run's) was refused ('a model file without a training config'),
    though the help promised any model file fit takes."""
    import mesh_decoder.render as render
    from mesh_decoder.model_files import save_model
    from mesh_decoder.train import load_trained

    model, hierarchy, _, _ = load_trained(tiny_joint_run)
    save_model(model, tmp_path / "ae.safetensors", hierarchy=hierarchy)
    seed = str(np.random.default_rng().integers(1000))
    given = ["--hierarchy", str(tiny_joint_run / "hierarchy.npz"), "--n", "3", "--seed", seed]
    assert main(["sample", str(tmp_path / "ae.safetensors"), *given, "-o", str(tmp_path / "a")]) == 0
    assert "sampled from the autoencoder's latent prior" in capsys.readouterr().out
    assert main(["sample", str(tiny_joint_run), "--n", "3", "--seed", seed, "-o", str(tmp_path / "b")]) == 0
    (za, ma), (zb, mb) = _written(tmp_path / "a"), _written(tmp_path / "b")
    np.testing.assert_array_equal(za, zb)
    for a, b in zip(ma, mb):
        np.testing.assert_allclose(a.vertices, b.vertices, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(a.colors, b.colors, atol=1e-6)
    grids = []
    monkeypatch.setattr(render, "face_grid", lambda vertices, *args, **kwargs: grids.append(vertices))
    assert main(["render", str(tmp_path / "ae.safetensors"), *given, "-o", str(tmp_path / "g.png")]) == 0
    np.testing.assert_allclose(grids[0].numpy(), np.stack([m.vertices for m in mb]), rtol=1e-6, atol=1e-5)


def test_non_finite_faces_in_render_name_the_model(tiny_run, tmp_path, capsys):
    from mesh_decoder.model_files import save_model
    from mesh_decoder.pca import PCAModel

    pca = PCAModel.fit(torch.randn(6, 500, 3), num_components=3)
    pca.stddev.fill_(3e38)  # finite coefficients the decoding overflows on
    save_model(pca, tmp_path / "pca.safetensors")
    assert main(["render", str(tmp_path / "pca.safetensors"), "--n", "2", "-o", str(tmp_path / "g.png")]) == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"error: {tmp_path / 'pca.safetensors'}: expected finite decoded faces, found NaN or inf"), err
    assert not (tmp_path / "g.png").exists()


def test_a_hierarchy_given_with_a_pca_model_is_refused(tiny_joint_run, tmp_path, capsys):
    """It was loaded and then ignored."""
    pca_file = tmp_path / "pca.safetensors"
    assert main(["pca", str(tiny_joint_run / "config.yaml"), "-o", str(pca_file), "--components", "3"]) == 0
    capsys.readouterr()
    for command in (["sample", "-o", str(tmp_path / "out")], ["render", "-o", str(tmp_path / "g.png")]):
        assert main([command[0], str(pca_file), "--hierarchy", str(tiny_joint_run / "hierarchy.npz"),
                     *command[1:]]) == 1
        assert _one_error_line(capsys) == (f"error: --hierarchy {tiny_joint_run / 'hierarchy.npz'}: expected only "
                                           f"with a model built on a mesh hierarchy, got {pca_file}, a PCAModel "
                                           "file, which uses none\n")
    assert not (tmp_path / "out").exists() and not (tmp_path / "g.png").exists()


def test_a_hierarchy_of_another_model_is_named(tiny_run, tmp_path, capsys):
    """The error said the hierarchies differ without naming the hierarchy file (given, or found beside)."""
    import shutil

    other = _textured_run(tmp_path)  # the same template and factors, with a texel map
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(tiny_run / "decoder.safetensors", lone / "decoder.safetensors")
    shutil.copy(other / "hierarchy.npz", lone / "hierarchy.npz")
    assert main(["sample", str(lone / "decoder.safetensors"), "-o", str(tmp_path / "a")]) == 1
    err = _one_error_line(capsys)
    assert "model built on a hierarchy with" in err and err.endswith(
        f"; the given hierarchy is {lone / 'hierarchy.npz'} (found beside the model): pass --hierarchy with the "
        "model's "
        "hierarchy\n"), err
    assert main(["sample", str(lone / "decoder.safetensors"), "--hierarchy", str(tiny_run / "hierarchy.npz"),
                 "-o", str(tmp_path / "b")]) == 0


def test_only_a_hierarchy_mismatch_blames_the_hierarchy(tiny_run, tmp_path, capsys):
    """Whether the hierarchy was blamed was decided by the word "hierarchy" in the message: a corrupt model in a
    folder named for hierarchies was reported with "pass --hierarchy with the model's hierarchy"."""
    import shutil

    study = tmp_path / "hierarchy_study"
    study.mkdir()
    shutil.copy(tiny_run / "hierarchy.npz", study / "hierarchy.npz")
    blob = bytearray((tiny_run / "decoder.safetensors").read_bytes())
    blob[-1] ^= 0xFF  # the last tensor byte: the checksum no longer matches
    (study / "decoder.safetensors").write_bytes(bytes(blob))
    assert main(["sample", str(study / "decoder.safetensors"), "-o", str(tmp_path / "a")]) == 1
    assert _one_error_line(capsys) == (f"error: {study / 'decoder.safetensors'}: corrupt tensor data: checksum "
                                       "mismatch\n")


def test_render_counts_one_face_as_one(tiny_run, tmp_path, capsys):
    assert main(["render", str(tiny_run), "--n", "1", "--image-size", "32", "-o", str(tmp_path / "g.png")]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path / 'g.png'}: 1 face sampled from the stored latent prior\n"


def test_a_run_on_a_relative_template_file_works_from_another_folder(tmp_path, capsys, monkeypatch):
    """The run's config holds the template path relative to the folder it was trained in: its model and decoder
    files failed from anywhere else ('cannot build the model's template (tmpl.obj: No such file ...)')."""
    from mesh_decoder.mesh import face_template, save_mesh
    from mesh_decoder.train import train

    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    save_mesh(face_template(500), work / "tmpl.obj")
    monkeypatch.chdir(work)
    config = {"template": {"kind": "file", "path": "tmpl.obj"},
              "hierarchy": {"factors": [2, 2], "texture_size": 0, "cache_dir": False},
              "data": {"n": 24, "seed": 4}, "model": {"decoder": "spiral", "channels": [8, 8], "latent_size": Z},
              "training": {"epochs": 1, "batch_size": 8, "seed": 9}}
    train(config, "run", progress=False)
    monkeypatch.chdir(elsewhere)
    run = work / "run"
    for model in (run, run / "model.safetensors", run / "checkpoint.safetensors", run / "decoder.safetensors"):
        out = elsewhere / model.name
        assert main(["sample", str(model), "--n", "2", "--seed", "1", "-o", str(out)]) == 0, capsys.readouterr().err
    capsys.readouterr()
    meshes = [_written(elsewhere / name)[1] for name in ("run", "model.safetensors", "decoder.safetensors")]
    for a, b in zip(meshes[0], meshes[2]):
        np.testing.assert_allclose(a.vertices, b.vertices, rtol=1e-6, atol=1e-5)
    assert main(["evaluate", str(run), "--no-pca", "--measures", "error"]) == 0
    save_mesh(face_template(500).copy(vertices=meshes[0][0].vertices), elsewhere / "target.obj")
    assert main(["fit", str(run / "decoder.safetensors"), "--target", str(elsewhere / "target.obj"), "--json",
                 str(elsewhere / "fit.json"), "--stages", "pose:2", "--quiet"]) == 0
    # a template file changed since training is still refused, by its hash
    save_mesh(face_template(500, seed=3), work / "tmpl.obj")
    assert main(["evaluate", str(run), "--no-pca", "--measures", "error"]) == 1
    assert "the template changed since training" in _one_error_line(capsys)


def test_a_run_with_another_templates_hierarchy_is_rebuilt_with_a_warning_by_every_command(tiny_run, tmp_path,
                                                                                           capsys):
    """A run folder holding another template's hierarchy.npz: evaluate, sample and render rebuilt the hierarchy
    from the run's config without a word, and fit refused the run. Every command now rebuilds it, says so in
    one warning line naming the file, and decodes as on the run's own hierarchy."""
    import json
    import shutil

    from mesh_decoder.hierarchy import build_hierarchy, save_hierarchy
    from mesh_decoder.mesh.io import save_mesh
    from mesh_decoder.mesh.templates import face_template

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    save_hierarchy(build_hierarchy(face_template(600), factors=(2, 2), texture_size=None), run / "hierarchy.npz")
    codes = np.random.default_rng().standard_normal((1, 4)).astype(np.float32)
    np.save(tmp_path / "codes.npy", codes)
    target = face_template(500).copy(vertices=_decode(_model(tiny_run)[0], codes)[0, :, :3])
    save_mesh(target, tmp_path / "target.obj")
    warning = f"warning: {run / 'hierarchy.npz'}: built for another template"
    fits = []
    for name, folder in (("own", tiny_run), ("swapped", run)):
        capsys.readouterr()
        assert main(["fit", str(folder), "--target", str(tmp_path / "target.obj"), "--json",
                     str(tmp_path / f"{name}.json"), "--stages", "pose+shape:5", "--quiet"]) == 0
        err = capsys.readouterr().err
        assert (err.startswith(warning) and "rebuilt from the run's config" in err) == (name == "swapped"), err
        fits.append(json.loads((tmp_path / f"{name}.json").read_text()))
    np.testing.assert_allclose(fits[1]["latent"], fits[0]["latent"], rtol=1e-5, atol=1e-6)
    for name, folder in (("own", tiny_run), ("swapped", run)):
        assert main(["sample", str(folder), "--latents", str(tmp_path / "codes.npy"), "-o",
                     str(tmp_path / f"s_{name}")]) == 0
        err = capsys.readouterr().err
        assert (err.count("\n") == 1 and err.startswith(warning)) == (name == "swapped"), err
    own, swapped = (_written(tmp_path / f"s_{name}")[1][0] for name in ("own", "swapped"))
    np.testing.assert_array_equal(swapped.vertices, own.vertices)


def test_a_joint_run_on_a_template_without_uvs_writes_textures_through_its_automatic_uvs(tmp_path, capsys):
    """build_hierarchy gave a template without UVs automatic ones for the texel map, silently; sample --texture
    then refused the run ('expected a template with UV coordinates'), though the UVs are deterministic."""
    import yaml

    from mesh_decoder.mesh import face_template, load_texture, save_mesh
    from mesh_decoder.mesh.uv import ensure_uv

    bare = face_template(500).copy(uv=None, uv_faces=None)
    template = tmp_path / "bare.obj"
    save_mesh(bare, template)
    config = tmp_path / "joint.yaml"
    config.write_text(yaml.safe_dump({
        "template": {"kind": "file", "path": str(template)}, "hierarchy": {"factors": [4, 4], "texture_size": 16,
                                                                           "cache_dir": False},
        "data": {"n": 12}, "model": {"channels": [8, 8], "joint": True}, "training": {"epochs": 1, "batch_size": 4}}))
    assert main(["train", str(config), "-o", str(tmp_path / "run"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run"), "--n", "2", "--texture", "--format", "obj",
                 "-o", str(tmp_path / "tex")]) == 0
    err = capsys.readouterr().err
    assert "has no UV coordinates: the textures are mapped through automatic ones" in err, err
    auto = ensure_uv(bare)
    for i in range(2):
        face = load_mesh(tmp_path / "tex" / f"face_{i:04d}.obj")
        np.testing.assert_allclose(face.uv, auto.uv, atol=1e-6)
        np.testing.assert_array_equal(face.uv_faces, auto.uv_faces)
        image = load_texture(tmp_path / "tex" / f"face_{i:04d}.obj")
        assert image.shape == (16, 16, 3) and np.ptp(image) > 0


def _bfloat16_copy(run, tmp_path):
    """A copy of ``run`` whose model and decoder files hold the same models cast to bfloat16."""
    import shutil

    from mesh_decoder.hierarchy import load_hierarchy
    from mesh_decoder.model_files import load_model, read_model_meta, save_model

    copy = tmp_path / "bf16_run"
    shutil.copytree(run, copy)
    hierarchy = load_hierarchy(copy / "hierarchy.npz")
    for name in ("model.safetensors", "decoder.safetensors"):
        extra = read_model_meta(copy / name)["extra_meta"]
        save_model(load_model(copy / name, hierarchy).to(torch.bfloat16), copy / name, hierarchy=hierarchy,
                   extra_meta=extra)
    return copy


def test_a_bfloat16_run_samples_and_evaluates(tiny_run, tmp_path, capsys):
    """sample stopped with 'Got unsupported ScalarType BFloat16' (numpy holds no bf16) and evaluate with 'x:
    expected dtype torch.bfloat16 (the autoencoder's), got torch.float32', an x the user never gave."""
    run = _bfloat16_copy(tiny_run, tmp_path)
    out = tmp_path / "faces"
    assert main(["sample", str(run), "--n", "3", "--seed", "5", "-o", str(out)]) == 0, capsys.readouterr().err
    latents, meshes = _written(out)
    model, faces = _model(run)
    assert next(model.parameters()).dtype == torch.bfloat16
    with torch.inference_mode():
        want = model.decode(torch.from_numpy(latents).to(torch.bfloat16)).float().numpy()
    got = np.stack([m.vertices for m in meshes])
    assert np.array_equal(got, want)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", str(tmp_path / "e.json")]) == 0, capsys.readouterr().err
    import json

    bf16 = json.loads((tmp_path / "e.json").read_text())
    assert main(["evaluate", str(tiny_run), "--json", str(tmp_path / "f.json")]) == 0
    fp32 = json.loads((tmp_path / "f.json").read_text())
    assert bf16.keys() == fp32.keys()
    errors = [d["models"]["autoencoder"]["vertex_error"]["mean"] for d in (bf16, fp32)]
    assert abs(errors[0] - errors[1]) < 0.05 * errors[1], errors  # the same model, rounded to bf16


def test_exporting_a_bfloat16_model_says_the_file_is_float32(tiny_run, tmp_path, capsys):
    """The export of a bf16 (or fp16) model is float32 (export_onnx's docstring says so), but the CLI's line did
    not: feeding the file float16 codes then failed in ONNX Runtime."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    run = _bfloat16_copy(tiny_run, tmp_path)
    capsys.readouterr()
    assert main(["export", str(run / "decoder.safetensors"), "-o", str(tmp_path / "bf16.onnx")]) == 0
    assert f"input z (B, {Z}) float32 (the bfloat16 model exported in float32); outputs" in capsys.readouterr().out
    assert main(["export", str(tiny_run / "decoder.safetensors"), "-o", str(tmp_path / "fp32.onnx")]) == 0
    assert f"input z (B, {Z}) float32; outputs" in capsys.readouterr().out


def test_a_seed_gives_the_same_first_faces_for_any_n(tiny_run, tiny_joint_run, tmp_path, capsys):
    """With one seed, sample --n 1 wrote another face than the first of --n 4 (torch.randn(n, Z) draws by
    another algorithm from 16 numbers on), though the help said the same seed writes the same faces."""
    from mesh_decoder.model_files import load_model

    pca_file = tmp_path / "pca.safetensors"
    assert main(["pca", str(tiny_joint_run / "config.yaml"), "-o", str(pca_file), "--components", "4",
                 "--color-components", "3"]) == 0
    seed = str(int(torch.randint(1000, ())))
    for model in (tiny_run, tiny_run / "decoder.safetensors", pca_file):
        written = {}
        for n in (1, 4, int(torch.randint(65, 130, ()))):  # within and past the first block of 64 rows
            out = tmp_path / f"{model.name}_{n}"
            assert main(["sample", str(model), "--n", str(n), "--seed", seed, "-o", str(out)]) == 0
            written[n] = np.load(out / "latents.npy", allow_pickle=False)
        longest = written[max(written)]
        for n, latents in written.items():  # the same draws; a stored prior's product rounds by batch size
            np.testing.assert_allclose(latents, longest[:n], rtol=1e-6, atol=1e-6)
    capsys.readouterr()
    # the Python API draws as the CLI does
    pca = load_model(pca_file)
    first = pca.sample_latents(1, torch.Generator().manual_seed(int(seed)))
    torch.testing.assert_close(first, pca.sample_latents(5, torch.Generator().manual_seed(int(seed)))[:1], rtol=0,
                               atol=0)
    auto, _ = _model(tiny_run)
    first = auto.sample_latents(1, torch.Generator().manual_seed(int(seed)))
    torch.testing.assert_close(first, auto.sample_latents(5, torch.Generator().manual_seed(int(seed)))[:1],
                               rtol=1e-6, atol=1e-6)
