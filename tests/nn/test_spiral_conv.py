from __future__ import annotations

import random
import sys
import threading

import numpy as np
import pytest
import torch

from mesh_decoder.nn import SpiralConv, convert_spiralnet_state_dict, spiral_gather
from mesh_decoder.nn import spiral_conv as spiral_mod
from tests.nn.reference import make_test_hierarchy, random_spirals, spiral_conv_reference, spiralnet_reference

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _layer(seed: int, V: int = 17, S: int = 6, C: int = 3, O: int = 4, dtype=torch.float64, bias: bool = True):
    gen = torch.Generator().manual_seed(seed)
    conv = SpiralConv(C, O, random_spirals(gen, V, S), bias=bias).to(dtype)
    with torch.no_grad():  # non-zero bias so that it is tested too
        if conv.linear.bias is not None:
            conv.linear.bias.copy_(torch.randn(O, generator=gen, dtype=dtype))
    x = torch.randn(3, V, C, generator=gen, dtype=dtype)
    return conv, x, gen


@pytest.fixture
def many_chunks(monkeypatch):
    """Force the CPU kernel to split even tiny inputs into many chunks (3 rows each)."""
    monkeypatch.setattr(spiral_mod, "CHUNK_BYTES", 1)
    monkeypatch.setattr(spiral_mod, "MIN_CHUNK_ROWS", 3)


@pytest.mark.parametrize("path", ["chunked", "many_chunks", "plain"])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_backward_match_loop_reference(path, dtype, tol, bias, monkeypatch):
    if path == "many_chunks":
        monkeypatch.setattr(spiral_mod, "CHUNK_BYTES", 1)
        monkeypatch.setattr(spiral_mod, "MIN_CHUNK_ROWS", 3)
    if path == "plain":
        monkeypatch.setattr(spiral_mod, "_use_chunked_kernel", lambda x: False)
    conv, x, gen = _layer(1, dtype=dtype, bias=bias)
    x.requires_grad_(True)
    out = conv(x)
    ref = spiral_conv_reference(x, conv.indices, conv.linear.weight, conv.linear.bias)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)

    grad_out = torch.randn(out.shape, generator=gen, dtype=dtype)
    params = [x, conv.linear.weight] + ([conv.linear.bias] if bias else [])
    got = torch.autograd.grad(out, params, grad_out)
    want = torch.autograd.grad(ref, params, grad_out)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=tol, atol=tol)


def test_padding_rows_read_zeros():
    """A spiral made only of padding (after its centre) sees the centre alone."""
    gen = torch.Generator().manual_seed(2)
    V, S, C = 5, 4, 2
    idx = torch.full((V, S), V)
    idx[:, 0] = torch.arange(V)
    conv = SpiralConv(C, 3, idx)
    x = torch.randn(2, V, C, generator=gen)
    W = conv.linear.weight
    torch.testing.assert_close(conv(x), x @ W[:, :C].T + conv.linear.bias)


def test_spiral_gather_layout_is_spiral_major():
    gen = torch.Generator().manual_seed(3)
    V, S, C = 6, 3, 4
    idx = random_spirals(gen, V, S)
    x = torch.randn(2, V, C, generator=gen)
    g = spiral_gather(x, idx)
    for v in range(V):
        for j in range(S):
            u = int(idx[v, j])
            want = x[:, u] if u < V else torch.zeros(2, C)
            assert torch.equal(g[:, v, j * C:(j + 1) * C], want)


def test_gradcheck_float64(many_chunks):
    conv, x, gen = _layer(4, V=7, S=4, C=2, O=3)
    x.requires_grad_(True)
    w, b = conv.linear.weight, conv.linear.bias
    fn = lambda x, w, b: spiral_mod._SpiralGatherLinear.apply(x, conv.indices, w, b)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_create_graph_backward_equals_fast_backward(many_chunks):
    """backward under create_graph=True takes the differentiable formulas: same values."""
    conv, x, gen = _layer(17)
    x.requires_grad_(True)
    params = [x, conv.linear.weight, conv.linear.bias]
    out = conv(x)
    go = torch.randn(out.shape, generator=gen, dtype=out.dtype)
    fast = torch.autograd.grad(out, params, go, retain_graph=True)
    slow = torch.autograd.grad(out, params, go, create_graph=True)
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f, s, rtol=1e-12, atol=1e-12)


