"""evaluate(pca=PCAModel): a given PCA is checked against the run before any work and truncated to its needs.

Regressions: a PCA with fewer colour components than the latent size failed with truncate's
"num_color_components: expected an integer in [1, Kc], got K" (an argument the caller never passed), even for a
shape-only run where its colour model does not matter; a PCA of another template size failed only inside the
reconstruction with "vertices: expected shape (B, V', 3), got (M, V, 3)", naming neither the PCA nor the run; and a
joint run given a shape-only PCA said in its footer that PCA had "K shape and K colour coefficients".
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from mesh_decoder.pca import PCAModel
from mesh_decoder.train import evaluate, load_data, train

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
    assert pca == shape_only["models"]["pca"]


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
