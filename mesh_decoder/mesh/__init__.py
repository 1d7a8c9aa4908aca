"""Mesh container, strict I/O, templates and UV utilities."""

from .container import Mesh
from .io import MESH_EXTENSIONS, load_mesh, save_mesh
from .landmarks import FACE_LANDMARKS, SPHERE_LANDMARKS
from .templates import (
    canonical_coordinates,
    face_surface,
    face_template,
    head_template,
    icosphere,
    template,
    template_info,
)
from .uv import automatic_uv, check_uv_overlap, ensure_uv, flipped_uv_faces, texel_map, uv_coverage

__all__ = [
    "Mesh",
    "MESH_EXTENSIONS",
    "load_mesh",
    "save_mesh",
    "automatic_uv",
    "check_uv_overlap",
    "ensure_uv",
    "flipped_uv_faces",
    "texel_map",
    "uv_coverage",
    "FACE_LANDMARKS",
    "SPHERE_LANDMARKS",
    "canonical_coordinates",
    "face_surface",
    "face_template",
    "head_template",
    "icosphere",
    "template",
    "template_info",
]
