"""Mesh losses against slow references written from their definitions (loops and dense matrices)."""

import itertools

import numpy as np
import pytest
import torch

import mesh_decoder.losses as losses
from mesh_decoder.losses import (MeshTopology, chamfer_distance, mesh_edge_loss, mesh_edges, mesh_laplacian_smoothing,
                                 mesh_normal_consistency)
from tests.conftest import random_grid_mesh


@pytest.fixture
def rng():
    return np.random.default_rng(20261207)


def _batch(rng, B=3, rows=5, cols=6, dtype=torch.float64):
    """A random grid mesh's faces and ``B`` fresh random vertex sets on it (the grid plus noise: no face is
    degenerate)."""
    mesh = random_grid_mesh(rng, rows, cols)
    base = torch.from_numpy(mesh.vertices)
    x = base + torch.from_numpy(rng.normal(scale=0.2, size=(B, *base.shape)))  # (B, V, 3)
    return x.to(dtype), torch.from_numpy(mesh.faces)


def _edge_set(faces):
    return sorted({tuple(sorted((int(f[a]), int(f[b])))) for f in faces for a, b in ((0, 1), (1, 2), (2, 0))})


# ------------------------------------------------------------------ references
def chamfer_reference(x, y, nx=None, ny=None, single=False):
    out = []
    for b in range(x.shape[0]):
        px = x[b, : (x.shape[1] if nx is None else int(nx[b]))]
        py = y[b, : (y.shape[1] if ny is None else int(ny[b]))]
        d = ((px[:, None, :] - py[None, :, :]) ** 2).sum(-1)  # (P1, P2)
        loss = d.min(dim=1).values.mean()
        if not single:
            loss = loss + d.min(dim=0).values.mean()
        out.append(loss)
    return torch.stack(out)


def edge_reference(x, faces, target):
    edges = _edge_set(faces.tolist())
    out = []
    for b in range(x.shape[0]):
        out.append(torch.stack([((x[b, i] - x[b, j]).norm() - target) ** 2 for i, j in edges]).mean())
    return torch.stack(out)


def _cot(p, q, r):
    """Cotangent of the angle at p of triangle p, q, r (twice the area floored as PyTorch3D floors it)."""
    u, v = q - p, r - p
    return float(torch.dot(u, v) / max(float(torch.linalg.cross(u, v).norm()), 2e-6))


def laplacian_reference(x, faces, method):
    B, V, _ = x.shape
    F = faces.tolist()
    out = []
    for b in range(B):
        xb = x[b]
        W = torch.zeros(V, V, dtype=x.dtype)
        area = torch.zeros(V, dtype=x.dtype)
        for f in F:
            if method == "uniform":
                for i, j in itertools.permutations(f, 2):
                    W[i, j] = 1.0
            else:
                for k in range(3):
                    p, q, r = f[k], f[(k + 1) % 3], f[(k + 2) % 3]
                    c = _cot(xb[p].detach(), xb[q].detach(), xb[r].detach())
                    W[q, r] += c
                    W[r, q] += c
                a = (torch.linalg.cross(xb[f[1]] - xb[f[0]], xb[f[2]] - xb[f[0]]).norm().detach() / 2).clamp(min=1e-6)
                for i in f:
                    area[i] += a
        deg = W.sum(1, keepdim=True)
        if method == "cotcurv":
            delta = (W @ xb - deg * xb) / (4 * area[:, None])
        else:
            delta = (W @ xb) / deg - xb
        out.append(delta.norm(dim=1).mean())
    return torch.stack(out)


def normal_reference(x, faces):
    by_edge = {}
    for f in faces.tolist():
        for k in range(3):
            e = tuple(sorted((f[k], f[(k + 1) % 3])))
            by_edge.setdefault(e, []).append(f[(k + 2) % 3])
    out = []
    for b in range(x.shape[0]):
        terms = []
        for (v0, v1), thirds in sorted(by_edge.items()):
            for a, c in itertools.combinations(thirds, 2):
                e = x[b, v1] - x[b, v0]
                n0 = torch.linalg.cross(e, x[b, a] - x[b, v0])
                n1 = torch.linalg.cross(x[b, c] - x[b, v0], e)
                terms.append(1 - torch.dot(n0, n1) / (n0.norm() * n1.norm()))
        out.append(torch.stack(terms).mean())
    return torch.stack(out)


