"""Sample quality judged by a classifier of the data's own classes.

Inception FID on 8x8-32x32 grey digits with a few hundred samples sits on a
real-vs-real floor of 19-46 and moves little between poor and good models.
On labelled small-image data a classifier trained on the data itself is the
sharper judge (docs/metrics.md).  For a set of samples it reports:

* ``recognisable``: the share whose top class probability is at least 0.9;
* ``coverage``: entropy of the predicted labels over log(number of classes)
  (1: every class equally often; 0: one class only);
* ``fd``: the Fréchet distance between the samples and the training images
  in the classifier's feature space (its last hidden layer).

Each comes with a *ceiling* (held-out real images of the same count) and a
*floor* (uniform noise on [-1, 1]), so a number always has its scale beside it.

The classifier is a small ConvNet trained in seconds on the CPU,
deterministically (fixed seed, one thread), and cached on disk like the FID
statistics.  Classifiers trained only on data are over-confident on inputs
unlike any training image (a plain one called 12% of uniform noise a digit
with probability >= 0.9); trained with *outlier exposure* (Hendrycks,
Mazeika and Dietterich, ICLR 2019: cross-entropy to the uniform label
distribution on noise images) it calls 0% of noise and of blurred noise
confident while keeping 98% test accuracy on digits, so "recognisable"
means recognisable.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fid import FeatureStats, frechet_distance

CACHE_ENV = "EBMKIT_CLASSIFIER_CACHE"
CONFIDENT = 0.9
"""Top class probability at or above which a sample counts as recognisable."""
_VERSION = 1  # bump when the network or its training changes: old cache files are then ignored


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "ebmkit" / "classifiers")).expanduser()


class DomainClassifier(nn.Module):
    """Three 3x3 convolutions (two of stride 2), global average pooling to a
    ``2 * width`` feature vector, a linear layer to the class logits.  Works
    for any image size of at least 4x4."""

    def __init__(self, channels: int, classes: int, width: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


@contextmanager
def _one_thread() -> Iterator[None]:
    """Training on one thread makes the classifier the same bit for bit on any CPU count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def outlier_images(n: int, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Images no class should claim: uniform noise and blurred noise (blobs), n of each."""
    noise = torch.rand(n, *shape, generator=generator) * 2 - 1
    blobs = F.avg_pool2d(torch.rand(n, *shape, generator=generator) * 2 - 1, 3, 1, 1) * 3
    return torch.cat([noise, blobs.clamp(-1, 1)])


def train_classifier(images: Tensor, labels: Tensor, *, classes: int | None = None, epochs: int = 30, batch_size: int = 64,
                     lr: float = 2e-3, outlier_weight: float = 0.5, seed: int = 0) -> DomainClassifier:
    """Train a :class:`DomainClassifier` on ``images`` (N, C, H, W) in [-1, 1]
    with integer ``labels``; deterministic for a given seed.  Each batch also
    shows a quarter as many outlier images, pushed to the uniform label
    distribution with weight ``outlier_weight`` (outlier exposure)."""
    if images.dim() != 4:
        raise ValueError(f"the domain classifier needs images (N, C, H, W), got shape {tuple(images.shape)}")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match {images.shape[0]} images")
    classes = classes or int(labels.max()) + 1
    images, labels = images.detach().float().cpu(), labels.detach().long().cpu()
    with _one_thread():
        torch.manual_seed(seed)
        net = DomainClassifier(images.shape[1], classes)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        g = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=g)
            for i in range(0, len(order), batch_size):
                b = order[i : i + batch_size]
                outliers = outlier_images(max(1, len(b) // 8), tuple(images.shape[1:]), g)
                loss = F.cross_entropy(net(images[b]), labels[b])
                loss = loss - outlier_weight * F.log_softmax(net(outliers), dim=1).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
    return net.eval()


@dataclass(frozen=True)
class ClassifierScores:
    """The three numbers for one set of images."""

    recognisable: float
    coverage: float
    fd: float
    n: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}recognisable": self.recognisable, f"{prefix}coverage": self.coverage, f"{prefix}fd": self.fd}


class ClassifierJudge:
    """Scores sets of images against one labelled dataset.

    Build with :meth:`for_dataset` (trains or loads the cached classifier)
    or directly from a trained classifier and the real images."""

    def __init__(self, classifier: DomainClassifier, train_images: Tensor, test_images: Tensor, *, name: str = "data") -> None:
        self.classifier = classifier.eval()
        self.name = name
        self.classes = classifier.head.out_features
        self.shape = tuple(train_images.shape[1:])
        self.test_images = test_images
        self.reference = FeatureStats.of(self._features_and_probs(train_images)[0])
        self._bounds: dict[int, dict[str, ClassifierScores]] = {}

    # -- scoring -----------------------------------------------------------------
    @torch.no_grad()
    def _features_and_probs(self, images: Tensor, batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = [], []
        for i in range(0, images.shape[0], batch):
            x = images[i : i + batch].detach().float().cpu().clamp(-1, 1)
            f = self.classifier.features(x)
            feats.append(f.double().numpy())
            probs.append(F.softmax(self.classifier.head(f), dim=1).double().numpy())
        return np.concatenate(feats), np.concatenate(probs)

    def score(self, images: Tensor) -> ClassifierScores:
        """Recognisable share, class coverage and Fréchet distance of ``images``
        (N, C, H, W) in [-1, 1] (values outside are clamped)."""
        if tuple(images.shape[1:]) != self.shape:
            raise ValueError(f"the {self.name} classifier judges images of shape {self.shape}, got {tuple(images.shape[1:])}")
        if images.shape[0] < 2:
            raise ValueError("scoring needs at least 2 images (the Fréchet distance needs a covariance)")
        feats, probs = self._features_and_probs(images)
        counts = np.bincount(probs.argmax(1), minlength=self.classes).astype(np.float64)
        share = counts[counts > 0] / counts.sum()
        # one class: every label is that class, so coverage is complete (and log(1) = 0 would divide by zero)
        coverage = float(-(share * np.log(share)).sum() / math.log(self.classes)) if self.classes > 1 else 1.0
        with warnings.catch_warnings():
            # dead ReLU features make a covariance singular; clean-fid then offsets it, as it says
            warnings.filterwarnings("ignore", message="Matrix is singular")
            fd = frechet_distance(feats, self.reference)
        return ClassifierScores(
            recognisable=float((probs.max(1) >= CONFIDENT).mean()),
            coverage=coverage + 0.0,  # -0.0 -> 0.0 for a single class
            fd=fd,
            n=int(images.shape[0]),
        )

    def bounds(self, n: int) -> dict[str, ClassifierScores]:
        """``ceiling``: held-out real images (at most n of them); ``floor``:
        n images of uniform noise (seeded)."""
        if n not in self._bounds:
            noise = torch.rand(n, *self.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
            self._bounds[n] = {"ceiling": self.score(self.test_images[:n]), "floor": self.score(noise)}
        return self._bounds[n]

    def report(self, images: Tensor) -> dict[str, float]:
        """The scores of ``images`` with the ceiling and floor at the same count,
        as flat keys (``recognisable``, ``ceiling_recognisable``, ``floor_recognisable``, ...)."""
        out = self.score(images).as_dict()
        b = self.bounds(images.shape[0])
        out.update(b["ceiling"].as_dict("ceiling_"))
        out.update(b["floor"].as_dict("floor_"))
        out["n"] = images.shape[0]
        out["ceiling_n"] = b["ceiling"].n
        return out

    # -- construction --------------------------------------------------------------
    @classmethod
    def for_dataset(cls, name: str, /, registry: Any = None, cache: Path | None = None, **params: Any) -> "ClassifierJudge":
        """The judge for dataset ``name`` built with ``params`` (as in the
        config's ``[data]`` section): its ``train`` split with labels trains
        the classifier (or the cached one is loaded), its ``test`` split gives
        the ceiling.  The dataset must provide labels (``DataSource.labels``)."""
        from ..errors import ConfigError
        from ..registry import default_registry

        source = (registry or default_registry()).build("dataset", name, params)
        train_labels = source.labels("train")
        if train_labels is None:
            raise ConfigError(f"dataset '{name}' has no labels, so its samples cannot be judged by a classifier; "
                              f"classifier metrics need a labelled set such as 'digits' or 'mnist5k'")
        train = _stack(source.load("train"))
        test = _stack(source.load("test"))
        spec = {"dataset": name, "params": {k: v for k, v in sorted(params.items())}, "shape": list(train.shape[1:]),
                "n": train.shape[0], "version": _VERSION}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]
        path = Path(cache or cache_dir()) / f"{_safe(name)}-{key}.safetensors"
        classifier = load_classifier(path, train.shape[1])
        if classifier is None:
            classifier = train_classifier(train, train_labels)
            save_classifier(classifier, path, spec)
        return cls(classifier, train, test, name=name)


def _stack(dataset) -> Tensor:
    data = getattr(dataset, "data", None)
    if isinstance(data, Tensor):
        return data
    return torch.stack([dataset[i] for i in range(len(dataset))])


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def save_classifier(classifier: DomainClassifier, path: Path, spec: dict[str, Any]) -> None:
    """Write the weights with safetensors, atomically (a killed run leaves no half file)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    meta = {"spec": json.dumps(spec, default=str), "classes": str(classifier.head.out_features)}
    save_file({k: v.contiguous() for k, v in classifier.state_dict().items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_classifier(path: Path, channels: int) -> DomainClassifier | None:
    """The cached classifier at ``path``, or None when absent or unreadable."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as f:
            classes = int(f.metadata()["classes"])
        net = DomainClassifier(channels, classes)
        net.load_state_dict(load_file(str(path)))
    except Exception:  # a damaged cache file is retrained, never trusted
        return None
    return net.eval()
