r"""Conversion to and from PyTorch3D ``Meshes`` (optional; PyTorch3D is imported only when used).

**Conventions, checked against PyTorch3D's ``TexturesUV``** (``pytorch3d/renderer/mesh/textures.py``):

* Texture maps are channels-last ``(N, H, W, C)`` there and ``(N, C, H, W)`` here.
* ``TexturesUV.sample_textures`` flips the map upside down (``torch.flip(maps, [2])``
  on the ``(N, C, H, W)`` view) and samples it with ``grid_sample`` at
  ``(2u - 1, 2v - 1)``. After the flip, ``v = 1`` reaches the map's first row, so
  PyTorch3D's maps have their first row at ``v = 1``, like ours (texel ``(i, j)``
  centred at ``v = 1 - (i + 0.5) / H``): **no row flip and no ``v`` flip** is
  needed; the map is only permuted.
* ``align_corners`` (PyTorch3D's default is ``True``) moves the texel centres.
  With ``align_corners=False`` the centres coincide with ours and the UVs are kept
  as they are. With ``align_corners=True`` the extreme UVs 0 and 1 are the centres
  of the edge texels, so a UV of ours is mapped to the one that reaches the same
  continuous texel position:

  .. math::
      u' = \frac{u W - 1/2}{W - 1}, \qquad
      v' = 1 - \frac{(1 - v) H - 1/2}{H - 1},

  (PyTorch3D's docstring example: a ``1000 x 100`` map and
  ``align_corners=False`` read ``(u, v) = (0.405, 0.2995)`` at texel ``[700, 40]``,
  which is exactly our convention.) Both use border padding by default.
* Per-vertex colours are ``TexturesVertex(verts_features=(N, V, C))``.
* Meshes share their topology here: ``faces (F, 3)`` for the whole batch,
  ``vertices (N, V, 3)``.
* Cameras are not converted. Ours project to NDC with ``x`` right and ``y`` up
  (PyTorch3D's NDC has ``+x`` left), and :class:`~mesh_decoder.render.PerspectiveCamera`
  takes OpenCV's camera axes (``x`` right, ``y`` down, ``z`` forward; PyTorch3D's
  view space has ``+x`` left and ``+y`` up) with ``K = (f_x, f_y, c_x, c_y)`` in
  pixels, pixel centres on integers. That is OpenCV's calibration, which
  ``pytorch3d.utils.cameras_from_opencv_projection(R, tvec, camera_matrix,
  image_size)`` takes: pass ``camera.R``, ``camera.t``, ``K`` as the 3 x 3 matrix
  ``[[f_x, 0, c_x], [0, f_y, c_y], [0, 0, 1]]`` and ``image_size`` as ``(H, W)``.

The pure tensor functions (:func:`texture_to_pytorch3d_maps`,
:func:`texture_from_pytorch3d_maps`, :func:`uv_to_pytorch3d`,
:func:`uv_from_pytorch3d`) need no PyTorch3D.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from .._checks import check_tensor
from .cameras import image_size_pair
from .interpolate import _check_channels_first

__all__ = [
    "MeshTensors",
    "texture_to_pytorch3d_maps",
    "texture_from_pytorch3d_maps",
    "uv_to_pytorch3d",
    "uv_from_pytorch3d",
    "to_pytorch3d",
    "from_pytorch3d",
    "require_pytorch3d",
]


def require_pytorch3d():
    """Import PyTorch3D, or raise ``ImportError`` saying how to install it."""
    try:
        import pytorch3d  # noqa: F401
        from pytorch3d.renderer import TexturesUV, TexturesVertex
        from pytorch3d.structures import Meshes
    except ImportError as exc:
        raise ImportError(
            "PyTorch3D interop needs pytorch3d: see https://github.com/facebookresearch/pytorch3d/blob/main/INSTALL.md "
            "(pip install 'git+https://github.com/facebookresearch/pytorch3d.git')"
        ) from exc
    return Meshes, TexturesUV, TexturesVertex


def texture_to_pytorch3d_maps(texture: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` or ``(C, H, W)`` texture -> PyTorch3D maps ``(N, H, W, C)`` (same rows, no flip).
    One already channels last, e.g. ``(256, 256, 3)``, is refused, as by the renderer."""
    if not isinstance(texture, torch.Tensor):
        raise TypeError(f"texture: expected a torch.Tensor, got {type(texture).__name__}")
    if texture.dim() not in (3, 4):
        raise ValueError(f"texture: expected (C, H, W) or (N, C, H, W), got {tuple(texture.shape)}")
    _check_channels_first(tuple(texture.shape), "texture")
    if texture.dim() == 3:
        texture = texture.unsqueeze(0)  # (1, C, H, W)
    return texture.permute(0, 2, 3, 1)  # (N, H, W, C)


