"""The scripts under benchmarks/: README tables from result files, growth exponents, recorded threads."""

import contextlib
import json
import os

import pytest
import torch

from benchmarks import bench_fit, bench_hierarchy, bench_render, readme_tables, sweep_latent, synthetic_spectrum
from mesh_decoder.bench import report


@pytest.fixture
def results(tmp_path, monkeypatch):
    """An empty results folder that readme_tables reads instead of benchmarks/results/."""
    folder = tmp_path / "benchmarks" / "results"
    folder.mkdir(parents=True)
    monkeypatch.setattr(readme_tables, "ROOT", str(tmp_path))
    monkeypatch.setattr(readme_tables, "RESULTS", str(folder))
    return folder


def _decode_file(matmul: dict) -> dict:
    row = {"decoder": "spiralnet++-coma", "device": "cpu", "dtype": "fp32", "mode": "eager", "batch": 32,
           "status": "ok", "meshes_per_s": 812.5, "latency_ms": 39.4, "mflop_per_mesh": 143.2, "parameters": 96515,
           "peak_memory_mb": 39.2, "max_error": 0.0, "fraction_shape_bound": 0.93, "fraction_compute_roof": 0.61}
    env = {"cpu": "Some CPU", "gpu": None, "threads": 2, "torch": "2.x", "git_commit": "0123456789abcdef"}
    return {"environment": env, "roofs": {"matmul": matmul, "bandwidth": {"copy_gbps": 33.9}}, "rows": [row]}


def test_roof_caption_names_each_size_when_they_differ(results):
    """The caption said 'square matmul (2048²)' for every dtype, also for a CPU bf16 roof measured at 512²."""
    mixed = {"fp32": {"n": 2048, "gflops": 189.9}, "bf16": {"n": 512, "gflops": 12.3}}
    (results / "decode_cpu-some-2threads.json").write_text(json.dumps(_decode_file(mixed)))
    text = readme_tables.decode()
    assert "square matmul GFLOP/s: fp32 190 (2048²), bf16 12 (512²);" in text
    assert "(2048²) GFLOP/s" not in text
    same = {"fp32": {"n": 2048, "gflops": 189.9}}
    (results / "decode_cpu-some-2threads.json").write_text(json.dumps(_decode_file(same)))
    assert "square matmul (2048²) GFLOP/s: fp32 190;" in readme_tables.decode()


