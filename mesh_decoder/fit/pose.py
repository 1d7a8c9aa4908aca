r"""Rotations and similarity transforms for fitting.

Two rotation parameterisations are used by :func:`mesh_decoder.fit.fit`:

* **axis-angle** :math:`\omega \in \mathbb R^3`, mapped to a matrix by Rodrigues'
  formula

  .. math::
      R(\omega) = I + \frac{\sin\theta}{\theta} K + \frac{1 - \cos\theta}{\theta^2} K^2,
      \qquad \theta = \lVert\omega\rVert,\ K = [\omega]_\times,

  evaluated with Taylor series near :math:`\theta = 0` so that values and gradients
  are finite there;
* the **6D representation** of Zhou et al., "On the Continuity of Rotation
  Representations in Neural Networks", CVPR 2019: the first two columns
  :math:`(a_1, a_2)` of the matrix, turned back into a rotation by Gram-Schmidt,
  :math:`b_1 = a_1/\lVert a_1\rVert`, :math:`b_2 \propto a_2 - (b_1\cdot a_2) b_1`,
  :math:`b_3 = b_1 \times b_2`. It is continuous everywhere (axis-angle is not at
  :math:`\theta = \pi`).

A similarity transform maps model points to target space,
:math:`X = s R x + t`. :func:`umeyama` gives its closed-form least-squares estimate
from corresponding point sets (Umeyama, "Least-squares estimation of transformation
parameters between two point patterns", IEEE TPAMI 1991), used to initialise fits
and to measure pose-free shape errors.
"""

from __future__ import annotations

import torch

from .._checks import check_tensor

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "rotation_6d_to_matrix",
    "matrix_to_rotation_6d",
    "rotation_angle",
    "apply_similarity",
    "umeyama",
    "skew",
]


def _check_floating(x: torch.Tensor, name: str, last: tuple[int, ...]) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() < len(last) or tuple(x.shape[x.dim() - len(last):]) != last:
        want = "(..., " + ", ".join(str(s) for s in last) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")
    return x


