"""Tests of the graph decoders (spiral, Chebyshev, PyG); the presets are in test_presets.py."""

from __future__ import annotations

import copy
import json
import threading

import warnings

import pytest
import torch
from torch import nn

from mesh_decoder.errors import HierarchyError
from mesh_decoder.nn.decoders import (
    ACTIVATIONS,
    ChebDecoder,
    GraphDecoder,
    JointDecoder,
    PyGDecoder,
    SpiralDecoder,
    decoder_from_config,
)
from mesh_decoder.nn.encoders import SpiralEncoder
from mesh_decoder.nn.spiral_conv import weight_blocks_scope
from tests.nn.reference import rand_latent

DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.cuda)] if torch.cuda.is_available() else [])
HIERARCHIES = ["synthetic_hierarchy", "face_hierarchy", "head_hierarchy", "sphere_hierarchy"]


def build(kind: str, hierarchy, **kw) -> GraphDecoder:
    """A small decoder of each kind on the first 3 levels (2 up-sampling steps)."""
    kw.setdefault("channels", (8, 12))
    kw.setdefault("latent_size", 5)
    if kind == "spiral":
        return SpiralDecoder.from_hierarchy(hierarchy, **kw)
    if kind == "cheb":
        return ChebDecoder.from_hierarchy(hierarchy, K=3, **kw)
    return PyGDecoder.from_hierarchy(hierarchy, "GCNConv", **kw)


def dense_up(hierarchy, level: int) -> torch.Tensor:
    """Dense ``(V_l, V_{l+1})`` up-sampling matrix, filled by a loop."""
    idx, w = hierarchy.up_index[level], hierarchy.up_weight[level]
    U = torch.zeros(hierarchy.sizes[level], hierarchy.sizes[level + 1], dtype=torch.float64)
    for v in range(idx.shape[0]):
        for k in range(3):
            U[v, idx[v, k]] += float(w[v, k])
    return U


#: Each activation's formula, written independently of the library's table.
ACTIVATION_FORMULAS = {
    "elu": lambda x: torch.where(x > 0, x, torch.exp(x) - 1),
    "relu": lambda x: torch.where(x > 0, x, torch.zeros_like(x)),
    "leaky_relu": lambda x: torch.where(x > 0, x, 0.01 * x),
    "silu": lambda x: x / (1 + torch.exp(-x)),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / 2 ** 0.5)),
    "tanh": lambda x: (torch.exp(2 * x) - 1) / (torch.exp(2 * x) + 1),
    "softplus": lambda x: torch.log1p(torch.exp(x)),
}


def decoder_reference(dec: GraphDecoder, hierarchy, z: torch.Tensor) -> torch.Tensor:
    """The decoder written out level by level: explicit FC, dense up-sampling, the decoder's convs."""
    L = len(dec.channels)
    act = ACTIVATION_FORMULAS[dec.activation]
    x = z @ dec.fc.weight.T + dec.fc.bias  # (B, V_L * c)
    x = x.reshape(z.shape[0], hierarchy.sizes[L], dec.channels[-1])
    for i, level in enumerate(range(L - 1, -1, -1)):
        x = torch.einsum("uv,bvc->buc", dense_up(hierarchy, level).to(x.dtype), x)
        x = act(dec.convs[i](x))
    return dec.out_conv(x) * dec.std + dec.mean


