"""Tests of the graph encoders (spiral, Chebyshev, PyG): forward against a loop reference, construction and
input checks, config round trips, model files, devices and dtypes."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from mesh_decoder.errors import HierarchyError
from mesh_decoder.nn import plain_formulation
from mesh_decoder.nn.decoders import ACTIVATIONS
from mesh_decoder.nn.encoders import GraphEncoder, PyGEncoder, SpiralEncoder, encoder_from_config
from tests.nn.reference import build_encoder, edge_set, encoder_reference, rand_meshes

DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])
KINDS = ["spiral", "cheb", "pyg"]


def _encoder(kind: str, hierarchy, **kw) -> GraphEncoder:
    """``build_encoder``'s small encoders, and a SAGEConv :class:`PyGEncoder` for ``"pyg"``."""
    if kind != "pyg":
        return build_encoder(kind, hierarchy, **kw)
    kw.setdefault("channels", (8, 12))
    kw.setdefault("latent_size", 5)
    return PyGEncoder.from_hierarchy(hierarchy, kw.pop("conv", "SAGEConv"), **kw)


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


@pytest.mark.parametrize("kind", KINDS)
def test_encoder_config_round_trip(synthetic_hierarchy, make_hierarchy, kind):
    enc = _encoder(kind, synthetic_hierarchy, activation="relu")
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
    ref = _encoder(kind, synthetic_hierarchy).double()
    x = rand_meshes(synthetic_hierarchy, 3, seed=4, dtype=torch.float64)
    want = encoder_reference(ref, synthetic_hierarchy, x)
    enc = _encoder(kind, synthetic_hierarchy)
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
        encoders.append(_encoder(kind, synthetic_hierarchy))
    a, b, c = encoders
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(a(x), b(x))
    assert not torch.allclose(a(x), c(x))


@pytest.mark.parametrize("kind", KINDS)
def test_inference_paths_agree_with_the_recorded_one(synthetic_hierarchy, kind):
    """No grad (the layers' fast paths), grad mode and plain_formulation() give one encoding."""
    torch.manual_seed(8)
    enc = _encoder(kind, synthetic_hierarchy)
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
    enc = _encoder(kind, synthetic_hierarchy).double()
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
    enc = _encoder(kind, synthetic_hierarchy)
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
    enc = _encoder(kind, synthetic_hierarchy)
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


@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_under_autocast_the_encoder_and_autoencoder_take_bf16_meshes_as_the_decoder_takes_bf16_codes(
        synthetic_hierarchy, kind):
    """Under autocast a user's layer before the encoder gives bf16, which the decoder took but the encoder and
    MeshAutoencoder.encode refused: 'x: expected dtype torch.float32 (the encoder's)'."""
    from tests.nn.test_autoencoder import build_autoencoder

    torch.manual_seed(19)
    enc = _encoder(kind, synthetic_hierarchy)
    x = rand_meshes(synthetic_hierarchy, 3, seed=20)
    ae = build_autoencoder(kind, synthetic_hierarchy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = enc(x), enc(x.bfloat16())
        codes = ae.encode(x.bfloat16())
    scale = float(want.detach().abs().max())
    torch.testing.assert_close(got.float(), want.float(), rtol=0, atol=5e-2 * scale)
    assert codes.shape == (3, ae.latent_size) and torch.isfinite(codes).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # other dtypes than float32 and autocast's: refused
        for other in (torch.float64, torch.float16):
            with pytest.raises(TypeError, match=rf"^x: expected dtype torch.float32 \(the encoder's\), got {other}$"):
                enc(x.to(other))
            with pytest.raises(TypeError, match=rf"^x: expected dtype torch.float32 \(the autoencoder's\), got "
                                                rf"{other}$"):
                ae.encode(x.to(other))
            with pytest.raises(TypeError, match=rf"^z: expected dtype torch.float32 \(the decoder's\), got {other}$"):
                ae.decoder(codes.to(other))
    with pytest.raises(TypeError, match=r"^x: expected dtype torch.float32 \(the encoder's\), got torch.bfloat16$"):
        enc(x.bfloat16())  # outside autocast
    with pytest.raises(TypeError, match=r"^x: expected dtype torch.float32 \(the autoencoder's\)"):
        ae.encode(x.bfloat16())


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_names_the_encoders_cuda_device(synthetic_hierarchy):
    enc = build_encoder("spiral", synthetic_hierarchy).cuda()
    x = rand_meshes(synthetic_hierarchy, 2, seed=19)
    with pytest.raises(ValueError, match=rf"^x: expected a tensor on {enc.fc.weight.device} \(the encoder's\), "
                                         rf"got one on cpu$"):
        enc(x)


# ---------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("kind, extra", [("spiral", {"spiral_length": [9, 9]}), ("cheb", {"K": 3}),
                                         ("pyg", {"conv": "SAGEConv", "conv_kwargs": {}, "mode": "auto", "pseudo": None})])
