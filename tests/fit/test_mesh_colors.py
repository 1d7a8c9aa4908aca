"""Registered meshes with per-vertex colours: the colour loss fits a PCA colour latent; a ``color`` group that could
fit nothing is refused.

Regression: ``mesh-decoder fit`` of a joint (shape + colour) PCA to a registered PLY with colours, with
``--stages pose:30 pose+shape+color:100``, left the colour latent at zero (the output colours were exactly the PCA's
colour mean) without a word: the target's colours were not read and the ``color`` group freed nothing for a mesh
target.
"""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
import torch

from mesh_decoder.fit import (
    DEFAULT_PRIOR_WEIGHTS,
    DEFAULT_WEIGHTS,
    FitDecoder,
    FitProblem,
    GaussianPrior,
    LandmarkTarget,
    MeshTarget,
    PointCloudTarget,
    Stage,
    add_fit_arguments,
    apply_similarity,
    default_stages,
    fit,
    load_target,
    run_fit,
)
from mesh_decoder.mesh.io import load_mesh, save_mesh
from mesh_decoder.model_files import save_model

from .conftest import random_similarity


def _generator() -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 31)))


def _coloured_face(pca, g: torch.Generator):
    """A face of the PCA model with a random shape and colour code, moved by a random similarity:
    ``(target vertices (V, 3), colours (V, 3), z (K,), z_c (Kc,))`` in float64, the colours within ``[0, 1]``."""
    model = pca.double()
    z = torch.randn(model.latent_size, generator=g, dtype=torch.float64)
    zc = torch.randn(model.color_latent_size, generator=g, dtype=torch.float64)
    colors = model.decode_colors(zc)
    while float(colors.min()) < 0 or float(colors.max()) > 1:  # a code far out in the tails: nearer the mean
        zc = zc / 2
        colors = model.decode_colors(zc)
    s, R, t = random_similarity(g)
    return apply_similarity(model.decode(z), s, R, t), colors, z, zc


def _map_color_code(pca, colors: torch.Tensor, color_weight: float, prior_weight: float) -> torch.Tensor:
    """The colour code minimising ``color_weight * mean_v |c_v(z_c) - colors_v|^2 + prior_weight / 2 * |z_c|^2``,
    in closed form (orthonormal components): ``z_k = a s_k (c_k . d) / (a s_k^2 + prior_weight)``, ``a = 2 w / V``."""
    sigma = pca.color_stddev.double()  # (Kc,)
    basis = pca.color_components.double()  # (Kc, 3V)
    d = (colors.double() - pca.color_mean.double()).reshape(-1)  # (3V,)
    a = 2.0 * color_weight / colors.shape[0]
    return a * sigma * (basis @ d) / (a * sigma.square() + prior_weight)


def _shape_only(pca):
    return FitDecoder(pca.decode, GaussianPrior.standard_normal(pca.latent_size), module=pca, name="shape only")


def test_registered_mesh_colours_recover_the_colour_code(pca, template):
    vertices, colors, _, zc = _coloured_face(pca, _generator())
    target = MeshTarget(vertices, colors=colors)
    problem = FitProblem(pca, target, template=template)
    assert "color" in problem.terms and problem.group_tensors()["color"] == [problem.wc]
    # the default schedule frees the colour latent with the shape
    assert "color" in problem.run([Stage(("pose",), 0)], progress=False).final_losses
    # without a prior the code is the exact one; with the default prior, the closed-form MAP code
    exact = fit(pca, target, template=template, prior_weight=0.0, progress=False)
    assert [s.groups for s in exact.stages] == [("pose",), ("pose", "shape", "color")]
    # A fixed budget of 360 steps: the trailing codes, which barely move the colours, converge slowest (over 200
    # draws: up to 0.026 in a code and 4.9e-4 in a colour channel, most draws below 1e-4 and 1e-6).
    torch.testing.assert_close(exact.color_latent.double(), zc, atol=0.1, rtol=0)
    torch.testing.assert_close(exact.colors.double(), colors, atol=2e-3, rtol=0)
    result = fit(pca, target, template=template, progress=False)
    expected = _map_color_code(pca, colors, DEFAULT_WEIGHTS["color"], DEFAULT_PRIOR_WEIGHTS["mesh"])
    torch.testing.assert_close(result.color_latent.double(), expected, atol=5e-3, rtol=0)
    torch.testing.assert_close(result.color_latent[:3].double(), zc[:3], atol=0.3, rtol=0)  # leading ones: to 0.093
    rms = float((result.colors.double() - colors).square().sum(-1).mean().sqrt())
    rms_mean = float((pca.color_mean.double() - colors).square().sum(-1).mean().sqrt())
    assert rms < 0.01 and rms < 0.5 * rms_mean, (rms, rms_mean)  # a random face's distance from the mean varies
    assert result.final_losses["color"] == pytest.approx(rms**2, rel=1e-3)
    assert len(result.losses["color"]) == len(result.losses["total"]) == 360