def texture_from_pytorch3d_maps(maps: torch.Tensor) -> torch.Tensor:
    """PyTorch3D maps ``(N, H, W, C)`` -> texture ``(N, C, H, W)``; the inverse of :func:`texture_to_pytorch3d_maps`."""
    if not isinstance(maps, torch.Tensor):
        raise TypeError(f"maps: expected a torch.Tensor, got {type(maps).__name__}")
    check_tensor(maps, "maps", shape=("N", "H", "W", "C"))
    return maps.permute(0, 3, 1, 2)  # (N, C, H, W)


def _check_uv(uv) -> torch.Tensor:
    if not isinstance(uv, torch.Tensor):
        uv = torch.as_tensor(np.asarray(uv, dtype=np.float64))
    if uv.dim() < 1 or uv.shape[-1] != 2:
        raise ValueError(f"uv: expected shape (..., 2), got {tuple(uv.shape)}")
    if not uv.is_floating_point():
        raise TypeError(f"uv: expected a floating dtype, got {uv.dtype}")
    return uv


def _check_corner_size(texture_size, align_corners: bool) -> tuple[int, int]:
    h, w = image_size_pair(texture_size)
    if align_corners and (h < 2 or w < 2):
        raise ValueError(f"texture_size: expected at least 2 x 2 texels with align_corners=True, got ({h}, {w})")
    return h, w


def uv_to_pytorch3d(uv, texture_size, align_corners: bool = True) -> torch.Tensor:
    """Our UVs -> the UVs PyTorch3D samples at the same texture positions (module docstring).

    Args:
        uv: ``(..., 2)`` UVs, ``v`` from the bottom.
        texture_size: ``int`` or ``(H, W)`` of the texture map.
        align_corners: the ``TexturesUV`` setting. Default ``True`` (PyTorch3D's default).

    Shapes:
        ``(..., 2) -> (..., 2)``.
    """
    uv = _check_uv(uv)
    h, w = _check_corner_size(texture_size, align_corners)
    if not align_corners:
        return uv
    u = (uv[..., 0] * w - 0.5) / (w - 1)
    v = 1.0 - ((1.0 - uv[..., 1]) * h - 0.5) / (h - 1)
    return torch.stack([u, v], dim=-1)  # (..., 2)


def uv_from_pytorch3d(uv, texture_size, align_corners: bool = True) -> torch.Tensor:
    """PyTorch3D UVs -> ours; the inverse of :func:`uv_to_pytorch3d`.

    Shapes:
        ``(..., 2) -> (..., 2)``.
    """
    uv = _check_uv(uv)
    h, w = _check_corner_size(texture_size, align_corners)
    if not align_corners:
        return uv
    u = (uv[..., 0] * (w - 1) + 0.5) / w
    v = 1.0 - ((1.0 - uv[..., 1]) * (h - 1) + 0.5) / h
    return torch.stack([u, v], dim=-1)  # (..., 2)


