"""Tests of MeshAutoencoder (shared normalisation, latent prior, sampling); the encoders alone: test_encoders.py."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from mesh_decoder.nn.autoencoder import MeshAutoencoder
from mesh_decoder.nn.decoders import ChebDecoder, GraphDecoder, SpiralDecoder
from mesh_decoder.nn.encoders import ChebEncoder, SpiralEncoder
from tests.nn.reference import build_encoder, rand_meshes


def build_autoencoder(kind: str, hierarchy, **kw) -> MeshAutoencoder:
    kw.setdefault("channels", (8, 12))
    kw.setdefault("latent_size", 5)
    if kind == "spiral":
        dec = SpiralDecoder.from_hierarchy(hierarchy, **kw)
    else:
        dec = ChebDecoder.from_hierarchy(hierarchy, K=3, **kw)
    return MeshAutoencoder(build_encoder(kind, hierarchy, **kw), dec)


# --------------------------------------------------------------------------- autoencoder
@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_autoencoder_shapes_and_shared_normalization(synthetic_hierarchy, kind):
    torch.manual_seed(1)
    ae = build_autoencoder(kind, synthetic_hierarchy)
    g = torch.Generator().manual_seed(3)
    mean = torch.randn(90, 3, generator=g)
    std = 0.5 + torch.rand(90, 3, generator=g)
    ae.set_normalization(mean, std)
    assert ae.mean is ae.decoder.mean and torch.equal(ae.std, std)
    x = rand_meshes(synthetic_hierarchy, 4, seed=4)
    z = ae.encode(x)
    assert z.shape == (4, 5)
    torch.testing.assert_close(z, ae.encoder((x - mean) / std))  # encoder sees normalised input
    y = ae.decode(z)
    assert y.shape == x.shape
    torch.testing.assert_close(y, ae.decoder.decode_normalized(z) * std + mean)  # decoder undoes it
    torch.testing.assert_close(ae(x), y)
    torch.testing.assert_close(ae(x[2]), y[2])
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 90, 3\)"):
        ae.encode(torch.randn(4, 89, 3))


@pytest.mark.parametrize("kind", ["spiral", "cheb"])
def test_autoencoder_trains_under_cpu_bfloat16_autocast(synthetic_hierarchy, kind):
    """Under autocast the encoder gives a bfloat16 code, and the decoder refused it ('z: expected dtype
    torch.float32'); any float latent passes there, as the layers' inputs do."""
    torch.manual_seed(30)
    ae = build_autoencoder(kind, synthetic_hierarchy)
    x = rand_meshes(synthetic_hierarchy, 4, seed=31)
    want = ae(x).detach()
    scale = want.abs().max()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ae.encode(x).dtype == torch.bfloat16
        got = ae(x)
        loss = (got.float() - x).square().mean()
    torch.testing.assert_close(got.detach().float() / scale, want / scale, rtol=0.05, atol=0.05)
    loss.backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in ae.parameters())
    with pytest.raises(TypeError, match=r"z: expected dtype torch.float32 \(the decoder's\), got torch.bfloat16"):
        ae.decode(torch.randn(2, 5, dtype=torch.bfloat16))  # outside autocast: still refused


def test_autoencoder_rejects_mismatched_parts(synthetic_hierarchy):
    enc = build_encoder("spiral", synthetic_hierarchy, latent_size=4)
    dec = SpiralDecoder.from_hierarchy(synthetic_hierarchy, channels=(8, 12), latent_size=5)
    with pytest.raises(ValueError, match=r"latent sizes: expected the encoder's \(4\) to equal the decoder's \(5\)"):
        MeshAutoencoder(enc, dec)
    enc6 = build_encoder("spiral", synthetic_hierarchy, in_channels=6)
    with pytest.raises(ValueError, match=r"encoder in_channels \(6\) == decoder out_channels \(3\)"):
        MeshAutoencoder(enc6, dec)
    with pytest.raises(TypeError, match="expected a GraphEncoder"):
        MeshAutoencoder(dec, dec)


def test_autoencoder_rejects_parts_built_on_different_templates(face_hierarchy):
    """An encoder and a decoder on hierarchies of the same sizes but different templates paired silently:
    the level sizes agreed, the vertices meant different things."""
    from mesh_decoder.hierarchy import build_hierarchy
    from mesh_decoder.mesh import face_template

    other = build_hierarchy(face_template(1000, seed=1), factors=(4, 4), spiral_lengths=9, texture_size=None)
    assert other.sizes == face_hierarchy.sizes and other.template_hash != face_hierarchy.template_hash
    enc = build_encoder("spiral", face_hierarchy)
    dec = SpiralDecoder.from_hierarchy(other, channels=(8, 12), latent_size=5)
    expected = (f"template: expected the encoder's template hash ({face_hierarchy.template_hash}) to equal the "
                f"decoder's ({other.template_hash})")
    with pytest.raises(ValueError, match=re.escape(expected)):
        MeshAutoencoder(enc, dec)
    same = SpiralDecoder.from_hierarchy(face_hierarchy, channels=(8, 12), latent_size=5)
    assert MeshAutoencoder(enc, same).decoder is same


def test_fit_latent_prior_matches_sample_mean_and_covariance(synthetic_hierarchy):
    ae = build_autoencoder("spiral", synthetic_hierarchy)
    rng = np.random.default_rng(5)
    A = rng.normal(size=(5, 5))
    latents = rng.normal(size=(200, 5)) @ A.T + rng.normal(size=5)
    ae.fit_latent_prior(torch.from_numpy(latents).float())
    np.testing.assert_allclose(ae.latent_mean.numpy(), latents.astype(np.float32).mean(0), rtol=1e-5, atol=1e-5)
    L = ae.latent_cov_cholesky.double()
    assert torch.equal(L, torch.tril(L))
    np.testing.assert_allclose((L @ L.T).numpy(), np.cov(latents.astype(np.float32), rowvar=False), rtol=1e-4, atol=1e-4)
    assert {"latent_mean", "latent_cov_cholesky"} <= set(ae.state_dict())


def test_a_model_cast_under_inference_mode_takes_its_prior_and_normalisation(synthetic_hierarchy):
    """Its buffers are inference tensors: fit_latent_prior and set_normalization raised 'Inplace update to
    inference tensor outside InferenceMode'."""
    import copy

    torch.manual_seed(6)
    ae = build_autoencoder("spiral", synthetic_hierarchy)
    latents = torch.randn(50, ae.latent_size, dtype=torch.float64)
    mean, std = torch.randn(3, dtype=torch.float64), torch.rand(3, dtype=torch.float64) + 0.5
    want = copy.deepcopy(ae).double()
    with torch.inference_mode():
        cast = copy.deepcopy(ae).double()
    for model in (want, cast):
        model.fit_latent_prior(latents)
        model.decoder.set_normalization(mean, std)
    for name, tensor in want.state_dict().items():
        assert torch.equal(cast.state_dict()[name], tensor), name


def test_fit_latent_prior_singular_covariance_gets_jitter(synthetic_hierarchy):
    ae = build_autoencoder("cheb", synthetic_hierarchy)
    rng = np.random.default_rng(6)
    latents = torch.from_numpy(rng.normal(size=(3, 5)))  # N <= Z: rank 2 covariance
    ae.fit_latent_prior(latents)
    L = ae.latent_cov_cholesky.double()
    assert torch.isfinite(L).all() and (torch.diagonal(L) > 0).all()
    cov = torch.from_numpy(np.cov(latents.numpy(), rowvar=False))
    torch.testing.assert_close(L @ L.T, cov, atol=1e-3 * float(cov.diagonal().mean()), rtol=0)
    with pytest.raises(ValueError, match="at least 2 codes"):
        ae.fit_latent_prior(latents[:1])
    with pytest.raises(ValueError, match=r"latents: expected shape \(N, 5\), got \(3, 4\)"):
        ae.fit_latent_prior(latents[:, :4])
    with pytest.raises(ValueError, match="finite"):
        ae.fit_latent_prior(torch.full((3, 5), float("nan")))


def test_sampling_is_deterministic_under_a_seed_and_follows_the_prior(synthetic_hierarchy):
    ae = build_autoencoder("spiral", synthetic_hierarchy)
    rng = np.random.default_rng(7)
    A = torch.from_numpy(rng.normal(size=(5, 5))).float()
    ae.fit_latent_prior(torch.from_numpy(rng.normal(size=(500, 5))).float() @ A.T + 2.0)
    a = ae.sample(3, generator=torch.Generator().manual_seed(8))
    b = ae.sample(3, generator=torch.Generator().manual_seed(8))
    c = ae.sample(3, generator=torch.Generator().manual_seed(9))
    assert a.shape == (3, 90, 3)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    z = ae.sample_latents(20000, generator=torch.Generator().manual_seed(10)).double()
    L = ae.latent_cov_cholesky.double()
    torch.testing.assert_close(z.mean(0), ae.latent_mean.double(), atol=0.1, rtol=0)
    torch.testing.assert_close(torch.cov(z.T), L @ L.T, atol=0.1 * float((L @ L.T).diagonal().max()), rtol=0)
    with pytest.raises(ValueError, match="n: expected a non-negative int, got -1"):
        ae.sample(-1)


def test_autoencoder_config_round_trip_and_preset(synthetic_hierarchy, preset_hierarchy):
    ae = build_autoencoder("cheb", synthetic_hierarchy)
    ae.fit_latent_prior(torch.randn(10, 5, generator=torch.Generator().manual_seed(11)))
    config = json.loads(json.dumps(ae.config()))
    again = MeshAutoencoder.from_config(config, synthetic_hierarchy)
    again.load_state_dict(ae.state_dict())
    x = rand_meshes(synthetic_hierarchy, 2, seed=12)
    torch.testing.assert_close(again(x), ae(x))
    torch.testing.assert_close(again.latent_cov_cholesky, ae.latent_cov_cholesky)

    for name, enc_cls in (("spiralnet++-coma", SpiralEncoder), ("coma", ChebEncoder)):
        pre = MeshAutoencoder.from_preset(name, preset_hierarchy)
        assert isinstance(pre.encoder, enc_cls) and pre.encoder.channels == pre.decoder.channels
        x = rand_meshes(preset_hierarchy, 2, seed=13)
        assert pre.encode(x).shape == (2, pre.latent_size) and pre(x).shape == x.shape


def test_autoencoder_learns_to_reconstruct(synthetic_hierarchy):
    """A few optimiser steps on a tiny data set reduce the reconstruction error a lot."""
    torch.manual_seed(2)
    ae = build_autoencoder("spiral", synthetic_hierarchy)
    g = torch.Generator().manual_seed(14)
    basis = torch.randn(3, 90, 3, generator=g)
    data = torch.einsum("nk,kvc->nvc", torch.randn(16, 3, generator=g), basis)  # rank-3 data set
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    first = None
    for _ in range(100):
        loss = (ae(data) - data).pow(2).mean()
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first, (loss.item(), first)


# --------------------------------------------------- constructor checks, encoders and decoders
def _constructor_args(cls, hierarchy, channels=(8, 12)) -> dict:
    """The keyword arguments of ``cls(...)`` on the first ``len(channels)`` levels."""
    L = len(channels)
    kw: dict = {"channels": channels, "latent_size": 5, "num_vertices": hierarchy.sizes[: L + 1]}
    if cls in (SpiralEncoder, ChebEncoder):
        kw.update(in_channels=3, down_index=hierarchy.down[:L])
    else:
        kw.update(up_index=hierarchy.up_index[:L], up_weight=hierarchy.up_weight[:L])
    if cls in (SpiralEncoder, SpiralDecoder):
        kw.update(spirals=[hierarchy.levels[l].spirals for l in range(L)])
    else:
        kw.update(K=3, laplacian_index=[hierarchy.levels[l].laplacian_index for l in range(L)],
                  laplacian_weight=[hierarchy.levels[l].laplacian_weight for l in range(L)])
    return kw


@pytest.mark.parametrize("cls", [SpiralEncoder, SpiralDecoder, ChebEncoder, ChebDecoder])
def test_constructors_check_level_data_and_name_what_they_found(synthetic_hierarchy, cls):
    h = synthetic_hierarchy
    good = _constructor_args(cls, h)
    model = cls(**good)
    assert model.num_vertices == tuple(h.sizes[:3])
    levels = [conv.num_vertices for conv in model.convs]
    if isinstance(model, GraphDecoder):
        levels.reverse()  # a decoder's convs run from the coarsest level
    assert levels == list(h.sizes[:2])

    with pytest.raises(ValueError, match=r"num_vertices: expected 3 level sizes for 2 channel entries, got 2"):
        cls(**{**good, "num_vertices": h.sizes[:2]})
    if "Spiral" in cls.__name__:
        spirals = good["spirals"]
        with pytest.raises(ValueError, match=r"spirals: expected 2 tensors \(levels 0\.\.1\), got 1"):
            cls(**{**good, "spirals": spirals[:1]})
        bad_rows = spirals[0][:-1]
        with pytest.raises(ValueError, match=rf"spirals\[0\]: expected shape \({h.sizes[0]}, S\), "
                                             rf"got \({h.sizes[0] - 1}, {spirals[0].shape[1]}\)"):
            cls(**{**good, "spirals": [bad_rows, spirals[1]]})
        with pytest.raises(ValueError, match=r"dilations: expected 2 ints, got 3"):
            cls(**{**good, "dilations": [1, 1, 1]})
        assert cls(**{**good, "dilations": [1, 2]}).dilations == (1, 2)
    else:
        with pytest.raises(ValueError, match=r"laplacian_index/laplacian_weight: expected 2 tensors each "
                                             r"\(levels 0\.\.1\), got 2 and 1"):
            cls(**{**good, "laplacian_weight": good["laplacian_weight"][:1]})
        with pytest.raises(ValueError, match=r"K: expected a positive int, got 0"):
            cls(**{**good, "K": 0})
    # The level data is not kept beside the convs once they are built.
    assert not hasattr(model, "_spirals") and not hasattr(model, "_laplacians")


@pytest.mark.parametrize("kind", ["spiral", "cheb"])
@pytest.mark.parametrize("mode", ["grad", "no_grad"])
def test_empty_batch_encodes_to_an_empty_batch(synthetic_hierarchy, kind, mode):
    """0 meshes give 0 latent codes, and the autoencoder 0 meshes, as the decoders do."""
    torch.manual_seed(15)
    ae = build_autoencoder(kind, synthetic_hierarchy)
    x = rand_meshes(synthetic_hierarchy, 0, seed=16)
    with (torch.enable_grad() if mode == "grad" else torch.no_grad()):
        z = ae.encoder(x)
        y = ae(x)
    assert z.shape == (0, 5) and z.dtype == x.dtype
    assert y.shape == (0, 90, 3)


def test_autoencoder_encode_checks_dtype_before_normalising(synthetic_hierarchy):
    """The normalisation does not quietly promote an integer or lower-precision input."""
    torch.manual_seed(17)
    ae = build_autoencoder("spiral", synthetic_hierarchy)
    x = rand_meshes(synthetic_hierarchy, 2, seed=18)
    for bad in (x.half(), x.bfloat16(), (x * 10).long(), x.double()):
        with pytest.raises(TypeError, match=rf"x: expected dtype torch.float32 \(the autoencoder's\), got {bad.dtype}"):
            ae.encode(bad)
        with pytest.raises(TypeError, match=rf"got {bad.dtype}"):
            ae(bad)
    half = ae.half()
    assert half.encode(x.half()).dtype == torch.float16


def test_fit_latent_prior_jitters_every_rank_deficient_covariance(synthetic_hierarchy):
    """N <= Z codes give a singular covariance, which gets the documented jitter even when
    floating point happens to factorise it (its near-zero directions are then rounding
    noise, ~1e-8 of the scale); a non-singular one is factorised as it is."""
    ae = build_autoencoder("spiral", synthetic_hierarchy)
    jitter = 1e-6
    for N in (2, 3, 4, 5):
        for seed in range(6):
            latents = torch.randn(N, 5, generator=torch.Generator().manual_seed(100 * N + seed), dtype=torch.float64)
            ae.fit_latent_prior(latents, jitter=jitter)
            L = ae.latent_cov_cholesky.double()
            cov = torch.cov(latents.T)
            scale = float(cov.diagonal().mean())
            smallest = float(torch.linalg.eigvalsh(L @ L.T)[0])
            assert smallest >= 0.5 * jitter * scale, (N, seed, smallest, jitter * scale)
    full = torch.randn(50, 5, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ae.fit_latent_prior(full)
    L = ae.latent_cov_cholesky.double()
    torch.testing.assert_close(L @ L.T, torch.cov(full.T), rtol=1e-5, atol=1e-6)  # float32 buffers, no jitter
    for bad in (0.0, -1e-6, float("nan"), float("inf"), "1e-6"):
        with pytest.raises(ValueError, match=r"jitter: expected a finite number > 0, got"):
            ae.fit_latent_prior(full, jitter=bad)
    assert ae.sample(np.int64(2)).shape == (2, 90, 3)


def test_sample_latents_names_a_generator_of_the_wrong_type(synthetic_hierarchy):
    ae = build_autoencoder("spiral", synthetic_hierarchy)
    with pytest.raises(TypeError, match="generator: expected None or a torch.Generator, got int"):
        ae.sample_latents(2, generator=7)
    assert ae.sample_latents(2, generator=torch.Generator().manual_seed(7)).shape == (2, ae.latent_size)
