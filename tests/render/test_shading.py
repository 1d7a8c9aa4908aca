import re

import numpy as np
import pytest
import torch

from mesh_decoder.mesh.templates import face_template, icosphere
from mesh_decoder.render import DirectionalLight, shade_lambert, vertex_normals
from tests.render.reference import reference_vertex_normals


def test_vertex_normals_match_loop_reference():
    mesh = face_template(500, seed=6)
    rng = np.random.default_rng(30)
    verts = mesh.vertices + rng.normal(scale=2.0, size=mesh.vertices.shape)
    out = vertex_normals(torch.tensor(verts), torch.tensor(mesh.faces))
    np.testing.assert_allclose(out.numpy(), reference_vertex_normals(verts, mesh.faces), atol=1e-12)
    assert out.shape == (500, 3)


def test_vertex_normals_point_outwards_on_a_sphere_and_batch():
    sphere = icosphere(2)
    v = torch.tensor(sphere.vertices)
    g = torch.Generator().manual_seed(31)
    scale = torch.rand(3, 1, 1, generator=g, dtype=torch.float64) + 0.5
    batch = v.unsqueeze(0) * scale
    n = vertex_normals(batch, torch.tensor(sphere.faces))
    radial = v / v.norm(dim=1, keepdim=True)
    assert float((n * radial).sum(-1).min()) > 0.99
    assert torch.allclose(n[1], vertex_normals(batch[1], torch.tensor(sphere.faces)))


def test_vertex_normals_keep_the_callers_batching_for_arrays():
    mesh = face_template(500, seed=7)
    verts = mesh.vertices + np.random.default_rng(32).normal(scale=2.0, size=mesh.vertices.shape)
    out = vertex_normals(verts, mesh.faces)  # numpy (V, 3) -> (V, 3)
    assert out.shape == (500, 3)
    np.testing.assert_allclose(out.numpy(), reference_vertex_normals(verts, mesh.faces), atol=1e-12)
    assert vertex_normals(verts[None].repeat(2, 0), mesh.faces).shape == (2, 500, 3)


def test_isolated_vertex_gets_a_zero_normal():
    v = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    n = vertex_normals(v, torch.tensor([[0, 1, 2]]))
    assert torch.allclose(n[:3], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(3, 3))
    assert torch.all(n[3] == 0)


def test_vertex_normals_gradcheck():
    g = torch.Generator().manual_seed(32)
    v = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 4], [1, 4, 3]])
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, faces), (v,))


def test_lambert_formula():
    g = torch.Generator().manual_seed(33)
    n = torch.randn(2, 4, 5, 3, generator=g, dtype=torch.float64)
    n = n / n.norm(dim=-1, keepdim=True)
    albedo = torch.rand(2, 4, 5, 3, generator=g, dtype=torch.float64)
    light = torch.randn(2, 3, generator=g, dtype=torch.float64)
    out = shade_lambert(n, albedo, light, ambient=0.2, diffuse=0.7)
    for b in range(2):
        ell = light[b] / light[b].norm()
        for i in range(4):
            for j in range(5):
                cos = max(0.0, float(n[b, i, j] @ ell))
                assert torch.allclose(out[b, i, j], albedo[b, i, j] * (0.2 + 0.7 * cos))
    # a normal facing the light gets ambient + diffuse, one facing away ambient only
    facing = shade_lambert(torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]]), torch.ones(2, 3), (0.0, 0.0, 2.0),
                           ambient=0.25, diffuse=0.5)
    assert torch.allclose(facing, torch.tensor([[0.75] * 3, [0.25] * 3]))
    # per-batch coefficients
    per = shade_lambert(n, albedo, light[0], ambient=torch.tensor([0.1, 0.3], dtype=torch.float64), diffuse=0.0)
    assert torch.allclose(per[1], albedo[1] * 0.3)


