"""Timing primitives: warm-up, adaptive repeats, medians, interleaved rounds.

Conventions (the ones PyTorch3D's and ``torch.utils.benchmark``'s timers use):

* the work to time is a closure; everything it needs is prepared beforehand,
  outside the timed region;
* warm-up calls run first and are never part of the statistics (the first
  call of a compiled function compiles, the first CUDA call loads kernels);
* every sample is synchronised on CUDA (CUDA events bracket the call), and
  only on CUDA;
* repeat counts adapt to a time budget: fast closures are repeated until the
  budget is spent, slow ones stop after ``min_repeats`` (or fewer, down to a
  floor, when a deadline would be overrun);
* the statistic reported is the median of the samples.

:func:`time_interleaved` times several closures in alternating rounds, so a
change of machine load while they run (other processes, frequency scaling)
affects all of them alike, which keeps their ratios honest on a shared machine.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from .._checks import check_int

__all__ = [
    "TimingResult",
    "synchronize",
    "time_fn",
    "time_interleaved",
    "calibrate_number",
]

Clock = Callable[[], float]


def synchronize(device: torch.device | str | None) -> None:
    """Wait for queued work on ``device``; a no-op for CPU (and ``None``)."""
    if device is None:
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class TimingResult:
    """Samples of one timed closure.

    Attributes:
        times_s: seconds per call, one entry per sample (each sample is the mean
            of ``number`` back-to-back calls).
        number: calls per sample.
        warmup: warm-up calls made before the first sample (not in ``times_s``).
    """

    times_s: list[float] = field(default_factory=list)
    number: int = 1
    warmup: int = 0

    @property
    def repeats(self) -> int:
        return len(self.times_s)

    @property
    def median_s(self) -> float:
        """Median seconds per call (``nan`` without samples)."""
        return statistics.median(self.times_s) if self.times_s else math.nan

    @property
    def min_s(self) -> float:
        return min(self.times_s) if self.times_s else math.nan

    @property
    def iqr_s(self) -> float:
        """Inter-quartile range of the samples (0 with fewer than 4 samples)."""
        if len(self.times_s) < 4:
            return 0.0
        q = statistics.quantiles(self.times_s, n=4)
        return q[2] - q[0]

    def as_dict(self) -> dict:
        return {
            "median_s": self.median_s,
            "min_s": self.min_s,
            "iqr_s": self.iqr_s,
            "repeats": self.repeats,
            "number": self.number,
            "warmup": self.warmup,
        }


class _Sampler:
    """Time ``number`` calls of ``fn``: CUDA events on a CUDA device, else a clock."""

    def __init__(self, fn: Callable[[], object], device: torch.device | None, clock: Clock):
        self.fn = fn
        self.device = device
        self.clock = clock
        self.cuda = device is not None and device.type == "cuda"

    def __call__(self, number: int) -> float:
        fn = self.fn
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            synchronize(self.device)
            start.record()
            for _ in range(number):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / number
        t0 = self.clock()
        for _ in range(number):
            fn()
        return (self.clock() - t0) / number


def calibrate_number(
    fn: Callable[[], object],
    min_sample_s: float,
    *,
    device: torch.device | str | None = None,
    clock: Clock = time.perf_counter,
    max_number: int = 1000,
) -> int:
    """Calls per sample so that one sample lasts at least ``min_sample_s``.

    Like :meth:`timeit.Timer.autorange`: doubles the count from 1 until a sample
    is long enough (the closure should already be warm).
    """
    if min_sample_s <= 0:
        return 1
    dev = None if device is None else torch.device(device)
    sampler = _Sampler(fn, dev, clock)
    number = 1
    while number < max_number:
        per_call = sampler(number)
        if per_call * number >= min_sample_s:
            break
        if per_call <= 0:
            number *= 10
        else:  # jump close to the target, at most 10x at a time
            number = min(max_number, number * 10, max(number * 2, math.ceil(min_sample_s / per_call)))
    return min(number, max_number)


def time_fn(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    min_repeats: int = 3,
    max_repeats: int = 50,
    budget_s: float = 1.0,
    number: int = 1,
    device: torch.device | str | None = None,
    clock: Clock = time.perf_counter,
) -> TimingResult:
    """Time one closure: ``warmup`` calls, then samples until the budget is spent.

    Args:
        fn: the work, with all setup done beforehand.
        warmup: untimed calls first (default 2).
        min_repeats: at least this many samples, whatever the budget (default 3).
        max_repeats: at most this many samples (default 50).
        budget_s: stop sampling once this many seconds of samples are spent and
            ``min_repeats`` are reached (default 1.0).
        number: calls per sample, an integer >= 1 (default 1).
        device: CUDA device to synchronise on / time with events; CPU or ``None``
            uses ``clock``.
        clock: wall clock for CPU samples (default :func:`time.perf_counter`);
            injectable for tests.

    Returns:
        :class:`TimingResult` whose :attr:`~TimingResult.median_s` is the statistic.
    """
    check_int(number, "number", 1)
    return time_interleaved(
        {"fn": fn},
        warmup=warmup,
        min_repeats=min_repeats,
        max_repeats=max_repeats,
        budget_s=budget_s,
        numbers={"fn": number},
        device=device,
        clock=clock,
    )["fn"]


def time_interleaved(
    fns: Mapping[str, Callable[[], object]],
    *,
    warmup: int = 2,
    min_repeats: int = 3,
    max_repeats: int = 50,
    budget_s: float = 2.0,
    numbers: Mapping[str, int] | None = None,
    warmups: Mapping[str, int] | None = None,
    min_sample_s: float = 0.0,
    device: torch.device | str | None = None,
    clock: Clock = time.perf_counter,
    on_round: Callable[[int], None] | None = None,
    deadline: float | None = None,
    deadline_min_repeats: int = 2,
) -> dict[str, TimingResult]:
    """Time several closures in alternating rounds (A B C A B C ...).

    Each closure is warmed up (``warmup`` calls, untimed), then each round takes
    one sample of every closure in turn. Rounds continue until every closure has
    ``min_repeats`` samples and the samples spent ``budget_s`` seconds in total,
    or until ``max_repeats`` rounds.

    Args:
        fns: name -> closure.
        warmup: untimed calls per closure before the first round (default 2).
        min_repeats: samples per closure at least (default 3).
        max_repeats: rounds at most (default 50).
        budget_s: seconds of sampling for the whole group (default 2.0).
        numbers: calls per sample for some closures, integers >= 1 (default 1).
        warmups: warm-up calls for some closures, overriding ``warmup`` (e.g. 0
            for a slow closure that the caller has already run once).
        min_sample_s: if positive, closures not in ``numbers`` get a number of
            calls per sample calibrated so a sample lasts this long (after warm-up).
        device: CUDA device (events + synchronisation) or CPU/``None``.
        clock: wall clock for CPU samples; injectable for tests.
        on_round: called with the round index after every round (progress bars).
        deadline: a ``clock()`` value; once ``deadline_min_repeats`` rounds are done,
            no round starts that would end past it (by the last round's duration),
            even below ``min_repeats``: how a run keeps to a time box.
        deadline_min_repeats: rounds taken whatever the deadline (default 2).

    Returns:
        name -> :class:`TimingResult`.
    """
    if not fns:
        return {}
    if min_repeats < 1 or max_repeats < min_repeats:
        raise ValueError(
            f"need 1 <= min_repeats <= max_repeats, got min_repeats={min_repeats}, max_repeats={max_repeats}"
        )
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if deadline_min_repeats < 1:
        raise ValueError(f"deadline_min_repeats must be >= 1, got {deadline_min_repeats}")
    dev = None if device is None else torch.device(device)
    samplers = {name: _Sampler(fn, dev, clock) for name, fn in fns.items()}
    numbers = dict(numbers or {})
    results: dict[str, TimingResult] = {}
    warmups = dict(warmups or {})
    for name, n in warmups.items():
        if n < 0:
            raise ValueError(f"warmups[{name!r}] must be >= 0, got {n}")
    for name, n in numbers.items():
        check_int(n, f"numbers[{name!r}]", 1)
    for name, fn in fns.items():
        for _ in range(warmups.get(name, warmup)):
            fn()
        synchronize(dev)
        if name not in numbers:
            numbers[name] = (
                calibrate_number(fn, min_sample_s, device=dev, clock=clock) if min_sample_s > 0 else 1
            )
        results[name] = TimingResult(number=int(numbers[name]), warmup=warmups.get(name, warmup))
    spent = 0.0
    for round_index in range(max_repeats):
        round_start = clock()
        for name, sampler in samplers.items():
            result = results[name]
            t = sampler(result.number)
            result.times_s.append(t)
            spent += t * result.number
        if on_round is not None:
            on_round(round_index)
        rounds = round_index + 1
        if rounds >= min_repeats and spent >= budget_s:
            break
        if deadline is not None and rounds >= deadline_min_repeats:
            now = clock()
            if now + (now - round_start) > deadline:  # the next round would end past the deadline
                break
    return results
