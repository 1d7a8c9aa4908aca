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
called with ``lambda_max=2.0`` on the mesh's edges, to the precision of the Laplacian's
weights: a hierarchy keeps them in float32, so a float64 layer built from one agrees to
about 1e-7; build it from ``scaled_laplacian(faces, V, dtype=torch.float64)`` to agree
in float64.

Layout: the whole batch is propagated at once as one ``(V, B*C)`` matrix, so each
Laplacian product is a single sparse-dense product. Three kernels compute it:

- CPU (eager, and compiled without autograd): ``embedding_bag`` over the
  Laplacian's compressed rows (one bag of weighted rows per vertex, kept as
  buffers), differentiated by the same product with the transposed matrix.
  Measured on 2 cores, 5,023 vertices: 36 us against 913 us for
  ``torch.sparse.mm`` at 16 columns (batch 1), 1.4 ms against 17.9 ms at 1,024.
- CUDA, eager, ``float32``/``float64``: ``torch.sparse.mm`` on a COO tensor built
  from the buffers, no copy. With :data:`BAG_ON_CUDA` set, the ``embedding_bag``
  kernel instead, as on the CPU (not yet measured on a GPU, so off).
- Otherwise (compiling with autograd, tracing or export, inside
  :func:`~mesh_decoder.nn.plain_formulation`, or for dtypes cuSPARSE lacks): the
  plain gather / ``scatter_add``, which the compiler fuses, and the reference the
  other two are tested against.

