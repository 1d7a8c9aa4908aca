"""PyTorch3D conventions, checked without PyTorch3D by re-stating its TexturesUV sampling formula.

``TexturesUV.sample_textures`` (pytorch3d/renderer/mesh/textures.py) does, on maps
``(N, H, W, C)``: permute to ``(N, C, H, W)``, ``torch.flip(maps, [2])``, then
``grid_sample(maps, uv * 2 - 1, align_corners=align_corners, padding_mode="border")``.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mesh_decoder.mesh.templates import face_template
from mesh_decoder.render import OrthographicCamera, render, sample_texture
from mesh_decoder.render.pytorch3d_interop import (
    from_pytorch3d,
    require_pytorch3d,
    texture_from_pytorch3d_maps,
    texture_to_pytorch3d_maps,
    to_pytorch3d,
    uv_from_pytorch3d,
    uv_to_pytorch3d,
)


def pytorch3d_sample(maps: torch.Tensor, uv: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """PyTorch3D's TexturesUV lookup: maps ``(N, H, W, C)``, uv ``(N, P, 2)`` -> ``(N, C, P)``."""
    tex = maps.permute(0, 3, 1, 2)  # (N, C, H, W)
    tex = torch.flip(tex, [2])
    grid = (uv * 2.0 - 1.0).unsqueeze(1)  # (N, 1, P, 2)
    return F.grid_sample(tex, grid, align_corners=align_corners, padding_mode="border")[:, :, 0]


def test_maps_are_permuted_not_flipped():
    g = torch.Generator().manual_seed(60)
    tex = torch.rand(2, 3, 5, 7, generator=g)
    maps = texture_to_pytorch3d_maps(tex)
    assert maps.shape == (2, 5, 7, 3)
    assert torch.equal(maps[1, 0, 2], tex[1, :, 0, 2])  # first row stays first
    assert torch.equal(texture_from_pytorch3d_maps(maps), tex)
    assert texture_to_pytorch3d_maps(tex[0]).shape == (1, 5, 7, 3)
    with pytest.raises(ValueError, match=r"maps: expected shape \(N, H, W, C\)"):
        texture_from_pytorch3d_maps(torch.rand(5, 7, 3))
    channels_last = tex[0].permute(1, 2, 0)  # (5, 7, 3): was permuted again, to maps of 5 channels
    with pytest.raises(ValueError, match=r"^texture: expected channels first \(C, H, W\), got shape \(5, 7, 3\).*"
                                         r"pass texture.permute\(2, 0, 1\)$"):
        texture_to_pytorch3d_maps(channels_last)
    as_bytes = (255 * tex[0]).to(torch.uint8)  # integer textures convert as before
    assert torch.equal(texture_to_pytorch3d_maps(as_bytes)[0], as_bytes.permute(1, 2, 0))


@pytest.mark.parametrize("align_corners", [False, True])
def test_pytorch3d_samples_the_same_colours(align_corners):
    g = torch.Generator().manual_seed(61 + align_corners)
    H, W = 6, 9
    tex = torch.rand(2, 3, H, W, generator=g, dtype=torch.float64)
    uv = torch.rand(2, 40, 2, generator=g, dtype=torch.float64) * 1.1 - 0.05
    ours = sample_texture(tex, uv.unsqueeze(1))[:, :, 0]  # (N, C, P)
    theirs = pytorch3d_sample(texture_to_pytorch3d_maps(tex), uv_to_pytorch3d(uv, (H, W), align_corners), align_corners)
    assert torch.allclose(ours, theirs, atol=1e-12)
    # the conversion is needed with align_corners=True and is the identity otherwise
    unconverted = pytorch3d_sample(texture_to_pytorch3d_maps(tex), uv, align_corners)
    assert torch.allclose(ours, unconverted, atol=1e-12) == (not align_corners)
    assert torch.allclose(uv_from_pytorch3d(uv_to_pytorch3d(uv, (H, W), align_corners), (H, W), align_corners), uv)


def test_documented_pytorch3d_example():
    """PyTorch3D's docstring: a (1000, 100) map with align_corners=False reads (0.405, 0.2995) at [700, 40]."""
    maps = torch.zeros(1, 1000, 100, 1, dtype=torch.float64)
    maps[0, 700, 40, 0] = 1.0
    uv = torch.tensor([[[0.405, 0.2995]]], dtype=torch.float64)
    assert float(pytorch3d_sample(maps, uv, False)) == pytest.approx(1.0)
    assert float(sample_texture(texture_from_pytorch3d_maps(maps), uv.unsqueeze(1))) == pytest.approx(1.0)


def test_uv_conversion_errors():
    with pytest.raises(ValueError, match=r"uv: expected shape \(\.\.\., 2\)"):
        uv_to_pytorch3d(torch.rand(4, 3), 8)
    with pytest.raises(ValueError, match="at least 2 x 2 texels"):
        uv_to_pytorch3d(torch.rand(4, 2), (1, 8), align_corners=True)


def test_without_pytorch3d_the_error_says_how_to_install():
    try:
        import pytorch3d  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pytorch3d"):
            require_pytorch3d()
        with pytest.raises(ImportError, match="pip install"):
            to_pytorch3d(torch.rand(3, 3), torch.tensor([[0, 1, 2]]))
    else:  # pragma: no cover - only where PyTorch3D is installed
        assert require_pytorch3d() is not None


