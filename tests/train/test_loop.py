"""The training loop: loss decreases, resume is bit for bit, Ctrl-C and NaN stop cleanly, folder data."""

from __future__ import annotations

import os
import re
import signal
import sys
import warnings

import numpy as np
import pytest
import torch

import mesh_decoder.train.loop as loop
from mesh_decoder.errors import MeshFileError
from mesh_decoder.train import (
    TrainingError,
    load_checkpoint,
    load_data,
    load_trained,
    read_checkpoint_meta,
    train,
)
from mesh_decoder.train.loop import CHECKPOINT_NAME
from tests.train.reference import assert_same_state, parameters_of


def test_tiny_run_decreases_loss_and_writes_the_files(tmp_path, tiny_config):
    config = tiny_config(training={"epochs": 3})
    data = load_data(config)
    assert data.train.shape == (36, 600, 3) and data.test.shape == (4, 600, 3)
    result = train(config, tmp_path, progress=False, data=data)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 3 and losses[-1] < 0.8 * losses[0], losses
    assert [h["lr"] for h in result.history] == pytest.approx([2e-3, 2e-3 * 0.99, 2e-3 * 0.99**2])
    assert all(h["meshes_per_s"] > 0 for h in result.history)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.safetensors", "config.yaml", "decoder.safetensors",
                                           "hierarchy.npz", "history.csv", "model.safetensors"]
    # normalisation: the training set's per-vertex mean and std (slow reference in float64)
    x = data.train.double().numpy()
    assert np.allclose(result.model.mean.numpy(), x.mean(axis=0), atol=1e-4)
    assert np.allclose(result.model.std.numpy(), np.maximum(x.std(axis=0), 1e-3), rtol=1e-5)
    # the prior is the training latents' Gaussian
    with torch.no_grad():
        z = result.model.encode(data.train).double()
    assert torch.allclose(result.model.latent_mean.double(), z.mean(0), atol=1e-4)
    # the saved model decodes exactly as the trained one, and carries the data version
    model, hierarchy, cfg, meta = load_trained(tmp_path)
    assert meta["kind"] == "model" and meta["data_version"] == data.meta["data_version"]
    assert cfg.to_dict() == result.config.to_dict()
    assert_same_state(parameters_of(model), parameters_of(result.model))
    with torch.no_grad():
        assert torch.equal(model(data.test), result.model(data.test))
    ck = read_checkpoint_meta(tmp_path / CHECKPOINT_NAME)
    assert ck["epoch"] == 3 and ck["step"] == 15 and ck["config"] == result.config.to_dict()
    assert ck["template_hash"] == data.template.content_hash() and ck["data_version"] == "synthetic-faces-1"
    # a second fresh run into the same folder is refused
    with pytest.raises(TrainingError, match="already holds a checkpoint"):
        train(config, tmp_path, progress=False, data=data)


def test_resume_is_bit_for_bit(tmp_path, tiny_config):
    full_cfg = tiny_config(training={"epochs": 3})
    data = load_data(full_cfg)
    full = train(full_cfg, tmp_path / "full", progress=False, data=data)
    part = train(tiny_config(training={"epochs": 1}), tmp_path / "part", progress=False, data=data)
    assert part.epochs_completed == 1
    with pytest.raises(TrainingError, match=r"differs from the checkpoint's in \['model.latent_size'\]"):
        train(tiny_config(training={"epochs": 3}, model={"latent_size": 4}), tmp_path / "part", resume=True,
              progress=False)
    resumed = train(full_cfg, tmp_path / "part", resume=True, progress=False, data=data)
    assert resumed.epochs_completed == 3 and resumed.step == full.step
    assert_same_state(parameters_of(full.model), parameters_of(resumed.model))
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    with pytest.raises(TrainingError, match="no checkpoint to resume from"):
        train(full_cfg, tmp_path / "nothing", resume=True, progress=False, data=data)


def _interrupt_at(step: int, how: str):
    def callback(info):
        if info.step == step:
            if how == "raise":
                raise KeyboardInterrupt
            # a real Ctrl-C, or the SIGTERM a batch scheduler sends before it kills a job (which ended the
            # process at once, losing the steps since the last checkpoint): handled at the step boundary
            os.kill(os.getpid(), signal.SIGTERM if how == "sigterm" else signal.SIGINT)

    return callback


@pytest.mark.parametrize("how, step, batch_size", [
    ("raise", 7, 8), ("signal", 8, 8), ("sigterm", 6, 8),
    ("raise", 5, 8),  # at an epoch's end (36 faces: the last batch holds 4)
    ("raise", 8, 9),  # at an epoch's end where the batches divide the 36 faces: the sampler draws once more
])
def test_ctrl_c_saves_and_resume_matches(tmp_path, tiny_config, how, step, batch_size):
    if how == "sigterm" and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler of the test runner's here; train keeps it")
    config = tiny_config(training={"epochs": 3, "batch_size": batch_size})
    batches = -(-36 // batch_size)
    data = load_data(config)
    full = train(config, tmp_path / "full", progress=False, data=data)
    stopped = train(config, tmp_path / "run", progress=False, data=data, callback=_interrupt_at(step, how))
    assert stopped.interrupted and stopped.model_path is None and stopped.step == step
    meta = read_checkpoint_meta(tmp_path / "run" / CHECKPOINT_NAME)
    assert meta["status"] == "interrupted" and meta["step"] == step
    assert meta["epoch"] * batches + meta["batch_in_epoch"] == step
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    resumed = train(config, tmp_path / "run", resume=True, progress=False, data=data)
    assert not resumed.interrupted and resumed.step == full.step
    assert_same_state(parameters_of(full.model), parameters_of(resumed.model))
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-12)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_config, monkeypatch):
    config = tiny_config(training={"epochs": 3})
    real_loss = loop.reconstruction_loss
    calls = {"n": 0}
    saved = {}

    def poisoned(pred, target, color_weight=1.0):
        loss = real_loss(pred, target, color_weight)
        if not torch.is_grad_enabled():  # the test split's measure after an epoch
            return loss
        calls["n"] += 1
        return loss * float("nan") if calls["n"] >= 8 else loss

    def snapshot(info):
        if info.step == 6:
            saved["bytes"] = (tmp_path / CHECKPOINT_NAME).read_bytes()

    monkeypatch.setattr(loop, "reconstruction_loss", poisoned)
    with pytest.raises(TrainingError) as err:
        train(config, tmp_path, progress=False, callback=snapshot)
    msg = str(err.value)
    assert "non-finite loss (nan) at epoch 2, step 8 (batch 3 of 5)" in msg
    assert f"{tmp_path / CHECKPOINT_NAME} (epoch 1, step 5) is kept" in msg
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == saved["bytes"]
    ck = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ck.meta["epoch"] == 1 and all(torch.isfinite(t).all() for t in ck.model_state.values()
                                          if t.is_floating_point())
    assert not (tmp_path / "model.safetensors").exists()


def test_huge_learning_rate_is_reported(tmp_path, tiny_config):
    config = tiny_config(training={"epochs": 2, "lr": 1e30})
    with pytest.raises(TrainingError, match=r"non-finite (loss|parameter).* at epoch \d+, step \d+"):
        train(config, tmp_path, progress=False)


def _write_folder(folder, template, vertices, colors=None):
    from mesh_decoder.mesh.io import save_mesh

    folder.mkdir()
    for i, v in enumerate(vertices):
        mesh = template.copy(vertices=v.astype(np.float64), colors=None if colors is None else colors[i])
        save_mesh(mesh, folder / f"scan_{i:02d}.ply")


def test_a_joint_folder_names_the_files_without_colours(tmp_path, tiny_config):
    """'model.joint needs per-vertex colours in every mesh file, some files have none' named no file (and said
    'some' when none had colours); the message also says a texture map is not read as colours."""
    from mesh_decoder.data import SyntheticFaces
    from mesh_decoder.mesh.io import save_mesh
    from mesh_decoder.mesh.templates import face_template

    template = face_template(600)
    gen = SyntheticFaces(template)
    v, c = gen.generate(gen.sample_params(8, rng=np.random.default_rng()))
    folder = tmp_path / "scans"
    _write_folder(folder, template, v, c)
    bare = sorted(np.random.default_rng().choice(8, size=2, replace=False))
    for i in bare:  # rewritten without colours
        save_mesh(template.copy(vertices=v[i].astype(np.float64)), folder / f"scan_{i:02d}.ply")
    config = tiny_config(data={"source": "folder", "root": str(folder)}, model={"joint": True},
                         hierarchy={"texture_size": 32})
    with pytest.raises(TrainingError) as info:
        load_data(config)
    names = ", ".join(f"scan_{i:02d}.ply" for i in bare)
    assert str(info.value).endswith(f"{folder}: model.joint needs per-vertex colours in every mesh file, 2 of 8 "
                                    f"files have none: {names} (a texture map a file references is not read as "
                                    "per-vertex colours)"), str(info.value)
    assert not (tmp_path / "run").exists()