class MeshTensors(NamedTuple):
    """A batch of meshes with one topology, as read from PyTorch3D.

    Attributes:
        vertices: ``(N, V, 3)``.
        faces: ``(F, 3)`` int64.
        texture: ``(N, C, H, W)`` or ``None``.
        uv: ``(T, 2)`` (our convention) or ``None``.
        uv_faces: ``(F, 3)`` int64 or ``None``.
        colors: ``(N, V, C)`` per-vertex colours or ``None``.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    texture: torch.Tensor | None = None
    uv: torch.Tensor | None = None
    uv_faces: torch.Tensor | None = None
    colors: torch.Tensor | None = None


def to_pytorch3d(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    texture: torch.Tensor | None = None,
    uv: torch.Tensor | None = None,
    uv_faces: torch.Tensor | None = None,
    colors: torch.Tensor | None = None,
    align_corners: bool = True,
):
    """A PyTorch3D ``Meshes`` with ``TexturesUV`` (texture) or ``TexturesVertex`` (colours).

    Args:
        vertices: ``(N, V, 3)`` or ``(V, 3)``.
        faces: ``(F, 3)`` int64, shared by the batch.
        texture: ``(N, C, H, W)`` or ``(C, H, W)``; needs ``uv`` (and ``uv_faces``,
            default ``faces``).
        uv: ``(T, 2)`` UVs in our convention.
        uv_faces: ``(F, 3)`` indices into ``uv``.
        colors: ``(N, V, C)`` or ``(V, C)`` per-vertex colours (tensor or array).
        align_corners: the ``TexturesUV`` setting; UVs are converted so PyTorch3D
            samples the same colours as :func:`~mesh_decoder.render.render`. Default ``True``.

    Returns:
        ``pytorch3d.structures.Meshes`` (``ImportError`` without PyTorch3D).
    """
    Meshes, TexturesUV, TexturesVertex = require_pytorch3d()
    if texture is not None and colors is not None:
        raise ValueError("texture, colors: expected at most one, got both")
    if not isinstance(vertices, torch.Tensor):
        raise TypeError(f"vertices: expected a torch.Tensor, got {type(vertices).__name__}")
    if vertices.dim() not in (2, 3) or vertices.shape[-1] != 3:
        raise ValueError(f"vertices: expected (V, 3) or (N, V, 3), got {tuple(vertices.shape)}")
    if vertices.dim() == 2:
        vertices = vertices.unsqueeze(0)  # (1, V, 3)
    N = int(vertices.shape[0])
    faces_t = torch.as_tensor(faces, device=vertices.device).long()
    check_tensor(faces_t, "faces", shape=("F", 3))
    textures = None
    if texture is not None:
        maps = texture_to_pytorch3d_maps(texture).to(vertices.device)  # (N|1, H, W, C)
        if maps.shape[0] == 1 and N > 1:
            maps = maps.expand(N, -1, -1, -1).contiguous()
        if uv is None:
            raise ValueError("uv: expected UVs with a texture, got None")
        uv_t = _check_uv(uv).to(device=vertices.device, dtype=maps.dtype)
        uvf = faces_t if uv_faces is None else torch.as_tensor(uv_faces, device=vertices.device).long()
        check_tensor(uvf, "uv_faces", shape=(int(faces_t.shape[0]), 3))
        p3d_uv = uv_to_pytorch3d(uv_t, (int(maps.shape[1]), int(maps.shape[2])), align_corners)
        textures = TexturesUV(
            maps=maps,
            faces_uvs=uvf.unsqueeze(0).repeat(N, 1, 1),
            verts_uvs=p3d_uv.unsqueeze(0).repeat(N, 1, 1),
            align_corners=align_corners,
        )
    elif colors is not None:
        col = torch.as_tensor(colors, device=vertices.device)
        V = int(vertices.shape[1])
        if col.dim() not in (2, 3) or int(col.shape[-2]) != V or (col.dim() == 3 and int(col.shape[0]) not in (1, N)):
            raise ValueError(f"colors: expected ({V}, C) or ({N} or 1, {V}, C), got {tuple(col.shape)}")
        col = col if col.dim() == 3 else col.unsqueeze(0)  # (N|1, V, C)
        textures = TexturesVertex(verts_features=col.expand(N, -1, -1).contiguous().to(vertices.device))
    return Meshes(verts=vertices, faces=faces_t.unsqueeze(0).repeat(N, 1, 1), textures=textures)


def from_pytorch3d(meshes) -> MeshTensors:
    """Read a PyTorch3D ``Meshes`` whose meshes share one topology.

    ``TexturesUV`` become ``texture``/``uv``/``uv_faces`` (UVs converted back with the
    textures' ``align_corners``); ``TexturesVertex`` become ``colors``.

    Raises:
        ValueError: the meshes differ in faces, vertex count or UV layout, or the
            ``TexturesUV`` sample otherwise than bilinearly with border padding.
    """
    _, TexturesUV, TexturesVertex = require_pytorch3d()
    faces_list = meshes.faces_list()
    verts_list = meshes.verts_list()
    if not faces_list:
        raise ValueError("meshes: expected at least one mesh, got an empty batch")
    faces = faces_list[0]
    for i, (f, v) in enumerate(zip(faces_list, verts_list)):
        if f.shape != faces.shape or not torch.equal(f, faces) or v.shape != verts_list[0].shape:
            raise ValueError(f"meshes: expected one shared topology, mesh {i} has different faces or vertex count")
    vertices = torch.stack(verts_list)  # (N, V, 3)
    tex = meshes.textures
    texture = uv = uv_faces = colors = None
    if isinstance(tex, TexturesUV):
        # PyTorch3D >= 0.6 samples with these settings; our sampling is bilinear with border padding
        modes = {"sampling_mode": "bilinear", "padding_mode": "border"}
        for name, ours in modes.items():
            theirs = getattr(tex, name, ours)
            if theirs != ours:
                raise ValueError(
                    f"meshes.textures: expected TexturesUV({name}={ours!r}), the sampling of "
                    f"mesh_decoder.render, got {name}={theirs!r} (the colours would differ)"
                )
        maps = tex.maps_padded()  # (N, H, W, C)
        texture = texture_from_pytorch3d_maps(maps)
        vu, fu = tex.verts_uvs_list(), tex.faces_uvs_list()
        for i in range(1, len(vu)):
            if not (torch.equal(vu[i], vu[0]) and torch.equal(fu[i], fu[0])):
                raise ValueError(f"meshes: expected one shared UV layout, mesh {i} differs")
        uv = uv_from_pytorch3d(vu[0], (int(maps.shape[1]), int(maps.shape[2])), bool(tex.align_corners))
        uv_faces = fu[0].long()
    elif isinstance(tex, TexturesVertex):
        colors = torch.stack(tex.verts_features_list())  # (N, V, C)
    elif tex is not None:
        raise ValueError(f"meshes.textures: expected TexturesUV or TexturesVertex, got {type(tex).__name__}")
    return MeshTensors(vertices, faces.long(), texture, uv, uv_faces, colors)
