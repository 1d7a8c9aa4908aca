"""Round trips on synthetic faces: the fit recovers pose and shape within stated errors.

Every case generates a face with :class:`~mesh_decoder.data.synthetic.SyntheticFaces`
(held out from the PCA training set, so the model cannot represent it exactly: its
PCA reconstruction error is about 0.4 mm), moves it by a random similarity or views
it with a known camera, adds noise, and fits it from the prior mean.

Stated accuracies (the benchmark, ``benchmarks/bench_fit.py``, measures them over more faces):

* registered mesh, 0.5 mm noise: mean vertex error < 1.0 mm, rotation < 0.5 degrees,
  pose-free shape error < 1.0 mm;
* the same with an (untrained, fixed) spiral autoencoder and its Mahalanobis prior,
  0.2 mm noise on a face it can represent: vertex error < 0.3 mm, rotation < 0.2 degrees;
* scan (2000 surface samples, 0.5 mm noise, shuffled, 10 to 20 degrees off): interior
  vertices within 1.0 mm of the true surface on average, pose-free shape error
  < 3.0 mm, rotation < 3.5 degrees, scale within 6 % (a surface does not fix where
  vertices sit along it, so vertex-to-vertex errors are larger than surface errors);
* 33 landmarks with 1 pixel noise in a 256 x 256 image, 15 to 30 degrees off, weak
  perspective or perspective camera: rotation < 3.5 degrees and a shape error below
  that of the mean face;
* photograph (96 x 96, PCA colour model, Lambert shading, landmarks with 1 pixel
  noise): the photometric fit lowers the image loss at least fivefold and lowers the
  shape error of the landmark fit alone.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from mesh_decoder.fit import (
    DEFAULT_WEIGHTS,
    FitProblem,
    FitResult,
    ImageTarget,
    LandmarkTarget,
    MeshTarget,
    PointCloudTarget,
    Stage,
    apply_similarity,
    default_stages,
    fit,
    rotation_angle,
)
from mesh_decoder.render import DirectionalLight, OrthographicCamera, PerspectiveCamera, ndc_to_pixel

from .conftest import make_autoencoder, photograph, random_similarity, sample_surface, shape_error
from .reference import surface_distance


def _degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.degrees(float(rotation_angle(a.double(), b.double())))


def _registered_target(faces, index, g, noise):
    truth = faces[0][index].double()
    s, R, t = random_similarity(g)
    clean = apply_similarity(truth, s, R, t)
    return MeshTarget(clean + noise * torch.randn(clean.shape, generator=g, dtype=torch.float64)), clean, R, truth


@pytest.mark.parametrize("index, rotation", [(200, "axis_angle"), (201, "6d")])
def test_registered_mesh_recovers_similarity_and_shape(pca, faces, template, index, rotation):
    g = torch.Generator().manual_seed(index)
    target, clean, R, truth = _registered_target(faces, index, g, noise=0.5)
    result = fit(pca, target, template=template, rotation=rotation, progress=False)
    vertex_error = float((result.vertices.double() - clean).norm(dim=-1).mean())
    assert vertex_error < 1.0, vertex_error
    assert _degrees(result.rotation, R) < 0.5
    assert shape_error(result.model_vertices, truth) < 1.0
    assert result.rotation_params.shape == ((3,) if rotation == "axis_angle" else (6,))
    # the losses went down and every stage recorded every iteration
    assert len(result.losses["total"]) == sum(s.iterations for s in default_stages("mesh"))
    assert result.final_losses["total"] < result.losses["total"][0]
    assert result.final_losses["vertex"] < 2.0  # noise alone gives 3 * 0.5^2 = 0.75 mm^2


@pytest.mark.parametrize("kind", ["mesh", "points"])
def test_a_target_in_metres_fits_as_the_same_target_in_millimetres(pca, faces, template, kind):
    """The data terms are per squared target unit and the default prior weight was fixed: a target in metres
    (1e-3 of the model's millimetres) weighed its data 1e6 less and came back as the mean face (|z| 0.03 for
    3.4), without a word."""
    g = torch.Generator().manual_seed(202)
    target, _, _, truth = _registered_target(faces, 202, g, noise=0.2)
    metres = target.vertices * 1e-3
    if kind == "mesh":
        millimetres_target, metres_target = target, MeshTarget(metres)
    else:
        millimetres_target, metres_target = PointCloudTarget(target.vertices), PointCloudTarget(metres)
    mm = fit(pca, millimetres_target, template=template, progress=False)
    m = fit(pca, metres_target, template=template, progress=False)
    assert float(mm.latent.norm()) > 1.0  # a fit away from the mean face
    assert float((m.latent - mm.latent).norm()) < 0.1 * float(mm.latent.norm())
    errors = [shape_error(result.model_vertices, truth) for result in (mm, m)]
    assert max(errors) < (1.0 if kind == "mesh" else 3.0) and abs(errors[0] - errors[1]) < 0.1, errors
    # a weight given is per squared model unit as the defaults: the default written out fits as the default
    term = "vertex" if kind == "mesh" else "point_to_point"
    given = fit(pca, metres_target, template=template, weights={term: DEFAULT_WEIGHTS[term]}, progress=False)
    assert torch.allclose(given.latent, m.latent, atol=1e-4)
    # a refit from the result weighs its data as the fit did (the scale the target gives the mean face)
    problem = FitProblem(pca, metres_target, template=template)
    again = FitProblem(pca, metres_target, template=template, init=m)
    assert again.weight(term) == problem.weight(term) == pytest.approx(DEFAULT_WEIGHTS[term] / float(m.scale) ** 2, rel=0.2)
    # the result says the weights its total was made of: a user could not tell them from the ones passed
    for result, target in ((mm, millimetres_target), (m, metres_target)):
        assert result.weights == {k: FitProblem(pca, target, template=template).weight(k)
                                  for k in result.final_losses if k != "total"}
        assert result.final_losses["total"] == pytest.approx(
            sum(w * result.final_losses[k] for k, w in result.weights.items()), rel=1e-12)
        assert result.summary()["weights"] == result.weights
    assert m.weights[term] == pytest.approx(mm.weights[term] * 1e6, rel=0.2) and m.weights["prior"] == mm.weights["prior"]


def test_neural_decoder_with_mahalanobis_prior_round_trip(hierarchy, template):
    ae = make_autoencoder(hierarchy, template)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        z_true = ae.sample_latents(1, generator=g)
        truth = ae.decode(z_true)[0].double()
    s, R, t = random_similarity(g)
    clean = apply_similarity(truth, s, R, t)
    target = MeshTarget(clean + 0.2 * torch.randn(clean.shape, generator=g, dtype=torch.float64))
    weights_before = {k: v.clone() for k, v in ae.state_dict().items()}
    ae.train()
    result = fit(ae, target, template=template, progress=False)
    assert float((result.vertices.double() - clean).norm(dim=-1).mean()) < 0.3
    assert _degrees(result.rotation, R) < 0.2
    assert float((result.latent - z_true[0]).norm()) < 0.25 * float((ae.latent_mean - z_true[0]).norm())
    # the decoder is untouched: same weights, gradients off again, training mode restored
    for k, v in ae.state_dict().items():
        assert torch.equal(v, weights_before[k]), k
    assert all(p.requires_grad for p in ae.parameters()) and ae.training
    assert all(p.grad is None for p in ae.parameters())


def test_point_cloud_fit(pca, faces, template):
    g = torch.Generator().manual_seed(21)
    rng = np.random.default_rng(21)
    truth = faces[0][202].double()
    s, R, t = random_similarity(g, max_degrees=20.0)
    clean = apply_similarity(truth, s, R, t)
    points = sample_surface(rng, clean.numpy(), template.faces, 2000, noise=0.5)
    result = fit(pca, PointCloudTarget(points), template=template, progress=False)
    fitted = result.vertices.double().numpy()
    interior = np.setdiff1d(np.arange(template.num_vertices), template.boundary_vertices())
    sample = rng.choice(interior, 100, replace=False)  # brute-force reference on a subset
    assert float(surface_distance(fitted[sample], clean.numpy(), template.faces).mean()) < 1.0
    assert shape_error(result.model_vertices, truth) < 3.0
    assert _degrees(result.rotation, R) < 3.5
    assert abs(float(result.scale / s) - 1) < 0.06


_H = _W = 256


def _landmark_target(template, truth, g, camera, noise=1.0):
    names = sorted(template.landmarks)
    index = torch.tensor([template.landmarks[n] for n in names])
    _, R, _ = random_similarity(g, max_degrees=30.0)
    if camera == "weak_perspective":
        scale = 1.0 + 0.2 * float(torch.rand((), generator=g))  # pixels per mm
        X = apply_similarity(truth, scale, R, torch.tensor([12.0, -6.0, 0.0], dtype=torch.float64))
        cam = OrthographicCamera(scale=torch.tensor([[2.0 / _W, 2.0 / _H]], dtype=torch.float64))
    else:
        X = apply_similarity(truth, 1.0, R, torch.tensor([8.0, 12.0, -650.0], dtype=torch.float64))
        cam = PerspectiveCamera(torch.tensor([600.0, 600.0, (_W - 1) / 2, (_H - 1) / 2], dtype=torch.float64),
                                (_H, _W), R=torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)))
    pixels = ndc_to_pixel(cam.project(X[index][None]), (_H, _W))[0, :, :2]
    pixels = pixels + noise * torch.randn(pixels.shape, generator=g, dtype=torch.float64)
    return LandmarkTarget(pixels, names, (_H, _W)), R


@pytest.mark.parametrize("camera, index", [("weak_perspective", 203), ("weak_perspective", 204), ("perspective", 205)])
def test_landmark_fit_recovers_rotation(tmp_path, pca, faces, template, camera, index):
    g = torch.Generator().manual_seed(index)
    truth = faces[0][index].double()
    target, R = _landmark_target(template, truth, g, camera)
    result = fit(pca, target, template=template, camera=camera, focal=600.0 if camera == "perspective" else None,
                 progress=False)
    assert _degrees(result.rotation, R) < 3.5
    assert shape_error(result.model_vertices, truth) < shape_error(pca.mean, truth)
    assert math.sqrt(result.final_losses["landmark"]) < 2.5  # pixels RMS, noise is 1.4
    projected = result.project_landmarks()
    torch.testing.assert_close(((projected.double() - target.points) ** 2).sum(-1).mean(),
                               torch.tensor(result.final_losses["landmark"], dtype=torch.float64), rtol=1e-3, atol=1e-3)
    if camera == "perspective":
        assert result.focal == pytest.approx(600.0) and abs(float(result.translation[2]) + 650.0) < 40.0
    result.save_overlay(tmp_path / "overlay.png")  # landmarks over a white image
    assert (tmp_path / "overlay.png").stat().st_size > 500


@pytest.fixture(scope="module")
def photo_case(pca, template, photo_target):
    """The photograph, and its landmark-only and full fits."""
    target, truth, R = photo_target
    landmarks_only = fit(pca, target.landmarks, template=template, progress=False)
    full = fit(pca, target, template=template, progress=False)
    return target, truth, R, landmarks_only, full


def test_photometric_fit_improves_image_and_shape(pca, template, photo_case):
    target, truth, R, landmarks_only, full = photo_case
    with torch.no_grad():
        before = FitProblem(pca, target, template=template, init=landmarks_only).losses(["photometric"])["photometric"]
    assert full.final_losses["photometric"] < 0.2 * float(before)
    assert shape_error(full.model_vertices, truth) < shape_error(landmarks_only.model_vertices, truth)
    assert _degrees(full.rotation, R) < 3.5
    assert full.light is not None and full.color_latent is not None
    photometric = [v for v in full.losses["photometric"] if not math.isnan(v)]
    assert photometric[-1] < photometric[0]


def test_a_photograph_on_a_white_background_keeps_its_landmark_fit(pca, faces, template):
    """On the renderer's white background the last (photometric) stage raised its loss at every step, from a
    good landmark fit to a light from behind and a 17 degree rotation error: the background pixels the face
    came to cover are not in the gradient. A stage now never ends worse than it began."""
    target, truth, R = photograph(faces, template, background=None)
    result = fit(pca, target, template=template, progress=False)
    assert _degrees(result.rotation, R) < 3.5
    assert result.final_losses["landmark"] < 3.0  # squared pixels: 1 pixel of noise in x and in y
    first = result.losses["total"][result.stage_starts[-1]]  # the last stage's loss where it began
    assert result.final_losses["total"] <= first


def test_fit_result_outputs(tmp_path, photo_case, template):
    target, _, _, _, full = photo_case
    mesh = full.to_mesh()
    assert mesh.num_vertices == template.num_vertices and mesh.colors is not None and mesh.landmarks
    full.save_json(tmp_path / "fit.json")
    import json

    def refuse(token):
        raise AssertionError(f"fit.json holds the non-standard JSON token {token}")

    data = json.loads((tmp_path / "fit.json").read_text(), parse_constant=refuse)
    assert data["target_kind"] == "image" and len(data["latent"]) == 30 and data["camera"]["type"] == "weak_perspective"
    assert len(data["losses"]["total"]) == len(full.losses["total"])
    # steps where a loss was not evaluated (NaN) are written as null
    photometric = full.losses["photometric"]
    assert any(math.isnan(v) for v in photometric)
    assert data["losses"]["photometric"] == [None if math.isnan(v) else v for v in photometric]
    path = full.save_overlay(tmp_path / "overlay.png")
    assert (tmp_path / "overlay.png").stat().st_size > 1000 and path.endswith("overlay.png")
    out = full.render()
    assert out.image.shape == (1, 3, *target.image_size)
    # the rendered face covers the photograph's face: most covered pixels are close in colour
    err = (out.image[0].double() - target.image).abs().mean(0)[out.mask[0]]
    assert float(err.median()) < 0.1


def test_to_mesh_owns_its_arrays(pca, faces, template):
    """Editing the fitted mesh's faces or UVs in place leaves the template (and the next to_mesh) unchanged."""
    own = template.copy()
    g = torch.Generator().manual_seed(61)
    target, _, _, _ = _registered_target(faces, 209, g, noise=0.5)
    result = fit(pca, target, template=own, stages=[Stage(("pose",), 2)], progress=False)
    uv, uv_faces, tri = own.uv.copy(), own.uv_faces.copy(), own.faces.copy()
    mesh = result.to_mesh()
    mesh.uv[:] = torch.rand(mesh.uv.shape, generator=g, dtype=torch.float64).numpy()
    mesh.uv_faces[:] = mesh.uv_faces[::-1]
    mesh.faces[:] = mesh.faces[:, ::-1]
    assert np.array_equal(own.uv, uv) and np.array_equal(own.uv_faces, uv_faces) and np.array_equal(own.faces, tri)
    again = result.to_mesh()
    assert np.array_equal(again.uv, uv) and np.array_equal(again.faces, tri)


