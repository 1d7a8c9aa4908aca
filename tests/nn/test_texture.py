"""Tests of the UV operators (TexelGather, sample_uv), the CNN texture branch and JointDecoder."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mesh_decoder.hierarchy import TexelMap
from mesh_decoder.nn.texture import TexelGather, UVSampler, sample_uv, uv_corners


# ----------------------------------------------------------------------------- references
def texel_gather_reference(colors: torch.Tensor, index: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-texel loop: tex[b, :, i, j] = sum_k weight[i, j, k] * colors[b, index[i, j, k]]."""
    B, _, C = colors.shape
    H, W, _ = index.shape
    out = torch.zeros(B, C, H, W, dtype=colors.dtype)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                for k in range(3):
                    out[b, :, i, j] += weight[i, j, k] * colors[b, index[i, j, k]]
    return out


def bilinear_reference(tex: np.ndarray, u: float, v: float) -> np.ndarray:
    """Hand-written bilinear read of ``tex (C, H, W)`` at UV ``(u, v)``, texel centres at
    ``u = (j + 0.5) / W``, ``v = 1 - (i + 0.5) / H``, border texels repeated outside."""
    _, H, W = tex.shape
    x = u * W - 0.5  # continuous column
    y = (1.0 - v) * H - 0.5  # continuous row, from the top
    x0, y0 = math.floor(x), math.floor(y)
    fx, fy = x - x0, y - y0

    def at(i, j):
        return tex[:, min(max(i, 0), H - 1), min(max(j, 0), W - 1)]

    return ((1 - fx) * (1 - fy) * at(y0, x0) + fx * (1 - fy) * at(y0, x0 + 1)
            + (1 - fx) * fy * at(y0 + 1, x0) + fx * fy * at(y0 + 1, x0 + 1))


def sample_uv_reference(tex: np.ndarray, uv: np.ndarray, uv_faces: np.ndarray, faces: np.ndarray, V: int):
    """Per-corner loop; a vertex averages its distinct (vertex, uv index) corners."""
    corners: dict[int, set[int]] = {}
    for f in range(faces.shape[0]):
        for k in range(3):
            corners.setdefault(int(faces[f, k]), set()).add(int(uv_faces[f, k]))
    out = np.zeros((V, tex.shape[0]))
    for vtx, uvs in corners.items():
        out[vtx] = np.mean([bilinear_reference(tex, *uv[t]) for t in sorted(uvs)], axis=0)
    return out


def rasterise_texel_map(uv: np.ndarray, uv_faces: np.ndarray, faces: np.ndarray, size: int) -> TexelMap:
    """Slow texel map: for each texel centre, the covering UV triangle's vertices and
    barycentric weights; uncovered texels copy the nearest covered texel."""
    H = W = size
    index = np.zeros((H, W, 3), np.int64)
    weight = np.zeros((H, W, 3))
    face = -np.ones((H, W), np.int64)
    a, b, c = (uv[uv_faces[:, k]] for k in range(3))  # (F, 2) each
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]  # (F,)
    for i in range(H):
        for j in range(W):
            p = np.array([(j + 0.5) / W, 1 - (i + 0.5) / H])
            d = p - a  # (F, 2)
            with np.errstate(divide="ignore", invalid="ignore"):
                l1 = (d[:, 0] * e2[:, 1] - d[:, 1] * e2[:, 0]) / det  # Cramer's rule
                l2 = (e1[:, 0] * d[:, 1] - e1[:, 1] * d[:, 0]) / det
            bary = np.stack([1 - l1 - l2, l1, l2], 1)  # (F, 3)
            inside = np.flatnonzero((np.abs(det) > 1e-15) & (bary >= -1e-12).all(1))
            if inside.size:
                f = inside[0]
                index[i, j], weight[i, j], face[i, j] = faces[f], np.clip(bary[f], 0, 1), f
    mask = face >= 0
    covered = np.argwhere(mask)
    for i, j in np.argwhere(~mask):
        n = covered[np.argmin(((covered - [i, j]) ** 2).sum(1))]
        index[i, j], weight[i, j] = index[n[0], n[1]], weight[n[0], n[1]]
    weight /= weight.sum(-1, keepdims=True)
    return TexelMap(torch.from_numpy(index), torch.from_numpy(weight), torch.from_numpy(face), torch.from_numpy(mask))


