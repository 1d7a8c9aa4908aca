"""Shared fixtures of the fitting tests: a small face template, synthetic faces and a PCA model on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mesh_decoder.data.synthetic import SyntheticFaces
from mesh_decoder.fit import apply_similarity, axis_angle_to_matrix
from mesh_decoder.mesh.templates import face_template
from mesh_decoder.pca import PCAModel


@pytest.fixture(scope="session")
def template():
    """An 800-vertex face template (33 landmarks)."""
    return face_template(800, seed=0)


@pytest.fixture(scope="session")
def faces(template):
    """210 synthetic faces: ``(vertices (210, V, 3), colors (210, V, 3))`` float32; the first 200 train the PCA."""
    gen = SyntheticFaces(template, seed=0)
    vertices, colors = gen.generate(gen.sample_params(210, rng=7))
    return torch.from_numpy(vertices), torch.from_numpy(colors)


@pytest.fixture(scope="session")
def pca(faces):
    """A 30-component shape and colour PCA model of 200 generated faces."""
    vertices, colors = faces
    return PCAModel.fit(vertices[:200], colors[:200], num_components=30)


def random_similarity(g: torch.Generator, max_degrees: float = 30.0, scale=(0.8, 1.25), translation_std=50.0):
    """A random similarity ``(s, R, t)`` in float64: rotation angle in ``[max/2, max]`` about a random axis."""
    axis = torch.randn(3, generator=g, dtype=torch.float64)
    angle = math.radians(max_degrees) * (0.5 + 0.5 * float(torch.rand((), generator=g)))
    R = axis_angle_to_matrix(axis / axis.norm() * angle)
    s = scale[0] + (scale[1] - scale[0]) * float(torch.rand((), generator=g))
    t = translation_std * torch.randn(3, generator=g, dtype=torch.float64)
    return torch.tensor(s, dtype=torch.float64), R, t


def shape_error(fitted: torch.Tensor, truth: torch.Tensor) -> float:
    """Mean per-vertex distance after the best similarity alignment (pose-free shape error), brute force in float64."""
    from mesh_decoder.fit import umeyama

    s, R, t = umeyama(fitted.double(), truth.double())
    return float((apply_similarity(fitted.double(), s, R, t) - truth.double()).norm(dim=-1).mean())


def sample_surface(rng: np.random.Generator, vertices: np.ndarray, faces: np.ndarray, n: int, noise: float):
    """``n`` points uniform on a triangle surface (area-weighted), with Gaussian noise, in random order."""
    tri = vertices[faces]  # (F, 3, 3)
    area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(area), n, p=area / area.sum())
    bary = rng.dirichlet(np.ones(3), n)
    points = (tri[face] * bary[:, :, None]).sum(1) + rng.normal(scale=noise, size=(n, 3))
    return points[rng.permutation(n)]


@pytest.fixture(scope="session")
def hierarchy(template):
    """A 3-level hierarchy (800 -> 200 -> 50 vertices) of the template, no texel map."""
    from mesh_decoder.hierarchy import build_hierarchy

    return build_hierarchy(template, factors=(4, 4), texture_size=None)


def make_autoencoder(hierarchy, template, seed: int = 0, latent_size: int = 8, std: float = 4.0):
    """An untrained (fixed) spiral autoencoder whose outputs are the template plus ``std`` mm times the network,
    with a correlated Gaussian latent prior fitted to random codes."""
    from mesh_decoder.nn import MeshAutoencoder, SpiralDecoder, SpiralEncoder

    torch.manual_seed(seed)
    dec = SpiralDecoder.from_hierarchy(hierarchy, latent_size=latent_size, channels=(16, 16))
    enc = SpiralEncoder.from_hierarchy(hierarchy, latent_size=latent_size, channels=(16, 16))
    ae = MeshAutoencoder(enc, dec)
    ae.set_normalization(torch.tensor(template.vertices, dtype=torch.float32), std)
    g = torch.Generator().manual_seed(seed + 100)
    mix = 0.5 * torch.randn(latent_size, latent_size, generator=g) + torch.eye(latent_size)
    ae.fit_latent_prior(torch.randn(200, latent_size, generator=g) @ mix + torch.randn(latent_size, generator=g))
    return ae.eval()


@pytest.fixture(scope="session")
def photo_target(faces, template):
    """A 96 x 96 rendering of a held-out face (its own colours, Lambert shading, 15-25 degrees off frontal)
    on a dark blue background with its 33 landmarks (1 pixel noise): ``(ImageTarget, true vertices (V, 3),
    true rotation (3, 3))``."""
    return photograph(faces, template, background=(0.2, 0.3, 0.4))


def photograph(faces, template, background):
    """:func:`photo_target` on ``background`` (``None``: the renderer's, white)."""
    from mesh_decoder.fit import ImageTarget, LandmarkTarget
    from mesh_decoder.render import DirectionalLight, OrthographicCamera, ndc_to_pixel, render

    size = 96
    g = torch.Generator().manual_seed(31)
    truth, colors = faces[0][206].double(), faces[1][206].double()
    _, R, _ = random_similarity(g, max_degrees=25.0)
    X = apply_similarity(truth, 0.55 * size / 128, R, torch.zeros(3, dtype=torch.float64))  # pixels
    cam = OrthographicCamera(scale=torch.tensor([[2.0 / size, 2.0 / size]], dtype=torch.float64))
    image = render(X, template.faces, cam, size, colors=colors, light=DirectionalLight((0.2, 0.4, 1.0), 0.4, 0.6),
                   background=background).image[0].clamp(0, 1)
    names = sorted(template.landmarks)
    index = torch.tensor([template.landmarks[n] for n in names])
    pixels = ndc_to_pixel(cam.project(X[index][None]), size)[0, :, :2]
    pixels = pixels + torch.randn(pixels.shape, generator=g, dtype=torch.float64)
    return ImageTarget(image, landmarks=LandmarkTarget(pixels, names, size)), truth, R
