"""CPU benchmark of the torch rasteriser and renderer on the 5,023-vertex face template.

For every image size and batch size it times, with the setup outside the timed
region (median of repeats after warm-up, :func:`mesh_decoder.bench.timing.time_fn`):

* ``rasterize``: :func:`mesh_decoder.render.rasterize` alone (face ids, barycentrics, depth);
* ``render``: :func:`mesh_decoder.render.render` with per-vertex colours and Lambert
  shading (rasterisation included);

and reports images/s. Peak memory is measured in a fresh subprocess per
configuration: the growth of the process's peak resident set size
(``ru_maxrss``) from just before the first render call to just after it, an
upper bound on the memory the call needs (it includes allocator slack). The
rasteriser's own bound is reported beside it: the largest chunk of
(face, pixel) candidates it processed at once.

Results go to ``benchmarks/results/render_<machine slug>.json`` with the
environment (CPU model, torch version, threads, git commit); the rows carry the
harness's column names (``meshes_per_s`` holds images/s), so
:func:`mesh_decoder.render.figures.benchmark_plot` plots them.

Usage::

    python -m benchmarks.bench_render                       # 256 and 512 px, batch 1 and 8, 1 thread
    python -m benchmarks.bench_render --sizes 256 --batches 1 2 4 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

import torch

from mesh_decoder._checks import check_output_path, int_argument, real_argument
from mesh_decoder.bench import report
from mesh_decoder.bench.timing import time_fn
from mesh_decoder.mesh.templates import face_template
from mesh_decoder.render import OrthographicCamera, rasterize, render

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _scene(num_vertices: int, batch: int, size: int, seed: int = 0):
    """Template vertices ``(B, V, 3)`` float32 (slightly different per sample), faces, colours, a framing camera."""
    mesh = face_template(num_vertices, seed=0)
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(mesh.vertices, dtype=torch.float32)
    vertices = base + 0.5 * torch.randn(batch, *base.shape, generator=g)  # (B, V, 3)
    faces = torch.tensor(mesh.faces)
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    colors = torch.tensor((mesh.vertices - lo) / (hi - lo), dtype=torch.float32)  # (V, 3) smooth
    camera = OrthographicCamera.fit(vertices, size)
    return vertices, faces, colors, camera


def _peak_kib() -> int:
    """Peak resident set size in KiB (``ru_maxrss``, which macOS gives in bytes)."""
    import resource  # POSIX only: this benchmark measures memory on Linux and macOS

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) // 1024 if sys.platform == "darwin" else int(rss)


def _rss_kib() -> int:
    """Current resident set size in KiB (Linux ``/proc``; falls back to the peak)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return _peak_kib()


def measure_memory(num_vertices: int, size: int, batch: int, threads: int) -> dict[str, Any]:
    """Run one render in this process and report its peak memory growth (call in a fresh process)."""
    torch.set_num_threads(threads)
    vertices, faces, colors, camera = _scene(num_vertices, batch, size)
    stats: dict[str, Any] = {}
    before = _rss_kib()
    peak_before = _peak_kib()
    frags = rasterize(vertices, faces, camera, size, stats=stats)
    out = render(vertices, faces, camera, size, colors=colors, fragments=frags)
    peak_after = _peak_kib()
    outputs = sum(t.element_size() * t.numel() for t in (frags.face_id, frags.bary, frags.depth, frags.mask, out.image))
    return {
        "rss_before_mb": before / 1024,
        "peak_rss_mb": peak_after / 1024,
        "peak_increase_mb": (peak_after - before) / 1024,
        "peak_was_reached_during_setup": peak_after == peak_before,
        "outputs_mb": outputs / 2**20,
        "candidates": stats["candidates"],
        "largest_chunk": stats["largest_chunk"],
        "chunks": stats["chunks"],
        "covered_fraction": stats["covered"] / (batch * size * size),
    }