def randomise_normalization(dec: GraphDecoder, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    V, C = dec.num_vertices[0], dec.out_channels
    mean = torch.randn(V, C, generator=g)
    std = 0.5 + torch.rand(V, C, generator=g)
    dec.set_normalization(mean, std)
    return mean, std


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("hierarchy_name", HIERARCHIES)
@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
def test_decoder_matches_reference_and_is_batch_consistent(request, hierarchy_name, kind):
    hierarchy = request.getfixturevalue(hierarchy_name)
    torch.manual_seed(0)
    dec = build(kind, hierarchy, out_channels=4).double()
    randomise_normalization(dec, seed=1)
    z = rand_latent(dec, 3, seed=2, dtype=torch.float64)
    out = dec(z)
    assert out.shape == (3, hierarchy.sizes[0], 4)
    torch.testing.assert_close(out, decoder_reference(dec, hierarchy, z))
    for b in range(3):
        torch.testing.assert_close(dec(z[b]), out[b])  # unbatched (Z,) input
        torch.testing.assert_close(dec(z[b : b + 1])[0], out[b])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
def test_decoder_device_and_dtype(synthetic_hierarchy, kind, dtype, device):
    ref_dec = build(kind, synthetic_hierarchy).double()
    randomise_normalization(ref_dec, seed=20)
    z = rand_latent(ref_dec, 3, seed=21, dtype=torch.float64)
    ref = ref_dec(z)
    dec = ref_dec.to(device=device, dtype=dtype)
    out = dec(z.to(device=device, dtype=dtype))
    assert out.device.type == device and out.dtype == dtype
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(out.cpu().double(), ref, **tol)
    if device != "cpu":
        with pytest.raises(ValueError, match="expected a tensor on"):
            dec(z.to(dtype))


@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
def test_normalization_is_undone(synthetic_hierarchy, kind):
    dec = build(kind, synthetic_hierarchy)
    z = rand_latent(dec, 2, seed=3)
    raw = dec(z)
    torch.testing.assert_close(dec.decode_normalized(z), raw)  # defaults: mean 0, std 1
    mean, std = randomise_normalization(dec, seed=4)
    torch.testing.assert_close(dec(z), raw * std + mean)
    assert {"mean", "std"} <= {k for k, _ in dec.named_buffers()}
    assert torch.equal(dec.state_dict()["std"], std)
    # per-channel broadcasting
    dec.set_normalization(torch.tensor([1.0, 2.0, 3.0]), 2.0)
    torch.testing.assert_close(dec(z), raw * 2.0 + torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="std: expected positive"):
        dec.set_normalization(0.0, torch.zeros(3))
    with pytest.raises(ValueError, match=r"mean: expected shape \(90, 3\), \(3,\) or a scalar, got \(4,\)"):
        dec.set_normalization(torch.zeros(4), 1.0)
    # a rejected call changes neither buffer; values are checked as the buffers will hold them
    before = {k: v.clone() for k, v in dec.named_buffers() if k in ("mean", "std")}
    for mean, std, message in ((torch.randn(3), -torch.rand(3), "std: expected positive values in torch.float32"),
                               (torch.randn(3), 1e-50, "std: expected positive values in torch.float32"),
                               (1e39, 1.0, "mean: expected finite values in torch.float32")):
        with pytest.raises(ValueError, match=message):
            dec.set_normalization(mean, std)
        assert all(torch.equal(getattr(dec, k), v) for k, v in before.items())


def test_spiralnetpp_architecture(synthetic_hierarchy, make_hierarchy):
    """channels (32, 32, 32, 64): FC -> V_L*64, convs 64->64, 64->32, 32->32, 32->32, out 32->3."""
    h = make_hierarchy(sizes=(60, 30, 16, 8, 4), seed=3)
    dec = SpiralDecoder.from_hierarchy(h, latent_size=16, channels=(32, 32, 32, 64))
    assert dec.fc.in_features == 16 and dec.fc.out_features == 4 * 64
    assert [(c.in_channels, c.out_channels) for c in dec.convs] == [(64, 64), (64, 32), (32, 32), (32, 32)]
    assert (dec.out_conv.in_channels, dec.out_conv.out_channels) == (32, 3)
    # block i up-samples to level L-1-i and convolves there
    z = rand_latent(dec, 2, seed=5)
    assert dec(z).shape == (2, 60, 3)
    for i, level in enumerate([3, 2, 1, 0]):
        assert dec.ups[i](torch.zeros(h.sizes[level + 1], 1)).shape[0] == h.sizes[level]
    assert "SpiralConv" in repr(dec) and "latent_size=16" in repr(dec)


def test_spiral_length_truncation(synthetic_hierarchy, make_hierarchy):
    dec = build("spiral", synthetic_hierarchy, spiral_length=5)
    assert dec.spiral_lengths == (5, 5)
    z = rand_latent(dec, 2, seed=6)
    # the same weights on a hierarchy whose spirals are cut to 5 give the same output
    h5 = make_hierarchy()
    for lvl in h5.levels:
        lvl.spirals = lvl.spirals[:, :5].contiguous()
    ref = build("spiral", h5)
    ref.load_state_dict(dec.state_dict())
    torch.testing.assert_close(dec(z), ref(z))
    assert build("spiral", synthetic_hierarchy, spiral_length=[9, 4]).spiral_lengths == (9, 4)
    with pytest.raises(ValueError, match="at most the hierarchy's spiral length 9"):
        build("spiral", synthetic_hierarchy, spiral_length=12)
    dilated = make_hierarchy(dilation=2)
    with pytest.raises(ValueError, match="dilation 1"):
        build("spiral", dilated, spiral_length=5)
    assert build("spiral", dilated).dilations == (2, 2)  # full length: the hierarchy's dilation


@pytest.mark.parametrize("build_", [build, lambda kind, h, **kw: SpiralEncoder.from_hierarchy(
    h, latent_size=4, channels=(8, 8), **kw)])
def test_spiral_length_is_checked_even_where_it_equals_the_hierarchys(synthetic_hierarchy, build_):
    # 9.7, "99" and junk past the levels had passed unchecked when int(value) matched the hierarchy's 9
    h = synthetic_hierarchy
    assert h.num_levels == 4 and int(h.levels[0].spirals.shape[1]) == 9
    with pytest.raises(TypeError, match=r"^spiral_length\[0\]: expected a positive int, got float 9.7$"):
        build_("spiral", h, spiral_length=[9.7, 9])
    for bad in ([9, 9, 9, 9, 9], [9]):  # a sequence of another length: a ValueError
        with pytest.raises(ValueError, match=r"^spiral_length: expected an int or a sequence of 2 to 4 values, got "):
            build_("spiral", h, spiral_length=bad)
    with pytest.raises(TypeError, match=r"^spiral_length: expected an int or a sequence of 2 to 4 values, got str "
                                        r"'99'$"):  # neither an int nor a sequence of them: a TypeError
        build_("spiral", h, spiral_length="99")
    with pytest.raises(TypeError, match=r"^spiral_length\[2\]: expected a positive int, got str 'x'$"):
        build_("spiral", h, spiral_length=[9, 9, "x"])
    # one length per hierarchy level (the hierarchy's own list) is accepted; the coarsest is unused
    assert build_("spiral", h, spiral_length=[9, 9, 9, 9]).config()["spiral_length"] == [9, 9]


def test_every_activation_has_a_reference_formula():
    assert set(ACTIVATIONS) == set(ACTIVATION_FORMULAS)
    import mesh_decoder.nn

    # the decoders' docs point to ACTIVATIONS, which mesh_decoder.nn did not export
    assert mesh_decoder.nn.ACTIVATIONS is ACTIVATIONS and "ACTIVATIONS" in mesh_decoder.nn.__all__


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activations(synthetic_hierarchy, activation):
    dec = build("spiral", synthetic_hierarchy, activation=activation)
    x = torch.randn(1000, dtype=torch.float64) * 3
    torch.testing.assert_close(dec.act(x),
                               ACTIVATION_FORMULAS[activation](x), rtol=1e-12, atol=1e-12)
    z = rand_latent(dec, 2, seed=int(torch.randint(1 << 30, ())))
    torch.testing.assert_close(dec(z), decoder_reference(dec, synthetic_hierarchy, z))


def test_input_validation(synthetic_hierarchy):
    dec = build("cheb", synthetic_hierarchy)
    with pytest.raises(ValueError, match=r"z: expected shape \(B, 5\) or \(5,\), got \(2, 4\)"):
        dec(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"got \(1, 2, 5\)"):
        dec(torch.randn(1, 2, 5))
    with pytest.raises(TypeError, match="z: expected dtype torch.float32 .* got torch.int64"):
        dec(torch.ones(2, 5, dtype=torch.int64))
    with pytest.raises(TypeError, match="got torch.float64"):
        dec(torch.randn(2, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="expected a torch.Tensor, got list"):
        dec([0.0] * 5)
    with pytest.raises(ValueError, match="activation: expected one of"):
        build("spiral", synthetic_hierarchy, activation="swish2")
    with pytest.raises(ValueError, match="channels: expected"):
        build("spiral", synthetic_hierarchy, channels=())
    with pytest.raises(HierarchyError, match="expected at least 5 levels"):
        build("spiral", synthetic_hierarchy, channels=(4, 4, 4, 4))


def test_check_finite(synthetic_hierarchy):
    dec = build("spiral", synthetic_hierarchy)
    z = rand_latent(dec, 2, seed=8)
    z[1, 2] = float("nan")
    assert torch.isnan(dec(z)).any()  # off by default: no check, NaN propagates
    dec.check_finite = True
    with pytest.raises(ValueError, match="z: expected finite latents"):
        dec(z)
    dec(z[:1])  # a finite latent passes
    with torch.no_grad():
        for p in dec.out_conv.parameters():
            p.fill_(float("inf"))
    with pytest.raises(ValueError, match="output: expected finite"):
        dec(z[:1])
    assert build("cheb", synthetic_hierarchy, check_finite=True).check_finite
    with pytest.raises(TypeError, match=r"check_finite: expected True or False, got 'no' \(str\)"):
        build("spiral", synthetic_hierarchy, check_finite="no")  # its truth value would switch the check on


@pytest.mark.parametrize("bad", ["ndarray", "negative", "int32", "too large", "shape"])
def test_constructor_names_up_index_and_its_level_for_every_bad_entry(synthetic_hierarchy, bad):
    """A numpy entry failed with AttributeError ('numel'), a negative or int32 one with UpSample's 'index: ...'
    error, naming neither up_index nor the level."""
    h = synthetic_hierarchy
    good = dict(latent_size=5, channels=(8, 12), spirals=[h.levels[l].spirals for l in range(2)],
                up_index=list(h.up_index[:2]), up_weight=list(h.up_weight[:2]), num_vertices=h.sizes[:3])
    assert SpiralDecoder(**good).num_vertices == tuple(h.sizes[:3])
    u0, u1 = good["up_index"]
    entry = {"ndarray": u1.numpy(), "negative": u1 - 1000, "int32": u1.int(), "too large": u1 + h.sizes[2],
             "shape": u1[:-1]}[bad]
    want = {"ndarray": r"expected a torch.Tensor, got ndarray",
            "negative": rf"expected indices in \[0, {h.sizes[2]}\) \(level 2 size\), got range \[-\d+, -?\d+\]",
            "int32": r"expected dtype torch.int64, got torch.int32",
            "too large": rf"expected indices in \[0, {h.sizes[2]}\) \(level 2 size\), got range \[\d+, \d+\]",
            "shape": rf"expected shape \({h.sizes[1]}, 3\), got \({h.sizes[1] - 1}, 3\)"}[bad]
    with pytest.raises((TypeError, ValueError), match=rf"^up_index\[1\]: {want}$"):
        SpiralDecoder(**{**good, "up_index": [u0, entry]})


# ------------------------------------------------------------------------------ config
@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
def test_config_round_trip(synthetic_hierarchy, kind, make_hierarchy):
    dec = build(kind, synthetic_hierarchy, activation="silu", out_channels=6)
    randomise_normalization(dec, seed=9)
    config = json.loads(json.dumps(dec.config()))
    assert config["class"] == type(dec).__name__
    again = decoder_from_config(config, synthetic_hierarchy)
    assert type(again) is type(dec) and again.config() == dec.config()
    again.load_state_dict(dec.state_dict())
    z = rand_latent(dec, 2, seed=10)
    torch.testing.assert_close(again(z), dec(z))
    other = make_hierarchy(sizes=(91, 40, 18, 8), seed=1)
    with pytest.raises(HierarchyError, match=r"expected level sizes \[90, 40, 18\]"):
        type(dec).from_config(config, other)
    same_sizes = make_hierarchy(seed=2)
    with pytest.raises(HierarchyError, match="template hash synthetic-0"):
        type(dec).from_config(config, same_sizes)
    with pytest.raises(ValueError, match="expected class"):
        ChebDecoder.from_config({**config, "class": "Nope"}, synthetic_hierarchy)
    misspelt = {**config, "chanels": config["channels"]}  # was Python's "unexpected keyword argument 'chanels'"
    with pytest.raises(ValueError, match=rf"^config: unknown key 'chanels' for {type(dec).__name__}; expected some "
                                         r"of \[.*'channels'.*\] \(and 'class', 'num_vertices', 'template_hash'\)$"):
        decoder_from_config(misspelt, synthetic_hierarchy)


def test_pyg_decoder_conv_factory(synthetic_hierarchy):
    from torch_geometric.nn import GraphConv, SAGEConv

    dec = PyGDecoder.from_hierarchy(synthetic_hierarchy, lambda i, o: SAGEConv(i, o), channels=(8, 12), latent_size=5)
    assert all(isinstance(c.conv, SAGEConv) for c in [*dec.convs, dec.out_conv])
    config = json.loads(json.dumps(dec.config()))
    assert config["conv"] is None
    with pytest.raises(ValueError, match="pass conv="):
        PyGDecoder.from_config(config, synthetic_hierarchy)
    again = PyGDecoder.from_config(config, synthetic_hierarchy, conv=lambda i, o: SAGEConv(i, o))
    again.load_state_dict(dec.state_dict())
    z = rand_latent(dec, 2, seed=11)
    torch.testing.assert_close(again(z), dec(z))
    by_class = PyGDecoder.from_hierarchy(synthetic_hierarchy, GraphConv, conv_kwargs={"aggr": "mean"},
                                         channels=(8, 12), latent_size=5)
    assert by_class.config()["conv"] == "GraphConv" and by_class.convs[0].conv.aggr == "mean"
    with pytest.raises(ValueError, match="torch_geometric.nn conv class"):
        PyGDecoder.from_hierarchy(synthetic_hierarchy, "NotAConv", channels=(8, 12))


def test_pyg_hierarchy_edges_are_the_mesh_edges(face_hierarchy):
    """Both directions of every face edge: on a real mesh, the Laplacian's off-diagonal pattern."""
    for level in range(face_hierarchy.num_levels):
        e = PyGDecoder.hierarchy_edges(face_hierarchy, level)
        li = face_hierarchy.levels[level].laplacian_index
        assert (e[0] != e[1]).all()
        assert {tuple(p) for p in e.T.tolist()} == {tuple(p) for p in li.T.tolist() if p[0] != p[1]}


# ----------------------------------------------------------------------------- compile
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
def test_torch_compile_gives_the_same_output(face_hierarchy, kind):
    torch._dynamo.reset()
    dec = build(kind, face_hierarchy).eval()
    randomise_normalization(dec, seed=12)
    z = rand_latent(dec, 4, seed=13)
    with torch.no_grad():
        eager = dec(z)
        compiled = torch.compile(dec, fullgraph=True)(z)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def test_a_compiled_spiral_decoder_is_not_recompiled_for_the_calling_thread_or_scope(synthetic_hierarchy):
    """The compiled trace had read the thread-local weight_blocks_scope token: an eager call in
    between, a call inside a scope and a call from another thread each compiled the network anew."""
    torch._dynamo.reset()
    dec = build("spiral", synthetic_hierarchy).eval()
    z = rand_latent(dec, 2, seed=17)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(dec, backend=backend)
    with torch.inference_mode():
        want = dec(z)
        outputs = [compiled(z), dec(z), compiled(z)]
        with weight_blocks_scope():
            outputs.append(compiled(z))
        worker = threading.Thread(target=lambda: outputs.append(torch.inference_mode()(compiled)(z)))
        worker.start()
        worker.join()
    assert len(outputs) == 5 and len(graphs) == 1
    for out in outputs:
        torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-6)


def test_clear_caches_frees_a_decoders_batch_sized_gathers_and_changes_no_result(synthetic_hierarchy):
    """A long-running service had no public way to drop the gathers kept for the largest batch it decoded."""
    from mesh_decoder.nn import clear_caches
    from mesh_decoder.nn.spiral_conv import BagCache

    torch.manual_seed(44)
    dec = build("spiral", synthetic_hierarchy)
    z = rand_latent(dec, 6, seed=45)
    caches = [m._bag_cache for m in dec.modules() if isinstance(getattr(m, "_bag_cache", None), BagCache)]
    with torch.inference_mode():
        before = dec(z)
        held = sum(c.index.nbytes + c.weight.nbytes + (c.blocks.nbytes if c.blocks is not None else 0)
                   for c in caches if c.index is not None)
        assert held > 0
        assert clear_caches(dec) >= held
        assert all(c.index is None and c.weight is None and c.blocks is None for c in caches)
        assert torch.equal(dec(z), before)
    with pytest.raises(TypeError, match=r"^module: expected a torch.nn.Module or None, got OrderedDict$"):
        clear_caches(dec.state_dict())


def _same_without_autograd(dec, z):
    """``dec(z)`` under ``no_grad`` and ``inference_mode`` (the fast paths) equals the recorded decode."""
    recorded = dec(z)
    with torch.no_grad():
        torch.testing.assert_close(dec(z), recorded, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        torch.testing.assert_close(dec(z), recorded, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_a_conv_subclass_from_make_conv_is_run_by_the_fast_paths_too(synthetic_hierarchy, kind):
    """The inference fast paths read the convolutions' weights and buffers directly: a subclass's own forward
    (here a learned gain) was skipped without autograd, silently off by 3.5 (spiral) and 15 (cheb)."""
    from mesh_decoder.nn import ChebConv, SpiralConv

    base_conv, base_dec = (SpiralConv, SpiralDecoder) if kind == "spiral" else (ChebConv, ChebDecoder)

    class GainConv(base_conv):
        def forward(self, x):
            return super().forward(x) * self.gain

    class GainDecoder(base_dec):
        def _make_conv(self, level, in_channels, out_channels):
            conv = super()._make_conv(level, in_channels, out_channels)
            conv.__class__ = GainConv  # the built-in layer, as the subclass
            conv.gain = nn.Parameter(1.5 + torch.rand(out_channels))
            return conv

    torch.manual_seed(48)
    kwargs = {"K": 3} if kind == "cheb" else {}
    dec = GainDecoder.from_hierarchy(synthetic_hierarchy, latent_size=5, channels=(8, 12), **kwargs)
    assert all(type(conv) is GainConv for conv in dec.convs)
    _same_without_autograd(dec, rand_latent(dec, 3, seed=49))


@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_a_make_conv_wrapping_the_built_in_conv_builds_and_decodes(synthetic_hierarchy, kind):
    """The README's extension point with a wrapper module (no SpiralConv subclass): SpiralDecoder's fused gathers
    were built from every convolution, so building raised 'conv: expected a SpiralConv, got Wrapped'. Putting
    the built-in layers back brings the fast path back."""
    class Wrapped(nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv, self.gain = conv, nn.Parameter(1.5 + torch.rand(conv.out_channels))

        def forward(self, x):
            return self.conv(x) * self.gain

    class WrappingDecoder(SpiralDecoder if kind == "spiral" else ChebDecoder):
        def _make_conv(self, level, in_channels, out_channels):
            return Wrapped(super()._make_conv(level, in_channels, out_channels))

    torch.manual_seed(50)
    kwargs = {"K": 3} if kind == "cheb" else {}
    dec = WrappingDecoder.from_hierarchy(synthetic_hierarchy, latent_size=5, channels=(8, 12), **kwargs)
    z = rand_latent(dec, 3, seed=51)
    _same_without_autograd(dec, z)
    with torch.no_grad():
        wrapped = dec(z)
        for i, conv in enumerate(dec.convs):
            dec.convs[i] = conv.conv  # the built-in layers again, without their gains
        dec.out_conv = dec.out_conv.conv
        assert dec._stock_layers(type(dec.out_conv))  # the fast path runs, on gathers made anew
        compiled = torch.compile(dec, backend="eager")(z)  # first called compiled: ran no blocks
        unwrapped = dec(z)
    torch.testing.assert_close(compiled, unwrapped, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(unwrapped, wrapped, atol=1e-3)
    _same_without_autograd(dec, z)


class _AcrossVertices(nn.Module):
    """An activation that is not elementwise: it normalises each channel over the vertices, dim -2 of (B, V, C)."""

    def forward(self, x):
        return torch.tanh(x - x.mean(dim=-2, keepdim=True))


@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
@pytest.mark.parametrize("act", [lambda: nn.Mish(), lambda: nn.ELU(alpha=2.0), lambda: nn.LeakyReLU(0.3),
                                 lambda: _AcrossVertices()],
                         ids=["mish", "elu-alpha-2", "leaky-0.3", "across-vertices"])
def test_an_activation_module_put_in_place_is_the_one_run_without_autograd(synthetic_hierarchy, kind, act):
    """The fast paths applied the activation by its configured name: decoder.act = nn.Mish() was ignored
    whenever autograd recorded nothing (off by 0.41)."""
    torch.manual_seed(50)
    dec = build(kind, synthetic_hierarchy, activation="leaky_relu" if "leaky" in str(act()) else "elu")
    dec.act = act()
    _same_without_autograd(dec, rand_latent(dec, 3, seed=51))


def test_a_convolution_put_in_place_of_one_remakes_the_fused_gathers(make_hierarchy):
    """A convolution of the built-in class on other spirals, put in place after a decode, left the fused gathers
    on the old spirals: without autograd the decode was off by 1.36 from the plain formulation."""
    from mesh_decoder.nn import SpiralConv, plain_formulation

    torch.manual_seed(55)
    dec = build("spiral", make_hierarchy(seed=1))
    other = make_hierarchy(seed=2)
    z = rand_latent(dec, 3, seed=56)
    with torch.no_grad():
        dec(z)  # the fused gathers are made
        old = dec.convs[0]
        new = SpiralConv(old.in_channels, old.out_channels, other.levels[1].spirals)
        new.load_state_dict({k: v for k, v in old.state_dict().items() if k != "indices"}, strict=False)
        assert not torch.equal(new.indices, old.indices)
        dec.convs[0] = new
        with plain_formulation():
            want = dec(z)
        torch.testing.assert_close(dec(z), want, rtol=1e-5, atol=1e-5)


def test_a_pyg_conv_class_of_ones_own_is_named_as_such_by_from_config(synthetic_hierarchy):
    """A MessagePassing class outside torch_geometric.nn was reported as 'a factory function'."""
    import torch_geometric.nn as gnn

    class MyGraphConv(gnn.GraphConv):
        pass

    dec = PyGDecoder.from_hierarchy(synthetic_hierarchy, MyGraphConv, latent_size=5, channels=(8, 12))
    config = json.loads(json.dumps(dec.config()))
    assert config["conv"] is None
    with pytest.raises(ValueError, match=r"^config: the conv was a factory function or a class outside "
                                         r"torch_geometric\.nn, which a config cannot store by name; pass conv=$"):
        PyGDecoder.from_config(config, synthetic_hierarchy)
    again = PyGDecoder.from_config(config, synthetic_hierarchy, conv=MyGraphConv)
    again.load_state_dict(dec.state_dict())
    z = rand_latent(dec, 2, seed=54)
    with torch.no_grad():
        assert torch.equal(again(z), dec(z))


def test_graph_decoder_is_an_nn_module(synthetic_hierarchy):
    dec = build("spiral", synthetic_hierarchy)
    assert isinstance(dec, nn.Module)
    n_params = sum(p.numel() for p in dec.parameters())
    assert n_params > dec.fc.weight.numel()
    assert "num_vertices=(90, 40, 18)" in repr(dec)


def test_inference_activation_in_place_matches_autograd_path(synthetic_hierarchy):
    """Without autograd the activation runs in place; the output equals the recorded path's."""
    from mesh_decoder.nn import SpiralDecoder

    torch.manual_seed(3)
    for act in ("elu", "relu", "leaky_relu"):
        dec = SpiralDecoder.from_hierarchy(synthetic_hierarchy, latent_size=8, channels=(8, 16), activation=act)
        z = torch.randn(3, 8)
        with_grad = dec(z)
        assert with_grad.requires_grad
        with torch.inference_mode():
            fast = dec(z)
        # the inference spiral path sums in another order: equal to float32 rounding
        torch.testing.assert_close(fast, with_grad.detach(), rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ inference fast paths
@pytest.mark.parametrize("hierarchy_name", HIERARCHIES)
def test_fused_inference_matches_dense_reference(request, hierarchy_name):
    """Without autograd the spiral decoder runs fused blocks (UpSpiralConv); same meshes as written out."""
    from mesh_decoder.nn import plain_formulation

    hierarchy = request.getfixturevalue(hierarchy_name)
    torch.manual_seed(5)
    dec = build("spiral", hierarchy, out_channels=4).double()
    randomise_normalization(dec, seed=6)
    z = rand_latent(dec, 4, seed=7, dtype=torch.float64)
    with torch.inference_mode():
        fast = dec(z)
        with plain_formulation():
            plain = dec(z)
    ref = decoder_reference(dec, hierarchy, z)
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(plain, ref)


@pytest.mark.parametrize("hierarchy_name", HIERARCHIES)
@pytest.mark.parametrize("K", [2, 4])
def test_cheb_vertex_major_inference_matches_dense_reference(request, hierarchy_name, K):
    """Without autograd on the CPU the Chebyshev decoder keeps features vertex-major
    (embedding_bag products, Clenshaw's recurrence in the 4-channel output layer);
    same meshes as written out, unbatched too."""
    from mesh_decoder.nn import plain_formulation

    hierarchy = request.getfixturevalue(hierarchy_name)
    torch.manual_seed(17)
    dec = ChebDecoder.from_hierarchy(hierarchy, K=K, channels=(8, 12), latent_size=5, out_channels=4).double()
    randomise_normalization(dec, seed=18)
    z = rand_latent(dec, 3, seed=19, dtype=torch.float64)
    with torch.inference_mode():
        fast = dec(z)
        single = dec(z[1])
        with plain_formulation():
            plain = dec(z)
    assert fast.is_contiguous() and single.shape == fast.shape[1:]
    ref = decoder_reference(dec, hierarchy, z)
    torch.testing.assert_close(fast, ref)
    torch.testing.assert_close(single, ref[1])
    torch.testing.assert_close(plain, ref)


@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_cpu_autocast_decodes_close_to_float32(synthetic_hierarchy, kind):
    """bfloat16 autocast on the CPU, with and without autograd: close to the float32 decode."""
    torch.manual_seed(20)
    dec = build(kind, synthetic_hierarchy)
    z = rand_latent(dec, 3, seed=21)
    want = dec(z).detach()
    scale = want.abs().max()
    for grad in (True, False):
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16):
            got = dec(z)
        torch.testing.assert_close(got.float() / scale, want / scale, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
@pytest.mark.parametrize("batch", [1, 5, 7])
def test_chunked_cpu_inference_matches_whole_batch(synthetic_hierarchy, kind, batch, monkeypatch):
    """CPU inference decodes a few samples at a time; chunk boundaries change nothing."""
    import mesh_decoder.nn.decoders as decoders

    torch.manual_seed(8)
    dec = build(kind, synthetic_hierarchy)
    randomise_normalization(dec, seed=9)
    z = rand_latent(dec, batch, seed=10)
    with torch.inference_mode():
        whole = dec(z)
        per_sample = 4 * dec.num_vertices[0] * max(dec.channels) * 4
        monkeypatch.setattr(decoders, "DECODE_CHUNK_BYTES", 2 * per_sample)  # chunks of 2 samples
        assert dec._chunk_size(z) == min(2, batch)
        chunked = dec(z)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
    assert dec._chunk_size(z.requires_grad_(True)) == batch  # autograd: one pass, the recorded path


def test_a_chunked_decode_makes_one_batch_sized_tensor_and_keeps_the_buffers_dtype(synthetic_hierarchy,
                                                                                   monkeypatch):
    """The chunks were gathered normalised and then undone into a second batch-sized tensor: at batch 256 on
    the CPU, 15 MB more per call, which kept glibc returning the heap's pages and faulting them in again (a
    decode 1.2-1.5x slower). Each chunk now goes into the output once, in data units, in the dtype that
    ``y * std + mean`` promotes to (float32 vertices from a bf16 network with float32 buffers)."""
    from torch.profiler import ProfilerActivity, profile

    import mesh_decoder.nn.decoders as decoders

    torch.manual_seed(int(torch.randint(0, 2**31, ())))
    dec = build("spiral", synthetic_hierarchy)
    randomise_normalization(dec, seed=int(torch.randint(0, 2**31, ())))
    batch = int(torch.randint(5, 9, ()))
    z = rand_latent(dec, batch, seed=int(torch.randint(0, 2**31, ())))
    per_sample = 4 * dec.num_vertices[0] * max(dec.channels) * 4
    with torch.inference_mode():
        whole = dec(z)
        monkeypatch.setattr(decoders, "DECODE_CHUNK_BYTES", 2 * per_sample)  # chunks of 2 samples
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            chunked = dec(z)
        torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dec.decode_normalized(z), (whole - dec.mean) / dec.std, rtol=1e-4, atol=1e-4)
        undo = [e.self_cpu_memory_usage for e in prof.events() if e.name == "aten::addcmul"]
        assert undo == [0] * ((batch + 1) // 2), undo  # once per chunk, into the output
        cast = copy.deepcopy(dec).to(torch.bfloat16)
        cast.mean, cast.std = cast.mean.float(), cast.std.float()
        got = cast(z.bfloat16())
        monkeypatch.setattr(decoders, "DECODE_CHUNK_BYTES", 32 << 20)  # one chunk
        assert got.dtype == torch.float32 and torch.equal(got, cast(z.bfloat16()))


@pytest.mark.slow
def test_compiled_cpu_inference_takes_the_fused_path_once_for_all_chunks(synthetic_hierarchy, monkeypatch):
    """Compiled on the CPU, a decoder gathers with the opaque per-sample operator, in chunks
    that all call one traced copy of the network (a nested compile region), and equals
    the plain formulation."""
    import mesh_decoder.nn.decoders as decoders
    from mesh_decoder.nn import plain_formulation

    torch._dynamo.reset()
    torch.manual_seed(14)
    dec = build("spiral", synthetic_hierarchy)
    randomise_normalization(dec, seed=15)
    z = rand_latent(dec, 5, seed=16)
    per_sample = 4 * dec.num_vertices[0] * max(dec.channels) * 4
    monkeypatch.setattr(decoders, "DECODE_CHUNK_BYTES", per_sample)  # chunks of 1 sample
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    with torch.inference_mode():
        with plain_formulation():
            plain = dec(z)
        compiled = torch.compile(dec, backend=backend, fullgraph=True)(z)
    torch.testing.assert_close(compiled, plain, rtol=1e-5, atol=1e-5)
    assert len(graphs) == 1
    nodes = list(graphs[0].graph.nodes)
    calls = [n for n in nodes if n.op == "call_function" and str(n.target) == "invoke_subgraph"]
    assert len(calls) == 5  # one per chunk
    assert {str(n.args[0].target) for n in calls} == {"subgraph_0"}  # all the same traced network
    region = [str(n.target) for n in graphs[0].subgraph_0.graph.nodes if n.op == "call_function"]
    layers = len(dec.convs) + 1  # the fused blocks and the output convolution
    assert region.count("mesh_decoder.bag_sum.default") == layers
    assert "<built-in method index_select of type object" not in " ".join(region)
    top = [str(n.target) for n in nodes if n.op == "call_function"]
    assert "mesh_decoder.bag_sum.default" not in top  # no chunk copied into the outer graph


def test_fused_blocks_follow_a_loaded_state_dict(make_hierarchy):
    """Loading another decoder's buffers (other operators, same sizes) rebuilds the fused gathers."""
    torch.manual_seed(11)
    a = SpiralDecoder.from_hierarchy(make_hierarchy(seed=1), latent_size=6, channels=(8, 12))
    b = SpiralDecoder.from_hierarchy(make_hierarchy(seed=2), latent_size=6, channels=(8, 12))
    with pytest.warns(RuntimeWarning, match=r"load_state_dict: the state dict's graph differs from this "
                                            r"SpiralDecoder's in \d+ index buffers \(ups\.0\.index, .*it was saved on "
                                            r"another hierarchy of the same sizes"):
        a.load_state_dict(b.state_dict())
    assert not any(key.startswith("fused.") for key in a.state_dict())
    z = rand_latent(a, 3, seed=12)
    with torch.inference_mode():
        torch.testing.assert_close(a(z), b(z), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a(z), b(z), rtol=1e-5, atol=1e-5)  # recorded path


@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
@pytest.mark.parametrize("mode", ["inference", "no_grad", "grad"])
def test_empty_batch_decodes_to_an_empty_batch(synthetic_hierarchy, kind, mode):
    """A batch of 0 latents gives 0 meshes on every path, as the plain formulation does."""
    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(13)
    dec = build(kind, synthetic_hierarchy)
    z = rand_latent(dec, 0, seed=14)
    context = {"inference": torch.inference_mode, "no_grad": torch.no_grad, "grad": torch.enable_grad}[mode]
    with context():
        got = dec(z)
        with plain_formulation():
            plain = dec(z)
    assert got.shape == plain.shape == (0, dec.num_vertices[0], dec.out_channels)


@pytest.mark.parametrize("mode", ["inference", "no_grad"])
def test_spiral_inference_follows_weights_changed_through_data(synthetic_hierarchy, mode):
    """Weights changed between calls by any means, ``.data`` included (no version counter
    sees it, as in an EMA update), are the ones the fused inference path uses."""
    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(15)
    dec = build("spiral", synthetic_hierarchy)
    z = rand_latent(dec, 3, seed=16)
    g = torch.Generator().manual_seed(17)
    context = torch.inference_mode if mode == "inference" else torch.no_grad
    with context():
        before = dec(z)  # the fused path has run (and rearranged the weights) once
    for p in dec.parameters():
        p.data.mul_(1.0 + torch.rand(p.shape, generator=g))
    with context():
        got = dec(z)
        with plain_formulation():
            want = dec(z)
    assert (want - before).abs().max() > 1e-2  # the change is visible
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_chunks_of_one_decode_share_each_rearranged_weight(synthetic_hierarchy, monkeypatch):
    """Within one call a chunked decode rearranges each spiral weight once, not once per chunk."""
    import mesh_decoder.nn.decoders as decoders
    import mesh_decoder.nn.spiral_conv as spiral_conv
    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(18)
    dec = build("spiral", synthetic_hierarchy)
    z = rand_latent(dec, 7, seed=19)
    per_sample = 4 * dec.num_vertices[0] * max(dec.channels) * 4
    monkeypatch.setattr(decoders, "DECODE_CHUNK_BYTES", 2 * per_sample)  # 4 chunks
    made = []
    rearrange = spiral_conv.spiral_weight_blocks
    monkeypatch.setattr(spiral_conv, "spiral_weight_blocks", lambda w, S: made.append(w) or rearrange(w, S))
    with torch.inference_mode():
        dec(z)
        assert dec._chunk_size(z) == 2
        first = len(made)
        dec(z)
    layers = len(dec.convs) + 1  # the fused blocks and the output convolution
    assert first == layers and len(made) == 2 * layers  # once per layer and call
    with torch.inference_mode(), spiral_conv.weight_blocks_scope():  # a user's scope around several calls
        for _ in range(3):
            dec(z)
    assert len(made) == 3 * layers
    with torch.inference_mode():
        with plain_formulation():
            want = dec(z)
        torch.testing.assert_close(dec(z), want, rtol=1e-5, atol=1e-5)


def _joint_or_graph(kind: str, hierarchy):
    from mesh_decoder.nn.decoders import JointDecoder

    if kind == "joint":
        return JointDecoder.from_hierarchy(hierarchy, "mesh", channels=(8, 12), latent_size=5)
    return build(kind, hierarchy)


@pytest.mark.parametrize("kind", ["spiral", "cheb", "joint"])
def test_forward_mode_ad_through_the_decoders(synthetic_hierarchy, kind):
    """Dual tensors of torch.autograd.forward_ad, with grad mode on and off, carry the
    tangent the plain formulation gives (the inference kernels have no forward-mode rule)."""
    import torch.autograd.forward_ad as fwAD

    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(20)
    dec = _joint_or_graph(kind, synthetic_hierarchy).double()
    if kind != "joint":
        randomise_normalization(dec, seed=21)
    out = (lambda o: o.texture) if kind == "joint" else (lambda o: o)
    g = torch.Generator().manual_seed(22)
    z = torch.randn(7, 5, generator=g, dtype=torch.float64)
    t = torch.randn(7, 5, generator=g, dtype=torch.float64)
    with plain_formulation():
        want = torch.func.jvp(lambda q: out(dec(q)), (z,), (t,))[1]
    for grad in (True, False):
        with torch.set_grad_enabled(grad), fwAD.dual_level():
            got = fwAD.unpack_dual(out(dec(fwAD.make_dual(z, t)))).tangent
        torch.testing.assert_close(got, want, msg=lambda m: f"grad mode {grad}: {m}")


def test_func_jvp_under_no_grad_and_over_the_parameters(synthetic_hierarchy):
    """torch.func.jvp through the Chebyshev decoder over the latent under no_grad, and over
    the parameters alone (functional_call: the input stays a plain tensor), in and out of
    grad mode."""
    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(23)
    dec = build("cheb", synthetic_hierarchy).double()
    out = (lambda o: o)
    g = torch.Generator().manual_seed(24)
    z = torch.randn(3, 5, generator=g, dtype=torch.float64)
    t = torch.randn(3, 5, generator=g, dtype=torch.float64)
    params = {n: p.detach() for n, p in dec.named_parameters()}
    tangents = {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in params.items()}

    def of_params(p):
        return out(torch.func.functional_call(dec, p, (z,)))

    with plain_formulation():
        want_z = torch.func.jvp(lambda q: out(dec(q)), (z,), (t,))[1]
        want_p = torch.func.jvp(of_params, (params,), (tangents,))[1]
    with torch.no_grad():
        torch.testing.assert_close(torch.func.jvp(lambda q: out(dec(q)), (z,), (t,))[1], want_z)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            torch.testing.assert_close(torch.func.jvp(of_params, (params,), (tangents,))[1], want_p)


def test_activation_must_be_a_name():
    """A non-string activation is a TypeError naming what was given, not its lower-cased str()."""
    from mesh_decoder.nn.decoders import UVTextureDecoder
    from mesh_decoder.nn.encoders import SpiralEncoder
    from tests.nn.conftest import make_synthetic_hierarchy

    h = make_synthetic_hierarchy(sizes=(20, 10, 5), texture_size=8)
    makers = [lambda a: SpiralDecoder.from_hierarchy(h, channels=(4, 4), latent_size=3, activation=a),
              lambda a: SpiralEncoder.from_hierarchy(h, channels=(4, 4), latent_size=3, activation=a),
              lambda a: UVTextureDecoder(3, texture_size=8, channels=4, activation=a)]
    for make in makers:
        with pytest.raises(TypeError, match=r"activation: expected a name \(str\) in .*, got NoneType None"):
            make(None)
        with pytest.raises(TypeError, match=r"activation: expected a name \(str\) in .*, got type .*ReLU"):
            make(nn.ReLU)
        assert make("ReLU").activation == "relu"


def test_config_with_a_bad_channels_entry_is_a_named_error(synthetic_hierarchy):
    """A hand-edited config's channels (an int, not a list) is named, not len()'s TypeError."""
    from mesh_decoder.nn.encoders import SpiralEncoder, encoder_from_config

    models = [build("spiral", synthetic_hierarchy), build("pyg", synthetic_hierarchy),
              SpiralEncoder.from_hierarchy(synthetic_hierarchy, channels=(8, 12), latent_size=5)]
    for model in models:
        config = {**model.config(), "channels": 8}
        rebuild = encoder_from_config if isinstance(model, SpiralEncoder) else decoder_from_config
        with pytest.raises(TypeError, match="channels: expected a non-empty sequence of ints, got int 8"):
            rebuild(config, synthetic_hierarchy)


def test_a_config_without_channels_takes_the_default_channels(make_hierarchy):
    """Like any other key left out, a config without 'channels' builds the default's levels; its level sizes
    were checked against no levels at all ('expected level sizes [90, 40, 18, 8, 4] ..., got [90]')."""
    from mesh_decoder.nn.encoders import SpiralEncoder, encoder_from_config

    h = make_hierarchy(sizes=(90, 40, 18, 8, 4))
    models = [SpiralDecoder.from_hierarchy(h, latent_size=5), ChebDecoder.from_hierarchy(h, latent_size=5),
              PyGDecoder.from_hierarchy(h, "GCNConv", latent_size=5), SpiralEncoder.from_hierarchy(h, latent_size=5)]
    for model in models:
        config = model.config()
        del config["channels"]
        rebuild = encoder_from_config if isinstance(model, SpiralEncoder) else decoder_from_config
        again = rebuild(config, h)
        assert again.config() == model.config(), type(model).__name__
        with pytest.raises(HierarchyError, match=r"expected level sizes \[90, 40, 18, 8, 4\] \(from the config\), "
                                                 r"got \[90, 40, 18\]$"):
            rebuild({**config, "channels": [8, 8]}, h)

    class Forwarding(SpiralDecoder):  # a subclass whose from_hierarchy names no channels
        @classmethod
        def from_hierarchy(cls, hierarchy, **kw):
            return super().from_hierarchy(hierarchy, **kw)

    config = {**Forwarding.from_hierarchy(h, latent_size=5).config()}
    del config["channels"]
    assert Forwarding.from_config(config, h).channels == SpiralDecoder.from_hierarchy(h).channels
    with pytest.raises(HierarchyError, match=r"expected level sizes \[90, 40, 18, 8, 4\] \(from the config\), "
                                             r"got \[90, 40, 18\]$"):
        Forwarding.from_config({**config, "channels": [8, 8]}, h)


def test_normalisation_config_and_conv_kwargs_of_the_wrong_type_are_named(synthetic_hierarchy):
    dec = SpiralDecoder.from_hierarchy(synthetic_hierarchy, latent_size=4, channels=(4, 4))
    std = torch.rand(3, generator=torch.Generator().manual_seed(93)) + 0.5
    with pytest.raises(TypeError, match="mean: expected a tensor, array or number, got None"):
        dec.set_normalization(None, std)  # was reported as "non-finite entries"
    config = dict(dec.config(), num_vertices=dec.num_vertices[0])
    with pytest.raises(TypeError, match="config: expected 'num_vertices' to be a list of level sizes, got 90"):
        SpiralDecoder.from_config(config, synthetic_hierarchy)
    with pytest.raises(TypeError, match="conv_kwargs: expected a dict of keyword arguments for GCNConv, got list"):
        PyGDecoder.from_hierarchy(synthetic_hierarchy, latent_size=4, channels=(4, 4), conv_kwargs=["improved"])


@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
def test_hooks_see_every_layer_without_gradients_inside_plain_formulation(face_hierarchy, kind):
    """Without gradients the fast paths skip convs[i] (spiral, Chebyshev) or activate its output in place (PyG),
    so a feature-extraction hook saw nothing or altered values; inside plain_formulation it sees what it sees
    with gradients."""
    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(21)
    dec = build(kind, face_hierarchy).eval()
    z = rand_latent(dec, 3, seed=22)
    seen: list[torch.Tensor] = []
    hooks = [conv.register_forward_hook(lambda m, i, o: seen.append(o.detach())) for conv in dec.convs]  # kept, not copied
    dec(z)  # with gradients: the plain formulation
    with_grad, seen[:] = list(seen), []
    with torch.no_grad(), plain_formulation():
        out = dec(z)
    for h in hooks:
        h.remove()
    assert len(seen) == len(with_grad) == len(dec.convs)
    for a, b in zip(seen, with_grad):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, dec(z).detach(), rtol=1e-5, atol=1e-5)


def _by_reference(fn) -> bool:
    """Whether ``fn`` is found again by its module and name (so a pickler stores it by reference)."""
    import functools
    import importlib

    if isinstance(fn, functools.partial):
        return _by_reference(fn.func)
    if getattr(fn, "__self__", None) is not None:  # a bound method: its function, on its class
        return _by_reference(type(fn.__self__)) and "<locals>" not in fn.__qualname__
    owner = importlib.import_module(fn.__module__)
    for part in fn.__qualname__.split("."):
        owner = getattr(owner, part, None)
    return owner is fn


@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg", "joint"])
def test_state_dict_hooks_are_found_by_reference(face_hierarchy, kind):
    """Lambdas and closures as load-state-dict hooks made every decoder unpicklable (torch.save(model) and
    multiprocessing with spawn failed with "Can't pickle local object")."""
    torch.manual_seed(23)
    dec = JointDecoder.from_hierarchy(face_hierarchy, latent_size=4, channels=(8, 12)) if kind == "joint" else \
        build(kind, face_hierarchy)
    hooks = [h for m in dec.modules() for h in m._load_state_dict_post_hooks.values()]
    assert hooks and all(_by_reference(h) for h in hooks), [getattr(h, "__qualname__", h) for h in hooks]


def test_a_pyg_decoder_with_pseudo_coordinates_decodes_saves_and_loads(face_hierarchy, tmp_path):
    """MoNet-style decoders (GMMConv on Cartesian pseudo-coordinates) could not be built: the conv got no
    edge_attr and failed on None."""
    from mesh_decoder.model_files import load_model, save_model

    torch.manual_seed(24)
    dec = PyGDecoder.from_hierarchy(face_hierarchy, "GMMConv", conv_kwargs={"dim": 3, "kernel_size": 3},
                                    latent_size=4, channels=(8, 12), pseudo="cartesian").eval()
    assert dec.config()["pseudo"] == "cartesian"
    assert all(conv.edge_attr is not None and conv.mode == "union" for conv in [*dec.convs, dec.out_conv])
    z = rand_latent(dec, 3, seed=25)
    with torch.no_grad():
        out = dec(z)
        torch.testing.assert_close(out, torch.stack([dec(z[b]) for b in range(3)]), rtol=1e-5, atol=1e-5)
    save_model(dec, tmp_path / "monet.safetensors", hierarchy=face_hierarchy)
    loaded = load_model(tmp_path / "monet.safetensors", face_hierarchy)
    with torch.no_grad():
        assert torch.equal(loaded(z), out)
    with pytest.raises(ValueError, match=r"level_vertices: expected 2 tensors \(V_l, 3\) with pseudo='cartesian'"):
        PyGDecoder(4, (8, 12), "GMMConv", [PyGDecoder.hierarchy_edges(face_hierarchy, l) for l in range(2)],
                   face_hierarchy.up_index[:2], face_hierarchy.up_weight[:2], face_hierarchy.sizes[:3],
                   conv_kwargs={"dim": 3, "kernel_size": 3}, pseudo="cartesian")
    with pytest.raises(ValueError, match="pseudo: expected one of"):
        PyGDecoder.from_hierarchy(face_hierarchy, "GMMConv", conv_kwargs={"dim": 3, "kernel_size": 3},
                                  latent_size=4, channels=(8, 12), pseudo="polar")


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
def test_jit_trace_with_grad_on_passes_its_check_and_matches_eager(synthetic_hierarchy, kind):
    """A decoder traced as PyTorch users do (grad on, the trace's own check on) records one graph and
    decodes another latent as the eager decoder does."""
    dec = build(kind, synthetic_hierarchy).eval()
    traced = torch.jit.trace(dec, (rand_latent(dec, 3, seed=61),))
    z = rand_latent(dec, 2, seed=62)
    torch.testing.assert_close(traced(z), dec(z), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_a_trainable_buffer_gets_its_gradient_with_every_parameter_frozen(synthetic_hierarchy, kind):
    """With the parameters frozen and an up-sampling weight made trainable, the spiral decoder took its
    inference-only path (it looked at the input and the parameters only): no graph, no gradient."""
    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(21)
    dec = build(kind, synthetic_hierarchy)
    for p in dec.parameters():
        p.requires_grad_(False)
    weight = dec.ups[-1].weight.requires_grad_()
    z = rand_latent(dec, 2, seed=22)
    out = dec(z)
    assert out.requires_grad
    (got,) = torch.autograd.grad(out.square().sum(), weight)
    with plain_formulation():
        (want,) = torch.autograd.grad(dec(z).square().sum(), weight)
    assert want.abs().max() > 0
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_a_state_dict_of_another_graph_warns_and_one_of_the_same_does_not(kind):
    """A state dict saved on another hierarchy of the same sizes replaced the decoder's spirals, sampling and
    Laplacians in silence, while its template_hash kept naming its own."""
    from mesh_decoder.hierarchy import build_hierarchy
    from mesh_decoder.mesh.templates import face_template

    ours, theirs = (build_hierarchy(face_template(600, seed=s), factors=(4, 4), texture_size=None) for s in (0, 1))
    assert ours.sizes == theirs.sizes and ours.template_hash != theirs.template_hash
    torch.manual_seed(31)
    mine = build(kind, ours)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build(kind, ours).load_state_dict(mine.state_dict())  # the same graph: silent
    other = build(kind, theirs)
    with pytest.warns(RuntimeWarning, match=rf"graph differs from this {type(mine).__name__}'s in \d+ index buffer"):
        other.load_state_dict(mine.state_dict())
    z = rand_latent(mine, 2, seed=32)
    with torch.no_grad():
        torch.testing.assert_close(other(z), mine(z))  # it runs on the saved graph, as the warning says


@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_a_refused_state_dict_of_another_graph_does_not_warn(synthetic_hierarchy, kind):
    """The warning that the module 'now runs on' the saved graph came before torch refused the load."""
    torch.manual_seed(33)
    mine = build(kind, synthetic_hierarchy)
    theirs = mine.state_dict()
    index = next(k for k, v in theirs.items() if not v.is_floating_point() and v.dim() == 2 and v.numel() > 1)
    theirs[index] = theirs[index].flip(-1).contiguous()  # another graph, same shape: warned on its own
    with pytest.warns(RuntimeWarning, match="graph differs"):
        build(kind, synthetic_hierarchy).load_state_dict(theirs)
    refused = {**theirs, "fc.bias": torch.randn(theirs["fc.bias"].numel() + 1)}  # a tensor of another shape
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeError, match=r"size mismatch for fc\.bias"):
            build(kind, synthetic_hierarchy).load_state_dict(refused)


def test_a_spiral_decoder_cast_under_inference_mode_decodes(synthetic_hierarchy):
    """Its up-sampling weights become inference tensors, whose missing version counter the fused-gather check
    had read: 'Inference tensors do not track version counter' on the first decode."""
    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(42)
    dec = build("spiral", synthetic_hierarchy)
    z = rand_latent(dec, 3, seed=43).double()
    with torch.inference_mode():
        cast = copy.deepcopy(dec).to(torch.float64)
        assert cast.ups[0].weight.is_inference()
        got = cast(z)
        with plain_formulation():
            want = cast(z)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind", ["spiral", "cheb", "pyg"])
def test_a_decoder_cast_under_inference_mode_decodes_under_no_grad(synthetic_hierarchy, kind):
    """Cast under inference_mode, first decoded under no_grad (reading inference tensors outside that mode is
    allowed): remaking the fused gathers in place had raised 'Inplace update to inference tensor outside
    InferenceMode'."""
    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(48)
    dec = build(kind, synthetic_hierarchy)
    z = rand_latent(dec, 3, seed=49).double()
    want = copy.deepcopy(dec).to(torch.float64)
    with torch.inference_mode():
        cast = copy.deepcopy(dec).to(torch.float64)
    with torch.no_grad():
        got = cast(z)
        again = cast(z)
        with plain_formulation():
            plain = want(z)
    torch.testing.assert_close(got, plain)
    torch.testing.assert_close(again, plain)


def test_a_bfloat16_decoder_with_float32_normalisation_gives_float32_vertices(synthetic_hierarchy):
    """The README's recipe: after decoder.to(bf16), float32 mean and std buffers give float32 vertices, off by the
    bf16 network alone instead of rounded to bf16 at the template's scale."""
    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(46)
    dec = build("spiral", synthetic_hierarchy)
    with torch.no_grad():
        dec.mean.copy_(100 * torch.randn(dec.mean.shape))  # millimetre-scale positions
        dec.std.uniform_(0.5, 2.0)
    z = rand_latent(dec, 4, seed=47)
    with torch.inference_mode():
        want = dec(z)
        cast = copy.deepcopy(dec).to(torch.bfloat16)
        rounded = cast(z.bfloat16())
        cast.mean, cast.std = cast.mean.float(), cast.std.float()
        got = cast(z.bfloat16())
        with plain_formulation():
            plain = cast(z.bfloat16())
    assert rounded.dtype == torch.bfloat16 and got.dtype == torch.float32
    torch.testing.assert_close(got, plain, rtol=0, atol=1e-2 * float(dec.std.max()))
    assert (got - want).abs().max() < (rounded.float() - want).abs().max() / 1.5


def test_fused_inference_follows_trained_up_sampling_weights(synthetic_hierarchy):
    """After an optimiser step on a trainable up-sampling weight, decoding without gradients used the fused
    gathers made from the old weight (off by 0.01 from the grad-enabled decode of the same latent)."""
    from mesh_decoder.nn import plain_formulation

    torch.manual_seed(41)
    dec = build("spiral", synthetic_hierarchy)
    for p in dec.parameters():
        p.requires_grad_(False)
    weight = dec.ups[0].weight.requires_grad_()
    optimizer = torch.optim.SGD([weight], lr=0.5)
    z = rand_latent(dec, 3, seed=42)
    with torch.no_grad():
        before = dec(z)
    for _ in range(3):
        optimizer.zero_grad()
        dec(z).square().mean().backward()
        optimizer.step()
    with torch.no_grad():
        got = dec(z)
        with plain_formulation():
            want = dec(z)
    assert (want - before).abs().max() > 1e-3  # the steps changed the decode
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        dec.ups[1].weight = dec.ups[1].weight.flip(0).contiguous()  # a new tensor in its place
        with plain_formulation():
            want = dec(z)
        torch.testing.assert_close(dec(z), want, rtol=1e-5, atol=1e-5)