def test_config_names_every_constructor_argument(synthetic_hierarchy, kind, extra):
    enc = _encoder(kind, synthetic_hierarchy, in_channels=4, activation="silu")
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
     "config: expected 'class' to be one of ['ChebEncoder', 'PyGEncoder', 'SpiralEncoder'] or a GraphEncoder "
     "subclass registered with mesh_decoder.model_files.register_model, got 'SpiralDecoder'"),
    ({}, ValueError, "config: expected 'class' to be one of ['ChebEncoder', 'PyGEncoder', 'SpiralEncoder'] or a "
                     "GraphEncoder subclass registered with mesh_decoder.model_files.register_model, got None"),
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


# ---------------------------------------------------------------------------------- PyG encoder
def _pyg_level_graph(hierarchy, level: int, pseudo: str | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Level ``level``'s directed edges ``(2, E)`` by a loop over its faces (both directions, no self loops) and,
    with ``pseudo="cartesian"``, PyG's ``Cartesian(norm=True)`` written out in float32: edge ``(i, j)`` gets
    ``(pos[i] - pos[j]) / (2 max |pos[i] - pos[j]|) + 1/2``, the maximum over the level's edges."""
    lvl = hierarchy.levels[level]
    edges = torch.tensor(sorted(edge_set(lvl.faces)), dtype=torch.int64).T  # (2, E)
    if pseudo is None:
        return edges, None
    if pseudo != "cartesian":
        raise NotImplementedError(pseudo)
    pos = lvl.vertices.float()  # (V, 3)
    cart = pos[edges[0]] - pos[edges[1]]  # (E, 3)
    return edges, cart / (2 * float(cart.abs().max())) + 0.5  # (E, 3)


def pyg_encoder_reference(enc: PyGEncoder, hierarchy, x: torch.Tensor, pseudo: str | None = None) -> torch.Tensor:
    """The PyG encoder written out one sample at a time: each level's torch_geometric conv (the encoder's own
    modules) called directly as ``conv(x_b, edge_index[, edge_attr])`` on the level's face edges, the activation,
    the vertex selection ``x[down_index]``, flatten and an explicit FC. Shapes: ``(B, V_0, C) -> (B, Z)``."""
    act = ACTIVATIONS[enc.activation]()
    graphs = [_pyg_level_graph(hierarchy, level, pseudo) for level in range(len(enc.convs))]
    codes = []
    for b in range(x.shape[0]):
        h = x[b]  # (V_0, C_in)
        for level, layer in enumerate(enc.convs):
            edges, attr = graphs[level]
            h = act(layer.conv(h, edges) if attr is None else layer.conv(h, edges, attr.to(h.dtype)))  # (V_l, c_l)
            h = h[hierarchy.down[level]]  # (V_{l+1}, c_l)
        codes.append(enc.fc.weight @ h.reshape(-1) + enc.fc.bias)  # (Z,)
    return torch.stack(codes)  # (B, Z)


PYG_CONVS = [("GCNConv", {}, None), ("SAGEConv", {}, None), ("GMMConv", {"dim": 3, "kernel_size": 2}, "cartesian")]
PYG_IDS = [conv for conv, _, _ in PYG_CONVS]


@pytest.mark.parametrize("conv, conv_kwargs, pseudo", PYG_CONVS, ids=PYG_IDS)
def test_pyg_encoder_matches_a_per_sample_loop_of_its_convs(synthetic_hierarchy, conv, conv_kwargs, pseudo):
    h = synthetic_hierarchy
    torch.manual_seed(30)
    enc = PyGEncoder.from_hierarchy(h, conv, latent_size=5, channels=(8, 12), conv_kwargs=conv_kwargs,
                                    pseudo=pseudo).double()
    assert [type(layer.conv).__name__ for layer in enc.convs] == [conv, conv]
    assert [layer.mode for layer in enc.convs] == ["union" if pseudo else "batched"] * 2
    x = rand_meshes(h, 3, seed=31, dtype=torch.float64)
    want = pyg_encoder_reference(enc, h, x, pseudo)
    z = enc(x)
    assert z.shape == (3, 5) and z.dtype == torch.float64
    torch.testing.assert_close(z, want, rtol=1e-10, atol=1e-10)
    for b in range(3):
        torch.testing.assert_close(enc(x[b]), want[b], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("conv, conv_kwargs, pseudo", PYG_CONVS, ids=PYG_IDS)
def test_pyg_encoder_gradients_match_the_loop_and_reach_every_parameter(synthetic_hierarchy, conv, conv_kwargs,
                                                                         pseudo):
    h = synthetic_hierarchy
    torch.manual_seed(32)
    enc = PyGEncoder.from_hierarchy(h, conv, latent_size=5, channels=(8, 12), conv_kwargs=conv_kwargs,
                                    pseudo=pseudo, activation="tanh").double()
    x = rand_meshes(h, 2, seed=33, dtype=torch.float64).requires_grad_()
    go = torch.randn(2, 5, generator=torch.Generator().manual_seed(34), dtype=torch.float64)
    names, params = zip(("x", x), *enc.named_parameters())
    got = torch.autograd.grad(enc(x), params, go)
    want = torch.autograd.grad(pyg_encoder_reference(enc, h, x, pseudo), params, go)
    for name, g, w in zip(names, got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")
        assert g.abs().sum() > 0, name


@pytest.mark.parametrize("conv, conv_kwargs, pseudo", PYG_CONVS, ids=PYG_IDS)
def test_pyg_encoder_config_round_trip_gives_identical_outputs(synthetic_hierarchy, make_hierarchy, conv,
                                                                conv_kwargs, pseudo):
    h = synthetic_hierarchy
    torch.manual_seed(35)
    enc = PyGEncoder.from_hierarchy(h, conv, latent_size=5, channels=(8, 12), conv_kwargs=conv_kwargs,
                                    pseudo=pseudo, activation="silu")
    config = json.loads(json.dumps(enc.config()))
    assert config == {"class": "PyGEncoder", "in_channels": 3, "channels": [8, 12], "latent_size": 5,
                      "activation": "silu", "num_vertices": [90, 40, 18], "template_hash": "synthetic-0",
                      "conv": conv, "conv_kwargs": conv_kwargs, "mode": "auto", "pseudo": pseudo}
    assert repr(enc).startswith("PyGEncoder(\n  in_channels=3, channels=(8, 12), latent_size=5, "
                                f"num_vertices=(90, 40, 18), activation='silu', conv={conv}\n")
    x = rand_meshes(h, 3, seed=36)
    for again in (encoder_from_config(config, h), PyGEncoder.from_config(config, h)):
        again.load_state_dict(enc.state_dict())
        assert type(again) is PyGEncoder and again.config() == config and repr(again) == repr(enc)
        assert torch.equal(again(x), enc(x))
    with pytest.raises(HierarchyError, match="expected level sizes"):
        PyGEncoder.from_config(config, make_hierarchy(sizes=(90, 41, 18, 8)))
    with pytest.raises(HierarchyError, match="expected template hash synthetic-0"):
        PyGEncoder.from_config(config, make_hierarchy(seed=1))


def test_an_autoencoder_with_a_pyg_encoder_saves_and_loads_through_model_files(synthetic_hierarchy, tmp_path):
    from mesh_decoder.model_files import load_model, save_model
    from mesh_decoder.nn import MeshAutoencoder, PyGDecoder

    h = synthetic_hierarchy
    torch.manual_seed(37)
    enc = PyGEncoder.from_hierarchy(h, "GMMConv", conv_kwargs={"dim": 3, "kernel_size": 2}, pseudo="cartesian",
                                    latent_size=5, channels=(8, 12))
    model = MeshAutoencoder(enc, PyGDecoder.from_hierarchy(h, "SAGEConv", latent_size=5, channels=(8, 12)))
    g = torch.Generator().manual_seed(38)
    model.set_normalization(torch.randn(90, 3, generator=g), torch.rand(90, 3, generator=g) + 0.5)
    x = rand_meshes(h, 3, seed=39)
    with torch.no_grad():
        codes, meshes = model.encode(x), model(x)
    save_model(model, tmp_path / "ae.safetensors", hierarchy=h)
    loaded = load_model(tmp_path / "ae.safetensors", h)
    assert type(loaded) is MeshAutoencoder and type(loaded.encoder) is PyGEncoder
    assert loaded.config() == model.config()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), codes) and torch.equal(loaded(x), meshes)
    save_model(enc, tmp_path / "encoder.safetensors", hierarchy=h)  # the encoder alone, as the other encoders
    alone = load_model(tmp_path / "encoder.safetensors", h)
    assert type(alone) is PyGEncoder and alone.config() == enc.config()
    with torch.no_grad():
        assert torch.equal(alone(x), enc(x))


def test_a_pyg_encoder_from_a_factory_needs_conv_to_rebuild_and_is_not_saved(synthetic_hierarchy, tmp_path):
    from torch_geometric.nn import SAGEConv

    from mesh_decoder.model_files import save_model
    from mesh_decoder.nn import MeshAutoencoder, PyGDecoder

    h = synthetic_hierarchy

    def factory(cin, cout):
        return SAGEConv(cin, cout, aggr="max")

    torch.manual_seed(40)
    enc = PyGEncoder.from_hierarchy(h, factory, latent_size=5, channels=(8, 12))
    assert all(type(layer.conv) is SAGEConv and layer.conv.aggr == "max" for layer in enc.convs)
    config = json.loads(json.dumps(enc.config()))
    assert config["conv"] is None and config["conv_kwargs"] == {} and repr(enc).count("conv=factory") == 1
    for rebuild in (encoder_from_config, PyGEncoder.from_config):
        with pytest.raises(ValueError, match=r"^config: the conv was a factory function or a class outside "
                                             r"torch_geometric\.nn, which a config cannot store by name; pass conv=$"):
            rebuild(config, h)
    again = PyGEncoder.from_config(config, h, conv=factory)
    again.load_state_dict(enc.state_dict())
    x = rand_meshes(h, 2, seed=41)
    assert torch.equal(again(x), enc(x))
    with pytest.raises(ValueError, match="^conv_kwargs: expected none with a conv factory function, got some$"):
        PyGEncoder.from_hierarchy(h, factory, conv_kwargs={"aggr": "mean"}, latent_size=5, channels=(8, 12))
    model = MeshAutoencoder(enc, PyGDecoder.from_hierarchy(h, "GCNConv", latent_size=5, channels=(8, 12)))
    for module, name in ((enc, "encoder.safetensors"), (model, "ae.safetensors")):
        with pytest.raises(ValueError, match="^model: a PyGEncoder built with a conv factory function or a class "
                                             "outside torch_geometric.nn cannot be stored"):
            save_model(module, tmp_path / name, hierarchy=h)
        assert not (tmp_path / name).exists()


def test_pyg_encoder_construction_errors(synthetic_hierarchy):
    h = synthetic_hierarchy
    edges = [PyGEncoder.hierarchy_edges(h, level) for level in range(2)]
    gmm = dict(conv_kwargs={"dim": 3, "kernel_size": 2}, pseudo="cartesian")
    assert PyGEncoder(3, (8, 12), 5, "GCNConv", edges, h.down[:2], h.sizes[:3]).num_vertices == (90, 40, 18)
    with pytest.raises(ValueError, match=r"^edge_index: expected 2 tensors \(levels 0..1\), got 1$"):
        PyGEncoder(3, (8, 12), 5, "GCNConv", edges[:1], h.down[:2], h.sizes[:3])
    with pytest.raises(ValueError, match=r"^level_vertices: expected 2 tensors \(V_l, 3\) with pseudo='cartesian', "
                                         r"got none$"):
        PyGEncoder(3, (8, 12), 5, "GMMConv", edges, h.down[:2], h.sizes[:3], **gmm)
    with pytest.raises(ValueError, match=r"^level_vertices\[1\]: expected shape \(40, 3\)"):
        PyGEncoder(3, (8, 12), 5, "GMMConv", edges, h.down[:2], h.sizes[:3], **gmm,
                   level_vertices=[h.levels[0].vertices, h.levels[0].vertices])
    with pytest.raises(ValueError, match=r"^pseudo: expected one of \['cartesian', 'distance', 'spherical'\] or "
                                         r"None, got 'polar'$"):
        PyGEncoder.from_hierarchy(h, "GMMConv", latent_size=5, channels=(8, 12), **{**gmm, "pseudo": "polar"})
    with pytest.raises(ValueError, match="^conv: expected the name of a torch_geometric.nn conv class, got 'GCNconv'$"):
        PyGEncoder.from_hierarchy(h, "GCNconv", latent_size=5, channels=(8, 12))
    with pytest.raises(ValueError, match=r"^mode: expected one of \('auto', 'batched', 'union'\), got 'serial'$"):
        PyGEncoder.from_hierarchy(h, "GCNConv", latent_size=5, channels=(8, 12), mode="serial")
    with pytest.raises(HierarchyError, match=r"^hierarchy: expected at least 5 levels for 4 channel entries"):
        PyGEncoder.from_hierarchy(h, "GCNConv", latent_size=5, channels=(8, 8, 8, 8))
