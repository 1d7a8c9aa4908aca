import math
import re

import numpy as np
import pytest
import torch

from mesh_decoder.render import (
    OrthographicCamera,
    PerspectiveCamera,
    WeakPerspectiveCamera,
    image_size_pair,
    ndc_to_pixel,
    pixel_to_ndc,
)


def _rotation(gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def test_image_size_pair():
    assert image_size_pair(7) == (7, 7)
    assert image_size_pair((3, 5)) == (3, 5)
    with pytest.raises(TypeError, match="image_size"):
        image_size_pair(2.5)
    with pytest.raises(ValueError, match=r"got \(H, W\) = \(0, 4\)"):
        image_size_pair((0, 4))


def test_pixel_ndc_round_trip_and_centres():
    g = torch.Generator().manual_seed(1)
    H, W = 5, 8
    # pixel (i, j) centre sits at x = (j + .5) / W * 2 - 1, y = 1 - (i + .5) / H * 2
    i, j = 3, 6
    ndc = torch.tensor([[(j + 0.5) / W * 2 - 1, 1 - (i + 0.5) / H * 2]], dtype=torch.float64)
    assert torch.allclose(ndc_to_pixel(ndc, (H, W)), torch.tensor([[float(j), float(i)]], dtype=torch.float64))
    p = torch.randn(4, 10, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(pixel_to_ndc(ndc_to_pixel(p, (H, W)), (H, W)), p)
    assert torch.equal(ndc_to_pixel(p, (H, W))[..., 2], p[..., 2])


def test_orthographic_formula_and_batching():
    g = torch.Generator().manual_seed(2)
    B, N = 3, 11
    pts = torch.randn(B, N, 3, generator=g, dtype=torch.float64)
    scale = torch.rand(B, 2, generator=g, dtype=torch.float64) + 0.5
    center = torch.randn(B, 3, generator=g, dtype=torch.float64)
    R = torch.stack([_rotation(g) for _ in range(B)])
    cam = OrthographicCamera(scale=scale, center=center, R=R)
    out = cam.project(pts)
    for b in range(B):
        for n in range(N):
            p = R[b] @ (pts[b, n] - center[b])
            expect = torch.stack([scale[b, 0] * p[0], scale[b, 1] * p[1], -p[2]])
            assert torch.allclose(out[b, n], expect)
    # per-sample cameras and broadcasting of a single point set
    for b in range(B):
        assert torch.allclose(cam[b].project(pts[b]), out[b : b + 1])
    shared = cam.project(pts[0])  # (N, 3) against B cameras
    assert shared.shape == (B, N, 3)
    assert torch.allclose(shared[1], cam[1].project(pts[0])[0])
    assert cam.batch_size == B


def test_orthographic_scalar_scale_and_default_view():
    cam = OrthographicCamera(scale=0.5)
    p = torch.tensor([[[2.0, -4.0, 3.0]]])
    assert torch.allclose(cam.project(p), torch.tensor([[[1.0, -2.0, -3.0]]]))  # nearer (+z) = smaller depth


def test_orthographic_fit_frames_points_with_square_pixels():
    g = torch.Generator().manual_seed(3)
    spread = torch.tensor([30.0, 60.0, 10.0], dtype=torch.float64)
    pts = torch.randn(50, 3, generator=g, dtype=torch.float64) * spread + 7
    H, W = 40, 100
    cam = OrthographicCamera.fit(pts, (H, W), margin=0.1)
    px = ndc_to_pixel(cam.project(pts.float())[0], (H, W))
    # inside the image with the margin, touching it on the limiting (vertical) side
    assert float(px[:, 1].min()) >= 0.1 * H - 0.5 - 1e-3 and float(px[:, 1].max()) <= 0.9 * H - 0.5 + 1e-3
    assert float(px[:, 1].max() - px[:, 1].min()) == pytest.approx(0.8 * H, rel=1e-4)
    # square pixels: one world unit spans as many pixels in x as in y
    k_x = float(cam.scale[0, 0]) * W / 2
    k_y = float(cam.scale[0, 1]) * H / 2
    assert k_x == pytest.approx(k_y, rel=1e-6)


def test_weak_perspective_formula():
    g = torch.Generator().manual_seed(4)
    B, N = 2, 6
    pts = torch.randn(B, N, 3, generator=g, dtype=torch.float64)
    s = torch.rand(B, generator=g, dtype=torch.float64) + 0.1
    R = torch.stack([_rotation(g) for _ in range(B)])
    t = torch.randn(B, 2, generator=g, dtype=torch.float64)
    out = WeakPerspectiveCamera(s, R, t).project(pts)
    p = torch.einsum("bij,bnj->bni", R, pts)
    assert torch.allclose(out[..., :2], s[:, None, None] * p[..., :2] + t[:, None, :])
    assert torch.allclose(out[..., 2], -p[..., 2])


def test_weak_perspective_gradients_reach_parameters():
    g = torch.Generator().manual_seed(5)
    pts = torch.randn(1, 5, 3, generator=g, dtype=torch.float64)
    s = torch.tensor([1.3], dtype=torch.float64, requires_grad=True)
    t = torch.randn(1, 2, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s_, t_: WeakPerspectiveCamera(s_, None, t_).project(pts), (s, t))
    assert WeakPerspectiveCamera(s, None, t).requires_grad


def test_perspective_matches_opencv_pixels():
    g = torch.Generator().manual_seed(6)
    H, W = 48, 64
    fx, fy, cx, cy = 70.0, 65.0, 30.0, 25.0
    R = _rotation(g)
    t = torch.tensor([0.1, -0.2, 5.0], dtype=torch.float64)
    pts = torch.randn(1, 20, 3, generator=g, dtype=torch.float64)
    cam = PerspectiveCamera(torch.tensor([fx, fy, cx, cy], dtype=torch.float64), (H, W), R=R, t=t)
    out = cam.project(pts)
    pc = pts[0] @ R.T + t
    u = fx * pc[:, 0] / pc[:, 2] + cx
    v = fy * pc[:, 1] / pc[:, 2] + cy
    px = ndc_to_pixel(out[0], (H, W))
    assert torch.allclose(px[:, 0], u) and torch.allclose(px[:, 1], v)  # OpenCV: centres on integers
    assert torch.allclose(out[0, :, 2], pc[:, 2])
    K = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float64)
    assert torch.allclose(PerspectiveCamera(K, (H, W), R=R, t=t).project(pts), out)


def test_look_at_puts_target_at_centre_and_up_upwards():
    cam = PerspectiveCamera.look_at(eye=(0.0, 0.0, 500.0), at=(0.0, 0.0, 0.0), fov_degrees=40, image_size=(30, 50))
    p = cam.project(torch.tensor([[[0.0, 0.0, 0.0], [0.0, 10.0, 0.0], [10.0, 0.0, 0.0]]]))[0]
    assert torch.allclose(p[0, :2], torch.zeros(2), atol=1e-6)
    assert float(p[0, 2]) == pytest.approx(500.0)
    assert float(p[1, 1]) > 0 and abs(float(p[1, 0])) < 1e-6  # +y world is up in the image
    assert float(p[2, 0]) > 0  # +x world is to the right (camera on +z looking at -z)
    # vertical field of view: a point at the edge of the fov lands on y = 1
    edge = 500.0 * math.tan(math.radians(20))
    q = cam.project(torch.tensor([[[0.0, edge, 0.0]]]))[0, 0]
    assert float(q[1]) == pytest.approx(1.0, abs=1e-5)  # the field of view spans the image edge to edge


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: OrthographicCamera(scale=torch.ones(2, 3)), "scale"),
        (lambda: OrthographicCamera(center=(1.0, 2.0)), "center"),
        (lambda: OrthographicCamera(scale=torch.ones(2), center=torch.zeros(3, 3), R=torch.eye(3).expand(4, 3, 3)),
         "batch sizes"),
        (lambda: PerspectiveCamera((1.0, 1.0, 0.0), 8), "K"),
        (lambda: PerspectiveCamera((1.0, 1.0, 0.0, 0.0), 8, znear=0.0), "znear"),
        (lambda: PerspectiveCamera.look_at((0, 0, 1), (0, 0, 1)), "distinct"),
        (lambda: PerspectiveCamera.look_at((0, 0, 1), (0, 0, 0), up=(0, 0, 1)), "up"),
    ],
)
def test_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_points():
    cam = OrthographicCamera(scale=torch.ones(3))
    with pytest.raises(TypeError, match="points"):
        cam.project(np.zeros((1, 4, 3)))
    with pytest.raises(ValueError, match=r"points: expected \(N, 3\) or \(B, N, 3\), got \(1, 4, 2\)"):
        cam.project(torch.ones(1, 4, 2))
    with pytest.raises(ValueError, match=r"points: expected \(N, 3\) or \(B, N, 3\), got \(4, 2\)"):
        cam.project(torch.rand(4, 2))  # the caller's shape, not an internal (1, 4, 2)
    with pytest.raises(ValueError, match="batch size 1 or 3"):
        cam.project(torch.ones(2, 4, 3))
    with pytest.raises(TypeError, match="floating"):
        cam.project(torch.ones(1, 4, 3, dtype=torch.int64))


