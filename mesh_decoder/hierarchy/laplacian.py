"""Graph Laplacians of mesh levels, scaled for Chebyshev convolutions.

ChebNet (Defferrard et al., "Convolutional Neural Networks on Graphs with Fast
Localized Spectral Filtering", NeurIPS 2016) filters with Chebyshev polynomials
of the scaled Laplacian

.. math::
    \\tilde L = \\frac{2}{\\lambda_{max}} L - I, \\qquad L = I - D^{-1/2} A D^{-1/2},

where ``A`` is the (unweighted, symmetric) vertex adjacency of the mesh edges and
``D`` its degree matrix. COMA (Ranjan et al., ECCV 2018) takes
``lambda_max = 2`` (the upper bound of the normalised Laplacian's spectrum), so

.. math::
    \\tilde L = -D^{-1/2} A D^{-1/2},

which has a zero diagonal: only the off-diagonal entries are stored.
"""

from __future__ import annotations

import numpy as np
import torch

from .._checks import int_value
from ..errors import HierarchyError

__all__ = ["coo_order_problem", "mesh_edge_index", "scaled_laplacian"]


def mesh_edge_index(faces: np.ndarray | torch.Tensor, num_vertices: int) -> np.ndarray:
    """Directed edges of a triangle mesh, both directions, unique, sorted by (row, col).

    Self-loops (from a degenerate face with a repeated index) are dropped, as
    :func:`torch_geometric.utils.get_laplacian` and :func:`mesh_decoder.nn.mesh_edge_index` drop them.

    Args:
        faces: ``(F, 3)`` int faces.
        num_vertices: ``V``; all indices must lie in ``[0, V)``.

    Returns:
        ``(2, E)`` int64 array; ``E`` is twice the number of undirected edges.

    Shapes:
        ``(F, 3)`` -> ``(2, E)``.
    """
    if isinstance(faces, torch.Tensor):
        faces = faces.detach().cpu().numpy()
    faces = np.asarray(faces)
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise HierarchyError(f"faces: expected shape (F, 3), got {faces.shape}")
    if not np.issubdtype(faces.dtype, np.integer):  # a TypeError, as nn.mesh_edge_index's
        raise TypeError(f"faces: expected an integer array, got dtype {faces.dtype}")
    faces = faces.astype(np.int64, copy=False)
    V = int_value(num_vertices, "num_vertices", "an int")
    if V < 0:
        raise HierarchyError(f"num_vertices: expected an int >= 0, got {V}")
    if faces.size and (faces.min() < 0 or faces.max() >= V):
        raise HierarchyError(f"faces: expected indices in [0, {V}), got [{faces.min()}, {faces.max()}]")
    src = faces[:, [0, 1, 2, 1, 2, 0]].reshape(-1)  # (6F,) each edge in both directions
    dst = faces[:, [1, 2, 0, 0, 1, 2]].reshape(-1)  # (6F,)
    loop = src == dst  # a degenerate face (repeated index) would add a self-loop: no diagonal, as documented
    key = np.unique(src[~loop] * V + dst[~loop])  # (E,) sorted by (row, col)
    return np.stack([key // V, key % V])  # (2, E)


def scaled_laplacian(
    faces: np.ndarray | torch.Tensor, num_vertices: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled normalised Laplacian ``L~ = -D^-1/2 A D^-1/2`` as a sorted COO matrix.

    Args:
        faces: ``(F, 3)`` int faces of the level.
        num_vertices: ``V``.
        dtype: float dtype of the weights, default ``torch.float32``.

    Returns:
        ``(index (2, E) int64, weight (E,) dtype)``: ``weight[e] = -1 / sqrt(deg(i) deg(j))``
        for the edge ``(i, j) = index[:, e]``, entries sorted by ``(i, j)``. The zero
        diagonal is not stored; vertices without edges have no entries.

    Shapes:
        faces ``(F, 3)`` -> index ``(2, E)``, weight ``(E,)``.
    """
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    edge_index = mesh_edge_index(faces, num_vertices)  # (2, E)
    row, col = edge_index
    degree = np.bincount(row, minlength=int(num_vertices)).astype(np.float64)  # (V,)
    weight = -1.0 / np.sqrt(degree[row] * degree[col])  # (E,)
    return torch.from_numpy(edge_index), torch.from_numpy(weight).to(dtype)


def coo_order_problem(row: torch.Tensor, col: torch.Tensor, num_vertices: int) -> str | None:
    """How COO entries ``(row, col)`` (each ``(E,)``) break the order :func:`scaled_laplacian` writes
    and compressed rows rely on, sorted by ``(row, col)`` without repeats, as the end of an error
    message; ``None`` when they keep it."""
    key = row * num_vertices + col  # (E,)
    back = key[1:] <= key[:-1]  # (E-1,)
    if not bool(back.any()):
        return None
    e = int(back.nonzero()[0]) + 1
    return (f"expected entries sorted by (row, col) without repeats, got entry {e} = ({int(row[e])}, {int(col[e])}) "
            f"after ({int(row[e - 1])}, {int(col[e - 1])})")
