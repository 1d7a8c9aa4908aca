r"""Cameras: world points to normalised device coordinates (NDC) and a depth.

Every camera maps points ``(B, N, 3)`` to ``(B, N, 3)`` holding NDC ``x`` (right),
NDC ``y`` (up) and a depth that grows away from the camera. The rasteriser keeps,
at every pixel, the surface with the smallest depth.

**Pixel convention.** For an image of ``H x W`` pixels, pixel ``(i, j)`` (row ``i``
from the top, column ``j`` from the left) has its centre at

.. math::
    x = \frac{j + 0.5}{W} \cdot 2 - 1, \qquad y = 1 - \frac{i + 0.5}{H} \cdot 2,

so the image spans ``[-1, 1]`` in both NDC axes, whatever its aspect ratio
(:func:`ndc_to_pixel` and :func:`pixel_to_ndc` convert). An isotropic camera on a
non-square image therefore needs different ``x`` and ``y`` scales; the
``fit`` and ``look_at`` constructors set them.

**Batched parameters.** Every parameter has a leading batch dimension of ``B`` or
``1``; :meth:`Camera.project` broadcasts a batch-1 camera over a batch of points and
a batch-1 set of points over a batch of cameras. Parameters may require grad:
the projection is differentiable with respect to them (used when fitting).

**Checked parameters.** Parameters given as plain numbers (Python numbers, sequences,
numpy arrays) are checked when the camera is built: every entry finite, and scales
and focal lengths non-zero (a zero maps every point to one line or to the image
centre). Tensors are taken as they are, unchecked: a check would wait for the GPU at
every construction, and the fitting loop builds a camera from tensors at every step.

Three cameras:

* :class:`OrthographicCamera` — ``x = s_x (R (X - c))_x``, ``y = s_y (R (X - c))_y``,
  ``depth = -(R (X - c))_z``: looks along ``-z`` of its frame, so with the
  default ``R = I`` it sees the built-in face (which looks towards ``+z``) head-on.
* :class:`WeakPerspectiveCamera` — ``x = s (R X)_x + t_x``, ``y = s (R X)_y + t_y``,
  ``depth = -(R X)_z``: the scaled orthographic model used when fitting a 3D face
  to 2D landmarks.
* :class:`PerspectiveCamera` — a pinhole with OpenCV conventions: ``X_c = R X + t``
  (``x`` right, ``y`` down, ``z`` forward), pixel coordinates
  ``u = f_x X_c / Z_c + c_x``, ``v = f_y Y_c / Z_c + c_y`` with the centre of pixel
  ``(i, j)`` at ``(u, v) = (j, i)``, and ``depth = Z_c``. Barycentric coordinates
  under this camera are perspective-correct (:mod:`.rasterize`).
"""

from __future__ import annotations

import math
import operator
from typing import Sequence

import numpy as np
import torch

from .._checks import check_device

__all__ = [
    "Camera",
    "OrthographicCamera",
    "WeakPerspectiveCamera",
    "PerspectiveCamera",
    "image_size_pair",
    "ndc_to_pixel",
    "pixel_to_ndc",
]


# ----------------------------------------------------------------------------- helpers
def image_size_pair(image_size) -> tuple[int, int]:
    """``int`` or ``(H, W)`` -> ``(H, W)``, checked positive."""
    if isinstance(image_size, (int, np.integer)) and not isinstance(image_size, bool):
        h = w = int(image_size)
    elif (
        isinstance(image_size, (tuple, list, torch.Size))
        and len(image_size) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in image_size)
    ):
        h, w = int(image_size[0]), int(image_size[1])
    else:
        raise TypeError(f"image_size: expected an int or a pair of ints (H, W), got {image_size!r}")
    if h < 1 or w < 1:
        raise ValueError(f"image_size: expected positive sizes, got (H, W) = ({h}, {w})")
    return h, w


