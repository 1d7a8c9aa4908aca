"""What a fit is fitted to: registered meshes, scans / point clouds, 2D landmarks, photographs.

Each target is a small dataclass of float64 CPU tensors (the fit moves them to the
decoder's device and dtype); the constructors convert numpy arrays and check shapes
and values.

**Image coordinates.** 2D landmarks are in pixels ``(x, y)`` = (column, row), with
the centre of pixel ``(i, j)`` (row ``i`` from the top) at ``(j, i)``, the OpenCV
convention and that of :mod:`mesh_decoder.render.cameras`.

File formats read by :func:`load_target`:

* mesh files (``.obj``, ``.ply``, ``.off``): a *registered* mesh when it has the
  template's vertex count and faces (with its per-vertex colours, when the file has
  them, else those of the texture map it references, sampled at its UVs), otherwise a
  *scan* (its vertices and area-weighted vertex normals become a
  :class:`PointCloudTarget`; colours of a scan are not used);
* point clouds: ``.xyz`` / ``.txt`` (whitespace-separated rows ``x y z`` or
  ``x y z nx ny nz``) and ``.npy`` (an ``(N, 3)`` or ``(N, 6)`` float array, read with
  ``allow_pickle=False``);
* landmarks: ``.json``, ``{"image_size": [H, W], "landmarks": {"nose_tip": [x, y], ...},
  "weights": {"nose_tip": 1.0, ...}}`` (``weights`` optional), names being the
  template's landmark names;
* photographs: ``.png`` / ``.jpg`` / ``.jpeg``, read with Pillow (``pip install pillow``).
"""

from __future__ import annotations

import errno
import json
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .._checks import check_bool, load_npy, positive_int, real_number
from ..errors import MeshFileError
from ..mesh.container import Mesh
from ..render.render import read_image

__all__ = [
    "MeshTarget",
    "PointCloudTarget",
    "LandmarkTarget",
    "ImageTarget",
    "Target",
    "load_target",
    "load_landmarks",
    "save_landmarks",
    "read_image",
    "POINT_CLOUD_EXTENSIONS",
    "IMAGE_EXTENSIONS",
]

