r"""Spiral convolution on a fixed-topology mesh (SpiralNet++).

Gong, Chen, Bronstein, Zafeiriou: "SpiralNet++: A Fast and Highly Efficient Mesh
Convolution Operator", ICCV Workshops 2019.

Every vertex ``v`` has a spiral ``s(v) = (s_1, ..., s_S)`` of vertex indices that
starts at ``v`` and winds outwards. The layer concatenates the features along the
spiral and applies one linear map:

.. math::

    \mathbf{x}'_v = \mathbf{W} \, \big\Vert_{j=1}^{S} \mathbf{x}_{s_j(v)} + \mathbf{b},
    \qquad \mathbf{W} \in \mathbb{R}^{C_{out} \times S C_{in}}.

The concatenation is spiral-major: entry ``j`` of the spiral, channel ``c`` lands
at column ``j * C_in + c`` of :math:`\mathbf{W}`, as in SpiralNet++, so its weights
load with a key renaming (:func:`convert_spiralnet_state_dict`).

Speed on CPU
------------
The plain formulation gathers a ``(B, V, S*C_in)`` tensor and multiplies it by
``W^T``. At ``B=32, V=5023, S=9, C_in=32`` that temporary is 185 MB; allocating it
(fresh pages from the OS on every call) costs several times more than the gather
and the matrix product together, and autograd keeps it alive until backward. On
CPU the layer therefore runs a chunked kernel (:class:`_SpiralGatherLinear`):
it gathers a few MB of spiral rows at a time into one reused buffer and writes
``addmm`` results straight into the output; backward gathers again instead of
storing the gathered tensor. Results equal the plain formulation up to fp32
summation order. On one CPU thread at ``B=32, V=5041, S=9`` and ``C_in -> C_out``
of 32->32, 64->64 and 64->32 it measured about 1.5-4x faster in forward and
1.3-2.8x in forward+backward than the plain formulation (16->3: forward on par,
forward+backward about 1.6x), and it never holds the gathered tensor for backward.

Without autograd, a layer with fewer outputs than inputs (the output convolution
of a decoder) runs project-then-gather (:func:`project_gather`): every vertex is
multiplied by all ``S`` weight blocks first, then ``torch.nn.functional.embedding_bag``
sums the ``S`` projected rows of each spiral, moving ``S * C_out`` instead of
``S * C_in`` numbers per vertex. The same two functions, with the up-sampling
folded into the gather (:func:`spiral_bags`), are the decoders' fused
up-sampling + convolution (:class:`~mesh_decoder.nn.up_spiral_conv.UpSpiralConv`).

The narrow inference path also runs under ``torch.compile`` on the CPU, where the
gather is the opaque operator ``mesh_decoder::bag_sum`` (:func:`embedding_bag_sum`),
and on CUDA with the Triton gather of :mod:`~mesh_decoder.nn.triton_gather` in place
of ``embedding_bag``.

Otherwise the plain formulation (:func:`spiral_gather` then ``nn.Linear``) runs: the
chunked kernel is left out under ``torch.compile``/``torch.export`` (the compiler
plans its own buffers), while tracing (TorchScript ONNX export), under autocast and
:func:`~mesh_decoder.nn.plain_formulation`, and on devices other than the CPU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_bool, check_tensor, positive_int
from ..hierarchy.container import MeshHierarchy
from .graph import (after_load, check_features, fast_paths_enabled, hierarchy_level, inference_fast_path, records_grad,
                    under_func_transform, update_buffer)
from .triton_gather import gather_project, gather_sum_available, weighted_gather_sum

__all__ = [
    "SpiralConv",
    "clear_caches",
    "convert_spiralnet_state_dict",
    "embedding_bag_sum",
    "project_gather",
    "spiral_bags",
    "spiral_gather",
    "spiral_weight_blocks",
    "weight_blocks_scope",
    "weighted_row_sum",
]

#: Bytes of gathered spiral rows per chunk of the CPU kernel (measured: 1-16 MB are
#: all close; 4 MB stays well below glibc's mmap threshold, so the buffer is reused).
CHUNK_BYTES = 4 << 20
#: Fewest output rows per chunk, to bound Python overhead for very wide inputs.
MIN_CHUNK_ROWS = 256
#: On CUDA, up to this many output rows (batch x vertices) a spiral layer runs as one
#: gather-and-multiply kernel (:func:`~mesh_decoder.nn.triton_gather.gather_project`)
#: instead of a matrix product then the gather kernel. Off (0) by default: on an H200
#: with 16384 it measured slower in every precision at batch 32 and in bf16/fp16 at
#: batch 1; faster at batch 1 in fp32/tf32, but in a later run that also changed the
#: batch-1 input copy (``benchmarks/results/variants/``, the README's variants table).
GATHER_PROJECT_ROWS = 0
#: On CUDA, up to this many output rows (batch x vertices) a layer multiplies by the
#: spiral weight as stored (``x @ W.view(C_out * S, C_in).T``, read by the gather
#: through strides) instead of by its rearranged copy (:func:`spiral_weight_blocks`,
#: which a captured CUDA graph makes again on every replay), and the gather runs on
#: blocks of :data:`LATENCY_BLOCK_V` vertices, so a small batch gets more programs.
#: Off (0) until measured on a GPU: ``benchmarks/gpu.sh`` runs it as a variant.
LATENCY_ROWS = 0
#: Output vertices per gather program under :data:`LATENCY_ROWS`.
LATENCY_BLOCK_V = 16


def _pad_flat(x: Tensor) -> Tensor:
    """Append the virtual zero vertex to every sample and flatten the batch.

    Shapes: ``(B, V, C) -> (B * (V + 1), C)``.
    """
    B, V, C = x.shape
    return torch.cat([x, x.new_zeros(B, 1, C)], dim=1).reshape(B * (V + 1), C)  # (B*(V+1), C)


def _chunk_index(indices: Tensor, r0: int, r1: int) -> Tensor:
    """Rows of the padded, flattened input that output rows ``[r0, r1)`` gather.

    Output row ``r`` is vertex ``v = r mod V`` of sample ``b = r div V``; its spiral
    entry ``j`` is row ``b * (V + 1) + indices[v, j]`` of :func:`_pad_flat`'s result.

    Shapes: ``indices (V, S) -> ((r1 - r0) * S,)``.
    """
    V = indices.shape[0]
    r = torch.arange(r0, r1, device=indices.device)  # (n,)
    b = torch.div(r, V, rounding_mode="floor")  # (n,)
    v = r - b * V  # (n,)
    return (indices.index_select(0, v) + (b * (V + 1)).unsqueeze(1)).reshape(-1)  # (n*S,)


def _chunk_rows(S: int, C: int, element_size: int) -> int:
    return max(MIN_CHUNK_ROWS, CHUNK_BYTES // max(1, S * C * element_size))


def spiral_gather(x: Tensor, indices: Tensor) -> Tensor:
    """Concatenate features along every spiral (the plain formulation's gather).

    Args:
        x: ``(B, V, C)`` features.
        indices: ``(V, S)`` int64 spirals padded with ``V`` (the zero vertex).

    Shapes:
        ``(B, V, C) -> (B, V, S * C)``, spiral-major: entry ``j``, channel ``c`` at
        column ``j * C + c``.
    """
    B, V, C = x.shape
    S = indices.shape[1]
    x = torch.cat([x, x.new_zeros(B, 1, C)], dim=1)  # (B, V+1, C)
    return x.index_select(1, indices.reshape(-1)).view(B, V, S * C)  # (B, V, S*C)


class _SpiralGatherLinear(torch.autograd.Function):
    """``linear(spiral_gather(x, indices), weight, bias)`` in chunks, on CPU.

    Forward never materialises the ``(B, V, S*C)`` gather; backward recomputes the
    gather chunk by chunk for the weight gradient and scatters ``grad @ W`` back with
    ``index_add_``. When backward itself is differentiated (``create_graph=True``) it
    switches to the same formulas written with out-of-place, differentiable ops.

    Shapes: ``x (B, V, C_in), indices (V, S), weight (C_out, S*C_in), bias (C_out,)
    -> (B, V, C_out)``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, indices: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        B, V, C = x.shape
        S = indices.shape[1]
        O = weight.shape[0]
        xf = _pad_flat(x)  # (B*(V+1), C)
        out = x.new_empty(B * V, O)  # (B*V, O)
        n = _chunk_rows(S, C, x.element_size())
        buf = x.new_empty(min(n, B * V) * S, C)  # (n*S, C), reused by every chunk
        wt = weight.t()  # (S*C, O)
        for r0 in range(0, B * V, n):
            r1 = min(r0 + n, B * V)
            rows = _chunk_index(indices, r0, r1)  # ((r1-r0)*S,)
            g = torch.index_select(xf, 0, rows, out=buf[: rows.numel()])  # ((r1-r0)*S, C)
            g = g.view(r1 - r0, S * C)  # (r1-r0, S*C)
            if bias is None:
                torch.mm(g, wt, out=out[r0:r1])
            else:
                torch.addmm(bias, g, wt, out=out[r0:r1])
        ctx.save_for_backward(x, indices, weight)
        ctx.has_bias = bias is not None
        return out.view(B, V, O)  # (B, V, O)

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        x, indices, weight = ctx.saved_tensors
        need_x, _, need_w, need_b = ctx.needs_input_grad
        B, V, C = x.shape
        S = indices.shape[1]
        O = weight.shape[0]
        go = grad_out.reshape(B * V, O)  # (B*V, O)
        grad_b = go.sum(0) if (need_b and ctx.has_bias) else None

        if torch.is_grad_enabled():
            # Double backward: the same maths with differentiable, out-of-place ops.
            grad_x = grad_w = None
            if need_w:
                g = spiral_gather(x, indices).reshape(B * V, S * C)  # (B*V, S*C)
                grad_w = go.t() @ g  # (O, S*C)
            if need_x:
                rows = _chunk_index(indices, 0, B * V)  # (B*V*S,)
                gg = (go @ weight).reshape(B * V * S, C)  # (B*V*S, C)
                gxf = x.new_zeros(B * (V + 1), C).index_add(0, rows, gg)  # (B*(V+1), C)
                grad_x = gxf.view(B, V + 1, C)[:, :V]  # (B, V, C)
            return grad_x, None, grad_w, grad_b

        xf = _pad_flat(x) if need_w else None  # (B*(V+1), C)
        grad_w = torch.zeros_like(weight) if need_w else None  # (O, S*C)
        gxf = x.new_zeros(B * (V + 1), C) if need_x else None  # (B*(V+1), C)
        n = _chunk_rows(S, C, x.element_size())
        buf = x.new_empty(min(n, B * V) * S, C)  # (n*S, C)
        for r0 in range(0, B * V, n):
            r1 = min(r0 + n, B * V)
            rows = _chunk_index(indices, r0, r1)  # ((r1-r0)*S,)
            chunk = buf[: rows.numel()]  # ((r1-r0)*S, C)
            if need_w:
                g = torch.index_select(xf, 0, rows, out=chunk).view(r1 - r0, S * C)  # (r1-r0, S*C)
                grad_w.addmm_(go[r0:r1].t(), g)
            if need_x:
                gg = torch.mm(go[r0:r1], weight, out=chunk.view(r1 - r0, S * C))  # (r1-r0, S*C)
                gxf.index_add_(0, rows, gg.view(-1, C))
        grad_x = gxf.view(B, V + 1, C)[:, :V] if need_x else None  # (B, V, C)
        return grad_x, None, grad_w, grad_b


def spiral_bags(
    spirals: Tensor,
    up_index: Tensor | None = None,
    up_weight: Tensor | None = None,
    num_in: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The weighted gather of :func:`project_gather` for spirals (after an up-sampling).

    Row ``c * S + j`` of the projected input ``z.view(V_in * S, C_out)`` holds
    ``W_j x_c``. Output vertex ``v`` sums, for each spiral entry ``j``:

    - without up-sampling: row ``s_j(v) * S + j`` with weight 1;
    - with up-sampling: rows ``up_index[s_j(v), k] * S + j`` with weights
      ``up_weight[s_j(v), k]``, ``k = 1..K``.

    Spiral padding (index ``V``, the zero vertex) gets weight 0 and row 0.

    Args:
        spirals: ``(V, S)`` int64 spiral indices padded with ``V``.
        up_index: ``(V, K)`` int64 coarse vertices of each fine vertex, or ``None``.
        up_weight: ``(V, K)`` float weights (with ``up_index``).
        num_in: ``V_in``, the input vertex count (default: ``V`` without
            up-sampling, else ``up_index.max() + 1``).

    Returns:
        ``(index, weight)``: ``(V, S*K)`` int64 rows and ``(V, S*K)`` weights
        (``up_weight``'s dtype, or float32), ``K = 1`` without up-sampling.
    """
    check_tensor(spirals, "spirals", shape=("V", "S"), dtype=torch.int64)
    V, S = spirals.shape
    if spirals.numel() and (int(spirals.min()) < 0 or int(spirals.max()) > V):
        raise ValueError(f"spirals: expected values in [0, {V}] ({V} = padding), "
                         f"got range [{int(spirals.min())}, {int(spirals.max())}]")
    j = torch.arange(S, device=spirals.device).view(1, S, 1)  # (1, S, 1)
    pad = spirals == V  # (V, S)
    if up_index is None:
        if up_weight is not None:
            raise ValueError("up_weight: given without up_index")
        if num_in is not None and positive_int(num_in, "num_in") != V:
            raise ValueError(f"num_in: expected {V} (no up-sampling), got {num_in}")
        corner = spirals.masked_fill(pad, 0).unsqueeze(2)  # (V, S, 1)
        weight = (~pad).to(torch.float32).unsqueeze(2)  # (V, S, 1)
    else:
        check_tensor(up_index, "up_index", shape=(V, "K"), dtype=torch.int64)
        if up_weight is None:
            raise ValueError("up_weight: expected a (V, K) tensor with up_index, got None")
        check_tensor(up_weight, "up_weight", shape=tuple(up_index.shape))
        if not up_weight.dtype.is_floating_point:
            raise TypeError(f"up_weight: expected a floating dtype, got {up_weight.dtype}")
        K = up_index.shape[1]
        num_in = int(up_index.max()) + 1 if num_in is None else positive_int(num_in, "num_in")
        if up_index.numel() and (int(up_index.min()) < 0 or int(up_index.max()) >= num_in):
            raise ValueError(f"up_index: expected values in [0, {num_in}), "
                             f"got range [{int(up_index.min())}, {int(up_index.max())}]")
        rows = torch.cat([up_index, up_index.new_zeros(1, K)])  # (V+1, K): row V is the padding vertex
        weights = torch.cat([up_weight, up_weight.new_zeros(1, K)])  # (V+1, K)
        corner = rows[spirals]  # (V, S, K)
        weight = weights[spirals]  # (V, S, K)
    index = corner * S + j  # (V, S, K)
    return index.reshape(V, -1), weight.reshape(V, -1)  # (V, S*K), (V, S*K)


def spiral_weight_blocks(weight: Tensor, spiral_length: int) -> Tensor:
    """A spiral weight ``(C_out, S*C_in)`` rearranged as ``(C_in, S*C_out)``.

    Column ``j * C_out + o`` is row ``o`` of block ``W_j``, so ``x @ blocks``
    viewed ``(..., S, C_out)`` holds ``W_j x`` at ``[..., j, :]``.
    """
    S = positive_int(spiral_length, "spiral_length")
    if weight.dim() != 2 or weight.shape[1] % S:
        raise ValueError(f"weight: expected shape (C_out, S*C_in) with S = spiral_length = {S}, "
                         f"got {tuple(weight.shape)}")
    O, SC = weight.shape
    C = SC // S
    return weight.view(O, S, C).permute(2, 1, 0).reshape(C, S * O)  # (C_in, S*C_out)


class _CachedBags(NamedTuple):
    """One gather replicated for a batch in :class:`BagCache`."""

    key: tuple
    index: Tensor  # (V_out, N), held so its identity is checked
    weight: Tensor  # (V_out, N), held likewise
    rows: Tensor  # (B*V_out, N)
    w: Tensor  # (B*V_out, N)


class _CachedBlocks(NamedTuple):
    """A spiral weight rearranged by :func:`spiral_weight_blocks`, in :class:`BagCache`."""

    key: tuple
    weight: Tensor  # (C_out, S*C_in), held so its identity is checked
    blocks: Tensor  # (C_in, S*C_out)


class BagCache:
    """A gather of :func:`project_gather` replicated for a batch, kept between calls.

    Sample ``b`` of a batch reads rows ``index + b * rows_per_sample``; the first
    ``B`` samples of a replicated gather are the gather of any batch of ``B``, so one
    copy built for the largest batch seen serves every smaller one. The copy is a
    cache of data derived from a layer's buffers (rebuilt when the dtype changes or
    the gather's tensors are replaced or changed in place; :meth:`clear` drops it),
    not graph data of its own. It serves CPU inference only (:func:`embedding_bag_sum`).

    It also keeps a layer's rearranged spiral weight (``blocks``, see
    :func:`_cached_blocks`).
    """

    # Each entry is one tuple, replaced whole and read once into a local, so threads decoding with one
    # module at once never pair one entry's index with another's weights (a rebuild may be done twice).
    def __init__(self) -> None:
        self._bags: _CachedBags | None = None
        self._blocks: _CachedBlocks | None = None

    def clear(self) -> int:
        """Drop both entries; returns the bytes they held (each read once: a decoding thread may replace it)."""
        bags, blocks = self._bags, self._blocks
        self._bags = self._blocks = None
        return (0 if bags is None else bags.rows.nbytes + bags.w.nbytes) + (
            0 if blocks is None else blocks.blocks.nbytes)

    @property
    def index(self) -> Tensor | None:
        """The replicated index, ``(B*V_out, N)`` for the largest batch ``B`` kept (``None`` before use)."""
        return None if self._bags is None else self._bags.rows

    @property
    def weight(self) -> Tensor | None:
        """The replicated gather weights, ``(B*V_out, N)``."""
        return None if self._bags is None else self._bags.w

    @property
    def blocks(self) -> Tensor | None:
        """:func:`spiral_weight_blocks` of the last weight (see :func:`_cached_blocks`)."""
        return None if self._blocks is None else self._blocks.blocks

    def get(self, index: Tensor, weight: Tensor, batch: int, rows_per_sample: int,
            dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``(index, weight)`` of ``batch`` samples: ``(batch * V_out, N)`` each."""
        V_out, N = index.shape
        # rebuilt for other tensors (a dtype round trip, a move) or the same ones changed in place (load_state_dict)
        key = (index.data_ptr(), index.device, rows_per_sample, dtype, _version(index), _version(weight))
        bags = self._bags
        if (bags is None or bags.key != key or bags.index is not index or bags.weight is not weight
                or bags.rows.shape[0] < batch * V_out):
            bags = _CachedBags(key, index, weight, *_replicate_bags(index, weight.to(dtype), batch, rows_per_sample))
            self._bags = bags
        return bags.rows[: batch * V_out], bags.w[: batch * V_out]


def clear_caches(module: nn.Module | None = None) -> int:
    """Free the CPU inference caches: the batch-replicated gathers and rearranged weights
    that each spiral layer of ``module`` keeps (:class:`BagCache`, sized by the largest
    batch chunk it decoded), and the copies that compiled decoders share. The next decode
    rebuilds what it needs, so results do not change; for a long-running service after a
    rare large batch. ``None`` frees the shared copies only.

    Returns the bytes the freed caches held.
    """
    if module is not None and not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module or None, got {type(module).__name__}")
    freed = _SHARED_BAGS.clear()
    for layer in () if module is None else module.modules():
        cache = getattr(layer, "_bag_cache", None)
        if isinstance(cache, BagCache):
            freed += cache.clear()
    return freed


def _version(t: Tensor) -> int | None:
    """``t``'s version counter (bumped by every in-place change), ``None`` for an inference tensor (none kept)."""
    return None if t.is_inference() else t._version


def _replicate_bags(index: Tensor, weight: Tensor, batch: int, rows_per_sample: int) -> tuple[Tensor, Tensor]:
    """Shapes: ``(V_out, N) -> (batch * V_out, N)``, sample ``b``'s rows offset by ``b * rows_per_sample``."""
    V_out, N = index.shape
    offsets = torch.arange(batch, device=index.device).mul_(rows_per_sample).view(batch, 1, 1)  # (B, 1, 1)
    rows = (index + offsets).view(batch * V_out, N)  # (B*V_out, N)
    return rows, _replicate_weight(weight, batch)


def _replicate_weight(weight: Tensor, batch: int) -> Tensor:
    """Shapes: ``(V_out, N) -> (batch * V_out, N)``, the weight of every sample."""
    V_out, N = weight.shape
    return weight.expand(batch, V_out, N).reshape(batch * V_out, N)


def weighted_row_sum(z: Tensor, index: Tensor, weight: Tensor) -> Tensor:
    """``out[b, v] = sum_i weight[v, i] * z[b, index[v, i]]`` written as indexing.

    The formulation the compiler fuses; eager mode would materialise the
    ``(B, V_out, N, C)`` gather, so :func:`project_gather` uses ``embedding_bag`` there.

    Shapes: ``z (B, R, C), index (V_out, N), weight (V_out, N) -> (B, V_out, C)``.
    """
    rows = z[:, index]  # (B, V_out, N, C)
    return (rows * weight.to(z.dtype).unsqueeze(-1)).sum(2)  # (B, V_out, C)


def _use_triton(z: Tensor) -> bool:
    """The Triton gather runs for CUDA tensors of the dtypes it computes in (fp16,
    bf16, fp32: it accumulates in fp32, so fp64 takes the plain path) when Triton is
    installed (eager, captured in CUDA graphs, and compiled, as a custom operator)."""
    return _triton_device(z) and z.dtype in _TRITON_DTYPES and gather_sum_available(z)


def _triton_device(z: Tensor) -> bool:
    """Whether ``z`` is on a device the Triton gather serves (the interpreter tests route CPU tensors here)."""
    return z.device.type == "cuda"


_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # what the Triton gather computes in

_BLOCKS_SCOPE = threading.local()  # .token: the open weight_blocks_scope's, if any


@contextmanager
def weight_blocks_scope() -> Iterator[None]:
    """Within it, each spiral layer rearranges its weight once (:func:`_cached_blocks`).

    A decoder opens one per call, so the chunks of a chunked decode share each layer's
    rearranged weight. Outside a scope every call rearranges afresh: a weight changed
    between calls by any means, ``.data`` included (which no version counter sees), is
    always the one used. Nested scopes are one scope.

    Around a loop of small calls with fixed weights it saves the rearrangements, as
    ``torch.nn.utils.parametrize.cached()`` does for parametrisations (measured on 2
    cores: 0.12 ms of a 1.3 ms batch-1 decode of the 5,023-vertex spiral decoder)::

        with torch.inference_mode(), weight_blocks_scope():
            meshes = [decoder(z) for z in latents]

    Within it, change weights in place (their version counters see that) or not at all.
    """
    if getattr(_BLOCKS_SCOPE, "token", None) is not None:
        yield
        return
    _BLOCKS_SCOPE.token = object()
    try:
        yield
    finally:
        _BLOCKS_SCOPE.token = None


def _cached_blocks(weight: Tensor, S: int, cache: BagCache | None) -> Tensor:
    """:func:`spiral_weight_blocks`, kept in ``cache`` for the rest of the open
    :func:`weight_blocks_scope` (rebuilt if the weight changes there: another tensor,
    dtype, device or an in-place update); made afresh outside a scope.

    Not cached while a CUDA graph is captured: the graph then rearranges the weight
    itself on every replay, so it sees weights updated in place after the capture.
    """
    if cache is None or torch.compiler.is_compiling():  # first: a compiled graph must not guard on the thread-local
        return spiral_weight_blocks(weight, S)
    token = getattr(_BLOCKS_SCOPE, "token", None)
    if (token is None or (weight.requires_grad and torch.is_grad_enabled())
            or (weight.is_cuda and torch.cuda.is_current_stream_capturing())):
        return spiral_weight_blocks(weight, S)
    version = _version(weight)
    if version is None:  # an inference tensor: no version counter to see in-place changes by
        return spiral_weight_blocks(weight, S)
    key = (token, weight.data_ptr(), version, weight.dtype, weight.device, tuple(weight.shape), S)
    entry = cache._blocks
    if entry is None or entry.key != key or entry.weight is not weight:
        entry = _CachedBlocks(key, weight, spiral_weight_blocks(weight, S).detach())
        cache._blocks = entry
    return entry.blocks


def project_gather(x: Tensor, index: Tensor, bag_weight: Tensor, weight: Tensor, bias: Tensor | None,
                   spiral_length: int, cache: BagCache | None = None, activation: str | None = None) -> Tensor:
    """Project every input vertex by all spiral blocks, then sum weighted rows.

    ``y[b, v] = act(bias + sum_i bag_weight[v, i] * z[b].view(V_in * S, C_out)[index[v, i]])``
    with ``z[b] = x[b] @ spiral_weight_blocks(weight, S)``.

    The sum runs as ``embedding_bag`` on the CPU and as the Triton kernels of
    :mod:`~mesh_decoder.nn.triton_gather` on CUDA (bias and activation fused; also
    under ``torch.compile``, as custom operators; up to :data:`GATHER_PROJECT_ROWS`
    output rows the product is fused in too, and up to :data:`LATENCY_ROWS` the
    weight is used as stored: both off by default), and as indexing
    (:func:`weighted_row_sum`) when compiling for CUDA without Triton.

    Args:
        x: ``(B, V_in, C_in)`` features.
        index, bag_weight: ``(V_out, N)`` from :func:`spiral_bags`.
        weight: ``(C_out, S*C_in)`` spiral weight (``SpiralConv.linear.weight``).
        bias: ``(C_out,)`` or ``None``.
        spiral_length: ``S``.
        cache: keeps the batch-replicated gather (CPU) and the rearranged weight
            between calls; ``None`` rebuilds them on every call. Not used while
            compiling.
        activation: ``None`` or ``"elu"``, applied to the result.

    Shapes:
        ``(B, V_in, C_in) -> (B, V_out, C_out)``
    """
    if activation not in (None, "elu"):
        raise ValueError(f"activation: expected None or 'elu', got {activation!r}")
    B, V_in, _ = x.shape
    V_out, N = index.shape
    O = weight.shape[0]
    S = int(spiral_length)
    triton = _use_triton(x) and not records_grad(x, weight, bias)  # eager, CUDA graphs and compiled alike
    if triton and B * V_out <= LATENCY_ROWS:
        z = torch.matmul(x, weight.reshape(O * S, -1).t())  # (B, V_in, C_out*S), column o*S + j
        z = z.view(B, V_in, O, S).transpose(2, 3)  # (B, V_in, S, C_out), strided: row u*S + j is W_j x_u
        return weighted_gather_sum(z, index, bag_weight, bias, activation, LATENCY_BLOCK_V)  # (B, V_out, C_out)
    blocks = _cached_blocks(weight, S, cache)  # (C_in, S*C_out)
    if triton:
        if B * V_out <= GATHER_PROJECT_ROWS:  # few rows: one kernel, launches dominate
            return gather_project(x, index, bag_weight, blocks, bias, S, activation)  # (B, V_out, C_out)
        z = torch.matmul(x, blocks)  # (B, V_in, S*C_out)
        return weighted_gather_sum(z.view(B, V_in * S, O), index, bag_weight, bias, activation)  # (B, V_out, C_out)
    z = torch.matmul(x, blocks)  # (B, V_in, S*C_out)
    if z.is_cuda and torch.compiler.is_compiling():
        # Without Triton, indexing for the GPU compiler, which fuses the gather and the
        # sum (on the CPU its code is slower than embedding_bag: measured).
        out = weighted_row_sum(z.view(B, V_in * S, O), index, bag_weight)  # (B, V_out, C_out)
        return _bias_act(out, bias, activation, inplace=False)
    return embedding_bag_sum(z.view(B, V_in * S, O), index, bag_weight, bias, activation, cache)  # (B, V_out, C_out)


def embedding_bag_sum(z: Tensor, index: Tensor, weight: Tensor, bias: Tensor | None = None,
                      activation: str | None = None, cache: BagCache | None = None) -> Tensor:
    """``act(bias + sum_i weight[v, i] * z[b, index[v, i]])`` by ``embedding_bag``.

    Four ways, all the same sum:

    - CPU, no autograd, a ``cache`` (eager only): one call on the batch folded into
      the rows (``index`` offset by ``b * R`` for sample ``b``), the replicated gather
      kept in ``cache``; bias and activation in place. Fastest for the few samples
      of a chunked decode.
    - CPU, no autograd, otherwise: one call per sample, all reading the same ``(V, N)``
      gather, bias and activation applied while the sample is in cache. No index is
      replicated, so a large batch or gather costs no extra memory.
    - Under ``torch.compile`` on the CPU without autograd: the operator
      ``mesh_decoder::bag_sum``, one opaque call, which folds a batch of a few
      samples into one call with a replicated gather it keeps itself
      (:class:`_SharedBags`) and sums a larger one sample at a time.
    - With autograd (or off the CPU): one call on the folded batch, replicated
      afresh, which autograd differentiates.

    Args:
        z: ``(B, R, C)`` rows.
        index: ``(V, N)`` int64 rows of ``z``, each in ``[0, R)``.
        weight: ``(V, N)`` weights.
        bias: ``(C,)`` or ``None``.
        activation: ``None`` or ``"elu"``.
        cache: keeps the batch-replicated gather between calls (see above).

    Shapes: ``(B, R, C) -> (B, V, C)``.
    """
    if activation not in (None, "elu"):
        raise ValueError(f"activation: expected None or 'elu', got {activation!r}")
    B, R, C = z.shape
    V, N = index.shape
    if B == 0:  # embedding_bag cannot fold an empty batch
        return z.new_empty(0, V, C)
    inference_cpu = z.device.type == "cpu" and not records_grad(z, weight, bias)
    if inference_cpu and (cache is None or B == 1 or torch.compiler.is_compiling()):
        # The operator for the compiler; called directly otherwise (its dispatch measured
        # about 0.1 ms a call, as much as a small layer's whole gather).
        per_sample = _bag_sum_op if torch.compiler.is_compiling() else _bag_sum
        return per_sample(z, index, weight.to(z.dtype), bias, activation or "none")  # (B, V, C)
    if inference_cpu:
        rows, w = cache.get(index, weight, B, R, z.dtype)  # (B*V, N) each
    else:
        rows, w = _replicate_bags(index, weight.to(z.dtype), B, R)  # (B*V, N) each
    return _folded_bag_sum(z, rows, w, bias, activation, inplace=inference_cpu)  # (B, V, C)


def _folded_bag_sum(z: Tensor, rows: Tensor, weight: Tensor, bias: Tensor | None, activation: str | None,
                    inplace: bool) -> Tensor:
    """One ``embedding_bag`` over the batch folded into the rows, then bias and activation.

    Shapes: ``z (B, R, C), rows (B*V, N), weight (B*V, N) -> (B, V, C)``; sample ``b``'s
    rows of ``rows`` are offset by ``b * R`` (:func:`_replicate_bags`).
    """
    B, R, C = z.shape
    out = F.embedding_bag(rows, z.reshape(B * R, C), per_sample_weights=weight, mode="sum")  # (B*V, C)
    return _bias_act(out.view(B, -1, C), bias, activation, inplace)  # (B, V, C)


def _bias_act(out: Tensor, bias: Tensor | None, activation: str | None, inplace: bool) -> Tensor:
    """``act(out + bias)``, ELU for ``activation == "elu"`` and none otherwise (``None``,
    ``"none"``); in place when ``out`` is a fresh tensor that autograd does not record."""
    if bias is not None:
        out = out.add_(bias) if inplace else out + bias
    if activation != "elu":
        return out
    return F.elu_(out) if inplace else F.elu(out)


def _bag_sum(z: Tensor, index: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
    """:func:`embedding_bag_sum` one sample at a time. Measured on 2 CPU threads at
    ``B=32``, 5,023 bags of 27 rows of 32 channels: 8.9 ms, against 10.0 ms for one
    call on a cached batch-replicated index and 24.6 ms when that index is built."""
    def one(b: int) -> Tensor:
        y = F.embedding_bag(index, z[b], per_sample_weights=weight, mode="sum")  # (V, C)
        return _bias_act(y, bias, activation, inplace=True)

    B, _, C = z.shape
    if B == 1:
        return one(0).unsqueeze(0)  # (1, V, C)
    out = z.new_empty(B, index.shape[0], C)  # (B, V, C)
    for b in range(B):
        out[b] = one(b)
    return out


class _SharedCopy(NamedTuple):
    """One gather's batch-replicated copy in :class:`_SharedBags`."""

    index: Tensor  # (V, N), held so its storage is not reused while keyed
    weight: Tensor  # (V, N), held likewise
    weight_key: tuple
    rows: Tensor  # (B*V, N)
    w: Tensor  # (B*V, N)


class _SharedBags:
    """Batch-replicated gathers of the operator ``mesh_decoder::bag_sum``, shared by
    every layer.

    A compiled graph calls the operator without the layer's :class:`BagCache` (state
    the graph cannot carry), so the operator keeps its own copies: keyed by the
    gather's storage, with the gather and its weight held (their storage cannot be
    freed and reused while keyed) and their version counters checked, so an in-place
    update rebuilds the copy. A copy over :data:`SHARED_BAG_BYTES` is not made (the
    operator then sums one sample at a time), and the least recently used copies are
    dropped once all together pass :data:`SHARED_BAGS_BYTES`.

    Measured on 2 CPU threads, ``spiralnet++-coma`` compiled at batch 256 (chunks of a
    few samples), separate processes: compiled/eager 0.93-1.10 with these copies
    against 0.66-0.79 summing one sample at a time.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: OrderedDict[tuple, _SharedCopy] = OrderedDict()

    @property
    def nbytes(self) -> int:
        """Bytes of all kept copies."""
        with self._lock:  # another thread's get may change the entries
            return self._held()

    def _held(self) -> int:
        """Bytes of all kept copies; the caller holds the lock."""
        return sum(e.rows.nbytes + e.w.nbytes for e in self.entries.values())

    def clear(self) -> int:
        """Drop every copy; returns the bytes they held."""
        with self._lock:
            freed = self._held()
            self.entries.clear()
        return freed

    def get(self, index: Tensor, weight: Tensor, batch: int, rows_per_sample: int) -> tuple[Tensor, Tensor] | None:
        """``(rows, weight)`` of ``batch`` samples, ``(batch * V, N)`` each, or ``None``
        where no copy is kept (too large, or a tensor without a version counter)."""
        V, N = index.shape
        if batch * V * N * (index.element_size() + weight.element_size()) > SHARED_BAG_BYTES:
            return None
        index_version, weight_version = _version(index), _version(weight)
        if index_version is None or weight_version is None:  # inference tensors: in-place changes unseen
            return None
        index_key = (index.untyped_storage().data_ptr(), index.storage_offset(), tuple(index.shape),
                     index.stride(), index.device, index_version, rows_per_sample)
        weight_key = (weight.untyped_storage().data_ptr(), weight.storage_offset(), tuple(weight.shape),
                      weight.stride(), weight.dtype, weight_version)
        with self._lock:
            entry = self.entries.pop(index_key, None)
            if entry is None or entry.rows.shape[0] < batch * V:
                rows, w = _replicate_bags(index, weight, batch, rows_per_sample)  # (batch*V, N) each
            elif entry.weight_key != weight_key:  # the same gather with another weight
                rows, w = entry.rows, _replicate_weight(weight, entry.rows.shape[0] // V)
            else:
                rows, w = entry.rows, entry.w
            self.entries[index_key] = _SharedCopy(index, weight, weight_key, rows, w)
            while len(self.entries) > 1 and self._held() > SHARED_BAGS_BYTES:
                self.entries.popitem(last=False)
            return rows[: batch * V], w[: batch * V]


#: Largest batch-replicated gather (index and weight bytes) the operator
#: ``mesh_decoder::bag_sum`` copies; at the 5,023-vertex preset's finest level a
#: chunk of 6 samples needs about 10 MB.
SHARED_BAG_BYTES = 32 << 20
#: Most bytes of batch-replicated gathers the operator keeps, all layers together.
SHARED_BAGS_BYTES = 128 << 20
_SHARED_BAGS = _SharedBags()


@torch.library.custom_op("mesh_decoder::bag_sum", mutates_args=(), device_types="cpu")
def _bag_sum_op(z: Tensor, index: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
    """:func:`embedding_bag_sum` as one operator that ``torch.compile`` does not trace
    into: one call on the folded batch with a kept copy of the replicated gather
    (:class:`_SharedBags`), or :func:`_bag_sum` one sample at a time."""
    B, R, _ = z.shape
    bags = _SHARED_BAGS.get(index, weight, B, R) if B > 1 else None
    if bags is None:
        return _bag_sum(z, index, weight, bias, activation)
    return _folded_bag_sum(z, bags[0], bags[1], bias, activation, inplace=True)  # (B, V, C)


@_bag_sum_op.register_fake
def _(z: Tensor, index: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
    return z.new_empty(z.shape[0], index.shape[0], z.shape[2])


def _use_chunked_kernel(x: Tensor) -> bool:
    """The CPU kernel runs in plain eager mode only: not while compiling, exporting or
    tracing (the plain formulation is what those should record), nor under autocast,
    :func:`~mesh_decoder.nn.plain_formulation` or ``torch.func`` transforms (it has no
    ``vmap`` or forward-mode rule)."""
    return (x.device.type == "cpu" and fast_paths_enabled() and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing() and not torch.is_autocast_enabled("cpu") and not under_func_transform(x))


class SpiralConv(nn.Module):
    r"""Spiral convolution (SpiralNet++, Gong et al., ICCVW 2019).

    .. math::

        \mathbf{x}'_v = \mathbf{W} \, \big\Vert_{j=1}^{S} \mathbf{x}_{s_j(v)} + \mathbf{b}

    Spiral-major concatenation (entry ``j``, channel ``c`` -> column ``j * C_in + c``)
    as in SpiralNet++; see the module docstring for the CPU kernel.

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        indices: ``(V, S)`` int64 spiral indices, already dilated, padded with the
            index ``V`` (a virtual vertex whose features are zero). Stored as the
            buffer ``indices``.
        dilation: the dilation the spirals were built with (recorded for ``repr``
            and configs; the indices are not changed). Default ``1``.
        bias: learn an additive bias. Default ``True``.

    Shapes:
        - input: ``(B, V, C_in)`` or ``(V, C_in)``
        - output: ``(B, V, C_out)`` or ``(V, C_out)``

    Attributes:
        linear: ``nn.Linear(S * C_in, C_out)``, SpiralNet++'s ``layer``.
    """

    indices: Tensor

    def __init__(self, in_channels: int, out_channels: int, indices: Tensor, dilation: int = 1, bias: bool = True):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.dilation = positive_int(dilation, "dilation")
        check_tensor(indices, "indices", shape=("V", "S"), dtype=torch.int64)
        V, S = indices.shape
        if V < 1 or S < 1:
            raise ValueError(f"indices: expected V >= 1 spirals of length S >= 1, got shape {tuple(indices.shape)}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) > V):
            # spirals padded with -1 (another convention of spiral code) are refused with the mapping to this one
            hint = f"; pad with {V}, not -1: indices.masked_fill(indices < 0, {V})" if int(indices.min()) == -1 else ""
            raise ValueError(
                f"indices: expected values in [0, {V}] (V = {V} vertices, {V} = zero padding), "
                f"got range [{int(indices.min())}, {int(indices.max())}]{hint}"
            )
        self.num_vertices = int(V)
        self.spiral_length = int(S)
        self.register_buffer("indices", indices.detach().clone().contiguous())
        # The project-then-gather inference path's gather, derived from ``indices``
        # (not saved; rebuilt when a state dict is loaded).
        self.register_buffer("bag_index", torch.empty(0, 0, dtype=torch.int64), persistent=False)
        self.register_buffer("bag_weight", torch.empty(0, 0), persistent=False)
        self._refresh_bags()
        self.register_load_state_dict_post_hook(after_load("_refresh_bags"))
        self.linear = nn.Linear(self.in_channels * self.spiral_length, self.out_channels, bias=check_bool(bias, "bias"))
        self.reset_parameters()

    def _refresh_bags(self) -> None:
        index, weight = spiral_bags(self.indices)  # (V, S), (V, S)
        self._bag_cache = BagCache()
        update_buffer(self, "bag_index", index)
        update_buffer(self, "bag_weight", weight)

    def reset_parameters(self) -> None:
        """Xavier-uniform weight and zero bias, as SpiralNet++."""
        nn.init.xavier_uniform_(self.linear.weight)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    @classmethod
    def from_hierarchy(cls, in_channels: int, out_channels: int, hierarchy: MeshHierarchy, level: int,
                       **kw: Any) -> "SpiralConv":
        """A layer on ``hierarchy.levels[level]``'s spirals (and its dilation, unless given in ``kw``)."""
        lvl = hierarchy_level(hierarchy, level)
        kw.setdefault("dilation", lvl.dilation)
        return cls(in_channels, out_channels, lvl.spirals, **kw)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: ``(B, V, C_in) -> (B, V, C_out)`` or ``(V, C_in) -> (V, C_out)``."""
        x = check_features(x, self.num_vertices, self.in_channels, self.linear.weight.dtype, self.indices.device)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)  # (1, V, C_in)
        # Fewer outputs than inputs, no autograd: project, then gather (CPU, eager or
        # compiled; CUDA with Triton).
        if ((x.device.type == "cpu" or _use_triton(x)) and self.out_channels < self.in_channels
                and inference_fast_path(x, module=self)):
            out = project_gather(x, self.bag_index, self.bag_weight, self.linear.weight, self.linear.bias,
                                 self.spiral_length, self._bag_cache)  # (B, V, C_out)
        elif _use_chunked_kernel(x):
            out = _SpiralGatherLinear.apply(x, self.indices, self.linear.weight, self.linear.bias)  # (B, V, C_out)
        else:
            out = self.linear(spiral_gather(x, self.indices))  # (B, V, C_out)
        return out.squeeze(0) if unbatched else out

    def load_spiralnet_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a SpiralNet++ ``SpiralConv`` state dict (``layer.weight``, ``layer.bias``).

        The spirals stay this layer's ``indices`` (SpiralNet++ keeps them outside
        its state dict). Raises ``ValueError`` on missing, unexpected or misshaped keys.
        """
        sd = convert_spiralnet_state_dict(state_dict)
        expected = {"linear.weight"} | ({"linear.bias"} if self.linear.bias is not None else set())
        found = set(sd)
        if found != expected:
            raise ValueError(
                f"SpiralNet++ state dict: expected keys {sorted(_to_spiralnet(k) for k in expected)}, "
                f"got {sorted(state_dict)}"
            )
        for key in sorted(expected):
            want = tuple(getattr(self.linear, key.split(".")[1]).shape)
            if tuple(sd[key].shape) != want:
                raise ValueError(
                    f"SpiralNet++ state dict: {_to_spiralnet(key)}: expected shape {want} "
                    f"(C_out, S*C_in = {self.spiral_length}*{self.in_channels}), got {tuple(sd[key].shape)}"
                )
        self.linear.load_state_dict({k.split(".")[1]: v for k, v in sd.items()})

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, spiral_length={self.spiral_length}, "
             f"dilation={self.dilation}")
        if self.linear.bias is None:
            s += ", bias=False"
        return s

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.extra_repr()})"


