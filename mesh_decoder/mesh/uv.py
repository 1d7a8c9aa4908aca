r"""UV utilities: texel maps, automatic UVs, overlap checks and coverage.

**Texel convention.** Texel ``(i, j)`` of an ``H x W`` map (row ``i`` counted from the
*top* of the image, column ``j`` from the left) has its centre at

.. math::
    u = \frac{j + 0.5}{W}, \qquad v = 1 - \frac{i + 0.5}{H},

with ``v`` measured from the bottom as in OBJ. In *texel space* a UV point maps to
``x = u W - 0.5`` (column) and ``y = (1 - v) H - 0.5`` (row), so texel centres sit on
integer coordinates.

**Rasterisation rule.** A texel belongs to a UV triangle when its centre is inside
the triangle. A centre exactly on an edge shared by two triangles belongs to exactly
one of them (a half-plane "fill rule", as in GPU rasterisers): after orienting each
triangle so that its interior is on the left of its edges in texel coordinates (the
left of a direction ``(dx, dy)`` is ``(-dy, dx)``; as the row ``y`` grows downwards,
that is clockwise on the image), an edge owns the centres on it when its direction
has ``dy > 0``, or ``dy == 0`` and ``dx < 0``: of two faces sharing an edge along a
row, the one at smaller row indices owns its centres; along a column, the one at
smaller column indices.
Edge functions are evaluated with the edge's end points in a canonical order, so the
two triangles of a shared edge see exactly opposite values and the rule is exact.
Two triangles covering the same texel centre are reported as an overlap.

Everything is vectorised: the texels of every triangle's bounding box are enumerated
at once (triangles are small), never a dense faces x texels array.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MeshValidationError, UVOverlapError
from .container import Mesh, _check_finite

if TYPE_CHECKING:  # the texel map container lives with the hierarchy it belongs to
    import torch

    from ..hierarchy.container import TexelMap

__all__ = [
    "texel_map",
    "check_uv_overlap",
    "flipped_uv_faces",
    "automatic_uv",
    "ensure_uv",
    "uv_coverage",
]

_CHUNK = 1 << 22  # (face, texel) candidate pairs tested at once


#: The largest side :func:`texel_map` and :func:`check_uv_overlap` accept. Rasterising takes
#: about 150 bytes a covered texel, so a map far past this exhausts the memory and the process
#: is killed instead of raising (``build_hierarchy``'s ``texture_size`` has the same bound).
MAX_MAP_SIZE = 8192


# ------------------------------------------------------------------------ helpers
def _map_size(size) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size
    ):
        h, w = int(size[0]), int(size[1])
    else:
        raise TypeError(f"size: expected an int or a pair of ints (H, W), got {size!r}")
    if h < 1 or w < 1:
        raise ValueError(f"size: expected positive sizes, got (H, W) = ({h}, {w})")
    if max(h, w) > MAX_MAP_SIZE:
        raise ValueError(f"size: expected at most {MAX_MAP_SIZE} texels per side, got (H, W) = ({h}, {w})")
    return h, w


def _check_face_indices(mesh: Mesh) -> None:
    """Face indices in ``[0, V)``: texel maps and UV charts index vertices with them."""
    v = mesh.num_vertices
    if mesh.faces.size and (mesh.faces.min() < 0 or mesh.faces.max() >= v):
        raise MeshValidationError(
            f"faces: expected vertex indices in [0, {v}), got range "
            f"[{int(mesh.faces.min())}, {int(mesh.faces.max())}]"
        )


def _corner_uvs(mesh: Mesh) -> np.ndarray:
    """UV of every face corner, ``(F, 3, 2)``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a mesh_decoder Mesh, got {type(mesh).__name__}")
    if mesh.uv is None:
        raise MeshValidationError("mesh: expected UVs (mesh.uv and mesh.uv_faces), got none; "
                                  "use automatic_uv() or ensure_uv() first")
    mesh._check_layout()  # one uv_faces row per face, also after assignments to the fields
    t = mesh.uv.shape[0]
    if mesh.uv_faces.size and (mesh.uv_faces.min() < 0 or mesh.uv_faces.max() >= t):
        raise MeshValidationError(
            f"uv_faces: expected indices in [0, {t}), got range "
            f"[{int(mesh.uv_faces.min())}, {int(mesh.uv_faces.max())}]"
        )
    if not np.isfinite(mesh.uv).all():
        raise MeshValidationError("uv: expected finite values, got NaN or inf")
    return mesh.uv[mesh.uv_faces]  # (F, 3, 2)