# ------------------------------------------------------------------ agreement, forward and backward
def _compare(fast, slow, inputs):
    """Forward and backward of ``fast`` and ``slow`` (both ``(B,)``) agree for a random cotangent."""
    for t in inputs:
        t.requires_grad_(True)
    got, want = fast(*inputs), slow(*inputs)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    w = torch.rand_like(got)
    g_fast = torch.autograd.grad((got * w).sum(), inputs)
    g_slow = torch.autograd.grad((want * w).sum(), inputs)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_both_nearest_neighbour_searches_match_brute_force(rng, monkeypatch):
    """The k-d tree (CPU) and the blocked distance matrix (GPUs, run here on the CPU) find the same points."""
    monkeypatch.setattr(losses, "_CHAMFER_BLOCK", 64)  # several blocks of the distance matrix
    x = torch.from_numpy(rng.normal(size=(3, 41, 3)))
    y = torch.from_numpy(rng.normal(size=(3, 29, 3)))
    nx, ny = torch.tensor([41, 5, 30]), torch.tensor([29, 29, 11])
    want = torch.zeros(3, 41, dtype=torch.long)
    for b in range(3):
        d = ((x[b, : nx[b], None] - y[b, None, : ny[b]]) ** 2).sum(-1)  # (n, m)
        want[b, : nx[b]] = d.argmin(dim=1)
    assert torch.equal(losses._nearest_tree(x, y, nx, ny), want)
    assert torch.equal(losses._nearest_blocks(x, y, nx, ny), want)


@pytest.mark.parametrize("single", [False, True])
def test_chamfer_matches_brute_force(rng, single):
    x = torch.from_numpy(rng.normal(size=(3, 37, 3)))
    y = torch.from_numpy(rng.normal(size=(3, 23, 3)))
    _compare(lambda a, b: chamfer_distance(a, b, single_directional=single, reduction="none"),
             lambda a, b: chamfer_reference(a, b, single=single), [x, y])


def test_chamfer_with_lengths_ignores_the_padding(rng):
    x = torch.from_numpy(rng.normal(size=(3, 20, 2)))
    y = torch.from_numpy(rng.normal(size=(3, 15, 2)))
    nx, ny = torch.tensor([20, 7, 13]), torch.tensor([1, 15, 9])
    _compare(lambda a, b: chamfer_distance(a, b, nx, ny, reduction="none"),
             lambda a, b: chamfer_reference(a, b, nx, ny), [x, y])
    pad = chamfer_distance(x, y, nx, ny, reduction="none")
    x2, y2 = x.detach().clone(), y.detach().clone()
    x2[1, 7:] = 1e6  # padding may hold anything
    y2[0, 1:] = -1e6
    torch.testing.assert_close(chamfer_distance(x2, y2, nx, ny, reduction="none"), pad.detach())


def test_chamfer_reductions_and_identity(rng):
    x = torch.from_numpy(rng.normal(size=(4, 30, 3)))
    y = torch.from_numpy(rng.normal(size=(4, 25, 3)))
    per = chamfer_distance(x, y, reduction="none")
    torch.testing.assert_close(chamfer_distance(x, y), per.mean())
    torch.testing.assert_close(chamfer_distance(x, y, reduction="sum"), per.sum())
    perm = torch.from_numpy(rng.permutation(30))
    assert float(chamfer_distance(x, x[:, perm])) == 0.0
    # points at least 0.8 apart moved by less than 0.2: each one's nearest is its own copy
    grid = torch.stack(torch.meshgrid(*[torch.arange(3.0, dtype=torch.float64)] * 3, indexing="ij"), -1).view(1, 27, 3)
    grid = grid + torch.from_numpy(rng.uniform(-0.1, 0.1, size=(2, 27, 3)))
    shift = torch.from_numpy(rng.normal(size=3))
    shift = shift / shift.norm() * 0.15
    torch.testing.assert_close(chamfer_distance(grid, grid + shift), 2 * shift.pow(2).sum())


def test_edge_loss_matches_the_edge_set(rng):
    x, faces = _batch(rng)
    target = float(rng.uniform(0.5, 2.0))
    _compare(lambda v: mesh_edge_loss(v, faces, target, reduction="none"),
             lambda v: edge_reference(v, faces, target), [x])
    assert mesh_edges(faces).tolist() == [list(e) for e in _edge_set(faces.tolist())]


@pytest.mark.parametrize("method", ["uniform", "cot", "cotcurv"])
def test_laplacian_smoothing_matches_dense_matrices(rng, method):
    x, faces = _batch(rng, B=2, rows=4, cols=5)
    _compare(lambda v: mesh_laplacian_smoothing(v, faces, method, reduction="none"),
             lambda v: laplacian_reference(v, faces, method), [x])


@pytest.mark.parametrize("winding", ["as built", "flipped"])
def test_normal_consistency_matches_pairs_and_ignores_winding(rng, winding):
    x, faces = _batch(rng)
    if winding == "flipped":
        flip = torch.from_numpy(rng.random(faces.shape[0]) < 0.5)
        faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    _compare(lambda v: mesh_normal_consistency(v, faces, reduction="none"),
             lambda v: normal_reference(v, faces), [x])


