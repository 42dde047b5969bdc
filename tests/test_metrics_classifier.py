"""The classifier judge: near its ceiling on held-out real digits, at its floor on noise."""

import math

import numpy as np
import pytest
import torch

from ebmkit import create_dataset
from ebmkit.errors import ConfigError
from ebmkit.metrics import classifier as cm
from ebmkit.metrics.classifier import ClassifierJudge, DomainClassifier, train_classifier


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    return ClassifierJudge.for_dataset("digits", cache=tmp_path_factory.mktemp("classifiers"), image_size=8)


def test_labels_follow_the_images_split():
    source = create_dataset("digits", image_size=8)
    for split in ("train", "test"):
        images, labels = source.load(split).data, source.labels(split)
        assert labels.shape == (images.shape[0],)
    # the split is the images' own: the first test image is sklearn's image with that label
    from sklearn.datasets import load_digits

    raw = load_digits()
    first = source.load("test").data[0]
    match = [i for i in range(len(raw.images)) if np.allclose(raw.images[i] / 16 * 2 - 1, first[0].numpy(), atol=1e-6)]
    assert raw.target[match[0]] == int(source.labels("test")[0])


def test_held_out_digits_score_near_the_ceiling_and_noise_at_the_floor(judge):
    real = create_dataset("digits", image_size=8).load("test").data
    held_out = judge.score(real)
    assert held_out.recognisable >= 0.85
    assert held_out.coverage >= 0.95
    noise = judge.score(torch.rand(300, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    assert noise.recognisable <= 0.02
    assert noise.fd > 20 * held_out.fd
    report = judge.report(real)
    assert report["ceiling_recognisable"] == pytest.approx(held_out.recognisable)
    assert report["floor_recognisable"] <= 0.02


def test_coverage_is_normalised_label_entropy(judge):
    real = create_dataset("digits", image_size=8).load("test").data
    labels = create_dataset("digits", image_size=8).labels("test")
    ones = real[labels == 1]
    assert judge.score(ones).coverage < 0.2  # one class (almost always predicted as 1)
    # two classes in equal numbers: entropy log 2 over log 10
    two = torch.cat([real[labels == 0][:15], real[labels == 7][:15]])
    assert judge.score(two).coverage == pytest.approx(math.log(2) / math.log(10), abs=0.05)


def test_frechet_distance_against_the_training_set_is_near_zero_for_the_training_set(judge):
    train = create_dataset("digits", image_size=8).load("train").data
    assert judge.score(train).fd < 1e-6


def test_training_is_deterministic():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 8, 8, generator=g) * 2 - 1
    y = torch.randint(0, 3, (64,), generator=g)
    a = train_classifier(x, y, epochs=2, seed=3)
    b = train_classifier(x, y, epochs=2, seed=3)
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka


def test_cached_classifier_is_loaded_not_retrained(tmp_path, monkeypatch):
    calls = []
    real_train = cm.train_classifier

    def counting(*a, **kw):
        calls.append(1)
        return real_train(*a, **{**kw, "epochs": 1})

    monkeypatch.setattr(cm, "train_classifier", counting)
    first = ClassifierJudge.for_dataset("digits", cache=tmp_path, image_size=8)
    second = ClassifierJudge.for_dataset("digits", cache=tmp_path, image_size=8)
    assert len(calls) == 1 and len(list(tmp_path.glob("*.safetensors"))) == 1
    for (k, va), (_, vb) in zip(first.classifier.state_dict().items(), second.classifier.state_dict().items()):
        assert torch.equal(va, vb), k
    # a damaged cache file is retrained, never trusted
    next(tmp_path.glob("*.safetensors")).write_bytes(b"not a safetensors file")
    ClassifierJudge.for_dataset("digits", cache=tmp_path, image_size=8)
    assert len(calls) == 2


def test_unlabelled_dataset_and_wrong_shapes_are_clear_errors(judge):
    with pytest.raises(ConfigError, match="no labels"):
        ClassifierJudge.for_dataset("patches", image_size=8, count=20)
    with pytest.raises(ValueError, match="shape"):
        judge.score(torch.zeros(4, 1, 16, 16))
    with pytest.raises(ValueError, match="labels"):
        train_classifier(torch.zeros(4, 1, 8, 8), torch.zeros(3, dtype=torch.long))
    assert isinstance(judge.classifier, DomainClassifier)
