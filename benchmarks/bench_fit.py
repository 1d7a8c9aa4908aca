"""Accuracy and speed of :func:`mesh_decoder.fit.fit` on synthetic faces, per target kind, on the CPU.

Setup (outside the timed region): a face template, synthetic faces from
:class:`mesh_decoder.data.synthetic.SyntheticFaces` (the first 200 train a shape and
colour :class:`~mesh_decoder.pca.PCAModel`; the fitted faces are held out, so the
model cannot represent them exactly), and, for the neural case, an untrained but
fixed spiral :class:`~mesh_decoder.nn.MeshAutoencoder` with a correlated Gaussian
latent prior fitted to random codes (its targets are its own decodings, so the
ideal error is 0).

Target kinds, each fitted from the prior mean with the default schedule:

* ``mesh``: a registered mesh moved by a random similarity (rotation 15 to 30
  degrees, scale 0.8 to 1.25, translation ~50 mm) with 0.5 mm noise;
* ``mesh_autoencoder``: the same with the autoencoder and 0.2 mm noise;
* ``points``: 2000 points sampled on the moved surface (10 to 20 degrees), 0.5 mm
  noise, shuffled;
* ``landmarks_weak`` / ``landmarks_perspective``: the 33 template landmarks seen
  by a weak-perspective / perspective camera (f = 600 px, 650 mm away) in a 256 x 256
  image, 15 to 30 degrees off frontal, 1 pixel noise;
* ``image``: a 96 x 96 Lambert-shaded rendering of the face with its own colours
  on a dark blue background, plus its landmarks (1 pixel noise); the landmark-only
  fit of the same image is reported beside it;
* ``image_white``: the same on the renderer's white background, with no face mask
  (background pixels the face comes to cover count in the photometric term).

Reported per fit: wall time of the fit (the optimisation; median over the faces),
rotation error (degrees), relative scale error, mean vertex error in target space
(mm; meshes only), pose-free shape error (mean vertex distance after the best
similarity alignment, mm), the same for the prior-mean face as a baseline, mean
distance of the fitted interior vertices to the true surface (points), landmark RMS
(pixels) and the photometric loss. Results go to
``benchmarks/results/fit_<machine slug>.json`` with the environment.

Usage::

    python -m benchmarks.bench_fit                     # 800-vertex template, 5 faces per kind, 1 thread
    python -m benchmarks.bench_fit --vertices 5023 --faces 3 --kinds mesh points
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from typing import Any, Callable

import numpy as np
import torch

from mesh_decoder._checks import check_output_path
from mesh_decoder.bench import report
from mesh_decoder.data.synthetic import SyntheticFaces
from mesh_decoder.fit import (
    FitProblem,
    ImageTarget,
    LandmarkTarget,
    MeshTarget,
    PointCloudTarget,
    apply_similarity,
    axis_angle_to_matrix,
    fit,
    rotation_angle,
    umeyama,
)
from mesh_decoder.hierarchy.operators import closest_points_on_surface
from mesh_decoder.mesh.templates import face_template
from mesh_decoder.pca import PCAModel
from mesh_decoder.render import DirectionalLight, OrthographicCamera, PerspectiveCamera, ndc_to_pixel, render

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
KINDS = ("mesh", "mesh_autoencoder", "points", "landmarks_weak", "landmarks_perspective", "image", "image_white")


def random_similarity(g: torch.Generator, max_degrees: float):
    """Rotation of ``max/2`` to ``max`` degrees about a random axis, scale 0.8-1.25, translation ~ N(0, 50 mm)."""
    axis = torch.randn(3, generator=g, dtype=torch.float64)
    angle = math.radians(max_degrees) * (0.5 + 0.5 * float(torch.rand((), generator=g)))
    R = axis_angle_to_matrix(axis / axis.norm() * angle)
    s = 0.8 + 0.45 * float(torch.rand((), generator=g))
    t = 50.0 * torch.randn(3, generator=g, dtype=torch.float64)
    return s, R, t


def shape_error(fitted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean vertex distance after the best similarity alignment (pose-free), mm."""
    s, R, t = umeyama(fitted.double(), truth.double())
    return float((apply_similarity(fitted.double(), s, R, t) - truth.double()).norm(dim=-1).mean())