def test_batched_equals_per_sample_and_unbatched():
    conv, x, _ = _layer(5, dtype=torch.float32)
    out = conv(x)
    for b in range(x.shape[0]):
        torch.testing.assert_close(conv(x[b]), out[b], rtol=1e-6, atol=1e-6)
    assert conv(x[0]).shape == (x.shape[1], 4)
    torch.testing.assert_close(conv(x[:1]).squeeze(0), conv(x[0]), rtol=0, atol=0)


def test_deterministic_under_seed():
    conv, x, _ = _layer(6, dtype=torch.float32)
    x.requires_grad_(True)
    a = conv(x)
    ga = torch.autograd.grad(a.square().sum(), x)[0]
    b = conv(x)
    gb = torch.autograd.grad(b.square().sum(), x)[0]
    assert torch.equal(a, b) and torch.equal(ga, gb)
    torch.manual_seed(0)
    w1 = _layer(7)[0].linear.weight.clone()
    torch.manual_seed(0)
    assert torch.equal(w1, _layer(7)[0].linear.weight)


def test_state_dict_round_trip_includes_indices():
    conv, x, gen = _layer(8, dtype=torch.float32)
    sd = conv.state_dict()
    assert set(sd) == {"indices", "linear.weight", "linear.bias"}
    other_idx = random_spirals(gen, conv.num_vertices, conv.spiral_length)
    fresh = SpiralConv(conv.in_channels, conv.out_channels, other_idx)
    assert not torch.equal(fresh(x), conv(x))
    fresh.load_state_dict(sd)
    assert torch.equal(fresh.indices, conv.indices)
    assert torch.equal(fresh(x), conv(x))


def test_spiralnet_state_dict_conversion():
    gen = torch.Generator().manual_seed(9)
    V, S, C, O = 11, 5, 3, 4
    idx = torch.randint(0, V, (V, S), generator=gen)  # SpiralNet++ spirals carry no padding
    idx[:, 0] = torch.arange(V)
    sd = {"layer.weight": torch.randn(O, S * C, generator=gen), "layer.bias": torch.randn(O, generator=gen)}
    x = torch.randn(2, V, C, generator=gen)
    conv = SpiralConv(C, O, idx)
    conv.load_spiralnet_state_dict(sd)
    torch.testing.assert_close(conv(x), spiralnet_reference(x, idx, sd["layer.weight"], sd["layer.bias"]))
    # the whole-network form: prefixes are kept, unrelated keys untouched
    net = {"de_layers.2.conv.layer.weight": sd["layer.weight"], "de_layers.2.conv.layer.bias": sd["layer.bias"],
           "de_layers.0.layer_norm.weight": torch.ones(3), "my_layer.weight": torch.ones(2)}
    out = convert_spiralnet_state_dict(net)
    assert set(out) == {"de_layers.2.conv.linear.weight", "de_layers.2.conv.linear.bias",
                        "de_layers.0.layer_norm.weight", "my_layer.weight"}
    assert out["de_layers.2.conv.linear.weight"] is sd["layer.weight"]


def test_spiralnet_state_dict_errors_name_keys_and_shapes():
    gen = torch.Generator().manual_seed(10)
    conv = SpiralConv(3, 4, random_spirals(gen, 9, 5))
    with pytest.raises(ValueError, match=r"expected keys \['layer.bias', 'layer.weight'\], got \['layer.weight'\]"):
        conv.load_spiralnet_state_dict({"layer.weight": torch.zeros(4, 15)})
    with pytest.raises(ValueError, match=r"expected shape \(4, 15\).*got \(4, 12\)"):
        conv.load_spiralnet_state_dict({"layer.weight": torch.zeros(4, 12), "layer.bias": torch.zeros(4)})


