"""The short-run paper's ConvNet energies (Nijkamp et al. 2019, Tables 6-8).

3x3 conv (nf) -> 4x4 stride-2 convs, channels doubling up to 8*nf, until the
map is 4x4 -> 4x4 conv to one number; LeakyReLU(0.2) after every hidden conv.
32 px: nf, 2nf, 4nf, 8nf (Table 6); 64 px: one more 8nf layer (Table 7);
128 px: two more (Table 8).  Any power-of-two size >= 8 and any channel count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

import ebmkit
from ebmkit import BuildContext, Energy


class ConvNetEnergy(Energy):
    """Paper ConvNet energy (Tables 6-8): 32/64/128 px, width nf."""

    channels_last_ok = True  # convs only; the output is flattened with reshape semantics

    class Params(ebmkit.Params):
        nf: PositiveInt = Field(64, description="base width; the paper uses 32, 64 or 128")
        negative_slope: float = Field(0.2, ge=0.0, description="LeakyReLU slope")
        spectral_norm: bool = Field(False, description="spectral normalisation of every conv (a stabiliser)")

    def __init__(self, channels: int, image_size: int, nf: int = 64, negative_slope: float = 0.2, spectral_norm: bool = False):
        super().__init__()
        if image_size < 8 or image_size & (image_size - 1):
            raise ValueError(f"convnet needs a power-of-two image size >= 8, got {image_size}")
        act = lambda: nn.LeakyReLU(negative_slope)  # noqa: E731
        layers: list[nn.Module] = [nn.Conv2d(channels, nf, 3, 1, 1), act()]
        width, size = nf, image_size
        while size > 4:
            out = min(width * 2, 8 * nf)
            layers += [nn.Conv2d(width, out, 4, 2, 1), act()]
            width, size = out, size // 2
        layers.append(nn.Conv2d(width, 1, 4, 1, 0))
        if spectral_norm:
            layers = [_sn(m) for m in layers]
        self.net = nn.Sequential(*layers)
        self.depth = int(math.log2(image_size // 4))
        self.negative_slope = negative_slope

    @classmethod
    def from_params(cls, params: Params, context: BuildContext) -> "ConvNetEnergy":
        shape = context.require_shape("convnet")
        if len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"convnet needs square images (C, H, H), got data shape {shape}")
        return cls(shape[0], shape[1], **params.model_dump())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).flatten()

    def input_grad_fn(self, like: Tensor) -> Callable[[Tensor], Tensor] | None:
        """grad_x sum U(x) written out layer by layer, for fp32 CPU chains.

        Why: a chain needs only the input gradient, with the weights fixed.
        Written out, the final 4x4 conv's gradient is its weight (no
        backward pass at all), each hidden conv is fused with its LeakyReLU
        (oneDNN post-op), the weights are put in the chain's memory format
        once per chain, and no autograd graph is built.  Anywhere else
        (GPU, autocast, other dtypes, spectral norm) it returns None and
        the sampler uses autograd.
        """
        if (like.device.type != "cpu" or like.dtype != torch.float32 or like.dim() != 4 or torch.is_autocast_enabled("cpu")):
            return None
        convs = [m for m in self.net if isinstance(m, nn.Conv2d)]
        if any(parametrize.is_parametrized(c) for c in convs):  # spectral norm: its weight is recomputed per call
            return None
        fmt = torch.channels_last if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous() \
            else torch.contiguous_format
        hidden = [(c.weight.detach().contiguous(memory_format=fmt), c.bias.detach(), c.stride, c.padding) for c in convs[:-1]]
        last = convs[-1].weight.detach()  # (1, C, 4, 4): dU/d(last hidden map), the same for every sample
        slope = self.negative_slope

        def gradient(x: Tensor) -> Tensor:
            maps = []
            h = x
            for w, b, stride, padding in hidden:
                h = _conv_leaky(h, w, b, stride, padding, slope)
                maps.append(h)
            g = last.expand(x.shape[0], -1, -1, -1)
            for i in range(len(hidden) - 1, -1, -1):
                w, _, stride, padding = hidden[i]
                g = torch.ops.aten.leaky_relu_backward(g, maps[i], slope, True)  # sign of the output = sign of the input
                g = torch.ops.aten.convolution_backward(g, maps[i - 1] if i else x, w, None, stride, padding, (1, 1),
                                                        False, (0, 0), 1, (True, False, False))[0]
            return g

        return gradient


def _conv_leaky(x: Tensor, w: Tensor, b: Tensor, stride, padding, slope: float) -> Tensor:
    """conv2d then LeakyReLU, in one oneDNN call where torch has it."""
    if _FUSED_CONV is not None:
        return _FUSED_CONV(x, w, b, list(padding), list(stride), [1, 1], 1, "leaky_relu", [slope], "")
    return F.leaky_relu_(F.conv2d(x, w, b, stride, padding), slope)


def _fused_conv():
    try:
        if torch.backends.mkldnn.is_available():
            return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        pass
    return None


_FUSED_CONV = _fused_conv()


def _sn(m: nn.Module) -> nn.Module:
    return spectral_norm(m) if isinstance(m, nn.Conv2d) else m


@ebmkit.hookimpl
def ebmkit_energies():
    return {"convnet": ConvNetEnergy}
