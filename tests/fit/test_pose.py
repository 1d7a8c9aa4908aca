"""Rotations, similarity transforms and the Umeyama alignment against slow references."""

from __future__ import annotations

import math

import pytest
import torch

from mesh_decoder.fit import (
    apply_similarity,
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rotation_6d,
    rotation_6d_to_matrix,
    rotation_angle,
    umeyama,
)
from mesh_decoder.fit.pose import skew

from .reference import gram_schmidt_reference, rodrigues_reference


def _random_axis_angles(g, n, max_angle=math.pi, dtype=torch.float64):
    axis = torch.randn(n, 3, generator=g, dtype=dtype)
    axis = axis / axis.norm(dim=1, keepdim=True)
    angle = max_angle * torch.rand(n, 1, generator=g, dtype=dtype)
    return axis * angle


@pytest.mark.parametrize("scale", [1e-9, 1e-4, 0.3, 3.0])
def test_axis_angle_matches_matrix_exponential(scale):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(6, 3, generator=g, dtype=torch.float64) * scale
    fast = axis_angle_to_matrix(w)
    for i in range(6):
        torch.testing.assert_close(fast[i], rodrigues_reference(w[i]), rtol=0, atol=1e-12)


def test_axis_angle_float32_and_batches():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(2, 4, 3, generator=g)
    R = axis_angle_to_matrix(w)
    assert R.shape == (2, 4, 3, 3) and R.dtype == torch.float32
    torch.testing.assert_close(R[1, 2], axis_angle_to_matrix(w[1, 2]))  # batch consistency
    eye = torch.eye(3).expand(2, 4, 3, 3)
    torch.testing.assert_close(R @ R.transpose(-1, -2), eye, atol=1e-5, rtol=0)


def test_axis_angle_gradients_finite_at_zero_and_gradcheck():
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    R = axis_angle_to_matrix(w)
    (R * torch.arange(9, dtype=torch.float64).reshape(3, 3)).sum().backward()
    assert torch.isfinite(w.grad).all()
    # d R / d w at 0 is skew(e_i): check one directional derivative
    e = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    eps = 1e-7
    torch.testing.assert_close((axis_angle_to_matrix(eps * e) - torch.eye(3, dtype=torch.float64)) / eps, skew(e),
                               atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, 3, generator=g, dtype=torch.float64)
    for w0 in (w[0], 1e-5 * w[1]):
        assert torch.autograd.gradcheck(axis_angle_to_matrix, (w0.clone().requires_grad_(True),))


def test_matrix_to_axis_angle_round_trip_all_angles():
    g = torch.Generator().manual_seed(4)
    w = _random_axis_angles(g, 64)
    w[0] = 0.0
    w[1] = torch.tensor([0.0, 0.0, math.pi - 1e-9], dtype=torch.float64)  # near pi
    w[2] = torch.tensor([1e-8, -2e-8, 0.0], dtype=torch.float64)  # tiny
    back = matrix_to_axis_angle(axis_angle_to_matrix(w))
    torch.testing.assert_close(axis_angle_to_matrix(back), axis_angle_to_matrix(w), atol=1e-10, rtol=0)
    ok = w.norm(dim=1) < math.pi - 1e-6  # the axis-angle vector is unique below pi
    torch.testing.assert_close(back[ok], w[ok], atol=1e-9, rtol=0)
    assert float(back.norm(dim=1).max()) <= math.pi + 1e-12


