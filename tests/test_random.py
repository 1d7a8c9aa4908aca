"""standard_normal_rows: standard normal rows whose first k do not depend on how many are drawn."""

from __future__ import annotations

import pytest
import torch

from mesh_decoder._random import BLOCK_ROWS, standard_normal_rows


@pytest.mark.parametrize("width", [1, 3, 8, 16, 37])
def test_the_first_rows_do_not_depend_on_how_many_are_drawn(width):
    """torch.randn(n, width) draws by another algorithm from 16 numbers on: a seed's first row of n = 1 was not
    the first row of n = 4 for width 8."""
    seed = int(torch.randint(1 << 30, ()))
    sizes = [1, 2, 3, BLOCK_ROWS - 1, BLOCK_ROWS, BLOCK_ROWS + 1, 3 * BLOCK_ROWS + 5]
    draws = [standard_normal_rows(n, width, torch.Generator().manual_seed(seed), dtype=torch.float64) for n in sizes]
    for n, rows in zip(sizes, draws):
        assert rows.shape == (n, width) and rows.dtype == torch.float64
        torch.testing.assert_close(rows, draws[-1][:n], rtol=0, atol=0)
    if width == 8:  # the draw this replaces
        one, four = (torch.randn(n, width, generator=torch.Generator().manual_seed(seed)) for n in (1, 4))
        assert not torch.equal(one[0], four[0])
    # the generator moves on by whole blocks: what is drawn next is the same for every n within one block
    after = []
    for n in (1, BLOCK_ROWS):
        g = torch.Generator().manual_seed(seed)
        standard_normal_rows(n, width, g, dtype=torch.float32)
        after.append(torch.randn(3, generator=g))
    torch.testing.assert_close(after[0], after[1], rtol=0, atol=0)


def test_rows_are_standard_normal_draws():
    rows = standard_normal_rows(20000, 6, torch.Generator().manual_seed(int(torch.randint(1 << 30, ()))),
                                dtype=torch.float64)  # (20000, 6)
    assert rows.mean(0).abs().max() < 0.05 and (rows.std(0) - 1).abs().max() < 0.05, (rows.mean(0), rows.std(0))
    assert torch.unique(rows).numel() == rows.numel()  # no block repeats another
    corr = torch.corrcoef(rows.T) - torch.eye(6, dtype=torch.float64)
    assert corr.abs().max() < 0.05
    assert standard_normal_rows(0, 6, None, dtype=torch.float32).shape == (0, 6)


def test_a_negative_count_is_refused():
    with pytest.raises(ValueError, match=r"n: expected a non-negative number of rows, got -1"):
        standard_normal_rows(-1, 4, None, dtype=torch.float32)
