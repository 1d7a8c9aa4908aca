from __future__ import annotations

import pytest
import torch

from mesh_decoder.nn import DownSample, UpSample
from tests.nn.reference import down_sample_reference, make_test_hierarchy, random_up_operator, up_sample_reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

V_IN, V_OUT_DOWN, V_OUT_UP, C = 23, 9, 31, 4


def _down(seed: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(V_IN, generator=gen)[:V_OUT_DOWN]
    x = torch.randn(3, V_IN, C, generator=gen, dtype=dtype)
    return DownSample(index, num_in=V_IN), x, gen


def _up(seed: int, dtype=torch.float64, k: int = 3):
    gen = torch.Generator().manual_seed(seed)
    index, weight = random_up_operator(gen, V_OUT_UP, V_IN, k=k)
    x = torch.randn(3, V_IN, C, generator=gen, dtype=dtype)
    return UpSample(index, weight, num_in=V_IN), x, gen


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_downsample_matches_loop_reference(dtype, tol):
    layer, x, gen = _down(60, dtype)
    x.requires_grad_(True)
    out = layer(x)
    ref = down_sample_reference(x, layer.index)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    go = torch.randn(out.shape, generator=gen, dtype=dtype)
    torch.testing.assert_close(torch.autograd.grad(out, x, go)[0], torch.autograd.grad(ref, x, go)[0])


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_upsample_matches_dense_operator(k, dtype, tol):
    layer, x, gen = _up(61, dtype, k=k)
    x.requires_grad_(True)
    out = layer(x)
    ref = up_sample_reference(x, layer.index, layer.weight)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    go = torch.randn(out.shape, generator=gen, dtype=dtype)
    torch.testing.assert_close(torch.autograd.grad(out, x, go)[0], torch.autograd.grad(ref, x, go)[0],
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_upsample_vertex_major_matches_forward(k, dtype, tol):
    """The decoders' vertex-major path (one embedding_bag) against the reference forward."""
    layer, x, _ = _up(64, dtype, k=k)
    with torch.inference_mode():
        want = layer(x)  # (B, V_out, C)
        got = layer.forward_vertex_major(x.transpose(0, 1).contiguous())  # (V_out, B, C)
    assert got.shape == (V_OUT_UP, x.shape[0], C)
    torch.testing.assert_close(got.transpose(0, 1), want, rtol=tol, atol=tol)
    torch.testing.assert_close(got.transpose(0, 1), up_sample_reference(x, layer.index, layer.weight),
                               rtol=tol, atol=tol)


def test_upsample_reproduces_constant_and_linear_fields():
    """Weights summing to one: constants stay constant; a vertex's own index reproduces it."""
    layer, x, _ = _up(62)
    const = torch.full((V_IN, 2), 3.5, dtype=torch.float64)
    torch.testing.assert_close(layer(const), torch.full((V_OUT_UP, 2), 3.5, dtype=torch.float64))
    ident = UpSample(torch.arange(V_IN).unsqueeze(1).repeat(1, 3), torch.full((V_IN, 3), 1 / 3).double())
    torch.testing.assert_close(ident(x), x)


def test_gradcheck_float64():
    down, x, _ = _down(63)
    up, _, _ = _up(63)
    x = x[:2].requires_grad_(True)
    assert torch.autograd.gradcheck(down, (x,))
    assert torch.autograd.gradcheck(up, (x,))


@pytest.mark.parametrize("make", [_down, _up])
def test_batched_equals_per_sample_and_unbatched(make):
    layer, x, _ = make(64, torch.float32)
    out = layer(x)
    for b in range(x.shape[0]):
        torch.testing.assert_close(layer(x[b]), out[b], rtol=0, atol=0)
    assert torch.equal(layer(x[:1]).squeeze(0), layer(x[0]))


@pytest.mark.parametrize("make", [_down, _up])
def test_state_dict_round_trip(make):
    layer, x, _ = make(65, torch.float32)
    other, _, _ = make(66, torch.float32)
    assert not torch.equal(other(x), layer(x))
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other(x), layer(x))
    names = {"index"} | ({"weight"} if isinstance(layer, UpSample) else set())
    assert set(layer.state_dict()) == names


def test_from_hierarchy_round_trip_levels():
    h = make_test_hierarchy(seed=67)
    down, up = DownSample.from_hierarchy(h, 0), UpSample.from_hierarchy(h, 0)
    assert torch.equal(down.index, h.down[0]) and torch.equal(up.index, h.up_index[0])
    assert (down.num_in, down.num_out) == (30, 9) and (up.num_in, up.num_out) == (9, 30)
    x = torch.randn(2, 30, 3, generator=torch.Generator().manual_seed(68))
    assert up(down(x)).shape == (2, 30, 3)
    with pytest.raises(ValueError, match=r"level: expected an int in \[0, 0\], got 1"):
        DownSample.from_hierarchy(h, 1)
    with pytest.raises(ValueError, match=r"level: expected an int in \[0, 0\], got 1"):
        UpSample.from_hierarchy(h, 1)


def test_extra_repr():
    assert _down(69)[0].extra_repr() == f"num_in={V_IN}, num_out={V_OUT_DOWN}"
    assert _up(69)[0].extra_repr() == f"num_in={V_IN}, num_out={V_OUT_UP}, k=3"
    assert repr(DownSample(torch.tensor([0, 2]))) == "DownSample(num_in=None, num_out=2)"


def test_input_errors_name_expected_and_actual():
    down, x, _ = _down(70, torch.float32)
    up, _, _ = _up(70, torch.float32)
    with pytest.raises(ValueError, match=r"expected shape \(B, 23, C\), got \(3, 22, 4\)"):
        down(x[:, :22])
    with pytest.raises(ValueError, match=r"expected shape \(B, 23, C\) or \(23, C\), got \(23,\)"):
        up(x[0, :, 0])
    with pytest.raises(TypeError, match="expected dtype .*got torch.int64"):
        up(x.long())
    with pytest.raises(ValueError, match="expected a tensor on cpu, got one on meta"):
        down(x.to("meta"))
    loose = DownSample(torch.tensor([0, 5]))  # no num_in: only max(index) < V_in is required
    assert loose(x[:, :6]).shape == (3, 2, 4)
    msg = r"expected at least 6 vertices \(the largest index is 5\), got shape \(3, 5, 4\)"
    with pytest.raises(ValueError, match=msg):
        loose(x[:, :5])


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"index: expected indices in \[0, 4\), got range \[0, 7\]"):
        DownSample(torch.tensor([0, 7]), num_in=4)
    with pytest.raises(ValueError, match=r"index: expected indices in \[0, inf\), got range \[-1, 2\]"):
        DownSample(torch.tensor([-1, 2]))
    with pytest.raises(TypeError, match="expected dtype torch.int64, got torch.float32"):
        DownSample(torch.tensor([0.0, 1.0]))
    index, weight = random_up_operator(torch.Generator().manual_seed(71), 5, 4)
    with pytest.raises(ValueError, match=r"weight: expected shape \(5, 3\), got \(5, 2\)"):
        UpSample(index, weight[:, :2])
    with pytest.raises(TypeError, match="weight: expected dtype .*got torch.int64"):
        UpSample(index, index)
    with pytest.raises(ValueError, match=r"expected indices in \[0, 2\), got range \[0, 3\]"):
        UpSample(index, weight, num_in=2)


