"""Mesh hierarchies: decimation, sampling operators, spirals, Laplacians, cache."""

from .container import HierarchyLevel, MeshHierarchy, TexelMap

__all__ = ["HierarchyLevel", "MeshHierarchy", "TexelMap"]