def test_vertex_weights_weigh_the_colour_loss(pca, template):
    g = _generator()
    vertices, colors, _, _ = _coloured_face(pca, g)
    V = colors.shape[0]
    weights = (torch.rand(V, generator=g, dtype=torch.float64) > 0.3).double()
    spoilt = torch.where(weights[:, None] > 0, colors, torch.rand(V, 3, generator=g, dtype=torch.float64))
    stages = [Stage(("color",), 120)]
    a = fit(pca, MeshTarget(vertices, weights, colors), template=template, stages=stages, progress=False)
    b = fit(pca, MeshTarget(vertices, weights, spoilt), template=template, stages=stages, progress=False)
    c = fit(pca, MeshTarget(vertices, None, spoilt), template=template, stages=stages, progress=False)
    assert torch.equal(a.color_latent, b.color_latent) and a.losses == b.losses
    assert float((c.color_latent - a.color_latent).abs().max()) > 0.1


def test_a_color_group_without_usable_colour_is_refused(pca, template):
    vertices, colors, _, _ = _coloured_face(pca, _generator())
    names = sorted(template.landmarks)[:6]
    landmarks = LandmarkTarget(torch.rand(6, 2, dtype=torch.float64) * 100, names, 128)
    cases = [
        (pca, MeshTarget(vertices), r"the mesh target has no colours \(per-vertex, or of a texture map its file "
                                    r"references\)"),
        (_shape_only(pca), MeshTarget(vertices, colors=colors), r"the decoder \(shape only\) has no colours"),
        (pca, PointCloudTarget(vertices), "a points target carries no colours"),
        (pca, landmarks, "a landmarks target carries no colours"),
    ]
    for decoder, target, reason in cases:
        for group in ("color", "appearance"):
            stages = [Stage(("pose",), 2), Stage(("pose", "shape", group), 3, name="looks")]
            with pytest.raises(ValueError, match=rf"^stages\[1\] \('looks'\): the group '{group}' fits colour, but "
                                                 rf"{reason}; leave it out \(colour is fitted to photographs and to "
                                                 rf"registered meshes with per-vertex colours or a texture map\)$"):
                fit(decoder, target, template=template, stages=stages, progress=False)
        problem = FitProblem(decoder, target, template=template)
        assert "color" not in problem.terms and problem.group_tensors()["color"] == []
        defaults = default_stages(target.kind, has_landmarks=True)
        assert all("color" not in s.groups for s in defaults)
        problem.run([Stage(s.groups, 0, terms=s.terms) for s in defaults], progress=False)  # the defaults run


