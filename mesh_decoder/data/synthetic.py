r"""Synthetic morphable faces: interpretable parameters -> vertices and colours.

A face is the analytic surface of :func:`mesh_decoder.mesh.templates.face_surface`
evaluated at the template's canonical coordinates, so it works on any face or head
template (any vertex count) and keeps dense correspondence: vertex ``i`` is the
same anatomical point on every face. Each face has

* **interpretable parameters** in ``[0, 1]`` (:data:`PARAM_NAMES`): 14 of identity
  (widths, lengths and sizes of the facial features), 3 of expression (``jaw_open``
  rotates the lower face about a horizontal axis in front of the ears, ``smile`` lifts
  the mouth corners up, out and back, ``brow_raise`` lifts the brows) and 5 of
  appearance (skin tone, redness, lip colour, hair darkness, eye colour). Identity
  and appearance at ``0.5`` and expression at ``0`` give the template itself;
* **detail coefficients** (:attr:`FaceParams.detail`), one per local bump of the
  generator: 48 radial Gaussian bumps on the face and 16 on the whole head, each
  with a random centre, width (8 to 22 mm) and amplitude (1 to 2.5 mm per unit
  coefficient), and 16 broad bumps of skin brightness. The coefficients are
  standard normal truncated to ``[-3, 3]``. They make the shapes not exactly
  low-rank, as real scans are not; they are the generator's own, not interpretable.

The bump layout is fixed by the generator ``seed``; parameters are drawn by
:meth:`SyntheticFaces.sample_params`. :data:`GENERATOR_VERSION` names this model: it
changes whenever the output for the same seeds and parameters would change.

Splits follow COMA (Ranjan et al., "Generating 3D faces using Convolutional Mesh
Autoencoders", ECCV 2018): a random *interpolation* split, and an *extrapolation*
split that holds out a range of one parameter (by default the widest mouths,
``jaw_open > 0.7``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from .._checks import check_int, int_value
from ..mesh.container import Mesh
from ..mesh.landmarks import EYE_HALF_HEIGHT, EYE_HALF_WIDTH, EYE_S
from ..mesh.templates import R0, canonical_coordinates, face_surface, face_template

__all__ = [
    "GENERATOR_VERSION",
    "IDENTITY_NAMES",
    "EXPRESSION_NAMES",
    "APPEARANCE_NAMES",
    "PARAM_NAMES",
    "FaceParams",
    "SyntheticFaces",
    "interpolation_split",
    "extrapolation_split",
]

#: Version of the generative model; stored with every dataset and model trained on it.
GENERATOR_VERSION = "synthetic-faces-1"

IDENTITY_NAMES: tuple[str, ...] = (
    "face_width", "face_depth", "forehead_height", "chin_length", "jaw_width", "cheek_fullness",
    "eye_size", "eye_spacing", "brow_height", "nose_length", "nose_width", "nose_projection",
    "lip_thickness", "mouth_width",
)
EXPRESSION_NAMES: tuple[str, ...] = ("jaw_open", "smile", "brow_raise")
APPEARANCE_NAMES: tuple[str, ...] = ("skin_tone", "redness", "lip_colour", "hair_darkness", "eye_colour")
PARAM_NAMES: tuple[str, ...] = IDENTITY_NAMES + EXPRESSION_NAMES + APPEARANCE_NAMES

# parameter -> (control of face_surface, control value at 0, at 1); linear in between.
_SHAPE_CONTROLS: dict[str, tuple[str, float, float]] = {
    "face_width": ("width", 0.92, 1.08),
    "face_depth": ("depth", 0.92, 1.08),
    "forehead_height": ("forehead", 0.85, 1.15),
    "chin_length": ("chin", 0.85, 1.15),
    "jaw_width": ("jaw", 0.9, 1.1),
    "cheek_fullness": ("cheek", 0.3, 1.7),
    "eye_size": ("eye_size", 0.88, 1.12),
    "eye_spacing": ("eye_spacing", -3.0, 3.0),
    "brow_height": ("brow_height", -3.0, 3.0),
    "nose_length": ("nose_length", 0.88, 1.12),
    "nose_width": ("nose_width", 0.85, 1.15),
    "nose_projection": ("nose_projection", 0.8, 1.2),
    "lip_thickness": ("lip", 0.6, 1.4),
    "mouth_width": ("mouth_width", 0.88, 1.12),
    "jaw_open": ("jaw_open", 0.0, math.radians(18.0)),
    "smile": ("smile", 0.0, 1.0),
    "brow_raise": ("brow_raise", 0.0, 1.0),
}

_N_FACE_BUMPS = 48
_N_HEAD_BUMPS = 16
_N_COLOUR_BUMPS = 16
DETAIL_SIZE = _N_FACE_BUMPS + _N_HEAD_BUMPS + _N_COLOUR_BUMPS


# ======================================================================= parameters
@dataclass(eq=False)
class FaceParams:
    """Parameters of ``N`` synthetic faces.

    Attributes:
        values: ``(N, P)`` float64 in ``[0, 1]``, columns :data:`PARAM_NAMES`.
        detail: ``(N, K)`` float64 coefficients of the generator's local bumps
            (``K = 80``: 64 of shape, 16 of colour); zeros for smooth faces.

    ``params["nose_width"]`` is a column ``(N,)``; ``params[idx]`` (int, slice,
    index or mask array) is a subset.
    """

    values: np.ndarray
    detail: np.ndarray = field(default=None)  # type: ignore[assignment]
    NAMES: ClassVar[tuple[str, ...]] = PARAM_NAMES

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(PARAM_NAMES):
            raise ValueError(f"values: expected shape (N, {len(PARAM_NAMES)}), got {values.shape}")
        if not np.isfinite(values).all() or values.min(initial=0.0) < 0.0 or values.max(initial=0.0) > 1.0:
            bad = np.flatnonzero((~np.isfinite(values) | (values < 0) | (values > 1)).any(axis=0))
            raise ValueError(
                f"values: expected finite values in [0, 1], found {values[:, bad[0]].min()}..{values[:, bad[0]].max()} "
                f"in column {PARAM_NAMES[bad[0]]!r}"
            )
        if self.detail is None:
            detail = np.zeros((values.shape[0], DETAIL_SIZE))
        else:
            detail = np.asarray(self.detail, dtype=np.float64)
        if detail.shape != (values.shape[0], DETAIL_SIZE):
            raise ValueError(f"detail: expected shape ({values.shape[0]}, {DETAIL_SIZE}), got {detail.shape}")
        if not np.isfinite(detail).all():
            raise ValueError("detail: expected finite values, got NaN or inf")
        self.values, self.detail = values, detail

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __getitem__(self, key):
        if isinstance(key, str):
            return self.values[:, _column(key)]
        if isinstance(key, numbers.Integral):
            key = [int(key)]
        return FaceParams(self.values[key], self.detail[key])

    @property
    def names(self) -> tuple[str, ...]:
        return PARAM_NAMES

    def to_array(self) -> np.ndarray:
        """The interpretable parameters, ``(N, P)`` (a copy)."""
        return self.values.copy()

    @classmethod
    def from_array(cls, values, detail=None) -> "FaceParams":
        """From ``(N, P)`` (or ``(P,)``) values; ``detail`` defaults to zeros (smooth faces)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[None]
            if detail is not None:
                detail = np.asarray(detail, dtype=np.float64).reshape(1, -1)
        return cls(values, detail)

    @classmethod
    def neutral(cls, n: int = 1) -> "FaceParams":
        """``n`` template faces: identity and appearance 0.5, expression 0, no detail."""
        n = _count(n, "n")
        values = np.full((n, len(PARAM_NAMES)), 0.5)
        for name in EXPRESSION_NAMES:
            values[:, _column(name)] = 0.0
        return cls(values)

    def replace(self, **columns) -> "FaceParams":
        """A copy with some columns set to a scalar or an ``(N,)`` array."""
        values = self.values.copy()
        for name, val in columns.items():
            values[:, _column(name)] = val
        return FaceParams(values, self.detail.copy())

    def as_dict(self) -> dict[str, np.ndarray]:
        """name -> ``(N,)`` column."""
        return {name: self.values[:, i].copy() for i, name in enumerate(PARAM_NAMES)}