def test_folder_of_meshes_trains_joint_and_mismatch_is_named(tmp_path, tiny_config):
    from mesh_decoder.data import SyntheticFaces
    from mesh_decoder.mesh.io import save_mesh
    from mesh_decoder.mesh.templates import face_template

    template = face_template(600)
    gen = SyntheticFaces(template)
    v, c = gen.generate(gen.sample_params(12, rng=np.random.default_rng(7)))
    folder = tmp_path / "scans"
    _write_folder(folder, template, v, c)
    config = tiny_config(data={"source": "folder", "root": str(folder), "test_fraction": 0.25},
                         model={"joint": True}, hierarchy={"texture_size": 32},
                         training={"epochs": 3, "batch_size": 3})
    data = load_data(config)
    assert data.train.shape == (9, 600, 6) and data.test.shape == (3, 600, 6)
    assert data.meta["data_version"].startswith("mesh-folder-sha256:")
    result = train(config, tmp_path / "run", progress=False, data=data)
    assert result.model.decoder.out_channels == 6 and result.history[-1]["loss"] < result.history[0]["loss"]
    from mesh_decoder.model_files import load_model, read_model_meta
    from mesh_decoder.nn import JointDecoder

    decoder = load_model(result.decoder_path, result.hierarchy)
    assert isinstance(decoder, JointDecoder) and decoder.texture_size == (32, 32)
    out = decoder(result.model.latent_mean)
    assert out.vertices.shape == (600, 3) and out.texture.shape == (3, 32, 32)
    # the decoder file carries the fitted latent prior: it samples what the autoencoder samples
    prior = read_model_meta(result.decoder_path)["extra_meta"]["latent_prior"]
    mean = torch.tensor(prior["mean"], dtype=result.model.latent_mean.dtype)
    chol = torch.tensor(prior["cov_cholesky"], dtype=mean.dtype)
    assert torch.equal(mean, result.model.latent_mean) and torch.equal(chol, result.model.latent_cov_cholesky)
    assert not torch.equal(chol, torch.eye(len(mean), dtype=mean.dtype))  # fitted, not the default
    eps = torch.randn(4, len(mean), generator=torch.Generator().manual_seed(5), dtype=mean.dtype)
    with torch.no_grad():
        sampled = decoder(mean + eps @ chol.T).vertices
        expected = result.model.sample(4, generator=torch.Generator().manual_seed(5))[..., :3]
    torch.testing.assert_close(sampled, expected, rtol=1e-5, atol=1e-6)

    save_mesh(face_template(500), folder / "scan_99.ply")  # registered to another template
    with pytest.raises(MeshFileError) as err:
        load_data(config)
    msg = str(err.value)
    assert "scan_99.ply" in msg and "600 vertices" in msg and "500 vertices" in msg


@pytest.mark.parametrize("model", [{"preset": "coma", "decoder": None, "channels": [8, 8], "K": 3}, {"decoder": "pyg"},
                                   {"decoder": "pyg", "conv": "GMMConv", "conv_kwargs": {"dim": 3, "kernel_size": 2},
                                    "pseudo": "cartesian"}])
def test_chebyshev_and_pyg_autoencoders_train(tmp_path, tiny_config, model):
    config = tiny_config(model=dict({"channels": [8, 16], "latent_size": 4}, **model),
                         training={"epochs": 1}, data={"n": 20})
    result = train(config, tmp_path, progress=False)
    expected = "ChebDecoder" if "preset" in model else "PyGDecoder"
    assert type(result.model.decoder).__name__ == expected and result.model.latent_size == 4
    # without model.encoder, a PyG decoder keeps its spiral encoder (runs trained before PyG encoders load unchanged)
    assert type(result.model.encoder).__name__ == ("ChebEncoder" if "preset" in model else "SpiralEncoder")
    model2, _, _, _ = load_trained(tmp_path)
    assert_same_state(parameters_of(model2), parameters_of(result.model))


def test_a_pyg_encoder_trains_and_loads_back(tmp_path, tiny_config):
    """model.encoder: pyg (it took spiral or cheb only) builds a PyGEncoder with model.conv, conv_kwargs and pseudo;
    the model file and the checkpoint both rebuild it."""
    from mesh_decoder.nn import PyGDecoder, PyGEncoder

    config = tiny_config(template={"vertices": 500}, data={"n": 24}, training={"epochs": 1},
                         model={"decoder": "pyg", "encoder": "pyg", "conv": "SAGEConv", "channels": [8, 8],
                                "latent_size": 4})
    data = load_data(config)
    result = train(config, tmp_path, progress=False, data=data)
    encoder = result.model.encoder
    assert type(encoder) is PyGEncoder and type(result.model.decoder) is PyGDecoder
    assert [type(layer.conv).__name__ for layer in encoder.convs] == ["SAGEConv", "SAGEConv"]
    assert encoder.channels == (8, 8) and encoder.latent_size == 4 and encoder.num_vertices[0] == 500
    x = data.train[:5]
    with torch.no_grad():
        codes = result.model.encode(x)
    model, _, cfg, meta = load_trained(tmp_path)
    assert meta["kind"] == "model" and cfg.encoder_kind == "pyg" and type(model.encoder) is PyGEncoder
    assert_same_state(parameters_of(model), parameters_of(result.model))
    with torch.no_grad():
        assert torch.equal(model.encode(x), codes)
    from_checkpoint, _, _, meta = load_trained(tmp_path / CHECKPOINT_NAME)  # rebuilt by build_autoencoder
    assert meta["kind"] == "checkpoint" and type(from_checkpoint.encoder) is PyGEncoder
    assert_same_state(parameters_of(from_checkpoint.encoder), parameters_of(encoder))


