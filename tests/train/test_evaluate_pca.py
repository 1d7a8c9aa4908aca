"""evaluate(pca=PCAModel): a given PCA is checked against the run before any work and truncated to its needs.

Regressions: a PCA with fewer colour components than the latent size failed with truncate's
"num_color_components: expected an integer in [1, Kc], got K" (an argument the caller never passed), even for a
shape-only run where its colour model does not matter; a PCA of another template size failed only inside the
reconstruction with "vertices: expected shape (B, V', 3), got (M, V, 3)", naming neither the PCA nor the run; and a
joint run given a shape-only PCA said in its footer that PCA had "K shape and K colour coefficients".

``--pca FILE`` / :func:`load_pca_file`: a PCA file saved by ``mesh-decoder pca`` could not be evaluated from the
command line, and nothing checked that a given PCA was fitted to the run's training faces. A file of the run's
config gives the fitted baseline's numbers; one whose stored config makes other faces is refused naming each key;
files that are not PCA models are refused naming the file; a PCA that stores no config is measured with a note.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os

import numpy as np
import pytest
import torch

from mesh_decoder.cli import main
from mesh_decoder.errors import ModelFileError, ModelFileNotFoundError
from mesh_decoder.model_files import save_model
from mesh_decoder.pca import PCAModel
from mesh_decoder.train import (
    PCAFile,
    TrainConfig,
    TrainingError,
    evaluate,
    fit_pca,
    load_data,
    load_pca_file,
    run_evaluate,
    train,
    training_face_keys,
)

evaluate_module = importlib.import_module("mesh_decoder.train.evaluate")  # the package exports the function
V = 600


def _config(hierarchy_cache, joint: bool) -> dict:
    return {
        "template": {"vertices": V},
        "hierarchy": {"factors": [2, 2], "cache_dir": hierarchy_cache},
        "data": {"n": 30, "seed": 4},
        "model": {"channels": [8, 16], "latent_size": 5, "joint": joint},
        "training": {"epochs": 1, "batch_size": 8, "seed": 3},
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory, hierarchy_cache):
    """``{"shape": (TrainResult, TrainingData), "joint": (...)}``: a shape-only and a joint run, latent size 5."""
    out = {}
    for kind in ("shape", "joint"):
        config = _config(hierarchy_cache, kind == "joint")
        data = load_data(config)
        out[kind] = train(config, tmp_path_factory.mktemp(kind), progress=False, data=data), data
    assert out["joint"][1].channels == 6 and out["shape"][1].channels == 3
    return out


def _no_work(monkeypatch):
    """Make loading the data and reconstructing with the autoencoder fail loudly: an error raised before them
    came before any work."""
    def refuse(*args, **kwargs):
        raise AssertionError("data were loaded or the autoencoder evaluated before the PCA was checked")

    monkeypatch.setattr(evaluate_module, "_ae_reconstruct", refuse)
    monkeypatch.setattr(evaluate_module, "load_data", refuse)


def _fit(data, k: int, kc: int | None):
    """A PCA of the run's training faces: ``k`` shape components and ``kc`` colour components (None: no colour)."""
    x = data.train.double()
    colors = None if kc is None else x[..., 3:6]
    return PCAModel.fit(x[..., :3], colors, num_components=k, color_components=kc)


def test_a_shape_run_ignores_the_colour_model_of_a_given_pca(runs):
    result, data = runs["shape"]
    joint_data = runs["joint"][1]
    K = result.model.latent_size
    rng = np.random.default_rng()
    k, kc = K + int(rng.integers(0, 4)), int(rng.integers(1, K))  # fewer colour components than K
    # the shape of this run's training faces, the colours of the joint run's (the shape run has none)
    x = data.train.double()
    given = PCAModel.fit(x, joint_data.train.double()[: x.shape[0], :, 3:], num_components=k, color_components=kc)
    assert given.has_colors and given.color_latent_size < K
    ev = evaluate(result, data=data, pca=given, measures=("error", "compactness"))
    pca = ev["models"]["pca"]
    assert pca["parameters"] == 3 * V + K * 3 * V  # shape only: the colour model is not counted
    assert pca["color_error"] is None and "colour" not in ev["parameter_note"]
    shape_only = evaluate(result, data=data, pca=PCAModel.fit(x, num_components=k), measures=("error", "compactness"))
    assert {key: v for key, v in pca.items() if key != "source"} == \
        {key: v for key, v in shape_only["models"]["pca"].items() if key != "source"}
    assert pca["source"]["color_components"] == kc and shape_only["models"]["pca"]["source"]["color_components"] == 0
    assert f"its first {K} of {k} components (not checked" in ev["table"]  # its colours are not used: not named


