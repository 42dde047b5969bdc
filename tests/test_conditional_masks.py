"""Mask generators: each one's coverage matches its parameters."""

import pytest
import torch

from ebmkit import create_mask, default_registry
from ebmkit.errors import ConfigError


def test_centre_block_is_where_and_as_large_as_asked():
    m = create_mask("centre", fraction=0.5).sample(3, 8, 8)
    assert m.shape == (3, 1, 8, 8) and m.dtype == torch.bool
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:6, 2:6] = True  # a 4x4 hole in the middle of 8x8
    assert torch.equal(m[:, 0], expected.expand(3, 8, 8))
    assert create_mask("centre", fraction=0.25).sample(1, 16, 16).sum() == 16  # 4x4
    assert create_mask("center", fraction=0.5).expected_coverage(8, 8) == 0.25


def test_random_pixels_hide_exactly_the_fraction():
    gen = create_mask("random-pixels", fraction=0.3)
    m = gen.sample(50, 10, 10, generator=torch.Generator().manual_seed(0))
    assert (m.flatten(1).sum(1) == 30).all()  # round(0.3 * 100) in every image
    assert gen.expected_coverage(10, 10) == 0.3
    assert not torch.equal(m[0], m[1])  # a fresh draw per image
    assert create_mask("random-pixels", fraction=0.0).sample(2, 4, 4).sum() == 0


@pytest.mark.parametrize("side,rows,cols", [("left", slice(None), slice(0, 4)), ("right", slice(None), slice(4, 8)),
                                            ("top", slice(0, 4), slice(None)), ("bottom", slice(4, 8), slice(None))])
def test_half_image_hides_that_half(side, rows, cols):
    m = create_mask("half", side=side).sample(2, 8, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[rows, cols] = True
    assert torch.equal(m[:, 0], expected.expand(2, 8, 8))


def test_random_half_is_always_one_of_the_four_halves():
    m = create_mask("half", side="random").sample(40, 8, 8, generator=torch.Generator().manual_seed(1))
    assert (m.flatten(1).sum(1) == 32).all()
    halves = {(bool(mi[0, :, :4].all()), bool(mi[0, :, 4:].all()), bool(mi[0, :4].all()), bool(mi[0, 4:].all())) for mi in m}
    assert halves == {(True, False, False, False), (False, True, False, False), (False, False, True, False),
                      (False, False, False, True)}


def test_random_blocks_sizes_and_coverage():
    one = create_mask("random-blocks", count=1, fraction=0.25).sample(30, 16, 16, generator=torch.Generator().manual_seed(2))
    assert (one.flatten(1).sum(1) == 16).all()  # one 4x4 block each
    gen = create_mask("random-blocks", count=2, fraction=0.5)
    # closed form by hand for 4x4 images, 2x2 blocks: a row is covered with probability (1/3, 2/3, 2/3, 1/3)
    p = torch.tensor([1 / 3, 2 / 3, 2 / 3, 1 / 3])
    by_hand = float((1 - (1 - p[:, None] * p[None, :]) ** 2).mean())
    assert gen.expected_coverage(4, 4) == pytest.approx(by_hand)
    m = gen.sample(20000, 4, 4, generator=torch.Generator().manual_seed(3))
    assert float(m.float().mean()) == pytest.approx(by_hand, abs=0.01)


def test_bad_mask_parameters_name_the_field():
    with pytest.raises(ConfigError, match="fraction"):
        create_mask("centre", fraction=1.5)
    with pytest.raises(ConfigError, match="known mask names: center, centre, half"):
        create_mask("cnetre")
    assert "mask" in {r.kind for r in default_registry().components("mask").values()}
