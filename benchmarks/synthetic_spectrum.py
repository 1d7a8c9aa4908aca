"""PCA spectrum of the synthetic morphable faces.

How many linear components does the synthetic data need? For ``n`` faces drawn
from :class:`mesh_decoder.data.SyntheticFaces` on the 5,023-vertex face template,
shape (vertices, mm) and colour are centred separately and decomposed with numpy's
SVD; the explained-variance ratio of component ``k`` is ``sigma_k^2 / sum sigma^2``.
The result (ratios and cumulative ratios for components 1..100, the number of
components reaching 90 / 95 / 99 / 99.9 %, generator version, template hash and
environment) is written as JSON.

Usage::

    python -m benchmarks.synthetic_spectrum            # 2,000 faces, ~10 s
    python -m benchmarks.synthetic_spectrum --n 500 --output /tmp/spectrum.json
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any, Sequence

import numpy as np

from mesh_decoder._checks import check_output_path, int_argument
from mesh_decoder.bench.report import environment, naming_options, script_main, write_json
from mesh_decoder.data.synthetic import GENERATOR_VERSION, SyntheticFaces
from mesh_decoder.mesh.templates import face_template

DEFAULT_OUTPUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                              "synthetic_pca_spectrum_v1.json")
LEVELS = (0.9, 0.95, 0.99, 0.999)


def spectrum(data: np.ndarray, components: int) -> dict[str, Any]:
    """Explained-variance ratios of the rows of ``data``.

    Shapes: ``data (N, D)`` -> lists of ``min(components, N)`` floats.
    """
    x = data.astype(np.float64)
    x -= x.mean(axis=0)  # (N, D) centred
    sigma = np.linalg.svd(x, full_matrices=False, compute_uv=False)  # (min(N, D),)
    var = sigma**2
    ratio = var / var.sum()
    cumulative = np.cumsum(ratio)
    k = min(components, ratio.size)
    return {
        "total_variance_per_sample": float(var.sum() / x.shape[0]),
        "explained_variance_ratio": [float(r) for r in ratio[:k]],
        "cumulative": [float(c) for c in cumulative[:k]],
        "components_for": {f"{level:g}": int(np.searchsorted(cumulative, level) + 1) for level in LEVELS},
    }


def run(n: int = 2000, components: int = 100, seed: int = 0, num_vertices: int = 5023) -> dict[str, Any]:
    """Generate ``n`` faces and return the JSON payload (no file written)."""
    template = face_template(num_vertices, seed=0)
    generator = SyntheticFaces(template, seed=0)
    t0 = time.perf_counter()
    params = generator.sample_params(n, rng=seed)
    vertices, colors = generator.generate(params)  # (N, V, 3) each
    t1 = time.perf_counter()
    shape = spectrum(vertices.reshape(n, -1), components)  # (N, 3V)
    colour = spectrum(colors.reshape(n, -1), components)
    t2 = time.perf_counter()
    return {
        "benchmark": "synthetic_pca_spectrum",
        "generator_version": GENERATOR_VERSION,
        "generator_seed": 0,
        "sample_seed": seed,
        "n": n,
        "num_vertices": template.num_vertices,
        "template": f"face_template({num_vertices}, seed=0)",
        "template_hash": template.content_hash(),
        "num_params": generator.num_params,
        "shape": shape,
        "colour": colour,
        "seconds": {"generate": t1 - t0, "svd": t2 - t1},
        "environment": environment("cpu", threads=blas_threads(), omp_num_threads=os.environ.get("OMP_NUM_THREADS")),
    }


def blas_threads() -> int:
    """Threads numpy's SVD may use: the first ``OMP_NUM_THREADS`` value, else every core this process may use.

    (``OMP_NUM_THREADS`` unset was recorded as 0 threads; a list such as ``"2,1"`` raised after the work.)
    """
    text = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="faces (default 2000)")
    parser.add_argument("--components", type=int, default=100, help="components reported (default 100)")
    parser.add_argument("--seed", type=int_argument(0), default=0, help="parameter seed (default 0)")
    parser.add_argument("--vertices", type=int, default=5023, help="template vertices (default 5023)")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON file (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.n < 2 or args.components < 1:
        parser.error(f"expected --n >= 2 and --components >= 1, got {args.n} and {args.components}")
    check_output_path(args.output, "--output")  # before the work, not after it
    with naming_options({"num_vertices": "--vertices"}):
        payload = run(args.n, args.components, args.seed, args.vertices)
    write_json(args.output, payload)
    for what in ("shape", "colour"):
        print(f"{what:6s} components for 90/95/99/99.9 %: "
              + ", ".join(str(v) for v in payload[what]["components_for"].values()))
    print(f"generate {payload['seconds']['generate']:.1f} s, svd {payload['seconds']['svd']:.1f} s -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(script_main(main))
