"""The fused up-sampling + spiral convolution against loops and dense matrices."""

from __future__ import annotations

import pytest
import torch

from mesh_decoder.nn import (SpiralConv, UpSample, UpSpiralConv, project_gather, spiral_bags, spiral_weight_blocks,
                             weight_blocks_scope)
from mesh_decoder.nn.spiral_conv import BagCache
from tests.nn.reference import random_spirals, random_up_operator, spiral_conv_reference, up_sample_reference

DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])


def _pair(seed: int, V_in: int = 7, V_out: int = 19, S: int = 5, C: int = 4, O: int = 3, dtype=torch.float64,
          bias: bool = True):
    """A random up-sampling ``V_in -> V_out``, a spiral conv on ``V_out`` with a non-zero bias, and an input."""
    gen = torch.Generator().manual_seed(seed)
    up_index, up_weight = random_up_operator(gen, V_out, V_in, dtype=dtype)
    up = UpSample(up_index, up_weight, num_in=V_in)
    conv = SpiralConv(C, O, random_spirals(gen, V_out, S), bias=bias).to(dtype)
    with torch.no_grad():
        if conv.linear.bias is not None:
            conv.linear.bias.copy_(torch.randn(O, generator=gen, dtype=dtype))
    x = torch.randn(3, V_in, C, generator=gen, dtype=dtype)
    return up, conv, x, gen


def _reference(up: UpSample, conv: SpiralConv, x: torch.Tensor) -> torch.Tensor:
    """Dense up-sampling, then the spiral convolution by loops."""
    fine = up_sample_reference(x, up.index, up.weight)
    return spiral_conv_reference(fine, conv.indices, conv.linear.weight, conv.linear.bias)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_backward_match_dense_up_then_loop_conv(dtype, tol, bias):
    up, conv, x, gen = _pair(1, dtype=dtype, bias=bias)
    fused = UpSpiralConv(up, conv)
    x.requires_grad_(True)
    out = fused(x, conv.linear.weight, conv.linear.bias)
    ref = _reference(up, conv, x)
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    grad_out = torch.randn(out.shape, generator=gen, dtype=dtype)
    params = [x, conv.linear.weight] + ([conv.linear.bias] if bias else [])
    for got, want in zip(torch.autograd.grad(out, params, grad_out), torch.autograd.grad(ref, params, grad_out)):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_inference_equals_module_composition():
    """Without autograd the fused op equals ``conv(up(x))`` run by the layers themselves."""
    up, conv, x, _ = _pair(2, V_in=30, V_out=101, S=9, C=16, O=8, dtype=torch.float32)
    fused = UpSpiralConv(up, conv)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x, conv.linear.weight, conv.linear.bias), conv(up(x)), rtol=1e-5, atol=1e-5)


def test_gradcheck_float64():
    up, conv, x, _ = _pair(3, V_in=5, V_out=9, S=4, C=2, O=2)
    fused = UpSpiralConv(up, conv)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w, b: fused(x, w, b), (x, conv.linear.weight, conv.linear.bias))


def test_differentiable_once_as_documented_and_the_composition_twice():
    """The fused layer's second derivative is embedding_bag's, which PyTorch lacks (the docstring says so and
    names conv(up(x)) for higher derivatives)."""
    up, conv, x, _ = _pair(3, V_in=5, V_out=9, S=4, C=2, O=2)
    fused = UpSpiralConv(up, conv)
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(fused(x, conv.linear.weight, conv.linear.bias).square().sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="_embedding_bag_backward"):
        grad.square().sum().backward()
    assert torch.autograd.gradgradcheck(lambda x: conv(up(x)), (x,))


def test_batched_equals_per_sample_and_unbatched():
    up, conv, x, _ = _pair(4, dtype=torch.float32)
    fused = UpSpiralConv(up, conv)
    with torch.no_grad():
        batched = fused(x, conv.linear.weight, conv.linear.bias)
        for b in range(x.shape[0]):
            torch.testing.assert_close(fused(x[b], conv.linear.weight, conv.linear.bias), batched[b])
            torch.testing.assert_close(fused(x[b : b + 1], conv.linear.weight, conv.linear.bias)[0], batched[b])


def test_deterministic():
    up, conv, x, _ = _pair(5, dtype=torch.float32)
    fused = UpSpiralConv(up, conv)
    with torch.no_grad():
        a = fused(x, conv.linear.weight, conv.linear.bias)
        b = fused(x, conv.linear.weight, conv.linear.bias)
    assert torch.equal(a, b)


