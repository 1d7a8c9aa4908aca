"""Peak CPU memory of one decode, each configuration measured in a process of its own.

The harness (:mod:`.harness`) asks for the peak memory of its CPU rows here. A
probe builds the decoder in a fresh process, resets the kernel's peak-RSS mark
(Linux ``clear_refs``), decodes once, and reports the peak resident set minus the
resident set before the decode (:func:`memory_probe`). Where ``os.fork`` exists,
probe servers (:func:`probe_server`) import the library once and fork a child per
configuration (:func:`serve_probes`), which can be stopped at the run's time box;
elsewhere each probe is a fresh interpreter (:func:`run_probe`, this module run as
``python -m mesh_decoder.bench.memory REQUEST_JSON``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from .roofline import DTYPES, precision

__all__ = ["memory_probe", "run_probe", "serve_probes", "probe_server"]

_REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout: benchmarks/ and the package (harness uses it too)


def _vm_status(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ``clear_refs``); ``False`` if impossible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return _vm_status("VmHWM") is not None
    except OSError:
        return False


def _maxrss_bytes() -> int:
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def memory_probe(request: Mapping[str, Any]) -> dict[str, Any]:
    """Peak CPU memory of one decode, measured in this (fresh) process.

    ``request``: ``name`` (built-in decoder), ``hierarchy`` (a saved ``.npz``),
    ``batch``, ``dtype``, ``mode`` (eager, compile or onnx with ``onnx_path``),
    ``threads``, ``seed``. The module is built (and, in compile mode, compiled
    by one decode); then the kernel's peak-RSS mark is reset and one decode runs:
    the result is its peak resident set minus the resident set before it.
    Where the mark cannot be reset, the first decode is measured with
    ``ru_maxrss`` instead (no warm-up). Run with ``MALLOC_MMAP_THRESHOLD_`` set so
    freed buffers return to the system.
    """
    from ..hierarchy.storage import load_hierarchy
    from .harness import _latent, build_decoder

    torch.set_num_threads(int(request.get("threads", 1)))
    hierarchy = load_hierarchy(request["hierarchy"])
    mode, batch = request["mode"], int(request["batch"])
    dtype = DTYPES[request["dtype"]][0]
    with precision(request["dtype"]):
        if mode == "onnx":
            from .onnx_export import OnnxRunner

            runner = OnnxRunner(request["onnx_path"], "cpu", threads=int(request.get("threads", 1)))
            latent_size = int(request["latent_size"])
        else:
            module, _ = build_decoder(request["name"], hierarchy, template=None, seed=int(request.get("seed", 0)))
            module = module.eval().to(dtype)
            latent_size = int(module.latent_size)
            runner = torch.compile(module) if mode == "compile" else module
        z = _latent(batch, latent_size, int(request.get("seed", 0))).to(dtype)  # (B, Z)
        gc.collect()
        with torch.inference_mode():
            if _reset_peak_rss():
                if mode == "compile":
                    out = runner(z)  # compilation (its memory is not the decode's)
                    del out
                    gc.collect()
                    _reset_peak_rss()
                before = _vm_status("VmRSS")
                out = runner(z)
                peak = _vm_status("VmHWM")
                method = "VmHWM after clear_refs, " + ("decode after compilation" if mode == "compile" else "first decode")
            else:
                before = _maxrss_bytes()
                out = runner(z)
                peak = _maxrss_bytes()
                method = "ru_maxrss, first decode"
        del out
    return {"peak_memory_mb": max(0, peak - before) / 2**20, "method": method}  # MiB, whatever the key's name says


def run_probe(request: dict, timeout_s: float = 600.0) -> dict[str, Any]:
    """One probe in a fresh interpreter (where ``os.fork`` is missing): the result dict, or ``{"error": ...}``."""
    env = probe_env(int(request.get("threads", 1)))
    cmd = [sys.executable, "-m", "mesh_decoder.bench.memory", json.dumps(request)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"error": f"memory probe timed out after {timeout_s:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"memory probe failed (exit {proc.returncode}): {tail}"}


def probe_env(threads: int) -> dict[str, str]:
    """The probes' environment: this checkout importable, freed buffers returned to the system, ``threads``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # freed buffers go back to the system
    env["OMP_NUM_THREADS"] = str(threads)
    return env