def grid_mesh(n: int, lo: float = 0.1, hi: float = 0.9):
    """An ``n x n`` planar grid whose UVs are its xy positions; the left column is a UV
    seam: its vertices get a second, shifted UV corner in the faces of the first column."""
    t = np.linspace(lo, hi, n)
    xx, yy = np.meshgrid(t, t)
    uv = np.stack([xx.ravel(), yy.ravel()], 1)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            faces += [[a, b, e], [a, e, d]]
    faces = np.array(faces, np.int64)
    vertices = np.concatenate([uv, np.zeros((n * n, 1))], 1)
    return vertices, faces, uv


def smooth_colors(uv: np.ndarray) -> np.ndarray:
    u, v = uv[:, 0], uv[:, 1]
    return np.stack([0.5 + 0.3 * np.sin(2 * u + 1), 0.5 + 0.3 * np.cos(3 * v), 0.4 + 0.2 * u * v], 1)


# ---------------------------------------------------------------------------- TexelGather
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_texel_gather_matches_loop_reference(dtype):
    g = torch.Generator().manual_seed(1)
    V, H, W = 23, 6, 5
    index = torch.randint(0, V, (H, W, 3), generator=g)
    weight = torch.rand(H, W, 3, generator=g, dtype=torch.float64)
    weight = weight / weight.sum(-1, keepdim=True)
    mask = torch.rand(H, W, generator=g) < 0.5
    gather = TexelGather(index, weight, mask, num_vertices=V).to(dtype)
    colors = torch.rand(3, V, 4, generator=g, dtype=torch.float64).to(dtype)
    out = gather(colors)
    assert out.shape == (3, 4, H, W) and out.dtype == dtype
    torch.testing.assert_close(out, texel_gather_reference(colors, index, weight.to(dtype)))
    # unbatched input, batch consistency
    torch.testing.assert_close(gather(colors[1]), out[1])
    assert torch.equal(gather.mask, mask)
    assert "size=(6, 5)" in repr(gather) and "num_vertices=23" in repr(gather)


def test_texel_gather_backward_matches_reference_and_gradcheck():
    g = torch.Generator().manual_seed(2)
    V, H, W = 7, 4, 3
    index = torch.randint(0, V, (H, W, 3), generator=g)
    weight = torch.rand(H, W, 3, generator=g, dtype=torch.float64)
    gather = TexelGather(index, weight / weight.sum(-1, keepdim=True))
    colors = torch.rand(2, V, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gather, (colors,))
    up = torch.rand(2, 3, H, W, generator=g, dtype=torch.float64)
    (gf,) = torch.autograd.grad((gather(colors) * up).sum(), colors)
    (gr,) = torch.autograd.grad((texel_gather_reference(colors, index, gather.weight) * up).sum(), colors)
    torch.testing.assert_close(gf, gr)


def test_texel_gather_from_hierarchy(synthetic_hierarchy):
    gather = TexelGather.from_hierarchy(synthetic_hierarchy)
    assert gather.num_vertices == synthetic_hierarchy.sizes[0]
    assert gather.size == synthetic_hierarchy.texel_map.size
    g = torch.Generator().manual_seed(3)
    colors = torch.rand(2, gather.num_vertices, 3, generator=g)
    tm = synthetic_hierarchy.texel_map
    torch.testing.assert_close(gather(colors), texel_gather_reference(colors, tm.index, tm.weight))


def test_texel_gather_owns_its_buffers(synthetic_hierarchy):
    """Two layers built from one texel map share no storage with it or each other (load_state_dict copies in place)."""
    tm = synthetic_hierarchy.texel_map
    a, b = TexelGather.from_texel_map(tm), TexelGather.from_texel_map(tm)
    before = tm.weight.clone(), tm.index.clone()
    state = {k: v.clone() for k, v in a.state_dict().items()}
    state["weight"] = torch.rand_like(state["weight"])
    state["index"] = torch.randint_like(state["index"], a.num_vertices)
    a.load_state_dict(state)
    assert torch.equal(tm.weight, before[0]) and torch.equal(tm.index, before[1])
    assert torch.equal(b.weight, before[0].to(b.weight.dtype)) and torch.equal(b.index, before[1])


def test_texel_gather_errors():
    index = torch.zeros(4, 4, 3, dtype=torch.int64)
    weight = torch.full((4, 4, 3), 1 / 3)
    with pytest.raises(TypeError, match="int64"):
        TexelGather(index.int(), weight)
    with pytest.raises(ValueError, match=r"expected shape \(4, 4, 3\)"):
        TexelGather(index, weight[:3])
    with pytest.raises(ValueError, match="< 1"):
        TexelGather(index + 1, weight, num_vertices=1)
    gather = TexelGather(index, weight, num_vertices=5)
    with pytest.raises(ValueError, match=r"expected shape \(B, 5, C\) or \(5, C\), got \(2, 4, 3\)"):
        gather(torch.rand(2, 4, 3))
    with pytest.raises(TypeError, match="floating"):
        gather(torch.ones(5, 3, dtype=torch.int64))


