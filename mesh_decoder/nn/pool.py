r"""Mesh down- and up-sampling between hierarchy levels, as gathers.

COMA (Ranjan et al., ECCV 2018) and SpiralNet++ (Gong et al., ICCVW 2019) write
both operators as sparse matrices. Here they are what those matrices are:

- down-sampling keeps a subset of the vertices: :math:`\mathbf{y}_v = \mathbf{x}_{d(v)}`;
- up-sampling places every fine vertex on a coarse triangle and interpolates with
  its barycentric weights: :math:`\mathbf{y}_v = \sum_{k} w_{vk} \, \mathbf{x}_{u(v,k)}`.

Both run as ``index_select`` gathers (plus ``addcmul`` for the weights), never a
general sparse product; up-sampling of vertex-major features runs as one
``embedding_bag``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_tensor, positive_int
from ..hierarchy.container import MeshHierarchy
from .graph import FLOAT_DTYPES, bag_product, check_features, hierarchy_level

__all__ = ["DownSample", "UpSample"]


def _check_num_in(index: Tensor, num_in: int | None, name: str) -> int | None:
    """Check ``index`` values against ``num_in`` (or just ``>= 0``); return ``num_in``."""
    if num_in is not None:
        num_in = positive_int(num_in, "num_in")
    if index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or (num_in is not None and hi >= num_in):
            bound = f"[0, {num_in})" if num_in is not None else "[0, inf)"
            raise ValueError(f"{name}: expected indices in {bound}, got range [{lo}, {hi}]")
    return num_in


def _track_index(module: nn.Module) -> None:
    """Keep ``module._min_in``, the input size its (checked) ``index`` buffer needs; after every
    state-dict load, check the loaded ``index`` against ``module.num_in`` and update it."""
    _set_min_in(module)
    module.register_load_state_dict_post_hook(_index_loaded)  # a module-level function: picklable


def _set_min_in(m: nn.Module) -> None:
    m._min_in = int(m.index.max()) + 1 if m.index.numel() else 0


def _index_loaded(m: nn.Module, _incompatible: Any) -> None:
    _check_num_in(m.index, m.num_in, f"{type(m).__name__}.index")
    _set_min_in(m)


class DownSample(nn.Module):
    r"""Keep a subset of the vertices: :math:`\mathbf{y}_v = \mathbf{x}_{\mathrm{index}[v]}`.

    Args:
        index: ``(V_out,)`` int64 input vertex kept as output vertex ``v``
            (``MeshHierarchy.down[l]``). Stored as the buffer ``index``.
        num_in: ``V_in``, the input vertex count, checked on every call; ``None``
            (default) only requires ``V_in > max(index)``.

    Shapes:
        - input: ``(B, V_in, C)`` or ``(V_in, C)``
        - output: ``(B, V_out, C)`` or ``(V_out, C)``
    """

    index: Tensor

    def __init__(self, index: Tensor, num_in: int | None = None):
        super().__init__()
        check_tensor(index, "index", shape=("V_out",), dtype=torch.int64)
        self.num_in = _check_num_in(index, num_in, "index")
        self.num_out = int(index.shape[0])
        self.register_buffer("index", index.detach().clone().contiguous())
        _track_index(self)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """No parameters: present for a uniform layer interface."""

    @classmethod
    def from_hierarchy(cls, hierarchy: MeshHierarchy, level: int) -> "DownSample":
        """Level ``level -> level + 1`` with ``hierarchy.down[level]``."""
        fine = hierarchy_level(hierarchy, level, below_coarsest=1)
        return cls(hierarchy.down[level], num_in=fine.num_vertices)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: ``(B, V_in, C) -> (B, V_out, C)`` or ``(V_in, C) -> (V_out, C)``."""
        x = _check_pool_input(x, self.num_in, self._min_in, self.index.device)
        return x.index_select(-2, self.index)  # (B, V_out, C) or (V_out, C)

    def extra_repr(self) -> str:
        return f"num_in={self.num_in}, num_out={self.num_out}"