def ndc_to_pixel(points: torch.Tensor, image_size) -> torch.Tensor:
    """NDC ``(x, y)`` -> continuous pixel coordinates ``(column, row)``.

    Pixel centres land on integers: ``column = (x + 1) W / 2 - 0.5``,
    ``row = (1 - y) H / 2 - 0.5``. Extra trailing entries (a depth) pass through.

    Shapes: ``(..., 2 or 3) -> (..., 2 or 3)``.
    """
    h, w = image_size_pair(image_size)
    if not isinstance(points, torch.Tensor) or points.shape[-1] not in (2, 3):
        got = getattr(points, "shape", type(points).__name__)
        raise ValueError(f"points: expected a tensor of shape (..., 2) or (..., 3), got {got}")
    col = (points[..., 0] + 1.0) * (0.5 * w) - 0.5
    row = (1.0 - points[..., 1]) * (0.5 * h) - 0.5
    return torch.cat([torch.stack([col, row], dim=-1), points[..., 2:]], dim=-1)


def pixel_to_ndc(points: torch.Tensor, image_size) -> torch.Tensor:
    """Continuous pixel coordinates ``(column, row)`` -> NDC ``(x, y)``; the inverse of :func:`ndc_to_pixel`.

    Shapes: ``(..., 2 or 3) -> (..., 2 or 3)``.
    """
    h, w = image_size_pair(image_size)
    if not isinstance(points, torch.Tensor) or points.shape[-1] not in (2, 3):
        got = getattr(points, "shape", type(points).__name__)
        raise ValueError(f"points: expected a tensor of shape (..., 2) or (..., 3), got {got}")
    x = (points[..., 0] + 0.5) / w * 2.0 - 1.0
    y = 1.0 - (points[..., 1] + 0.5) / h * 2.0
    return torch.cat([torch.stack([x, y], dim=-1), points[..., 2:]], dim=-1)


def _finite_numbers(value, name: str) -> np.ndarray:
    """Plain numbers (a Python number, a sequence or a numpy array) as float64, refusing NaN and infinity.

    Raises ``ValueError`` naming ``name`` and the values found (``TypeError`` for
    values that are not numbers). Only for values on the host: tensors are not
    passed here (reading them may wait for the GPU).
    """
    try:
        given = np.asarray(value)
        if not (given.dtype == bool or np.issubdtype(given.dtype, np.number) or given.dtype == object):
            raise TypeError(f"dtype {given.dtype}")  # text: '2' would convert to 2.0
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError) as exc:  # text, None in a list, tensors needing grad or on a GPU
        raise TypeError(f"{name}: expected plain numbers or a tensor, got {value!r} ({exc})") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: expected finite numbers, got {_numbers_text(arr)}")
    return arr


def _nonzero(arr: np.ndarray, name: str, what: str) -> None:
    """Refuse (``ValueError``) a zero in ``arr``, host values of parameter ``name``; ``what`` names them and why."""
    if (arr == 0).any():
        raise ValueError(f"{name}: expected non-zero {what}, got {_numbers_text(arr)}")


def _numbers_text(arr: np.ndarray) -> str:
    """Host values on one line for an error message: all of up to 12, else the first and last few."""
    if arr.size <= 12:
        return str(arr.tolist())
    flat = np.array2string(arr.reshape(-1), threshold=6, edgeitems=3, separator=", ", max_line_width=1 << 20)
    return f"{flat} (shape {arr.shape})"


def _param(value, name: str, tail: tuple[int, ...], default_dtype=torch.float32) -> torch.Tensor:
    """A camera parameter as a tensor ``(B, *tail)`` (``B = 1`` for an unbatched value).

    Accepts Python numbers, sequences, numpy arrays (checked finite) and tensors
    (unchecked; kept as they are, with their autograd history, when already batched).
    """
    if isinstance(value, torch.Tensor):
        t = value
    else:
        t = torch.as_tensor(_finite_numbers(value, name), dtype=default_dtype)
    if not t.is_floating_point():
        t = t.to(default_dtype)
    want = "(B, " + ", ".join(str(s) for s in tail) + ")" if tail else "(B,)"
    if t.dim() == len(tail):
        t = t.unsqueeze(0)  # (1, *tail)
    if t.dim() != len(tail) + 1 or tuple(t.shape[1:]) != tail:
        unbatched = "(" + ", ".join(str(s) for s in tail) + ")" if tail else "a scalar"
        raise ValueError(f"{name}: expected shape {unbatched} or {want}, got {tuple(t.shape)}")
    return t


def _rotation(R, name: str = "R") -> torch.Tensor:
    if R is None:
        return torch.eye(3).unsqueeze(0)  # (1, 3, 3)
    return _param(R, name, (3, 3))


