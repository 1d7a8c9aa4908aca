import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mesh_decoder.mesh.templates import face_template
from mesh_decoder.render import (
    OrthographicCamera,
    PerspectiveCamera,
    barycentric_coordinates,
    ndc_to_pixel,
    pixel_to_ndc,
    rasterize,
)
from tests.render.reference import random_scene, reference_rasterize, to_pixels

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _ortho_identity():
    return OrthographicCamera(scale=1.0)


def _perspective(H, W, f=None):
    f = f if f is not None else 0.9 * min(H, W)
    return PerspectiveCamera(torch.tensor([f, f, (W - 1) / 2, (H - 1) / 2], dtype=torch.float64), (H, W))


# ------------------------------------------------------------------------ coverage by hand
def test_flat_square_covers_the_expected_pixels():
    H, W = 8, 10
    x0, x1, y0, y1 = -0.55, 0.3, -0.3, 0.8  # NDC; no pixel centre on the boundary
    # a fresh random tilted plane z = a x + b y + c; the camera looks along -z, so depth = -z, kept in 0.5..4.5
    rng = np.random.default_rng()
    a, b = rng.uniform(-1.0, 1.0, size=2)
    c = rng.uniform(-3.0, -2.5)

    def plane_z(x, y):
        return a * x + b * y + c

    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    verts = torch.tensor([[x, y, plane_z(x, y)] for x, y in corners], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    frags = rasterize(verts, faces, _ortho_identity(), (H, W))
    # by hand: centres x_j = (j + .5)/10*2 - 1 = -0.9, -0.7, ..., 0.9 -> inside (-0.55, 0.3): j = 2..6
    #          centres y_i = 1 - (i + .5)/8*2 = 0.875, 0.625, ..., -0.875 -> inside (-0.3, 0.8): i = 1..4
    expected = np.zeros((H, W), bool)
    expected[1:5, 2:7] = True
    assert np.array_equal(frags.mask[0].numpy(), expected)
    # which triangle: above the diagonal (0 -> 2) is face 1, below face 0
    for i in range(H):
        for j in range(W):
            if expected[i, j]:
                x, y = (j + 0.5) / W * 2 - 1, 1 - (i + 0.5) / H * 2
                above = (x1 - x0) * (y - y0) - (y1 - y0) * (x - x0) > 0
                assert int(frags.face_id[0, i, j]) == (1 if above else 0)
    assert torch.all(frags.face_id[0][~frags.mask[0]] == -1)
    assert torch.all(torch.isinf(frags.depth[0][~frags.mask[0]]))
    # depth at each covered pixel centre (the cameras module's convention) is the plane's, seen along -z
    ii, jj = np.nonzero(expected)
    xs, ys = (jj + 0.5) / W * 2 - 1, 1 - (ii + 0.5) / H * 2
    want = torch.from_numpy(-plane_z(xs, ys))
    got = frags.depth[0][frags.mask[0]]  # row-major, like np.nonzero
    assert torch.allclose(got, want, rtol=0, atol=1e-9), f"plane a={a}, b={b}, c={c}: {got} != {want}"


def _integer_grid_mesh(gen: torch.Generator, cells: int = 4, step: int = 4):
    """A jittered grid whose vertices sit on pixel centres: many pixel centres fall on edges and vertices."""
    n = cells + 1
    ii, jj = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    col = (jj * step + 1).double()
    row = (ii * step + 1).double()
    inner = (ii > 0) & (ii < cells) & (jj > 0) & (jj < cells)
    col = col + torch.where(inner, torch.randint(-1, 2, col.shape, generator=gen), 0)
    row = row + torch.where(inner, torch.randint(-1, 2, row.shape, generator=gen), 0)
    pix = torch.stack([col.reshape(-1), row.reshape(-1), torch.zeros(n * n, dtype=torch.float64)], dim=1)
    faces = []
    for i in range(cells):
        for j in range(cells):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            if bool(torch.randint(0, 2, (1,), generator=gen)):
                faces += [[a, c, b], [b, c, d]]
            else:
                faces += [[a, c, d], [a, d, b]]
    faces = torch.tensor(faces)
    p = pix[faces]  # (F, 3, 3)
    d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    area2 = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]
    # one orientation for all and a fixed rectangular boundary: an embedding, no folds or overlaps
    assert bool((area2 < 0).all()) or bool((area2 > 0).all())
    return pix, faces