def test_spiral_bags_rows_and_weights_by_loop():
    """Every (vertex, spiral entry, corner) term of the gather, checked one by one."""
    gen = torch.Generator().manual_seed(6)
    V_in, V, S = 6, 11, 4
    spirals = random_spirals(gen, V, S)
    up_index, up_weight = random_up_operator(gen, V, V_in)
    index, weight = spiral_bags(spirals, up_index, up_weight)
    assert index.shape == weight.shape == (V, S * 3)
    for v in range(V):
        for j in range(S):
            for k in range(3):
                i = j * 3 + k
                s = int(spirals[v, j])
                if s == V:  # padding: contributes nothing
                    assert float(weight[v, i]) == 0.0
                else:
                    assert int(index[v, i]) == int(up_index[s, k]) * S + j
                    assert float(weight[v, i]) == float(up_weight[s, k])
    plain_index, plain_weight = spiral_bags(spirals)
    assert plain_index.shape == (V, S)
    pad = spirals == V
    assert torch.equal(plain_weight, (~pad).float())
    j = torch.arange(S).expand(V, S)
    assert torch.equal(plain_index[~pad], (spirals * S + j)[~pad])


@pytest.mark.parametrize("B", [1, 4])
def test_project_gather_without_up_sampling_is_the_spiral_conv(B):
    gen = torch.Generator().manual_seed(7)
    V, S, C, O = 13, 6, 5, 3
    spirals = random_spirals(gen, V, S)
    weight = torch.randn(O, S * C, generator=gen, dtype=torch.float64)
    bias = torch.randn(O, generator=gen, dtype=torch.float64)
    x = torch.randn(B, V, C, generator=gen, dtype=torch.float64)
    index, bag_weight = spiral_bags(spirals)
    got = project_gather(x, index, bag_weight, weight, bias, S)
    torch.testing.assert_close(got, spiral_conv_reference(x, spirals, weight, bias))


def test_spiral_weight_blocks_layout():
    gen = torch.Generator().manual_seed(8)
    O, S, C = 3, 4, 5
    weight = torch.randn(O, S * C, generator=gen)
    blocks = spiral_weight_blocks(weight, S)
    assert blocks.shape == (C, S * O)
    for j in range(S):
        torch.testing.assert_close(blocks[:, j * O : (j + 1) * O], weight[:, j * C : (j + 1) * C].T)


def test_bag_cache_serves_smaller_batches_and_follows_weight_updates_and_dtype_changes():
    up, conv, x, gen = _pair(9, dtype=torch.float32)
    index, weight = spiral_bags(conv.indices, up.index, up.weight, num_in=up.num_in)
    cache = BagCache()
    w, b = conv.linear.weight, conv.linear.bias
    S = conv.spiral_length
    with torch.no_grad(), weight_blocks_scope():  # the scope keeps the rearranged weight between calls
        for B in (3, 2, 1, 3):  # the second call reuses a prefix of the first's replicated gather
            got = project_gather(x[:B], index, weight, w, b, S, cache)
            torch.testing.assert_close(got, project_gather(x[:B], index, weight, w, b, S), rtol=0, atol=0)
        assert cache.index.shape[0] == 3 * index.shape[0]
        kept = cache.blocks
        assert kept is not None
        w.copy_(torch.randn(w.shape, generator=gen))  # an in-place update (an optimiser step, a load)
        got = project_gather(x, index, weight, w, b, S, cache)
        assert cache.blocks is not kept
        torch.testing.assert_close(got, _reference(up, conv, x), rtol=1e-5, atol=1e-5)
        got64 = project_gather(x.double(), index, weight, w.double(), b.double(), S, cache)
        assert cache.weight.dtype == torch.float64 and cache.blocks.dtype == torch.float64
        torch.testing.assert_close(got64, _reference(up, conv.double(), x.double()))


def test_refresh_follows_new_buffers():
    up, conv, x, gen = _pair(10, dtype=torch.float32)
    fused = UpSpiralConv(up, conv)
    other_up, other_conv, _, _ = _pair(11, dtype=torch.float32)
    up.load_state_dict(other_up.state_dict())
    conv.load_state_dict(other_conv.state_dict())
    fused.refresh(up, conv)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x, conv.linear.weight, conv.linear.bias), conv(up(x)), rtol=1e-5, atol=1e-5)