@pytest.mark.parametrize("make", [
    lambda g: OrthographicCamera(scale=torch.rand(3, generator=g) + 0.5, center=torch.randn(3, 3, generator=g)),
    lambda g: WeakPerspectiveCamera(scale=torch.rand(3, generator=g) + 0.5, t2d=torch.randn(1, 2, generator=g)),
    lambda g: PerspectiveCamera(torch.rand(3, 4, generator=g) * 10 + 5, 8, t=torch.randn(3, 3, generator=g)),
])
def test_camera_indexing_is_like_a_sequence(make):
    g = torch.Generator().manual_seed(4)
    cam = make(g)
    pts = torch.randn(3, 6, 3, generator=g) + torch.tensor([0.0, 0.0, 5.0])
    out = cam.project(pts)  # (3, 6, 3)
    for i in range(-3, 3):
        one = cam[i]
        assert one.batch_size == 1
        assert torch.allclose(one.project(pts[i]), out[i].unsqueeze(0))
    assert cam[np.int64(-1)].batch_size == 1
    for i in (3, 7, -4):
        with pytest.raises(IndexError, match=rf"camera index: expected in \[-3, 3\), got {i}"):
            cam[i]
    with pytest.raises(TypeError):
        cam[1.0]
    single = OrthographicCamera(scale=torch.rand(1, generator=g) + 0.5)  # shared by every element
    for i in (-1, 0, 5):
        assert torch.equal(single[i].scale, single.scale)


