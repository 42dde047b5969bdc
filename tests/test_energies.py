import pytest
import torch

import ebmkit


@pytest.mark.parametrize("size,convs", [(32, 5), (64, 6), (128, 7)])
def test_convnet_tables_6_to_8_layer_plan(size, convs):
    e = ebmkit.create_energy("convnet", (3, size, size), nf=4)
    layers = [m for m in e.net if isinstance(m, torch.nn.Conv2d)]
    assert len(layers) == convs
    assert layers[0].kernel_size == (3, 3) and layers[0].out_channels == 4
    assert [m.out_channels for m in layers[1:-1]][:3] == [8, 16, 32]
    assert max(m.out_channels for m in layers) == 32  # capped at 8 * nf
    assert layers[-1].kernel_size == (4, 4) and layers[-1].out_channels == 1
    assert e(torch.randn(2, 3, size, size)).shape == (2,)


def test_convnet_any_channel_count_and_spectral_norm():
    e = ebmkit.create_energy("convnet", (5, 16, 16), nf=4, spectral_norm=True)
    assert e(torch.randn(3, 5, 16, 16)).shape == (3,)
    assert any("parametrizations" in n for n, _ in e.named_parameters())


def test_paper_32px_nf64_parameter_count():
    # 3x3 conv 3->64, 4x4 convs 64->128->256->512, 4x4 conv 512->1, with biases
    e = ebmkit.create_energy("convnet", (3, 32, 32), nf=64)
    expected = (3 * 9 * 64 + 64) + (64 * 16 * 128 + 128) + (128 * 16 * 256 + 256) + (256 * 16 * 512 + 512) + (512 * 16 + 1)
    assert sum(p.numel() for p in e.parameters()) == expected


def test_timm_energy_builds_without_pretrained_weights():
    e = ebmkit.create_energy("timm", (1, 16, 16), backbone="resnet18")
    assert e(torch.randn(2, 1, 16, 16)).shape == (2,)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in e.modules())


def test_timm_unknown_backbone_is_a_clear_error():
    with pytest.raises(ebmkit.errors.ConfigError, match="energy 'timm'.*Unknown model"):
        ebmkit.create_energy("timm", (3, 16, 16), backbone="no-such-net")


def test_mlp_energy_on_vectors():
    e = ebmkit.create_energy("mlp", (2,), hidden=16, depth=2)
    assert e(torch.randn(7, 2)).shape == (7,)


def test_initializers_shapes_and_ranges():
    u = ebmkit.create_initializer("uniform", (1, 4, 4), low=-1, high=1).sample(500)
    assert u.shape == (500, 1, 4, 4) and u.min() >= -1 and u.max() <= 1 and abs(u.mean()) < 0.05
    g = ebmkit.create_initializer("gaussian", (3,), mean=2.0, std=0.5).sample(4000)
    assert abs(g.mean() - 2.0) < 0.05 and abs(g.std() - 0.5) < 0.05
    with pytest.raises(ebmkit.errors.ConfigError, match="low"):
        ebmkit.create_initializer("uniform", (2,), low=1, high=0)