def test_extra_repr_and_repr():
    gen = torch.Generator().manual_seed(11)
    conv = SpiralConv(32, 64, random_spirals(gen, 20, 9))
    assert conv.extra_repr() == "32, 64, spiral_length=9, dilation=1"
    assert repr(conv) == "SpiralConv(32, 64, spiral_length=9, dilation=1)"
    conv = SpiralConv(8, 16, random_spirals(gen, 20, 12), dilation=2, bias=False)
    assert repr(conv) == "SpiralConv(8, 16, spiral_length=12, dilation=2, bias=False)"
    assert conv.linear.bias is None


def test_from_hierarchy_uses_level_spirals_and_dilation():
    h = make_test_hierarchy(seed=12)
    conv = SpiralConv.from_hierarchy(4, 5, h, 1)
    assert torch.equal(conv.indices, h.levels[1].spirals)
    assert conv.dilation == 2 and conv.num_vertices == h.levels[1].num_vertices
    assert SpiralConv.from_hierarchy(4, 5, h, 0, dilation=1, bias=False).dilation == 1
    with pytest.raises(ValueError, match=r"level: expected an int in \[0, 1\], got 2"):
        SpiralConv.from_hierarchy(4, 5, h, 2)
    with pytest.raises(TypeError, match="expected a MeshHierarchy, got dict"):
        SpiralConv.from_hierarchy(4, 5, {}, 0)


def test_input_errors_name_expected_and_actual():
    conv, x, _ = _layer(13, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"expected shape \(B, 17, 3\), got \(3, 16, 3\)"):
        conv(x[:, :16])
    with pytest.raises(ValueError, match=r"expected shape \(B, 17, 3\), got \(3, 17, 2\)"):
        conv(x[..., :2])
    with pytest.raises(ValueError, match=r"expected shape \(B, 17, 3\) or \(17, 3\), got \(1, 3, 17, 3\)"):
        conv(x[None])
    with pytest.raises(TypeError, match="expected dtype torch.float32, got torch.int64"):
        conv(x.long())
    with pytest.raises(TypeError, match="expected dtype torch.float32, got torch.float64"):
        conv(x.double())
    with pytest.raises(ValueError, match="expected a tensor on cpu, got one on meta"):
        conv(x.to("meta"))
    with pytest.raises(TypeError, match="expected a torch.Tensor, got list"):
        conv([[0.0]])


def test_constructor_errors():
    gen = torch.Generator().manual_seed(14)
    idx = random_spirals(gen, 6, 3)
    with pytest.raises(TypeError, match="expected dtype torch.int64, got torch.int32"):
        SpiralConv(2, 2, idx.int())
    with pytest.raises(ValueError, match=r"expected shape \(V, S\), got \(18,\)"):
        SpiralConv(2, 2, idx.reshape(-1))
    bad = idx.clone()
    bad[0, 1] = 7
    with pytest.raises(ValueError, match=r"expected values in \[0, 6\].*got range \[0, 7\]$"):
        SpiralConv(2, 2, bad)
    # spirals padded with -1, as other spiral code pads them, are told how to convert
    bad[0, 1] = -1
    with pytest.raises(ValueError, match=r"got range \[-1, \d\]; pad with 6, not -1: "
                                         r"indices\.masked_fill\(indices < 0, 6\)$"):
        SpiralConv(2, 2, bad)
    assert SpiralConv(2, 2, bad.masked_fill(bad < 0, 6)).indices[0, 1] == 6  # the advice works
    with pytest.raises(ValueError, match="in_channels: expected a positive int, got 0"):
        SpiralConv(0, 2, idx)
    with pytest.raises(TypeError, match=r"bias: expected True or False, got 'no' \(str\)"):
        SpiralConv(2, 2, idx, bias="no")  # read by its truth value, it would have built a bias
    assert SpiralConv(2, 2, idx, bias=np.bool_(False)).linear.bias is None