def test_lambert_gradcheck_and_errors():
    g = torch.Generator().manual_seed(34)
    n = torch.randn(6, 3, generator=g, dtype=torch.float64)
    n = (n / n.norm(dim=-1, keepdim=True)).requires_grad_(True)
    albedo = torch.rand(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    light = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, c: shade_lambert(a, b, c), (n, albedo, light))
    with pytest.raises(ValueError, match=r"normals: expected shape \(\.\.\., 3\)"):
        shade_lambert(torch.rand(4, 2), torch.rand(4, 3))
    with pytest.raises(ValueError, match=r"light_dir: expected shape \(4, 3\)"):
        shade_lambert(torch.rand(4, 3), torch.rand(4, 3), torch.rand(2, 3))
    assert DirectionalLight().ambient + DirectionalLight().diffuse == pytest.approx(1.0)


def test_lambert_refuses_albedo_and_coefficients_of_another_length():
    g = torch.Generator().manual_seed(35)
    n = torch.randn(5, 3, generator=g)
    n = n / n.norm(dim=-1, keepdim=True)
    albedo = torch.rand(5, 3, generator=g)
    # torch's "The size of tensor a (4) must match the size of tensor b (5)" RuntimeError before
    with pytest.raises(ValueError, match=r"albedo: expected a shape broadcastable with the normals' \(5,\)"):
        shade_lambert(n, albedo[:4])
    for name in ("ambient", "diffuse"):
        with pytest.raises(ValueError, match=rf"{name}: expected a number or a \(5,\) tensor .*got shape \(3,\)"):
            shade_lambert(n, albedo, **{name: torch.rand(3, generator=g)})
    k = torch.rand(5, generator=g)
    expected = albedo * (k[:, None] + 0.65 * (n * torch.tensor([0.3, 0.5, 1.0]) / torch.tensor([0.3, 0.5, 1.0]).norm())
                         .sum(-1, keepdim=True).clamp(min=0))
    torch.testing.assert_close(shade_lambert(n, albedo, ambient=k), expected)  # (N,) still one per normal
    torch.testing.assert_close(shade_lambert(n, albedo[:1], ambient=k), expected / albedo * albedo[:1])


def test_lights_of_plain_numbers_that_shade_wrongly_are_refused():
    """A zero direction lit nothing but the ambient term, a NaN one or a NaN coefficient gave NaN colours."""
    nan, inf = float("nan"), float("inf")
    cases = [
        (dict(direction=(0.0, 0.0, 0.0)), "direction: expected a direction towards the light, not all zero, "
                                          "got [0.0, 0.0, 0.0]"),
        (dict(direction=np.zeros(3)), "direction: expected a direction towards the light, not all zero"),
        (dict(direction=(nan, 0.5, 1.0)), "direction: expected finite numbers, got [nan, 0.5, 1.0]"),
        (dict(direction=(0.3, 0.5)), "direction: expected 3 numbers (x, y, z) or a tensor, got shape (2,)"),
        (dict(ambient=nan), "ambient: expected finite numbers, got nan"),
        (dict(diffuse=-inf), "diffuse: expected finite numbers, got -inf"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            DirectionalLight(**kwargs)
    g = torch.Generator().manual_seed(36)
    n = torch.nn.functional.normalize(torch.randn(6, 3, generator=g), dim=-1)
    albedo = torch.rand(6, 3, generator=g)
    with pytest.raises(ValueError, match=r"^light_dir: expected a direction towards the light, not all zero"):
        shade_lambert(n, albedo, (0, 0, 0))
    with pytest.raises(ValueError, match=r"^ambient: expected finite numbers, got nan"):
        shade_lambert(n, albedo, ambient=nan)
    # tensors are not read (no wait for the GPU): a fit's parameters pass as they are
    DirectionalLight(direction=torch.zeros(3), ambient=torch.tensor(nan))
    # valid plain numbers shade as the same tensors do
    d = torch.randn(3, generator=g, dtype=torch.float64)
    ka, kd = torch.rand(2, generator=g, dtype=torch.float64).tolist()
    light = DirectionalLight(tuple(d.tolist()), ka, kd)
    torch.testing.assert_close(shade_lambert(n.double(), albedo.double(), light.direction, light.ambient, light.diffuse),
                               shade_lambert(n.double(), albedo.double(), d, torch.tensor(ka, dtype=torch.float64),
                                             torch.tensor(kd, dtype=torch.float64)))
