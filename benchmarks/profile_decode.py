"""Where one decode's time goes: its kernels, how many, and the idle gaps between them.

The decode benchmark gives one latency per configuration. This script profiles the
same call (at batch 1 the harness's own closure: the latent copied in from
page-locked memory, the outputs copied out, synchronised) with ``torch.profiler``
and reports, per decode:

- ``wall_us``: host time of the call, the median over the repeats;
- ``gpu_span_us`` (CUDA): device time from the call's start to the end of its last
  work, between CUDA events recorded around it, the median;
- ``busy_us``: the summed durations of the device activities (kernels and copies;
  on the CPU, the operators' self time) divided by the repeats;
- ``activities``: device activities per decode (on the CPU, operator calls);
- a table of the activities by total time.

``gpu_span_us - busy_us`` is time the device sat idle inside a decode (launch gaps,
which a CUDA graph replay shortens); ``wall_us - gpu_span_us`` is host time around
it (the replay call, the synchronisation).

Usage::

    python benchmarks/profile_decode.py HIERARCHY.npz -o out/profile --device cuda \\
        --decoders spiralnet++-coma joint --dtypes fp32 fp16 --modes eager cudagraph

writes ``profile_<machine>.json`` (``--file-prefix`` changes ``profile``), again after
each configuration (a run stopped by a time limit keeps the ones it finished), and
prints the summary. The hierarchy file is one ``mesh-decoder hierarchy`` saved (the presets'
factors 4 4 4 4; a texture size for the joint decoder).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.profiler import ProfilerActivity, profile

from mesh_decoder._checks import check_output_path, int_argument
from mesh_decoder.bench import harness
from mesh_decoder.bench.report import environment, machine_slug, script_main, write_json
from mesh_decoder.bench.roofline import DTYPES, precision
from mesh_decoder.bench.timing import synchronize
from mesh_decoder.hierarchy.storage import load_hierarchy

#: Activities kept in each configuration's table (by total time).
TOP = 25
PROFILED_MODES = ("eager", "cudagraph")


def _device_events(prof, cuda: bool) -> list[tuple[str, float]]:
    """``(name, microseconds)`` of each device activity (CUDA) or each operator's self time (CPU)."""
    if cuda:
        return [(e.name, e.time_range.elapsed_us()) for e in prof.events()
                if e.device_type == torch.autograd.DeviceType.CUDA]
    return [(e.name, e.self_cpu_time_total) for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU]


def _table(events: list[tuple[str, float]], repeats: int) -> list[dict[str, Any]]:
    count: dict[str, int] = defaultdict(int)
    total: dict[str, float] = defaultdict(float)
    for name, us in events:
        count[name] += 1
        total[name] += us
    names = sorted(total, key=total.__getitem__, reverse=True)[:TOP]
    return [{"name": n, "per_decode": count[n] / repeats, "us_per_decode": total[n] / repeats} for n in names]


def profile_call(call, device: torch.device, repeats: int) -> dict[str, Any]:
    """Profile ``repeats`` calls of ``call`` (warmed up before) on ``device``; the summary above."""
    cuda = device.type == "cuda"
    for _ in range(3):
        call()
    synchronize(device)
    walls: list[float] = []
    spans: list[float] = []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            t0 = time.perf_counter()
            call()  # synchronises at batch 1 (the harness's closure)
            if cuda:
                end.record()
            synchronize(device)
            walls.append((time.perf_counter() - t0) * 1e6)
            if cuda:
                spans.append(start.elapsed_time(end) * 1e3)
    events = _device_events(prof, cuda)
    return {
        "repeats": repeats,
        "wall_us": statistics.median(walls),
        "gpu_span_us": statistics.median(spans) if spans else None,
        "busy_us": sum(us for _, us in events) / repeats,
        "activities": len(events) / repeats,
        "table": _table(events, repeats),
    }


def run(hierarchy_path: str, device: torch.device, decoders, dtypes, modes, batch: int, repeats: int,
        seed: int = 0) -> Iterator[dict[str, Any]]:
    """Profile each configuration in turn; yields its summary (see :func:`profile_call`) with its settings."""
    hierarchy = load_hierarchy(hierarchy_path)
    cuda = device.type == "cuda"
    for name in decoders:
        fp32_module = harness.default_specs([name], hierarchy, device, seed=seed)[0].module
        for dtype_name in dtypes:
            with precision(dtype_name) as dtype, torch.inference_mode():
                module = harness._cast(fp32_module, dtype)
                z_host = harness._latent(batch, int(module.latent_size), seed).to(dtype)  # (B, Z)
                if cuda:
                    z_host = z_host.pin_memory()
                z_dev = z_host.to(device)
                for mode in modes:
                    runner = harness._CudaGraphRunner(module, z_dev, capture_io=harness.CAPTURE_IO and batch == 1) \
                        if mode == "cudagraph" else module
                    call = harness._closure(runner, mode, z_host, z_dev, batch == 1, device)
                    summary = profile_call(call, device, repeats)
                    print(f"{name} {dtype_name} {mode} batch {batch}: wall {summary['wall_us']:.1f} us, "
                          f"device span {_us(summary['gpu_span_us'])}, busy {summary['busy_us']:.1f} us "
                          f"in {summary['activities']:g} activities")
                    yield {"decoder": name, "dtype": dtype_name, "mode": mode, "batch": batch, **summary}


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} us"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="profile_decode.py", description=__doc__.split("\n\n")[0])
    p.add_argument("hierarchy", help="a saved hierarchy (.npz) built with factors 4 4 4 4")
    p.add_argument("-o", "--output-dir", default="out/profile", help="folder for the JSON (default out/profile)")
    p.add_argument("--file-prefix", default="profile", help="file name before _<machine>.json (default profile)")
    p.add_argument("--device", default="auto", help=f"{harness.DEVICES} (default auto: CUDA when present)")
    p.add_argument("--decoders", nargs="+", choices=[n for n in harness.BUILTIN_DECODERS if n != "pca"],
                   default=["spiralnet++-coma"], help="default spiralnet++-coma")
    p.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["fp32"], help="default fp32")
    p.add_argument("--modes", nargs="+", choices=PROFILED_MODES, default=["eager"],
                   help="eager, cudagraph (CUDA only); default eager")
    p.add_argument("--batch", type=int_argument(1), default=1, help="batch size (default 1)")
    p.add_argument("--repeats", type=int_argument(1), default=50, help="profiled calls per configuration (default 50)")
    return p


def main(argv: list[str] | None = None) -> int:
    options = parser()
    args = options.parse_args(argv)
    device = harness._resolve_device(args.device)  # as the benchmark resolves it
    if device.type != "cuda" and ("cudagraph" in args.modes or "tf32" in args.dtypes):
        options.error(f"--modes cudagraph and --dtypes tf32 need a CUDA device (got {device})")
    out = Path(args.output_dir) / f"{args.file_prefix}_{machine_slug(device, torch.get_num_threads())}.json"
    check_output_path(out, "--output-dir")
    payload = {"environment": environment(device, torch.get_num_threads()), "options": {
        "hierarchy": args.hierarchy, "decoders": args.decoders, "dtypes": args.dtypes, "modes": args.modes,
        "batch": args.batch, "repeats": args.repeats, "capture_io": harness.CAPTURE_IO}}
    payload["results"] = []
    for result in run(args.hierarchy, device, args.decoders, args.dtypes, args.modes, args.batch, args.repeats):
        payload["results"].append(result)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json(out, payload)  # after each configuration: a run stopped by its time limit keeps those done
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(script_main(main))
