"""Synthetic morphable faces and datasets of meshes in correspondence with a template."""

from .datasets import MeshFolderDataset, SyntheticFaceDataset, rigid_align
from .synthetic import (
    APPEARANCE_NAMES,
    EXPRESSION_NAMES,
    GENERATOR_VERSION,
    IDENTITY_NAMES,
    PARAM_NAMES,
    FaceParams,
    SyntheticFaces,
    extrapolation_split,
    interpolation_split,
)

__all__ = [
    "GENERATOR_VERSION",
    "IDENTITY_NAMES",
    "EXPRESSION_NAMES",
    "APPEARANCE_NAMES",
    "PARAM_NAMES",
    "FaceParams",
    "SyntheticFaces",
    "interpolation_split",
    "extrapolation_split",
    "SyntheticFaceDataset",
    "MeshFolderDataset",
    "rigid_align",
]