def test_orthographic_fit_errors_name_the_non_finite_point():
    g = torch.Generator().manual_seed(5)
    v = torch.rand(2, 100, 3, generator=g, dtype=torch.float64)
    v[1, 7, 0] = float("nan")
    v[1, 9, 2] = float("inf")
    with pytest.raises(ValueError, match=r"expected finite coordinates, got 2 non-finite values "
                                         r"\(first at batch element 1, point 7\)"):
        OrthographicCamera.fit(v, 64)
    with pytest.raises(ValueError, match=r"got 1 non-finite values \(first at point 1\)"):
        OrthographicCamera.fit(v[1, 8:].numpy(), 64)  # unbatched array: rows 8.. of element 1
    with pytest.raises(ValueError, match=r"vertices: expected at least one point, got 0"):
        OrthographicCamera.fit(torch.rand(2, 0, 3, generator=g), 64)
    with pytest.raises(ValueError, match=r"vertices: expected \(V, 3\) or \(B, V, 3\), got \(4, 2\)"):
        OrthographicCamera.fit(torch.rand(4, 2, generator=g), 64)


def test_look_at_and_fit_refuse_inputs_they_would_silently_misuse():
    with pytest.raises(ValueError, match=r"eye: expected 3 finite coordinates, got \(0.0, nan, 5.0\)"):
        PerspectiveCamera.look_at(eye=(0.0, float("nan"), 5.0))  # was a camera of NaNs
    with pytest.raises(ValueError, match=r"up: expected 3 finite coordinates, got \(0.0, 1.0\)"):
        PerspectiveCamera.look_at(eye=(0.0, 0.0, 5.0), up=(0.0, 1.0))  # was a RuntimeError from linalg.cross
    g = torch.Generator().manual_seed(6)
    R = torch.stack([_rotation(g), _rotation(g)])
    with pytest.raises(ValueError, match=r"R: expected one rotation \(3, 3\) for the shared camera, got \(2, 3, 3\)"):
        OrthographicCamera.fit(torch.rand(20, 3, generator=g), 32, R=R)  # the second rotation was dropped
    one = OrthographicCamera.fit(torch.rand(20, 3, generator=g), 32, R=R[:1])  # a batch of one is that rotation
    assert torch.allclose(one.R[0], R[0].float())