def degrees(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.degrees(float(rotation_angle(a.double(), b.double())))


class Scene:
    """Template, faces, PCA model and autoencoder (built once, outside the timed region)."""

    def __init__(self, num_vertices: int, num_components: int, seed: int = 0) -> None:
        self.template = face_template(num_vertices, seed=0)
        gen = SyntheticFaces(self.template, seed=0)
        vertices, colors = gen.generate(gen.sample_params(260, rng=seed))
        self.vertices, self.colors = torch.from_numpy(vertices).double(), torch.from_numpy(colors).double()
        self.pca = PCAModel.fit(torch.from_numpy(vertices[:200]), torch.from_numpy(colors[:200]),
                                num_components=num_components)
        self.interior = np.setdiff1d(np.arange(num_vertices), self.template.boundary_vertices())
        self.names = sorted(self.template.landmarks)
        self.landmark_index = torch.tensor([self.template.landmarks[n] for n in self.names])
        self._autoencoder = None

    def autoencoder(self):
        if self._autoencoder is None:
            from mesh_decoder.hierarchy import build_hierarchy
            from mesh_decoder.nn import MeshAutoencoder, SpiralDecoder, SpiralEncoder

            h = build_hierarchy(self.template, factors=(4, 4), texture_size=None)
            torch.manual_seed(0)
            dec = SpiralDecoder.from_hierarchy(h, latent_size=8, channels=(16, 16))
            enc = SpiralEncoder.from_hierarchy(h, latent_size=8, channels=(16, 16))
            ae = MeshAutoencoder(enc, dec)
            ae.set_normalization(torch.tensor(self.template.vertices, dtype=torch.float32), 4.0)
            g = torch.Generator().manual_seed(100)
            mix = 0.5 * torch.randn(8, 8, generator=g) + torch.eye(8)
            ae.fit_latent_prior(torch.randn(200, 8, generator=g) @ mix + torch.randn(8, generator=g))
            self._autoencoder = ae.eval()
        return self._autoencoder


def _mesh_case(scene: Scene, i: int, autoencoder: bool) -> dict[str, Any]:
    g = torch.Generator().manual_seed(1000 + i)
    if autoencoder:
        ae = scene.autoencoder()
        with torch.no_grad():
            truth = ae.decode(ae.sample_latents(1, generator=g))[0].double()
        model, noise, baseline = ae, 0.2, ae.decode(ae.latent_mean[None])[0]
    else:
        truth, model, noise, baseline = scene.vertices[200 + i], scene.pca, 0.5, scene.pca.mean
    s, R, t = random_similarity(g, 30.0)
    clean = apply_similarity(truth, s, R, t)
    target = MeshTarget(clean + noise * torch.randn(clean.shape, generator=g, dtype=torch.float64))
    r = fit(model, target, template=scene.template, progress=False)
    return {"seconds": r.seconds, "iterations": len(r.losses["total"]), "rotation_error_deg": degrees(r.rotation, R),
            "scale_error": abs(float(r.scale) / s - 1), "vertex_error_mm": float((r.vertices.double() - clean)
                                                                                  .norm(dim=-1).mean()),
            "shape_error_mm": shape_error(r.model_vertices, truth), "mean_face_shape_error_mm":
                shape_error(baseline.detach(), truth)}


def _points_case(scene: Scene, i: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(2000 + i)
    rng = np.random.default_rng(2000 + i)
    truth = scene.vertices[200 + i]
    s, R, t = random_similarity(g, 20.0)
    clean = apply_similarity(truth, s, R, t).numpy()
    tri = clean[scene.template.faces]  # (F, 3, 3)
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(area), 2000, p=area / area.sum())
    bary = rng.dirichlet(np.ones(3), 2000)
    points = (tri[face] * bary[:, :, None]).sum(1) + rng.normal(scale=0.5, size=(2000, 3))
    r = fit(scene.pca, PointCloudTarget(points[rng.permutation(2000)]), template=scene.template, progress=False)
    fitted = r.vertices.double().numpy()
    _, _, sq = closest_points_on_surface(fitted[scene.interior], clean, scene.template.faces)
    return {"seconds": r.seconds, "iterations": len(r.losses["total"]), "rotation_error_deg": degrees(r.rotation, R),
            "scale_error": abs(float(r.scale) / s - 1),
            "vertex_error_mm": float(np.linalg.norm(fitted - clean, axis=1).mean()),
            "surface_error_mm": float(np.sqrt(sq).mean()), "shape_error_mm": shape_error(r.model_vertices, truth),
            "mean_face_shape_error_mm": shape_error(scene.pca.mean, truth)}


def _landmark_case(scene: Scene, i: int, camera: str) -> dict[str, Any]:
    g = torch.Generator().manual_seed(3000 + i)
    truth = scene.vertices[200 + i]
    _, R, _ = random_similarity(g, 30.0)
    size = 256
    if camera == "weak_perspective":
        X = apply_similarity(truth, 1.0 + 0.2 * float(torch.rand((), generator=g)), R,
                             torch.tensor([12.0, -6.0, 0.0], dtype=torch.float64))
        cam = OrthographicCamera(scale=torch.tensor([[2.0 / size, 2.0 / size]], dtype=torch.float64))
    else:
        X = apply_similarity(truth, 1.0, R, torch.tensor([8.0, 12.0, -650.0], dtype=torch.float64))
        cam = PerspectiveCamera(torch.tensor([600.0, 600.0, (size - 1) / 2, (size - 1) / 2], dtype=torch.float64),
                                size, R=torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)))
    pixels = ndc_to_pixel(cam.project(X[scene.landmark_index][None]), size)[0, :, :2]
    pixels = pixels + torch.randn(pixels.shape, generator=g, dtype=torch.float64)
    r = fit(scene.pca, LandmarkTarget(pixels, scene.names, size), template=scene.template, camera=camera,
            focal=600.0 if camera == "perspective" else None, progress=False)
    out = {"seconds": r.seconds, "iterations": len(r.losses["total"]), "rotation_error_deg": degrees(r.rotation, R),
           "shape_error_mm": shape_error(r.model_vertices, truth),
           "mean_face_shape_error_mm": shape_error(scene.pca.mean, truth),
           "landmark_rms_px": math.sqrt(r.final_losses["landmark"])}
    if camera == "perspective":
        out["depth_error_mm"] = abs(float(r.translation[2]) + 650.0)
    return out