def test_decode_tables_show_each_rows_noise_and_the_targets_the_ratios(results):
    """The README showed no row's run-to-run spread: a reference row with an IQR of 80 % of its median set the
    headline ratio unmarked; and the shape-bound target read as a measure of the fast path."""
    payload = _decode_file({"fp32": {"n": 2048, "gflops": 189.9}})
    own = payload["rows"][0]
    spread = float(torch.empty(()).uniform_(0.05, 0.5))
    own.update(latency_iqr_ms=own["latency_ms"] * spread, repeats=11, speedup_vs_reference=7.5)
    reference = dict(own, decoder="reference", meshes_per_s=108.0, latency_ms=296.0, latency_iqr_ms=236.8,
                     speedup_vs_reference=None)
    few = dict(own, batch=256, latency_iqr_ms=0.0, repeats=3)  # too few samples to tell a spread
    payload["rows"] += [reference, few]
    (results / "decode_cpu-some-2threads.json").write_text(json.dumps(payload))
    lines = [line for line in readme_tables.decode().splitlines() if line.startswith("| spiralnet++-coma")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    iqr = readme_tables._DECODE_HEADER.index("IQR")
    assert [c[iqr] for c in cells] == [f"{spread * 100:.0f} %", "–"]
    targets = readme_tables.targets()
    assert f"7.5× (eager, 812 meshes/s; latency IQR {spread * 100:.0f} % of the median, the reference's 80 %)" in \
        targets, targets
    assert "which the fast path does not run: not a measure of it" in targets


def test_sweep_and_hierarchy_tables_say_the_template_and_texture_size_of_their_file(results):
    """The sweep caption always said 'the 5,023-vertex face' and '1 epochs', and the hierarchy table's header
    'texel map 256²', whatever the file held."""
    env = {"cpu": "Some CPU", "gpu": None, "threads": 2, "torch": "2.x", "git_commit": "0123456789abcdef"}
    vertices = int(torch.randint(500, 5000, (1,)))
    row = {"split": "interpolation", "latent_size": 4, "method": "pca", "parameters": 12, "test_mean_mm": 2.5,
           "test_median_mm": 2.0}
    sweep = {"environment": env, "status": "complete", "rows": [row],
             "data": {"generator_version": "g", "template": f"face_template({vertices}, seed=0)", "n_per_split": 40},
             "budget": {"epochs": 1, "batch_size": 8, "optimizer": "Adam"}, "config": {}}
    (results / "sweep_latent_cpu-some-2threads.json").write_text(json.dumps(sweep))
    text = readme_tables.sweep()
    assert f"40 faces per split on the {vertices:,}-vertex face. Training budget: 1 epoch, batch 8" in text, text
    hierarchy = {"environment": env, "parameters": {"texture_size": 16}, "results": [
        {"vertices": 1000, "sizes": [1000, 250], "hierarchy_s": 0.5, "stages_s": {"texel_map": 0.01}}]}
    (results / "hierarchy_cpu-some-2threads.json").write_text(json.dumps(hierarchy))
    assert "| texel map 16² |" in readme_tables.hierarchy(), readme_tables.hierarchy()


def test_a_run_that_counted_no_parameters_says_why_under_its_table(results):
    """PCA rows of runs that counted nn.Parameters only showed 'params 0' without a word."""
    payload = _decode_file({"fp32": {"n": 2048, "gflops": 189.9}})
    (results / "decode_cpu-some-2threads.json").write_text(json.dumps(payload))
    assert "params 0" not in readme_tables.decode()
    pca = dict(payload["rows"][0], decoder="pca", parameters=0, meshes_per_s=27711.0)
    payload["rows"].append(pca)
    (results / "decode_cpu-some-2threads.json").write_text(json.dumps(payload))
    text = readme_tables.decode()
    assert "| pca | fp32 | eager | 32 | 27,711 |" in text
    assert "\n\nparams 0 (pca): this run counted `nn.Parameter`s only" in text


@pytest.mark.parametrize("content, found", [('{"rows": [', "could not read it"), ("[1, 2]", "found list")])
def test_a_broken_result_file_is_named(results, content, found):
    """A truncated result file failed with a bare JSONDecodeError that named no file."""
    (results / "decode_cpu-some-2threads.json").write_text(content)
    with pytest.raises(SystemExit, match=rf"benchmarks.results.decode_cpu-some-2threads\.json: expected a JSON .*{found}"):
        readme_tables.decode()


def test_growth_of_a_repeated_size_is_undefined_not_a_crash():
    """--sizes 5023 5023 divided by zero after every build, before the result file was written."""
    def row(vertices, seconds):
        return {"vertices": vertices, "hierarchy_s": seconds, "stages_s": {s: seconds / 10 for s in bench_hierarchy.STAGES}}

    out = bench_hierarchy.growth([row(1000, 0.1), row(1000, 0.12), row(4000, 0.48)])
    assert out[0] == {"from": 1000, "to": 1000, "hierarchy_s": None, **{s: None for s in bench_hierarchy.STAGES}}
    assert out[1]["hierarchy_s"] == pytest.approx(1.0) and out[1]["decimate"] == pytest.approx(1.0)
    assert list(out[0]) == list(out[1])  # the same keys, in the same order


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("3", 3), ("2,1", 2), ("x", None)])
def test_spectrum_records_the_threads_it_ran_with(monkeypatch, value, expected):
    """OMP_NUM_THREADS unset was recorded as 0 threads, and '2,1' (nested OpenMP) raised after the work."""
    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert synthetic_spectrum.blas_threads() == (cores if expected is None else expected)


