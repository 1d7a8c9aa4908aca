r"""Render meshes to images: rasterise, interpolate colours or a UV texture, shade, composite; save PNGs.

:func:`render` produces, for a batch of meshes sharing one topology,

.. math::
    I(p) = \begin{cases}
        \rho(p)\,\bigl(k_a + k_d \max(0, n(p) \cdot \ell)\bigr) & p \text{ covered} \\
        \text{background} & \text{otherwise,}
    \end{cases}

where the albedo ``rho(p)`` is the barycentric blend of per-vertex colours, or the
UV texture sampled bilinearly at the blended per-corner UVs, and ``n(p)`` is the
renormalised blend of area-weighted vertex normals (Phong-interpolated normals,
Lambert's law; :mod:`.shading`). ``light=None`` skips shading (``I = rho``).

**Gradients** flow to colours, texture, UVs, light and vertex positions (and camera
parameters): the barycentrics are recomputed differentiably with the rasterised
face ids held fixed. Coverage itself is not differentiable: there are no silhouette
(edge) gradients, so a loss on the image moves vertices only through the colours,
UVs and normals inside the faces that already cover each pixel.
"""

from __future__ import annotations

import dataclasses
import errno
import io
import os
import struct
import zlib
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .._atomic import atomic_write
from .._checks import check_tensor, one_or
from ..errors import MeshFileError
from .cameras import Camera, image_size_pair
from .interpolate import _as_attributes, _as_texture, _interp_packed, _scatter, sample_texture
from .rasterize import MAX_CANDIDATES, Fragments, _packed_bary, as_faces, as_vertices, covered_pixels, rasterize
from .shading import DirectionalLight, shade_lambert, vertex_normals

__all__ = ["RenderOutput", "render", "save_png", "encode_png", "read_image", "to_image_array", "DEFAULT_ALBEDO"]

#: Albedo of meshes rendered without colours or texture.
DEFAULT_ALBEDO = (0.78, 0.78, 0.78)


class RenderOutput(NamedTuple):
    """Output of :func:`render`.

    Attributes:
        image: ``(B, C, H, W)`` colours (``C = 3`` for RGB).
        mask: ``(B, H, W)`` bool coverage.
        fragments: the :class:`~mesh_decoder.render.rasterize.Fragments`.
    """

    image: torch.Tensor
    mask: torch.Tensor
    fragments: Fragments


def _as_uv(uv, uv_faces, faces: torch.Tensor, num_vertices: int, batch: int, device):
    if uv is None:
        raise ValueError("uv: expected per-vertex or per-corner UVs with a texture, got None")
    if not isinstance(uv, torch.Tensor):
        uv = torch.as_tensor(np.asarray(uv, dtype=np.float64))
    if uv.dim() not in (2, 3) or uv.shape[-1] != 2:
        raise ValueError(f"uv: expected (T, 2) or (B, T, 2), got {tuple(uv.shape)}")
    uv = _as_attributes(uv.to(device), "uv", batch)
    if uv_faces is None:
        if int(uv.shape[1]) != num_vertices:
            raise ValueError(
                f"uv_faces: expected (F, 3) indices into uv, got None with {int(uv.shape[1])} UVs for "
                f"{num_vertices} vertices (without uv_faces, uv needs one row per vertex)"
            )
        uv_faces = faces
    uv_faces = as_faces(uv_faces, int(uv.shape[1]), device, "uv_faces")
    if uv_faces.shape[0] != faces.shape[0]:
        raise ValueError(f"uv_faces: expected {int(faces.shape[0])} rows (one per face), got {int(uv_faces.shape[0])}")
    return uv, uv_faces


def _background(background, channels: int, ref: torch.Tensor) -> torch.Tensor:
    """``(C,)`` background colour: ``None`` is white (1.0 in every channel), one value fills every channel."""
    if background is None:
        background = 1.0
    bg = background if isinstance(background, torch.Tensor) else torch.as_tensor(np.asarray(background, np.float64))
    bg = bg.to(device=ref.device, dtype=ref.dtype).reshape(-1)
    if bg.numel() == 1:
        bg = bg.expand(channels)
    if bg.numel() != channels:
        raise ValueError(
            f"background: expected 1 value or C={channels} values (one per channel), got {bg.numel()}"
        )
    return bg


