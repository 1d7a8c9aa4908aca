"""Training configs: YAML / JSON files, validation errors that name the key and the file."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from mesh_decoder.train import TrainConfig, TrainConfigError, load_config, save_config
from mesh_decoder.train.config import config_differences


def _write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_and_resolved_values():
    cfg = TrainConfig.from_dict({})
    assert cfg.decoder_kind == "spiral" and cfg.encoder_kind == "spiral"
    assert cfg.latent_size == 16 and cfg.channels == [32, 32, 32, 64] and cfg.factors == [4, 4, 4, 4]
    assert cfg.texture_size is None and cfg.in_channels == 3
    coma = TrainConfig.from_dict({"model": {"preset": "coma"}})
    assert coma.decoder_kind == "cheb" and coma.latent_size == 8 and coma.channels == [16, 16, 16, 32] and coma.K == 6
    joint = TrainConfig.from_dict({"model": {"preset": "spiralnet++-coma", "joint": True, "latent_size": 32}})
    assert joint.latent_size == 32 and joint.in_channels == 6 and joint.texture_size == 256
    pyg = TrainConfig.from_dict({"model": {"decoder": "pyg"}})
    assert pyg.encoder_kind == "spiral"  # as runs trained before PyG encoders: they load unchanged
    assert TrainConfig.from_dict({"model": {"decoder": "pyg", "encoder": "pyg"}}).encoder_kind == "pyg"
    assert TrainConfig.from_dict({"model": {"encoder": "pyg"}}).encoder_kind == "pyg"  # with a spiral decoder


def test_yaml_round_trip(tmp_path):
    path = _write(tmp_path, "run.yaml", """
model:
  preset: coma
  latent_size: 4
training:
  epochs: 7
  lr: 8e-3          # YAML 1.1 reads this as a string; a float key accepts it
hierarchy:
  factors: [4, 4, 4, 4]