POINT_CLOUD_EXTENSIONS = (".xyz", ".txt", ".npy")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def real_tensor(value: Any, name: str) -> torch.Tensor:
    """``value`` (a tensor, array, list or number of integers or floats) as a detached tensor, on its
    device; ``TypeError`` naming ``name`` for text, bools, complex numbers and objects."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
    else:
        arr = np.asarray(value)
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TypeError(f"{name}: expected real numbers, got {type(value).__name__} of dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name}: expected real numbers, got {t.dtype}")
    return t


def _tensor(value: Any, name: str, cols: int | None, *, rows: int | None = None) -> torch.Tensor:
    """A finite float64 CPU tensor of shape ``(rows, cols)`` (``None``: any)."""
    t = real_tensor(value, name).to("cpu", torch.float64)
    if cols is not None:
        if t.dim() != 2 or t.shape[1] != cols or (rows is not None and t.shape[0] != rows):
            want = f"({'N' if rows is None else rows}, {cols})"
            raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
    elif rows is not None and (t.dim() != 1 or t.shape[0] != rows):
        raise ValueError(f"{name}: expected shape ({rows},), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    if t.numel() and float(t.abs().max()) > _FLOAT32_MAX:  # fits run in the model's dtype, float32 by default
        raise ValueError(f"{name}: expected values within float32 range (|x| <= {_FLOAT32_MAX:.4g}), got "
                         f"{float(t.abs().max()):.4g}")
    return t.contiguous()


def _check_spread(points: torch.Tensor, weights: torch.Tensor | None, name: str) -> None:
    """Refuse points (those of positive weight) that all coincide: a face fitted to them collapses to a point.

    Shapes: ``points (N, D)``, ``weights (N,)``.
    """
    used = points if weights is None else points[weights > 0]
    if bool((used == used[0]).all()):
        which = "points" + (" of positive weight" if weights is not None else "")
        found = f"all {used.shape[0]} {which}" if used.shape[0] > 1 else f"one point{which[6:]}"
        raise ValueError(f"{name}: expected at least two distinct points, got {found} at "
                         f"{tuple(round(v, 6) for v in used[0].tolist())}")


def _weights(value: Any, n: int, name: str = "weights") -> torch.Tensor | None:
    if value is None:
        return None
    w = _tensor(value, name, None, rows=n)
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"{name}: expected non-negative values with a positive sum, got min {float(w.min())}, "
                         f"sum {float(w.sum())}")
    return w


def _image_size(value: Any) -> tuple[int, int]:
    """``H`` or ``(H, W)`` of positive whole numbers (ints, or floats with integral values) -> ``(H, W)``."""
    from ..render.cameras import image_size_pair

    pair = isinstance(value, (list, tuple))
    sizes = []
    want = "image_size: expected an int or a pair (H, W) of positive whole numbers of pixels"
    for v in (value if pair else (value,)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer, float, np.floating)):
            # a string, a bool, None: the wrong type (a TypeError), named
            raise TypeError(f"{want}, got {type(v).__name__} {v!r}" + (f" in {value!r}" if pair else ""))
        if not (isinstance(v, (int, np.integer)) or (math.isfinite(v) and float(v).is_integer())):
            raise ValueError(f"{want}, got {value!r}")  # a fraction, NaN or infinity
        if abs(v) > _FLOAT32_MAX:  # a fit in float32 would overflow
            raise ValueError(f"image_size: expected at most {_FLOAT32_MAX:.4g} pixels per side, got {value!r}")
        sizes.append(int(v))
    return image_size_pair(tuple(sizes) if pair else sizes[0])


@dataclass
class MeshTarget:
    """A registered mesh: target vertex ``i`` corresponds to template vertex ``i``.

    Args:
        vertices: ``(V, 3)`` positions (any units; the fitted similarity absorbs scale).
        weights: ``(V,)`` non-negative per-vertex weights of the vertex loss (``0`` for
            missing or unreliable vertices), or ``None`` (default) for all 1. They weigh
            the colour loss too.
        colors: ``(V, 3)`` per-vertex RGB in ``[0, 1]``, or ``None`` (default). With a
            decoder that has per-vertex colours the fit adds the colour loss: the ``color``
            group fits a PCA colour latent to them, a joint decoder's colours follow its
            latent (the ``shape`` group).

    Shapes:
        ``vertices (V, 3)``, ``weights (V,)``, ``colors (V, 3)``.
    """

    vertices: torch.Tensor
    weights: torch.Tensor | None = None
    colors: torch.Tensor | None = None
    kind = "mesh"

    def __post_init__(self) -> None:
        self.vertices = _tensor(self.vertices, "vertices", 3)
        if self.vertices.shape[0] < 3:
            raise ValueError(f"vertices: expected at least 3 vertices, got {self.vertices.shape[0]}")
        self.weights = _weights(self.weights, self.vertices.shape[0])
        _check_spread(self.vertices, self.weights, "vertices")
        if self.colors is not None:
            c = _tensor(self.colors, "colors", 3, rows=self.vertices.shape[0])
            if float(c.min()) < 0 or float(c.max()) > 1:
                raise ValueError(f"colors: expected RGB values in [0, 1], got range [{float(c.min())}, "
                                 f"{float(c.max())}]")
            self.colors = c


@dataclass
class PointCloudTarget:
    """An unregistered scan or point cloud, fitted by iterative closest points.

    Correspondences are recomputed from the current fit every
    ``correspondence_every`` iterations: each scan point is paired with its exact
    closest point on the fitted surface (scan to model; point-to-point and
    point-to-plane terms) and, with ``model_to_scan``, each fitted vertex with its
    nearest scan point (model to scan; point-to-plane term). Pairs farther apart than
    ``trim`` times the median pair distance of their direction are dropped (outliers,
    and the parts of the face a partial scan does not cover).

    Args:
        points: ``(N, 3)`` positions.
        normals: ``(N, 3)`` normals of the points, or ``None`` (default). When given
            the model-to-scan point-to-plane term uses them; otherwise it uses the
            fitted surface's vertex normals.
        correspondence_every: iterations between correspondence updates (default 10).
        trim: outlier threshold in median distances (default 5.0); ``inf`` keeps all pairs.
        model_to_scan: also pair every fitted vertex with a scan point (default ``True``).
            Turn off for scans that cover only part of the template.

    Shapes:
        ``points (N, 3)``, ``normals (N, 3)``.
    """

    points: torch.Tensor
    normals: torch.Tensor | None = None
    correspondence_every: int = 10
    trim: float = 5.0
    model_to_scan: bool = True
    kind = "points"

    def __post_init__(self) -> None:
        self.points = _tensor(self.points, "points", 3)
        if self.points.shape[0] < 3:
            raise ValueError(f"points: expected at least 3 points, got {self.points.shape[0]}")
        _check_spread(self.points, None, "points")
        if self.normals is not None:
            n = _tensor(self.normals, "normals", 3, rows=self.points.shape[0])
            length = torch.linalg.vector_norm(n, dim=1, keepdim=True)
            self.normals = torch.where(length > 0, n / length.clamp(min=1e-300), n)
        self.correspondence_every = positive_int(self.correspondence_every, "correspondence_every")
        trim = real_number(self.trim)
        if trim is None or not trim > 0:
            raise ValueError(f"trim: expected a positive number (or inf), got {self.trim!r}")
        self.trim = trim
        self.model_to_scan = check_bool(self.model_to_scan, "model_to_scan")


@dataclass
class LandmarkTarget:
    """2D landmarks in an image, named after the template's landmarks.

    Args:
        points: ``(K, 2)`` pixel positions ``(x, y)`` (column, row; module docstring).
        names: ``K`` template landmark names, in the order of ``points``.
        image_size: ``(H, W)`` (or one int) of the image the pixels refer to.
        weights: ``(K,)`` non-negative weights (detector confidences), or ``None`` (default).

    Shapes:
        ``points (K, 2)``, ``weights (K,)``.
    """

    points: torch.Tensor
    names: Sequence[str]
    image_size: tuple[int, int]
    weights: torch.Tensor | None = None
    kind = "landmarks"

    def __post_init__(self) -> None:
        self.points = _tensor(self.points, "points", 2)
        if isinstance(self.names, str):
            raise TypeError("names: expected a sequence of landmark names, got one string")
        try:
            self.names = tuple(str(n) for n in self.names)
        except TypeError:
            raise TypeError(f"names: expected a sequence of landmark names, got {type(self.names).__name__}") from None
        k = int(self.points.shape[0])
        if len(self.names) != k:
            raise ValueError(f"names: expected {k} names (one per point), got {len(self.names)}")
        if len(set(self.names)) != k:
            dup = sorted({n for n in self.names if self.names.count(n) > 1})
            raise ValueError(f"names: expected distinct names, got duplicates {dup}")
        if k < 4:
            raise ValueError(f"points: expected at least 4 landmarks to fit a pose, got {k}")
        self.image_size = _image_size(self.image_size)
        h, w = self.image_size
        # a landmark may lie outside the image (a cropped face), but not beyond another image's width of it:
        # such points are in other units or of another image size, and a fit chased them (RMS 1.7e5 px)
        x, y = self.points[:, 0], self.points[:, 1]
        far = torch.nonzero((x < -w) | (x > 2 * w) | (y < -h) | (y > 2 * h)).flatten()
        if far.numel():
            i = int(far[0])
            raise ValueError(f"points: expected pixels (x, y) of the {h} x {w} image, within one image size of it, "
                             f"got {self.names[i]} at ({float(x[i]):g}, {float(y[i]):g}) ({far.numel()} such "
                             "landmarks): another image size, or coordinates not in pixels?")
        self.weights = _weights(self.weights, k)
        _check_spread(self.points, self.weights, "points")
        extent = max(float(x.max() - x.min()), float(y.max() - y.min()))
        if extent <= 1.0 < max(h, w) / 8:  # a face within one pixel of an image: fractions of its size
            raise ValueError(f"points: expected pixels (x, y) of the {h} x {w} image, got all {k} landmarks within "
                             f"{extent:.3g} pixels of each other: fractions of the image size? multiply x by {w} "
                             f"and y by {h}")

    def subset(self, names: Sequence[str]) -> "LandmarkTarget":
        """The landmarks called ``names`` (in that order)."""
        index = {n: i for i, n in enumerate(self.names)}
        missing = [n for n in names if n not in index]
        if missing:
            raise ValueError(f"names: {missing} are not among this target's landmarks {list(self.names)}")
        rows = torch.tensor([index[n] for n in names], dtype=torch.int64)
        return LandmarkTarget(self.points[rows], list(names), self.image_size,
                              None if self.weights is None else self.weights[rows])


@dataclass
class ImageTarget:
    """A photograph, fitted through the differentiable renderer (optionally with its landmarks).

    Args:
        image: ``(3, H, W)`` RGB in ``[0, 1]`` (or ``(H, W, 3)`` uint8 / float, converted).
        mask: ``(H, W)`` bool: the pixels of the face the photometric loss may use,
            or ``None`` (default) for every pixel the fitted face covers. Integers
            (non-zero: face) and floats of only 0 and 1 are converted; a soft mask is refused.
            Without a mask, background pixels the face comes to cover count too (and are
            not in the gradient): on a bright or busy background, a face mask lets the
            photometric stage refine the fit rather than stop at its start (a stage never
            ends worse than it began).
        landmarks: a :class:`LandmarkTarget` of the same image size, or ``None``.
            Landmarks initialise the pose and keep it in place while the
            photometric term refines it (the renderer has no silhouette gradients).

    Shapes:
        ``image (3, H, W)``, ``mask (H, W)``.
    """

    image: torch.Tensor
    mask: torch.Tensor | None = None
    landmarks: LandmarkTarget | None = None
    kind = "image"

    def __post_init__(self) -> None:
        img = self.image
        if isinstance(img, np.ndarray):
            if img.ndim == 3 and img.shape[2] in (3, 4) and img.shape[0] not in (3, 4):
                img = img[..., :3].transpose(2, 0, 1)  # (3, H, W) from channels-last
            if img.dtype == np.uint8:
                img = img.astype(np.float64) / 255.0
        elif isinstance(img, torch.Tensor) and img.dtype == torch.uint8:
            img = img.double() / 255.0
        img = _tensor(img, "image", None)
        if img.dim() != 3 or img.shape[0] != 3:
            raise ValueError(f"image: expected shape (3, H, W) (or (H, W, 3) as a numpy array), got {tuple(img.shape)}")
        if img.numel() == 0:
            raise ValueError(f"image: expected at least one pixel, got shape {tuple(np.shape(self.image))}")
        if float(img.min()) < 0 or float(img.max()) > 1:
            raise ValueError(f"image: expected values in [0, 1], got range [{float(img.min())}, {float(img.max())}]")
        self.image = img.contiguous()
        h, w = int(img.shape[1]), int(img.shape[2])
        if self.mask is not None:
            m = _mask(self.mask)
            if tuple(m.shape) != (h, w):
                raise ValueError(f"mask: expected shape ({h}, {w}) (the image's), got {tuple(m.shape)}")
            self.mask = m
            if not bool(self.mask.any()):
                raise ValueError("mask: expected at least one pixel of the face, got an empty mask")
        if self.landmarks is not None:
            if not isinstance(self.landmarks, LandmarkTarget):
                raise TypeError(f"landmarks: expected a LandmarkTarget, got {type(self.landmarks).__name__}")
            if self.landmarks.image_size != (h, w):
                raise ValueError(
                    f"landmarks: expected image size {(h, w)} (the image's), got {self.landmarks.image_size}"
                )

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.image.shape[1]), int(self.image.shape[2])


Target = MeshTarget | PointCloudTarget | LandmarkTarget | ImageTarget


def _mask(value: Any) -> torch.Tensor:
    """A face mask as a bool CPU tensor: bools as they are, integers non-zero for the face, floats only 0 or 1
    (a soft mask or NaN is refused rather than read as "face wherever non-zero")."""
    if isinstance(value, torch.Tensor):
        m = value.detach().cpu()
    else:
        arr = np.asarray(value)
        if not (arr.dtype == bool or np.issubdtype(arr.dtype, np.number)):
            raise TypeError(f"mask: expected a bool array or tensor, got dtype {arr.dtype}")
        m = torch.from_numpy(np.ascontiguousarray(arr))
    if m.is_complex():
        raise TypeError(f"mask: expected a bool array or tensor, got {m.dtype}")
    if m.is_floating_point() and m.numel() and not bool(((m == 0) | (m == 1)).all()):
        bad = m[(m != 0) & (m != 1)]
        raise ValueError(f"mask: expected bool values (or floats 0 and 1), got {float(bad[0])} among them; "
                         "threshold a soft mask first")
    return m.to(torch.bool)


# ============================================================================ files
def _vertex_normals_np(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (zero for vertices in no face). Shapes: ``(V, 3), (F, 3) -> (V, 3)``."""
    p = vertices[faces]  # (F, 3, 3)
    fn = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])  # (F, 3)
    n = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 0, n / np.maximum(length, 1e-300), 0.0)


