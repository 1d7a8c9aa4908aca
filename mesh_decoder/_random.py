"""Random draws that do not depend on how many are asked for."""

from __future__ import annotations

import torch

#: Rows drawn per call of :func:`torch.randn` in :func:`standard_normal_rows`.
BLOCK_ROWS = 64


def standard_normal_rows(n: int, width: int, generator: torch.Generator | None = None, *, dtype: torch.dtype,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, width)`` standard normal draws whose first ``k`` rows are the same for every ``n >= k``.

    ``torch.randn(n, width)`` on the CPU fills fewer than 16 numbers one way and 16 or more another, so with one
    seed the first face of ``--n 1`` was not the first face of ``--n 4``. Rows are drawn in blocks of
    :data:`BLOCK_ROWS` (the last block cut short), so row ``i`` depends only on the generator's state and ``i``;
    a draw of ``n`` rows moves the generator on by ``ceil(n / BLOCK_ROWS)`` blocks.

    Shapes:
        ``-> (n, width)``
    """
    blocks = [torch.randn(BLOCK_ROWS, width, generator=generator, dtype=dtype, device=device)
              for _ in range(-(-n // BLOCK_ROWS))]
    return torch.cat(blocks)[:n] if blocks else torch.empty(0, width, dtype=dtype, device=device)
