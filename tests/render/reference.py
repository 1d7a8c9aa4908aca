"""Slow, obviously correct references for the renderer: loops over faces and pixels, plain numpy."""

from __future__ import annotations

import numpy as np
import torch


def to_pixels(ndc: np.ndarray, H: int, W: int) -> np.ndarray:
    """NDC ``(x, y, depth)`` -> pixel ``(column, row, depth)`` with pixel centres on integers."""
    out = np.array(ndc, dtype=np.float64, copy=True)
    out[:, 0] = (ndc[:, 0] + 1.0) * W / 2.0 - 0.5
    out[:, 1] = (1.0 - ndc[:, 1]) * H / 2.0 - 0.5
    return out


def _edge(p, q, x, y):
    """cross(q - p, (x, y) - p) with p, q in lexicographic order (sign restored)."""
    if (p[0], p[1]) > (q[0], q[1]):
        return -_edge(q, p, x, y)
    return (q[0] - p[0]) * (y - p[1]) - (q[1] - p[1]) * (x - p[0])


def reference_rasterize(pix: np.ndarray, faces: np.ndarray, H: int, W: int, perspective: bool,
                        znear: float | None = None, cull_backfaces: bool = False):
    """Nearest face per pixel by brute force.

    Args:
        pix: ``(V, 3)`` pixel-space vertices (column, row, depth).
        faces: ``(F, 3)``.

    Returns:
        ``face_id (H, W)`` int64 (-1 empty), ``bary (H, W, 3)``, ``depth (H, W)`` (inf empty).
    """
    face_id = np.full((H, W), -1, dtype=np.int64)
    bary = np.zeros((H, W, 3))
    depth = np.full((H, W), np.inf)
    best = {}
    for f, (i0, i1, i2) in enumerate(faces):
        c = pix[[i0, i1, i2]]
        if not np.isfinite(c).all():
            continue
        if znear is not None and (c[:, 2] <= znear).any():
            continue
        area2 = (c[1, 0] - c[0, 0]) * (c[2, 1] - c[0, 1]) - (c[1, 1] - c[0, 1]) * (c[2, 0] - c[0, 0])
        if area2 == 0 or (cull_backfaces and area2 > 0):
            continue
        sign = 1.0 if area2 > 0 else -1.0
        for i in range(H):
            for j in range(W):
                inside = True
                e = []
                for k in range(3):
                    tail, head = c[(k + 1) % 3], c[(k + 2) % 3]
                    ek = _edge(tail, head, float(j), float(i)) * sign
                    dx, dy = (head[0] - tail[0]) * sign, (head[1] - tail[1]) * sign
                    owns = dy > 0 or (dy == 0 and dx < 0)
                    if not (ek > 0 or (ek == 0 and owns)):
                        inside = False
                        break
                    e.append(ek)
                if not inside:
                    continue
                lam = np.array(e) / sum(e)
                if perspective:
                    w = lam / c[:, 2]
                    b, d = w / w.sum(), 1.0 / w.sum()
                else:
                    b, d = lam, float((lam * c[:, 2]).sum())
                key = (np.float32(d), f)
                if (i, j) not in best or key < best[(i, j)]:
                    best[(i, j)] = key
                    face_id[i, j] = f
                    bary[i, j] = b
                    depth[i, j] = d
    return face_id, bary, depth


def reference_interpolate(face_id: np.ndarray, bary: np.ndarray, faces: np.ndarray,
                          attributes: np.ndarray) -> np.ndarray:
    """``(H, W)``, ``(H, W, 3)``, ``(F, 3)``, ``(N, C)`` -> ``(H, W, C)`` by a loop over pixels."""
    H, W = face_id.shape
    out = np.zeros((H, W, attributes.shape[1]))
    for i in range(H):
        for j in range(W):
            f = face_id[i, j]
            if f >= 0:
                for k in range(3):
                    out[i, j] += bary[i, j, k] * attributes[faces[f, k]]
    return out


def reference_bilinear(texture: np.ndarray, u: float, v: float) -> np.ndarray:
    """Sample ``(C, H, W)`` at ``(u, v)``: texel centres at ``((j + .5) / W, 1 - (i + .5) / H)``, border clamp."""
    C, H, W = texture.shape
    x = min(max(u * W - 0.5, 0.0), W - 1.0)
    y = min(max((1.0 - v) * H - 0.5, 0.0), H - 1.0)
    j0, i0 = int(np.floor(x)), int(np.floor(y))
    j1, i1 = min(j0 + 1, W - 1), min(i0 + 1, H - 1)
    a, b = x - j0, y - i0
    return ((1 - a) * (1 - b) * texture[:, i0, j0] + a * (1 - b) * texture[:, i0, j1]
            + (1 - a) * b * texture[:, i1, j0] + a * b * texture[:, i1, j1])


def reference_vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted normals by a loop over faces."""
    n = np.zeros_like(vertices)
    for f in faces:
        p0, p1, p2 = vertices[f]
        fn = np.cross(p1 - p0, p2 - p0)
        for k in f:
            n[k] += fn
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.where(length > 0, n / np.where(length > 0, length, 1.0), 0.0)


def random_scene(gen: torch.Generator, num_faces: int = 10, depth_range=(2.0, 6.0), spread: float = 1.2,
                 dtype=torch.float64):
    """Random, mutually overlapping, well-shaped triangles (``3 * num_faces`` vertices, none shared).

    Corners sit at jittered angles ``0, 120, 240`` degrees around a random centre, with
    random radii and random depths; about half the faces are wound clockwise.
    """
    V = 3 * num_faces
    centres = (torch.rand(num_faces, 1, 2, generator=gen, dtype=dtype) * 2 - 1) * 0.5 * spread  # (F, 1, 2)
    angle = (torch.arange(3, dtype=dtype) * (2 * torch.pi / 3)
             + torch.rand(num_faces, 3, generator=gen, dtype=dtype) * 1.2
             + torch.rand(num_faces, 1, generator=gen, dtype=dtype) * 2 * torch.pi)  # (F, 3)
    radius = (0.3 + 0.5 * torch.rand(num_faces, 3, generator=gen, dtype=dtype)) * spread  # (F, 3)
    xy = centres + radius.unsqueeze(-1) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)  # (F, 3, 2)
    z = depth_range[0] + (depth_range[1] - depth_range[0]) * torch.rand(V, 1, generator=gen, dtype=dtype)
    vertices = torch.cat([xy.reshape(V, 2), z], dim=1)  # (V, 3)
    faces = torch.arange(V).reshape(num_faces, 3)
    flip = torch.rand(num_faces, generator=gen) < 0.5
    faces[flip] = faces[flip][:, [0, 2, 1]]
    return vertices, faces