@pytest.mark.parametrize("device", DEVICES)
def test_to_device_moves_indices(device):
    conv, x, _ = _layer(15, dtype=torch.float32)
    want = conv(x)
    moved = conv.to(device)
    assert moved.indices.device.type == device
    torch.testing.assert_close(moved(x.to(device)).cpu(), want, rtol=1e-5, atol=1e-5)
    meta = SpiralConv(3, 4, conv.indices.cpu()).to("meta")
    assert meta.indices.device.type == "meta"
    assert meta(torch.empty(2, 17, 3, device="meta")).shape == (2, 17, 4)


@pytest.mark.slow
def test_torch_compile_matches_eager():
    conv, x, gen = _layer(16, V=20, dtype=torch.float32)
    x.requires_grad_(True)
    compiled = torch.compile(conv, fullgraph=True)
    out = compiled(x)
    ref = conv(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    go = torch.randn(out.shape, generator=gen)
    torch.testing.assert_close(torch.autograd.grad(out, x, go)[0], torch.autograd.grad(ref, x, go)[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 32, 3), (2, 16, 4)])
def test_narrow_output_inference_path_matches_plain(shape):
    """Without autograd and with C_out < C_in, projecting before gathering gives the plain result."""
    from mesh_decoder.nn.spiral_conv import spiral_gather

    B, C_in, C_out = shape
    g = torch.Generator().manual_seed(7 + B)
    V, S = 40, 9
    idx = torch.randint(0, V + 1, (V, S), generator=g)  # includes the pad index V
    idx[:, 0] = torch.arange(V)
    conv = SpiralConv(C_in, C_out, idx)
    x = torch.randn(B, V, C_in, generator=g)
    with torch.inference_mode():
        fast = conv(x)
        plain = conv.linear(spiral_gather(x, idx))
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(conv(x[0]), plain[0], rtol=1e-5, atol=1e-5)


