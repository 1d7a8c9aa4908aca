r"""Analytic cost of a decoder, and the roofs its throughput is compared with.

Cost model (per decoded mesh, counted analytically from the layer shapes):

======================  ==================================================================
layer                   floating-point operations (a multiply-add counts 2)
======================  ==================================================================
spiral convolution      :math:`2 V S C_{in} C_{out}` (one GEMM ``(V, S C_in) x (S C_in, C_out)``)
Chebyshev convolution   sparse: :math:`(K-1)\cdot 2 E C_{in} + (K-2)\cdot 2 V C_{in}` (the
                        recurrence :math:`T_k = 2\tilde L T_{k-1} - T_{k-2}`); dense:
                        :math:`2 V K C_{in} C_{out}` (``K`` GEMMs ``(V, C_in) x (C_in, C_out)``)
up-sampling             3 multiply-adds per output vertex and channel: :math:`6 V_{out} C`
down-sampling           0 (a gather)
fully connected         :math:`2 R\, C_{in} C_{out}` for ``R`` rows per mesh
texel gather            3 multiply-adds per texel and channel: :math:`6 H W C`
PCA decode              :math:`2 K \cdot 3V` (GEMM ``(1, K) x (K, 3V)``)
2-D conv                :math:`2 C_{out} H_{out} W_{out} C_{in} k_h k_w / g`
2-D transposed conv     :math:`2 C_{in} H_{in} W_{in} C_{out} k_h k_w / g` (every input pixel
                        scatters a ``k_h x k_w`` patch: counted from the input size)
======================  ==================================================================

Minimum bytes moved by one call of batch ``B``: the model state (parameters and
buffers, read once) plus ``B`` times (latent read + outputs written).

Roofs, measured on the machine that runs the benchmark:

* :func:`matmul_roof`: GFLOP/s of a square matrix product (``n`` = 2048 to 4096;
  half precision on the CPU: the largest size up to ``n`` whose product is quick);
* :func:`copy_bandwidth`: GB/s of a big tensor copy (bytes read + bytes written);
* :func:`gemm_bound`: the *shape bound*, the time of the decoder's own
  matrix products (the per-layer GEMMs with the batch's ``M, K, N``) run alone
  with :func:`torch.mm`: no decoder using those GEMMs can beat it.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from .._checks import check_int
from .timing import time_fn

__all__ = [
    "LayerCost",
    "DecoderCost",
    "register_cost",
    "spiral_conv_cost",
    "coo_upsample_cost",
    "decoder_cost",
    "matmul_roof",
    "copy_bandwidth",
    "gemm_bound",
    "gemm_closure",
    "precision",
    "DTYPES",
]

#: Benchmark dtype names -> (torch dtype, TF32 allowed).
DTYPES: dict[str, tuple[torch.dtype, bool]] = {
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}


@contextlib.contextmanager
def precision(dtype_name: str) -> Iterator[torch.dtype]:
    """Set float32 matmul precision for a benchmark dtype; restore it afterwards.

    ``"fp32"`` is the reference precision: TF32 off (``"highest"``). ``"tf32"``
    allows TF32 in matrix products and cuDNN convolutions (``"high"``). ``"bf16"``
    and ``"fp16"`` keep float32 at ``"highest"`` (their tensors are cast).
    Yields the torch dtype the model and latents should have.
    """
    if dtype_name not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {dtype_name!r}")
    dtype, tf32 = DTYPES[dtype_name]
    old_precision = torch.get_float32_matmul_precision()
    old_cuda = torch.backends.cuda.matmul.allow_tf32
    old_cudnn = torch.backends.cudnn.allow_tf32
    try:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        yield dtype
    finally:
        torch.set_float32_matmul_precision(old_precision)
        torch.backends.cuda.matmul.allow_tf32 = old_cuda
        torch.backends.cudnn.allow_tf32 = old_cudnn


# ----------------------------------------------------------------------------- costs
@dataclass
class LayerCost:
    """Cost of one layer for one mesh.

    Attributes:
        name: qualified module name in the decoder.
        kind: layer kind ("spiral_conv", "cheb_conv", "linear", "upsample", ...).
        flops: floating-point operations per mesh.
        gemms: matrix products per mesh as ``(M, K, N)``; ``M`` is the row count of
            one mesh and scales with the batch.
        buffer_parameters: the layer's learned numbers held in buffers rather than
            ``nn.Parameter`` (a PCA model's mean and components), counted in
            :attr:`DecoderCost.parameters`.
    """

    name: str
    kind: str
    flops: float
    gemms: list[tuple[int, int, int]] = field(default_factory=list)
    buffer_parameters: int = 0


@dataclass
class DecoderCost:
    """Analytic cost of a decoder.

    Attributes:
        layers: per-layer costs, in call order.
        parameters: number of trainable parameters, plus the learned numbers a layer
            holds in buffers (:attr:`LayerCost.buffer_parameters`: a PCA model's mean
            and components, as :func:`mesh_decoder.train.evaluate` counts them).
        state_bytes: bytes of parameters and buffers (read once per call).
        input_bytes: bytes of one mesh's latent.
        output_bytes: bytes of one mesh's outputs (every floating output tensor;
            constant masks are not decoded).
        uncounted: qualified names of modules with parameters that no rule
            covers (their FLOPs are missing from the total).
    """

    layers: list[LayerCost]
    parameters: int
    state_bytes: int
    input_bytes: int
    output_bytes: int
    uncounted: list[str] = field(default_factory=list)

    @property
    def flops_per_mesh(self) -> float:
        return float(sum(layer.flops for layer in self.layers))

    @property
    def mflop_per_mesh(self) -> float:
        return self.flops_per_mesh / 1e6

    def min_bytes(self, batch: int) -> int:
        """Minimum bytes one call with ``batch`` latents must move."""
        return self.state_bytes + batch * (self.input_bytes + self.output_bytes)

    def gemm_shapes(self, batch: int) -> list[tuple[int, int, int]]:
        """The decoder's matrix products for a batch, as ``(M, K, N)``."""
        return [(m * batch, k, n) for layer in self.layers for (m, k, n) in layer.gemms]

    def as_dict(self) -> dict:
        return {
            "mflop_per_mesh": self.mflop_per_mesh,
            "parameters": self.parameters,
            "state_bytes": self.state_bytes,
            "input_bytes_per_mesh": self.input_bytes,
            "output_bytes_per_mesh": self.output_bytes,
            "uncounted": list(self.uncounted),
            "layers": [
                {"name": l.name, "kind": l.kind, "mflop": l.flops / 1e6, "gemms": [list(g) for g in l.gemms]}
                for l in self.layers
            ],
        }


