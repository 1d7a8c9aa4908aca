r"""Chebyshev spectral graph convolution on a fixed-topology mesh (COMA's layer).

Defferrard, Bresson, Vandergheynst: "Convolutional Neural Networks on Graphs with
Fast Localized Spectral Filtering", NeurIPS 2016; used on meshes by Ranjan, Bolkart,
Sanyal, Black: "Generating 3D faces using Convolutional Mesh Autoencoders", ECCV 2018.

With the scaled Laplacian :math:`\tilde{L} = 2L/\lambda_{max} - I` (for the symmetric
normalised Laplacian and :math:`\lambda_{max} = 2`: :math:`\tilde{L} = -D^{-1/2} A D^{-1/2}`):

.. math::

    \mathbf{X}' = \sum_{k=0}^{K-1} \mathbf{T}_k \mathbf{\Theta}_k + \mathbf{b},
    \qquad \mathbf{T}_0 = \mathbf{X}, \quad \mathbf{T}_1 = \tilde{L}\mathbf{X}, \quad
    \mathbf{T}_k = 2\tilde{L}\mathbf{T}_{k-1} - \mathbf{T}_{k-2}.

The parameters follow PyTorch Geometric's ``ChebConv`` (``lins[k]`` holds
:math:`\mathbf{\Theta}_k^\top`, then ``bias``), so weights copy across one to one and
the output equals ``torch_geometric.nn.ChebConv(C_in, C_out, K, normalization="sym")``
called with ``lambda_max=2.0`` on the mesh's edges.

Layout: the whole batch is propagated at once as one ``(V, B*C)`` matrix, so each
Laplacian product is a single sparse-dense product (``torch.sparse.mm`` on a COO
tensor built from the buffers, no copy). Under ``torch.compile``, and for dtypes
the sparse kernels lack (``float16``, ``bfloat16``), the product is a dense
gather / ``scatter_add`` instead, which the compiler fuses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_tensor
from ..hierarchy.container import MeshHierarchy
from .graph import FLOAT_DTYPES, check_features, hierarchy_level, positive_int

__all__ = ["ChebConv", "laplacian_matmul"]

_SPARSE_DTYPES = (torch.float32, torch.float64)


def laplacian_matmul(index: Tensor, weight: Tensor, num_vertices: int, x: Tensor) -> Tensor:
    r"""Sparse product :math:`\tilde{L} \mathbf{X}` with :math:`\tilde{L}` given as COO.

    Args:
        index: ``(2, E)`` int64 (row, col), sorted by row then col, no duplicates.
        weight: ``(E,)`` float values.
        num_vertices: ``V``.
        x: ``(V, N)`` dense matrix.

    Shapes:
        ``(V, N) -> (V, N)``; ``out[i] = sum_e weight[e] * x[col[e]]`` over ``row[e] == i``.

    Differentiable in ``x``; ``index``/``weight`` are treated as constants.
    """
    w = weight.to(x.dtype)
    if _use_sparse_kernel(x):
        L = torch.sparse_coo_tensor(index, w, (num_vertices, num_vertices), is_coalesced=True,
                                    check_invariants=False)
        return torch.sparse.mm(L, x)  # (V, N)
    row, col = index[0], index[1]
    msg = x.index_select(0, col) * w.unsqueeze(1)  # (E, N)
    # scatter_add rather than index_add: both exporters (dynamo, TorchScript) support it.
    return x.new_zeros(num_vertices, x.shape[1]).scatter_add(0, row.unsqueeze(1).expand_as(msg), msg)  # (V, N)


def _use_sparse_kernel(x: Tensor) -> bool:
    """Sparse tensors only in plain eager mode: not while compiling, exporting or tracing."""
    return (x.dtype in _SPARSE_DTYPES and x.device.type in ("cpu", "cuda") and not torch.compiler.is_compiling()
            and not torch.jit.is_tracing())


class ChebConv(nn.Module):
    r"""Chebyshev spectral convolution with a precomputed scaled Laplacian (COMA).

    .. math::

        \mathbf{X}' = \sum_{k=0}^{K-1} \mathbf{T}_k(\tilde{L}) \mathbf{X} \mathbf{\Theta}_k + \mathbf{b}

    with the Chebyshev recurrence :math:`T_0 = I`, :math:`T_1 = \tilde{L}`,
    :math:`T_k = 2\tilde{L} T_{k-1} - T_{k-2}` (Defferrard et al., NeurIPS 2016).

    Args:
        in_channels: ``C_in``.
        out_channels: ``C_out``.
        K: number of Chebyshev terms (PyG's ``K``; ``K = 1`` is a per-vertex linear map).
        laplacian_index: ``(2, E)`` int64 COO (row, col) of :math:`\tilde{L}`.
        laplacian_weight: ``(E,)`` float values of :math:`\tilde{L}`; duplicate
            entries are summed. Both are stored (sorted) as buffers of those names.
        num_vertices: ``V``.
        bias: learn an additive bias. Default ``True``.

    Shapes:
        - input: ``(B, V, C_in)`` or ``(V, C_in)``
        - output: ``(B, V, C_out)`` or ``(V, C_out)``

    Attributes:
        lins: ``K`` bias-free ``nn.Linear(C_in, C_out)``, as PyG's ``ChebConv.lins``.
        bias: ``(C_out,)`` parameter or ``None``.
    """

    laplacian_index: Tensor
    laplacian_weight: Tensor

    def __init__(self, in_channels: int, out_channels: int, K: int, laplacian_index: Tensor,
                 laplacian_weight: Tensor, num_vertices: int, bias: bool = True):
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.K = positive_int(K, "K")
        self.num_vertices = positive_int(num_vertices, "num_vertices")
        index, weight = _coalesce(laplacian_index, laplacian_weight, self.num_vertices)
        self.register_buffer("laplacian_index", index)
        self.register_buffer("laplacian_weight", weight)
        self.lins = nn.ModuleList(
            nn.Linear(self.in_channels, self.out_channels, bias=False) for _ in range(self.K)
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform weights and zero bias, as PyG's ``ChebConv``."""
        for lin in self.lins:
            nn.init.xavier_uniform_(lin.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    @classmethod
    def from_hierarchy(cls, in_channels: int, out_channels: int, K: int, hierarchy: MeshHierarchy, level: int,
                       **kw: Any) -> "ChebConv":
        """A layer on ``hierarchy.levels[level]``'s scaled Laplacian."""
        lvl = hierarchy_level(hierarchy, level)
        return cls(in_channels, out_channels, K, lvl.laplacian_index, lvl.laplacian_weight, lvl.num_vertices, **kw)

    def forward(self, x: Tensor) -> Tensor:
        """Shapes: ``(B, V, C_in) -> (B, V, C_out)`` or ``(V, C_in) -> (V, C_out)``."""
        weight0 = self.lins[0].weight
        x = check_features(x, self.num_vertices, self.in_channels, weight0.dtype, self.laplacian_index.device)
        V, C, O = self.num_vertices, self.in_channels, self.out_channels
        unbatched = x.dim() == 2
        B = 1 if unbatched else x.shape[0]
        # Vertex-major: the whole batch is one (V, B*C) matrix for the Laplacian products.
        t0 = x if unbatched else x.transpose(0, 1).reshape(V, B * C)  # (V, B*C)

        def lin(k: int, t: Tensor, acc: Tensor | None) -> Tensor:
            rows = t.reshape(V * B, C)  # (V*B, C)
            w = self.lins[k].weight.t()  # (C, O)
            if acc is None:
                return rows @ w if self.bias is None else torch.addmm(self.bias, rows, w)  # (V*B, O)
            return torch.addmm(acc, rows, w)  # (V*B, O)

        out = lin(0, t0, None)
        if self.K > 1:
            idx, wt = self.laplacian_index, self.laplacian_weight
            t1 = laplacian_matmul(idx, wt, V, t0)  # (V, B*C)
            out = lin(1, t1, out)
            for k in range(2, self.K):
                t2 = laplacian_matmul(idx, wt, V, t1).mul_(2.0).sub_(t0)  # (V, B*C)
                out = lin(k, t2, out)
                t0, t1 = t1, t2
        if unbatched:
            return out  # (V, O)
        return out.view(V, B, O).transpose(0, 1).contiguous()  # (B, V, O)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, K={self.K}"
        if self.bias is None:
            s += ", bias=False"
        return s

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.extra_repr()})"


