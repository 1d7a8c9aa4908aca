"""Mesh graphs for the layers, and the input checks every layer shares.

:func:`mesh_edge_index` turns faces into PyG's ``edge_index``. The private helpers
validate features ``(B, V, C)`` / ``(V, C)`` against a layer's graph, and pick a
level out of a :class:`~mesh_decoder.hierarchy.MeshHierarchy`, with errors that
state the expected and the found value.
"""

from __future__ import annotations

import functools
import itertools
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from .._checks import check_tensor, int_value, non_negative_int
from ..hierarchy.container import HierarchyLevel, MeshHierarchy

__all__ = ["fast_paths_enabled", "mesh_edge_index", "plain_formulation"]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def mesh_edge_index(faces: Tensor | np.ndarray, num_vertices: int) -> Tensor:
    """Directed edges of a mesh: both directions of every face edge.

    Consecutive corners of each face (and the last with the first) are joined, so
    triangles and other polygons work. Duplicates and self loops (from degenerate
    faces) are dropped; edges are sorted by source, then target, and isolated
    vertices simply have no edges.

    Args:
        faces: ``(F, k)`` integer vertex indices, ``k >= 2`` (``k = 3`` for triangles).
        num_vertices: ``V``; every index must lie in ``[0, V)``.

    Shapes:
        ``faces (F, k) -> edge_index (2, E)`` int64 on ``faces``' device, with
        ``(i, j)`` present exactly when ``(j, i)`` is.
    """
    if isinstance(faces, np.ndarray):
        if not np.issubdtype(faces.dtype, np.integer):
            raise TypeError(f"faces: expected an integer array, got dtype {faces.dtype}")
        faces = torch.from_numpy(np.ascontiguousarray(faces, dtype=np.int64))
    check_tensor(faces, "faces", shape=("F", "k"))
    if faces.dtype.is_floating_point or faces.dtype.is_complex or faces.dtype == torch.bool:
        raise TypeError(f"faces: expected an integer tensor, got dtype {faces.dtype}")
    V = non_negative_int(num_vertices, "num_vertices")
    if faces.shape[1] < 2:
        raise ValueError(f"faces: expected (F, k) with k >= 2 corners, got shape {tuple(faces.shape)}")
    faces = faces.to(torch.int64)
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= V):
        raise ValueError(
            f"faces: expected vertex indices in [0, {V}), got range [{int(faces.min())}, {int(faces.max())}]"
        )
    src = faces.reshape(-1)  # (F*k,)
    dst = faces.roll(-1, dims=1).reshape(-1)  # (F*k,) next corner of the same face
    row = torch.cat([src, dst])  # (2*F*k,)
    col = torch.cat([dst, src])  # (2*F*k,)
    keep = row != col
    key = torch.unique(row[keep] * V + col[keep])  # (E,) sorted
    return torch.stack([torch.div(key, V, rounding_mode="floor"), key % V]) if V else key.new_zeros(2, 0)


# --------------------------------------------------------------------------- shared checks
def hierarchy_level(hierarchy: MeshHierarchy, level: int, below_coarsest: int = 0) -> HierarchyLevel:
    """``hierarchy.levels[level]`` after checking the type and ``0 <= level <= top``.

    ``top`` is the coarsest level less ``below_coarsest``; pooling, which needs level
    ``level + 1`` too, passes 1.
    """
    if not isinstance(hierarchy, MeshHierarchy):
        raise TypeError(f"hierarchy: expected a MeshHierarchy, got {type(hierarchy).__name__}")
    top = hierarchy.num_levels - 1 - below_coarsest
    level = int_value(level, "level", f"an int in [0, {top}]")
    if not 0 <= level <= top:
        raise ValueError(f"level: expected an int in [0, {top}], got {level}")
    return hierarchy.levels[level]