def _signed_areas(uv_tri: np.ndarray) -> np.ndarray:
    """Signed UV areas, positive for counter-clockwise corners in ``(u, v)``; ``(F, 3, 2) -> (F,)``."""
    d1 = uv_tri[:, 1] - uv_tri[:, 0]  # (F, 2)
    d2 = uv_tri[:, 2] - uv_tri[:, 0]
    return 0.5 * (d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0])


def _edge_function(p: np.ndarray, q: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``cross(q - p, (x, y) - p)`` with ``p, q`` in canonical (lexicographic) order.

    ``edge(p, q) == -edge(q, p)`` holds exactly, so adjacent triangles agree on
    which side of their shared edge a point lies. Shapes: ``p, q (K, 2)``, ``x, y (K,)`` -> ``(K,)``.
    """
    swap = (p[:, 0] > q[:, 0]) | ((p[:, 0] == q[:, 0]) & (p[:, 1] > q[:, 1]))  # (K,)
    a = np.where(swap[:, None], q, p)
    b = np.where(swap[:, None], p, q)
    e = (b[:, 0] - a[:, 0]) * (y - a[:, 1]) - (b[:, 1] - a[:, 1]) * (x - a[:, 0])
    return np.where(swap, -e, e)


def _rasterize(uv_tri: np.ndarray, h: int, w: int):
    """All (face, texel) pairs with the texel centre inside the face's UV triangle.

    Returns ``face (K,)``, ``row (K,)``, ``col (K,)`` int64 and ``bary (K, 3)`` float64
    barycentric weights of the face's corners (non-negative, sum 1).
    """
    f_count = uv_tri.shape[0]
    empty = (np.zeros(0, np.int64),) * 3 + (np.zeros((0, 3)),)
    if f_count == 0:
        return empty
    pts = np.empty_like(uv_tri)  # (F, 3, 2) texel space (x = column, y = row)
    pts[..., 0] = uv_tri[..., 0] * w - 0.5
    pts[..., 1] = (1.0 - uv_tri[..., 1]) * h - 0.5
    d1 = pts[:, 1] - pts[:, 0]
    d2 = pts[:, 2] - pts[:, 0]
    area2 = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]  # (F,) twice the signed texel-space area
    sign = np.sign(area2)

    col0 = np.clip(np.ceil(pts[..., 0].min(axis=1)), 0, w).astype(np.int64)  # (F,)
    col1 = np.clip(np.floor(pts[..., 0].max(axis=1)), -1, w - 1).astype(np.int64)
    row0 = np.clip(np.ceil(pts[..., 1].min(axis=1)), 0, h).astype(np.int64)
    row1 = np.clip(np.floor(pts[..., 1].max(axis=1)), -1, h - 1).astype(np.int64)
    ncol = np.maximum(col1 - col0 + 1, 0)
    nrow = np.maximum(row1 - row0 + 1, 0)
    counts = np.where(sign != 0, ncol * nrow, 0)  # (F,) bounding-box texels per face

    # Edge k is opposite corner k: (1 -> 2), (2 -> 0), (0 -> 1), in the face's own order.
    # After orienting (multiplying by `sign`), its direction decides whether it owns ties.
    tail = pts[:, [1, 2, 0]]  # (F, 3, 2)
    head = pts[:, [2, 0, 1]]
    direction = (head - tail) * sign[:, None, None]  # (F, 3, 2)
    owns = (direction[..., 1] > 0) | ((direction[..., 1] == 0) & (direction[..., 0] < 0))  # (F, 3)

    out_f, out_r, out_c, out_b = [], [], [], []
    cum = np.cumsum(counts)
    start = 0
    while start < f_count:
        base = cum[start - 1] if start else 0
        stop = max(int(np.searchsorted(cum, base + _CHUNK, side="right")), start + 1)
        faces = np.arange(start, stop)
        cnt = counts[start:stop]
        start = stop
        total = int(cnt.sum())
        if total == 0:
            continue
        fid = np.repeat(faces, cnt)  # (K,)
        offset = np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        row = row0[fid] + offset // ncol[fid]
        col = col0[fid] + offset % ncol[fid]
        x = col.astype(np.float64)
        y = row.astype(np.float64)
        e = np.stack([_edge_function(tail[fid, k], head[fid, k], x, y) for k in range(3)], axis=1)  # (K, 3)
        e *= sign[fid, None]
        inside = ((e > 0) | ((e == 0) & owns[fid])).all(axis=1)  # (K,)
        e = e[inside]
        out_f.append(fid[inside])
        out_r.append(row[inside])
        out_c.append(col[inside])
        out_b.append(e / e.sum(axis=1, keepdims=True))
    if not out_f:
        return empty
    return (np.concatenate(out_f), np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_b))


def _overlap_pairs(face: np.ndarray, texel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique face pairs covering a common texel, and the lowest such texel per pair.

    Every pair of faces within a texel counts, however many faces cover it. Texels
    covered by the same set of faces yield the same pairs, so each distinct set is
    expanded once: the work grows with the distinct sets, not with their area.

    Shapes: ``face, texel (K,)`` -> ``pairs (P, 2)`` (``pairs[:, 0] < pairs[:, 1]``, sorted), ``where (P,)``.
    """
    order = np.lexsort((face, texel))
    f, t = face[order], texel[order]  # faces ascending within each texel's run
    starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]])  # (R,) first entry of each texel
    lengths = np.diff(np.r_[starts, t.size])  # (R,) faces covering each texel
    n_faces = int(f.max()) + 1 if f.size else 1
    keys, wheres = [], []
    for n in np.unique(lengths[lengths > 1]).tolist():
        first = starts[lengths == n]  # (M,)
        runs = f[first[:, None] + np.arange(n)]  # (M, n) the faces of each such texel
        runs, keep = np.unique(runs, axis=0, return_index=True)  # (D, n) distinct face sets, lowest texel each
        i, j = np.triu_indices(n, 1)
        keys.append((runs[:, i] * n_faces + runs[:, j]).ravel())  # (D * n(n-1)/2,) pair keys
        wheres.append(np.repeat(t[first[keep]], i.size))
    if not keys:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    key, where = np.concatenate(keys), np.concatenate(wheres)
    order = np.lexsort((where, key))  # lowest texel first within each pair
    key, where = key[order], where[order]
    unique = np.r_[True, key[1:] != key[:-1]]
    key = key[unique]
    pairs = np.stack([key // n_faces, key % n_faces], axis=1)
    return pairs.astype(np.int64), where[unique].astype(np.int64)


# ----------------------------------------------------------------------- public
def texel_map(mesh: Mesh, size, *, allow_overlap: bool = False, dtype: "torch.dtype | None" = None) -> "TexelMap":
    """Which triangle, vertices and barycentric weights colour each texel of a UV map.

    For every texel centre (module docstring) the UV triangle covering it (from the
    per-corner ``mesh.uv`` / ``mesh.uv_faces``) and its barycentric coordinates are
    found. Uncovered texels (the gutter) then copy ``index`` and ``weight`` of the
    nearest covered texel (Euclidean distance in texels, ``scipy.ndimage.distance_transform_edt``),
    so bilinear sampling near a seam never mixes in unrelated colours.

    Args:
        mesh: a :class:`Mesh` with UVs.
        size: ``S`` for an ``S x S`` map, or ``(H, W)``; at most :data:`MAX_MAP_SIZE` per side.
        allow_overlap: if ``False`` (default), two UV triangles covering one texel
            centre raise :class:`~mesh_decoder.errors.UVOverlapError` (a
            :class:`MeshValidationError`) naming them; if ``True`` the lower face index
            wins (mirrored islands: both halves read the texels of the lower faces).
        dtype: torch floating-point dtype of ``weight``. Default ``torch.get_default_dtype()``.

    Returns:
        :class:`mesh_decoder.hierarchy.container.TexelMap` with ``index (H, W, 3)``
        int64 (``mesh.faces[face]``), ``weight (H, W, 3)``, ``face (H, W)`` int64
        (``-1`` where uncovered) and ``mask (H, W)`` bool (coverage before padding).

    Shapes:
        ``mesh.uv (T, 2)``, ``mesh.uv_faces (F, 3)`` -> ``index, weight (H, W, 3)``; ``face, mask (H, W)``.
    """
    import torch
    from scipy import ndimage

    from ..hierarchy.container import TexelMap

    h, w = _map_size(size)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a torch floating-point dtype such as torch.float32, got {dtype!r}")
    uv_tri = _corner_uvs(mesh)  # (F, 3, 2)
    _check_face_indices(mesh)  # the map's index holds mesh.faces rows
    face, row, col, bary = _rasterize(uv_tri, h, w)
    texel = row * w + col  # (K,) flat texel index
    if face.size == 0:
        raise MeshValidationError(
            f"no texel centre of the {h}x{w} map is inside a UV triangle: expected UVs in [0, 1]^2 "
            f"covering at least one texel, got UV range {mesh.uv.min(axis=0).tolist()} .. {mesh.uv.max(axis=0).tolist()}"
        )
    outside = ((uv_tri < 0) | (uv_tri > 1)).any(axis=(1, 2))  # (F,) triangles reaching out of the map
    if outside.any():  # viewers repeat such UVs, the map does not: said, not dropped silently
        warnings.warn(
            f"{int(outside.sum())} of {outside.size} UV triangles reach outside [0, 1]^2 (UV range "
            f"{np.round(mesh.uv.min(axis=0), 3).tolist()} .. {np.round(mesh.uv.max(axis=0), 3).tolist()}): the "
            "texel map holds only their parts inside it, and UVs outside read its border texels", stacklevel=2)
    counts = np.bincount(texel, minlength=h * w)
    if counts.max() > 1:
        if not allow_overlap:
            pairs, where = _overlap_pairs(face, texel)
            f0, f1 = pairs[0]
            raise UVOverlapError(
                f"UV triangles of faces {int(f0)} and {int(f1)} overlap: both cover texel "
                f"({int(where[0] // w)}, {int(where[0] % w)}) of the {h}x{w} map; expected each texel centre "
                f"in at most one triangle, got {int((counts > 1).sum())} texels covered more than once "
                f"({pairs.shape[0]} face pairs)",
                "fix the UVs or pass allow_overlap=True (the lowest face colours a shared texel)",
            )
        order = np.lexsort((face, texel))  # lowest face first within each texel
        keep = np.ones(order.size, dtype=bool)
        keep[1:] = texel[order][1:] != texel[order][:-1]
        sel = order[keep]
        face, texel, bary = face[sel], texel[sel], bary[sel]

    face_map = np.full(h * w, -1, dtype=np.int64)  # (H*W,)
    face_map[texel] = face
    weight = np.zeros((h * w, 3), dtype=np.float64)  # (H*W, 3)
    weight[texel] = bary
    mask = face_map >= 0
    source = np.arange(h * w)
    if not mask.all():
        _, (ii, jj) = ndimage.distance_transform_edt(~mask.reshape(h, w), return_indices=True)  # (2, H, W)
        source = (ii * w + jj).reshape(-1)  # nearest covered texel, (H*W,)
    filled = face_map[source]
    index = mesh.faces[filled].reshape(h, w, 3)  # (H, W, 3)
    weight = weight[source].reshape(h, w, 3)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    return TexelMap(
        index=torch.from_numpy(np.ascontiguousarray(index, dtype=np.int64)),
        weight=torch.from_numpy(weight).to(dtype),
        face=torch.from_numpy(face_map.reshape(h, w)),
        mask=torch.from_numpy(mask.reshape(h, w)),
    )


def check_uv_overlap(mesh: Mesh, size=512) -> np.ndarray:
    """Pairs of faces whose UV triangles cover a common texel centre of an ``size`` map.

    Args:
        mesh: a :class:`Mesh` with UVs.
        size: resolution of the test raster, ``S`` or ``(H, W)`` (at most :data:`MAX_MAP_SIZE`). Default ``512``.
            Overlaps smaller than a texel can go unseen; raise ``size`` to find them.

    Returns:
        ``(P, 2)`` int64 unique pairs ``(f0, f1)`` with ``f0 < f1``, sorted; empty if none.
    """
    h, w = _map_size(size)
    face, row, col, _ = _rasterize(_corner_uvs(mesh), h, w)
    return _overlap_pairs(face, row * w + col)[0]


def flipped_uv_faces(mesh: Mesh, *, rtol: float = 1e-12) -> np.ndarray:
    """Faces whose UV triangle is mirrored with respect to the rest of the chart.

    A face is flipped when its signed UV area has the opposite sign to the total
    signed UV area of the mesh (a fold). Faces with ``|area| <= rtol * total |area|``
    are degenerate in UV and not reported.

    Args:
        mesh: a :class:`Mesh` with UVs.
        rtol: relative area below which a face counts as degenerate, a finite number ``>= 0``.
            Default ``1e-12``.

    Returns:
        ``(K,)`` int64 sorted face indices.
    """
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not 0.0 <= rtol < math.inf:
        raise ValueError(f"rtol: expected a finite number >= 0, got {rtol!r}")
    area = _signed_areas(_corner_uvs(mesh))  # (F,)
    total = area.sum()
    tol = rtol * np.abs(area).sum()
    major = 1.0 if total >= 0 else -1.0
    return np.flatnonzero(area * major < -tol).astype(np.int64)


def _uv_defects(mesh: Mesh, check_size) -> str | None:
    """A sentence describing flipped or overlapping UV triangles, or ``None``."""
    flipped = flipped_uv_faces(mesh)
    if flipped.size:
        return f"{flipped.size} faces are flipped in UV (e.g. face {int(flipped[0])})"
    pairs = check_uv_overlap(mesh, check_size)
    if pairs.shape[0]:
        return (f"{pairs.shape[0]} pairs of UV triangles overlap at {check_size} texels "
                f"(e.g. faces {int(pairs[0, 0])} and {int(pairs[0, 1])})")
    return None


def _principal_axes(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid ``(3,)`` and principal axes ``(3, 3)`` (rows, by decreasing variance).

    Each axis's largest-magnitude component is made positive, so the result is
    deterministic.
    """
    centre = vertices.mean(axis=0)
    x = vertices - centre  # (V, 3)
    _, vecs = np.linalg.eigh(x.T @ x)  # ascending eigenvalues, vectors in columns
    axes = vecs[:, ::-1].T.copy()  # (3, 3) rows e1, e2, e3
    pick = np.abs(axes).argmax(axis=1)
    axes *= np.sign(axes[np.arange(3), pick])[:, None]
    return centre, axes


def _fit_unit_square(points: np.ndarray, margin: float) -> np.ndarray:
    """Uniformly scale and centre ``(N, 2)`` points into ``[margin, 1 - margin]^2``."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = float((hi - lo).max())
    if not extent > 0:
        raise MeshValidationError("automatic_uv: expected vertices spanning a non-zero area, got a degenerate mesh")
    return (points - 0.5 * (lo + hi)) * ((1.0 - 2.0 * margin) / extent) + 0.5


def _orient(points: np.ndarray, uv_faces: np.ndarray) -> np.ndarray:
    """Mirror ``u`` if needed so that the chart's total signed area is positive."""
    if _signed_areas(points[uv_faces]).sum() < 0:
        points = points.copy()
        points[:, 0] *= -1.0
    return points


def _planar_uv(mesh: Mesh, margin: float) -> Mesh:
    centre, axes = _principal_axes(mesh.vertices)
    points = (mesh.vertices - centre) @ axes[:2].T  # (V, 2) coordinates in the principal plane
    points = _orient(points, mesh.faces)
    return mesh.copy(uv=_fit_unit_square(points, margin), uv_faces=mesh.faces.copy())


def _cylindrical_uv(mesh: Mesh, margin: float) -> Mesh:
    centre, axes = _principal_axes(mesh.vertices)
    x = mesh.vertices - centre  # (V, 3)
    height = x @ axes[0]  # (V,) along the principal axis
    a, b = x @ axes[1], x @ axes[2]
    theta = np.arctan2(b, a)  # (V,) in (-pi, pi]
    radius = float(np.hypot(a, b).mean())
    # Cut at the middle of the widest angular gap between vertices.
    ts = np.sort(theta)
    gaps = np.diff(np.concatenate([ts, ts[:1] + 2 * np.pi]))
    k = int(gaps.argmax())
    seam = ts[k] + 0.5 * gaps[k]
    angle = np.mod(theta - seam, 2 * np.pi)  # (V,) in [0, 2 pi)

    # Faces whose corners span more than half a turn cross the seam: their corners on
    # the low side get a copy of the vertex's UV shifted by a full turn.
    corner = angle[mesh.faces]  # (F, 3)
    crossing = (corner.max(axis=1) - corner.min(axis=1)) > np.pi
    shifted = crossing[:, None] & (corner < np.pi)  # (F, 3)
    moved = np.unique(mesh.faces[shifted])  # vertices that need a shifted copy
    uv_faces = mesh.faces.copy()
    slot = np.full(mesh.num_vertices, -1, dtype=np.int64)
    slot[moved] = mesh.num_vertices + np.arange(moved.size)
    uv_faces[shifted] = slot[mesh.faces[shifted]]
    u = np.concatenate([angle, angle[moved] + 2 * np.pi]) * radius  # (T,) arc length
    v = np.concatenate([height, height[moved]])
    points = _orient(np.stack([u, v], axis=1), uv_faces)  # (T, 2)
    return mesh.copy(uv=_fit_unit_square(points, margin), uv_faces=uv_faces)


def automatic_uv(mesh: Mesh, method: str = "auto", *, margin: float = 0.02, check_size=512) -> Mesh:
    """A copy of ``mesh`` with generated UVs.

    Methods:

    * ``"planar"``: orthographic projection onto the principal plane (the two
      leading principal axes of the vertices);
    * ``"cylindrical"``: angle around and height along the principal axis, with
      the angle scaled by the mean radius (arc length). The cut is placed in the
      widest angular gap between vertices; faces crossing it get per-corner UVs
      shifted by a full turn, so no triangle wraps across the map;
    * ``"auto"``: ``"planar"`` unless it has flipped (:func:`flipped_uv_faces`) or
      overlapping (:func:`check_uv_overlap` at ``check_size``) triangles, then
      ``"cylindrical"``; raises if both have.

    In every case the chart is oriented so that faces keep their winding in UV
    (positive signed area), and uniformly scaled and centred into
    ``[margin, 1 - margin]^2``.

    Args:
        mesh: the :class:`Mesh`; its existing UVs are replaced.
        method: ``"auto"`` (default), ``"planar"`` or ``"cylindrical"``.
        margin: empty border kept around the chart. Default ``0.02``.
        check_size: raster size of the overlap test of ``"auto"``. Default ``512``.

    Returns:
        A new :class:`Mesh` with ``uv (T, 2)`` and ``uv_faces (F, 3)``.

    Raises:
        MeshValidationError: ``"auto"`` found defects with both methods (the message
            says which), or the mesh is degenerate.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a mesh_decoder Mesh, got {type(mesh).__name__}")
    if not 0 <= margin < 0.5:
        raise ValueError(f"margin: expected a value in [0, 0.5), got {margin}")
    if mesh.num_vertices == 0 or mesh.num_faces == 0:
        raise MeshValidationError(
            f"automatic_uv: expected a mesh with vertices and faces, got V={mesh.num_vertices}, F={mesh.num_faces}"
        )
    _check_face_indices(mesh)
    _check_finite(mesh.vertices, "vertices")
    builders = {"planar": _planar_uv, "cylindrical": _cylindrical_uv}
    if method in builders:
        return builders[method](mesh, margin)
    if method != "auto":
        raise ValueError(f"method: expected 'auto', 'planar' or 'cylindrical', got {method!r}")
    problems = []
    for name, build in builders.items():
        out = build(mesh, margin)
        defect = _uv_defects(out, check_size)
        if defect is None:
            return out
        problems.append(f"{name}: {defect}")
    raise MeshValidationError(
        "automatic_uv: expected a projection without flipped or overlapping UV triangles, got "
        + "; ".join(problems)
        + ". Provide UVs made with a mesh parametrisation tool"
    )


def ensure_uv(mesh: Mesh, **kwargs) -> Mesh:
    """``mesh`` itself if it has UVs, else :func:`automatic_uv` ``(mesh, **kwargs)``."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a mesh_decoder Mesh, got {type(mesh).__name__}")
    return mesh if mesh.uv is not None else automatic_uv(mesh, **kwargs)


def _clip_half_plane(poly: np.ndarray, count: np.ndarray, axis: int, bound: float, keep_below: bool):
    """Clip convex polygons to ``p[axis] <= bound`` (or ``>=``), Sutherland-Hodgman.

    Shapes: ``poly (N, K, 2)``, ``count (N,)`` -> ``(N, K', 2)``, ``(N,)``.
    """
    n, k, _ = poly.shape
    if n == 0 or k == 0:
        return poly, count
    idx = np.arange(k)
    nxt = (idx[None, :] + 1) % np.maximum(count, 1)[:, None]  # (N, K)
    p = poly  # (N, K, 2)
    q = np.take_along_axis(poly, nxt[..., None], axis=1)
    dist_p = (bound - p[..., axis]) if keep_below else (p[..., axis] - bound)  # (N, K) >= 0 inside
    dist_q = (bound - q[..., axis]) if keep_below else (q[..., axis] - bound)
    valid = idx[None, :] < count[:, None]
    in_p, in_q = dist_p >= 0, dist_q >= 0
    denom = np.where(dist_p - dist_q == 0, 1.0, dist_p - dist_q)
    cut = p + (q - p) * (dist_p / denom)[..., None]  # (N, K, 2)
    emit = np.stack([valid & in_p, valid & (in_p != in_q)], axis=2).reshape(n, 2 * k)  # (N, 2K)
    pts = np.stack([p, cut], axis=2).reshape(n, 2 * k, 2)  # (N, 2K, 2)
    order = np.argsort(~emit, axis=1, kind="stable")  # emitted points first, in order
    pts = np.take_along_axis(pts, order[..., None], axis=1)
    new_count = emit.sum(axis=1)
    width = int(new_count.max()) if n else 0
    return pts[:, :width], new_count


def uv_coverage(mesh: Mesh) -> float:
    """Fraction of the unit UV square covered by the UV triangles (area based).

    Each UV triangle is clipped to ``[0, 1]^2`` and the clipped areas are summed.
    Overlapping triangles would be counted twice (see :func:`check_uv_overlap`), so
    the result is capped at ``1``.

    Shapes:
        ``mesh.uv (T, 2)``, ``mesh.uv_faces (F, 3)`` -> ``float``.
    """
    poly = _corner_uvs(mesh).copy()  # (F, 3, 2)
    count = np.full(poly.shape[0], 3, dtype=np.int64)
    outside = ((poly < 0) | (poly > 1)).any(axis=(1, 2))
    total = float(np.abs(_signed_areas(poly[~outside])).sum())
    poly, count = poly[outside], count[outside]
    for axis, bound, below in ((0, 0.0, False), (0, 1.0, True), (1, 0.0, False), (1, 1.0, True)):
        poly, count = _clip_half_plane(poly, count, axis, bound, below)
    if poly.shape[0] and poly.shape[1]:
        nxt = (np.arange(poly.shape[1])[None, :] + 1) % np.maximum(count, 1)[:, None]  # (N, K)
        q = np.take_along_axis(poly, nxt[..., None], axis=1)
        cross = poly[..., 0] * q[..., 1] - poly[..., 1] * q[..., 0]  # (N, K) shoelace terms
        cross = np.where(np.arange(poly.shape[1])[None, :] < count[:, None], cross, 0.0)
        total += float(np.abs(0.5 * cross.sum(axis=1)).sum())
    return min(total, 1.0)
