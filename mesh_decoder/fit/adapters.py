r"""What :func:`mesh_decoder.fit.fit` needs from a model: a decoder and a Gaussian latent prior.

Every fit is a maximum a posteriori estimate: the data terms plus a weighted
negative log prior of the latent code. The prior is Gaussian,
:math:`z \sim \mathcal N(\mu, L L^\top)` with a lower-triangular Cholesky factor
``L``; its energy is half the squared Mahalanobis distance

.. math::
    E(z) = \tfrac12 \lVert L^{-1} (z - \mu) \rVert^2 = -\log p(z) + \text{const}.

* :class:`~mesh_decoder.pca.PCAModel` (Blanz & Vetter, SIGGRAPH 1999): coefficients
  in standard deviations with a standard normal prior (``mu = 0``, ``L = I``); a
  colour model, when present, is a second latent with its own standard normal prior.
* :class:`~mesh_decoder.nn.MeshAutoencoder`: the Gaussian fitted to the training
  latents, stored in its ``latent_mean`` and ``latent_cov_cholesky`` buffers.
* any other decoder (``decoder(z) -> (B, V, 3)`` or a
  :class:`~mesh_decoder.nn.JointOutput`, with a ``latent_size``): a prior you give,
  or the standard normal.

The fit optimises *whitened* codes :math:`w = L^{-1}(z - \mu)`, so every latent
direction has unit prior scale and the prior energy is :math:`\lVert w\rVert^2 / 2`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from .._checks import check_tensor, positive_int

__all__ = [
    "GaussianPrior",
    "Decoded",
    "FitDecoder",
    "as_fit_decoder",
    "pca_fit_decoder",
    "autoencoder_fit_decoder",
]


class GaussianPrior:
    r"""A Gaussian latent prior :math:`\mathcal N(\mu, L L^\top)`.

    Args:
        mean: ``(Z,)`` floating mean :math:`\mu`.
        cholesky: ``(Z, Z)`` lower-triangular factor ``L`` with a positive diagonal,
            or ``None`` (default) for the identity.

    Shapes:
        - :meth:`energy`, :meth:`log_prob`: ``(B, Z) -> (B,)``, ``(Z,) -> ()``
        - :meth:`whiten`, :meth:`unwhiten`: ``(B, Z) -> (B, Z)``
    """

    def __init__(self, mean: torch.Tensor, cholesky: torch.Tensor | None = None) -> None:
        check_tensor(mean, "mean", shape=("Z",))
        if not mean.is_floating_point():
            raise TypeError(f"mean: expected a floating dtype, got {mean.dtype}")
        z = int(mean.shape[0])
        if z < 1:
            raise ValueError("mean: expected at least one latent dimension, got 0")
        if not bool(torch.isfinite(mean).all()):
            raise ValueError("mean: expected finite values, got NaN or inf")
        self.mean = mean.detach()
        if cholesky is None:
            self.cholesky = None
        else:
            check_tensor(cholesky, "cholesky", shape=(z, z))
            chol = cholesky.detach().to(dtype=mean.dtype, device=mean.device)
            if not bool(torch.isfinite(chol).all()):
                raise ValueError("cholesky: expected finite values, got NaN or inf")
            upper = torch.triu(chol, diagonal=1)
            if bool((upper != 0).any()):
                raise ValueError(
                    f"cholesky: expected a lower-triangular matrix, got {int((upper != 0).sum())} non-zero "
                    "entries above the diagonal"
                )
            diag = torch.diagonal(chol)
            if not bool((diag > 0).all()):
                raise ValueError(f"cholesky: expected a positive diagonal, got minimum {float(diag.min())}")
            self.cholesky = chol

    # ------------------------------------------------------------------ constructors
    @classmethod
    def standard_normal(cls, size: int, dtype: torch.dtype = torch.float32, device=None) -> "GaussianPrior":
        """:math:`\\mathcal N(0, I)` of dimension ``size``."""
        return cls(torch.zeros(positive_int(size, "size"), dtype=dtype, device=device))

    @classmethod
    def from_autoencoder(cls, model: nn.Module) -> "GaussianPrior":
        """The prior stored in a :class:`~mesh_decoder.nn.MeshAutoencoder`'s buffers."""
        mean = getattr(model, "latent_mean", None)
        chol = getattr(model, "latent_cov_cholesky", None)
        if not isinstance(mean, torch.Tensor) or not isinstance(chol, torch.Tensor):
            raise TypeError(
                f"model: expected buffers latent_mean and latent_cov_cholesky (a MeshAutoencoder), "
                f"got {type(model).__name__}"
            )
        return cls(mean, chol)

    # ----------------------------------------------------------------------- basics
    @property
    def size(self) -> int:
        """``Z``."""
        return int(self.mean.shape[0])

    @property
    def is_standard(self) -> bool:
        """Whether this is :math:`\\mathcal N(0, I)` (no Cholesky factor and a zero mean)."""
        return self.cholesky is None and not bool((self.mean != 0).any())

    @property
    def dtype(self) -> torch.dtype:
        return self.mean.dtype

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def to(self, device=None, dtype: torch.dtype | None = None) -> "GaussianPrior":
        """A copy on ``device`` in ``dtype``."""
        chol = None if self.cholesky is None else self.cholesky.to(device=device, dtype=dtype)
        return GaussianPrior(self.mean.to(device=device, dtype=dtype), chol)

    def covariance(self) -> torch.Tensor:
        """:math:`L L^\\top`. Shapes: ``-> (Z, Z)``."""
        if self.cholesky is None:
            return torch.eye(self.size, dtype=self.dtype, device=self.device)
        return self.cholesky @ self.cholesky.T

    def __repr__(self) -> str:
        kind = "standard normal" if self.is_standard else ("identity covariance" if self.cholesky is None else "full")
        return f"GaussianPrior(size={self.size}, {kind})"

    # ------------------------------------------------------------------- transforms
    def _check(self, z: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(z).__name__}")
        if z.dim() not in (1, 2) or z.shape[-1] != self.size:
            raise ValueError(f"{name}: expected shape (B, {self.size}) or ({self.size},), got {tuple(z.shape)}")
        return (z.unsqueeze(0), True) if z.dim() == 1 else (z, False)

    def whiten(self, z: torch.Tensor) -> torch.Tensor:
        """:math:`w = L^{-1}(z - \\mu)` (a triangular solve). Shapes: ``(B, Z) -> (B, Z)``."""
        zb, single = self._check(z, "z")
        d = zb - self.mean.to(zb)  # (B, Z)
        if self.cholesky is not None:
            chol = self.cholesky.to(zb)
            d = torch.linalg.solve_triangular(chol, d.T, upper=False).T  # (B, Z)
        return d[0] if single else d

    def unwhiten(self, w: torch.Tensor) -> torch.Tensor:
        """:math:`z = \\mu + L w`. Shapes: ``(B, Z) -> (B, Z)``."""
        wb, single = self._check(w, "w")
        z = wb if self.cholesky is None else wb @ self.cholesky.to(wb).T  # (B, Z)
        z = z + self.mean.to(wb)
        return z[0] if single else z

    def energy(self, z: torch.Tensor) -> torch.Tensor:
        """Half the squared Mahalanobis distance, :math:`\\tfrac12\\lVert L^{-1}(z-\\mu)\\rVert^2`.

        Shapes: ``(B, Z) -> (B,)``; ``(Z,) -> ()``.
        """
        return 0.5 * self.whiten(z).square().sum(-1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        r"""Log density, :math:`-E(z) - \tfrac Z2 \log 2\pi - \sum_i \log L_{ii}`.

        Shapes: ``(B, Z) -> (B,)``; ``(Z,) -> ()``.
        """
        log_det = 0.0 if self.cholesky is None else float(torch.log(torch.diagonal(self.cholesky)).sum())
        return -self.energy(z) - 0.5 * self.size * math.log(2.0 * math.pi) - log_det


class Decoded(NamedTuple):
    """A decoder's output as the fit uses it.

    Attributes:
        vertices: ``(B, V, 3)`` positions in model units.
        colors: ``(B, V, 3)`` per-vertex RGB, or ``None``.
        texture: ``(B, 3, H, W)`` UV texture, or ``None``.
    """

    vertices: torch.Tensor
    colors: torch.Tensor | None = None
    texture: torch.Tensor | None = None


def _as_decoded(out: Any, what: str) -> Decoded:
    """A decoder's raw output (tensor or NamedTuple with ``vertices``) as :class:`Decoded`."""
    if isinstance(out, torch.Tensor):
        if out.dim() != 3 or out.shape[-1] not in (3, 6):
            raise ValueError(f"{what}: expected an output of shape (B, V, 3) (or (B, V, 6): xyz + rgb), "
                             f"got {tuple(out.shape)}")
        if out.shape[-1] == 6:
            return Decoded(out[..., :3], out[..., 3:], None)  # (B, V, 3) each
        return Decoded(out)
    vertices = getattr(out, "vertices", None)
    if not isinstance(vertices, torch.Tensor):
        raise TypeError(f"{what}: expected a tensor (B, V, 3) or an output with .vertices, got {type(out).__name__}")
    check_tensor(vertices, f"{what}.vertices", shape=("B", "V", 3))
    colors = getattr(out, "colors", None)
    texture = getattr(out, "texture", None)
    return Decoded(vertices, colors if isinstance(colors, torch.Tensor) else None,
                   texture if isinstance(texture, torch.Tensor) else None)


@dataclass
class FitDecoder:
    """A decoder with its latent prior (and optionally a colour model), as fitted by :func:`~mesh_decoder.fit.fit`.

    Args:
        decode: ``z (B, Z) -> (B, V, 3)`` tensor, ``(B, V, 6)`` (xyz + rgb), or an output
            with ``.vertices`` and optionally ``.colors`` / ``.texture`` (e.g. a
            :class:`~mesh_decoder.nn.JointOutput`).
        prior: the :class:`GaussianPrior` of ``z``.
        color_decode: ``z_c (B, Z_c) -> (B, V, 3)`` colours from a separate colour
            latent (the PCA colour model), or ``None`` (default).
        color_prior: the prior of ``z_c`` (required with ``color_decode``).
        module: the ``nn.Module`` behind ``decode`` (its parameters are frozen and
            it is put in eval mode during a fit), or ``None``.
        name: shown in reports (default ``""``).

    Shapes:
        ``__call__``: ``(B, Z), (B, Z_c) -> Decoded(vertices (B, V, 3), colors (B, V, 3) | None, texture | None)``
    """

    decode: Callable[[torch.Tensor], Any]
    prior: GaussianPrior
    color_decode: Callable[[torch.Tensor], torch.Tensor] | None = None
    color_prior: GaussianPrior | None = None
    module: nn.Module | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not callable(self.decode):
            raise TypeError(f"decode: expected a callable, got {type(self.decode).__name__}")
        if not isinstance(self.prior, GaussianPrior):
            raise TypeError(f"prior: expected a GaussianPrior, got {type(self.prior).__name__}")
        if (self.color_decode is None) != (self.color_prior is None):
            raise ValueError("color_decode and color_prior: expected both or neither")
        if self.color_prior is not None and not isinstance(self.color_prior, GaussianPrior):
            raise TypeError(f"color_prior: expected a GaussianPrior, got {type(self.color_prior).__name__}")

    @property
    def latent_size(self) -> int:
        return self.prior.size

    @property
    def color_latent_size(self) -> int:
        return 0 if self.color_prior is None else self.color_prior.size

    @property
    def dtype(self) -> torch.dtype:
        """The dtype latents are decoded in (the module's floating parameters/buffers, else the prior's)."""
        if self.module is not None:
            for t in [*self.module.parameters(), *self.module.buffers()]:
                if t.is_floating_point():
                    return t.dtype
        return self.prior.dtype

    @property
    def device(self) -> torch.device:
        if self.module is not None:
            for t in [*self.module.parameters(), *self.module.buffers()]:
                return t.device
        return self.prior.device

    def __call__(self, z: torch.Tensor, z_color: torch.Tensor | None = None) -> Decoded:
        out = _as_decoded(self.decode(z), self.name or "decoder")
        if self.color_decode is not None and z_color is not None:
            out = out._replace(colors=self.color_decode(z_color))
        return out


def pca_fit_decoder(model: nn.Module) -> FitDecoder:
    """A :class:`~mesh_decoder.pca.PCAModel` with its standard normal priors (shape, and colour if present)."""
    from ..pca import PCAModel

    if not isinstance(model, PCAModel):
        raise TypeError(f"model: expected a PCAModel, got {type(model).__name__}")
    dtype, device = model.mean.dtype, model.mean.device
    color = model.has_colors
    return FitDecoder(
        decode=model.decode,
        prior=GaussianPrior.standard_normal(model.latent_size, dtype, device),
        color_decode=model.decode_colors if color else None,
        color_prior=GaussianPrior.standard_normal(model.color_latent_size, dtype, device) if color else None,
        module=model,
        name="PCAModel",
    )


def autoencoder_fit_decoder(model: nn.Module) -> FitDecoder:
    """The decoder of a :class:`~mesh_decoder.nn.MeshAutoencoder` with its stored Gaussian prior."""
    from ..nn.autoencoder import MeshAutoencoder

    if not isinstance(model, MeshAutoencoder):
        raise TypeError(f"model: expected a MeshAutoencoder, got {type(model).__name__}")
    return FitDecoder(decode=model.decode, prior=GaussianPrior.from_autoencoder(model), module=model,
                      name="MeshAutoencoder")


def as_fit_decoder(model: Any, prior: GaussianPrior | None = None) -> FitDecoder:
    """Wrap any supported model for fitting.

    Args:
        model: a :class:`FitDecoder` (returned as is, with ``prior`` replacing its
            own when given), a :class:`~mesh_decoder.pca.PCAModel`, a
            :class:`~mesh_decoder.nn.MeshAutoencoder`, or any module / callable with a
            ``latent_size`` attribute whose output is ``(B, V, 3)``, ``(B, V, 6)`` or has
            ``.vertices`` (a graph decoder, a :class:`~mesh_decoder.nn.JointDecoder`).
        prior: the latent prior. Default ``None``: the model's own (PCA: standard
            normal; autoencoder: its stored Gaussian); for other decoders the standard
            normal :math:`\\mathcal N(0, I)`.

    Returns:
        A :class:`FitDecoder`.
    """
    if prior is not None and not isinstance(prior, GaussianPrior):
        raise TypeError(f"prior: expected a GaussianPrior or None, got {type(prior).__name__}")
    if isinstance(model, FitDecoder):
        out = model
    else:
        from ..nn.autoencoder import MeshAutoencoder
        from ..pca import PCAModel

        if isinstance(model, PCAModel):
            out = pca_fit_decoder(model)
        elif isinstance(model, MeshAutoencoder):
            out = autoencoder_fit_decoder(model)
        else:
            size = getattr(model, "latent_size", None)
            if not callable(model) or isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise TypeError(
                    f"model: expected a PCAModel, a MeshAutoencoder, a FitDecoder or a decoder with an int "
                    f"latent_size, got {type(model).__name__}"
                )
            module = model if isinstance(model, nn.Module) else None
            dtype, device = torch.float32, None
            if module is not None:
                for t in [*module.parameters(), *module.buffers()]:
                    if t.is_floating_point():
                        dtype, device = t.dtype, t.device
                        break
            out = FitDecoder(decode=model, prior=GaussianPrior.standard_normal(size, dtype, device), module=module,
                             name=type(model).__name__)
    if prior is not None:
        if prior.size != out.latent_size:
            raise ValueError(f"prior: expected size {out.latent_size} (the decoder's latent size), got {prior.size}")
        out = FitDecoder(out.decode, prior, out.color_decode, out.color_prior, out.module, out.name)
    return out
