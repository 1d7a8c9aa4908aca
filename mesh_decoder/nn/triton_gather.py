r"""A Triton kernel for the weighted row gather of the fused layers, on the GPU.

.. math::

    \mathbf{y}_{b,v} = \phi\Big(\mathbf{c} + \sum_{i=1}^{N} w_{v,i}\, \mathbf{z}_{b,\, r_{v,i}}\Big)

with ``z`` ``(B, R, C)``, rows ``r`` and weights ``w`` ``(V, N)``, an optional
bias ``c`` and activation :math:`\phi` (identity or ELU). It is the gather of
:func:`~mesh_decoder.nn.spiral_conv.project_gather` (the spiral convolution and
the fused up-sampling + convolution) and of the texel gather of the joint
decoder. ``torch.nn.functional.embedding_bag`` computes the same sum, but its
CUDA kernel walks each bag's rows one after another on a fixed grid and is
latency bound here (measured on an H200 at batch 256: 2.5 ms for the
5,023-vertex level of the SpiralNet++ preset). This kernel gives each program a
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

__all__ = ["ACTIVATIONS", "gather_sum_available", "weighted_gather_sum"]

#: Activations the kernel applies to its sums (``None``: none).
ACTIVATIONS = (None, "elu")
_BLOCK_V = 64
_MAX_GRID_Y = 65535


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
    def gather_sum_kernel(z, index, weight, bias, out, R, V, C,
                          N: tl.constexpr, HAS_BIAS: tl.constexpr, ACT: tl.constexpr,
                          BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr):
        v0 = tl.program_id(0) * BLOCK_V
        b = tl.program_id(1).to(tl.int64)
        v = v0 + tl.arange(0, BLOCK_V)  # (BLOCK_V,)
        c = tl.arange(0, BLOCK_C)  # (BLOCK_C,)
        vmask = v < V
        cmask = c < C
        mask = vmask[:, None] & cmask[None, :]
        z_b = z + b * R * C
        acc = tl.zeros((BLOCK_V, BLOCK_C), dtype=tl.float32)
        for i in tl.static_range(N):
            r = tl.load(index + v * N + i, mask=vmask, other=0).to(tl.int64)  # (BLOCK_V,)
            w = tl.load(weight + v * N + i, mask=vmask, other=0.0)  # (BLOCK_V,)
            rows = tl.load(z_b + r[:, None] * C + c[None, :], mask=mask, other=0.0)  # (BLOCK_V, BLOCK_C)
            acc += w[:, None] * rows.to(tl.float32)
        if HAS_BIAS:
            acc += tl.load(bias + c, mask=cmask, other=0.0).to(tl.float32)[None, :]
        if ACT == 1:  # ELU, alpha = 1
            acc = tl.where(acc > 0, acc, tl.exp(tl.minimum(acc, 0.0)) - 1.0)
        tl.store(out + b * V * C + v[:, None] * C + c[None, :], acc.to(out.dtype.element_ty), mask=mask)

    return gather_sum_kernel


def weighted_gather_sum(z: Tensor, index: Tensor, weight: Tensor, bias: Tensor | None = None,
                        activation: str | None = None) -> Tensor:
    """``act(bias + sum_i weight[v, i] * z[b, index[v, i]])`` by the Triton kernel.

    Registered as the custom operator ``mesh_decoder::weighted_gather_sum``, so
    ``torch.compile`` keeps it as one opaque call (and CUDA graphs capture it).

    Args:
        z: ``(B, R, C)`` rows (float16, bfloat16 or float32).
        index: ``(V, N)`` integer rows of ``z``, each in ``[0, R)``.
        weight: ``(V, N)`` float weights (read as fp32).
        bias: ``(C,)`` or ``None``.
        activation: ``None`` or ``"elu"``.

    Shapes:
        ``(B, R, C) -> (B, V, C)``, ``z``'s dtype; sums in fp32.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {activation!r}")
    if z.dim() != 3:
        raise ValueError(f"z: expected shape (B, R, C), got {tuple(z.shape)}")
    if index.dim() != 2 or tuple(weight.shape) != tuple(index.shape):
        raise ValueError(f"index/weight: expected two (V, N) tensors, got {tuple(index.shape)} and "
                         f"{tuple(weight.shape)}")
    return _gather_sum_op(z, index, weight, bias, activation or "none")


@torch.library.custom_op("mesh_decoder::weighted_gather_sum", mutates_args=())
def _gather_sum_op(z: Tensor, index: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
    B, R, C = z.shape
    V, N = index.shape
    z = z.contiguous()
    index = index.contiguous()
    weight = weight.to(torch.float32).contiguous()
    out = z.new_empty(B, V, C)
    if B == 0 or V == 0:
        return out
    block_c = max(1, 1 << (C - 1).bit_length())
    has_bias = bias is not None
    bias_arg = bias.contiguous() if has_bias else weight  # any pointer when there is no bias
    for b0 in range(0, B, _MAX_GRID_Y):  # the sample is the grid's second axis
        b1 = min(B, b0 + _MAX_GRID_Y)
        grid = ((V + _BLOCK_V - 1) // _BLOCK_V, b1 - b0)
        _kernel()[grid](z[b0:b1], index, weight, bias_arg, out[b0:b1], R, V, C,
                        N=N, HAS_BIAS=has_bias, ACT=1 if activation == "elu" else 0,
                        BLOCK_V=_BLOCK_V, BLOCK_C=block_c)
    return out


@_gather_sum_op.register_fake
def _(z: Tensor, index: Tensor, weight: Tensor, bias: Tensor | None, activation: str) -> Tensor:
    return z.new_empty(z.shape[0], index.shape[0], z.shape[2])