def test_a_joint_run_needs_k_colour_components(runs, monkeypatch):
    result, data = runs["joint"]
    K = result.model.latent_size
    rng = np.random.default_rng()
    kc = int(rng.integers(1, K))
    given = _fit(data, K + int(rng.integers(0, 3)), kc)
    _no_work(monkeypatch)
    with pytest.raises(ValueError, match=rf"^pca: expected a PCAModel with at least {K} colour components \(the "
                                         rf"latent size, as for its {given.latent_size} shape components\), "
                                         rf"got {kc}$"):
        evaluate(result, data=data, pca=given, measures=("error",))


def test_a_joint_run_measures_a_given_joint_pca_at_k_colour_components(runs):
    result, data = runs["joint"]
    K = result.model.latent_size
    rng = np.random.default_rng()
    given = _fit(data, K + int(rng.integers(0, 3)), K + int(rng.integers(0, 3)))
    ev = evaluate(result, data=data, pca=given, measures=("error",))
    pca = ev["models"]["pca"]
    assert pca["parameters"] == 2 * (3 * V + K * 3 * V)
    # reference: the colours projected on the first K colour directions, by hand in float64
    mean = given.color_mean.double().reshape(1, -1)  # (1, 3V)
    basis = given.color_components.double()[:K]  # (K, 3V)
    test = data.test[..., 3:].double().reshape(data.test.shape[0], -1)  # (M, 3V)
    recon = mean + (test - mean) @ basis.T @ basis
    ref = (recon - test).reshape(test.shape[0], V, 3).norm(dim=-1)  # (M, V)
    assert pca["color_error"]["mean"] == pytest.approx(float(ref.mean()), rel=1e-4)
    assert "K shape and K colour coefficients" in ev["parameter_note"]


def test_a_joint_run_given_a_shape_only_pca_reports_no_pca_colour(runs):
    result, data = runs["joint"]
    K = result.model.latent_size
    given = _fit(data, K + int(np.random.default_rng().integers(0, 3)), None)
    ev = evaluate(result, data=data, pca=given, measures=("error",))
    pca, ae = ev["models"]["pca"], ev["models"]["autoencoder"]
    assert pca["color_error"] is None and ae["color_error"] is not None
    assert pca["parameters"] == 3 * V + K * 3 * V
    note = ev["parameter_note"]
    assert "K colour coefficients" not in note and "the given PCA has no colour model" in note
    assert ev["table"].splitlines()[-1] == f"parameters: {note}"
    fitted = evaluate(result, data=data, measures=("error",))  # fitted here: with a colour model, said so
    assert "K shape and K colour coefficients" in fitted["parameter_note"]
    assert fitted["models"]["pca"]["vertex_error"] == pytest.approx(pca["vertex_error"], rel=1e-4)


@pytest.mark.parametrize("kind", ["shape", "joint"])
def test_a_pca_of_another_template_size_is_refused_before_any_work(runs, monkeypatch, kind):
    result, data = runs[kind]
    K = result.model.latent_size
    rng = np.random.default_rng()
    other = int(rng.choice([int(rng.integers(10, V)), int(rng.integers(V + 1, 2 * V))]))
    n = K + 3
    shapes = torch.from_numpy(rng.normal(size=(n, other, 3)))
    colors = torch.from_numpy(rng.uniform(size=(n, other, 3))) if kind == "joint" else None
    given = PCAModel.fit(shapes, colors, num_components=K + 1)
    _no_work(monkeypatch)
    with pytest.raises(ValueError, match=rf"^pca: expected a PCAModel of {V} vertices \(the run's template\), "
                                         rf"got {other}$"):
        evaluate(result, data=data, pca=given, measures=("error",))
    with pytest.raises(ValueError, match=rf"^pca: expected a PCAModel of {V} vertices"):
        evaluate(result.output_dir, pca=given, measures=("error",))  # a saved run: before its data are loaded


# ------------------------------------------------------------------------------------------- PCA files (--pca)
#: Both baselines are PCAModel.fit of the same float64 training faces (the same full SVD), cast to float32;
#: the file stores those float32 tensors bit for bit. They may differ only by float32 rounding in the
#: evaluation, at most about sqrt(3V) * 2**-24 ~ 3e-6 relative for V = 600; leaving out a single training
#: face moves the mean error by about 1e-2 relative (checked below), a thousand times this tolerance.
SAME = 1e-5
MEASURED = ("error", "compactness", "generalisation")