def test_normal_consistency_counts_every_pair_on_a_non_manifold_edge(rng):
    x, faces = _batch(rng, B=2, rows=3, cols=3)
    V = x.shape[1]
    extra_vertex = x.mean(dim=1, keepdim=True) + torch.from_numpy(rng.normal(size=(2, 1, 3)))
    x = torch.cat([x, extra_vertex], dim=1)  # (B, V+1, 3)
    i, j = (int(v) for v in faces[0, :2])
    faces = torch.cat([faces, torch.tensor([[i, j, V]])])  # a third face on edge (i, j)
    _compare(lambda v: mesh_normal_consistency(v, faces, reduction="none"),
             lambda v: normal_reference(v, faces), [x])


def test_normal_consistency_is_zero_flat_and_two_folded():
    x = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    assert float(mesh_normal_consistency(x, faces)) == pytest.approx(0.0, abs=1e-12)
    folded = x.clone()
    folded[0, 3] = torch.tensor([0.2, 0.2, 0.0])  # the second face now lies back over the first
    assert float(mesh_normal_consistency(folded, faces)) == pytest.approx(2.0, abs=1e-9)


@pytest.mark.parametrize("loss", ["edge", "uniform", "cot", "normal", "chamfer"])
def test_batched_equals_per_mesh_and_unbatched(rng, loss):
    x, faces = _batch(rng, B=3)
    y = x.flip(1) + 0.1
    fn = {
        "edge": lambda v: mesh_edge_loss(v, faces, reduction="none"),
        "uniform": lambda v: mesh_laplacian_smoothing(v, faces, reduction="none"),
        "cot": lambda v: mesh_laplacian_smoothing(v, faces, "cot", reduction="none"),
        "normal": lambda v: mesh_normal_consistency(v, faces, reduction="none"),
        "chamfer": lambda v: chamfer_distance(v, y[: v.shape[0]] if v.shape[0] == 3 else y[idx : idx + 1],
                                              reduction="none"),
    }[loss]
    batched = fn(x)
    for idx in range(3):
        torch.testing.assert_close(fn(x[idx : idx + 1]), batched[idx : idx + 1])
    if loss != "chamfer":
        single = {"edge": mesh_edge_loss, "uniform": mesh_laplacian_smoothing, "normal": mesh_normal_consistency,
                  "cot": lambda v, f: mesh_laplacian_smoothing(v, f, "cot")}[loss](x[1], faces)
        torch.testing.assert_close(single, batched[1])


def test_gradcheck_float64(rng):
    x, faces = _batch(rng, B=2, rows=3, cols=4)
    y = torch.from_numpy(rng.normal(size=(2, 9, 3)))
    x.requires_grad_(True)
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: mesh_edge_loss(v, faces, 0.7), (x,))
    assert torch.autograd.gradcheck(lambda v: mesh_laplacian_smoothing(v, faces), (x,))
    assert torch.autograd.gradcheck(lambda v: mesh_normal_consistency(v, faces), (x,))
    assert torch.autograd.gradcheck(lambda a, b: chamfer_distance(a, b), (x, y))


@pytest.mark.parametrize("method", ["cot", "cotcurv"])
def test_a_zero_area_face_gives_finite_cotangent_losses_and_gradients(rng, method):
    """A collinear face and a collapsed edge had made both cotangent losses and every gradient NaN."""
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [2, 4, 3]])
    x = torch.from_numpy(rng.normal(size=(3, 5, 3)))  # (B, V, 3)
    x[0, 1] = (x[0, 0] + x[0, 2]) / 2  # face 0 collinear in mesh 0
    x[1, 4] = x[1, 2]  # face 2 with a zero-length edge in mesh 1
    x.requires_grad_(True)
    loss = mesh_laplacian_smoothing(x, faces, method, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, laplacian_reference(x, faces, method))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_chamfer_of_a_millimetre_scale_face_in_16_bits_is_finite(rng, dtype):
    """A float16 sum of 600 squared distances of about 250 mm^2 overflowed: inf where the answer, about 250,
    fits in float16."""
    x = torch.from_numpy(rng.normal(scale=60.0, size=(2, 600, 3)))  # (B, P, 3), a face's size in mm
    y = x + 15.0 + torch.from_numpy(rng.normal(scale=0.5, size=x.shape))  # the scan, shifted 15 mm
    want = chamfer_distance(x, y, reduction="none")  # (B,) float64
    xs = x.to(dtype).requires_grad_(True)
    got = chamfer_distance(xs, y.to(dtype), reduction="none")
    assert got.dtype == dtype and torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=2e-2, atol=0.0)
    (grad,) = torch.autograd.grad(got.sum(), xs)
    assert grad.dtype == dtype and torch.isfinite(grad).all()