# ------------------------------------------------------------------------------ sample_uv
def test_sample_uv_texel_centres_read_exact_texels():
    g = torch.Generator().manual_seed(4)
    C, H, W = 2, 5, 7
    tex = torch.rand(C, H, W, generator=g, dtype=torch.float64)
    ii, jj = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    uv = torch.stack([(jj.reshape(-1) + 0.5) / W, 1 - (ii.reshape(-1) + 0.5) / H], 1).double()
    P = uv.shape[0]
    # one degenerate "face" per texel centre, its three corners all that vertex
    faces = torch.arange(P).reshape(P, 1).expand(P, 3)
    out = sample_uv(tex, (uv, faces, faces))
    torch.testing.assert_close(out, tex.reshape(C, P).T)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sample_uv_matches_bilinear_reference_with_seams(dtype):
    rng = np.random.default_rng(5)
    V, T, F = 12, 20, 15
    uv = rng.uniform(-0.05, 1.05, size=(T, 2))  # some outside [0, 1]: border texels repeat
    faces = np.stack([rng.choice(V, 3, replace=False) for _ in range(F)])
    uv_faces = rng.integers(0, T, size=(F, 3))  # many vertices get several UV corners
    tex = rng.random((2, 3, 9, 8))
    out = sample_uv(torch.from_numpy(tex).to(dtype), (uv, uv_faces, faces), num_vertices=V + 2)
    assert out.shape == (2, V + 2, 3) and out.dtype == dtype
    for b in range(2):
        ref = sample_uv_reference(tex[b], uv, uv_faces, faces, V + 2)
        np.testing.assert_allclose(out[b].double().numpy(), ref, atol=1e-5 if dtype == torch.float32 else 1e-12)
    assert torch.all(out[:, V:] == 0)  # vertices in no face
    # the module gives the same, batched and unbatched
    sampler = UVSampler(uv, uv_faces, faces, num_vertices=V + 2)
    torch.testing.assert_close(sampler(torch.from_numpy(tex).to(dtype)), out)
    torch.testing.assert_close(sampler(torch.from_numpy(tex[1]).to(dtype)), out[1])


def test_uv_corners_counts_distinct_corners():
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    uv_faces = np.array([[0, 1, 2], [4, 2, 3]])  # vertex 0 has uv 0 and uv 4, vertex 2 only uv 2
    uv = np.random.default_rng(6).random((5, 2))
    cv, cuv, count = uv_corners(uv, uv_faces, faces, num_vertices=5)
    assert count.tolist() == [2, 1, 1, 1, 0]
    assert sorted(zip(cv.tolist(), cuv[:, 0].tolist())) == sorted(
        [(0, uv[0, 0]), (0, uv[4, 0]), (1, uv[1, 0]), (2, uv[2, 0]), (3, uv[3, 0])]
    )


def test_sample_uv_gradcheck_texture_and_uv():
    g = torch.Generator().manual_seed(7)
    tex = torch.rand(2, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    uv = (0.1 + 0.8 * torch.rand(6, 2, generator=g, dtype=torch.float64)).requires_grad_()
    faces = torch.tensor([[0, 1, 2], [2, 1, 3], [3, 4, 2]])
    uv_faces = torch.tensor([[0, 1, 2], [2, 1, 3], [5, 4, 2]])
    assert torch.autograd.gradcheck(lambda t, u: sample_uv(t, (u, uv_faces, faces)), (tex, uv))


def test_sample_uv_accepts_mesh_and_rejects_bad_input():
    from mesh_decoder.mesh import Mesh

    vertices, faces, uv = grid_mesh(3)
    mesh = Mesh(vertices, faces, uv=uv, uv_faces=faces)
    tex = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(sample_uv(tex, mesh), sample_uv(tex, (uv, faces, faces)))
    torch.testing.assert_close(UVSampler.from_mesh(mesh)(tex), sample_uv(tex, mesh))
    with pytest.raises(ValueError, match="UV coordinates"):
        sample_uv(tex, Mesh(vertices, faces))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\) or \(C, H, W\), got \(8, 8\)"):
        sample_uv(tex[0], mesh)
    with pytest.raises(ValueError, match=r"uv_faces: expected indices in \[0, 9\)"):
        sample_uv(tex, (uv, faces + 1, faces))
    with pytest.raises(ValueError, match=r"uv_faces: expected shape \(8, 3\)"):
        sample_uv(tex, (uv, faces[:3], faces))


