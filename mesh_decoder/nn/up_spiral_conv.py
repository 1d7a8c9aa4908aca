r"""Up-sampling followed by a spiral convolution, computed as one weighted gather.

Every convolution of a SpiralNet++ decoder follows a barycentric up-sampling
:math:`U` (:class:`~mesh_decoder.nn.UpSample`). Both are linear, so with
:math:`\mathbf{W}_j` the ``j``-th ``(C_out, C_in)`` block of the spiral weight
(:class:`~mesh_decoder.nn.SpiralConv`, spiral-major columns):

.. math::

    \mathbf{y}_v = \mathbf{b} + \sum_{j=1}^{S} \mathbf{W}_j (U\mathbf{x})_{s_j(v)}
                 = \mathbf{b} + \sum_{j=1}^{S} \sum_{k=1}^{3} u_{s_j(v),k}\,
                   \mathbf{z}_{c(s_j(v),k),\,j},
    \qquad \mathbf{z}_{c,j} = \mathbf{W}_j \mathbf{x}_c ,

where :math:`c(v, k)` and :math:`u_{v,k}` are the up-sampling's corners and
weights. Projecting the *coarse* vertices by all ``S`` blocks first (one
``(V_in, C_in) x (C_in, S*C_out)`` product) leaves a gather of ``S*3`` weighted
rows of ``z`` per fine vertex, which ``torch.nn.functional.embedding_bag``
(``mode="sum"`` with per-sample weights) runs in one pass. The matrix product
costs ``2 V_in S C_in C_out`` FLOPs instead of ``2 V_out S C_in C_out``: four
times fewer at the presets' down-sampling factor of 4. Neither the up-sampled
``(B, V_out, C_in)`` nor the gathered ``(B, V_out, S*C_in)`` tensor is ever made.

:func:`~mesh_decoder.nn.spiral_conv.spiral_bags` builds the gather and
:func:`~mesh_decoder.nn.spiral_conv.project_gather` runs it (without
up-sampling they are the project-then-gather path of a lone spiral convolution). :class:`UpSpiralConv` keeps the gather of one
(up-sampling, convolution) pair in buffers; the parameters stay the
convolution's. Results equal ``conv(up(x))`` up to fp32 summation order
(tested against the plain formulation, forward and backward).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .graph import check_features, update_buffer
from .pool import UpSample
from .spiral_conv import BagCache, SpiralConv, project_gather, spiral_bags

__all__ = ["UpSpiralConv"]


class UpSpiralConv(nn.Module):
    r"""``conv(up(x))`` for an :class:`~mesh_decoder.nn.UpSample` and a
    :class:`~mesh_decoder.nn.SpiralConv`, as one projection and one weighted gather.

    .. math::

        \mathbf{y}_v = \mathbf{b} + \sum_{j=1}^{S} \sum_{k} u_{s_j(v),k}\,
                       \mathbf{W}_j \mathbf{x}_{c(s_j(v),k)}

    The module holds the gather only, in non-persistent buffers (``index``,
    ``weight``, derived from the pair's buffers, so they are not in the state dict);
    the convolution's parameters are passed to :meth:`forward`. Call
    :meth:`refresh` after the pair's buffers change.

    Under autograd it is differentiable once, in ``x``, the weight and the bias:
    ``embedding_bag``, which sums the gather, has no second derivative (a double
    backward raises PyTorch's ``NotImplementedError`` for ``_embedding_bag_backward``).
    For higher derivatives use ``conv(up(x))``, as the decoders do with autograd on.

    Args:
        up: the up-sampling from ``V_in`` to ``V_out`` vertices.
        conv: the spiral convolution on the ``V_out`` vertices.

    Shapes:
        - input: ``(B, V_in, C_in)`` or ``(V_in, C_in)``
        - output: ``(B, V_out, C_out)`` or ``(V_out, C_out)``
    """

    index: Tensor
    weight: Tensor

    def __init__(self, up: UpSample, conv: SpiralConv):
        super().__init__()
        self.register_buffer("index", torch.empty(0, 0, dtype=torch.int64), persistent=False)
        self.register_buffer("weight", torch.empty(0, 0), persistent=False)
        self.refresh(up, conv)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """No parameters: present for a uniform layer interface."""

    def refresh(self, up: UpSample, conv: SpiralConv) -> None:
        """Rebuild the gather from ``up``'s and ``conv``'s current buffers."""
        if not isinstance(up, UpSample):
            raise TypeError(f"up: expected an UpSample, got {type(up).__name__}")
        if not isinstance(conv, SpiralConv):
            raise TypeError(f"conv: expected a SpiralConv, got {type(conv).__name__}")
        if up.num_out != conv.num_vertices:
            raise ValueError(f"up/conv: the up-sampling gives {up.num_out} vertices, "
                             f"the convolution expects {conv.num_vertices}")
        num_in = up.num_in if up.num_in is not None else up._min_in
        index, weight = spiral_bags(conv.indices, up.index, up.weight, num_in=num_in)
        update_buffer(self, "index", index)
        update_buffer(self, "weight", weight)
        self._bag_cache = BagCache()
        self.num_in = int(num_in)
        self.num_out = conv.num_vertices
        self.in_channels = conv.in_channels
        self.out_channels = conv.out_channels
        self.spiral_length = conv.spiral_length

    def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None) -> Tensor:
        """``x`` on the coarse level; ``weight`` ``(C_out, S*C_in)`` and ``bias``
        ``(C_out,)`` are the convolution's ``linear.weight`` and ``linear.bias``;
        ``activation`` (``None`` or ``"elu"``) is applied to the result (fused into
        the gather on CUDA).

        Shapes: ``(B, V_in, C_in) -> (B, V_out, C_out)`` or ``(V_in, C_in) -> (V_out, C_out)``.
        """
        x = check_features(x, self.num_in, self.in_channels, weight.dtype, self.index.device)
        want = (self.out_channels, self.spiral_length * self.in_channels)
        if tuple(weight.shape) != want:
            raise ValueError(f"weight: expected shape {want}, got {tuple(weight.shape)}")
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)  # (1, V_in, C_in)
        out = project_gather(x, self.index, self.weight, weight, bias, self.spiral_length, self._bag_cache,
                             activation)  # (B, V_out, C_out)
        return out.squeeze(0) if unbatched else out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, num_in={self.num_in}, num_out={self.num_out}, "
                f"spiral_length={self.spiral_length}, terms={self.index.shape[1]}")
