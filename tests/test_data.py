import pytest
import torch

import ebmkit
from ebmkit.data import BatchIndices, TensorImages, check_dataset, fit_size
from ebmkit.errors import DataError


@pytest.mark.parametrize("name,shape,n", [("digits", (1, 8, 8), 1797), ("mnist5k", (1, 32, 32), 5000)])
def test_shipped_datasets_scale_to_signed_unit(name, shape, n):
    src = ebmkit.create_dataset(name)
    train, test = src.load("train"), src.load("test")
    assert len(train) + len(test) == n
    assert check_dataset(train, name=name) == shape
    x = train.data
    assert x.min() >= -1 and x.max() <= 1 and x.min() == -1


def test_train_and_test_splits_are_disjoint():
    src = ebmkit.create_dataset("digits")
    a, b = src.load("train").data.flatten(1), src.load("test").data.flatten(1)
    d = torch.cdist(b, a).min(1).values
    assert (d > 0).float().mean() > 0.95  # digits has a handful of exact duplicates


def test_patches_are_colour_and_resized():
    ds = ebmkit.create_dataset("patches", count=40, image_size=16).load("train")
    assert ds.data.shape[1:] == (3, 16, 16)


def test_mnist5k_pads_to_32_with_background():
    x = ebmkit.create_dataset("mnist5k").load("train").data
    assert (x[:, :, :2, :] == -1).all()


def test_missing_torchvision_dataset_says_where_and_how(tmp_path):
    src = ebmkit.create_dataset("cifar10", root=str(tmp_path))
    with pytest.raises(DataError, match=f"not found under {tmp_path}.*download = true"):
        src.load("train")


def test_check_dataset_rejects_bad_range_and_layout():
    with pytest.raises(DataError, match=r"item 0 has values in \[0, 126\]; images must be scaled to \[-1, 1\]"):
        check_dataset(TensorImages(torch.linspace(0, 255, 2 * 48).view(2, 3, 4, 4)), name="raw")
    with pytest.raises(DataError, match="channels-last"):
        check_dataset(TensorImages(torch.zeros(2, 8, 8, 3)), name="hwc")
    with pytest.raises(DataError, match="expected"):
        check_dataset(TensorImages(torch.zeros(2, 1, 8, 8)), name="d", expect_shape=(3, 8, 8))


def test_batch_indices_depend_only_on_seed_and_iteration():
    a = BatchIndices(100, 10, seed=3)
    it = iter(a)
    first = [next(it) for _ in range(25)]
    b = BatchIndices(100, 10, seed=3, start=13)
    assert next(iter(b)) == first[13]
    epoch0 = sum(first[:10], [])
    assert sorted(epoch0) == list(range(100))


def test_batch_indices_shard_across_processes():
    r0, r1 = BatchIndices(40, 5, 0, rank=0, world=2), BatchIndices(40, 5, 0, rank=1, world=2)
    assert not set(r0.indices(0).tolist()) & set(r1.indices(0).tolist())


def test_fit_size_modes():
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    assert fit_size(x, 32, "pad").shape[-1] == 32
    assert fit_size(x, 16, "bilinear").shape[-1] == 16
    with pytest.raises(DataError):
        fit_size(x, 16, "pad")


def test_toys_have_exact_density():
    for name in ("gmm-circle", "rings"):
        src = ebmkit.create_dataset(name)
        x = src.load("train").data
        assert x.shape == (10_000, 2)
        # the density integrates to ~1 on a grid covering the support
        g = torch.linspace(-1.5, 1.5, 301)
        grid = torch.stack(torch.meshgrid(g, g, indexing="xy"), -1).view(-1, 2)
        mass = src.log_density(grid).exp().sum() * (g[1] - g[0]) ** 2
        assert abs(mass.item() - 1) < 0.02, name
