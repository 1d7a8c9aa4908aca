"""UV-space operators: per-vertex colours to a UV texture and back.

* :class:`TexelGather` writes per-vertex colours into a UV map through a
  precomputed :class:`~mesh_decoder.hierarchy.TexelMap` with one gather.
* :func:`sample_uv` (and the reusable :class:`UVSampler`) reads a UV texture
  back at the vertices with bilinear sampling.

The learned texture decoders (the 2D CNN branch and the joint shape + texture
decoder) live in :mod:`mesh_decoder.nn.decoders`; this module only holds the
fixed, differentiable operators between the two colour representations.

UV convention (the same as :class:`~mesh_decoder.hierarchy.TexelMap`): ``u``
runs left to right and ``v`` from the *bottom* of the image, as in OBJ files.
Texel ``(i, j)`` (row ``i`` from the top) has its centre at

.. math::
    u = \\frac{j + 0.5}{W}, \\qquad v = 1 - \\frac{i + 0.5}{H}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_tensor, non_negative_int
from ..hierarchy.container import TexelMap
from .graph import hierarchy_level, inference_fast_path
from .spiral_conv import _use_triton, embedding_bag_sum
from .triton_gather import weighted_gather_sum

if TYPE_CHECKING:  # pragma: no cover
    from ..hierarchy.container import MeshHierarchy
    from ..mesh.container import Mesh

__all__ = ["TexelGather", "UVSampler", "sample_uv", "uv_corners"]


class TexelGather(nn.Module):
    r"""Write per-vertex colours into a UV texture with one gather.

    Every texel holds the barycentric interpolation of the colours of the
    three vertices of the template triangle that covers it in UV space:

    .. math::
        T_{b,c,i,j} = \sum_{k=0}^{2} w_{i,j,k}\, C_{b,\, n_{i,j,k},\, c},

    where ``n = index`` and ``w = weight`` come from the hierarchy's
    :class:`~mesh_decoder.hierarchy.TexelMap`. This is the texture of the
    coloured-mesh decoding of "Dense 3D Face Decoding over 2500FPS: Joint
    Texture & Shape Convolutional Mesh Decoders" (Zhou et al., CVPR 2019): the
    network decodes a colour per vertex together with the shape, and the UV
    map is an *interpolated view* of those per-vertex colours, so it holds no
    detail finer than the mesh. Uncovered (gutter) texels repeat the nearest
    covered texel, as stored in the texel map; :attr:`mask` tells them apart.

    Args:
        index: ``(H, W, 3)`` int64 vertex indices per texel.
        weight: ``(H, W, 3)`` float barycentric weights per texel.
        mask: ``(H, W)`` bool coverage, or ``None`` (every texel covered).
        num_vertices: number of vertices the colours must have; default
            ``index.max() + 1``.

    Shapes:
        - input: colours ``(B, V, C)`` or ``(V, C)``
        - output: texture ``(B, C, H, W)`` or ``(C, H, W)``
    """

    index: torch.Tensor
    weight: torch.Tensor
    mask: torch.Tensor

    def __init__(
        self,
        index: torch.Tensor,
        weight: torch.Tensor,
        mask: torch.Tensor | None = None,
        num_vertices: int | None = None,
    ) -> None:
        super().__init__()
        check_tensor(index, "index", shape=("H", "W", 3), dtype=torch.int64)
        H, W = int(index.shape[0]), int(index.shape[1])
        check_tensor(weight, "weight", shape=(H, W, 3))
        if not weight.is_floating_point():
            raise TypeError(f"weight: expected a floating dtype, got {weight.dtype}")
        if not bool(torch.isfinite(weight).all()):
            raise ValueError("weight: expected finite barycentric weights, got NaN or inf")
        if mask is None:
            mask = torch.ones(H, W, dtype=torch.bool, device=index.device)
        check_tensor(mask, "mask", shape=(H, W), dtype=torch.bool)
        if index.numel() and int(index.min()) < 0:
            raise ValueError(f"index: expected non-negative vertex indices, got minimum {int(index.min())}")
        top = int(index.max()) + 1 if index.numel() else 0
        if num_vertices is None:
            num_vertices = top
        elif top > non_negative_int(num_vertices, "num_vertices"):
            raise ValueError(f"index: expected vertex indices < {num_vertices}, got maximum {top - 1}")
        self.num_vertices = int(num_vertices)
        # copies: the layer's buffers, not views of the caller's map (another decoder's, load_state_dict's target)
        self.register_buffer("index", index.detach().clone().contiguous())
        self.register_buffer("weight", weight.detach().clone().contiguous())
        self.register_buffer("mask", mask.detach().clone().contiguous())

    @classmethod
    def from_texel_map(cls, texel_map: "TexelMap", num_vertices: int | None = None) -> "TexelGather":
        """Build from a :class:`~mesh_decoder.hierarchy.TexelMap`."""
        if not isinstance(texel_map, TexelMap):
            raise TypeError(f"texel_map: expected a TexelMap, got {type(texel_map).__name__}")
        return cls(texel_map.index, texel_map.weight, texel_map.mask, num_vertices=num_vertices)

    @classmethod
    def from_hierarchy(cls, hierarchy: "MeshHierarchy") -> "TexelGather":
        """Build from ``hierarchy.texel_map`` (vertex count of the template, level 0)."""
        hierarchy_level(hierarchy, 0)  # checks the type
        if hierarchy.texel_map is None:
            raise ValueError("hierarchy: expected a texel map (build it with texture_size set), got None")
        return cls.from_texel_map(hierarchy.texel_map, num_vertices=hierarchy.levels[0].num_vertices)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the texture."""
        return int(self.index.shape[0]), int(self.index.shape[1])

    def forward(self, colors: torch.Tensor) -> torch.Tensor:
        """Texture maps from per-vertex colours: ``(B, V, C) -> (B, C, H, W)``, ``(V, C) -> (C, H, W)``."""
        if not isinstance(colors, torch.Tensor):
            raise TypeError(f"colors: expected a torch.Tensor, got {type(colors).__name__}")
        if colors.dim() not in (2, 3) or colors.shape[-2] != self.num_vertices:
            raise ValueError(
                f"colors: expected shape (B, {self.num_vertices}, C) or ({self.num_vertices}, C), "
                f"got {tuple(colors.shape)}"
            )
        if not colors.is_floating_point():
            raise TypeError(f"colors: expected a floating dtype, got {colors.dtype}")
        if colors.device != self.index.device:
            raise ValueError(
                f"colors: expected a tensor on {self.index.device} (the layer's), got one on {colors.device}"
            )
        unbatched = colors.dim() == 2
        if unbatched:
            colors = colors.unsqueeze(0)  # (1, V, C)
        B, _, C = colors.shape
        H, W = self.size
        triton = _use_triton(colors)
        # embedding_bag refuses rows without columns: no channels (C = 0) take the gather below
        if C and inference_fast_path(colors, self.weight) and (triton or not colors.is_cuda):
            # One weighted gather (Triton on CUDA, embedding_bag on the CPU), no (B, H*W*3, C) temporary.
            index, weight = self.index.view(H * W, 3), self.weight.view(H * W, 3)
            if triton:
                tex = weighted_gather_sum(colors, index, weight)  # (B, H*W, C)
            else:
                tex = embedding_bag_sum(colors, index, weight)  # (B, H*W, C)
            tex = tex.view(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)
            return tex[0] if unbatched else tex
        gathered = colors[:, self.index.reshape(-1)]  # (B, H*W*3, C)
        gathered = gathered.reshape(B, H, W, 3, C)  # (B, H, W, 3, C)
        weight = self.weight.to(colors.dtype).unsqueeze(-1)  # (H, W, 3, 1)
        tex = (gathered * weight).sum(dim=3)  # (B, H, W, C)
        tex = tex.permute(0, 3, 1, 2)  # (B, C, H, W)
        return tex[0] if unbatched else tex

    def extra_repr(self) -> str:
        H, W = self.size
        covered = float(self.mask.float().mean()) if self.mask.numel() else 0.0
        return f"size=({H}, {W}), num_vertices={self.num_vertices}, coverage={covered:.3f}"


