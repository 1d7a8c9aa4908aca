"""Benchmark reports: the environment, result files (JSON, CSV), tables and plots.

Every file is written atomically (:func:`mesh_decoder._atomic.atomic_write`), so
an interrupted run leaves either the previous file or a complete new one.
matplotlib is optional and imported only by the plotting functions.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import platform
import re
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch

from .. import __version__
from .._atomic import atomic_write, write_json
from .._checks import check_threads, error_line

__all__ = [
    "ROW_COLUMNS",
    "cpu_model",
    "gpu_model",
    "git_commit",
    "machine_slug",
    "is_noisy",
    "NOISY_SPREAD",
    "environment",
    "write_json",
    "write_csv",
    "format_table",
    "TABLE_LEGEND",
    "require_matplotlib",
    "plot_throughput",
    "plot_scaling",
    "script_main",
    "naming_options",
    "check_threads",
]

#: Columns of a result row, in CSV order. ``peak_memory_mb`` is in MiB (2**20 bytes): the key keeps the
#: name earlier result files have (``benchmarks/results/``, read by ``benchmarks/readme_tables.py``).
ROW_COLUMNS: tuple[str, ...] = (
    "decoder", "device", "dtype", "mode", "batch", "status",
    "meshes_per_s", "latency_ms", "latency_iqr_ms", "repeats", "calls_per_sample",
    "mflop_per_mesh", "parameters", "peak_memory_mb", "max_error", "tolerance",
    "gflops", "gbps", "fraction_compute_roof", "fraction_bandwidth_roof",
    "shape_bound_meshes_per_s", "fraction_shape_bound",
    "speedup_vs_reference", "memory_vs_reference",
    "matmul_precision", "threads", "first_call_s", "note",
)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        try:
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def gpu_model(device: torch.device | str | None = None) -> str | None:
    """The CUDA device's name, or ``None`` without CUDA."""
    if not torch.cuda.is_available():
        return None
    device = torch.device(device) if device is not None else torch.device("cuda")
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_name(device)


def git_commit(path: str | os.PathLike | None = None) -> str | None:
    """``git rev-parse HEAD`` of the repository holding ``path``, or ``None``. By default, of the checkout
    this package runs from; ``None`` for an installed copy (inside a user's own repository, as in its
    ``.venv``, that repository's commit is not the library's).

    ``MESH_DECODER_GIT_COMMIT`` (40 hex digits) overrides it, for a copy of the tree
    whose ``.git`` is absent or stale (a benchmark machine that receives files only).
    """
    given = os.environ.get("MESH_DECODER_GIT_COMMIT", "")
    if re.fullmatch(r"[0-9a-f]{40}", given):
        return given
    if path is None:  # this package's commit: only where it runs from a checkout (an installed copy inside a
        # user's own repository, e.g. its .venv, would give that repository's commit)
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # .../mesh_decoder
        root = os.path.dirname(package)
        if not os.path.exists(os.path.join(root, ".git")):
            return None
        where = root
    else:
        where = os.fspath(path)
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit) else None


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm|c)\)", "", text.lower())
    text = re.sub(r"\b(cpu|processor|core|with|radeon graphics)\b", " ", text)
    text = re.sub(r"@.*$", "", text)
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "unknown"


def machine_slug(device: torch.device | str, threads: int | None = None) -> str:
    """A file-name slug of the machine: ``cpu-<cpu model>-<N>threads`` or ``cuda-<gpu model>``."""
    device = torch.device(device)
    if device.type == "cuda":
        return "cuda-" + _slug(gpu_model(device) or "gpu")
    threads = threads if threads is not None else torch.get_num_threads()
    return f"cpu-{_slug(cpu_model())}-{threads}threads"


