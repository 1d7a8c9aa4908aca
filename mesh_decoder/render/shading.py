r"""Vertex normals and Lambert shading under a directional light.

**Vertex normals** are area-weighted: every face adds its unnormalised normal
``(p_1 - p_0) x (p_2 - p_0)`` (twice its area times its unit normal) to its three
vertices, and the sums are normalised,

.. math::
    n_v = \frac{\sum_{f \ni v} (p_{f,1} - p_{f,0}) \times (p_{f,2} - p_{f,0})}
               {\bigl\| \sum_{f \ni v} (p_{f,1} - p_{f,0}) \times (p_{f,2} - p_{f,0}) \bigr\|},

so they point to the side from which the faces are counter-clockwise (outwards for
the built-in templates). A vertex in no face gets a zero normal.

**Lambert shading** with an ambient term (the diffuse model of Phong's
illumination, without the specular part):

.. math::
    c = \rho \,\bigl(k_a + k_d \max(0,\; n \cdot \ell)\bigr),

with albedo ``rho``, unit normal ``n``, unit direction ``ell`` *towards* the light,
ambient ``k_a`` and diffuse ``k_d`` coefficients. Everything is differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .._checks import check_tensor
from .cameras import _finite_numbers, _numbers_text
from .rasterize import as_faces, as_vertices

__all__ = ["DirectionalLight", "vertex_normals", "shade_lambert"]


@dataclass(frozen=True)
class DirectionalLight:
    """A directional light with an ambient term, in world coordinates.

    Attributes:
        direction: ``(3,)`` direction *towards* the light (normalised when used).
            Default ``(0.3, 0.5, 1.0)``: from the front (``+z``), above and to the right,
            which lights the built-in face seen by the default camera.
        ambient: ``k_a``. Default ``0.35``.
        diffuse: ``k_d``. Default ``0.65``.

    Plain numbers are checked here (``ValueError``): a direction of three finite
    numbers, not all zero, and finite coefficients. Tensors (e.g. a ``(B, 3)``
    direction, or the parameters of a fit, rebuilt at every step) are not: a check
    would wait for the GPU.
    """

    direction: Sequence[float] = (0.3, 0.5, 1.0)
    ambient: float = 0.35
    diffuse: float = 0.65

    def __post_init__(self) -> None:
        if not isinstance(self.direction, torch.Tensor):
            light_direction(self.direction, "direction")
        for name in ("ambient", "diffuse"):
            if not isinstance(getattr(self, name), torch.Tensor):
                arr = _finite_numbers(getattr(self, name), name)
                if arr.ndim:  # a list failed only at render time, in float(), naming nothing
                    raise ValueError(f"{name}: expected one number, or a (B,) tensor (one per mesh), got "
                                     f"{type(getattr(self, name)).__name__} of shape {arr.shape}")


def light_direction(value, name: str) -> np.ndarray:
    """Plain numbers of a direction towards the light: ``(3,)``, finite, not all zero (else ``ValueError``)."""
    arr = _finite_numbers(value, name)
    if arr.shape != (3,):
        raise ValueError(f"{name}: expected 3 numbers (x, y, z) or a tensor, got shape {arr.shape}")
    if not (arr != 0).any():
        raise ValueError(f"{name}: expected a direction towards the light, not all zero, got {_numbers_text(arr)}")
    return arr


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted unit vertex normals (module docstring), differentiable.

    Args:
        vertices: ``(B, V, 3)`` or ``(V, 3)``.
        faces: ``(F, 3)`` int64.
        eps: lengths below this give a zero normal. Default ``1e-12``.

    Shapes:
        ``(B, V, 3) -> (B, V, 3)`` (``(V, 3) -> (V, 3)``).
    """
    unbatched = np.ndim(vertices) == 2  # tensor or array
    v = as_vertices(vertices)
    f = as_faces(faces, int(v.shape[1]), v.device)
    p = v[:, f]  # (B, F, 3, 3)
    fn = torch.linalg.cross(p[:, :, 1] - p[:, :, 0], p[:, :, 2] - p[:, :, 0], dim=-1)  # (B, F, 3), 2 * area * n
    n = v.new_zeros(v.shape)  # (B, V, 3)
    for k in range(3):
        n = n.index_add(1, f[:, k], fn)  # (B, V, 3)
    length = torch.linalg.vector_norm(n, dim=-1, keepdim=True)  # (B, V, 1)
    n = torch.where(length > eps, n / length.clamp(min=eps), torch.zeros((), dtype=n.dtype, device=n.device))
    return n[0] if unbatched else n