def test_rotation_6d_matches_gram_schmidt_and_round_trips():
    g = torch.Generator().manual_seed(5)
    d6 = torch.randn(5, 6, generator=g, dtype=torch.float64)
    R = rotation_6d_to_matrix(d6)
    for i in range(5):
        torch.testing.assert_close(R[i], gram_schmidt_reference(d6[i]), atol=1e-12, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(5, dtype=torch.float64))
    R2 = axis_angle_to_matrix(_random_axis_angles(g, 5))
    torch.testing.assert_close(rotation_6d_to_matrix(matrix_to_rotation_6d(R2)), R2, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(rotation_6d_to_matrix, (d6[0].clone().requires_grad_(True),))


def test_rotation_angle_matches_acos_reference():
    g = torch.Generator().manual_seed(6)
    a = axis_angle_to_matrix(_random_axis_angles(g, 16))
    b = axis_angle_to_matrix(_random_axis_angles(g, 16))
    got = rotation_angle(a, b)
    for i in range(16):
        m = a[i].T @ b[i]
        ref = math.acos(max(-1.0, min(1.0, (float(torch.trace(m)) - 1) / 2)))
        assert abs(float(got[i]) - ref) < 1e-6
    w = torch.tensor([0.0, 2e-7, 0.0], dtype=torch.float64)  # acos loses this; atan2 does not
    assert abs(float(rotation_angle(axis_angle_to_matrix(w))) - 2e-7) < 1e-15


def test_rotation_angle_of_two_dtypes_is_computed_in_the_wider():
    """A fitted float32 rotation against a float64 truth failed with torch's 'expected m1 and m2 to have the
    same dtype'."""
    g = torch.Generator().manual_seed(61)
    a = axis_angle_to_matrix(_random_axis_angles(g, 5))
    b = axis_angle_to_matrix(_random_axis_angles(g, 5))
    for x, y in ((a.float(), b), (a, b.float())):
        got = rotation_angle(x, y)
        assert got.dtype == torch.float64
        torch.testing.assert_close(got, rotation_angle(x.double(), y.double()))
    with pytest.raises(ValueError, match=r"^b: expected a tensor on cpu \(a's device\), got one on meta$"):
        rotation_angle(a, b.to("meta"))


def test_apply_similarity_matches_loop():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(3, 10, 3, generator=g, dtype=torch.float64)
    s = torch.rand(3, generator=g, dtype=torch.float64) + 0.5
    R = axis_angle_to_matrix(_random_axis_angles(g, 3))
    t = torch.randn(3, 3, generator=g, dtype=torch.float64)
    out = apply_similarity(x, s, R, t)
    for b in range(3):
        for i in range(10):
            torch.testing.assert_close(out[b, i], s[b] * (R[b] @ x[b, i]) + t[b])
    torch.testing.assert_close(apply_similarity(x[1], s[1], R[1], t[1]), out[1])


@pytest.mark.parametrize("with_scale", [True, False])
def test_umeyama_recovers_known_similarity(with_scale):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(50, 3, generator=g, dtype=torch.float64) * torch.tensor([30.0, 50.0, 20.0])
    R = axis_angle_to_matrix(_random_axis_angles(g, 1)[0])
    s = 1.7 if with_scale else 1.0
    t = torch.randn(3, generator=g, dtype=torch.float64) * 10
    y = apply_similarity(x, s, R, t)
    s_hat, R_hat, t_hat = umeyama(x.float(), y.float(), with_scale=with_scale)
    assert s_hat.dtype == torch.float32
    assert abs(float(s_hat) - s) < 1e-5
    torch.testing.assert_close(R_hat.double(), R, atol=1e-5, rtol=0)
    torch.testing.assert_close(t_hat.double(), t, atol=1e-3, rtol=0)


def test_umeyama_weights_equal_repeated_points_and_reflection_gives_rotation():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    y = x @ axis_angle_to_matrix(torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64)).T + 0.3 * torch.randn(
        20, 3, generator=g, dtype=torch.float64)
    counts = torch.randint(1, 4, (20,), generator=g)
    weighted = umeyama(x, y, counts.double())
    repeated = umeyama(x.repeat_interleave(counts, 0), y.repeat_interleave(counts, 0))
    for a, b in zip(weighted, repeated):
        torch.testing.assert_close(a, b)
    mirrored = x * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
    _, R, _ = umeyama(x, mirrored)
    assert abs(float(torch.linalg.det(R)) - 1.0) < 1e-9  # proper rotation, never a reflection


def test_pose_errors_name_expected_and_found():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3\)"):
        axis_angle_to_matrix(torch.zeros(4))
    with pytest.raises(TypeError, match="floating"):
        axis_angle_to_matrix(torch.zeros(3, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least 3 points"):
        umeyama(torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"expected shape \(5, 3\)"):
        umeyama(torch.randn(5, 3), torch.randn(4, 3))
    with pytest.raises(ValueError, match="weights"):
        umeyama(torch.randn(5, 3), torch.randn(5, 3), -torch.ones(5))
