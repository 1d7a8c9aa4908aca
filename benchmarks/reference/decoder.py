"""The reference spiral decoder: the formulation of the public SpiralNet++ code.

This file is frozen: it is the baseline the throughput benchmark measures
speed-ups against, so it stays written the way prior public research code
writes a spiral mesh decoder (SpiralNet++, Gong et al., ICCVW 2019, and the
COMA-style pooling it uses), not the way the library does:

* spiral convolution: ``index_select`` over the batched ``(B, V, C)`` tensor
  along the vertex dimension with the flattened spiral indices, then
  ``.view(B, V, S*C)``, then one ``nn.Linear``;
* up-sampling as a sparse COO matrix product: ``index_select`` times the
  value, then scatter-add into zeros (``out[row] += value * x[col]`` over the
  COO entries).

Padding follows the library's convention: spirals are padded with the index
``V``, so a zero vertex row is appended before gathering.

It depends on torch only. :meth:`ReferenceSpiralDecoder.from_decoder` copies
the weights and the hierarchy tensors of a
:class:`mesh_decoder.nn.SpiralDecoder`, so both decode the same meshes from the
same latents (up to float rounding).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["ReferenceSpiralConv", "ReferenceUpSample", "ReferenceSpiralDecoder"]


class ReferenceSpiralConv(nn.Module):
    r"""SpiralNet++ convolution, written as in its public implementation.

    .. math::
        x'_i = W\,[x_{s_{i,1}} \,\|\, \dots \,\|\, x_{s_{i,S}}] + b

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        indices: ``(V, S)`` int64 spiral indices padded with ``V``.

    Shapes:
        ``(B, V, C_in) -> (B, V, C_out)``
    """

    def __init__(self, in_channels: int, out_channels: int, indices: torch.Tensor):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.register_buffer("indices", indices.clone())
        self.spiral_length = int(indices.shape[1])
        self.layer = nn.Linear(self.in_channels * self.spiral_length, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_nodes, _ = self.indices.size()
        bs = x.size(0)
        pad = x.new_zeros(bs, 1, x.size(2))
        x = torch.cat([x, pad], dim=1)  # (B, V+1, C): row V is the padding vertex
        x = torch.index_select(x, 1, self.indices.view(-1))  # (B, V*S, C)
        x = x.view(bs, n_nodes, -1)  # (B, V, S*C)
        return self.layer(x)  # (B, V, C_out)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, spiral_length={self.spiral_length}"


class ReferenceUpSample(nn.Module):
    r"""Up-sampling as a sparse COO matrix product ``y = U x`` (COMA's ``Pool``).

    .. math::
        y_{b, r} = \sum_{(r, c, w) \in U} w\, x_{b, c}

    Args:
        row: ``(N,)`` int64 output vertex of each COO entry.
        col: ``(N,)`` int64 input vertex of each COO entry.
        value: ``(N,)`` float weight of each COO entry.
        num_vertices: ``V_out``.

    Shapes:
        ``(B, V_in, C) -> (B, V_out, C)``
    """

    def __init__(self, row: torch.Tensor, col: torch.Tensor, value: torch.Tensor, num_vertices: int):
        super().__init__()
        self.register_buffer("row", row.clone())
        self.register_buffer("col", col.clone())
        self.register_buffer("value", value.clone())
        self.num_vertices = int(num_vertices)

    @classmethod
    def from_gather(cls, index: torch.Tensor, weight: torch.Tensor) -> "ReferenceUpSample":
        """COO entries of the up-sampling given as 3 indices + 3 weights per output vertex."""
        v_out, k = index.shape
        row = torch.arange(v_out, device=index.device).repeat_interleave(k)  # (V_out*3,)
        return cls(row, index.reshape(-1), weight.reshape(-1), v_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.index_select(x, 1, self.col) * self.value.view(1, -1, 1)  # (B, N, C)
        out = torch.zeros(x.size(0), self.num_vertices, x.size(2), dtype=x.dtype, device=x.device)
        out.index_add_(1, self.row, x)  # (B, V_out, C)
        return out

    def extra_repr(self) -> str:
        return f"num_vertices={self.num_vertices}, nnz={self.row.numel()}"


class ReferenceSpiralDecoder(nn.Module):
    r"""SpiralNet++ decoder in the reference formulation.

    .. math::
        x_L = \mathrm{reshape}(W z + b), \quad
        x_l = \sigma(\mathrm{conv}_l(U_l x_{l+1})), \quad
        y = \mathrm{conv}_{out}(x_0) \odot \sigma_{data} + \mu_{data}

    Args:
        fc: the fully connected layer from the latent to the coarsest level.
        ups: up-sampling per block, coarse to fine.
        convs: spiral convolution per block.
        out_conv: the output spiral convolution (no activation).
        activation: the activation module.
        coarse_shape: ``(V_L, C_L)`` of the coarsest level.
        mean, std: ``(V_0, C_out)`` output normalisation.

    Shapes:
        ``(B, Z) -> (B, V_0, C_out)``; ``(Z,) -> (V_0, C_out)``
    """

    def __init__(
        self,
        fc: nn.Linear,
        ups: list[ReferenceUpSample],
        convs: list[ReferenceSpiralConv],
        out_conv: ReferenceSpiralConv,
        activation: nn.Module,
        coarse_shape: tuple[int, int],
        mean: torch.Tensor,
        std: torch.Tensor,
    ):
        super().__init__()
        self.fc = fc
        self.ups = nn.ModuleList(ups)
        self.convs = nn.ModuleList(convs)
        self.out_conv = out_conv
        self.act = activation
        self.coarse_shape = tuple(int(s) for s in coarse_shape)
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    @property
    def latent_size(self) -> int:
        return self.fc.in_features

    @classmethod
    def from_decoder(cls, decoder: nn.Module) -> "ReferenceSpiralDecoder":
        """The reference with the weights and hierarchy tensors of a fast ``SpiralDecoder``.

        Reads ``fc``, ``ups[i].index/weight``, ``convs[i].indices/linear``,
        ``out_conv``, ``act``, ``mean``, ``std`` and ``num_vertices`` /
        ``channels`` of the fast decoder; copies every tensor.
        """
        for name in ("fc", "ups", "convs", "out_conv", "act", "mean", "std", "num_vertices", "channels"):
            if not hasattr(decoder, name):
                raise TypeError(f"decoder: expected a SpiralDecoder (attribute {name!r}), got {type(decoder).__name__}")

        def conv(fast: nn.Module) -> ReferenceSpiralConv:
            indices = fast.indices  # (V, S)
            linear = fast.linear
            c_in = linear.in_features // indices.shape[1]
            ref = ReferenceSpiralConv(c_in, linear.out_features, indices)
            with torch.no_grad():
                ref.layer.weight.copy_(linear.weight)
                if linear.bias is not None:
                    ref.layer.bias.copy_(linear.bias)
                else:
                    ref.layer.bias = None
            return ref.to(device=linear.weight.device, dtype=linear.weight.dtype)

        fc = copy.deepcopy(decoder.fc)
        ups = [ReferenceUpSample.from_gather(up.index, up.weight) for up in decoder.ups]
        convs = [conv(c) for c in decoder.convs]
        coarse = (decoder.num_vertices[len(decoder.channels)], decoder.channels[-1])
        return cls(fc, ups, convs, conv(decoder.out_conv), copy.deepcopy(decoder.act), coarse,
                   decoder.mean, decoder.std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        unbatched = z.dim() == 1
        if unbatched:
            z = z.unsqueeze(0)  # (1, Z)
        bs = z.size(0)
        x = self.fc(z)  # (B, V_L * C_L)
        x = x.view(bs, *self.coarse_shape)  # (B, V_L, C_L)
        for up, conv in zip(self.ups, self.convs):
            x = up(x)  # (B, V_l, C)
            x = self.act(conv(x))  # (B, V_l, C_l)
        y = self.out_conv(x)  # (B, V_0, C_out)
        y = y * self.std + self.mean
        return y[0] if unbatched else y