def _coalesce(index: Tensor, weight: Tensor, V: int) -> tuple[Tensor, Tensor]:
    """Validate a COO matrix and return it sorted by (row, col) with duplicates summed.

    Shapes: ``index (2, E), weight (E,) -> (2, E'), (E',)``.
    """
    check_tensor(index, "laplacian_index", shape=(2, "E"), dtype=torch.int64)
    E = index.shape[1]
    check_tensor(weight, "laplacian_weight", shape=(E,), dtype=FLOAT_DTYPES)
    if weight.device != index.device:
        raise ValueError(
            f"laplacian_weight: expected a tensor on {index.device} (laplacian_index's device), "
            f"got one on {weight.device}"
        )
    if E and (int(index.min()) < 0 or int(index.max()) >= V):
        raise ValueError(
            f"laplacian_index: expected vertex indices in [0, {V}), got range [{int(index.min())}, {int(index.max())}]"
        )
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("laplacian_weight: expected finite values, got NaN or inf")
    key = index[0] * V + index[1]  # (E,)
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)  # (E',), (E,)
    summed = weight.new_zeros(uniq.shape[0]).index_add_(0, inverse, weight.detach())  # (E',)
    rows = torch.div(uniq, V, rounding_mode="floor")
    return torch.stack([rows, uniq - rows * V]).contiguous(), summed
