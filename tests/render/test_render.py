import sys

import numpy as np
import pytest
import torch

from mesh_decoder.mesh.templates import face_template, head_template
from mesh_decoder.mesh.uv import texel_map
from mesh_decoder.nn.texture import TexelGather
from mesh_decoder.render import (
    DirectionalLight,
    OrthographicCamera,
    PerspectiveCamera,
    interpolate,
    rasterize,
    render,
    save_png,
    shade_lambert,
    to_image_array,
    vertex_normals,
)
from tests.render.reference import random_scene


def _smooth_colors(vertices: np.ndarray) -> torch.Tensor:
    mix = np.array([[0.02, 0.01, 0.0], [0.0, 0.015, 0.02], [0.01, 0.0, 0.025]])
    return torch.tensor(0.5 + 0.4 * np.sin(vertices @ mix))  # (V, 3) smooth, in [0.1, 0.9]


@pytest.mark.parametrize("make", [lambda: face_template(500, seed=0), lambda: head_template(600, seed=1)],
                         ids=["face", "head-with-uv-seam"])
def test_uv_texture_path_matches_vertex_colours(make):
    """The decoded texture of the mesh branch (texel-map gather) renders like the per-vertex colours."""
    mesh = make()
    v = torch.tensor(mesh.vertices)
    f = torch.tensor(mesh.faces)
    colors = _smooth_colors(mesh.vertices)
    tex = TexelGather.from_texel_map(texel_map(mesh, 256, dtype=torch.float64), num_vertices=mesh.num_vertices)(colors)
    R = torch.tensor([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)  # a side view
    for cam in (OrthographicCamera.fit(v, 96), OrthographicCamera.fit(v, 96, R=R)):
        a = render(v, f, cam, 96, colors=colors, light=None)
        b = render(v, f, cam, 96, texture=tex, uv=mesh.uv, uv_faces=mesh.uv_faces, light=None)
        assert torch.equal(a.mask, b.mask) and a.mask.sum() > 2000
        diff = (a.image - b.image).abs().amax(1)[a.mask]  # (P,) covered pixels
        # tolerance: the texture is the piecewise-linear colour field sampled at 256^2 texel centres;
        # bilinear lookup deviates from it only near UV edges, by (colour gradient) x (texel size)
        assert float(diff.max()) < 0.012
        assert float(diff.mean()) < 1e-3
    # a v-flipped lookup would be far off: the comparison can fail
    flipped = mesh.uv.copy()
    flipped[:, 1] = 1.0 - flipped[:, 1]
    c = render(v, f, OrthographicCamera.fit(v, 96), 96, texture=tex, uv=flipped, uv_faces=mesh.uv_faces, light=None)
    a = render(v, f, OrthographicCamera.fit(v, 96), 96, colors=colors, light=None)
    assert float((a.image - c.image).abs().amax(1)[a.mask].mean()) > 0.02


def test_render_composites_shading_by_hand():
    mesh = face_template(500, seed=2)
    v = torch.tensor(mesh.vertices)
    f = torch.tensor(mesh.faces)
    colors = _smooth_colors(mesh.vertices)
    cam = OrthographicCamera.fit(v, 40)
    light = DirectionalLight(direction=(0.2, -0.3, 1.0), ambient=0.3, diffuse=0.6)
    out = render(v, f, cam, 40, colors=colors, light=light, background=(0.1, 0.2, 0.3))
    frags = rasterize(v, f, cam, 40)
    assert torch.equal(out.fragments.face_id, frags.face_id) and torch.equal(out.mask, frags.mask)
    albedo = interpolate(frags, colors)
    n = interpolate(frags, vertex_normals(v, f))
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    shaded = shade_lambert(n, albedo, light.direction, light.ambient, light.diffuse)  # (1, H, W, 3)
    expect = torch.where(frags.mask.unsqueeze(-1), shaded, torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    assert torch.allclose(out.image, expect.permute(0, 3, 1, 2), atol=1e-12)
    plain = render(v, f, cam, 40, light=None)
    assert torch.allclose(plain.image[0, :, frags.mask[0]], torch.tensor(0.78, dtype=torch.float64))


def test_render_batch_equals_per_sample():
    mesh = face_template(500, seed=3)
    g = torch.Generator().manual_seed(40)
    base = torch.tensor(mesh.vertices)
    v = base + 3 * torch.randn(3, *base.shape, generator=g, dtype=torch.float64)
    f = torch.tensor(mesh.faces)
    colors = torch.rand(3, 500, 3, generator=g, dtype=torch.float64)
    cam = OrthographicCamera.fit(v, 32)
    light = DirectionalLight(direction=torch.randn(3, 3, generator=g, dtype=torch.float64))
    out = render(v, f, cam, 32, colors=colors, light=light)
    tex = torch.rand(3, 3, 16, 16, generator=g, dtype=torch.float64)
    out_tex = render(v, f, cam, 32, texture=tex, uv=mesh.uv, uv_faces=mesh.uv_faces, light=light)
    for b in range(3):
        one_light = DirectionalLight(direction=light.direction[b])
        one = render(v[b], f, cam, 32, colors=colors[b], light=one_light)
        assert torch.allclose(one.image[0], out.image[b], atol=1e-12)
        one_tex = render(v[b], f, cam, 32, texture=tex[b], uv=mesh.uv, uv_faces=mesh.uv_faces, light=one_light)
        assert torch.allclose(one_tex.image[0], out_tex.image[b], atol=1e-12)


@pytest.mark.parametrize("perspective", [False, True])
def test_render_gradcheck(perspective):
    """Gradients w.r.t. colours, texture, UVs and positions, with the rasterised face ids held fixed."""
    g = torch.Generator().manual_seed(41 + perspective)
    H, W = 6, 7
    v, f = random_scene(g, num_faces=3)
    if perspective:
        v[:, :2] *= v[:, 2:] * 0.6
        fl = 0.9 * min(H, W)
        cam = PerspectiveCamera(torch.tensor([fl, fl, (W - 1) / 2, (H - 1) / 2], dtype=torch.float64), (H, W))
    else:
        cam = OrthographicCamera(scale=1.0)
    frags = rasterize(v, f, cam, (H, W))
    assert frags.mask.sum() >= 6
    V = v.shape[0]
    colors = torch.rand(V, 3, generator=g, dtype=torch.float64, requires_grad=True)
    tex = torch.rand(1, 3, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    uv = (0.1 + 0.8 * torch.rand(V, 2, generator=g, dtype=torch.float64)).requires_grad_(True)
    x = v.clone().requires_grad_(True)
    light = DirectionalLight(direction=(0.3, 0.2, 1.0))

    def by_colours(c, p):
        return render(p, f, cam, (H, W), colors=c, light=light, fragments=frags).image

    def by_texture(t, u, p):
        return render(p, f, cam, (H, W), texture=t, uv=u, light=light, fragments=frags).image

    assert torch.autograd.gradcheck(by_colours, (colors, x))
    assert torch.autograd.gradcheck(by_texture, (tex, uv, x))


def test_render_input_errors():
    mesh = face_template(500)
    v = torch.tensor(mesh.vertices)
    f = torch.tensor(mesh.faces)
    cam = OrthographicCamera.fit(v, 16)
    with pytest.raises(ValueError, match="at most one albedo source"):
        render(v, f, cam, 16, colors=torch.rand(500, 3), texture=torch.rand(3, 4, 4), uv=mesh.uv)
    with pytest.raises(ValueError, match="uv: expected per-vertex or per-corner UVs"):
        render(v, f, cam, 16, texture=torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match=r"colors: expected 500 rows"):
        render(v, f, cam, 16, colors=torch.rand(499, 3))
    with pytest.raises(ValueError, match=r"background: expected 1 value or C=3 values \(one per channel\), got 2"):
        render(v, f, cam, 16, background=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"vertices: expected \(V, 3\) or \(B, V, 3\), got \(500, 2\)"):
        render(v[:, :2], f, cam, 16)
    with pytest.raises(ValueError, match=r"colors: expected \(N, C\) or \(B, N, C\), got \(500,\)"):
        render(v, f, cam, 16, colors=torch.rand(500))
    with pytest.raises(ValueError, match=r"texture: expected \(C, H, W\) or \(B, C, H, W\), got \(4, 4\)"):
        render(v, f, cam, 16, texture=torch.rand(4, 4), uv=mesh.uv)
    with pytest.raises(ValueError, match=r"uv: expected \(T, 2\) or \(B, T, 2\), got \(500, 3\)"):
        render(v, f, cam, 16, texture=torch.rand(3, 4, 4), uv=torch.rand(500, 3))
    with pytest.raises(TypeError, match="light"):
        render(v, f, cam, 16, light=(0.0, 0.0, 1.0))
    frags = rasterize(v, f, cam, 16)
    with pytest.raises(ValueError, match="fragments"):
        render(v, f, cam, 20, fragments=frags)


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_default_background_is_white_in_every_channel(channels):
    mesh = face_template(500, seed=3)
    v = torch.tensor(mesh.vertices)
    f = torch.tensor(mesh.faces)
    cam = OrthographicCamera.fit(v, 20, margin=0.2)
    g = torch.Generator().manual_seed(64 + channels)
    colors = torch.rand(500, channels, generator=g, dtype=torch.float64) * 0.5 + 0.1
    tex = torch.rand(channels, 6, 6, generator=g, dtype=torch.float64) * 0.5 + 0.1
    for kw in (dict(colors=colors), dict(texture=tex, uv=mesh.uv, uv_faces=mesh.uv_faces)):
        out = render(v, f, cam, 20, **kw)
        assert out.image.shape == (1, channels, 20, 20)
        assert bool((~out.mask).any()) and bool(out.mask.any())
        assert torch.all(out.image[:, :, ~out.mask[0]] == 1.0)
        assert torch.all(out.image[:, :, out.mask[0]] < 1.0)  # albedo <= 0.6, shading <= 1
        # explicit values behave as before: one value for every channel, or one per channel
        grey = render(v, f, cam, 20, background=0.25, **kw).image
        assert torch.all(grey[:, :, ~out.mask[0]] == 0.25)
        bg = torch.rand(channels, generator=g, dtype=torch.float64)
        per = render(v, f, cam, 20, background=tuple(bg.tolist()), **kw).image
        assert torch.equal(per[0, :, ~out.mask[0]], bg.unsqueeze(1).expand(-1, int((~out.mask[0]).sum())))
        assert torch.equal(per[:, :, out.mask[0]], out.image[:, :, out.mask[0]])


def test_to_image_array_and_save_png_accept_bfloat16(tmp_path):
    img = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(65)).to(torch.bfloat16)
    arr = to_image_array(img)
    assert arr.dtype == np.uint8 and arr.shape == (5, 7, 3)
    assert np.array_equal(arr, to_image_array(img.float()))
    assert np.array_equal(to_image_array(img[0]), arr[:, :, :1])
    path = save_png(img.unsqueeze(0), tmp_path / "bf16.png")
    PIL = pytest.importorskip("PIL.Image")
    assert np.array_equal(np.asarray(PIL.open(path)), arr)


def test_save_png_round_trip(tmp_path):
    PIL = pytest.importorskip("PIL.Image")
    mesh = face_template(500)
    v = torch.tensor(mesh.vertices)
    out = render(v, torch.tensor(mesh.faces), OrthographicCamera.fit(v, (24, 20)), (24, 20),
                 colors=_smooth_colors(mesh.vertices))
    path = save_png(out.image[0], tmp_path / "face.png")
    back = np.asarray(PIL.open(path))
    assert back.shape == (24, 20, 3)
    assert np.array_equal(back, to_image_array(out.image[0]))
    assert np.abs(back / 255.0 - out.image[0].permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-9
    grey = save_png(np.linspace(0, 1, 12).reshape(3, 4), tmp_path / "grey.png")
    assert np.asarray(PIL.open(grey)).shape == (3, 4)
    # nothing half-written is left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["face.png", "grey.png"]


def test_save_png_errors_and_fallback(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="C in 1, 3, 4"):
        save_png(torch.rand(2, 5, 5), tmp_path / "x.png")
    with pytest.raises(ValueError, match="finite"):
        save_png(torch.full((3, 2, 2), float("nan")), tmp_path / "x.png")
    with pytest.raises(ValueError, match="one image"):
        save_png(torch.rand(2, 3, 4, 4), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
    # PNG bytes used to be written under any name: a .jpg that no JPEG reader opens
    for name in ("x.jpg", "x.pdf", "x", "x.png.tmp"):
        with pytest.raises(ValueError, match=rf"{name}: expected a file name ending in \.png"):
            save_png(torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(45)), tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert save_png(torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(46)), tmp_path / "X.PNG")
    # without Pillow the built-in encoder writes the same pixels
    PIL = pytest.importorskip("PIL.Image")
    img = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(42))
    grey = np.random.default_rng(43).random((4, 6))
    rgba = np.random.default_rng(44).random((3, 2, 4))
    monkeypatch.setitem(sys.modules, "PIL", None)
    paths = [save_png(x, tmp_path / f"plain{k}.png") for k, x in enumerate((img, grey, rgba))]
    monkeypatch.undo()
    for path, x in zip(paths, (img, grey, rgba)):
        back = np.asarray(PIL.open(path))
        assert np.array_equal(back.reshape(to_image_array(x).shape), to_image_array(x))


def test_import_needs_neither_openmesh_nor_matplotlib():
    import subprocess

    code = ("import sys; sys.modules['openmesh'] = None; sys.modules['matplotlib'] = None; "
            "import mesh_decoder.render, mesh_decoder.render.figures, mesh_decoder.render.pytorch3d_interop; "
            "print('ok')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_per_batch_ambient_and_diffuse_light_each_mesh():
    mesh = face_template(500, seed=4)
    g = torch.Generator().manual_seed(43)
    v = torch.tensor(mesh.vertices) + 2 * torch.randn(2, 500, 3, generator=g, dtype=torch.float64)
    f = torch.tensor(mesh.faces)
    cam = OrthographicCamera.fit(v, 24)
    ambient = torch.rand(2, generator=g, dtype=torch.float64) * 0.5
    diffuse = torch.rand(2, generator=g, dtype=torch.float64) + 0.2
    out = render(v, f, cam, 24, light=DirectionalLight(ambient=ambient, diffuse=diffuse))  # was a RuntimeError
    for b in range(2):
        one = render(v[b], f, cam, 24, light=DirectionalLight(ambient=float(ambient[b]), diffuse=float(diffuse[b])))
        assert torch.allclose(out.image[b], one.image[0], atol=1e-12)
    with pytest.raises(ValueError, match=r"light.diffuse: expected shape \(2\), got \(3,\)"):
        render(v, f, cam, 24, light=DirectionalLight(diffuse=torch.rand(3, generator=g, dtype=torch.float64)))
    # plain lists were accepted here and failed in render with "only 0-dimensional arrays can be converted"
    for name, value in (("ambient", [0.3, 0.3]), ("diffuse", np.array([[0.5]]))):
        with pytest.raises(ValueError, match=rf"^{name}: expected one number, or a \(B,\) tensor \(one per mesh\), "
                                             rf"got {type(value).__name__} of shape \("):
            DirectionalLight(**{name: value})


def test_reused_fragments_take_the_camera_given_for_the_gradients():
    """Rasterised under no_grad, then rendered with a camera rebuilt from parameters that require grad."""
    mesh = face_template(500, seed=2)
    g = torch.Generator().manual_seed(44)
    v = torch.tensor(mesh.vertices)
    f = torch.tensor(mesh.faces)
    base = OrthographicCamera.fit(v, 24).to(dtype=torch.float64)
    log_scale = (base.scale.log() + 0.01 * torch.randn(1, 2, generator=g, dtype=torch.float64)).requires_grad_(True)

    def camera():
        return OrthographicCamera(scale=log_scale.exp(), center=base.center)

    colors = torch.rand(500, 3, generator=g, dtype=torch.float64)
    with torch.no_grad():
        frags = rasterize(v, f, camera(), 24)
    reused = render(v, f, camera(), 24, colors=colors, fragments=frags, light=None)  # had no gradient at all
    fresh = render(v, f, camera(), 24, colors=colors, light=None)
    assert torch.equal(reused.mask, fresh.mask) and torch.allclose(reused.image, fresh.image, atol=1e-12)
    weights = torch.rand(fresh.image.shape, generator=g, dtype=torch.float64)
    want, = torch.autograd.grad((fresh.image * weights).sum(), log_scale)
    got, = torch.autograd.grad((reused.image * weights).sum(), log_scale)
    assert float(want.abs().sum()) > 0 and torch.allclose(got, want)
    with pytest.raises(ValueError, match=r"camera: expected batch size 1 \(the fragments'\), got 2"):
        render(v, f, OrthographicCamera(scale=torch.ones(2)), 24, fragments=frags)
    with pytest.raises(TypeError, match="camera: expected a mesh_decoder.render Camera"):
        render(v, f, "camera", 24, fragments=frags)


def test_a_colour_batch_the_render_has_not_names_the_sizes_it_takes():
    """Two colour sets for fragments of one mesh were refused as 'expected batch size 1 or 1'. (Without
    fragments, one mesh is now drawn in each colouring.)"""
    mesh = face_template(500, seed=5)
    v, f = torch.tensor(mesh.vertices), torch.tensor(mesh.faces)
    cam = OrthographicCamera.fit(v, 32)
    with pytest.raises(ValueError, match=r"^colors: expected batch size 1 \(the rendered batch's\), got 2$"):
        render(v, f, cam, 32, colors=torch.rand(2, 500, 3, dtype=v.dtype), fragments=rasterize(v, f, cam, 32))
    vb = v.expand(3, -1, -1)
    with pytest.raises(ValueError, match=r"^colors: expected batch size 1 or 3 \(the rendered batch's\), got 2$"):
        render(vb, f, OrthographicCamera.fit(vb, 32), 32, colors=torch.rand(2, 500, 3, dtype=v.dtype))


def test_render_refuses_a_channels_last_texture_and_shows_nan_uvs():
    mesh = face_template(500, seed=5)
    g = torch.Generator().manual_seed(45)
    v = torch.tensor(mesh.vertices)
    f = torch.tensor(mesh.faces)
    cam = OrthographicCamera.fit(v, 32)
    tex = torch.rand(3, 16, 16, generator=g, dtype=torch.float64)
    # was rendered as a 16-channel (16, 3)-texel texture, an image of 16 channels
    with pytest.raises(ValueError, match=r"^texture: expected channels first \(C, H, W\), got shape \(16, 16, 3\), "
                                         r".*; pass texture\.permute\(2, 0, 1\)$"):
        render(v, f, cam, 32, texture=tex.permute(1, 2, 0), uv=mesh.uv, uv_faces=mesh.uv_faces)
    good = render(v, f, cam, 32, texture=tex, uv=mesh.uv, uv_faces=mesh.uv_faces)
    frags = good.fragments
    # a NaN UV of one corner of a visible face: the pixels of every face using that UV row are NaN
    face_ids = frags.face_id[frags.mask]  # (P,)
    row = int(mesh.uv_faces[int(face_ids[torch.randint(len(face_ids), (1,), generator=g)]), 0])
    uv = mesh.uv.copy()
    uv[row, int(torch.randint(2, (1,), generator=g))] = np.nan
    out = render(v, f, cam, 32, texture=tex, uv=uv, uv_faces=mesh.uv_faces, fragments=frags)
    uses = torch.from_numpy((mesh.uv_faces == row).any(axis=1))  # (F,)
    hit = uses[frags.face_id.clamp(min=0)] & frags.mask  # (1, H, W)
    nan = torch.isnan(out.image).any(dim=1)  # (1, H, W); a border texel's plausible colour before
    assert bool(hit.any()) and torch.equal(nan, hit) and bool(torch.isnan(out.image[:, :, hit[0]]).all())
    assert torch.equal(out.image.permute(0, 2, 3, 1)[~nan], good.image.permute(0, 2, 3, 1)[~nan])


@pytest.mark.parametrize("perspective", [False, True])
def test_render_under_cpu_bf16_autocast_is_the_float32_render(perspective):
    """Inside torch.autocast(bfloat16) the cameras' einsum ran in bf16: at 64 px over a hundred pixels showed
    another face, silently (the image stays float32)."""
    mesh = face_template(500, seed=2)
    g = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    v = torch.tensor(mesh.vertices, dtype=torch.float32) + torch.randn(mesh.num_vertices, 3, generator=g)
    f = torch.tensor(mesh.faces)
    if perspective:
        cam = PerspectiveCamera.look_at(eye=(30.0, 20.0, 450.0), at=(0.0, 0.0, 0.0), fov_degrees=30, image_size=64)
    else:
        cam = OrthographicCamera.fit(v, 64)
    tex = torch.rand(1, 3, 32, 32, generator=g)
    kwargs = dict(texture=tex, uv=mesh.uv, uv_faces=mesh.uv_faces)
    plain = render(v, f, cam, 64, **kwargs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = render(v, f, cam, 64, **kwargs)
        projected = cam.project(v)
    assert projected.dtype == torch.float32
    assert torch.equal(mixed.fragments.face_id, plain.fragments.face_id)
    torch.testing.assert_close(mixed.image, plain.image)


def test_a_vertex_on_the_camera_plane_gets_no_nan_gradient():
    """x / z at z = 0 gave NaN gradients to a vertex no drawn face uses, and Adam spread them to every weight."""
    mesh = face_template(500, seed=4)
    v = torch.tensor(mesh.vertices, dtype=torch.float64)
    f = torch.tensor(mesh.faces)
    cam = PerspectiveCamera(K=torch.tensor([60.0, 60.0, 31.5, 31.5], dtype=torch.float64), image_size=64,
                            t=torch.tensor([0.0, 0.0, 400.0], dtype=torch.float64))
    i = int(torch.randint(mesh.num_vertices, ()))
    v[i] = torch.tensor([10.0, 0.0, -400.0], dtype=torch.float64)  # camera depth exactly 0
    v.requires_grad_(True)
    projected = cam.project(v)
    assert projected[0, i, 2] == 0 and not torch.isfinite(projected[0, i, :2]).all()  # at infinity, as before
    out = render(v, f, cam, 64, colors=torch.rand(mesh.num_vertices, 3, dtype=torch.float64))
    assert torch.isfinite(out.image).all()
    (grad,) = torch.autograd.grad(out.image.square().sum(), v)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0  # (vertex i still shades its neighbours)
    # elsewhere the projection and its gradient are the plain division's
    w = torch.randn(7, 3, dtype=torch.float64) * 20
    w[:, 2] = w[:, 2].abs() + 50
    w.requires_grad_(True)
    torch.autograd.gradcheck(lambda p: cam.project(p), (w,))


def test_one_mesh_is_drawn_in_each_of_several_colourings():
    """A single mesh with B textures (or colour sets) was refused ('texture: expected batch size 1, got 3'),
    though one texture broadcasts over B meshes; the workaround was v.expand(B, -1, -1)."""
    mesh = face_template(500, seed=5)
    g = torch.Generator().manual_seed(int(torch.randint(1 << 30, ())))
    v = torch.tensor(mesh.vertices)
    f = torch.tensor(mesh.faces)
    cam = OrthographicCamera.fit(v, 24)
    tex = torch.rand(3, 3, 16, 16, generator=g, dtype=torch.float64)
    colors = torch.rand(3, 500, 3, generator=g, dtype=torch.float64)
    for kwargs in (dict(texture=tex, uv=mesh.uv, uv_faces=mesh.uv_faces), dict(colors=colors)):
        out = render(v, f, cam, 24, **kwargs)
        expanded = render(v.expand(3, -1, -1), f, cam, 24, **kwargs)
        assert out.image.shape[0] == 3 and torch.equal(out.image, expanded.image)
        assert not torch.equal(out.image[0], out.image[1])
    with pytest.raises(ValueError, match=r"texture: expected batch size 1 or 2, got 3"):
        render(v.expand(2, -1, -1), f, cam, 24, texture=tex, uv=mesh.uv, uv_faces=mesh.uv_faces)


def test_read_image_is_exported_beside_save_png():
    """read_image lives in mesh_decoder.render.render but was exported from mesh_decoder.fit only."""
    import mesh_decoder.fit
    import mesh_decoder.render

    assert mesh_decoder.render.read_image is mesh_decoder.fit.read_image
    assert "read_image" in mesh_decoder.render.__all__