def load_landmarks(path: str | os.PathLike) -> LandmarkTarget:
    """Read 2D landmarks from JSON (module docstring).

    Raises:
        FileNotFoundError: no such file.
        MeshFileError: an unreadable or malformed file (the message names it).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:  # as load_mesh: not a malformed file, a missing one
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MeshFileError(path, f"expected a JSON landmark file, could not read it ({exc})") from None
    if not isinstance(data, dict) or "landmarks" not in data or "image_size" not in data:
        raise MeshFileError(path, 'expected a JSON object with "image_size": [H, W] and "landmarks": {name: [x, y]}')
    marks = data["landmarks"]
    if not isinstance(marks, dict) or not marks:
        raise MeshFileError(
            path, f'"landmarks": expected a non-empty object name -> [x, y], got {type(marks).__name__}')
    names, points = [], []
    for name, xy in marks.items():
        if (not isinstance(xy, (list, tuple)) or len(xy) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xy)):
            raise MeshFileError(path, f'"landmarks"[{name!r}]: expected [x, y] numbers, got {xy!r}')
        names.append(name)
        points.append([float(xy[0]), float(xy[1])])
    weights = None
    if data.get("weights") is not None:
        w = data["weights"]
        if not isinstance(w, dict) or set(w) - set(names):
            raise MeshFileError(path, '"weights": expected an object name -> weight over the landmark names')
        for name, value in w.items():
            if (not isinstance(value, (int, float)) or isinstance(value, bool)
                    or not math.isfinite(value) or value < 0):
                raise MeshFileError(path, f'"weights"[{name!r}]: expected a finite number >= 0, got {value!r}')
        weights = [float(w.get(n, 1.0)) for n in names]
    size = data["image_size"]
    try:
        return LandmarkTarget(np.asarray(points), names, size, weights)
    except (TypeError, ValueError) as exc:
        raise MeshFileError(path, str(exc)) from None


def save_landmarks(target: LandmarkTarget, path: str | os.PathLike) -> None:
    """Write a :class:`LandmarkTarget` as JSON (the format :func:`load_landmarks` reads), atomically."""
    from .._atomic import atomic_write

    if not isinstance(target, LandmarkTarget):
        raise TypeError(f"target: expected a LandmarkTarget, got {type(target).__name__}")
    data: dict[str, Any] = {
        "image_size": list(target.image_size),
        "landmarks": {n: [float(x), float(y)] for n, (x, y) in zip(target.names, target.points.tolist())},
    }
    if target.weights is not None:
        data["weights"] = {n: float(w) for n, w in zip(target.names, target.weights.tolist())}
    with atomic_write(path, "w") as handle:
        json.dump(data, handle, indent=1)


def _read_points(path: str) -> np.ndarray:
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    want = "rows of 3 or 6 numbers (x y z [nx ny nz])"
    if ext == ".npy":
        arr = load_npy(path, want)
    else:
        try:
            with warnings.catch_warnings():  # an empty file: said below, in the error
                warnings.simplefilter("ignore", UserWarning)
                arr = np.loadtxt(path, dtype=np.float64, ndmin=2, comments="#")
        except (OSError, ValueError) as exc:
            raise MeshFileError(path, f"expected {want}, could not read them ({exc})") from None
    if arr.size == 0:
        raise MeshFileError(path, "expected rows of 3 or 6 numbers (x y z [nx ny nz]), found none")
    if arr.ndim != 2 or arr.shape[1] not in (3, 6) or arr.shape[0] < 3:
        raise MeshFileError(path, f"expected an (N, 3) or (N, 6) array with N >= 3, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise MeshFileError(path, f"expected real numbers (an integer or float array), got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise MeshFileError(path, "expected finite numbers")
    return arr.astype(np.float64)


def load_target(
    path: str | os.PathLike,
    template: Mesh | None = None,
    *,
    kind: str = "auto",
    landmarks: str | os.PathLike | LandmarkTarget | None = None,
    mask: str | os.PathLike | None = None,
) -> MeshTarget | PointCloudTarget | LandmarkTarget | ImageTarget:
    """Read a fitting target from a file (formats in the module docstring).

    Args:
        path: the file.
        template: the model's template; decides whether a mesh file is registered
            (same vertex count and faces) or a scan. Default ``None``: a scan.
        kind: ``"auto"`` (default: from the extension and, for meshes, the template),
            ``"mesh"`` (a registered mesh; the vertex count must be the template's),
            ``"points"`` (a scan), ``"landmarks"`` or ``"image"``.
        landmarks: for a photograph, its 2D landmarks (a JSON file or a
            :class:`LandmarkTarget`). Default ``None``.
        mask: for a photograph, an image file whose non-black pixels mark the face.
            Default ``None``.

    Returns:
        The target dataclass. A registered mesh's colours are its per-vertex colours or,
        without them, its texture map (:func:`~mesh_decoder.mesh.load_texture`) sampled at
        each vertex's UVs.
    """
    from ..mesh.io import MESH_EXTENSIONS, load_mesh

    kinds = ("auto", "mesh", "points", "landmarks", "image")
    if kind not in kinds:
        raise ValueError(f"kind: expected one of {kinds}, got {kind!r}")
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if kind == "auto":
        if ext in MESH_EXTENSIONS:
            kind = "mesh_or_points"
        elif ext in POINT_CLOUD_EXTENSIONS:
            kind = "points"
        elif ext == ".json":
            kind = "landmarks"
        elif ext in IMAGE_EXTENSIONS:
            kind = "image"
        else:
            known = MESH_EXTENSIONS + POINT_CLOUD_EXTENSIONS + (".json",) + IMAGE_EXTENSIONS
            raise MeshFileError(path, f"unknown target file type {ext or '(none)'!r}; expected one of {list(known)}")
    if kind == "landmarks":
        return load_landmarks(path)
    if kind == "image":
        image = read_image(path)
        lm = load_landmarks(landmarks) if isinstance(landmarks, (str, os.PathLike)) else landmarks
        m = None
        if mask is not None:
            m = read_image(mask).sum(0) > 0  # (H, W)
            if tuple(m.shape) != tuple(image.shape[1:]):
                raise MeshFileError(os.fspath(mask), f"expected a mask of {tuple(image.shape[1:])} pixels (the "
                                                     f"photograph's), got {tuple(m.shape)}")
        try:
            return ImageTarget(image, m, lm)
        except ValueError as exc:
            raise MeshFileError(path, str(exc)) from None
    if ext in POINT_CLOUD_EXTENSIONS:
        if kind == "mesh":
            raise MeshFileError(
                path, "a point cloud file cannot be a registered mesh; use a mesh file (.obj, .ply, .off)")
        arr = _read_points(path)
        return _file_target(path, PointCloudTarget, arr[:, :3], arr[:, 3:] if arr.shape[1] == 6 else None)
    if ext not in MESH_EXTENSIONS:
        files = "a mesh file" + (" or a point cloud" if kind == "points" else "")
        known = MESH_EXTENSIONS + (POINT_CLOUD_EXTENSIONS if kind == "points" else ())
        raise MeshFileError(path, f"expected {files} ({', '.join(known)}) for a {kind} target, got {ext!r}")
    mesh = load_mesh(path, topology=kind == "mesh")  # a scan's flipped or degenerate faces leave its points be
    registered = (
        template is not None
        and mesh.num_vertices == template.num_vertices
        and mesh.faces.shape == template.faces.shape
        and bool(np.array_equal(mesh.faces, template.faces))
    )
    if kind == "mesh" or (kind == "mesh_or_points" and registered):
        if template is not None and mesh.num_vertices != template.num_vertices:
            raise MeshFileError(path, f"a registered mesh needs the template's {template.num_vertices} vertices, "
                                      f"found {mesh.num_vertices}")
        colors = mesh.colors if mesh.colors is not None else _texture_colors(path, mesh)
        return _file_target(path, MeshTarget, mesh.vertices, None, colors)
    return _file_target(path, PointCloudTarget, mesh.vertices, _vertex_normals_np(mesh.vertices, mesh.faces))


def _texture_colors(path: str, mesh: Mesh) -> np.ndarray | None:
    """Per-vertex colours ``(V, 3)`` of a registered mesh from the texture map its file references, sampled
    bilinearly at each vertex's UVs (:class:`~mesh_decoder.nn.UVSampler`), or ``None`` without UVs or a
    texture. A texture that cannot be read is warned about (the shape is still fitted)."""
    from ..mesh.io import load_texture

    try:
        texture = load_texture(path)  # (H, W, 3) float32
    except (MeshFileError, ImportError) as exc:
        warnings.warn(f"{exc}; its colours are not fitted", stacklevel=3)
        return None
    if texture is None:
        return None
    if mesh.uv is None:
        warnings.warn(f"{path}: references a texture map but has no texture coordinates (vt) to read it at; its "
                      "colours are not fitted", stacklevel=3)
        return None
    from ..nn.texture import UVSampler

    with torch.no_grad():
        sampler = UVSampler.from_mesh(mesh).to(torch.float32)
        colors = sampler(torch.from_numpy(texture).permute(2, 0, 1))  # (V, 3)
    return colors.clamp(0, 1).double().numpy()


def _file_target(path: str, cls: type, *args: Any) -> MeshTarget | PointCloudTarget:
    """``cls(*args)``, its ``ValueError`` (e.g. points that all coincide) naming the file."""
    try:
        return cls(*args)
    except ValueError as exc:
        raise MeshFileError(path, str(exc)) from None
