"""Tests of the graph encoders (spiral, Chebyshev): forward against a loop reference, construction and
input checks, config round trips, devices and dtypes."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from mesh_decoder.errors import HierarchyError
from mesh_decoder.nn import plain_formulation
from mesh_decoder.nn.encoders import GraphEncoder, SpiralEncoder, encoder_from_config
from tests.nn.reference import build_encoder, encoder_reference, rand_meshes

DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])
KINDS = ["spiral", "cheb"]


# ------------------------------------------------------------------------------ encoders
@pytest.mark.parametrize("hierarchy_name", ["synthetic_hierarchy", "face_hierarchy"])
@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_encoder_matches_reference_and_is_batch_consistent(request, hierarchy_name, kind):
    hierarchy = request.getfixturevalue(hierarchy_name)
    torch.manual_seed(0)
    enc = build_encoder(kind, hierarchy).double()
    x = rand_meshes(hierarchy, 3, seed=1, dtype=torch.float64)
    z = enc(x)
    assert z.shape == (3, 5)
    torch.testing.assert_close(z, encoder_reference(enc, hierarchy, x))
    for b in range(3):
        torch.testing.assert_close(enc(x[b]), z[b])


def test_encoder_architecture_mirrors_the_decoder(synthetic_hierarchy):
    enc = SpiralEncoder.from_hierarchy(synthetic_hierarchy, latent_size=7, channels=(8, 12, 16), in_channels=6)
    assert [(c.in_channels, c.out_channels) for c in enc.convs] == [(6, 8), (8, 12), (12, 16)]
    assert enc.fc.in_features == synthetic_hierarchy.sizes[3] * 16 and enc.fc.out_features == 7
    assert "in_channels=6, channels=(8, 12, 16), latent_size=7" in repr(enc) and "SpiralConv(6, 8" in repr(enc)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 90, 6\) or \(90, 6\), got \(2, 90, 3\)"):
        enc(torch.randn(2, 90, 3))
    with pytest.raises(TypeError, match="got torch.float64"):
        enc(torch.randn(90, 6, dtype=torch.float64))


@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_encoder_config_round_trip(synthetic_hierarchy, make_hierarchy, kind):
    enc = build_encoder(kind, synthetic_hierarchy, activation="relu")
    config = json.loads(json.dumps(enc.config()))
    again = encoder_from_config(config, synthetic_hierarchy)
    again.load_state_dict(enc.state_dict())
    x = rand_meshes(synthetic_hierarchy, 2, seed=2)
    torch.testing.assert_close(again(x), enc(x))
    with pytest.raises(HierarchyError, match="expected level sizes"):
        encoder_from_config(config, make_hierarchy(sizes=(90, 41, 18, 8)))



# ------------------------------------------------------------------------- devices, dtypes, seeds
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("kind", KINDS)
def test_encoder_device_and_dtype(synthetic_hierarchy, kind, dtype, tol, device):
    torch.manual_seed(3)
    ref = build_encoder(kind, synthetic_hierarchy).double()
    x = rand_meshes(synthetic_hierarchy, 3, seed=4, dtype=torch.float64)
    want = encoder_reference(ref, synthetic_hierarchy, x)
    enc = build_encoder(kind, synthetic_hierarchy)
    enc.load_state_dict(ref.state_dict())
    enc = enc.to(device=device, dtype=dtype)
    xd = x.to(device=device, dtype=dtype)
    z = enc(xd)
    assert z.shape == (3, 5) and z.dtype == dtype and z.device == xd.device
    torch.testing.assert_close(z.cpu().double(), want, rtol=tol, atol=tol)
    torch.testing.assert_close(enc(xd[1]).cpu().double(), want[1], rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_is_deterministic_under_a_seed(synthetic_hierarchy, kind):
    x = rand_meshes(synthetic_hierarchy, 2, seed=5)
    encoders = []
    for seed in (6, 6, 7):
        torch.manual_seed(seed)
        encoders.append(build_encoder(kind, synthetic_hierarchy))
    a, b, c = encoders
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), c(x))


@pytest.mark.parametrize("kind", KINDS)
def test_inference_paths_agree_with_the_recorded_one(synthetic_hierarchy, kind):
    """No grad (the layers' fast paths), grad mode and plain_formulation() give one encoding."""
    torch.manual_seed(8)
    enc = build_encoder(kind, synthetic_hierarchy)
    x = rand_meshes(synthetic_hierarchy, 4, seed=9)
    recorded = enc(x)
    assert recorded.requires_grad
    with torch.no_grad():
        fast = enc(x)
        with plain_formulation():
            plain = enc(x)
    torch.testing.assert_close(fast, recorded.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(plain, recorded.detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_the_reference_and_reach_every_parameter(synthetic_hierarchy, kind):
    torch.manual_seed(10)
    enc = build_encoder(kind, synthetic_hierarchy).double()
    x = rand_meshes(synthetic_hierarchy, 2, seed=11, dtype=torch.float64).requires_grad_()
    go = torch.randn(2, 5, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    params = [x] + list(enc.parameters())
    got = torch.autograd.grad(enc(x), params, go)
    want = torch.autograd.grad(encoder_reference(enc, synthetic_hierarchy, x), params, go)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
        assert g.abs().sum() > 0


# ---------------------------------------------------------------------------- initialisation
@pytest.mark.parametrize("kind", KINDS)
def test_reset_parameters_gives_a_xavier_fc_with_zero_bias_and_resets_each_conv(synthetic_hierarchy, kind):
    torch.manual_seed(13)
    enc = build_encoder(kind, synthetic_hierarchy)
    bound = (6 / (enc.fc.in_features + enc.fc.out_features)) ** 0.5
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(14)) + 5)  # far from any init
    before = [p.detach().clone() for p in enc.parameters()]
    torch.manual_seed(15)
    enc.reset_parameters()
    assert torch.equal(enc.fc.bias, torch.zeros_like(enc.fc.bias))
    w = enc.fc.weight.detach()
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound  # uniform on [-bound, bound]
    assert all(not torch.equal(p, q) for p, q in zip(enc.parameters(), before))  # every conv reset too
    assert all(p.abs().max() < 5 for p in enc.parameters())


class _PointwiseEncoder(GraphEncoder):
    """A graph encoder whose "convolution" is a per-vertex product with a plain parameter (no reset_parameters)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._build_convs()

    def _make_conv(self, level: int, in_channels: int, out_channels: int) -> nn.Module:
        return _Pointwise(in_channels, out_channels, seed=level)


class _Pointwise(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(100 + seed)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.randn(in_channels, out_channels, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight


def test_a_subclass_supplies_the_convolution(synthetic_hierarchy):
    """GraphEncoder runs whatever ``_make_conv`` builds; reset_parameters leaves a conv without one alone."""
    h = synthetic_hierarchy
    torch.manual_seed(16)
    enc = _PointwiseEncoder(4, (6, 7), 3, h.sizes[:3], h.down[:2], activation="tanh")
    assert [(c.in_channels, c.out_channels) for c in enc.convs] == [(4, 6), (6, 7)]
    weights = [c.weight.detach().clone() for c in enc.convs]
    enc.reset_parameters()
    assert all(torch.equal(c.weight, w) for c, w in zip(enc.convs, weights))
    x = rand_meshes(h, 2, seed=17, channels=4)
    z = enc(x)
    assert z.shape == (2, 3)
    torch.testing.assert_close(z, encoder_reference(enc, h, x))


# ----------------------------------------------------------------------------------- checks
def _spiral_args(hierarchy, L: int = 2) -> dict:
    return dict(in_channels=3, channels=(8, 12)[:L], latent_size=5,
                spirals=[hierarchy.levels[l].spirals for l in range(L)], down_index=list(hierarchy.down[:L]),
                num_vertices=hierarchy.sizes[: L + 1])


def test_constructor_checks_down_index_naming_the_level(synthetic_hierarchy):
    h = synthetic_hierarchy
    good = _spiral_args(h)
    assert SpiralEncoder(**good).num_vertices == (90, 40, 18)
    d0, d1 = good["down_index"]
    with pytest.raises(ValueError, match=r"^down_index: expected 2 tensors, got 1$"):
        SpiralEncoder(**{**good, "down_index": [d0]})
    with pytest.raises(ValueError, match=r"^down_index\[1\]: expected shape \(18,\), got \(17,\)$"):
        SpiralEncoder(**{**good, "down_index": [d0, d1[:-1]]})
    with pytest.raises(ValueError, match=r"^down_index\[0\]: expected indices in \[0, 90\) \(level 0 size\), got range \[\d+, 90\]$"):
        SpiralEncoder(**{**good, "down_index": [torch.cat([d0[:-1], torch.tensor([90])]), d1]})
    with pytest.raises(ValueError, match=r"^down_index\[1\]: expected shape \(19,\), got \(18,\)$"):
        SpiralEncoder(**{**good, "num_vertices": (90, 40, 19)})  # the sizes and the selections disagree


@pytest.mark.parametrize("bad", ["ndarray", "negative", "int32"])
def test_constructor_names_down_index_for_every_bad_entry(synthetic_hierarchy, bad):
    """A numpy entry failed with AttributeError ('numel'), a negative or int32 one with DownSample's 'index: ...'
    error, naming neither down_index nor the level."""
    good = _spiral_args(synthetic_hierarchy)
    d0, d1 = good["down_index"]
    entry = {"ndarray": d0.numpy(), "negative": d0 - 1000, "int32": d0.int()}[bad]
    want = {"ndarray": r"expected a torch.Tensor, got ndarray",
            "negative": r"expected indices in \[0, 90\) \(level 0 size\), got range \[-\d+, -\d+\]",
            "int32": r"expected dtype torch.int64, got torch.int32"}[bad]
    with pytest.raises((TypeError, ValueError), match=rf"^down_index\[0\]: {want}$"):
        SpiralEncoder(**{**good, "down_index": [entry, d1]})


@pytest.mark.parametrize("kind", KINDS)
def test_forward_checks_type_shape_dtype_and_device(synthetic_hierarchy, kind):
    enc = build_encoder(kind, synthetic_hierarchy)
    x = rand_meshes(synthetic_hierarchy, 2, seed=18)
    with pytest.raises(TypeError, match=r"^x: expected a torch.Tensor, got ndarray$"):
        enc(x.numpy())
    for bad in (x.reshape(-1), x[None], x[:, :-1], x[..., :2]):
        with pytest.raises(ValueError, match=rf"^x: expected shape \(B, 90, 3\) or \(90, 3\), "
                                             rf"got {re.escape(str(tuple(bad.shape)))}$"):
            enc(bad)
    for bad in (x.double(), x.half(), (10 * x).long()):
        with pytest.raises(TypeError, match=rf"^x: expected dtype torch.float32 \(the encoder's\), got {bad.dtype}$"):
            enc(bad)
    with pytest.raises(ValueError, match=r"^x: expected a tensor on cpu \(the encoder's\), got one on meta$"):
        enc(x.to("meta"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_names_the_encoders_cuda_device(synthetic_hierarchy):
    enc = build_encoder("spiral", synthetic_hierarchy).cuda()
    x = rand_meshes(synthetic_hierarchy, 2, seed=19)
    with pytest.raises(ValueError, match=rf"^x: expected a tensor on {enc.fc.weight.device} \(the encoder's\), "
                                         rf"got one on cpu$"):
        enc(x)


# ---------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("kind, extra", [("spiral", {"spiral_length": [9, 9]}), ("cheb", {"K": 3})])
def test_config_names_every_constructor_argument(synthetic_hierarchy, kind, extra):
    enc = build_encoder(kind, synthetic_hierarchy, in_channels=4, activation="silu")
    config = enc.config()
    assert config == {"class": type(enc).__name__, "in_channels": 4, "channels": [8, 12], "latent_size": 5,
                      "activation": "silu", "num_vertices": [90, 40, 18], "template_hash": "synthetic-0", **extra}
    again = encoder_from_config(json.loads(json.dumps(config)), synthetic_hierarchy)
    assert type(again) is type(enc) and again.config() == config and repr(again) == repr(enc)
    assert "in_channels=4, channels=(8, 12), latent_size=5, num_vertices=(90, 40, 18), activation='silu'" \
        in repr(enc)


def test_spiral_config_keeps_truncated_spirals(synthetic_hierarchy):
    enc = build_encoder("spiral", synthetic_hierarchy, spiral_length=[5, 7])
    assert enc.spiral_lengths == (5, 7) and enc.config()["spiral_length"] == [5, 7]
    again = encoder_from_config(enc.config(), synthetic_hierarchy)
    assert [c.spiral_length for c in again.convs] == [5, 7]


@pytest.mark.parametrize("config, error, message", [
    ([("class", "SpiralEncoder")], TypeError, "config: expected a dict, got list"),
    ({"class": "SpiralDecoder"}, ValueError,
     "config: expected 'class' to be one of ['ChebEncoder', 'SpiralEncoder'], got 'SpiralDecoder'"),
    ({}, ValueError, "config: expected 'class' to be one of ['ChebEncoder', 'SpiralEncoder'], got None"),
])
def test_encoder_from_config_names_a_bad_config(synthetic_hierarchy, config, error, message):
    with pytest.raises(error, match=f"^{re.escape(message)}$"):
        encoder_from_config(config, synthetic_hierarchy)


def test_encoder_from_config_checks_the_template(synthetic_hierarchy, make_hierarchy):
    config = build_encoder("cheb", synthetic_hierarchy).config()
    other = make_hierarchy(seed=1)  # the same sizes, another template
    with pytest.raises(HierarchyError, match=r"^hierarchy: expected template hash synthetic-0 \(from the config\), "
                                             r"got synthetic-1$"):
        encoder_from_config(config, other)