def test_all_frees_the_groups_that_apply(pca, faces, template):
    """``all`` is every group that applies to the target: on a registered mesh (no camera) it is pose + shape,
    not an error about the focal length; naming ``focal`` or ``camera`` there still is one."""
    g = torch.Generator().manual_seed(62)
    target, _, _, _ = _registered_target(faces, 206, g, noise=0.5)
    every = fit(pca, target, template=template, stages=[Stage(("all",), 4)], progress=False)
    pose_shape = fit(pca, target, template=template, stages=[Stage(("pose", "shape"), 4)], progress=False)
    assert torch.equal(every.vertices, pose_shape.vertices) and every.losses == pose_shape.losses
    for groups in (("all", "focal"), ("camera",)):
        with pytest.raises(ValueError, match="'focal' group needs a perspective camera"):
            fit(pca, target, template=template, stages=[Stage(groups, 4)], progress=False)


def test_weak_perspective_image_fit_keeps_tz(pca, template, photo_target):
    """With the weak-perspective camera t_z does not move the image; the module docstring keeps it at 0. The
    renderer's round-off gradient on it must not let Adam walk it (a full learning-rate step per iteration)."""
    target = photo_target[0]
    stages = [Stage(("pose",), 8, terms=("landmark", "prior")), Stage(("pose", "appearance"), 12)]
    result = fit(pca, target, template=template, stages=stages, progress=False)
    assert float(result.translation[2]) == 0.0 and float(result.translation[:2].abs().sum()) > 0