@dataclass
class _Call:
    inputs: list[torch.Size]
    outputs: list[torch.Size]


CostRule = Callable[[str, nn.Module, "list[_Call]"], "LayerCost | None"]
_RULES: dict[type, CostRule] = {}
_DEFAULTS_LOADED = False


def register_cost(cls: type, rule: CostRule) -> None:
    """Register the cost rule of a module class.

    ``rule(name, module, calls) -> LayerCost | None`` receives the module, its
    qualified name and, per call during a batch-1 forward, the shapes of its
    tensor inputs and outputs. A module with a rule is counted as a whole: its
    children are not visited.
    """
    if not isinstance(cls, type) or not issubclass(cls, nn.Module):
        raise TypeError(f"register_cost: expected an nn.Module subclass, got {cls!r}")
    _RULES[cls] = rule


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _tensors(item)]
    return []


def _rows(shape: torch.Size) -> int:
    """Rows of a (..., C) tensor: the product of all but the last dimension."""
    return int(math.prod(shape[:-1])) if len(shape) > 1 else 1


def spiral_conv_cost(name: str, module: nn.Module, calls: list) -> LayerCost:
    """Cost rule of a spiral convolution: buffer ``indices (V, S)`` and a linear map
    ``linear`` (or ``layer``, SpiralNet++'s name) of ``S * C_in -> C_out``."""
    v, s = module.indices.shape  # (V, S)
    linear = module.linear if hasattr(module, "linear") else module.layer
    c_out = linear.out_features
    c_in = linear.in_features // s
    flops = 2 * v * s * c_in * c_out
    return LayerCost(name, "spiral_conv", len(calls) * flops, [(v, s * c_in, c_out)] * len(calls))


def _cheb_rule(name, module, calls):
    lins = module.lins
    k = len(lins)
    c_in, c_out = lins[0].in_features, lins[0].out_features
    e = int(module.laplacian_weight.shape[0])
    v = int(module.num_vertices) if hasattr(module, "num_vertices") else _rows(calls[0].outputs[0])
    sparse = (k - 1) * 2 * e * c_in + max(k - 2, 0) * 2 * v * c_in
    dense = 2 * v * k * c_in * c_out
    # PyG's parameter layout: one (C_in, C_out) product per Chebyshev term
    return LayerCost(name, "cheb_conv", len(calls) * (sparse + dense), [(v, c_in, c_out)] * (k * len(calls)))