def _image_case(scene: Scene, i: int, size: int = 96, background=(0.2, 0.3, 0.4)) -> dict[str, Any]:
    g = torch.Generator().manual_seed(4000 + i)
    truth, colors = scene.vertices[200 + i], scene.colors[200 + i]
    _, R, _ = random_similarity(g, 25.0)
    X = apply_similarity(truth, 0.55 * size / 128, R, torch.zeros(3, dtype=torch.float64))
    cam = OrthographicCamera(scale=torch.tensor([[2.0 / size, 2.0 / size]], dtype=torch.float64))
    image = render(X, scene.template.faces, cam, size, colors=colors, light=DirectionalLight((0.2, 0.4, 1.0), 0.4, 0.6),
                   background=background).image[0].clamp(0, 1)
    pixels = ndc_to_pixel(cam.project(X[scene.landmark_index][None]), size)[0, :, :2]
    pixels = pixels + torch.randn(pixels.shape, generator=g, dtype=torch.float64)
    target = ImageTarget(image, landmarks=LandmarkTarget(pixels, scene.names, size))
    landmarks_only = fit(scene.pca, target.landmarks, template=scene.template, progress=False)
    with torch.no_grad():
        before = FitProblem(scene.pca, target, template=scene.template, init=landmarks_only).losses(["photometric"])
    r = fit(scene.pca, target, template=scene.template, progress=False)
    return {"seconds": r.seconds, "iterations": len(r.losses["total"]), "rotation_error_deg": degrees(r.rotation, R),
            "shape_error_mm": shape_error(r.model_vertices, truth),
            "mean_face_shape_error_mm": shape_error(scene.pca.mean, truth),
            "landmark_rms_px": math.sqrt(r.final_losses["landmark"]),
            "photometric_loss": r.final_losses["photometric"],
            "landmarks_only_shape_error_mm": shape_error(landmarks_only.model_vertices, truth),
            "landmarks_only_rotation_error_deg": degrees(landmarks_only.rotation, R),
            "landmarks_only_photometric_loss": float(before["photometric"]), "image_size": size}


