"""The in-place CPU ELU (exp2 form) against PyTorch's ELU, which is its reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mesh_decoder.nn import activation
from mesh_decoder.nn.activation import FAST_ELU_MIN_NUMEL, elu_


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-7), (torch.float64, 1e-15)])
@pytest.mark.parametrize("shape", [(3, 1500, 16), (FAST_ELU_MIN_NUMEL,), (7, 9)])
def test_elu_equals_reference_in_place(shape, dtype, atol):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g, dtype=dtype) * 3
    want = F.elu(x.double())
    y = x.clone()
    out = elu_(y)
    assert out.data_ptr() == y.data_ptr() and out.shape == x.shape and out.dtype == dtype
    torch.testing.assert_close(out.double(), want, rtol=0, atol=atol)
    # positive inputs are returned exactly, negative ones land in (-1, 0]
    assert torch.equal(out[x > 0], x[x > 0])
    assert bool((out[x <= 0] > -1).all()) and bool((out[x <= 0] <= 0).all())


def test_elu_special_values():
    x = torch.randn(FAST_ELU_MIN_NUMEL + 5)
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1e-30, 1e-30, -90.0])
    x[: special.numel()] = special
    want = F.elu(x.clone())
    out = elu_(x)
    assert torch.isnan(out[0]) and torch.isnan(want[0])
    torch.testing.assert_close(out[1:], want[1:], rtol=0, atol=2e-7)
    assert out[1] == float("inf") and out[2] == -1.0


def test_elu_takes_the_exp2_form_only_where_it_pays(monkeypatch):
    """Large CPU tensors without autograd use exp2 (never expm1); small ones, tensors
    that autograd records and integer inputs go to F.elu_."""
    calls: list[str] = []
    real_exp2, real_elu = torch.Tensor.exp2_, F.elu_
    monkeypatch.setattr(torch.Tensor, "exp2_", lambda t: calls.append("exp2") or real_exp2(t))
    monkeypatch.setattr(activation.F, "elu_", lambda t: calls.append("elu") or real_elu(t))

    elu_(torch.randn(FAST_ELU_MIN_NUMEL))
    assert calls == ["exp2"]
    calls.clear()
    elu_(torch.randn(FAST_ELU_MIN_NUMEL - 1))
    assert calls == ["elu"]
    calls.clear()
    leaf = torch.randn(FAST_ELU_MIN_NUMEL, requires_grad=True)
    h = leaf * 1.5
    out = elu_(h)
    assert calls == ["elu"]
    out.sum().backward()
    torch.testing.assert_close(leaf.grad, torch.where(leaf * 1.5 > 0, 1.5, 1.5 * torch.exp(leaf.detach() * 1.5)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_floats_take_the_reference(dtype):
    """In 16 bits each of the exp2 form's passes rounds: 2^m - 1 in bfloat16 was off by a median 2.7e-2 relative
    on small negative inputs, where F.elu_ computes in float32."""
    g = torch.Generator().manual_seed(51)
    x = (torch.randn(4 * FAST_ELU_MIN_NUMEL, generator=g) * 0.05).to(dtype)
    assert torch.equal(elu_(x.clone()), F.elu(x))


def test_decoders_take_it_in_inference(monkeypatch):
    """The spiral decoders' fused gathers and the decoders' in-place activation call it."""
    from mesh_decoder.nn import decoders, spiral_conv

    assert decoders._INPLACE_ACTIVATIONS["elu"] is elu_
    seen: list[int] = []
    monkeypatch.setattr(spiral_conv, "elu_", lambda t: seen.append(t.numel()) or elu_(t))
    z = torch.randn(2, 5, 8)
    out = spiral_conv.embedding_bag_sum(z, torch.randint(0, 5, (6, 3)), torch.rand(6, 3), torch.randn(8), "elu")
    assert sum(seen) == out.numel()  # once per sample
    assert bool((out > -1).all())
