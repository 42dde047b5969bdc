"""Data plumbing shared by every dataset: scaling, checks and batch streams.

Every dataset yields tensors scaled to [-1, 1].  The named datasets themselves
are plug-ins (see ``ebmkit_plugins.image_datasets``).
"""

from __future__ import annotations

import pickle

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .errors import DataError


def to_signed_unit(images: Tensor, max_value: float = 255.0) -> Tensor:
    """Scale [0, max_value] to [-1, 1] as float32."""
    return images.float().div(max_value / 2.0).sub(1.0)


def fit_size(images: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    """Bring ``(N, C, H, W)`` images to ``size x size``.

    ``mode="pad"`` centres smaller images on a background of -1 (used for
    28x28 MNIST -> 32x32, as in the literature); otherwise interpolate.
    """
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if mode == "pad":
        if h > size or w > size:
            raise DataError(f"cannot pad {h}x{w} images to {size}x{size}; use resize = 'bilinear'")
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(images, (left, size - w - left, top, size - h - top), value=-1.0)
    antialias = mode in ("bilinear", "bicubic") and (h > size or w > size)
    return F.interpolate(images, size=(size, size), mode=mode, antialias=antialias, align_corners=False).clamp(-1, 1)


def set_channels(images: Tensor, channels: int | None) -> Tensor:
    """Grey -> RGB by repeating; RGB -> grey by the ITU-R 601 luma weights."""
    c = images.shape[1]
    if channels is None or channels == c:
        return images
    if c == 1 and channels == 3:
        return images.repeat(1, 3, 1, 1)
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
        return (images * w).sum(1, keepdim=True)
    raise DataError(f"cannot convert {c}-channel images to {channels} channels (data.channels = {channels})")


class TensorImages(Dataset):
    """An in-memory dataset: one float tensor ``(N, *shape)`` in [-1, 1]."""

    def __init__(self, data: Tensor) -> None:
        self.data = data.contiguous()

    def __len__(self) -> int:
        return self.data.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.data[i]


def split_tensor(data: Tensor, split: str, test_fraction: float, seed: int = 1234) -> Tensor:
    """Deterministic train / test split of an in-memory set."""
    if split not in ("train", "test", "all"):
        raise DataError(f"unknown split '{split}'; use 'train', 'test' or 'all'")
    if split == "all":
        return data
    perm = torch.randperm(data.shape[0], generator=torch.Generator().manual_seed(seed))
    n_test = max(1, int(round(test_fraction * data.shape[0])))
    idx = perm[:n_test] if split == "test" else perm[n_test:]
    return data[idx.sort().values]


def sample_shape(dataset: Dataset) -> tuple[int, ...]:
    item = dataset[0]
    if isinstance(item, (tuple, list)):
        item = item[0]
    if not isinstance(item, Tensor):
        raise DataError(f"dataset items must be tensors, got {type(item).__name__}")
    return tuple(item.shape)


def check_dataset(dataset: Dataset, *, name: str, expect_shape: tuple[int, ...] | None = None, probe: int = 64) -> tuple[int, ...]:
    """Check a dataset's items: tensors, finite, in [-1, 1] (images), one shape.

    An in-memory set (:class:`TensorImages`) is checked item by item, all of
    it; a streamed set is probed here (``probe`` items spread over it) and
    checked batch by batch as it is read (:func:`batch_stream`).  Returns the
    per-sample shape.  Errors name the dataset, the item and the problem.
    """
    from .data_checks import check_tensor_items, item_label, item_problem

    n = len(dataset)
    if n == 0:
        raise DataError(f"dataset '{name}' is empty")
    shape = sample_shape(dataset)
    if expect_shape is not None and tuple(expect_shape) != shape:
        raise DataError(f"dataset '{name}' yields samples of shape {shape}, expected {tuple(expect_shape)}")
    if isinstance(dataset, TensorImages):
        check_tensor_items(dataset.data, name=name, dataset=dataset)
    else:
        step = max(1, n // probe)
        for i in range(0, n, step):
            item = dataset[i]
            item = item[0] if isinstance(item, (tuple, list)) else item
            problem = item_problem(item, shape, len(shape) >= 3)
            if problem:
                raise DataError(f"dataset '{name}': {item_label(dataset, i)} {problem}")
    if len(shape) == 3 and shape[0] not in (1, 3, 4) and shape[-1] in (1, 3, 4):
        raise DataError(f"dataset '{name}': shape {shape} looks channels-last; ebmkit expects (C, H, W)")
    return shape


def check_declared_shape(shape: tuple[int, ...], declared: dict, *, name: str) -> None:
    """Images match the ``channels`` / ``image_size`` their config section
    declares (a dataset plug-in that ignores them is caught here, not by a
    shape error deep inside the energy)."""
    if len(shape) != 3:
        return
    channels, size = declared.get("channels"), declared.get("image_size")
    if channels is not None and shape[0] != channels:
        raise DataError(f"dataset '{name}' yields {shape[0]}-channel images (shape {shape}), but data.channels = {channels}")
    if size is not None and tuple(shape[1:]) != (size, size):
        raise DataError(f"dataset '{name}' yields {shape[1]}x{shape[2]} images (shape {shape}), but data.image_size = {size}")


class BatchIndices:
    """Deterministic batches of indices: batch ``i`` depends only on
    (seed, i), so a resumed run sees exactly the batches it would have seen.

    Each epoch is a fresh permutation; ``rank``/``world`` give each process of
    a data-parallel run its own disjoint share of every epoch.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world: int = 1) -> None:
        check_batch_size(n, batch_size, world)
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world = rank, world
        self.per_epoch = n // (batch_size * world)
        self.iteration = start

    def indices(self, iteration: int) -> Tensor:
        epoch, pos = divmod(iteration, self.per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        start = (pos * self.world + self.rank) * self.batch_size
        return perm[start : start + self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            yield self.indices(self.iteration).tolist()
            self.iteration += 1


def check_batch_size(n: int, batch_size: int, world: int = 1) -> None:
    """A batch (per process, times the processes) must fit in the dataset."""
    if batch_size * world > n:
        raise DataError(f"batch size {batch_size} x {world} process(es) is larger than the dataset ({n} items)")


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT / SIGTERM to the main process, which stops
    after the current iteration (ebmkit.interrupts); a worker that died on
    Ctrl-C would break that iteration."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def batch_stream(
    dataset: Dataset, batch_size: int, *, seed: int, start: int = 0, num_workers: int = 0, rank: int = 0, world: int = 1,
    name: str = "dataset", shape: tuple[int, ...] | None = None,
) -> Iterator[Tensor]:
    """An endless stream of batches, starting at iteration ``start``.

    A streamed set's items are checked as they are read (shape, finiteness,
    range): a bad one stops the run with a :class:`DataError` naming the item
    and the iteration (``name``: the dataset's name in that message)."""
    from .data_checks import CheckedCollate, IndexedItems, raise_batch_problem

    if isinstance(dataset, TensorImages):  # checked whole up front; skip the DataLoader's per-item collate
        sampler = BatchIndices(len(dataset), batch_size, seed, start, rank, world)
        return (dataset.data[torch.as_tensor(idx)] for idx in sampler)
    loader = DataLoader(
        IndexedItems(dataset),
        batch_sampler=BatchIndices(len(dataset), batch_size, seed, start, rank, world),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        collate_fn=CheckedCollate(shape or sample_shape(dataset)),
        worker_init_fn=_ignore_stop_signals,
    )

    def checked() -> Iterator[Tensor]:
        for iteration, batch in enumerate(loader, start + 1):
            if not isinstance(batch, Tensor):
                raise_batch_problem(batch, dataset=dataset, name=name, iteration=iteration)
            yield batch

    return checked()


def stack_items(dataset: Dataset, indices) -> Tensor:
    """The items of ``dataset`` at ``indices`` (ints or a tensor of them), stacked into one tensor."""
    return torch.stack([torch.as_tensor(dataset[int(i)]) for i in indices])


def random_batch(dataset: Dataset, n: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
    """``n`` items of ``dataset`` picked at random, stacked: the one helper for
    a chain start or a figure that reads data.  ``generator`` seeds the pick
    (``None``: torch's global RNG, e.g. inside a forked, seeded block)."""
    idx = torch.randperm(len(dataset), generator=generator)[:n]
    batch = stack_items(dataset, idx)
    return batch if device is None else batch.to(device)


def load_array(path: str | Path, *, key: str | None = None, what: str = "array file",
               suffixes: tuple[str, ...] = (".pt", ".npy", ".npz")) -> Tensor:
    """One tensor from an array file: ``.pt`` (tensors only, ``weights_only``),
    ``.npy`` / ``.npz`` (no pickle) or ``.safetensors``; in a file of several
    arrays ``key`` picks one (without it there must be exactly one).  The one
    loader behind image, mask and array-dataset files: errors start with
    ``what`` and name the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what}: file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise DataError(f"{what}: {path} is not a {', '.join(suffixes[:-1])} or {suffixes[-1]} file")
    try:
        if suffix == ".pt":
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        elif suffix == ".npy":
            loaded = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                loaded = {k: npz[k] for k in npz.files}
        else:
            from safetensors.torch import load_file

            loaded = load_file(path)
    except (OSError, ValueError, RuntimeError, EOFError, TypeError, pickle.UnpicklingError) as exc:  # pickles, truncated files
        raise DataError(f"{what}: cannot read {path}: {' '.join(str(exc).split())[:300]}") from None
    if isinstance(loaded, dict):
        loaded = _pick_array(loaded, key, path, what)
    if isinstance(loaded, np.ndarray):
        loaded = torch.from_numpy(loaded)
    if not isinstance(loaded, Tensor):
        raise DataError(f"{what}: {path} holds a {type(loaded).__name__}, not one array")
    return loaded


def _pick_array(arrays: dict, key: str | None, path: Path, what: str):
    if key is not None:
        if key not in arrays:
            raise DataError(f"{what}: {path} has no array '{key}'; it has {sorted(arrays)}")
        return arrays[key]
    if len(arrays) != 1:
        raise DataError(f"{what}: {path} holds {sorted(arrays)}; save exactly one array (or choose one by key)")
    return next(iter(arrays.values()))


def missing_dataset(name: str, root: Path, how: str) -> DataError:
    return DataError(f"dataset '{name}' not found under {root}. {how}")