A layer with fewer outputs than inputs (a decoder's output layer) projects first
and sums the terms by Clenshaw's recurrence, so its products run on ``C_out``
columns (:meth:`ChebConv.forward_vertex_major`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .._checks import check_bool, check_tensor, positive_int
from ..hierarchy.container import MeshHierarchy
from ..hierarchy.laplacian import coo_order_problem
from .graph import (FLOAT_DTYPES, _autocast_enabled, after_load, bag_product, check_features, fast_paths_enabled,
                    hierarchy_level, records_grad, under_func_transform, update_buffer)

__all__ = ["ChebConv", "LaplacianRows", "laplacian_matmul", "laplacian_rows"]

_SPARSE_DTYPES = (torch.float32, torch.float64)

#: Take the ``embedding_bag`` products, and :class:`~mesh_decoder.nn.ChebDecoder`'s
#: vertex-major inference path, on CUDA as well as on the CPU. Off by default: on
#: the GPU only ``torch.sparse.mm`` has been measured (COMA at batch 1 with CUDA
#: graphs, H200: 942 decodes/s in fp32, about 1 ms a decode). ``benchmarks/gpu.sh``
#: times COMA with this switched on beside the default path (``decode-chebbag_*``).
BAG_ON_CUDA = False


def bag_device(x: Tensor) -> bool:
    """Whether ``x``'s device takes the ``embedding_bag`` kernels (CPU; CUDA with :data:`BAG_ON_CUDA`)."""
    return x.device.type == "cpu" or (BAG_ON_CUDA and x.device.type == "cuda")


class LaplacianRows(NamedTuple):
    """A sparse ``(V, V)`` matrix as compressed rows, and its transpose, in one dtype.

    ``offsets[i]`` is the first entry of row ``i`` in ``col``/``weight`` (a row ends
    where the next begins; the last at ``E``), the layout ``embedding_bag`` takes.

    Shapes: ``offsets (V,)``, ``col (E,)``, ``weight (E,)``, the same for ``t_*``.
    """

    offsets: Tensor
    col: Tensor
    weight: Tensor
    t_offsets: Tensor
    t_col: Tensor
    t_weight: Tensor


def laplacian_rows(index: Tensor, weight: Tensor, num_vertices: int, dtype: torch.dtype | None = None) -> LaplacianRows:
    """The compressed rows of the COO matrix ``(index, weight)`` and of its transpose.

    Args:
        index: ``(2, E)`` int64 (row, col) in ``[0, V)``, sorted by row then col, no duplicates.
        weight: ``(E,)`` float values, finite.
        num_vertices: ``V``.
        dtype: dtype of the returned weights (default: ``weight``'s).

    Raises ``TypeError``/``ValueError`` naming ``laplacian_index`` or ``laplacian_weight``
    when they break these rules (the rows would silently describe another matrix).
    """
    V = positive_int(num_vertices, "num_vertices")
    _check_coo(index, weight, V)
    row, col = index[0], index[1]
    problem = coo_order_problem(row, col, V)
    if problem:
        raise ValueError(f"laplacian_index: {problem}")
    w = weight.detach().to(dtype or weight.dtype)

    def starts(r: Tensor) -> Tensor:
        counts = torch.bincount(r, minlength=V)  # (V,)
        return torch.cumsum(counts, 0).sub_(counts)  # (V,) exclusive prefix sum

    order = torch.argsort(col * V + row)  # (E,) entries by (col, row): the transpose's rows
    return LaplacianRows(starts(row), col, w, starts(col), row[order], w[order])


class _BagMatmul(torch.autograd.Function):
    """:func:`bag_product` for autograd and ``torch.func``: the product is linear in
    ``x``, so its gradient is the product by the transpose and its forward derivative
    the product itself, both ``_BagMatmul`` again (higher derivatives follow). The
    compressed rows are constants."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, *rows: Tensor) -> Tensor:  # type: ignore[override]
        return bag_product(x, *rows[:3])

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # type: ignore[override]
        ctx.rows = inputs[1:]

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        rows = ctx.rows
        return (_BagMatmul.apply(grad, *rows[3:], *rows[:3]),) + (None,) * len(rows)

    @staticmethod
    def jvp(ctx, x_tangent: Tensor, *row_tangents) -> Tensor:  # type: ignore[override]
        return _BagMatmul.apply(x_tangent, *ctx.rows)


def laplacian_matmul(index: Tensor, weight: Tensor, num_vertices: int, x: Tensor,
                     rows: LaplacianRows | None = None) -> Tensor:
    r"""Sparse product :math:`\tilde{L} \mathbf{X}` with :math:`\tilde{L}` given as COO.

    Args:
        index: ``(2, E)`` int64 (row, col), sorted by row then col, no duplicates.
        weight: ``(E,)`` float values.
        num_vertices: ``V``.
        x: ``(V, N)`` dense matrix.
        rows: :func:`laplacian_rows` of ``(index, weight)`` in ``x``'s dtype, kept by
            the caller for the CPU kernel; ``None`` derives them when needed.

    Shapes:
        ``(V, N) -> (V, N)``; ``out[i] = sum_e weight[e] * x[col[e]]`` over ``row[e] == i``.

    Differentiable in ``x`` (twice and more, and under ``torch.func``'s transforms);
    ``index``/``weight`` are treated as constants. With grad mode on, change the result
    out of place (under ``vmap`` it may be a view that autograd forbids changing).
    """
    if _use_bag_kernel(x):
        if rows is None:
            rows = laplacian_rows(index, weight, num_vertices, x.dtype)
        # autograd, torch.func's transforms and forward-mode AD (whose tensors require no grad, and
        # which run under no_grad too): embedding_bag itself has no forward-mode rule
        if torch.is_grad_enabled() or under_func_transform(x):
            return _BagMatmul.apply(x, *rows)  # (V, N)
        return bag_product(x, *rows[:3])  # (V, N)
    w = weight.to(x.dtype)
    if _use_sparse_kernel(x):
        L = torch.sparse_coo_tensor(index, w, (num_vertices, num_vertices), is_coalesced=True,
                                    check_invariants=False)
        return torch.sparse.mm(L, x)  # (V, N)
    row, col = index[0], index[1]
    msg = x.index_select(0, col) * w.unsqueeze(1)  # (E, N)
    # scatter_add rather than index_add: both exporters (dynamo, TorchScript) support it.
    return x.new_zeros(num_vertices, x.shape[1]).scatter_add(0, row.unsqueeze(1).expand_as(msg), msg)  # (V, N)


def _recording() -> bool:
    """Exporting or tracing: the plain formulation is what those should record."""
    return torch.compiler.is_exporting() or torch.jit.is_tracing()


def _use_bag_kernel(x: Tensor) -> bool:
    """The ``embedding_bag`` kernel: on a :func:`bag_device`, outside
    :func:`~mesh_decoder.nn.plain_formulation`, in eager mode, or compiled without
    autograd; not while exporting or tracing."""
    return (bag_device(x) and fast_paths_enabled() and not _recording()
            and (not torch.compiler.is_compiling() or not records_grad(x)))


def _use_sparse_kernel(x: Tensor) -> bool:
    """Sparse tensors only in eager mode with the fast paths on: not while compiling,
    exporting or tracing, inside :func:`~mesh_decoder.nn.plain_formulation` (whose
    reference is the gather / ``scatter_add``), or under ``torch.func`` transforms
    (sparse products have no ``vmap`` or forward-mode rules)."""
    return (x.dtype in _SPARSE_DTYPES and x.device.type in ("cpu", "cuda") and fast_paths_enabled()
            and not torch.compiler.is_compiling() and not _recording() and not under_func_transform(x))


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
        # The CPU kernel's compressed rows (LaplacianRows), derived from the two above
        # (not saved; rebuilt when a state dict is loaded).
        for name in LaplacianRows._fields:
            empty = weight.new_empty(0) if name.endswith("weight") else index.new_empty(0)
            self.register_buffer("rows_" + name, empty, persistent=False)
        self._refresh_rows()
        self.register_load_state_dict_post_hook(after_load("_refresh_rows"))
        self.lins = nn.ModuleList(
            nn.Linear(self.in_channels, self.out_channels, bias=False) for _ in range(self.K)
        )
        if check_bool(bias, "bias"):
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
        x = check_features(x, self.num_vertices, self.in_channels, self.lins[0].weight.dtype,
                           self.laplacian_index.device)
        if x.dim() == 2:
            return self.forward_vertex_major(x.unsqueeze(1)).squeeze(1)  # (V, C_out)
        # Vertex-major: the whole batch is one (V, B*C) matrix for the Laplacian products.
        return self.forward_vertex_major(x.transpose(0, 1)).transpose(0, 1).contiguous()  # (B, V, C_out)

    def forward_vertex_major(self, x: Tensor) -> Tensor:
        """The convolution on vertex-major features, as :class:`ChebDecoder` keeps them.

        Shapes: ``(V, B, C_in) -> (V, B, C_out)``; the input is not checked.
        """
        V, B, C = x.shape
        O = self.out_channels
        if self.K > 2 and O < C:
            return self._clenshaw(x)  # (V, B, O)
        t0 = x.reshape(V, B * C)  # (V, B*C)
        autocast = _autocast_enabled(x.device.type)  # it picks the products' dtypes: none in place

        def lin(k: int, t: Tensor, acc: Tensor | None) -> Tensor:
            flat = t.reshape(V * B, C)  # (V*B, C)
            w = self.lins[k].weight.t()  # (C, O)
            if acc is None:
                return flat @ w if self.bias is None else torch.addmm(self.bias, flat, w)  # (V*B, O)
            if autocast:
                return torch.addmm(acc, flat, w)  # (V*B, O)
            return acc.addmm_(flat, w)  # (V*B, O), in place: addmm keeps no output for its gradient

        out = lin(0, t0, None)
        if self.K > 1:
            idx, wt = self.laplacian_index, self.laplacian_weight
            rows = self._rows(x.dtype) if _use_bag_kernel(x) else None
            t1 = laplacian_matmul(idx, wt, V, t0, rows)  # (V, B*C)
            out = lin(1, t1, out)
            for k in range(2, self.K):
                lt = laplacian_matmul(idx, wt, V, t1, rows)  # (V, B*C)
                # in place only for inference: a trace is re-run with grad off and must record the same graph
                in_place = not (torch.is_grad_enabled() or _recording())
                t2 = (lt.mul_(2.0) if in_place else lt.mul(2.0)).sub_(t0)  # (V, B*C)
                out = lin(k, t2, out)
                t0, t1 = t1, t2
        return out.view(V, B, O)  # (V, B, O)

    def _clenshaw(self, x: Tensor) -> Tensor:
        r"""The same sum with the Laplacian products on ``C_out`` columns instead of ``C_in``.

        All ``K`` projections :math:`Y_k = X \Theta_k` come from one matrix product;
        then Clenshaw's recurrence :math:`b_k = Y_k + 2\tilde{L} b_{k+1} - b_{k+2}`
        (from :math:`b_{K-1} = Y_{K-1}`) gives
        :math:`\sum_k T_k(\tilde{L}) Y_k = Y_0 + \tilde{L} b_1 - b_2`. Chosen when
        ``C_out < C_in`` (a decoder's output layer), where the products are what costs.

        Shapes: ``(V, B, C_in) -> (V, B, C_out)``.
        """
        V, B, C = x.shape
        O, K = self.out_channels, self.K
        theta = torch.cat([lin.weight.t() for lin in self.lins], dim=1)  # (C, K*O)
        y = (x.reshape(V * B, C) @ theta).view(V, B, K, O)  # (V, B, K, O): y[:, :, k] = Y_k
        idx, wt = self.laplacian_index, self.laplacian_weight
        rows = self._rows(y.dtype) if _use_bag_kernel(y) else None  # y's dtype: autocast may have chosen it

        def lap(b: Tensor) -> Tensor:
            return laplacian_matmul(idx, wt, V, b.reshape(V, B * O), rows).view(V, B, O)  # (V, B, O)

        b1, b2 = y[:, :, K - 1], None  # b_{k+1}, b_{k+2}
        for k in range(K - 2, 0, -1):
            bk = torch.add(y[:, :, k], lap(b1), alpha=2.0)  # (V, B, O)
            if b2 is not None:
                bk.sub_(b2)
            b1, b2 = bk, b1
        out = torch.add(y[:, :, 0], lap(b1)).sub_(b2)  # (V, B, O); K > 2, so b2 is set
        return out if self.bias is None else out.add_(self.bias)

    def _refresh_rows(self) -> None:
        rows = laplacian_rows(self.laplacian_index, self.laplacian_weight, self.num_vertices)
        for name, value in zip(LaplacianRows._fields, rows):
            update_buffer(self, "rows_" + name, value)

    def _rows(self, dtype: torch.dtype) -> LaplacianRows:
        """The compressed-row buffers, weights in ``dtype``."""
        rows = LaplacianRows(*(getattr(self, "rows_" + name) for name in LaplacianRows._fields))
        return rows._replace(weight=rows.weight.to(dtype), t_weight=rows.t_weight.to(dtype))

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
    _check_coo(index, weight, V)
    key = index[0] * V + index[1]  # (E,)
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)  # (E',), (E,)
    summed = weight.new_zeros(uniq.shape[0]).index_add_(0, inverse, weight.detach())  # (E',)
    rows = torch.div(uniq, V, rounding_mode="floor")
    return torch.stack([rows, uniq - rows * V]).contiguous(), summed


def _check_coo(index: Tensor, weight: Tensor, V: int) -> None:
    """A COO matrix ``(2, E)`` int64 indices in ``[0, V)``, ``(E,)`` finite float values on one device."""
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
