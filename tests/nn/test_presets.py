"""Tests of the named architectures in mesh_decoder.nn.presets and the hierarchy each one needs."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from mesh_decoder.errors import HierarchyError
from mesh_decoder.nn.decoders import ChebDecoder, SpiralDecoder
from mesh_decoder.nn.encoders import ChebEncoder, SpiralEncoder
from mesh_decoder.nn.presets import PRESETS, decoder_from_preset, encoder_from_preset, preset_hierarchy_params
from tests.nn.reference import rand_latent

NAMES = sorted(PRESETS)
FIX = "build it with build_hierarchy(mesh, **preset_hierarchy_params({!r}))"


def test_presets_content():
    assert PRESETS["spiralnet++-coma"] == dict(
        cls="SpiralDecoder", latent_size=16, channels=(32, 32, 32, 64), spiral_length=9, factors=(4, 4, 4, 4)
    )
    assert PRESETS["coma"] == dict(cls="ChebDecoder", K=6, channels=(16, 16, 16, 32), latent_size=8, factors=(4, 4, 4, 4))
    assert preset_hierarchy_params("spiralnet++-coma") == {"factors": (4, 4, 4, 4), "spiral_lengths": 9}
    assert preset_hierarchy_params("coma") == {"factors": (4, 4, 4, 4)}
    with pytest.raises(ValueError, match="preset: expected one of"):
        preset_hierarchy_params("spiralnet")


def test_parameter_counts_on_the_5023_vertex_face_are_the_documented_ones():
    """The presets' docstring tabulates these counts for users comparing with the papers' models."""
    from mesh_decoder.hierarchy import build_hierarchy
    from mesh_decoder.mesh import face_template
    from mesh_decoder.nn import presets

    template = face_template(5023)
    for name, decoder, encoder in (("spiralnet++-coma", 96_515, 58_384), ("coma", 18_419, 11_640)):
        h = build_hierarchy(template, **preset_hierarchy_params(name), texture_size=None)
        assert h.sizes == [5023, 1256, 314, 79, 20]
        counts = [sum(p.numel() for p in build(name, h).parameters())
                  for build in (decoder_from_preset, encoder_from_preset)]
        assert counts == [decoder, encoder], (name, counts)
        row = f"``{name}`` ".ljust(21) + f"{decoder:>7,} {encoder:>7,} {decoder + encoder:>7,}"
        assert row in presets.__doc__, row


def test_decoder_from_preset(preset_hierarchy, make_hierarchy):
    spiral = decoder_from_preset("spiralnet++-coma", preset_hierarchy)
    assert isinstance(spiral, SpiralDecoder) and spiral.latent_size == 16 and spiral.channels == (32, 32, 32, 64)
    assert spiral.spiral_lengths == (9, 9, 9, 9)
    coma = decoder_from_preset("coma", preset_hierarchy, out_channels=6)
    assert isinstance(coma, ChebDecoder) and coma.K == 6 and coma.latent_size == 8 and coma.out_channels == 6
    for dec in (spiral, coma):
        z = rand_latent(dec, 2, seed=14)
        assert dec(z).shape == (2, preset_hierarchy.sizes[0], dec.out_channels)
    wrong = make_hierarchy(sizes=(90, 40, 18, 8), seed=4)
    with pytest.raises(HierarchyError, match="preset_hierarchy_params"):
        decoder_from_preset("coma", wrong)


@pytest.mark.parametrize("name, dec_cls, enc_cls", [("spiralnet++-coma", SpiralDecoder, SpiralEncoder),
                                                    ("coma", ChebDecoder, ChebEncoder)])
def test_encoder_from_preset_mirrors_the_decoder(preset_hierarchy, name, dec_cls, enc_cls):
    torch.manual_seed(20)
    dec = decoder_from_preset(name, preset_hierarchy)
    enc = encoder_from_preset(name, preset_hierarchy)
    assert type(dec) is dec_cls and type(enc) is enc_cls
    assert enc.channels == dec.channels == PRESETS[name]["channels"]
    assert enc.latent_size == dec.latent_size == PRESETS[name]["latent_size"]
    assert enc.in_channels == dec.out_channels == 3 and enc.num_vertices == dec.num_vertices
    if enc_cls is SpiralEncoder:
        assert enc.spiral_lengths == dec.spiral_lengths == (PRESETS[name]["spiral_length"],) * 4
    else:
        assert enc.K == dec.K == PRESETS[name]["K"]
    g = torch.Generator().manual_seed(21)
    x = torch.randn(3, preset_hierarchy.sizes[0], 3, generator=g)
    z = enc(x)
    assert z.shape == (3, enc.latent_size) and torch.isfinite(z).all() and z.abs().sum() > 0
    assert dec(z).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_overrides_replace_preset_arguments_and_leave_the_preset_alone(preset_hierarchy, name):
    before = copy.deepcopy(PRESETS)
    enc = encoder_from_preset(name, preset_hierarchy, in_channels=6, latent_size=4, activation="relu",
                              channels=(8, 8, 8, 8))
    dec = decoder_from_preset(name, preset_hierarchy, out_channels=6, latent_size=4, activation="relu",
                              channels=(8, 8, 8, 8))
    for model in (enc, dec):
        assert model.latent_size == 4 and model.activation == "relu" and model.channels == (8, 8, 8, 8)
    assert enc.in_channels == 6 and dec.out_channels == 6
    params = preset_hierarchy_params(name)
    params["factors"] = (2,)  # the caller's copy
    assert PRESETS == before and preset_hierarchy_params(name)["factors"] == (4, 4, 4, 4)


@pytest.mark.parametrize("name", NAMES)
def test_presets_build_on_a_hierarchy_with_the_presets_factors(make_hierarchy, name):
    """Recorded factors compare as numbers (4.0 is 4); a hierarchy that records none needs enough levels only."""
    sizes = (600, 150, 38, 10, 3)
    recorded = make_hierarchy(sizes=sizes, factors=(4.0, 4.0, 4.0, 4.0), seed=5)
    unrecorded = make_hierarchy(sizes=sizes, seed=6)
    del unrecorded.meta["factors"]
    for hierarchy in (recorded, unrecorded):
        assert decoder_from_preset(name, hierarchy).num_vertices == sizes
        assert encoder_from_preset(name, hierarchy).num_vertices == sizes


@pytest.mark.parametrize("build", [decoder_from_preset, encoder_from_preset])
@pytest.mark.parametrize("name", ["spiralnet", "COMA", "", None, 3, ("coma",)])
def test_an_unknown_preset_is_named_with_the_choices(preset_hierarchy, build, name):
    message = f"preset: expected one of ['coma', 'spiralnet++-coma'], got {name!r}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        preset_hierarchy_params(name)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build(name, preset_hierarchy)


@pytest.mark.parametrize("build", [decoder_from_preset, encoder_from_preset])
@pytest.mark.parametrize("name", NAMES)
def test_a_hierarchy_the_preset_cannot_use_is_named(make_hierarchy, build, name):
    with pytest.raises(TypeError, match=r"^hierarchy: expected a MeshHierarchy, got str$"):
        build(name, "face.hier")
    other = make_hierarchy(sizes=(90, 40, 18, 8), factors=(2, 2, 2), seed=7)
    message = (f"hierarchy: preset {name!r} expects factors (4, 4, 4, 4), got a hierarchy built with (2, 2, 2); "
               + FIX.format(name))
    with pytest.raises(HierarchyError, match=f"^{re.escape(message)}$"):
        build(name, other)
    short = make_hierarchy(sizes=(300, 75, 19, 5), seed=8)
    del short.meta["factors"]
    message = f"hierarchy: preset {name!r} expects at least 5 levels, got 4; " + FIX.format(name)
    with pytest.raises(HierarchyError, match=f"^{re.escape(message)}$"):
        build(name, short)


@pytest.mark.parametrize("build", [decoder_from_preset, encoder_from_preset])
def test_the_spiral_preset_names_spirals_that_are_too_short(make_hierarchy, build):
    short_spirals = make_hierarchy(sizes=(600, 150, 38, 10, 3), factors=(4, 4, 4, 4), spiral_length=5, seed=9)
    with pytest.raises(ValueError, match=r"spiral_length\[0\]: expected at most the hierarchy's spiral length 5 "
                                         r"at level 0, got 9 \(build the hierarchy with longer spirals\)"):
        build("spiralnet++-coma", short_spirals)
    assert build("coma", short_spirals).num_vertices == (600, 150, 38, 10, 3)  # no spirals in COMA