def skew(v: torch.Tensor) -> torch.Tensor:
    """The cross-product matrix :math:`[v]_\\times` (``skew(a) @ b == cross(a, b)``).

    Shapes:
        ``(..., 3) -> (..., 3, 3)``.
    """
    _check_floating(v, "v", (3,))
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    rows = [torch.stack([o, -z, y], -1), torch.stack([z, o, -x], -1), torch.stack([-y, x, o], -1)]
    return torch.stack(rows, dim=-2)  # (..., 3, 3)


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    r"""Rotation matrices from axis-angle vectors by Rodrigues' formula (module docstring).

    The rotation is by :math:`\lVert\omega\rVert` radians, counter-clockwise about
    :math:`\omega / \lVert\omega\rVert` (right-hand rule). Near zero the
    coefficients use their Taylor series :math:`1 - \theta^2/6` and
    :math:`1/2 - \theta^2/24`, so the map and its gradient are finite at
    :math:`\omega = 0` (where the gradient is ``skew``).

    Args:
        axis_angle: ``(..., 3)`` floating.

    Shapes:
        ``(..., 3) -> (..., 3, 3)``.
    """
    _check_floating(axis_angle, "axis_angle", (3,))
    theta2 = (axis_angle * axis_angle).sum(-1)  # (...,)
    small = theta2 < (1e-6 if axis_angle.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-12)
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)  # sin(t) / t
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / safe2)  # (1 - cos t) / t^2
    k = skew(axis_angle)  # (..., 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors of rotation matrices, with angles in ``[0, pi]``.

    Goes through the unit quaternion, choosing among the four algebraically equal
    formulas the one with the largest denominator (Shepperd's method), so it is
    accurate at every angle, including 0 and pi. Not meant for gradients.

    Shapes:
        ``(..., 3, 3) -> (..., 3)``.
    """
    _check_floating(matrix, "matrix", (3, 3))
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    trace = m00 + m11 + m22
    # 4 * q_i^2 for q = (w, x, y, z), from the diagonal.
    sq = torch.stack([1 + trace, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)  # (..., 4)
    best = sq.argmax(-1, keepdim=True)  # (..., 1)
    d = sq.clamp(min=1e-30).sqrt()  # (..., 4) = 2 |q_i|
    # Candidate quaternions (times 2 |q_i|), one per choice of the largest component.
    r21, r12 = m[..., 2, 1], m[..., 1, 2]
    r02, r20 = m[..., 0, 2], m[..., 2, 0]
    r10, r01 = m[..., 1, 0], m[..., 0, 1]
    cands = torch.stack([
        torch.stack([sq[..., 0], r21 - r12, r02 - r20, r10 - r01], -1),
        torch.stack([r21 - r12, sq[..., 1], r10 + r01, r02 + r20], -1),
        torch.stack([r02 - r20, r10 + r01, sq[..., 2], r21 + r12], -1),
        torch.stack([r10 - r01, r02 + r20, r21 + r12, sq[..., 3]], -1),
    ], dim=-2)  # (..., 4, 4)
    q = cands.gather(-2, best[..., None].expand(*best.shape[:-1], 1, 4)).squeeze(-2)  # (..., 4)
    q = q / d.gather(-1, best)  # (..., 4) = 2 q_best * q / (2 |q_best|)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    q = torch.where(q[..., :1] < 0, -q, q)  # w >= 0: angle in [0, pi]
    vec = q[..., 1:]  # (..., 3)
    sin_half = torch.linalg.vector_norm(vec, dim=-1)  # (...,)
    angle = 2.0 * torch.atan2(sin_half, q[..., 0])
    scale = torch.where(sin_half > 1e-12, angle / sin_half.clamp(min=1e-30), torch.full_like(angle, 2.0))
    return vec * scale[..., None]


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Rotation matrices from the 6D representation (Zhou et al., CVPR 2019).

    ``d6 = (a_1, a_2)`` holds two 3-vectors; Gram-Schmidt makes them the first two
    columns of the matrix and their cross product the third.

    Shapes:
        ``(..., 6) -> (..., 3, 3)``.
    """
    _check_floating(d6, "d6", (6,))
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / torch.linalg.vector_norm(a1, dim=-1, keepdim=True).clamp(min=1e-12)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / torch.linalg.vector_norm(b2, dim=-1, keepdim=True).clamp(min=1e-12)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)  # (..., 3, 3) columns b1, b2, b3


def matrix_to_rotation_6d(matrix: torch.Tensor) -> torch.Tensor:
    """The 6D representation: the first two columns of each matrix.

    Shapes:
        ``(..., 3, 3) -> (..., 6)``.
    """
    _check_floating(matrix, "matrix", (3, 3))
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)  # (..., 6)


def rotation_angle(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    r"""Angle in radians of the rotation :math:`A^\top B` (of ``A`` alone when ``b`` is ``None``).

    Computed as :math:`\operatorname{atan2}(\lVert\mathrm{vee}(M - M^\top)\rVert / 2, (\mathrm{tr} M - 1)/2)`,
    accurate for small and large angles alike.

    Two dtypes (a fitted float32 rotation against a float64 truth) are computed in the wider one.

    Shapes:
        ``(..., 3, 3), (..., 3, 3) -> (...)``.
    """
    _check_floating(a, "a", (3, 3))
    if b is not None:
        _check_floating(b, "b", (3, 3))
        if a.device != b.device:
            raise ValueError(f"b: expected a tensor on {a.device} (a's device), got one on {b.device}")
        wide = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(wide), b.to(wide)
    m = a if b is None else a.transpose(-1, -2) @ b
    cos = (m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2] - 1.0) / 2.0
    vee = torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1)
    sin = torch.linalg.vector_norm(vee, dim=-1) / 2.0
    return torch.atan2(sin, cos)


