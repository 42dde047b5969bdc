"""The real images a suite compares against: each split loaded once per run,
the Inception network loaded once, and the real features it yields cached on
disk (``ebmkit.metrics.real_features``).  Shared by every suite that scores
samples with FID / KID (comparison, cooperative)."""

from __future__ import annotations

from typing import Any

import torch

from ebmkit.errors import DataError

from .harness import RunContext


def images_of(dataset: Any, limit: int | None = None) -> torch.Tensor:
    """A dataset's items as one tensor (an in-memory set's own tensor when it has one)."""
    if hasattr(dataset, "data") and isinstance(dataset.data, torch.Tensor):
        data = dataset.data
        return data[:limit] if limit else data
    n = len(dataset) if limit is None else min(limit, len(dataset))
    return torch.stack([dataset[i] for i in range(n)])


def load_split(data: dict[str, Any], split: str) -> torch.Tensor:
    """One split of the dataset ``data`` (``{"name": ..., **params}``) as one tensor."""
    from ebmkit import create_dataset

    params = {k: v for k, v in data.items() if k != "name"}
    return images_of(create_dataset(data["name"], **params).load(split))


def load_data(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """The train and test splits of the dataset ``data``, once per run."""
    if "data" not in ctx.shared:
        params = {k: v for k, v in data.items() if k != "name"}
        train, test = load_split(data, "train"), load_split(data, "test")
        ctx.shared["data"] = {"train": train, "test": test, "shape": tuple(train.shape[1:]), "params": params}
        ctx.log(f"data: {data['name']} train {tuple(train.shape)}, test {tuple(test.shape)}")
    return ctx.shared["data"]


def extractor(ctx: RunContext, batch_size: int):
    """The Inception feature extractor, once per run, on ``ctx.shared["device"]`` (default the CPU)."""
    if "inception" not in ctx.shared:
        from ebmkit.metrics import InceptionFeatures

        ex = InceptionFeatures(ctx.shared.get("inception_path"), device=ctx.shared.get("device", "cpu"), batch_size=batch_size)
        ctx.shared["inception"] = ex
        ctx.log(f"inception: {ex.net.source} {ex.net.path} (id {ex.id}; classifier head: {'yes' if ex.net.head is not None else 'no'})")
    return ctx.shared["inception"]


def reference(ctx: RunContext, data: dict[str, Any], n: int, batch_size: int):
    """Real features of ``2 n`` training images: half to compare with, half for the real-vs-real floor (cached)."""
    if "reference" not in ctx.shared:
        from ebmkit.metrics import RealReference, real_features

        splits, ex = load_data(ctx, data), extractor(ctx, batch_size)
        if splits["train"].shape[0] < 2 * n:
            raise DataError(f"{data['name']}: the FID reference needs 2 x {n} training images (reference + floor), "
                            f"the split has {splits['train'].shape[0]}; lower n_fid")
        feats = real_features(data["name"], splits["train"], ex, split="train", resolution=splits["shape"][-1], n=2 * n,
                              network_id=ex.id, params=splits["params"], seed=0, progress=ctx.progress, log=ctx.log,
                              folder=ctx.shared.get("fid_cache"))
        ctx.shared["reference"] = RealReference.from_features(feats)
    return ctx.shared["reference"]