def test_spectrum_result_records_threads_when_omp_is_unset(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    env = synthetic_spectrum.run(n=8, components=3, num_vertices=500)["environment"]
    assert env["threads"] >= 1 and env["omp_num_threads"] is None


def test_sweep_refuses_a_bad_latent_size_before_replacing_the_result_file(tmp_path, monkeypatch, capsys):
    """--latent-sizes 4 0 failed at size 0's turn, after the result file had been rewritten with no rows."""
    out = tmp_path / "sweep.json"
    out.write_text('{"rows": ["an earlier sweep"]}')
    monkeypatch.setattr(sweep_latent, "load_data", lambda *a, **k: pytest.fail("the sweep started"))
    with pytest.raises(SystemExit) as stop:
        sweep_latent.main(["--latent-sizes", "4", "0", "--splits", "interpolation", "--output", str(out)])
    assert stop.value.code == 2
    assert "--latent-sizes: expected an int >= 1, got 0" in capsys.readouterr().err
    assert out.read_text() == '{"rows": ["an earlier sweep"]}'


def test_a_result_file_without_a_key_the_tables_need_is_named(results):
    """A result file missing 'rows', or a row missing 'meshes_per_s', ended in a KeyError traceback."""
    gen = torch.Generator().manual_seed(11)
    payload = _decode_file({"fp32": {"n": 2048, "gflops": float(torch.rand(1, generator=gen)) * 100 + 1}})
    payload["rows"][0]["meshes_per_s"] = float(torch.rand(1, generator=gen)) * 1000 + 1
    path = results / "decode_cpu-some-2threads.json"
    path.write_text(json.dumps(payload))
    assert "decode_cpu-some-2threads.json" in readme_tables.targets()
    del payload["rows"][0]["meshes_per_s"]
    path.write_text(json.dumps(payload))
    with pytest.raises(SystemExit, match=r"decode_cpu-some-2threads\.json: expected 'meshes_per_s' in a result file"):
        readme_tables.targets()
    path.write_text(json.dumps({"environment": payload["environment"]}))
    with pytest.raises(SystemExit, match=r"decode_cpu-some-2threads\.json: expected 'rows' in a result file's object, "
                                         r"found keys \['environment'\]"):
        readme_tables.targets()


@pytest.mark.parametrize("kind", ["missing", "folder", "binary"])
def test_an_unreadable_readme_is_one_line(kind, tmp_path):
    """--readme pointing at a missing file, a folder or binary data ended in a traceback."""
    path = tmp_path / "README.md"
    if kind == "folder":
        path.mkdir()
    elif kind == "binary":
        path.write_bytes(b"\xff\xfe\xa4" + bytes(torch.randint(0, 256, (64,), generator=torch.Generator().manual_seed(2))
                                                 .to(torch.uint8).tolist()))
    with pytest.raises(SystemExit, match=rf"^--readme {path}: expected a readable UTF-8 README, could not read it: "):
        readme_tables.main(["--check", "--readme", str(path)])


def test_a_bad_output_path_is_refused_before_the_work(tmp_path, monkeypatch):
    """A file given as bench_hierarchy's --output-dir, or a folder as synthetic_spectrum's --output, failed
    only after the whole run, with an OutputPathError traceback."""

    def started(*args, **kwargs):
        raise AssertionError("the work started")

    afile = tmp_path / "afile"
    afile.write_bytes(bytes(torch.randint(1, 256, (32,), generator=torch.Generator().manual_seed(4)).tolist()))
    monkeypatch.setattr(bench_hierarchy, "build_hierarchy", started)
    with pytest.raises(ValueError, match=rf"^--output-dir {afile}: expected a directory, found an existing file$"):
        bench_hierarchy.main(["--sizes", "1000", "--output-dir", str(afile)])
    monkeypatch.setattr(synthetic_spectrum, "run", started)
    with pytest.raises(ValueError, match=rf"^--output {tmp_path}: expected a file path, found a directory$"):
        synthetic_spectrum.main(["--n", "4", "--output", str(tmp_path)])
    # bench_render's --plot under a file was refused after the run, leaving its JSON; factors too deep for a
    # later --sizes value were found after the earlier sizes were built
    monkeypatch.setattr(bench_render, "run", started)
    with pytest.raises(ValueError, match=rf"^--plot {afile}/p.png: expected a file path, but {afile} is a file"):
        bench_render.main(["--sizes", "16", "--output", str(tmp_path / "r.json"), "--plot", str(afile / "p.png")])
    with pytest.raises(ValueError, match=r"^--sizes 500 with --factors 4 4 4 4: factors \(4, 4, 4, 4\) leave 2 "):
        bench_hierarchy.main(["--sizes", "1000", "500", "--output-dir", str(tmp_path / "h")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_the_hierarchy_result_file_is_named_by_the_threads_it_ran_on(tmp_path, capsys):
    """bench_hierarchy named its file by the machine's cores: a 1-thread run on 2 cores wrote '2threads'."""
    before = torch.get_num_threads()
    try:
        bench_hierarchy.main(["--sizes", "500", "--factors", "2", "--repeats", "1", "--texture-size", "0",
                              "--threads", "1", "--output-dir", str(tmp_path)])
    finally:
        torch.set_num_threads(before)
    (path,) = tmp_path.iterdir()
    assert path.name.startswith("hierarchy_cpu-") and path.name.endswith("-1threads.json"), path.name
    payload = json.loads(path.read_text())
    assert payload["environment"]["threads"] == 1 and payload["results"][0]["vertices"] == 500
    with pytest.raises(SystemExit):
        bench_hierarchy.main(["--threads", "0", "--output-dir", str(tmp_path)])
    assert "argument --threads: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_a_scripts_bad_value_is_one_line(tmp_path):
    """synthetic_spectrum.py --vertices 10 (like bench_hierarchy, bench_render and bench_fit) ended in a traceback."""
    import subprocess
    import sys

    script = os.path.join(readme_tables.ROOT, "benchmarks", "synthetic_spectrum.py")
    out = tmp_path / "spectrum.json"
    proc = subprocess.run([sys.executable, script, "--n", "4", "--components", "2", "--vertices", "10",
                           "--output", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == "error: --vertices: expected an integer in [500, 100000], got 10\n", proc.stderr
    assert not out.exists()


@pytest.mark.parametrize("marks, note", [
    ({"complete": False, "failed": "RuntimeError: CUDA error: an illegal memory access was encountered"},
     " (a run that failed with RuntimeError: only the configurations that finished)"),
    ({"complete": False}, " (an unfinished run, still going or killed: only the configurations written so far)"),
    ({"complete": False, "interrupted": True}, " (an interrupted run: only the configurations that finished)"),
    ({"complete": True}, ""),
    ({}, ""),  # files written before the keys existed: complete
])
def test_tables_mark_a_run_that_did_not_finish(results, marks, note):
    """A run ended by an error, or still going (or killed), left files the tables showed as a complete run's:
    only Ctrl-C ('interrupted') was marked."""
    gen = torch.Generator().manual_seed(12)
    payload = _decode_file({"fp32": {"n": 2048, "gflops": float(torch.rand(1, generator=gen)) * 100 + 1}})
    payload["rows"][0]["meshes_per_s"] = float(torch.rand(1, generator=gen)) * 1000 + 1
    payload["rows"][0]["speedup_vs_reference"] = float(torch.rand(1, generator=gen)) * 9 + 1
    payload["environment"].update(marks)
    (results / "decode_cpu-some-2threads.json").write_text(json.dumps(payload))
    assert f"Some CPU, 2 threads, torch 2.x, commit 0123456{note}; device cpu." in readme_tables.decode()
    assert f"| `decode_cpu-some-2threads.json`{note} |" in readme_tables.targets()


_GEN = torch.Generator().manual_seed(21)
_SMALL = int(torch.randint(1, 500, (1,), generator=_GEN))  # below the face template's 500 vertices
_HUGE = int(torch.randint(100_001, 10**7, (1,), generator=_GEN))  # above its 100,000
_RANGE = "expected an integer in [500, 100000], got"


@pytest.mark.parametrize("script, argv, message", [
    (synthetic_spectrum, ["--n", "4", "--components", "2", "--vertices", str(_SMALL)], f"--vertices: {_RANGE} {_SMALL}"),
    (bench_render, ["--sizes", "16", "--batches", "1", "--no-memory", "--vertices", str(-_SMALL)],
     f"--vertices: {_RANGE} {-_SMALL}"),
    (bench_fit, ["--faces", "1", "--kinds", "mesh", "--vertices", str(_HUGE)], f"--vertices: {_RANGE} {_HUGE}"),
    (bench_fit, ["--faces", "1", "--kinds", "mesh", "--vertices", "500", "--components", str(_HUGE)],
     f"--components: expected an integer in [1, min(N - 1, 3V) = 199] for N = 200 samples of dimension 1500, got {_HUGE}"),
    (bench_hierarchy, ["--sizes", "500", "--factors", "4", "4", "--texture-size", str(_HUGE)],
     f"--texture-size: expected at most 8192 texels per side, got ({_HUGE}, {_HUGE})"),
])
def test_a_scripts_error_names_its_option(tmp_path, capsys, script, argv, message):
    """The scripts' errors named the library's parameters: 'num_vertices', 'num_components', 'factors[0]',
    'texture_size', none of them an option of the script."""
    output = ["--output-dir", str(tmp_path)] if script is bench_hierarchy else ["--output", str(tmp_path / "r.json")]
    assert report.script_main(script.main, [*argv, *output]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [(["--faces", "0"], "--faces: expected an integer in [1, 60], got 0"),
                                           (["--threads", "0"], "--threads: expected an integer >= 1, got 0")])
def test_bench_fit_names_the_option_that_is_out_of_range(tmp_path, capsys, argv, message):
    """'--faces must be in [1, 60] and --threads positive' said neither which option nor its value."""
    assert report.script_main(bench_fit.main, [*argv, "--output", str(tmp_path / "r.json")]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script", [bench_render, bench_fit, sweep_latent])
def test_a_thread_count_beyond_the_machines_is_refused(tmp_path, capsys, script):
    """--threads 100000 crashed torch with a segmentation fault (sweep_latent --threads 0: a RuntimeError traceback)."""
    cpus = os.cpu_count() or 1
    threads = cpus + int(torch.randint(1, 10**5, (1,), generator=torch.Generator().manual_seed(22)))
    argv = ["--threads", str(threads), "--output", str(tmp_path / "r.json")]
    with pytest.raises(SystemExit) if script is sweep_latent else contextlib.nullcontext():  # its argument checks
        assert report.script_main(script.main, argv) == 1
    assert f"--threads: expected an integer in [1, {cpus}] (the CPUs of this machine), got {threads}\n" in (
        capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message, code", [
    (["--vertices", str(_SMALL)], f"--vertices: expected an int in [500, 100000] (the vertex count of the built-in "
                                  f"face template), got {_SMALL}", 2),
    (["--lr-cheb", "-0.5"], "--lr-cheb: expected a positive number, got -0.5", 2),
    (["--n", "0"], "--n: expected an int >= 1, got 0", 2),
    (["--vertices", "600"], "--vertices 600: hierarchy.factors: [4, 4, 4, 4] (from model.preset 'spiralnet++-coma') "
                            "on the built-in face template (600 vertices): factors (4, 4, 4, 4) leave", 1),
    (["--n", "5", "--vertices", "1000", "--methods", "spiral"],
     "--n 5: expected held-out test faces, the interpolation split of 5 faces holds out none", 1),
    (["--n", "1", "--vertices", "1000", "--methods", "spiral"], "--n 1: data: expected at least 2 training meshes", 1),
])
def test_sweep_errors_name_its_options(tmp_path, capsys, monkeypatch, argv, message, code):
    """sweep_latent's errors named config keys ('config: template.vertices', 'training.lr'); a --vertices the
    presets cannot decimate failed in the first training, and --n 5 after it, both after the result file had been
    replaced by one without rows."""
    monkeypatch.setattr(sweep_latent, "train", lambda *a, **k: pytest.fail("the training started"))
    out = tmp_path / "sweep.json"
    out.write_text('{"rows": ["an earlier sweep"]}')
    argv = ["--latent-sizes", "4", "--splits", "interpolation", "--n", "12", *argv, "--output", str(out)]
    if code == 2:  # the argument checks
        with pytest.raises(SystemExit) as stop:
            sweep_latent.main(argv)
        assert stop.value.code == 2
    else:
        assert report.script_main(sweep_latent.main, argv) == 1
    assert message in capsys.readouterr().err
    assert out.read_text() == '{"rows": ["an earlier sweep"]}'


def test_naming_options_renames_the_parameter_only():
    """The library's own message stays as it is; inside the context, its leading parameter becomes the option."""
    from mesh_decoder.mesh.templates import face_template

    n = int(torch.randint(1, 500, (1,), generator=torch.Generator().manual_seed(23)))
    with pytest.raises(ValueError, match=rf"^num_vertices: expected an integer in \[500, 100000\], got {n}$"):
        face_template(n)
    with pytest.raises(ValueError, match=rf"^--vertices: expected an integer in \[500, 100000\], got {n}$") as caught:
        with report.naming_options({"num_vertices": "--vertices"}):
            face_template(n)
    assert str(caught.value.__cause__).startswith("num_vertices: ")
    with pytest.raises(TypeError, match=r"^--vertices: expected an int, got float$"):
        with report.naming_options({"num_vertices": "--vertices"}):
            face_template(float(n))
    for text in ("num_vertices_total: unrelated", "a num_vertices: elsewhere"):  # not the parameter's label
        with pytest.raises(ValueError, match=rf"^{text}$"):
            with report.naming_options({"num_vertices": "--vertices"}):
                raise ValueError(text)
    with pytest.raises(ValueError, match=r"^--factors: expected a finite down-sampling factor > 1, got 0$"):
        with report.naming_options({"factors": "--factors"}):
            raise ValueError("factors[2]: expected a finite down-sampling factor > 1, got 0")


@pytest.mark.parametrize("script, argv, message", [
    (synthetic_spectrum, ["--n", "4", "--seed", str(-_SMALL)], f"argument --seed: expected an integer >= 0, got '{-_SMALL}'"),
    (bench_hierarchy, ["--sizes", "500", "--texture-size", str(-_SMALL)],
     f"argument --texture-size: expected an integer >= 0, got '{-_SMALL}'"),
    (bench_hierarchy, ["--sizes", "500", "--spiral-length", "0"], "argument --spiral-length: expected an integer >= 1, got '0'"),
    # every size and factor before the first build (a bad last size failed after the others were built)
    (bench_hierarchy, ["--sizes", "500", str(_SMALL)], f"argument --sizes: {_RANGE} '{_SMALL}'"),
    (bench_hierarchy, ["--sizes", "500", str(_HUGE)], f"argument --sizes: {_RANGE} '{_HUGE}'"),
    (bench_hierarchy, ["--sizes", "500", "--factors", "4", "1"], "argument --factors: expected an integer >= 2, got '1'"),
    (bench_hierarchy, ["--sizes", "500", "--repeats", "0"], "argument --repeats: expected an integer >= 1, got '0'"),
    (bench_render, ["--budget", "-1"], "argument --budget: expected a finite number of seconds > 0, got '-1'"),
    (bench_render, ["--budget", "nan"], "argument --budget: expected a finite number of seconds > 0, got 'nan'"),
    (bench_render, ["--budget", "inf"], "argument --budget: expected a finite number of seconds > 0, got 'inf'"),
])
def test_a_scripts_bad_value_is_refused_with_its_option(tmp_path, capsys, script, argv, message):
    """--seed -1 said 'rng: expected a numpy Generator or a non-negative int seed'; --texture-size -1
    'texture_size: expected positive sizes, got (-1, -1)'; --spiral-length 0 'spiral_lengths[0]: ...'."""
    output = ["--output-dir", str(tmp_path)] if script is bench_hierarchy else ["--output", str(tmp_path / "r.json")]
    with pytest.raises(SystemExit) as stop:
        script.main([*argv, *output])
    assert stop.value.code == 2 and message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [MemoryError("Unable to allocate 74.5 GiB for an array"),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                                                "allocate memory: you tried to allocate 80000000000 bytes.")])
def test_a_scripts_out_of_memory_is_one_line(capsys, error):
    """bench_render --sizes 100000 ended in a traceback: an allocation failure is one line, as in the CLI."""
    from mesh_decoder.bench.report import script_main

    def main(argv):
        raise error

    assert script_main(main, []) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (") and err.endswith("; try smaller sizes\n") and err.count("\n") == 1
    assert str(error).split(":")[0] in err


def test_a_scripts_other_runtime_errors_are_raised():
    from mesh_decoder.bench.report import script_main

    def main(argv):
        raise RuntimeError("a bug, not a lack of memory")

    with pytest.raises(RuntimeError, match="a bug"):
        script_main(main, [])


def test_sweep_latent_removes_its_work_folder_when_it_fails(tmp_path, monkeypatch, capsys):
    """A sweep that failed after its setup began left its temporary work folder (sweep_latent_*) behind."""
    import tempfile

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    argv = ["--n", "3", "--latent-sizes", "4", "--splits", "interpolation", "--methods", "spiral", "--vertices", "500",
            "--epochs", "1", "--output", str(tmp_path / "r.json")]
    assert report.script_main(sweep_latent.main, argv) == 1
    err = capsys.readouterr().err
    assert "--vertices 500: hierarchy.factors: [4, 4, 4, 4] (from model.preset" in err and "leave 2 vertices" in err
    assert list(scratch.iterdir()) == [] and not (tmp_path / "r.json").exists()


def test_bench_render_without_memory_probes_says_so(tmp_path, capsys):
    """--no-memory printed 'peak +nan MiB' on every line."""
    argv = ["--sizes", "16", "--batches", "1", "--vertices", "500", "--budget", "0.05", "--no-memory", "--output",
            str(tmp_path / "r.json")]
    assert report.script_main(bench_render.main, argv) == 0
    out = capsys.readouterr().out
    assert out.count("peak not measured (--no-memory)") == 2 and "nan" not in out, out