def _batch(*tensors: torch.Tensor) -> int:
    sizes = {int(t.shape[0]) for t in tensors} - {1}
    if len(sizes) > 1:
        raise ValueError(f"camera parameters: expected batch sizes of 1 or one common B, got {sorted(sizes)}")
    return sizes.pop() if sizes else 1


# ------------------------------------------------------------------------------ cameras
class Camera:
    """Base class: a batch of cameras mapping world points to NDC ``(x, y)`` and a depth.

    Subclasses implement :meth:`_project` on broadcast parameters and set
    :attr:`is_perspective` (perspective-correct interpolation) and :attr:`znear`
    (faces with a vertex at a smaller depth are not drawn; ``None``: no near plane).
    Parameters given as plain numbers are checked (finite; scales and focal lengths
    non-zero) with a ``ValueError`` naming them; tensors are not (module docstring).
    """

    is_perspective: bool = False
    znear: float | None = None
    _param_names: tuple[str, ...] = ()

    @property
    def batch_size(self) -> int:
        """``B`` of the parameters (1 for a single camera)."""
        return _batch(*(getattr(self, n) for n in self._param_names))

    @property
    def requires_grad(self) -> bool:
        """Whether any parameter requires grad."""
        return any(getattr(self, n).requires_grad for n in self._param_names)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Project world points.

        Args:
            points: ``(B, N, 3)`` or ``(N, 3)`` world coordinates.

        Returns:
            ``(B', N, 3)``: NDC ``x``, NDC ``y`` and depth, with ``B'`` the
            broadcast of the points' and the camera's batch sizes, computed in
            the points' dtype (also inside ``torch.autocast``).

        Shapes:
            ``(B, N, 3) -> (B, N, 3)``.
        """
        if not isinstance(points, torch.Tensor):
            raise TypeError(f"points: expected a torch.Tensor, got {type(points).__name__}")
        if points.dim() not in (2, 3) or points.shape[-1] != 3:
            raise ValueError(f"points: expected (N, 3) or (B, N, 3), got {tuple(points.shape)}")
        if points.dim() == 2:
            points = points.unsqueeze(0)  # (1, N, 3)
        if not points.is_floating_point():
            raise TypeError(f"points: expected a floating dtype, got {points.dtype}")
        bp, bc = int(points.shape[0]), self.batch_size
        if bp != bc and 1 not in (bp, bc):
            raise ValueError(f"points: expected batch size 1 or {bc} (the camera's), got {bp}")
        if bp == 0:  # an empty batch projects to an empty batch (the parameters would broadcast it to 1)
            return points.new_empty((0, int(points.shape[1]), 3))
        params = [getattr(self, n).to(device=points.device, dtype=points.dtype) for n in self._param_names]
        # in the points' dtype, also under torch.autocast: its bf16 einsum moved vertices by up to 0.6 px at
        # 256 px and flipped depth tests, silently (the rasteriser's output stays float32)
        with torch.autocast(points.device.type, enabled=False):
            return self._project(points, *params)

    def _project(self, points: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def to(self, device=None, dtype: torch.dtype | None = None) -> "Camera":
        """A copy with every parameter moved (and, if given, cast to ``dtype``).

        Raises ``ValueError`` for a device this machine lacks, naming it."""
        if device is not None and not isinstance(device, torch.dtype):
            check_device(device, "device")
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        for n in self._param_names:
            setattr(out, n, getattr(self, n).to(device=device, dtype=dtype))
        return out

    def __getitem__(self, index: int) -> "Camera":
        """The batch-1 camera of batch element ``index`` in ``[-B, B)`` (negative counts from the end).

        A batch-1 camera is shared by every element: any index gives it back. Parameters
        of batch size 1 are shared likewise. Raises ``IndexError`` outside ``[-B, B)`` when ``B > 1``.
        """
        i = operator.index(index)
        B = self.batch_size
        if B > 1:
            if not -B <= i < B:
                raise IndexError(f"camera index: expected in [-{B}, {B}), got {i}")
            i %= B
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        for n in self._param_names:
            p = getattr(self, n)
            setattr(out, n, p if p.shape[0] == 1 else p[i : i + 1])
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(batch_size={self.batch_size})"


class OrthographicCamera(Camera):
    r"""Orthographic projection along ``-z`` of the camera frame.

    .. math::
        p = R\,(X - c), \qquad x = s_x\, p_x, \quad y = s_y\, p_y, \quad \text{depth} = -p_z.

    Args:
        scale: NDC units per world unit: a number or ``(B,)`` (the same in ``x`` and
            ``y``), or ``(B, 2)`` for ``(s_x, s_y)`` (``B`` may be 1). Default ``1.0``.
        center: ``(3,)`` or ``(B, 3)`` world point at the image centre. Default the origin.
        R: ``(3, 3)`` or ``(B, 3, 3)`` world-to-camera rotation. Default the identity
            (the camera on ``+z`` looking at ``-z``, ``+y`` up).

    Shapes:
        ``project``: ``(B, N, 3) -> (B, N, 3)``.
    """

    _param_names = ("scale", "center", "R")

    def __init__(self, scale=1.0, center=(0.0, 0.0, 0.0), R=None) -> None:
        s = scale
        if not isinstance(s, torch.Tensor):
            arr = _finite_numbers(scale, "scale")
            _nonzero(arr, "scale", "scales (zero maps every point to the image centre)")
            s = torch.as_tensor(arr, dtype=torch.float32)
        if s.dim() == 0:
            s = s.reshape(1, 1).expand(1, 2)  # (1, 2)
        elif s.dim() == 1:
            s = s.unsqueeze(1).expand(-1, 2)  # (B, 2) isotropic per batch element
        self.scale = _param(s, "scale", (2,))
        self.center = _param(center, "center", (3,))
        self.R = _rotation(R)
        self.batch_size  # check that the batch sizes agree

    @classmethod
    def fit(cls, vertices, image_size, margin: float = 0.05, R=None) -> "OrthographicCamera":
        """A camera framing ``vertices`` (all batch elements together), with square pixels.

        The bounding box of the rotated points is centred and scaled so its larger
        side (in pixels) leaves ``margin`` of the image free on each side.

        Args:
            vertices: ``(V, 3)`` or ``(B, V, 3)`` points (tensor or array).
            image_size: ``int`` or ``(H, W)`` of the image to be rendered.
            margin: fraction of the image left free on each side. Default ``0.05``.
            R: optional ``(3, 3)`` world-to-camera rotation. Default the identity.
        """
        h, w = image_size_pair(image_size)
        if not 0 <= margin < 0.5:
            raise ValueError(f"margin: expected a number in [0, 0.5), got {margin}")
        if isinstance(vertices, torch.Tensor):
            v = vertices.detach()
        else:
            v = torch.as_tensor(np.asarray(vertices, np.float64))
        if v.dim() not in (2, 3) or v.shape[-1] != 3:
            raise ValueError(f"vertices: expected (V, 3) or (B, V, 3), got {tuple(v.shape)}")
        n = int(v.shape[-2])  # V
        v = v.reshape(-1, 3).double()  # (N, 3) all batch elements together
        if v.shape[0] == 0:
            raise ValueError("vertices: expected at least one point, got 0")
        bad = ~torch.isfinite(v)  # (N, 3)
        if bool(bad.any()):
            i = int(bad.any(dim=1).nonzero()[0, 0])
            where = f"point {i}" if v.shape[0] == n else f"batch element {i // n}, point {i % n}"
            raise ValueError(f"vertices: expected finite coordinates, got {int(bad.sum())} non-finite values "
                             f"(first at {where})")
        rot = _rotation(R)
        if rot.shape[0] != 1:
            raise ValueError(f"R: expected one rotation (3, 3) for the shared camera, got {tuple(rot.shape)}")
        rot = rot[0].double()
        p = v @ rot.T  # (N, 3) camera frame, before centring
        lo, hi = p.min(0).values, p.max(0).values
        mid = (lo + hi) / 2
        ext = (hi - lo).clamp(min=1e-12)
        free = 1.0 - 2.0 * margin
        k = min(free * w / float(ext[0]), free * h / float(ext[1]))  # pixels per world unit
        center = rot.T @ mid  # (3,) back to world coordinates
        scale = torch.tensor([[2.0 * k / w, 2.0 * k / h]])  # (1, 2)
        return cls(scale=scale, center=center.float(), R=None if R is None else rot.float())

    def _project(self, points, scale, center, R):
        B = max(points.shape[0], scale.shape[0], center.shape[0], R.shape[0])
        p = torch.einsum("bij,bnj->bni", R.expand(B, 3, 3), points.expand(B, -1, 3) - center.unsqueeze(1))  # (B, N, 3)
        s = scale.unsqueeze(1)  # (B|1, 1, 2)
        return torch.stack([s[..., 0] * p[..., 0], s[..., 1] * p[..., 1], -p[..., 2]], dim=-1)  # (B, N, 3)

    def __repr__(self) -> str:
        return f"OrthographicCamera(batch_size={self.batch_size})"


class WeakPerspectiveCamera(Camera):
    r"""Scaled orthographic ("weak perspective") projection, the usual model for fitting.

    .. math::
        p = R X, \qquad x = s\, p_x + t_x, \quad y = s\, p_y + t_y, \quad \text{depth} = -p_z.

    Args:
        scale: ``s``, a number or ``(B,)``. Default ``1.0``.
        R: ``(3, 3)`` or ``(B, 3, 3)`` rotation. Default the identity.
        t2d: ``(2,)`` or ``(B, 2)`` NDC translation. Default ``(0, 0)``.

    Shapes:
        ``project``: ``(B, N, 3) -> (B, N, 3)``.
    """

    _param_names = ("scale", "R", "t2d")

    def __init__(self, scale=1.0, R=None, t2d=(0.0, 0.0)) -> None:
        self.scale = _param(scale, "scale", ())
        if not isinstance(scale, torch.Tensor):
            _nonzero(self.scale.numpy(), "scale", "scales (zero maps every point to t2d)")
        self.R = _rotation(R)
        self.t2d = _param(t2d, "t2d", (2,))
        self.batch_size

    def _project(self, points, scale, R, t2d):
        B = max(points.shape[0], scale.shape[0], R.shape[0], t2d.shape[0])
        p = torch.einsum("bij,bnj->bni", R.expand(B, 3, 3), points.expand(B, -1, 3))  # (B, N, 3)
        s = scale.reshape(-1, 1)  # (B|1, 1)
        t = t2d.unsqueeze(1)  # (B|1, 1, 2)
        return torch.stack([s * p[..., 0] + t[..., 0], s * p[..., 1] + t[..., 1], -p[..., 2]], dim=-1)  # (B, N, 3)


class PerspectiveCamera(Camera):
    r"""Pinhole camera with intrinsics in pixels and OpenCV axes.

    .. math::
        X_c = R X + t, \qquad u = f_x \frac{X_c}{Z_c} + c_x, \quad v = f_y \frac{Y_c}{Z_c} + c_y,
        \qquad \text{depth} = Z_c,

    where ``(u, v)`` are pixel coordinates of an image of ``image_size`` pixels with
    the centre of pixel ``(i, j)`` at ``(u, v) = (j, i)`` (OpenCV), then mapped to NDC
    by the module's pixel convention. Rendering at another resolution than
    ``image_size`` rescales the image (NDC does not depend on the resolution).
    Faces with a vertex closer than ``znear`` are not drawn (no clipping).

    Args:
        K: ``(4,)``/``(B, 4)`` as ``(f_x, f_y, c_x, c_y)`` in pixels, or a
            ``(3, 3)``/``(B, 3, 3)`` intrinsic matrix.
        image_size: ``int`` or ``(H, W)``: the pixel grid ``K`` refers to.
        R: ``(3, 3)`` or ``(B, 3, 3)`` world-to-camera rotation. Default the identity.
        t: ``(3,)`` or ``(B, 3)`` translation. Default zero.
        znear: smallest drawable depth. Default ``1e-3`` (world units).

    Shapes:
        ``project``: ``(B, N, 3) -> (B, N, 3)``.
    """

    is_perspective = True
    _param_names = ("K", "R", "t")

    def __init__(self, K, image_size, R=None, t=(0.0, 0.0, 0.0), znear: float = 1e-3) -> None:
        k = K if isinstance(K, torch.Tensor) else torch.as_tensor(_finite_numbers(K, "K"), dtype=torch.float32)
        if k.shape[-2:] == (3, 3):
            k = torch.stack([k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2]], dim=-1)  # (..., 4)
        self.K = _param(k, "K", (4,))
        if not isinstance(K, torch.Tensor):
            _nonzero(self.K[:, :2].numpy(), "K", "focal lengths f_x, f_y (zero maps every point onto the "
                     "principal point's row or column)")
        self.image_size = image_size_pair(image_size)
        self.R = _rotation(R)
        self.t = _param(t, "t", (3,))
        znear = float(znear)
        if not (math.isfinite(znear) and znear > 0):
            raise ValueError(f"znear: expected a positive finite number, got {znear}")
        self.znear = znear
        self.batch_size

    @classmethod
    def look_at(
        cls,
        eye: Sequence[float],
        at: Sequence[float] = (0.0, 0.0, 0.0),
        up: Sequence[float] = (0.0, 1.0, 0.0),
        fov_degrees: float = 30.0,
        image_size=256,
        znear: float = 1e-3,
    ) -> "PerspectiveCamera":
        """A camera at ``eye`` looking at ``at`` with ``up`` pointing up in the image.

        ``fov_degrees`` is the vertical field of view; pixels are square and the
        principal point is the image centre ``((W - 1) / 2, (H - 1) / 2)``.
        """
        h, w = image_size_pair(image_size)
        vecs = {}
        for name, value in (("eye", eye), ("at", at), ("up", up)):
            arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, np.float64)
            if arr.shape != (3,) or not np.isfinite(arr).all():
                raise ValueError(f"{name}: expected 3 finite coordinates, got {value!r}")
            vecs[name] = torch.as_tensor(arr)
        eye_t = vecs["eye"]
        forward = vecs["at"] - eye_t
        if float(forward.norm()) == 0:
            raise ValueError(f"eye, at: expected two distinct 3D points, got {eye!r} and {at!r}")
        forward = forward / forward.norm()
        right = torch.linalg.cross(forward, vecs["up"])
        if float(right.norm()) < 1e-9:
            raise ValueError(f"up: expected a direction not parallel to the viewing direction, got {up!r}")
        right = right / right.norm()
        down = torch.linalg.cross(forward, right)
        R = torch.stack([right, down, forward])  # (3, 3) rows: camera x (right), y (down), z (forward)
        t = -R @ eye_t
        if not 0 < fov_degrees < 180:
            raise ValueError(f"fov_degrees: expected a number in (0, 180), got {fov_degrees}")
        f = 0.5 * h / math.tan(math.radians(fov_degrees) / 2)
        K = torch.tensor([f, f, (w - 1) / 2, (h - 1) / 2])
        return cls(K, (h, w), R=R.float(), t=t.float(), znear=znear)

    def _project(self, points, K, R, t):
        B = max(points.shape[0], K.shape[0], R.shape[0], t.shape[0])
        pc = torch.einsum("bij,bnj->bni", R.expand(B, 3, 3), points.expand(B, -1, 3)) + t.unsqueeze(1)  # (B, N, 3)
        z = pc[..., 2]  # (B, N)
        k = K.unsqueeze(1)  # (B|1, 1, 4)
        # A point on the camera plane (z = 0) projects to infinity, as before, but without gradient: x / z's
        # backward gave 0 * inf = NaN there, for a vertex no drawn face uses (faces behind znear are culled)
        on_plane = (z == 0).unsqueeze(-1)  # (B, N, 1)
        xy = torch.where(on_plane, (pc[..., :2] / z.unsqueeze(-1)).detach(),
                         pc[..., :2] / torch.where(on_plane, 1.0, z.unsqueeze(-1)))  # (B, N, 2)
        u = k[..., 0] * xy[..., 0] + k[..., 2]  # (B, N) pixel column, centres on integers
        v = k[..., 1] * xy[..., 1] + k[..., 3]  # (B, N) pixel row
        h, w = self.image_size
        x = (u + 0.5) / w * 2.0 - 1.0
        y = 1.0 - (v + 0.5) / h * 2.0
        return torch.stack([x, y, z], dim=-1)  # (B, N, 3)

    def __repr__(self) -> str:
        return f"PerspectiveCamera(batch_size={self.batch_size}, image_size={self.image_size}, znear={self.znear})"