class UpSample(nn.Module):
    r"""Barycentric interpolation: :math:`\mathbf{y}_v = \sum_{k} w_{vk} \, \mathbf{x}_{\mathrm{index}[v, k]}`.

    Args:
        index: ``(V_out, k)`` int64 input vertices of each output vertex (``k = 3``
            corners of the closest coarse triangle, ``MeshHierarchy.up_index[l]``).
        weight: ``(V_out, k)`` float weights (``MeshHierarchy.up_weight[l]``;
            barycentric: non-negative, summing to 1, though not required here).
        num_in: ``V_in``, checked on every call; ``None`` (default) only requires
            ``V_in > max(index)``.

    ``index`` and ``weight`` are buffers; ``weight`` is cast to the input's dtype.

    Shapes:
        - input: ``(B, V_in, C)`` or ``(V_in, C)``
        - output: ``(B, V_out, C)`` or ``(V_out, C)``
    """

    index: Tensor
    weight: Tensor

    def __init__(self, index: Tensor, weight: Tensor, num_in: int | None = None):
        super().__init__()
        check_tensor(index, "index", shape=("V_out", "k"), dtype=torch.int64)
        check_tensor(weight, "weight", shape=tuple(index.shape), dtype=FLOAT_DTYPES)
        if index.shape[1] < 1:
            raise ValueError(f"index: expected shape (V_out, k) with k >= 1, got {tuple(index.shape)}")
        if weight.device != index.device:
            raise ValueError(
                f"weight: expected a tensor on {index.device} (index's device), got one on {weight.device}"
            )
        if not bool(torch.isfinite(weight).all()):
            raise ValueError("weight: expected finite values, got NaN or inf")
        self.num_in = _check_num_in(index, num_in, "index")
        self.num_out = int(index.shape[0])
        self.register_buffer("index", index.detach().clone().contiguous())
        self.register_buffer("weight", weight.detach().clone().contiguous())
        _track_index(self)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """No parameters: present for a uniform layer interface."""

    @classmethod
    def from_hierarchy(cls, hierarchy: MeshHierarchy, level: int) -> "UpSample":
        """Level ``level + 1 -> level`` with ``hierarchy.up_index[level]`` and ``up_weight[level]``."""
        hierarchy_level(hierarchy, level, below_coarsest=1)
        coarse = hierarchy.levels[level + 1]
        return cls(hierarchy.up_index[level], hierarchy.up_weight[level], num_in=coarse.num_vertices)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: ``(B, V_in, C) -> (B, V_out, C)`` or ``(V_in, C) -> (V_out, C)``."""
        x = _check_pool_input(x, self.num_in, self._min_in, self.index.device)
        w = self.weight.to(x.dtype)  # (V_out, k)
        out = x.index_select(-2, self.index[:, 0]) * w[:, 0:1]  # (B, V_out, C)
        for k in range(1, self.index.shape[1]):
            out = torch.addcmul(out, x.index_select(-2, self.index[:, k]), w[:, k : k + 1])  # (B, V_out, C)
        return out

    def forward_vertex_major(self, x: Tensor) -> Tensor:
        """Up-sampling of vertex-major features, as :class:`~mesh_decoder.nn.ChebDecoder`
        keeps them on its inference path: one ``embedding_bag`` (a bag of ``k``
        weighted coarse rows per fine vertex) over the ``(V_in, B*C)`` matrix.
        :meth:`forward` is its reference, and the formulation to differentiate twice
        (``embedding_bag`` has no second derivative).

        Shapes: ``(V_in, B, C) -> (V_out, B, C)``; the input is not checked.
        """
        V_in, B, C = x.shape
        V_out, k = self.index.shape
        offsets = torch.arange(0, V_out * k, k, device=x.device)  # (V_out,) each bag's first entry
        out = bag_product(x.reshape(V_in, B * C), offsets, self.index.reshape(-1),
                          self.weight.reshape(-1).to(x.dtype))  # (V_out, B*C)
        return out.view(V_out, B, C)

    def extra_repr(self) -> str:
        return f"num_in={self.num_in}, num_out={self.num_out}, k={self.index.shape[1]}"


def _check_pool_input(x: Any, num_in: int | None, min_in: int, device: torch.device) -> Tensor:
    x = check_features(x, num_in, None, None, device)
    if num_in is None and x.shape[-2] < min_in:
        raise ValueError(
            f"x: expected at least {min_in} vertices (the largest index is {min_in - 1}), got shape {tuple(x.shape)}"
        )
    return x
