"""Sample grids: small images enlarged (nearest) to a readable size."""

import torch

from ebmkit.images import READABLE_PX, enlarge, grid_scale, grid_tensor


def test_grid_scale_reaches_a_readable_size():
    assert READABLE_PX == 32
    assert [grid_scale(h) for h in (4, 8, 16, 28, 32, 64)] == [8, 4, 2, 2, 1, 1]
    assert grid_scale(8, scale=1) == 1 and grid_scale(64, scale=3) == 3


def test_enlarge_repeats_pixels_and_adds_no_values():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    big = enlarge(x, 3)
    assert big.shape == (1, 1, 6, 6)
    assert torch.equal(big[0, 0, :3, :3], torch.zeros(3, 3)) and torch.equal(big[0, 0, 3:, 3:], torch.full((3, 3), 3.0))
    assert set(big.unique().tolist()) == {0.0, 1.0, 2.0, 3.0}


def test_a_grid_of_64_digits_is_274_px_not_82():
    grid = grid_tensor(torch.zeros(64, 1, 8, 8))
    assert tuple(grid.shape[-2:]) == (274, 274)
    assert tuple(grid_tensor(torch.zeros(64, 1, 8, 8), scale=1).shape[-2:]) == (82, 82)
