"""The benchmark harness: FLOP counting, roofs, error gating, result files, the CLI."""

import argparse
import csv
import io
import json
import math
import sys
import time

import pytest
import torch
from torch import nn

from mesh_decoder.bench import harness, report
from mesh_decoder.bench.harness import BenchOptions, DecoderSpec, max_relative_error, run_benchmark
from mesh_decoder.bench.roofline import LayerCost, decoder_cost, gemm_bound, matmul_roof, register_cost

ENV_KEYS = {"device", "cpu", "gpu", "threads", "torch", "git_commit", "float32_matmul_precision", "date"}


# ---------------------------------------------------------------- stand-in decoders
class TinyDecoder(nn.Module):
    """latent -> (B, V, 3) with two linear layers; counts its forward calls."""

    def __init__(self, latent_size=6, num_vertices=10, hidden=16, seed=0, fail_at_batch=None):
        super().__init__()
        self.latent_size = latent_size
        self.num_vertices = num_vertices
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.fc1 = nn.Linear(latent_size, hidden)
            self.fc2 = nn.Linear(hidden, num_vertices * 3)
        self.calls = 0
        self.fail_at_batch = fail_at_batch

    def forward(self, z):
        self.calls += 1
        if self.fail_at_batch is not None and z.shape[0] == self.fail_at_batch:
            raise KeyboardInterrupt
        return self.fc2(torch.tanh(self.fc1(z))).reshape(z.shape[0], self.num_vertices, 3)  # (B, V, 3)


class Offset(TinyDecoder):
    """The tiny decoder plus a constant: over any tolerance against the tiny decoder."""

    def forward(self, z):
        return super().forward(z) + 1.0


class Perturbed(TinyDecoder):
    """The tiny decoder's vertices and their mean, as :class:`TwoOutputs`; output ``which`` is moved by
    seeded noise whose largest entry is ``error`` times that output's largest magnitude (NaN: one entry NaN)."""

    def __init__(self, which, error, noise_seed, **kw):
        super().__init__(**kw)
        self.which, self.error, self.noise_seed = which, error, noise_seed

    def forward(self, z):
        v = super().forward(z)
        outs = [v, v.mean(dim=1)]
        t = outs[self.which]
        gen = torch.Generator().manual_seed(self.noise_seed)
        if math.isnan(self.error):
            t = t.clone()
            t.view(-1)[int(torch.randint(t.numel(), (1,), generator=gen))] = math.nan
        else:
            noise = torch.randn(t.shape, generator=gen)
            t = t + self.error * t.abs().max() * noise / noise.abs().max()
        outs[self.which] = t
        return tuple(outs)


def options(tmp_path, **kw):
    base = dict(
        device=torch.device("cpu"), batch_sizes=(1, 4), modes=("eager",), dtypes=("fp32",), threads=1,
        output_dir=str(tmp_path), time_budget_s=0.05, min_repeats=2, memory="off", progress=False,
        plot=True, print_table=False, matmul_n=128, bandwidth_mb=8,
    )
    base.update(kw)
    return BenchOptions(**base)


# ------------------------------------------------------------------- FLOP counting
def test_flops_of_linear_stack_match_hand_count():
    model = TinyDecoder(latent_size=6, num_vertices=10, hidden=16)
    cost = decoder_cost(model, torch.randn(1, 6, generator=torch.Generator().manual_seed(1)))
    assert cost.flops_per_mesh == 2 * 6 * 16 + 2 * 16 * 30
    assert cost.gemm_shapes(32) == [(32, 6, 16), (32, 16, 30)]
    assert cost.parameters == 6 * 16 + 16 + 16 * 30 + 30
    assert cost.state_bytes == 4 * cost.parameters
    assert cost.input_bytes == 6 * 4 and cost.output_bytes == 30 * 4
    assert cost.min_bytes(8) == cost.state_bytes + 8 * (24 + 120)
    assert cost.uncounted == []


@pytest.fixture(scope="module")
def small_hierarchy():
    from mesh_decoder.hierarchy import build_hierarchy
    from mesh_decoder.mesh.templates import face_template

    return build_hierarchy(face_template(1000, seed=0), factors=(4, 4), texture_size=16)


def test_flops_of_spiral_and_cheb_decoders_match_hand_count(small_hierarchy):
    from mesh_decoder.nn.decoders import ChebDecoder, JointDecoder, SpiralDecoder

    h = small_hierarchy
    V0, V1, V2 = h.sizes
    S = 9
    z = torch.randn(1, 8, generator=torch.Generator().manual_seed(5))
    spiral = SpiralDecoder.from_hierarchy(h, latent_size=8, channels=(16, 32))
    hand = (
        2 * 8 * V2 * 32  # fc: latent -> V2 x 32
        + 6 * V1 * 32 + 2 * V1 * S * 32 * 32  # up to level 1, spiral conv 32 -> 32
        + 6 * V0 * 32 + 2 * V0 * S * 32 * 16  # up to level 0, spiral conv 32 -> 16
        + 2 * V0 * S * 16 * 3  # output conv 16 -> 3
    )
    cost = decoder_cost(spiral, z)
    assert cost.flops_per_mesh == hand
    assert cost.gemm_shapes(2) == [(2, 8, V2 * 32), (2 * V1, S * 32, 32), (2 * V0, S * 32, 16), (2 * V0, S * 16, 3)]
    assert cost.uncounted == []

    K = 3
    cheb = ChebDecoder.from_hierarchy(h, latent_size=8, channels=(16, 32), K=K)
    E0, E1 = (int(lvl.laplacian_weight.numel()) for lvl in h.levels[:2])

    def cheb_flops(V, E, cin, cout):
        return (K - 1) * 2 * E * cin + (K - 2) * 2 * V * cin + 2 * V * K * cin * cout

    hand = (2 * 8 * V2 * 32 + 6 * V1 * 32 + cheb_flops(V1, E1, 32, 32)
            + 6 * V0 * 32 + cheb_flops(V0, E0, 32, 16) + cheb_flops(V0, E0, 16, 3))
    assert decoder_cost(cheb, z).flops_per_mesh == hand

    joint = JointDecoder(SpiralDecoder.from_hierarchy(h, latent_size=8, channels=(16, 32), out_channels=6),
                         "mesh", h.texel_map)
    hand_joint = (2 * 8 * V2 * 32 + 6 * V1 * 32 + 2 * V1 * S * 32 * 32 + 6 * V0 * 32 + 2 * V0 * S * 32 * 16
                  + 2 * V0 * S * 16 * 6 + 6 * 16 * 16 * 3)  # 6-channel output conv, 16x16 texel gather of RGB
    jc = decoder_cost(joint, z)
    assert jc.flops_per_mesh == hand_joint
    assert jc.output_bytes == 4 * (V0 * 3 + 3 * 16 * 16 + V0 * 3)  # vertices, texture, colours (mask is not float)


def test_registered_rule_covers_children_and_uncounted_layers_are_listed():
    class Block(nn.Module):  # a custom layer whose children must not be counted again
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(4, 4)

        def forward(self, x):
            return self.inner(x) * 2

    class Scale(nn.Module):  # has a parameter, no rule
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x * self.s

    model = nn.Sequential(Block(), Scale(), Block())
    register_cost(Block, lambda name, m, calls: LayerCost(name, "block", 1000.0 * len(calls)))
    cost = decoder_cost(model, torch.randn(1, 4, generator=torch.Generator().manual_seed(2)))
    assert cost.flops_per_mesh == 2000.0
    assert [l.name for l in cost.layers] == ["0", "2"]
    assert cost.uncounted == ["1"]
    with pytest.raises(TypeError, match="nn.Module subclass"):
        register_cost(int, lambda *a: None)
    with pytest.raises(ValueError, match=r"expected shape \(1, Z\)"):
        decoder_cost(model, torch.randn(2, 4))


def test_roofs_measure_something():
    roof = matmul_roof("cpu", torch.float32, 128, budget_s=0.01)
    assert roof["n"] == 128 and roof["gflops"] > 0
    bound = gemm_bound([(64, 8, 4), (64, 8, 4), (16, 4, 2)], "cpu", budget_s=0.01)
    assert len(bound["per_shape"]) == 3
    assert bound["seconds"] == pytest.approx(sum(p["seconds"] for p in bound["per_shape"]))
    assert bound["per_shape"][0]["seconds"] == bound["per_shape"][1]["seconds"]  # cached per shape