def _column(name: str) -> int:
    try:
        return PARAM_NAMES.index(name)
    except ValueError:
        raise KeyError(f"unknown face parameter {name!r}; expected one of {list(PARAM_NAMES)}") from None


def _count(n, name: str, minimum: int = 0) -> int:
    """``n`` as an int >= ``minimum``: a ``TypeError`` for a float, bool, string or ``None``, a ``ValueError`` below."""
    kind = "a non-negative int" if minimum == 0 else f"an int >= {minimum}"
    count = int_value(n, name, kind)
    if count < minimum:
        raise ValueError(f"{name}: expected {kind}, got {n!r}")
    return count


def _as_params(params) -> FaceParams:
    if isinstance(params, FaceParams):
        return params
    if isinstance(params, np.ndarray):
        return FaceParams.from_array(params)
    raise TypeError(f"params: expected FaceParams or an (N, P) numpy array, got {type(params).__name__}")


def _rng(rng) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool) and int(rng) >= 0:
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng: expected a numpy Generator or a non-negative int seed, got {rng!r}")


# ======================================================================== generator
def _g(x):
    return np.exp(-0.5 * x * x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class SyntheticFaces:
    """A morphable face model with interpretable parameters (see the module docstring).

    Args:
        template: a face or head template from :mod:`mesh_decoder.mesh.templates`
            (any vertex count; the geometry is computed from its canonical
            coordinates). Default ``None``: ``face_template(5023, seed=0)``.
        seed: fixes the layout of the local detail bumps. Default ``0``.

    Example:
        >>> gen = SyntheticFaces()
        >>> params = gen.sample_params(8, rng=1)
        >>> vertices, colors = gen.generate(params)  # (8, 5023, 3) mm, (8, 5023, 3) in [0, 1]
    """

    version: ClassVar[str] = GENERATOR_VERSION

    def __init__(self, template: Mesh | None = None, seed: int = 0):
        if template is None:
            template = face_template(5023, seed=0)
        if not isinstance(template, Mesh):
            raise TypeError(f"template: expected a mesh_decoder Mesh, got {type(template).__name__}")
        seed = check_int(seed, "seed", minimum=0)
        self.template = template
        self.seed = int(seed)
        canon = canonical_coordinates(template)  # (V, 2)
        self._s, self._y = canon[:, 0].copy(), canon[:, 1].copy()
        rng = np.random.default_rng([self.seed, 0x5F4CE])
        # shape bumps: 48 on the face (inside its parameter ellipse), 16 anywhere on the head
        t = rng.uniform(0.0, 2.0 * math.pi, _N_FACE_BUMPS)
        rad = np.sqrt(rng.uniform(0.0, 1.0, _N_FACE_BUMPS))
        cs = np.concatenate([100.0 * rad * np.cos(t), rng.uniform(-math.pi * R0, math.pi * R0, _N_HEAD_BUMPS)])
        cy = np.concatenate([-5.0 + 95.0 * rad * np.sin(t), rng.uniform(-120.0, 110.0, _N_HEAD_BUMPS)])
        sigma = rng.uniform(8.0, 22.0, cs.size)
        amp = rng.uniform(1.0, 2.5, cs.size)
        self._shape_basis = amp * self._bumps(cs, cy, sigma)  # (V, 64) mm per unit coefficient
        ct = rng.uniform(0.0, 2.0 * math.pi, _N_COLOUR_BUMPS)
        crad = np.sqrt(rng.uniform(0.0, 1.0, _N_COLOUR_BUMPS))
        self._colour_basis = rng.uniform(0.015, 0.03, _N_COLOUR_BUMPS) * self._bumps(
            100.0 * crad * np.cos(ct), -5.0 + 95.0 * crad * np.sin(ct), rng.uniform(15.0, 40.0, _N_COLOUR_BUMPS)
        )  # (V, 16) relative brightness per unit coefficient
        self._check_template()

    def _check_template(self) -> None:
        """The neutral face must be the template (the module's promise). The generator places its features by
        the built-in templates' coordinates in mm: on another mesh, or one in metres or moved, it made faces
        off the template by 50 to 100 units, and training on them went on without a word."""
        neutral = self.generate(FaceParams.neutral(1))[0][0].astype(np.float64)  # (V, 3)
        size = float(np.linalg.norm(np.ptp(self.template.vertices, axis=0)))  # bounding-box diagonal
        miss = float(np.abs(neutral - self.template.vertices).max())
        if not miss <= 1e-3 * max(size, 1e-12):
            raise ValueError(
                f"template: expected a built-in face or head template (the synthetic generator's neutral face is "
                f"that template, in mm), got one its neutral face misses by {miss:.3g} (bounding box {size:.3g}): "
                "another mesh, or in other units or place? Train on meshes of your own with a folder source")

    def _bumps(self, cs, cy, sigma) -> np.ndarray:
        """Gaussian bumps at canonical centres, periodic in ``s``. Shapes: ``(K,)`` -> ``(V, K)``."""
        period = 2.0 * math.pi * R0
        ds = self._s[:, None] - cs[None, :]  # (V, K)
        ds -= period * np.round(ds / period)  # shortest way round the head
        dy = self._y[:, None] - cy[None, :]
        return np.exp(-0.5 * (ds**2 + dy**2) / sigma[None, :] ** 2)

    # ------------------------------------------------------------------ properties
    @property
    def num_vertices(self) -> int:
        return self.template.num_vertices

    @property
    def param_names(self) -> tuple[str, ...]:
        return PARAM_NAMES

    @property
    def num_params(self) -> int:
        return len(PARAM_NAMES)

    @property
    def detail_size(self) -> int:
        return DETAIL_SIZE

    def __repr__(self) -> str:
        return f"SyntheticFaces(V={self.num_vertices}, seed={self.seed}, version={GENERATOR_VERSION!r})"

    # -------------------------------------------------------------------- sampling
    def sample_params(self, n: int, rng=None) -> FaceParams:
        """Draw ``n`` faces: every parameter uniform in ``[0, 1]``, detail truncated normal.

        Args:
            n: number of faces (``>= 0``).
            rng: a ``numpy.random.Generator`` or an int seed. Default ``None``: the
                generator's ``seed``. The same seed gives the same parameters.

        The named parameters of all ``n`` faces are drawn first, then their detail:
        face ``i``'s named parameters are the same for any ``n > i``, its detail (and
        so the face) is not. Draw once and take a prefix to keep faces across sizes.
        """
        n = _count(n, "n")
        rng = _rng(self.seed if rng is None else rng)
        values = rng.uniform(0.0, 1.0, (int(n), len(PARAM_NAMES)))
        detail = np.clip(rng.standard_normal((int(n), DETAIL_SIZE)), -3.0, 3.0)
        return FaceParams(values, detail)

    def controls(self, params) -> dict[str, np.ndarray]:
        """The :func:`~mesh_decoder.mesh.templates.face_surface` controls of ``params`` (no detail)."""
        params = _as_params(params)
        out = {}
        for name, (control, lo, hi) in _SHAPE_CONTROLS.items():
            out[control] = lo + (hi - lo) * params[name]
        return out

    # ------------------------------------------------------------------ generation
    def generate(self, params, chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
        """Vertices and colours of the faces.

        Args:
            params: :class:`FaceParams` (or an ``(N, P)`` array: no detail).
            chunk: faces computed at once (bounds memory). Default ``128``.

        Returns:
            ``vertices (N, V, 3)`` float32 in mm and ``colors (N, V, 3)`` float32 in ``[0, 1]``.

        Shapes:
            ``params (N, P)`` -> ``(N, V, 3)``, ``(N, V, 3)``.
        """
        params = _as_params(params)
        chunk = _count(chunk, "chunk", 1)
        n, v = len(params), self.num_vertices
        vertices = np.empty((n, v, 3), dtype=np.float32)
        colors = np.empty((n, v, 3), dtype=np.float32)
        for start in range(0, n, chunk):
            part = params[start:start + chunk]
            vertices[start:start + len(part)] = self._shape(part)
            colors[start:start + len(part)] = self._colour(part)
        return vertices, colors

    def _shape(self, params: FaceParams) -> np.ndarray:
        """``(N, V, 3)`` float64 positions."""
        controls = self.controls(params)
        controls["detail"] = params.detail[:, : _N_FACE_BUMPS + _N_HEAD_BUMPS] @ self._shape_basis.T  # (N, V)
        return face_surface(self._s, self._y, controls)

    def _colour(self, params: FaceParams) -> np.ndarray:
        """``(N, V, 3)`` float64 RGB in ``[0, 1]``, a smooth function of canonical coordinates."""
        s, y = self._s, self._y  # (V,)
        col = lambda name: params[name][:, None, None]  # noqa: E731  (N, 1, 1)
        light = np.array([0.96, 0.80, 0.70])
        dark = np.array([0.34, 0.21, 0.15])
        skin = light + (dark - light) * col("skin_tone")  # (N, 1, 3)
        theta = s / R0
        # redness of cheeks and nose
        red = sum(_g((s - e * 45.0) / 18.0) * _g((y + 25.0) / 15.0) for e in (1.0, -1.0))
        red = red + 0.7 * _g(s / 9.0) * _g((y + 36.0) / 8.0)  # (V,)
        rgb = skin * (1.0 + col("redness") * red[None, :, None] * np.array([0.10, -0.06, -0.06]))  # (N, V, 3)
        # broad brightness variation (detail)
        bright = params.detail[:, _N_FACE_BUMPS + _N_HEAD_BUMPS:] @ self._colour_basis.T  # (N, V)
        rgb = rgb * (1.0 + bright[..., None])
        # nostrils
        nostril = sum(_g((s - e * 8.0) / 3.0) * _g((y + 44.0) / 2.0) for e in (1.0, -1.0))  # (V,)
        rgb = rgb * (1.0 - 0.5 * nostril[None, :, None])
        # lips
        box = lambda x: np.exp(-(x**4))  # noqa: E731
        lips = np.maximum(box(s / 22.0) * _g((y + 57.5) / 3.0), box(s / 20.0) * _g((y + 67.5) / 3.4))
        lips = np.clip(1.6 * lips, 0.0, 1.0)[None, :, None]  # (1, V, 1)
        lip_rgb = (np.array([0.80, 0.42, 0.42]) + (np.array([0.52, 0.20, 0.24]) - np.array([0.80, 0.42, 0.42]))
                   * col("lip_colour")) * (0.55 + 0.45 * skin / light)
        rgb = rgb * (1.0 - lips) + lip_rgb * lips
        # hair and brows
        hair_rgb = np.array([0.35, 0.24, 0.16]) + (np.array([0.06, 0.05, 0.04]) - np.array([0.35, 0.24, 0.16])) \
            * col("hair_darkness")
        hairline = 80.0 - 70.0 * (1.0 - np.cos(theta))  # above the forehead, down to the nape behind
        hair = _sigmoid((y - hairline) / 2.5)  # (V,)
        brow = sum(
            _g((y - (16.5 - 0.012 * (s - e * EYE_S) ** 2)) / 2.0) * box((s - e * EYE_S) / 17.0) for e in (1.0, -1.0)
        )
        hair = np.clip(hair + 0.85 * brow, 0.0, 1.0)[None, :, None]
        rgb = rgb * (1.0 - hair) + hair_rgb * hair
        # eyes: sclera, iris, pupil
        for e in (1.0, -1.0):
            ex, ey = s - e * EYE_S, y
            opening = _sigmoid((1.0 - (ex / EYE_HALF_WIDTH) ** 2 - (ey / EYE_HALF_HEIGHT) ** 2) * 8.0)[None, :, None]
            rho = np.hypot(ex, ey)
            iris = _sigmoid((5.0 - rho) * 2.0)[None, :, None] * opening
            pupil = _sigmoid((2.0 - rho) * 3.0)[None, :, None]
            iris_rgb = np.array([0.36, 0.22, 0.10]) + (np.array([0.30, 0.46, 0.62]) - np.array([0.36, 0.22, 0.10])) \
                * col("eye_colour")
            rgb = rgb * (1.0 - opening) + np.array([0.93, 0.91, 0.88]) * opening
            rgb = rgb * (1.0 - iris) + iris_rgb * iris
            rgb = rgb * (1.0 - pupil * opening) + 0.05 * pupil * opening
        return np.clip(rgb, 0.0, 1.0)


# ========================================================================== splits
def interpolation_split(n: int, seed: int = 0, test_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """A random split of ``range(n)``: ``round(test_fraction * n)`` test faces (Python's ``round``, halves to
    even). It permutes positions, so another ``n`` gives another split: over a folder of meshes (sorted names)
    adding or renaming a file moves most of the test set (training records the folder's version, and
    evaluation refuses a folder changed since).

    Returns:
        ``(train, test)`` sorted int64 index arrays, disjoint, covering ``range(n)``.
    """
    n = _count(n, "n")
    seed = _count(seed, "seed")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) \
            or not 0.0 <= float(test_fraction) <= 1.0:
        raise ValueError(f"test_fraction: expected a number in [0, 1], got {test_fraction!r}")
    order = np.random.default_rng([seed, 0x5917]).permutation(n)
    n_test = int(round(float(test_fraction) * n))
    return np.sort(order[n_test:]).astype(np.int64), np.sort(order[:n_test]).astype(np.int64)


def extrapolation_split(params, key: str = "jaw_open", threshold: float = 0.7) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a parameter range: test = faces with ``params[key] > threshold``.

    Args:
        params: :class:`FaceParams` or an ``(N, P)`` array (columns :data:`PARAM_NAMES`).
        key: the parameter. Default ``"jaw_open"``.
        threshold: default ``0.7``.

    Returns:
        ``(train, test)`` sorted int64 index arrays.
    """
    params = _as_params(params)
    column = params[key]  # (N,)
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise ValueError(f"threshold: expected a finite number, got {threshold!r}")
    test = column > float(threshold)
    return np.flatnonzero(~test).astype(np.int64), np.flatnonzero(test).astype(np.int64)