CASES: dict[str, Callable[[Scene, int], dict[str, Any]]] = {
    "mesh": lambda scene, i: _mesh_case(scene, i, autoencoder=False),
    "mesh_autoencoder": lambda scene, i: _mesh_case(scene, i, autoencoder=True),
    "points": _points_case,
    "landmarks_weak": lambda scene, i: _landmark_case(scene, i, "weak_perspective"),
    "landmarks_perspective": lambda scene, i: _landmark_case(scene, i, "perspective"),
    "image": _image_case,
    "image_white": lambda scene, i: _image_case(scene, i, background=None),
}


def _summary(cases: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in cases[0]:
        values = [c[key] for c in cases if isinstance(c.get(key), (int, float))]
        if values:
            out[key] = {"median": statistics.median(values), "max": max(values), "mean": statistics.fmean(values)}
    if "seconds" in out and "iterations" in out:
        out["iterations_per_s"] = statistics.median(c["iterations"] / c["seconds"] for c in cases)
    return out


def run(kinds, num_faces: int, num_vertices: int, num_components: int, threads: int) -> dict[str, Any]:
    """Fit every kind on ``num_faces`` faces and return the JSON payload."""
    torch.set_num_threads(threads)
    scene = Scene(num_vertices, num_components)
    fit(scene.pca, MeshTarget(scene.vertices[200]), template=scene.template, progress=False)  # warm-up
    rows = []
    for kind in kinds:
        cases = [CASES[kind](scene, i) for i in range(num_faces)]
        summary = _summary(cases)
        rows.append({"kind": kind, "summary": summary, "cases": cases})
        line = ", ".join(f"{k} {v['median']:.3g}" for k, v in summary.items() if isinstance(v, dict))
        print(f"{kind:22s} median: {line}", flush=True)
    return {
        "benchmark": "fit",
        "description": "fit() on held-out synthetic faces, from the prior mean, default schedules; errors in mm "
                       "(template units) and degrees; seconds = wall time of one fit (optimisation only); "
                       "shape error = mean vertex distance after the best similarity alignment",
        "environment": report.environment("cpu", threads, load_average=list(os.getloadavg())),
        "config": {"kinds": list(kinds), "faces_per_kind": num_faces, "num_vertices": num_vertices,
                   "pca_components": num_components, "pca_training_faces": 200},
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--faces", type=int, default=5, help="held-out faces fitted per kind (at most 60)")
    parser.add_argument("--vertices", type=int, default=800, help="template vertex count")
    parser.add_argument("--components", type=int, default=30, help="PCA components")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("-o", "--output", default=None,
                        help="result JSON (default benchmarks/results/fit_<machine>.json)")
    args = parser.parse_args(argv)
    if not 1 <= args.faces <= 60:
        raise ValueError(f"--faces: expected an integer in [1, 60], got {args.faces}")
    if args.threads < 1:
        raise ValueError(f"--threads: expected an integer >= 1, got {args.threads}")
    report.check_threads(args.threads)  # a huge thread pool crashed torch (segfault)
    path = args.output or os.path.join(RESULTS, f"fit_{report.machine_slug('cpu', args.threads)}.json")
    check_output_path(path, "--output")  # before the work, not after it
    with report.naming_options({"num_vertices": "--vertices", "num_components": "--components"}):
        payload = run(args.kinds, args.faces, args.vertices, args.components, args.threads)
    report.write_json(path, payload)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(report.script_main(main))
