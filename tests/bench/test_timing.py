"""Timing utilities: warm-up excluded, medians, budgets, interleaving (with a fake clock)."""

import statistics

import pytest
import torch

from mesh_decoder.bench.timing import TimingResult, calibrate_number, synchronize, time_fn, time_interleaved


class FakeClock:
    """A clock that only moves when a fake workload says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def workload(clock, durations, log=None, name=None):
    """A callable whose i-th call takes durations[i] fake seconds."""
    state = {"calls": 0}

    def fn():
        i = state["calls"]
        clock.now += durations[i] if i < len(durations) else durations[-1]
        state["calls"] += 1
        if log is not None:
            log.append(name)

    return fn, state


def test_warmup_calls_are_excluded_and_median_is_taken():
    clock = FakeClock()
    # two slow warm-up calls (compilation, caches), then the steady state
    durations = [100.0, 50.0, 0.3, 0.1, 0.2, 0.5, 0.4]
    fn, state = workload(clock, durations)
    res = time_fn(fn, warmup=2, min_repeats=5, max_repeats=5, budget_s=0.0, clock=clock)
    assert state["calls"] == 7
    assert res.warmup == 2
    assert res.times_s == pytest.approx([0.3, 0.1, 0.2, 0.5, 0.4])
    assert res.median_s == pytest.approx(0.3)
    assert res.min_s == pytest.approx(0.1)
    assert res.median_s == pytest.approx(statistics.median(durations[2:]))


def test_budget_stops_sampling_but_min_repeats_wins():
    clock = FakeClock()
    fn, state = workload(clock, [0.125])
    res = time_fn(fn, warmup=1, min_repeats=2, max_repeats=100, budget_s=0.45, clock=clock)
    assert res.repeats == 4  # 0.125 * 4 >= 0.45 > 0.125 * 3
    assert state["calls"] == 5
    clock = FakeClock()
    fn, state = workload(clock, [10.0])  # a single call is over budget
    res = time_fn(fn, warmup=0, min_repeats=3, budget_s=1.0, clock=clock)
    assert res.repeats == 3
    assert state["calls"] == 3


def test_max_repeats_caps_sampling():
    clock = FakeClock()
    fn, _ = workload(clock, [1e-6])
    res = time_fn(fn, warmup=0, min_repeats=1, max_repeats=7, budget_s=100.0, clock=clock)
    assert res.repeats == 7


def test_number_of_calls_per_sample_averages():
    clock = FakeClock()
    fn, state = workload(clock, [1.0, 3.0, 1.0, 3.0, 1.0, 3.0])
    res = time_fn(fn, warmup=0, number=2, min_repeats=3, max_repeats=3, budget_s=0.0, clock=clock)
    assert state["calls"] == 6
    assert res.times_s == pytest.approx([2.0, 2.0, 2.0])  # per call, mean of 2 calls
    assert res.number == 2


def test_interleaved_rounds_alternate_and_are_attributed():
    clock = FakeClock()
    log = []
    a, sa = workload(clock, [0.2], log, "a")
    b, sb = workload(clock, [0.05], log, "b")
    res = time_interleaved({"a": a, "b": b}, warmup=1, min_repeats=3, max_repeats=3, budget_s=0.0, clock=clock)
    # warm-ups first (each closure once), then rounds a b a b a b
    assert log == ["a", "b"] + ["a", "b"] * 3
    assert res["a"].times_s == pytest.approx([0.2] * 3)
    assert res["b"].times_s == pytest.approx([0.05] * 3)
    assert sa["calls"] == sb["calls"] == 4


def test_interleaved_budget_is_shared():
    clock = FakeClock()
    a, _ = workload(clock, [0.125])
    b, _ = workload(clock, [0.125])
    res = time_interleaved({"a": a, "b": b}, warmup=0, min_repeats=1, max_repeats=100, budget_s=1.0, clock=clock)
    assert res["a"].repeats == res["b"].repeats == 4  # 4 rounds x 0.25 s = 1.0 s


def test_calibrate_number_reaches_min_sample():
    clock = FakeClock()
    fn, _ = workload(clock, [0.001])
    n = calibrate_number(fn, 0.01, clock=clock)
    assert n * 0.001 >= 0.01 - 1e-12
    assert n <= 20
    res = time_interleaved({"f": fn}, warmup=0, min_repeats=2, max_repeats=2, budget_s=0.0,
                           min_sample_s=0.01, clock=clock)
    assert res["f"].number == n
    assert res["f"].median_s == pytest.approx(0.001)


def test_timing_result_statistics_and_dict():
    res = TimingResult(times_s=[4.0, 1.0, 3.0, 2.0, 100.0], number=1, warmup=2)
    assert res.median_s == 3.0
    assert res.iqr_s > 0
    d = res.as_dict()
    assert d["repeats"] == 5 and d["warmup"] == 2 and d["median_s"] == 3.0
    assert TimingResult().median_s != TimingResult().median_s  # nan without samples


def test_invalid_arguments():
    with pytest.raises(ValueError, match="min_repeats"):
        time_fn(lambda: None, min_repeats=0)
    with pytest.raises(ValueError, match="min_repeats"):
        time_fn(lambda: None, min_repeats=5, max_repeats=2)
    with pytest.raises(ValueError, match="warmup"):
        time_fn(lambda: None, warmup=-1)


def test_real_clock_on_cpu_runs_the_work():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, 64, generator=gen)
    calls = []

    def fn():
        calls.append(1)
        return a @ a

    synchronize("cpu")  # a no-op on the CPU
    synchronize(None)
    res = time_fn(fn, warmup=1, min_repeats=3, max_repeats=3, budget_s=0.0, device="cpu")
    assert len(calls) == 4
    assert res.repeats == 3 and all(t > 0 for t in res.times_s)


def test_per_closure_warmups():
    clock = FakeClock()
    log = []
    a, sa = workload(clock, [0.1], log, "a")
    b, sb = workload(clock, [0.1], log, "b")
    res = time_interleaved({"a": a, "b": b}, warmup=2, warmups={"b": 0}, min_repeats=1, max_repeats=1,
                           budget_s=0.0, clock=clock)
    assert log == ["a", "a", "a", "b"]
    assert res["a"].warmup == 2 and res["b"].warmup == 0
    with pytest.raises(ValueError, match="warmups"):
        time_interleaved({"a": a}, warmups={"a": -1})


def test_deadline_cuts_rounds_but_keeps_a_floor():
    clock = FakeClock()
    a, _ = workload(clock, [1.0])
    b, _ = workload(clock, [1.0])
    # rounds take 2 s; the deadline at 5 s allows 2 rounds (a third would end at 6 s)
    res = time_interleaved({"a": a, "b": b}, warmup=0, min_repeats=5, max_repeats=10, budget_s=100.0,
                           clock=clock, deadline=5.0, deadline_min_repeats=1)
    assert res["a"].repeats == 2
    clock = FakeClock()
    a, _ = workload(clock, [1.0])
    res = time_interleaved({"a": a}, warmup=0, min_repeats=5, budget_s=100.0, clock=clock,
                           deadline=0.5, deadline_min_repeats=2)
    assert res["a"].repeats == 2  # the floor, although the deadline passed after the first
    with pytest.raises(ValueError, match="deadline_min_repeats"):
        time_interleaved({"a": a}, deadline=1.0, deadline_min_repeats=0)


@pytest.mark.parametrize("number, error", [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError)])
def test_calls_per_sample_must_be_a_positive_integer(number, error):
    """number=0 divided by zero and number=-2 gave a negative median: both are refused, naming the argument."""
    clock = FakeClock()
    fn, state = workload(clock, [0.1])
    with pytest.raises(error, match=r"number: expected an integer"):
        time_fn(fn, number=number, warmup=0, budget_s=0.0, clock=clock)
    with pytest.raises(error, match=r"numbers\['a'\]: expected an integer"):
        time_interleaved({"a": fn}, numbers={"a": number}, warmup=0, budget_s=0.0, clock=clock)
    assert state["calls"] == 0  # refused before any call
