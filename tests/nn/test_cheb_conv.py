from __future__ import annotations

import pytest
import torch

from mesh_decoder.nn import ChebConv, laplacian_matmul, laplacian_rows, mesh_edge_index, plain_formulation
from mesh_decoder.nn import cheb_conv as cheb_mod
from mesh_decoder.nn import graph as graph_mod
from tests.nn.reference import (cheb_conv_reference, coo, dense_adjacency, dense_scaled_laplacian, grid_mesh,
                                icosahedron, make_test_hierarchy)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
KERNELS = ["bag", "sparse", "gather"]


def _use_kernel(kernel: str, monkeypatch) -> None:
    """Make ``kernel`` the one every CPU Laplacian product takes (``bag`` is the CPU default)."""
    if kernel != "bag":
        monkeypatch.setattr(cheb_mod, "_use_bag_kernel", lambda x: False)
    if kernel == "gather":
        monkeypatch.setattr(cheb_mod, "_use_sparse_kernel", lambda x: False)


def _graph(kind: str = "grid"):
    verts, faces = grid_mesh(4, 5) if kind == "grid" else icosahedron()
    V = verts.shape[0]
    L = dense_scaled_laplacian(dense_adjacency(faces, V))
    return faces, V, L


def _layer(seed: int, K: int = 4, C: int = 3, O: int = 5, dtype=torch.float64, bias: bool = True, kind="grid"):
    gen = torch.Generator().manual_seed(seed)
    faces, V, L = _graph(kind)
    index, weight = coo(L, dtype)
    conv = ChebConv(C, O, K, index, weight, V, bias=bias).to(dtype)
    with torch.no_grad():
        if conv.bias is not None:
            conv.bias.copy_(torch.randn(O, generator=gen, dtype=dtype))
    x = torch.randn(3, V, C, generator=gen, dtype=dtype)
    return conv, x, torch.tensor(L, dtype=dtype), faces, gen


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("K", [1, 2, 3, 6])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("C,O", [(3, 5), (6, 2)])  # (6, 2): fewer outputs, Clenshaw's recurrence for K > 2
def test_forward_backward_match_dense_reference(kernel, K, dtype, tol, C, O, monkeypatch):
    _use_kernel(kernel, monkeypatch)
    conv, x, L, _, gen = _layer(K, K=K, C=C, O=O, dtype=dtype)
    x.requires_grad_(True)
    out = conv(x)
    ref = cheb_conv_reference(x, L, [lin.weight for lin in conv.lins], conv.bias)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    assert out.is_contiguous()
    go = torch.randn(out.shape, generator=gen, dtype=dtype)
    params = [x, conv.bias] + [lin.weight for lin in conv.lins]
    for g, w in zip(torch.autograd.grad(out, params, go), torch.autograd.grad(ref, params, go)):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ["grid", "ico"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_pyg_chebconv(kind, dtype, tol):
    from torch_geometric.nn import ChebConv as PyGChebConv

    conv, x, _, faces, gen = _layer(20, K=5, kind=kind, dtype=dtype)
    pyg = PyGChebConv(3, 5, K=5, normalization="sym").to(dtype)
    with torch.no_grad():  # different random weights, then copy ours across
        for lin in pyg.lins:
            lin.weight.normal_(generator=gen)
        pyg.bias.normal_(generator=gen)
        for ours, theirs in zip(conv.lins, pyg.lins):
            ours.weight.copy_(theirs.weight)
        conv.bias.copy_(pyg.bias)
    edge_index = mesh_edge_index(faces, x.shape[1])
    for inp in (x, x[1]):  # batched and unbatched
        want = pyg(inp, edge_index, lambda_max=2.0)
        torch.testing.assert_close(conv(inp), want, rtol=tol, atol=tol)


def test_plain_formulation_takes_the_gather_kernel(monkeypatch):
    """plain_formulation() is the reference the fast kernels are tested against: no sparse tensors in it."""
    conv, x, L, _, _ = _layer(int(torch.randint(1 << 30, ())))
    monkeypatch.setattr(torch.sparse, "mm", lambda *a: pytest.fail("torch.sparse.mm inside plain_formulation"))
    with plain_formulation():
        got = conv(x)
    want = cheb_conv_reference(x, L, [lin.weight for lin in conv.lins], conv.bias)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_laplacian_matmul_kernels_agree():
    gen = torch.Generator().manual_seed(21)
    _, V, L = _graph("ico")
    index, weight = coo(L, torch.float64)
    X = torch.randn(V, 7, generator=gen, dtype=torch.float64)
    dense = torch.tensor(L) @ X
    torch.testing.assert_close(laplacian_matmul(index, weight, V, X), dense)
    # float16 has no sparse kernel on CPU: the gather path runs
    got = laplacian_matmul(index, weight, V, X.half())
    torch.testing.assert_close(got.double(), dense, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("kernel", KERNELS)
def test_laplacian_matmul_non_symmetric(kernel, monkeypatch):
    """Rows and columns are not interchangeable: a random non-symmetric matrix, with an
    empty row and an empty column; first and second derivatives."""
    _use_kernel(kernel, monkeypatch)
    gen = torch.Generator().manual_seed(31)
    V = 9
    M = torch.randn(V, V, generator=gen, dtype=torch.float64) * (torch.rand(V, V, generator=gen) < 0.3)
    M[0, 1], M[1, 0] = 1.5, 0.0  # certainly not symmetric
    M[4, :] = 0.0  # a vertex with no entries in its row ...
    M[:, 6] = 0.0  # ... and one no row reads
    index, weight = coo(M.numpy(), torch.float64)
    X = torch.randn(V, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    out = laplacian_matmul(index, weight, V, X)
    torch.testing.assert_close(out, M @ X)
    go = torch.randn(V, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(out, X, go, create_graph=True)
    torch.testing.assert_close(gx, M.T @ go)
    gg = torch.randn(V, 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(gx, go, gg)[0], M @ gg)  # the product by M again


def test_laplacian_rows_are_the_compressed_rows_and_the_transpose():
    gen = torch.Generator().manual_seed(32)
    V = 7
    M = torch.randn(V, V, generator=gen, dtype=torch.float64) * (torch.rand(V, V, generator=gen) < 0.4)
    M[2, :] = 0.0
    index, weight = coo(M.numpy(), torch.float64)
    rows = laplacian_rows(index, weight, V, torch.float32)
    assert rows.weight.dtype == rows.t_weight.dtype == torch.float32
    for offsets, col, w, dense in ((rows.offsets, rows.col, rows.weight, M),
                                   (rows.t_offsets, rows.t_col, rows.t_weight, M.T)):
        ends = torch.cat([offsets[1:], torch.tensor([col.numel()])])
        rebuilt = torch.zeros(V, V, dtype=torch.float64)
        for i in range(V):
            for e in range(int(offsets[i]), int(ends[i])):
                rebuilt[i, col[e]] += float(w[e])
        torch.testing.assert_close(rebuilt, dense.float().double())


def test_empty_laplacian_gives_zero_products():
    X = torch.randn(5, 3)
    out = laplacian_matmul(torch.zeros(2, 0, dtype=torch.int64), torch.zeros(0), 5, X)
    assert torch.equal(out, torch.zeros(5, 3))


def test_bag_kernel_follows_laplacian_loaded_in_place():
    """The CPU kernel keeps the compressed rows; loading another Laplacian of the same
    size into the buffers (``load_state_dict`` copies) must be seen."""
    conv, x, L, _, gen = _layer(33, K=4, dtype=torch.float64)
    before = conv(x)
    scaled = {**conv.state_dict(), "laplacian_weight": conv.laplacian_weight * 0.5}
    conv.load_state_dict(scaled)
    ref = cheb_conv_reference(x, L * 0.5, [lin.weight for lin in conv.lins], conv.bias)
    torch.testing.assert_close(conv(x), ref, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(conv(x), before)


def test_duplicate_entries_are_summed():
    conv, x, L, _, gen = _layer(22, K=3)
    index, weight = conv.laplacian_index, conv.laplacian_weight
    frac = torch.rand(weight.shape, generator=gen, dtype=weight.dtype)
    perm = torch.randperm(2 * index.shape[1], generator=gen)
    dup_index = torch.cat([index, index], 1)[:, perm]
    dup_weight = torch.cat([weight * frac, weight * (1 - frac)])[perm]
    other = ChebConv(3, 5, 3, dup_index, dup_weight, conv.num_vertices).double()
    assert torch.equal(other.laplacian_index, index)
    torch.testing.assert_close(other.laplacian_weight, weight, rtol=1e-12, atol=1e-12)
    params = {k: v for k, v in conv.state_dict().items() if not k.startswith("laplacian_")}
    other.load_state_dict(params, strict=False)
    torch.testing.assert_close(other(x), conv(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("C,O", [(2, 2), (3, 2)])  # (3, 2): Clenshaw's recurrence
def test_gradcheck_float64(C, O):
    conv, x, _, _, _ = _layer(23, K=3, C=C, O=O, kind="ico")
    x = x[:2].requires_grad_(True)
    w = [lin.weight for lin in conv.lins]

    # parameters passed functionally so that gradcheck perturbs them too
    from torch.func import functional_call
    names = ["bias"] + [f"lins.{k}.weight" for k in range(len(w))]

    def call(x, b, *ws):
        return functional_call(conv, dict(zip(names, (b, *ws))), (x,))

    assert torch.autograd.gradcheck(call, (x, conv.bias, *w))
    assert torch.autograd.gradgradcheck(call, (x, conv.bias, *w))


def test_batched_equals_per_sample_and_unbatched():
    conv, x, *_ = _layer(24, dtype=torch.float32)
    out = conv(x)
    for b in range(x.shape[0]):
        torch.testing.assert_close(conv(x[b]), out[b], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(conv(x[:1]).squeeze(0), conv(x[0]), rtol=0, atol=0)


def test_state_dict_round_trip_includes_laplacian():
    conv, x, *_ = _layer(25, dtype=torch.float32)
    sd = conv.state_dict()
    assert {"laplacian_index", "laplacian_weight", "bias", "lins.0.weight"} <= set(sd)
    assert not any(key.startswith("rows_") for key in sd)  # derived buffers are not saved
    half = conv.laplacian_weight * 0.5
    fresh = ChebConv(3, 5, 4, conv.laplacian_index, half, conv.num_vertices)
    assert not torch.allclose(fresh(x), conv(x))
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.laplacian_weight, conv.laplacian_weight)
    assert torch.equal(fresh(x), conv(x))


def test_extra_repr_and_repr():
    conv = _layer(26, K=6, C=16, O=32)[0]
    assert conv.extra_repr() == "16, 32, K=6"
    assert repr(conv) == "ChebConv(16, 32, K=6)"
    nob = _layer(26, K=2, bias=False)[0]
    assert repr(nob) == "ChebConv(3, 5, K=2, bias=False)" and nob.bias is None


def test_from_hierarchy():
    h = make_test_hierarchy(seed=27)
    conv = ChebConv.from_hierarchy(2, 3, 4, h, 1)
    lvl = h.levels[1]
    assert conv.num_vertices == lvl.num_vertices and conv.K == 4
    assert torch.equal(conv.laplacian_weight, lvl.laplacian_weight)
    with pytest.raises(ValueError, match=r"level: expected an int in \[0, 1\], got -1"):
        ChebConv.from_hierarchy(2, 3, 4, h, -1)


def test_input_errors_name_expected_and_actual():
    conv, x, *_ = _layer(28, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"expected shape \(B, 20, 3\), got \(3, 19, 3\)"):
        conv(x[:, :19])
    with pytest.raises(ValueError, match=r"expected shape \(20, 3\), got \(20, 4\)"):
        conv(torch.randn(20, 4))
    with pytest.raises(ValueError, match=r"expected shape \(B, 20, 3\) or \(20, 3\), got \(60,\)"):
        conv(x.reshape(-1, 1).squeeze(1)[:60])
    with pytest.raises(TypeError, match="expected dtype torch.float32, got torch.int32"):
        conv(x.int())
    with pytest.raises(ValueError, match="expected a tensor on cpu, got one on meta"):
        conv(x.to("meta"))


def test_constructor_errors():
    _, V, L = _graph()
    index, weight = coo(L)
    with pytest.raises(ValueError, match=r"laplacian_weight: expected shape \(%d\), got \(3,\)" % index.shape[1]):
        ChebConv(2, 2, 2, index, weight[:3], V)
    with pytest.raises(ValueError, match=r"laplacian_index: expected vertex indices in \[0, 10\), got range \[0, 19\]"):
        ChebConv(2, 2, 2, index, weight, 10)
    with pytest.raises(TypeError, match="laplacian_index: expected dtype torch.int64, got torch.int32"):
        ChebConv(2, 2, 2, index.int(), weight, V)
    with pytest.raises(ValueError, match="K: expected a positive int, got 0"):
        ChebConv(2, 2, 0, index, weight, V)
    bad = weight.clone()
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="laplacian_weight: expected finite values"):
        ChebConv(2, 2, 2, index, bad, V)
    with pytest.raises(TypeError, match=r"bias: expected True or False, got 'no' \(str\)"):
        ChebConv(2, 2, 2, index, weight, V, bias="no")
    assert ChebConv(2, 2, 2, index, weight, V, bias=False).bias is None


@pytest.mark.parametrize("device", DEVICES + ["meta"])
def test_to_device_moves_buffers(device):
    conv, x, *_ = _layer(29, dtype=torch.float32)
    want = conv(x)
    moved = conv.to(device)
    assert moved.laplacian_index.device.type == device and moved.laplacian_weight.device.type == device
    assert all(buf.device.type == device for name, buf in moved.named_buffers() if name.startswith("rows_"))
    out = moved(x.to(device))
    assert out.shape == want.shape
    if device != "meta":
        torch.testing.assert_close(out.cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    conv, x, _, _, gen = _layer(30, K=3, dtype=torch.float32)
    x.requires_grad_(True)
    compiled = torch.compile(conv, fullgraph=True)
    out = compiled(x)
    ref = conv(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    go = torch.randn(out.shape, generator=gen)
    torch.testing.assert_close(torch.autograd.grad(out, x, go)[0], torch.autograd.grad(ref, x, go)[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("C,O", [(3, 5), (6, 2)])
def test_compiled_inference_takes_the_bag_kernel(C, O):
    """Compiled without autograd on the CPU, the Laplacian products stay embedding_bag
    (the compressed rows are buffers, graph inputs) and equal the dense reference."""
    torch._dynamo.reset()
    conv, x, L, _, _ = _layer(34, K=4, C=C, O=O, dtype=torch.float32)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with torch.inference_mode():
        out = torch.compile(conv, backend=backend, fullgraph=True)(x)
    ref = cheb_conv_reference(x, L, [lin.weight for lin in conv.lins], conv.bias)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    targets = " ".join(str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function")
    assert targets.count("embedding_bag") == conv.K - 1
    assert "scatter_add" not in targets


@pytest.mark.parametrize("C,O", [(3, 5), (6, 2)])
@pytest.mark.parametrize("grad", [True, False])
def test_cpu_autocast_bfloat16(C, O, grad):
    """Under bfloat16 autocast the products take autocast's dtypes (nothing accumulates in
    place across dtypes); the result is close to float32, with and without autograd."""
    conv, x, _, _, _ = _layer(35, K=4, C=C, O=O, dtype=torch.float32)
    want = conv(x)
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
        got = conv(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.detach(), rtol=0.05, atol=0.05)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")  # vmap fallbacks
@pytest.mark.parametrize("kernel", ["bag", "gather", "sparse", "plain"])
@pytest.mark.parametrize("C,O", [(3, 4), (5, 2)])
def test_torch_func_transforms_match_the_reference(kernel, C, O, monkeypatch):
    """vmap, jacrev, jvp and hessian through the layer, as PyTorch users apply them.

    ``sparse`` (the CUDA kernel, here on the CPU) has no vmap or forward-mode rule, so
    it steps aside under the transforms; ``plain``: inside plain_formulation().
    """
    if kernel == "plain":
        monkeypatch.setattr(graph_mod, "_PLAIN_FORMULATION", True)
    else:
        _use_kernel(kernel, monkeypatch)
    conv, x, L, _, gen = _layer(int(torch.randint(1 << 30, ())), K=4, C=C, O=O)

    def ref(a):
        return cheb_conv_reference(a.unsqueeze(0), L, [lin.weight for lin in conv.lins], conv.bias).squeeze(0)

    tangent = torch.randn(x[0].shape, generator=gen, dtype=x.dtype)
    torch.testing.assert_close(torch.vmap(conv)(x), torch.vmap(ref)(x))
    torch.testing.assert_close(torch.func.jacrev(conv)(x[0]), torch.func.jacrev(ref)(x[0]))
    torch.testing.assert_close(torch.func.jvp(conv, (x[0],), (tangent,))[1], torch.func.jvp(ref, (x[0],), (tangent,))[1])
    hess = torch.func.hessian(lambda a: conv(a).sin().sum())(x[0])
    torch.testing.assert_close(hess, torch.func.hessian(lambda a: ref(a).sin().sum())(x[0]))


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _count_bag_products(monkeypatch) -> list[int]:
    """Switch the bag kernel on for CUDA and count its products."""
    monkeypatch.setattr(cheb_mod, "BAG_ON_CUDA", True)
    calls = [0]
    product = cheb_mod.bag_product

    def counted(*args):
        calls[0] += 1
        return product(*args)

    monkeypatch.setattr(cheb_mod, "bag_product", counted)
    return calls


@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("C,O", [(3, 5), (6, 2)])
def test_bag_on_cuda_matches_dense_reference(dtype, tol, C, O, monkeypatch):
    """With BAG_ON_CUDA the CUDA products are embedding_bag, forward and backward."""
    calls = _count_bag_products(monkeypatch)
    conv, x, L, _, gen = _layer(37, K=4, C=C, O=O, dtype=torch.float64)
    x.requires_grad_(True)
    ref = cheb_conv_reference(x, L, [lin.weight for lin in conv.lins], conv.bias)
    conv = conv.to("cuda", dtype)
    xc = x.detach().to("cuda", dtype).requires_grad_(True)
    out = conv(xc)
    assert calls[0] == conv.K - 1
    torch.testing.assert_close(out.double().cpu(), ref, rtol=tol, atol=tol)
    if dtype == torch.float32:
        go = torch.randn(out.shape, generator=gen, dtype=torch.float64)
        want = torch.autograd.grad(ref, x, go)[0]
        got = torch.autograd.grad(out, xc, go.to("cuda", dtype))[0]
        assert calls[0] == 2 * (conv.K - 1)
        torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol)


@needs_cuda
def test_cheb_decoder_bag_on_cuda_equals_default_and_captures(monkeypatch):
    """ChebDecoder's vertex-major path on CUDA equals the sparse.mm path, replayed in a CUDA graph."""
    from mesh_decoder.nn import ChebDecoder

    hierarchy = make_test_hierarchy(seed=38)
    dec = ChebDecoder.from_hierarchy(hierarchy, K=4, channels=(8,), latent_size=5).to("cuda").eval()
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(39)).to("cuda")
    with torch.inference_mode():
        want = dec(z)
    calls = _count_bag_products(monkeypatch)
    static_z = z.clone()
    with torch.inference_mode():
        got = dec(static_z)
        assert calls[0] > 0
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        graph = torch.cuda.CUDAGraph()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            dec(static_z)  # warm-up off the default stream, as CUDA graph capture wants
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph):
            static_out = dec(static_z)
        z2 = torch.randn(3, 5, generator=torch.Generator().manual_seed(40)).to("cuda")
        static_z.copy_(z2)
        graph.replay()
        torch.cuda.synchronize()
        monkeypatch.setattr(cheb_mod, "BAG_ON_CUDA", False)
        torch.testing.assert_close(static_out, dec(z2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("C,O", [(3, 4), (5, 2)])
def test_forward_mode_ad_under_no_grad_matches_the_reference(C, O):
    """Forward-mode AD runs without grad mode too: torch.func.jvp and dual tensors of
    torch.autograd.forward_ad under no_grad (embedding_bag has no forward-mode rule)."""
    import torch.autograd.forward_ad as fwAD

    conv, x, L, _, gen = _layer(int(torch.randint(1 << 30, ())), K=4, C=C, O=O)

    def ref(a):
        return cheb_conv_reference(a.unsqueeze(0), L, [lin.weight for lin in conv.lins], conv.bias).squeeze(0)

    tangent = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    want = torch.func.jvp(ref, (x[0],), (tangent[0],))[1]
    with torch.no_grad():
        torch.testing.assert_close(torch.func.jvp(conv, (x[0],), (tangent[0],))[1], want)
        with fwAD.dual_level():
            out = conv(fwAD.make_dual(x, tangent))
            got = fwAD.unpack_dual(out).tangent
    torch.testing.assert_close(got, torch.func.vmap(lambda a, t: torch.func.jvp(ref, (a,), (t,))[1])(x, tangent))


def test_laplacian_rows_refuse_a_matrix_they_would_misread():
    """Compressed rows assume (row, col) order and indices below V; otherwise the product was silently wrong."""
    gen = torch.Generator().manual_seed(81)
    conv = ChebConv.from_hierarchy(3, 4, 3, make_test_hierarchy(seed=81), 0)
    index, weight, V = conv.laplacian_index, conv.laplacian_weight, conv.num_vertices
    perm = torch.randperm(index.shape[1], generator=gen)
    x = torch.randn(V, 5, generator=gen)
    with pytest.raises(ValueError, match=r"laplacian_index: expected entries sorted by \(row, col\) without repeats"):
        laplacian_matmul(index[:, perm], weight[perm], V, x)
    with pytest.raises(ValueError, match=rf"laplacian_index: expected vertex indices in \[0, {V - 1}\), got"):
        laplacian_rows(index, weight, V - 1)
    with pytest.raises(TypeError, match="laplacian_weight: expected dtype"):
        laplacian_rows(index, weight.long(), V)
    state = conv.state_dict()
    with pytest.raises(ValueError, match="laplacian_index: expected entries sorted"):
        ChebConv.from_hierarchy(3, 4, 3, make_test_hierarchy(seed=81), 0).load_state_dict(
            {**state, "laplacian_index": index[:, perm], "laplacian_weight": weight[perm]})
    with pytest.raises(ValueError, match=rf"laplacian_index: expected vertex indices in \[0, {V}\), got range \[1, {V}\]"):
        ChebConv.from_hierarchy(3, 4, 3, make_test_hierarchy(seed=81), 0).load_state_dict(
            {**state, "laplacian_index": index + 1})


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("C,O", [(3, 4), (4, 4), (5, 2)])  # (5, 2): Clenshaw's recurrence
def test_jit_trace_passes_its_own_check_and_matches_eager(C, O, grad):
    """``torch.jit.trace`` re-runs the module with grad off to check the recorded graph: with grad on or
    off, the trace records one graph (no in-place step chosen by grad mode) and it equals the eager layer."""
    conv, x, *_ = _layer(60, K=3, C=C, O=O, dtype=torch.float32)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(conv, (x,))  # check_trace on: raises if the graphs differ
        x2 = torch.randn(2, x.shape[1], C)
        torch.testing.assert_close(traced(x2), conv(x2), rtol=1e-5, atol=1e-6)
