"""Memory probes: the peak CPU memory of one decode, each configuration in a process of its own."""

from __future__ import annotations

import time

import pytest

from mesh_decoder.bench import memory


@pytest.fixture(scope="module")
def spiral_hierarchy(tmp_path_factory):
    """A saved 1,000-vertex hierarchy of the spiralnet++-coma preset (probes load it by path)."""
    from mesh_decoder.hierarchy import build_hierarchy, save_hierarchy
    from mesh_decoder.mesh.templates import face_template
    from mesh_decoder.nn.presets import preset_hierarchy_params

    h = build_hierarchy(face_template(1000, seed=0), **preset_hierarchy_params("spiralnet++-coma"), texture_size=None)
    path = tmp_path_factory.mktemp("probe") / "h.npz"
    save_hierarchy(h, path)
    return h, path


def test_memory_probe_sees_the_reference_gather(spiral_hierarchy):
    """A probe measures the decode's own peak: the reference materialises its (B, V, S*C)
    gather (at least B*V*9*32*4 bytes at level 0), the fast path does not."""
    h, path = spiral_hierarchy
    batch = 48
    rows = [{"decoder": name, "mode": "eager", "batch": batch} for name in ("reference", "spiralnet++-coma")]
    todo = [(row, {"name": row["decoder"], "hierarchy": str(path), "batch": batch, "dtype": "fp32",
                   "mode": "eager", "threads": 1, "seed": 0}) for row in rows]
    results = {}
    memory.serve_probes(todo, 2, lambda row, result: results.__setitem__(row["decoder"], result))
    gather_mb = batch * h.sizes[0] * 9 * 32 * 4 / 2**20
    assert results["reference"]["peak_memory_mb"] >= gather_mb, results
    assert results["spiralnet++-coma"]["peak_memory_mb"] < results["reference"]["peak_memory_mb"], results


def test_memory_probes_stop_at_the_deadline(spiral_hierarchy):
    """A probe still running when the time box ends is stopped, not waited for; it and the
    probes not started come back as skipped, and none is reported as measured."""
    _, path = spiral_hierarchy
    rows = [{"decoder": "reference", "mode": "eager", "batch": b} for b in (64, 32, 16)]
    todo = [(row, {"name": "reference", "hierarchy": str(path), "batch": row["batch"], "dtype": "fp32",
                   "mode": "eager", "threads": 1, "seed": 0}) for row in rows]
    answered = []
    # The server's own start (importing torch) outlasts the deadline, so the first probe is stopped.
    skipped = memory.serve_probes(todo, 1, lambda row, result: answered.append(row),
                                  deadline=time.perf_counter() + 0.05)
    assert answered == []
    assert sorted(r["batch"] for r in skipped) == [16, 32, 64]


def test_essential_memory_probes_outlast_the_deadline(spiral_hierarchy):
    """The probes the memory target compares run to the end even when the time box is over;
    the others are still skipped."""
    _, path = spiral_hierarchy
    rows = [{"decoder": name, "mode": "eager", "batch": 8} for name in ("spiralnet++-coma", "reference", "pca")]
    todo = [(row, {"name": row["decoder"], "hierarchy": str(path), "batch": 8, "dtype": "fp32", "mode": "eager",
                   "threads": 1, "seed": 0, "latent_size": 16}) for row in rows]
    answered = {}
    skipped = memory.serve_probes(todo, 1, lambda row, result: answered.__setitem__(row["decoder"], result),
                                  deadline=time.perf_counter() + 0.05, essential=2)
    assert sorted(answered) == ["reference", "spiralnet++-coma"]
    assert all(result["peak_memory_mb"] > 0 for result in answered.values()), answered
    assert [r["decoder"] for r in skipped] == ["pca"]


def test_a_probe_in_a_fresh_interpreter_measures_and_reports_errors(spiral_hierarchy):
    """Where os.fork is missing each probe is this module run in a fresh interpreter: the reference's
    gather shows in its peak as in a forked probe, and a bad request comes back as an error, not a crash."""
    h, path = spiral_hierarchy
    batch = 48
    result = memory.run_probe({"name": "reference", "hierarchy": str(path), "batch": batch, "dtype": "fp32",
                               "mode": "eager", "threads": 1, "seed": 0})
    assert result["peak_memory_mb"] >= batch * h.sizes[0] * 9 * 32 * 4 / 2**20, result
    bad = memory.run_probe({"name": "reference", "hierarchy": str(path.parent / "missing.npz"), "batch": 1,
                            "dtype": "fp32", "mode": "eager", "threads": 1, "seed": 0})
    assert set(bad) == {"error"} and "missing.npz" in bad["error"], bad