def test_round_trip_gather_then_sample_recovers_smooth_colors():
    vertices, faces, uv = grid_mesh(7)
    tm = rasterise_texel_map(uv, faces, faces, 48)
    assert tm.mask.float().mean() > 0.5
    colors = torch.from_numpy(smooth_colors(uv))
    tex = TexelGather.from_texel_map(tm)(colors)  # (3, H, W)
    back = sample_uv(tex, (uv, faces, faces))
    err = (back - colors).abs().amax(1).reshape(7, 7)  # (n, n) per vertex
    interior = err[1:-1, 1:-1].max()
    # interior vertices: only the bilinear blur across the kinks of the piecewise-linear map
    assert interior < 2e-3, interior
    # chart-boundary vertices also read gutter texels (copies of the nearest covered texel)
    assert err.max() < 0.02, err.max()
    # a rough signal is not recovered as well: the test can tell good from bad
    noisy = colors + 0.2 * torch.from_numpy(np.random.default_rng(9).standard_normal(colors.shape))
    back_noisy = sample_uv(TexelGather.from_texel_map(tm)(noisy), (uv, faces, faces))
    noisy_err = (back_noisy - noisy).abs().amax(1).reshape(7, 7)[1:-1, 1:-1].max()
    assert noisy_err > 5 * interior



@pytest.mark.parametrize("template, interior_tol", [("face", 5e-3), ("head", 0.02)])
def test_round_trip_on_templates(request, template, interior_tol):
    """Smooth per-vertex colours -> hierarchy texel map (64 x 64) -> sample back at the vertices."""
    mesh = request.getfixturevalue(f"{template}_mesh")
    hierarchy = request.getfixturevalue(f"{template}_hierarchy")
    pos = mesh.vertices / np.abs(mesh.vertices).max(0)
    colors = torch.from_numpy(smooth_colors(pos[:, :2])).float()  # (V, 3), a smooth function on the surface
    tex = TexelGather.from_hierarchy(hierarchy)(colors)
    back = sample_uv(tex, mesh)
    err = (back - colors).abs().amax(1)  # (V,)
    boundary = np.zeros(mesh.num_vertices, bool)
    boundary[mesh.boundary_vertices()] = True
    assert float(err[torch.from_numpy(~boundary)].max()) < interior_tol
    assert float(err.max()) < 0.05  # chart boundaries read gutter texels
    _, _, count = uv_corners(mesh.uv, mesh.uv_faces, mesh.faces)
    if template == "head":  # the seam down the back: vertices with two UV corners are averaged
        seam = count > 1
        assert int(seam.sum()) > 0
        assert float(err[seam].max()) < interior_tol


# ------------------------------------------------------------------- CNN texture branch
def test_uv_texture_decoder_shapes_and_range():
    from mesh_decoder.nn.decoders import UVTextureDecoder

    torch.manual_seed(0)
    dec = UVTextureDecoder(latent_size=6, texture_size=64, channels=32, min_channels=8)
    assert dec.num_stages == 4
    ups = [m for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in ups] == [(32, 16), (16, 8), (8, 8), (8, 8)]
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) and m.padding == (1, 1) for m in ups)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in dec.modules()) == 5  # stem + 4 stages
    z = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    tex = dec(z)
    assert tex.shape == (3, 3, 64, 64)
    assert tex.min() >= 0 and tex.max() <= 1
    torch.testing.assert_close(dec(z[1]), tex[1])  # GroupNorm: per-sample, so batch consistent


