r"""Per-pixel attributes from rasterised fragments: barycentric interpolation and UV texture sampling.

:func:`interpolate` blends per-vertex (or per-corner) attributes with the
barycentrics of the face covering each pixel,

.. math::
    a(p) = \sum_{k=0}^{2} b_k(p)\, a_{f(p), k},

where ``f(p)`` is the rasterised face id (held fixed) and ``b(p)`` the barycentrics:
those stored in the fragments, or, with ``vertices_for_grad``, recomputed
differentiably from the vertex positions
(:func:`~mesh_decoder.render.rasterize.barycentric_coordinates`), so gradients
reach the geometry. Passing ``faces=uv_faces`` and ``attributes=uv`` interpolates
per-corner UVs (a seam vertex keeps a UV per side).

:func:`sample_texture` reads a UV texture at per-pixel UVs with bilinear
interpolation, using the texel convention of :mod:`mesh_decoder.mesh.uv`: texel
``(i, j)`` (row ``i`` from the top) has its centre at ``u = (j + 0.5) / W``,
``v = 1 - (i + 0.5) / H``, i.e. ``grid_sample(align_corners=False)`` on the grid
``(2u - 1, 1 - 2v)`` (``v`` flipped), with border padding. A non-finite UV gives
NaN in every channel (``grid_sample`` alone would read a texel for it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._checks import check_tensor, one_or
from .rasterize import Fragments, _packed_bary, as_faces, covered_pixels

__all__ = ["interpolate", "sample_texture"]


def _as_attributes(attributes, name: str, batch: int) -> torch.Tensor:
    if not isinstance(attributes, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(attributes).__name__}")
    if attributes.dim() not in (2, 3):
        raise ValueError(f"{name}: expected (N, C) or (B, N, C), got {tuple(attributes.shape)}")
    if attributes.dim() == 2:
        attributes = attributes.unsqueeze(0)  # (1, N, C)
    if not attributes.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {attributes.dtype}")
    if attributes.shape[-1] == 0:
        raise ValueError(f"{name}: expected at least one channel C, got shape {tuple(attributes.shape)}")
    if int(attributes.shape[0]) not in (1, batch):
        raise ValueError(f"{name}: expected batch size {one_or(batch)} (the rendered batch's), got "
                         f"{int(attributes.shape[0])}")
    return attributes


def _interp_packed(attributes: torch.Tensor, faces: torch.Tensor, batch: torch.Tensor, face: torch.Tensor,
                   bary: torch.Tensor) -> torch.Tensor:
    """Blend attributes of the covered pixels' faces.

    Shapes: ``attributes (B|1, N, C)``, ``faces (F, 3)``, ``batch, face (P,)``, ``bary (P, 3)`` -> ``(P, C)``.
    """
    N, C = int(attributes.shape[1]), int(attributes.shape[2])
    idx = faces.index_select(0, face)  # (P, 3)
    if attributes.shape[0] > 1:
        idx = idx + (batch * N).unsqueeze(1)  # (P, 3) rows of attributes.reshape(B*N, C)
    vals = attributes.reshape(-1, C).index_select(0, idx.reshape(-1)).reshape(-1, 3, C)  # (P, 3, C)
    b = bary.to(vals.dtype)  # (P, 3)
    out = vals[:, 0] * b[:, 0:1]  # (P, C); three explicit terms are much faster than a sum over dim 1 on CPU
    out = out.addcmul(vals[:, 1], b[:, 1:2])
    return out.addcmul(vals[:, 2], b[:, 2:3])  # (P, C)


def _scatter(values: torch.Tensor, flat: torch.Tensor, fragments: Fragments, fill: float = 0.0) -> torch.Tensor:
    """Packed ``(P, C)`` values -> ``(B, H, W, C)`` image, ``fill`` where empty."""
    h, w = fragments.image_size
    B = fragments.batch_size
    C = int(values.shape[-1])
    out = values.new_full((B * h * w, C), fill)  # (B*H*W, C)
    return out.index_copy(0, flat, values).reshape(B, h, w, C)  # (B, H, W, C)


def interpolate(
    fragments: Fragments,
    attributes: torch.Tensor,
    faces: torch.Tensor | None = None,
    vertices_for_grad: torch.Tensor | None = None,
) -> torch.Tensor:
    """Interpolate per-vertex (or per-corner) attributes at every covered pixel.

    Args:
        fragments: output of :func:`~mesh_decoder.render.rasterize.rasterize`.
        attributes: ``(B, N, C)`` or ``(N, C)`` values (colours, normals, UVs, positions).
        faces: ``(F, 3)`` indices into ``attributes`` with the same face order as the
            rasterised faces, e.g. ``uv_faces`` for per-corner UVs. Default
            ``fragments.faces``.
        vertices_for_grad: ``(B, V, 3)`` or ``(V, 3)`` vertex positions: recompute the
            barycentrics from them, differentiably (face ids stay fixed). Default
            ``None``: use ``fragments.bary`` (gradients reach only ``attributes``).

    Returns:
        ``(B, H, W, C)``, zero at empty pixels.

    Shapes:
        ``(B, N, C) -> (B, H, W, C)``.
    """
    if not isinstance(fragments, Fragments):
        raise TypeError(f"fragments: expected Fragments, got {type(fragments).__name__}")
    B = fragments.batch_size
    attributes = _as_attributes(attributes, "attributes", B)
    if faces is None:
        faces = fragments.faces
        top = int(faces.max()) + 1 if faces.numel() else 0
        if int(attributes.shape[1]) < top:
            raise ValueError(
                f"attributes: expected at least {top} rows (one per vertex), got {int(attributes.shape[1])}"
            )
    else:
        faces = as_faces(faces, int(attributes.shape[1]), attributes.device)
        if faces.shape[0] != fragments.faces.shape[0]:
            raise ValueError(
                f"faces: expected {int(fragments.faces.shape[0])} rows (one per rasterised face), "
                f"got {int(faces.shape[0])}"
            )
    if vertices_for_grad is not None:
        bary, _, flat = _packed_bary(fragments, vertices_for_grad, "vertices_for_grad")
        _, batch, face = covered_pixels(fragments)
    else:
        flat, batch, face = covered_pixels(fragments)
        bary = fragments.bary.reshape(-1, 3).index_select(0, flat)  # (P, 3)
    faces = faces.to(attributes.device)
    vals = _interp_packed(attributes, faces, batch.to(attributes.device), face.to(attributes.device),
                          bary.to(attributes.device))  # (P, C)
    return _scatter(vals, flat.to(attributes.device), fragments)


#: Channel counts of images (grey, RGB, RGBA): a texture whose last dimension is one of these and whose
#: other two exceed 4 was given channels last.
_IMAGE_CHANNELS = (1, 3, 4)


def _check_channels_first(shape: tuple[int, ...], name: str) -> None:
    """Refuse (``ValueError``) a ``(H, W, C)`` or ``(B, H, W, C)`` texture shape given for ``(C, H, W)`` or
    ``(B, C, H, W)``, saying how to permute it.

    The shape alone decides, so the rule is narrow: the last size is 1, 3 or 4 (an image's channels) and
    both sizes before it exceed 4 (an image's height and width, so the channel size is no image's). A
    channels-first texture of more than 4 channels and a width of 1, 3 or 4 texels is therefore refused too.
    """
    if len(shape) in (3, 4) and shape[-1] in _IMAGE_CHANNELS and shape[-3] > 4 and shape[-2] > 4:
        first, last, fix = (("(C, H, W)", "(H, W, C)", "permute(2, 0, 1)") if len(shape) == 3
                            else ("(B, C, H, W)", "(B, H, W, C)", "permute(0, 3, 1, 2)"))
        raise ValueError(f"{name}: expected channels first {first}, got shape {shape}, which looks like channels "
                         f"last {last} with C = {shape[-1]}; pass {name}.{fix}")


def _as_texture(texture, name: str = "texture") -> torch.Tensor:
    """A ``(C, H_t, W_t)`` or ``(B, C, H_t, W_t)`` floating texture as ``(B, C, H_t, W_t)``.

    Refuses (``ValueError``) one given channels last, ``(H_t, W_t, C)`` or
    ``(B, H_t, W_t, C)``, when its shape says so (:func:`_check_channels_first`).
    """
    if not isinstance(texture, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(texture).__name__}")
    if texture.dim() not in (3, 4):
        raise ValueError(f"{name}: expected (C, H, W) or (B, C, H, W), got {tuple(texture.shape)}")
    given = tuple(texture.shape)
    if texture.dim() == 3:
        texture = texture.unsqueeze(0)  # (1, C, Ht, Wt)
    if not texture.is_floating_point():
        raise TypeError(f"{name}: expected a floating dtype, got {texture.dtype}")
    if 0 in texture.shape[1:]:
        raise ValueError(f"{name}: expected at least one channel and one texel, got shape {given}")
    _check_channels_first(given, name)
    return texture


def sample_texture(
    texture: torch.Tensor,
    uv: torch.Tensor,
    mask: torch.Tensor | None = None,
    mode: str = "bilinear",
) -> torch.Tensor:
    """Bilinear lookup of a UV texture at per-pixel UVs (differentiable in both).

    Args:
        texture: ``(B, C, H_t, W_t)`` or ``(C, H_t, W_t)``, row 0 at the top (``v = 1``).
        uv: ``(B, H, W, 2)`` per-pixel ``(u, v)``, ``v`` from the bottom (e.g. from
            :func:`interpolate` of ``uv`` with ``faces=uv_faces``).
        mask: optional ``(B, H, W)`` bool; pixels outside it are set to zero.
        mode: ``grid_sample`` mode, ``"bilinear"`` (default) or ``"nearest"``.

    Returns:
        ``(B, C, H, W)`` sampled colours, NaN where ``uv`` is not finite (inside the
        mask). A batch of 1 on either side broadcasts.

    Raises:
        ValueError: for a texture given channels last (e.g. ``(256, 256, 3)``), with
            the ``permute`` that fixes it.

    Shapes:
        ``(B, C, H_t, W_t), (B, H, W, 2) -> (B, C, H, W)``.
    """
    texture = _as_texture(texture)
    if not isinstance(uv, torch.Tensor):
        raise TypeError(f"uv: expected a torch.Tensor, got {type(uv).__name__}")
    check_tensor(uv, "uv", shape=("B", "H", "W", 2))
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode: expected 'bilinear' or 'nearest', got {mode!r}")
    bt, bu = int(texture.shape[0]), int(uv.shape[0])
    if bt != bu and 1 not in (bt, bu):
        raise ValueError(f"uv: expected batch size 1 or {bt} (the texture's), got {bu}")
    B = max(bt, bu)
    grid = torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], dim=-1)  # (B, H, W, 2)
    grid = grid.to(texture.dtype).expand(B, -1, -1, -1)
    out = F.grid_sample(texture.expand(B, -1, -1, -1), grid, mode=mode, padding_mode="border",
                        align_corners=False)  # (B, C, H, W)
    # grid_sample reads a border texel for a NaN or infinite coordinate: make those pixels NaN (no host sync)
    out = out.masked_fill(~torch.isfinite(uv).all(dim=-1).unsqueeze(1), float("nan"))  # (B, C, H, W)
    if mask is not None:
        check_tensor(mask, "mask", shape=("B", int(uv.shape[1]), int(uv.shape[2])), dtype=torch.bool)
        if int(mask.shape[0]) not in (1, B):
            raise ValueError(f"mask: expected batch size {one_or(B)}, got {int(mask.shape[0])}")
        out = out.masked_fill(~mask.unsqueeze(1), 0.0)  # (B, C, H, W); zero even where the colour is NaN
    return out
