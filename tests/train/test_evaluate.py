"""Evaluation: the autoencoder beside PCA at the same latent size, checked against slow references; CLI glue."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from mesh_decoder.pca import PCAModel
from mesh_decoder.train import (
    MEASURES,
    TrainingError,
    add_evaluate_arguments,
    add_train_arguments,
    evaluate,
    load_data,
    run_evaluate,
    run_train,
    train,
)
from tests.train.reference import autoencoder_errors, pca_reconstruction_errors


@pytest.fixture(scope="module")
def trained(tmp_path_factory, hierarchy_cache):
    config = {
        "template": {"vertices": 600},
        "hierarchy": {"factors": [2, 2], "cache_dir": hierarchy_cache},
        "data": {"n": 48, "seed": 1, "split": "extrapolation"},
        "model": {"channels": [8, 16], "latent_size": 6},
        "training": {"epochs": 2, "batch_size": 8, "seed": 2},
    }
    data = load_data(config)
    out = tmp_path_factory.mktemp("run")
    return train(config, out, progress=False, data=data), data


def test_evaluate_side_by_side_with_pca_at_the_same_latent_size(trained):
    result, data = trained
    ev = evaluate(result.output_dir, num_samples=20)
    assert set(ev) >= {"source", "split", "latent_size", "units", "parameter_note", "measures", "models", "table"}
    assert ev["source"]["kind"] == "model" and ev["measures"] == list(MEASURES)
    assert ev["split"]["kind"] == "extrapolation" and ev["split"]["threshold"] == 0.7
    assert ev["split"]["num_test"] == data.test.shape[0] > 0
    ae, pca = ev["models"]["autoencoder"], ev["models"]["pca"]
    K, V = 6, 600
    assert ev["latent_size"] == K
    assert pca["parameters"] == 3 * V + K * 3 * V == pca["decoder_parameters"]  # mean + components
    assert ae["parameters"] == sum(p.numel() for p in result.model.parameters())
    assert ae["decoder_parameters"] == sum(p.numel() for p in result.model.decoder.parameters())
    for model in (ae, pca):
        assert set(model["vertex_error"]) == {"mean", "median", "std", "max"} and model["color_error"] is None
        assert {"explained_variance", "compactness", "generalisation", "specificity"} <= set(model)
    assert len(pca["compactness"]) == K and len(ae["compactness"]) == K
    assert list(pca["generalisation"]) == ["1", "2", "4", "6"]
    # PCA at K components: explained variance equals its compactness, errors equal a dense float64 reference
    assert pca["explained_variance"] == pytest.approx(pca["compactness"][-1], abs=1e-4)
    ref = pca_reconstruction_errors(data.train.numpy(), data.test.numpy(), K)
    assert pca["vertex_error"]["mean"] == pytest.approx(ref.mean(), rel=1e-4)
    assert pca["vertex_error"]["median"] == pytest.approx(np.median(ref), rel=1e-4)
    assert pca["generalisation"]["6"] == pytest.approx(ref.mean(), rel=1e-4)
    ref_ae = autoencoder_errors(result.model, data.test)
    assert ae["vertex_error"]["mean"] == pytest.approx(ref_ae.mean(), rel=1e-5)
    assert ae["vertex_error"]["std"] == pytest.approx(ref_ae.std(), rel=1e-4)
    assert ae["vertex_error"]["max"] == pytest.approx(ref_ae.max(), rel=1e-5)
    # the table shows both models side by side, with parameter counts
    table = ev["table"]
    assert "autoencoder" in table and "PCA" in table and "latent size 6" in table
    assert f"{pca['parameters']:,}" in table and f"{ae['parameters']:,}" in table
    assert f"{ae['vertex_error']['mean']:.3f}" in table
    json.dumps(ev, allow_nan=False)  # JSON-able


def test_evaluate_a_checkpoint_and_an_object_agree(trained):
    result, data = trained
    from_object = evaluate(result, data=data, measures=("error", "specificity"), num_samples=10)
    from_checkpoint = evaluate(result.checkpoint_path, data=data, measures=("error", "specificity"),
                               num_samples=10, pca=PCAModel.fit(data.train.double(), num_components=9))
    assert from_checkpoint["source"]["kind"] == "checkpoint"
    a, b = from_object["models"], from_checkpoint["models"]
    assert a["autoencoder"]["vertex_error"] == b["autoencoder"]["vertex_error"]
    # the checkpoint's prior is fitted on the same training latents: same specificity
    assert a["autoencoder"]["specificity"]["mean"] == pytest.approx(b["autoencoder"]["specificity"]["mean"], rel=1e-4)
    assert a["pca"]["vertex_error"]["mean"] == pytest.approx(b["pca"]["vertex_error"]["mean"], rel=1e-4)
    assert "compactness" not in a["autoencoder"] and "explained variance" not in from_object["table"]
    with pytest.raises(ValueError, match="at least 6 components"):
        evaluate(result, data=data, pca=PCAModel.fit(data.train, num_components=3))
    with pytest.raises(ValueError, match="unknown"):
        evaluate(result, data=data, measures=("speed",))
    with pytest.raises(TypeError, match="config"):
        evaluate(result.model)


def test_a_run_folder_without_its_model_file_says_it_uses_the_checkpoint(trained, tmp_path):
    """A run folder without model.safetensors (or with a folder of that name) was evaluated from its checkpoint
    without a word, though that model has no fitted latent prior."""
    import shutil

    from mesh_decoder.train import load_trained
    from mesh_decoder.train.checkpoint import CheckpointError

    result, data = trained
    run = tmp_path / "run"
    shutil.copytree(result.output_dir, run)
    (run / "model.safetensors").unlink()
    with pytest.warns(UserWarning, match=rf"^{run}: no model\.safetensors \(a run that has not finished\?\): using "
                                         r"checkpoint\.safetensors, whose model has no fitted latent prior$"):
        ev = evaluate(run, data=data, pca=False, measures=())
    assert ev["source"]["kind"] == "checkpoint"
    (run / "model.safetensors").mkdir()
    with pytest.raises(CheckpointError, match=rf"^{run / 'model.safetensors'}: expected the run's model file, found a "
                                              r"directory$"):
        load_trained(run)


def test_cli_train_and_evaluate(tmp_path, tiny_config, capsys):
    config_path = tmp_path / "tiny.json"
    config_path.write_text(json.dumps(tiny_config(training={"epochs": 3}, data={"n": 20})))
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    out = tmp_path / "run"
    args = parser.parse_args([str(config_path), "-o", str(out), "--epochs", "1", "--quiet"])
    assert run_train(args) == 0
    printed = capsys.readouterr().out
    assert "data: 18 training and 2 held-out meshes (synthetic faces)\ntrained 1 epoch (" in printed, printed
    args = parser.parse_args([str(config_path), "-o", str(out), "--resume", "--quiet"])  # on to 3 epochs
    assert run_train(args) == 0
    assert "trained 3 epochs" in capsys.readouterr().out
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    args = parser.parse_args([str(config_path), "-o", str(out), "--resume", "--epochs", "2", "--quiet"])
    with pytest.raises(TrainingError, match=r"training.epochs: expected at least 3 .*got 2; nothing was changed"):
        run_train(args)
    args = parser.parse_args([str(config_path), "-o", str(out), "--resume", "--quiet"])
    assert run_train(args) == 0
    assert "already trained its 3 epochs; nothing to do, no file was changed" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files

    parser = argparse.ArgumentParser()
    add_evaluate_arguments(parser)
    args = parser.parse_args([str(out), "--json", str(tmp_path / "eval.json"), "--num-samples", "5"])
    assert run_evaluate(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["table"] in printed and saved["models"]["pca"]["parameters"] == 3 * 600 * 9


def test_batch_size_train_faces_and_device_are_checked(trained, capsys):
    from mesh_decoder.cli import main
    from mesh_decoder.train.evaluate import _ae_reconstruct

    result, data = trained
    rng = np.random.default_rng()
    base = evaluate(result, data=data, measures=("error", "compactness"), pca=False)
    assert "PCA" not in base["parameter_note"] and "PCA" not in base["table"]  # no baseline, no note on it
    batch = int(rng.integers(1, data.test.shape[0] + 2))
    faces = int(rng.integers(2, data.train.shape[0] + 1))
    same = evaluate(result, data=data, measures=("error", "compactness"), pca=False, batch_size=batch)
    assert same["models"]["autoencoder"]["vertex_error"] == pytest.approx(base["models"]["autoencoder"]["vertex_error"])
    part = evaluate(result, data=data, measures=("error", "compactness"), pca=False, max_train_faces=faces)
    ref_z = result.model.encode(data.train[:faces]).detach().double()
    ref = np.sort(np.linalg.eigvalsh(np.cov(ref_z.numpy().T)))[::-1]
    assert part["models"]["autoencoder"]["compactness"] == pytest.approx(np.cumsum(ref) / ref.sum(), rel=1e-4)
    bad = int(rng.integers(-50, 1))
    with pytest.raises(ValueError, match=rf"^batch_size: expected an integer >= 1, got {bad}$"):
        evaluate(result, data=data, pca=False, batch_size=bad)
    with pytest.raises(ValueError, match=rf"^max_train_faces: expected an integer >= 2, got {bad + 1}$"):
        evaluate(result, data=data, pca=False, max_train_faces=bad + 1)
    with pytest.raises(ValueError, match="^device: expected cpu, cuda, cuda:N or mps, got 'foo'$"):
        evaluate(result.output_dir, device="foo")
    with pytest.raises(ValueError, match="expected at least one mesh"):
        _ae_reconstruct(result.model, data.test[:0], 4)
    # the command line: one line, before any work
    missing = f"cuda:{torch.cuda.device_count()}"
    for argv, expected in [
        (["--batch-size", str(bad), "--measures", "error", "--no-pca"],
         f"--batch-size: expected an integer >= 1, got '{bad}'"),
        (["--max-train-faces", str(bad + 1)], f"--max-train-faces: expected an integer >= 2, got '{bad + 1}'"),
        (["--device", "foo"], "--device: expected cpu, cuda, cuda:N or mps, got 'foo'"),
        (["--device", missing], f"--device {missing}: "),
    ]:
        assert main(["evaluate", result.output_dir, *argv]) != 0
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    for device, status in (("foo", 2), (missing, 1)):  # a malformed device is a usage error, as in bench
        assert main(["evaluate", result.output_dir, "--device", device]) == status
        capsys.readouterr()


def test_measures_seed_and_pca_arguments_are_checked(trained, capsys):
    """A string of measures was read letter by letter, a seed beyond 64 bits failed with torch's 'Overflow when
    unpacking long long' (the command line's too), and pca=0 fitted PCA by its truth value."""
    from mesh_decoder.cli import main

    result, data = trained
    rng = np.random.default_rng(31)
    with pytest.raises(TypeError, match=r"^measures: expected a list of names from \[.*\], got the string "
                                        r"'compactness' \(write \('compactness',\)\)$"):
        evaluate(result, data=data, measures="compactness", pca=False)
    big = 2**64 + int(rng.integers(1, 1000))
    for seed in (big, -int(rng.integers(1, 1000))):
        with pytest.raises(ValueError, match=rf"^seed: expected an integer in \[0, 4294967295\], got {seed}$"):
            evaluate(result, data=data, seed=seed, pca=False)
    with pytest.raises(TypeError, match=r"^seed: expected an integer, got '7' \(str\)$"):
        evaluate(result, data=data, seed="7", pca=False)
    for pca in (0, "no"):
        with pytest.raises(TypeError, match=rf"^pca: expected True, False or a fitted PCAModel, got {pca!r} "):
            evaluate(result, data=data, pca=pca, measures=())
    assert list(evaluate(result, data=data, pca=np.False_, measures=())["models"]) == ["autoencoder"]
    assert main(["evaluate", result.output_dir, "--no-pca", "--measures", "error", "--seed", str(big)]) == 2
    assert f"argument --seed: expected an integer in [0, 4294967295], got '{big}'" in capsys.readouterr().err


def test_a_run_without_held_out_faces_is_named_when_evaluated(tmp_path, tiny_config, capsys):
    """A run trained on 2 faces holds none out; evaluating it said 'data: expected held-out test meshes'
    without naming the run or what to change."""
    from mesh_decoder.cli import main

    run = tmp_path / "run"
    train(tiny_config(data={"n": 2}, training={"epochs": 1}), run, progress=False)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", str(tmp_path / "e.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {run / 'model.safetensors'}: the run's data: expected held-out test meshes, got "
                          "none (data.test_fraction = 0.1, split 'interpolation' of 2 faces); train with more faces "
                          "or a larger data.test_fraction to evaluate"), err
    assert not (tmp_path / "e.json").exists()


def test_specificity_does_not_depend_on_the_batch_size_and_says_its_noise(trained):
    """Samples were drawn batch by batch, so --batch-size (a speed setting) moved specificity (2.731 to 2.676);
    the table gave three decimals with no uncertainty, and --max-train-faces left no trace."""
    result, _ = trained
    a = evaluate(result.output_dir, num_samples=30, batch_size=64, measures=("specificity",))
    b = evaluate(result.output_dir, num_samples=30, batch_size=7, measures=("specificity",))
    for name in ("autoencoder", "pca"):
        sa, sb = a["models"][name]["specificity"], b["models"][name]["specificity"]
        assert sa["mean"] == pytest.approx(sb["mean"], rel=1e-6)
        assert sa["sem"] == pytest.approx(sa["std"] / np.sqrt(29)) and sa["seed"] == 0 and sa["num_samples"] == 30
    assert "  its standard error" in a["table"]
    d = evaluate(result.output_dir, num_samples=5, measures=("compactness",))
    assert d["split"]["max_train_faces"] is None and "explained variance (train)" in d["table"]
    c = evaluate(result.output_dir, num_samples=5, max_train_faces=3, measures=("compactness",))
    assert c["split"]["max_train_faces"] == 3 and "explained variance (first 3 train faces)" in c["table"]