def test_uv_texture_decoder_256_has_six_stages_without_running():
    from mesh_decoder.nn.decoders import UVTextureDecoder

    dec = UVTextureDecoder(latent_size=8)  # defaults: 256 x 256, 256 channels, floor 16
    ups = [m for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 6 == dec.num_stages == math.log2(256 / 4)
    assert [m.out_channels for m in ups] == [128, 64, 32, 16, 16, 16]
    assert dec.head.out_channels == 3 and dec.head.kernel_size == (3, 3)
    assert dec.fc.out_features == 256 * 4 * 4
    assert "texture_size=256, channels=256, stages=6, norm='group', upsample='transpose'" in repr(dec)


@pytest.mark.parametrize("norm, norm_cls", [("batch", torch.nn.BatchNorm2d), ("instance", torch.nn.InstanceNorm2d),
                                             ("none", None)])
def test_uv_texture_decoder_options(norm, norm_cls):
    from mesh_decoder.nn.decoders import UVTextureDecoder

    dec = UVTextureDecoder(4, texture_size=16, channels=16, norm=norm, upsample="nearest", activation="relu")
    assert sum(isinstance(m, torch.nn.Upsample) for m in dec.modules()) == 2
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in dec.modules())
    if norm_cls is not None:
        assert sum(isinstance(m, norm_cls) for m in dec.modules()) == 3
    assert dec(torch.randn(2, 4, generator=torch.Generator().manual_seed(2))).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="square power of two"):
        UVTextureDecoder(4, texture_size=48)
    with pytest.raises(TypeError, match=r"z: expected dtype torch.float32 \(the decoder's\), got torch.float64"):
        dec(torch.randn(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"z: expected shape \(B, 4\) or \(4,\), got \(2, 5\)"):
        dec(torch.randn(2, 5))
    with pytest.raises(ValueError, match="norm: expected"):
        UVTextureDecoder(4, texture_size=16, norm="layer")


# --------------------------------------------------------------------------- JointDecoder
def test_joint_decoder_mesh_branch(synthetic_hierarchy):
    from mesh_decoder.nn.decoders import JointDecoder, JointOutput, SpiralDecoder

    torch.manual_seed(3)
    joint = JointDecoder.from_hierarchy(synthetic_hierarchy, "mesh", channels=(8, 12), latent_size=5)
    assert isinstance(joint.decoder, SpiralDecoder) and joint.decoder.out_channels == 6
    g = torch.Generator().manual_seed(4)
    mean = torch.cat([torch.randn(90, 3, generator=g), torch.full((90, 3), 0.5)], 1)
    std = torch.cat([torch.rand(90, 3, generator=g) + 0.5, torch.full((90, 3), 0.2)], 1)
    joint.set_normalization(mean, std)
    z = torch.randn(2, 5, generator=g)
    out = joint(z)
    assert isinstance(out, JointOutput)
    H, W = synthetic_hierarchy.texel_map.size
    assert out.vertices.shape == (2, 90, 3) and out.colors.shape == (2, 90, 3) and out.texture.shape == (2, 3, H, W)
    full = joint.decoder(z)  # (2, 90, 6) in data units
    torch.testing.assert_close(out.vertices, full[..., :3])
    torch.testing.assert_close(out.colors, full[..., 3:])
    tm = synthetic_hierarchy.texel_map
    torch.testing.assert_close(out.texture, texel_gather_reference(out.colors, tm.index, tm.weight))
    assert torch.equal(out.mask, tm.mask)
    assert "texture_branch='mesh', texture_size=(16, 16)" in repr(joint) and "TexelGather" in repr(joint)
    single = joint(z[1])
    torch.testing.assert_close(single.texture, out.texture[1])
    torch.testing.assert_close(single.vertices, out.vertices[1])


def test_joint_decoder_cnn_branch(synthetic_hierarchy):
    from mesh_decoder.nn.decoders import ChebDecoder, JointDecoder, UVTextureDecoder

    torch.manual_seed(5)
    joint = JointDecoder.from_hierarchy(synthetic_hierarchy, "cnn", decoder="ChebDecoder", channels=(8, 12),
                                        latent_size=5, K=2, texture_channels=16, min_texture_channels=4)
    assert isinstance(joint.decoder, ChebDecoder) and joint.decoder.out_channels == 3
    assert isinstance(joint.texture, UVTextureDecoder) and joint.texture.num_stages == 2  # 16 = 4 * 2**2
    z = torch.randn(2, 5, generator=torch.Generator().manual_seed(6))
    out = joint(z)
    assert out.colors is None and out.vertices.shape == (2, 90, 3) and out.texture.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out.vertices, joint.decoder(z))
    torch.testing.assert_close(out.texture, joint.texture(z))
    assert torch.equal(out.mask, synthetic_hierarchy.texel_map.mask)