def test_progress_bar_shows_epoch_loss_and_throughput(tmp_path, tiny_config, capsys):
    train(tiny_config(training={"epochs": 1}, data={"n": 20}), tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss" in err and "meshes/s" in err


def _file_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_resume_never_goes_back_and_a_finished_run_is_left_as_it_is(tmp_path, tiny_config):
    rng = np.random.default_rng()
    epochs = int(rng.integers(2, 4))
    config = tiny_config(training={"epochs": epochs})
    data = load_data(config)
    first = train(config, tmp_path, progress=False, data=data)
    before = _file_bytes(tmp_path)
    fewer = int(rng.integers(1, epochs))
    with pytest.raises(TrainingError, match=rf"training.epochs: expected at least {epochs} \(the checkpoint has "
                                            rf"trained {epochs} epochs\), got {fewer}; nothing was changed"):
        train(tiny_config(training={"epochs": fewer}), tmp_path, resume=True, progress=False, data=data)
    assert _file_bytes(tmp_path) == before
    # the same epochs again: nothing trained, nothing written, the saved model returned
    again = train(config, tmp_path, resume=True, progress=False, data=data)
    assert again.up_to_date and not first.up_to_date and not again.interrupted
    assert (again.epochs_completed, again.step, again.history) == (epochs, first.step, first.history)
    assert_same_state(parameters_of(again.model), parameters_of(first.model))
    assert again.config.to_dict() == first.config.to_dict()
    assert _file_bytes(tmp_path) == before
    # a run that stopped while writing its model files is finished on resume
    (tmp_path / "decoder.safetensors").unlink()
    finished = train(config, tmp_path, resume=True, progress=False, data=data)
    assert not finished.up_to_date and _file_bytes(tmp_path) == before
    # a decoder file written without the latent prior (as before the prior was stored) is rewritten with it
    from mesh_decoder.model_files import load_model, read_model_meta, save_model

    decoder_path = tmp_path / "decoder.safetensors"
    meta = read_model_meta(decoder_path)
    extra = {k: v for k, v in meta["extra_meta"].items() if k != "latent_prior"}
    save_model(load_model(decoder_path, first.hierarchy), decoder_path, hierarchy=first.hierarchy, extra_meta=extra)
    assert "latent_prior" not in read_model_meta(decoder_path)["extra_meta"]
    rewritten = train(config, tmp_path, resume=True, progress=False, data=data)
    assert not rewritten.up_to_date
    assert read_model_meta(decoder_path)["extra_meta"]["latent_prior"] == meta["extra_meta"]["latent_prior"]


def test_resume_refuses_epochs_below_a_part_done_epoch(tmp_path, tiny_config):
    config = tiny_config(training={"epochs": 3})
    step = int(np.random.default_rng().integers(6, 10))  # in epoch 2 (5 batches per epoch)
    stopped = train(config, tmp_path, progress=False, callback=_interrupt_at(step, "raise"))
    assert stopped.interrupted and stopped.epochs_completed == 1
    before = _file_bytes(tmp_path)
    with pytest.raises(TrainingError, match=rf"expected at least 2 \(the checkpoint has trained 1 epoch and "
                                            rf"{step - 5} batches of epoch 2\), got 1"):
        train(tiny_config(training={"epochs": 1}), tmp_path, resume=True, progress=False)
    assert _file_bytes(tmp_path) == before


def test_output_dir_and_device_are_checked_before_the_data(tmp_path, tiny_config, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the checks")

    monkeypatch.setattr(loop, "load_data", no_data)
    a_file = tmp_path / "afile"
    a_file.write_bytes(os.urandom(16))
    for out in (a_file, a_file / "sub"):
        with pytest.raises(ValueError, match="output_dir .*expected a directory"):
            train(tiny_config(), out, progress=False)
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last device: never available
    with pytest.raises(ValueError, match=rf"^training.device {missing}: "):
        train(tiny_config(training={"device": missing}), tmp_path / "run", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_resume_interrupted_past_the_model_file_is_not_silently_ignored(tmp_path, tiny_config):
    """Model file from epoch 2, checkpoint further on: the folder is ambiguous; each file still loads by name."""
    from mesh_decoder.train import CheckpointError

    data = load_data(tiny_config())
    train(tiny_config(training={"epochs": 2}), tmp_path, progress=False, data=data)  # 5 batches an epoch
    step = int(np.random.default_rng().integers(11, 15))  # in epoch 3 of the resumed run
    stopped = train(tiny_config(training={"epochs": 4}), tmp_path, resume=True, progress=False, data=data,
                    callback=_interrupt_at(step, "raise"))
    assert stopped.interrupted
    with pytest.raises(CheckpointError, match=rf"checkpoint.safetensors \(epoch 2, step {step}\) has trained past "
                                              r"model.safetensors \(step 10\)"):
        load_trained(tmp_path)
    from mesh_decoder.cli import _export_source
    from mesh_decoder.fit.command import _run_model_file

    for source in (_export_source, _run_model_file):  # export and fit had read the older model in silence
        with pytest.raises(CheckpointError, match=rf"\(epoch 2, step {step}\) has trained past model.safetensors"):
            source(str(tmp_path))
    assert load_trained(tmp_path / "model.safetensors")[3]["steps"] == 10
    torch.manual_seed(step)
    want = torch.randn(3)
    torch.manual_seed(step)
    assert load_trained(tmp_path / CHECKPOINT_NAME)[3]["step"] == step
    assert torch.equal(torch.randn(3), want)  # the model's initial weights were drawn from the caller's stream
    # a damaged checkpoint beside the model file: the error says how to use the model file alone
    (tmp_path / CHECKPOINT_NAME).write_bytes(np.random.default_rng(step).bytes(64))
    with pytest.raises(CheckpointError, match=re.escape(f"(name {tmp_path / 'model.safetensors'} to use the model "
                                                        "file without it)")):
        load_trained(tmp_path)
    assert load_trained(tmp_path / "model.safetensors")[3]["steps"] == 10


@pytest.mark.parametrize("key, value, message", [
    ("epoch", None, r"not a training checkpoint of train\(\): no 'epoch' in its metadata"),
    ("batch_in_epoch", "x", r"expected 'batch_in_epoch' to be an integer >= 0, got 'x'"),
    ("config", None, r"not a training checkpoint of train\(\): no 'config'"),
    ("rng", [], r"expected 'rng' to be a list naming the 'sampler' generator"),
])
def test_checkpoint_without_a_training_state_is_named(tmp_path, tiny_config, key, value, message):
    from mesh_decoder.train import CheckpointError, save_checkpoint

    config = tiny_config(training={"epochs": 1})
    result = train(config, tmp_path / "run", progress=False)
    meta = dict(read_checkpoint_meta(result.checkpoint_path))
    if value is None:
        del meta[key]
    else:
        meta[key] = value
    bad = tmp_path / "bad" / CHECKPOINT_NAME
    save_checkpoint(bad, result.model, meta=meta)
    with pytest.raises(CheckpointError, match=message) as err:
        train(tiny_config(training={"epochs": 2}), bad.parent, resume=True, progress=False)
    assert str(bad) in str(err.value)
    with pytest.raises(CheckpointError, match=message):
        load_trained(bad)


def test_cli_epochs_must_be_positive(tmp_path, tiny_config, capsys):
    import yaml

    from mesh_decoder.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config()), encoding="utf-8")
    assert main(["train", str(path), "--epochs", "0", "-o", str(tmp_path / "run")]) == 2
    assert "argument --epochs: expected an integer >= 1, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_evaluating_a_run_on_a_folder_that_changed_is_refused(tmp_path, tiny_config):
    """A mesh added since training reshuffles the split, so training faces would count as test faces."""
    from mesh_decoder.data import SyntheticFaces
    from mesh_decoder.mesh.io import save_mesh
    from mesh_decoder.mesh.templates import face_template
    from mesh_decoder.train import evaluate

    template = face_template(600)
    gen = SyntheticFaces(template)
    v, _ = gen.generate(gen.sample_params(13, rng=np.random.default_rng()))
    folder = tmp_path / "scans"
    _write_folder(folder, template, v[:12])
    config = tiny_config(data={"source": "folder", "root": str(folder), "test_fraction": 0.25},
                         training={"epochs": 1, "batch_size": 3})
    run = tmp_path / "run"
    trained = train(config, run, progress=False).data_meta["data_version"]
    assert evaluate(run, pca=False, measures=())["split"]["data_version"] == trained
    save_mesh(template.copy(vertices=v[12].astype(np.float64)), folder / "scan_12.ply")
    with pytest.raises(TrainingError, match=rf"model.safetensors: trained on data_version '{trained}', the data "
                                            r"now has 'mesh-folder-sha256:") as info:
        evaluate(run, pca=False, measures=())
    # and says which folder changed, and how many files it held then and now
    assert str(info.value).endswith(f" (the meshes in data.root {folder} changed since training: 12 mesh files "
                                    "then, 13 now; restore them or train again)"), str(info.value)


def test_meshes_in_metres_warn_of_the_std_floor_and_evaluate_in_data_units(tmp_path, tiny_config):
    """A folder of faces in metres was standardised by data.norm_eps (1e-3, meant for mm) at many vertices
    without a word, and evaluate labelled its errors 'mm' and printed them as 0.003 and 0.002."""
    from mesh_decoder.data import SyntheticFaces
    from mesh_decoder.mesh.templates import face_template
    from mesh_decoder.train import evaluate

    template = face_template(600)
    gen = SyntheticFaces(template)
    v, _ = gen.generate(gen.sample_params(12, rng=np.random.default_rng()))
    _write_folder(tmp_path / "metres", template, v / 1000.0)
    config = tiny_config(data={"source": "folder", "root": str(tmp_path / "metres"), "test_fraction": 0.25},
                         training={"epochs": 1, "batch_size": 3})
    with pytest.warns(UserWarning, match=r"^data\.norm_eps 0\.001 \(in the data's units\) is above the per-vertex "
                                         r"std of \d+\.\d% of the training coordinates .* are the meshes in metres\?"):
        train(config, tmp_path / "run", progress=False)
    result = evaluate(tmp_path / "run", pca=False, measures=())
    assert result["units"]["vertex_error"] == "data units"
    mean = result["models"]["autoencoder"]["vertex_error"]["mean"]
    assert mean < 0.1  # metres: shown with significant digits, not as 0.00x
    assert re.search(rf"^vertex error mean \(data units\) +{mean:.3g}$", result["table"], re.M), result["table"]
    assert "(mm)" not in result["table"]
    # a floor below the spread standardises them as the rest, and says nothing
    config = tiny_config(data={"source": "folder", "root": str(tmp_path / "metres"), "test_fraction": 0.25,
                               "norm_eps": 1e-6}, training={"epochs": 1, "batch_size": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(config, tmp_path / "run2", progress=False)
    # the built-in faces are in mm: their table says so
    synthetic = tiny_config(training={"epochs": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        train(synthetic, tmp_path / "run3", progress=False)
    table = evaluate(tmp_path / "run3", pca=False, measures=())["table"]
    assert "vertex error mean (mm)" in table, table


def test_the_folder_data_version_covers_what_a_model_trains_on(tmp_path, tiny_config):
    """Colours changed in every file left a joint model's data version as it was, so evaluate and resume went
    on with other data; a shape-only model does not train on colours, so its version ignores them."""
    import shutil

    from mesh_decoder.data import SyntheticFaces
    from mesh_decoder.mesh.templates import face_template

    template = face_template(600)
    gen = SyntheticFaces(template)
    v, c = gen.generate(gen.sample_params(8, rng=np.random.default_rng()))
    _write_folder(tmp_path / "a", template, v, c)
    _write_folder(tmp_path / "b", template, v, 1.0 - c)  # the same shapes, other colours

    def version(folder, joint):
        config = tiny_config(data={"source": "folder", "root": str(tmp_path / folder), "test_fraction": 0.25},
                             model={"joint": joint}, hierarchy={"texture_size": 32} if joint else {})
        return load_data(config).meta["data_version"]

    assert version("a", True) != version("b", True)
    assert version("a", False) == version("b", False)
    shutil.copy(tmp_path / "a" / "scan_00.ply", tmp_path / "b" / "scan_00.ply")
    assert version("b", False) == version("a", False)


_TEMPLATE_PATH = ({"template": {"kind": "file", "path": "meshes/template.obj"}}, "template.path", "a mesh file")
_DATA_ROOT = ({"data": {"source": "folder", "root": "meshes/registered"}}, "data.root", "a folder")


@pytest.mark.parametrize("section, key, what, error, found", [
    (*_TEMPLATE_PATH, FileNotFoundError, "none at this path"),
    (*_DATA_ROOT, FileNotFoundError, "none at this path"),
    (*_TEMPLATE_PATH, IsADirectoryError, "a folder"),
    (*_DATA_ROOT, NotADirectoryError, "a file"),
])
def test_a_config_path_that_is_not_there_names_its_key(tmp_path, tiny_config, monkeypatch, section, key, what,
                                                       error, found):
    """A relative path that is not there named the path alone, not the config file, the key or where it is
    from; a template.path naming a folder, or a data.root naming a file, said 'found none at this path'
    although something was there."""
    import yaml

    from mesh_decoder.train import load_config

    config = dict(tiny_config(), **section)  # a folder's data section replaces the synthetic one
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(config))
    if error is not FileNotFoundError:
        (tmp_path / "meshes" / "template.obj").mkdir(parents=True)  # a folder where the template file should be
        (tmp_path / "meshes" / "registered").write_bytes(np.random.default_rng(7).bytes(64))  # a file, not a folder
    monkeypatch.chdir(tmp_path)
    path = section.get("template", section.get("data"))
    path = path.get("path") or path.get("root")
    with pytest.raises(error) as info:
        load_data(load_config("run.yaml"))
    assert type(info.value) is error
    assert str(info.value) == (f"run.yaml: {key}: {path}: expected {what}, found {found} "
                               f"(a relative path is from the working folder {tmp_path})")


class _CallbackBug(Exception):
    """What a step callback with a bug raises (a logging server that is down, ...)."""


@pytest.mark.parametrize("step", [7, 5, 15])  # mid-epoch 2; the end of epoch 1; the last step of the run
def test_a_callback_that_raises_saves_its_step_and_resume_matches(tmp_path, tiny_config, step):
    """The exception went up with nothing saved since the last checkpoint: up to checkpoint_every epochs lost."""
    config = tiny_config(training={"epochs": 3, "checkpoint_every": 2})  # 5 batches per epoch
    data = load_data(config)
    full = train(config, tmp_path / "full", progress=False, data=data)
    message = f"the logging server is down ({int(np.random.default_rng(step).integers(1, 1000))})"

    def callback(info):
        if info.step == step:
            raise _CallbackBug(message)

    with pytest.raises(_CallbackBug, match=re.escape(message)) as err:
        train(config, tmp_path / "run", progress=False, data=data, callback=callback)
    ckpt = tmp_path / "run" / CHECKPOINT_NAME
    if sys.version_info >= (3, 11):  # exceptions carry notes
        assert (f"the step callback raised at epoch {(step - 1) // 5 + 1}, step {step}; the checkpoint {ckpt} holds "
                "the run up to that step") in "\n".join(err.value.__notes__)
    assert read_checkpoint_meta(ckpt)["step"] == step
    assert not (tmp_path / "run" / "model.safetensors").exists()
    resumed = train(config, tmp_path / "run", resume=True, progress=False, data=data)
    assert not resumed.interrupted and resumed.step == full.step
    assert_same_state(parameters_of(full.model), parameters_of(resumed.model))
    assert [h["loss"] for h in resumed.history] == pytest.approx([h["loss"] for h in full.history], rel=1e-12)


def test_too_few_training_meshes_name_the_keys_that_decide(tmp_path, tiny_config):
    """The message spoke of data.n and the split alone: for a folder data.n plays no part, and the
    test_fraction or threshold that held every face out went unnamed."""
    rng = np.random.default_rng(21)
    fraction = float(rng.uniform(0.98, 0.999))
    with pytest.raises(TrainingError, match="^" + re.escape(
            f"config: data: expected at least 2 training meshes, got 0 (data.n = 20 synthetic faces; "
            f"data.test_fraction {fraction} holds out 20)")):
        load_data(tiny_config(data={"n": 20, "test_fraction": fraction}))
    threshold = float(rng.uniform(-1.0, -0.01))
    with pytest.raises(TrainingError, match="^" + re.escape(
            f"config: data: expected at least 2 training meshes, got 0 (data.n = 20 synthetic faces; data.key "
            f"'smile' > data.threshold {threshold} holds out 20)")):
        load_data(tiny_config(data={"n": 20, "split": "extrapolation", "key": "smile", "threshold": threshold}))
    from mesh_decoder.data import SyntheticFaces
    from mesh_decoder.mesh.templates import face_template

    template = face_template(600)
    gen = SyntheticFaces(template)
    v, _ = gen.generate(gen.sample_params(1, rng=rng))
    _write_folder(tmp_path / "scans", template, v)
    with pytest.raises(TrainingError, match="^" + re.escape(
            f"config: data: expected at least 2 training meshes, got 1 (data.root {tmp_path / 'scans'} holds 1 mesh "
            "file matching data.pattern '*.obj|*.ply|*.off'; data.test_fraction 0.1 holds out 0)")):
        load_data(tiny_config(data={"source": "folder", "root": str(tmp_path / "scans")}))


@pytest.mark.parametrize("model, message, cause", [
    ({"conv": "GCNconv"}, "model.conv 'GCNconv', model.conv_kwargs {}: ",
     "conv: expected the name of a torch_geometric.nn conv class, got 'GCNconv'"),
    ({"conv_kwargs": {"fo": 1}}, "model.conv 'GCNConv', model.conv_kwargs {'fo': 1}: ", "keyword argument 'fo'"),
    ({"decoder": "spiral", "encoder": "pyg", "conv": "GCNconv"}, "model.conv 'GCNconv', model.conv_kwargs {}: ",
     "conv: expected the name of a torch_geometric.nn conv class, got 'GCNconv'"),
    ({"conv": "GCNConv", "pseudo": "cartesian"}, "model.conv 'GCNConv', model.conv_kwargs {}, model.pseudo "
     "'cartesian': ", "expected a conv that takes edge attributes as conv(x, edge_index, edge_attr)"),
    ({"encoder": "pyg", "conv": "SAGEConv", "pseudo": "distance"}, "model.conv 'SAGEConv', model.conv_kwargs {}, "
     "model.pseudo 'distance': ", "got SAGEConv.forward(x, edge_index, size)"),
], ids=["misspelt-conv", "unknown-kwarg", "pyg-encoder", "pseudo-for-gcn", "pseudo-for-sage"])
def test_a_pyg_conv_that_cannot_be_built_names_its_config_keys(tmp_path, tiny_config, model, message, cause):
    """The error named 'conv' or was Python's 'got an unexpected keyword argument', without the config file or key."""
    import yaml

    from mesh_decoder.train import TrainConfigError, load_config

    path = tmp_path / "pyg.yaml"
    path.write_text(yaml.safe_dump(tiny_config(model=dict({"decoder": "pyg"}, **model), data={"n": 20})))
    with pytest.raises(TrainConfigError) as err:
        train(load_config(path), tmp_path / "run", progress=False)
    assert str(err.value).startswith(f"{path}: {message}") and cause in str(err.value)
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_an_empty_output_dir_is_refused_before_the_data(tmp_path, tiny_config, monkeypatch, capsys):
    """'' (an unset shell variable in -o "$RUN") failed after the data with "No such file or directory: ''"."""
    import yaml

    from mesh_decoder.cli import main

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded before the checks")

    monkeypatch.setattr(loop, "load_data", no_data)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="^output_dir: expected a directory, got ''$"):
        train(tiny_config(), "", progress=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(tiny_config()))
    assert main(["train", "c.yaml", "-o", "", "--quiet"]) == 2
    assert capsys.readouterr().err == "error: mesh-decoder train: -o/--output-dir: expected a path, got ''\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_evaluating_a_folder_run_whose_template_file_changed_names_the_template(tmp_path, tiny_config):
    """The scans were named instead ('expected the template's 500 vertices ..., found 600'), not the template."""
    from mesh_decoder.data import SyntheticFaces
    from mesh_decoder.mesh.io import save_mesh
    from mesh_decoder.mesh.templates import face_template
    from mesh_decoder.train import evaluate

    template = face_template(600)
    gen = SyntheticFaces(template)
    v, _ = gen.generate(gen.sample_params(8, rng=np.random.default_rng(22)))
    _write_folder(tmp_path / "scans", template, v)
    save_mesh(template, tmp_path / "template.obj")
    config = tiny_config(template={"kind": "file", "path": str(tmp_path / "template.obj")},
                         data={"source": "folder", "root": str(tmp_path / "scans"), "test_fraction": 0.25},
                         training={"epochs": 1, "batch_size": 3})
    config["template"].pop("vertices")
    config["template"].pop("seed")
    run = tmp_path / "run"
    train(config, run, progress=False)
    save_mesh(face_template(500), tmp_path / "template.obj")  # another template under the same name
    with pytest.raises(TrainingError, match=re.escape(f"{run / 'model.safetensors'}: trained on template_hash '")
                       + ".*" + re.escape(f"template.path {tmp_path / 'template.obj'} now has '") + r"[0-9a-f]+"
                       + re.escape("' (500 vertices): the template changed since training")):
        evaluate(run, pca=False, measures=())


# ------------------------------------------------------------------ the test split measured during training
def _history_csv(path) -> list[dict[str, float | None]]:
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == list(loop.HISTORY_COLUMNS)
    return [{k: (float(v) if v else None) for k, v in zip(loop.HISTORY_COLUMNS, line.split(","))} for line in lines[1:]]


def test_measuring_the_test_split_leaves_the_run_unchanged_and_agrees_with_evaluate(tmp_path, tiny_config):
    from mesh_decoder.train import evaluate

    data = load_data(tiny_config())  # 36 training faces, 4 test faces
    measured = train(tiny_config(training={"epochs": 3, "batch_size": 3}), tmp_path / "measured", progress=False,
                     data=data)
    plain = train(tiny_config(training={"epochs": 3, "batch_size": 3, "validate_every": 0}), tmp_path / "plain",
                  progress=False, data=data)
    assert_same_state(parameters_of(measured.model), parameters_of(plain.model))
    assert [h["loss"] for h in measured.history] == [h["loss"] for h in plain.history]
    assert all("test_loss" not in h for h in plain.history)
    assert all(set(h) >= {"test_loss", "test_vertex_error"} and "test_color_error" not in h
               for h in measured.history)
    errors = [h["test_vertex_error"] for h in measured.history]
    assert errors[-1] < errors[0], errors  # the held-out faces are reconstructed better as training goes on
    # the last epoch's measures are the final model's: evaluate()'s mean error, and the loss over the test faces
    # at once (held_out_measures goes in batches of 3 here: 3 + 1 faces, weighted by size)
    report = evaluate(measured, data=data, pca=False, measures=("error",))
    assert errors[-1] == pytest.approx(report["models"]["autoencoder"]["vertex_error"]["mean"], rel=1e-5)
    model = measured.model.eval()
    with torch.no_grad():
        pred = model.decoder.decode_normalized(model.encode(data.test))
        whole = float(loop.reconstruction_loss(pred, (data.test - model.mean) / model.std))
    assert measured.history[-1]["test_loss"] == pytest.approx(whole, rel=1e-5)
    # history.csv holds the same rows, exactly; the unmeasured run leaves the test columns empty
    rows = _history_csv(tmp_path / "measured" / loop.HISTORY_NAME)
    assert [{k: v for k, v in r.items() if v is not None} for r in rows] == measured.history
    assert [r["test_loss"] for r in _history_csv(tmp_path / "plain" / loop.HISTORY_NAME)] == [None] * 3
    # the model file records the final measures
    assert load_trained(tmp_path / "measured")[3]["final_test_vertex_error"] == errors[-1]


def test_validate_every_measures_every_nth_epoch_and_the_last_and_may_change_on_resume(tmp_path, tiny_config):
    data = load_data(tiny_config())
    first = train(tiny_config(training={"epochs": 3, "validate_every": 2}), tmp_path, progress=False, data=data)
    assert ["test_loss" in h for h in first.history] == [False, True, True]
    resumed = train(tiny_config(training={"epochs": 5, "validate_every": 1}), tmp_path, resume=True,
                    progress=False, data=data)
    assert ["test_loss" in h for h in resumed.history] == [False, True, True, True, True]
    assert resumed.history[:3] == first.history  # the resumed history is carried on, not recomputed
    assert _history_csv(tmp_path / loop.HISTORY_NAME)[0]["test_loss"] is None
    with pytest.raises(Exception, match=r"training\.validate_every: expected an int >= 0, got -1"):
        train(tiny_config(training={"validate_every": -1}), tmp_path / "bad", progress=False, data=data)


def test_no_held_out_faces_means_no_test_measures(tmp_path, tiny_config):
    config = tiny_config(training={"epochs": 1}, data={"test_fraction": 0.0})
    # said when the data is loaded (it was said only in the run's last line, and by evaluate's refusal)
    with pytest.warns(UserWarning, match=r"^config: data: the interpolation split holds out none of the 40 meshes: "
                                         r"the run will have no held-out measures, and evaluate will refuse it "
                                         r"\(hold some out: data\.test_fraction"):
        result = train(config, tmp_path, progress=False)
    assert result.history and "test_loss" not in result.history[0]


@pytest.mark.parametrize("joint", [False, True])
def test_held_out_measures_against_a_per_mesh_loop(tiny_config, joint):
    from mesh_decoder.train import build_autoencoder, held_out_measures, make_hierarchy
    from mesh_decoder.train.config import TrainConfig

    config = TrainConfig.from_dict(tiny_config(model={"joint": joint}, hierarchy={"texture_size": 0}))
    data = load_data(config)
    model = build_autoencoder(config, make_hierarchy(config, data.template))
    model.set_normalization(*loop.normalization(data.train, 1e-3))
    model.train()
    x = torch.cat([data.test, data.train[:3]])  # 7 faces in batches of 2: an odd last batch
    got = held_out_measures(model, x, color_weight=0.5, batch_size=2)
    assert model.training  # the mode is restored
    losses, vertex, color = [], [], []
    model.eval()
    with torch.no_grad():
        for m in range(x.shape[0]):
            xm = x[m:m + 1].double()
            recon = model(x[m:m + 1]).double()  # (1, V, C) data units
            std, mean = model.std.double(), model.mean.double()
            diff = ((recon - mean) / std - (xm - mean) / std).abs()[0]  # (V, C) normalised
            losses.append(diff[:, :3].mean() + (0.5 * diff[:, 3:].mean() if joint else 0.0))
            vertex.append(np.mean([float(np.linalg.norm(recon[0, i, :3] - xm[0, i, :3])) for i in range(x.shape[1])]))
            if joint:
                color.append(np.mean([float(np.linalg.norm(recon[0, i, 3:] - xm[0, i, 3:]))
                                      for i in range(x.shape[1])]))
    assert got["test_loss"] == pytest.approx(float(np.mean(losses)), rel=1e-4)
    assert got["test_vertex_error"] == pytest.approx(float(np.mean(vertex)), rel=1e-5)
    if joint:
        assert got["test_color_error"] == pytest.approx(float(np.mean(color)), rel=1e-5)
    else:
        assert "test_color_error" not in got
    with pytest.raises(ValueError, match="at least one held-out mesh"):
        held_out_measures(model, x[:0])


def test_progress_bar_and_cli_report_the_test_split(tmp_path, tiny_config, capsys, monkeypatch):
    from mesh_decoder.cli import main

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # the bar is drawn on a terminal only
    path = tmp_path / "c.json"
    path.write_text(__import__("json").dumps(tiny_config(training={"epochs": 2})))
    assert main(["train", str(path), "-o", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert re.search(r"meshes/s \| test loss [0-9.]+, mean vertex error [0-9.e+-]+ \(data units; epoch 2\)", captured.err)
    last = _history_csv(tmp_path / "run" / loop.HISTORY_NAME)[-1]
    assert f"test loss {last['test_loss']:.5f}, mean vertex error {last['test_vertex_error']:.4g} (mm)" in captured.out


def test_non_finite_test_measures_stop_the_run_and_keep_the_last_checkpoint(tmp_path, tiny_config, monkeypatch):
    real = loop.held_out_measures
    calls = {"n": 0}

    def overflowing(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return dict(out, test_loss=float("inf")) if calls["n"] == 2 else out

    monkeypatch.setattr(loop, "held_out_measures", overflowing)
    with pytest.raises(TrainingError, match=r"non-finite test_loss inf on the held-out faces at epoch 2, step 10: "
                                            r"training stopped; the last good checkpoint .* \(epoch 1, step 5\) is kept"):
        train(tiny_config(training={"epochs": 3}), tmp_path, progress=False)
    assert read_checkpoint_meta(tmp_path / CHECKPOINT_NAME)["epoch"] == 1


def test_encode_all_records_no_graph_and_restores_the_mode(tiny_config):
    from mesh_decoder.train import build_autoencoder, make_hierarchy
    from mesh_decoder.train.config import TrainConfig

    config = TrainConfig.from_dict(tiny_config())
    data = load_data(config)
    model = build_autoencoder(config, make_hierarchy(config, data.template)).train()
    latents = loop.encode_all(model, data.test, batch_size=3)
    assert not latents.requires_grad and latents.grad_fn is None
    assert model.training
    model.eval()
    with torch.no_grad():  # batches of 3 against one batch: float32 sums in another order
        torch.testing.assert_close(latents, model.encode(data.test), rtol=1e-4, atol=1e-4)


def test_a_new_run_refuses_a_folder_holding_files_it_would_replace(tmp_path, tiny_config):
    """A folder without a checkpoint had its model.safetensors or history.csv replaced without a word."""
    config = tiny_config(training={"epochs": 1})
    data = load_data(config)
    for name in ("model.safetensors", "decoder.safetensors", "hierarchy.npz", "history.csv"):
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / name).write_bytes(b"the user's own file")
        with pytest.raises(TrainingError, match=rf"^{re.escape(str(folder))}: expected a new or empty run folder, "
                                                rf"found {re.escape(name)} without a checkpoint; .*nothing was changed"):
            train(config, folder, progress=False, data=data)
        assert [p.name for p in folder.iterdir()] == [name] and (folder / name).read_bytes() == b"the user's own file"
    # another config's config.yaml is in the way; the same config's (a run stopped before its first checkpoint) is not
    other = tmp_path / "other"
    train(tiny_config(training={"epochs": 1, "lr": 1e-3}), other / "first", progress=False, data=data)
    (other / "second").mkdir()
    (other / "second" / "config.yaml").write_bytes((other / "first" / "config.yaml").read_bytes())
    with pytest.raises(TrainingError, match=r"found config.yaml \(another config\) without a checkpoint"):
        train(config, other / "second", progress=False, data=data)
    same = tmp_path / "same"
    train(config, same / "first", progress=False, data=data)
    (same / "second").mkdir()
    (same / "second" / "config.yaml").write_bytes((same / "first" / "config.yaml").read_bytes())
    assert train(config, same / "second", progress=False, data=data).epochs_completed == 1


def test_a_resume_with_another_config_names_both_values(tmp_path, tiny_config):
    data = load_data(tiny_config())
    train(tiny_config(training={"epochs": 1}), tmp_path, progress=False, data=data)
    with pytest.raises(TrainingError, match=r"differs from the checkpoint's in \['model.latent_size', 'training.lr'\] "
                                            r"\(model.latent_size: 8 in the checkpoint, 4 now; training.lr: 0.002 in "
                                            r"the checkpoint, 0.001 now\); only"):
        train(tiny_config(training={"epochs": 2, "lr": 1e-3}, model={"latent_size": 4}), tmp_path, resume=True,
              progress=False, data=data)


def test_a_resume_takes_a_default_spelled_out_or_left_out(tmp_path, tiny_config):
    """A config that left out model.decoder (null: spiral) was refused on resume of a run that said 'spiral'."""
    data = load_data(tiny_config())
    train(tiny_config(training={"epochs": 1}, model={"decoder": "spiral"}), tmp_path / "a", progress=False, data=data)
    resumed = train(tiny_config(training={"epochs": 2}, model={"decoder": None}), tmp_path / "a", resume=True,
                    progress=False, data=data)
    assert resumed.epochs_completed == 2
    train(tiny_config(training={"epochs": 1}), tmp_path / "b", progress=False, data=data)
    with pytest.raises(TrainingError, match=r"differs from the checkpoint's in \['model.decoder', 'model.encoder'\] "
                                            r"\(model.decoder: \"spiral\" in the checkpoint, \"cheb\" now; model.encoder: "
                                            r"\"spiral\" in the checkpoint, \"cheb\" now\)"):
        train(tiny_config(training={"epochs": 2}, model={"decoder": "cheb"}), tmp_path / "b", resume=True,
              progress=False, data=data)


@pytest.mark.parametrize("sections, note", [
    ({"data": {"test_fraction": 0.0}}, "; no held-out faces to measure (the split holds none out)"),
    ({"training": {"validate_every": 0}}, "; the held-out faces were not measured (training.validate_every is 0)"),
])
def test_the_cli_says_why_nothing_was_measured(tmp_path, tiny_config, capsys, sections, note):
    from mesh_decoder.cli import main

    config = tiny_config(**sections)
    config.setdefault("training", {})["epochs"] = 1
    path = tmp_path / "c.json"
    path.write_text(__import__("json").dumps(config))
    assert main(["train", str(path), "-o", str(tmp_path / "run"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"final loss [0-9.]+" + re.escape(note) + "\n", out), out
    assert f"and {tmp_path / 'run' / 'history.csv'}\n" in out


def test_a_run_on_a_relative_data_folder_evaluates_from_another_folder(tmp_path, tiny_config, monkeypatch):
    """data.root is relative to the folder the run was trained in: evaluate (and load_trained's users) found no
    scans from anywhere else."""
    from mesh_decoder.data import SyntheticFaces
    from mesh_decoder.mesh.templates import face_template
    from mesh_decoder.train import evaluate, load_trained

    template = face_template(600)
    gen = SyntheticFaces(template)
    v, _ = gen.generate(gen.sample_params(12, rng=np.random.default_rng()))
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    _write_folder(work / "scans", template, v)
    monkeypatch.chdir(work)
    train(tiny_config(data={"source": "folder", "root": "scans", "test_fraction": 0.25}), "run", progress=False)
    monkeypatch.chdir(elsewhere)
    for name in ("run", "run/checkpoint.safetensors"):
        _, _, config, _ = load_trained(work / name)
        assert config.data.root == str(work / "scans")
    assert evaluate(str(work / "run"), pca=False, measures=("error",))["split"]["num_test"] == 3
    # the folder is still checked: scans changed since training are refused
    from mesh_decoder.mesh.io import save_mesh

    save_mesh(template.copy(vertices=v[0] + 1.0), work / "scans" / "scan_00.ply")
    with pytest.raises(TrainingError, match="trained on data_version"):
        evaluate(str(work / "run"), pca=False, measures=("error",))


def test_the_resume_docs_name_every_key_that_may_change():
    """train()'s docstring listed four of the five keys a resume may change (not training.validate_every)."""
    from mesh_decoder.train.config import RESUMABLE_KEYS

    doc = " ".join(train.__doc__.split())
    missing = [key for key in sorted(RESUMABLE_KEYS) if f"``{key}``" not in doc]
    assert missing == [], missing


def test_a_folder_config_takes_the_alignment_scale(tmp_path, tiny_config):
    """MeshFolderDataset fitted a scale with align, but a config refused data.scale as unknown, so scans at
    another scale stayed off the template by centimetres in training."""
    from mesh_decoder.mesh.templates import face_template
    from mesh_decoder.train.config import TrainConfigError

    template = face_template(600)
    rng = np.random.default_rng()
    factor = rng.uniform(1.8, 2.6, size=(8, 1, 1))
    scans = (template.vertices + rng.normal(0.0, 0.01, (8, 600, 3))) * factor  # the template at other scales
    _write_folder(tmp_path / "scaled", template, scans)
    data = {"source": "folder", "root": str(tmp_path / "scaled"), "test_fraction": 0.25, "align": True}

    def worst_error(d):  # the largest per-vertex distance of any aligned scan from the template, mm
        aligned = torch.cat([d.train, d.test]).double()
        return float((aligned - torch.from_numpy(template.vertices)).norm(dim=-1).max())

    assert worst_error(load_data(tiny_config(data={**data, "scale": True}))) < 0.1
    assert worst_error(load_data(tiny_config(data=data))) > 50.0  # rigid alone: the scale stays
    with pytest.raises(TrainConfigError, match=r"data\.scale: expected data\.align: true with it"):
        load_data(tiny_config(data={**data, "align": False, "scale": True}))


def test_a_folder_run_records_its_held_out_files(tmp_path, tiny_config):
    """A run on a folder did not say which scans it held out; recovering them meant redoing load_data's split."""
    from mesh_decoder.data import SyntheticFaces, interpolation_split
    from mesh_decoder.mesh.templates import face_template
    from mesh_decoder.model_files import read_model_meta

    template = face_template(600)
    gen = SyntheticFaces(template)
    v, _ = gen.generate(gen.sample_params(10, rng=np.random.default_rng()))
    _write_folder(tmp_path / "scans", template, v)
    seed = int(np.random.default_rng().integers(100))
    config = tiny_config(data={"source": "folder", "root": str(tmp_path / "scans"), "test_fraction": 0.3,
                               "seed": seed}, training={"epochs": 1, "batch_size": 4})
    train(config, tmp_path / "run", progress=False)
    _, test = interpolation_split(10, seed=seed, test_fraction=0.3)
    recorded = read_model_meta(tmp_path / "run" / "model.safetensors")["extra_meta"]["data"]["test_files"]
    assert recorded == [f"scan_{i:02d}.ply" for i in test] and len(recorded) == 3
    assert read_checkpoint_meta(tmp_path / "run" / CHECKPOINT_NAME)["data"]["test_files"] == recorded


def test_resume_refuses_other_operators_of_the_same_sizes(tmp_path, tiny_config):
    """A hierarchy.path file changed between a stop and --resume (same sizes, other spirals) was taken in silence:
    the run folder then held a hierarchy.npz that disagreed with its model's buffers."""
    from mesh_decoder.hierarchy import build_hierarchy, load_hierarchy, save_hierarchy
    from mesh_decoder.mesh.templates import face_template

    mine = build_hierarchy(face_template(600, seed=0), factors=(2, 2), texture_size=None)
    path = save_hierarchy(mine, tmp_path / "mine.npz")
    config = tiny_config(hierarchy={"path": str(path), "factors": [2, 2]}, training={"epochs": 2})
    stopped = train(config, tmp_path / "run", progress=False, callback=_interrupt_at(3, "raise"))
    assert stopped.interrupted
    changed = load_hierarchy(path)
    spirals = changed.levels[0].spirals
    spirals[:, 1:] = spirals[:, 1:].flip(1)  # the same neighbours, the other way round
    save_hierarchy(changed, path)
    with pytest.raises(TrainingError, match=rf"checkpoint trained on other hierarchy operators than hierarchy\.path "
                                            rf"{re.escape(str(path))} holds \(same sizes, other spirals"):
        train(config, tmp_path / "run", resume=True, progress=False)
    save_hierarchy(mine, path)  # the one it started on: resumes
    assert train(config, tmp_path / "run", resume=True, progress=False).epochs_completed == 2


def test_training_on_a_hierarchy_assembled_from_coma_matrices(tmp_path, tiny_config):
    """A hierarchy from another code's down/up-sampling matrices (no factors in its meta) trains through
    hierarchy.path, its levels checked against the config's factors."""
    import scipy.sparse as sp

    from mesh_decoder.hierarchy import build_hierarchy, hierarchy_from_matrices, save_hierarchy
    from mesh_decoder.mesh.templates import face_template
    from mesh_decoder.train.config import TrainConfigError

    template = face_template(600, seed=0)
    theirs = build_hierarchy(template, factors=(2, 2), texture_size=None)  # stands in for COMA's D, U and M
    D = [sp.csc_matrix((np.ones(len(d)), (np.arange(len(d)), d.numpy())), shape=(len(d), theirs.sizes[l]))
         for l, d in enumerate(theirs.down)]
    U = [sp.csc_matrix((w.double().numpy().ravel(), (np.repeat(np.arange(len(i)), 3), i.numpy().ravel())),
                       shape=(len(i), theirs.sizes[l + 1])) for l, (i, w) in enumerate(zip(theirs.up_index,
                                                                                           theirs.up_weight))]
    mine = hierarchy_from_matrices(template, D, U, [lvl.faces.numpy() for lvl in theirs.levels[1:]])
    path = save_hierarchy(mine, tmp_path / "coma.npz")
    result = train(tiny_config(hierarchy={"path": str(path), "factors": [2, 2]}, training={"epochs": 1}),
                   tmp_path / "run", progress=False)
    assert result.model.decoder.num_vertices == (600, 300, 150)
    with pytest.raises(TrainConfigError, match=r"hierarchy\.factors: \[2\]: expected the factors .*coma\.npz was "
                                               r"built with, found a hierarchy of 3 levels"):
        train(tiny_config(hierarchy={"path": str(path), "factors": [2]}, model={"channels": [8]}),
              tmp_path / "refused", progress=False)
    # its meta holds no factors: the stated ones are checked against its sizes (only the count was)
    with pytest.raises(TrainConfigError, match=r"hierarchy\.factors: \[4, 4\]: expected factors that give .*coma\.npz's "
                                               r"level sizes \[600, 300, 150\] .*got ones that give \[600, 150, 38\]; "
                                               r"factors \[2, 2\] give them"):
        train(tiny_config(hierarchy={"path": str(path), "factors": [4, 4]}), tmp_path / "refused", progress=False)
    # sizes whose ratio is not round: the factors it names give them (4.04, rounded down, gave one vertex more)
    odd = build_hierarchy(face_template(501, seed=0), factors=(4,), texture_size=None)  # 501 -> 126
    odd.meta.pop("factors")  # as an assembled one has none
    odd_path = save_hierarchy(odd, tmp_path / "odd.npz")
    config = tiny_config(template={"vertices": 501}, hierarchy={"path": str(odd_path), "factors": [4.5]},
                         model={"channels": [8]}, training={"epochs": 1})
    with pytest.raises(TrainConfigError, match=r"factors \[3\.977\] give them"):
        train(config, tmp_path / "odd_refused", progress=False)
    config["hierarchy"]["factors"] = [3.977]
    assert train(config, tmp_path / "odd_run", progress=False).model.decoder.num_vertices == (501, 126)


def test_training_on_a_saved_hierarchy_of_ones_own(tmp_path, tiny_config):
    """Training always decimated the template itself: operators of one's own (COMA's, or a hierarchy saved
    earlier) could not be used from a config."""
    from mesh_decoder.hierarchy import build_hierarchy, load_hierarchy, save_hierarchy
    from mesh_decoder.mesh.templates import face_template
    from mesh_decoder.train.config import TrainConfigError

    mine = build_hierarchy(face_template(600, seed=0), factors=(2, 2), spiral_lengths=7, texture_size=None)
    path = save_hierarchy(mine, tmp_path / "mine.npz")
    config = tiny_config(hierarchy={"path": str(path), "factors": [2, 2], "spiral_length": 7},
                         training={"epochs": 1})
    result = train(config, tmp_path / "run", progress=False)
    saved = load_hierarchy(tmp_path / "run" / "hierarchy.npz")
    assert saved.meta == mine.meta and saved.sizes == mine.sizes
    for a, b in zip(saved.levels, mine.levels):
        assert torch.equal(a.spirals, b.spirals)
    assert result.model.decoder.num_vertices == tuple(mine.sizes)
    from mesh_decoder.train import evaluate

    assert evaluate(tmp_path / "run", pca=False, measures=())["num_vertices"] == 600  # the run stands alone
    # what does not fit is named by its key, before any training
    other = save_hierarchy(build_hierarchy(face_template(700, seed=0), factors=(2, 2), texture_size=None),
                           tmp_path / "other.npz")
    for hierarchy, key in (({"path": str(other), "factors": [2, 2]}, r"hierarchy\.path: .*other\.npz: "),
                           ({"path": str(path), "factors": [2]}, r"hierarchy\.factors: \[2\]: expected the factors "),
                           ({"path": str(path), "factors": [2, 2], "texture_size": 64},
                            r"hierarchy\.texture_size: expected none with hierarchy\.path"),
                           ({"path": str(path), "factors": None}, r"hierarchy\.factors: expected the factors "
                                                                   r"hierarchy\.path was "
                                                 r"built with")):
        with pytest.raises(TrainConfigError, match=key):
            train(tiny_config(hierarchy=hierarchy, model={"channels": [8]} if hierarchy.get("factors") == [2]
                              else {}, training={"epochs": 1}), tmp_path / "refused", progress=False)
    with pytest.raises(FileNotFoundError, match=r"hierarchy\.path: .*missing\.npz: expected a saved hierarchy \(\.npz\)"):
        train(tiny_config(hierarchy={"path": str(tmp_path / "missing.npz"), "factors": [2, 2]}), tmp_path / "r2",
              progress=False)


def test_two_trains_into_one_folder_cannot_overlap(tmp_path, tiny_config):
    """Two train processes started together into one folder both passed its checks: the last to finish kept its
    model files beside the other's config.yaml, and the other run was lost without a word."""
    config = tiny_config(training={"epochs": 1})
    run = tmp_path / "run"
    with loop._run_lock(str(run)):  # a train running there (a lock taken through another open file)
        assert (run / loop.LOCK_NAME).read_text() == str(os.getpid())
        with pytest.raises(TrainingError, match=rf"{re.escape(str(run))}: another train is running in this folder "
                                                rf"\(process {os.getpid()}\); wait for it to end"):
            train(config, run, progress=False)
    assert not run.exists()  # made only for the lock, left empty: removed again
    train(config, run, progress=False)
    assert not (run / loop.LOCK_NAME).exists() and (run / "model.safetensors").is_file()


def test_the_model_file_records_the_threads_the_run_timed_on(tmp_path, tiny_config):
    """history.csv gives meshes/s, but no file said on how many threads (OMP_NUM_THREADS or --threads)."""
    from mesh_decoder.model_files import read_model_meta

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        train(tiny_config(training={"epochs": 1}), tmp_path, progress=False)
    finally:
        torch.set_num_threads(before)
    assert read_model_meta(tmp_path / "model.safetensors")["extra_meta"]["threads"] == 1


def test_resume_from_the_command_line_keeps_the_epochs_the_run_was_started_with(tmp_path, tiny_config, capsys):
    """A run started with --epochs 30 and stopped was resumed with plain --resume to the config file's 5 epochs:
    it finished early and wrote its model, without a word."""
    import yaml

    from mesh_decoder.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(training={"epochs": 1})))  # the file: 1 epoch
    run = tmp_path / "run"
    stopped = train(tiny_config(training={"epochs": 3}), run, progress=False, callback=_interrupt_at(2, "raise"))
    assert stopped.interrupted  # as `train c.yaml --epochs 3` stopped at step 2
    assert main(["train", str(path), "-o", str(run), "--resume", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "resuming to the 3 epochs the run was started with (the config file says 1" in out.err
    assert read_checkpoint_meta(run / CHECKPOINT_NAME)["epoch"] == 3 and "trained 3 epochs" in out.out


def test_a_second_sigterm_does_not_skip_the_checkpoint(tmp_path, tiny_config):
    """Two SIGTERMs close together (a scheduler signalling the process group and then the process) raised
    KeyboardInterrupt at the second, and the steps since the last checkpoint were lost."""
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("SIGTERM has a handler of the test runner's here; train keeps it")

    def twice(info):
        if info.step == 6:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = train(tiny_config(training={"epochs": 3}), tmp_path, progress=False, callback=twice)
    assert stopped.interrupted and stopped.step == 6
    meta = read_checkpoint_meta(tmp_path / CHECKPOINT_NAME)
    assert meta["status"] == "interrupted" and meta["step"] == 6
    flag = loop._StopFlag()  # a second SIGTERM arriving mid-step, or while the checkpoint is written
    flag._handler(signal.SIGTERM, None)
    flag._handler(signal.SIGTERM, None)
    assert flag.requested
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C still stops at once
        flag._handler(signal.SIGINT, None)


def test_a_file_system_without_locks_trains_unlocked_with_a_warning(tmp_path, tiny_config, monkeypatch):
    """flock failing with ENOSYS (some network mounts) ended every train with a bare OSError, leaking the lock
    file's descriptor and leaving the lock file and the new folder behind."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    open_before = len(os.listdir("/proc/self/fd"))
    with pytest.warns(RuntimeWarning, match=r"this file system cannot lock the run folder \(Function not "
                                            r"implemented\)"):
        result = train(tiny_config(training={"epochs": 1}), tmp_path / "run", progress=False)
    assert result.epochs_completed == 1 and not (tmp_path / "run" / loop.LOCK_NAME).exists()
    assert len(os.listdir("/proc/self/fd")) == open_before


def test_a_stopped_runs_config_spelled_otherwise_is_the_same_config(tmp_path, tiny_config):
    """A folder holding the config.yaml of a run stopped before its first checkpoint was refused as 'another
    config' when the new config left a default out that the old one spelled out (resume compares them resolved)."""
    from mesh_decoder.train import save_config
    from mesh_decoder.train.config import TrainConfig
    from mesh_decoder.train.loop import CONFIG_NAME

    run = tmp_path / "run"
    run.mkdir()
    save_config(TrainConfig.from_dict(tiny_config(training={"epochs": 1}, model={"decoder": "spiral"})),
                run / CONFIG_NAME)
    result = train(tiny_config(training={"epochs": 1}, model={"decoder": None}), run, progress=False)
    assert result.epochs_completed == 1


def test_train_under_a_callers_autocast_trains_in_the_models_dtype_and_says_so(tmp_path, tiny_config):
    """Under autocast the optimiser's in-place steps went unseen by autocast's cast cache: every epoch's loss was
    the same (0.84912, 0.84912) and the run meant nothing."""
    config = tiny_config(training={"epochs": 2})
    plain = train(config, tmp_path / "plain", progress=False)
    with pytest.warns(RuntimeWarning, match=r"^train: torch.autocast \(cpu\) is switched off inside train"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            under = train(config, tmp_path / "autocast", progress=False)
            assert torch.is_autocast_enabled("cpu")  # the caller's autocast is back
    losses = [[row["loss"] for row in result.history] for result in (plain, under)]
    assert losses[0][1] < losses[0][0] and losses[1] == losses[0], losses


def test_a_platform_without_fcntl_trains_unlocked_with_a_warning(tmp_path, tiny_config, monkeypatch):
    """Without fcntl (Windows) two trains into one folder were not refused, and nothing said so."""
    import sys

    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl raises ImportError, as on Windows
    with pytest.warns(RuntimeWarning, match=r"this platform has no fcntl to lock the run folder; another train "
                                            r"into it at the same time would not be refused"):
        result = train(tiny_config(training={"epochs": 1}), tmp_path / "run", progress=False)
    assert result.epochs_completed == 1 and not (tmp_path / "run" / loop.LOCK_NAME).exists()


def test_a_run_started_on_build_revision_1_resumes_on_its_hierarchy(tmp_path, tiny_config, monkeypatch):
    """Build revision 2 (positions rounded to float32) builds other operators for the same template, so a run
    started before it was refused on resume ('checkpoint trained on other hierarchy operators'), with no way
    round: its hierarchy is rebuilt as revision 1 built it when that is the checkpoint's."""
    from mesh_decoder.hierarchy.storage import hierarchy_digest
    from mesh_decoder.train.config import TrainConfig

    config = tiny_config(hierarchy={"cache_dir": False})
    data = load_data(config)
    make, parsed = loop.make_hierarchy, TrainConfig.from_dict(config)
    assert hierarchy_digest(make(parsed, data.template)) != hierarchy_digest(make(parsed, data.template, revision=1))
    with monkeypatch.context() as m:  # runs as the toolkit started them before revision 2
        m.setattr(loop, "make_hierarchy", lambda c, t, revision=None: make(c, t, revision=1))
        whole = train(config, tmp_path / "whole", progress=False, data=data)
        stopped = train(config, tmp_path / "run", progress=False, data=data, callback=_interrupt_at(7, "raise"))
    assert stopped.interrupted
    first = hierarchy_digest(make(parsed, data.template, revision=1))
    assert not (tmp_path / "run" / "hierarchy.npz").exists()  # rebuilt for the checkpoint as the run started
    assert hierarchy_digest(load_trained(tmp_path / "run" / CHECKPOINT_NAME)[1]) == first
    resumed = train(config, tmp_path / "run", resume=True, progress=False, data=data)
    assert not resumed.interrupted
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert_same_state(load_trained(tmp_path / "run")[0].state_dict(), load_trained(tmp_path / "whole")[0].state_dict())
