"""Your own data from an array file: ``.npy``, ``.npz`` or ``.safetensors``.

    [data]
    name = "array-file"
    path = "faces.npy"        # (N, C, H, W) images, (N, H, W) grey images or (N, D) vectors
    layout = "NHWC"           # if the channels come last
    value_range = [0, 255]    # the stored range, mapped linearly onto [-1, 1]

Files are read without pickle (``numpy.load(allow_pickle=False)``,
safetensors), so a data file cannot run code.  The values are checked after
loading: images outside [-1, 1] (a forgotten ``value_range``), a channels-last
array read as channels-first, or a shape that does not match ``channels`` /
``image_size`` stop the run with a message naming the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

import ebmkit
from ebmkit import DataSource
from ebmkit.data import TensorImages, fit_size, load_array, set_channels, split_tensor
from ebmkit.errors import DataError
from ebmkit_plugins.image_datasets import ImageParams


class ArrayFile(DataSource):
    """Images or vectors from a .npy / .npz / .safetensors file (read without pickle)."""

    class Params(ImageParams):
        path: Path = Field(..., description="the .npy, .npz or .safetensors file")
        key: str | None = Field(None, description="array name inside a .npz / .safetensors file (default: the only one)")
        layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="where image channels are stored")
        value_range: tuple[float, float] = Field((-1.0, 1.0), description="range of the stored values, mapped onto [-1, 1]")
        test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share held out as the test split")

        @model_validator(mode="after")
        def _ordered(self):
            if not self.value_range[0] < self.value_range[1]:
                raise ValueError(f"value_range must be [low, high] with low < high, got {list(self.value_range)}")
            return self

    def __init__(self, path, key=None, layout="NCHW", value_range=(-1.0, 1.0), test_fraction=0.1,
                 image_size=None, channels=None, resize="bilinear", limit=None):
        self.path, self.key, self.layout = Path(path).expanduser(), key, layout
        self.value_range, self.test_fraction = tuple(value_range), test_fraction
        self.image_size, self.channels, self.resize, self.limit = image_size, channels, resize, limit

    def _read(self) -> np.ndarray:
        return load_array(self.path, key=self.key, what="dataset 'array-file'",
                          suffixes=(".npy", ".npz", ".safetensors")).numpy()

    def load(self, split: str = "train") -> TensorImages:
        raw = self._read()
        if not np.issubdtype(raw.dtype, np.number) or raw.ndim not in (2, 3, 4):
            raise DataError(f"dataset 'array-file': {self.path} holds a {raw.dtype} array of shape {raw.shape}; "
                            "expected numbers shaped (N, C, H, W), (N, H, W) or (N, D)")
        data = torch.from_numpy(np.ascontiguousarray(raw)).float()
        if self.limit:
            data = data[: self.limit]
        if data.numel():  # every item, named by its place in the file (before the train / test split)
            finite = torch.isfinite(data.reshape(data.shape[0], -1)).all(1)
            if not finite.all():
                bad = (~finite).nonzero().flatten()
                raise DataError(f"dataset 'array-file': item {int(bad[0])} of {self.path} has non-finite values (NaN or "
                                f"infinity)" + (f"; {len(bad)} items have them" if len(bad) > 1 else ""))
        low, high = self.value_range
        if (low, high) != (-1.0, 1.0):
            data = (data - low) / (high - low) * 2.0 - 1.0
        if data.dim() >= 3 and data.numel():
            # Checked before resizing, which would clamp the evidence away.
            lo, hi = float(data.min()), float(data.max())
            if lo < -1.0001 or hi > 1.0001:
                raise DataError(
                    f"dataset 'array-file': after mapping value_range {list(self.value_range)} onto [-1, 1] the images "
                    f"span [{lo:.4g}, {hi:.4g}]; images must lie in [-1, 1]. The file's values span "
                    f"[{float(raw.min()):.4g}, {float(raw.max()):.4g}]: set data.value_range to the range they are stored in"
                )
        if data.dim() == 3:
            data = data.unsqueeze(1)
        elif data.dim() == 4 and self.layout == "NHWC":
            data = data.permute(0, 3, 1, 2).contiguous()
        elif data.dim() == 4 and data.shape[1] not in (1, 3, 4) and data.shape[-1] in (1, 3, 4):
            # Caught before resizing, which would otherwise turn (H, W, C) into a plausible square.
            raise DataError(f"dataset 'array-file': {self.path} holds images of shape {tuple(raw.shape[1:])}, which look "
                            "channels-last; set data.layout = \"NHWC\"")
        if data.dim() == 4:
            data = set_channels(data, self.channels)
            if self.image_size:
                data = fit_size(data, self.image_size, self.resize)
        elif self.image_size or self.channels:
            raise DataError(f"dataset 'array-file': {self.path} holds vectors of shape {tuple(raw.shape)}; "
                            "image_size and channels apply to images only")
        return TensorImages(split_tensor(data, split, self.test_fraction))


@ebmkit.hookimpl
def ebmkit_datasets():
    return {"array-file": ArrayFile}