""")
    cfg = load_config(path)
    assert cfg.training.lr == pytest.approx(8e-3) and cfg.training.epochs == 7 and cfg.latent_size == 4
    assert cfg.source == str(path)
    for name in ("copy.yaml", "copy.json"):
        save_config(cfg, tmp_path / name)
        again = load_config(tmp_path / name)
        assert again.to_dict() == cfg.to_dict()
    assert json.loads((tmp_path / "copy.json").read_text())["training"]["epochs"] == 7


def test_unknown_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, "bad.yaml", "model:\n  latnet_size: 8\n")
    with pytest.raises(TrainConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg and "model.latnet_size" in msg and "latent_size" in msg  # did-you-mean hint
    with pytest.raises(TrainConfigError, match="unknown key 'trainig'.*did you mean 'training'"):
        TrainConfig.from_dict({"trainig": {}})


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        ("training", "epochs", "ten", "an int"),
        ("training", "epochs", 2.5, "an int"),
        ("training", "batch_size", True, "an int"),
        ("training", "lr", "fast", "a number"),
        ("data", "align", "yes", "true or false"),
        ("data", "split", "random", "'interpolation' | 'extrapolation'"),
        ("model", "channels", [8, "16"], "a list of ints"),
        ("model", "decoder", "conv", "'spiral' | 'cheb' | 'pyg'"),
        ("model", "encoder", "gat", "'spiral' | 'cheb' | 'pyg' or null"),
        ("template", "kind", 3, "'face' | 'head' | 'file'"),
    ],
)
def test_wrong_type_names_key_and_file(tmp_path, section, key, value, expected):
    path = _write(tmp_path, "bad.json", json.dumps({section: {key: value}}))
    with pytest.raises(TrainConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: {section}.{key}: expected ") and expected in msg
    assert repr(value) in msg


@pytest.mark.parametrize(
    "config, key",
    [
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"training": {"lr": -1.0}}, "training.lr"),
        ({"training": {"lr_decay": 1.5}}, "training.lr_decay"),
        ({"training": {"device": "gpu7"}}, "training.device"),
        ({"training": {"device": "cuda:x"}}, "training.device"),
        ({"training": {"device": "mps:1"}}, "training.device"),
        ({"data": {"test_fraction": 1.0}}, "data.test_fraction"),
        ({"data": {"source": "folder"}}, "data.root"),
        ({"data": {"source": "folder", "root": "x", "split": "extrapolation"}}, "data.split"),
        ({"data": {"key": "nose_colour"}}, "data.key"),
        ({"template": {"kind": "file"}}, "template.path"),
        ({"template": {"vertices": 300}}, "template.vertices"),
        ({"template": {"kind": "head", "vertices": 100_001}}, "template.vertices"),
        ({"model": {"preset": "coma", "decoder": "spiral"}}, "model.decoder"),
        ({"model": {"preset": "neural3dmm"}}, "model.preset"),
        ({"model": {"activation": "swish"}}, "model.activation"),
        ({"model": {"channels": [8, 8, 8]}, "hierarchy": {"factors": [2, 2]}}, "model.channels"),
        ({"hierarchy": {"factors": [4, 1]}}, "hierarchy.factors[1]"),
        ({"hierarchy": {"spiral_length": [9, 9]}}, "hierarchy.spiral_length"),
        ({"hierarchy": {"cache_dir": ""}}, "hierarchy.cache_dir"),  # was the working folder
        ({"data": {"source": "folder", "root": "x", "pattern": " | "}}, "data.pattern"),
    ],
)
def test_range_and_consistency_errors(config, key):
    with pytest.raises(TrainConfigError, match="^config: " + re.escape(key) + ": "):
        TrainConfig.from_dict(config)


def test_syntax_errors_name_the_line(tmp_path):
    path = _write(tmp_path, "broken.yaml", "model:\n  latent_size: 8\n training: [\n")
    with pytest.raises(TrainConfigError, match="^" + re.escape(str(path)) + r", line \d+: not valid YAML"):
        load_config(path)
    path = _write(tmp_path, "broken.json", '{"model": {"latent_size": 8,}}')
    with pytest.raises(TrainConfigError, match="^" + re.escape(str(path)) + ", line 1: not valid JSON"):
        load_config(path)
    with pytest.raises(TrainConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    path = _write(tmp_path, "list.yaml", "- 1\n- 2\n")
    with pytest.raises(TrainConfigError, match="expected a mapping of sections"):
        load_config(path)


def test_replace_and_differences():
    cfg = TrainConfig.from_dict({"training": {"epochs": 3}})
    longer = cfg.replace(training={"epochs": 9}, model={"latent_size": 4})
    assert longer.training.epochs == 9 and cfg.training.epochs == 3
    assert config_differences(cfg.to_dict(), longer.to_dict()) == ["model.latent_size", "training.epochs"]
    with pytest.raises(TrainConfigError, match="training.epochs"):
        cfg.replace(training={"epochs": -1})


def test_example_configs_are_valid():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "configs"
    files = sorted(folder.glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        cfg = load_config(path)
        assert cfg.training.epochs >= 1, path


def test_device_names_are_checked_but_not_their_presence(tmp_path):
    path = tmp_path / "device.yaml"
    path.write_text("training:\n  device: foo\n")
    with pytest.raises(TrainConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: training.device: expected cpu, cuda, cuda:N or mps, got 'foo'"
    # a run trained on a GPU still loads its config where there is none
    index = int(np.random.default_rng().integers(0, 8))
    assert TrainConfig.from_dict({"training": {"device": f"cuda:{index}"}}).training.device == f"cuda:{index}"


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# caf\u00e9\ntraining:\n  epochs: 2\n".encode("latin-1"))
    with pytest.raises(TrainConfigError, match=re.escape(f"{path}: expected UTF-8 text, found byte 0xe9 at offset 5")):
        load_config(path)


@pytest.mark.parametrize("text", ["", "\n\n", "# epochs: 300\n# lr: 1e-3\n"])
def test_an_empty_config_file_is_refused_and_an_empty_mapping_is_every_default(tmp_path, text):
    """An empty file (or one of comments) trained every default (5,023 vertices, 300 epochs) without a word."""
    path = tmp_path / "empty.yaml"
    path.write_text(text)
    with pytest.raises(TrainConfigError, match=rf"^{re.escape(str(path))}: expected a mapping of settings, got an "
                                               r"empty file \(write \{\} to train with every default\)$"):
        load_config(path)
    path.write_text(text + "{}\n")
    assert load_config(path).to_dict() == TrainConfig.from_dict({}).to_dict()


def test_training_seed_is_checked_against_torchs_range():
    """A seed beyond 64 bits failed in train() with torch's 'Overflow when unpacking long long', after the data."""
    seed = 2**64 + int(np.random.default_rng(13).integers(0, 2**32))
    with pytest.raises(TrainConfigError, match=rf"^config: training.seed: expected an int in \[0, {2**64 - 1}\] "
                                               rf"\(torch's seeds are 64-bit\), got {seed}$"):
        TrainConfig.from_dict({"training": {"seed": seed}})
    assert TrainConfig.from_dict({"training": {"seed": 2**64 - 1}}).training.seed == 2**64 - 1  # torch takes it


