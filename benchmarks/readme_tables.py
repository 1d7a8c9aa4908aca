"""Regenerate the README's result tables from the committed files in ``benchmarks/results/``.

Each table lives between ``<!-- BEGIN results:NAME -->`` and ``<!-- END results:NAME -->``.
Numbers are never typed into the README: run ``python benchmarks/readme_tables.py`` after
committing a new result file; ``--check`` exits 1 when the README is out of date (a test runs it).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _load(pattern: str) -> list[tuple[str, dict]]:
    out = []
    for path in sorted(glob.glob(os.path.join(RESULTS, pattern))):
        with open(path, encoding="utf-8") as fh:
            out.append((os.path.relpath(path, ROOT), json.load(fh)))
    return out


def _machine(env: dict) -> str:
    dev = env.get("gpu") or env.get("cpu") or "unknown"
    threads = env.get("threads")
    text = f"{dev}"
    if not env.get("gpu") and threads:
        text += f", {threads} thread{'s' if threads != 1 else ''}"
    return f"{text}, torch {env.get('torch', '?')}, commit {str(env.get('git_commit') or '?')[:7]}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _g(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


# --------------------------------------------------------------------------- tables
def hierarchy() -> str:
    parts = []
    for path, d in _load("hierarchy_*.json"):
        rows = []
        for r in d["results"]:
            st = r["stages_s"]
            rows.append([
                f"{r['vertices']:,}", " → ".join(str(s) for s in r["sizes"]), _g(r["hierarchy_s"]),
                _g(st.get("decimate")), _g(st.get("operators")), _g(st.get("spirals")), _g(st.get("laplacian")),
                _g(st.get("texel_map")),
            ])
        parts.append(f"Machine: {_machine(d['environment'])}. Source: `{path}`.\n\n" + _table(
            ["vertices", "levels", "hierarchy (s)", "decimate", "operators", "spirals", "Laplacians", "texel map 256²"], rows))
    return "\n\n".join(parts)


def spectrum() -> str:
    parts = []
    for path, d in _load("synthetic_pca_spectrum_*.json"):
        rows = []
        for key in ("shape", "colour"):
            cf = d[key]["components_for"]
            rows.append([key] + [str(cf.get(k, "–")) for k in sorted(cf, key=float)])
        keys = sorted(d["shape"]["components_for"], key=float)
        parts.append(
            f"Generator `{d['generator_version']}`, {d['n']:,} faces on the {d['num_vertices']:,}-vertex face. Source: `{path}`.\n\n"
            + _table(["components for explained variance"] + [f"{float(k) * 100:g} %" if float(k) <= 1 else k for k in keys], rows)
        )
    return "\n\n".join(parts)


def render() -> str:
    parts = []
    for path, d in _load("render_*.json"):
        rows = []
        for r in d["rows"]:
            rows.append([r["op"], f"{r['image_size']}²", str(r["batch"]), _g(r["images_per_s"]), _g(r["latency_ms"]),
                         _g(r.get("peak_increase_mb"))])
        parts.append(f"Machine: {_machine(d['environment'])}, {d['config']['num_vertices']:,}-vertex face. Source: `{path}`.\n\n"
                     + _table(["op", "image", "batch", "images/s", "latency (ms)", "peak memory growth (MB)"], rows))
    return "\n\n".join(parts)


def fit() -> str:
    parts = []
    for path, d in _load("fit_*.json"):
        rows = []
        for r in d["rows"]:
            sm = r["summary"]

            def med(key: str) -> str:
                return _g(sm[key]["median"]) if key in sm else "–"

            def worst(key: str) -> str:
                return _g(sm[key]["max"]) if key in sm else "–"

            rows.append([r["kind"], med("seconds"), f"{med('rotation_error_deg')} ({worst('rotation_error_deg')})",
                         f"{med('shape_error_mm')} ({worst('shape_error_mm')})", med("vertex_error_mm")])
        c = d["config"]
        parts.append(
            f"Machine: {_machine(d['environment'])}. {c['faces_per_kind']} held-out synthetic faces per target kind, "
            f"{c['num_vertices']}-vertex face, {c['pca_components']}-component PCA. Medians (worst case in brackets). "
            f"Source: `{path}`.\n\n"
            + _table(["target", "s per fit", "rotation error (°)", "shape error (mm)", "vertex error (mm)"], rows))
    return "\n\n".join(parts)


def sweep() -> str:
    parts = []
    names = {"spiral": "SpiralNet++ AE", "cheb": "COMA AE", "pca": "PCA"}
    for path, d in _load("sweep_latent_*.json"):
        by = {(r["split"], r["latent_size"], r["method"]): r for r in d["rows"]}
        keys = sorted({(r["split"], r["latent_size"]) for r in d["rows"]}, key=lambda k: (k[0] != "interpolation", k[1]))
        methods = [m for m in names if any(r["method"] == m for r in d["rows"])]
        rows = []
        for split, z in keys:
            row = [split, str(z)]
            for m in methods:
                r = by.get((split, z, m))
                row += [f"{r['test_mean_mm']:.2f} / {r['test_median_mm']:.2f}", f"{r['parameters']:,}"] if r else ["–", "–"]
            rows.append(row)
        train = {m: sum(r.get("train_seconds") or 0 for r in d["rows"] if r["method"] == m) for m in methods}
        b = d["budget"]
        header = ["split", "latent"]
        for m in methods:
            header += [f"{names[m]} mean / median (mm)", f"{names[m]} params"]
        parts.append(
            f"Machine: {_machine(d['environment'])}; status `{d['status']}`. Generator `{d['data']['generator_version']}`, "
            f"{d['data']['n_per_split']:,} faces per split on the 5,023-vertex face. Training budget: {b['epochs']} epochs, "
            f"batch {b['batch_size']}, {b['optimizer']}. CPU training time in total: "
            + ", ".join(f"{names[m]} {train[m] / 60:.1f} min" for m in methods) + f". Source: `{path}`.\n\n"
            + _table(header, rows))
    return "\n\n".join(parts)


def decode() -> str:
    parts = []
    for path, d in _load("decode_*.json"):
        rows = []
        for r in d["rows"]:
            if r.get("status") != "ok":
                rows.append([r["decoder"], r["dtype"], r["mode"], str(r["batch"]), r.get("status", "?")] + ["–"] * 8)
                continue

            def frac(key: str) -> str:
                return f"{r[key] * 100:.0f} %" if r.get(key) is not None else "–"

            rows.append([
                r["decoder"], r["dtype"], r["mode"], str(r["batch"]), _g(r["meshes_per_s"]), _g(r["latency_ms"]),
                _g(r.get("mflop_per_mesh")), f"{r.get('parameters', 0):,}",
                _g(r.get("peak_memory_mb")) if r.get("peak_memory_mb") is not None else "–",
                f"{r['max_error']:.1e}", frac("fraction_shape_bound"), frac("fraction_compute_roof"),
                _g(r.get("speedup_vs_reference")) if r.get("speedup_vs_reference") is not None else "–",
            ])
        roofs = d["roofs"]
        mm = roofs["matmul"]["fp32"]
        parts.append(
            f"Machine: {_machine(d['environment'])}; device {d['rows'][0]['device']}. Roofs measured in the same run: "
            f"square fp32 matmul ({mm['n']}²) {mm['gflops']:.0f} GFLOP/s, copy {roofs['bandwidth']['copy_gbps']:.1f} GB/s. "
            f"Source: `{path}`.\n\n"
            + _table(["decoder", "dtype", "mode", "batch", "meshes/s", "latency (ms)", "MFLOP/mesh", "params",
                      "peak MB", "max error", "shape bound", "square roof", "× reference"], rows))
    return "\n\n".join(parts)


def scaling() -> str:
    parts = []
    for path, d in _load("scaling_*.json"):
        rows = [[f"{p['vertices']:,}", _g(p["meshes_per_s"]), _g(p["us_per_mesh"]), _g(p["ns_per_vertex"]),
                 _g(p["mflop_per_mesh"])] for p in d["points"]]
        parts.append(f"Machine: {_machine(d['environment'])}. Source: `{path}`.\n\n"
                     + _table(["vertices", "meshes/s", "µs/mesh", "ns/vertex", "MFLOP/mesh"], rows))
    return "\n\n".join(parts)


TABLES: dict[str, Callable[[], str]] = {"decode": decode, "scaling": scaling, "sweep": sweep, "hierarchy": hierarchy, "spectrum": spectrum, "render": render, "fit": fit}


def update(text: str) -> str:
    tables = TABLES

    def repl(m: re.Match) -> str:
        name = m.group(1)
        if name not in tables:
            raise SystemExit(f"README.md: unknown results block {name!r}; known: {sorted(tables)}")
        body = tables[name]() or "_No committed result file yet._"
        return f"<!-- BEGIN results:{name} -->\n{body}\n<!-- END results:{name} -->"

    return re.sub(r"<!-- BEGIN results:([\w-]+) -->.*?<!-- END results:\1 -->", repl, text, flags=re.S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is not up to date")
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    args = parser.parse_args(argv)
    with open(args.readme, encoding="utf-8") as fh:
        old = fh.read()
    new = update(old)
    if args.check:
        if new != old:
            print("README.md result tables are out of date: run python benchmarks/readme_tables.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        sys.path.insert(0, ROOT)
        from mesh_decoder._atomic import atomic_write

        with atomic_write(args.readme, "w") as fh:
            fh.write(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
