"""Checkpoints: exact round trip, corruption detected, a SIGKILL mid-save keeps the last good one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from mesh_decoder.train import CheckpointError, load_checkpoint, read_checkpoint_meta, save_checkpoint
from mesh_decoder.train.loop import CHECKPOINT_NAME
from tests.train.reference import assert_same_state, parameters_of


def _trained_pieces(seed: int):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ELU(), torch.nn.Linear(7, 3))
    model.register_buffer("scale", torch.rand(3, generator=g) + 0.5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.7)
    for _ in range(3):
        x = torch.randn(11, 5, generator=g)
        loss = (model(x) * model.scale).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    sampler = torch.Generator().manual_seed(seed + 1)
    torch.randperm(10, generator=sampler)
    return model, optimizer, scheduler, sampler


def test_round_trip_is_exact(tmp_path):
    model, optimizer, scheduler, sampler = _trained_pieces(11)
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model, optimizer, scheduler, generators={"sampler": sampler},
                    meta={"epoch": 3, "step": 3, "history": [{"loss": 0.25}], "format": "ignored"})
    meta = read_checkpoint_meta(path)
    assert meta["format"] == "mesh_decoder.checkpoint" and meta["epoch"] == 3 and meta["rng"] == ["sampler"]

    fresh, fresh_opt, fresh_sched, fresh_sampler = _trained_pieces(12)  # different values everywhere
    ck = load_checkpoint(path)
    ck.restore(fresh, fresh_opt, fresh_sched, {"sampler": fresh_sampler})
    assert_same_state(parameters_of(model), parameters_of(fresh))
    assert fresh_sched.state_dict() == scheduler.state_dict()
    assert fresh_opt.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    assert torch.equal(fresh_sampler.get_state(), sampler.get_state())
    for p, q in zip(model.parameters(), fresh.parameters()):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(optimizer.state[p][key], fresh_opt.state[q][key])
    # the restored pieces continue exactly as the originals
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    for m, o in ((model, optimizer), (fresh, fresh_opt)):
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()
    assert_same_state(parameters_of(model), parameters_of(fresh))
    assert torch.equal(torch.randperm(10, generator=sampler), torch.randperm(10, generator=fresh_sampler))


def test_corrupt_truncated_and_foreign_files_are_named(tmp_path):
    model, optimizer, scheduler, sampler = _trained_pieces(3)
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, model, optimizer, scheduler, generators={"sampler": sampler})
    blob = bytearray(path.read_bytes())
    flipped = tmp_path / "flipped.safetensors"
    blob[-5] ^= 0xFF
    flipped.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=f"{flipped}: corrupt checkpoint: tensor checksum mismatch"):
        load_checkpoint(flipped)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match=str(truncated)):
        load_checkpoint(truncated)
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(CheckpointError, match=f"{short}: truncated"):
        load_checkpoint(short)
    text = tmp_path / "config.yaml"  # a text file: 'header of 7741526625702977571 bytes announced' said nothing
    text.write_text("template:\n  vertices: 500\n")
    with pytest.raises(CheckpointError, match=rf"^{text}: not a safetensors file: expected an 8-byte header length "
                                              r"first, found b'template'$"):
        load_checkpoint(text)
    from mesh_decoder.model_files import save_model
    from mesh_decoder.pca import PCAModel

    other = tmp_path / "model.safetensors"
    save_model(PCAModel(4, 2), other)
    with pytest.raises(CheckpointError, match=f"{other}: not a mesh_decoder training checkpoint"):
        load_checkpoint(other)


_CHILD = textwrap.dedent("""
    import os, sys, time
    import mesh_decoder.train.checkpoint as checkpoint
    from mesh_decoder.train import train

    saves = []
    real_write = checkpoint._write_all

    def slow_write(handle, data):
        saves.append(len(data))
        if len(saves) < 2:
            return real_write(handle, data)
        handle.write(data[: len(data) // 2])  # half of the second checkpoint reaches the disk
        handle.flush()
        os.fsync(handle.fileno())
        print("SAVING", flush=True)
        time.sleep(120)

    checkpoint._write_all = slow_write
    train(sys.argv[1], sys.argv[2], progress=False)
""")


def test_sigkill_during_save_keeps_the_last_good_checkpoint(tmp_path, tiny_config):
    import json

    config = tiny_config(training={"epochs": 3})
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(config_path), str(out)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=os.getcwd())
    try:
        line = child.stdout.readline()
        assert line.strip() == "SAVING", f"child said {line!r}, stderr: {child.stderr.read()}"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    leftovers = [f for f in os.listdir(out) if f.endswith(".tmp")]
    assert leftovers, "the half-written temporary file should still be there"
    ck = load_checkpoint(out / CHECKPOINT_NAME)  # verifies the checksum
    assert ck.meta["epoch"] == 1 and ck.meta["status"] == "epoch"

    from mesh_decoder.train import train

    result = train(config, out, resume=True, progress=False)  # the run goes on from epoch 1
    assert result.epochs_completed == 3 and not result.interrupted
    assert [h["epoch"] for h in result.history] == [1, 2, 3]


def test_a_model_in_the_paths_place_is_named(tmp_path):
    """save_checkpoint(model, path) as save_model takes them raised AttributeError: 'str' object has no attribute
    'state_dict'."""
    model, optimizer, _, _ = _trained_pieces(4)
    path = tmp_path / "ck.safetensors"
    with pytest.raises(TypeError, match=r"^model: expected a torch.nn.Module, got PosixPath \(save_checkpoint takes "
                                        r"the path first: save_checkpoint\(path, model, \.\.\.\)\)$"):
        save_checkpoint(model, path, optimizer)
    with pytest.raises(TypeError, match=r"^model: expected a torch.nn.Module, got OrderedDict$"):
        save_checkpoint(path, model.state_dict())
    assert not path.exists()
