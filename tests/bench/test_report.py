"""Benchmark reports: the printed table."""

import torch

from mesh_decoder.bench import report


def _row(seed, **kw):
    """An ``ok`` result row with random timings (latency in ms, memory in MiB)."""
    gen = torch.Generator().manual_seed(seed)
    latency = float(torch.empty(1).uniform_(0.5, 50.0, generator=gen))
    row = {"decoder": "tiny", "device": "cpu", "dtype": "fp32", "mode": "eager", "batch": 4, "status": "ok",
           "meshes_per_s": 4e3 / latency, "latency_ms": latency, "latency_iqr_ms": latency * 0.1,
           "mflop_per_mesh": 1.5, "parameters": 1234, "max_error": 0.0,
           "peak_memory_mb": float(torch.empty(1).uniform_(10.0, 1000.0, generator=gen))}
    row.update(kw)
    return row


def _cells(table):
    header, *lines = table.splitlines()
    return [dict(zip(header.replace("peak mem", "peak_mem").split(), line.replace(" MiB", "_MiB")
                     .replace(" GiB", "_GiB").replace(" ms", "_ms").replace(" us", "_us").split())) for line in lines]


def test_peak_memory_is_labelled_mib():
    """Memory is measured in MiB (bytes / 2**20) but was printed as 'MB'."""
    small, large = _row(1), _row(2)
    large["peak_memory_mb"] *= 100  # GiB: over 10240 MiB
    cells = _cells(report.format_table([small, large]))
    assert cells[0]["peak_mem"] == f"{small['peak_memory_mb']:.0f}_MiB"
    assert cells[1]["peak_mem"] == f"{large['peak_memory_mb'] / 1024:.1f}_GiB"
    assert "(MiB: 2**20 bytes; peak_memory_mb in the files)" in report.TABLE_LEGEND
    assert "peak_memory_mb" in report.ROW_COLUMNS  # the key earlier result files use


def test_noisy_rows_are_marked():
    """A row whose latency spread (IQR) exceeds a quarter of its median looked like any other (the mark first
    needed a spread above the median, and a committed row with 80 % went unmarked)."""
    steady = _row(3)  # 10 %
    noisy = _row(4)
    noisy["latency_iqr_ms"] = noisy["latency_ms"] * float(torch.empty(1).uniform_(0.3, 0.9))
    unknown = _row(5, latency_iqr_ms=None)  # fewer than 4 samples: the spread is unknown, not noisy
    cells = _cells(report.format_table([steady, noisy, unknown]))
    assert [c["meshes/s"] for c in cells] == [f"{steady['meshes_per_s']:,.0f}", f"~{noisy['meshes_per_s']:,.0f}",
                                               f"{unknown['meshes_per_s']:,.0f}"]
    assert "meshes/s marked ~: noisy, the latency's interquartile range exceeds a quarter of its median" in \
        report.TABLE_LEGEND


def test_the_throughput_plot_draws_noisy_rows_hollow(tmp_path, monkeypatch):
    """The tables mark a row with a wide latency spread '~', but the plot drew it as any other point."""
    g = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    batches = [1, 4, 16, 64]
    noisy_at = int(torch.randint(len(batches), (1,), generator=g))
    rows = []
    for i, b in enumerate(batches):
        latency = float(torch.empty(()).uniform_(1.0, 50.0, generator=g))
        spread = (0.3 if i == noisy_at else 0.1) * latency  # over and under a quarter of the median
        rows.append({"decoder": "spiral", "dtype": "float32", "mode": "eager", "batch": b, "status": "ok",
                     "meshes_per_s": b / latency * 1e3, "latency_ms": latency, "latency_iqr_ms": spread})
    figures, save = [], report._save_figure
    monkeypatch.setattr(report, "_save_figure", lambda fig, path: (figures.append(fig), save(fig, path)))
    plt = report.require_matplotlib()
    monkeypatch.setattr(plt, "close", lambda fig: None)  # keep the figures to read them
    for noisy in (True, False):
        report.plot_throughput(rows if noisy else [{**r, "latency_iqr_ms": None} for r in rows], tmp_path / "t.png")
        (ax,) = figures[-1].axes
        line, *hollow = ax.lines
        assert line.get_markevery() == [i != noisy_at or not noisy for i in range(len(batches))]
        assert [(list(h.get_xdata()), h.get_markerfacecolor()) for h in hollow] == (
            [([batches[noisy_at]], "none")] if noisy else [])
        assert ("hollow: noisy" in ax.get_title()) == noisy and (tmp_path / "t.png").stat().st_size > 0
    monkeypatch.undo()
    for fig in figures:
        plt.close(fig)
