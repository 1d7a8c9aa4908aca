r"""`MeshAutoencoder`: an encoder, a decoder, shared normalisation and a Gaussian latent prior.

The decoder's per-vertex ``mean``/``std`` buffers define the data units: the
encoder sees ``(x - mean) / std`` and the decoder returns ``y * std + mean``.
After training, :meth:`MeshAutoencoder.fit_latent_prior` fits a Gaussian
:math:`\mathcal N(\mu, \Sigma)` to the training latents (stored as buffers
``latent_mean`` and ``latent_cov_cholesky``, :math:`\Sigma = L L^\top`), and
:meth:`MeshAutoencoder.sample` draws new meshes
:math:`\mathrm{dec}(\mu + L \epsilon)`, :math:`\epsilon \sim \mathcal N(0, I)`,
as done to sample COMA-style autoencoders.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Mapping

import torch
from torch import nn

from .._checks import check_tensor, non_negative_int
from .._random import standard_normal_rows
from ..hierarchy.container import MeshHierarchy
from .decoders import GraphDecoder, _split_config, decoder_from_config
from .encoders import GraphEncoder, encoder_from_config
from .graph import takes_dtype, write_buffer
from .presets import decoder_from_preset, encoder_from_preset

__all__ = ["MeshAutoencoder"]


class MeshAutoencoder(nn.Module):
    r"""Graph-convolutional mesh autoencoder with a Gaussian latent prior.

    .. math::
        \hat x = \mathrm{dec}\big(\mathrm{enc}((x - \mu_{data}) / \sigma_{data})\big)

    where :math:`\mu_{data}, \sigma_{data}` are the decoder's ``mean``/``std``
    buffers (the decoder multiplies and adds them back).

    Args:
        encoder: a :class:`~mesh_decoder.nn.GraphEncoder`.
        decoder: a :class:`~mesh_decoder.nn.GraphDecoder` with the same latent
            size, ``out_channels == encoder.in_channels`` and the same template size
            (and template hash, where both were built on a hierarchy that records one).

    Buffers:
        latent_mean: ``(Z,)``, default zeros.
        latent_cov_cholesky: ``(Z, Z)`` lower-triangular, default identity.

    Shapes:
        - :meth:`forward`: ``(B, V, C) -> (B, V, C)``
        - :meth:`encode`: ``(B, V, C) -> (B, Z)``; :meth:`decode`: ``(B, Z) -> (B, V, C)``
        - :meth:`sample`: ``n -> (n, V, C)``
    """

    latent_mean: torch.Tensor
    latent_cov_cholesky: torch.Tensor

    def __init__(self, encoder: GraphEncoder, decoder: GraphDecoder) -> None:
        super().__init__()
        if not isinstance(encoder, GraphEncoder):
            raise TypeError(f"encoder: expected a GraphEncoder, got {type(encoder).__name__}")
        if not isinstance(decoder, GraphDecoder):
            raise TypeError(f"decoder: expected a GraphDecoder, got {type(decoder).__name__}")
        if encoder.latent_size != decoder.latent_size:
            raise ValueError(
                f"latent sizes: expected the encoder's ({encoder.latent_size}) to equal the decoder's "
                f"({decoder.latent_size})"
            )
        if encoder.in_channels != decoder.out_channels:
            raise ValueError(
                f"channels: expected encoder in_channels ({encoder.in_channels}) == decoder out_channels "
                f"({decoder.out_channels})"
            )
        if encoder.num_vertices[0] != decoder.num_vertices[0]:
            raise ValueError(
                f"vertices: expected the encoder's template size ({encoder.num_vertices[0]}) to equal the "
                f"decoder's ({decoder.num_vertices[0]})"
            )
        enc_hash, dec_hash = encoder.template_hash, decoder.template_hash
        if enc_hash is not None and dec_hash is not None and enc_hash != dec_hash:
            raise ValueError(
                f"template: expected the encoder's template hash ({enc_hash}) to equal the decoder's ({dec_hash}): "
                "they were built on hierarchies of different templates"
            )
        self.encoder = encoder
        self.decoder = decoder
        Z = decoder.latent_size
        self.register_buffer("latent_mean", torch.zeros(Z))
        self.register_buffer("latent_cov_cholesky", torch.eye(Z))

    @property
    def latent_size(self) -> int:
        return self.decoder.latent_size

    @property
    def mean(self) -> torch.Tensor:
        """The shared per-vertex data mean ``(V, C)`` (the decoder's buffer)."""
        return self.decoder.mean

    @property
    def std(self) -> torch.Tensor:
        """The shared per-vertex data std ``(V, C)`` (the decoder's buffer)."""
        return self.decoder.std

    def set_normalization(self, mean: Any, std: Any) -> None:
        """Set the shared normalisation (see :meth:`GraphDecoder.set_normalization`)."""
        self.decoder.set_normalization(mean, std)

    # ----------------------------------------------------------------- encode/decode
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(B, Z)`` (or ``(Z,)``) of meshes ``(B, V, C)`` in data units, in the
        autoencoder's dtype and on its device (an integer or other-precision ``x`` is refused)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x: expected a torch.Tensor, got {type(x).__name__}")
        V, C = self.decoder.num_vertices[0], self.decoder.out_channels
        if x.dim() not in (2, 3) or tuple(x.shape[-2:]) != (V, C):
            raise ValueError(f"x: expected shape (B, {V}, {C}) or ({V}, {C}), got {tuple(x.shape)}")
        # checked here, as the encoder would: the normalisation below would otherwise promote
        # an integer or lower-precision x to the buffers' dtype, or fail on another device
        mean = self.decoder.mean
        if not takes_dtype(x, mean.dtype):
            raise TypeError(f"x: expected dtype {mean.dtype} (the autoencoder's), got {x.dtype}")
        if x.device != mean.device:
            raise ValueError(f"x: expected a tensor on {mean.device} (the autoencoder's), got one on {x.device}")
        return self.encoder((x - mean) / self.decoder.std)  # (B, V, C) -> (B, Z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Meshes ``(B, V, C)`` in data units from latents ``(B, Z)``."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions ``(B, V, C)`` of meshes ``(B, V, C)`` in data units: ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    # ------------------------------------------------------------------ latent prior
    @torch.no_grad()
    def fit_latent_prior(self, latents: torch.Tensor, jitter: float = 1e-6) -> "MeshAutoencoder":
        r"""Fit the Gaussian prior to latent codes: sample mean and covariance.

        :math:`\mu = \frac1N \sum_n z_n`, :math:`\Sigma = \frac1{N-1} \sum_n (z_n - \mu)(z_n - \mu)^\top`,
        computed in float64; its Cholesky factor is stored. When :math:`\Sigma`
        is singular (``N <= Z`` or collapsed dimensions: its smallest eigenvalue is
        within rounding of zero, ``<= Z * eps * largest``), ``jitter * mean(diag Σ)``
        is added to the diagonal, times 10 until the factorisation succeeds. (A
        rank-deficient matrix may still factorise in floating point, into a factor
        whose near-zero directions are rounding noise; they get the jitter too.)

        Args:
            latents: ``(N, Z)`` floating, ``N >= 2``, finite.
            jitter: relative diagonal jitter for singular covariances, finite and > 0
                (default ``1e-6``).

        Returns:
            ``self``.
        """
        Z = self.latent_size
        if isinstance(jitter, bool) or not isinstance(jitter, Real) or not math.isfinite(jitter) or jitter <= 0:
            raise ValueError(f"jitter: expected a finite number > 0, got {jitter!r}")
        check_tensor(latents, "latents", shape=("N", Z))
        if not latents.is_floating_point():
            raise TypeError(f"latents: expected a floating dtype, got {latents.dtype}")
        N = int(latents.shape[0])
        if N < 2:
            raise ValueError(f"latents: expected at least 2 codes to fit a covariance, got {N}")
        z = latents.detach().to(torch.float64)
        if not bool(torch.isfinite(z).all()):
            raise ValueError("latents: expected finite values, got NaN or inf")
        mu = z.mean(dim=0)  # (Z,)
        centered = z - mu  # (N, Z)
        cov = centered.T @ centered / (N - 1)  # (Z, Z)
        eig = torch.linalg.eigvalsh(cov)  # (Z,) ascending
        singular = bool(eig[0] <= Z * torch.finfo(torch.float64).eps * eig[-1])
        chol, info = torch.linalg.cholesky_ex(cov)
        if singular:
            info = torch.ones_like(info)  # factorised or not, it gets the jitter below
        scale = float(torch.diagonal(cov).mean().clamp(min=torch.finfo(torch.float64).tiny))
        eps = jitter
        eye = torch.eye(Z, dtype=torch.float64, device=cov.device)
        for _ in range(12):
            if int(info) == 0:
                break
            chol, info = torch.linalg.cholesky_ex(cov + eps * scale * eye)
            eps *= 10.0
        if int(info) != 0:
            raise ValueError("latents: the covariance is not positive definite even with jitter")
        write_buffer(self.latent_mean, mu.to(self.latent_mean))
        write_buffer(self.latent_cov_cholesky, chol.to(self.latent_cov_cholesky))
        return self

    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""``n`` latents ``(n, Z)`` from the prior, :math:`\mu + L \epsilon`.

        With a seeded ``generator`` the result is deterministic, and with a fresh one
        the first ``k`` latents are the same for any ``n >= k``; the noise is
        drawn on the generator's device and moved to the model's. ``n = 0`` gives an
        empty ``(0, Z)`` batch, as :meth:`~mesh_decoder.pca.PCAModel.sample_latents` does.
        """
        n = non_negative_int(n, "n")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator: expected None or a torch.Generator, got {type(generator).__name__}")
        mu, chol = self.latent_mean, self.latent_cov_cholesky
        gen_device = generator.device if generator is not None else mu.device
        eps = standard_normal_rows(n, self.latent_size, generator, dtype=mu.dtype, device=gen_device)  # (n, Z)
        eps = eps.to(mu.device)
        return mu + eps @ chol.T  # (n, Z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``n`` latents from the prior: meshes ``(n, V, C)`` in data units (``n = 0``: an empty
        ``(0, V, C)`` batch, as :meth:`~mesh_decoder.pca.PCAModel.sample` gives)."""
        z = self.sample_latents(n, generator).to(self.decoder.fc.weight.dtype)  # (n, Z)
        return self.decode(z)

    # ----------------------------------------------------------------------- config
    def config(self) -> dict[str, Any]:
        """JSON-able config; rebuild with :meth:`from_config`."""
        return {"class": type(self).__name__, "encoder": self.encoder.config(), "decoder": self.decoder.config()}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], hierarchy: MeshHierarchy) -> "MeshAutoencoder":
        """Rebuild from :meth:`config` on the same hierarchy: its ``encoder`` and ``decoder`` configs, each
        checked as its own ``from_config`` checks it."""
        kwargs = _split_config(config, cls)
        if set(kwargs) != {"encoder", "decoder"}:
            raise ValueError(f"config: expected keys 'encoder' and 'decoder', got {sorted(kwargs)}")
        decoder = decoder_from_config(kwargs["decoder"], hierarchy)
        if not isinstance(decoder, GraphDecoder):
            raise ValueError(f"config: expected a graph decoder, got {type(decoder).__name__}")
        return cls(encoder_from_config(kwargs["encoder"], hierarchy), decoder)

    @classmethod
    def from_preset(cls, name: str, hierarchy: MeshHierarchy) -> "MeshAutoencoder":
        """Encoder and decoder of a preset in :data:`~mesh_decoder.nn.presets.PRESETS`."""
        return cls(encoder_from_preset(name, hierarchy), decoder_from_preset(name, hierarchy))
