"""DCGAN building blocks, sized by the image: ``log2(size / 4)`` stride-2 stages."""

from __future__ import annotations

import math

from torch import Tensor, nn


def stages(image_size: int) -> int:
    if image_size < 8 or image_size & (image_size - 1):
        raise ValueError(f"the DCGAN/VAE baselines need a power-of-two image size >= 8, got {image_size}")
    return int(math.log2(image_size // 4))


class UpNet(nn.Module):
    """z (B, nz) -> image (B, C, S, S) in [-1, 1]: the DCGAN generator / VAE decoder."""

    def __init__(self, nz: int, channels: int, image_size: int, nf: int) -> None:
        super().__init__()
        n = stages(image_size)
        width = nf * 2 ** (n - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(nz, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2), nn.ReLU(True)]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.nz = nz

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(z.shape[0], self.nz, 1, 1))


class DownNet(nn.Module):
    """image (B, C, S, S) -> features (B, width, 4, 4): the DCGAN discriminator / VAE encoder trunk."""

    def __init__(self, channels: int, image_size: int, nf: int) -> None:
        super().__init__()
        n = stages(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, nf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        width = nf
        for _ in range(n - 1):
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2), nn.LeakyReLU(0.2, True)]
            width *= 2
        self.net = nn.Sequential(*layers)
        self.out_channels = width

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def dcgan_init(module: nn.Module) -> None:
    """The DCGAN paper's initialisation: N(0, 0.02) convs, N(1, 0.02) batch-norm scales."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