def test_a_joint_decoder_fits_target_colours_through_its_latent(template):
    from mesh_decoder.hierarchy import build_hierarchy
    from mesh_decoder.nn import JointDecoder

    h = build_hierarchy(template, factors=(4, 4), texture_size=32)
    torch.manual_seed(int(np.random.default_rng().integers(1 << 31)))
    joint = JointDecoder.from_hierarchy(h, texture_branch="mesh", latent_size=6, channels=(8, 8),
                                        texture_size=32, texture_channels=16)
    verts = torch.tensor(template.vertices, dtype=torch.float32)
    joint.set_normalization(torch.cat([verts, torch.full_like(verts, 0.6)], 1), torch.tensor([4.0] * 3 + [0.1] * 3))
    g = _generator()
    colors = torch.rand(template.num_vertices, 3, generator=g, dtype=torch.float64)
    problem = FitProblem(joint, MeshTarget(template.vertices, colors=colors), template=template)
    assert problem.terms == ("vertex", "color", "prior") and problem.group_tensors()["color"] == []
    problem.losses(("color",))["color"].backward()
    assert float(problem.w.grad.abs().sum()) > 0  # the colour loss reaches the latent
    with pytest.raises(ValueError, match=r"^stages\[0\]: the group 'color' fits colour, but the decoder's colours "
                                         r"come from its latent, which the 'shape' group fits"):
        fit(joint, MeshTarget(template.vertices, colors=colors), template=template,
            stages=[Stage(("shape", "color"), 2)], progress=False)


def test_mesh_target_colours_are_checked(pca):
    g = _generator()
    vertices, colors, _, _ = _coloured_face(pca, g)
    V = vertices.shape[0]
    with pytest.raises(ValueError, match=rf"^colors: expected shape \({V}, 3\), got \({V - 1}, 3\)$"):
        MeshTarget(vertices, colors=colors[1:])
    bad = colors.clone()
    bad[int(torch.randint(V, (1,), generator=g))] = 1.5
    with pytest.raises(ValueError, match=r"^colors: expected RGB values in \[0, 1\], got range \[.*, 1\.5\]$"):
        MeshTarget(vertices, colors=bad)
    with pytest.raises(ValueError, match=r"^colors: expected finite values, got NaN or inf$"):
        MeshTarget(vertices, colors=torch.full_like(colors, float("nan")))


def _run(argv) -> int:
    parser = add_fit_arguments(argparse.ArgumentParser(prog="mesh-decoder fit"))
    return run_fit(parser.parse_args([str(a) for a in argv]))