def _linear_rule(name, module, calls):
    flops, gemms = 0, []
    for call in calls:
        rows = _rows(call.inputs[0]) if call.inputs else 1
        flops += 2 * rows * module.in_features * module.out_features
        gemms.append((rows, module.in_features, module.out_features))
    return LayerCost(name, "linear", flops, gemms)


def _upsample_rule(name, module, calls):
    v_out, k = module.index.shape  # (V_out, 3)
    flops = sum(2 * k * v_out * int(call.outputs[0][-1]) for call in calls)
    return LayerCost(name, "upsample", flops)


def coo_upsample_cost(name: str, module: nn.Module, calls: list) -> LayerCost:
    """Cost rule of a sparse COO up-sampling (buffers ``row``, ``col``, ``value``):
    one multiply-add per COO entry and channel."""
    nnz = int(module.value.numel())
    flops = sum(2 * nnz * int(call.outputs[0][-1]) for call in calls)
    return LayerCost(name, "upsample", flops)


def _downsample_rule(name, module, calls):
    return LayerCost(name, "downsample", 0.0)


def _texel_rule(name, module, calls):
    h, w, k = module.index.shape  # (H, W, 3)
    flops = 0
    for call in calls:
        out = call.outputs[0]  # (B, C, H, W) or (C, H, W)
        flops += 2 * k * h * w * int(out[-3])
    return LayerCost(name, "texel_gather", flops)


def _pca_rule(name, module, calls):
    k, dim = module.components.shape  # (K, 3V)
    # Its model is its buffers: mean (V, 3) and components (K, 3V), and the colour model's.
    stored = sum(int(t.numel()) for t in (module.mean, module.components,
                                          getattr(module, "color_mean", None),
                                          getattr(module, "color_components", None)) if t is not None)
    return LayerCost(name, "pca", len(calls) * 2 * k * dim, [(1, k, dim)] * len(calls), buffer_parameters=stored)


def _conv2d_rule(name, module, calls):
    transposed = isinstance(module, nn.ConvTranspose2d)
    kernel = math.prod(module.kernel_size)
    flops = 0
    for call in calls:
        if transposed:  # each input pixel times the (C_in, C_out / g, k_h, k_w) weight
            x = call.inputs[0]  # (B, C_in, H_in, W_in)
            flops += 2 * int(math.prod(x[-3:])) * module.out_channels * kernel // module.groups
        else:  # each output pixel from a (C_in / g, k_h, k_w) patch
            out = call.outputs[0]  # (B, C_out, H_out, W_out)
            flops += 2 * int(math.prod(out[-3:])) * module.in_channels * kernel // module.groups
    return LayerCost(name, "conv_transpose2d" if transposed else "conv2d", flops)


def _load_default_rules() -> None:
    global _DEFAULTS_LOADED
    if _DEFAULTS_LOADED:
        return
    _DEFAULTS_LOADED = True
    _RULES.setdefault(nn.Linear, _linear_rule)
    _RULES.setdefault(nn.Conv2d, _conv2d_rule)
    _RULES.setdefault(nn.ConvTranspose2d, _conv2d_rule)
    from .. import pca
    from ..nn.cheb_conv import ChebConv
    from ..nn.pool import DownSample, UpSample
    from ..nn.spiral_conv import SpiralConv
    from ..nn.texture import TexelGather

    for cls, rule in ((SpiralConv, spiral_conv_cost), (ChebConv, _cheb_rule), (UpSample, _upsample_rule),
                      (DownSample, _downsample_rule), (TexelGather, _texel_rule), (pca.PCAModel, _pca_rule)):
        _RULES.setdefault(cls, rule)


def _rule_for(module: nn.Module) -> CostRule | None:
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls]
    return None


