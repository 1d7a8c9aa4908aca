"""Latent priors and the decoder adapters."""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch

from mesh_decoder.fit import (
    Decoded,
    FitDecoder,
    GaussianPrior,
    as_fit_decoder,
    autoencoder_fit_decoder,
    pca_fit_decoder,
)

from .conftest import make_autoencoder


def _random_prior(g, z=5, dtype=torch.float64):
    a = torch.randn(z, z, generator=g, dtype=dtype)
    cov = a @ a.T + 0.5 * torch.eye(z, dtype=dtype)
    mean = torch.randn(z, generator=g, dtype=dtype)
    return GaussianPrior(mean, torch.linalg.cholesky(cov)), mean, cov


def test_energy_matches_dense_mahalanobis_and_log_prob_matches_torch():
    g = torch.Generator().manual_seed(1)
    prior, mean, cov = _random_prior(g)
    z = torch.randn(7, 5, generator=g, dtype=torch.float64)
    inv = torch.linalg.inv(cov)
    for i in range(7):
        d = z[i] - mean
        assert abs(float(prior.energy(z[i])) - 0.5 * float(d @ inv @ d)) < 1e-9
    reference = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(z)
    torch.testing.assert_close(prior.log_prob(z), reference)
    torch.testing.assert_close(prior.covariance(), cov)


def test_whiten_unwhiten_are_inverse_and_whitened_energy_is_half_norm():
    g = torch.Generator().manual_seed(2)
    prior, _, _ = _random_prior(g)
    z = torch.randn(4, 5, generator=g, dtype=torch.float64)
    w = prior.whiten(z)
    torch.testing.assert_close(prior.unwhiten(w), z)
    torch.testing.assert_close(prior.energy(z), 0.5 * (w * w).sum(-1))
    torch.testing.assert_close(prior.whiten(z[2]), w[2])  # unbatched


def test_standard_normal_matches_pca_log_prior(pca):
    prior = pca_fit_decoder(pca).prior
    assert prior.is_standard and prior.size == pca.latent_size
    z = pca.sample_latents(3, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(prior.log_prob(z), pca.log_prior(z))
    torch.testing.assert_close(prior.energy(z), 0.5 * z.square().sum(-1))


def test_prior_validation():
    with pytest.raises(ValueError, match="lower-triangular"):
        GaussianPrior(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive diagonal"):
        GaussianPrior(torch.zeros(2), torch.tensor([[1.0, 0.0], [0.3, -1.0]]))
    with pytest.raises(ValueError, match=r"expected shape \(2, 2\)"):
        GaussianPrior(torch.zeros(2), torch.eye(3))
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        GaussianPrior(torch.zeros(2)).energy(torch.zeros(3))
    with pytest.raises(ValueError, match="positive int"):
        GaussianPrior.standard_normal(0)


def test_pca_adapter_decodes_shape_and_colour(pca):
    fd = as_fit_decoder(pca)
    assert fd.latent_size == pca.latent_size and fd.color_latent_size == pca.color_latent_size
    g = torch.Generator().manual_seed(4)
    z, zc = pca.sample_latents(2, g), pca.sample_color_latents(2, g)
    out = fd(z, zc)
    torch.testing.assert_close(out.vertices, pca.decode(z))
    torch.testing.assert_close(out.colors, pca.decode_colors(zc))
    assert fd(z).colors is None


def test_autoencoder_adapter_uses_stored_prior(hierarchy, template):
    ae = make_autoencoder(hierarchy, template, latent_size=4)
    g = torch.Generator().manual_seed(5)
    fd = autoencoder_fit_decoder(ae)
    assert not fd.prior.is_standard
    torch.testing.assert_close(fd.prior.mean, ae.latent_mean)
    torch.testing.assert_close(fd.prior.cholesky, ae.latent_cov_cholesky)
    z = ae.sample_latents(3, generator=g)
    torch.testing.assert_close(fd(z).vertices, ae.decode(z))
    assert fd.module is ae and fd.dtype == torch.float32


def test_raw_decoder_gets_given_prior_or_standard_normal(hierarchy, template):
    ae = make_autoencoder(hierarchy, template, seed=1, latent_size=4)
    fd = as_fit_decoder(ae.decoder)
    assert fd.prior.is_standard and fd.latent_size == 4
    custom = GaussianPrior(torch.ones(4), torch.eye(4) * 2)
    assert as_fit_decoder(ae.decoder, custom).prior is custom
    assert as_fit_decoder(fd, custom).prior is custom  # replaces a FitDecoder's own
    with pytest.raises(ValueError, match="expected size 4"):
        as_fit_decoder(ae.decoder, GaussianPrior.standard_normal(3))
    with pytest.raises(TypeError, match="latent_size"):
        as_fit_decoder(lambda z: z)
    with pytest.raises(TypeError, match="GaussianPrior"):
        as_fit_decoder(ae.decoder, prior="normal")


class _Joint(NamedTuple):
    vertices: torch.Tensor
    texture: torch.Tensor
    colors: torch.Tensor | None


def test_decoder_outputs_six_channels_and_named_tuples():
    g = torch.Generator().manual_seed(6)
    y = torch.randn(2, 9, 6, generator=g)
    out = FitDecoder(lambda z: y, GaussianPrior.standard_normal(3))(torch.zeros(2, 3))
    assert isinstance(out, Decoded)
    torch.testing.assert_close(out.vertices, y[..., :3])
    torch.testing.assert_close(out.colors, y[..., 3:])
    tex = torch.rand(2, 3, 4, 4, generator=g)
    out = FitDecoder(lambda z: _Joint(y[..., :3], tex, None), GaussianPrior.standard_normal(3))(torch.zeros(2, 3))
    assert out.colors is None and out.texture is tex
    with pytest.raises(ValueError, match=r"\(B, V, 3\)"):
        FitDecoder(lambda z: torch.zeros(2, 9, 4), GaussianPrior.standard_normal(3))(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="both or neither"):
        FitDecoder(lambda z: y, GaussianPrior.standard_normal(3), color_decode=lambda z: y)
    assert math.isfinite(float(GaussianPrior.standard_normal(3).log_prob(torch.zeros(3))))