def convert_spiralnet_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename SpiralNet++ ``SpiralConv`` keys to this toolkit's.

    SpiralNet++ holds ``layer = nn.Linear(S * C_in, C_out)`` with the same
    spiral-major column layout as :class:`SpiralConv`'s ``linear``, so the renaming
    ``[prefix.]layer.weight -> [prefix.]linear.weight`` and
    ``[prefix.]layer.bias -> [prefix.]linear.bias`` is all it takes. Other keys are
    kept as they are, so a whole network's state dict converts layer by layer, but its
    module paths stay the network's own (``de_layers.2.conv.linear.weight``): loading it
    into a :class:`~mesh_decoder.nn.SpiralDecoder` also takes a mapping of those prefixes
    to the decoder's (``fc``, ``convs.i``, ``out_conv``; see its ``state_dict()`` keys).
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        new = key
        for leaf in ("weight", "bias"):
            old_tail = f"layer.{leaf}"
            if key == old_tail or key.endswith("." + old_tail):
                new = key[: len(key) - len(old_tail)] + f"linear.{leaf}"
        if new in out:
            raise ValueError(f"SpiralNet++ state dict: keys {key!r} and another both map to {new!r}")
        out[new] = value
    return out


def _to_spiralnet(key: str) -> str:
    return key.replace("linear.", "layer.", 1)
