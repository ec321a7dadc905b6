"""The platform's digit classifier: deterministic training, caching, the accuracy bar, and fd_digitcnn wiring."""
import numpy as np
import pytest
import torch

from trainers.evaluation.classifier import DigitCNN, load_or_train_classifier, state_sha256, train_classifier
from trainers.data.loader import build_dataset
from trainers.evaluation.evaluator import Evaluator


def _xy(ds, n=None):
    idx = range(len(ds) if n is None else n)
    return torch.stack([ds[i][0] for i in idx]), torch.tensor([ds[i][1] for i in idx])


@pytest.fixture(scope="module")
def digits():
    tr, te = (build_dataset("digits", image_size=8, split=s) for s in ("train", "test"))
    return (*_xy(tr, 600), *_xy(te))


def test_training_is_deterministic_and_learns(digits):
    a, acc_a = train_classifier(*digits, epochs=3, seed=1)
    b, acc_b = train_classifier(*digits, epochs=3, seed=1)
    assert state_sha256(a) == state_sha256(b) and acc_a == acc_b
    assert acc_a > 0.85  # 600 images, 3 epochs; chance is 0.1
    logits = a(digits[2])
    assert np.isclose(acc_a, float((logits.argmax(1) == digits[3]).float().mean()))
    assert a.features(digits[2][:5]).shape == (5, 128)


def test_cache_hit_returns_the_same_network_and_refusal_below_the_bar(digits, tmp_path):
    m1, info1 = load_or_train_classifier(*digits, tmp_path, dataset_name="digits", epochs=3, min_accuracy=0.5)
    m2, info2 = load_or_train_classifier(*digits, tmp_path, dataset_name="digits", epochs=3, min_accuracy=0.5)
    assert (info1["cache_hit"], info2["cache_hit"]) == (False, True)
    assert info1["weights_sha256"] == info2["weights_sha256"] and info1["accuracy"] == info2["accuracy"]
    with pytest.raises(ValueError, match=r"reaches 0\.\d+ held-out accuracy, below min_accuracy=1.01"):
        load_or_train_classifier(*digits, tmp_path, dataset_name="digits", epochs=3, min_accuracy=1.01)


def test_bad_inputs_are_named(digits):
    x, y = digits[0], digits[1]
    with pytest.raises(ValueError, match="train labels must be a LongTensor"):
        train_classifier(x, y.int(), *digits[2:])
    with pytest.raises(ValueError, match="test images must be a float tensor"):
        train_classifier(x, y, digits[2].to(torch.uint8), digits[3])


def test_any_input_size_gives_128_features():
    net = DigitCNN()
    for size in (8, 16, 32, 64):
        assert net.features(torch.zeros(2, 1, size, size)).shape == (2, 128)


def test_evaluator_classifier_metrics_on_digits(tmp_path):
    test = build_dataset("digits", image_size=8, split="test")
    ev = Evaluator(("classifier",), test, 100, 50, "cpu", tmp_path, classifier_epochs=3,
                   classifier_min_accuracy=0.8)
    ev.prepare()
    x, y = _xy(test)
    real = ev.evaluate_batches([(x[:100], y[:100])], 100)
    noise = ev.evaluate_batches([(torch.rand(100, 1, 8, 8) * 2 - 1, y[:100])], 100)
    m = real.metrics
    assert m["cls_accuracy_digitcnn"] >= 0.8
    # real digits: labels agree about as often as the held-out accuracy, FD is near the floor
    assert m["cls_label_acc_digitcnn"] > 0.75 and m["fd_digitcnn"] < 2 * m["fd_digitcnn_floor"]
    assert noise.metrics["fd_digitcnn"] > 3 * m["fd_digitcnn"]
    assert m["cls_score_digitcnn"] > noise.metrics["cls_score_digitcnn"]
    assert real.provenance["fd_digitcnn"]["floor_source"] == "other split (train)"


@pytest.mark.slow
def test_mnist_classifier_clears_the_97_percent_bar(tmp_path):
    test = build_dataset("mnist", image_size=32, split="test")
    ev = Evaluator(("classifier",), test, 500, 250, "cpu", tmp_path)
    ev.prepare()  # raises if the held-out accuracy is below 0.97
    assert ev.extractors.classifier_info["accuracy"] >= 0.97
