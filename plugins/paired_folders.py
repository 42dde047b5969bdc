"""Paired image folders (pix2pix style, e.g. CMP Facades): condition and target images.

Two layouts are read:

* ``folders``: ``root/A/<split>/NAME`` and ``root/B/<split>/NAME``, paired by file name
  (the layout pix2pix's combine_A_and_B.py takes);
* ``side-by-side``: ``root/<split>/NAME``, each file holding A on the left half and B
  on the right (the layout of pix2pix's downloadable facades).

Each item packs the target's channels and then the condition's, ``(2C, S, S)``
in [-1, 1], so the trainer's batches stay plain tensors; the ``paired``
initializer and ``conditional-convnet`` (with ``target_channels = C``) split them.
For facades, A is the photo and B the label map: ``condition = "B"`` (the default)
learns labels -> photo.  The ``test`` split reads ``test/``, else ``val/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from torch.utils.data import Dataset

import ebmkit
from ebmkit import DataSource
from ebmkit.data import TensorImages, fit_size, missing_dataset, to_signed_unit
from ebmkit.errors import DataError

EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class PairedFolders(DataSource):
    """Paired A/B image folders (facades style); items pack target then condition channels."""

    class Params(ebmkit.Params):
        root: Path = Field(..., description="folder holding A/ and B/ (or train/, test/ side-by-side files)")
        layout: Literal["auto", "folders", "side-by-side"] = "auto"
        condition: Literal["A", "B"] = Field("B", description="which side is the condition (facades: B = labels)")
        image_size: PositiveInt = Field(64, description="side length after resizing")
        # not "channels": each item holds twice as many (data.channels would contradict the packed shape)
        image_channels: Literal[1, 3] = Field(3, description="channels of each image, A and B alike")
        limit: PositiveInt | None = Field(None, description="use only the first N pairs")

    def __init__(self, root, layout="auto", condition="B", image_size=64, image_channels=3, limit=None):
        self.root, self.layout, self.condition = Path(root).expanduser(), layout, condition
        self.image_size, self.channels, self.limit = image_size, image_channels, limit

    def _layout(self) -> str:
        if self.layout != "auto":
            return self.layout
        return "folders" if (self.root / "A").is_dir() and (self.root / "B").is_dir() else "side-by-side"

    def _split_dir(self, base: Path, split: str) -> Path:
        for name in ((split,) if split == "train" else (split, "val")):
            if (base / name).is_dir():
                return base / name
        raise missing_dataset("paired-folders", base, f"No '{split}' folder" + (" (nor 'val')" if split != "train" else "") + ".")

    def load(self, split: str = "train") -> Dataset:
        if not self.root.is_dir():
            raise missing_dataset("paired-folders", self.root, "Set root to a folder with A/ and B/ (or side-by-side train/ test/).")
        try:
            pairs = self._pairs(split)
        except (OSError, ValueError, SyntaxError) as exc:  # a corrupt or truncated image file
            raise DataError(f"dataset 'paired-folders': cannot read an image under {self.root}: {exc}") from None
        if not pairs:
            raise missing_dataset("paired-folders", self.root, f"No paired images ({', '.join(sorted(EXTS))}) for split '{split}'.")
        a = torch.stack([p[0] for p in pairs])
        b = torch.stack([p[1] for p in pairs])
        target, cond = (a, b) if self.condition == "B" else (b, a)
        return TensorImages(torch.cat([target, cond], 1))

    def _pairs(self, split: str) -> list:
        from PIL import Image

        mode = "L" if self.channels == 1 else "RGB"
        pairs = []
        if self._layout() == "folders":
            a_dir, b_dir = self._split_dir(self.root / "A", split), self._split_dir(self.root / "B", split)
            names = sorted(p.name for p in a_dir.iterdir() if p.suffix.lower() in EXTS and (b_dir / p.name).is_file())
            for name in names[: self.limit]:
                with Image.open(a_dir / name) as a, Image.open(b_dir / name) as b:
                    pairs.append((self._array(a.convert(mode)), self._array(b.convert(mode))))
        else:
            files = sorted(p for p in self._split_dir(self.root, split).iterdir() if p.suffix.lower() in EXTS)
            for path in files[: self.limit]:
                with Image.open(path) as im:
                    im = im.convert(mode)
                    w = im.width // 2
                    pairs.append((self._array(im.crop((0, 0, w, im.height))), self._array(im.crop((w, 0, 2 * w, im.height)))))
        return pairs

    def _array(self, im) -> torch.Tensor:
        t = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())
        t = t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)
        return fit_size(to_signed_unit(t).unsqueeze(0), self.image_size, "bilinear")[0]


@ebmkit.hookimpl
def ebmkit_datasets():
    return {"paired-folders": PairedFolders}