@pytest.mark.parametrize("align_corners", [False, True])
def test_round_trip_and_sampling_with_pytorch3d(align_corners):
    pytest.importorskip("pytorch3d", reason="PyTorch3D is not installed")
    from pytorch3d.renderer.mesh.rasterizer import Fragments as P3DFragments

    mesh = face_template(500)
    g = torch.Generator().manual_seed(63)
    v = torch.tensor(mesh.vertices, dtype=torch.float32).unsqueeze(0).repeat(2, 1, 1)
    tex = torch.rand(2, 3, 16, 16, generator=g)
    uv = torch.tensor(mesh.uv, dtype=torch.float32)
    meshes = to_pytorch3d(v, torch.tensor(mesh.faces), texture=tex, uv=uv, uv_faces=torch.tensor(mesh.uv_faces),
                          align_corners=align_corners)
    back = from_pytorch3d(meshes)
    assert torch.equal(back.vertices, v) and torch.equal(back.faces, torch.tensor(mesh.faces))
    assert torch.allclose(back.texture, tex) and torch.allclose(back.uv, uv, atol=1e-6)
    # PyTorch3D's own texture lookup with our fragments equals our renderer's albedo
    cam = OrthographicCamera.fit(v, 32)
    ours = render(v, torch.tensor(mesh.faces), cam, 32, texture=tex, uv=uv, uv_faces=mesh.uv_faces, light=None)
    fr = ours.fragments
    p3d = P3DFragments(
        pix_to_face=torch.where(fr.mask, fr.face_id + torch.arange(2).view(2, 1, 1) * len(mesh.faces),
                                -1).unsqueeze(-1),  # packed face ids
        zbuf=fr.depth.unsqueeze(-1),
        bary_coords=fr.bary.float().unsqueeze(-2),
        dists=torch.zeros_like(fr.depth).unsqueeze(-1),
    )
    texels = meshes.textures.sample_textures(p3d)[..., 0, :]  # (N, H, W, C)
    assert torch.allclose(texels[fr.mask], ours.image.permute(0, 2, 3, 1)[fr.mask], atol=1e-5)
    colours = torch.rand(2, 500, 3, generator=g)
    again = from_pytorch3d(to_pytorch3d(v, mesh.faces, colors=colours))
    assert torch.allclose(again.colors, colours)
    # numpy colours are accepted like numpy faces and UVs
    shared = from_pytorch3d(to_pytorch3d(v, mesh.faces, colors=colours[0].numpy()))
    assert torch.allclose(shared.colors, colours[:1].expand(2, -1, -1))


def test_pytorch3d_conversion_is_pure_tensor_code():
    """The convention helpers keep autograd history (usable inside a fitting loop)."""
    uv = torch.rand(5, 2, dtype=torch.float64, requires_grad=True)
    out = uv_to_pytorch3d(uv, (8, 8), True)
    out.sum().backward()
    assert np.allclose(uv.grad[:, 0].numpy(), 8 / 7)


def _fake_pytorch3d(monkeypatch):
    """Just enough of PyTorch3D's module layout and classes for :func:`from_pytorch3d`."""
    import sys
    import types

    class TexturesUV:
        def __init__(self, maps, faces_uvs, verts_uvs, padding_mode="border", align_corners=True,
                     sampling_mode="bilinear"):
            self._maps, self._faces_uvs, self._verts_uvs = maps, faces_uvs, verts_uvs
            self.padding_mode, self.align_corners, self.sampling_mode = padding_mode, align_corners, sampling_mode

        def maps_padded(self):
            return self._maps

        def verts_uvs_list(self):
            return list(self._verts_uvs)

        def faces_uvs_list(self):
            return list(self._faces_uvs)

    class TexturesVertex:
        pass

    class Meshes:
        def __init__(self, verts, faces, textures=None):
            self._verts, self._faces, self.textures = verts, faces, textures

        def verts_list(self):
            return list(self._verts)

        def faces_list(self):
            return list(self._faces)

    root, renderer, structures = (types.ModuleType(n) for n in
                                  ("pytorch3d", "pytorch3d.renderer", "pytorch3d.structures"))
    renderer.TexturesUV, renderer.TexturesVertex, structures.Meshes = TexturesUV, TexturesVertex, Meshes
    for module in (root, renderer, structures):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    return Meshes, TexturesUV


def test_from_pytorch3d_refuses_textures_sampled_otherwise(monkeypatch):
    """Nearest sampling or zero padding would give other colours than ours: an error, not a silent change."""
    Meshes, TexturesUV = _fake_pytorch3d(monkeypatch)
    g = torch.Generator().manual_seed(64)
    verts = torch.rand(2, 4, 3, generator=g)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]]).expand(2, -1, -1)
    maps = torch.rand(2, 5, 6, 3, generator=g)
    uv = torch.rand(1, 4, 2, generator=g).expand(2, -1, -1)  # one shared UV layout

    def meshes(**modes):
        return Meshes(verts, faces, TexturesUV(maps, faces, uv, **modes))

    back = from_pytorch3d(meshes())
    assert torch.equal(back.texture, texture_from_pytorch3d_maps(maps))
    assert torch.allclose(back.uv, uv_from_pytorch3d(uv[0], (5, 6), True))
    with pytest.raises(ValueError, match=r"expected TexturesUV\(sampling_mode='bilinear'\).*got sampling_mode='nearest'"):
        from_pytorch3d(meshes(sampling_mode="nearest"))
    with pytest.raises(ValueError, match=r"expected TexturesUV\(padding_mode='border'\).*got padding_mode='zeros'"):
        from_pytorch3d(meshes(padding_mode="zeros"))
