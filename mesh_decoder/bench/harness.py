"""The decoding throughput benchmark (``mesh-decoder bench``).

For every configuration (decoder x device x dtype x mode x batch size) the
harness

1. decodes fresh random latents (``torch.randn`` with a seeded generator) and
   measures the maximum error against the same decoder's fp32 eager output,
   relative to that output's scale (``max |y - y_fp32| / max |y_fp32|``); a
   configuration over its tolerance is marked ``failed`` and not timed;
2. times the decode under :func:`torch.inference_mode` with warm-up excluded,
   as the median of repeats whose count adapts to a time budget; the
   configurations of one (batch, dtype) group run in interleaved rounds, so the
   fast decoders and the reference see the same machine load;
   at batch 1 the timed call includes copying the latent in and the outputs out
   to the CPU, with a synchronisation after each call;
3. measures the peak memory of one decode in MiB (2**20 bytes; a row's
   ``peak_memory_mb``, a name kept so that earlier result files read the same):
   on CUDA with the allocator's peak statistics, on the CPU in a fresh process
   per configuration (the peak resident set during one decode minus the resident
   set before it; by default for the eager rows and for every mode at the largest
   batch, ``--memory all`` for every row; :mod:`.memory`);
4. relates the throughput to roofs measured in the same run: a square fp32
   matrix product (GFLOP/s), a big copy (GB/s), and the decoder's own
   matrix-product shapes timed alone (the *shape bound*, meshes/s); FLOPs and
   minimum bytes per mesh are counted analytically (:mod:`.roofline`).

Results go to ``--output-dir`` (default ``out/bench/``, which git ignores, so a run
never touches the committed results in ``benchmarks/results/``) as JSON and CSV
(with the environment) and a PNG plot, named by machine, e.g.
``decode_cpu-<cpu>-<N>threads.json``; they are rewritten after every group, so
a run that ends early leaves complete files for the configurations that
finished (ended before the first group does, it writes nothing and an earlier
run's files stay as they were). The first write removes an earlier run's plot of
the same name, which would show another run; the plot is written at the end
(unless ``--no-plot``), and the report lists only the files the run wrote.
Until the last write, a file's environment has
``"complete": false``, which the last write sets to ``true``; a run ended by
Ctrl-C adds ``"interrupted": true``, one ended by an error ``"failed":
"<ExceptionType>: <message>"`` (the CSV's comment lines say the same). Files
written before these keys existed have none of them, and are complete. The
thread count is set with :func:`torch.set_num_threads` for the run only (and
restored afterwards). The default run keeps to a time box
(``--time-box``, 160 s, so that with start-up it ends within 3 minutes on 2 cores):
slow groups then take fewer samples (at least 2), and memory probes still running
at its end are stopped and those not started are skipped, except the two the
memory target compares (the spiral decoder and its reference, eager, largest
batch), which always run. Compiling is not bounded by the box: with inductor's
cache cold (a fresh machine) the default run measured 2 min 55 s here, warm
2 min 44 s; on a slower day of the same machine, cold 4 min 43 s and warm 2 min
45 s (compiling, about 40 gcc kernels per COMA graph, took twice as long).
Each row records ``first_call_s``, the seconds from making its runner to the end of
its first call (the error check): CUDA graph capture and compiling happen there, so
it shows what compiling cost; the printed report sums it over the compiled rows.

The reference decoder (``benchmarks/reference/decoder.py``, the formulation of
the public SpiralNet++ code) is timed eager and compiled beside the fast spiral
decoder; speed-ups are reported against the better of the two.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import gc
import importlib.util
import math
import os
import re
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from .._checks import (MAX_SEED, check_device, check_int, check_output_path, int_argument, is_terminal,
                       one_line_error, real_argument)
from ..errors import UsageError
from . import report
from .roofline import (
    DTYPES,
    DecoderCost,
    copy_bandwidth,
    coo_upsample_cost,
    decoder_cost,
    gemm_closure,
    matmul_roof,
    precision,
    register_cost,
    spiral_conv_cost,
)
from .memory import _REPO_ROOT, run_probe, serve_probes
from .timing import synchronize, time_fn, time_interleaved

__all__ = [
    "DecoderSpec",
    "BenchOptions",
    "BUILTIN_DECODERS",
    "DEFAULT_DECODERS",
    "DEFAULT_OUTPUT_DIR",
    "MODES",
    "PRESET_OF",
    "TOLERANCES",
    "add_bench_arguments",
    "build_decoder",
    "default_specs",
    "load_reference_module",
    "main",
    "max_relative_error",
    "options_from_args",
    "run_benchmark",
    "run_from_args",
    "run_scaling",
]

#: Built-in decoders: name -> description.
BUILTIN_DECODERS: dict[str, str] = {
    "spiralnet++-coma": "SpiralNet++ decoder, COMA setting (latent 16, channels 32-32-32-64, spirals of 9)",
    "coma": "COMA Chebyshev decoder (K=6, latent 8, channels 16-16-16-32)",
    "joint": "joint shape + UV texture (spiralnet++-coma, 6 channels, mesh texture branch)",
    "pca": "linear 3DMM (PCA, 16 components, fitted on synthetic faces)",
    "reference": "reference SpiralNet++ formulation (index_select + view + Linear, COO pooling)",
}
DEFAULT_DECODERS: tuple[str, ...] = tuple(BUILTIN_DECODERS)
#: The preset (:data:`~mesh_decoder.nn.presets.PRESETS`) each built-in decoder's hierarchy must fit (pca: none).
PRESET_OF: dict[str, str] = {"spiralnet++-coma": "spiralnet++-coma", "coma": "coma",
                             "joint": "spiralnet++-coma", "reference": "spiralnet++-coma"}
MODES: tuple[str, ...] = ("eager", "compile", "cudagraph", "compile-cudagraph", "onnx")
DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 32, 256)
QUICK_BATCH_SIZES: tuple[int, ...] = (1, 16)
#: Maximum relative error against fp32 eager, per dtype.
TOLERANCES: dict[str, float] = {"fp32": 1e-4, "tf32": 1e-2, "bf16": 5e-2, "fp16": 1e-2}
SCALING_SIZES: tuple[int, ...] = (1000, 2000, 5000, 10000, 20000, 50000, 100000)
QUICK_SCALING_SIZES: tuple[int, ...] = (1000, 2000, 5000)
#: Where result files go unless told (relative to the working folder; git ignores ``out/``).
#: The committed runs the README's tables are generated from are in ``benchmarks/results/``.
DEFAULT_OUTPUT_DIR = "out/bench"
#: ``--texture-size`` unless given: the texel map of the hierarchy the CLI builds for the joint decoder.
DEFAULT_TEXTURE_SIZE = 256
#: Batch-1 ``cudagraph`` rows with the latent's copy in and the outputs' copies out
#: captured in the CUDA graph itself, between page-locked host buffers and the
#: graph's tensors: a timed call is then a host copy into the staging buffer, one
#: replay and a synchronisation, instead of three launches. Off until measured on a
#: GPU: ``benchmarks/gpu.sh`` runs it as a variant (``decode-io_*`` files).
CAPTURE_IO = False


# ---------------------------------------------------------------------------- specs
@dataclass
class DecoderSpec:
    """A decoder to benchmark.

    Attributes:
        name: unique name (a row's ``decoder``).
        module: the fp32 eager module on the benchmark device; ``module(z)`` with
            ``z`` ``(B, Z)`` returns a tensor or a tuple of tensors.
        latent_size: ``Z``.
        description: one line for the result file.
        baseline: the decoder whose fp32 eager output this one's errors are
            measured against (default: itself); the reference uses the fast
            spiral decoder, so its speed-up is measured on equal outputs.
        reference_for: this decoder is the reference implementation of that one.
        recipe: how a memory-probe subprocess rebuilds the module
            (``{"name": builtin name}``); ``None``: no CPU memory probe.
        tolerances: per-dtype overrides of :data:`TOLERANCES`.
        modes: restrict the modes this decoder runs in (default: all requested).
    """

    name: str
    module: nn.Module
    latent_size: int
    description: str = ""
    baseline: str | None = None
    reference_for: str | None = None
    recipe: dict | None = None
    tolerances: dict[str, float] | None = None
    modes: tuple[str, ...] | None = None

    def tolerance(self, dtype: str) -> float:
        return float((self.tolerances or {}).get(dtype, TOLERANCES[dtype]))


@dataclass
class BenchOptions:
    """Options of one benchmark run (see :func:`add_bench_arguments` for the CLI).

    Attributes:
        device: where to run.
        batch_sizes: batch sizes, ascending.
        modes: subset of :data:`MODES`.
        dtypes: subset of ``fp32, tf32, bf16, fp16``.
        threads: CPU threads (``torch.set_num_threads`` during the run).
        output_dir: where result files go; ``None`` writes nothing.
        time_budget_s: seconds of timing samples for the whole run, shared by
            the groups (each config still gets ``min_repeats`` samples).
        time_box_s: wall-clock seconds the whole run should fit in, counted from
            ``started_at``, finite and >= 0 (``None``: no limit). Slow groups then take fewer than
            ``min_repeats`` samples (never fewer than 2), and CPU memory probes not
            started by the end are skipped (except with ``memory="all"``, and the
            eager probes at the largest batch of a decoder and its reference).
        started_at: :func:`time.perf_counter` value the time box counts from
            (default: when :func:`run_benchmark` starts; the options are not changed,
            so they can be reused for another run).
        min_repeats: samples per configuration at least (default 3).
        max_repeats: samples per configuration at most (default 30).
        warmup: untimed calls per configuration after the error check (default 1;
            on the CPU none where the error check took over 0.2 s: it was the warm-up).
        memory: CPU peak-memory probes: ``"all"`` rows, ``"auto"`` (eager rows, and the
            other modes at the largest batch: a compiled probe compiles again, which
            does not fit the default run's time box), ``"eager"`` rows, or ``"off"``.
        progress: show a tqdm progress bar.
        plot: write the PNG.
        print_table: print the table at the end.
        seed: seed of the latents and of the weights.
        matmul_n: size of the square matrix product roof (half precision on the CPU:
            at most this, see :func:`~.roofline.matmul_roof`; the roof records the size used).
        bandwidth_mb: size of the tensor the copy-bandwidth roof copies
            (default 256 MiB on the CPU, 1 GiB on CUDA).
        file_prefix: result file names start with this (default ``"decode"``).
        hierarchy_path: saved hierarchy the memory probes load (set by the harness).
        context: extra environment entries (template, hierarchy sizes ...).
    """

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    modes: tuple[str, ...] = ("eager", "compile")
    dtypes: tuple[str, ...] = ("fp32",)
    threads: int = 1
    output_dir: str | None = DEFAULT_OUTPUT_DIR
    time_budget_s: float = 30.0
    time_box_s: float | None = None
    started_at: float | None = None
    min_repeats: int = 3
    max_repeats: int = 30
    warmup: int = 1
    memory: str = "auto"
    progress: bool = True
    plot: bool = True
    print_table: bool = True
    seed: int = 0
    matmul_n: int = 2048
    bandwidth_mb: int | None = None
    file_prefix: str = "decode"
    hierarchy_path: str | None = None
    context: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------ decoders
def reference_path() -> Path:
    """``benchmarks/reference/decoder.py`` of the source tree this package runs from (an installed wheel has
    none: the frozen reference is part of the repository, not of the library)."""
    return _REPO_ROOT / "benchmarks" / "reference" / "decoder.py"


def load_reference_module():
    """Import ``benchmarks/reference/decoder.py`` from the source tree (never another importable
    ``benchmarks`` package: a user's own project may have one)."""
    path = reference_path()
    name = "mesh_decoder_bench_reference"
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise ImportError(
            f"the reference decoder is part of the repository, not of the installed package ({path} not found): "
            "install from a clone with pip install -e, or leave 'reference' out of --decoders"
        )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:  # not half-loaded for the next call
        sys.modules.pop(name, None)
        raise
    register_cost(module.ReferenceSpiralConv, spiral_conv_cost)
    register_cost(module.ReferenceUpSample, coo_upsample_cost)
    return module


def _synthetic_vertices(template, n: int, seed: int) -> tuple[np.ndarray, str]:
    """``n`` synthetic faces ``(n, V, 3)`` on ``template`` for fitting the PCA model."""
    try:
        from ..data.synthetic import SyntheticFaces

        faces = SyntheticFaces(template, seed=seed)
        params = faces.sample_params(n, np.random.default_rng(seed))
        vertices, _colors = faces.generate(params)
        return np.asarray(vertices, dtype=np.float32), "synthetic faces (mesh_decoder.data.synthetic)"
    except (ImportError, ValueError, TypeError, KeyError):  # not a face-like template: fall back below
        pass
    # Without the generator: smooth random deformations of the template (a sum of
    # random low-frequency fields), enough to give PCA a meaningful spectrum.
    rng = np.random.default_rng(seed)
    v = np.asarray(template.vertices, dtype=np.float64)
    centred = (v - v.mean(0)) / (np.abs(v - v.mean(0)).max() + 1e-12)  # (V, 3) in [-1, 1]
    freqs = rng.normal(size=(24, 3)) * 2.0
    basis = np.sin(centred @ freqs.T + rng.uniform(0, 2 * np.pi, 24))  # (V, 24)
    coeff = rng.normal(size=(n, 24, 3)) * 2.0  # (n, 24, 3) mm
    out = v[None] + np.einsum("vk,nkc->nvc", basis, coeff)  # (n, V, 3)
    return out.astype(np.float32), "smooth random deformations of the template"


def build_decoder(
    name: str,
    hierarchy,
    *,
    template=None,
    seed: int = 0,
    pca_faces: int = 200,
    spiral: nn.Module | None = None,
) -> tuple[nn.Module, str]:
    """Build a built-in decoder on ``hierarchy`` with seeded weights.

    Args:
        name: a key of :data:`BUILTIN_DECODERS`.
        hierarchy: a :class:`~mesh_decoder.hierarchy.MeshHierarchy` built with the
            presets' factors (4, 4, 4, 4).
        template: the template mesh (fits the PCA model on synthetic faces of it);
            ``None`` gives the PCA model placeholder components (same cost).
        seed: weight initialisation seed.
        pca_faces: synthetic faces the PCA model is fitted on (default 200).
        spiral: for ``"reference"``, the spiral decoder to copy (default: build one
            with the same seed).

    Returns:
        ``(module, description)``.
    """
    if name not in BUILTIN_DECODERS:
        raise ValueError(f"decoder: expected one of {sorted(BUILTIN_DECODERS)}, got {name!r}")
    description = BUILTIN_DECODERS[name]
    with torch.random.fork_rng(devices=[]), _built_on(name):
        torch.manual_seed(seed)
        if name in ("spiralnet++-coma", "coma"):
            from ..nn.presets import decoder_from_preset

            return decoder_from_preset(name, hierarchy), description
        if name == "joint":
            from ..nn.decoders import JointDecoder
            from ..nn.presets import decoder_from_preset

            if hierarchy.texel_map is None:
                raise ValueError("decoder 'joint': the hierarchy has no texel map (build it with a texture size)")
            graph = decoder_from_preset("spiralnet++-coma", hierarchy, out_channels=6)
            h, w = hierarchy.texel_map.size
            return JointDecoder(graph, "mesh", hierarchy.texel_map), f"{description}, {h}x{w} texture"
        if name == "pca":
            from ..pca import PCAModel

            num_vertices = hierarchy.sizes[0]
            if template is None:
                return PCAModel(num_vertices, 16), description + " (placeholder components)"
            data, source = _synthetic_vertices(template, pca_faces, seed)
            model = PCAModel.fit(torch.from_numpy(data), num_components=16)
            return model.to(torch.float32), f"linear 3DMM (PCA, 16 components, fitted on {pca_faces} {source})"
        # reference
        module = load_reference_module()
        if spiral is None:
            spiral, _ = build_decoder("spiralnet++-coma", hierarchy, seed=seed)
        return module.ReferenceSpiralDecoder.from_decoder(spiral), description


def _decoder_label(name: str) -> str:
    """The decoder ``name``, with the preset it is built on where that has another name."""
    preset = PRESET_OF.get(name, name)
    return name if preset == name else f"{name} (built on the {preset} preset)"


@contextlib.contextmanager
def _built_on(name: str) -> Iterator[None]:
    """Inside, a hierarchy that does not fit the preset of decoder ``name`` is said to be that decoder's
    (``joint`` and ``reference`` are built on ``spiralnet++-coma``, whose name the preset's error gives)."""
    from ..errors import HierarchyError

    try:
        yield
    except HierarchyError as exc:
        if PRESET_OF.get(name, name) == name or str(exc).startswith("decoder "):
            raise
        raise HierarchyError(f"decoder {_decoder_label(name)}: {exc}") from exc


def _hierarchy_command(preset: str) -> str:
    """The ``mesh-decoder hierarchy`` command line that builds a hierarchy fitting ``preset``."""
    from ..nn.presets import preset_hierarchy_params

    params = preset_hierarchy_params(preset)
    words = ["mesh-decoder hierarchy MESH --factors", *(f"{f:g}" for f in params["factors"])]
    if "spiral_lengths" in params:
        words += ["--spiral-length", str(params["spiral_lengths"])]
    return " ".join([*words, "-o HIERARCHY.npz"])


def _check_presets_fit(names: Sequence[str], hierarchy) -> None:
    """``HierarchyError`` for the first of the decoders ``names`` whose preset ``hierarchy`` does not fit.

    The message names the decoder (and the preset it is built on) and the ``mesh-decoder hierarchy``
    command that builds a hierarchy fitting it (:func:`_hierarchy_command`): the CLI's advice, where the
    preset's own error gives Python's (``build_hierarchy(mesh, **preset_hierarchy_params(...))``).
    """
    from ..errors import HierarchyError
    from ..nn.presets import preset_hierarchy_params, preset_mismatch

    for name in names:
        preset = PRESET_OF.get(name)
        mismatch = None if preset is None else preset_mismatch(preset, hierarchy)
        if mismatch is None:
            continue
        kind, value = mismatch
        found = {"factors": f"one built with factors {value}", "levels": f"one of {value} levels",
                 "spiral_length": f"one with spirals of {value}"}[kind]
        params = preset_hierarchy_params(preset)
        length = params.get("spiral_lengths")
        needs = f"factors {tuple(params['factors'])}" + (f" and spirals of at least {length}" if length else "")
        raise HierarchyError(f"decoder {_decoder_label(name)}: expected a hierarchy with {needs}, got {found}; "
                             f"build one with: {_hierarchy_command(preset)}")


def default_specs(
    names: Sequence[str],
    hierarchy,
    device: torch.device | str = "cpu",
    *,
    template=None,
    seed: int = 0,
    pca_faces: int = 200,
) -> list[DecoderSpec]:
    """:class:`DecoderSpec` of built-in decoders, on ``device`` in fp32."""
    device = torch.device(device)
    specs: list[DecoderSpec] = []
    built: dict[str, nn.Module] = {}
    for name in names:
        spiral = built.get("spiralnet++-coma")
        if name == "reference" and spiral is None:
            with _built_on(name):
                spiral, _ = build_decoder("spiralnet++-coma", hierarchy, seed=seed)
        module, description = build_decoder(
            name, hierarchy, template=template, seed=seed, pca_faces=pca_faces, spiral=spiral
        )
        module = module.to(device).eval()
        built[name] = module
        specs.append(
            DecoderSpec(
                name=name,
                module=module,
                latent_size=int(module.latent_size),
                description=description,
                baseline="spiralnet++-coma" if name == "reference" and "spiralnet++-coma" in names else None,
                reference_for="spiralnet++-coma" if name == "reference" else None,
                recipe={"name": name},
            )
        )
    return specs


# ---------------------------------------------------------------------- utilities
def _outputs(out: object) -> list[torch.Tensor]:
    """Floating tensors of a decoder output (a tensor, a (Named)tuple or a list)."""
    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _outputs(item)]
    return []


def max_relative_error(outputs: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """``max |y - r| / max |r|`` over every output pair (``inf`` on mismatch or non-finite values)."""
    if len(outputs) != len(reference) or not reference:
        return math.inf
    worst = 0.0
    for y, r in zip(outputs, reference):
        if tuple(y.shape) != tuple(r.shape):
            return math.inf
        r32 = r.detach().to("cpu", torch.float32)
        y32 = y.detach().to("cpu", torch.float32)
        scale = float(r32.abs().max()) if r32.numel() else 0.0
        diff = float((y32 - r32).abs().max()) if r32.numel() else 0.0
        if not (math.isfinite(diff) and math.isfinite(scale)):
            return math.inf
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


def _latent(batch: int, size: int, seed: int) -> torch.Tensor:
    """Standard-normal latents ``(B, Z)`` from a generator seeded by ``seed``, ``batch`` and ``size`` (CPU, fp32)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + batch * 101 + size)
    return torch.randn(batch, size, generator=gen)  # (B, Z)


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def _dynamo_limits() -> Iterator[None]:
    """Raise dynamo's recompile limit for the run: every decoder x dtype x shape compiles once."""
    try:
        import torch._dynamo.config as dyn
    except ImportError:  # pragma: no cover
        yield
        return
    names = [n for n in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                         "accumulated_cache_size_limit") if hasattr(dyn, n)]
    old = {n: getattr(dyn, n) for n in names}
    try:
        for n in names:
            setattr(dyn, n, max(old[n], 256 if "accumulated" in n else 64))
        yield
    finally:
        for n, v in old.items():
            setattr(dyn, n, v)


def _cast(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    return module if dtype == torch.float32 else copy.deepcopy(module).to(dtype)


class _CudaGraphRunner:
    """Capture ``module(z)`` for a fixed batch in a CUDA graph; replay with new latents.

    With ``capture_io`` the graph also copies the latent in from a page-locked host
    buffer and the outputs out to page-locked host buffers (:data:`CAPTURE_IO`); a
    call then returns those host buffers, valid once the stream is synchronised.
    """

    def __init__(self, module: nn.Module, z: torch.Tensor, capture_io: bool = False):
        # captured on -z, so that the error check's call with z (the row's latent) proves the graph reads
        # its input: a graph that ignored it would give the output of -z and fail the check
        self.static_z = -z
        self.captures_io = capture_io
        stream = torch.cuda.Stream(device=z.device)
        stream.wait_stream(torch.cuda.current_stream(z.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                warm = module(self.static_z)
        torch.cuda.current_stream(z.device).wait_stream(stream)
        if capture_io:  # page-locked buffers are allocated before the capture, which cannot allocate them
            self.host_z = torch.empty(z.shape, dtype=z.dtype, pin_memory=True)
            self.host_z.copy_(self.static_z)
            self.host_out = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in _outputs(warm)]
        del warm
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            if capture_io:
                self.static_z.copy_(self.host_z, non_blocking=True)
            self.static_out = module(self.static_z)
            if capture_io:
                for host, t in zip(self.host_out, _outputs(self.static_out)):
                    host.copy_(t, non_blocking=True)

    def __call__(self, z: torch.Tensor):
        if self.captures_io:
            self.host_z.copy_(z)  # the latent into the staging buffer the graph copies from
            self.graph.replay()
            return self.host_out
        self.static_z.copy_(z, non_blocking=True)
        self.graph.replay()
        return self.static_out


# ------------------------------------------------------------------------ probes
def _switches() -> dict[str, Any]:
    """The library's off-by-default fast-path switches as this run has them (variants set them)."""
    from ..nn import cheb_conv, spiral_conv

    return {"spiral_conv.GATHER_PROJECT_ROWS": spiral_conv.GATHER_PROJECT_ROWS,
            "spiral_conv.LATENCY_ROWS": spiral_conv.LATENCY_ROWS, "cheb_conv.BAG_ON_CUDA": cheb_conv.BAG_ON_CUDA}


# ----------------------------------------------------------------------- the run
def _result_paths(options: BenchOptions, slug: str) -> dict[str, Path] | None:
    if options.output_dir is None:
        return None
    out = Path(options.output_dir)
    stem = f"{options.file_prefix}_{slug}"
    return {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "png": out / f"{stem}.png"}


def _csv_comments(env: Mapping[str, Any]) -> dict[str, Any]:
    """The environment entries a result CSV starts with: the machine, and whether the run finished."""
    keys = ("device", "cpu", "gpu", "threads", "torch", "git_commit", "date", "complete")
    return {k: env.get(k) for k in keys} | {k: env[k] for k in ("interrupted", "failed") if k in env}


def _write_unfinished(payload: dict, exc: BaseException, paths: dict[str, Path] | None, finished: str,
                      write: Callable[[], None]) -> None:
    """Record why a run whose ``finished`` results were written ended early, and rewrite its files.

    The environment keeps ``"complete": false`` and gets ``"interrupted": true`` (Ctrl-C) or
    ``"failed": "<ExceptionType>: <message>"`` (``exc``, any other error); ``write`` rewrites the files.
    One line on stderr names them; a rewrite that fails as well is said there, and not raised: the
    caller raises ``exc``, the error that ended the run.
    """
    env = payload["environment"]
    env["complete"] = False
    if isinstance(exc, KeyboardInterrupt):
        env["interrupted"] = True
        what = "interrupted"
    else:
        env["failed"] = f"{type(exc).__name__}: {one_line_error(exc)}"[:300]
        what = "failed"
    try:
        write()
    except Exception as again:  # noqa: BLE001 - the error that ended the run is the one raised
        if paths is not None:
            print(f"{what}: could not rewrite {paths['json']} and {paths['csv']} to say so "
                  f"({type(again).__name__}: {one_line_error(again)})", file=sys.stderr)
        return
    if paths is not None:
        print(f"{what}: wrote {finished} to {paths['json']} and {paths['csv']}"
              + ("" if what == "interrupted" else ", marked failed"), file=sys.stderr)


@dataclass
class _Written:
    """The result files a run has written so far (by kind: ``json``, ``csv``, ``png``), and the plot
    of an earlier run it removed (``None``: there was none)."""

    files: dict[str, Path] = field(default_factory=dict)
    stale_plot: Path | None = None


def _remove_stale_plot(paths: dict[str, Path], written: _Written) -> None:
    """At a run's first write, remove an earlier run's plot of the same name: beside the new JSON and CSV it
    would show another run (this run's plot, if any, is written at its end). One that cannot be removed stays,
    unclaimed."""
    if written.files or not paths["png"].is_file():
        return
    with contextlib.suppress(OSError):
        paths["png"].unlink()
        written.stale_plot = paths["png"]


def _write(payload: dict, paths: dict[str, Path] | None, plot: bool, warn: Callable[[str], None],
           written: _Written) -> None:
    """Write the JSON and CSV (and, with ``plot``, the PNG), recording each file in ``written``."""
    if paths is None:
        return
    _write_data(payload, payload["rows"], paths, written)
    env = payload["environment"]
    if plot:
        try:
            title = f"{env.get('gpu') or env.get('cpu')} ({env.get('device')}, {env.get('threads')} threads)"
            report.plot_throughput(payload["rows"], paths["png"], title=title)
            written.files["png"] = paths["png"]
        except ImportError as exc:
            warn(str(exc))


def _write_data(payload: dict, rows: list[dict], paths: dict[str, Path], written: _Written,
                columns: Sequence[str] = report.ROW_COLUMNS) -> None:
    """The JSON of ``payload`` and the CSV of ``rows`` (its ``columns``, default the result rows'), the first
    time removing an earlier run's plot; each file recorded in ``written``."""
    _remove_stale_plot(paths, written)
    report.write_json(paths["json"], payload)
    written.files["json"] = paths["json"]
    report.write_csv(paths["csv"], rows, columns=columns, comments=_csv_comments(payload["environment"]))
    written.files["csv"] = paths["csv"]


def _written_line(written: _Written) -> str | None:
    """``wrote A, B[, C]`` naming the files this run wrote (and the earlier run's plot it removed), or ``None``."""
    if not written.files:
        return None
    line = "wrote " + ", ".join(str(p) for p in written.files.values())
    if written.stale_plot is not None and "png" not in written.files:
        line += f"; removed {written.stale_plot}, an earlier run's plot"
    return line


def _add_note(row: dict, text: str, replace: str | None = None) -> None:
    """Add ``text`` to the row's note (``"; "``-joined): in place of a part starting with ``replace``, else last."""
    parts = [p for p in (row.get("note") or "").split("; ") if p]
    at = next((i for i, p in enumerate(parts) if replace and p.startswith(replace)), None)
    if at is None:
        parts.append(text)
    else:
        parts[at] = text
    row["note"] = "; ".join(parts)


def _annotate(rows: list[dict], specs: Mapping[str, DecoderSpec]) -> None:
    """Speed-ups and memory ratios against the better reference configuration (idempotent)."""
    for spec in specs.values():
        if not spec.reference_for:
            continue
        for row in rows:
            if row["decoder"] != spec.reference_for or row["status"] != "ok":
                continue
            refs = [r for r in rows if r["decoder"] == spec.name and r["status"] == "ok"
                    and (r["device"], r["dtype"], r["batch"]) == (row["device"], row["dtype"], row["batch"])
                    and r["mode"] in ("eager", "compile")]
            if refs:
                best = max(refs, key=lambda r: r["meshes_per_s"])
                row["speedup_vs_reference"] = row["meshes_per_s"] / best["meshes_per_s"]
                _add_note(row, f"reference best: {best['mode']}", replace="reference best: ")
                mems = [r["peak_memory_mb"] for r in refs if r.get("peak_memory_mb")]
                if mems and row.get("peak_memory_mb") is not None:
                    row["memory_vs_reference"] = row["peak_memory_mb"] / min(mems)


def _summary(rows: list[dict], specs: Mapping[str, DecoderSpec]) -> list[dict]:
    out = []
    for row in rows:
        if row.get("speedup_vs_reference") is None:
            continue
        out.append({k: row.get(k) for k in (
            "decoder", "device", "dtype", "mode", "batch", "meshes_per_s", "speedup_vs_reference",
            "fraction_shape_bound", "fraction_compute_roof", "peak_memory_mb", "memory_vs_reference", "note")})
    return out


def _tqdm(total: int, enabled: bool):
    """A progress bar over ``total`` steps, or a context of ``None`` when disabled (then tqdm is not
    even imported: in a notebook without ipywidgets, importing ``tqdm.auto`` prints a warning)."""
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="bench", unit="config", leave=False, dynamic_ncols=True, file=sys.stderr)


MEMORY_CHOICES: tuple[str, ...] = ("all", "auto", "eager", "off")


def _check_options(options: BenchOptions) -> None:
    """``ValueError``/``TypeError`` for option values the run cannot use, before any work.

    A batch size of 0 divided by zero after the timing; an empty batch, dtype or mode
    list ran nothing and replaced an earlier run's result files with empty ones.
    """
    for dtype in options.dtypes:
        if dtype not in DTYPES:
            raise ValueError(f"dtypes: expected some of {sorted(DTYPES)}, got {dtype!r}")
    for mode in options.modes:
        if mode not in MODES:
            raise ValueError(f"modes: expected some of {list(MODES)}, got {mode!r}")
    if options.time_box_s is not None and not _is_seconds(options.time_box_s):
        raise ValueError(f"time_box_s: expected None or a finite number of seconds >= 0, got {options.time_box_s!r}")
    check_int(options.seed, "seed", 0)
    for what in ("batch_sizes", "dtypes", "modes"):
        if not tuple(getattr(options, what)):
            raise ValueError(f"{what}: expected at least one value, got none")
    for batch in options.batch_sizes:
        check_int(batch, "batch_sizes", 1)
    check_int(options.threads, "threads", 1)
    check_int(options.min_repeats, "min_repeats", 1)
    check_int(options.max_repeats, "max_repeats", 1)
    check_int(options.warmup, "warmup", 0)
    check_int(options.matmul_n, "matmul_n", 1)
    if options.bandwidth_mb is not None:
        check_int(options.bandwidth_mb, "bandwidth_mb", 1)
    if options.memory not in MEMORY_CHOICES:
        raise ValueError(f"memory: expected one of {list(MEMORY_CHOICES)}, got {options.memory!r}")
    if not _is_seconds(options.time_budget_s):
        raise ValueError(f"time_budget_s: expected a finite number of seconds >= 0, got {options.time_budget_s!r}")


def _is_seconds(value: object) -> bool:
    """Whether ``value`` is a finite real number of seconds ``>= 0`` (bools are not)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value < math.inf


def run_benchmark(specs: Sequence[DecoderSpec], options: BenchOptions) -> dict[str, Any]:
    """Benchmark decoders; write and return the results.

    Args:
        specs: the decoders (fp32 modules on ``options.device``).
        options: see :class:`BenchOptions`.

    Returns:
        The payload written to JSON: ``environment``, ``options``, ``roofs``,
        ``decoders`` (description, cost), ``rows`` (one per configuration) and
        ``summary`` (the configurations that have a reference).
    """
    specs_by_name: dict[str, DecoderSpec] = {}
    for spec in specs:
        if spec.name in specs_by_name:
            raise ValueError(f"decoders: names must be unique, got {spec.name!r} twice")
        specs_by_name[spec.name] = spec
    for spec in specs:
        for other in (spec.baseline, spec.reference_for):
            if other is not None and other not in specs_by_name:
                raise ValueError(f"decoder {spec.name!r}: refers to {other!r}, which is not benchmarked")
    device = torch.device(options.device)
    _check_options(options)
    if not specs:
        raise ValueError("decoders: expected at least one DecoderSpec, got none")
    if options.output_dir is not None:  # before any work
        check_output_path(options.output_dir, "output_dir", directory=True)

    slug = report.machine_slug(device, options.threads)
    paths = _result_paths(options, slug)
    written = _Written()
    messages: list[str] = []

    def warn(text: str) -> None:
        messages.append(text)
        print(f"warning: {text}", file=sys.stderr)

    payload: dict[str, Any] = {
        # "complete" is false until the last write (the files are rewritten after every group)
        "environment": {**report.environment(device, options.threads, **options.context), "complete": False},
        "options": {
            "batch_sizes": list(options.batch_sizes), "modes": list(options.modes), "dtypes": list(options.dtypes),
            "time_budget_s": options.time_budget_s, "time_box_s": options.time_box_s, "min_repeats": options.min_repeats, "warmup": options.warmup,
            "memory": options.memory, "seed": options.seed, "tolerances": {d: TOLERANCES[d] for d in options.dtypes},
            "capture_io": CAPTURE_IO, "switches": _switches(),
        },
        "roofs": {},
        "decoders": {},
        "rows": [],
        "summary": [],
        "warnings": messages,
    }
    rows: list[dict] = payload["rows"]
    configs = [(b, d, s.name, m) for b in options.batch_sizes for d in options.dtypes
               for s in specs for m in options.modes if s.modes is None or m in s.modes]
    if not configs:  # nothing to run: an earlier run's result files stay as they are
        raise ValueError(f"modes: expected one that some decoder runs in, got {list(options.modes)} "
                         f"(decoders' modes: {[list(s.modes) for s in specs if s.modes is not None]})")
    started = time.perf_counter()
    if options.started_at is None:  # on a copy: the caller's options may be reused for another run
        options = dataclasses.replace(options, started_at=started)
    compiling = any(m.startswith("compile") for m in options.modes)
    limits = _dynamo_limits() if compiling else contextlib.nullcontext()
    with _threads(options.threads), limits, _tqdm(len(configs), options.progress) as bar, \
            tempfile.TemporaryDirectory(prefix="mesh_decoder_bench_") as tmp:
        try:
            _run(specs_by_name, options, device, payload, configs, bar, tmp, paths, warn, written)
            payload["environment"]["wall_s"] = time.perf_counter() - started
            with contextlib.suppress(OSError, AttributeError):
                payload["environment"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
            payload["environment"]["complete"] = True
            _write(payload, paths, options.plot, warn, written)
        except (KeyboardInterrupt, Exception) as exc:  # a later group, the memory probes or the last write
            if not rows:  # nothing finished, nothing written: an earlier run's files stay as they are
                if paths is not None and isinstance(exc, KeyboardInterrupt):
                    print(f"interrupted before any configuration finished: nothing written "
                          f"({paths['json']} and {paths['csv']} left as they were)", file=sys.stderr)
                raise

            interrupted = isinstance(exc, KeyboardInterrupt)

            def rewrite() -> None:
                payload["environment"]["wall_s"] = time.perf_counter() - started
                _annotate(rows, specs_by_name)
                payload["summary"] = _summary(rows, specs_by_name)
                if interrupted and options.print_table:  # the finished rows, then the files
                    if bar is not None:
                        bar.clear()
                    _print_report(payload, None)
                    sys.stdout.flush()
                _write(payload, paths, options.plot, warn, written)

            _write_unfinished(payload, exc, paths, f"the {len(rows)} finished configurations", rewrite)
            raise
    if options.print_table:
        _print_report(payload, written)
    return payload


def _print_report(payload: dict, written: _Written | None) -> None:
    env = payload["environment"]
    roofs = payload["roofs"]
    print(f"device {env['device']} ({env.get('gpu') or env.get('cpu')}), {env['threads']} threads, "
          f"torch {env['torch']}, commit {(env.get('git_commit') or 'unknown')[:12]}")
    for dtype, roof in roofs.get("matmul", {}).items():
        asked = roof.get("requested_n", roof["n"])
        print(f"square matmul roof {dtype}: {roof['gflops']:.1f} GFLOP/s (n={roof['n']}"
              + (f", the largest quick size up to {asked}" if asked != roof["n"] else "") + ")")
    if "bandwidth" in roofs:
        print(f"copy bandwidth roof: {roofs['bandwidth']['copy_gbps']:.1f} GB/s")
    print(report.format_table(payload["rows"]))
    print(textwrap.fill(report.TABLE_LEGEND, width=120, break_on_hyphens=False))
    note = _memory_note(payload)
    if note:
        print(note)
    for name, info in payload["decoders"].items():  # FLOP columns that are lower bounds say so
        left = info["cost"].get("uncounted") or []
        if left:
            print(f"{name}: MFLOP/mesh and the roof columns leave out {len(left)} layer{'s' if len(left) != 1 else ''} "
                  f"with weights that no cost rule counts ({', '.join(left[:3])}{', ...' if len(left) > 3 else ''}; "
                  "mesh_decoder.bench.register_cost adds a rule)")
    firsts = [r["first_call_s"] for r in payload["rows"] if r["mode"].startswith("compile") and "first_call_s" in r]
    if firsts:
        plural = "s" if len(firsts) != 1 else ""
        print(f"compiling: the first calls of the {len(firsts)} compiled configuration{plural} took "
              f"{sum(firsts):.1f} s of the run's {payload['environment'].get('wall_s', math.nan):.1f} s "
              "(first_call_s in the files)")
    for s in payload["summary"]:
        print(f"{s['decoder']} {s['dtype']} {s['mode']} batch {s['batch']}: "
              f"{s['speedup_vs_reference']:.1f}x the better reference ({s['note']})"
              + (f", {100 * s['fraction_shape_bound']:.0f}% of shape bound" if s.get("fraction_shape_bound") else "")
              + (f", memory {s['memory_vs_reference']:.2f}x the reference's" if s.get("memory_vs_reference") else ""))
    line = None if written is None else _written_line(written)
    if line is not None:
        print(line)


_BOXED = "peak memory not measured: time box"
_OWN = "peak memory not probed: a decoder of one's own"


def _memory_note(payload: dict) -> str | None:
    """The line under the table that says why some rows show no peak memory (``None``: every row has one).

    Rows the time box cut off (their note says so) are counted apart from those ``--memory`` leaves out."""
    missing = [r for r in payload["rows"] if r["status"] == "ok" and r.get("peak_memory_mb") is None]
    own = sorted({r["decoder"] for r in missing if _OWN in (r.get("note") or "")})
    missing = [r for r in missing if r["decoder"] not in own]
    own_line = (f"peak mem '-' of {', '.join(own)}: not probed (a probe rebuilds a built-in decoder in a fresh "
                "process; a decoder of one's own has no recipe for that)") if own else None
    if not missing:
        return own_line
    memory = payload["options"]["memory"]
    if memory == "all":  # no time box on the probes: those missing failed (warned above) or could not run
        line = "peak mem '-': not measured (their probes failed or could not run; see the warnings above)"
        return line if own_line is None else f"{own_line}\n{line}"
    boxed = sum(_BOXED in (r.get("note") or "") for r in missing)
    box = "the time box ended before their probes"
    rule = {"off": "--memory off", "eager": "--memory eager probes eager rows only"}.get(
        memory, "the default probes eager rows and every mode at the largest batch")
    if boxed == len(missing):
        why = box
    elif boxed:
        why = f"{boxed} of them because {box}; {rule}"
    else:
        why = rule
    line = f"peak mem '-': not probed ({why}; --memory all probes every row)"
    return line if own_line is None else f"{own_line}\n{line}"


def _run(specs: dict[str, DecoderSpec], options: BenchOptions, device: torch.device, payload: dict,
         configs: list[tuple], bar, tmp: str, paths, warn, written: _Written) -> None:
    rows: list[dict] = payload["rows"]
    cuda = device.type == "cuda"

    phases = payload["environment"].setdefault("phase_s", {})
    t_phase = time.perf_counter()
    # Roofs.
    payload["roofs"]["matmul"] = {}
    for dtype_name in options.dtypes:
        with precision(dtype_name) as dtype:
            roof = matmul_roof(device, dtype, options.matmul_n, budget_s=0.5)
            roof["float32_matmul_precision"] = torch.get_float32_matmul_precision()
            payload["roofs"]["matmul"][dtype_name] = roof
    megabytes = options.bandwidth_mb or (1024 if cuda else 256)
    payload["roofs"]["bandwidth"] = copy_bandwidth(device, megabytes << 20, budget_s=0.6)

    # Modules per dtype, costs, ONNX exports.
    modules: dict[tuple[str, str], nn.Module] = {}
    costs: dict[tuple[str, str], DecoderCost] = {}
    for spec in specs.values():
        for dtype_name in options.dtypes:
            dtype = DTYPES[dtype_name][0]
            key_same = next((k for k in modules if k[0] == spec.name and DTYPES[k[1]][0] == dtype), None)
            modules[(spec.name, dtype_name)] = modules[key_same] if key_same else _cast(spec.module, dtype)
            z1 = _latent(1, spec.latent_size, options.seed).to(device=device, dtype=dtype)  # (1, Z)
            costs[(spec.name, dtype_name)] = decoder_cost(modules[(spec.name, dtype_name)], z1)
        payload["decoders"][spec.name] = {
            "description": spec.description,
            "class": type(spec.module).__name__,
            "latent_size": spec.latent_size,
            "baseline": spec.baseline or spec.name,
            "reference_for": spec.reference_for,
            "cost": costs[(spec.name, options.dtypes[0])].as_dict(),
        }
    onnx_files: dict[str, str] = {}
    onnx_runners: dict[str, Any] = {}
    onnx_errors: dict[str, str] = {}
    if "onnx" in options.modes:
        from .onnx_export import OnnxRunner, export_onnx

        for spec in specs.values():
            if spec.modes is not None and "onnx" not in spec.modes:
                continue
            path = os.path.join(tmp, f"{len(onnx_files)}.onnx")
            try:
                exporter = export_onnx(spec.module, path)
                onnx_files[spec.name] = path
                onnx_runners[spec.name] = OnnxRunner(path, device, threads=options.threads)
                payload["decoders"][spec.name]["onnx_exporter"] = exporter
            except (ImportError, RuntimeError, ValueError) as exc:
                onnx_errors[spec.name] = " ".join(str(exc).split())[:300]
                warn(f"ONNX export of {spec.name}: {onnx_errors[spec.name]}")

    phases["roofs, costs, exports"] = time.perf_counter() - t_phase
    compiled: dict[tuple[str, str], Callable] = {}
    graphs: dict[tuple[str, str, int], _CudaGraphRunner] = {}
    groups = sorted({(b, d) for b, d, _, _ in configs}, key=lambda g: (g[0], options.dtypes.index(g[1])))
    budget_left = float(options.time_budget_s)
    probing = not cuda and options.memory != "off"
    end = None if options.time_box_s is None else options.started_at + options.time_box_s
    timing_end = None if end is None else end - (0.2 * options.time_box_s if probing else 0.0)

    for gi, (batch, dtype_name) in enumerate(groups):
        t_group = time.perf_counter()
        group = [(name, mode) for b, d, name, mode in configs if (b, d) == (batch, dtype_name)]
        dtype = DTYPES[dtype_name][0]
        copy_io = batch == 1
        latents: dict[int, torch.Tensor] = {}
        for spec in specs.values():
            latents.setdefault(spec.latent_size, _latent(batch, spec.latent_size, options.seed))  # (B, Z)
        # fp32 eager outputs of this batch, the reference of every error; the error check
        # of an fp32 eager configuration provides its own.
        baselines: dict[str, list[torch.Tensor]] = {}

        def baseline(name: str) -> list[torch.Tensor]:
            if name not in baselines:
                s = specs[name]
                with precision("fp32"), torch.inference_mode():
                    z = latents[s.latent_size].to(device)
                    baselines[name] = [t.to("cpu") for t in _outputs(s.module(z))]
            return baselines[name]

        with precision(dtype_name):
            closures: dict[str, Callable] = {}
            warmups: dict[str, int] = {}
            pending: dict[str, dict] = {}
            compile_s = 0.0  # this group's compiled error checks: compiling, then one call
            for name, mode in group:
                spec = specs[name]
                row = {
                    "decoder": name, "device": str(device), "dtype": dtype_name, "mode": mode, "batch": batch,
                    "status": "ok", "mflop_per_mesh": costs[(name, dtype_name)].mflop_per_mesh,
                    "parameters": costs[(name, dtype_name)].parameters,
                    "tolerance": spec.tolerance(dtype_name),
                    "matmul_precision": torch.get_float32_matmul_precision(),
                    "threads": options.threads, "note": None,
                }
                z_host = latents[spec.latent_size].to(dtype)  # (B, Z)
                if cuda:
                    z_host = z_host.pin_memory()
                z_dev = z_host.to(device)
                try:
                    if cuda:  # CUDA graphs allocate their memory pool at capture: count it
                        synchronize(device)
                        torch.cuda.reset_peak_memory_stats(device)
                        allocated = torch.cuda.memory_allocated(device)
                    t_first = time.perf_counter()
                    runner = _runner(spec, mode, dtype_name, batch, device, modules, compiled, graphs,
                                     onnx_runners, onnx_errors, z_dev)
                    t_check = time.perf_counter()
                    with torch.inference_mode():
                        out = _outputs(runner(z_host if mode == "onnx" else z_dev))
                        synchronize(device)
                        if cuda:
                            row["peak_memory_mb"] = (torch.cuda.max_memory_allocated(device) - allocated) / 2**20
                    check_s = time.perf_counter() - t_check
                    # making the runner (CUDA graph capture) and its first call (compiling): not timed below
                    row["first_call_s"] = time.perf_counter() - t_first
                    if mode.startswith("compile"):
                        compile_s += check_s
                    if mode == "eager" and dtype_name == "fp32" and name not in baselines:
                        baselines[name] = [t.to("cpu") for t in out]
                    row["max_error"] = max_relative_error(out, baseline(spec.baseline or spec.name))
                    del out
                    if not row["max_error"] <= row["tolerance"]:
                        row["status"] = "failed"
                        row["note"] = f"error {row['max_error']:.2e} over tolerance {row['tolerance']:.0e}: not timed"
                except Exception as exc:  # noqa: BLE001 - one broken configuration must not end the run
                    row["status"] = "error"
                    row["note"] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
                key = f"{name}|{mode}"
                if row["status"] == "ok":
                    closures[key] = _closure(runner, mode, z_host, z_dev, copy_io, device)
                    if not cuda and check_s > 0.2:  # a slow call: the check was its warm-up
                        warmups[key] = 0
                pending[key] = row
            # The shape bound of every timed decoder: its matrix products alone, timed in
            # the same interleaved rounds (so under the same machine load).
            operands: dict = {}
            bound_of: dict[str, str] = {}
            for key, row in pending.items():
                shapes = costs[(row["decoder"], dtype_name)].gemm_shapes(batch)
                if key in closures and shapes:
                    bound_key = "shape-bound|" + repr(shapes)
                    if bound_key not in closures:
                        closures[bound_key] = gemm_closure(shapes, device, dtype, operands=operands, seed=options.seed)
                    bound_of[key] = bound_key
            groups_left = len(groups) - gi
            group_budget = max(0.05, budget_left / groups_left)
            t0 = time.perf_counter()
            deadline = None
            if timing_end is not None:
                # The rest of the time box, less what the later groups are expected to spend
                # compiling (as long as this group did: with inductor's cache cold that is
                # most of a group), shared by batch size (plus overheads).
                weights = [b + 16 for b, _ in groups[gi:]]
                later_compiles = compile_s * (len(groups) - gi - 1)
                deadline = t0 + max(0.0, timing_end - t0 - later_compiles) * weights[0] / sum(weights)
            with torch.inference_mode():
                results = time_interleaved(
                    closures, warmup=options.warmup, warmups=warmups, min_repeats=options.min_repeats,
                    max_repeats=max(options.min_repeats, options.max_repeats), budget_s=group_budget,
                    deadline=deadline, deadline_min_repeats=min(2, options.min_repeats),
                    min_sample_s=0.0 if cuda else 0.002, device=device,
                )
            budget_left = max(0.0, budget_left - (time.perf_counter() - t0))
            for key, row in pending.items():
                if key in results:
                    res = results[key]
                    seconds = res.median_s
                    cost = costs[(row["decoder"], dtype_name)]
                    row.update({
                        "meshes_per_s": batch / seconds,
                        "latency_ms": seconds * 1e3,
                        # the spread of fewer than 4 samples is unknown, not 0 (TimingResult.iqr_s)
                        "latency_iqr_ms": res.iqr_s * 1e3 if res.repeats >= 4 else None,
                        "repeats": res.repeats,
                        "calls_per_sample": res.number,
                        "gflops": cost.flops_per_mesh * batch / seconds / 1e9,
                        "gbps": cost.min_bytes(batch) / seconds / 1e9,
                    })
                    roof = payload["roofs"]["matmul"][dtype_name]["gflops"]
                    row["fraction_compute_roof"] = row["gflops"] / roof
                    row["fraction_bandwidth_roof"] = row["gbps"] / payload["roofs"]["bandwidth"]["copy_gbps"]
                    if key in bound_of:
                        row["shape_bound_meshes_per_s"] = batch / results[bound_of[key]].median_s
                        row["fraction_shape_bound"] = row["meshes_per_s"] / row["shape_bound_meshes_per_s"]
                rows.append(row)
        del baselines, closures, operands
        payload["environment"].setdefault("phase_s", {})[f"batch {batch} {dtype_name}"] = time.perf_counter() - t_group
        gc.collect()
        if bar is not None:
            bar.update(len(group))
            bar.set_postfix_str(f"batch {batch} {dtype_name}")
        _annotate(rows, specs)
        payload["summary"] = _summary(rows, specs)
        _write(payload, paths, False, warn, written)

    # CPU peak memory: one fresh subprocess per configuration.
    if probing:
        t_phase = time.perf_counter()
        _probe_memory(rows, specs, options, tmp, onnx_files, warn, None if options.memory == "all" else end)
        phases["memory probes"] = time.perf_counter() - t_phase
    _annotate(rows, specs)
    payload["summary"] = _summary(rows, specs)


def _runner(spec, mode, dtype_name, batch, device, modules, compiled, graphs, onnx_runners, onnx_errors, z_dev):
    module = modules[(spec.name, dtype_name)]
    if mode == "eager":
        return module
    if mode in ("compile", "compile-cudagraph"):
        if mode == "compile-cudagraph" and device.type != "cuda":
            raise ValueError("mode compile-cudagraph needs a CUDA device")
        key = (spec.name, dtype_name, mode)
        if key not in compiled:
            if mode == "compile":
                compiled[key] = torch.compile(module)
            else:  # the compiled code replayed as CUDA graphs; each call starts a new graph step
                graphed = torch.compile(module, mode="reduce-overhead")

                def step(z: torch.Tensor, graphed=graphed):
                    torch.compiler.cudagraph_mark_step_begin()
                    return graphed(z)

                compiled[key] = step
        return compiled[key]
    if mode == "cudagraph":
        if device.type != "cuda":
            raise ValueError("mode cudagraph needs a CUDA device")
        key = (spec.name, dtype_name, batch)
        if key not in graphs:
            with torch.inference_mode():
                graphs[key] = _CudaGraphRunner(module, z_dev, capture_io=CAPTURE_IO and batch == 1)
        return graphs[key]
    if mode == "onnx":
        if dtype_name != "fp32":
            raise ValueError(f"mode onnx runs the fp32 export only, got dtype {dtype_name}")
        if spec.name in onnx_errors:
            raise RuntimeError(onnx_errors[spec.name])
        if spec.name not in onnx_runners:
            raise RuntimeError(f"no ONNX export for {spec.name}")
        return onnx_runners[spec.name]
    raise ValueError(f"mode: expected one of {list(MODES)}, got {mode!r}")


def _closure(runner, mode: str, z_host: torch.Tensor, z_dev: torch.Tensor, copy_io: bool, device: torch.device):
    if mode == "onnx":  # ONNX Runtime takes and returns host arrays: the copies are in the call
        return lambda: runner(z_host)
    if not copy_io:
        return lambda: runner(z_dev)
    cuda = device.type == "cuda"
    pinned: list[torch.Tensor] = []  # page-locked host outputs, allocated at the first call

    def call():
        # latent in: a captured graph copies the pinned host latent into its input itself
        z = z_host.to(device, non_blocking=True) if cuda and mode != "cudagraph" else z_host
        if getattr(runner, "captures_io", False):  # the graph copies the outputs out too
            outs = runner(z)
            synchronize(device)
            return outs
        outs = _outputs(runner(z))
        if not cuda:
            return outs  # already in host memory: nothing to copy
        if not pinned:
            pinned.extend(torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in outs)
        for host, t in zip(pinned, outs):
            host.copy_(t, non_blocking=True)  # outputs out
        synchronize(device)
        return pinned

    return call


def _probe_memory(rows, specs, options, tmp, onnx_files, warn, deadline: float | None = None) -> None:
    ok = [row for row in rows if row["status"] == "ok"]
    own = sorted({row["decoder"] for row in ok if specs[row["decoder"]].recipe is None})
    for row in ok:
        if specs[row["decoder"]].recipe is None:
            _add_note(row, _OWN)
    if own:  # a probe's fresh process rebuilds a decoder from its recipe, which a decoder of one's own lacks
        warn(f"peak memory is probed for the built-in decoders only (a fresh process rebuilds each from a recipe); "
             f"not measured for {', '.join(own)}")
    if not any(specs[row["decoder"]].recipe is not None for row in ok):
        return
    if options.hierarchy_path is None:
        warn("memory probes need a saved hierarchy (hierarchy_path); peak memory not measured")
        return
    todo = []
    for row in rows:
        spec = specs[row["decoder"]]
        if row["status"] != "ok" or spec.recipe is None:
            continue
        if options.memory == "eager" and row["mode"] != "eager":
            continue
        if options.memory == "auto" and row["mode"] != "eager" and row["batch"] != max(options.batch_sizes):
            continue
        if row["mode"] == "onnx" and row["decoder"] not in onnx_files:
            continue
        request = {**spec.recipe, "hierarchy": options.hierarchy_path, "batch": row["batch"],
                   "dtype": row["dtype"], "mode": row["mode"], "threads": options.threads, "seed": options.seed,
                   "latent_size": spec.latent_size, "onnx_path": onnx_files.get(row["decoder"])}
        todo.append((row, request))
    if not todo:
        return
    def paired(name: str) -> bool:  # a reference, or the decoder it is the reference of
        return specs[name].reference_for is not None or any(s.reference_for == name for s in specs.values())

    # Most telling first: eager, largest batch, the spiral decoder and its reference.
    todo.sort(key=lambda item: (item[0]["mode"] != "eager", -item[0]["batch"], not paired(item[0]["decoder"])))
    # The memory target's pair (eager, largest batch) is measured even past the time box.
    essential = sum(1 for row, _ in todo if row["mode"] == "eager" and row["batch"] == max(options.batch_sizes)
                    and paired(row["decoder"]))
    workers = max(1, min(options.threads, 4))
    with _tqdm(len(todo), options.progress) as bar:
        if bar is not None:
            bar.set_description("memory")

        def done(row: dict, result: dict) -> None:
            if "peak_memory_mb" in result:
                row["peak_memory_mb"] = result["peak_memory_mb"]
            else:
                warn(f"{row['decoder']} {row['mode']} batch {row['batch']}: {result.get('error')}")
            if bar is not None:
                bar.update(1)

        if hasattr(os, "fork"):
            skipped = serve_probes(todo, workers, done, deadline, essential)
            for row in skipped:
                _add_note(row, f"{_BOXED} (--memory all)")
        else:  # a fresh interpreter per configuration
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = [(row, pool.submit(run_probe, request)) for row, request in todo]
                for row, future in futures:
                    done(row, future.result())


# ---------------------------------------------------------------------- scaling
def run_scaling(
    sizes: Sequence[int] = SCALING_SIZES,
    *,
    device: torch.device | str = "cpu",
    batch: int = 8,
    threads: int | None = None,
    output_dir: str | None = DEFAULT_OUTPUT_DIR,
    budget_s: float = 2.0,
    seed: int = 0,
    progress: bool = True,
    plot: bool = True,
) -> dict[str, Any]:
    """Meshes/s of the spiral decoder (``spiralnet++-coma``) against the template size.

    Builds the face template at each size, its preset hierarchy (no texture) and
    the decoder, and times eager fp32 decoding of ``batch`` latents. The cost of
    every layer is linear in the vertex count, so microseconds per mesh should
    grow linearly. Writes ``scaling_<machine>.json/.csv/.png``, the JSON and CSV
    after every size: until the last write they say ``"complete": false``, and a
    run ended early says why (``interrupted`` or ``failed``, as :func:`run_benchmark`'s).
    """
    from ..hierarchy import build_hierarchy
    from ..mesh.templates import face_template
    from ..nn.presets import preset_hierarchy_params

    device = torch.device(device)
    check_int(batch, "batch", 1)
    for n in sizes:
        check_int(n, "sizes", 1)
    threads = _default_threads() if threads is None else check_int(threads, "threads", 1)
    slug = report.machine_slug(device, threads)
    points: list[dict] = []
    payload = {"environment": {**report.environment(device, threads, batch=batch), "complete": False},
               "points": points}
    paths = None
    if output_dir is not None:
        out = Path(output_dir)
        paths = {k: out / f"scaling_{slug}.{k}" for k in ("json", "csv", "png")}
    columns = ("vertices", "levels", "hierarchy_s", "mflop_per_mesh", "meshes_per_s", "us_per_mesh",
               "ns_per_vertex", "repeats")

    written = _Written()

    def write() -> None:
        if paths is not None:
            _write_data(payload, points, paths, written, columns)

    with _threads(threads), _tqdm(len(sizes), progress) as bar:
        try:
            for n in sizes:
                t0 = time.perf_counter()
                template = face_template(int(n), seed=seed)
                hierarchy = build_hierarchy(template, **preset_hierarchy_params("spiralnet++-coma"),
                                            texture_size=None)
                built_s = time.perf_counter() - t0
                module, _ = build_decoder("spiralnet++-coma", hierarchy, seed=seed)
                module = module.to(device).eval()
                z = _latent(batch, module.latent_size, seed).to(device)  # (B, Z)
                cost = decoder_cost(module, z[:1])
                with torch.inference_mode():
                    res = time_fn(lambda: module(z), warmup=1, min_repeats=3, budget_s=budget_s, device=device)
                rate = batch / res.median_s
                points.append({
                    "vertices": hierarchy.sizes[0], "levels": hierarchy.sizes, "hierarchy_s": built_s,
                    "mflop_per_mesh": cost.mflop_per_mesh, "meshes_per_s": rate, "us_per_mesh": 1e6 / rate,
                    "ns_per_vertex": 1e9 / rate / hierarchy.sizes[0], "repeats": res.repeats,
                })
                write()
                if bar is not None:
                    bar.update(1)
            payload["environment"]["complete"] = True
            write()
        except (KeyboardInterrupt, Exception) as exc:
            if points:  # written after the first size: mark them; else nothing was written
                _write_unfinished(payload, exc, paths, f"the {len(points)} finished sizes", write)
            raise
    if paths is not None and plot:
        try:
            report.plot_scaling(points, paths["png"], title=f"spiralnet++-coma, batch {batch}, {slug}")
            written.files["png"] = paths["png"]
        except ImportError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    print(f"{'vertices':>9} {'meshes/s':>10} {'us/mesh':>10} {'ns/vertex':>10}")
    for p in points:
        print(f"{p['vertices']:>9} {p['meshes_per_s']:>10.1f} {p['us_per_mesh']:>10.1f} {p['ns_per_vertex']:>10.2f}")
    line = _written_line(written)
    if line is not None:
        print(line)
    return payload


# -------------------------------------------------------------------------- CLI
def add_bench_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the benchmark's options to ``parser`` (used by ``mesh-decoder bench``)."""
    parser.add_argument("--decoders", nargs="+", choices=list(BUILTIN_DECODERS), default=None,
                        help="decoders to run (default: all)")
    parser.add_argument("--batch-sizes", nargs="+", type=int_argument(1), default=None,
                        help="batch sizes (default 1 32 256; --quick: 1 16; --scaling: one size, default 8)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=None,
                        help="eager, compile, cudagraph (CUDA), compile-cudagraph (CUDA: torch.compile "
                             "mode='reduce-overhead'), onnx (default: eager compile, + cudagraph on CUDA)")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=None,
                        help="fp32 (TF32 off, the reference), tf32, bf16, fp16 (default: fp32 on CPU, all on CUDA)")
    parser.add_argument("--device", default="auto",
                        help=f"{DEVICES} (default auto: CUDA when present, else the CPU)")
    parser.add_argument("--threads", type=int_argument(1), default=None,
                        help="CPU threads (default: the cores this process may use)")
    parser.add_argument("--quick", action="store_true", help="a short run: small batches, eager only, short budget")
    parser.add_argument("--onnx", action="store_true", help="also run the ONNX Runtime export")
    parser.add_argument("--scaling", action="store_true",
                        help="meshes/s of the spiral decoder (eager, fp32) from 1,000 to 100,000 vertices instead; "
                             "takes --device, --threads, --quick, --batch-sizes (one size), --output-dir, --seed, "
                             "--no-progress and --no-plot")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--template", help="template mesh file (default: the built-in face)")
    from ..mesh.templates import MAX_VERTICES, MIN_VERTICES

    source.add_argument("--vertices", type=int_argument(MIN_VERTICES, MAX_VERTICES), default=None,
                        help=f"vertex count of the built-in face template ({MIN_VERTICES:,} to {MAX_VERTICES:,}; "
                             "default 5023)")
    source.add_argument("--hierarchy", help="a saved hierarchy (.npz); needs no openmesh")
    from ..mesh.uv import MAX_MAP_SIZE

    parser.add_argument("--texture-size", type=int_argument(0, MAX_MAP_SIZE), default=None,
                        help=f"UV texture size of the joint decoder (0: none; at most {MAX_MAP_SIZE}; default "
                             f"{DEFAULT_TEXTURE_SIZE}; with --hierarchy, the hierarchy's own, which a given value "
                             "must equal)")
    parser.add_argument("-o", "--output-dir", default=DEFAULT_OUTPUT_DIR,
                        help=f"where result files go (default {DEFAULT_OUTPUT_DIR}; the committed runs the README's "
                             "tables come from are in benchmarks/results)")
    parser.add_argument("--file-prefix", default="decode",
                        help="result files are PREFIX_<machine>.json/.csv/.png (default decode)")
    parser.add_argument("--time-budget", type=real_argument(0, inclusive=False, what="a finite number of seconds"),
                        default=None,
                        help="seconds of timing samples for the whole run (default 30; --quick 5)")
    parser.add_argument("--time-box", type=real_argument(0, inclusive=True, what="a finite number of seconds"),
                        default=None,
                        help="wall-clock seconds the run should fit in (default 160; --quick 60; 0: no limit)")
    parser.add_argument("--memory", choices=MEMORY_CHOICES, default=None,
                        help="CPU peak-memory probes, one subprocess per row: all: all rows; auto: eager rows and "
                             "the other modes at the largest batch (default); eager: eager rows (--quick); off: none")
    parser.add_argument("--seed", type=int_argument(0, MAX_SEED), default=0,
                        help="seed of the latents and weights (default 0)")
    parser.add_argument("--no-progress", "--quiet", action="store_true",
                        help="no progress bar (there is one only when stderr is a terminal)")
    parser.add_argument("--no-plot", action="store_true", help="no PNG")
    return parser


#: What ``--device`` takes (its help and its error say the same).
DEVICES = "auto, cpu, cuda or cuda:N"


def _resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present), or a CPU or CUDA device this machine has (``ValueError`` naming ``--device``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        device = None
    # check_device also takes MPS; the harness times CPU and CUDA only
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index):
        raise UsageError(f"--device: expected {DEVICES}, got {name!r}")
    return check_device(name, "--device")


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    """Validate parsed arguments into :class:`BenchOptions` (``ValueError`` on bad values)."""
    device = _resolve_device(args.device)
    cuda = device.type == "cuda"
    quick = bool(args.quick)
    if args.modes is not None:
        modes = tuple(dict.fromkeys(args.modes))
    elif quick:
        modes = ("eager",)
    else:
        modes = ("eager", "compile", "cudagraph") if cuda else ("eager", "compile")
    if args.onnx and "onnx" not in modes:
        modes = (*modes, "onnx")
    for graph_mode in ("cudagraph", "compile-cudagraph"):
        if graph_mode in modes and not cuda:
            raise UsageError(f"--modes {graph_mode}: CUDA graphs need a CUDA device (got cpu)")
    dtypes = tuple(dict.fromkeys(args.dtypes)) if args.dtypes else (("fp32", "tf32", "bf16", "fp16") if cuda else ("fp32",))
    if "tf32" in dtypes and not cuda:
        raise UsageError("--dtypes tf32: TF32 is a CUDA matmul mode (got device cpu)")
    batch_sizes = tuple(sorted(set(args.batch_sizes))) if args.batch_sizes else (QUICK_BATCH_SIZES if quick else DEFAULT_BATCH_SIZES)
    if args.time_box is not None and not 0 <= args.time_box < math.inf:
        raise UsageError(f"--time-box: expected a finite number of seconds >= 0 (0: no limit), got {args.time_box}")
    if args.time_budget is not None and not 0 < args.time_budget < math.inf:
        raise UsageError(f"--time-budget: expected a finite number of seconds > 0, got {args.time_budget}")
    report.check_threads(args.threads)  # a huge thread pool crashed torch (segfault)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.file_prefix):
        raise UsageError(f"--file-prefix: expected letters, digits, '.', '_' or '-', got {args.file_prefix!r}")
    return BenchOptions(
        file_prefix=args.file_prefix,
        device=device,
        batch_sizes=batch_sizes,
        modes=modes,
        dtypes=dtypes,
        threads=args.threads or _default_threads(),
        output_dir=args.output_dir,
        time_budget_s=args.time_budget if args.time_budget is not None else (5.0 if quick else 30.0),
        time_box_s=None if args.time_box == 0 else (args.time_box or (60.0 if quick else 160.0)),
        min_repeats=3,
        memory=args.memory or ("eager" if quick else "auto"),
        progress=not args.no_progress and is_terminal(sys.stderr),
        plot=not args.no_plot,
        seed=args.seed,
        matmul_n=4096 if cuda else 2048,
        bandwidth_mb=64 if quick and not cuda else None,
    )


def _load_inputs(args: argparse.Namespace, names: Sequence[str], tmp: str):
    """Template mesh (or ``None``), hierarchy, saved-hierarchy path, and context for the environment."""
    from ..hierarchy.storage import load_hierarchy, save_hierarchy

    texture = _texture_size(args) or None
    if args.hierarchy:
        hierarchy = load_hierarchy(args.hierarchy)  # says whether the file is missing or not a file
        _check_texture_size(args, hierarchy)
        template = None
        context = {"template": f"hierarchy file {args.hierarchy}"}
        path = args.hierarchy
    else:
        from ..hierarchy import build_hierarchy
        from ..nn.presets import preset_hierarchy_params

        if args.template:
            from ..mesh.io import load_mesh

            template = load_mesh(args.template)
            context = {"template": f"file {args.template}"}
        else:
            from ..mesh.templates import face_template

            n = args.vertices or 5023
            with _naming_input(args):
                template = face_template(n)
            context = {"template": f"face_template({n})"}
        t0 = time.perf_counter()
        with _naming_input(args):
            hierarchy = build_hierarchy(template, **preset_hierarchy_params("spiralnet++-coma"), texture_size=texture)
        context["hierarchy_build_s"] = time.perf_counter() - t0
        path = os.path.join(tmp, "hierarchy.npz")
        save_hierarchy(hierarchy, path)
    if template is None and "pca" in names:
        from ..mesh.container import Mesh

        level = hierarchy.levels[0]
        template = Mesh(vertices=level.vertices.double().numpy(), faces=level.faces.numpy())
    context["hierarchy_sizes"] = hierarchy.sizes
    context["texture_size"] = list(hierarchy.texel_map.size) if hierarchy.texel_map is not None else None
    return template, hierarchy, path, context


def _texture_size(args: argparse.Namespace) -> int:
    """``--texture-size``, or its default (:data:`DEFAULT_TEXTURE_SIZE`) when not given."""
    return DEFAULT_TEXTURE_SIZE if args.texture_size is None else args.texture_size


def _check_texture_size(args: argparse.Namespace, hierarchy) -> None:
    """``ValueError`` for a ``--texture-size`` other than the ``--hierarchy``'s texel map, which it cannot change."""
    if args.texture_size is None:
        return
    size = tuple(hierarchy.texel_map.size) if hierarchy.texel_map is not None else None
    if size == ((args.texture_size,) * 2 if args.texture_size else None):
        return
    where = f"--hierarchy {args.hierarchy}"
    if size is None:
        expected = f"0 ({where} has no texel map) or none"
    elif size[0] == size[1]:
        expected = f"{size[0]} (the {size[0]}x{size[1]} texel map of {where}) or none"
    else:
        expected = f"none (the {size[0]}x{size[1]} texel map of {where})"
    raise ValueError(f"--texture-size {args.texture_size}: expected {expected}, got {args.texture_size}; the texel map "
                     f"comes with the hierarchy: build one with mesh-decoder hierarchy MESH --texture-size "
                     f"{args.texture_size}")


@contextlib.contextmanager
def _naming_input(args: argparse.Namespace) -> Iterator[None]:
    """Prefix a ``ValueError`` about the user's mesh or hierarchy with the option (and file) it came from."""
    source = (f"--template {args.template}" if args.template else
              f"--hierarchy {args.hierarchy}" if args.hierarchy else
              f"--vertices {args.vertices}" if args.vertices else None)
    try:
        yield
    except ValueError as exc:
        if source is None:
            raise
        raise ValueError(f"{source}: {exc}") from exc


def _check_scaling_args(args: argparse.Namespace) -> None:
    """``ValueError`` for options ``--scaling`` would ignore, or more than one batch size."""
    ignored = [option for option, given in (
        ("--decoders", args.decoders is not None), ("--modes", args.modes is not None),
        ("--dtypes", args.dtypes is not None), ("--onnx", args.onnx), ("--template", args.template is not None),
        ("--vertices", args.vertices is not None), ("--hierarchy", args.hierarchy is not None),
        ("--texture-size", args.texture_size is not None), ("--file-prefix", args.file_prefix != "decode"),
        ("--time-budget", args.time_budget is not None), ("--time-box", args.time_box is not None),
        ("--memory", args.memory is not None),
    ) if given]
    if ignored:
        raise UsageError(f"--scaling: expected none of the options it ignores, got {', '.join(ignored)} "
                         f"(it times spiralnet++-coma, eager, fp32, on built-in face templates)")
    if args.batch_sizes is not None and len(args.batch_sizes) != 1:
        raise UsageError(f"--scaling: expected one --batch-sizes value, got "
                         f"{' '.join(str(b) for b in args.batch_sizes)}")


def run_from_args(args: argparse.Namespace) -> int:
    """Run the benchmark for parsed arguments (the CLI's entry point); returns the exit code."""
    started = time.perf_counter()
    if args.scaling:
        _check_scaling_args(args)
    options = options_from_args(args)
    options.started_at = started
    if options.output_dir is not None:  # before any work: a bad folder fails now, not after the run
        check_output_path(options.output_dir, "--output-dir", directory=True)
    if args.scaling:
        sizes = QUICK_SCALING_SIZES if args.quick else SCALING_SIZES
        run_scaling(sizes, device=options.device, batch=(args.batch_sizes or [8])[0], threads=options.threads,
                    output_dir=options.output_dir, budget_s=0.5 if args.quick else 2.0, seed=options.seed,
                    progress=options.progress, plot=options.plot)
        return 0
    names = tuple(dict.fromkeys(args.decoders)) if args.decoders else DEFAULT_DECODERS
    if not args.decoders and "reference" in names and not reference_path().is_file():
        print(f"warning: no reference decoder here ({reference_path()} is part of the repository, not of the "
              "installed package): the run measures no speed-up; install from a clone with pip install -e for one",
              file=sys.stderr)
        names = tuple(n for n in names if n != "reference")
    if not (_texture_size(args) or args.hierarchy) and "joint" in names:
        if args.decoders:
            raise UsageError("--decoders joint needs a UV texture: give --texture-size > 0")
        names = tuple(n for n in names if n != "joint")
    t_setup = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mesh_decoder_bench_h_") as tmp:
        template, hierarchy, path, context = _load_inputs(args, names, tmp)
        if hierarchy.texel_map is None and "joint" in names:
            if args.decoders:
                where = f"--hierarchy {args.hierarchy}" if args.hierarchy else "the hierarchy built"
                raise ValueError(f"--decoders joint: expected a hierarchy with a texel map (the texture's "
                                 f"layout), {where} has none; build one with mesh-decoder hierarchy MESH "
                                 f"--texture-size {DEFAULT_TEXTURE_SIZE}")
            names = tuple(n for n in names if n != "joint")
        with _naming_input(args):
            _check_presets_fit(names, hierarchy)  # advice as a command, where the presets' error gives Python
            specs = default_specs(names, hierarchy, options.device, template=template, seed=options.seed,
                                  pca_faces=50 if args.quick else 200)
        options.hierarchy_path = path
        context["setup_s"] = time.perf_counter() - t_setup  # template, hierarchy, decoders, PCA fit
        options.context = context
        payload = run_benchmark(specs, options)
    rows = payload.get("rows", [])
    _warn_unfinished_rows(rows)
    if rows and not any(r.get("status") == "ok" for r in rows):  # e.g. --modes onnx without onnx: exited 0
        first = next((r for r in rows if r.get("note")), rows[0])
        print(f"error: no configuration was timed: all {len(rows)} rows ended {sorted({r.get('status') for r in rows})}"
              f" (the first: {first.get('decoder')} {first.get('mode')}: {first.get('note') or first.get('status')})",
              file=sys.stderr)
        return 1
    return 0


def _warn_unfinished_rows(rows: list[dict]) -> None:
    """One stderr line per reason rows ended in ``error`` or ``failed`` (the table shows the status only; the
    reason was in the JSON's ``note`` alone), naming the first few configurations it ended."""
    reasons: dict[str, list[str]] = {}
    for r in rows:
        if r.get("status") in ("error", "failed"):
            where = f"{r.get('decoder')} {r.get('dtype')} {r.get('mode')} batch {r.get('batch')}"
            reasons.setdefault(f"{r.get('status')}: {r.get('note') or 'no reason recorded'}", []).append(where)
    for reason, where in reasons.items():
        more = f" and {len(where) - 3} more" if len(where) > 3 else ""
        print(f"warning: {', '.join(where[:3])}{more}: {reason}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """``python -m mesh_decoder.bench.harness [options]``, the same as ``mesh-decoder bench [options]``
    (the same one-line errors, out of memory included); returns the exit code."""
    from ..cli import main as cli_main

    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
