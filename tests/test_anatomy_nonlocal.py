"""The anatomy paper's non-local energy network."""

import pytest
import torch

from ebmkit.errors import ConfigError
from ebmkit.interfaces import BuildContext
from ebmkit.registry import default_registry
from ebmkit_plugins.nonlocal_energy import NonLocalBlock, NonLocalEnergy


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16), (1, 16, 8)])
def test_energy_maps_a_batch_to_one_number_each(shape):
    energy = default_registry().build("energy", "nonlocal", {"nf": 4}, BuildContext(shape=shape))
    x = torch.rand(3, *shape) * 2 - 1
    u = energy(x)
    assert u.shape == (3,)
    assert torch.allclose(energy(x[:1]), u[:1], atol=1e-5)  # samples do not mix across the batch
    # widths nf, 2nf, 4nf; head 4nf*(H/8)*(W/8) -> 8nf -> 1
    assert energy.head[0].in_features == 16 * (shape[1] // 8) * (shape[2] // 8) and energy.head[0].out_features == 32


def test_non_local_block_starts_as_identity_and_sees_every_position():
    block = NonLocalBlock(4)
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(block(x), x)  # zero-initialised output convolution
    torch.nn.init.normal_(block.out.weight)
    x = torch.randn(1, 4, 6, 6, requires_grad=True)
    block(x)[0, :, 0, 0].sum().backward()
    assert x.grad[0, :, 5, 5].abs().sum() > 0  # the corner sees the opposite corner: non-local


def test_bad_sizes_are_clear_errors():
    with pytest.raises(ConfigError, match="multiples of 8"):
        default_registry().build("energy", "nonlocal", {"nf": 4}, BuildContext(shape=(1, 12, 12)))
    with pytest.raises(ValueError):
        NonLocalEnergy(1, 4, 4)
