"""``benchmarks/gpu.sh``, the committed GPU run, checked here without a GPU.

The script runs on a lent GPU machine, where each minute counts; a stale option or a
renamed switch would waste that run. The script is executed with ``python3``,
``timeout`` and ``nvidia-smi`` replaced by shell functions that record their
arguments, and every recorded command is validated: each benchmark's options parse
and pass the harness's checks (with the device taken as CUDA), each variant's module
switch exists and differs from its default, and the CUDA test selection collects tests
in every file it names.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mesh_decoder.bench import harness

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"

# Each stub records its arguments NUL-separated, the call ended by a record separator (the -c code spans lines);
# timeout drops its own options and runs the command.
_STUBS = r'''
python3() { printf 'python3' >> "$GPU_LOG"; printf '\0%s' "$@" >> "$GPU_LOG"; printf '\036' >> "$GPU_LOG"; }
nvidia-smi() { :; }
timeout() { while [[ $1 == -* ]]; do [[ $1 == -s ]] && shift; shift; done; shift; "$@"; }
export -f python3 nvidia-smi timeout
'''


@pytest.fixture(scope="module")
def invocations(tmp_path_factory) -> list[list[str]]:
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    tmp = tmp_path_factory.mktemp("gpu_sh")
    log = tmp / "calls.log"
    env = dict(os.environ, GPU_LOG=str(log))
    run = subprocess.run(["bash", "-c", _STUBS + f'bash "{SCRIPT}" h.npz "{tmp / "out"}"'], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    calls = [record.split("\0") for record in log.read_text().split("\036")[:-1]]
    assert all(c[0] == "python3" for c in calls)
    return [c[1:] for c in calls]


def _bench_calls(invocations) -> list[tuple[str, list[str]]]:
    """``(code, bench arguments)`` of every ``python3 -c CODE bench ...`` call."""
    return [(c[1], c[3:]) for c in invocations if c[0] == "-c" and len(c) > 2 and c[2] == "bench"]


def test_the_script_runs_the_cuda_tests_and_six_benchmarks(invocations):
    pytest_calls = [c for c in invocations if c[:2] == ["-m", "pytest"]]
    assert len(pytest_calls) == 1
    assert len(_bench_calls(invocations)) == 6  # step 1 is the tests; steps 2-7 benchmark
    prefixes = [dict(zip(a, a[1:])).get("--file-prefix", "decode") for _, a in _bench_calls(invocations)]
    assert len(set(prefixes)) == len(prefixes), prefixes  # no step overwrites another's files


def test_every_benchmark_call_parses_and_passes_the_harness_checks(invocations, monkeypatch):
    parser = harness.add_bench_arguments(argparse.ArgumentParser())
    monkeypatch.setattr(harness, "_resolve_device", lambda name: torch.device(name))  # taken as present
    for _, argv in _bench_calls(invocations):
        args = parser.parse_args(argv)
        assert args.device == "cuda" and args.hierarchy == "h.npz" and args.no_progress
        options = harness.options_from_args(args)
        assert options.device.type == "cuda"
        assert options.time_box_s is not None and options.time_box_s > 0
        assert set(options.modes) <= set(harness.MODES) and set(options.dtypes) <= set(harness.DTYPES)


def test_the_profile_call_parses_and_profiles_cuda_graphs_on_the_saved_hierarchy(invocations):
    from benchmarks import profile_decode

    calls = [c for c in invocations if c[0] == "benchmarks/profile_decode.py"]
    assert len(calls) == 1, invocations
    args = profile_decode.parser().parse_args(calls[0][1:])
    assert args.hierarchy == "h.npz" and args.device == "cuda"
    assert set(args.modes) == {"eager", "cudagraph"} and args.batch == 1
    assert Path(args.output_dir).name == "out"  # the script's OUTPUT_DIR, beside the benchmarks' files


def test_each_variant_switch_exists_and_is_off_by_default(invocations):
    switches = {**harness._switches(), "harness.CAPTURE_IO": harness.CAPTURE_IO}  # recorded as capture_io
    seen = set()
    tail = "from mesh_decoder.cli import main; sys.exit(main(sys.argv[1:]))"
    for code, _ in _bench_calls(invocations):
        assert code.endswith(tail), code
        for name, value in re.findall(r"\b(\w+\.[A-Z_]+) = ([^;\n]+)", code):
            assert name in switches, f"{name}: not a switch the results record ({sorted(switches)})"
            assert switches[name] != eval(value, {}), f"{name}: the variant sets the default value"
            seen.add(name)
        modules = {name: importlib.import_module(f"{package}.{name}")
                   for package, name in re.findall(r"from ([\w.]+) import (\w+)", code[:-len(tail)])}
        for name in re.findall(r"\b(\w+\.[A-Z_]+) = ", code):
            module, attr = name.split(".")
            assert hasattr(modules[module], attr), name  # what the assignment sets is what the library reads
    assert {"spiral_conv.LATENCY_ROWS", "cheb_conv.BAG_ON_CUDA", "harness.CAPTURE_IO"} <= seen, seen


def test_the_cuda_test_selection_collects_tests_in_every_file(invocations):
    argv = next(c for c in invocations if c[:2] == ["-m", "pytest"])
    files = [a for a in argv if a.startswith("tests/")]
    assert files and all((ROOT / f).is_file() for f in files), files
    k = argv[argv.index("-k") + 1]
    # collected as on a GPU machine: the tests add their CUDA cases when torch.cuda.is_available()
    collect = ("import sys, torch; torch.cuda.is_available = lambda: True; import pytest; "
               "sys.exit(pytest.main(sys.argv[1:]))")
    run = subprocess.run([sys.executable, "-c", collect, "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-o", "addopts=", "-k", k, *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    collected = {line.split("::")[0] for line in run.stdout.splitlines() if "::" in line}
    assert collected == set(files), f"files with no CUDA test: {set(files) - collected}"


def test_every_test_file_with_cuda_cases_is_in_the_selection(invocations):
    """A file that gains CUDA cases must be added to the script, or the GPU run never runs them."""
    argv = next(c for c in invocations if c[:2] == ["-m", "pytest"])
    selected = {a for a in argv if a.startswith("tests/")}
    collect = ("import sys, torch; torch.cuda.is_available = lambda: True; import pytest; "
               "sys.exit(pytest.main(sys.argv[1:]))")
    run = subprocess.run([sys.executable, "-c", collect, "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-o", "addopts=", "-m", "cuda or not cuda", "-k", "cuda and not cudagraph", "tests"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with_cuda = {line.split("::")[0] for line in run.stdout.splitlines() if "::" in line}
    with_cuda.discard("tests/bench/test_gpu_script.py")  # this file: names, not CUDA cases
    assert {"tests/nn/test_texture.py", "tests/fit/test_fit.py"} <= with_cuda, sorted(with_cuda)
    assert with_cuda - selected == set(), f"CUDA cases gpu.sh does not run: {sorted(with_cuda - selected)}"


def test_the_steps_limits_leave_a_minute_of_the_machines_600_s_per_command():
    """The limits had added up to 585 s, so start-up and nvidia-smi could push the last step past the
    command limit; each step's time box must also end before its own limit."""
    text = SCRIPT.read_text()
    limits = {name: int(v) for name, v in re.findall(r"\$\{(GPU_\w+_TIMEOUT):-(\d+)\}", text)}
    assert len(limits) == 8 and sum(limits.values()) <= 540, limits
    boxes = {name: int(v) for name, v in re.findall(r"\$\{(GPU_\w*TIME_BOX):-(\d+)\}", text)}
    assert len(boxes) == 6
    for box, seconds in boxes.items():
        step = "GPU_BENCH_TIMEOUT" if box == "GPU_TIME_BOX" else box.replace("TIME_BOX", "TIMEOUT")
        assert seconds < limits[step], (box, seconds, limits[step])