@pytest.mark.parametrize("name, text, line, key", [
    ("sections.yaml", "training:\n  epochs: {a}\n  lr: 0.01\nmodel: {{}}\ntraining:\n  epochs: {b}\n", 5, "training"),
    ("keys.yaml", "training:\n  epochs: {a}\n  batch_size: 4\n  epochs: {b}\n", 4, "epochs"),
    ("flow.yaml", "training: {{epochs: {a}, epochs: {b}}}\n", 1, "epochs"),
], ids=["sections", "keys", "flow"])
def test_a_key_given_twice_in_yaml_is_named(tmp_path, name, text, line, key):
    """YAML keeps the last of two equal keys: a second 'training:' section silently dropped the first's lr."""
    a, b = (int(v) for v in np.random.default_rng(11).integers(1, 50, 2))
    path = _write(tmp_path, name, text.format(a=a, b=b))
    with pytest.raises(TrainConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}, line {line}: not valid YAML (duplicate key {key!r}: expected each "
                                     "key once in a mapping, found it on line ")


def test_a_key_given_twice_in_json_is_named_and_merge_keys_still_work(tmp_path):
    a, b = (int(v) for v in np.random.default_rng(12).integers(1, 50, 2))
    path = _write(tmp_path, "twice.json", json.dumps({"training": {"epochs": a}})[:-2] + f', "epochs": {b}}}}}')
    with pytest.raises(TrainConfigError, match="^" + re.escape(f"{path}: not valid JSON (duplicate key 'epochs': "
                                                               "expected each key once in an object, found it twice)")):
        load_config(path)
    # a YAML merge key's entries may be overridden: that is no duplicate
    path = _write(tmp_path, "merge.yaml", f"training:\n  <<: {{epochs: {a}, batch_size: 4}}\n  epochs: {b}\n")
    cfg = load_config(path)
    assert (cfg.training.epochs, cfg.training.batch_size) == (b, 4)


@pytest.mark.parametrize("key", ["decoder", "encoder"])
def test_the_docstring_lists_every_model_choice(key):
    """The module docstring's table of keys names the values ``model.decoder`` and ``model.encoder`` take."""
    import typing

    import mesh_decoder.train.config as config_module
    from mesh_decoder.train.config import ModelConfig

    (line,) = [line for line in config_module.__doc__.splitlines() if line.strip().startswith(f"{key}: null")]
    listed = line.split("#", 1)[1].split(";")[0].split("|")
    literal, _ = typing.get_args(typing.get_type_hints(ModelConfig)[key])
    assert [choice.strip() for choice in listed] == list(typing.get_args(literal))


@pytest.mark.parametrize("name, text", [
    ("bom.json", json.dumps({"training": {"epochs": 3}})),
    ("bom.yaml", "training:\r\n  epochs: 3\r\n"),
])
def test_a_byte_order_mark_is_read_past(tmp_path, name, text):
    """A JSON config saved by a Windows editor (UTF-8 with a BOM) was 'not valid JSON'; YAML read past it."""
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert load_config(path).training.epochs == 3


def test_a_union_of_types_reads_as_a_list():
    """hierarchy.cache_dir: 0 was 'expected true or false or a string'."""
    with pytest.raises(TrainConfigError, match=r"hierarchy\.cache_dir: expected true, false or a string, got 0 \(int\)"):
        TrainConfig.from_dict({"hierarchy": {"cache_dir": 0}})


def test_one_spiral_length_written_once_or_per_level_resolves_alike():
    """Resume refused spiral_length: 9 against [9, 9, 9, 9, 9], the same model."""
    once = TrainConfig.from_dict({"hierarchy": {"spiral_length": 9, "dilation": 1}}).resolved_dict()
    each = TrainConfig.from_dict({"hierarchy": {"spiral_length": [9] * 5, "dilation": [1] * 5}}).resolved_dict()
    assert config_differences(once, each) == []
    other = TrainConfig.from_dict({"hierarchy": {"spiral_length": [9, 9, 9, 9, 7]}}).resolved_dict()
    assert config_differences(once, other) == ["hierarchy.spiral_length"]
