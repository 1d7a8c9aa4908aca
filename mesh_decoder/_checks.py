"""Input checks whose errors state the expected and the actual value."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["check_tensor"]


def check_tensor(
    x: object,
    name: str,
    shape: Sequence[int | str | None] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Check a tensor's type, rank, sizes, dtype and device.

    ``shape`` entries are ints (must match), or strings/``None`` (any size).
    Raises ``TypeError`` for a non-tensor or wrong dtype and ``ValueError`` for a
    wrong shape or device, naming the expected and the found value.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if shape is not None:
        shape = tuple(shape)
        pretty = "(" + ", ".join(str(s) for s in shape) + ")"
        if x.dim() != len(shape) or any(
            isinstance(s, int) and s != n for s, n in zip(shape, x.shape)
        ):
            raise ValueError(f"{name}: expected shape {pretty}, got {tuple(x.shape)}")
    if dtype is not None:
        allowed = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if x.dtype not in allowed:
            want = " or ".join(str(d) for d in allowed)
            raise TypeError(f"{name}: expected dtype {want}, got {x.dtype}")
    if device is not None and x.device != torch.device(device):
        raise ValueError(f"{name}: expected a tensor on {device}, got one on {x.device}")
    return x