def test_buffers_are_not_saved_and_repr():
    up, conv, _, _ = _pair(12, V_in=7, V_out=19, S=5, C=4, O=3)
    fused = UpSpiralConv(up, conv)
    assert fused.state_dict() == {}
    assert {n for n, _ in fused.named_buffers()} == {"index", "weight"}
    assert repr(fused) == "UpSpiralConv(4, 3, num_in=7, num_out=19, spiral_length=5, terms=15)"


def test_errors_name_expected_and_found():
    up, conv, x, _ = _pair(13, dtype=torch.float32)
    with pytest.raises(TypeError, match="expected an UpSample"):
        UpSpiralConv(conv, conv)
    with pytest.raises(TypeError, match="expected a SpiralConv"):
        UpSpiralConv(up, up)
    small = SpiralConv(4, 3, random_spirals(torch.Generator().manual_seed(0), 8, 5))
    with pytest.raises(ValueError, match="gives 19 vertices, the convolution expects 8"):
        UpSpiralConv(up, small)
    fused = UpSpiralConv(up, conv)
    with pytest.raises(ValueError, match=r"expected shape \(3, 20\), got \(3, 15\)"):
        fused(x, conv.linear.weight[:, :15], conv.linear.bias)
    with pytest.raises(ValueError, match=r"expected shape \(B, 7, 4\)"):
        fused(x[:, :5], conv.linear.weight, conv.linear.bias)
    bad = torch.tensor([[0, 3]])
    with pytest.raises(ValueError, match=r"expected values in \[0, 1\]"):
        spiral_bags(bad)
    with pytest.raises(ValueError, match="up_weight: expected a"):
        spiral_bags(conv.indices, up.index, None)
    with pytest.raises(ValueError, match=r"up_index: expected values in \[0, 3\)"):
        spiral_bags(conv.indices, up.index, up.weight, num_in=3)


@pytest.mark.parametrize("device", DEVICES)
def test_device_moves_buffers(device):
    up, conv, x, _ = _pair(14, dtype=torch.float32)
    fused = UpSpiralConv(up, conv)
    want = _reference(up, conv, x).detach()
    fused = fused.to(device)
    conv = conv.to(device)
    assert fused.index.device.type == device
    with torch.no_grad():
        got = fused(x.to(device), conv.linear.weight, conv.linear.bias)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


def test_indexing_form_for_the_gpu_compiler_equals_embedding_bag():
    """The indexing form compiled code uses on CUDA gives what embedding_bag gives."""
    from mesh_decoder.nn.spiral_conv import weighted_row_sum

    up, conv, x, _ = _pair(15, dtype=torch.float64)
    S, O = conv.spiral_length, conv.out_channels
    index, weight = spiral_bags(conv.indices, up.index, up.weight, num_in=up.num_in)
    z = torch.matmul(x, spiral_weight_blocks(conv.linear.weight, S))  # (B, V_in, S*O)
    got = weighted_row_sum(z.view(x.shape[0], -1, O), index, weight) + conv.linear.bias
    torch.testing.assert_close(got, _reference(up, conv, x))


def test_refresh_updates_buffers_in_place():
    """A captured CUDA graph reads buffer memory: a refresh with same-shaped operators must write into it."""
    up, conv, x, _ = _pair(16, dtype=torch.float32)
    fused = UpSpiralConv(up, conv)
    index_ptr, weight_ptr = fused.index.data_ptr(), fused.weight.data_ptr()
    other_up, _, _, _ = _pair(17, dtype=torch.float32)
    up.load_state_dict(other_up.state_dict())
    fused.refresh(up, conv)
    assert (fused.index.data_ptr(), fused.weight.data_ptr()) == (index_ptr, weight_ptr)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x, conv.linear.weight, conv.linear.bias), conv(up(x)), rtol=1e-5, atol=1e-5)


def test_rearranged_weight_follows_in_place_updates():
    """The cached weight blocks are rebuilt when the weight changes in place (its version moves)."""
    up, conv, x, _ = _pair(18, dtype=torch.float32)
    fused = UpSpiralConv(up, conv)
    with torch.inference_mode():
        fused(x, conv.linear.weight, conv.linear.bias)
    with torch.no_grad():
        conv.linear.weight.mul_(-2.0)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x, conv.linear.weight, conv.linear.bias), conv(up(x)), rtol=1e-5, atol=1e-5)
