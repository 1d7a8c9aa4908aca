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


class _Document(dict):
    """A JSON object of a result file: a key the tables need and the file lacks is one line naming
    the file (``SystemExit``), not a ``KeyError`` traceback."""

    def __init__(self, pairs: list[tuple[str, object]], path: str):
        super().__init__(pairs)
        self.path = path

    def __missing__(self, key: str):
        raise SystemExit(f"{self.path}: expected {key!r} in a result file's object, found keys {sorted(self)}")


def _read(path: str) -> dict:
    """The JSON result file at ``path`` (relative to the repository) as :class:`_Document` objects."""
    with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
        return json.load(fh, object_pairs_hook=lambda pairs: _Document(pairs, path))


def _load(pattern: str) -> list[tuple[str, dict]]:
    """``(path, document)`` per matching file; a benchmark file without rows is skipped, with a note."""
    out = []
    for path in sorted(glob.glob(os.path.join(RESULTS, pattern))):
        rel = os.path.relpath(path, ROOT)
        try:
            d = _read(rel)
        except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise SystemExit(f"{rel}: expected a JSON result file, could not read it: {exc}") from None
        if not isinstance(d, dict):
            raise SystemExit(f"{rel}: expected a JSON object (a result file), found {type(d).__name__}")
        if "rows" in d and not d["rows"]:
            print(f"{rel}: skipped, expected benchmark rows, found none", file=sys.stderr)
            continue
        out.append((rel, d))
    return out


def _commit(d: dict) -> str:
    """``commit <short hash>`` of a result document, with the note of a run that did not finish, if any."""
    return _commit_of(d["environment"])


def _commit_of(env: dict) -> str:
    return f"commit {str(env.get('git_commit') or '?')[:7]}{_unfinished(env)}"


def _unfinished(env: dict) -> str:
    """A note for a run that did not finish: its file holds only the configurations written before it ended.

    The harness writes ``"complete": false`` until its last write; a run stopped by Ctrl-C adds
    ``"interrupted": true``, one ended by an error ``"failed": "<ExceptionType>: <message>"``; a file that
    says only ``"complete": false`` is from a run still going, or killed. Files written before these keys
    existed have none of them: complete runs, without a note.
    """
    if env.get("interrupted"):
        return " (an interrupted run: only the configurations that finished)"
    if env.get("failed"):
        error = str(env["failed"]).split(":")[0]  # the exception's type: its message may break the table
        return f" (a run that failed with {error}: only the configurations that finished)"
    if env.get("complete") is False:
        return " (an unfinished run, still going or killed: only the configurations written so far)"
    return ""


def _machine(env: dict) -> str:
    dev = env.get("gpu") or env.get("cpu") or "unknown"
    threads = env.get("threads")
    text = f"{dev}"
    if not env.get("gpu") and threads:
        text += f", {threads} thread{'s' if threads != 1 else ''}"
    return f"{text}, torch {env.get('torch', '?')}, {_commit_of(env)}"


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
        size = (d.get("parameters") or {}).get("texture_size")
        texel = f"texel map {size}²" if size else "texel map"
        parts.append(f"Machine: {_machine(d['environment'])}. Source: `{path}`.\n\n" + _table(
            ["vertices", "levels", "hierarchy (s)", "decimate", "operators", "spirals", "Laplacians", texel], rows))
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
                     + _table(["op", "image", "batch", "images/s", "latency (ms)", "peak memory growth (MiB)"], rows))
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
            f"{d['data']['n_per_split']:,} faces per split on the {_template_words(d['data'].get('template'))}. "
            f"Training budget: {b['epochs']} epoch{'' if b['epochs'] == 1 else 's'}, "
            f"batch {b['batch_size']}, {b['optimizer']}. CPU training time in total: "
            + ", ".join(f"{names[m]} {train[m] / 60:.1f} min" for m in methods) + f". Source: `{path}`.\n\n"
            + _table(header, rows))
    return "\n\n".join(parts)


def _template_words(template) -> str:
    """``"5,023-vertex face"`` from a result's ``"face_template(5023, seed=0)"`` (else the text as it is)."""
    found = re.fullmatch(r"(face|head|sphere)_template\((\d+)(?:, .*)?\)", str(template))
    return f"{int(found.group(2)):,}-vertex {found.group(1)}" if found else f"template {template}"


def _spread(r: dict) -> str:
    """A row's latency interquartile range as a share of its median latency: the run-to-run noise its numbers
    carry ("–" below 4 repeats, too few to tell)."""
    iqr, median, repeats = r.get("latency_iqr_ms"), r.get("latency_ms"), r.get("repeats")
    if iqr is None or not median or (repeats is not None and repeats < 4):
        return "–"
    return f"{iqr / median * 100:.0f} %"