def decoder_cost(model: nn.Module, latent: torch.Tensor) -> DecoderCost:
    """Count a decoder's cost analytically from one forward pass of one latent.

    Forward hooks record each module's input and output shapes; the rule of each
    outermost module with a registered rule (see :func:`register_cost`) turns
    them into FLOPs and GEMM shapes. The forward runs in inference mode under
    :func:`~mesh_decoder.nn.plain_formulation`, so the cost is the model's as
    written (up-sample, then convolve); the fused inference path of the spiral
    decoders runs fewer FLOPs than counted here.

    Args:
        model: the decoder (``model(z)`` returns a tensor or a tuple of tensors).
        latent: ``(1, Z)`` latent of one mesh (any values).

    Returns:
        :class:`DecoderCost` per mesh.
    """
    from ..nn.graph import plain_formulation

    _load_default_rules()
    if latent.dim() != 2 or latent.shape[0] != 1:
        raise ValueError(f"latent: expected shape (1, Z), got {tuple(latent.shape)}")
    calls: dict[str, list[_Call]] = {}
    handles = []

    def hook(name):
        def record(module, args, output):
            calls.setdefault(name, []).append(
                _Call([t.shape for t in _tensors(args)], [t.shape for t in _tensors(output)])
            )

        return record

    for name, module in model.named_modules():
        handles.append(module.register_forward_hook(hook(name)))
    try:
        with torch.inference_mode(), plain_formulation():  # every layer called, as written
            output = model(latent)
    finally:
        for handle in handles:
            handle.remove()

    layers: list[LayerCost] = []
    uncounted: list[str] = []
    covered: list[str] = []

    def inside(name: str) -> bool:
        return any(name == c or name.startswith(c + ".") or c == "" for c in covered)

    for name, module in model.named_modules():
        if inside(name):
            continue
        rule = _rule_for(module)
        if rule is not None:
            covered.append(name)
            if name in calls:
                cost = rule(name or type(module).__name__, module, calls[name])
                if cost is not None:
                    layers.append(cost)
        elif any(True for _ in module.parameters(recurse=False)) and name in calls:
            uncounted.append(name or type(module).__name__)
    order = {name: i for i, name in enumerate(calls)}
    layers.sort(key=lambda l: order.get(l.name, len(order)))
    # Persistent state only: derived gathers (non-persistent buffers) are not the model's data.
    state = [t for t in model.state_dict(keep_vars=True).values() if isinstance(t, torch.Tensor)]
    return DecoderCost(
        layers=layers,
        parameters=sum(p.numel() for p in model.parameters() if p.requires_grad)
        + sum(layer.buffer_parameters for layer in layers),
        state_bytes=sum(t.numel() * t.element_size() for t in state),
        input_bytes=latent.numel() * latent.element_size(),
        output_bytes=sum(t.numel() * t.element_size() for t in _tensors(output) if t.is_floating_point()),
        uncounted=uncounted,
    )


# ----------------------------------------------------------------------------- roofs
def matmul_roof(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    n: int = 2048,
    *,
    budget_s: float = 1.0,
    generator_seed: int = 0,
    max_product_s: float = 0.25,
) -> dict:
    """GFLOP/s of a square ``n x n`` matrix product (``2 n^3`` FLOPs per product).

    Runs under the caller's thread count and matmul precision (see :func:`precision`).
    On the CPU, float16 and bfloat16 products may be slow (no half-precision matrix
    units: fp16 at ``n`` = 2048 can take tens of seconds per product), so their size
    is chosen first: from ``min(n, 256)``, doubled (up to ``n``) while one product of
    the next size is expected (8x the last one) to take at most ``max_product_s``.

    Returns:
        dict with ``n`` (the size used), ``requested_n``, ``flops`` (per product),
        ``gflops`` and the timing.
    """
    device = torch.device(device)
    check_int(n, "n", 1)
    gen = torch.Generator().manual_seed(generator_seed)
    requested = n
    if device.type == "cpu" and dtype in (torch.float16, torch.bfloat16):
        n = _quick_size(n, dtype, max_product_s, gen)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)  # (n, n)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)  # (n, n)
    out = torch.empty(n, n, device=device, dtype=dtype)
    timing = time_fn(lambda: torch.mm(a, b, out=out), warmup=1, min_repeats=3, budget_s=budget_s, device=device)
    flops = 2 * n**3
    return {"n": n, "requested_n": requested, "flops": flops, "gflops": flops / timing.median_s / 1e9,
            "timing": timing.as_dict()}


def _quick_size(n: int, dtype: torch.dtype, max_product_s: float, gen: torch.Generator) -> int:
    """The largest of ``min(n, 256)``, doubled, ..., ``n`` whose CPU product should take <= ``max_product_s``."""
    size = min(n, 256)
    while size < n:
        a = torch.randn(size, size, generator=gen).to(dtype)  # (size, size)
        torch.mm(a, a)  # warm-up
        t0 = time.perf_counter()
        torch.mm(a, a)
        if 8 * (time.perf_counter() - t0) > max_product_s:  # the next size: 8x the FLOPs
            break
        size = min(n, 2 * size)
    return size