def test_shared_edges_and_vertices_are_covered_once():
    g = torch.Generator().manual_seed(10)
    H = W = 19
    pix, faces = _integer_grid_mesh(g)
    verts = pixel_to_ndc(pix, (H, W))  # NDC with depth 0
    cam = _ortho_identity()
    full = rasterize(verts, faces, cam, (H, W))
    count = torch.zeros(H, W, dtype=torch.int64)
    for f in range(faces.shape[0]):
        count += rasterize(verts, faces[f : f + 1], cam, (H, W)).mask[0].long()
    assert int(count.max()) == 1  # no pixel centre on a shared edge or vertex is drawn twice
    assert torch.equal(count.bool(), full.mask[0])  # and none is dropped: the union is covered
    # the grid spans pixel centres 1..17: the interior is fully covered
    assert bool(full.mask[0, 2:17, 2:17].all())
    # the same with the orientation of every face flipped (clockwise faces)
    flipped = rasterize(verts, faces[:, [0, 2, 1]], cam, (H, W))
    assert torch.equal(flipped.mask, full.mask)


def test_float32_plane_grid_has_no_holes_along_its_edges():
    """A pixel centre a few ulps below a horizontal edge lies outside the upper face's box: the lower face owns it.

    With the edge function expanded to ``A x + B y + C`` it rounded to 0 there, the lower face did not own
    the edge, and whole rows of pixels along the grid lines stayed empty.
    """
    n, S = 10, 50
    ii, jj = torch.meshgrid(torch.arange(n + 1), torch.arange(n + 1), indexing="ij")
    xy = torch.stack([jj / n * 2 - 1, ii / n * 2 - 1], -1).reshape(-1, 2).float() * 0.9
    depth = 0.25 * torch.rand(len(xy), 1, generator=torch.Generator().manual_seed(41)) - 2.0  # a bumpy height field
    verts = torch.cat([xy, depth], 1)  # (V, 3) float32; grid lines pass a few ulps from pixel centres
    faces = []
    for i in range(n):
        for j in range(n):
            a, b, c, d = i * (n + 1) + j, i * (n + 1) + j + 1, (i + 1) * (n + 1) + j, (i + 1) * (n + 1) + j + 1
            faces += [[a, b, d], [a, d, c]]
    frags = rasterize(verts, torch.tensor(faces), OrthographicCamera(scale=1.0), S)
    centres = (torch.arange(S, dtype=torch.float64) + 0.5) / S * 2 - 1
    inside = centres.abs() < 0.9 - 1e-6
    interior = inside[:, None] & inside[None, :]
    assert int(interior.sum()) > 1500
    holes = (interior & ~frags.mask[0]).nonzero().tolist()
    assert not holes, f"{len(holes)} empty pixels inside the grid, first {holes[:4]}"


def test_a_vertex_on_a_pixel_centre_is_covered_by_exactly_one_face_of_its_fan():
    g = torch.Generator().manual_seed(42)
    H = W = 11
    cam = _ortho_identity()
    wrong = []
    for trial in range(60):
        k = int(torch.randint(3, 9, (1,), generator=g))
        angle = (torch.arange(k, dtype=torch.float64) * (2 * torch.pi / k)
                 + (torch.rand(k, generator=g, dtype=torch.float64) - 0.5) * (torch.pi / k))  # gaps below pi
        radius = 2 + 3 * torch.rand(k, generator=g, dtype=torch.float64)
        ring = torch.stack([5 + radius * torch.cos(angle), 5 + radius * torch.sin(angle)], 1)  # inexact corners
        pix = torch.cat([torch.tensor([[5.0, 5.0]], dtype=torch.float64), ring])
        pix = torch.cat([pix, torch.rand(k + 1, 1, generator=g, dtype=torch.float64)], 1)
        verts = pixel_to_ndc(pix, (H, W))
        assert torch.equal(ndc_to_pixel(verts[:1], (H, W))[0, :2], pix[0, :2])  # the centre vertex lands exactly
        faces = torch.tensor([[0, 1 + i, 1 + (i + 1) % k] for i in range(k)])
        count = sum(int(rasterize(verts, faces[i : i + 1], cam, (H, W)).mask[0, 5, 5]) for i in range(k))
        if count != 1:
            wrong.append((trial, count))
    assert not wrong, f"(fan, faces covering the centre vertex's pixel): {wrong}"


