"""Checking data items: shape, finiteness and range, naming the bad item.

In-memory sets (:class:`~ebmkit.data.TensorImages`) are checked whole before
training starts (:func:`check_tensor_items`), so a NaN in item 4,000 stops the
run before it begins instead of looking like a divergence at iteration 900.
Streamed sets (read item by item from disk) are probed before the start and
then checked batch by batch as they are read (:func:`collate_checked`,
:func:`raise_batch_problem`), naming the item -- and its file, where the
dataset can say (``item_name(i)``) -- and the iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset
from torch import Tensor

from .errors import DataError

TOLERANCE = 1e-4
"""Images may exceed [-1, 1] by this much (rounding of the scaling)."""


def range_hint() -> str:
    return "images must be scaled to [-1, 1] (e.g. x / 127.5 - 1 for 8-bit pixels)"


def item_label(dataset: Any, index: int) -> str:
    """'item 12' or 'item 12 (photos/cat.png)' when the dataset names its items."""
    name = getattr(dataset, "item_name", None)
    try:
        extra = name(index) if callable(name) else None
    except Exception:  # naming is a courtesy; never let it hide the real problem
        extra = None
    return f"item {index}" + (f" ({extra})" if extra else "")


def item_problem(item: Tensor, shape: tuple[int, ...] | None, images: bool) -> str | None:
    """What is wrong with one item, or None."""
    if shape is not None and tuple(item.shape) != tuple(shape):
        return f"has shape {tuple(item.shape)}, the others {tuple(shape)}"
    if not torch.isfinite(item).all():
        return "has non-finite values (NaN or infinity)"
    if images and item.numel():
        lo, hi = float(item.min()), float(item.max())
        if lo < -1 - TOLERANCE or hi > 1 + TOLERANCE:
            return f"has values in [{lo:.3g}, {hi:.3g}]; {range_hint()}"
    return None


def check_tensor_items(data: Tensor, *, name: str, dataset: Any = None) -> None:
    """Every item of an in-memory set ``(N, *shape)``: finite and, for images
    (``(C, H, W)`` items), in [-1, 1].  The error names the first bad item and
    how many there are."""
    if data.shape[0] == 0:
        return
    flat = data.detach().reshape(data.shape[0], -1)
    if not flat.is_floating_point():
        flat = flat.float()
    bad = ~torch.isfinite(flat).all(1)
    what = "non-finite values (NaN or infinity)"
    if not bad.any() and data.dim() >= 4:
        bad = (flat.amin(1) < -1 - TOLERANCE) | (flat.amax(1) > 1 + TOLERANCE)
        what = "values outside [-1, 1]"
    if bad.any():
        idx = bad.nonzero().flatten()
        first = int(idx[0])
        detail = item_problem(data[first], None, data.dim() >= 4) or what
        more = f"; {len(idx)} of the {data.shape[0]} items have {what}" if len(idx) > 1 else ""
        raise DataError(f"dataset '{name}': {item_label(dataset, first)} {detail}{more}")


# -- streamed sets: checked per batch ---------------------------------------------------


@dataclass
class BatchProblem:
    """What the checked collate found instead of a batch (raised in the main process,
    so that an error found in a loader worker reaches the user as one line)."""

    index: int
    message: str


class IndexedItems(Dataset):
    """Yields ``(index, item)``; an :class:`~ebmkit.errors.EbmkitError` raised
    while reading an item is passed on as a value, not raised in a worker."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        try:
            item = self.dataset[i]
        except DataError as exc:
            return i, BatchProblem(i, str(exc))
        return i, item[0] if isinstance(item, (tuple, list)) else item


class CheckedCollate:
    """Stacks ``(index, item)`` pairs into a batch after checking each item's
    type, shape, finiteness and (images) range; returns a :class:`BatchProblem`
    for the first bad one."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)

    def __call__(self, pairs: list[tuple[int, Any]]) -> Tensor | BatchProblem:
        images = len(self.shape) == 3
        for i, item in pairs:
            if isinstance(item, BatchProblem):
                return item
            if not isinstance(item, Tensor):
                return BatchProblem(i, f"is a {type(item).__name__}, not a tensor")
            problem = item_problem(item, self.shape, images)
            if problem:
                return BatchProblem(i, problem)
        return torch.stack([item for _, item in pairs])


def raise_batch_problem(problem: BatchProblem, *, dataset: Any, name: str, iteration: int) -> None:
    """The one-line error for a bad item found in the batch of ``iteration`` (counted from 1)."""
    message = problem.message
    if message.startswith("dataset '"):  # the dataset's own error already names itself
        raise DataError(f"{message} (found in the batch of iteration {iteration})")
    raise DataError(f"dataset '{name}': {item_label(dataset, problem.index)} {message} "
                    f"(found in the batch of iteration {iteration}); fix or remove it")
