"""The frozen reference decoder agrees with the fast spiral decoder and with dense loops."""

import dataclasses

import numpy as np
import pytest
import torch

from mesh_decoder.bench.harness import load_reference_module, max_relative_error
from mesh_decoder.bench.roofline import decoder_cost
from mesh_decoder.hierarchy import build_hierarchy
from mesh_decoder.mesh.templates import face_template
from mesh_decoder.nn.presets import decoder_from_preset, preset_hierarchy_params

ref = load_reference_module()


@pytest.fixture(scope="module")
def hierarchy():
    """The real hierarchy of a small face, with some spirals cut short and padded with V.

    Spirals run short where a vertex's neighbourhood is too small (tiny levels, odd
    meshes); the builder fills full spirals on this template, so cut a fifth of them
    to exercise the pad index the way such spirals use it.
    """
    template = face_template(1000, seed=0)
    h = build_hierarchy(template, **preset_hierarchy_params("spiralnet++-coma"), texture_size=None)
    rng = np.random.default_rng(0)
    levels = []
    for lvl in h.levels:
        spirals = lvl.spirals.clone()
        V, S = spirals.shape
        for v in np.flatnonzero(rng.random(V) < 0.2):
            spirals[v, rng.integers(2, S):] = V
        levels.append(dataclasses.replace(lvl, spirals=spirals))
    return dataclasses.replace(h, levels=levels)


def fast_decoder(hierarchy, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    decoder = decoder_from_preset("spiralnet++-coma", hierarchy).to(dtype).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    V = hierarchy.sizes[0]
    decoder.set_normalization(torch.randn(V, 3, generator=gen) * 10, torch.rand(V, 3, generator=gen) + 0.5)
    return decoder


def test_padding_is_exercised(hierarchy):
    assert any(bool((lvl.spirals == lvl.num_vertices).any()) for lvl in hierarchy.levels[:4])


def test_reference_matches_fast_decoder_fp32(hierarchy):
    fast = fast_decoder(hierarchy, seed=3)
    reference = ref.ReferenceSpiralDecoder.from_decoder(fast).eval()
    z = torch.randn(5, fast.latent_size, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y_fast = fast(z)
        y_ref = reference(z)
        single = reference(z[2])
    assert y_ref.shape == y_fast.shape == (5, hierarchy.sizes[0], 3)
    assert max_relative_error([y_ref], [y_fast]) < 1e-5
    torch.testing.assert_close(single, y_ref[2], rtol=1e-5, atol=1e-5)
    # the reference holds copies: changing the fast decoder does not change it
    with torch.no_grad():
        fast.fc.weight.add_(1.0)
        assert torch.equal(reference(z), y_ref)


def test_reference_matches_fast_decoder_fp64(hierarchy):
    fast = fast_decoder(hierarchy, seed=5, dtype=torch.float64)
    reference = ref.ReferenceSpiralDecoder.from_decoder(fast)
    z = torch.randn(3, fast.latent_size, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(reference(z), fast(z), rtol=1e-12, atol=1e-10)


def dense_upsample(index, weight, v_in):
    """The up-sampling operator as a dense matrix, entry by entry."""
    U = torch.zeros(index.shape[0], v_in, dtype=weight.dtype)
    for v in range(index.shape[0]):
        for k in range(index.shape[1]):
            U[v, index[v, k]] += weight[v, k]
    return U


def test_reference_upsample_equals_dense_product(hierarchy):
    gen = torch.Generator().manual_seed(7)
    index, weight = hierarchy.up_index[1], hierarchy.up_weight[1].double()
    v_in = hierarchy.sizes[2]
    up = ref.ReferenceUpSample.from_gather(index, weight)
    x = torch.randn(2, v_in, 5, generator=gen, dtype=torch.float64)
    expected = torch.einsum("ij,bjc->bic", dense_upsample(index, weight, v_in), x)
    torch.testing.assert_close(up(x), expected, rtol=1e-12, atol=1e-12)


def test_reference_spiral_conv_equals_loop(hierarchy):
    gen = torch.Generator().manual_seed(8)
    spirals = hierarchy.levels[2].spirals  # (V, S), padded with V
    V, S = spirals.shape
    conv = ref.ReferenceSpiralConv(4, 6, spirals).double()
    x = torch.randn(2, V, 4, generator=gen, dtype=torch.float64)
    W, b = conv.layer.weight, conv.layer.bias
    expected = torch.empty(2, V, 6, dtype=torch.float64)
    for bi in range(2):
        for v in range(V):
            feats = [x[bi, i] if i < V else torch.zeros(4, dtype=torch.float64) for i in spirals[v].tolist()]
            expected[bi, v] = W @ torch.cat(feats) + b  # spiral-major concatenation
    with torch.no_grad():
        torch.testing.assert_close(conv(x), expected, rtol=1e-12, atol=1e-12)


def test_reference_has_the_fast_decoders_cost(hierarchy):
    fast = fast_decoder(hierarchy)
    reference = ref.ReferenceSpiralDecoder.from_decoder(fast)
    z = torch.randn(1, fast.latent_size, generator=torch.Generator().manual_seed(9))
    c_fast, c_ref = decoder_cost(fast, z), decoder_cost(reference, z)
    assert c_ref.flops_per_mesh == pytest.approx(c_fast.flops_per_mesh)
    assert c_ref.gemm_shapes(4) == c_fast.gemm_shapes(4)
    assert c_ref.parameters == c_fast.parameters


def test_from_decoder_rejects_other_modules():
    with pytest.raises(TypeError, match="SpiralDecoder"):
        ref.ReferenceSpiralDecoder.from_decoder(torch.nn.Linear(3, 3))