@pytest.mark.parametrize("device", DEVICES + ["meta"])
def test_to_device_moves_buffers(device):
    up, x, _ = _up(72, torch.float32)
    down, _, _ = _down(72, torch.float32)
    want = (down(x), up(x))
    down.to(device), up.to(device)
    assert down.index.device.type == device and up.weight.device.type == device
    got = (down(x.to(device)), up(x.to(device)))
    for g, w in zip(got, want):
        assert g.shape == w.shape
        if device != "meta":
            torch.testing.assert_close(g.cpu(), w)


def test_upsample_casts_weight_to_input_dtype():
    up, x, _ = _up(73, torch.float32)  # float32 weight buffer
    out = up(x.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, up_sample_reference(x.double(), up.index, up.weight.double()))


def test_torch_compile_matches_eager():
    down, x, _ = _down(74, torch.float32)
    up, _, _ = _up(74, torch.float32)
    # V_IN -> V_OUT_DOWN -> V_OUT_UP: an up-sampling operator onto the down-sampled vertices
    coarse_up = UpSample(up.index % V_OUT_DOWN, up.weight, num_in=V_OUT_DOWN)
    model = torch.nn.Sequential(down, torch.nn.Tanh(), coarse_up)
    torch.testing.assert_close(torch.compile(model, fullgraph=True)(x), model(x), rtol=1e-6, atol=1e-6)