def render(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    image_size,
    *,
    colors: torch.Tensor | None = None,
    texture: torch.Tensor | None = None,
    uv: torch.Tensor | None = None,
    uv_faces: torch.Tensor | None = None,
    light: DirectionalLight | None = DirectionalLight(),
    background: float | Sequence[float] | torch.Tensor | None = None,
    cull_backfaces: bool = False,
    fragments: Fragments | None = None,
    max_candidates: int = MAX_CANDIDATES,
) -> RenderOutput:
    """Render a batch of meshes (module docstring).

    Args:
        vertices: ``(B, V, 3)`` or ``(V, 3)`` world positions; one mesh with ``B``
            colour sets or textures is drawn ``B`` times, once in each.
        faces: ``(F, 3)`` int64, shared by the batch.
        camera: :class:`~mesh_decoder.render.cameras.Camera` of batch size 1 or ``B``.
        image_size: ``int`` or ``(H, W)``.
        colors: ``(B, V, C)`` or ``(V, C)`` per-vertex albedo. Default ``None``.
        texture: ``(B, C, H_t, W_t)`` or ``(C, H_t, W_t)`` UV texture (row 0 at ``v = 1``),
            channels first (one given channels last, e.g. ``(256, 256, 3)``, is refused),
            used with ``uv``/``uv_faces``. Default ``None``. Without colours or
            texture the albedo is :data:`DEFAULT_ALBEDO`.
        uv: ``(T, 2)`` or ``(B, T, 2)`` texture coordinates (``v`` from the bottom); the
            pixels of faces with a non-finite UV come out NaN.
        uv_faces: ``(F, 3)`` indices into ``uv`` per face corner; default ``faces``
            (then ``uv`` needs one row per vertex).
        light: a :class:`~mesh_decoder.render.shading.DirectionalLight` (its
            ``direction`` may be a ``(B, 3)`` tensor, its ``ambient`` and ``diffuse``
            ``(B,)`` tensors), or ``None`` for unlit albedo.
            Default ``DirectionalLight()``.
        background: colour of empty pixels, one value or one per channel of the
            albedo. Default ``None``: white (1.0 in every channel, for any ``C``).
        cull_backfaces: passed to :func:`~mesh_decoder.render.rasterize.rasterize`. Default ``False``.
        fragments: reuse fragments rasterised earlier from the same vertices,
            faces and camera (skips the rasterisation; the barycentrics are recomputed
            with ``camera``, so gradients reach its parameters). Default ``None``.
        max_candidates: rasteriser chunk size. Default ``2**17``.

    Returns:
        :class:`RenderOutput` ``(image (B, C, H, W), mask (B, H, W), fragments)``.

    Shapes:
        ``(B, V, 3) -> (B, C, H, W)``.
    """
    v = as_vertices(vertices)
    f = as_faces(faces, int(v.shape[1]), v.device)
    if colors is not None and texture is not None:
        raise ValueError("colors, texture: expected at most one albedo source, got both")
    albedo_batch = _albedo_batch(colors, texture)
    if fragments is None and int(v.shape[0]) == 1 and albedo_batch > 1 and isinstance(camera, Camera) \
            and camera.batch_size in (1, albedo_batch):
        # one mesh in B colourings, as one texture broadcasts over B meshes (it was 'expected batch size 1')
        v = v.expand(albedo_batch, -1, -1)
    if fragments is None:
        fragments = rasterize(v, f, camera, image_size, cull_backfaces=cull_backfaces, max_candidates=max_candidates)
    elif not isinstance(fragments, Fragments):
        raise TypeError(f"fragments: expected Fragments, got {type(fragments).__name__}")
    elif fragments.image_size != image_size_pair(image_size) or fragments.faces.shape != f.shape:
        raise ValueError(
            f"fragments: expected fragments of {image_size_pair(image_size)} pixels and {int(f.shape[0])} faces, "
            f"got {fragments.image_size} and {int(fragments.faces.shape[0])}"
        )
    elif camera is not fragments.camera:
        # the face ids come from the fragments; the (differentiable) barycentrics from the camera given here,
        # e.g. one rebuilt from parameters that require grad after rasterising under torch.no_grad()
        if not isinstance(camera, Camera):
            raise TypeError(f"camera: expected a mesh_decoder.render Camera, got {type(camera).__name__}")
        if camera.batch_size not in (1, fragments.batch_size):
            raise ValueError(f"camera: expected batch size {one_or(fragments.batch_size)} (the fragments'), "
                             f"got {camera.batch_size}")
        fragments = dataclasses.replace(fragments, camera=camera)
    B = fragments.batch_size
    if int(v.shape[0]) not in (1, B):
        raise ValueError(f"vertices: expected batch size {one_or(B)}, got {int(v.shape[0])}")
    flat, batch, face = covered_pixels(fragments)
    need_grad = torch.is_grad_enabled() and (v.requires_grad or fragments.camera.requires_grad)
    if need_grad:
        bary = _packed_bary(fragments, v, "vertices")[0]  # (P, 3) differentiable in v and the camera
    else:
        bary = fragments.bary.reshape(-1, 3).index_select(0, flat)  # (P, 3)

    # albedo of the covered pixels, (P, C)
    if colors is not None:
        if isinstance(colors, np.ndarray):
            colors = torch.from_numpy(colors)
        col = _as_attributes(colors, "colors", B).to(v.device)
        if int(col.shape[1]) != int(v.shape[1]):
            raise ValueError(f"colors: expected {int(v.shape[1])} rows (one per vertex), got {int(col.shape[1])}")
        albedo = _interp_packed(col, f, batch, face, bary)  # (P, C)
    elif texture is not None:
        tex = _as_texture(texture).to(v.device)
        if int(tex.shape[0]) not in (1, B):
            raise ValueError(f"texture: expected batch size {one_or(B)}, got {int(tex.shape[0])}")
        uv_t, uvf = _as_uv(uv, uv_faces, f, int(v.shape[1]), B, v.device)
        uv_p = _interp_packed(uv_t.to(tex.dtype), uvf, batch, face, bary)  # (P, 2)
        uv_img = _scatter(uv_p, flat, fragments)  # (B, H, W, 2)
        sampled = sample_texture(tex, uv_img)  # (B, C, H, W)
        C = int(tex.shape[1])
        albedo = sampled.permute(0, 2, 3, 1).reshape(-1, C).index_select(0, flat)  # (P, C)
    else:
        albedo = torch.tensor(DEFAULT_ALBEDO, dtype=v.dtype, device=v.device).expand(int(flat.shape[0]), 3)
    dtype = torch.promote_types(albedo.dtype, v.dtype)
    albedo = albedo.to(dtype)

    if light is not None:
        if not isinstance(light, DirectionalLight):
            raise TypeError(f"light: expected a DirectionalLight or None, got {type(light).__name__}")
        normals = vertex_normals(v.to(dtype), f)  # (B|1, V, 3)
        n = _interp_packed(normals, f, batch, face, bary.to(dtype))  # (P, 3)
        n = n / torch.linalg.vector_norm(n, dim=-1, keepdim=True).clamp(min=1e-12)
        spread = []  # direction, ambient, diffuse; one per batch element -> one per covered pixel
        for name, per_batch in (("direction", (B, 3)), ("ambient", (B,)), ("diffuse", (B,))):
            k = getattr(light, name)
            if isinstance(k, torch.Tensor) and k.dim() == len(per_batch):
                check_tensor(k, f"light.{name}", shape=per_batch)
                k = k.to(device=v.device, dtype=dtype).index_select(0, batch)  # (P, 3) or (P,)
            spread.append(k)
        shaded = shade_lambert(n, albedo, *spread)  # (P, C)
    else:
        shaded = albedo
    C = int(shaded.shape[-1])
    bg = _background(background, C, shaded)
    h, w = fragments.image_size
    canvas = shaded.new_empty(B * h * w, C)
    canvas[:] = bg  # (B*H*W, C)
    image = canvas.index_copy(0, flat, shaded).reshape(B, h, w, C).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
    return RenderOutput(image, fragments.mask, fragments)


