r"""The decoders' in-place ELU for CPU inference, with ``exp2`` in place of ``expm1``.

.. math::

    \mathrm{ELU}(x) = \max(x, 0) + \big(2^{\log_2(e)\,\min(x, 0)} - 1\big)

PyTorch's CPU ELU evaluates ``expm1`` on every element, and that one function was
the third cost of a CPU decode after the matrix products and the gathers. Its
``exp2`` is several times cheaper: on 2 threads of the AMD EPYC (AVX-512) that the
committed CPU benchmarks ran on, a ``(6, 5023, 32)`` fp32 tensor (a decode chunk at
the finest level) took 757 us with ``F.elu_`` and 359 us as :func:`elu_` below
(``exp`` 544 us, ``expm1`` 622 us, ``exp2`` 151 us on their own).

Accuracy: the absolute error against float64 ELU measured 7e-8 on ``randn * 2``
inputs (``F.elu_``: 3e-8). ``exp(m) - 1`` loses relative precision for ``m`` just
below zero, where the result itself is that small, so the error stays absolute
at about one unit in the last place of 1. NaN stays NaN, ``-inf`` maps to ``-1``.

:func:`elu_` falls back to ``F.elu_`` (the reference) off the CPU, when autograd
records the tensor, while compiling, for tensors of under :data:`FAST_ELU_MIN_NUMEL` elements,
where its five passes cost more in dispatch than they save, and for 16-bit floats, where
each pass rounds: ``2^m - 1`` in bfloat16 measured a median relative error of 2.7e-2 on
small negative inputs, against 1.6e-3 for ``F.elu_``, which computes in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .graph import records_grad

__all__ = ["elu_"]

#: Fewest elements for which :func:`elu_` runs its ``exp2`` form (measured: at
#: ``(5023, 32)`` it took 74 us against 117 us; five small ops cost more than one).
FAST_ELU_MIN_NUMEL = 1 << 14

_LOG2E = 1.0 / math.log(2.0)


def elu_(x: Tensor) -> Tensor:
    """ELU with ``alpha = 1``, in place: ``x`` is overwritten and returned.

    Shapes: any -> the same.
    """
    if (x.device.type != "cpu" or x.numel() < FAST_ELU_MIN_NUMEL or x.dtype not in (torch.float32, torch.float64)
            or records_grad(x) or torch.compiler.is_compiling()):
        return F.elu_(x)
    negative = torch.clamp_max(x, 0).mul_(_LOG2E).exp2_().sub_(1)  # exp(min(x, 0)) - 1
    return x.clamp_min_(0).add_(negative)
