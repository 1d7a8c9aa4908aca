"""Mesh hierarchies: decimation, sampling operators, spirals, Laplacians, cache."""

from .assemble import hierarchy_from_matrices
from .build import build_hierarchy, hierarchy_table
from .container import HierarchyLevel, MeshHierarchy, TexelMap
from .decimate import check_manifold, decimate_mesh, level_sizes
from .laplacian import mesh_edge_index, scaled_laplacian
from .operators import closest_point_on_triangle, closest_points_on_surface, upsample_operator
from .spirals import compute_spirals
from .storage import check_hierarchy, default_cache_dir, load_hierarchy, save_hierarchy

__all__ = [
    "HierarchyLevel",
    "MeshHierarchy",
    "TexelMap",
    "build_hierarchy",
    "hierarchy_table",
    "hierarchy_from_matrices",
    "check_hierarchy",
    "save_hierarchy",
    "load_hierarchy",
    "default_cache_dir",
    "decimate_mesh",
    "level_sizes",
    "check_manifold",
    "upsample_operator",
    "closest_points_on_surface",
    "closest_point_on_triangle",
    "scaled_laplacian",
    "mesh_edge_index",
    "compute_spirals",
]