def test_prior_weight_pulls_latent_towards_prior_mean(pca, faces, template):
    g = torch.Generator().manual_seed(41)
    target, _, _, _ = _registered_target(faces, 207, g, noise=0.5)
    stages = [Stage(("pose",), 30), Stage(("pose", "shape"), 150)]
    energies = []
    for weight in (1e-4, 1e-1, 1e2):
        r = fit(pca, target, template=template, prior_weight=weight, stages=stages, progress=False)
        energies.append(0.5 * float(r.latent.square().sum()))
    assert energies[0] > energies[1] > energies[2]
    assert energies[2] < 0.01 * energies[0]


def test_gradients_reach_every_free_parameter(pca, template, photo_case):
    target = photo_case[0]
    for camera in ("weak_perspective", "perspective"):
        problem = FitProblem(pca, target, template=template, camera=camera,
                             focal=300.0 if camera == "perspective" else None,
                             init={"latent": 0.3 * torch.ones(30)})
        params = problem.parameters(("all",))
        names = ["rotation", "translation", "scale", "latent", "color", "light", "focal"]
        tensors = problem.group_tensors()
        total = problem.total(problem.losses())
        total.backward()
        for name in names:
            for t in tensors[name]:
                assert t.grad is not None and torch.isfinite(t.grad).all(), (camera, name)
                if name == "translation" and camera == "weak_perspective":
                    # depth is unobservable: only rounding reaches t_z
                    assert float(t.grad[2].abs()) < 1e-5 * float(t.grad[:2].abs().sum())
                elif name == "scale" and camera == "perspective":
                    assert float(t.grad.abs().sum()) > 0
                else:
                    assert float(t.grad.abs().sum()) > 0, (camera, name)
        assert len(params) == sum(len(v) for v in tensors.values())


def test_shape_only_decoder_gets_an_albedo(hierarchy, template, photo_case):
    ae = make_autoencoder(hierarchy, template)
    problem = FitProblem(ae.decoder, photo_case[0], template=template)
    assert problem.albedo is not None and problem.group_tensors()["color"] == [problem.albedo]
    problem.total(problem.losses()).backward()
    assert float(problem.albedo.grad.abs().sum()) > 0 and float(problem.w.grad.abs().sum()) > 0