def _pca_numbers(pca: dict) -> dict:
    """The numbers of a result's PCA entry (errors, explained variance, compactness, generalisation)."""
    out = {f"vertex_error.{k}": v for k, v in pca["vertex_error"].items()}
    out.update({f"color_error.{k}": v for k, v in (pca["color_error"] or {}).items()})
    out["explained_variance"] = pca["explained_variance"]
    out.update({f"compactness.{i}": c for i, c in enumerate(pca["compactness"])})
    out.update({f"generalisation.{k}": v for k, v in pca["generalisation"].items()})
    return out


def _save_fitted(config: dict, path, k: int, **meta_changes) -> None:
    """``fit_pca`` of ``config`` saved as ``mesh-decoder pca`` saves it (its meta with ``meta_changes``)."""
    model, meta = fit_pca(config, k)
    save_model(model, path, extra_meta={**meta, **meta_changes})


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1, captured
    return captured.err


@pytest.mark.parametrize("kind", ["shape", "joint"])
def test_a_pca_file_of_the_runs_config_gives_the_numbers_of_the_baseline_fitted_now(runs, hierarchy_cache,
                                                                                     tmp_path, capsys, kind):
    result, data = runs[kind]
    K = result.model.latent_size
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(_config(hierarchy_cache, kind == "joint")))
    stored = tmp_path / "pca.safetensors"
    assert main(["pca", str(config_path), "-o", str(stored), "--components", str(K)]) == 0
    capsys.readouterr()
    report = tmp_path / "eval.json"
    assert main(["evaluate", result.output_dir, "--pca", str(stored), "--measures", *MEASURED,
                 "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    from_file = json.loads(report.read_text())
    fitted = evaluate(result.output_dir, measures=MEASURED)
    numbers, expected = _pca_numbers(from_file["models"]["pca"]), _pca_numbers(fitted["models"]["pca"])
    assert numbers.keys() == expected.keys() and len(numbers) > 10
    assert (from_file["models"]["pca"]["color_error"] is None) == (kind == "shape")
    for key, value in expected.items():
        assert numbers[key] == pytest.approx(value, rel=SAME), key
    # the tolerance tells training faces apart: leave one out and the mean error moves far beyond it
    fewer = PCAModel.fit(data.train.double()[1:, :, :3], num_components=K)
    moved = evaluate(result.output_dir, pca=fewer, measures=("error",))["models"]["pca"]["vertex_error"]["mean"]
    assert abs(moved / expected["vertex_error.mean"] - 1) > 100 * SAME
    # where each baseline came from: in the JSON and in the printed table
    source = from_file["models"]["pca"]["source"]
    assert source["kind"] == "file" and source["path"] == str(stored) and source["components"] == K
    assert source["training_faces"] == "checked" and source["note"] is None
    assert {"data.n", "data.seed", "data.split", "template.vertices", "data_version",
            "template_hash"} <= set(source["checked_keys"])
    assert "data.norm_eps" not in source["checked_keys"] and "training.seed" not in source["checked_keys"]
    assert from_file["table"] in printed and "note:" not in printed
    used = f"{K} of {K} shape and {K} of {K} colour components" if kind == "joint" else f"{K} of {K} components"
    assert (f"PCA baseline: {stored}, its first {used} (fitted to the run's training faces: its stored config "
            "matches the run's on the keys that decide them, and its template hash and data version)\n") in printed
    assert source["color_components"] == (K if kind == "joint" else 0)
    assert fitted["models"]["pca"]["source"] == {"kind": "fitted", "path": None, "components": K,
                                                 "color_components": None, "training_faces": "fitted",
                                                 "checked_keys": [], "note": None}
    assert (f"PCA baseline: fitted now to the run's {data.train.shape[0]} training faces, {K} components"
            in fitted["table"].splitlines())


def test_a_file_with_more_components_is_truncated_and_keys_that_do_not_decide_the_faces_may_differ(
        runs, hierarchy_cache, tmp_path):
    result, data = runs["shape"]
    K = result.model.latent_size
    rng = np.random.default_rng()
    extra = int(rng.integers(1, 6))
    # a joint config with another model, normalisation and training: the same faces (with colours beside them)
    config = _config(hierarchy_cache, joint=True)
    config["model"]["latent_size"] = K + extra
    config["data"]["norm_eps"] = float(rng.uniform(0.002, 0.1))
    config["training"].update(seed=int(rng.integers(10, 1000)), epochs=int(rng.integers(2, 50)))
    config["hierarchy"]["factors"] = [3, 2]
    path = tmp_path / "other-model.safetensors"
    _save_fitted(config, path, K + extra)
    pca = load_pca_file(path, result.output_dir)  # checked against the run: accepted
    assert isinstance(pca, PCAFile) and pca.model.latent_size == K + extra and pca.train_config is not None
    assert pca.train_config.model.joint and pca.data_version == data.meta["data_version"]
    ev = evaluate(result, data=data, pca=pca, measures=MEASURED)
    fitted = evaluate(result, data=data, measures=MEASURED)
    numbers, expected = _pca_numbers(ev["models"]["pca"]), _pca_numbers(fitted["models"]["pca"])
    assert numbers.keys() == expected.keys()
    for key, value in expected.items():
        assert numbers[key] == pytest.approx(value, rel=SAME), key
    source = ev["models"]["pca"]["source"]
    assert source["components"] == K + extra and source["training_faces"] == "checked"
    assert f"its first {K} of {K + extra} components (fitted to the run's training faces" in ev["table"]


def _fresh(rng, old, low, high):
    """A random integer in ``[low, high)`` other than ``old``."""
    value = old
    while value == old:
        value = int(rng.integers(low, high))
    return value


@pytest.mark.parametrize("section, key", [("data", "seed"), ("data", "n"), ("data", "test_fraction"),
                                          ("data", "split"), ("data", "generator_seed"), ("template", "seed")])
def test_a_pca_of_other_training_faces_is_refused_naming_the_key(runs, hierarchy_cache, tmp_path, capsys,
                                                                  monkeypatch, section, key):
    result, data = runs["shape"]
    K = result.model.latent_size
    config = _config(hierarchy_cache, joint=False)
    rng = np.random.default_rng()
    old = TrainConfig.from_dict(config).to_dict()[section][key]
    new = {"seed": lambda: _fresh(rng, old, 0, 1000), "n": lambda: _fresh(rng, old, 25, 45),
           "test_fraction": lambda: float(rng.choice([0.2, 0.25, 0.3])), "split": lambda: "extrapolation",
           "generator_seed": lambda: _fresh(rng, old, 0, 1000)}[key]()
    config[section][key] = new
    path = tmp_path / f"other-{key}.safetensors"
    _save_fitted(config, path, K)
    report = tmp_path / "eval.json"
    assert main(["evaluate", result.output_dir, "--pca", str(path), "--measures", "error",
                 "--json", str(report)]) == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"error: {path}: expected a PCA of the training faces of {result.model_path}, found one "
                          "fitted to other faces ("), err
    assert f"{section}.{key}: run {old!r}, PCA file {new!r}" in err and "mesh-decoder pca" in err, err
    assert not report.exists()
    # the library: load_pca_file checks against a run; evaluate refuses it before any work
    with pytest.raises(TrainingError, match=f"{section}.{key}: run {old!r}, PCA file {new!r}"):
        load_pca_file(path, result.output_dir)
    with pytest.raises(TrainingError, match=f"{section}.{key}: run {old!r}, PCA file {new!r}"):
        load_pca_file(path, _config(hierarchy_cache, joint=False))  # a config: its keys alone
    given = load_pca_file(path)  # no run: read, not checked
    assert given.train_config.to_dict()[section][key] == new
    with pytest.raises(TrainingError, match=f"{section}.{key}: run {old!r}, PCA file {new!r}"):
        evaluate(result, data=data, pca=given, measures=("error",))
    _no_work(monkeypatch)
    with pytest.raises(TrainingError, match=f"{section}.{key}: run {old!r}, PCA file {new!r}"):
        evaluate(result.output_dir, pca=given, measures=("error",))


def test_a_pca_of_another_data_version_is_refused(runs, hierarchy_cache, tmp_path, capsys):
    """The stored data version and template hash are compared too: the same config on other data (a folder
    that changed, another generator version) makes other faces."""
    result, data = runs["shape"]
    K = result.model.latent_size
    version = f"synthetic-faces-{int(np.random.default_rng().integers(100, 10_000))}"
    path = tmp_path / "old.safetensors"
    _save_fitted(_config(hierarchy_cache, joint=False), path, K, data_version=version)
    assert main(["evaluate", result.output_dir, "--pca", str(path), "--measures", "error"]) == 1
    err = _one_error_line(capsys)
    assert f"(data_version: run {data.meta['data_version']!r}, PCA file {version!r})" in err, err
    assert "data.seed" not in err and "data.n" not in err
    with pytest.raises(TrainingError, match=f"data_version: run {data.meta['data_version']!r}, PCA file {version!r}"):
        evaluate(result, data=data, pca=load_pca_file(path), measures=("error",))


def test_pca_together_with_no_pca_is_a_usage_error(runs, hierarchy_cache, tmp_path, capsys):
    result, _ = runs["shape"]
    path = tmp_path / "pca.safetensors"
    _save_fitted(_config(hierarchy_cache, joint=False), path, result.model.latent_size)
    report = tmp_path / "eval.json"
    for order in (["--pca", str(path), "--no-pca"], ["--no-pca", "--pca", str(path)]):
        assert main(["evaluate", result.output_dir, *order, "--json", str(report)]) == 2
        err = _one_error_line(capsys)
        assert "not allowed with argument" in err and "--pca" in err and "--no-pca" in err, err
    assert not report.exists()
    args = argparse.Namespace(checkpoint=result.output_dir, json=None, no_pca=True, pca=str(path), device=None)
    with pytest.raises(ValueError, match=r"^--pca: not allowed with --no-pca"):
        run_evaluate(args)


def _not_a_pca(kind: str, run_dir: str, tmp_path) -> tuple[str, str]:
    """``(path, what the error says was found)`` of a file that is not a PCA model."""
    rng = np.random.default_rng()
    if kind == "missing":
        return str(tmp_path / f"nothing-{int(rng.integers(1_000_000))}.safetensors"), "found nothing at this path"
    if kind == "decoder":
        return os.path.join(run_dir, "decoder.safetensors"), "found a SpiralDecoder model file"
    if kind == "autoencoder":
        return os.path.join(run_dir, "model.safetensors"), "found a MeshAutoencoder model file (a trained autoencoder"
    if kind == "checkpoint":
        return os.path.join(run_dir, "checkpoint.safetensors"), "found a training checkpoint"
    if kind == "folder":
        return run_dir, "found a folder"
    path = tmp_path / "pca.npz"  # the PCA's arrays in another format
    np.savez(path, mean=rng.normal(size=(V, 3)), components=rng.normal(size=(5, 3 * V)))
    return str(path), "found a file that is not a safetensors model file ("


@pytest.mark.parametrize("kind", ["missing", "decoder", "autoencoder", "checkpoint", "folder", "npz"])
def test_a_file_that_is_not_a_pca_model_is_refused_naming_it(runs, tmp_path, capsys, kind):
    result, _ = runs["shape"]
    path, found = _not_a_pca(kind, result.output_dir, tmp_path)
    report = tmp_path / "eval.json"
    assert main(["evaluate", result.output_dir, "--pca", path, "--measures", "error", "--json", str(report)]) == 1
    err = _one_error_line(capsys)
    assert err.startswith(f"error: {path}: expected a PCA model file (.safetensors, as mesh-decoder pca writes), "
                          f"{found}"), err
    assert not report.exists()
    error = ModelFileNotFoundError if kind == "missing" else ModelFileError
    with pytest.raises(error, match="expected a PCA model file") as caught:
        load_pca_file(path)
    assert str(caught.value) == err.removeprefix("error: ").rstrip("\n")
    if kind == "missing":
        assert isinstance(caught.value, FileNotFoundError)


def test_a_pca_without_a_stored_config_is_measured_with_a_note(runs, tmp_path, capsys):
    result, data = runs["shape"]
    K = result.model.latent_size
    k = K + int(np.random.default_rng().integers(0, 4))
    path = tmp_path / "bare.safetensors"
    save_model(PCAModel.fit(data.train.double(), num_components=k).to(torch.float32), path)  # no extra_meta
    pca = load_pca_file(path, result.output_dir)
    assert pca.train_config is None and pca.data_version is None and pca.template_hash is None
    report = tmp_path / "eval.json"
    assert main(["evaluate", result.output_dir, "--pca", str(path), "--measures", *MEASURED,
                 "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    note = (f"{path} stores no training config, so nothing checked that it was fitted to this run's training "
            "faces (a PCA of other faces, the run's test faces among them, is measured all the same)")
    lines = printed.splitlines()
    assert f"PCA baseline: {path}, its first {K} of {k} components" in lines
    assert f"note: {note}" in lines
    saved = json.loads(report.read_text())
    assert saved["models"]["pca"]["source"] == {"kind": "file", "path": str(path), "components": k,
                                                "color_components": 0, "training_faces": "unchecked",
                                                "checked_keys": [], "note": note}
    # fitted to the run's faces all the same: the fitted baseline's numbers
    fitted = evaluate(result, data=data, measures=MEASURED)
    numbers, expected = _pca_numbers(saved["models"]["pca"]), _pca_numbers(fitted["models"]["pca"])
    for key, value in expected.items():
        assert numbers[key] == pytest.approx(value, rel=SAME), key


def test_help_describes_pca_file(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["evaluate", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[--no-pca | --pca FILE]" in text
    assert ("--pca FILE the PCA baseline from this model file (written by mesh-decoder pca with the run's config "
            "and at least the latent size's components) instead of one fitted now") in text


def test_training_face_keys_follow_what_load_data_reads():
    interpolation = training_face_keys({})
    assert interpolation == ["data.source", "template.kind", "template.vertices", "template.seed", "data.n",
                             "data.seed", "data.split", "data.generator_seed", "data.test_fraction"]
    extrapolation = training_face_keys({"data": {"split": "extrapolation"}})
    assert extrapolation[-2:] == ["data.key", "data.threshold"] and "data.test_fraction" not in extrapolation
    folder = training_face_keys({"data": {"source": "folder", "root": "scans"},
                                 "template": {"kind": "file", "path": "t.obj"}})
    assert folder == ["data.source", "template.kind", "template.path", "data.root", "data.pattern", "data.align",
                      "data.scale", "data.seed", "data.test_fraction"]


def test_json_may_not_replace_an_input_or_be_another_kind_of_file(runs, hierarchy_cache, tmp_path, capsys):
    """--json wrote its result over the --pca file it had read (any name was taken)."""
    result, _ = runs["shape"]
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(_config(hierarchy_cache, False)))
    fitted = tmp_path / "pca.safetensors"
    assert main(["pca", str(config_path), "-o", str(fitted), "--components", str(result.model.latent_size)]) == 0
    capsys.readouterr()
    stored = tmp_path / "pca.json"  # the file renamed: the name passes, the input check stands in the way
    fitted.rename(stored)
    before = stored.read_bytes()
    assert main(["evaluate", result.output_dir, "--pca", str(stored), "--json", str(stored)]) == 1
    err = _one_error_line(capsys)
    assert f"--json {stored}: expected a file other than the inputs, got the --pca file; nothing was written" in err
    assert stored.read_bytes() == before
    run_config = os.path.join(result.output_dir, "config.yaml")
    kept = open(run_config, "rb").read()
    assert main(["evaluate", result.output_dir, "--json", run_config]) == 2  # a name that is not .json: a usage error
    assert "expected a file name ending in .json, got '.yaml'" in _one_error_line(capsys)
    assert open(run_config, "rb").read() == kept


def test_the_same_template_given_as_a_file_is_the_same_training_faces(hierarchy_cache, tmp_path):
    """A run on the built-in template saved as a file was refused beside a PCA of the built-in one, naming the
    file template's unused template.vertices ('run 5023, PCA file 600')."""
    from mesh_decoder.mesh import face_template, save_mesh

    save_mesh(face_template(V), tmp_path / "face.ply")
    builtin = _config(hierarchy_cache, False)
    from_file = dict(builtin, template={"kind": "file", "path": str(tmp_path / "face.ply")})
    _save_fitted(builtin, tmp_path / "pca.safetensors", 5)
    data = load_data(from_file)
    assert load_pca_file(tmp_path / "pca.safetensors", from_file, data=data).train_config is not None
    # another template (its hash differs) is still refused, naming the kind and the hash, not unused keys
    save_mesh(face_template(V, seed=1), tmp_path / "other.ply")
    other = dict(builtin, template={"kind": "file", "path": str(tmp_path / "other.ply")})
    with pytest.raises(TrainingError) as info:
        load_pca_file(tmp_path / "pca.safetensors", other, data=load_data(other))
    message = str(info.value)
    assert "template.kind: run 'file', PCA file 'face'" in message and "template_hash: run" in message, message
    assert "template.vertices" not in message and "template.path" not in message, message
