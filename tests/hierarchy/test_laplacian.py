"""Scaled Laplacians: sparse fast path vs. a dense loop-built reference and vs. torch_geometric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesh_decoder.errors import HierarchyError
from mesh_decoder.hierarchy.laplacian import mesh_edge_index, scaled_laplacian


def random_surface(rng: np.random.Generator, n: int = 9, m: int = 7):
    """Jittered ``n x m`` height-field grid with random diagonals (open, with boundary)."""
    xs, ys = np.meshgrid(np.arange(n, dtype=float), np.arange(m, dtype=float))
    v = np.stack([xs.ravel(), ys.ravel(), rng.normal(scale=0.2, size=n * m)], axis=1)
    v[:, :2] += rng.uniform(-0.2, 0.2, size=(n * m, 2))
    faces = []
    for j in range(m - 1):
        for i in range(n - 1):
            a = j * n + i
            b, c, d = a + 1, a + n, a + n + 1
            faces += [[a, b, d], [a, d, c]] if rng.random() < 0.5 else [[a, b, c], [b, d, c]]
    faces = np.array(faces, dtype=np.int64)
    return v, faces[rng.permutation(len(faces))]


def tetra_pair():
    """Two disjoint tetrahedra (closed components of different degrees)."""
    f = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]], dtype=np.int64)
    return 8, np.concatenate([f, f + 4])


def dense_reference(faces: np.ndarray, V: int) -> np.ndarray:
    """``-D^-1/2 A D^-1/2`` built with explicit loops over faces and vertices."""
    A = np.zeros((V, V))
    for face in faces.tolist():
        for k in range(3):
            i, j = face[k], face[(k + 1) % 3]
            A[i, j] = A[j, i] = 1.0
    L = np.zeros((V, V))
    for i in range(V):
        for j in range(V):
            if A[i, j]:
                L[i, j] = -A[i, j] / np.sqrt(A[i].sum() * A[j].sum())
    return L


def to_dense(index: torch.Tensor, weight: torch.Tensor, V: int) -> np.ndarray:
    out = np.zeros((V, V))
    np.add.at(out, (index[0].numpy(), index[1].numpy()), weight.double().numpy())
    return out


def cases(seed: int):
    rng = np.random.default_rng(seed)
    v, f = random_surface(rng)
    V2, f2 = tetra_pair()
    return {"surface": (len(v), f), "tetra_pair": (V2, f2)}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", ["surface", "tetra_pair"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_dense_reference(seed, case, dtype):
    V, faces = cases(seed)[case]
    index, weight = scaled_laplacian(faces, V, dtype=dtype)
    assert index.dtype == torch.int64 and weight.dtype == dtype
    assert index.shape == (2, weight.shape[0])
    ref = dense_reference(faces, V)
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    np.testing.assert_allclose(to_dense(index, weight, V), ref, atol=tol, rtol=0)
    # exactly the non-zero pattern of the reference: no stored zeros, no duplicates
    assert weight.shape[0] == np.count_nonzero(ref)
    # symmetric, zero diagonal not stored
    assert not (index[0] == index[1]).any()


@pytest.mark.parametrize("seed", [2, 3])
def test_sorted_by_row_then_col(seed):
    V, faces = cases(seed)["surface"]
    index, _ = scaled_laplacian(faces, V)
    key = index[0] * V + index[1]
    assert torch.all(key[1:] > key[:-1])  # strictly increasing: sorted and unique


@pytest.mark.parametrize("seed", [4, 5])
def test_matches_torch_geometric_sym_laplacian(seed):
    from torch_geometric.utils import get_laplacian, to_dense_adj

    V, faces = cases(seed)["surface"]
    edge_index = torch.from_numpy(mesh_edge_index(faces, V))
    ones = torch.ones(edge_index.shape[1], dtype=torch.float64)
    pyg_index, pyg_weight = get_laplacian(edge_index, ones, normalization="sym", num_nodes=V)
    L = to_dense_adj(pyg_index, edge_attr=pyg_weight, max_num_nodes=V)[0].double()  # I - D^-1/2 A D^-1/2
    lambda_max = 2.0
    L_scaled = 2.0 * L / lambda_max - torch.eye(V, dtype=torch.float64)
    index, weight = scaled_laplacian(faces, V, dtype=torch.float64)
    np.testing.assert_allclose(to_dense(index, weight, V), L_scaled.numpy(), atol=1e-12, rtol=0)


def test_edge_index_both_directions_and_face_order_independent():
    rng = np.random.default_rng(6)
    V = 40
    _, faces = random_surface(rng, 8, 5)
    e = mesh_edge_index(faces, V)
    pairs = set(map(tuple, e.T.tolist()))
    ref = set()
    for a, b, c in faces.tolist():
        for i, j in ((a, b), (b, c), (c, a)):
            ref |= {(i, j), (j, i)}
    assert pairs == ref and e.shape[1] == len(ref)
    rotated = np.roll(faces[rng.permutation(len(faces))], 1, axis=1)
    np.testing.assert_array_equal(mesh_edge_index(rotated, V), e)
    np.testing.assert_array_equal(mesh_edge_index(torch.from_numpy(faces), V), e)


def test_isolated_vertex_has_no_entries():
    V, faces = tetra_pair()
    index, weight = scaled_laplacian(faces, V + 1)  # vertex 8 unused
    assert torch.isfinite(weight).all()
    assert not (index == V).any()


def test_bad_input():
    with pytest.raises(HierarchyError, match=r"expected shape \(F, 3\)"):
        scaled_laplacian(np.zeros((4, 2), dtype=np.int64), 4)
    with pytest.raises(HierarchyError, match=r"expected indices in \[0, 3\)"):
        scaled_laplacian(np.array([[0, 1, 3]]), 3)
    with pytest.raises(TypeError, match="faces: expected an integer array, got dtype float64"):
        scaled_laplacian(np.array([[0.0, 1.0, 2.0]]), 3)
    with pytest.raises(TypeError, match="floating"):
        scaled_laplacian(np.array([[0, 1, 2]]), 3, dtype=torch.int64)


def test_degenerate_face_adds_no_diagonal():
    """A face with a repeated index made a self-loop: a diagonal entry and a degree one too high."""
    rng = np.random.default_rng(13)
    _, faces = random_surface(rng, 5, 4)
    V = 20
    a, b = (int(x) for x in faces[0, :2])
    with_degenerate = np.concatenate([faces, [[a, a, b]]])  # only adds edge (a, b), already there
    index, weight = scaled_laplacian(with_degenerate, V, dtype=torch.float64)
    assert not (index[0] == index[1]).any()
    np.testing.assert_allclose(to_dense(index, weight, V), dense_reference(faces, V), atol=1e-15)
    np.testing.assert_array_equal(mesh_edge_index(with_degenerate, V), mesh_edge_index(faces, V))


@pytest.mark.parametrize("num_vertices", [True, 20.7, "20"])
def test_num_vertices_must_be_an_int(num_vertices):
    _, faces = random_surface(np.random.default_rng(14), 5, 4)
    with pytest.raises(TypeError, match="num_vertices: expected an int"):
        scaled_laplacian(faces, num_vertices)
    with pytest.raises(HierarchyError, match="num_vertices: expected an int >= 0, got -1"):
        scaled_laplacian(np.zeros((0, 3), dtype=np.int64), -1)
