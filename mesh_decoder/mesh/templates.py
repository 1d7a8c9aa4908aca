r"""Built-in templates: a procedural face, a head and an icosphere.

**Canonical coordinates.** The face and head templates are parameterised by
``(s, y)`` in millimetres: ``y`` is the height (eye line at ``y = 0``, ``+y`` up)
and ``s = R_0 \theta`` is arc length at the canonical radius ``R_0 = 85`` mm around
the vertical axis, with ``theta = atan2(x, z)`` (``theta = 0`` on the facial
midline, the face looking towards ``+z``). The surface is *radial*:

.. math::
    P(s, y) = \bigl(r(s, y) \sin\theta,\; y,\; r(s, y) \cos\theta\bigr),
    \qquad \theta = s / R_0,

so ``(s, y)`` is recovered exactly from a template's vertices
(:func:`canonical_coordinates`), and, since ``r > 0``, the map is an immersion whose
normal ``r\,\hat e_r - r_\theta \hat e_\theta - r r_y \hat y`` always points outwards.
``r`` is an elliptical head cross-section (half-width 78 mm, half-depth 95 mm in
front and 100 mm behind) shaped by a vertical profile, plus a sum of smooth bumps
and dents: forehead, temples, brow ridge, eye sockets and eyeballs, nose ridge, tip
and alae, upper jaw, lips, cheeks and cheekbones, chin. :func:`face_surface`
evaluates it for a batch of shape and expression controls, which is how
:mod:`mesh_decoder.data.synthetic` builds its morphable faces; the neutral controls
give the templates.

**Triangulation.** Points of the parameter domain are spread as blue noise (a
jittered hexagonal lattice, randomly thinned to the exact count and relaxed by a few
rounds of nearest-neighbour repulsion) with evenly spaced points on the domain
boundary, then triangulated by Delaunay (scipy/Qhull). A ring of "ghost" points just
outside the boundary keeps the boundary points off the convex hull, so no sliver
triangles appear along it; triangles that touch a ghost are dropped. The face domain
is an ellipse (half-axes 111 mm in ``s`` and 105 mm in ``y``); the head domain is the
strip ``y in [-125, 115]`` wrapped all the way round (periodic in ``s``), whose
triangulation is computed on a periodically extended copy of the points.

**Winding.** Faces are counter-clockwise in ``(s, y)``, which is counter-clockwise
seen from outside the surface (from ``+z`` for the face).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Mapping

import numpy as np

from ..errors import MeshValidationError
from .container import Mesh
from .landmarks import EYE_S, EYE_Y, FACE_LANDMARKS, MOUTH_HALF_WIDTH, MOUTH_Y, SPHERE_LANDMARKS, nearest_vertices

__all__ = [
    "R0",
    "MIN_VERTICES",
    "MAX_VERTICES",
    "NEUTRAL_CONTROLS",
    "face_template",
    "head_template",
    "icosphere",
    "template",
    "template_info",
    "face_surface",
    "canonical_coordinates",
    "icosphere_vertex_count",
]

R0 = 85.0  #: canonical radius (mm): ``s = R0 * theta``
MIN_VERTICES = 500
MAX_VERTICES = 100_000

# Face domain: an ellipse in (s, y).
_FACE_CY = -5.0
_FACE_A = 111.0  # half-extent in s (theta up to +-75 degrees)
_FACE_B = 105.0  # half-extent in y (chin at -110, top of the forehead at +100)
_FACE_UV_SCALE = 0.98 / (2.0 * _FACE_A)  # isotropic: mm -> UV, 1 % margin each side

# Head domain: the strip y in [_HEAD_Y0, _HEAD_Y1], periodic in s with period 2 pi R0.
_HEAD_Y0 = -125.0
_HEAD_Y1 = 115.0
_HEAD_PERIOD = 2.0 * math.pi * R0
_HEAD_V_MARGIN = 0.01

_SQRT3 = math.sqrt(3.0)


# =========================================================================== checks
def _check_count(num_vertices) -> int:
    if isinstance(num_vertices, bool) or not isinstance(num_vertices, numbers.Integral):
        raise TypeError(f"num_vertices: expected an int, got {type(num_vertices).__name__}")
    n = int(num_vertices)
    if not MIN_VERTICES <= n <= MAX_VERTICES:
        raise ValueError(f"num_vertices: expected an integer in [{MIN_VERTICES}, {MAX_VERTICES}], got {n}")
    return n


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected a non-negative int, got {seed!r}")
    if int(seed) < 0:
        raise ValueError(f"seed: expected a non-negative int, got {int(seed)}")
    return int(seed)


# ==================================================================== point sampling
def _hex_lattice(n: int, h: float, box: tuple[float, float, float, float],
                 keep: Callable[[np.ndarray], np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Exactly ``n`` jittered points of a hexagonal lattice inside ``keep``.

    The lattice spacing starts at ``h`` and shrinks until at least ``n`` lattice
    points pass ``keep``; a random subset of ``n`` is kept and each point is jittered
    uniformly by up to half a spacing in each axis.

    Shapes: ``-> (n, 2)``.
    """
    x0, x1, y0, y1 = box
    spacing = h
    for _ in range(60):
        dy = spacing * _SQRT3 / 2.0
        off = rng.uniform(0.0, 1.0, 2) * (spacing, dy)
        xs = np.arange(x0 - off[0], x1 + spacing, spacing)
        ys = np.arange(y0 - off[1], y1 + dy, dy)
        gx, gy = np.meshgrid(xs, ys)  # (R, C)
        gx = gx + (np.arange(ys.size) % 2)[:, None] * (spacing / 2.0)  # odd rows shifted half a step
        lattice = np.stack([gx.ravel(), gy.ravel()], axis=1)  # (R*C, 2)
        lattice = lattice[keep(lattice)]
        if lattice.shape[0] >= n:
            break
        spacing *= 0.995 * math.sqrt(max(lattice.shape[0], 1) / n)
    else:  # pragma: no cover - the loop converges in a few steps
        raise RuntimeError(f"could not place {n} lattice points in the domain")
    chosen = np.sort(rng.choice(lattice.shape[0], size=n, replace=False))
    pts = lattice[chosen]
    pts += rng.uniform(-0.5, 0.5, pts.shape) * spacing
    return pts