def test_the_cnn_branch_names_a_non_square_texel_map():
    """It said 'texture_size: expected the texel map's size (16, 32), got (16, 16)' for a size never passed."""
    from mesh_decoder.hierarchy import build_hierarchy
    from mesh_decoder.mesh import face_template
    from mesh_decoder.nn.decoders import JointDecoder

    h = build_hierarchy(face_template(500), factors=(4, 4), texture_size=(16, 32))
    with pytest.raises(ValueError, match=r"^texel_map: the cnn texture branch draws square textures \(a power of two "
                                         r">= 8 per side\), got a 16 x 32 texel map; build the hierarchy with a "
                                         r"square texture_size or use the mesh branch$"):
        JointDecoder.from_hierarchy(h, "cnn", channels=(8, 8), latent_size=4, texture_channels=16)
    mesh = JointDecoder.from_hierarchy(h, "mesh", channels=(8, 8), latent_size=4)
    assert mesh(torch.randn(2, 4)).texture.shape == (2, 3, 16, 32)


def test_joint_decoder_config_round_trip_and_errors(synthetic_hierarchy):
    from mesh_decoder.nn.decoders import JointDecoder, SpiralDecoder, decoder_from_config

    for branch in ("mesh", "cnn"):
        joint = JointDecoder.from_hierarchy(synthetic_hierarchy, branch, channels=(8, 12), latent_size=5,
                                            texture_channels=8, texture_norm="batch")
        config = json.loads(json.dumps(joint.config()))
        again = decoder_from_config(config, synthetic_hierarchy)
        assert again.config() == joint.config()
        again.load_state_dict(joint.state_dict())
        joint.eval(), again.eval()
        z = torch.randn(2, 5, generator=torch.Generator().manual_seed(7))
        for a, b in zip(again(z), joint(z)):
            torch.testing.assert_close(a, b)
        with pytest.raises(ValueError, match=r"^config: unknown key 'texture_brnch' for JointDecoder; expected some "
                                             r"of \[.*'texture_branch'.*\]"):  # was Python's unexpected keyword
            decoder_from_config({**config, "texture_brnch": branch}, synthetic_hierarchy)
        if branch == "cnn":
            texture = json.loads(json.dumps(joint.texture.config()))
            assert type(joint.texture).from_config(texture).config() == texture
            with pytest.raises(ValueError, match=r"^config: unknown keys 'chanels', 'norms' for UVTextureDecoder"):
                type(joint.texture).from_config({**texture, "chanels": 8, "norms": "batch"})
            # decoder_from_config, documented to rebuild any decoder, refused the UV texture decoder by name
            for hierarchy in (synthetic_hierarchy, None):
                rebuilt = decoder_from_config(texture, hierarchy)
                assert type(rebuilt) is type(joint.texture) and rebuilt.config() == texture
                rebuilt.load_state_dict(joint.texture.state_dict())
                rebuilt.eval()
                torch.testing.assert_close(rebuilt(z), joint.texture(z))
    three = SpiralDecoder.from_hierarchy(synthetic_hierarchy, channels=(8, 12), latent_size=5)
    with pytest.raises(ValueError, match="mesh texture branch expects 6 output channels"):
        JointDecoder(three, "mesh", synthetic_hierarchy.texel_map)
    six = SpiralDecoder.from_hierarchy(synthetic_hierarchy, channels=(8, 12), latent_size=5, out_channels=6)
    with pytest.raises(ValueError, match="needs the template's texel map"):
        JointDecoder(six, "mesh", None)
    with pytest.raises(ValueError, match="texture_branch: expected 'mesh' or 'cnn'"):
        JointDecoder(six, "uv")
    with pytest.raises(ValueError, match="out_channels: the mesh branch needs 6"):
        JointDecoder.from_hierarchy(synthetic_hierarchy, "mesh", channels=(8, 12), out_channels=3)
    joint = JointDecoder(six, "mesh", synthetic_hierarchy.texel_map)
    joint.check_finite = True
    with pytest.raises(ValueError, match="finite"):
        joint(torch.full((5,), float("nan")))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_texel_gather_inference_path_matches_loop_reference(dtype, tol):
    """Without autograd the gather runs as one embedding_bag over a replicated index."""
    g = torch.Generator().manual_seed(31)
    H, W, V, C = 7, 5, 23, 4
    index = torch.randint(0, V, (H, W, 3), generator=g)
    weight = torch.rand(H, W, 3, generator=g, dtype=torch.float64)
    weight = (weight / weight.sum(-1, keepdim=True)).to(dtype)
    gather = TexelGather(index, weight, num_vertices=V)
    colors = torch.randn(6, V, C, generator=g, dtype=dtype)
    want = texel_gather_reference(colors, index, weight)
    with torch.inference_mode():
        for B in (6, 2, 6):  # a smaller batch reuses the replicated index of a larger one
            torch.testing.assert_close(gather(colors[:B]), want[:B], rtol=tol, atol=tol)
        torch.testing.assert_close(gather(colors[3]), want[3], rtol=tol, atol=tol)


