r"""A Triton kernel for the weighted row gather of the fused layers, on the GPU.

.. math::

    \mathbf{y}_{b,v} = \phi\Big(\mathbf{c} + \sum_{i=1}^{N} w_{v,i}\, \mathbf{z}_{b,\, r_{v,i}}\Big)

with ``z`` ``(B, R, C)``, rows ``r`` and weights ``w`` ``(V, N)``, an optional
bias ``c`` and activation :math:`\phi` (identity or ELU). It is the gather of
:func:`~mesh_decoder.nn.spiral_conv.project_gather` (the spiral convolution and
the fused up-sampling + convolution) and of the texel gather of the joint
decoder. ``torch.nn.functional.embedding_bag`` computes the same sum, but its
CUDA kernel walks each bag's rows one after another on a fixed grid and is
latency bound here (measured on an H200 at batch 256 when this kernel was added,
commit bc96796: 2.5 ms for the 5,023-vertex level of the SpiralNet++ preset; no
per-layer file is committed). This kernel gives each program a
block of output vertices of one sample, keeps the ``N`` row loads of the block in
flight together, sums in fp32, and applies bias and activation before its one
write. No index is replicated for the batch: the sample is a grid axis.

Triton ships with CUDA builds of torch. :func:`gather_sum_available` says whether
this path can run; :func:`weighted_gather_sum` runs it (tests also run it in
Triton's CPU interpreter, ``TRITON_INTERPRET=1``). The plain reference is
:func:`~mesh_decoder.nn.spiral_conv.weighted_row_sum`.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

__all__ = ["ACTIVATIONS", "gather_project", "gather_sum_available", "weighted_gather_sum"]

#: Activations the kernel applies to its sums (``None``: none).
ACTIVATIONS = (None, "elu")
_BLOCK_V = 64
_MAX_GRID_Y = 65535
_DOT_BLOCK_V = 16


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


#: Triton is importable (a constant, so compiled code can branch on it).
HAS_TRITON = importlib.util.find_spec("triton") is not None


def gather_sum_available(t: Tensor) -> bool:
    """Whether :func:`weighted_gather_sum` runs for tensors like ``t``: Triton is
    installed and ``t`` is on a CUDA device (or on the CPU under ``TRITON_INTERPRET=1``)."""
    return HAS_TRITON and (t.device.type == "cuda" or (t.device.type == "cpu" and _interpreting()))


@lru_cache(maxsize=None)
def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def gather_sum_kernel(z, index, weight, bias, out, V, C, stride_b, stride_v, stride_s, stride_c,
                          N: tl.constexpr, S: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                          BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr):
        v0 = tl.program_id(0) * BLOCK_V
        b = tl.program_id(1).to(tl.int64)
        v = v0 + tl.arange(0, BLOCK_V)  # (BLOCK_V,)
        c = tl.arange(0, BLOCK_C)  # (BLOCK_C,)
        vmask = v < V
        cmask = c < C
        mask = vmask[:, None] & cmask[None, :]
        z_b = z + b * stride_b
        acc = tl.zeros((BLOCK_V, BLOCK_C), dtype=tl.float32)
        for i in tl.static_range(N):
            r = tl.load(index + v * N + i, mask=vmask, other=0).to(tl.int64)  # (BLOCK_V,)
            w = tl.load(weight + v * N + i, mask=vmask, other=0.0).to(tl.float32)  # (BLOCK_V,)
            start = (r // S) * stride_v + (r % S) * stride_s  # row r = (vertex, spiral entry)
            rows = tl.load(z_b + start[:, None] + c[None, :] * stride_c, mask=mask, other=0.0)  # (BLOCK_V, BLOCK_C)
            acc += w[:, None] * rows.to(tl.float32)
        if HAS_BIAS:
            acc += tl.load(bias + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
        if ACT == 1:  # ELU, alpha = 1
            acc = tl.where(acc > 0, acc, tl.exp(tl.minimum(acc, 0.0)) - 1.0)
        tl.store(out + b * V * C + v[:, None] * C + c[None, :], acc.to(out.dtype.element_ty), mask=mask)

    return gather_sum_kernel


@lru_cache(maxsize=None)
def _dot_kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def gather_dot_kernel(x, index, weight, blocks, bias, out, R, V, C, O,
                          S: tl.constexpr, K: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                          PRECISION: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr,
                          BLOCK_O: tl.constexpr):
        v = tl.program_id(0) * BLOCK_V + tl.arange(0, BLOCK_V)  # (BLOCK_V,)
        b = tl.program_id(1).to(tl.int64)
        c = tl.arange(0, BLOCK_C)
        o = tl.arange(0, BLOCK_O)
        vmask = v < V
        cmask = c < C
        wmask = cmask[:, None] & (o < O)[None, :]
        x_b = x + b * R * C
        acc = tl.zeros((BLOCK_V, BLOCK_O), dtype=tl.float32)
        for s in tl.static_range(S):
            g = tl.zeros((BLOCK_V, BLOCK_C), dtype=tl.float32)  # up-sampled spiral entry s
            for k in tl.static_range(K):
                i = s * K + k
                r = (tl.load(index + v * (S * K) + i, mask=vmask, other=0) // S).to(tl.int64)  # input vertex
                w = tl.load(weight + v * (S * K) + i, mask=vmask, other=0.0).to(tl.float32)
                rows = tl.load(x_b + r[:, None] * C + c[None, :], mask=vmask[:, None] & cmask[None, :], other=0.0)
                g += w[:, None] * rows.to(tl.float32)
            w_s = tl.load(blocks + c[:, None] * (S * O) + s * O + o[None, :], mask=wmask, other=0.0)  # (C, O)
            if PRECISION == "default":  # 16-bit inputs
                acc += tl.dot(g.to(w_s.dtype), w_s)
            else:  # fp32 inputs: "ieee" (exact) or "tf32"
                acc += tl.dot(g.to(w_s.dtype), w_s, input_precision=PRECISION)
        if HAS_BIAS:
            acc += tl.load(bias + o, mask=o < O, other=0.0).to(tl.float32)[None, :]
        if ACT == 1:  # ELU, alpha = 1
            acc = tl.where(acc > 0, acc, tl.exp(tl.minimum(acc, 0.0)) - 1.0)
        omask = vmask[:, None] & (o < O)[None, :]
        tl.store(out + b * V * O + v[:, None] * O + o[None, :], acc.to(out.dtype.element_ty), mask=omask)

    return gather_dot_kernel


def _pow2(n: int, least: int = 1) -> int:
    return max(least, 1 << (max(1, n) - 1).bit_length())


def gather_project(x: Tensor, index: Tensor, weight: Tensor, blocks: Tensor, bias: Tensor | None,
                   spiral_length: int, activation: str | None = None) -> Tensor:
    """The whole spiral layer in one kernel: gather (and up-sample), then multiply.

    ``y[b, v] = act(bias + sum_s W_s g_s)`` with ``g_s = sum_k weight[v, s*K + k] *
    x[b, index[v, s*K + k] // S]``: the gather of
    :func:`~mesh_decoder.nn.spiral_conv.spiral_bags` read as input vertices, and
    ``W_s`` the ``s``-th ``(C_in, C_out)`` column block of ``blocks``
    (:func:`~mesh_decoder.nn.spiral_conv.spiral_weight_blocks`). For small
    batches, where one launch costs more than the arithmetic: it replaces the
    projection's matrix product and :func:`weighted_gather_sum` with one kernel
    (tensor-core products on tiles of 16 vertices; TF32 only where
    ``torch.get_float32_matmul_precision()`` allows it).

    Shapes:
        ``x (B, V_in, C_in), index/weight (V_out, S*K), blocks (C_in, S*C_out) -> (B, V_out, C_out)``
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    S = int(spiral_length)
    if x.dim() != 3 or index.dim() != 2 or tuple(weight.shape) != tuple(index.shape) or index.shape[1] % S:
        raise ValueError(f"gather_project: expected x (B, V_in, C), index/weight (V_out, S*K) with S = {S}, "
                         f"got {tuple(x.shape)}, {tuple(index.shape)}, {tuple(weight.shape)}")
    if blocks.dim() != 2 or blocks.shape[0] != x.shape[2] or blocks.shape[1] % S:
        raise ValueError(f"blocks: expected shape ({x.shape[2]}, S*C_out), got {tuple(blocks.shape)}")
    return _gather_project_op(x, index, weight, blocks.to(x.dtype), bias, S, activation or "none")


@torch.library.custom_op("mesh_decoder::gather_project", mutates_args=())
def _gather_project_op(x: Tensor, index: Tensor, weight: Tensor, blocks: Tensor, bias: Tensor | None,
                       spiral_length: int, activation: str) -> Tensor:
    B, R, C = x.shape
    V, SK = index.shape
    S = spiral_length
    O = blocks.shape[1] // S
    x = x.contiguous()
    index = index.contiguous()
    weight = weight.contiguous()  # any float dtype: the kernel converts each weight to fp32 as it loads it
    blocks = blocks.contiguous()
    out = x.new_empty(B, V, O)
    if B == 0 or V == 0:
        return out
    if x.dtype != torch.float32:
        precision = "default"
    else:
        precision = "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"
    has_bias = bias is not None
    bias_arg = bias.contiguous() if has_bias else weight
    for b0 in range(0, B, _MAX_GRID_Y):
        b1 = min(B, b0 + _MAX_GRID_Y)
        grid = ((V + _DOT_BLOCK_V - 1) // _DOT_BLOCK_V, b1 - b0)
        _dot_kernel()[grid](x[b0:b1], index, weight, blocks, bias_arg, out[b0:b1], R, V, C, O,
                            S=S, K=SK // S, HAS_BIAS=has_bias, ACT=1 if activation == "elu" else 0,
                            PRECISION=precision, BLOCK_V=_DOT_BLOCK_V,
                            BLOCK_C=_pow2(C, 16), BLOCK_O=_pow2(O, 16))
    return out


@_gather_project_op.register_fake
def _(x: Tensor, index: Tensor, weight: Tensor, blocks: Tensor, bias: Tensor | None, spiral_length: int,
      activation: str) -> Tensor:
    return x.new_empty(x.shape[0], index.shape[0], blocks.shape[1] // spiral_length)


def weighted_gather_sum(z: Tensor, index: Tensor, weight: Tensor, bias: Tensor | None = None,
                        activation: str | None = None, block_v: int = _BLOCK_V) -> Tensor:
    """``act(bias + sum_i weight[v, i] * z[b, index[v, i]])`` by the Triton kernel.

    Registered as the custom operator ``mesh_decoder::weighted_gather_sum``, so
    ``torch.compile`` keeps it as one opaque call (and CUDA graphs capture it).

    Args:
        z: ``(B, R, C)`` rows (float16, bfloat16 or float32), or ``(B, V_in, S, C)``
            with any strides, read as the ``R = V_in * S`` rows ``r = u * S + j``
            (so a projection in another layout needs no copy).
        index: ``(V, N)`` integer rows of ``z``, each in ``[0, R)``.
        weight: ``(V, N)`` float weights, each converted to fp32 as the kernel loads it (a
            16-bit module's weights are read as they are kept: no converted copy per call).
        bias: ``(C,)`` or ``None``.
        activation: ``None`` or ``"elu"``.
        block_v: output vertices per program (a power of two): smaller blocks
            give more programs to a small batch.

    Shapes:
        ``(B, R, C) -> (B, V, C)``, ``z``'s dtype; sums in fp32.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    if z.dim() not in (3, 4):
        raise ValueError(f"z: expected shape (B, R, C) or (B, V_in, S, C), got {tuple(z.shape)}")
    if index.dim() != 2 or tuple(weight.shape) != tuple(index.shape):
        raise ValueError(f"index/weight: expected two (V, N) tensors, got {tuple(index.shape)} and "
                         f"{tuple(weight.shape)}")
    if block_v < 1 or block_v & (block_v - 1):
        raise ValueError(f"block_v: expected a power of two, got {block_v}")
    return _gather_sum_op(z, index, weight, bias, activation or "none", int(block_v))


@torch.library.custom_op("mesh_decoder::weighted_gather_sum", mutates_args=())
def _gather_sum_op(z: Tensor, index: Tensor, weight: Tensor, bias: Tensor | None, activation: str,
                   block_v: int) -> Tensor:
    if z.dim() == 3:
        z = z.contiguous().unsqueeze(2)  # (B, R, 1, C)
    B, _, S, C = z.shape
    V, N = index.shape
    index = index.contiguous()
    weight = weight.contiguous()  # any float dtype: the kernel converts each weight to fp32 as it loads it
    out = z.new_empty(B, V, C)
    if B == 0 or V == 0:
        return out
    block_c = max(1, 1 << (C - 1).bit_length())
    has_bias = bias is not None
    bias_arg = bias.contiguous() if has_bias else weight  # any pointer when there is no bias
    for b0 in range(0, B, _MAX_GRID_Y):  # the sample is the grid's second axis
        b1 = min(B, b0 + _MAX_GRID_Y)
        grid = ((V + block_v - 1) // block_v, b1 - b0)
        _kernel()[grid](z[b0:b1], index, weight, bias_arg, out[b0:b1], V, C, *z.stride(),
                        N=N, S=S, HAS_BIAS=has_bias, ACT=1 if activation == "elu" else 0,
                        BLOCK_V=block_v, BLOCK_C=block_c)
    return out


@_gather_sum_op.register_fake
def _(z: Tensor, index: Tensor, weight: Tensor, bias: Tensor | None, activation: str, block_v: int) -> Tensor:
    return z.new_empty(z.shape[0], index.shape[0], z.shape[-1])