def _relax(free: np.ndarray, fixed: np.ndarray, h: float, project: Callable[[np.ndarray], np.ndarray],
           iterations: int = 6, period: float | None = None) -> np.ndarray:
    """Push ``free`` points apart until neighbours sit about ``h`` apart (Jacobi steps).

    Each step moves every free point away from each of its 6 nearest neighbours
    closer than ``h`` by a quarter of the shortfall (half for a fixed neighbour,
    which does not move itself), then ``project`` puts it back into the domain.
    ``period``: the domain is periodic in x with this period; coordinates must then
    be non-negative (y is given a box four times its range, so it never wraps).

    Shapes: ``free (N, 2)``, ``fixed (B, 2)`` -> ``(N, 2)``.
    """
    from scipy.spatial import cKDTree  # scipy.spatial is imported where used: it costs every command 0.5 s

    nb = fixed.shape[0]
    for _ in range(iterations):
        allp = np.concatenate([fixed, free])  # (B+N, 2)
        if period is None:
            tree = cKDTree(allp)
        else:
            box_y = 4.0 * (allp[:, 1].max() + h)
            tree = cKDTree(allp, boxsize=(period, box_y))
        dist, idx = tree.query(free, k=7)
        dist, idx = dist[:, 1:], idx[:, 1:]  # (N, 6) drop the point itself
        diff = free[:, None, :] - allp[idx]  # (N, 6, 2)
        if period is not None:
            diff[..., 0] -= period * np.round(diff[..., 0] / period)  # shortest periodic offset
        push = np.clip(h - dist, 0.0, None) * np.where(idx < nb, 1.0, 0.5)  # (N, 6)
        step = (diff / np.maximum(dist, 1e-12)[..., None] * push[..., None]).sum(axis=1)  # (N, 2)
        free = project(free + 0.5 * step)
    return free


def _spacing(area: float, count: int) -> float:
    """Edge length of a hexagonal packing of ``count`` points over ``area``."""
    return math.sqrt(2.0 * area / (_SQRT3 * count))


# ---------------------------------------------------------------------- face domain
def _ellipse_points(a: float, b: float, n: int, phase: float) -> np.ndarray:
    """``n`` points evenly spaced in arc length on the ellipse ``(a cos t, b sin t)``, CCW.

    Shapes: ``-> (n, 2)``.
    """
    t = np.linspace(0.0, 2.0 * math.pi, 4097)
    seg = np.hypot(np.diff(a * np.cos(t)), np.diff(b * np.sin(t)))
    arc = np.concatenate([[0.0], np.cumsum(seg)])  # (4097,)
    tt = np.interp((np.arange(n) + phase) / n * arc[-1], arc, t)
    return np.stack([a * np.cos(tt), b * np.sin(tt)], axis=1)


def _ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's second approximation (relative error < 1e-9 for these ratios)."""
    hh = ((a - b) / (a + b)) ** 2
    return math.pi * (a + b) * (1.0 + 3.0 * hh / (10.0 + math.sqrt(4.0 - 3.0 * hh)))


