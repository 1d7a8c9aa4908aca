"""Named architectures from the literature, with the hierarchy each one needs.

* ``"spiralnet++-coma"``: the SpiralNet++ decoder on the COMA setting (Gong et
  al., ICCVW 2019): latent 16, channels ``(32, 32, 32, 64)``, spirals of length
  9, down-sampling factors ``(4, 4, 4, 4)``.
* ``"coma"``: the COMA decoder (Ranjan et al., ECCV 2018): Chebyshev ``K = 6``,
  channels ``(16, 16, 16, 32)``, latent 8, factors ``(4, 4, 4, 4)``.

Both use the decoders' default activation, ELU, as PyTorch re-implementations of
both do; COMA's original code applied a ReLU after each convolution's bias: pass
``activation="relu"`` to match it. On the 5,023-vertex face (levels 5,023 → 1,256 →
314 → 79 → 20) the trainable parameters are:

==================== ======= ======= =======
preset               decoder encoder total
==================== ======= ======= =======
``spiralnet++-coma``  96,515  58,384 154,899
``coma``              18,419  11,640  30,059
==================== ======= ======= =======

The decoder's fully connected layer has ``(Z + 1) V_L c_{L-1}`` of them, so only
it changes with the template's coarsest level.

Build the hierarchy with :func:`preset_hierarchy_params`::

    params = preset_hierarchy_params("coma")
    hierarchy = build_hierarchy(template, **params)
    decoder = decoder_from_preset("coma", hierarchy)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import HierarchyError
from ..hierarchy.container import MeshHierarchy
from .decoders import ChebDecoder, GraphDecoder, SpiralDecoder
from .encoders import ChebEncoder, GraphEncoder, SpiralEncoder

__all__ = ["PRESETS", "decoder_from_preset", "encoder_from_preset", "preset_hierarchy_params", "preset_mismatch"]

PRESETS: dict[str, dict[str, Any]] = {
    "spiralnet++-coma": dict(
        cls="SpiralDecoder", latent_size=16, channels=(32, 32, 32, 64), spiral_length=9, factors=(4, 4, 4, 4)
    ),
    "coma": dict(cls="ChebDecoder", K=6, channels=(16, 16, 16, 32), latent_size=8, factors=(4, 4, 4, 4)),
}

_HIERARCHY_KEYS = {"factors": "factors", "spiral_length": "spiral_lengths"}
_DECODERS: dict[str, type[GraphDecoder]] = {"SpiralDecoder": SpiralDecoder, "ChebDecoder": ChebDecoder}
_ENCODERS: dict[str, type[GraphEncoder]] = {"SpiralDecoder": SpiralEncoder, "ChebDecoder": ChebEncoder}


def _preset(name: str) -> dict[str, Any]:
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return dict(PRESETS[name])


def preset_hierarchy_params(name: str) -> dict[str, Any]:
    """Keyword arguments of ``build_hierarchy`` that a preset needs.

    Returns ``{"factors": ...}`` plus ``"spiral_lengths"`` for spiral presets.
    """
    preset = _preset(name)
    return {out: preset[key] for key, out in _HIERARCHY_KEYS.items() if key in preset}


def preset_mismatch(name: str, hierarchy: MeshHierarchy) -> tuple[str, Any] | None:
    """The first way ``hierarchy`` does not fit preset ``name``, or ``None`` when it fits.

    Returns ``("factors", built)`` for a hierarchy built with other factors,
    ``("levels", num_levels)`` for too few levels, or ``("spiral_length", shortest)``
    for spirals shorter than a spiral preset's (what its saved metadata records).
    """
    preset = _preset(name)
    factors = tuple(preset["factors"])
    built = hierarchy.meta.get("factors")
    if built is not None and tuple(built) != factors:
        return "factors", tuple(built)
    if hierarchy.num_levels < len(factors) + 1:
        return "levels", hierarchy.num_levels
    spirals, length = hierarchy.meta.get("spiral_lengths"), preset.get("spiral_length")
    if length is not None and spirals and min(spirals) < length:
        return "spiral_length", min(spirals)
    return None


def _check_hierarchy(name: str, preset: dict[str, Any], hierarchy: MeshHierarchy) -> None:
    """The preset's own error for a hierarchy built with other factors or too few levels (spirals too short
    are the decoder's to refuse)."""
    if not isinstance(hierarchy, MeshHierarchy):
        raise TypeError(f"hierarchy: expected a MeshHierarchy, got {type(hierarchy).__name__}")
    factors = tuple(preset["factors"])
    kind, found = preset_mismatch(name, hierarchy) or (None, None)
    if kind == "factors":
        raise HierarchyError(
            f"hierarchy: preset {name!r} expects factors {factors}, got a hierarchy built with {found}; "
            f"build it with build_hierarchy(mesh, **preset_hierarchy_params({name!r}))"
        )
    if kind == "levels":
        raise HierarchyError(
            f"hierarchy: preset {name!r} expects at least {len(factors) + 1} levels, got {found}; "
            f"build it with build_hierarchy(mesh, **preset_hierarchy_params({name!r}))"
        )


def _model_kwargs(preset: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in preset.items() if k not in ("cls", "factors")}


def decoder_from_preset(name: str, hierarchy: MeshHierarchy, **overrides: Any) -> nn.Module:
    """The preset's decoder on ``hierarchy`` (built with :func:`preset_hierarchy_params`).

    ``overrides`` replace preset arguments or add others (``out_channels=6``,
    ``activation=...``, ``check_finite=True``).
    """
    preset = _preset(name)
    _check_hierarchy(name, preset, hierarchy)
    return _DECODERS[preset["cls"]].from_hierarchy(hierarchy, **{**_model_kwargs(preset), **overrides})


def encoder_from_preset(name: str, hierarchy: MeshHierarchy, **overrides: Any) -> GraphEncoder:
    """The encoder mirroring the preset's decoder (same conv, channels, latent size)."""
    preset = _preset(name)
    _check_hierarchy(name, preset, hierarchy)
    return _ENCODERS[preset["cls"]].from_hierarchy(hierarchy, **{**_model_kwargs(preset), **overrides})
