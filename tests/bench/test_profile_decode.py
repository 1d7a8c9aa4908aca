"""benchmarks/profile_decode.py: where a decode's time goes, run here on the CPU (its CUDA columns need a GPU)."""

import json

import pytest
import torch

from benchmarks import profile_decode


@pytest.fixture(scope="module")
def hierarchy_file(tmp_path_factory):
    from mesh_decoder.hierarchy import build_hierarchy, save_hierarchy
    from mesh_decoder.mesh.templates import face_template

    path = tmp_path_factory.mktemp("profile") / "h.npz"
    save_hierarchy(build_hierarchy(face_template(1500), factors=(4, 4, 4, 4), spiral_lengths=9, texture_size=32), path)
    return path


def test_each_configuration_gets_its_times_and_the_operators_that_took_them(hierarchy_file, tmp_path, capsys):
    repeats = int(torch.randint(2, 5, ()))
    out = tmp_path / "out"
    assert profile_decode.main([str(hierarchy_file), "-o", str(out), "--device", "cpu", "--decoders",
                                "spiralnet++-coma", "joint", "--repeats", str(repeats)]) == 0
    (path,) = out.glob("profile_cpu-*.json")
    assert f"wrote {path}" in capsys.readouterr().out
    payload = json.loads(path.read_text())
    assert payload["environment"]["threads"] == torch.get_num_threads()
    assert payload["options"]["repeats"] == repeats
    results = payload["results"]
    assert [(r["decoder"], r["dtype"], r["mode"], r["batch"]) for r in results] == [
        ("spiralnet++-coma", "fp32", "eager", 1), ("joint", "fp32", "eager", 1)]
    for r in results:
        assert r["gpu_span_us"] is None  # no device
        assert 0 < r["busy_us"] <= r["wall_us"] * 1.05, r  # operators' self time lies within the calls
        table = r["table"]
        names = [t["name"] for t in table]
        assert "aten::mm" in names or "aten::addmm" in names, names
        assert any("embedding_bag" in n for n in names), names
        times = [t["us_per_decode"] for t in table]
        assert times == sorted(times, reverse=True) and times[0] > 0
        # counts per decode: whole calls of each operator, the same in every repeat
        assert all(t["per_decode"] * repeats == round(t["per_decode"] * repeats) for t in table)
        assert sum(t["per_decode"] for t in table) <= r["activities"]


@pytest.mark.parametrize("argv, message", [
    (["--modes", "cudagraph"], "--modes cudagraph and --dtypes tf32 need a CUDA device (got cpu)"),
    (["--dtypes", "tf32"], "--modes cudagraph and --dtypes tf32 need a CUDA device (got cpu)"),
    (["--repeats", "0"], "--repeats: expected an integer >= 1, got '0'"),
], ids=["graphs", "tf32", "repeats"])
def test_a_setting_this_machine_cannot_run_is_a_usage_error(hierarchy_file, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        profile_decode.main([str(hierarchy_file), "-o", str(tmp_path / "out"), "--device", "cpu", *argv])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_hierarchy_file_is_one_line_naming_it(tmp_path, capsys):
    missing = tmp_path / "none.npz"
    assert profile_decode.script_main(profile_decode.main, [str(missing), "-o", str(tmp_path / "out"),
                                                            "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(missing) in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_run_stopped_midway_keeps_the_configurations_it_finished(hierarchy_file, tmp_path, monkeypatch):
    real = profile_decode.profile_call
    calls = []

    def stop_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped between configurations
        return real(*args, **kwargs)

    monkeypatch.setattr(profile_decode, "profile_call", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        profile_decode.main([str(hierarchy_file), "-o", str(tmp_path), "--device", "cpu", "--decoders",
                             "spiralnet++-coma", "joint", "--repeats", "2"])
    (path,) = tmp_path.glob("profile_cpu-*.json")
    assert [r["decoder"] for r in json.loads(path.read_text())["results"]] == ["spiralnet++-coma"]


@pytest.mark.parametrize("device, message", [("tpu", "--device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
                                              ("cpu:1", "--device: expected auto, cpu, cuda or cuda:N, got 'cpu:1'")],
                         ids=["tpu", "cpu-1"])  # no 'cuda' in the ids: gpu.sh selects its CUDA tests by name
def test_a_device_the_benchmark_cannot_use_is_one_line(hierarchy_file, tmp_path, capsys, device, message):
    assert profile_decode.script_main(profile_decode.main, [str(hierarchy_file), "-o", str(tmp_path / "out"),
                                                            "--device", device]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "out").exists()