def check_features(x: Any, num_vertices: int | None, channels: int | None, dtype: torch.dtype | None,
                   device: torch.device, name: str = "x") -> Tensor:
    """Validate features ``(B, V, C)`` or ``(V, C)`` for a layer.

    Args:
        x: the input.
        num_vertices: required ``V``, or ``None`` for any.
        channels: required ``C``, or ``None`` for any.
        dtype: required dtype (the layer's parameters), or ``None`` for any float
            dtype. Under ``torch.autocast`` any float dtype is accepted.
        device: the device of the layer's buffers.
        name: the argument's name in messages.

    Raises ``TypeError`` (not a tensor, wrong dtype) or ``ValueError`` (rank, ``V``,
    ``C``, device), stating the expected and the found value.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    V = "V" if num_vertices is None else num_vertices
    C = "C" if channels is None else channels
    if x.dim() not in (2, 3):
        raise ValueError(f"{name}: expected shape (B, {V}, {C}) or ({V}, {C}), got {tuple(x.shape)}")
    check_tensor(x, name, shape=("B", V, C) if x.dim() == 3 else (V, C))
    if dtype is None or _autocast_enabled(x.device.type):
        check_tensor(x, name, dtype=FLOAT_DTYPES)  # autocast mixes dtypes on purpose
    else:
        check_tensor(x, name, dtype=dtype)
    check_tensor(x, name, device=device)
    return x


#: The device types whose ``torch.autocast`` the fast paths (and ``train``) look for.
AUTOCAST_DEVICES = ("cpu", "cuda", "xpu", "mps")


def _autocast_enabled(device_type: str) -> bool:
    return device_type in AUTOCAST_DEVICES and torch.is_autocast_enabled(device_type)


def takes_dtype(t: Tensor, dtype: torch.dtype) -> bool:
    """Whether a module of ``dtype`` takes input ``t``: of that dtype, or under an active ``torch.autocast``
    of ``t``'s device type float32 or the autocast's dtype (what a layer before gives there)."""
    if t.dtype == dtype:
        return True
    kind = t.device.type
    return _autocast_enabled(kind) and t.dtype in (torch.float32, torch.get_autocast_dtype(kind))


# --------------------------------------------------------------------------- fast-path switch
_PLAIN_FORMULATION = False


@contextmanager
def plain_formulation() -> Iterator[None]:
    """Run every layer in its plain formulation inside the block.

    Switches off the inference fast paths (the CPU spiral kernels, the fused
    up-sampling + spiral convolution and the chunked CPU decode), so each layer
    runs the obviously correct form: gather, then ``nn.Linear``; up-sample, then
    convolve; activate into a fresh tensor. This is the slow reference, not the
    training path: a grad-enabled forward keeps the CPU kernels that have
    backward passes and measured 3 to 5 times faster than this. Results agree with the fast paths up to
    float summation order. Every submodule is called, so forward hooks see each
    layer's own output (for feature extraction without gradients). Used by the
    analytic cost counter (which needs every layer called) and by tests; not
    thread-safe.
    """
    global _PLAIN_FORMULATION
    previous = _PLAIN_FORMULATION
    _PLAIN_FORMULATION = True
    try:
        yield
    finally:
        _PLAIN_FORMULATION = previous


def after_load(method: str) -> Callable[[torch.nn.Module, Any], None]:
    """A state-dict load post-hook that calls ``module.<method>()``: a picklable one (a
    ``functools.partial`` of a module-level function, where a lambda would make the
    module unpicklable for ``torch.save(model)`` and multiprocessing)."""
    return functools.partial(_call_after_load, method)


def _call_after_load(method: str, module: torch.nn.Module, _incompatible: Any) -> None:
    getattr(module, method)()


def fast_paths_enabled() -> bool:
    """``False`` inside :func:`plain_formulation`."""
    return not _PLAIN_FORMULATION


def update_buffer(module: torch.nn.Module, name: str, value: Tensor) -> None:
    """Set a derived buffer: in place when the shape matches (CUDA graphs captured
    earlier read the buffer's memory, so it must stay where it is; it keeps its
    device and dtype; see :func:`write_buffer`), else replaced by ``value``."""
    old = getattr(module, name)
    if old.shape == value.shape and old.is_floating_point() == value.is_floating_point():
        write_buffer(old, value)
    else:
        setattr(module, name, value)


def write_buffer(buffer: Tensor, value: Tensor) -> None:
    """``buffer.copy_(value)`` without autograd; a buffer made an inference tensor (its module moved or
    cast under ``torch.inference_mode``) is written in that mode, the only one that lets it change in place."""
    with torch.inference_mode() if buffer.is_inference() else torch.no_grad():
        buffer.copy_(value)


def bag_product(x: Tensor, offsets: Tensor, col: Tensor, weight: Tensor) -> Tensor:
    """A sparse matrix in compressed rows times ``x``, by one ``embedding_bag``: row ``i``'s
    entries are ``offsets[i]`` up to the next row's.

    Shapes: ``x (V_in, N), offsets (V_out,), col (E,), weight (E,) -> (V_out, N)``;
    ``out[i] = sum of weight[e] * x[col[e]]`` over row ``i``'s entries.
    """
    if x.shape[1] == 0:  # embedding_bag rejects a matrix without columns (an empty batch)
        return x.new_empty(offsets.shape[0], 0)
    return torch.nn.functional.embedding_bag(col, x.contiguous(), offsets, mode="sum",
                                             per_sample_weights=weight)  # (V_out, N)


def records_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd would record an operation on ``tensors`` (``None`` entries skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def under_func_transform(x: Tensor | None = None) -> bool:
    """Whether a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ``jvp``,
    ...) or forward-mode AD (an open ``torch.autograd.forward_ad.dual_level``) is
    active, or ``x`` is wrapped by one. Under ``vmap`` and ``jvp`` tensors report
    ``requires_grad=False`` and forward-mode tangents do not show in it either, so
    this, not :func:`records_grad`, keeps the inference-only kernels (which have no
    forward-mode rule) out. The check is global, not on ``x`` alone: a transform
    over the parameters only (``jvp`` of ``functional_call``) leaves the input
    plain. Never true while compiling (the compiler sees through the transforms itself)."""
    if torch.compiler.is_compiling():
        return False
    return (torch._C._functorch.peek_interpreter_stack() is not None
            or getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0
            or (x is not None and torch._C._functorch.is_functorch_wrapped_tensor(x)))


def inference_fast_path(x: Tensor, *params: Tensor, module: torch.nn.Module | None = None) -> bool:
    """Whether an inference-only fast path may run on input ``x``.

    True when autograd records nothing (no grad mode, or neither ``x`` nor
    ``params`` nor any parameter or buffer of ``module`` requires grad: a buffer made
    trainable, such as up-sampling weights, gets its gradient), outside
    :func:`plain_formulation`, while not tracing or exporting, outside ``torch.func``
    transforms and forward-mode AD (:func:`under_func_transform`), and without autocast.
    ``module``'s tensors are looked at only in grad mode (walking a decoder's tensors
    took about 50 us a call; under ``no_grad`` nothing is recorded anyway).
    """
    if _PLAIN_FORMULATION or torch.jit.is_tracing() or torch.compiler.is_exporting() or under_func_transform(x):
        return False
    if records_grad(x, *params):
        return False
    if module is not None and torch.is_grad_enabled() and any(
            t.requires_grad for t in itertools.chain(module.parameters(), module.buffers())):
        return False
    return not _autocast_enabled(x.device.type)
