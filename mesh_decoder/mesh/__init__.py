"""Mesh container, strict I/O, templates, UV utilities and PyTorch Geometric conversion."""

from .container import Mesh
from .io import MESH_EXTENSIONS, load_mesh, load_texture, save_mesh, texture_file, texture_paths
from .landmarks import FACE_LANDMARKS, SPHERE_LANDMARKS
from .pyg_interop import PyGMeshes, from_pyg, mesh_from_pyg, mesh_to_pyg, to_pyg
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
    "texture_paths",
    "texture_file",
    "load_texture",
    "automatic_uv",
    "check_uv_overlap",
    "ensure_uv",
    "flipped_uv_faces",
    "texel_map",
    "uv_coverage",
    "PyGMeshes",
    "to_pyg",
    "from_pyg",
    "mesh_to_pyg",
    "mesh_from_pyg",
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