def environment(device: torch.device | str, threads: int, **extra: Any) -> dict[str, Any]:
    """The environment a result was measured in (recorded beside the numbers)."""
    device = torch.device(device)
    env: dict[str, Any] = {
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_model(device),
        "threads": int(threads),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "mesh_decoder": __version__,
        "git_commit": git_commit(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    with contextlib.suppress(OSError, AttributeError):  # other work on the machine skews timings
        env["load_average"] = [round(x, 2) for x in os.getloadavg()]
    try:
        import numpy

        env["numpy"] = numpy.__version__
    except ImportError:  # pragma: no cover - numpy is a core dependency
        pass
    env.update(extra)
    return env


def write_csv(path: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = ROW_COLUMNS,
              comments: Mapping[str, Any] | None = None) -> None:
    """Write rows as CSV, atomically; ``comments`` go first as ``# key: value`` lines."""
    buffer = io.StringIO()
    for key, value in (comments or {}).items():
        buffer.write(f"# {key}: {value}\n")
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    with atomic_write(path, "w") as handle:
        handle.write(buffer.getvalue())


# ----------------------------------------------------------------------------- table
def _num(value: Any, fmt: str = "{:.3g}", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return fmt.format(value)


def _pct(value: Any) -> str:
    return _num(None if value is None else 100 * value, "{:.0f}%")


def _latency(ms: Any) -> str:
    if ms is None or (isinstance(ms, float) and math.isnan(ms)):
        return "-"
    return f"{ms * 1e3:.0f} us" if ms < 1 else (f"{ms:.2f} ms" if ms < 100 else f"{ms / 1e3:.2f} s")


def _memory(mib: Any) -> str:
    """A size in MiB (a row's ``peak_memory_mb``), in MiB or GiB."""
    if mib is None or (isinstance(mib, float) and math.isnan(mib)):
        return "-"
    return f"{mib:.1f} MiB" if mib < 10 else (f"{mib:.0f} MiB" if mib < 10240 else f"{mib / 1024:.1f} GiB")


#: A row whose latency interquartile range exceeds this share of its median is marked noisy (``~``).
NOISY_SPREAD = 0.25


def is_noisy(row: Mapping[str, Any]) -> bool:
    """Whether the row's timing spread (the latency's interquartile range) exceeds :data:`NOISY_SPREAD` of its
    median (a spread of 80 % went unmarked when the mark needed more than 100 %)."""
    iqr, median = row.get("latency_iqr_ms"), row.get("latency_ms")
    return iqr is not None and median is not None and iqr > NOISY_SPREAD * median


def _count(n: Any) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}k" if n >= 1e3 else str(n))


#: When a row counts as noisy (:func:`is_noisy`), in words.
_NOISY_MEANING = "the latency's interquartile range exceeds a quarter of its median"
#: What the columns of :func:`format_table` mean (the harness prints it under the table).
TABLE_LEGEND = (
    "latency: one decode of the batch (at batch 1 with the latent copied in and the outputs out, synchronised); "
    f"meshes/s marked ~: noisy, {_NOISY_MEANING}; "
    "peak mem: the decode's peak memory above what it started with (MiB: 2**20 bytes; peak_memory_mb in the files); "
    "error: max |y - y_fp32_eager| / max |y_fp32_eager|; "
    "%roof: MFLOP/mesh x meshes/s against the square matrix-product roof of the row's dtype; "
    "%bw: the minimum bytes per mesh x meshes/s against the copy bandwidth; "
    "%shape: meshes/s against the shape bound, the model's own matrix-product shapes timed alone (a fast path "
    "that multiplies less than the model as written passes 100%); "
    "speedup: meshes/s against the better of the reference decoder's eager and compiled rows"
)


def format_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """A fixed-width text table of result rows (the harness prints it)."""
    header = ["decoder", "device", "dtype", "mode", "batch", "meshes/s", "latency", "MFLOP/mesh", "params",
              "peak mem", "error", "status", "%roof", "%bw", "%shape", "speedup"]
    lines = []
    for r in rows:
        ok = r.get("status") == "ok"
        lines.append([
            str(r.get("decoder")), str(r.get("device")), str(r.get("dtype")), str(r.get("mode")), str(r.get("batch")),
            ("~" if is_noisy(r) else "") + _num(r.get("meshes_per_s"), "{:,.0f}") if ok else "-",
            _latency(r.get("latency_ms")) if ok else "-",
            _num(r.get("mflop_per_mesh"), "{:.1f}"),
            _count(r.get("parameters")),
            _memory(r.get("peak_memory_mb")),
            _num(r.get("max_error"), "{:.1e}"),
            str(r.get("status")),
            _pct(r.get("fraction_compute_roof")) if ok else "-",
            _pct(r.get("fraction_bandwidth_roof")) if ok else "-",
            _pct(r.get("fraction_shape_bound")) if ok else "-",
            _num(r.get("speedup_vs_reference"), "{:.1f}x") if ok else "-",
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


# ----------------------------------------------------------------------------- plots
def require_matplotlib():
    """Import matplotlib with a non-interactive backend, or raise ``ImportError`` saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(
            "plotting needs matplotlib: pip install matplotlib (or pip install 'mesh_decoder[bench]')"
        ) from exc
    return plt


def _save_figure(fig, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


def plot_throughput(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """PNG of meshes/s against batch size, one line per (decoder, dtype, mode); a noisy row (marked ``~`` in the
    tables, see :data:`NOISY_SPREAD`) is drawn as a hollow marker."""
    plt = require_matplotlib()
    series: dict[tuple, list[tuple[int, float, bool]]] = {}  # (batch, meshes/s, noisy) per line
    for r in rows:
        if r.get("status") == "ok" and r.get("meshes_per_s"):
            key = (r["decoder"], r["dtype"], r["mode"])
            series.setdefault(key, []).append((int(r["batch"]), float(r["meshes_per_s"]), is_noisy(r)))
    fig, ax = plt.subplots(figsize=(8, 5.5))
    try:
        for (decoder, dtype, mode), points in sorted(series.items()):
            points.sort()
            xs, ys, noisy = zip(*points)
            style = "--" if mode != "eager" else "-"
            line, = ax.plot(xs, ys, style, marker="o", markevery=[not n for n in noisy],
                            label=f"{decoder} {dtype} {mode}")
            if any(noisy):
                ax.plot([x for x, n in zip(xs, noisy) if n], [y for y, n in zip(ys, noisy) if n], "o",
                        markerfacecolor="none", color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("meshes / s")
        noisy_note = f"hollow: noisy ({_NOISY_MEANING})"
        ax.set_title((title or "decoding throughput")
                     + (f"\n{noisy_note}" if any(n for p in series.values() for _, _, n in p) else ""))
        ax.grid(True, which="both", alpha=0.3)
        if series:  # beside the axes: a GPU run's 40 lines would hide the data under it
            ax.legend(fontsize=7, ncol=1 + len(series) // 21, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        _save_figure(fig, path)
    finally:
        plt.close(fig)


def plot_scaling(points: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """PNG of meshes/s and microseconds per mesh against the template's vertex count."""
    plt = require_matplotlib()
    ok = sorted((p for p in points if p.get("meshes_per_s")), key=lambda p: p["vertices"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    try:
        if ok:
            v = [p["vertices"] for p in ok]
            rate = [p["meshes_per_s"] for p in ok]
            us = [1e6 / p["meshes_per_s"] for p in ok]
            ax1.loglog(v, rate, "o-", label="measured")
            ax1.loglog(v, [rate[0] * v[0] / x for x in v], ":", color="gray", label="linear cost (1/V)")
            ax1.legend()
            ax2.plot(v, us, "o-", label="measured")
            slope = us[-1] / v[-1]
            ax2.plot(v, [slope * x for x in v], ":", color="gray", label="through origin and last point")
            ax2.legend()
        ax1.set_xlabel("template vertices")
        ax1.set_ylabel("meshes / s")
        ax1.grid(True, which="both", alpha=0.3)
        ax2.set_xlabel("template vertices")
        ax2.set_ylabel("microseconds per mesh")
        ax2.grid(True, alpha=0.3)
        fig.suptitle(title or "spiral decoder cost against template size")
        _save_figure(fig, path)
    finally:
        plt.close(fig)


def script_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a ``benchmarks/`` script's ``main(argv)``: a bad value or file prints one line
    (``error: ...``) and returns 1 instead of a traceback."""
    try:
        return main(argv)
    except Exception as exc:  # bad input or files, or too little memory (one line); anything else is raised
        line = error_line(exc, (ValueError, TypeError, OSError))
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1


@contextlib.contextmanager
def naming_options(options: Mapping[str, str]) -> Iterator[None]:
    """Inside, an error about a library parameter names the script's option the value came from.

    ``options`` maps a parameter to the text that names the option, e.g. ``{"num_vertices": "--vertices"}``
    (or a training config's key, ``{"config: data.n": "--n"}``). A ``ValueError`` or ``TypeError`` whose
    message starts with one of them, with or without an index (``"factors[1]: ..."``), is raised again,
    from it, with that text in its place: ``"--vertices: expected an integer in [500, 100000], got 10"``.
    Other errors pass unchanged, and so do the library's messages where it is called from Python.
    """
    try:
        yield
    except (ValueError, TypeError) as exc:
        text = str(exc)
        for name, option in options.items():
            found = re.match(rf"{re.escape(name)}(?:\[\d+\])?(?=[: ])", text)
            if found:
                raise (TypeError if isinstance(exc, TypeError) else ValueError)(option + text[found.end():]) from exc
        raise