# ------------------------------------------------------------------------ errors
def test_max_relative_error():
    gen = torch.Generator().manual_seed(3)
    r = torch.randn(4, 5, 3, generator=gen)
    y = r.clone()
    y[1, 2, 0] += 0.5
    scale = float(r.abs().max())
    assert max_relative_error([y], [r]) == pytest.approx(0.5 / scale, rel=1e-5)
    assert max_relative_error([r], [r]) == 0.0
    y[0, 0, 0] = float("nan")
    assert max_relative_error([y], [r]) == math.inf
    assert max_relative_error([r[:2]], [r]) == math.inf
    assert max_relative_error([r, r], [r]) == math.inf


def test_max_relative_error_covers_every_output_not_only_the_first():
    """Only the first output pair was compared: a decoder whose second output alone was wrong passed."""
    gen = torch.Generator().manual_seed(11)
    r1, r2 = torch.randn(3, 7, 3, generator=gen), 4 * torch.randn(3, 5, generator=gen)
    y2 = r2 + 0.01 * torch.randn(r2.shape, generator=gen)
    want = float((y2 - r2).abs().max()) / float(r2.abs().max())
    assert want > 0
    assert max_relative_error([r1.clone(), y2], [r1, r2]) == pytest.approx(want, rel=1e-5)
    # the larger of the two outputs' errors
    y1 = r1 + 0.5 * want * float(r1.abs().max()) * torch.rand(r1.shape, generator=gen)
    assert max_relative_error([y1, y2], [r1, r2]) == pytest.approx(want, rel=1e-5)


# ---------------------------------------------------------------- the run itself
def test_run_writes_files_and_fails_configs_over_tolerance(tmp_path):
    good = TinyDecoder(seed=0)
    bad = Offset(seed=0)
    specs = [
        DecoderSpec("good", good, 6, description="tiny"),
        DecoderSpec("bad", bad, 6, baseline="good", tolerances={"fp32": 1e-3}),
        DecoderSpec("ref", TinyDecoder(seed=0), 6, baseline="good", reference_for="good"),
    ]
    opts = options(tmp_path)
    original = torch.get_num_threads()
    before = 3 if opts.threads == 2 else 2  # differs from the run's count, so a leak shows
    torch.set_num_threads(before)
    try:
        payload = run_benchmark(specs, opts)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(original)
    assert after == before, f"the run left {after} threads, was {before} before it"
    rows = payload["rows"]
    assert [(r["decoder"], r["batch"]) for r in rows] == [
        ("good", 1), ("bad", 1), ("ref", 1), ("good", 4), ("bad", 4), ("ref", 4)
    ]
    for r in rows:
        if r["decoder"] == "bad":
            assert r["status"] == "failed"
            assert r["max_error"] > 1e-3 and r["tolerance"] == 1e-3
            assert r.get("meshes_per_s") is None and r.get("latency_ms") is None
            assert "not timed" in r["note"]
        else:
            assert r["status"] == "ok", r
            assert r["max_error"] <= 1e-6
            assert r["meshes_per_s"] > 0 and r["repeats"] >= 2
            assert r["mflop_per_mesh"] == pytest.approx((2 * 6 * 16 + 2 * 16 * 30) / 1e6)
            assert 0 < r["fraction_shape_bound"] and 0 < r["fraction_compute_roof"]
            assert r["matmul_precision"] == "highest" and r["threads"] == 1
    # the failed decoder ran for the FLOP count, then once per batch for the error check: never timed
    assert bad.calls == 1 + 2
    assert good.calls > 10
    good_rows = [r for r in rows if r["decoder"] == "good"]
    assert all(r["speedup_vs_reference"] > 0 for r in good_rows)
    assert len(payload["summary"]) == 2

    stem = f"decode_{report.machine_slug('cpu', 1)}"
    data = json.loads((tmp_path / f"{stem}.json").read_text())
    assert ENV_KEYS <= set(data["environment"])
    assert data["environment"]["threads"] == 1
    assert data["roofs"]["matmul"]["fp32"]["gflops"] > 0 and data["roofs"]["bandwidth"]["copy_gbps"] > 0
    assert len(data["rows"]) == 6
    assert data["decoders"]["good"]["cost"]["parameters"] == good_rows[0]["parameters"]
    lines = (tmp_path / f"{stem}.csv").read_text().splitlines()
    assert lines[0].startswith("# device: cpu")
    table = list(csv.DictReader(l for l in lines if not l.startswith("#")))
    assert [t["status"] for t in table] == [r["status"] for r in rows]
    assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _gated(tmp_path, which, error, noise_seed, tolerance=1e-3):
    """The rows of a run of :class:`Perturbed` against the unperturbed decoder, and the perturbed decoder."""
    bad = Perturbed(which, error, noise_seed, seed=0)
    specs = [
        DecoderSpec("good", Perturbed(which, 0.0, noise_seed, seed=0), 6),
        DecoderSpec("bad", bad, 6, baseline="good", tolerances={"fp32": tolerance}),
    ]
    rows = run_benchmark(specs, options(tmp_path, plot=False))["rows"]
    assert [(r["decoder"], r["batch"]) for r in rows] == [("good", 1), ("bad", 1), ("good", 4), ("bad", 4)]
    assert all(r["status"] == "ok" and r["max_error"] == 0.0 for r in rows if r["decoder"] == "good"), rows
    return [r for r in rows if r["decoder"] == "bad"], bad


def test_a_decoder_wrong_in_its_second_output_only_fails_untimed(tmp_path):
    """The error check compared the first outputs only: a second output over tolerance was timed as ok."""
    rows, bad = _gated(tmp_path, which=1, error=3.0, noise_seed=21)
    for r in rows:
        assert r["status"] == "failed", r
        assert r["max_error"] == pytest.approx(3.0, rel=1e-4) and r["tolerance"] == 1e-3
        assert r.get("meshes_per_s") is None and "not timed" in r["note"]
    assert bad.calls == 1 + 2  # the FLOP count, then one error check per batch


@pytest.mark.parametrize("factor, status", [(2.0, "failed"), (0.5, "ok")])
def test_the_error_gate_is_the_rows_tolerance(tmp_path, factor, status):
    """A gate ten times looser than the row's tolerance passed errors twice the tolerance."""
    rows, _ = _gated(tmp_path, which=0, error=factor * 1e-3, noise_seed=31 + int(4 * factor))
    for r in rows:
        assert r["tolerance"] == 1e-3
        assert r["max_error"] == pytest.approx(factor * r["tolerance"], rel=1e-3)
        assert r["status"] == status, r
        assert (r.get("meshes_per_s") is None) == (status == "failed")


def test_a_nan_output_fails_the_error_check(tmp_path):
    """A NaN in an output must fail the row, whatever the tolerance."""
    rows, _ = _gated(tmp_path, which=1, error=math.nan, noise_seed=41, tolerance=1e6)
    for r in rows:
        assert r["status"] == "failed" and r["max_error"] == math.inf, r
        assert r.get("meshes_per_s") is None and "not timed" in r["note"]


def test_interrupt_leaves_complete_files(tmp_path):
    spec = DecoderSpec("tiny", TinyDecoder(fail_at_batch=4), 6)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark([spec], options(tmp_path, plot=False))
    stem = f"decode_{report.machine_slug('cpu', 1)}"
    data = json.loads((tmp_path / f"{stem}.json").read_text())
    assert data["environment"]["interrupted"] is True and data["environment"]["complete"] is False
    assert [(r["decoder"], r["batch"], r["status"]) for r in data["rows"]] == [("tiny", 1, "ok")]
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("memory, why", [("off", "--memory off"), ("eager", "--memory eager probes eager rows only")])
def test_the_table_says_why_peak_memory_was_not_probed(tmp_path, capsys, memory, why):
    """The note under the table named the default's rule whatever --memory was."""
    run_benchmark([DecoderSpec("tiny", TinyDecoder(), 6, recipe={"name": "x"})],  # a built-in's: probeable
                  options(None, output_dir=None, memory=memory, modes=("eager", "compile"), batch_sizes=(2,),
                          print_table=True))
    out = capsys.readouterr().out
    assert f"peak mem '-': not probed ({why}; --memory all probes every row)" in out
    # the columns are explained under the table
    assert " ".join(report.TABLE_LEGEND.split()) in " ".join(out.split())
    assert all(f"{column}:" in report.TABLE_LEGEND for column in ("latency", "error", "%roof", "%bw", "%shape", "speedup"))


class _SkippingClock:
    """The :mod:`time` module as the harness sees it, except that ``perf_counter`` can be moved on by ``skip``."""

    def __init__(self):
        self.skipped = 0.0

    def skip(self, seconds):
        self.skipped += seconds

    def perf_counter(self):
        return time.perf_counter() + self.skipped

    def __getattr__(self, name):
        return getattr(time, name)