# ---------------------------------------------------------------------------------- PNG
def _albedo_batch(colors, texture) -> int:
    """The batch size of a ``(B, V, C)`` colour set or a ``(B, C, H, W)`` texture (1 for anything else)."""
    value = colors if colors is not None else texture
    want = 3 if colors is not None else 4
    shape = getattr(value, "shape", ())
    return int(shape[0]) if len(shape) == want else 1


def to_image_array(image) -> np.ndarray:
    """An image as a ``(H, W, C)`` uint8 array (``C`` in 1, 3, 4).

    Accepts torch tensors ``(C, H, W)``, ``(1, C, H, W)`` or ``(H, W)`` (channels
    first, the torch convention) and numpy arrays ``(H, W, C)`` or ``(H, W)``
    (channels last). Floats are clipped to ``[0, 1]`` and scaled to 0..255; uint8
    passes through. Floats that are all whole numbers, some above 1 (an 8-bit image
    cast to float), are refused: clipped, they would be an all but white image.
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.dim() == 4:
            if t.shape[0] != 1:
                raise ValueError(f"image: expected one image (1, C, H, W), got a batch of {int(t.shape[0])}")
            t = t[0]
        if t.dim() == 3:
            t = t.permute(1, 2, 0)  # (H, W, C)
        if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
            t = t.float()  # bfloat16 and other floats numpy cannot hold
        arr = t.numpy()
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        raise TypeError(f"image: expected a torch.Tensor or numpy array, got {type(image).__name__}")
    if arr.ndim == 2:
        arr = arr[:, :, None]  # (H, W, 1)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"image: expected (C, H, W) tensor or (H, W, C) array with C in 1, 3, 4, got shape {tuple(image.shape)}"
        )
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if np.iscomplexobj(arr):
        raise TypeError(f"image: expected real values, got {arr.dtype}")
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        arr = arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"image: expected floats in [0, 1] or uint8, got {arr.dtype}")
    if not np.isfinite(arr).all():
        raise ValueError("image: expected finite values, got NaN or inf")
    if arr.size and float(arr.max()) > 1.0 and bool((arr == np.round(arr)).all()):
        raise ValueError(f"image: expected floats in [0, 1], got whole numbers up to {float(arr.max()):g} "
                         "(8-bit values? divide them by 255, or pass a uint8 array)")
    return np.ascontiguousarray(np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encode_png_stdlib(arr: np.ndarray) -> bytes:
    """A minimal PNG encoder (8-bit grey, RGB or RGBA; no filtering; zlib level 6)."""
    h, w, c = arr.shape
    color_type = {1: 0, 3: 2, 4: 6}[c]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), arr.reshape(h, w * c)], axis=1)  # (H, 1 + W*C) filter 0
    header = struct.pack(">IIBBBBB", w, h, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def _encode_png(arr: np.ndarray) -> bytes:
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib; without it the built-in encoder writes the file
        return _encode_png_stdlib(arr)
    buffer = io.BytesIO()
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(image, path: str | os.PathLike) -> str:
    """Write an image as PNG, atomically.

    Args:
        image: see :func:`to_image_array` (torch ``(C, H, W)`` or numpy ``(H, W, C)``,
            floats in ``[0, 1]`` or uint8).
        path: the file to write; its name must end in ``.png`` (any case).

    Returns:
        ``path`` as a string. Encodes with Pillow when it is installed (it comes with
        matplotlib), otherwise with a small built-in zlib encoder, so saving never
        needs an extra package.
    """
    _check_png_path(path)
    data = encode_png(image)
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return os.fspath(path)


def encode_png(image) -> bytes:
    """The bytes of the PNG :func:`save_png` writes for ``image`` (see :func:`to_image_array`)."""
    return _encode_png(to_image_array(image))


#: Pillow modes of 16-bit greyscale images (PNG); ``"I"`` is how some Pillow versions open them.
_GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def read_image(path: str | os.PathLike, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """An RGB image file as ``(3, H, W)`` ``dtype`` (default float64) in ``[0, 1]`` (alpha dropped, grey
    expanded); float32 halves the memory a large texture map takes.

    8-bit images are divided by 255, 16-bit greyscale PNGs by 65535.

    Needs Pillow (``pip install pillow``; it comes with matplotlib).
    """
    path = os.fspath(path)
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading photographs needs Pillow: pip install pillow") from None
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype: expected a floating torch dtype, got {dtype!r}")
    kind = torch.empty(0, dtype=dtype).numpy().dtype if dtype != torch.bfloat16 else np.dtype(np.float32)
    try:
        with Image.open(path) as img:
            if img.mode in _GREY16_MODES:  # 16-bit greyscale: convert("RGB") would clip it at 255
                grey = np.asarray(img, dtype=np.float64)  # (H, W)
                mode = img.mode
            else:
                grey = None
                arr = np.asarray(img.convert("RGB"), dtype=kind)  # (H, W, 3)
                arr /= kind.type(255)
    except (OSError, ValueError) as exc:
        raise MeshFileError(path, f"expected an image file, could not decode it ({exc})") from None
    if grey is not None:
        if grey.size and (grey.min() < 0 or grey.max() > 65535):
            raise MeshFileError(path, f"expected 16-bit greyscale values in [0, 65535] (mode {mode}), "
                                      f"got range [{grey.min():g}, {grey.max():g}]")
        arr = np.repeat((grey / 65535.0)[..., None], 3, axis=2).astype(kind)  # (H, W, 3)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).to(dtype)  # (3, H, W)


def _check_png_path(path: str | os.PathLike, name: str = "path") -> None:
    """Refuse (``ValueError``) a file name that does not end in ``.png``: the file is written as PNG."""
    if not os.fsdecode(path).lower().endswith(".png"):
        raise ValueError(f"{name} {os.fsdecode(path)}: expected a file name ending in .png (the image is written "
                         "as PNG)")