def test_fit_is_deterministic_and_shows_progress(pca, faces, template, capsys):
    g = torch.Generator().manual_seed(51)
    target, _, _, _ = _registered_target(faces, 208, g, noise=0.5)
    stages = [Stage(("pose",), 10), Stage(("pose", "shape"), 20, 0.05)]
    a = fit(pca, target, template=template, stages=stages, progress=True)
    b = fit(pca, target, template=template, stages=stages, progress=False)
    assert torch.equal(a.vertices, b.vertices) and a.losses == b.losses
    assert a.stage_starts == [0, 10]
    assert "vertex" in capsys.readouterr().err  # the bar shows the loss terms


def test_stages_and_argument_errors(pca, faces, template):
    assert Stage.parse("pose+shape:300:0.02") == Stage(("pose", "shape"), 300, 0.02)
    assert Stage.parse("latent:5").lr == 0.05
    with pytest.raises(ValueError, match="unknown parameter group 'posture'"):
        Stage(("posture",), 10)
    with pytest.raises(ValueError, match="GROUPS:ITERATIONS"):
        Stage.parse("pose")
    with pytest.raises(ValueError, match="unknown loss terms"):
        Stage(("pose",), 10, terms=("silhouette",))
    with pytest.raises(ValueError, match="non-negative int"):
        Stage(("pose",), -1)
    target = MeshTarget(faces[0][200])
    with pytest.raises(ValueError, match="perspective camera"):
        fit(pca, target, template=template, stages=[Stage(("focal",), 5)], progress=False)
    with pytest.raises(ValueError, match="template: a points target needs"):
        fit(pca, PointCloudTarget(faces[0][200]), progress=False)
    with pytest.raises(ValueError, match="expected a registered mesh of 800 vertices"):
        fit(pca, MeshTarget(faces[0][200][:500]), progress=False)
    with pytest.raises(ValueError, match="unknown term 'vertices'"):
        fit(pca, target, weights={"vertices": 1.0}, progress=False)
    # options the fit would ignore: a camera for a 3D target, a focal length without the perspective camera
    with pytest.raises(ValueError, match=r"^camera: a mesh target is fitted in 3D, with no camera; expected the "
                                         r"default 'weak_perspective', got 'perspective'$"):
        fit(pca, target, template=template, camera="perspective", progress=False)
    with pytest.raises(ValueError, match=r"^focal: a mesh target is fitted in 3D, with no camera; leave focal out, "
                                         r"got focal=600.0$"):  # not advice to add the camera it then refuses
        fit(pca, target, template=template, focal=600.0, progress=False)
    g = torch.Generator().manual_seed(311)
    landmarks = LandmarkTarget(torch.rand(4, 2, generator=g, dtype=torch.float64) * 60, sorted(template.landmarks)[:4],
                               64)
    with pytest.raises(ValueError, match=r"^focal: only the perspective camera has a focal length; expected "
                                         r"camera='perspective' with focal=600.0, got camera='weak'$"):
        fit(pca, landmarks, template=template, camera="weak", focal=600.0, progress=False)
    with pytest.raises(ValueError, match="not template landmarks"):
        fit(pca, LandmarkTarget(torch.rand(4, 2) * 60, ["a", "b", "c", "d"], 64), template=template, progress=False)
    with pytest.raises(TypeError, match="MeshTarget"):
        fit(pca, faces[0][200], progress=False)
    assert isinstance(fit(pca, target, stages=[Stage(("pose",), 2)], progress=False), FitResult)


@pytest.mark.parametrize("branch", ["mesh", "cnn"])
def test_joint_decoder_colours_or_texture_reach_the_image(template, photo_target, branch):
    from mesh_decoder.hierarchy import build_hierarchy
    from mesh_decoder.nn import JointDecoder

    h = build_hierarchy(template, factors=(4, 4), texture_size=32 if branch == "mesh" else None)
    torch.manual_seed(3)
    joint = JointDecoder.from_hierarchy(h, texture_branch=branch, latent_size=6, channels=(8, 8),
                                        texture_size=32, texture_channels=16)
    verts = torch.tensor(template.vertices, dtype=torch.float32)
    if branch == "mesh":
        joint.set_normalization(torch.cat([verts, torch.full_like(verts, 0.6)], 1), torch.tensor([4.0] * 3 + [0.1] * 3))
    else:
        joint.set_normalization(verts, 4.0)
    problem = FitProblem(joint, photo_target[0], template=template)
    assert problem.albedo is None and problem.has_texture == (branch == "cnn")
    problem.total(problem.losses()).backward()
    assert float(problem.w.grad.abs().sum()) > 0
    result = fit(joint, photo_target[0], template=template, stages=[Stage(("pose", "shape"), 3)], progress=False)
    assert (result.colors is not None) == (branch == "mesh")


def test_image_without_landmarks_starts_frontal_and_improves(pca, template, photo_target):
    image = ImageTarget(photo_target[0].image)  # no landmarks
    result = fit(pca, image, template=template, stages=[Stage(("pose", "appearance"), 30, 0.03)], progress=False)
    assert result.losses["photometric"][-1] < result.losses["photometric"][0]
    assert default_stages("image", has_landmarks=False)[-1].terms is None


def test_init_rotation_matrix_must_be_a_rotation(pca, faces, template):
    g = torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 31)))
    target = MeshTarget(faces[0][200])
    _, R, _ = random_similarity(g)
    mirrored = R @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    sheared = R.clone()
    sheared[0, 1] += 0.01 + 0.1 * float(torch.rand((), generator=g))
    for rotation in ("axis_angle", "6d"):
        with pytest.raises(ValueError, match=r"^init rotation: expected a rotation matrix \(R\^T R = I, det \+1\), "
                                             r"got det -1, max \|R\^T R - I\| "):
            fit(pca, target, init={"rotation": mirrored}, rotation=rotation, stages=[Stage(("pose",), 0)],
                progress=False)
        for bad in (1.5 * R, sheared):
            with pytest.raises(ValueError, match="init rotation: expected a rotation matrix"):
                fit(pca, target, init={"rotation": bad}, rotation=rotation, stages=[Stage(("pose",), 0)],
                    progress=False)
        # a float32 rotation passes, and is the starting (here: final) rotation
        result = fit(pca, target, init={"rotation": R.float()}, rotation=rotation, stages=[Stage(("pose",), 0)],
                     progress=False)
        torch.testing.assert_close(result.rotation.double(), R, atol=1e-5, rtol=0)