def test_rows_record_their_first_call_and_the_report_sums_compiling(tmp_path, capsys, monkeypatch):
    """What compiling cost was not recorded anywhere: a cold run's extra minutes showed only in wall_s."""
    # A stand-in torch.compile charges known (virtual) seconds on the harness's clock: MAKE_S when the
    # runner is made, FIRST_S at its first call (where inductor compiles), so no assertion needs the real
    # durations of a busy machine.
    MAKE_S, FIRST_S = 100.0, 1000.0
    clock, compiled = _SkippingClock(), []

    def fake_compile(module, **kwargs):
        compiled.append(module)
        clock.skip(MAKE_S)
        calls = []

        def run(z):
            if not calls:
                clock.skip(FIRST_S)
            calls.append(1)
            return module(z)

        return run

    monkeypatch.setattr(harness, "time", clock)
    monkeypatch.setattr(torch, "compile", fake_compile)
    tiny = TinyDecoder()
    payload = run_benchmark([DecoderSpec("tiny", tiny, 6)],
                            options(tmp_path, modes=("eager", "compile"), batch_sizes=(2,), plot=False,
                                    print_table=True))
    assert compiled == [tiny] and clock.skipped == MAKE_S + FIRST_S
    first = {row["mode"]: row["first_call_s"] for row in payload["rows"]}
    assert set(first) == {"eager", "compile"} and all(0 < s < payload["environment"]["wall_s"] for s in first.values())
    # making the runner and compiling in its first call are both in the compiled row; an eager row is one
    # call (far under the virtual seconds however loaded the machine)
    assert first["compile"] >= MAKE_S + FIRST_S
    assert first["eager"] < MAKE_S
    assert payload["environment"]["wall_s"] >= MAKE_S + FIRST_S
    stem = f"decode_{report.machine_slug('cpu', 1)}"
    table = list(csv.DictReader(l for l in (tmp_path / f"{stem}.csv").read_text().splitlines()
                                if not l.startswith("#")))
    assert [float(r["first_call_s"]) for r in table] == pytest.approx([first[r["mode"]] for r in table])
    out = capsys.readouterr().out
    assert (f"compiling: the first calls of the 1 compiled configuration took {first['compile']:.1f} s of the "
            f"run's {payload['environment']['wall_s']:.1f} s") in out


def test_interrupt_before_any_row_keeps_earlier_files(tmp_path, capsys):
    """Ctrl-C before the first group ends writes nothing: an earlier run's complete files stay."""
    run_benchmark([DecoderSpec("tiny", TinyDecoder(), 6)], options(tmp_path, plot=False))
    stem = f"decode_{report.machine_slug('cpu', 1)}"
    before = {suffix: (tmp_path / f"{stem}.{suffix}").read_bytes() for suffix in ("json", "csv")}
    assert len(json.loads(before["json"])["rows"]) == 2
    capsys.readouterr()
    with pytest.raises(KeyboardInterrupt):  # batch 1 is the first group (and the cost count)
        run_benchmark([DecoderSpec("tiny", TinyDecoder(fail_at_batch=1), 6)], options(tmp_path, plot=False))
    assert {suffix: (tmp_path / f"{stem}.{suffix}").read_bytes() for suffix in ("json", "csv")} == before
    assert "nothing written" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*.tmp"))


def _written(tmp_path, prefix="decode", threads=1) -> tuple[dict, dict[str, str]]:
    """The JSON result file and the CSV's comment lines (``# key: value``) of a run in ``tmp_path``."""
    stem = f"{prefix}_{report.machine_slug('cpu', threads)}"
    data = json.loads((tmp_path / f"{stem}.json").read_text())
    lines = (tmp_path / f"{stem}.csv").read_text().splitlines()
    comments = dict(line[2:].split(": ", 1) for line in lines if line.startswith("# "))
    return data, comments


class Peek(TinyDecoder):
    """The tiny decoder that, at its first call of batch ``at``, keeps the result file's environment as it is then."""

    def __init__(self, path, at, **kw):
        super().__init__(**kw)
        self.path, self.at, self.seen = path, at, None

    def forward(self, z):
        if z.shape[0] == self.at and self.seen is None:
            self.seen = json.loads(self.path.read_text())["environment"]
        return super().forward(z)


def test_a_file_says_whether_its_run_is_complete(tmp_path):
    """The files rewritten after every group carried no mark while the run went on: a run killed there
    (or still going) left files that looked like a finished run's."""
    stem = f"decode_{report.machine_slug('cpu', 1)}"
    peek = Peek(tmp_path / f"{stem}.json", at=4)
    payload = run_benchmark([DecoderSpec("tiny", peek, 6)], options(tmp_path, plot=False))
    assert peek.seen is not None and peek.seen["complete"] is False  # written after batch 1, read at batch 4
    data, comments = _written(tmp_path)
    assert data["environment"]["complete"] is True and payload["environment"]["complete"] is True
    assert not {"interrupted", "failed"} & set(data["environment"]) and comments["complete"] == "True"
    assert [r["batch"] for r in data["rows"]] == [1, 4]


def _fail_later_group(monkeypatch, message):
    """``time_interleaved`` raises at its second group (batch 4): the first group's files are written."""
    timing, calls = harness.time_interleaved, []

    def fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError(message)
        return timing(*args, **kwargs)

    monkeypatch.setattr(harness, "time_interleaved", fail)
    return {}


