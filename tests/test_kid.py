"""KID (trainers/evaluation/kid.py) against torch-fidelity's estimator, a brute-force double sum, and its unbiasedness."""
import numpy as np
import pytest
import torch

from trainers.evaluation.kid import kernel_distance, mmd2_unbiased


def _brute_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    m, d = x.shape
    k = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_one_subset_equals_the_double_sum():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(0.3, 1.2, size=(12, 5))
    assert mmd2_unbiased(x, y) == pytest.approx(_brute_mmd2(x, y), rel=1e-12)


def test_matches_torch_fidelity():
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    g = torch.Generator().manual_seed(1)
    f1 = torch.randn(150, 32, generator=g, dtype=torch.float64)
    f2 = (torch.randn(120, 32, generator=g, dtype=torch.float64) * 1.1 + 0.4)
    ref = kid_features_to_metric(f1, f2, kid_subsets=20, kid_subset_size=100, verbose=False)
    ours = kernel_distance(f1, f2, subsets=20, subset_size=100)
    assert ours.mean == pytest.approx(ref[KEY_METRIC_KID_MEAN], rel=1e-9)
    assert ours.std == pytest.approx(ref[KEY_METRIC_KID_STD], rel=1e-9)
    assert ours.subset_size == 100


def test_unbiased_for_equal_distributions_at_small_n():
    # the point of KID at demo scale: two real sets of 20 score 0 on average (an FD would be far above 0)
    rng = np.random.default_rng(2)
    values = [kernel_distance(rng.normal(size=(20, 8)), rng.normal(size=(20, 8)), subsets=1).mean
              for _ in range(2000)]
    se = np.std(values) / np.sqrt(len(values))
    assert abs(np.mean(values)) < 4 * se
    shifted = [kernel_distance(rng.normal(size=(20, 8)), rng.normal(0.5, 1, size=(20, 8)), subsets=1).mean
               for _ in range(200)]
    assert np.mean(shifted) > 10 * se


def test_subset_size_is_capped_at_the_smaller_set():
    rng = np.random.default_rng(3)
    out = kernel_distance(rng.normal(size=(30, 4)), rng.normal(size=(50, 4)), subsets=3)
    assert out.subset_size == 30 and out.subsets == 3


@pytest.mark.parametrize("a, b, message", [
    (np.zeros((5, 3)), np.zeros((5, 4)), "feature dimensions differ: 3 vs 4"),
    (np.zeros((1, 3)), np.zeros((5, 3)), "at least 2 samples in each set, got 1 and 5"),
    (np.zeros(5), np.zeros((5, 3)), "2-D [N, D]"),
    (np.full((5, 3), np.nan), np.zeros((5, 3)), "15 non-finite values"),
])
def test_bad_inputs_are_named(a, b, message):
    with pytest.raises(ValueError) as err:
        kernel_distance(a, b)
    assert message in str(err.value)