def _decode_rows(d: dict) -> list[list[str]]:
    rows = []
    for r in d["rows"]:
        if r.get("status") != "ok":
            rows.append([r["decoder"], r["dtype"], r["mode"], str(r["batch"]), r.get("status", "?")] + ["–"] * 9)
            continue

        def frac(key: str) -> str:
            return f"{r[key] * 100:.0f} %" if r.get(key) is not None else "–"

        rows.append([
            r["decoder"], r["dtype"], r["mode"], str(r["batch"]), _g(r["meshes_per_s"]), _g(r["latency_ms"]),
            _spread(r), _g(r.get("mflop_per_mesh")), f"{r.get('parameters', 0):,}",
            _g(r.get("peak_memory_mb")) if r.get("peak_memory_mb") is not None else "–",
            f"{r['max_error']:.1e}", frac("fraction_shape_bound"), frac("fraction_compute_roof"),
            _g(r.get("speedup_vs_reference")) if r.get("speedup_vs_reference") is not None else "–",
        ])
    return rows


def _zero_params_note(d: dict) -> str:
    """A note under a table whose run counted no parameters for some decoder (runs before the count took
    buffers too: PCA keeps its mean and components as buffers), or nothing."""
    zero = sorted({r["decoder"] for r in d["rows"] if r.get("status") == "ok" and r.get("parameters") == 0})
    if not zero:
        return ""
    return (f"\n\nparams 0 ({', '.join(zero)}): this run counted `nn.Parameter`s only; later runs count buffers too "
            "(PCA keeps its mean and components as buffers).")


_DECODE_HEADER = ["decoder", "dtype", "mode", "batch", "meshes/s", "latency (ms)", "IQR", "MFLOP/mesh", "params",
                  "peak MiB", "max error", "shape bound", "square roof", "× reference"]


def _roofs(d: dict) -> str:
    roofs = d["roofs"]
    sizes = {v["n"] for v in roofs["matmul"].values()}
    if len(sizes) == 1:  # one size: said once
        mm = ", ".join(f"{k} {v['gflops']:,.0f}" for k, v in roofs["matmul"].items())
        matmul = f"square matmul ({sizes.pop()}²) GFLOP/s: {mm}"
    else:  # half precision on the CPU runs a smaller product: each roof names its own size
        matmul = "square matmul GFLOP/s: " + ", ".join(
            f"{k} {v['gflops']:,.0f} ({v['n']}²)" for k, v in roofs["matmul"].items())
    return f"Roofs measured in the same run: {matmul}; copy {roofs['bandwidth']['copy_gbps']:,.1f} GB/s"


def _gpu_pivot(d: dict) -> str:
    """meshes/s per (decoder, mode, batch) with one column per dtype (failed or erroring rows: their status)."""
    dtypes = list(dict.fromkeys(r["dtype"] for r in d["rows"]))
    cells: dict[tuple, dict[str, str]] = {}
    for r in d["rows"]:
        key = (r["decoder"], r["mode"], r["batch"])
        cells.setdefault(key, {})[r["dtype"]] = _g(r["meshes_per_s"]) if r.get("status") == "ok" else r.get("status", "?")
    rows = [[dec, mode, str(batch)] + [cells[(dec, mode, batch)].get(t, "–") for t in dtypes]
            for (dec, mode, batch) in sorted(cells, key=lambda k: (k[2], k[0], k[1]))]
    return _table(["decoder", "mode", "batch"] + [f"{t} meshes/s" for t in dtypes], rows)


def decode() -> str:
    parts = []
    for path, d in _load("decode_*.json"):
        head = f"Machine: {_machine(d['environment'])}; device {d['rows'][0]['device']}. {_roofs(d)}. Source: `{path}`."
        if d["environment"].get("gpu"):
            ok = sum(r.get("status") == "ok" for r in d["rows"])
            parts.append(head + f" {ok} of {len(d['rows'])} rows passed their error check against fp32 eager "
                         "(tolerances: " + ", ".join(f"{k} {v:.0e}" for k, v in _tolerances(d).items())
                         + "); a row that did not shows its status.\n\n" + _gpu_pivot(d))
        else:
            parts.append(head + "\n\n" + _table(_DECODE_HEADER, _decode_rows(d)) + _zero_params_note(d))
    return "\n\n".join(parts)


def _tolerances(d: dict) -> dict[str, float]:
    return {r["dtype"]: r["tolerance"] for r in d["rows"] if r.get("tolerance") is not None}


