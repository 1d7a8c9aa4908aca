"""`MeshHierarchy`: the precomputed operators graph-convolutional decoders run on.

Only integer and float tensors live here, so a saved hierarchy loads and moves
to a device without openmesh.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from .._checks import check_device

__all__ = ["HierarchyLevel", "TexelMap", "MeshHierarchy"]


@dataclass(repr=False)
class HierarchyLevel:
    """One resolution level.

    Attributes:
        vertices: ``(V, 3)`` float positions of this level.
        faces: ``(F, 3)`` int64 faces of this level.
        spirals: ``(V, S)`` int64 spiral indices (already dilated). Short spirals are
            padded with the index ``V``, a virtual "zero" vertex: layers append a zero
            row to their input before gathering.
        laplacian_index: ``(2, E)`` int64 COO indices (row, col) of the scaled Laplacian.
        laplacian_weight: ``(E,)`` float values of the scaled Laplacian
            ``L~ = 2 L / lambda_max - I`` with ``L = I - D^-1/2 A D^-1/2`` and
            ``lambda_max = 2``, i.e. ``L~ = -D^-1/2 A D^-1/2`` (COMA's choice).
        original_index: ``(V,)`` int64 index of each vertex in the full-resolution mesh.
        spiral_length: ``S`` before dilation was applied.
        dilation: the spiral dilation.
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    spirals: torch.Tensor
    laplacian_index: torch.Tensor
    laplacian_weight: torch.Tensor
    original_index: torch.Tensor
    spiral_length: int = 9
    dilation: int = 1

    @property
    def num_vertices(self) -> int:
        """``V`` of this level."""
        return int(self.vertices.shape[0])

    def __repr__(self) -> str:  # sizes, not every index
        return (f"HierarchyLevel(V={self.num_vertices}, F={int(self.faces.shape[0])}, spirals="
                f"{tuple(self.spirals.shape)}, spiral_length={self.spiral_length}, dilation={self.dilation}, "
                f"laplacian_entries={int(self.laplacian_index.shape[1])}, {self.vertices.dtype}, "
                f"{self.vertices.device})")


@dataclass(repr=False)
class TexelMap:
    """For every texel of an ``H x W`` UV map: the vertices and weights that colour it.

    Texel ``(i, j)`` (row ``i`` from the top of the image) has its centre at
    ``u = (j + 0.5) / W`` and ``v = 1 - (i + 0.5) / H`` (``v`` from the bottom, as in OBJ).

    Attributes:
        index: ``(H, W, 3)`` int64 vertex indices of the covering triangle.
        weight: ``(H, W, 3)`` float barycentric weights (non-negative, sum 1).
        face: ``(H, W)`` int64 covering face, ``-1`` where no triangle covers the texel.
        mask: ``(H, W)`` bool coverage before gutter padding.

    Uncovered texels (gutter) copy ``index`` and ``weight`` of the nearest covered
    texel, so bilinear sampling across a seam does not bleed in black.
    """

    index: torch.Tensor
    weight: torch.Tensor
    face: torch.Tensor
    mask: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` texels."""
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    def __repr__(self) -> str:
        covered = float(self.mask.float().mean()) if self.mask.numel() else 0.0
        return f"TexelMap(size={self.size}, covered={covered:.1%}, {self.weight.dtype}, {self.weight.device})"


@dataclass(repr=False)
class MeshHierarchy:
    """Levels from fine (0, the template) to coarse, and the operators between them.

    Attributes:
        levels: ``L + 1`` levels; ``levels[0]`` is the template.
        down: ``L`` int64 tensors; ``down[l]`` has shape ``(V_{l+1},)`` and indexes
            level ``l``: ``levels[l+1].vertices == levels[l].vertices[down[l]]``.
        up_index: ``L`` int64 tensors ``(V_l, 3)`` into level ``l + 1``.
        up_weight: ``L`` float tensors ``(V_l, 3)``: barycentric weights of the
            closest point on level ``l + 1``'s surface (non-negative, sum 1).
        texel_map: the template's UV texel map, or ``None``.
        meta: JSON-able build parameters and provenance (template hash, factors,
            spiral lengths, dilations, texture size, format and library version).
    """

    levels: list[HierarchyLevel]
    down: list[torch.Tensor]
    up_index: list[torch.Tensor]
    up_weight: list[torch.Tensor]
    texel_map: TexelMap | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_levels(self) -> int:
        """``L + 1``: the template and its coarser levels."""
        return len(self.levels)

    @property
    def sizes(self) -> list[int]:
        """Vertices per level, the template's first."""
        return [lvl.num_vertices for lvl in self.levels]

    @property
    def template_hash(self) -> str | None:
        """The template's :meth:`~mesh_decoder.mesh.Mesh.content_hash` (``meta["template_hash"]``)."""
        return self.meta.get("template_hash")

    def __repr__(self) -> str:  # sizes, not every tensor: print(hierarchy) dumped all of them
        texels = "None" if self.texel_map is None else f"{self.texel_map.size}"
        spirals = [lvl.spiral_length for lvl in self.levels]
        dtype = self.levels[0].vertices.dtype if self.levels else None
        device = self.levels[0].vertices.device if self.levels else None
        template = self.template_hash[:12] if isinstance(self.template_hash, str) else self.template_hash
        return (f"MeshHierarchy(sizes={self.sizes}, spiral_lengths={spirals}, texel_map={texels}, "
                f"template_hash={template!r}, {dtype}, {device})")

    def to(
        self, device: torch.device | str | torch.dtype | None = None, dtype: torch.dtype | None = None
    ) -> "MeshHierarchy":
        """A copy on ``device``; float tensors are cast to ``dtype`` if given.

        As with :meth:`torch.nn.Module.to`, a dtype may be passed alone, ``h.to(torch.float64)``,
        and only floating dtypes are accepted: index tensors stay int64 and masks bool.
        ``meta`` is copied; tensors already on ``device`` in ``dtype`` are shared, as
        :meth:`torch.Tensor.to` shares them.

        Raises:
            TypeError: ``dtype`` is not a floating ``torch.dtype``.
            ValueError: ``device`` is not a device, or a CUDA/MPS device this machine lacks.
        """
        if isinstance(device, torch.dtype):
            if dtype is not None:
                raise TypeError(f"to: got a dtype twice ({device} as device and {dtype} as dtype)")
            device, dtype = None, device
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype: expected a floating torch.dtype (e.g. torch.float64), got {dtype!r}")
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError, ValueError):
                raise ValueError(f"device: expected a torch.device or a device name ('cpu', 'cuda:0', ...), "
                                 f"got {device!r}") from None
            if device.type in ("cuda", "mps"):
                check_device(device, "device")  # one this machine has

        def move(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        def move_obj(obj):
            return replace(obj, **{f.name: move(getattr(obj, f.name)) for f in fields(obj)
                                   if isinstance(getattr(obj, f.name), torch.Tensor)})

        return MeshHierarchy(
            levels=[move_obj(lvl) for lvl in self.levels],
            down=[move(t) for t in self.down],
            up_index=[move(t) for t in self.up_index],
            up_weight=[move(t) for t in self.up_weight],
            texel_map=None if self.texel_map is None else move_obj(self.texel_map),
            meta=copy.deepcopy(self.meta),
        )