def test_layers_on_a_built_hierarchy():
    """Integration: every layer on a real hierarchy of an icosphere (built without caching)."""
    templates = pytest.importorskip("mesh_decoder.mesh.templates")
    hierarchy = pytest.importorskip("mesh_decoder.hierarchy")
    from mesh_decoder.nn import ChebConv, PyGConv, SpiralConv, mesh_edge_index
    from tests.nn.reference import cheb_conv_reference, dense_adjacency, dense_scaled_laplacian, spiral_conv_reference

    h = hierarchy.build_hierarchy(templates.icosphere(2), factors=(4,), spiral_lengths=9, texture_size=None)
    fine, coarse = h.levels
    gen = torch.Generator().manual_seed(75)

    down, up = DownSample.from_hierarchy(h, 0), UpSample.from_hierarchy(h, 0)
    torch.testing.assert_close(down(fine.vertices), coarse.vertices)  # the hierarchy's own contract
    torch.testing.assert_close(up(torch.ones(coarse.num_vertices, 2)), torch.ones(fine.num_vertices, 2))

    x = torch.randn(2, fine.num_vertices, 3, generator=gen, dtype=torch.float64)
    spiral = SpiralConv.from_hierarchy(3, 4, h, 0).double()
    torch.testing.assert_close(spiral(x), spiral_conv_reference(x, fine.spirals, spiral.linear.weight,
                                                                  spiral.linear.bias))

    cheb = ChebConv.from_hierarchy(3, 4, 3, h, 0).double()
    with torch.no_grad():  # weights from the test's own generator, not from whatever earlier tests left behind
        for param in cheb.parameters():
            param.copy_(torch.randn(param.shape, generator=gen, dtype=param.dtype))
    L = torch.tensor(dense_scaled_laplacian(dense_adjacency(fine.faces, fine.num_vertices)))
    # the hierarchy stores its Laplacian in float32: entries carry ~6e-8 relative rounding against this float64 L
    torch.testing.assert_close(cheb(x), cheb_conv_reference(x, L, [lin.weight for lin in cheb.lins], cheb.bias),
                               rtol=1e-6, atol=1e-6)

    import torch_geometric.nn as gnn
    pyg = PyGConv.from_hierarchy(gnn.GCNConv(3, 4), h, 1)
    assert pyg(torch.randn(2, coarse.num_vertices, 3, generator=gen)).shape == (2, coarse.num_vertices, 4)
    # the hierarchy's numpy edge helper and the layers' agree on a valid mesh
    assert torch.equal(mesh_edge_index(fine.faces, fine.num_vertices),
                       torch.from_numpy(hierarchy.mesh_edge_index(fine.faces, fine.num_vertices)))


def test_layers_under_cpu_autocast():
    """bfloat16 autocast: inputs of another dtype than the weights are accepted and the result is close."""
    from mesh_decoder.nn import ChebConv, SpiralConv
    from tests.nn.reference import coo, dense_adjacency, dense_scaled_laplacian, grid_mesh, random_spirals

    gen = torch.Generator().manual_seed(76)
    _, faces = grid_mesh(4, 5)
    li, lw = coo(dense_scaled_laplacian(dense_adjacency(faces, 20)))
    model = torch.nn.Sequential(SpiralConv(3, 4, random_spirals(gen, 20, 5)), ChebConv(4, 2, 3, li, lw, 20))
    x = torch.randn(2, 20, 3, generator=gen)
    want = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model(x.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05)


def test_onnx_export_torchscript_exporter():
    """Tracing takes the plain formulations (no custom autograd kernel, no sparse tensors)."""
    ort = pytest.importorskip("onnxruntime", reason="ONNX export check needs: pip install mesh_decoder[onnx]")
    pytest.importorskip("onnx", reason="ONNX export check needs: pip install mesh_decoder[onnx]")
    import io
    import warnings

    from mesh_decoder.nn import ChebConv, SpiralConv
    from tests.nn.reference import coo, dense_adjacency, dense_scaled_laplacian, grid_mesh, random_spirals

    gen = torch.Generator().manual_seed(77)
    _, faces = grid_mesh(4, 5)
    li, lw = coo(dense_scaled_laplacian(dense_adjacency(faces, 20)))
    index, weight = random_up_operator(gen, 20, 7)
    model = torch.nn.Sequential(UpSample(index, weight), SpiralConv(3, 4, random_spirals(gen, 20, 5)),
                                torch.nn.ELU(), ChebConv(4, 2, 3, li, lw, 20), DownSample(torch.arange(0, 20, 3)))
    x = torch.randn(2, 7, 3, generator=gen)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buf, dynamo=False, input_names=["x"], output_names=["y"])
    session = ort.InferenceSession(buf.getvalue())
    got = torch.from_numpy(session.run(None, {"x": x.numpy()})[0])
    torch.testing.assert_close(got, model(x).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [_down, _up])
def test_load_state_dict_refuses_an_index_past_the_input(make):
    """A loaded index is checked as the constructor's: out of range it would fail (or, vertex-major, read
    past the input) at the first forward, far from the load that caused it."""
    layer, x, _ = make(71, torch.float32)
    state = layer.state_dict()
    state["index"] = state["index"] + V_IN - int(state["index"].min())  # every index past the input
    with pytest.raises(ValueError, match=rf"{type(layer).__name__}\.index: expected indices in \[0, {V_IN}\), got"):
        make(72, torch.float32)[0].load_state_dict(state)


def test_from_hierarchy_names_a_non_hierarchy():
    for cls in (DownSample, UpSample):
        with pytest.raises(TypeError, match="hierarchy: expected a MeshHierarchy, got NoneType"):
            cls.from_hierarchy(None, 0)