@pytest.mark.parametrize("make", [
    lambda: OrthographicCamera(scale=0.5),
    lambda: WeakPerspectiveCamera(scale=0.5),
    lambda: PerspectiveCamera((10.0, 10.0, 4.0, 4.0), 8),
])
def test_an_empty_batch_projects_and_renders_to_an_empty_batch(make):
    from mesh_decoder.render import rasterize, render

    cam = make()
    pts = torch.rand(0, 5, 3, dtype=torch.float64)
    out = cam.project(pts)
    assert out.shape == (0, 5, 3) and out.dtype == torch.float64
    faces = torch.tensor([[0, 1, 2], [2, 3, 4]])
    frags = rasterize(pts, faces, cam, (6, 7))
    assert frags.face_id.shape == (0, 6, 7) and frags.bary.shape == (0, 6, 7, 3)
    assert render(pts, faces, cam, (6, 7)).image.shape == (0, 3, 6, 7)


def test_to_a_device_this_machine_lacks_names_it():
    """Camera.to('cuda') without CUDA failed with torch's AssertionError ('Torch not compiled with CUDA')."""
    g = torch.Generator().manual_seed(5)
    cam = OrthographicCamera(scale=torch.rand(2, generator=g) + 0.5)
    missing = f"cuda:{torch.cuda.device_count()}"  # one past the last device: never available
    with pytest.raises(ValueError, match=rf"^device {missing}: "):
        cam.to(missing)
    with pytest.raises(ValueError, match=r"^device: expected cpu, cuda, cuda:N or mps, got 'nope'"):
        cam.to("nope")
    moved = cam.to("cpu", dtype=torch.float64)
    assert moved.scale.dtype == torch.float64 and torch.equal(moved.scale, cam.scale.double())


_NAN, _INF = float("nan"), float("inf")