def test_texture_options_are_checked_and_named(synthetic_hierarchy):
    """Sizes and widths are ints (not truncated floats, not unnamed int() failures), names
    are names, in either JointDecoder branch (the config keeps them)."""
    from mesh_decoder.nn.decoders import JointDecoder, UVTextureDecoder

    for size in ((16.5, 16.5), 16.0, (16, "a"), "16"):
        with pytest.raises(TypeError, match=rf"texture_size: expected an int or \(H, W\) ints, got "
                                            rf"{type(size).__name__} "):
            UVTextureDecoder(4, texture_size=size)
    with pytest.raises(ValueError, match=r"norm: expected one of .*, got None"):
        UVTextureDecoder(4, texture_size=16, norm=None)
    kw = dict(channels=(8, 12), latent_size=5)
    for branch in ("mesh", "cnn"):
        with pytest.raises(TypeError, match=r"texture_size: expected an int or \(H, W\) ints, got str 'x'"):
            JointDecoder.from_hierarchy(synthetic_hierarchy, branch, texture_size="x", **kw)
        for bad in ("abc", 2.7):
            with pytest.raises(TypeError, match=rf"texture_channels: expected a positive int, got "
                                                rf"{type(bad).__name__} {bad!r}"):
                JointDecoder.from_hierarchy(synthetic_hierarchy, branch, texture_channels=bad, **kw)
        with pytest.raises(ValueError, match=r"texture_channels: expected a positive int, got -3"):
            JointDecoder.from_hierarchy(synthetic_hierarchy, branch, texture_channels=-3, **kw)
        with pytest.raises(ValueError, match=r"min_texture_channels: expected a positive int, got 0"):
            JointDecoder.from_hierarchy(synthetic_hierarchy, branch, min_texture_channels=0, **kw)
        with pytest.raises(ValueError, match=r"texture_norm: expected one of .*, got 'bogus'"):
            JointDecoder.from_hierarchy(synthetic_hierarchy, branch, texture_norm="bogus", **kw)
        with pytest.raises(ValueError, match=r"texture_upsample: expected one of .*, got 'bilinear'"):
            JointDecoder.from_hierarchy(synthetic_hierarchy, branch, texture_upsample="bilinear", **kw)
    joint = JointDecoder.from_hierarchy(synthetic_hierarchy, "mesh", texture_size=(16, 16), **kw)
    assert joint.texture_size == (16, 16)


def test_uv_operators_check_counts_and_finite_values():
    """Vertex counts are ints (not truncated floats, not torch's unnamed bincount error);
    NaN texel weights or UVs are refused rather than spread over the texture."""
    g = torch.Generator().manual_seed(41)
    uv = torch.rand(4, 2, generator=g)
    uv_faces = torch.tensor([[0, 1, 2], [1, 2, 3]])
    faces = torch.tensor([[0, 1, 2], [1, 2, 3]])
    for bad, err in ((4.5, TypeError), (True, TypeError), (-1, ValueError)):
        with pytest.raises(err, match=rf"num_vertices: expected a non-negative int, got .*{bad!r}"):
            uv_corners(uv, uv_faces, faces, bad)
        with pytest.raises(err, match="num_vertices: expected a non-negative int"):
            sample_uv(torch.rand(3, 8, 8, generator=g), (uv, uv_faces, faces), num_vertices=bad)
    nan_uv = uv.clone()
    nan_uv[2, 1] = float("nan")
    with pytest.raises(ValueError, match="uv: expected finite texture coordinates"):
        UVSampler(nan_uv, uv_faces, faces)
    index = torch.randint(0, 3, (2, 2, 3), generator=g)
    weight = torch.rand(2, 2, 3, generator=g)
    with pytest.raises(TypeError, match="num_vertices: expected a non-negative int, got float 3.5"):
        TexelGather(index, weight, num_vertices=3.5)
    weight[1, 0, 2] = float("nan")
    with pytest.raises(ValueError, match="weight: expected finite barycentric weights"):
        TexelGather(index, weight)