def _coefficient(value, name: str, ref: torch.Tensor) -> torch.Tensor:
    t = value if isinstance(value, torch.Tensor) else torch.tensor(float(_finite_numbers(value, name)))
    t = t.to(device=ref.device, dtype=ref.dtype)
    if t.dim() == 1:  # one per batch element / leading entry
        if int(t.shape[0]) not in (1, int(ref.shape[0])):
            raise ValueError(f"{name}: expected a number or a ({int(ref.shape[0])},) tensor (one per normal), "
                             f"got shape {tuple(t.shape)}")
        t = t.reshape(-1, *([1] * (ref.dim() - 1)))
    elif t.dim() != 0:
        raise ValueError(f"{name}: expected a number or a (B,) tensor, got shape {tuple(t.shape)}")
    return t


def shade_lambert(
    normals: torch.Tensor,
    albedo: torch.Tensor,
    light_dir: torch.Tensor | Sequence[float] = DirectionalLight.direction,
    ambient: float | torch.Tensor = DirectionalLight.ambient,
    diffuse: float | torch.Tensor = DirectionalLight.diffuse,
) -> torch.Tensor:
    """Lambert shading ``albedo * (ambient + diffuse * max(0, n . l))`` (module docstring).

    Args:
        normals: ``(N, ..., 3)`` unit normals (channel last).
        albedo: ``(N, ..., C)`` colours, broadcastable with ``normals[..., :1]``.
        light_dir: ``(3,)`` or ``(N, 3)`` direction towards the light (normalised
            here). Default ``(0.3, 0.5, 1.0)``.
        ambient: ``k_a``, a number or ``(N,)``. Default ``0.35``.
        diffuse: ``k_d``, a number or ``(N,)``. Default ``0.65``.

    Plain numbers are checked (finite; a direction not all zero); tensors are not.

    Returns:
        ``(N, ..., C)`` shaded colours.

    Shapes:
        ``(N, ..., 3), (N, ..., C) -> (N, ..., C)``.
    """
    if not isinstance(normals, torch.Tensor) or not isinstance(albedo, torch.Tensor):
        raise TypeError(
            f"normals, albedo: expected torch.Tensors, got {type(normals).__name__} and {type(albedo).__name__}"
        )
    if normals.dim() < 1 or normals.shape[-1] != 3:
        raise ValueError(f"normals: expected shape (..., 3), got {tuple(normals.shape)}")
    try:
        torch.broadcast_shapes(normals.shape[:-1] + (1,), albedo.shape)
    except RuntimeError:
        raise ValueError(f"albedo: expected a shape broadcastable with the normals' {tuple(normals.shape[:-1])} "
                         f"plus channels, got {tuple(albedo.shape)}") from None
    if isinstance(light_dir, torch.Tensor):
        light = light_dir
    else:
        light = torch.as_tensor(light_direction(light_dir, "light_dir"))
    light = light.to(device=normals.device, dtype=normals.dtype)
    if light.dim() == 1:
        check_tensor(light, "light_dir", shape=(3,))
    else:
        check_tensor(light, "light_dir", shape=(int(normals.shape[0]), 3))
        light = light.reshape(light.shape[0], *([1] * (normals.dim() - 2)), 3)  # (N, 1, ..., 3)
    light = light / torch.linalg.vector_norm(light, dim=-1, keepdim=True).clamp(min=1e-12)
    cos = (normals * light).sum(dim=-1, keepdim=True).clamp(min=0.0)  # (N, ..., 1)
    ka = _coefficient(ambient, "ambient", cos)
    kd = _coefficient(diffuse, "diffuse", cos)
    return albedo * (ka + kd * cos)  # (N, ..., C)