@pytest.mark.parametrize("make, message", [
    (lambda: OrthographicCamera(scale=_NAN), r"scale: expected finite numbers, got nan"),
    (lambda: OrthographicCamera(scale=[0.5, _INF]), r"scale: expected finite numbers, got [0.5, inf]"),
    (lambda: OrthographicCamera(scale=0), r"scale: expected non-zero scales (zero maps every point to the image "
                                          r"centre), got 0.0"),
    (lambda: OrthographicCamera(scale=np.array([[0.02, 0.0]])), r"scale: expected non-zero scales"),
    (lambda: OrthographicCamera(center=(0.0, _INF, 1.0)), r"center: expected finite numbers, got [0.0, inf, 1.0]"),
    (lambda: OrthographicCamera(R=np.full((3, 3), _NAN)), r"R: expected finite numbers, got [[nan, nan, nan], "),
    (lambda: WeakPerspectiveCamera(scale=_NAN), r"scale: expected finite numbers, got nan"),
    (lambda: WeakPerspectiveCamera(scale=0.0), r"scale: expected non-zero scales (zero maps every point to t2d), "
                                               r"got [0.0]"),
    (lambda: WeakPerspectiveCamera(scale=0.5, t2d=(_NAN, 0.1)), r"t2d: expected finite numbers, got [nan, 0.1]"),
    (lambda: PerspectiveCamera((50.0, 50.0, _NAN, 4.0), 8), r"K: expected finite numbers, got [50.0, 50.0, nan, 4.0]"),
    (lambda: PerspectiveCamera((0.0, 50.0, 4.0, 4.0), 8), r"K: expected non-zero focal lengths f_x, f_y (zero maps "
                                                          r"every point onto the principal point's row or column), "
                                                          r"got [[0.0, 50.0]]"),
    (lambda: PerspectiveCamera(np.diag([50.0, 0.0, 1.0]), 8), r"K: expected non-zero focal lengths"),
    (lambda: PerspectiveCamera((50.0, 50.0, 4.0, 4.0), 8, t=(0.0, 0.0, -_INF)), r"t: expected finite numbers"),
])
def test_plain_numbers_that_draw_nothing_are_refused(make, message):
    """A NaN, infinite or zero scale, focal length or offset rendered an empty image without a word."""
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda: OrthographicCamera(scale="2"), "scale: expected plain numbers or a tensor, got '2' (dtype <U1)"),
    (lambda: WeakPerspectiveCamera(t2d=("0", "1")), "t2d: expected plain numbers or a tensor, got ('0', '1')"),
    (lambda: PerspectiveCamera(("50", 50.0, 4.0, 4.0), 8), "K: expected plain numbers or a tensor, got ('50', 50.0"),
])
def test_text_is_not_read_as_numbers(make, message):
    """numpy parsed '2' as 2.0, although the check's docstring promised a TypeError for what is not a number."""
    with pytest.raises(TypeError, match="^" + re.escape(message)):
        make()


def test_tensor_parameters_stay_unchecked_and_plain_numbers_match_them():
    g = torch.Generator().manual_seed(6)
    # tensors are not read at construction (that would wait for the GPU in the fitting loop): no error here
    OrthographicCamera(scale=torch.tensor([_NAN, 0.0]), center=torch.full((3,), _INF))
    WeakPerspectiveCamera(scale=torch.zeros(2), t2d=torch.full((2,), _NAN))
    PerspectiveCamera(torch.zeros(4), 8, t=torch.full((3,), _NAN))
    pts = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    s = (torch.rand(2, generator=g, dtype=torch.float64) + 0.5).tolist()
    c = torch.randn(3, generator=g, dtype=torch.float64).tolist()
    R = _rotation(g).tolist()
    K = (torch.rand(4, generator=g, dtype=torch.float64) * 50 + 10).tolist()
    pairs = [
        (OrthographicCamera(scale=s, center=c, R=R), OrthographicCamera(scale=torch.tensor(s), center=torch.tensor(c),
                                                                        R=torch.tensor(R))),
        (WeakPerspectiveCamera(scale=s[0], R=R, t2d=c[:2]),
         WeakPerspectiveCamera(scale=torch.tensor(s[0]), R=torch.tensor(R), t2d=torch.tensor(c[:2]))),
        (PerspectiveCamera(K, 8, R=R, t=[c[0], c[1], 20.0]),
         PerspectiveCamera(torch.tensor(K), 8, R=torch.tensor(R), t=torch.tensor([c[0], c[1], 20.0]))),
    ]
    for plain, tensor in pairs:
        assert torch.allclose(plain.project(pts), tensor.project(pts), atol=1e-5)