def test_narrow_output_inference_path_follows_loaded_indices():
    """Loading a state dict with other spirals rebuilds the project-then-gather gather."""
    g = torch.Generator().manual_seed(11)
    V, S = 30, 7
    conv = SpiralConv(12, 2, random_spirals(g, V, S))
    other = SpiralConv(12, 2, random_spirals(g, V, S))
    conv.load_state_dict(other.state_dict())
    assert "bag_index" not in conv.state_dict()
    x = torch.randn(5, V, 12, generator=g)
    with torch.inference_mode():
        torch.testing.assert_close(conv(x), other.linear(spiral_gather(x, other.indices)), rtol=1e-5, atol=1e-5)
        for B in (5, 2, 5):  # the replicated gather kept for 5 samples serves 2
            torch.testing.assert_close(conv(x[:B]), other.linear(spiral_gather(x[:B], other.indices)),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", [None, "elu"])
@pytest.mark.parametrize("bias", [True, False])
def test_embedding_bag_sum_matches_a_loop_with_and_without_autograd(activation, bias):
    gen = torch.Generator().manual_seed(21)
    B, R, C, V, N = 4, 11, 5, 7, 6
    z = torch.randn(B, R, C, generator=gen, dtype=torch.float64)
    index = torch.randint(0, R, (V, N), generator=gen)
    weight = torch.rand(V, N, generator=gen, dtype=torch.float64)
    c = torch.randn(C, generator=gen, dtype=torch.float64) if bias else None
    want = torch.zeros(B, V, C, dtype=torch.float64)
    for bb in range(B):
        for v in range(V):
            for i in range(N):
                want[bb, v] += weight[v, i] * z[bb, index[v, i]]
    want = want if c is None else want + c
    want = want if activation is None else torch.nn.functional.elu(want)
    with torch.no_grad():  # the per-sample operator, then the cached batch-replicated gather
        torch.testing.assert_close(spiral_mod.embedding_bag_sum(z, index, weight, c, activation), want)
        cache = spiral_mod.BagCache()
        for _ in range(2):
            torch.testing.assert_close(spiral_mod.embedding_bag_sum(z, index, weight, c, activation, cache), want)
        assert cache.index.shape == (B * V, N)
    for Bs in (1, B):  # autograd: the batch folded into one call
        zg = z[:Bs].clone().requires_grad_()
        out = spiral_mod.embedding_bag_sum(zg, index, weight, c, activation)
        torch.testing.assert_close(out, want[:Bs])
        out.sum().backward()
        ref = z[:Bs].clone().requires_grad_()
        rows = ref[:, index] * weight.unsqueeze(-1)  # (Bs, V, N, C)
        y = rows.sum(2) if c is None else rows.sum(2) + c
        (y if activation is None else torch.nn.functional.elu(y)).sum().backward()
        torch.testing.assert_close(zg.grad, ref.grad)


def test_inference_bag_sum_allocates_its_output_only():
    """Bias and ELU run in place on the gathered sum: no temporary the size of the output. A fresh
    buffer of that size on every call is fresh pages on every call (page faults), which had made a
    batch-32 CPU decode up to twice as slow as it is without them."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    B, R, C, V, N = 6, 400, 32, 300, 9
    z = torch.randn(B, R, C, generator=gen)
    index = torch.randint(0, R, (V, N), generator=gen)
    weight = torch.rand(V, N, generator=gen)
    bias = torch.randn(C, generator=gen)
    out_bytes = B * V * C * z.element_size()
    with torch.inference_mode():
        cache = spiral_mod.BagCache()
        spiral_mod.embedding_bag_sum(z, index, weight, bias, "elu", cache)  # builds the cached gather
        for use_cache in (cache, None):  # the folded batch, then one sample at a time
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                out = spiral_mod.embedding_bag_sum(z, index, weight, bias, "elu", use_cache)
            allocated = sum(max(e.self_cpu_memory_usage, 0) for e in prof.events())  # bytes allocated
            sums = out_bytes if use_cache is not None else 2 * out_bytes  # per sample: each sum, then copied out
            # beyond the sums, embedding_bag's bookkeeping of a few integers per bag (8 bytes each), not
            # a copy of the output (128 bytes per bag)
            assert 0 <= allocated - sums < out_bytes / 2, (use_cache is not None, allocated, sums)
            torch.testing.assert_close(out, torch.nn.functional.elu(_loop_bag_sum(z, index, weight, bias)),
                                       rtol=1e-5, atol=1e-5)


def _loop_bag_sum(z, index, weight, bias):
    """``bias + sum_i weight[v, i] * z[b, index[v, i]]`` written out, for every sample."""
    return (z[:, index] * weight.unsqueeze(-1)).sum(2) + bias  # (B, V, C)


def test_bag_sum_operator_keeps_one_replicated_gather_and_follows_in_place_updates(monkeypatch):
    shared = spiral_mod._SharedBags()
    monkeypatch.setattr(spiral_mod, "_SHARED_BAGS", shared)
    op = torch.ops.mesh_decoder.bag_sum
    gen = torch.Generator().manual_seed(23)
    B, R, C, V, N = 4, 13, 5, 9, 6
    z = torch.randn(B, R, C, generator=gen, dtype=torch.float64)
    index = torch.randint(0, R, (V, N), generator=gen)
    weight = torch.rand(V, N, generator=gen, dtype=torch.float64)
    bias = torch.randn(C, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(op(z, index, weight, bias, "none"), _loop_bag_sum(z, index, weight, bias))
        assert len(shared.entries) == 1
        rows = next(iter(shared.entries.values()))[3]
        assert rows.shape == (B * V, N) and shared.nbytes == B * V * N * (8 + 8)
        # a smaller batch reads the first samples of the same copy
        torch.testing.assert_close(op(z[:2], index, weight, bias, "none"), _loop_bag_sum(z[:2], index, weight, bias))
        assert len(shared.entries) == 1 and next(iter(shared.entries.values()))[3] is rows
        weight.mul_(torch.rand(V, N, generator=gen, dtype=torch.float64))  # in place: the weight copy follows
        torch.testing.assert_close(op(z, index, weight, bias, "none"), _loop_bag_sum(z, index, weight, bias))
        assert next(iter(shared.entries.values()))[3] is rows
        other = torch.rand(V, N, generator=gen, dtype=torch.float64)  # another weight for the same gather
        torch.testing.assert_close(op(z, index, other, bias, "none"), _loop_bag_sum(z, index, other, bias))
        index[0] = (index[0] + 1) % R  # in place: the gather copy is rebuilt
        torch.testing.assert_close(op(z, index, other, bias, "none"), _loop_bag_sum(z, index, other, bias))
        assert shared.nbytes == sum(e[3].nbytes + e[4].nbytes for e in shared.entries.values())

        # past SHARED_BAGS_BYTES the least recently used copies go; past SHARED_BAG_BYTES none is made
        monkeypatch.setattr(spiral_mod, "SHARED_BAGS_BYTES", B * V * N * 16)
        index2 = torch.randint(0, R, (V, N), generator=gen)
        torch.testing.assert_close(op(z, index2, other, bias, "none"), _loop_bag_sum(z, index2, other, bias))
        assert len(shared.entries) == 1 and next(iter(shared.entries.values()))[0] is index2
        monkeypatch.setattr(spiral_mod, "SHARED_BAG_BYTES", B * V * N * 16 - 1)
        index3 = torch.randint(0, R, (V, N), generator=gen)
        torch.testing.assert_close(op(z, index3, other, bias, "none"), _loop_bag_sum(z, index3, other, bias))
        assert [e[0] for e in shared.entries.values()] == [index2]
    with torch.inference_mode():  # tensors made here keep no version counter: summed per sample, nothing kept
        index4, weight4 = index.clone(), weight.clone()
        torch.testing.assert_close(op(z, index4, weight4, bias, "none"), _loop_bag_sum(z, index4, weight4, bias))
    assert [e[0] for e in shared.entries.values()] == [index2]


def test_bag_sum_operator_passes_opcheck():
    gen = torch.Generator().manual_seed(22)
    z = torch.randn(3, 9, 4, generator=gen)
    index = torch.randint(0, 9, (5, 6), generator=gen)
    weight = torch.rand(5, 6, generator=gen)
    for B in (3, 1):
        torch.library.opcheck(torch.ops.mesh_decoder.bag_sum.default,
                              (z[:B], index, weight, torch.randn(4, generator=gen), "elu"),
                              test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


@pytest.mark.parametrize("transform", ["vmap", "jacrev", "jvp"])
@pytest.mark.parametrize("narrow", [False, True])
def test_torch_func_transforms_equal_the_loop_reference(transform, narrow):
    """Under torch.func the CPU kernels (no vmap or forward-mode rule) step aside for the plain formulation."""
    conv, x, gen = _layer(int(torch.randint(1 << 30, ())), C=5 if narrow else 3, O=2 if narrow else 4)
    W, b = conv.linear.weight.detach(), conv.linear.bias.detach()

    def reference(xs):
        return spiral_conv_reference(xs.unsqueeze(0), conv.indices, W, b).squeeze(0)  # (V, O)

    tangent = torch.randn(x.shape[1:], generator=gen, dtype=x.dtype)
    run = {"vmap": lambda f: torch.vmap(f)(x),
           "jacrev": lambda f: torch.func.jacrev(f)(x[0]),
           "jvp": lambda f: torch.func.jvp(f, (x[0],), (tangent,))[1]}[transform]
    with torch.no_grad():  # the inference-only paths are the ones that must step aside
        got = run(conv)
    torch.testing.assert_close(got, run(reference), rtol=1e-10, atol=1e-10)


def test_replicated_gather_follows_a_dtype_round_trip():
    """A layer whose buffers were replaced (half() then float()) gathers with the new ones at every batch."""
    from mesh_decoder.nn import SpiralDecoder
    from tests.nn.conftest import make_synthetic_hierarchy

    torch.manual_seed(int(torch.randint(1 << 30, ())))
    decoder = SpiralDecoder.from_hierarchy(make_synthetic_hierarchy(), latent_size=6, channels=(8, 12)).eval()
    z = torch.randn(4, 6)
    with torch.inference_mode():
        decoder(z)  # the replicated gathers are built for batch 4
    decoder.half().float()  # the up-sampling weights, rounded, are new tensors
    fresh = SpiralDecoder.from_hierarchy(make_synthetic_hierarchy(), latent_size=6, channels=(8, 12)).eval()
    fresh.load_state_dict(decoder.state_dict())
    with torch.inference_mode():
        for B in (4, 1):
            torch.testing.assert_close(decoder(z[:B]), fresh(z[:B]), rtol=0, atol=0)


def test_spiral_weight_blocks_and_empty_spirals_are_checked():
    w = torch.randn(5, 36, generator=torch.Generator().manual_seed(91))
    assert spiral_mod.spiral_weight_blocks(w, 9).shape == (4, 45)
    with pytest.raises(ValueError, match=r"weight: expected shape \(C_out, S\*C_in\) with S = spiral_length = 7, got \(5, 36\)"):
        spiral_mod.spiral_weight_blocks(w, 7)
    with pytest.raises(ValueError, match="spiral_length: expected a positive int, got 0"):
        spiral_mod.spiral_weight_blocks(w, 0)
    with pytest.raises(ValueError, match=r"indices: expected V >= 1 spirals of length S >= 1, got shape \(0, 9\)"):
        SpiralConv(3, 4, torch.empty(0, 9, dtype=torch.int64))


def test_a_bag_cache_shared_by_threads_pairs_each_index_with_its_weights():
    """Threads decoding with one layer share its cache; each call must get one copy's index and weights.

    A rebuild for another batch between reading the index and the weights had paired
    them from two copies (an embedding_bag shape error, or rows of the wrong batch)."""
    gen = torch.Generator().manual_seed(21)
    V, N, R = 400, 5, 500
    index = torch.randint(0, R, (V, N), generator=gen)
    weight = torch.rand(V, N, generator=gen)
    cache = spiral_mod.BagCache()
    errors: list[str] = []

    def work(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(3000):
            if rng.random() < 0.2:
                cache.clear()
            batch = rng.randint(1, 8)
            try:
                rows, w = cache.get(index, weight, batch, R, torch.float32)
            except Exception as exc:  # noqa: BLE001 - collected: an exception in a thread does not fail the test
                errors.append(f"batch {batch}: {type(exc).__name__}: {exc}")
                continue
            if rows.shape != (batch * V, N) or w.shape != (batch * V, N):
                errors.append(f"batch {batch}: index {tuple(rows.shape)}, weights {tuple(w.shape)}")
            elif not torch.equal(rows.view(batch, V, N) - torch.arange(batch).view(batch, 1, 1) * R,
                                 index.expand(batch, V, N)):
                errors.append(f"batch {batch}: rows of another gather")

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unsafe interleaving shows
    try:
        threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_clear_caches_sums_the_shared_copies_under_their_lock():
    """clear_caches summed the shared copies without their lock: 'OrderedDict mutated during iteration' when
    another thread's compiled decode (whose get holds the lock) added a copy meanwhile."""
    from mesh_decoder.nn import clear_caches

    asking, read, cleared = threading.Event(), threading.Event(), threading.Event()

    def run() -> None:
        asking.set()
        assert spiral_mod._SHARED_BAGS.nbytes >= 0
        read.set()
        clear_caches()
        cleared.set()

    with spiral_mod._SHARED_BAGS._lock:  # as a decoding thread's get holds it
        worker = threading.Thread(target=run)
        worker.start()
        assert asking.wait(30)  # the worker is running, right before the count
        assert not read.wait(0.3)  # the count waits for the lock
    worker.join(30)
    assert read.is_set() and cleared.is_set()