def _memory_in_subprocess(num_vertices: int, size: int, batch: int, threads: int) -> dict[str, Any]:
    code = (
        "import json, sys; from benchmarks.bench_render import measure_memory; "
        f"print(json.dumps(measure_memory({num_vertices}, {size}, {batch}, {threads})))"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement failed for size {size}, batch {batch}:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(sizes, batches, num_vertices: int = 5023, threads: int = 1, budget_s: float = 3.0,
        memory: bool = True) -> dict[str, Any]:
    """Time every (size, batch) and return the JSON payload."""
    torch.set_num_threads(threads)
    rows = []
    for size in sizes:
        for batch in batches:
            vertices, faces, colors, camera = _scene(num_vertices, batch, size)
            closures = {
                "rasterize": lambda: rasterize(vertices, faces, camera, size),
                "render": lambda: render(vertices, faces, camera, size, colors=colors),
            }
            mem = _memory_in_subprocess(num_vertices, size, batch, threads) if memory else {}
            for op, fn in closures.items():
                with torch.no_grad():
                    t = time_fn(fn, warmup=1, min_repeats=3, max_repeats=30, budget_s=budget_s)
                row = {
                    "decoder": f"{op} {size}px",
                    "device": "cpu",
                    "dtype": "float32",
                    "mode": "eager",
                    "batch": batch,
                    "status": "ok",
                    "op": op,
                    "image_size": size,
                    "num_vertices": num_vertices,
                    "num_faces": int(faces.shape[0]),
                    "images_per_s": batch / t.median_s,
                    "meshes_per_s": batch / t.median_s,
                    "latency_ms": 1e3 * t.median_s,
                    "latency_iqr_ms": 1e3 * t.iqr_s,
                    "repeats": t.repeats,
                    "threads": threads,
                }
                row.update(mem)
                rows.append(row)
                peak = mem.get("peak_increase_mb")
                print(f"{op:9s} {size:4d}px batch {batch:2d}: {row['images_per_s']:8.2f} images/s  "
                      f"{row['latency_ms']:9.1f} ms  " + (f"peak +{peak:.0f} MiB" if peak is not None else
                                                          "peak not measured (--no-memory)"), flush=True)
    return {
        "benchmark": "render",
        "description": "torch rasteriser / renderer on the face template, CPU, float32, orthographic camera, "
                       "per-vertex colours with Lambert shading; memory = peak RSS growth of one render call "
                       "in a fresh process; environment.load_average is the 1/5/15-minute load when it finished "
                       "(other processes share the cores)",
        "environment": report.environment("cpu", threads, load_average=list(os.getloadavg())),
        "config": {"sizes": list(sizes), "batches": list(batches), "num_vertices": num_vertices,
                   "budget_s": budget_s},
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int_argument(1), nargs="+", default=[256, 512])
    parser.add_argument("--batches", type=int_argument(1), nargs="+", default=[1, 8])
    parser.add_argument("--vertices", type=int, default=5023)
    parser.add_argument("--threads", type=int_argument(1), default=1)
    parser.add_argument("--budget", type=real_argument(0, inclusive=False, what="a finite number of seconds"),
                        default=3.0, help="seconds of timed samples per closure")
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurement")
    parser.add_argument("-o", "--output", default=None,
                        help="result JSON (default benchmarks/results/render_<machine>.json)")
    parser.add_argument("--plot", default=None, help="also write a PNG plot of images/s against batch size")
    args = parser.parse_args(argv)
    report.check_threads(args.threads)  # a huge thread pool crashed torch (segfault)
    path = args.output or os.path.join(RESULTS, f"render_{report.machine_slug('cpu', args.threads)}.json")
    check_output_path(path, "--output")  # before the work, not after it
    if args.plot:
        check_output_path(args.plot, "--plot")
    with report.naming_options({"num_vertices": "--vertices"}):
        payload = run(args.sizes, args.batches, args.vertices, args.threads, args.budget, memory=not args.no_memory)
    report.write_json(path, payload)
    print(f"wrote {path}")
    if args.plot:
        from mesh_decoder.render.figures import benchmark_plot

        benchmark_plot(payload["rows"], args.plot, title="torch renderer, images/s")
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(report.script_main(main))
