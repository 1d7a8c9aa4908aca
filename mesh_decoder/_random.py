"""Random draws that do not depend on how many are asked for."""

from __future__ import annotations

import torch

#: Rows drawn per call of :func:`torch.randn` in :func:`standard_normal_rows`.
BLOCK_ROWS = 64


def standard_normal_rows(n: int, width: int, generator: torch.Generator | None = None, *, dtype: torch.dtype,
                         device: torch.device | str | None = None) -> torch.Tensor:
    """``(n, width)`` standard normal draws whose first ``k`` rows are the same for every ``n >= k``.

    ``torch.randn(n, width)`` on the CPU fills fewer than 16 numbers one way and 16 or more another, and redraws
    the last 16 of a count that is not a multiple of 16, so with one seed the first face of ``--n 1`` was not the
    first face of ``--n 4``. Rows are drawn in blocks of :data:`BLOCK_ROWS` (the last block cut short), so row
    ``i`` depends only on the generator's state and ``i``; a draw of ``n`` rows moves the generator on by
    ``ceil(n / BLOCK_ROWS)`` blocks. Only the first draw from a generator keeps this property: a second draw
    starts where the first left the generator, which depends on the first one's ``n``.

    Shapes:
        ``-> (n, width)``
    """
    if n < 0:
        raise ValueError(f"n: expected a non-negative number of rows, got {n}")
    out = torch.empty(n, width, dtype=dtype, device=device)  # (n, width)
    for start in range(0, n, BLOCK_ROWS):
        if start + BLOCK_ROWS <= n:  # a whole block, drawn in place
            torch.randn(BLOCK_ROWS, width, generator=generator, dtype=dtype, device=device,
                        out=out[start:start + BLOCK_ROWS])
        else:
            out[start:] = torch.randn(BLOCK_ROWS, width, generator=generator, dtype=dtype, device=device)[:n - start]
    return out
