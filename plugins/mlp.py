"""A small MLP energy for vector data (the 2-D toys)."""

from __future__ import annotations

import math

from pydantic import Field, PositiveInt
from typing import Literal
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

import ebmkit
from ebmkit import BuildContext, Energy

ACTIVATIONS = {"silu": nn.SiLU, "elu": nn.ELU, "softplus": nn.Softplus, "leaky_relu": lambda: nn.LeakyReLU(0.2), "tanh": nn.Tanh}


class MLPEnergy(Energy):
    """MLP energy for vectors (B, D): hidden layers of equal width."""

    class Params(ebmkit.Params):
        hidden: PositiveInt = 128
        depth: PositiveInt = Field(3, description="number of hidden layers")
        activation: Literal["silu", "elu", "softplus", "leaky_relu", "tanh"] = "silu"
        spectral_norm: bool = Field(False, description="spectral normalisation of every linear layer (a stabiliser)")

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, activation: str = "silu", spectral_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        width = dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        if spectral_norm:  # each layer's largest singular value ~1: U is then Lipschitz
            layers = [_spectral_norm(m) if isinstance(m, nn.Linear) else m for m in layers]
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_params(cls, params: Params, context: BuildContext) -> "MLPEnergy":
        shape = context.require_shape("mlp")
        return cls(math.prod(shape), **params.model_dump())

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.flatten(1)).flatten()


@ebmkit.hookimpl
def ebmkit_energies():
    return {"mlp": MLPEnergy}