def apply_similarity(
    points: torch.Tensor, scale: torch.Tensor | float, rotation: torch.Tensor, translation: torch.Tensor
) -> torch.Tensor:
    r"""Map points by :math:`X = s R x + t`.

    Args:
        points: ``(B, N, 3)`` or ``(N, 3)``.
        scale: a number, ``()`` or ``(B,)``.
        rotation: ``(3, 3)`` or ``(B, 3, 3)``.
        translation: ``(3,)`` or ``(B, 3)``.

    Shapes:
        ``(B, N, 3) -> (B, N, 3)``; ``(N, 3) -> (N, 3)`` with unbatched parameters.
    """
    _check_floating(points, "points", (3,))
    _check_floating(rotation, "rotation", (3, 3))
    _check_floating(translation, "translation", (3,))
    s = torch.as_tensor(scale, dtype=points.dtype, device=points.device)
    if s.dim() == 1:
        s = s[:, None, None]  # (B, 1, 1)
    rotated = points @ rotation.transpose(-1, -2)  # (B, N, 3): rows x_i^T R^T = (R x_i)^T
    return s * rotated + translation.unsqueeze(-2)


def umeyama(
    source: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor | None = None,
    with_scale: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Least-squares similarity from ``source`` to ``target`` (Umeyama, TPAMI 1991).

    Minimises :math:`\sum_i w_i \lVert y_i - (s R x_i + t)\rVert^2` over rotations
    ``R`` (proper: :math:`\det R = +1`), scales ``s > 0`` and translations ``t``:
    with weighted centroids :math:`\mu_x, \mu_y`, cross-covariance
    :math:`\Sigma = \sum_i w_i (y_i - \mu_y)(x_i - \mu_x)^\top / \sum_i w_i = U D V^\top`
    and :math:`S = \mathrm{diag}(1, 1, \det(U V^\top))`,

    .. math::
        R = U S V^\top, \quad s = \frac{\mathrm{tr}(D S)}{\sigma_x^2}, \quad t = \mu_y - s R \mu_x.

    Computed in float64; results are returned in ``source``'s dtype.

    Args:
        source: ``(N, 3)`` points ``x``.
        target: ``(N, 3)`` corresponding points ``y``.
        weights: ``(N,)`` non-negative weights, default all 1.
        with_scale: estimate ``s`` (default ``True``); ``False`` fixes ``s = 1`` (rigid).

    Returns:
        ``(scale (), rotation (3, 3), translation (3,))``.

    Shapes:
        ``(N, 3), (N, 3) -> (), (3, 3), (3,)``.
    """
    check_tensor(source, "source", shape=("N", 3))
    check_tensor(target, "target", shape=(source.shape[0], 3))
    if not (source.is_floating_point() and target.is_floating_point()):
        raise TypeError(f"source, target: expected floating dtypes, got {source.dtype} and {target.dtype}")
    n = int(source.shape[0])
    if n < 3:
        raise ValueError(f"source: expected at least 3 points to estimate a rotation, got {n}")
    x, y = source.detach().double(), target.detach().double().to(source.device)
    if weights is None:
        w = torch.ones(n, dtype=torch.float64, device=x.device)
    else:
        check_tensor(weights, "weights", shape=(n,))
        w = weights.detach().double().to(x.device)
        if bool((w < 0).any()) or not bool(torch.isfinite(w).all()) or float(w.sum()) <= 0:
            raise ValueError("weights: expected finite non-negative values with a positive sum")
    w = w / w.sum()
    mx, my = w @ x, w @ y  # (3,), (3,)
    xc, yc = x - mx, y - my  # (N, 3)
    cov = (yc * w[:, None]).T @ xc  # (3, 3) sum_i w_i y_i x_i^T
    u, d, vh = torch.linalg.svd(cov)
    sign = torch.ones(3, dtype=torch.float64, device=x.device)
    if float(torch.linalg.det(u @ vh)) < 0:
        sign[2] = -1.0
    rot = u @ torch.diag(sign) @ vh
    var_x = float((w * (xc * xc).sum(-1)).sum())
    if with_scale:
        if var_x <= 0:
            raise ValueError("source: expected points that are not all equal (zero spread)")
        s = (d * sign).sum() / var_x
    else:
        s = torch.tensor(1.0, dtype=torch.float64, device=x.device)
    t = my - s * (rot @ mx)
    dtype = source.dtype
    return s.to(dtype), rot.to(dtype), t.to(dtype)