def decode_compile() -> str:
    parts = []
    for path, d in _load("decode-compile_*.json"):
        parts.append(f"Machine: {_machine(d['environment'])}; device {d['rows'][0]['device']}. Source: `{path}`.\n\n"
                     + _table(_DECODE_HEADER, _decode_rows(d)) + _zero_params_note(d))
    return "\n\n".join(parts)


def _best(rows: list[dict], **match) -> dict | None:
    ok = [r for r in rows if r.get("status") == "ok" and all(r.get(k) == v for k, v in match.items())]
    return max(ok, key=lambda r: r["meshes_per_s"]) if ok else None


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets() -> str:
    """The throughput issue's targets, each with the measured value from the committed files."""
    rows = []
    for path, d in _load("decode_cpu-*.json"):
        r32 = _best(d["rows"], decoder="spiralnet++-coma", batch=32, dtype="fp32")
        r256 = _best(d["rows"], decoder="spiralnet++-coma", batch=256, dtype="fp32", mode="eager")
        where = f"`{os.path.basename(path)}`" + _unfinished(d["environment"])
        if r32 and r32.get("speedup_vs_reference") is not None:
            x = r32["speedup_vs_reference"]
            ref = _best(d["rows"], decoder="reference", batch=32, dtype="fp32")
            noise = f"; latency IQR {_spread(r32)} of the median, the reference's {_spread(ref)}" if ref else ""
            rows.append(["CPU: spiralnet++-coma, batch 32, vs the better reference", "≥ 5× (aim 10×)",
                         f"{x:.1f}× ({r32['mode']}, {_g(r32['meshes_per_s'])} meshes/s{noise})", _verdict(x >= 5),
                         where])
        if r32 and r32.get("fraction_shape_bound") is not None:
            f = r32["fraction_shape_bound"]
            rows.append(["CPU: fraction of the shape bound, batch 32", "≥ 70 %",
                         f"{f * 100:.0f} % (the bound times the plain formulation's products, which the fast path "
                         "does not run: not a measure of it)", _verdict(f >= 0.7), where])
            rows.append(["CPU: fraction of the square fp32 roof, batch 32", "reported",
                         f"{r32['fraction_compute_roof'] * 100:.0f} % (model FLOPs)", "–", where])
        if r256 and r256.get("memory_vs_reference") is not None:
            m = r256["memory_vs_reference"]
            rows.append(["CPU: peak memory at batch 256 vs the reference's", "≤ 0.25×",
                         f"{m:.2f}× ({_g(r256['peak_memory_mb'])} MiB)", _verdict(m <= 0.25), where])
    for path, d in _load("decode_cuda-*.json"):
        where = f"`{os.path.basename(path)}`" + _unfinished(d["environment"])
        top = _best(d["rows"], decoder="spiralnet++-coma", batch=256)
        if top:
            rows.append(["GPU: spiralnet++-coma, batch 256, best precision within tolerance", "≥ 100,000 meshes/s",
                         f"{_g(top['meshes_per_s'])} ({top['dtype']}, {top['mode']})",
                         _verdict(top["meshes_per_s"] >= 1e5), where])
        one = _best(d["rows"], decoder="spiralnet++-coma", batch=1, mode="cudagraph")
        if one:
            rows.append(["GPU: batch 1 with CUDA graphs (latent in, vertices out, synchronised)", "≥ 10,000 decodes/s",
                         f"{_g(one['meshes_per_s'])} ({one['dtype']})", _verdict(one["meshes_per_s"] >= 1e4), where])
        if top:
            joint = _best(d["rows"], decoder="joint", batch=256, dtype=top["dtype"], mode=top["mode"])
            if joint:
                ratio = joint["meshes_per_s"] / top["meshes_per_s"]
                rows.append(["GPU: joint decoder vs spiral decoder, batch 256", "≥ 0.5×",
                             f"{ratio:.2f}× ({_g(joint['meshes_per_s'])} meshes/s)", _verdict(ratio >= 0.5), where])
    if not rows:
        return ""
    return _table(["target", "goal", "measured", "verdict", "source"], rows)