def test_float32_agrees_with_float64(rng):
    x, faces = _batch(rng)
    for fn in (lambda v: mesh_laplacian_smoothing(v, faces, "cotcurv"), lambda v: mesh_normal_consistency(v, faces),
               lambda v: chamfer_distance(v, v.flip(1) + 0.3), lambda v: mesh_edge_loss(v, faces)):
        torch.testing.assert_close(fn(x.float()).double(), fn(x), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("call, error, message", [
    (lambda x, f: mesh_edge_loss(x.numpy(), f), TypeError, "vertices: expected a torch.Tensor, got ndarray"),
    (lambda x, f: mesh_edge_loss(x[..., :2], f), ValueError, r"vertices: expected shape \(B, N, 3\)"),
    (lambda x, f: mesh_edge_loss(x[None], f), ValueError, r"vertices: expected shape \(V, 3\) or \(B, V, 3\)"),
    (lambda x, f: mesh_edge_loss(x.long(), f), TypeError, "vertices: expected a floating dtype"),
    (lambda x, f: mesh_edge_loss(x, f.float()), TypeError, "faces: expected integer indices"),
    (lambda x, f: mesh_edge_loss(x, f[:, :2]), ValueError, r"faces: expected shape \(F, 3\)"),
    (lambda x, f: mesh_edge_loss(x, f + x.shape[1]), ValueError, r"faces: expected indices in \[0, "),
    (lambda x, f: mesh_edge_loss(x, f[:0]), ValueError, "faces: expected at least one face"),
    (lambda x, f: mesh_edge_loss(x, f, target_length=float("nan")), TypeError, "target_length: expected a finite"),
    (lambda x, f: mesh_edge_loss(x, f, reduction="avg"), ValueError, "reduction: expected one of"),
    (lambda x, f: mesh_laplacian_smoothing(x, f, "cotan"), ValueError, r"method: expected one of \['uniform'"),
    (lambda x, f: mesh_normal_consistency(x, f[:1]), ValueError, "faces: expected two faces sharing an edge"),
    (lambda x, f: chamfer_distance(x, x[:2]), ValueError, r"y: expected shape \(3, P2, 3\) to match x"),
    (lambda x, f: chamfer_distance(x, x, torch.tensor([1.0, 2.0, 3.0])), TypeError, "x_lengths: expected an integer"),
    (lambda x, f: chamfer_distance(x, x, torch.tensor([1, 2])), ValueError, r"x_lengths: expected shape \(3,\)"),
    (lambda x, f: chamfer_distance(x, x, None, torch.tensor([0, 2, 3])), ValueError,
     r"y_lengths: expected lengths in \[1, "),
    (lambda x, f: chamfer_distance(x, x[:, :0]), ValueError, "y: expected at least one point per set"),
    (lambda x, f: chamfer_distance(x[:0], x[:0]), ValueError, r"x: expected at least one set, got an empty batch"),
    (lambda x, f: mesh_normal_consistency(x[:0], f), ValueError, r"vertices: expected at least one set, got an empty"),
])
def test_bad_input_is_named(rng, call, error, message):
    x, faces = _batch(rng)
    with pytest.raises(error, match=message):
        call(x, faces)


@pytest.mark.parametrize("method", ["uniform", "cot", "cotcurv"])
def test_a_vertex_on_no_face_adds_nothing_to_the_laplacian(rng, method):
    x, faces = _batch(rng, B=2)
    V = x.shape[1]
    lonely = torch.cat([x, torch.from_numpy(rng.normal(size=(2, 1, 3))) * 50], dim=1)  # (B, V+1, 3)
    want = mesh_laplacian_smoothing(x, faces, method, reduction="none") * V / (V + 1)  # mean over V+1 vertices
    torch.testing.assert_close(mesh_laplacian_smoothing(lonely, faces, method, reduction="none"), want)


def test_a_mesh_topology_gives_the_same_losses(rng):
    x, faces = _batch(rng)
    topo = MeshTopology(faces)
    assert repr(topo) == (f"MeshTopology(faces={faces.shape[0]}, edges={len(_edge_set(faces.tolist()))}, "
                          f"face_pairs={topo.pair_edge.shape[0]})")
    assert {name for name, _ in topo.named_buffers()} == {"faces", "edges", "pair_edge", "pair_third"}
    for fn in (lambda f: mesh_edge_loss(x, f, 0.3), lambda f: mesh_laplacian_smoothing(x, f),
               lambda f: mesh_laplacian_smoothing(x, f, "cotcurv"), lambda f: mesh_normal_consistency(x, f)):
        torch.testing.assert_close(fn(topo), fn(faces), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"faces: expected indices in \[0, 5\), got range \[0, "):
        mesh_edge_loss(x[:, :5], topo)