def copy_bandwidth(
    device: torch.device | str = "cpu",
    nbytes: int = 256 * 2**20,
    *,
    budget_s: float = 1.0,
) -> dict:
    """GB/s of copying a big tensor (bytes read + bytes written per second).

    Two figures: ``copy_gbps`` copies into a preallocated tensor (the roof used
    for fractions), ``clone_gbps`` times ``x.clone()`` (which also pays for a
    fresh allocation, as a decoder's temporaries do).
    """
    device = torch.device(device)
    x = torch.full((nbytes // 4,), 1.5, device=device)  # the values do not matter to a copy
    y = torch.empty_like(x)
    copy = time_fn(lambda: y.copy_(x), warmup=1, min_repeats=3, budget_s=budget_s / 2, device=device)
    clone = time_fn(lambda: x.clone(), warmup=1, min_repeats=3, budget_s=budget_s / 2, device=device)
    moved = 2 * x.numel() * x.element_size()
    return {
        "bytes": moved // 2,
        "copy_gbps": moved / copy.median_s / 1e9,
        "clone_gbps": moved / clone.median_s / 1e9,
        "timing": copy.as_dict(),
    }


def gemm_closure(
    shapes: Sequence[tuple[int, int, int]],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    operands: dict | None = None,
    seed: int = 0,
) -> Callable[[], None]:
    """A closure running a decoder's matrix products alone, back to back, with :func:`torch.mm`.

    Timing it gives the shape bound of one call (see :func:`gemm_bound`); the
    harness times it interleaved with the decoders, under the same machine load.

    Args:
        shapes: ``(M, K, N)`` per product.
        device, dtype: where and in what precision.
        operands: optional dict ``("a"|"b", rows, cols) -> tensor`` shared between
            closures, so products of equal shapes reuse their random operands.
        seed: seed of the random operands.
    """
    device = torch.device(device)
    operands = {} if operands is None else operands
    gen = torch.Generator().manual_seed(seed)

    def operand(kind: str, rows: int, cols: int) -> torch.Tensor:
        key = (kind, rows, cols, str(device), str(dtype))
        if key not in operands:
            operands[key] = torch.randn(rows, cols, generator=gen).to(device=device, dtype=dtype)
        return operands[key]

    pairs = [(operand("a", m, k), operand("b", k, n)) for m, k, n in shapes]

    def run() -> None:
        for a, b in pairs:
            torch.mm(a, b)

    return run


def gemm_bound(
    shapes: Sequence[tuple[int, int, int]],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    *,
    budget_s: float = 0.5,
    cache: dict | None = None,
    seed: int = 0,
) -> dict:
    """Time a decoder's matrix products alone: the shape bound of one call.

    Each distinct ``(M, K, N)`` is timed with :func:`torch.mm` on random inputs
    (median of repeats); the bound is the sum over all products.

    Args:
        shapes: ``(M, K, N)`` per product, as :meth:`DecoderCost.gemm_shapes`.
        device, dtype: where and in what precision to run them.
        budget_s: timing budget per distinct shape (default 0.5).
        cache: optional dict ``(M, K, N, device, dtype) -> seconds`` reused across calls.
        seed: seed of the random operands (default 0; they are drawn fresh, never zeros).

    Returns:
        dict with ``seconds`` (per call), ``gflops`` achieved by the products and
        ``per_shape`` seconds.
    """
    device = torch.device(device)
    cache = {} if cache is None else cache
    total, flops, per_shape = 0.0, 0.0, []
    gen = torch.Generator().manual_seed(seed)
    for m, k, n in shapes:
        key = (m, k, n, str(device), str(dtype))
        if key not in cache:
            a = torch.randn(m, k, generator=gen).to(device=device, dtype=dtype)
            b = torch.randn(k, n, generator=gen).to(device=device, dtype=dtype)
            cache[key] = time_fn(lambda: torch.mm(a, b), warmup=1, min_repeats=3, budget_s=budget_s, device=device).median_s
            del a, b
        total += cache[key]
        flops += 2 * m * k * n
        per_shape.append({"m": m, "k": k, "n": n, "seconds": cache[key]})
    return {"seconds": total, "gflops": flops / total / 1e9 if total > 0 else math.nan, "per_shape": per_shape}