def test_init_values_must_be_finite(pca, faces, template):
    rng = np.random.default_rng()
    g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    target, _ = _landmark_target(template, faces[0][203].double(), g, "perspective")
    _, R, t = random_similarity(g)
    good = {"latent": rng.normal(size=30), "color_latent": rng.normal(size=pca.color_latent_size),
            "scale": float(rng.uniform(0.5, 2.0)), "rotation": R.numpy(), "translation": t.numpy(),
            "focal": float(rng.uniform(300, 900)), "albedo": rng.uniform(0.2, 0.8, 3)}
    for key in good:
        for bad in (float("nan"), float("inf"), -float("inf")):
            value = np.array(good[key], dtype=np.float64)
            value.reshape(-1)[rng.integers(value.size)] = bad
            with pytest.raises(ValueError, match=rf"^init {key}: expected finite values, got NaN or infinity$"):
                fit(pca, target, template=template, camera="perspective", init={key: value},
                    stages=[Stage(("pose",), 0)], progress=False)
    with pytest.raises(ValueError, match=r"^ambient: expected finite numbers"):  # plain numbers: refused when built
        DirectionalLight(tuple(rng.normal(size=3)), float("nan"), float(rng.uniform(0.2, 0.8)))
    # a tensor is taken unchecked (checking would wait for the GPU), so fit's own check catches it
    light = DirectionalLight(tuple(rng.normal(size=3)), torch.tensor(float("nan")), float(rng.uniform(0.2, 0.8)))
    with pytest.raises(ValueError, match=r"^init light: expected finite values"):
        fit(pca, target, template=template, init={"light": light}, stages=[Stage(("pose",), 0)], progress=False)
    with pytest.raises(ValueError, match=r"^light: expected finite values"):
        fit(pca, target, template=template, light=light, stages=[Stage(("pose",), 0)], progress=False)
    result = fit(pca, target, template=template, camera="perspective", init=good, stages=[Stage(("pose",), 0)],
                 progress=False)
    assert result.focal == pytest.approx(good["focal"]) and float(result.scale) == pytest.approx(good["scale"])


def test_focal_accepts_numpy_and_tensor_scalars(pca, faces, template):
    rng = np.random.default_rng()
    g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    target, _ = _landmark_target(template, faces[0][205].double(), g, "perspective")
    f = float(rng.integers(300, 900))
    for value in (np.float32(f), np.int64(f), torch.tensor(f), torch.tensor(f, dtype=torch.float64), np.array(f)):
        result = fit(pca, target, template=template, camera="perspective", focal=value, stages=[Stage(("pose",), 0)],
                     progress=False)
        assert result.focal == pytest.approx(f)
        result = fit(pca, target, template=template, camera="perspective", init={"focal": value},
                     stages=[Stage(("pose",), 0)], progress=False)
        assert result.focal == pytest.approx(f)
    for value in (str(f), True, torch.tensor([f]), -f, 0.0, float("inf")):
        with pytest.raises(ValueError, match=r"^focal: expected a positive number of pixels, got "):
            fit(pca, target, template=template, camera="perspective", focal=value, stages=[Stage(("pose",), 0)],
                progress=False)


def test_stage_must_use_one_of_the_targets_terms(pca, faces, template):
    g = torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 31)))
    target, _ = _landmark_target(template, faces[0][204].double(), g, "weak_perspective")
    for terms in (("vertex",), ("point_to_point", "photometric"), ()):
        stages = [Stage(("pose",), 2), Stage(("pose", "shape"), 3, terms=terms)]
        with pytest.raises(ValueError, match=rf"^stages\[1\]: uses none of this target's terms "
                                             rf"\['landmark', 'prior'\]; got terms {re.escape(str(list(terms)))}$"):
            fit(pca, target, template=template, stages=stages, progress=False)
    # the prior alone is one of the target's terms; terms the target lacks are ignored
    result = fit(pca, target, template=template, stages=[Stage(("shape",), 2, terms=("vertex", "prior"))],
                 progress=False)
    assert len(result.losses["prior"]) == 2 and all(math.isnan(v) for v in result.losses["landmark"])


def test_stage_freeing_no_parameter_of_the_target_raises(pca, faces, template, photo_target):
    g = torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 31)))
    mesh, _, _, _ = _registered_target(faces, 202, g, noise=0.5)
    landmarks, _ = _landmark_target(template, faces[0][203].double(), g, "weak_perspective")
    for target in (mesh, PointCloudTarget(mesh.vertices), landmarks):
        for groups in (("appearance",), ("color",), ("light", "color")):
            stages = [Stage(("pose",), 2), Stage(groups, 5, name="looks")]
            with pytest.raises(ValueError, match=rf"^stages\[1\] \('looks'\): the groups "
                                                 rf"{re.escape(str(list(groups)))} free no parameters of a "
                                                 rf"{target.kind} target"):
                fit(pca, target, template=template, stages=stages, progress=False)
    # no default schedule relies on skipping a stage
    cases = [(mesh, "weak_perspective"), (PointCloudTarget(mesh.vertices), "weak_perspective"),
             (landmarks, "weak_perspective"), (landmarks, "perspective"), (photo_target[0], "weak_perspective"),
             (photo_target[0], "perspective"), (ImageTarget(photo_target[0].image), "weak_perspective")]
    for target, camera in cases:
        problem = FitProblem(pca, target, template=template, camera=camera)
        defaults = default_stages(target.kind, camera, problem.landmarks is not None)
        result = problem.run([Stage(s.groups, 0, terms=s.terms, name=s.name) for s in defaults], progress=False)
        assert result.stage_starts == [0] * len(defaults)