def _ellipse_clearance(p: np.ndarray, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """First-order distance inside the ellipse and the outward unit normal.

    ``d = (1 - rho) / |grad rho|`` with ``rho = sqrt((x/a)^2 + (y/b)^2)``.
    Shapes: ``p (N, 2)`` -> ``(N,)``, ``(N, 2)``.
    """
    rho = np.sqrt((p[:, 0] / a) ** 2 + (p[:, 1] / b) ** 2)
    grad = np.stack([p[:, 0] / a**2, p[:, 1] / b**2], axis=1) / np.maximum(rho, 1e-12)[:, None]  # (N, 2)
    norm = np.maximum(np.linalg.norm(grad, axis=1), 1e-12)
    return (1.0 - rho) / norm, grad / norm[:, None]


def _face_domain_points(n: int, rng: np.random.Generator) -> tuple[np.ndarray, int, float]:
    """Canonical ``(s, y)`` of the face template's vertices, boundary first (CCW).

    Returns ``(points (n, 2), number of boundary points, spacing h)``.
    """
    a, b = _FACE_A, _FACE_B
    area, perim = math.pi * a * b, _ellipse_perimeter(a, b)
    h = _spacing(area, n)
    for _ in range(4):  # boundary points take half a cell of area each
        nb = int(round(perim / h))
        h = _spacing(area - 0.5 * perim * h * _SQRT3 / 2.0, n - nb)
    nb = max(int(round(perim / h)), 16)
    boundary = _ellipse_points(a, b, nb, rng.uniform())
    margin = 0.6 * h

    def keep(q):
        return _ellipse_clearance(q, a, b)[0] > margin

    def project(q):
        d, normal = _ellipse_clearance(q, a, b)
        short = d < margin
        q[short] -= normal[short] * (margin - d[short])[:, None]
        return q

    free = _hex_lattice(n - nb, h, (-a, a, -b, b), keep, rng)
    free = _relax(project(free), boundary, h, project)
    pts = np.concatenate([boundary, free])
    pts[:, 1] += _FACE_CY
    return pts, nb, h


def _ccw(pts: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Reorder triangles counter-clockwise in the plane. Shapes: ``(N, 2)``, ``(F, 3)`` -> ``(F, 3)``."""
    p = pts[tris]  # (F, 3, 2)
    d1, d2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    cw = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] < 0
    tris = tris.copy()
    tris[cw] = tris[cw][:, [0, 2, 1]]
    return tris


def _triangulate_face(pts: np.ndarray, nb: int, h: float) -> np.ndarray:
    """Delaunay triangles of the face domain, CCW; ``(F, 3)`` int64."""
    from scipy.spatial import Delaunay

    n = pts.shape[0]
    ghosts = _ellipse_points(_FACE_A + 0.9 * h, _FACE_B + 0.9 * h, nb, 0.5)
    ghosts[:, 1] += _FACE_CY
    tri = Delaunay(np.concatenate([pts, ghosts])).simplices.astype(np.int64)
    tri = tri[(tri < n).all(axis=1)]
    tri = _ccw(pts, tri)
    _check_triangulation(tri, n, expected_boundary=nb, euler=1, what="face")
    return tri


def _check_triangulation(tri: np.ndarray, n: int, expected_boundary: int, euler: int, what: str) -> None:
    """Internal consistency of a template triangulation (raises ``RuntimeError``).

    Every vertex used, every edge shared by at most two triangles, no directed edge
    used twice (consistent winding), the expected boundary and Euler characteristic.
    """
    used = np.unique(tri).size
    he = tri[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)  # (3F, 2) directed half-edges
    directed = np.unique(he[:, 0] * n + he[:, 1]).size
    lo, hi = np.minimum(he[:, 0], he[:, 1]), np.maximum(he[:, 0], he[:, 1])
    _, counts = np.unique(lo * n + hi, return_counts=True)  # undirected edges
    n_boundary = int((counts == 1).sum())
    chi = n - counts.size + tri.shape[0]
    if (used != n or directed != he.shape[0] or (counts > 2).any()
            or n_boundary != expected_boundary or chi != euler):
        raise RuntimeError(
            f"{what} template triangulation failed: {used}/{n} vertices used, {he.shape[0] - directed} "
            f"repeated half-edges, {n_boundary} boundary edges (expected {expected_boundary}), "
            f"Euler characteristic {chi} (expected {euler})"
        )


# ---------------------------------------------------------------------- head domain
def _head_domain_points(n: int, rng: np.random.Generator) -> tuple[np.ndarray, int, int, float]:
    """Points ``(p, y)`` of the head strip, ``p in [0, P)`` (``p = 0``: seam at the back).

    Returns ``(points (n, 2), points per boundary row, seam points, spacing h)``;
    the first ``2 * rows`` points are the bottom and top rows, the next ``seam`` the
    inner seam column at ``p = 0``.
    """
    period, height = _HEAD_PERIOD, _HEAD_Y1 - _HEAD_Y0
    h = _spacing(period * height, n)
    for _ in range(4):
        rows, seam = int(round(period / h)), int(round(height / h)) - 1
        h = _spacing(period * height - period * h * _SQRT3 / 2.0, n - 2 * rows - seam)
    rows, seam = int(round(period / h)), int(round(height / h)) - 1
    xs = np.arange(rows) * (period / rows)
    ys = _HEAD_Y0 + np.arange(1, seam + 1) * (height / (seam + 1))
    fixed = np.concatenate([
        np.stack([xs, np.full(rows, _HEAD_Y0)], axis=1),
        np.stack([xs, np.full(rows, _HEAD_Y1)], axis=1),
        np.stack([np.zeros(seam), ys], axis=1),
    ])  # (2*rows + seam, 2)
    margin = 0.6 * h

    def keep(q):
        return ((q[:, 1] > _HEAD_Y0 + margin) & (q[:, 1] < _HEAD_Y1 - margin)
                & (q[:, 0] > margin) & (q[:, 0] < period - margin))

    def project(q):
        q[:, 0] = np.mod(q[:, 0], period)
        q[:, 0] = np.clip(q[:, 0], margin, period - margin)  # keep off the seam column
        q[:, 1] = np.clip(q[:, 1], _HEAD_Y0 + margin, _HEAD_Y1 - margin)
        return q

    free = _hex_lattice(n - fixed.shape[0], h, (0.0, period, _HEAD_Y0, _HEAD_Y1), keep, rng)
    shift = np.array([0.0, -_HEAD_Y0 + h])  # the periodic k-d tree wants coordinates >= 0

    def project_shifted(q):
        return project(q - shift) + shift

    free = _relax(project(free) + shift, fixed + shift, h, project_shifted, period=period) - shift
    return np.concatenate([fixed, free]), rows, seam, h


def _triangulate_head(pts: np.ndarray, rows: int, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Periodic Delaunay triangulation of the head strip.

    Returns ``faces (F, 3)`` int64 (CCW in ``(p, y)``) and the ``p`` of every corner
    ``(F, 3)`` unwrapped so that each triangle is contiguous: corners on the seam read
    ``p = 0`` in triangles right of it and ``p = P`` in triangles left of it.
    """
    from scipy.spatial import Delaunay

    n, period = pts.shape[0], _HEAD_PERIOD
    band = 6.0 * h
    lo = np.flatnonzero(pts[:, 0] < band)
    hi = np.flatnonzero(pts[:, 0] > period - band)
    ext = np.concatenate([pts, pts[lo] + (period, 0.0), pts[hi] - (period, 0.0)])  # periodic copies
    owner = np.concatenate([np.arange(n), lo, hi])  # original index of every extended point
    step = period / rows
    gx = np.arange(-math.ceil(band / step) - 1, rows + math.ceil(band / step) + 1) * step + 0.5 * step
    ghosts = np.concatenate([
        np.stack([gx, np.full(gx.size, _HEAD_Y0 - 0.9 * h)], axis=1),
        np.stack([gx, np.full(gx.size, _HEAD_Y1 + 0.9 * h)], axis=1),
    ])
    m = ext.shape[0]
    tri = Delaunay(np.concatenate([ext, ghosts])).simplices.astype(np.int64)
    tri = tri[(tri < m).all(axis=1)]
    centroid = ext[tri, 0].mean(axis=1)  # (F,)
    tri = tri[(centroid >= 0.0) & (centroid < period)]  # one copy of every periodic triangle
    tri = _ccw(ext, tri)
    corner_p = ext[tri, 0]  # (F, 3)
    if corner_p.min() < -1e-9 or corner_p.max() > period + 1e-9:
        raise RuntimeError("head template triangulation failed: a triangle crosses the UV seam")
    faces = owner[tri]
    _check_triangulation(faces, n, expected_boundary=2 * rows, euler=0, what="head")
    return faces, corner_p


# ====================================================================== the surface
def _g(x):
    """Unit Gaussian bump ``exp(-x^2 / 2)``."""
    return np.exp(-0.5 * x * x)


def _box(x, p: float = 4.0):
    """Flat-topped bump ``exp(-|x|^p)`` (``p`` even)."""
    return np.exp(-(x**p))


def _softplus(x, k: float):
    """Smooth ``max(x, 0)`` with corner width ``k``."""
    return k * np.logaddexp(0.0, x / k)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


#: Neutral values of the shape and expression controls of :func:`face_surface`.
NEUTRAL_CONTROLS: dict[str, float] = {
    "width": 1.0,  # x scale
    "depth": 1.0,  # z scale
    "forehead": 1.0,  # vertical stretch above the brows
    "chin": 1.0,  # vertical stretch below the mouth
    "jaw": 1.0,  # x scale of the lower face
    "eye_size": 1.0,  # local magnification around each eye
    "eye_spacing": 0.0,  # mm the eyes move apart
    "brow_height": 0.0,  # mm the brows move up
    "nose_length": 1.0,  # vertical scale of the nose
    "nose_width": 1.0,
    "nose_projection": 1.0,
    "cheek": 1.0,  # cheek fullness
    "lip": 1.0,  # lip thickness
    "mouth_width": 1.0,  # local horizontal stretch around the mouth
    "jaw_open": 0.0,  # jaw rotation (radians)
    "smile": 0.0,  # 0..1: mouth corners up, out and back
    "brow_raise": 0.0,  # 0..1: brows up by 6 mm
}


def _controls(controls: Mapping[str, object] | None, v: int) -> tuple[dict[str, np.ndarray], np.ndarray | None, int]:
    """Broadcast controls to ``(N, 1)`` arrays; returns ``(controls, detail (N, V) or None, N)``."""
    controls = dict(controls or {})
    detail = controls.pop("detail", None)
    unknown = sorted(set(controls) - set(NEUTRAL_CONTROLS))
    if unknown:
        raise ValueError(f"controls: unknown names {unknown}; expected some of {sorted(NEUTRAL_CONTROLS)} or 'detail'")
    sizes = set()
    arrays = {}
    for name, neutral in NEUTRAL_CONTROLS.items():
        val = np.asarray(controls.get(name, neutral), dtype=np.float64)
        if val.ndim > 1:
            raise ValueError(f"controls[{name!r}]: expected a scalar or an (N,) array, got shape {val.shape}")
        if not np.all(np.isfinite(val)):
            raise ValueError(f"controls[{name!r}]: expected finite values, got {val}")
        if val.ndim == 1:
            sizes.add(val.shape[0])
        arrays[name] = val
    if detail is not None:
        detail = np.asarray(detail, dtype=np.float64)
        if detail.ndim != 2 or detail.shape[1] != v:
            raise ValueError(f"controls['detail']: expected shape (N, {v}), got {detail.shape}")
        if not np.isfinite(detail).all():
            raise ValueError("controls['detail']: expected finite values, got NaN or inf")
        sizes.add(detail.shape[0])
    if len(sizes) > 1:
        raise ValueError(f"controls: expected one batch size N, got sizes {sorted(sizes)}")
    n = sizes.pop() if sizes else 1
    out = {k: np.broadcast_to(a.reshape(-1, 1) if a.ndim else a, (n, 1)) for k, a in arrays.items()}
    return out, detail, n


def _warp(s: np.ndarray, y: np.ndarray, c: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """In-plane deformation of canonical coordinates: where each surface point moves.

    Every term is a control times a fixed smooth displacement field of small gradient
    (well below 1 for controls in their documented ranges), so the map stays
    orientation preserving and features keep their vertices.
    Shapes: ``s, y (V,)``, controls ``(N, 1)`` -> ``(N, V)``, ``(N, V)``.
    """
    eye_win = [_g((s - e * EYE_S) / 16.0) * _g((y - EYE_Y) / 11.0) for e in (1.0, -1.0)]  # 2 x (V,)
    mag_s = sum(w * (s - e * EYE_S) for w, e in zip(eye_win, (1.0, -1.0)))  # per unit of (eye_size - 1)
    mag_y = (eye_win[0] + eye_win[1]) * (y - EYE_Y)
    spread = sum(e * _g((s - e * EYE_S) / 24.0) * _g((y - EYE_Y) / 20.0) for e in (1.0, -1.0))
    corners = [_g((s - e * MOUTH_HALF_WIDTH) / 11.0) * _g((y - MOUTH_Y) / 9.0) for e in (1.0, -1.0)]
    smile_s, smile_y = 2.5 * (corners[0] - corners[1]), 4.5 * (corners[0] + corners[1])
    mouth = s * _g(s / 30.0) * _g((y - MOUTH_Y) / 12.0)
    brows = _g((y - 14.0) / 14.0) * _box(s / 58.0)
    nose = (y - 2.0) * _g((y + 20.0) / 18.0) * _g(s / 18.0)  # stretch about the bridge (y = 2)

    ds = ((c["eye_size"] - 1.0) * mag_s + c["eye_spacing"] * spread + c["smile"] * smile_s
          + (c["mouth_width"] - 1.0) * mouth)  # (N, V)
    dy = ((c["eye_size"] - 1.0) * mag_y + c["smile"] * smile_y + (c["brow_height"] + 6.0 * c["brow_raise"]) * brows
          + (c["nose_length"] - 1.0) * nose)
    s1, y1 = s + ds, y + dy
    # vertical stretches above the brows and below the mouth (monotone in y)
    y2 = y1 + (c["forehead"] - 1.0) * _softplus(y1 - 14.0, 8.0) - (c["chin"] - 1.0) * _softplus(MOUTH_Y - y1, 8.0)
    return s1, y2


def _base_radius(theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elliptical head cross-section with a vertical profile. Shapes: ``(V,)`` -> ``(V,)``."""
    top = np.sqrt(1.0 - (_softplus(y - 20.0, 10.0) / 130.0) ** 2)  # crown and forehead slope back
    rx = 78.0 * top * (1.0 - 0.22 * (_softplus(-50.0 - y, 10.0) / 60.0) ** 2)  # narrower jaw and neck
    rz_front = 95.0 * top * (1.0 - 0.12 * (_softplus(-65.0 - y, 8.0) / 50.0) ** 2)  # under the chin
    rz_back = 100.0 * top * (1.0 - 0.25 * (_softplus(-60.0 - y, 10.0) / 65.0) ** 2)  # nape
    cos, sin = np.cos(theta), np.sin(theta)
    rz = np.where(cos >= 0.0, rz_front, rz_back)  # C1 across the sides: cos^2 has zero slope there
    return 1.0 / np.sqrt((sin / rx) ** 2 + (cos / rz) ** 2)


def _relief(s: np.ndarray, y: np.ndarray, c: dict[str, np.ndarray]) -> np.ndarray:
    """Radial relief of the face in mm (bumps > 0, dents < 0), attached to canonical points.

    Shapes: ``s, y (V,)``, controls ``(N, 1)`` -> ``(N, V)``.
    """
    fixed = (
        4.0 * _g(s / 45.0) * _g((y - 55.0) / 30.0)  # forehead
        + 4.5 * _g((y - 13.0) / 6.0) * _box(s / 50.0)  # brow ridge
        + 6.0 * _g(s / 28.0) * _g((y + 52.0) / 12.0)  # upper jaw under the nose
        + 7.0 * _g(s / 20.0) * _g((y + 96.0) / 11.0)  # chin
        - 2.5 * _g(s / 18.0) * _g((y + 80.0) / 4.0)  # groove above the chin
        - 1.5 * _box(s / 25.0) * _g((y - MOUTH_Y) / 1.5)  # line between the lips
    )  # (V,)
    cheek = np.zeros_like(s)
    corners = np.zeros_like(s)
    for e in (1.0, -1.0):
        ex, ey = s - e * EYE_S, y - EYE_Y
        fixed = fixed - 3.0 * _g((s - e * 62.0) / 12.0) * _g((y - 30.0) / 16.0)  # temple
        fixed = fixed - 9.0 * _g(ex / 15.0) * _g(ey / 10.0)  # eye socket
        fixed = fixed + 5.0 * _g(ex / 10.0) * _g(ey / 5.5)  # eyeball and lids
        fixed = fixed - 1.2 * _g(ex / 12.0) * _g((ey - 5.5) / 2.2)  # upper lid crease
        fixed = fixed + 4.0 * _g((s - e * 58.0) / 14.0) * _g((y + 8.0) / 10.0)  # cheekbone
        cheek = cheek + 6.0 * _g((s - e * 45.0) / 20.0) * _g((y + 28.0) / 18.0)
        corners = corners - 3.0 * _g((s - e * MOUTH_HALF_WIDTH) / 11.0) * _g((y - MOUTH_Y) / 9.0)
    r = fixed + c["cheek"] * cheek + c["smile"] * corners  # (N, V)
    # lips: thickness scales their height and projection about fixed centre lines
    lip, sq = c["lip"], np.sqrt(c["lip"])
    r = r + 4.0 * lip * _box(s / 23.0) * _g((y + 57.5) / (3.2 * sq))
    r = r + 4.5 * lip * _box(s / 21.0) * _g((y + 67.5) / (3.6 * sq))
    # nose: ridge widening from the bridge to the tip, tip, alae (width scales s)
    u = (8.0 - y) / 44.0  # 0 at the top of the bridge, 1 at the tip (y = -36)
    ramp = _softplus(u, 0.06)
    profile = 20.0 * ramp**1.2 * _sigmoid((y + 40.0) / 2.2)  # (V,)
    nw = c["nose_width"]  # (N, 1)
    ridge = profile * _g(s / ((6.0 + 8.0 * np.clip(ramp, 0.0, 1.0)) * nw))  # (N, V)
    tip = 3.0 * _g(s / (7.0 * nw)) * _g((y + 35.0) / 5.0)
    alae = sum(_g((s - e * 13.0 * nw) / 5.5) for e in (1.0, -1.0)) * (6.0 * _g((y + 42.0) / 5.0))
    return r + c["nose_projection"] * (ridge + tip) + alae


def face_surface(s, y, controls: Mapping[str, object] | None = None) -> np.ndarray:
    r"""Evaluate the analytic face at canonical coordinates for a batch of controls.

    The in-plane warp (eye size and spacing, brows, nose length, mouth width, smile,
    forehead and chin length) moves each canonical point to ``(s', y')``; the radial
    relief ``r(s, y)`` (base head plus features, plus ``controls["detail"]``) stays
    attached to the canonical point, so features follow their vertices. Then

    .. math::
        x = w\,j(y)\,r \sin(s'/R_0), \quad y = y', \quad z = d\, r \cos(s'/R_0),

    with width ``w``, depth ``d`` and lower-face width ``j(y)``, and the jaw opens by
    rotating the points below the lips about the horizontal axis through
    ``(y, z) = (-20, 10)`` mm (in front of the ears) by ``jaw_open * weight``, where
    the weight rises smoothly from 0 above the mouth to 1 below it and fades out
    over the sides of the head, slowly enough that no triangle folds.

    Args:
        s: canonical arc length, mm.
        y: canonical height, mm.
        controls: name -> scalar or ``(N,)`` array; missing names take their
            :data:`NEUTRAL_CONTROLS` value. ``"detail"``: optional ``(N, V)`` radial
            offsets in mm. Default ``None`` (the neutral face).

    Returns:
        ``(N, V, 3)`` float64 positions in mm (``N = 1`` if no control is an array).

    Shapes:
        ``s, y (V,)`` -> ``(N, V, 3)``.
    """
    s = np.asarray(s, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"s, y: expected two (V,) arrays, got shapes {s.shape} and {y.shape}")
    if not (np.isfinite(s).all() and np.isfinite(y).all()):
        raise ValueError("s, y: expected finite canonical coordinates, got NaN or inf")
    c, detail, n = _controls(controls, s.shape[0])
    theta = s / R0  # (V,)
    r = _base_radius(theta, y) + _relief(s, y, c)  # (N, V)
    if detail is not None:
        r = r + detail
    s1, y1 = _warp(s, y, c)  # (N, V)
    th1 = s1 / R0
    lower = _sigmoid((-45.0 - y) / 10.0)  # (V,)
    x = c["width"] * (1.0 + (c["jaw"] - 1.0) * lower) * r * np.sin(th1)
    z = c["depth"] * r * np.cos(th1)
    # jaw rotation about the x axis through (ya, za)
    ya, za = -20.0, 10.0
    blend = 3.0 + 9.0 * (1.0 - _g(s / 22.0))  # sharper between the lips than at the sides
    weight = _sigmoid((MOUTH_Y - y) / blend) * _sigmoid((np.cos(theta) + 0.03) / 0.2)  # (V,)
    phi = c["jaw_open"] * weight  # (N, V)
    cphi, sphi = np.cos(phi), np.sin(phi)
    yy = ya + (y1 - ya) * cphi - (z - za) * sphi
    zz = za + (y1 - ya) * sphi + (z - za) * cphi
    return np.stack([x, yy, zz], axis=-1)  # (N, V, 3)


def canonical_coordinates(mesh_or_vertices) -> np.ndarray:
    """Canonical ``(s, y)`` of each vertex of a face or head template.

    ``s = R0 * atan2(x, z)``, ``y = y``: exact for the neutral templates, whose
    surface is radial (see the module docstring).

    Shapes:
        ``(V, 3)`` (or a :class:`Mesh`) -> ``(V, 2)`` float64.
    """
    v = mesh_or_vertices.vertices if isinstance(mesh_or_vertices, Mesh) else np.asarray(mesh_or_vertices, float)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices: expected shape (V, 3), got {v.shape}")
    return np.stack([R0 * np.arctan2(v[:, 0], v[:, 2]), v[:, 1]], axis=1)


# ======================================================================= templates
def face_template(num_vertices: int = 5023, seed: int = 0) -> Mesh:
    """A procedural face mesh in millimetres, about 150 mm wide, 210 mm tall, 100 mm deep.

    The face looks towards ``+z`` with ``+y`` up; the parameter domain is an ellipse
    of canonical coordinates (see the module docstring), triangulated as blue noise.

    Args:
        num_vertices: exact vertex count, 500 to 100,000. Default ``5023``.
        seed: seeds the point placement. Default ``0``. The same arguments give the
            same mesh.

    Returns:
        A :class:`Mesh` (``validate()`` passes) with per-corner UVs (``uv`` one per vertex: the
        canonical coordinates scaled isotropically into ``[0.01, 0.99]``;
        ``uv_faces = faces``) and 33 landmarks (:data:`~mesh_decoder.mesh.landmarks.FACE_LANDMARKS`).

    Shapes:
        ``vertices (V, 3)``, ``faces (F, 3)`` with ``F ~ 2 V``.
    """
    n = _check_count(num_vertices)
    rng = np.random.default_rng([_check_seed(seed), 1])
    pts, nb, h = _face_domain_points(n, rng)  # (V, 2) canonical (s, y)
    faces = _triangulate_face(pts, nb, h)
    vertices = face_surface(pts[:, 0], pts[:, 1])[0]  # (V, 3)
    uv = np.stack([0.5 + pts[:, 0] * _FACE_UV_SCALE, 0.5 + (pts[:, 1] - _FACE_CY) * _FACE_UV_SCALE], axis=1)
    landmarks = nearest_vertices(pts, FACE_LANDMARKS)
    return Mesh(vertices, faces, uv=uv, uv_faces=faces.copy(), landmarks=landmarks)


def head_template(num_vertices: int = 5023, seed: int = 0) -> Mesh:
    """A procedural head: the face of :func:`face_template` on a tube all around the head.

    The surface wraps the full 360 degrees (open at the neck and at the crown,
    ``y in [-125, 115]`` mm); the UV seam runs down the back of the head, where the
    mesh is connected and only the UVs are cut: vertices on the seam have two UV
    entries (``u = 0`` for faces on one side, ``u = 1`` on the other).
    ``u = theta / 2 pi + 1/2`` (the face is centred at ``u = 0.5``) and ``v`` maps the
    height linearly onto ``[0.01, 0.99]``.

    Args:
        num_vertices: exact vertex count, 500 to 100,000. Default ``5023``.
        seed: seeds the point placement. Default ``0``.

    Returns:
        A :class:`Mesh` (``validate()`` passes) with UVs and the 33 face landmarks.
    """
    n = _check_count(num_vertices)
    rng = np.random.default_rng([_check_seed(seed), 2])
    pts, rows, seam, h = _head_domain_points(n, rng)  # (V, 2): p in [0, P), y
    faces, corner_p = _triangulate_head(pts, rows, h)
    canonical = np.stack([pts[:, 0] - 0.5 * _HEAD_PERIOD, pts[:, 1]], axis=1)  # s = 0 at the front
    vertices = face_surface(canonical[:, 0], canonical[:, 1])[0]
    v_of = _HEAD_V_MARGIN + (1.0 - 2.0 * _HEAD_V_MARGIN) * (pts[:, 1] - _HEAD_Y0) / (_HEAD_Y1 - _HEAD_Y0)
    uv = np.stack([pts[:, 0] / _HEAD_PERIOD, v_of], axis=1)  # (V, 2): one UV per vertex, u in [0, 1)
    # Seam corners reached from the left (p = P) get a second UV with u = 1.
    right_end = corner_p > 0.5 * _HEAD_PERIOD  # (F, 3)
    on_seam = pts[faces, 0] == 0.0  # (F, 3)
    second = np.flatnonzero(pts[:, 0] == 0.0)  # seam vertices
    extra = np.full(n, -1, dtype=np.int64)
    extra[second] = n + np.arange(second.size)
    uv = np.concatenate([uv, np.stack([np.ones(second.size), v_of[second]], axis=1)])
    uv_faces = np.where(on_seam & right_end, extra[faces], faces)
    landmarks = nearest_vertices(canonical, FACE_LANDMARKS)
    return Mesh(vertices, faces, uv=uv, uv_faces=uv_faces, landmarks=landmarks)


def icosphere_vertex_count(subdivisions: int) -> int:
    """Vertices of an icosphere: ``10 * 4**k + 2``."""
    return 10 * 4**subdivisions + 2


def icosphere(subdivisions: int = 3, radius: float = 100.0) -> Mesh:
    """A sphere from a regular icosahedron, each triangle split into four ``subdivisions`` times.

    New vertices are edge midpoints pushed onto the sphere. Closed, outward CCW winding,
    ``10 * 4**k + 2`` vertices and ``20 * 4**k`` faces; equirectangular UVs with a seam
    (see :func:`_spherical_uv`). Landmarks: the vertices nearest the poles and the four
    axis points of the equator (:data:`~mesh_decoder.mesh.landmarks.SPHERE_LANDMARKS`);
    exactly on them from 42 vertices up (the 12-vertex icosahedron has no vertex there).

    Args:
        subdivisions: ``k``, 0 to 7. Default ``3`` (642 vertices).
        radius: in mm. Default ``100.0``.

    Shapes:
        ``vertices (10 * 4**k + 2, 3)``, ``faces (20 * 4**k, 3)``.
    """
    if isinstance(subdivisions, bool) or not isinstance(subdivisions, numbers.Integral):
        raise TypeError(f"subdivisions: expected an int, got {type(subdivisions).__name__}")
    if not 0 <= subdivisions <= 7:
        raise ValueError(f"subdivisions: expected an integer in [0, 7], got {subdivisions}")
    try:
        if isinstance(radius, (bool, np.bool_, str, bytes)):
            raise TypeError
        radius = float(radius)  # numbers, numpy and torch scalars
    except (TypeError, ValueError):
        raise TypeError(f"radius: expected a positive finite number, got {radius!r} ({type(radius).__name__})") from None
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius: expected a positive finite number, got {radius}")
    t = (1.0 + math.sqrt(5.0)) / 2.0
    verts = np.array([
        [-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0],
        [0, -1, t], [0, 1, t], [0, -1, -t], [0, 1, -t],
        [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1],
    ], dtype=np.float64)
    faces = np.array([
        [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
        [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
        [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
        [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
    ], dtype=np.int64)
    verts /= np.linalg.norm(verts, axis=1, keepdims=True)
    for _ in range(int(subdivisions)):
        edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)  # (3F, 2)
        uniq, inverse = np.unique(edges, axis=0, return_inverse=True)
        mid = verts[uniq].mean(axis=1)  # (E, 3)
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        m = verts.shape[0] + inverse.reshape(-1, 3)  # (F, 3) midpoints of edges 01, 12, 20
        a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
        faces = np.concatenate([
            np.stack([a, m[:, 0], m[:, 2]], axis=1),
            np.stack([b, m[:, 1], m[:, 0]], axis=1),
            np.stack([c, m[:, 2], m[:, 1]], axis=1),
            m,
        ])
        verts = np.concatenate([verts, mid])
    # outward winding: the normal of each face points away from the centre
    p = verts[faces]  # (F, 3, 3)
    inward = (np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]) * p.mean(axis=1)).sum(axis=1) < 0
    faces[inward] = faces[inward][:, [0, 2, 1]]
    landmarks = nearest_vertices(verts, SPHERE_LANDMARKS)
    uv, uv_faces = _spherical_uv(verts, faces, pole=verts[0])
    return Mesh(verts * radius, faces, uv=uv, uv_faces=uv_faces, landmarks=landmarks).validate()


def _spherical_uv(verts: np.ndarray, faces: np.ndarray, pole: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equirectangular per-corner UVs about the axis through ``pole`` (a vertex, as is its antipode).

    ``u`` is the longitude (counter-clockwise about the pole axis, so UV winding follows the
    faces'), ``v`` the latitude from 0 (south) to 1 (north). Faces crossing the seam meridian
    get their low-``u`` corners shifted by +1; a pole corner takes the mean ``u`` of its
    face's other corners, so the pole vertex carries one UV per incident face. Finally ``u``
    is scaled back into ``[0, 1]``: the seam strip and its copy never overlap.

    Shapes:
        ``verts (V, 3)`` unit vectors, ``faces (F, 3)`` -> ``uv (T, 2)``, ``uv_faces (F, 3)``.
    """
    e3 = pole / np.linalg.norm(pole)
    helper = np.array([1.0, 0.0, 0.0]) if abs(e3[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = helper - helper.dot(e3) * e3
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(e3, e1)  # right-handed frame (e1, e2, e3)
    x, y, z = verts @ e1, verts @ e2, np.clip(verts @ e3, -1.0, 1.0)
    u = np.mod(np.arctan2(y, x) / (2 * np.pi), 1.0)  # (V,)
    v = 0.5 + np.arcsin(z) / np.pi  # (V,)
    cu, cv = u[faces], v[faces]  # (F, 3) each
    is_pole = (np.abs(z) > 1.0 - 1e-12)[faces]  # (F, 3)
    masked = np.where(is_pole, np.nan, cu)
    crossing = (np.nanmax(masked, axis=1) - np.nanmin(masked, axis=1)) > 0.5
    cu = np.where(crossing[:, None] & (cu < 0.5) & ~is_pole, cu + 1.0, cu)
    pole_u = np.nanmean(np.where(is_pole, np.nan, cu), axis=1)  # (F,)
    cu = np.where(is_pole, pole_u[:, None], cu)
    cu = cu / cu.max()
    corners = np.stack([cu, cv], axis=-1).reshape(-1, 2)  # (3F, 2)
    uv, inverse = np.unique(np.round(corners, 12), axis=0, return_inverse=True)
    return uv, inverse.reshape(-1, 3).astype(np.int64)


def template(kind: str = "face", num_vertices: int | None = 5023, seed: int = 0) -> Mesh:
    """A built-in template by name.

    Args:
        kind: ``"face"`` (:func:`face_template`), ``"head"`` (:func:`head_template`)
            or ``"sphere"`` (:func:`icosphere`). Default ``"face"``.
        num_vertices: exact vertex count for face and head (500 to 100,000).
            Icospheres only come in sizes ``10 * 4**k + 2`` (12, 42, 162, 642, 2562,
            10242, 40962, 163842): the sphere is the smallest with at least
            ``num_vertices`` vertices (1 to 163,842; ``None``: 642). Default ``5023``
            (a 10,242-vertex sphere).
        seed: point placement of face and head. Default ``0``. The sphere is
            deterministic and ignores it.
    """
    if kind == "face":
        return face_template(5023 if num_vertices is None else num_vertices, seed)
    if kind == "head":
        return head_template(5023 if num_vertices is None else num_vertices, seed)
    if kind == "sphere":
        if num_vertices is None:
            return icosphere(3)
        if isinstance(num_vertices, bool) or not isinstance(num_vertices, numbers.Integral):
            raise TypeError(f"num_vertices: expected an int, got {type(num_vertices).__name__}")
        n, largest = int(num_vertices), icosphere_vertex_count(7)
        if not 1 <= n <= largest:
            raise ValueError(
                f"num_vertices: expected an integer in [1, {largest}] (an icosphere has at most "
                f"{largest} vertices here), got {n}"
            )
        k = next(k for k in range(8) if icosphere_vertex_count(k) >= n)
        return icosphere(k)
    raise ValueError(f"kind: expected 'face', 'head' or 'sphere', got {kind!r}")


def template_info(mesh: Mesh) -> dict[str, object]:
    """Summary numbers of a template.

    Lengths are in the mesh's own units (millimetres for the built-in templates).

    Returns a dict with ``num_vertices``, ``num_faces``, ``num_components``
    (connected components), ``coincident_vertices`` (vertices sharing their exact
    position with another: an unwelded seam), ``degenerate_faces`` (faces of (near)
    zero area, which no hierarchy can be built with), ``num_boundary_edges``,
    ``boundary_length`` (total length of the boundary edges),
    ``num_uv`` (UV entries; more than vertices when a seam splits them),
    ``uv_coverage`` (fraction of the unit square covered by UV triangles, from
    their areas; ``None`` without UVs), ``uv_flipped_faces`` and
    ``uv_overlapping_pairs`` (triangles folded over in UV, and pairs of UV triangles
    covering a common texel of a 1024 x 1024 map; both 0 for an atlas without
    mirrored or stacked islands, whose coverage then counts no area twice; a mirrored
    island counts as flipped, and its overlap needs ``allow_uv_overlap``), ``num_landmarks``, ``bbox_size``
    ``[dx, dy, dz]`` and ``mean_edge_length``.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a mesh_decoder Mesh, got {type(mesh).__name__}")
    from .uv import _check_face_indices, check_uv_overlap, flipped_uv_faces, uv_coverage

    if mesh.num_vertices == 0 or mesh.num_faces == 0:
        raise MeshValidationError(
            f"mesh: expected at least one vertex and one face, got V={mesh.num_vertices}, F={mesh.num_faces}"
        )
    _check_face_indices(mesh)  # the lengths below index vertices with the faces

    boundary = mesh.boundary_edges()  # (B, 2)
    blen = float(np.linalg.norm(mesh.vertices[boundary[:, 0]] - mesh.vertices[boundary[:, 1]], axis=1).sum())
    edges = mesh.edges()
    elen = np.linalg.norm(mesh.vertices[edges[:, 0]] - mesh.vertices[edges[:, 1]], axis=1)
    from ..hierarchy.decimate import degenerate_faces

    info: dict[str, object] = {
        "num_vertices": mesh.num_vertices,
        "num_faces": mesh.num_faces,
        "num_components": int(mesh.components().max()) + 1,
        "coincident_vertices": int(mesh.coincident_vertices().size),
        "degenerate_faces": int(degenerate_faces(mesh.vertices, mesh.faces).size),
        "num_boundary_edges": int(boundary.shape[0]),
        "boundary_length": blen,
        "num_uv": 0 if mesh.uv is None else int(mesh.uv.shape[0]),
        "uv_coverage": None,
        "uv_flipped_faces": None,
        "uv_overlapping_pairs": None,
        "num_landmarks": len(mesh.landmarks),
        "bbox_size": [float(v) for v in np.ptp(mesh.vertices, axis=0)],
        "mean_edge_length": float(elen.mean()),
    }
    if mesh.uv is not None:
        info["uv_coverage"] = float(uv_coverage(mesh))
        info["uv_flipped_faces"] = int(flipped_uv_faces(mesh).size)
        info["uv_overlapping_pairs"] = int(check_uv_overlap(mesh, 1024).shape[0])
    return info