def test_cli_fits_the_colours_of_a_registered_ply(tmp_path, pca, template, capsys):
    from mesh_decoder.cli import main

    save_model(pca, tmp_path / "pca.safetensors")
    vertices, colors, _, zc = _coloured_face(pca, _generator())
    save_mesh(template.copy(vertices=vertices.numpy(), colors=colors.numpy()), tmp_path / "face.ply")
    target = load_target(tmp_path / "face.ply", template)
    assert isinstance(target, MeshTarget) and target.colors is not None
    np.testing.assert_array_equal(target.colors.numpy(), load_mesh(tmp_path / "face.ply").colors)
    assert _run([tmp_path / "pca.safetensors", "--target", tmp_path / "face.ply", "-o", tmp_path / "fitted.ply",
                 "--json", tmp_path / "fit.json", "--stages", "pose:30", "pose+shape+color:150:0.1", "--quiet"]) == 0
    assert "color " in capsys.readouterr().out  # the colour loss is reported
    fitted = json.loads((tmp_path / "fit.json").read_text())
    # a 180-step fit with a prior: the leading codes were within 0.08 over 400 draws
    torch.testing.assert_close(torch.tensor(fitted["color_latent"][:3], dtype=torch.float64), zc[:3], atol=0.25,
                               rtol=0)
    out = load_mesh(tmp_path / "fitted.ply").colors
    assert float(np.sqrt(((out - colors.numpy()) ** 2).sum(1).mean())) < 0.02
    # a target without colours: refused before the fit, naming --stages and the target
    save_mesh(template.copy(vertices=vertices.numpy()), tmp_path / "plain.obj")
    message = (f"--stages pose+shape+color:10: the group 'color' fits colour, but for --target "
               f"{tmp_path / 'plain.obj'} the mesh target has no colours (per-vertex, or of a texture map its file "
               "references); leave it out (colour is fitted to photographs and to registered meshes with per-vertex "
               "colours or a texture map)")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        _run([tmp_path / "pca.safetensors", "--target", tmp_path / "plain.obj", "--json", tmp_path / "no.json",
              "--stages", "pose:3", "pose+shape+color:10", "--quiet"])
    assert not (tmp_path / "no.json").exists()
    assert main(["fit", str(tmp_path / "pca.safetensors"), "--target", str(tmp_path / "plain.obj"), "--json",
                 str(tmp_path / "no.json"), "--stages", "pose:3", "pose+shape+color:10", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err


def test_a_light_group_outside_photographs_is_refused(pca, template):
    """'light' was skipped without a word for meshes, scans and landmarks, as 'color' was."""
    vertices, colors, _, _ = _coloured_face(pca, _generator())
    for target in (MeshTarget(vertices, colors=colors), PointCloudTarget(vertices)):
        stages = [Stage(("pose",), 2), Stage(("pose", "shape", "light"), 3, name="lit")]
        with pytest.raises(ValueError, match=rf"^stages\[1\] \('lit'\): the group 'light' fits the lighting of a "
                                             rf"photograph, but this is a {target.kind} target; leave it out$"):
            fit(pca, target, template=template, stages=stages, progress=False)
    # appearance (colour and light) still fits a coloured mesh's colours: light has nothing there, colour does
    result = fit(pca, MeshTarget(vertices, colors=colors), template=template,
                 stages=[Stage(("pose",), 2), Stage(("pose", "appearance"), 3)], progress=False)
    assert float(result.color_latent.abs().max()) > 0



def test_a_joint_decoder_colour_group_refusal_says_the_shape_group_fits_colours(template):
    """The refusal ended in '(colour is fitted to ... registered meshes with per-vertex colours)': just such a
    target, which contradicted it; the advice is now the reason's own."""
    from mesh_decoder.hierarchy import build_hierarchy
    from mesh_decoder.nn import JointDecoder

    h = build_hierarchy(template, factors=(4, 4), texture_size=32)
    joint = JointDecoder.from_hierarchy(h, texture_branch="mesh", latent_size=6, channels=(8, 8), texture_size=32,
                                        texture_channels=16)
    verts = torch.tensor(template.vertices, dtype=torch.float32)  # decodes about the template
    joint.set_normalization(torch.cat([verts, torch.full_like(verts, 0.6)], 1), torch.tensor([4.0] * 3 + [0.1] * 3))
    colors = torch.rand(template.num_vertices, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"the group 'color' fits colour, but the decoder's colours come from its "
                                         r"latent, which the 'shape' group fits \(to the target's colours too\); "
                                         r"leave it out$"):
        fit(joint, MeshTarget(template.vertices, colors=colors), template=template,
            stages=[Stage(("pose", "shape", "color"), 2)], progress=False)


def test_fit_outputs_must_be_named_for_their_format_and_never_replace_an_input(pca, template, tmp_path):
    """--json wrote over a sampled .ply mesh; -o wrote the fit over its own --target."""
    vertices, colors, _, _ = _coloured_face(pca, _generator())
    save_model(pca, tmp_path / "pca.safetensors")
    save_mesh(template.copy(vertices=vertices.numpy(), colors=colors.numpy()), tmp_path / "face.ply")
    before = (tmp_path / "face.ply").read_bytes()
    for extra, message in ((["--json", tmp_path / "face.ply"], "--json {p}: expected a file name ending in .json"),
                           (["-o", tmp_path / "face.ply"], "-o/--output {p}: expected a file other than the inputs, "
                                                           "got the --target file; nothing was written")):
        with pytest.raises(ValueError, match="^" + re.escape(message.format(p=tmp_path / "face.ply"))):
            _run([tmp_path / "pca.safetensors", "--target", tmp_path / "face.ply", *extra, "--quiet"])
        assert (tmp_path / "face.ply").read_bytes() == before


@pytest.mark.parametrize("fmt", ["obj", "ply"])
def test_a_textured_registered_mesh_gives_the_colours_of_its_texture(tmp_path, pca, template, fmt):
    """A registered mesh whose appearance is a texture map (as sample --texture writes, or Blender, MeshLab and
    PyTorch3D's save_obj) had no colours to fit."""
    from mesh_decoder.mesh import texel_map
    from mesh_decoder.nn import TexelGather

    vertices, colors, _, zc = _coloured_face(pca, _generator())
    gather = TexelGather.from_texel_map(texel_map(template, 256), template.num_vertices)
    texture = gather(colors.float())  # (3, 256, 256): the colours written into the template's UV layout
    save_mesh(template.copy(vertices=vertices.numpy()), tmp_path / f"face.{fmt}", texture=texture)
    target = load_target(tmp_path / f"face.{fmt}", template)
    assert isinstance(target, MeshTarget) and target.colors is not None
    error = (target.colors - colors).abs()  # read back at the UVs: 8-bit rounding and bilinear sampling
    assert float(error.mean()) < 0.01 and float(error.max()) < 0.1, (float(error.mean()), float(error.max()))
    result = fit(pca, target, template=template, prior_weight=0.0, progress=False)  # the colours are fitted
    rms = float((result.colors.double() - colors).square().sum(-1).mean().sqrt())
    rms_mean = float((pca.color_mean.double() - colors).square().sum(-1).mean().sqrt())
    assert rms < 0.02 and rms < 0.5 * rms_mean, (rms, rms_mean)  # (the mean was 0.016 away for one random face)
    # per-vertex colours in the file come first; a texture it cannot read is warned about, the shape still fitted
    other = torch.rand(template.num_vertices, 3, dtype=torch.float64)
    save_mesh(template.copy(vertices=vertices.numpy(), colors=other.numpy()), tmp_path / f"both.{fmt}",
              texture=texture)
    np.testing.assert_allclose(load_target(tmp_path / f"both.{fmt}", template).colors.numpy(), other.numpy(),
                               atol=1e-6)
    (tmp_path / "face.png").unlink()
    with pytest.warns(UserWarning, match=r"expected the texture map it references at .*face.png, found nothing "
                                         r"there; its colours are not fitted"):
        assert load_target(tmp_path / f"face.{fmt}", template).colors is None


def test_a_texture_without_uvs_or_file_is_one_warning_line(tmp_path, pca, template, capsys):
    """A registered OBJ without vt lines that referenced a texture was fitted shape-only without a word; the CLI
    printed Python's two-line warning with a source location."""
    vertices, colors, _, _ = _coloured_face(pca, _generator())
    save_mesh(template.copy(vertices=vertices.numpy()), tmp_path / "face.obj", texture=np.full((4, 4, 3), 0.5))
    text = (tmp_path / "face.obj").read_text().splitlines()
    no_uv = [line.split()[0] + " " + " ".join(c.split("/")[0] for c in line.split()[1:]) if line.startswith("f ")
             else line for line in text if not line.startswith("vt ")]
    (tmp_path / "no_uv.obj").write_text("\n".join(no_uv) + "\n")
    with pytest.warns(UserWarning, match=r"no_uv.obj: references a texture map but has no texture coordinates "
                                         r"\(vt\) to read it at; its colours are not fitted"):
        assert load_target(tmp_path / "no_uv.obj", template).colors is None
    from mesh_decoder.cli import main

    save_model(pca, tmp_path / "pca.safetensors")
    assert main(["fit", str(tmp_path / "pca.safetensors"), "--target", str(tmp_path / "no_uv.obj"), "--json",
                 str(tmp_path / "fit.json"), "--stages", "pose:2", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err == (f"warning: {tmp_path / 'no_uv.obj'}: references a texture map but has no texture coordinates "
                   "(vt) to read it at; its colours are not fitted\n"), err