def variants() -> str:
    """The one-kernel spiral layer (GATHER_PROJECT_ROWS = 16384) beside the default path, spiral decoder, CUDA graphs."""
    parts = []
    for path, d in _load(os.path.join("variants", "decode_cuda-*.json")):
        base_path = os.path.join("benchmarks", "results", os.path.basename(path).split("_one-kernel")[0] + ".json")
        if not os.path.exists(os.path.join(ROOT, base_path)):
            continue
        base = _read(base_path)
        rows = []
        for r in d["rows"]:
            if r["decoder"] != "spiralnet++-coma" or r["mode"] != "cudagraph" or r.get("status") != "ok":
                continue
            b = _best(base["rows"], decoder=r["decoder"], mode=r["mode"], batch=r["batch"], dtype=r["dtype"])
            rows.append([r["dtype"], str(r["batch"]), _g(b["meshes_per_s"]) if b else "–", _g(r["meshes_per_s"])])
        parts.append(f"Default: `{base_path}` ({_commit(base)}); one-kernel "
                     f"layers: `{path}` ({_commit(d)}, a later run that also "
                     "copies the batch-1 latent straight into the graph input).\n\n"
                     + _table(["dtype", "batch", "default meshes/s", "one-kernel meshes/s"], rows))
    return "\n\n".join(parts)


#: The batch-1 CUDA-graph variants ``benchmarks/gpu.sh`` runs beside the default path: file prefix -> column.
LATENCY_VARIANTS = {"decode-latency": "weight as stored (LATENCY_ROWS)", "decode-io": "copies captured (CAPTURE_IO)",
                    "decode-io-latency": "both"}


def latency() -> str:
    """Batch 1 with CUDA graphs: the default path and each variant, from the same GPU run."""
    parts = []
    for path, base in _load("decode_cuda-*.json"):
        suffix = os.path.basename(path)[len("decode"):]  # "_cuda-<card>.json"
        found = [(col, d, p) for prefix, col in LATENCY_VARIANTS.items() for p, d in _load(prefix + suffix)]
        if not found:
            continue
        rows = []
        for r in base["rows"]:
            if r["batch"] != 1 or r["mode"] != "cudagraph" or r.get("status") != "ok":
                continue
            cells = []
            for _, d, _ in found:
                v = _best(d["rows"], decoder=r["decoder"], mode="cudagraph", batch=1, dtype=r["dtype"])
                cells.append(_g(v["meshes_per_s"]) if v else "–")
            if any(c != "–" for c in cells):
                rows.append([r["decoder"], r["dtype"], _g(r["meshes_per_s"]), *cells])
        sources = "; ".join(f"{col}: `{p}` ({_commit(d)})"
                            for col, d, p in found)
        parts.append(f"Default: `{path}` ({_commit(base)}); {sources}.\n\n"
                     + _table(["decoder", "dtype", "default decodes/s", *(col + " decodes/s" for col, _, _ in found)],
                              rows))
    return "\n\n".join(parts)


def cheb_cuda() -> str:
    """COMA on CUDA: the default torch.sparse.mm products beside the embedding_bag variant (BAG_ON_CUDA)."""
    parts = []
    for path, base in _load("decode_cuda-*.json"):
        suffix = os.path.basename(path)[len("decode"):]  # "_cuda-<card>.json"
        for bag_path, bag in _load("decode-chebbag" + suffix):
            rows = []
            for r in bag["rows"]:
                if r["decoder"] != "coma" or r.get("status") != "ok":
                    continue
                b = _best(base["rows"], decoder="coma", mode=r["mode"], batch=r["batch"], dtype=r["dtype"])
                rows.append([r["dtype"], r["mode"], str(r["batch"]), _g(b["meshes_per_s"]) if b else "–",
                             _g(r["meshes_per_s"])])
            parts.append(f"Default: `{path}` ({_commit(base)}); embedding_bag: "
                         f"`{bag_path}` ({_commit(bag)}).\n\n"
                         + _table(["dtype", "mode", "batch", "sparse.mm meshes/s", "embedding_bag meshes/s"], rows))
    return "\n\n".join(parts)


def scaling() -> str:
    parts = []
    for path, d in _load("scaling_*.json"):
        rows = [[f"{p['vertices']:,}", _g(p["meshes_per_s"]), _g(p["us_per_mesh"]), _g(p["ns_per_vertex"]),
                 _g(p["mflop_per_mesh"])] for p in d["points"]]
        parts.append(f"Machine: {_machine(d['environment'])}. Source: `{path}`.\n\n"
                     + _table(["vertices", "meshes/s", "µs/mesh", "ns/vertex", "MFLOP/mesh"], rows))
    return "\n\n".join(parts)


TABLES: dict[str, Callable[[], str]] = {"decode": decode, "decode-compile": decode_compile, "targets": targets,
                                        "variants": variants, "latency": latency, "cheb-cuda": cheb_cuda, "scaling": scaling, "sweep": sweep, "hierarchy": hierarchy, "spectrum": spectrum, "render": render, "fit": fit}


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
    try:
        with open(args.readme, encoding="utf-8") as fh:
            old = fh.read()
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise SystemExit(f"--readme {args.readme}: expected a readable UTF-8 README, could not read it: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
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
