r"""A vectorised triangle rasteriser in torch: nearest face and barycentrics per pixel.

**Algorithm.** Vertices are projected by the camera (:mod:`.cameras`) and mapped to
continuous pixel coordinates, where the centre of pixel ``(i, j)`` sits at
``(column, row) = (j, i)`` (NDC convention in :mod:`.cameras`). Every face
enumerates the pixel centres inside its bounding box; all ``(face, pixel)``
candidates of the batch are numbered globally and processed in chunks of at most
``max_candidates`` (a face's box may straddle chunks), so memory is bounded by the
chunk size and the outputs, never by ``faces x pixels``. For each chunk, fully
vectorised:

1. each candidate finds its face by ``searchsorted`` on the running box sizes and
   its pixel from the offset inside the box;
2. the three edge functions decide coverage;
3. the depth at the pixel centre comes from the face's depth plane (``z`` is
   affine in screen space for orthographic cameras, ``1/z`` for perspective ones);
4. a 64-bit key ``(depth as an order-preserving float32 code) * 2^31 + face`` is
   reduced per pixel with ``scatter_reduce(..., "amin")``: the nearest face wins,
   and a tie in float32 depth goes to the lower face index.

The winning face's barycentric coordinates are then computed once per covered pixel.

**Fill rule.** A pixel centre inside a triangle is covered. A centre exactly on an
edge shared by two triangles is covered by exactly one of them: the edge function
is evaluated with the edge's end points in a canonical (lexicographic) order, so
the two triangles see exactly opposite values, and after orienting each triangle
so that its interior is positive, an edge owns the centres on it when its direction
``(dx, dy)`` (``dy`` pointing down the image) has ``dy > 0``, or ``dy == 0`` and
``dx < 0`` (the rule of :mod:`mesh_decoder.mesh.uv`). The edge function is evaluated as
``dx (p_y - a_y) - dy (p_x - a_x)`` from the edge's first end ``a``: it is exactly zero at
both end points, so a pixel centre on a vertex is covered by exactly one face of the
fan around it too. Degenerate faces (zero screen
area) and faces with a non-finite projected vertex cover nothing.

**Barycentrics.** For a pixel centre ``p`` in face ``(v_0, v_1, v_2)``, the screen
barycentrics are ``l_k = e_k(p) / (e_0 + e_1 + e_2)`` with ``e_k`` the edge function of
the edge opposite ``v_k``. Under a perspective camera they are corrected with the
vertices' depths ``z_k``: ``b_k = (l_k / z_k) / \sum_m (l_m / z_m)`` and
``depth = 1 / \sum_m (l_m / z_m)``; otherwise ``b = l`` and ``depth = \sum_k l_k z_k``.

**Gradients.** Face ids and the barycentrics stored in :class:`Fragments` are
computed without gradient. :func:`barycentric_coordinates` recomputes them
differentiably from vertex positions (and camera parameters) with the face ids held
fixed, which is how :func:`~mesh_decoder.render.interpolate.interpolate` and
:func:`~mesh_decoder.render.render.render` pass gradients to the geometry. There
are no silhouette gradients: moving a vertex changes colours inside the faces it
touches, never which pixels a face covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._checks import as_faces, one_or, positive_int
from .cameras import Camera, image_size_pair

__all__ = ["Fragments", "rasterize", "barycentric_coordinates", "covered_pixels", "as_faces", "as_vertices"]

#: Default number of (face, pixel) candidates tested at once. Each costs about
#: 200 bytes of temporaries in float32 (about 260 in float64), so a chunk needs
#: about 26 MB. Chunks of 2**16 to 2**17 candidates measured fastest on CPU (the
#: temporaries stay in cache); much smaller ones pay Python overhead per chunk.
MAX_CANDIDATES = 1 << 17

_EMPTY_KEY = torch.iinfo(torch.int64).max
_FACE_BITS = 31


@dataclass
class Fragments:
    """What the rasteriser found at every pixel.

    Attributes:
        face_id: ``(B, H, W)`` int64 index of the nearest face, ``-1`` where empty.
        bary: ``(B, H, W, 3)`` barycentric coordinates in that face (perspective-correct
            for a perspective camera), zero where empty; no gradient.
        depth: ``(B, H, W)`` depth at the pixel centre (the camera's depth), ``inf`` where empty.
        mask: ``(B, H, W)`` bool, ``face_id >= 0``.
        faces: ``(F, 3)`` int64 faces that were rasterised.
        camera: the camera used.
        image_size: ``(H, W)``.
    """

    face_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    faces: torch.Tensor
    camera: Camera
    image_size: tuple[int, int]

    @property
    def batch_size(self) -> int:
        return int(self.face_id.shape[0])


# ------------------------------------------------------------------------------ inputs
def as_vertices(vertices: Any, name: str = "vertices") -> torch.Tensor:
    """``(V, 3)`` or ``(B, V, 3)`` floating tensor -> ``(B, V, 3)`` (numpy arrays are converted)."""
    if isinstance(vertices, np.ndarray):
        vertices = torch.from_numpy(np.ascontiguousarray(vertices))
    if not isinstance(vertices, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(vertices).__name__}")
    if vertices.dim() not in (2, 3) or vertices.shape[-1] != 3:
        raise ValueError(f"{name}: expected (V, 3) or (B, V, 3), got {tuple(vertices.shape)}")
    if vertices.dim() == 2:
        vertices = vertices.unsqueeze(0)  # (1, V, 3)
    if not vertices.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {vertices.dtype}")
    return vertices


def _project_pixels(camera: Camera, vertices: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """World vertices -> ``(B, V, 3)`` continuous pixel ``(column, row)`` and depth."""
    if not isinstance(camera, Camera):
        raise TypeError(f"camera: expected a mesh_decoder.render Camera, got {type(camera).__name__}")
    h, w = image_size
    ndc = camera.project(vertices)  # (B, V, 3)
    col = (ndc[..., 0] + 1.0) * (0.5 * w) - 0.5
    row = (1.0 - ndc[..., 1]) * (0.5 * h) - 0.5
    return torch.stack([col, row, ndc[..., 2]], dim=-1)  # (B, V, 3)


# ----------------------------------------------------------------------- per-face setup
def _face_setup(tri: torch.Tensor, perspective: bool, znear: float | None, cull_backfaces: bool):
    """Edge equations, tie ownership and depth planes of every face.

    Args:
        tri: ``(N, 3, 3)`` pixel-space corners (column, row, depth) of ``N = B * F`` faces.

    Returns:
        ``coef (N, 15)``: oriented edge equations ``e_k = dx_k (y - a_{y,k}) - dy_k (x - a_{x,k})``
        (``k = 0..2``: ``dx``, ``dy``, ``a_x``, ``a_y``, 12 values) then the depth plane
        ``q = P x + Q y + R`` (``q = depth``, or ``1 / depth`` for a perspective camera);
        ``owns (N, 3)`` bool tie ownership of each edge; ``valid (N,)`` bool.
    """
    x, y, z = tri[..., 0], tri[..., 1], tri[..., 2]  # (N, 3) each
    area2 = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (y[:, 1] - y[:, 0]) * (x[:, 2] - x[:, 0])  # (N,)
    valid = torch.isfinite(tri).all(dim=(1, 2)) & (area2 != 0)
    if znear is not None:
        valid &= (z > znear).all(dim=1)
    if cull_backfaces:
        # counter-clockwise seen by the camera (y up in NDC) is clockwise with rows pointing down
        valid &= area2 < 0
    sign = torch.where(area2 > 0, 1.0, -1.0).to(tri.dtype)  # (N,)

    # Edge k runs from corner k+1 (tail) to corner k+2 (head), opposite corner k.
    tail = tri[:, [1, 2, 0], :2]  # (N, 3, 2)
    head = tri[:, [2, 0, 1], :2]  # (N, 3, 2)
    swap = (tail[..., 0] > head[..., 0]) | ((tail[..., 0] == head[..., 0]) & (tail[..., 1] > head[..., 1]))  # (N, 3)
    a = torch.where(swap.unsqueeze(-1), head, tail)  # (N, 3, 2) canonical first end
    b = torch.where(swap.unsqueeze(-1), tail, head)  # (N, 3, 2) canonical second end
    orient = torch.where(swap, -1.0, 1.0).to(tri.dtype) * sign.unsqueeze(1)  # (N, 3)
    # e(p) = dx * (p_y - a_y) - dy * (p_x - a_x), oriented so the interior is positive: the same numbers,
    # exactly negated, for both faces of an edge. Evaluated in this form (not expanded to A p_x + B p_y + C),
    # it is exactly 0 at both end points and keeps its sign close to an edge: the expanded form rounds a
    # pixel centre a few ulps off a horizontal edge to 0, outside the bounding box of the face that owns it
    dx = (b[..., 0] - a[..., 0]) * orient  # (N, 3)
    dy = (b[..., 1] - a[..., 1]) * orient
    A, Bc = -dy, dx
    C = dy * a[..., 0] - dx * a[..., 1]  # only for the depth plane
    direction = (head - tail) * sign.reshape(-1, 1, 1)  # (N, 3, 2) oriented edge directions
    owns = (direction[..., 1] > 0) | ((direction[..., 1] == 0) & (direction[..., 0] < 0))  # (N, 3)

    q = 1.0 / z if perspective else z  # (N, 3) quantity affine in screen space
    s = (area2 * sign).clamp(min=torch.finfo(tri.dtype).tiny)  # (N,) = e_0 + e_1 + e_2 everywhere
    P = (A * q).sum(1) / s
    Q = (Bc * q).sum(1) / s
    R = (C * q).sum(1) / s
    coef = torch.cat([dx, dy, a[..., 0], a[..., 1], torch.stack([P, Q, R], dim=1)], dim=1)  # (N, 15)
    coef = torch.where(valid.unsqueeze(1), coef, torch.zeros((), dtype=coef.dtype))
    return coef, owns, valid


def _ordered_depth_code(depth: torch.Tensor) -> torch.Tensor:
    """float depths -> int64 codes in ``[0, 2^32)`` ordered like the float32 values."""
    bits = (depth.float() + 0.0).view(torch.int32).to(torch.int64)  # (K,) signed float32 bit patterns; -0 -> +0
    unsigned = bits & 0xFFFFFFFF
    return torch.where(bits < 0, 0xFFFFFFFF - unsigned, unsigned + 0x80000000)  # (K,)


# ------------------------------------------------------------------------------ public
def rasterize(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    image_size,
    *,
    cull_backfaces: bool = False,
    max_candidates: int = MAX_CANDIDATES,
    stats: dict | None = None,
) -> Fragments:
    """Rasterise a batch of meshes sharing one topology: nearest face and barycentrics per pixel.

    See the module docstring for the algorithm, the fill rule and the barycentric
    formulas; the pixel convention is in :mod:`mesh_decoder.render.cameras`.

    Args:
        vertices: ``(B, V, 3)`` or ``(V, 3)`` world positions (float32 or float64;
            the arithmetic runs in this dtype).
        faces: ``(F, 3)`` int64 vertex indices (tensor or numpy array).
        camera: a :class:`~mesh_decoder.render.cameras.Camera` of batch size 1 or ``B``.
        image_size: ``int`` or ``(H, W)``.
        cull_backfaces: drop faces that are clockwise as seen by the camera (the
            templates are counter-clockwise seen from outside). Default ``False``.
        max_candidates: largest number of (face, pixel) candidates processed at once;
            bounds the temporary memory (about 200 bytes each in float32).
            Default ``2**17``.
        stats: if a dict is given, it receives ``candidates`` (total), ``chunks``,
            ``largest_chunk`` and ``covered`` (pixels) of this call.

    Returns:
        :class:`Fragments` (no gradient).

    Shapes:
        ``(B, V, 3), (F, 3) -> face_id (B, H, W), bary (B, H, W, 3), depth (B, H, W), mask (B, H, W)``.
    """
    h, w = image_size_pair(image_size)
    vertices = as_vertices(vertices)
    faces = as_faces(faces, int(vertices.shape[1]), vertices.device)
    max_candidates = positive_int(max_candidates, "max_candidates")
    F_ = int(faces.shape[0])
    if F_ >= (1 << _FACE_BITS):
        raise ValueError(f"faces: expected fewer than 2**31 faces, got {F_}")
    with torch.no_grad():
        verts = vertices.detach()
        if verts.dtype not in (torch.float32, torch.float64):
            verts = verts.float()
        pix = _project_pixels(camera, verts, (h, w))  # (B, V, 3)
        B = int(pix.shape[0])
        device, dtype = pix.device, pix.dtype
        tri = pix[:, faces].reshape(B * F_, 3, 3)  # (B*F, 3, 3)
        coef, owns, valid = _face_setup(tri, camera.is_perspective, camera.znear, cull_backfaces)

        # bounding boxes of pixel centres (clamped before the integer conversion)
        xs, ys = tri[..., 0], tri[..., 1]  # (B*F, 3)
        lo_x = xs.amin(1).clamp(-1.0, float(w)).nan_to_num(0.0)
        hi_x = xs.amax(1).clamp(-1.0, float(w)).nan_to_num(0.0)
        lo_y = ys.amin(1).clamp(-1.0, float(h)).nan_to_num(0.0)
        hi_y = ys.amax(1).clamp(-1.0, float(h)).nan_to_num(0.0)
        col0 = torch.ceil(lo_x).to(torch.int64).clamp(0, w)
        col1 = torch.floor(hi_x).to(torch.int64).clamp(-1, w - 1)
        row0 = torch.ceil(lo_y).to(torch.int64).clamp(0, h)
        row1 = torch.floor(hi_y).to(torch.int64).clamp(-1, h - 1)
        ncol = (col1 - col0 + 1).clamp(min=0)  # (B*F,)
        nrow = (row1 - row0 + 1).clamp(min=0)
        counts = torch.where(valid, ncol * nrow, 0)  # (B*F,) box pixels per face
        ends = torch.cumsum(counts, 0)  # (B*F,)
        total = int(ends[-1]) if ends.numel() else 0
        n_idx = torch.arange(B * F_, device=device)
        own_bits = owns[:, 0].long() | (owns[:, 1].long() << 1) | (owns[:, 2].long() << 2)  # (B*F,)
        # per-face integers gathered once per candidate: box start, first row, first column,
        # box width, first pixel of the face's image, face index + tie bits << 31
        meta = torch.stack([
            ends - counts,
            row0,
            col0,
            ncol.clamp(min=1),
            torch.div(n_idx, F_, rounding_mode="floor") * (h * w),
            n_idx % F_ + (own_bits << _FACE_BITS),
        ], dim=1)  # (B*F, 6)
        del n_idx, own_bits

        zbuf = torch.full((B * h * w,), _EMPTY_KEY, dtype=torch.int64, device=device)  # (B*H*W,)
        empty = torch.full((), _EMPTY_KEY, dtype=torch.int64, device=device)
        chunks, largest = 0, 0
        for start in range(0, total, int(max_candidates)):
            k = torch.arange(start, min(start + int(max_candidates), total), device=device)  # (K,)
            chunks += 1
            largest = max(largest, int(k.shape[0]))
            fid = torch.searchsorted(ends, k, right=True)  # (K,) index into B*F
            m = meta.index_select(0, fid)  # (K, 6)
            c = coef.index_select(0, fid)  # (K, 15)
            del fid
            offset = k - m[:, 0]  # (K,) position inside the face's box
            del k
            row = m[:, 1] + torch.div(offset, m[:, 3], rounding_mode="floor")  # (K,)
            col = m[:, 2] + offset % m[:, 3]  # (K,)
            del offset
            px = col.to(dtype)  # (K,)
            py = row.to(dtype)
            inside = None
            for j in range(3):  # oriented edge function of edge j, interior positive
                e = c[:, j] * (py - c[:, 9 + j]) - c[:, 3 + j] * (px - c[:, 6 + j])  # (K,)
                ok = (e > 0) | ((e == 0) & (((m[:, 5] >> (_FACE_BITS + j)) & 1) == 1))
                inside = ok if inside is None else inside & ok
            del e, ok
            q = c[:, 12] * px + c[:, 13] * py + c[:, 14]  # (K,) depth or 1/depth
            del c, px, py
            depth = 1.0 / q if camera.is_perspective else q
            key = _ordered_depth_code(depth) * (1 << _FACE_BITS) + (m[:, 5] & ((1 << _FACE_BITS) - 1))  # (K,)
            key = torch.where(inside, key, empty)
            target = m[:, 4] + row * w + col  # (K,) flat pixel index (outside candidates stay in range)
            zbuf.scatter_reduce_(0, target, key, reduce="amin")
            del m, q, depth, key, target, inside, row, col

        mask = zbuf != _EMPTY_KEY  # (B*H*W,)
        face_id = torch.where(mask, zbuf & ((1 << _FACE_BITS) - 1), torch.full((), -1, device=device))
        face_id = face_id.reshape(B, h, w)  # (B, H, W)
        mask = mask.reshape(B, h, w)
        frags = Fragments(
            face_id=face_id,
            bary=torch.zeros(B, h, w, 3, dtype=dtype, device=device),
            depth=torch.full((B, h, w), float("inf"), dtype=dtype, device=device),
            mask=mask,
            faces=faces,
            camera=camera,
            image_size=(h, w),
        )
        flat, bidx, fidx = covered_pixels(frags)
        bary, depth = _bary_at(pix, faces, flat, bidx, fidx, (h, w), camera.is_perspective)
        frags.bary.view(-1, 3).index_copy_(0, flat, bary)
        frags.depth.view(-1).index_copy_(0, flat, depth)
    if stats is not None:
        stats.update(candidates=total, chunks=chunks, largest_chunk=largest, covered=int(flat.numel()))
    return frags


def covered_pixels(fragments: Fragments) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat indices, batch indices and face ids of the covered pixels.

    Returns:
        ``flat (P,)`` index into ``B * H * W``, ``batch (P,)``, ``face (P,)`` (all int64).
    """
    h, w = fragments.image_size
    flat = fragments.mask.reshape(-1).nonzero().squeeze(1)  # (P,)
    batch = torch.div(flat, h * w, rounding_mode="floor")  # (P,)
    face = fragments.face_id.reshape(-1).index_select(0, flat)  # (P,)
    return flat, batch, face


def _bary_at(
    pix: torch.Tensor,
    faces: torch.Tensor,
    flat: torch.Tensor,
    batch: torch.Tensor,
    face: torch.Tensor,
    image_size: tuple[int, int],
    perspective: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Barycentrics and depth of given faces at given pixel centres (differentiable in ``pix``).

    Shapes: ``pix (B, V, 3)``, ``flat, batch, face (P,)`` -> ``bary (P, 3)``, ``depth (P,)``.
    """
    h, w = image_size
    rem = flat - batch * (h * w)
    py = torch.div(rem, w, rounding_mode="floor").to(pix.dtype)  # (P,) pixel-centre row
    px = (rem % w).to(pix.dtype)  # (P,) pixel-centre column
    V = int(pix.shape[1])
    corner_index = faces.index_select(0, face) + (batch * V).unsqueeze(1)  # (P, 3) rows of pix.reshape(B*V, 3)
    corners = pix.reshape(-1, 3).index_select(0, corner_index.reshape(-1)).reshape(-1, 3, 3)  # (P, 3, 3)
    x, y, z = corners[..., 0], corners[..., 1], corners[..., 2]  # (P, 3)
    tx, ty = x.roll(-1, dims=1), y.roll(-1, dims=1)  # (P, 3) edge tails (corner k+1)
    hx, hy = x.roll(-2, dims=1), y.roll(-2, dims=1)  # (P, 3) edge heads (corner k+2)
    e = (hx - tx) * (py.unsqueeze(1) - ty) - (hy - ty) * (px.unsqueeze(1) - tx)  # (P, 3) opposite corner k
    lam = e / (e[:, 0:1] + e[:, 1:2] + e[:, 2:3])  # (P, 3) screen-space barycentrics
    if perspective:
        wgt = lam / z  # (P, 3)
        inv = wgt[:, 0:1] + wgt[:, 1:2] + wgt[:, 2:3]  # (P, 1) = 1 / depth
        return wgt / inv, 1.0 / inv.squeeze(1)
    lz = lam * z  # (P, 3)
    return lam, lz[:, 0] + lz[:, 1] + lz[:, 2]


def barycentric_coordinates(
    fragments: Fragments, vertices: torch.Tensor, return_depth: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Recompute the barycentrics of the rasterised faces, differentiably.

    The face at every pixel stays ``fragments.face_id``; the weights are recomputed
    from ``vertices`` through ``fragments.camera`` (module docstring formulas), so
    gradients flow to the vertex positions and to the camera parameters. Empty
    pixels get zeros.

    Args:
        fragments: the output of :func:`rasterize`.
        vertices: ``(B, V, 3)`` or ``(V, 3)`` positions (normally the ones rasterised).
        return_depth: also return the ``(B, H, W)`` depth (``inf`` where empty).

    Shapes:
        ``(B, V, 3) -> (B, H, W, 3)``.
    """
    bary_p, depth_p, flat = _packed_bary(fragments, vertices, "vertices")
    B = fragments.batch_size
    h, w = fragments.image_size
    out = bary_p.new_zeros(B * h * w, 3).index_copy(0, flat, bary_p).reshape(B, h, w, 3)  # (B, H, W, 3)
    if not return_depth:
        return out
    depth = depth_p.new_full((B * h * w,), float("inf")).index_copy(0, flat, depth_p).reshape(B, h, w)
    return out, depth


def _packed_bary(fragments: Fragments, vertices: torch.Tensor, name: str):
    """Differentiable barycentrics ``(P, 3)`` and depth ``(P,)`` of the covered pixels, and their flat indices;
    errors name the caller's argument ``name``."""
    if not isinstance(fragments, Fragments):
        raise TypeError(f"fragments: expected Fragments, got {type(fragments).__name__}")
    vertices = as_vertices(vertices, name)
    B = fragments.batch_size
    if int(vertices.shape[0]) not in (1, B):
        raise ValueError(f"{name}: expected batch size {one_or(B)}, got {int(vertices.shape[0])}")
    top = int(fragments.faces.max()) + 1 if fragments.faces.numel() else 0
    if int(vertices.shape[1]) < top:
        raise ValueError(f"{name}: expected at least {top} vertices (the faces' range), got {int(vertices.shape[1])}")
    pix = _project_pixels(fragments.camera, vertices, fragments.image_size)  # (B', V, 3)
    if pix.shape[0] == 1 and B > 1:
        pix = pix.expand(B, -1, -1)  # (B, V, 3)
    flat, batch, face = covered_pixels(fragments)
    bary, depth = _bary_at(pix, fragments.faces.to(pix.device), flat, batch, face, fragments.image_size,
                           fragments.camera.is_perspective)
    return bary, depth, flat
