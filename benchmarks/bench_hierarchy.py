"""Benchmark of :func:`mesh_decoder.hierarchy.build_hierarchy`: per-stage times vs. template size.

Builds the 4-level hierarchy of COMA (factors 4, 4, 4, 4; spirals of length 9;
Laplacians; a 256 x 256 texel map) of the procedural face template at several
vertex counts and records the median wall time of every stage:

* ``validate``: :meth:`Mesh.validate` and the manifold-vertex check;
* ``decimate``: OpenMesh quadric decimation of all levels;
* ``operators``: the up-sampling operators (the down-sampling index is a by-product of decimation);
* ``spirals``: spiral indices of all levels;
* ``laplacian``: scaled Laplacians of all levels;
* ``texel_map``: automatic UVs if needed and the UV texel map of the template.

``hierarchy_s`` is the whole build without the texel map (the quantity of the
speed target: at most 1 s for 5,023 vertices and 15 s for 50,000 on 2 cores),
``total_s`` the whole build. Template generation is setup, outside the timed
region. The growth exponent between consecutive sizes is
``log(t2 / t1) / log(V2 / V1)`` (1 = linear).

Usage::

    python benchmarks/bench_hierarchy.py                 # 5,023 / 20k / 50k / 100k, 3 repeats
    python benchmarks/bench_hierarchy.py --sizes 5023 --repeats 5 --output-dir /tmp
    python benchmarks/bench_hierarchy.py --threads 1     # the committed run

The result goes to ``benchmarks/results/hierarchy_<machine>-<threads>threads.json``
with the environment (CPU model, threads, library versions, git commit).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import scipy
import torch

from mesh_decoder._checks import check_output_path, int_argument
from mesh_decoder.bench.report import check_threads, environment, machine_slug, naming_options, script_main, write_json
from mesh_decoder.hierarchy import build_hierarchy
from mesh_decoder.mesh.templates import MAX_VERTICES, MIN_VERTICES, face_template

STAGES = ("validate", "decimate", "operators", "spirals", "laplacian", "texel_map")
DEFAULT_SIZES = (5023, 20000, 50000, 100000)


def bench_size(num_vertices: int, repeats: int, factors, spiral_length: int, texture_size: int) -> dict:
    """Median per-stage times of ``repeats`` builds of the ``num_vertices`` face template."""
    mesh = face_template(num_vertices)  # setup, not timed
    runs = []
    for _ in range(repeats):
        timings: dict[str, float] = {}
        start = time.perf_counter()
        h = build_hierarchy(mesh, factors=factors, spiral_lengths=spiral_length, texture_size=texture_size,
                            timings=timings)
        total = time.perf_counter() - start
        runs.append((total, timings))
    stages = {s: statistics.median(t.get(s, 0.0) for _, t in runs) for s in STAGES}
    totals = [total for total, _ in runs]
    without_texels = [total - t.get("texel_map", 0.0) for total, t in runs]
    return {
        "vertices": num_vertices,
        "sizes": h.sizes,
        "faces": [int(l.faces.shape[0]) for l in h.levels],
        "repeats": repeats,
        "stages_s": {k: round(v, 5) for k, v in stages.items()},
        "hierarchy_s": round(statistics.median(without_texels), 5),
        "total_s": round(statistics.median(totals), 5),
        "total_min_s": round(min(totals), 5),
        "vertices_per_s": round(num_vertices / statistics.median(without_texels), 1),
    }


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def growth(rows: list[dict]) -> list[dict]:
    """Empirical exponents ``log(t2/t1) / log(V2/V1)`` between consecutive sizes
    (``None`` where undefined: a time of 0, or the same size twice)."""
    out = []
    for a, b in zip(rows, rows[1:]):
        ratio = math.log(b["vertices"] / a["vertices"])
        if ratio == 0:  # --sizes 5023 5023: no growth to measure (it divided by zero, losing the run)
            out.append({"from": a["vertices"], "to": b["vertices"], "hierarchy_s": None, **{s: None for s in STAGES}})
            continue
        entry = {"from": a["vertices"], "to": b["vertices"]}
        for key in ("hierarchy_s",) + tuple(f"stages_s.{s}" for s in STAGES):
            ta = a[key] if "." not in key else a["stages_s"][key.split(".")[1]]
            tb = b[key] if "." not in key else b["stages_s"][key.split(".")[1]]
            entry[key.replace("stages_s.", "")] = round(math.log(tb / ta) / ratio, 3) if ta > 0 and tb > 0 else None
        out.append(entry)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # every size checked before the first is built (a bad last size failed after minutes of work)
    parser.add_argument("--sizes", type=int_argument(MIN_VERTICES, MAX_VERTICES), nargs="+",
                        default=list(DEFAULT_SIZES), help="template vertex counts")
    parser.add_argument("--repeats", type=int_argument(1), default=3, help="builds per size (median reported)")
    parser.add_argument("--factors", type=int_argument(2), nargs="+", default=[4, 4, 4, 4])
    parser.add_argument("--spiral-length", type=int_argument(1), default=9)
    parser.add_argument("--texture-size", type=int_argument(0), default=256, help="texel map size (0: none)")
    parser.add_argument("--threads", type=int_argument(1), default=None,
                        help="torch.set_num_threads (default: as the environment)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    check_threads(args.threads)  # a huge thread pool crashed torch (segfault)
    check_output_path(args.output_dir, "--output-dir", directory=True)  # before the work, not after it
    from mesh_decoder.errors import HierarchyError
    from mesh_decoder.hierarchy.decimate import level_sizes

    for n in args.sizes:  # --factors too deep for a size: said before the first build, not after it
        try:
            level_sizes(n, tuple(args.factors))
        except HierarchyError as exc:
            raise ValueError(f"--sizes {n} with --factors {' '.join(map(str, args.factors))}: {exc}") from None

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    # warm-up: imports, allocator and caches, on the smallest template
    build_hierarchy(face_template(500), factors=(4, 4), texture_size=16)

    rows = []
    # build_hierarchy's and face_template's errors name their parameters: here, the options they come from
    options = {"num_vertices": "--sizes", "factors": "--factors", "spiral_lengths": "--spiral-length",
               "texture_size": "--texture-size"}
    for n in args.sizes:
        with naming_options(options):
            row = bench_size(n, args.repeats, tuple(args.factors), args.spiral_length, args.texture_size or None)
        rows.append(row)
        stages = ", ".join(f"{k} {v:.3f}" for k, v in row["stages_s"].items())
        print(f"V={n:>7}: hierarchy {row['hierarchy_s']:.3f} s, total {row['total_s']:.3f} s ({stages})", flush=True)

    payload = {
        "benchmark": "hierarchy",
        "description": "build_hierarchy per-stage median wall times on the procedural face template",
        "parameters": {
            "factors": args.factors,
            "spiral_length": args.spiral_length,
            "texture_size": args.texture_size,
            "repeats": args.repeats,
        },
        "environment": environment(
            "cpu",
            threads,
            cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
            scipy=scipy.__version__,
            openmesh=_version("openmesh"),
            numpy=np.__version__,
        ),
        "results": rows,
        "growth_exponents": growth(rows),
    }
    # named by the threads it ran on, as the other result files (it was named by the cores, '2threads' for 1)
    path = args.output_dir / f"hierarchy_{machine_slug('cpu', threads)}.json"
    write_json(path, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(script_main(main))
