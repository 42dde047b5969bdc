"""FID and KID through clean-fid's computation, and a cache of real-data features.

The distances are clean-fid's own functions on Inception features
(:class:`ebmkit.metrics.inception.InceptionFeatures`):

* FID: ``cleanfid.fid.frechet_distance`` on the features' mean and covariance
  (``np.mean``, ``np.cov(rowvar=False)``, as ``cleanfid.fid.fid_from_feats``).
* KID: ``cleanfid.fid.kernel_distance`` -- the unbiased MMD^2 estimate with the
  cubic polynomial kernel, averaged over random subsets -- run under a fixed
  NumPy seed so that it is reproducible.

FID is strongly biased at small sample sizes, so always read it beside the
real-vs-real floor (:func:`real_floor`); KID is unbiased.

Real features cost minutes on a CPU (about 0.1 s per image), so they are
cached by dataset, split, resolution, count and network in
``$EBMKIT_FID_CACHE`` (default ``~/.cache/ebmkit/fid-stats``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

CACHE_ENV = "EBMKIT_FID_CACHE"


@contextmanager
def numpy_seed(seed: int):
    """Seed NumPy's global generator (clean-fid's KID draws from it) and restore it after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@dataclass(frozen=True)
class FeatureStats:
    """Mean and covariance of a feature set, as clean-fid computes them."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def of(cls, feats: np.ndarray) -> "FeatureStats":
        feats = _check_features(feats, "features")
        if feats.shape[0] < 2:
            raise ValueError(f"FID needs at least 2 feature vectors, got {feats.shape[0]}")
        return cls(np.mean(feats, axis=0), np.cov(feats, rowvar=False), feats.shape[0])


def _check_features(feats: np.ndarray, what: str) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"{what} must be a (N, D) array, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError(f"{what} contain non-finite values")
    return feats


def frechet_distance(a: np.ndarray | FeatureStats, b: np.ndarray | FeatureStats) -> float:
    """FID between two feature sets (or their :class:`FeatureStats`), by clean-fid."""
    from cleanfid.fid import frechet_distance as cleanfid_frechet

    sa = a if isinstance(a, FeatureStats) else FeatureStats.of(a)
    sb = b if isinstance(b, FeatureStats) else FeatureStats.of(b)
    if sa.mu.shape != sb.mu.shape:
        raise ValueError(f"feature sizes differ: {sa.mu.shape[0]} vs {sb.mu.shape[0]}")
    return float(cleanfid_frechet(sa.mu, sa.sigma, sb.mu, sb.sigma))


def kernel_distance(a: np.ndarray, b: np.ndarray, *, num_subsets: int = 100, max_subset_size: int = 1000,
                    seed: int = 0) -> float:
    """KID (unbiased MMD^2, cubic polynomial kernel) by clean-fid, seeded.

    Each of ``num_subsets`` rounds draws ``m = min(len(a), len(b), max_subset_size)``
    vectors from each set without replacement.  Can be slightly negative when
    the two sets come from one distribution: that is what unbiased means.
    """
    from cleanfid.fid import kernel_distance as cleanfid_kid

    a, b = _check_features(a, "features a"), _check_features(b, "features b")
    if min(a.shape[0], b.shape[0]) < 2:
        raise ValueError("KID needs at least 2 feature vectors in each set")
    with numpy_seed(seed):
        return float(cleanfid_kid(a, b, num_subsets=num_subsets, max_subset_size=max_subset_size))


# -- real-data features, cached ------------------------------------------------------


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "ebmkit" / "fid-stats")).expanduser()


def real_features_key(dataset: str, split: str, resolution: int | str, n: int, network_id: str,
                      params: dict[str, Any] | None = None, seed: int = 0) -> str:
    """File name (without suffix) of one cached real feature set."""
    extra = hashlib.sha256(json.dumps(params or {}, sort_keys=True, default=str).encode()).hexdigest()[:8]
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in dataset)
    return f"{safe}-{split}-{resolution}px-n{n}-seed{seed}-{extra}-inception{network_id}"


def real_features(
    dataset: str,
    images: Callable[[], torch.Tensor] | torch.Tensor,
    extractor: Callable[..., np.ndarray],
    *,
    split: str,
    resolution: int | str,
    n: int,
    network_id: str,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    folder: Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Inception features of ``n`` real images, from the cache or computed once.

    ``images`` is the split as a tensor (or a function returning it, called
    only on a cache miss); a seeded permutation picks the ``n`` images, so
    the cached set is reproducible.  The file also stores their mean and
    covariance (``mu``, ``sigma``) for use outside ebmkit.
    """
    folder = Path(folder) if folder is not None else cache_dir()
    key = real_features_key(dataset, split, resolution, n, network_id, params, seed)
    path = folder / f"{key}.npz"
    cached = _cached_superset(folder, key, n)
    if cached is not None:
        with np.load(cached) as f:
            feats = f["feats"][:n].astype(np.float64)
        if feats.shape[0] == n:
            if log:
                log(f"real features: cached {cached}" + ("" if cached == path else f" (its first {n})"))
            return feats
    data = images() if callable(images) else images
    if data.shape[0] < n:
        raise ValueError(f"{dataset} ({split}) has {data.shape[0]} images; {n} were asked for")
    idx = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    if log:
        log(f"real features: computing {n} images of {dataset} ({split}, {resolution}px) -> {path}")
    feats = extractor(data[idx], progress=progress, desc=f"inception {dataset}/{split}")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, feats=feats.astype(np.float32), mu=np.mean(feats, 0), sigma=np.cov(feats, rowvar=False))
    os.replace(tmp, path)
    return np.load(path)["feats"].astype(np.float64)


