"""Mesh container, strict I/O, templates and UV utilities."""

from .container import Mesh

__all__ = ["Mesh"]