def test_save_overlay_image_layouts(tmp_path, pca, faces, template):
    pytest.importorskip("PIL", reason="reading the overlay back needs Pillow")
    from mesh_decoder.fit import read_image

    rng = np.random.default_rng()
    h, w = 40, 52
    g = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    _, R, _ = random_similarity(g)
    X = apply_similarity(faces[0][206].double(), 0.15, R, torch.zeros(3, dtype=torch.float64))
    index = torch.tensor([template.landmarks[n] for n in sorted(template.landmarks)])
    cam = OrthographicCamera(scale=torch.tensor([[2.0 / w, 2.0 / h]], dtype=torch.float64))
    pixels = ndc_to_pixel(cam.project(X[index][None]), (h, w))[0, :, :2]
    result = fit(pca, LandmarkTarget(pixels, sorted(template.landmarks), (h, w)), template=template,
                 stages=[Stage(("pose",), 0)], progress=False)
    floats = rng.random((3, h, w))
    bytes_ = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    layouts = {
        "numpy (3, H, W) float": (floats, floats.transpose(1, 2, 0)),
        "torch (3, H, W) float": (torch.from_numpy(floats).float(), floats.transpose(1, 2, 0)),
        "numpy (H, W, 3) uint8": (bytes_, bytes_ / 255.0),
        "torch (H, W, 3) uint8": (torch.from_numpy(bytes_), bytes_ / 255.0),
    }
    for label, (image, expected) in layouts.items():
        # alpha 0: the overlay is the background image itself
        result.save_overlay(tmp_path / "overlay.png", image=image, alpha=0.0, draw_landmarks=False)
        back = read_image(tmp_path / "overlay.png").permute(1, 2, 0).numpy()
        np.testing.assert_allclose(back, np.round(expected * 255.0) / 255.0, atol=1.5 / 255, err_msg=label)
    with pytest.raises(ValueError, match=rf"image: expected an RGB image of {h} x {w} pixels, "
                                         rf"got shape \(3, {w}, {h}\)"):
        result.save_overlay(tmp_path / "overlay.png", image=rng.random((3, w, h)))
    # an 8-bit photograph cast to float was drawn clipped: an all but white background
    with pytest.raises(ValueError, match=r"image: expected floats in \[0, 1\] or uint8, got range \[0, 255\] "
                                         r"\(8-bit values\? divide them by 255, or pass a uint8 array\)$"):
        eight_bit = bytes_.astype(np.float32)
        eight_bit[0, 0], eight_bit[-1, -1] = 0, 255
        result.save_overlay(tmp_path / "overlay.png", image=eight_bit)
    below = floats.transpose(1, 2, 0).copy()
    below[0, 0, 0] = -0.5
    with pytest.raises(ValueError, match=r"image: expected floats in \[0, 1\] or uint8, got range \[-0\.5, [0-9.]+\]$"):
        result.save_overlay(tmp_path / "overlay.png", image=below)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_cuda_matches_cpu(pca, faces, template):
    import copy

    pca_cuda = copy.deepcopy(pca).to("cuda")
    g = torch.Generator().manual_seed(71)
    target, clean, R, _ = _registered_target(faces, 209, g, noise=0.5)
    stages = [Stage(("pose",), 20), Stage(("pose", "shape"), 60)]
    cpu = fit(pca, target, template=template, stages=stages, progress=False)
    gpu = fit(pca_cuda, target, template=template, stages=stages, progress=False)
    assert gpu.vertices.device.type == "cuda"
    torch.testing.assert_close(gpu.vertices.cpu(), cpu.vertices, atol=0.05, rtol=0)
    lm_target, _ = _landmark_target(template, faces[0][209].double(), g, "perspective")
    result = fit(pca_cuda, lm_target, template=template, camera="perspective", focal=600.0, stages=stages,
                 progress=False)
    assert result.project_landmarks().device.type == "cuda"