def test_texel_gather_checks_the_map_type_and_the_colours_device(synthetic_hierarchy):
    with pytest.raises(TypeError, match="texel_map: expected a TexelMap, got dict"):
        TexelGather.from_texel_map(vars(synthetic_hierarchy.texel_map))
    with pytest.raises(TypeError, match="hierarchy: expected a MeshHierarchy, got TexelMap"):
        TexelGather.from_hierarchy(synthetic_hierarchy.texel_map)
    gather = TexelGather.from_hierarchy(synthetic_hierarchy)
    colors = torch.rand(2, gather.num_vertices, 3, generator=torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match=r"colors: expected a tensor on cpu \(the layer's\), got one on meta"):
        gather(colors.to("meta"))
    with torch.no_grad():  # no channels: embedding_bag refuses rows without columns
        assert gather(colors[..., :0]).shape == (2, 0, *gather.size)


# ------------------------------------------------------------------------------- devices
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_texel_gather_on_device_matches_the_loop_forward_and_backward(device):
    g = torch.Generator().manual_seed(41)
    V, H, W, C = 29, 9, 7, 3
    index = torch.randint(0, V, (H, W, 3), generator=g)
    weight = torch.rand(H, W, 3, generator=g, dtype=torch.float64)
    weight = weight / weight.sum(-1, keepdim=True)
    gather = TexelGather(index, weight.float(), num_vertices=V).to(device)
    colors = torch.rand(4, V, C, generator=g)
    want = texel_gather_reference(colors.double(), index, weight)
    with torch.inference_mode():  # the embedding_bag path
        torch.testing.assert_close(gather(colors.to(device)).cpu().double(), want, rtol=1e-5, atol=1e-6)
    x = colors.to(device).requires_grad_()
    grad_out = torch.randn(4, C, H, W, generator=g)
    gather(x).backward(grad_out.to(device))
    xr = colors.detach().double().requires_grad_()
    texel_gather_reference(xr, index, weight).backward(grad_out.double())
    torch.testing.assert_close(x.grad.cpu().double(), xr.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_sample_uv_on_device_matches_the_bilinear_reference(device):
    rng = np.random.default_rng(42)
    V, T, F = 14, 22, 16
    uv = rng.uniform(-0.05, 1.05, size=(T, 2))
    faces = np.stack([rng.choice(V, 3, replace=False) for _ in range(F)])
    uv_faces = rng.integers(0, T, size=(F, 3))
    tex = rng.random((2, 3, 9, 8))
    sampler = UVSampler(uv, uv_faces, faces, num_vertices=V).to(device)
    out = sampler(torch.from_numpy(tex).float().to(device))
    assert out.device.type == device
    for b in range(2):
        ref = sample_uv_reference(tex[b], uv, uv_faces, faces, V)
        np.testing.assert_allclose(out[b].double().cpu().numpy(), ref, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("branch", ["mesh", "cnn"])
def test_joint_decoder_on_device_matches_cpu_with_and_without_grad(synthetic_hierarchy, device, branch):
    from mesh_decoder.nn.decoders import JointDecoder

    torch.manual_seed(43)
    kwargs = {"texture_channels": 16, "min_texture_channels": 4} if branch == "cnn" else {}
    joint = JointDecoder.from_hierarchy(synthetic_hierarchy, branch, channels=(8, 12), latent_size=5, **kwargs)
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(44))
    want = joint(z)  # CPU, autograd path
    moved = joint.to(device)
    with torch.inference_mode():
        fast = moved(z.to(device))
    slow = moved(z.to(device))
    for got in (fast, slow):
        for name in ("vertices", "colors", "texture"):
            w, o = getattr(want, name), getattr(got, name)
            if w is None:
                assert o is None
                continue
            assert o.device.type == device
            torch.testing.assert_close(o.detach().cpu(), w.detach(), rtol=1e-4, atol=1e-5)
    sum(t.square().mean() for t in (slow.vertices, slow.colors, slow.texture) if t is not None).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in moved.parameters() if p.requires_grad)


def test_texel_gather_records_a_trainable_weight_buffer(synthetic_hierarchy):
    """Texel weights made trainable get their gradient, with colours that need none."""
    gather = TexelGather.from_texel_map(synthetic_hierarchy.texel_map, synthetic_hierarchy.sizes[0])
    weight = gather.weight.requires_grad_()
    colors = torch.rand(2, synthetic_hierarchy.sizes[0], 3)
    out = gather(colors)
    assert out.requires_grad
    (grad,) = torch.autograd.grad(out.sum(), weight)
    index = gather.index  # (H, W, 3): d out[b, c, i, j] / d weight[i, j, k] = colors[b, index[i, j, k], c]
    want = colors[:, index].sum(dim=(0, -1))  # (H, W, 3)
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-5)
