"""Evaluation metrics: sample quality (FID, KID, IS; and, on labelled small
images, a classifier of the data's own classes: recognisable share, class
coverage, Fréchet distance in its features), reconstruction (MSE, PSNR, SSIM)
and distances for the 2-D toys.  One module per metric family.

FID and KID go through clean-fid (its "clean" resizer and its statistics) on
an Inception network found on this machine: see :mod:`ebmkit.metrics.inception`.
"""

from .classifier import ClassifierJudge, ClassifierScores, DomainClassifier, train_classifier
from .fid import FeatureStats, RealReference, frechet_distance, kernel_distance, real_features
from .image_quality import mse_per_pixel, psnr, reconstruction_quality, ssim
from .inception import InceptionFeatures, InceptionUnavailable, MetricUnavailable, find_weights, load_inception
from .inception_score import inception_score

__all__ = [
    "ClassifierJudge", "ClassifierScores", "DomainClassifier", "train_classifier",
    "FeatureStats", "RealReference", "frechet_distance", "kernel_distance", "real_features",
    "mse_per_pixel", "psnr", "ssim", "reconstruction_quality",
    "InceptionFeatures", "InceptionUnavailable", "MetricUnavailable", "find_weights", "load_inception",
    "inception_score",
]