def serve_probes(todo: list[tuple[dict, dict]], workers: int, done: Callable[[dict, dict], None],
                  deadline: float | None = None, essential: int = 0) -> list[dict]:
    """Run probes through ``workers`` probe servers (:func:`probe_server`): each imports the
    library once, then forks a fresh child per configuration. At ``deadline`` (a
    :func:`time.perf_counter` value) probes still running are stopped (the server and
    its child are killed) and those not started are skipped; returns their rows. The
    first ``essential`` probes of ``todo`` (started first) run to the end whatever the
    deadline."""
    import queue
    import select
    import signal
    import threading

    jobs: "queue.Queue[tuple[dict, dict, float | None]]" = queue.Queue()
    for i, (row, request) in enumerate(todo):
        jobs.put((row, request, None if i < essential else deadline))
    lock = threading.Lock()
    threads = int(todo[0][1].get("threads", 1))
    skipped: list[dict] = []

    def serve() -> None:
        cmd = [sys.executable, "-c", "from mesh_decoder.bench.memory import probe_server; probe_server()"]
        # Its own process group: the server and the child it forks are killed together.
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, env=probe_env(threads), start_new_session=True)
        try:
            while True:
                try:
                    row, request, job_deadline = jobs.get_nowait()
                except queue.Empty:
                    return
                if job_deadline is not None and time.perf_counter() > job_deadline:
                    with lock:
                        skipped.append(row)
                    continue
                try:
                    proc.stdin.write(json.dumps(request) + "\n")
                    proc.stdin.flush()
                    if job_deadline is not None:  # one answer line per request: nothing is buffered
                        ready, _, _ = select.select([proc.stdout], [], [],
                                                    max(0.0, job_deadline - time.perf_counter()))
                        if not ready:  # the time box ends while this probe runs: stop it
                            with contextlib.suppress(ProcessLookupError):
                                os.killpg(proc.pid, signal.SIGKILL)
                            with lock:
                                skipped.append(row)
                            return
                    line = proc.stdout.readline()
                    result = json.loads(line) if line.strip() else {"error": "memory probe server died"}
                except (OSError, ValueError) as exc:
                    result = {"error": f"memory probe server: {exc}"}
                with lock:
                    done(row, result)
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    pool = [threading.Thread(target=serve, daemon=True) for _ in range(min(workers, len(todo)))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    while not jobs.empty():  # left by servers stopped at the deadline
        skipped.append(jobs.get_nowait()[0])
    return skipped


def probe_server() -> None:
    """Serve memory probes: one JSON request per stdin line, one JSON answer per stdout line.

    The server only imports the library; every request runs in a child forked for it,
    so each configuration is measured in its own process without paying for imports.
    """
    import mesh_decoder.hierarchy.storage  # noqa: F401 - preload
    import mesh_decoder.nn.presets  # noqa: F401
    import mesh_decoder.pca  # noqa: F401

    for line in sys.stdin:
        if not line.strip():
            continue
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, answer, exit without cleanup
            os.close(read_fd)
            try:
                result = _probe_in_child(json.loads(line))
            except BaseException as exc:  # noqa: BLE001 - the parent reports it
                result = {"error": f"{type(exc).__name__}: {exc}"}
            data = (json.dumps(result) + "\n").encode()
            while data:
                data = data[os.write(write_fd, data):]
            os._exit(0)
        os.close(write_fd)
        chunks = []
        while True:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
        answer = b"".join(chunks).decode().strip()
        if not answer:
            answer = json.dumps({"error": f"memory probe child exited with status {status}"})
        sys.stdout.write(answer + "\n")
        sys.stdout.flush()


def _return_freed_memory() -> None:
    """Make glibc hand buffers >= 64 KiB back to the system when freed (fixed mmap threshold)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 65536)  # M_MMAP_THRESHOLD: also turns off the dynamic threshold
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _probe_in_child(request: dict) -> dict[str, Any]:
    _return_freed_memory()
    os.environ["OMP_NUM_THREADS"] = str(request.get("threads", 1))
    try:
        return memory_probe(request)
    except Exception as exc:  # noqa: BLE001 - reported on the row, the run goes on
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]}


if __name__ == "__main__":  # one probe, the request as JSON in argv[1], the answer as one JSON line
    _return_freed_memory()
    print(json.dumps(memory_probe(json.loads(sys.argv[1]))))
