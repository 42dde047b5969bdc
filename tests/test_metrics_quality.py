"""Inception Score from probabilities; MSE, PSNR and SSIM."""

import math

import numpy as np
import pytest
import torch

from ebmkit.metrics import inception_score, mse_per_pixel, psnr, reconstruction_quality, ssim


def test_inception_score_closed_forms():
    assert inception_score(np.full((20, 5), 0.2), splits=2) == pytest.approx((1.0, 0.0))
    one_hot = np.eye(4)[np.arange(40) % 4]  # confident, spread evenly over 4 classes
    mean, sd = inception_score(one_hot, splits=2)  # 20 rows per split: 5 of each class
    assert mean == pytest.approx(4.0) and sd == pytest.approx(0.0, abs=1e-12)
    # two classes with p = (0.9, 0.1) and (0.1, 0.9) half the time: exp(KL) by hand
    p = np.array([[0.9, 0.1], [0.1, 0.9]] * 5)
    kl = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert inception_score(p, splits=1)[0] == pytest.approx(math.exp(kl))


def test_inception_score_rejects_bad_input():
    with pytest.raises(ValueError, match="sum to 1"):
        inception_score(np.ones((4, 3)))
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.full((3, 2), 0.5), splits=5)


def test_mse_and_psnr_by_hand():
    x = torch.zeros(2, 1, 4, 4)
    y = x.clone()
    y[0] += 0.5  # image 0: error 0.25 per pixel; image 1: perfect... PSNR infinite, so offset it too
    y[1] -= 0.1
    assert mse_per_pixel(x, y) == pytest.approx((0.25 + 0.01) / 2)
    expected = np.mean([10 * math.log10(4 / 0.25), 10 * math.log10(4 / 0.01)])  # data range 2
    assert psnr(x, y) == pytest.approx(expected, rel=1e-6)


def test_ssim_is_standard_ssim_on_the_unit_scale():
    # Flat grey 0 vs 0.1 on ebmkit's [-1, 1] scale is 0.5 vs 0.55 on [0, 1]: only the luminance term differs,
    # (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) with C1 = 0.01^2.  On the [-1, 1] scale with data range 2
    # the same pair scored 0.04 (C1 = 0.02^2, mu_a = 0): that was not standard SSIM.
    a, b = torch.zeros(1, 1, 8, 8), torch.full((1, 1, 8, 8), 0.1)
    c1 = 0.01**2
    assert ssim(a, b) == pytest.approx((2 * 0.5 * 0.55 + c1) / (0.5**2 + 0.55**2 + c1), rel=1e-6)
    assert ssim(a, b) > 0.99


def test_ssim_is_one_for_identical_images_and_drops_with_noise():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    assert ssim(x, x) == pytest.approx(1.0)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    noisier = (x + 1.0 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    assert ssim(x, noisier) < ssim(x, noisy) < 0.99
    q = reconstruction_quality(x, noisy)
    assert set(q) == {"mse", "psnr", "ssim"}
    assert ssim(x[:, :, :5, :5], x[:, :, :5, :5]) == pytest.approx(1.0)  # small images: smaller window


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match="differ in shape"):
        mse_per_pixel(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