def _cached_superset(folder: Path, key: str, n: int) -> Path | None:
    """The cached file for ``key``, or one with more images of the same set.

    The images are the first n of one seeded permutation, so the first n
    rows of a larger cached set are exactly the features asked for.
    """
    exact = folder / f"{key}.npz"
    if exact.is_file():
        return exact
    head, tail = key.split(f"-n{n}-", 1)
    best: tuple[int, Path] | None = None
    for p in folder.glob(f"{head}-n*-{tail}.npz"):
        middle = p.name[len(head) + 2 : -len(tail) - 5]
        if middle.isdigit() and int(middle) >= n and (best is None or int(middle) < best[0]):
            best = (int(middle), p)
    return best[1] if best else None


@dataclass(frozen=True)
class RealReference:
    """Real features split in two disjoint halves of equal size: ``reference``
    (what generated samples are compared with) and ``holdout`` (real images
    compared with the reference: the floor)."""

    reference: np.ndarray
    holdout: np.ndarray
    _floors: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_features(cls, feats: np.ndarray) -> "RealReference":
        half = feats.shape[0] // 2
        return cls(feats[:half], feats[half : 2 * half])

    def floor(self, n: int | None = None, *, kid_subsets: int = 100, seed: int = 0) -> dict[str, float]:
        """FID and KID of ``n`` held-out real images against the reference:
        the best any generator can score with ``n`` samples."""
        n = min(n or self.holdout.shape[0], self.holdout.shape[0])
        key = (n, kid_subsets, seed)
        if key not in self._floors:  # a 2048x2048 matrix square root: minutes on a busy CPU, so once per n
            ref = self.reference[:n]
            self._floors[key] = {
                "fid": frechet_distance(self.holdout[:n], ref),
                "kid": kernel_distance(self.holdout[:n], ref, num_subsets=kid_subsets, seed=seed),
                "n": n,
            }
        return dict(self._floors[key])

    def score(self, feats: np.ndarray, *, kid_subsets: int = 100, seed: int = 0) -> dict[str, float]:
        """FID and KID of generated features against as many reference images."""
        n = min(feats.shape[0], self.reference.shape[0])
        ref = self.reference[:n]
        return {
            "fid": frechet_distance(feats[:n], ref),
            "kid": kernel_distance(feats[:n], ref, num_subsets=kid_subsets, seed=seed),
            "n": n,
        }