def _fail_probes(monkeypatch, message):
    def fail(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(harness, "_probe_memory", fail)
    return {"memory": "eager", "hierarchy_path": "unused.npz"}


def _fail_csv_writes(monkeypatch, message, calls_that_fail):
    """``write_csv`` raises ``OSError`` at the calls in ``calls_that_fail`` (1: after batch 1, 2: batch 4, 3: the last)."""
    write_csv, calls = report.write_csv, []

    def fail(*args, **kwargs):
        calls.append(1)
        if len(calls) in calls_that_fail:
            raise OSError(28, "No space left on device", message)  # message: the file's name
        return write_csv(*args, **kwargs)

    monkeypatch.setattr(report, "write_csv", fail)
    return {}


def _fail_last_write(monkeypatch, message):
    return _fail_csv_writes(monkeypatch, message, {3})


def _fail_last_write_and_rewrite(monkeypatch, message):
    return _fail_csv_writes(monkeypatch, message, {3, 4})


@pytest.mark.parametrize("where, error, rows", [
    (_fail_later_group, RuntimeError, [1]), (_fail_probes, RuntimeError, [1, 4]), (_fail_last_write, OSError, [1, 4]),
    (_fail_last_write_and_rewrite, OSError, [1, 4]),
])
def test_a_run_ended_by_an_error_leaves_files_marked_failed(tmp_path, monkeypatch, capsys, where, error, rows):
    """An error after the first group (in a later group, the memory probes or the last write) left files
    that looked like a complete run's: only Ctrl-C was recorded."""
    message = f"simulated failure {int(torch.randint(1000, 10**6, (1,), generator=torch.Generator().manual_seed(8)))}"
    extra = where(monkeypatch, message)
    spec = DecoderSpec("tiny", TinyDecoder(seed=3), 6, recipe={"name": "x"})
    with pytest.raises(error, match=message):
        run_benchmark([spec], options(tmp_path, **{"plot": False, **extra}))
    data, comments = _written(tmp_path)
    failed = f"{error.__name__}: {message}" + (": No space left on device" if error is OSError else "")
    env = data["environment"]
    assert env["complete"] is False and env["failed"] == failed and "interrupted" not in env
    assert [r["batch"] for r in data["rows"]] == rows and all(r["status"] == "ok" for r in data["rows"])
    stem = tmp_path / f"decode_{report.machine_slug('cpu', 1)}"
    err = capsys.readouterr().err
    if where is _fail_last_write_and_rewrite:  # the JSON is marked; the CSV is the batch-4 write's: unfinished
        assert comments["complete"] == "False" and "failed" not in comments
        assert f"failed: could not rewrite {stem}.json and {stem}.csv to say so ({failed})" in err
    else:
        assert comments["complete"] == "False" and comments["failed"] == failed
        assert (f"failed: wrote the {len(rows)} finished configurations to {stem}.json and {stem}.csv, marked failed"
                in err)
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_scaling_run_ended_early_says_so(tmp_path, monkeypatch, capsys):
    """run_scaling rewrote its files after every size, unmarked: stopped at a later size, they looked complete."""
    from mesh_decoder.mesh import templates

    sizes = []

    def template(n, seed=0):
        sizes.append(n)
        if len(sizes) == 2:
            raise RuntimeError(f"simulated failure at {n} vertices")
        return face_template(n, seed=seed)

    face_template = templates.face_template
    monkeypatch.setattr(templates, "face_template", template)
    with pytest.raises(RuntimeError, match="simulated failure at 2000 vertices"):
        harness.run_scaling((1000, 2000), batch=2, threads=1, output_dir=str(tmp_path), budget_s=0.05,
                            progress=False, plot=False, seed=4)
    data, comments = _written(tmp_path, prefix="scaling")
    assert data["environment"]["complete"] is False and comments["complete"] == "False"
    assert data["environment"]["failed"] == "RuntimeError: simulated failure at 2000 vertices"
    assert [p["vertices"] for p in data["points"]] == [1000]
    assert "failed: wrote the 1 finished sizes to" in capsys.readouterr().err
    monkeypatch.setattr(templates, "face_template", face_template)
    harness.run_scaling((1000,), batch=2, threads=1, output_dir=str(tmp_path), budget_s=0.05, progress=False,
                        plot=False, seed=4)
    data, comments = _written(tmp_path, prefix="scaling")
    assert data["environment"]["complete"] is True and "failed" not in data["environment"]
    assert comments["complete"] == "True" and "failed" not in comments


def test_skipped_probe_note_survives_the_reference_note(tmp_path, monkeypatch):
    """The time-box note of a row whose memory probe was skipped is kept beside the reference note."""
    monkeypatch.setattr(harness, "serve_probes", lambda todo, *a, **k: [row for row, _ in todo])  # all skipped
    specs = [DecoderSpec("fast", TinyDecoder(), 6, recipe={"name": "x"}),
             DecoderSpec("ref", TinyDecoder(), 6, baseline="fast", reference_for="fast", recipe={"name": "x"})]
    payload = run_benchmark(specs, options(None, output_dir=None, memory="eager", hierarchy_path="unused.npz",
                                           batch_sizes=(4,)))
    skipped = "peak memory not measured: time box (--memory all)"
    notes = {row["decoder"]: row["note"] for row in payload["rows"]}
    assert notes == {"fast": f"reference best: eager; {skipped}", "ref": skipped}
    harness._annotate(payload["rows"], {s.name: s for s in specs})  # once more: nothing repeated
    assert payload["rows"][0]["note"] == f"reference best: eager; {skipped}"
    assert payload["summary"][0]["note"] == notes["fast"]


@pytest.mark.parametrize("modes, why", [
    (("eager",), "the time box ended before their probes"),
    (("eager", "compile"), "1 of them because the time box ended before their probes; "
                           "--memory eager probes eager rows only"),
])
def test_the_memory_note_counts_the_rows_the_time_box_cut_off(monkeypatch, modes, why):
    """Rows whose probes the time box cut off were explained by the --memory rule alone ('the default
    probes eager rows ...'), although they were eager rows."""
    monkeypatch.setattr(harness, "serve_probes", lambda todo, *a, **k: [row for row, _ in todo])  # all skipped
    spec = DecoderSpec("tiny", TinyDecoder(), 6, recipe={"name": "x"})
    payload = run_benchmark([spec], options(None, output_dir=None, memory="eager", hierarchy_path="unused.npz",
                                            modes=modes, batch_sizes=(4,)))
    assert [row.get("peak_memory_mb") for row in payload["rows"]] == [None] * len(modes)
    assert harness._memory_note(payload) == f"peak mem '-': not probed ({why}; --memory all probes every row)"


@pytest.mark.parametrize("memory", ["all", "auto", "eager"])
@pytest.mark.parametrize("hierarchy_path", [None, "unused.npz"])
def test_a_decoder_of_ones_own_is_named_as_not_memory_probed(capsys, hierarchy_path, memory):
    """A spec without a recipe was skipped in silence: the warning blamed a missing hierarchy, and the note under
    the table said its probe 'failed or could not run; see the warnings above', or blamed the --memory rule."""
    payload = run_benchmark([DecoderSpec("mine", TinyDecoder(), 6)],
                            options(None, output_dir=None, memory=memory, hierarchy_path=hierarchy_path,
                                    batch_sizes=(2,), print_table=True))
    captured = capsys.readouterr()
    assert ("warning: peak memory is probed for the built-in decoders only (a fresh process rebuilds each from a "
            "recipe); not measured for mine") in captured.err
    assert "need a saved hierarchy" not in captured.err
    assert payload["rows"][0].get("peak_memory_mb") is None
    assert ("peak mem '-' of mine: not probed (a probe rebuilds a built-in decoder in a fresh process; a decoder of "
            "one's own has no recipe for that)") in captured.out
    assert "--memory" not in captured.out.split("peak mem '-' of mine")[1].splitlines()[0]


def test_the_report_says_when_flops_leave_layers_out(capsys):
    """The table gave a layer no cost rule knows 0 FLOPs (and %roof 0 %) without a word; only the JSON listed it."""

    class Gain(nn.Module):  # a layer with weights that no cost rule counts
        def __init__(self, size):
            super().__init__()
            self.gain = nn.Parameter(1 + torch.rand(size))

        def forward(self, x):
            return x * self.gain

    class Gained(TinyDecoder):
        def __init__(self):
            super().__init__()
            self.post = Gain(3)

        def forward(self, z):
            return self.post(super().forward(z))

    payload = run_benchmark([DecoderSpec("gained", Gained(), 6), DecoderSpec("tiny", TinyDecoder(), 6)],
                            options(None, output_dir=None, batch_sizes=(2,), print_table=True))
    out = capsys.readouterr().out
    assert payload["decoders"]["gained"]["cost"]["uncounted"] == ["post"]
    assert ("gained: MFLOP/mesh and the roof columns leave out 1 layer with weights that no cost rule counts (post; "
            "mesh_decoder.bench.register_cost adds a rule)") in out
    assert "tiny: MFLOP/mesh" not in out


def test_options_are_not_changed_by_a_run(tmp_path):
    """run_benchmark kept its start in the caller's options: a second run with them inherited the
    first run's (spent) time box."""
    import dataclasses

    opts = options(tmp_path, plot=False, time_box_s=60.0, batch_sizes=(2,))
    before = dataclasses.asdict(opts)
    for _ in range(2):
        payload = run_benchmark([DecoderSpec("tiny", TinyDecoder(), 6)], opts)
        assert opts.started_at is None and dataclasses.asdict(opts) == before
        assert payload["rows"][0]["repeats"] >= opts.min_repeats


def test_bad_specs_and_options(tmp_path):
    tiny = TinyDecoder()
    with pytest.raises(ValueError, match="unique"):
        run_benchmark([DecoderSpec("a", tiny, 6), DecoderSpec("a", tiny, 6)], options(tmp_path))
    with pytest.raises(ValueError, match="not benchmarked"):
        run_benchmark([DecoderSpec("a", tiny, 6, baseline="zzz")], options(tmp_path))
    with pytest.raises(ValueError, match="dtypes"):
        run_benchmark([DecoderSpec("a", tiny, 6)], options(tmp_path, dtypes=("fp64",)))
    for box in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match=rf"time_box_s: expected None or a finite number of seconds >= 0, "
                                             rf"got {box!r}"):
            run_benchmark([DecoderSpec("a", tiny, 6)], options(tmp_path, time_box_s=box))
    with pytest.raises(ValueError, match="seed: expected an integer >= 0, got -1"):
        run_benchmark([DecoderSpec("a", tiny, 6)], options(tmp_path, seed=-1))
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    with pytest.raises(ValueError, match="output_dir .*afile: expected a directory, found an existing file"):
        run_benchmark([DecoderSpec("a", tiny, 6)], options(afile))
    assert tiny.calls == 0  # refused before any work


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch-sizes", "0"], "expected an integer >= 1, got '0'"),
        (["--modes", "cudagraph", "--device", "cpu"], "CUDA"),
        (["--modes", "compile-cudagraph", "--device", "cpu"], "compile-cudagraph: CUDA graphs need a CUDA"),
        (["--file-prefix", "../x"], "--file-prefix: expected letters"),
        (["--dtypes", "tf32", "--device", "cpu"], "TF32"),
        (["--device", "tpu"], "--device"),
        (["--template", "a.obj", "--vertices", "1000"], "not allowed with"),
        (["--hierarchy", "/nonexistent/h.npz"], "h.npz"),
        (["--time-budget", "-1"], "time-budget"),
        (["--time-box", "-1"], "time-box"),
    ],
)
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path):
    code = harness.main([*argv, "--output-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


@pytest.fixture
def no_run(monkeypatch):
    """The CLI must stop before any work: loading the inputs or a scaling run fails the test."""

    def started(*args, **kwargs):
        raise AssertionError("the run started")

    monkeypatch.setattr(harness, "_load_inputs", started)
    monkeypatch.setattr(harness, "run_scaling", started)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--time-box", "inf"], "argument --time-box: expected a finite number of seconds >= 0, got 'inf'"),
        (["--time-box", "nan"], "argument --time-box: expected a finite number of seconds >= 0, got 'nan'"),
        (["--time-box", "1e999"], "argument --time-box: expected a finite number of seconds >= 0, got '1e999'"),
        (["--time-budget", "inf"], "argument --time-budget: expected a finite number of seconds > 0, got 'inf'"),
        (["--time-budget", "0"], "argument --time-budget: expected a finite number of seconds > 0, got '0'"),
        (["--seed", "-1"], "argument --seed: expected an integer in [0, 4294967295], got '-1'"),
    ],
)
def test_bad_values_are_refused_before_the_run(argv, message, no_run, capsys, tmp_path):
    assert harness.main([*argv, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mesh-decoder bench: ") and err.count("\n") == 1, err
    assert message in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dtypes", "bf16"], "--scaling: expected none of the options it ignores, got --dtypes "),
        (["--modes", "compile", "--decoders", "coma"], "got --decoders, --modes "),
        (["--hierarchy", "h.npz", "--time-box", "5"], "got --hierarchy, --time-box "),
        (["--memory", "all", "--onnx"], "got --onnx, --memory "),
        (["--texture-size", "256"], "got --texture-size "),  # the default's value was taken as not given
        (["--batch-sizes", "64", "2"], "--scaling: expected one --batch-sizes value, got 64 2"),
    ],
)
def test_scaling_refuses_the_options_it_ignores(argv, message, no_run, capsys, tmp_path):
    assert harness.main(["--scaling", "--quick", "--device", "cpu", *argv, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_scaling_takes_its_one_batch_size(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(harness, "run_scaling", lambda sizes, **kw: calls.append((tuple(sizes), kw)))
    argv = ["--scaling", "--quick", "--device", "cpu", "--threads", "1", "--seed", "3", "--output-dir", str(tmp_path)]
    assert harness.main([*argv, "--batch-sizes", "64"]) == 0
    assert harness.main(argv) == 0
    assert [(sizes, kw["batch"], kw["seed"], kw["threads"]) for sizes, kw in calls] == [
        (harness.QUICK_SCALING_SIZES, 64, 3, 1), (harness.QUICK_SCALING_SIZES, 8, 3, 1)]


def test_output_dir_errors_are_one_line_before_the_run(no_run, capsys, tmp_path):
    """An --output-dir that is a file failed with a traceback, after the whole run."""
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    for extra in ([], ["--scaling", "--quick"]):
        assert harness.main(["--device", "cpu", *extra, "--output-dir", str(afile)]) == 1
        err = capsys.readouterr().err
        assert err == f"error: --output-dir {afile}: expected a directory, found an existing file\n"


def test_os_errors_during_the_run_are_one_line(monkeypatch, capsys, tmp_path):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "decode_x.json"))

    monkeypatch.setattr(harness, "_load_inputs", denied)
    assert harness.main(["--device", "cpu", "--output-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'decode_x.json'}: Permission denied\n"


# ------------------------------------------------------ a real quick run (the CLI)
def test_quick_run_on_a_tiny_template(tmp_path, capsys):
    argv = ["--quick", "--vertices", "1000", "--texture-size", "32", "--threads", "1", "--batch-sizes", "1", "3",
            "--time-budget", "0.3", "--output-dir", str(tmp_path), "--no-progress", "--file-prefix", "quick-run"]
    assert harness.main(argv) == 0
    out = capsys.readouterr().out
    assert "spiralnet++-coma" in out and "meshes/s" in out
    stem = f"quick-run_{report.machine_slug('cpu', 1)}"
    data = json.loads((tmp_path / f"{stem}.json").read_text())
    assert ENV_KEYS <= set(data["environment"])
    assert data["environment"]["template"] == "face_template(1000)"
    rows = data["rows"]
    expected = {(d, b) for d in harness.DEFAULT_DECODERS for b in (1, 3)}
    assert {(r["decoder"], r["batch"]) for r in rows} == expected and len(rows) == len(expected)
    for r in rows:
        assert r["status"] == "ok", r
        assert r["mode"] == "eager" and r["dtype"] == "fp32"
        assert r["max_error"] < 1e-4
        assert r["meshes_per_s"] > 0 and r["mflop_per_mesh"] > 0
        assert r["peak_memory_mb"] is not None and r["peak_memory_mb"] >= 0
    ref = [r for r in rows if r["decoder"] == "spiralnet++-coma"]
    assert all(r["speedup_vs_reference"] > 0 and r["memory_vs_reference"] is not None for r in ref)
    assert data["decoders"]["reference"]["baseline"] == "spiralnet++-coma"
    lines = (tmp_path / f"{stem}.csv").read_text().splitlines()
    assert len([l for l in lines if not l.startswith("#")]) == 1 + len(expected)
    assert (tmp_path / f"{stem}.png").stat().st_size > 1000


class TwoOutputs(TinyDecoder):
    """Vertices and a second output, as the joint decoder returns."""

    def forward(self, z):
        v = super().forward(z)
        return v, v.mean(dim=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("capture_io", [False, True])
def test_cuda_graph_runner_replays_fresh_latents(capture_io):
    """A captured graph, with the copies in and out captured or not, gives the module's
    outputs for latents it was not captured with."""
    module = TwoOutputs(latent_size=6, num_vertices=10).cuda().eval()
    gen = torch.Generator().manual_seed(3)
    with torch.inference_mode():
        runner = harness._CudaGraphRunner(module, torch.randn(1, 6, generator=gen).cuda(), capture_io=capture_io)
        for _ in range(3):
            z = torch.randn(1, 6, generator=gen).pin_memory()
            outs = harness._outputs(runner(z if capture_io else z.cuda()))
            torch.cuda.synchronize()
            assert len(outs) == 2 and all(t.is_cuda != capture_io for t in outs)  # captured: host buffers
            want = harness._outputs(module(z.cuda()))
            for got, ref in zip(outs, want):
                torch.testing.assert_close(got.cpu(), ref.cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_benchmark_with_captured_copies(tmp_path, monkeypatch):
    """The batch-1 rows with the copies captured pass the error check and are timed."""
    monkeypatch.setattr(harness, "CAPTURE_IO", True)
    specs = [DecoderSpec("tiny", TwoOutputs(latent_size=6, num_vertices=10).cuda().eval(), latent_size=6)]
    payload = run_benchmark(specs, options(tmp_path, device=torch.device("cuda"), modes=("eager", "cudagraph"),
                                           batch_sizes=(1,)))
    rows = {row["mode"]: row for row in payload["rows"]}
    assert payload["options"]["capture_io"] is True
    assert rows["cudagraph"]["status"] == "ok" and rows["cudagraph"]["meshes_per_s"] > 0, rows
    assert rows["cudagraph"]["max_error"] <= rows["cudagraph"]["tolerance"]


def test_git_commit_override_names_a_copied_tree(monkeypatch):
    """A benchmark machine that receives files only records the commit it is told; junk is ignored."""
    from mesh_decoder.bench import report

    sha = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("MESH_DECODER_GIT_COMMIT", sha)
    assert report.git_commit() == sha
    monkeypatch.setenv("MESH_DECODER_GIT_COMMIT", "not-a-commit")
    assert report.git_commit() != "not-a-commit"


def test_results_record_the_fast_path_switches(tmp_path, monkeypatch):
    """A variant run (a switch set before the harness starts) says so in its result file."""
    from mesh_decoder.nn import cheb_conv

    monkeypatch.setattr(cheb_conv, "BAG_ON_CUDA", True)
    specs = [DecoderSpec("tiny", TinyDecoder().eval(), latent_size=6)]
    run_benchmark(specs, options(tmp_path, batch_sizes=(1,)))
    saved = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json")]
    assert len(saved) == 1
    switches = saved[0]["options"]["switches"]
    assert switches["cheb_conv.BAG_ON_CUDA"] is True
    assert switches["spiral_conv.LATENCY_ROWS"] == 0 and switches["spiral_conv.GATHER_PROJECT_ROWS"] == 0


@pytest.fixture(scope="module")
def earlier_run(tmp_path_factory):
    """The result files of one small run, ``{name: bytes}``: written once, copied into each test's folder."""
    folder = tmp_path_factory.mktemp("earlier_run")
    run_benchmark([DecoderSpec("tiny", TinyDecoder(), 6)], options(folder, plot=False, batch_sizes=(2,)))
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    stem = f"decode_{report.machine_slug('cpu', 1)}"
    assert {f"{stem}.json", f"{stem}.csv"} <= set(files)
    return files


def _results_of_an_earlier_run(folder, earlier_run):
    """Put the earlier run's result files into ``folder``; return a reader of every file there."""
    for name, data in earlier_run.items():
        (folder / name).write_bytes(data)

    def contents():
        return {p.name: p.read_bytes() for p in folder.iterdir()}

    assert contents() == earlier_run
    return contents


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"batch_sizes": (0,)}, ValueError, "batch_sizes: expected an integer >= 1, got 0"),
        ({"batch_sizes": (-3,)}, ValueError, "batch_sizes: expected an integer >= 1, got -3"),
        ({"batch_sizes": (2.5,)}, TypeError, "batch_sizes: expected an integer, got 2.5"),
        ({"batch_sizes": ()}, ValueError, "batch_sizes: expected at least one value, got none"),
        ({"dtypes": ()}, ValueError, "dtypes: expected at least one value, got none"),
        ({"modes": ()}, ValueError, "modes: expected at least one value, got none"),
        ({"threads": 0}, ValueError, "threads: expected an integer >= 1, got 0"),
        ({"min_repeats": 0}, ValueError, "min_repeats: expected an integer >= 1, got 0"),
        ({"warmup": -1}, ValueError, "warmup: expected an integer >= 0, got -1"),
        ({"memory": "some"}, ValueError, r"memory: expected one of \['all', 'auto', 'eager', 'off'\], got 'some'"),
        ({"time_budget_s": math.nan}, ValueError, "time_budget_s: expected a finite number of seconds >= 0, got nan"),
    ],
)
def test_options_the_run_cannot_use_are_refused_before_any_work(change, error, message, tmp_path, earlier_run):
    """batch 0 divided by zero after the timing, threads=0 failed in torch, an unknown memory
    mode probed every row, and an empty batch/dtype/mode list replaced the earlier run's result
    files with empty ones (or failed with an IndexError)."""
    contents = _results_of_an_earlier_run(tmp_path, earlier_run)
    tiny = TinyDecoder()
    with pytest.raises(error, match=message):
        run_benchmark([DecoderSpec("tiny", tiny, 6)], options(tmp_path, plot=False, **change))
    assert tiny.calls == 0
    assert contents() == earlier_run


def test_a_run_with_nothing_to_run_keeps_the_earlier_files(tmp_path, earlier_run):
    """No decoder, or no requested mode that a decoder runs in: an error, not an empty result file."""
    contents = _results_of_an_earlier_run(tmp_path, earlier_run)
    with pytest.raises(ValueError, match="decoders: expected at least one DecoderSpec, got none"):
        run_benchmark([], options(tmp_path, plot=False))
    only_onnx = DecoderSpec("tiny", TinyDecoder(), 6, modes=("onnx",))
    with pytest.raises(ValueError, match=r"modes: expected one that some decoder runs in, got \['eager'\]"):
        run_benchmark([only_onnx], options(tmp_path, plot=False))
    assert contents() == earlier_run


def test_latency_spread_of_too_few_samples_is_unknown_not_zero(tmp_path):
    """With 2 or 3 samples the row said latency_iqr_ms 0.0 (no spread at all); it is unknown."""
    few = run_benchmark([DecoderSpec("tiny", TinyDecoder(), 6)],
                        options(None, output_dir=None, batch_sizes=(2,), min_repeats=3, max_repeats=3))
    row = few["rows"][0]
    assert row["repeats"] == 3 and row["latency_iqr_ms"] is None
    many = run_benchmark([DecoderSpec("tiny", TinyDecoder(), 6)],
                         options(None, output_dir=None, batch_sizes=(2,), min_repeats=5, max_repeats=5))
    row = many["rows"][0]
    assert row["repeats"] == 5 and row["latency_iqr_ms"] >= 0


@pytest.mark.parametrize("batch, error, message", [(0, ValueError, "batch: expected an integer >= 1, got 0"),
                                                   (2.5, TypeError, "batch: expected an integer, got 2.5")])
def test_scaling_refuses_a_bad_batch_before_building(batch, error, message):
    """batch=0 failed after building the template with 'latent: expected shape (1, Z)'."""
    with pytest.raises(error, match=message):
        harness.run_scaling((1000,), batch=batch, threads=1, output_dir=None, progress=False, plot=False)


def test_errors_about_the_users_mesh_name_the_file(tmp_path, capsys):
    """A template the preset cannot decimate failed with a message that named neither the option nor the file."""
    path = tmp_path / "small.obj"
    rows, cols = 6, 6
    lines = [f"v {c * 10.0} {r * 10.0} {((r * 7 + c * 3) % 5) * 0.7}" for r in range(rows) for c in range(cols)]
    for r in range(rows - 1):
        for c in range(cols - 1):
            a = r * cols + c + 1
            lines += [f"f {a} {a + 1} {a + cols + 1}", f"f {a} {a + cols + 1} {a + cols}"]
    path.write_text("\n".join(lines) + "\n")
    argv = ["--template", str(path), "--quick", "--memory", "off", "--output-dir", str(tmp_path / "out")]
    assert harness.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --template {path}: factors (4, 4, 4, 4)") and err.count("\n") == 1, err


def test_a_run_without_progress_never_imports_tqdm(tmp_path, monkeypatch):
    """--no-progress imported tqdm.auto all the same, which in a notebook without ipywidgets prints an
    'IProgress not found' warning into the notebook (04_throughput runs the bench with --no-progress)."""
    import sys

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # importing it now raises ImportError
    spec = DecoderSpec(name="tiny", module=TinyDecoder(), latent_size=6)
    payload = run_benchmark([spec], options(tmp_path, progress=False, batch_sizes=(1,), plot=False))
    assert [row["status"] for row in payload["rows"]] == ["ok"]
    with pytest.raises(ImportError, match="tqdm.auto"):  # with a bar, the import happens
        run_benchmark([spec], options(tmp_path, progress=True, batch_sizes=(1,), plot=False))


# ------------------------------------------------- bad input: one line, before any work
def test_python_m_harness_reports_out_of_memory_in_one_line(monkeypatch, capsys, tmp_path):
    """``python -m mesh_decoder.bench.harness --batch-sizes 1000000000`` ended in a RuntimeError traceback
    (``mesh-decoder bench`` printed one line): the two entries now share the command's error handling."""
    batch = int(torch.randint(10**8, 10**9, (1,), generator=torch.Generator().manual_seed(5)))

    def allocate(*args, **kwargs):
        raise RuntimeError(f"DefaultCPUAllocator: can't allocate memory: you tried to allocate {64 * batch} bytes.")

    monkeypatch.setattr(harness, "_load_inputs", allocate)
    argv = ["--device", "cpu", "--batch-sizes", str(batch), "--output-dir", str(tmp_path)]
    assert harness.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (") and str(64 * batch) in err and err.count("\n") == 1, err


def test_threads_and_seed_beyond_their_range_are_refused(no_run, capsys, tmp_path):
    """--threads 100000 crashed torch (segmentation fault) and --seed 99999999999999999999 failed with
    'Overflow when unpacking long long', naming neither option."""
    import os

    rng = torch.Generator().manual_seed(7)
    cpus = os.cpu_count() or 1
    threads = cpus + int(torch.randint(1, 10**5, (1,), generator=rng))
    seed = harness.MAX_SEED + int(torch.randint(1, 10**9, (1,), generator=rng)) * 10**12
    for argv, message, code in (
        (["--threads", str(threads)], f"error: mesh-decoder bench: --threads: expected an integer in [1, {cpus}] "
                                      f"(the CPUs of this machine), got {threads}\n", 2),  # as --threads 0
        (["--seed", str(seed)], f"error: mesh-decoder bench: argument --seed: expected an integer in "
                                f"[0, {harness.MAX_SEED}], got '{seed}'\n", 2),  # as template and render say it
    ):
        assert harness.main(["--device", "cpu", *argv, "--output-dir", str(tmp_path)]) == code
        assert capsys.readouterr().err == message


@pytest.mark.parametrize("option", ["--template", "--hierarchy", "--output-dir"])
def test_an_empty_path_is_refused(option, no_run, capsys, tmp_path, monkeypatch):
    """``--template ''`` and ``--hierarchy ''`` ran the built-in face as if not given; ``--output-dir ''``
    wrote the result files into the working folder."""
    monkeypatch.chdir(tmp_path)
    argv = ["--device", "cpu", option, ""] + (["--output-dir", str(tmp_path / "out")] if option != "--output-dir" else [])
    assert harness.main(argv) == 2
    name = "-o/--output-dir" if option == "--output-dir" else option
    assert capsys.readouterr().err == f"error: mesh-decoder bench: {name}: expected a path, got ''\n"
    assert list(tmp_path.iterdir()) == []


def test_a_texture_size_beyond_the_largest_names_the_option(no_run, capsys, tmp_path):
    """--texture-size 100000 failed in build_hierarchy with 'texture_size: expected at most 8192 texels per side',
    and with --vertices given, blamed that: '--vertices 1000: texture_size: ...'."""
    from mesh_decoder.hierarchy.build import MAX_TEXTURE_SIZE

    size = MAX_TEXTURE_SIZE + int(torch.randint(1, 10**5, (1,), generator=torch.Generator().manual_seed(9)))
    for extra in ([], ["--vertices", "1000"]):
        assert harness.main(["--device", "cpu", "--texture-size", str(size), *extra, "--output-dir", str(tmp_path)]) == 2
        assert capsys.readouterr().err == (f"error: mesh-decoder bench: argument --texture-size: expected an integer "
                                           f"in [0, {MAX_TEXTURE_SIZE}], got '{size}'\n")  # as the hierarchy command
    assert list(tmp_path.iterdir()) == []


def test_a_vertex_count_the_preset_cannot_use_names_the_option(capsys, tmp_path):
    """--vertices 700 passed the argument check, then failed with a message about factors that named
    no option; --vertices 1 named 'num_vertices', an argument of a function, and exited 1, not the usage
    status 2 that template --vertices gives."""
    n = int(torch.randint(600, 760, (1,), generator=torch.Generator().manual_seed(3)))
    argv = ["--device", "cpu", "--vertices", str(n), "--decoders", "pca", "--texture-size", "0",
            "--output-dir", str(tmp_path)]
    assert harness.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --vertices {n}: factors (4, 4, 4, 4) leave") and err.count("\n") == 1, err
    for vertices in (1, 499, 100001):
        assert harness.main([*argv[:2], "--vertices", str(vertices), *argv[4:]]) == 2
        assert capsys.readouterr().err.endswith(f"argument --vertices: expected an integer in [500, 100000], got "
                                                f"'{vertices}'\n")
    assert list(tmp_path.iterdir()) == []


def test_a_hierarchy_that_is_a_folder_is_not_called_missing(capsys, tmp_path):
    """--hierarchy FOLDER said 'no such hierarchy file' of a path that exists."""
    folder = tmp_path / "h.npz"
    folder.mkdir()
    assert harness.main(["--device", "cpu", "--hierarchy", str(folder), "--output-dir", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"error: {folder}: not a regular file\n"


@pytest.mark.parametrize("device", ["cpu:1", "mps", "tpu", "cuda:x"])
def test_a_device_the_harness_cannot_time_on_is_refused(tmp_path, capsys, device):
    """--device cpu:1 was accepted and recorded as device 'cpu:1'; --device tpu answered 'expected cpu, cuda,
    cuda:N or mps' (no auto, and mps, which the harness refuses), where --help said 'auto (CUDA when present),
    cpu, cuda, cuda:N'. The error and the help list the same values."""
    assert harness.main(["--device", device, "--quick", "--output-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: mesh-decoder bench: --device: expected auto, cpu, cuda or cuda:N, got {device!r}\n"
    assert list(tmp_path.iterdir()) == []
    parser = harness.add_bench_arguments(argparse.ArgumentParser())
    (action,) = [a for a in parser._actions if a.dest == "device"]
    assert action.help.startswith("auto, cpu, cuda or cuda:N (default auto: ")


# ------------------------------------------------------------ what a run says it did
def _stale_plot(path, seed):
    """An earlier run's plot at ``path``: random bytes after the PNG signature."""
    data = torch.randint(0, 256, (64,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(data.tolist()))


def test_the_files_listed_are_the_ones_the_run_wrote(tmp_path, capsys):
    """A run with --no-plot in a folder holding an earlier run's PNG said 'wrote ....json, ....csv, ....png':
    it listed every result file that existed. The earlier plot, which beside the new results showed another
    run, is removed at the run's first write (and said so); a run ended before that write keeps it."""
    stem = tmp_path / f"decode_{report.machine_slug('cpu', 1)}"
    png = stem.with_suffix(".png")
    _stale_plot(png, seed=11)
    earlier = png.read_bytes()
    with pytest.raises(KeyboardInterrupt):  # before the first write: every earlier file stays
        run_benchmark([DecoderSpec("tiny", TinyDecoder(fail_at_batch=1), 6)], options(tmp_path, plot=False))
    assert png.read_bytes() == earlier
    capsys.readouterr()
    run_benchmark([DecoderSpec("tiny", TinyDecoder(seed=2), 6)], options(tmp_path, plot=False, print_table=True))
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == f"wrote {stem}.json, {stem}.csv; removed {png}, an earlier run's plot"
    assert not png.exists() and sorted(p.name for p in tmp_path.iterdir()) == [f"{stem.name}.csv", f"{stem.name}.json"]
    run_benchmark([DecoderSpec("tiny", TinyDecoder(seed=2), 6)], options(tmp_path, plot=True, print_table=True))
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {stem}.json, {stem}.csv, {png}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.read_bytes() != earlier


def test_a_scaling_run_without_a_plot_removes_the_earlier_plot(tmp_path, capsys):
    """--scaling --no-plot left an earlier run's scaling plot beside its new JSON and CSV."""
    stem = tmp_path / f"scaling_{report.machine_slug('cpu', 1)}"
    _stale_plot(stem.with_suffix(".png"), seed=12)
    harness.run_scaling((1000,), batch=2, threads=1, output_dir=str(tmp_path), budget_s=0.05, progress=False,
                        plot=False, seed=5)
    assert not stem.with_suffix(".png").exists()
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote {stem}.json, {stem}.csv; removed {stem}.png, an earlier run's plot")


def test_ctrl_c_prints_the_table_of_the_finished_rows_before_the_file_names(tmp_path, monkeypatch):
    """After Ctrl-C only the file names were printed, not the finished configurations' table."""
    both = io.StringIO()  # stdout and stderr in the order they were written
    monkeypatch.setattr("sys.stdout", both)
    monkeypatch.setattr("sys.stderr", both)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark([DecoderSpec("tiny", TinyDecoder(seed=4, fail_at_batch=4), 6)],
                      options(tmp_path, plot=False, print_table=True))
    text = both.getvalue()
    data, _ = _written(tmp_path)
    (row,) = data["rows"]
    assert (row["batch"], row["status"]) == (1, "ok") and row["meshes_per_s"] > 0
    table = report.format_table([row])
    assert table in text
    stem = tmp_path / f"decode_{report.machine_slug('cpu', 1)}"
    names = f"interrupted: wrote the 1 finished configurations to {stem}.json and {stem}.csv"
    assert names in text and text.index(table) < text.index(names)


# --------------------------------------------------------- options a saved hierarchy decides
@pytest.fixture(scope="module")
def saved_hierarchies(tmp_path_factory):
    """Two saved hierarchies of a small face: ``fits`` the presets (factors 4 4 4 4) with a random texture
    size, ``short`` has factors 4 4 4; ``(paths, texture size)``."""
    from mesh_decoder.hierarchy import build_hierarchy, save_hierarchy
    from mesh_decoder.mesh.templates import face_template

    gen = torch.Generator().manual_seed(21)
    size = int(torch.randint(8, 33, (1,), generator=gen))
    template = face_template(int(torch.randint(1000, 1200, (1,), generator=gen)), seed=1)
    folder = tmp_path_factory.mktemp("hierarchies")
    paths = {"fits": folder / "fits.npz", "short": folder / "short.npz"}
    save_hierarchy(build_hierarchy(template, factors=(4, 4, 4, 4), spiral_lengths=9, texture_size=size), paths["fits"])
    save_hierarchy(build_hierarchy(template, factors=(4, 4, 4), spiral_lengths=9, texture_size=size), paths["short"])
    return paths, size


def test_a_texture_size_the_hierarchy_has_not_is_refused(saved_hierarchies, monkeypatch, capsys, tmp_path):
    """--texture-size N with --hierarchy was ignored without a word (the files showed the hierarchy's size)."""
    paths, size = saved_hierarchies
    other = size + int(torch.randint(1, 50, (1,), generator=torch.Generator().manual_seed(22)))
    runs = []
    monkeypatch.setattr(harness, "run_benchmark", lambda specs, options: runs.append((specs, options)) or {"rows": []})
    argv = ["--device", "cpu", "--hierarchy", str(paths["fits"]), "--decoders", "joint", "--output-dir", str(tmp_path)]
    assert harness.main([*argv, "--texture-size", str(other)]) == 1
    assert capsys.readouterr().err == (
        f"error: --texture-size {other}: expected {size} (the {size}x{size} texel map of --hierarchy {paths['fits']}) "
        f"or none, got {other}; the texel map comes with the hierarchy: build one with mesh-decoder hierarchy MESH "
        f"--texture-size {other}\n")
    assert runs == []
    for given in ([], ["--texture-size", str(size)]):  # the hierarchy's own size, or none: the run goes on
        assert harness.main([*argv, *given]) == 0
        (spec,), opts = runs.pop()
        assert spec.description.endswith(f", {size}x{size} texture")
        assert opts.context["texture_size"] == [size, size]


def test_joint_on_a_hierarchy_without_a_texel_map_names_the_file_and_the_command(tmp_path, capsys):
    """'--decoders joint: the hierarchy has no texel map' named neither the file nor how to build one."""
    from mesh_decoder.hierarchy import build_hierarchy, save_hierarchy
    from mesh_decoder.mesh.templates import face_template

    path = tmp_path / "plain.npz"
    vertices = int(torch.randint(1000, 1200, (1,)))
    save_hierarchy(build_hierarchy(face_template(vertices), factors=(4, 4, 4, 4), texture_size=None), path)
    assert harness.main(["--device", "cpu", "--hierarchy", str(path), "--decoders", "joint", "--output-dir",
                         str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == (
        f"error: --decoders joint: expected a hierarchy with a texel map (the texture's layout), --hierarchy {path} "
        f"has none; build one with mesh-decoder hierarchy MESH --texture-size 256\n")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("decoder, label", [
    ("spiralnet++-coma", "spiralnet++-coma"), ("coma", "coma"),
    ("joint", "joint (built on the spiralnet++-coma preset)"),
    ("reference", "reference (built on the spiralnet++-coma preset)"),
])
def test_a_hierarchy_that_does_not_fit_names_the_decoder_and_the_command(decoder, label, saved_hierarchies, capsys,
                                                                          tmp_path):
    """The CLI suggested Python ('build it with build_hierarchy(mesh, **preset_hierarchy_params(...))'), and for
    joint and reference named preset 'spiralnet++-coma' as if it had been asked for."""
    from mesh_decoder.cli import build_parser
    from mesh_decoder.nn.presets import preset_hierarchy_params

    paths, _ = saved_hierarchies
    argv = ["--device", "cpu", "--hierarchy", str(paths["short"]), "--decoders", "pca", decoder,
            "--output-dir", str(tmp_path / "out")]
    assert harness.main(argv) == 1
    err = capsys.readouterr().err
    preset = harness.PRESET_OF[decoder]
    spiral = preset != "coma"
    command = "mesh-decoder hierarchy MESH --factors 4 4 4 4" + (" --spiral-length 9" if spiral else "") + \
        " -o HIERARCHY.npz"
    assert err == (f"error: --hierarchy {paths['short']}: decoder {label}: expected a hierarchy with factors "
                   f"(4, 4, 4, 4){' and spirals of at least 9' if spiral else ''}, got one built with factors "
                   f"(4, 4, 4); build one with: {command}\n")
    # the command builds what the preset needs
    args = build_parser().parse_args(command.split()[1:])
    params = preset_hierarchy_params(preset)
    assert tuple(args.factors) == tuple(params["factors"]) and args.output == "HIERARCHY.npz"
    if spiral:
        assert args.spiral_length == [params["spiral_lengths"]]
    assert not (tmp_path / "out").exists()


def test_the_python_api_names_the_decoder_built_on_a_preset(saved_hierarchies):
    """build_decoder('joint' or 'reference') on a hierarchy that does not fit named only preset 'spiralnet++-coma'."""
    from mesh_decoder.errors import HierarchyError
    from mesh_decoder.hierarchy.storage import load_hierarchy

    paths, _ = saved_hierarchies
    h = load_hierarchy(str(paths["short"]))
    for name in ("joint", "reference"):
        with pytest.raises(HierarchyError, match=rf"^decoder {name} \(built on the spiralnet\+\+-coma preset\): "
                                                 r"hierarchy: preset 'spiralnet\+\+-coma' expects factors"):
            harness.build_decoder(name, h)
        with pytest.raises(HierarchyError, match=rf"^decoder {name} \(built on the spiralnet\+\+-coma preset\): "):
            harness.default_specs([name], h)


# ------------------------------------------------------------------- the progress bar
@pytest.mark.parametrize("terminal, no_progress, shown", [
    (True, False, True), (True, True, False), (False, False, False), (False, True, False)])
def test_the_progress_bar_is_shown_on_a_terminal_only(terminal, no_progress, shown, monkeypatch):
    """The bar wrote '\\r' and escape sequences into redirected logs: by default it is shown only when stderr
    is a terminal; --no-progress turns it off there too."""

    class Stream(io.StringIO):
        def isatty(self):
            return terminal

    monkeypatch.setattr("sys.stderr", Stream())
    parser = harness.add_bench_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--device", "cpu", "--quick"] + (["--no-progress"] if no_progress else []))
    assert harness.options_from_args(args).progress is shown


def test_a_run_that_timed_nothing_exits_non_zero(tmp_path, capsys, monkeypatch):
    """--modes onnx without the onnx package ended with every row an error, and exit status 0."""

    def broken(*args, **kwargs):
        raise RuntimeError("ONNX export/runtime needs the 'onnx' package")

    monkeypatch.setattr(harness, "_runner", broken)
    argv = ["--quick", "--vertices", "1000", "--decoders", "pca", "--modes", "eager", "--batch-sizes", "1",
            "--threads", "1", "--memory", "off", "--time-budget", "0.1", "--no-progress", "--no-plot",
            "--output-dir", str(tmp_path)]
    assert harness.main(argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == ("error: no configuration was timed: all 1 rows ended ['error'] (the first: pca eager: "
                    "RuntimeError: ONNX export/runtime needs the 'onnx' package)"), last
    assert list(tmp_path.glob("decode_*.json"))  # the rows and their errors are still written


def test_an_installed_copy_records_no_commit_of_the_users_repository(tmp_path, monkeypatch):
    """Installed in a user's project (its .venv inside the user's git repository), the results recorded the
    user's commit as the library's."""
    import subprocess

    monkeypatch.delenv("MESH_DECODER_GIT_COMMIT", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    git = ["git", "-C", str(project), "-c", "user.name=u", "-c", "user.email=u@e"]
    if subprocess.run([*git, "init", "-q"]).returncode != 0:
        pytest.skip("git is not available")
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "mine"], check=True)
    installed = project / ".venv" / "lib" / "site-packages" / "mesh_decoder" / "bench"
    installed.mkdir(parents=True)
    monkeypatch.setattr(report, "__file__", str(installed / "report.py"))
    assert report.git_commit() is None
    assert report.git_commit(project) is not None  # a path given is that repository's


def test_without_the_repository_the_default_run_leaves_the_reference_out(tmp_path, monkeypatch, capsys):
    """From an installed wheel (no benchmarks/ beside the package) the default `mesh-decoder bench` failed;
    and a `benchmarks` package of the user's own was imported in its place."""
    missing = tmp_path / "no-checkout" / "benchmarks" / "reference" / "decoder.py"
    monkeypatch.setattr(harness, "reference_path", lambda: missing)
    monkeypatch.delitem(sys.modules, "mesh_decoder_bench_reference", raising=False)
    theirs = tmp_path / "their_project" / "benchmarks" / "reference"
    theirs.mkdir(parents=True)
    for folder in (theirs.parent, theirs):
        (folder / "__init__.py").write_text("")
    (theirs / "decoder.py").write_text("raise RuntimeError('their code ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path / "their_project"))
    with pytest.raises(ImportError, match=r"the reference decoder is part of the repository, not of the installed "
                                          r"package .*leave 'reference' out of --decoders"):
        harness.load_reference_module()
    ran = []
    monkeypatch.setattr(harness, "run_benchmark", lambda specs, options: ran.append([s.name for s in specs]) or
                        {"rows": []})
    assert harness.main(["--quick", "--vertices", "1000", "--texture-size", "0", "--output-dir", str(tmp_path),
                         "--no-progress", "--no-plot"]) == 0
    assert ran and "reference" not in ran[0] and "spiralnet++-coma" in ran[0]
    assert "warning: no reference decoder here" in capsys.readouterr().err
