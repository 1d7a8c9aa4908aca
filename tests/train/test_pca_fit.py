"""``mesh-decoder pca``: the linear 3DMM of a training config, checked against a dense SVD; the CLI and the
commands that take its file (fit, evaluate)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mesh_decoder.cli import main
from mesh_decoder.mesh.io import save_mesh
from mesh_decoder.model_files import load_model, read_model_meta
from mesh_decoder.pca import PCAModel
from mesh_decoder.train import TrainConfig, TrainingError, evaluate, fit_pca, load_data, train
from tests.train.reference import pca_reconstruction_errors


def test_fit_pca_matches_a_dense_svd_of_the_training_faces(tiny_config):
    config = tiny_config(data={"n": 40})  # 36 training faces, 4 held out
    data = load_data(config)
    model, meta = fit_pca(config, 7, data=data)
    assert isinstance(model, PCAModel) and model.latent_size == 7 and not model.has_colors
    assert model.mean.dtype == torch.float32
    train = data.train.double().numpy().reshape(36, -1)  # (N, 3V)
    np.testing.assert_allclose(model.mean.double().numpy().reshape(-1), train.mean(axis=0), atol=1e-4)
    singular = np.linalg.svd(train - train.mean(axis=0), compute_uv=False)
    assert meta["explained_variance"] == pytest.approx((singular[:7] ** 2).sum() / (singular ** 2).sum(), rel=1e-5)
    ref = pca_reconstruction_errors(data.train.numpy(), data.test.numpy(), 7)  # (M, V), loops in float64
    assert meta["test_vertex_error"] == pytest.approx(float(ref.mean()), rel=1e-4)
    assert meta["train_config"] == TrainConfig.from_dict(config).to_dict()
    assert meta["data_version"] == data.meta["data_version"] and meta["data"]["num_train"] == 36
    json.dumps(meta, allow_nan=False)  # JSON-able, as the model file's metadata must be


def test_a_joint_config_fits_a_colour_model_and_reports_it(tiny_config, tmp_path, capsys):
    config = tiny_config(model={"joint": True}, hierarchy={"texture_size": 0})
    data = load_data(config)
    model, meta = fit_pca(config, 5, 3, data=data)
    assert model.latent_size == 5 and model.color_latent_size == 3
    colors = data.train[..., 3:].double().numpy().reshape(data.train.shape[0], -1)  # (N, 3V)
    np.testing.assert_allclose(model.color_mean.double().numpy().reshape(-1), colors.mean(axis=0), atol=1e-5)
    singular = np.linalg.svd(colors - colors.mean(axis=0), compute_uv=False)
    assert meta["color_explained_variance"] == pytest.approx((singular[:3] ** 2).sum() / (singular ** 2).sum(),
                                                             rel=1e-5)
    ref = pca_reconstruction_errors(data.train[..., 3:].numpy(), data.test[..., 3:].numpy(), 3)  # RGB as xyz
    assert meta["test_color_error"] == pytest.approx(float(ref.mean()), rel=1e-4)
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    assert main(["pca", str(path), "-o", str(tmp_path / "p.safetensors"), "--components", "5",
                 "--color-components", "3"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"5 shape components keeping [0-9.]+% of the shape variance and 3 colour components keeping "
                     r"[0-9.]+% of the colour variance; mean vertex error [0-9.e+-]+ \(mm\) on 4 held-out "
                     r"faces, colour error [0-9.e+-]+ \(RGB distance\)\n$", out), out


def test_the_cli_never_replaces_a_file_unless_told(tiny_config, tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(tiny_config()))
    out = tmp_path / "model.safetensors"
    out.write_bytes(b"a trained model")
    assert main(["pca", str(path), "-o", str(out), "--components", "4"]) == 1
    err = capsys.readouterr().err
    assert "expected a new file, found one already there" in err and "--overwrite" in err, err
    assert out.read_bytes() == b"a trained model"
    assert main(["pca", str(path), "-o", str(out), "--components", "4", "--overwrite"]) == 0
    assert load_model(out).latent_size == 4
    assert main(["pca", str(path), "-o", str(out), "--components", "3", "--overwrite"]) == 0  # an earlier PCA
    assert load_model(out).latent_size == 3


def test_overwrite_never_replaces_another_kind_of_model(tiny_run, tmp_path, capsys):
    """--overwrite replaced a run's decoder.safetensors with a PCA model without a word."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "decoder.safetensors").read_bytes()
    assert main(["pca", str(run / "config.yaml"), "-o", str(run / "decoder.safetensors"), "--components", "3",
                 "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: -o/--output {run / 'decoder.safetensors'}: --overwrite replaces a PCA model file, found a "
                   "SpiralDecoder model file (a trained model); nothing was written: choose another path\n"), err
    assert (run / "decoder.safetensors").read_bytes() == before


def test_components_the_data_cannot_give_are_refused_naming_the_key(tiny_config):
    config = tiny_config(data={"n": 12})  # 10 training faces after the split
    n = load_data(config).train.shape[0]
    with pytest.raises(TrainingError, match=rf"^config: num_components \(--components\): expected at most {n - 1} "
                                            rf"\(the training faces minus one: {n} from data.n and the split\), "
                                            rf"got {n}$"):
        fit_pca(config, n)
    with pytest.raises(TrainingError, match=r"color_components \(--color-components\): a shape-only config"):
        fit_pca(config, 3, 3)


def test_cli_writes_a_model_file_that_fit_and_evaluate_take(tiny_config, tmp_path, capsys):
    config_path = tmp_path / "c.json"
    config_path.write_text(json.dumps(tiny_config(data={"n": 40})))
    out = tmp_path / "pca.safetensors"
    assert main(["pca", str(config_path), "-o", str(out), "--components", "8"]) == 0
    printed = capsys.readouterr().out
    assert re.fullmatch(rf"wrote {re.escape(str(out))}: PCA of 36 training faces, 8 shape components keeping "
                        r"[0-9.]+% of the shape variance; mean vertex error [0-9.e+-]+ \(mm\) on 4 held-out "
                        r"faces\n", printed), printed
    model = load_model(out)
    fitted, meta = fit_pca(tiny_config(data={"n": 40}), 8)
    for name, tensor in fitted.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], tensor)
    stored = read_model_meta(out)["extra_meta"]
    assert stored["test_vertex_error"] == pytest.approx(meta["test_vertex_error"])

    # fit finds the template in the file's config and fits a held-out face closely
    data = load_data(tiny_config(data={"n": 40}))
    target = data.template.copy(vertices=data.test[0].double().numpy())
    save_mesh(target, tmp_path / "target.obj")
    assert main(["fit", str(out), "--target", str(tmp_path / "target.obj"), "-o", str(tmp_path / "fitted.obj"),
                 "--quiet"]) == 0
    assert "built-in face template (600 vertices, seed 0)" in capsys.readouterr().out
    # evaluate takes it as the PCA beside an autoencoder of the config (truncated to its latent size, 8)
    trained = train(tiny_config(data={"n": 40}, training={"epochs": 1}), tmp_path / "run", progress=False, data=data)
    report = evaluate(trained, data=data, pca=model, measures=("error",))
    assert report["latent_size"] == 8
    ref = pca_reconstruction_errors(data.train.numpy(), data.test.numpy(), report["latent_size"])
    assert report["models"]["pca"]["vertex_error"]["mean"] == pytest.approx(float(ref.mean()), rel=1e-3)


@pytest.mark.parametrize("argv, message", [
    (["--components", "0"], "argument --components: expected an integer >= 1, got '0'"),
    (["-o", "pca.npz"], "-o/--output pca.npz: expected a file name ending in .safetensors, got '.npz'"),
    (["--components", "500"], "num_components (--components): expected at most 35"),
])
def test_cli_errors_are_one_line(tiny_config, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps(tiny_config()))
    args = ["pca", "c.json", "-o", "pca.safetensors", *argv]
    assert main(args) in (1, 2)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "pca.safetensors").exists() and not (tmp_path / "pca.npz").exists()


def test_the_output_suffix_is_read_as_other_commands_read_it(tiny_config, tmp_path, capsys, monkeypatch):
    """-o P.SAFETENSORS was refused ('expected a .safetensors file'), where every other command takes any case."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_text(json.dumps(tiny_config()))
    assert main(["pca", "c.json", "-o", "P.SafeTensors", "--components", "3"]) == 0
    assert load_model(tmp_path / "P.SafeTensors").latent_size == 3
