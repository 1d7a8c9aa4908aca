"""Slow, obviously correct references for the mesh layers, and small test meshes.

Everything here is written with explicit loops or dense matrices, so the fast
layers in ``mesh_decoder.nn`` can be compared against it (forward and backward:
the references are built from differentiable torch ops).
"""

from __future__ import annotations

import numpy as np
import torch

from mesh_decoder.hierarchy import HierarchyLevel, MeshHierarchy
from mesh_decoder.nn.decoders import ACTIVATIONS
from mesh_decoder.nn.encoders import ChebEncoder, GraphEncoder, SpiralEncoder

__all__ = [
    "grid_mesh", "icosahedron", "edge_set", "dense_adjacency", "dense_scaled_laplacian", "coo",
    "random_spirals", "random_up_operator", "spiral_conv_reference", "spiralnet_reference",
    "cheb_conv_reference", "down_sample_reference", "up_sample_reference", "make_test_hierarchy",
    "build_encoder", "encoder_reference", "rand_meshes", "rand_latent",
]


# --------------------------------------------------------------------------- meshes
def grid_mesh(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A ``rows x cols`` vertex grid in the plane, each square split into two triangles.

    Returns ``vertices (rows*cols, 3)`` float64 and ``faces (2*(rows-1)*(cols-1), 3)`` int64.
    """
    verts, faces = [], []
    for i in range(rows):
        for j in range(cols):
            verts.append([float(j), float(i), 0.0])
    for i in range(rows - 1):
        for j in range(cols - 1):
            a = i * cols + j
            b, c, d = a + 1, a + cols, a + cols + 1
            faces.append([a, b, d])
            faces.append([a, d, c])
    return torch.tensor(verts, dtype=torch.float64), torch.tensor(faces, dtype=torch.int64)


def icosahedron() -> tuple[torch.Tensor, torch.Tensor]:
    """The regular icosahedron: 12 vertices, 20 faces, every vertex of valence 5."""
    t = (1.0 + 5.0 ** 0.5) / 2.0
    verts = [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
             [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]]
    faces = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4],
             [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8],
             [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]]
    return torch.tensor(verts, dtype=torch.float64), torch.tensor(faces, dtype=torch.int64)


# --------------------------------------------------------------------------- graphs
def edge_set(faces: torch.Tensor) -> set[tuple[int, int]]:
    """Directed edges ``(i, j)``, both directions, of every face edge; no self loops."""
    out = set()
    for face in faces.tolist():
        k = len(face)
        for a in range(k):
            i, j = face[a], face[(a + 1) % k]
            if i != j:
                out.add((i, j))
                out.add((j, i))
    return out


def dense_adjacency(faces: torch.Tensor, num_vertices: int) -> np.ndarray:
    """``(V, V)`` 0/1 adjacency from the faces, by a loop over the edges."""
    A = np.zeros((num_vertices, num_vertices))
    for i, j in edge_set(faces):
        A[i, j] = 1.0
    return A


def dense_scaled_laplacian(A: np.ndarray) -> np.ndarray:
    """``L~ = -D^-1/2 A D^-1/2`` (``2 L / lambda_max - I`` with ``lambda_max = 2``), dense."""
    d = A.sum(1)
    inv = np.zeros_like(d)
    inv[d > 0] = 1.0 / np.sqrt(d[d > 0])
    return -(inv[:, None] * A * inv[None, :])


def coo(M: np.ndarray, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-zeros of a dense matrix as ``index (2, E)`` int64, ``weight (E,)``."""
    rows, cols = np.nonzero(M)
    return torch.from_numpy(np.stack([rows, cols]).astype(np.int64)), torch.tensor(M[rows, cols], dtype=dtype)


def random_spirals(gen: torch.Generator, V: int, S: int, pad_fraction: float = 0.3) -> torch.Tensor:
    """``(V, S)`` spirals starting at their own vertex, some padded with ``V`` from a random cut."""
    spirals = torch.randint(0, V, (V, S), generator=gen)
    spirals[:, 0] = torch.arange(V)
    short = torch.rand(V, generator=gen) < pad_fraction
    for v in torch.nonzero(short).flatten().tolist():
        cut = int(torch.randint(1, S, (1,), generator=gen))
        spirals[v, cut:] = V
    if S > 1 and not bool((spirals == V).any()):
        spirals[0, -1] = V  # always exercise the padding
    return spirals


def random_up_operator(gen: torch.Generator, V_out: int, V_in: int, k: int = 3,
                       dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``(V_out, k)`` distinct input vertices per row, positive weights summing to 1."""
    index = torch.stack([torch.randperm(V_in, generator=gen)[:k] for _ in range(V_out)])
    weight = torch.rand(V_out, k, generator=gen, dtype=torch.float64) + 0.05
    weight = weight / weight.sum(1, keepdim=True)
    return index, weight.to(dtype)


# --------------------------------------------------------------------------- layers
def spiral_conv_reference(x: torch.Tensor, indices: torch.Tensor, weight: torch.Tensor,
                          bias: torch.Tensor | None) -> torch.Tensor:
    """Spiral convolution by loops: ``out[b, v] = sum_j W_j x[b, s_j(v)] + bias``.

    ``W_j = weight[:, j*C:(j+1)*C]`` (spiral-major), index ``V`` reads zeros.
    Shapes: ``x (B, V, C)``, ``indices (V, S)``, ``weight (O, S*C)`` -> ``(B, V, O)``.
    """
    B, V, C = x.shape
    S = indices.shape[1]
    rows = []
    for b in range(B):
        per_vertex = []
        for v in range(V):
            acc = torch.zeros(weight.shape[0], dtype=x.dtype) if bias is None else bias.clone()
            for j in range(S):
                u = int(indices[v, j])
                if u < V:
                    acc = acc + weight[:, j * C:(j + 1) * C] @ x[b, u]
            per_vertex.append(acc)
        rows.append(torch.stack(per_vertex))
    return torch.stack(rows)


def spiralnet_reference(x: torch.Tensor, indices: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor) -> torch.Tensor:
    """SpiralNet++'s forward (no padding): ``x[:, indices.reshape(-1)].view(B, V, S*C) @ W.T + b``."""
    B, V, C = x.shape
    S = indices.shape[1]
    return x[:, indices.reshape(-1)].view(B, V, S * C) @ weight.T + bias


def cheb_conv_reference(x: torch.Tensor, L: torch.Tensor, weights: list[torch.Tensor],
                        bias: torch.Tensor | None) -> torch.Tensor:
    """Chebyshev convolution with a dense ``(V, V)`` scaled Laplacian, one sample at a time.

    ``weights[k]`` is ``(O, C)`` (an ``nn.Linear`` weight). Shapes: ``(B, V, C) -> (B, V, O)``.
    """
    outs = []
    for b in range(x.shape[0]):
        T = [x[b]]
        if len(weights) > 1:
            T.append(L @ x[b])
        for _ in range(2, len(weights)):
            T.append(2.0 * (L @ T[-1]) - T[-2])
        out = sum(T[k] @ weights[k].T for k in range(len(weights)))
        outs.append(out if bias is None else out + bias)
    return torch.stack(outs)


def down_sample_reference(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``y[:, v] = x[:, index[v]]`` by a loop. Shapes: ``(B, V_in, C) -> (B, V_out, C)``."""
    return torch.stack([x[:, int(i)] for i in index], dim=1)


def up_sample_reference(x: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``y = U x`` with the dense ``(V_out, V_in)`` operator ``U[v, index[v, k]] += weight[v, k]``."""
    U = torch.zeros(index.shape[0], x.shape[1], dtype=x.dtype)
    for v in range(index.shape[0]):
        for k in range(index.shape[1]):
            U[v, int(index[v, k])] += weight[v, k].to(x.dtype)
    return torch.einsum("oi,bic->boc", U, x)


# --------------------------------------------------------------------------- hierarchy
def make_test_hierarchy(seed: int = 0, spiral_length: int = 5) -> MeshHierarchy:
    """Two grid levels (6x5 and 3x3) with a made-up down index and up operator.

    Operators have valid indices and weights (rows sum to 1) but no geometric meaning.
    """
    gen = torch.Generator().manual_seed(seed)
    levels = []
    for rows, cols in [(6, 5), (3, 3)]:
        verts, faces = grid_mesh(rows, cols)
        V = verts.shape[0]
        li, lw = coo(dense_scaled_laplacian(dense_adjacency(faces, V)))
        levels.append(HierarchyLevel(
            vertices=verts.float(), faces=faces, spirals=random_spirals(gen, V, spiral_length),
            laplacian_index=li, laplacian_weight=lw, original_index=torch.arange(V),
            spiral_length=spiral_length, dilation=2,
        ))
    V0, V1 = levels[0].num_vertices, levels[1].num_vertices
    down = torch.randperm(V0, generator=gen)[:V1].sort().values
    up_index, up_weight = random_up_operator(gen, V0, V1)
    return MeshHierarchy(levels, [down], [up_index], [up_weight])


# ------------------------------------------------------------------------------ encoders and random inputs
def build_encoder(kind: str, hierarchy, **kw) -> GraphEncoder:
    kw.setdefault("channels", (8, 12))
    kw.setdefault("latent_size", 5)
    if kind == "spiral":
        return SpiralEncoder.from_hierarchy(hierarchy, **kw)
    return ChebEncoder.from_hierarchy(hierarchy, K=3, **kw)


def encoder_reference(enc: GraphEncoder, hierarchy, x: torch.Tensor) -> torch.Tensor:
    """The encoder written out: the encoder's convs, selection by a loop, explicit FC."""
    act = ACTIVATIONS[enc.activation]()
    h = x
    for level, conv in enumerate(enc.convs):
        h = act(conv(h))
        idx = hierarchy.down[level].tolist()
        h = torch.stack([h[:, i] for i in idx], dim=1)  # (B, V_{l+1}, C)
    flat = h.reshape(h.shape[0], -1)
    return flat @ enc.fc.weight.T + enc.fc.bias


def rand_meshes(hierarchy, batch: int, seed: int, channels: int = 3, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, hierarchy.sizes[0], channels, generator=g, dtype=dtype)


def rand_latent(dec: torch.nn.Module, batch: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dec.latent_size, generator=g, dtype=dtype)
