import numpy as np
import pytest
import torch

from mesh_decoder.mesh.templates import face_template
from mesh_decoder.render import OrthographicCamera, PerspectiveCamera, interpolate, rasterize, sample_texture
from tests.render.reference import random_scene, reference_bilinear, reference_interpolate


def _scene(seed: int, perspective: bool = False, H: int = 9, W: int = 11, num_faces: int = 4):
    g = torch.Generator().manual_seed(seed)
    verts, faces = random_scene(g, num_faces=num_faces)
    if perspective:
        verts[:, :2] *= verts[:, 2:] * 0.6
        f = 0.9 * min(H, W)
        cam = PerspectiveCamera(torch.tensor([f, f, (W - 1) / 2, (H - 1) / 2], dtype=torch.float64), (H, W))
    else:
        cam = OrthographicCamera(scale=1.0)
    frags = rasterize(verts, faces, cam, (H, W))
    assert frags.mask.sum() >= 6
    return g, verts, faces, frags


def test_interpolate_matches_loop_reference():
    g, verts, faces, frags = _scene(20)
    attrs = torch.randn(verts.shape[0], 5, generator=g, dtype=torch.float64)
    out = interpolate(frags, attrs)
    ref = reference_interpolate(frags.face_id[0].numpy(), frags.bary[0].numpy(), faces.numpy(), attrs.numpy())
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-12)
    assert torch.all(out[0][~frags.mask[0]] == 0)


def test_interpolate_per_corner_attributes_with_their_own_faces():
    g, verts, faces, frags = _scene(21)
    T = 17
    uv = torch.rand(T, 2, generator=g, dtype=torch.float64)
    uv_faces = torch.randint(0, T, faces.shape, generator=g)
    out = interpolate(frags, uv, faces=uv_faces)
    ref = reference_interpolate(frags.face_id[0].numpy(), frags.bary[0].numpy(), uv_faces.numpy(), uv.numpy())
    np.testing.assert_allclose(out[0].numpy(), ref, atol=1e-12)
    with pytest.raises(ValueError, match=r"expected 4 rows \(one per rasterised face\)"):
        interpolate(frags, uv, faces=uv_faces[:3])
    with pytest.raises(ValueError, match=r"uv_faces|faces: expected indices in \[0, 17\)"):
        interpolate(frags, uv, faces=uv_faces + T)


