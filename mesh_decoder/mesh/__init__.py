"""Mesh container, strict I/O, templates and UV utilities."""

from .container import Mesh
from .uv import automatic_uv, check_uv_overlap, ensure_uv, flipped_uv_faces, texel_map, uv_coverage

__all__ = [
    "Mesh",
    "automatic_uv",
    "check_uv_overlap",
    "ensure_uv",
    "flipped_uv_faces",
    "texel_map",
    "uv_coverage",
]
