"""Residual energies on any timm backbone, created without pretrained weights."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import Tensor, nn

import ebmkit
from ebmkit import BuildContext, Energy


def _group_norm(num_channels: int, **_: Any) -> nn.Module:
    return nn.GroupNorm(min(32, num_channels), num_channels)


NORMS = {"batch": None, "group": _group_norm, "none": lambda c, **_: nn.Identity()}


class TimmEnergy(Energy):
    """timm backbone (ResNet by default) + linear head to a scalar energy."""

    class Params(ebmkit.Params):
        backbone: str = Field("resnet18", description="any timm model name")
        norm: Literal["batch", "group", "none"] = Field(
            "group", description="normalisation layers; batch norm couples the samples of a chain, so it is not the default"
        )
        timm_kwargs: dict[str, Any] = Field(default_factory=dict, description="passed on to timm.create_model")

    def __init__(self, channels: int, backbone: str = "resnet18", norm: str = "group", timm_kwargs: dict | None = None):
        import timm  # here, not at module level: importing timm costs ~2 s of every CLI start

        super().__init__()
        kwargs = dict(timm_kwargs or {})
        if NORMS[norm] is not None:
            kwargs.setdefault("norm_layer", NORMS[norm])
        try:
            self.backbone = timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=channels, **kwargs)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise ValueError(f"timm energy: {exc}") from None
        self.head = nn.Linear(self.backbone.num_features, 1)

    @classmethod
    def from_params(cls, params: Params, context: BuildContext) -> "TimmEnergy":
        shape = context.require_shape("timm")
        if len(shape) != 3:
            raise ValueError(f"timm energy needs images (C, H, W), got data shape {shape}")
        return cls(shape[0], **params.model_dump())

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x)).flatten()


@ebmkit.hookimpl
def ebmkit_energies():
    return {"timm": TimmEnergy}