# -------------------------------------------------------------------------- reference
@pytest.mark.parametrize("kind", ["orthographic", "perspective"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_rasteriser(kind, seed):
    g = torch.Generator().manual_seed(100 + seed)
    H, W = 13, 17
    verts, faces = random_scene(g, num_faces=9)
    cam = _ortho_identity() if kind == "orthographic" else _perspective(H, W)
    if kind == "perspective":
        verts[:, :2] *= verts[:, 2:] * 0.7  # spread the points over the view
    frags = rasterize(verts, faces, cam, (H, W))
    pix = to_pixels(cam.project(verts)[0].numpy(), H, W)
    ref_id, ref_bary, ref_depth = reference_rasterize(pix, faces.numpy(), H, W, kind == "perspective",
                                                      znear=cam.znear)
    assert (ref_id >= 0).sum() > 20
    assert np.array_equal(frags.face_id[0].numpy(), ref_id)
    np.testing.assert_allclose(frags.bary[0].numpy(), ref_bary, atol=1e-10)
    covered = ref_id >= 0
    np.testing.assert_allclose(frags.depth[0].numpy()[covered], ref_depth[covered], rtol=1e-10)
    # overlaps really are resolved by depth in these scenes
    overlap = sum(rasterize(verts, faces[f : f + 1], cam, (H, W)).mask[0].long() for f in range(faces.shape[0]))
    assert int(overlap.max()) >= 2


def test_cull_backfaces_matches_reference():
    g = torch.Generator().manual_seed(7)
    H, W = 11, 12
    verts, faces = random_scene(g, num_faces=8)
    cam = _ortho_identity()
    frags = rasterize(verts, faces, cam, (H, W), cull_backfaces=True)
    pix = to_pixels(cam.project(verts)[0].numpy(), H, W)
    ref_id, _, _ = reference_rasterize(pix, faces.numpy(), H, W, False, cull_backfaces=True)
    assert np.array_equal(frags.face_id[0].numpy(), ref_id)
    # a counter-clockwise (front) face survives culling, its clockwise twin does not
    tri = torch.tensor([[-0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64)
    assert rasterize(tri, torch.tensor([[0, 1, 2]]), cam, 8, cull_backfaces=True).mask.any()
    assert not rasterize(tri, torch.tensor([[0, 2, 1]]), cam, 8, cull_backfaces=True).mask.any()


@pytest.mark.parametrize("kind", ["orthographic", "perspective"])
def test_depth_order_of_overlapping_triangles(kind):
    H = W = 9
    near_z, far_z = (3.0, 5.0) if kind == "perspective" else (1.0, -1.0)  # ortho looks along -z: larger z is nearer
    big = [[-0.8, -0.8], [0.8, -0.8], [0.0, 0.8]]
    small = [[-0.5, -0.5], [0.5, -0.5], [0.0, 0.5]]
    cam = _ortho_identity() if kind == "orthographic" else _perspective(H, W)

    def lift(tri, z):
        t = torch.tensor(tri, dtype=torch.float64)
        if kind == "perspective":
            t = t * z * 0.5  # project to similar image positions
        return torch.cat([t, torch.full((3, 1), z, dtype=torch.float64)], 1)

    for order in ([0, 1], [1, 0]):
        parts = [lift(small, near_z), lift(big, far_z)]  # small triangle in front
        verts = torch.cat([parts[k] for k in order])
        faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
        frags = rasterize(verts, faces, cam, (H, W))
        small_id = order.index(0)
        alone = rasterize(lift(small, near_z), torch.tensor([[0, 1, 2]]), cam, (H, W)).mask[0]
        assert alone.sum() > 5
        assert torch.all(frags.face_id[0][alone] == small_id)  # the near face wins wherever it is
        assert torch.all(frags.face_id[0][frags.mask[0] & ~alone] == 1 - small_id)


def test_no_faces_in_view_and_invalid_faces():
    cam = _ortho_identity()
    verts = torch.tensor([[3.0, 3.0, 0.0], [4.0, 3.0, 0.0], [3.0, 4.0, 0.0],  # off screen
                          [0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [1.0, 1.0, 0.0],  # degenerate (collinear)
                          [0.0, 0.0, float("nan")], [0.5, 0.0, 0.0], [0.0, 0.5, 0.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    st = {}
    frags = rasterize(verts, faces, cam, 16, stats=st)
    assert not frags.mask.any() and torch.all(frags.face_id == -1) and torch.all(torch.isinf(frags.depth))
    assert st["covered"] == 0


def test_near_plane_drops_faces_behind_the_camera():
    H = W = 8
    cam = _perspective(H, W)
    verts = torch.tensor([[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [0.0, 1.0, -0.5]], dtype=torch.float64)
    assert not rasterize(verts, torch.tensor([[0, 1, 2]]), cam, (H, W)).mask.any()
    verts[2, 2] = 2.0
    assert rasterize(verts, torch.tensor([[0, 1, 2]]), cam, (H, W)).mask.any()


# --------------------------------------------------------------------- barycentrics
@pytest.mark.parametrize("kind", ["orthographic", "perspective"])
def test_barycentrics_reproduce_pixel_centres(kind):
    mesh = face_template(500, seed=3)
    verts = torch.tensor(mesh.vertices)
    faces = torch.tensor(mesh.faces)
    H, W = 40, 32
    if kind == "orthographic":
        cam = OrthographicCamera.fit(verts, (H, W))
        cam = cam.to(dtype=torch.float64)
    else:
        cam = PerspectiveCamera.look_at(eye=(60.0, 40.0, 450.0), at=(0.0, -5.0, 60.0), fov_degrees=35,
                                        image_size=(H, W), znear=1.0).to(dtype=torch.float64)
    frags = rasterize(verts, faces, cam, (H, W))
    assert frags.mask.sum() > 0.3 * H * W
    m = frags.mask[0]
    b = frags.bary[0][m]  # (P, 3)
    assert float(b.min()) > -1e-9 and torch.allclose(b.sum(1), torch.ones((), dtype=torch.float64))
    corners = verts[faces[frags.face_id[0][m]]]  # (P, 3, 3)
    points = (b.unsqueeze(-1) * corners).sum(1)  # (P, 3) 3D points on the triangles
    px = ndc_to_pixel(cam.project(points)[0], (H, W))  # (P, 3)
    rows, cols = torch.nonzero(m, as_tuple=True)
    assert torch.allclose(px[:, 0], cols.double(), atol=1e-8)
    assert torch.allclose(px[:, 1], rows.double(), atol=1e-8)
    assert torch.allclose(px[:, 2], frags.depth[0][m], rtol=1e-10)
    # the differentiable recomputation gives the same numbers
    b2, d2 = barycentric_coordinates(frags, verts, return_depth=True)
    assert torch.allclose(b2, frags.bary, atol=1e-12)
    assert torch.allclose(d2[frags.mask], frags.depth[frags.mask])


def test_barycentric_gradcheck():
    g = torch.Generator().manual_seed(11)
    H, W = 7, 9
    verts, faces = random_scene(g, num_faces=3)
    verts[:, :2] *= verts[:, 2:] * 0.7
    cam = _perspective(H, W)
    frags = rasterize(verts, faces, cam, (H, W))
    assert frags.mask.sum() > 5
    v = verts.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: barycentric_coordinates(frags, x), (v,))
    # its errors named interpolate's argument, vertices_for_grad
    with pytest.raises(ValueError, match=r"^vertices: expected at least \d+ vertices \(the faces' range\), got 2$"):
        barycentric_coordinates(frags, verts[:2])
    with pytest.raises(ValueError, match=r"^vertices: expected batch size 1, got 3$"):
        barycentric_coordinates(frags, verts.expand(3, -1, -1))


# --------------------------------------------------------------------- batching, chunks
def test_batch_equals_per_sample_and_is_deterministic():
    g = torch.Generator().manual_seed(12)
    mesh = face_template(500, seed=1)
    base = torch.tensor(mesh.vertices)
    verts = base + 4.0 * torch.randn(3, *base.shape, generator=g, dtype=torch.float64)
    faces = torch.tensor(mesh.faces)
    R = torch.stack([torch.eye(3, dtype=torch.float64)] * 3)
    angle = torch.tensor(0.3, dtype=torch.float64)
    R[1] = torch.tensor([[torch.cos(angle), 0, torch.sin(angle)], [0, 1, 0], [-torch.sin(angle), 0, torch.cos(angle)]])
    cam = OrthographicCamera(scale=torch.tensor([0.008, 0.009, 0.01], dtype=torch.float64),
                             center=torch.randn(3, 3, generator=g, dtype=torch.float64), R=R)
    frags = rasterize(verts, faces, cam, (24, 20))
    again = rasterize(verts, faces, cam, (24, 20))
    assert torch.equal(frags.face_id, again.face_id) and torch.equal(frags.bary, again.bary)
    for b in range(3):
        one = rasterize(verts[b], faces, cam[b], (24, 20))
        assert torch.equal(one.face_id[0], frags.face_id[b])
        assert torch.equal(one.bary[0], frags.bary[b])
        assert torch.equal(one.depth[0], frags.depth[b])
    assert not torch.equal(frags.face_id[0], frags.face_id[1])


def test_chunking_does_not_change_the_result_and_bounds_memory():
    g = torch.Generator().manual_seed(13)
    mesh = face_template(500, seed=2)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32).unsqueeze(0).repeat(2, 1, 1)
    verts[1] += torch.randn(verts.shape[1:], generator=g) * 3
    faces = torch.tensor(mesh.faces)
    cam = OrthographicCamera.fit(verts, 48)
    big_stats, small_stats = {}, {}
    big = rasterize(verts, faces, cam, 48, stats=big_stats)
    small = rasterize(verts, faces, cam, 48, max_candidates=97, stats=small_stats)
    assert torch.equal(big.face_id, small.face_id) and torch.equal(big.bary, small.bary)
    assert small_stats["largest_chunk"] <= 97 and small_stats["chunks"] > 10
    assert big_stats["candidates"] == small_stats["candidates"]
    per_sample = []
    for b in range(2):
        st = {}
        rasterize(verts[b], faces, cam, 48, stats=st)
        per_sample.append(st["candidates"])
    assert big_stats["candidates"] == sum(per_sample)
    assert big_stats["covered"] == int(big.mask.sum())


@pytest.mark.parametrize("device", DEVICES)
def test_float32_agrees_with_float64(device):
    mesh = face_template(500, seed=4)
    faces = torch.tensor(mesh.faces, device=device)
    v64 = torch.tensor(mesh.vertices, device=device)
    cam = OrthographicCamera.fit(v64, 64).to(device=device)
    f64 = rasterize(v64, faces, cam, 64)
    f32 = rasterize(v64.float(), faces, cam, 64)
    same = (f64.face_id == f32.face_id).float().mean()
    assert float(same) > 0.995  # only pixel centres within float32 rounding of an edge may differ
    assert torch.equal(f64.mask, f32.mask) or float((f64.mask != f32.mask).float().mean()) < 0.005


# ------------------------------------------------------------------------------ errors
def test_input_errors():
    cam = _ortho_identity()
    v = torch.rand(4, 3)
    f = torch.tensor([[0, 1, 2]])
    with pytest.raises(ValueError, match=r"vertices: expected \(V, 3\) or \(B, V, 3\), got \(4, 2\)"):
        rasterize(torch.rand(4, 2), f, cam, 8)  # the caller's shape, not an internal (1, 4, 2)
    with pytest.raises(ValueError, match=r"vertices: expected \(V, 3\) or \(B, V, 3\), got \(1, 2, 4, 3\)"):
        rasterize(torch.rand(1, 2, 4, 3), f, cam, 8)
    with pytest.raises(TypeError, match="floating"):
        rasterize(torch.ones(4, 3, dtype=torch.int64), f, cam, 8)
    with pytest.raises(ValueError, match=r"faces: expected indices in \[0, 4\), got range \[0, 4\]"):
        rasterize(v, torch.tensor([[0, 1, 4]]), cam, 8)
    with pytest.raises(TypeError, match="integer"):
        rasterize(v, f.float(), cam, 8)
    with pytest.raises(TypeError, match="image_size"):
        rasterize(v, f, cam, (8, 8.0))
    with pytest.raises(TypeError, match="camera"):
        rasterize(v, f, "camera", 8)
    with pytest.raises(ValueError, match="max_candidates"):
        rasterize(v, f, cam, 8, max_candidates=0)
    with pytest.raises(ValueError, match="batch size 1 or 2"):
        rasterize(torch.rand(3, 4, 3), f, OrthographicCamera(scale=torch.ones(2)), 8)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak RSS from getrusage (KiB on Linux)")
def test_memory_of_a_5023_vertex_face_at_512px_batch_8_stays_under_1gb():
    """Loose check in a fresh process: peak RSS growth of rasterising and rendering stays well below 1 GB."""
    code = """
import resource, sys, torch
torch.set_num_threads(1)
from mesh_decoder.mesh.templates import face_template
from mesh_decoder.render import OrthographicCamera, rasterize, render
mesh = face_template(5023)
v = torch.tensor(mesh.vertices, dtype=torch.float32).expand(8, -1, -1)
f = torch.tensor(mesh.faces)
colors = torch.rand(5023, 3)
cam = OrthographicCamera.fit(v, 512)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stats = {}
frags = rasterize(v, f, cam, 512, stats=stats)
out = render(v, f, cam, 512, colors=colors, fragments=frags)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) / 1024, stats["largest_chunk"], float(out.mask.float().mean()))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    growth_mb, largest, coverage = proc.stdout.split()
    assert coverage and float(coverage) > 0.3  # the face fills a good part of the images
    assert int(largest) <= 1 << 17
    print(f"peak RSS growth {float(growth_mb):.0f} MB")
    assert float(growth_mb) < 600  # measured about 310 MB; the outputs alone are about 90 MB