def test_interpolate_batched_attributes_and_broadcast():
    mesh = face_template(500, seed=5)
    g = torch.Generator().manual_seed(22)
    base = torch.tensor(mesh.vertices)
    verts = base + 2.0 * torch.randn(2, *base.shape, generator=g, dtype=torch.float64)
    faces = torch.tensor(mesh.faces)
    cam = OrthographicCamera.fit(verts, 24)
    frags = rasterize(verts, faces, cam, 24)
    attrs = torch.randn(2, 500, 3, generator=g, dtype=torch.float64)
    out = interpolate(frags, attrs)
    for b in range(2):
        one = rasterize(verts[b], faces, cam, 24)
        assert torch.allclose(interpolate(one, attrs[b])[0], out[b])
    shared = interpolate(frags, attrs[0])  # (V, C) broadcast over the batch
    assert torch.allclose(shared[0], interpolate(frags, attrs[:1].expand(2, -1, -1))[0])
    with pytest.raises(ValueError, match="batch size 1 or 2"):
        interpolate(frags, torch.randn(3, 500, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="at least 500 rows"):
        interpolate(frags, torch.randn(400, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"attributes: expected \(N, C\) or \(B, N, C\), got \(500,\)"):
        interpolate(frags, attrs[0, :, 0])  # the caller's shape, not an internal (1, 500)


@pytest.mark.parametrize("perspective", [False, True])
def test_gradcheck_through_positions_and_attributes(perspective):
    g, verts, faces, frags = _scene(23 if perspective else 24, perspective=perspective, H=6, W=7, num_faces=3)
    attrs = torch.randn(verts.shape[0], 2, generator=g, dtype=torch.float64, requires_grad=True)
    v = verts.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, x: interpolate(frags, a, vertices_for_grad=x), (attrs, v))
    # without vertices_for_grad only the attributes get gradients, and the values agree
    with_v = interpolate(frags, attrs, vertices_for_grad=v)
    without = interpolate(frags, attrs)
    assert torch.allclose(with_v, without, atol=1e-12)
    grad_v, = torch.autograd.grad(with_v.square().sum(), v)
    assert float(grad_v.abs().sum()) > 0


def test_vertices_for_grad_batch_mismatch_names_the_one_allowed_size():
    """A one-mesh rasterisation with two vertex sets was refused as 'expected batch size 1 or 1'."""
    g, verts, faces, frags = _scene(25, perspective=False, H=6, W=7, num_faces=3)
    with pytest.raises(ValueError, match=r"^vertices_for_grad: expected batch size 1, got 2$"):
        interpolate(frags, torch.randn(verts.shape[0], 2, dtype=torch.float64),
                    vertices_for_grad=verts.unsqueeze(0).expand(2, -1, -1))


def test_sample_texture_matches_bilinear_reference():
    g = torch.Generator().manual_seed(25)
    tex = torch.rand(2, 3, 5, 7, generator=g, dtype=torch.float64)
    uv = torch.rand(2, 4, 6, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1  # includes the border clamp
    out = sample_texture(tex, uv)
    assert out.shape == (2, 3, 4, 6)
    for b in range(2):
        for i in range(4):
            for j in range(6):
                u, v = uv[b, i, j].tolist()
                expect = reference_bilinear(tex[b].numpy(), u, v)
                np.testing.assert_allclose(out[b, :, i, j].numpy(), expect, atol=1e-12)


def test_sample_texture_hits_texel_centres_exactly():
    g = torch.Generator().manual_seed(26)
    H, W = 6, 9
    tex = torch.rand(3, H, W, generator=g, dtype=torch.float64)
    i, j = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    uv = torch.stack([(j + 0.5) / W, 1 - (i + 0.5) / H], dim=-1).double().unsqueeze(0)  # (1, H, W, 2)
    assert torch.allclose(sample_texture(tex, uv)[0], tex, atol=1e-12)
    mask = torch.rand(1, H, W, generator=g) > 0.5
    masked = sample_texture(tex, uv, mask=mask)[0]
    assert torch.all(masked[:, ~mask[0]] == 0) and torch.allclose(masked[:, mask[0]], tex[:, mask[0]])


def test_sample_texture_gradcheck_and_errors():
    g = torch.Generator().manual_seed(27)
    tex = torch.rand(1, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    uv = (torch.rand(1, 3, 3, 2, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t, u: sample_texture(t, u), (tex, uv))
    with pytest.raises(ValueError, match=r"uv: expected shape \(B, H, W, 2\)"):
        sample_texture(tex, torch.rand(1, 3, 3))
    with pytest.raises(ValueError, match="batch size 1 or 2"):
        sample_texture(torch.rand(2, 3, 4, 4), torch.rand(3, 2, 2, 2))
    with pytest.raises(TypeError, match="floating"):
        sample_texture(torch.ones(3, 4, 4, dtype=torch.int64), torch.rand(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"texture: expected \(C, H, W\) or \(B, C, H, W\), got \(4, 5\)"):
        sample_texture(tex[0, 0], uv)  # the caller's shape, not an internal (1, 4, 5)



def test_empty_channels_and_textures_are_refused():
    g, verts, faces, frags = _scene(28)
    uv = torch.rand(1, 3, 3, 2, generator=g)
    # grid_sample's "expected input to have non-empty spatial dimensions" / a reshape RuntimeError before
    for shape in ((3, 0, 4), (3, 4, 0), (0, 4, 4), (1, 3, 0, 0)):
        with pytest.raises(ValueError, match=r"texture: expected at least one channel and one texel"):
            sample_texture(torch.rand(*shape, generator=g), uv)
    with pytest.raises(ValueError, match=r"attributes: expected at least one channel C, got shape \(1, 12, 0\)"):
        interpolate(frags, torch.rand(1, verts.shape[-2], 0, generator=g))  # 12 vertices


def test_channels_last_texture_is_refused_with_the_permute_that_fixes_it():
    g = torch.Generator().manual_seed(29)
    uv = torch.rand(2, 5, 6, 2, generator=g, dtype=torch.float64)
    for c in (1, 3, 4):
        tex = torch.rand(2, c, 16, 12, generator=g, dtype=torch.float64)  # (B, C, H, W)
        # read as (C, H, W) = (16, 12, c) before: a 16-channel texture of 12 x c texels
        with pytest.raises(ValueError, match=rf"^texture: expected channels first \(C, H, W\), got shape "
                                             rf"\(16, 12, {c}\), .* C = {c}; pass texture\.permute\(2, 0, 1\)$"):
            sample_texture(tex[0].permute(1, 2, 0), uv)
        with pytest.raises(ValueError, match=rf"^texture: expected channels first \(B, C, H, W\), got shape "
                                             rf"\(2, 16, 12, {c}\), .*; pass texture\.permute\(0, 3, 1, 2\)$"):
            sample_texture(tex.permute(0, 2, 3, 1), uv)
        # the permutes named give back the documented layouts, which still sample
        assert torch.equal(sample_texture(tex[0].permute(1, 2, 0).permute(2, 0, 1), uv), sample_texture(tex[0], uv))
        assert torch.equal(sample_texture(tex.permute(0, 2, 3, 1).permute(0, 3, 1, 2), uv), sample_texture(tex, uv))
    # channels first with a width of 1, 3 or 4 texels is not mistaken for channels last, nor a small texture of
    # other channel counts (its first two sizes read as an image's height and width would be 4 texels or fewer)
    for shape in ((3, 9, 4), (4, 7, 3), (1, 5, 1), (2, 3, 6, 4), (2, 1, 1), (6, 4, 3), (2, 8, 3, 1)):
        out = sample_texture(torch.rand(*shape, generator=g, dtype=torch.float64), uv)
        assert out.shape == (2, shape[-3], 5, 6)


def test_non_finite_uv_gives_nan_not_a_border_texel():
    g = torch.Generator().manual_seed(30)
    tex = torch.rand(2, 3, 7, 9, generator=g, dtype=torch.float64)
    uv = torch.rand(2, 4, 5, 2, generator=g, dtype=torch.float64)
    bad = torch.zeros(2, 4, 5, dtype=torch.bool)
    bad_uv = uv.clone()
    for (b, i, j, k), value in zip(((0, 1, 2, 0), (1, 3, 0, 1), (1, 0, 4, 0)), (np.nan, np.inf, -np.inf)):
        bad_uv[b, i, j, k] = value
        bad[b, i, j] = True
    for mode in ("bilinear", "nearest"):
        out = sample_texture(tex, bad_uv, mode=mode).permute(0, 2, 3, 1)  # (B, H, W, C)
        assert torch.isnan(out[bad]).all()  # grid_sample alone gave a border texel's colour
        assert torch.equal(out[~bad], sample_texture(tex, uv, mode=mode).permute(0, 2, 3, 1)[~bad])
    # outside a mask the colour is zero, NaN UVs included; inside it a NaN UV stays NaN
    mask = torch.rand(2, 4, 5, generator=g) > 0.5
    mask[0, 1, 2], mask[1, 3, 0] = True, False
    out = sample_texture(tex, bad_uv, mask=mask)
    assert torch.isnan(out[0, :, 1, 2]).all() and torch.all(out[1, :, 3, 0] == 0)
    assert torch.all(out.permute(0, 2, 3, 1)[~mask] == 0)
    assert torch.equal(out.permute(0, 2, 3, 1)[mask & ~bad], sample_texture(tex, uv).permute(0, 2, 3, 1)[mask & ~bad])
