"""FID and KID (through clean-fid) and the cache of real features."""

import numpy as np
import pytest
import torch

from ebmkit.metrics import FeatureStats, RealReference, frechet_distance, kernel_distance, real_features
from ebmkit.metrics.fid import real_features_key


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.5, 2, size=5), rng.uniform(0.5, 2, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(v1 + v2 - 2 * np.sqrt(v1 * v2))
    got = frechet_distance(FeatureStats(mu1, np.diag(v1), 10), FeatureStats(mu2, np.diag(v2), 10))
    assert got == pytest.approx(expected, rel=1e-8)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(400, 8))
    assert abs(frechet_distance(a, a)) < 1e-8
    small, large = (frechet_distance(a, a + s * rng.normal(size=a.shape)) for s in (0.1, 1.0))
    assert 0 < small < large


def kid_by_hand(x, y):
    """The unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, on all points."""
    d, m = x.shape[1], x.shape[0]
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    return ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.sum() / m**2


def test_kid_equals_the_unbiased_mmd_by_hand():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(12, 6)), rng.normal(0.5, 1, size=(12, 6))
    # one subset of the full size: a permutation of each set, so the estimate is exact
    assert kernel_distance(x, y, num_subsets=1, max_subset_size=12) == pytest.approx(kid_by_hand(x, y), rel=1e-9)


def test_kid_is_unbiased_on_sets_from_one_distribution_while_fid_is_not():
    rng = np.random.default_rng(3)
    kids, fids = [], []
    for _ in range(30):
        a, b = rng.normal(size=(50, 16)), rng.normal(size=(50, 16))
        kids.append(kernel_distance(a, b, num_subsets=5))
        fids.append(frechet_distance(a, b))
    kids = np.array(kids)
    assert abs(kids.mean()) < 3 * kids.std(ddof=1) / np.sqrt(len(kids))  # mean 0 within its standard error
    assert (kids < 0).any()  # unbiased estimates of 0 fall on both sides
    assert min(fids) > 0.5  # FID at n=50 is biased far above its true value 0
    shifted = kernel_distance(rng.normal(size=(50, 16)), rng.normal(0.5, 1, size=(50, 16)), num_subsets=5)
    assert shifted > kids.mean() + 5 * kids.std(ddof=1)


def test_kid_is_reproducible_and_leaves_numpy_state_alone():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    assert kernel_distance(a, b, num_subsets=3, max_subset_size=10, seed=7) == kernel_distance(a, b, num_subsets=3, max_subset_size=10, seed=7)
    assert (np.random.get_state()[1] == before).all()


def test_bad_features_are_named():
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.array([[0.0, np.nan], [1.0, 2.0]]), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        kernel_distance(np.zeros(5), np.zeros((5, 1)))


class CountingExtractor:
    def __init__(self):
        self.calls = 0

    def __call__(self, images, progress=False, desc=""):
        self.calls += 1
        return images.flatten(1).double().numpy()[:, :4]


def test_real_features_are_cached_by_dataset_split_resolution_and_count(tmp_path):
    data = torch.randn(20, 1, 2, 2)
    ex = CountingExtractor()
    kw = dict(split="train", resolution=2, network_id="abc", folder=tmp_path)
    first = real_features("toy", data, ex, n=10, **kw)
    again = real_features("toy", lambda: pytest.fail("the cache should have been used"), ex, n=10, **kw)
    assert ex.calls == 1 and np.allclose(first, again)
    # a smaller count is the head of the same seeded permutation: read from the larger file
    head = real_features("toy", lambda: pytest.fail("a larger cached set covers n=4"), ex, n=4, **kw)
    assert np.allclose(head, first[:4])
    # another split or resolution is another file
    real_features("toy", data, ex, n=10, split="test", resolution=2, network_id="abc", folder=tmp_path)
    assert ex.calls == 2
    assert len({real_features_key("toy", "train", 32, 10, "abc"), real_features_key("toy", "train", 64, 10, "abc"),
                real_features_key("toy", "train", 32, 10, "abc", params={"limit": 5})}) == 3


def test_real_reference_floor_and_score():
    rng = np.random.default_rng(5)
    ref = RealReference.from_features(rng.normal(size=(200, 4)))
    assert ref.reference.shape == ref.holdout.shape == (100, 4)
    floor = ref.floor(100)
    assert ref.floor(100) == floor and len(ref._floors) == 1  # computed once per sample count
    far = ref.score(rng.normal(3.0, 1.0, size=(100, 4)))
    assert 0 <= floor["fid"] < far["fid"] and far["n"] == 100
    assert far["fid"] == pytest.approx(frechet_distance(rng.normal(3.0, 1.0, size=(100, 4)), ref.reference), rel=0.5)