def uv_corners(
    uv: torch.Tensor | np.ndarray,
    uv_faces: torch.Tensor | np.ndarray,
    faces: torch.Tensor | np.ndarray,
    num_vertices: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct (vertex, UV) corners of a mesh and how many each vertex has.

    A vertex on a UV seam appears in faces with different UV indices; each
    distinct ``(vertex, uv index)`` pair is one corner.

    Args:
        uv: ``(T, 2)`` texture coordinates (``v`` from the bottom).
        uv_faces: ``(F, 3)`` int64 indices into ``uv``.
        faces: ``(F, 3)`` int64 vertex indices.
        num_vertices: ``V``; default ``faces.max() + 1``.

    Returns:
        ``(corner_vertex (P,) int64, corner_uv (P, 2) float, count (V,) int64)``,
        ``count[v]`` the number of distinct UV corners of vertex ``v`` (0 for a
        vertex in no face). ``corner_uv`` keeps ``uv``'s dtype and autograd
        history when ``uv`` is a tensor.
    """
    uv_t = uv if isinstance(uv, torch.Tensor) else torch.as_tensor(np.asarray(uv, dtype=np.float64))
    device = uv_t.device
    uvf = torch.as_tensor(np.asarray(uv_faces) if not isinstance(uv_faces, torch.Tensor) else uv_faces,
                          device=device)
    fc = torch.as_tensor(np.asarray(faces) if not isinstance(faces, torch.Tensor) else faces, device=device)
    check_tensor(uv_t, "uv", shape=("T", 2))
    if not uv_t.is_floating_point():
        raise TypeError(f"uv: expected a floating dtype, got {uv_t.dtype}")
    if not bool(torch.isfinite(uv_t.detach()).all()):
        raise ValueError("uv: expected finite texture coordinates, got NaN or inf")
    check_tensor(fc, "faces", shape=("F", 3))
    check_tensor(uvf, "uv_faces", shape=(int(fc.shape[0]), 3))
    if fc.is_floating_point() or uvf.is_floating_point():
        raise TypeError(f"faces/uv_faces: expected integer indices, got {fc.dtype}/{uvf.dtype}")
    fc, uvf = fc.long(), uvf.long()
    T = int(uv_t.shape[0])
    if uvf.numel() and (int(uvf.min()) < 0 or int(uvf.max()) >= T):
        raise ValueError(f"uv_faces: expected indices in [0, {T}), got [{int(uvf.min())}, {int(uvf.max())}]")
    top = int(fc.max()) + 1 if fc.numel() else 0
    num_vertices = top if num_vertices is None else non_negative_int(num_vertices, "num_vertices")
    if fc.numel() and (int(fc.min()) < 0 or top > num_vertices):
        raise ValueError(
            f"faces: expected vertex indices in [0, {num_vertices}), got [{int(fc.min())}, {top - 1}]"
        )
    pairs = torch.stack([fc.reshape(-1), uvf.reshape(-1)], dim=1)  # (F*3, 2)
    pairs = torch.unique(pairs, dim=0)  # (P, 2) distinct (vertex, uv index), sorted
    corner_vertex = pairs[:, 0].contiguous()  # (P,)
    corner_uv = uv_t[pairs[:, 1]]  # (P, 2)
    count = torch.bincount(corner_vertex, minlength=num_vertices)  # (V,)
    return corner_vertex, corner_uv, count


class UVSampler(nn.Module):
    r"""Bilinear sampling of a UV texture at the vertices of a fixed mesh.

    The reverse of :class:`TexelGather`. Each vertex corner with UV
    coordinates ``(u, v)`` reads the texture at the continuous pixel position
    ``x = u W - 0.5`` (column), ``y = (1 - v) H - 0.5`` (row), so the centre of
    texel ``(i, j)`` sits at ``u = (j + 0.5)/W``, ``v = 1 - (i + 0.5)/H``,
    with bilinear interpolation between the four surrounding texel centres
    and positions outside the texel centres clamped to the border texels.
    It is computed with ``grid_sample(align_corners=False,
    padding_mode="border")`` on the grid ``(2u - 1, 1 - 2v)``.

    A vertex with several UV corners (a seam vertex) gets the mean of its
    corners' samples; a vertex in no face gets zeros. The result is
    differentiable with respect to the texture.

    Args:
        uv: ``(T, 2)`` texture coordinates, ``v`` from the bottom.
        uv_faces: ``(F, 3)`` int64 indices into ``uv``.
        faces: ``(F, 3)`` int64 vertex indices.
        num_vertices: ``V``; default ``faces.max() + 1``.
        mode: ``grid_sample`` interpolation mode (default ``"bilinear"``).

    Shapes:
        - input: texture ``(B, C, H, W)`` or ``(C, H, W)``
        - output: colours ``(B, V, C)`` or ``(V, C)``
    """

    corner_vertex: torch.Tensor
    corner_grid: torch.Tensor
    inv_count: torch.Tensor

    def __init__(
        self,
        uv: torch.Tensor | np.ndarray,
        uv_faces: torch.Tensor | np.ndarray,
        faces: torch.Tensor | np.ndarray,
        num_vertices: int | None = None,
        mode: str = "bilinear",
    ) -> None:
        super().__init__()
        if mode not in ("bilinear", "nearest", "bicubic"):
            raise ValueError(f"mode: expected 'bilinear', 'nearest' or 'bicubic', got {mode!r}")
        corner_vertex, corner_uv, count = uv_corners(uv, uv_faces, faces, num_vertices)
        self.mode = mode
        self.num_vertices = int(count.shape[0])
        self.register_buffer("corner_vertex", corner_vertex)
        self.register_buffer("corner_grid", _uv_to_grid(corner_uv.detach()))
        inv = torch.where(count > 0, 1.0 / count.clamp(min=1).to(corner_uv.dtype), torch.zeros((), dtype=corner_uv.dtype))
        self.register_buffer("inv_count", inv)

    @classmethod
    def from_mesh(cls, mesh: "Mesh", mode: str = "bilinear") -> "UVSampler":
        """Build from a :class:`~mesh_decoder.mesh.Mesh` that has UVs."""
        if mesh.uv is None or mesh.uv_faces is None:
            raise ValueError("mesh: expected UV coordinates (uv and uv_faces), got none")
        return cls(mesh.uv, mesh.uv_faces, mesh.faces, num_vertices=mesh.num_vertices, mode=mode)

    def forward(self, texture: torch.Tensor) -> torch.Tensor:
        """Per-vertex colours sampled from texture maps: ``(B, C, H, W) -> (B, V, C)``, ``(C, H, W) -> (V, C)``."""
        return _sample_corners(texture, self.corner_grid, self.corner_vertex, self.inv_count, self.mode)

    def extra_repr(self) -> str:
        return f"num_vertices={self.num_vertices}, corners={int(self.corner_vertex.shape[0])}, mode={self.mode!r}"


def _uv_to_grid(uv: torch.Tensor) -> torch.Tensor:
    """``(P, 2)`` UVs (v from the bottom) -> ``grid_sample`` coordinates ``(x, y)`` in [-1, 1]."""
    return torch.stack([2.0 * uv[:, 0] - 1.0, 1.0 - 2.0 * uv[:, 1]], dim=1)  # (P, 2)


def _sample_corners(
    texture: torch.Tensor,
    grid: torch.Tensor,
    corner_vertex: torch.Tensor,
    inv_count: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    if not isinstance(texture, torch.Tensor):
        raise TypeError(f"texture: expected a torch.Tensor, got {type(texture).__name__}")
    if texture.dim() not in (3, 4):
        raise ValueError(f"texture: expected shape (B, C, H, W) or (C, H, W), got {tuple(texture.shape)}")
    if not texture.is_floating_point():
        raise TypeError(f"texture: expected a floating dtype, got {texture.dtype}")
    unbatched = texture.dim() == 3
    if unbatched:
        texture = texture.unsqueeze(0)  # (1, C, H, W)
    B, C = int(texture.shape[0]), int(texture.shape[1])
    P = int(grid.shape[0])
    V = int(inv_count.shape[0])
    g = grid.to(device=texture.device, dtype=texture.dtype)
    g = g.reshape(1, 1, P, 2).expand(B, 1, P, 2)  # (B, 1, P, 2)
    samples = F.grid_sample(texture, g, mode=mode, padding_mode="border", align_corners=False)  # (B, C, 1, P)
    samples = samples.reshape(B, C, P).transpose(1, 2)  # (B, P, C)
    out = texture.new_zeros(B, V, C)  # (B, V, C)
    out = out.index_add(1, corner_vertex.to(texture.device), samples)  # (B, V, C) sums over corners
    out = out * inv_count.to(device=texture.device, dtype=texture.dtype).reshape(1, V, 1)  # (B, V, C) means
    return out[0] if unbatched else out


def sample_uv(
    texture: torch.Tensor,
    mesh: "Mesh | Sequence",
    num_vertices: int | None = None,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Sample a UV texture at the vertices of a mesh (bilinear, differentiable).

    See :class:`UVSampler` for the pixel-centre convention and seam handling;
    build a :class:`UVSampler` once when the same mesh is sampled repeatedly.
    The UVs may be a tensor that requires grad: the result is then
    differentiable with respect to them as well.

    Args:
        texture: ``(B, C, H, W)`` or ``(C, H, W)`` texture (row 0 at the top).
        mesh: a :class:`~mesh_decoder.mesh.Mesh` with UVs, or a tuple
            ``(uv (T, 2), uv_faces (F, 3), faces (F, 3))``.
        num_vertices: ``V``; default the mesh's vertex count, or ``faces.max() + 1``.
        mode: ``grid_sample`` interpolation mode (default ``"bilinear"``).

    Returns:
        colours ``(B, V, C)`` (or ``(V, C)`` for an unbatched texture).

    Shapes:
        ``(B, C, H, W) -> (B, V, C)``
    """
    if isinstance(mesh, (tuple, list)):
        if len(mesh) != 3:
            raise ValueError(f"mesh: expected a Mesh or a tuple (uv, uv_faces, faces), got a sequence of {len(mesh)}")
        uv, uv_faces, faces = mesh
    else:
        uv, uv_faces, faces = getattr(mesh, "uv", None), getattr(mesh, "uv_faces", None), getattr(mesh, "faces", None)
        if faces is None:
            raise TypeError(f"mesh: expected a Mesh or a tuple (uv, uv_faces, faces), got {type(mesh).__name__}")
        if uv is None or uv_faces is None:
            raise ValueError("mesh: expected UV coordinates (uv and uv_faces), got none")
        if num_vertices is None:
            num_vertices = int(mesh.num_vertices)
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise ValueError(f"mode: expected 'bilinear', 'nearest' or 'bicubic', got {mode!r}")
    corner_vertex, corner_uv, count = uv_corners(uv, uv_faces, faces, num_vertices)
    inv = torch.where(count > 0, 1.0 / count.clamp(min=1).to(corner_uv.dtype), torch.zeros((), dtype=corner_uv.dtype))
    return _sample_corners(texture, _uv_to_grid(corner_uv), corner_vertex, inv, mode)