def test_a_non_finite_loss_is_one_error_without_a_warning(pca, faces, template):
    """A loss that overflowed (here a prior weight beyond float32, the fit's dtype) was reported after a torch
    UserWarning ('Converting a tensor with requires_grad=True to a scalar'), printed by the message itself."""
    import warnings

    g = torch.Generator().manual_seed(43)
    target, _, _, _ = _registered_target(faces, 208, g, noise=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with pytest.raises(ValueError, match=r"fit: the loss became (inf|nan) at iteration \d+ .*extreme size"):
            fit(pca, target, template=template, prior_weight=1e308, stages=[Stage(("pose", "shape"), 5)],
                progress=False)


def test_stage_numbers_may_be_numpy_or_tensor_scalars_but_not_bools_or_strings():
    """lr=np.float32(0.01) and 0-d tensors were refused as 'expected a positive number'; lr=True and
    final_lr_factor=True passed as 1; final_lr_factor='0.5' passed and failed later inside the fit with Python's
    "unsupported operand type(s) for -: 'int' and 'str'", None with float()'s message; groups=None with
    "'NoneType' object is not iterable"."""
    rng = np.random.default_rng(81)
    lr, factor = float(rng.uniform(0.01, 0.1)), float(rng.uniform(0.1, 1.0))
    for make in (np.float32, np.float64, torch.tensor, np.array):
        stage = Stage(("pose",), 3, make(lr), final_lr_factor=make(factor))
        assert type(stage.lr) is float and type(stage.final_lr_factor) is float
        assert stage.lr == pytest.approx(lr, rel=1e-6) and stage.final_lr_factor == pytest.approx(factor, rel=1e-6)
    for bad in (True, str(lr), None, torch.tensor([lr])):
        with pytest.raises(ValueError, match=rf"^lr: expected a positive number, got {re.escape(repr(bad))}$"):
            Stage(("pose",), 3, bad)
    for bad in (True, str(factor), None, np.array([factor])):
        with pytest.raises(ValueError, match=r"^final_lr_factor: expected a number in \(0, 1\], got "):
            Stage(("pose",), 3, final_lr_factor=bad)
    for bad in (None, 3):
        with pytest.raises(TypeError, match=rf"^groups: expected parameter group names, got {type(bad).__name__}$"):
            Stage(bad, 3)


def test_weights_may_be_numpy_or_tensor_scalars_and_must_be_a_mapping(pca, faces, template):
    """weights={'vertex': np.float32(2)} and prior_weight=torch.tensor(0.1) were refused as 'expected a
    non-negative number'; prior_weight=True passed as 1; weights=[...] failed with "'list' object has no
    attribute 'items'"."""
    rng = np.random.default_rng(82)
    target = MeshTarget(faces[0][200])
    w, pw = float(rng.uniform(0.5, 3.0)), float(rng.uniform(1e-3, 1e-1))
    stages = [Stage(("pose",), 0)]
    for make in (np.float32, torch.tensor, np.array):
        problem = FitProblem(pca, target, template=template, weights={"vertex": make(w)}, prior_weight=make(pw))
        assert problem.weights["vertex"] == pytest.approx(w, rel=1e-6)
        assert problem.prior_weight == pytest.approx(pw, rel=1e-6)
    with pytest.raises(ValueError, match=r"^prior_weight: expected a non-negative number, got True$"):
        fit(pca, target, prior_weight=True, stages=stages, progress=False)
    with pytest.raises(ValueError, match=r"^weights\['vertex'\]: expected a non-negative number, got '2'$"):
        fit(pca, target, weights={"vertex": "2"}, stages=stages, progress=False)
    for bad in ([w], w, "vertex"):
        with pytest.raises(TypeError, match=rf"^weights: expected a mapping term name -> weight, got "
                                            rf"{type(bad).__name__}$"):
            fit(pca, target, weights=bad, stages=stages, progress=False)
    with pytest.raises(ValueError, match=r"^camera: expected 'weak_perspective' or 'perspective', got \['weak'\]$"):
        fit(pca, target, camera=["weak"], stages=stages, progress=False)  # was "unhashable type: 'list'"


def test_stages_must_be_a_non_empty_sequence_and_fit_something(pca, faces, template):
    """stages=[] returned the starting values as a fit; one Stage (not in a list) failed with "'Stage' object is
    not iterable"; a stage whose terms all weigh 0 returned its starting values, every loss 0."""
    g = torch.Generator().manual_seed(83)
    target, _, _, _ = _registered_target(faces, 207, g, noise=0.5)
    with pytest.raises(ValueError, match=r"^stages: expected at least one Stage, got none \(stages=None runs the "
                                         r"default schedule\)$"):
        fit(pca, target, stages=[], progress=False)
    with pytest.raises(ValueError, match=r"^stages: expected at least one Stage"):
        FitProblem(pca, target).run(iter([]), progress=False)
    with pytest.raises(TypeError, match=r"^stages: expected a sequence of Stage objects, got Stage \(put one stage in "
                                        r"a list\)$"):
        fit(pca, target, stages=Stage(("pose",), 2), progress=False)
    with pytest.raises(TypeError, match=r"^stages: expected a sequence of Stage objects, got int$"):
        fit(pca, target, stages=5, progress=False)
    zero = {"weights": {"vertex": 0.0}, "prior_weight": 0.0}
    with pytest.raises(ValueError, match=r"^stages\[1\] \('shape'\): every term it uses has weight 0 "
                                         r"\(\{'vertex': 0\.0, 'prior': 0\.0\}\), so it would fit nothing"):
        fit(pca, target, stages=[Stage(("pose",), 0), Stage(("shape",), 3, name="shape")], progress=False, **zero)
    with pytest.raises(ValueError, match=r"^stages\[0\]: every term it uses has weight 0 \(\{'prior': 0\.0\}\)"):
        fit(pca, target, stages=[Stage(("shape",), 3, terms=("prior",))], prior_weight=0.0, progress=False)
    # zero iterations fit nothing anyway; the prior alone still fits
    fit(pca, target, stages=[Stage(("shape",), 0)], progress=False, **zero)
    z = torch.randn(30, generator=g, dtype=torch.float64)
    result = fit(pca, target, init={"latent": z}, stages=[Stage(("shape",), 3)], weights={"vertex": 0.0},
                 progress=False)
    assert result.final_losses["prior"] < result.losses["prior"][0] == pytest.approx(0.5 * float(z.square().sum()))


def _shape_only(pca):
    """The PCA shape model without its colour model: an image fit gets a fitted albedo."""
    from mesh_decoder.fit import FitDecoder, GaussianPrior

    return FitDecoder(pca.decode, GaussianPrior.standard_normal(pca.latent_size), module=pca, name="shape only")


def test_init_values_are_checked_by_name(pca, faces, template, photo_target):
    """Strings failed inside torch ("new(): invalid data type 'str'"), a wrong-sized scale, translation or albedo
    with reshape's "shape '[3]' is invalid for input of size 2", a wrong-sized colour latent as 'z: expected
    shape (B, 30)', a bool latent passed as 0/1, and a tuple light was called 'light' rather than 'init light'."""
    rng = np.random.default_rng(84)
    target = MeshTarget(faces[0][200])
    stages = [Stage(("pose",), 0)]
    cases = [
        ({"latent": "zeros"}, TypeError, r"init latent: expected real numbers, got str of dtype <U5"),
        ({"latent": rng.normal(size=30) > 0}, TypeError, r"init latent: expected real numbers, got ndarray of dtype bool"),
        ({"latent": torch.from_numpy(rng.normal(size=30) > 0)}, TypeError, r"init latent: expected real numbers, got "
                                                                          r"torch\.bool"),
        ({"color_latent": rng.normal(size=5)}, ValueError, r"init color_latent: expected 30 values, got 5 \(shape "
                                                           r"\(5,\)\)"),
        ({"scale": rng.uniform(0.5, 2, 3)}, ValueError, r"init scale: expected 1 value, got 3 \(shape \(3,\)\)"),
        ({"scale": "1"}, TypeError, r"init scale: expected real numbers, got str of dtype <U1"),
        ({"translation": rng.normal(size=2)}, ValueError, r"init translation: expected 3 values, got 2 \(shape "
                                                          r"\(2,\)\)"),
        ({"rotation": "identity"}, TypeError, r"init rotation: expected real numbers, got str of dtype <U8"),
        ({"albedo": rng.uniform(0.2, 0.8, 4)}, ValueError, r"init albedo: expected 3 values, got 4 \(shape \(4,\)\)"),
        ({"light": (0.0, 0.0, 1.0)}, TypeError, r"init light: expected a DirectionalLight, got tuple"),
    ]
    for init, error, message in cases:
        with pytest.raises(error, match=rf"^{message}$"):
            fit(pca, target, template=template, init=init, stages=stages, progress=False)
    with pytest.raises(ValueError, match=r"^init albedo: expected 3 values, got 4"):  # where the albedo is fitted
        fit(_shape_only(pca), photo_target[0], template=template, init={"albedo": rng.uniform(0.2, 0.8, 4)},
            stages=stages, progress=False)
    z, s, t = rng.normal(size=(1, 30)), float(rng.uniform(0.5, 2)), rng.normal(size=(1, 3))  # any shape of 30, 1, 3
    result = fit(pca, target, template=template, init={"latent": z, "scale": np.array([s]), "translation": t},
                 stages=stages, progress=False)
    torch.testing.assert_close(result.latent.double(), torch.from_numpy(z[0]), rtol=1e-5, atol=1e-5)
    assert float(result.scale) == pytest.approx(s, rel=1e-6)


def test_init_6d_rotation_must_be_a_rotation(pca, faces, template):
    """A zero or parallel 6D pair became a zero (or rank-one) 'rotation' that the fit used without a word."""
    rng = np.random.default_rng(85)
    target = MeshTarget(faces[0][200])
    a = rng.normal(size=3)
    for d6 in (np.zeros(6), np.concatenate([a, -rng.uniform(0.5, 2.0) * a]), np.concatenate([a, np.zeros(3)])):
        for rotation in ("axis_angle", "6d"):
            with pytest.raises(ValueError, match=r"^init rotation: expected a 6D rotation, two non-zero and "
                                                 r"non-parallel 3-vectors, got \["):
                fit(pca, target, init={"rotation": d6}, rotation=rotation, stages=[Stage(("pose",), 0)],
                    progress=False)
    _, R, _ = random_similarity(torch.Generator().manual_seed(85))
    d6 = torch.cat([R[:, 0], R[:, 1]]) * float(rng.uniform(0.5, 3.0))  # any positive length
    result = fit(pca, target, init={"rotation": d6}, rotation="6d", stages=[Stage(("pose",), 0)], progress=False)
    torch.testing.assert_close(result.rotation.double(), R, atol=1e-5, rtol=0)


def test_light_needs_a_direction_and_non_negative_coefficients(pca, template, photo_target):
    """A tensor direction of zeros (not checked when the light is built) made every loss NaN, reported as 'lower
    the learning rate'; a negative ambient or diffuse coefficient was clamped to 1e-6 without a word."""
    rng = np.random.default_rng(86)
    target = photo_target[0]
    stages = [Stage(("appearance",), 1)]
    cases = [
        (DirectionalLight(torch.zeros(3)),
         r"expected a direction of 3 numbers, not all zero, got \[0\.0, 0\.0, 0\.0\]"),
        (DirectionalLight(torch.from_numpy(rng.normal(size=2))), r"expected a direction of 3 numbers, not all zero"),
        (DirectionalLight(ambient=-float(rng.uniform(0.1, 1))), r"expected an ambient coefficient, a real number >= 0, got -"),
        (DirectionalLight(diffuse=torch.tensor(-float(rng.uniform(0.1, 1)))), r"expected a diffuse coefficient, a real number >= 0"),
    ]
    for light, message in cases:
        with pytest.raises(ValueError, match=rf"^light: {message}"):
            fit(pca, target, template=template, light=light, stages=stages, progress=False)
        with pytest.raises(ValueError, match=rf"^init light: {message}"):
            fit(pca, target, template=template, init={"light": light}, stages=stages, progress=False)
    direction = rng.normal(size=3)
    result = fit(pca, target, template=template, light=DirectionalLight(torch.from_numpy(direction), 0.0, 0.5),
                 stages=[Stage(("pose",), 0)], progress=False)
    np.testing.assert_allclose(result.light.direction, direction / np.linalg.norm(direction), atol=1e-6)


def test_a_decoder_with_non_finite_output_is_refused(template):
    """A decoder giving NaN failed inside the initial alignment with 'linalg.svd: The algorithm failed to converge'."""
    from torch import nn

    class Broken(nn.Module):
        latent_size = 4

        def __init__(self):
            super().__init__()
            self.base = nn.Parameter(torch.randn(800, 3, generator=torch.Generator().manual_seed(87)))

        def forward(self, z):
            return self.base + z.sum(-1)[:, None, None] / z.sum()  # 0 / 0 at the prior mean

    target = MeshTarget(torch.randn(800, 3, generator=torch.Generator().manual_seed(88)))
    with pytest.raises(ValueError, match=r"^decoder: expected finite vertices from the prior mean latent, got NaN or "
                                         r"inf \(Broken\)$"):
        fit(Broken(), target, template=template, progress=False)


def test_problem_losses_refuse_unknown_terms_and_run_refuses_non_bool_progress(pca, faces, template):
    """FitProblem.losses(['vertexx']) returned {} (and total() of it None); losses('vertex') read the letters;
    progress='no' showed the bar."""
    g = torch.Generator().manual_seed(89)
    target, _, _, _ = _registered_target(faces, 208, g, noise=0.5)
    problem = FitProblem(pca, target, template=template)
    with pytest.raises(ValueError, match=r"^terms: unknown loss terms \['vertexx'\]; expected names from "):
        problem.losses(["vertexx", "prior"])
    with torch.no_grad():
        one = problem.losses("vertex")
        both = problem.losses()
    assert list(one) == ["vertex"] and float(one["vertex"]) == float(both["vertex"]) > 0
    assert problem.losses(["landmark"]) == {}  # a known term the target lacks is skipped, as stages do
    for progress in ("no", 0, None):
        with pytest.raises(TypeError, match=rf"^progress: expected True or False, got {re.escape(repr(progress))}"):
            fit(pca, target, stages=[Stage(("pose",), 1)], progress=progress)


def test_result_methods_name_bad_arguments(tmp_path, pca, faces, template):
    """project_landmarks('nose_tip') looked up the letters 'n', 'o', ...; save_overlay(alpha='x') failed with
    float()'s "could not convert string to float: 'x'"."""
    g = torch.Generator().manual_seed(90)
    target, _ = _landmark_target(template, faces[0][204].double(), g, "weak_perspective")
    result = fit(pca, target, template=template, stages=[Stage(("pose",), 0)], progress=False)
    name = target.names[int(torch.randint(len(target.names), (1,), generator=g))]
    with pytest.raises(TypeError, match=rf"^names: expected a sequence of landmark names, got one string '{name}'$"):
        result.project_landmarks(name)
    assert result.project_landmarks([name]).shape == (1, 2)
    for alpha in ("x", "0.5", None, True):
        with pytest.raises(ValueError, match=rf"^alpha: expected a number in \[0, 1\], got {re.escape(repr(alpha))}$"):
            result.save_overlay(tmp_path / "o.png", alpha=alpha)
