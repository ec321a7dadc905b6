"""Fréchet distance, float64 sufficient statistics, Inception Score sums and reference-stats files.

Independent references: scipy.linalg.sqrtm, numpy.cov, torch-fidelity's own IS and FD functions, closed forms.
"""
import json

import numpy as np
import pytest
import scipy.linalg
import torch
from torch_fidelity.metric_fid import fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric

from trainers.evaluation.metrics import (FeatureStats, InceptionScoreStats, StatsCache, frechet_distance, inception_score,
                              load_reference_stats, save_reference_stats)


def _random_spd(rng, d, cond=10.0):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return (q * np.linspace(1.0, cond, d)) @ q.T


def _scipy_fd(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("d", [2, 16, 64])
def test_fd_matches_scipy_sqrtm_on_well_conditioned_inputs(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    s1, s2 = _random_spd(rng, d), _random_spd(rng, d, cond=5.0)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_scipy_fd(mu1, s1, mu2, s2), rel=1e-6)


def test_fd_closed_form_for_commuting_diagonal_covariances():
    # diagonal S1, S2: tr sqrt(S1 S2) = sum sqrt(a_i b_i), so FD = |dmu|^2 + sum (sqrt a - sqrt b)^2
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1.0 + 4.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fd_of_a_distribution_with_itself_is_zero_and_fd_is_symmetric():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 32)) @ rng.standard_normal((32, 32))
    mu, s = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)
    mu2, s2 = mu + 0.3, _random_spd(rng, 32)
    assert frechet_distance(mu, s, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu, s), rel=1e-9)


def test_fd_stays_finite_on_singular_covariances_and_agrees_with_torch_fidelity():
    rng = np.random.default_rng(1)
    d = 40  # 10 samples in 40 dims: rank-9 covariances, where sqrtm is ill-posed
    x, y = rng.standard_normal((10, d)), rng.standard_normal((10, d)) + 0.5
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ours = frechet_distance(x.mean(0), s1, y.mean(0), s2)
    theirs = fid_statistics_to_metric({"mu": x.mean(0), "sigma": s1}, {"mu": y.mean(0), "sigma": s2}, False)
    assert np.isfinite(ours)
    assert ours == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)
    assert frechet_distance(np.zeros(d), np.zeros((d, d)), np.zeros(d), np.zeros((d, d))) == 0.0


def test_fd_rejects_bad_shapes_dtypes_and_nan():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="mu1 and mu2"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(3, 3\)"):
        frechet_distance(mu, s, mu, np.eye(2))
    with pytest.raises(ValueError, match="sigma1 contains non-finite"):
        frechet_distance(mu, np.full((3, 3), np.nan), mu, s)
    with pytest.raises(TypeError, match="mu1 must be a real numeric array"):
        frechet_distance(np.zeros(3, dtype=complex), s, mu, s)


def test_feature_stats_equal_numpy_mean_and_cov_and_are_batch_size_invariant():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((301, 12)) * 3 + 5  # a mean large vs spread exercises the raw-moment formula
    one, many = FeatureStats(12), FeatureStats(12)
    one.update(torch.from_numpy(x))
    for i in range(0, 301, 7):
        many.update(torch.from_numpy(x[i:i + 7]))
    for st in (one, many):
        assert st.count == 301
        np.testing.assert_allclose(st.mean(), x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(st.covariance(), np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)


def test_feature_stats_merge_equals_joint_update_and_checks_inputs():
    x = torch.randn(50, 4, dtype=torch.float64)
    a, b, ab = FeatureStats(4), FeatureStats(4), FeatureStats(4)
    a.update(x[:20]); b.update(x[20:]); ab.update(x)
    a.merge(b)
    assert a.count == 50 and torch.allclose(a.outer, ab.outer) and torch.allclose(a.sum, ab.sum)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        a.update(torch.randn(3, 5))
    with pytest.raises(ValueError, match="non-finite"):
        a.update(torch.tensor([[float("nan"), 0.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="at least 2 samples"):
        FeatureStats(4).covariance()
    with pytest.raises(ValueError, match="dim must be a positive int"):
        FeatureStats(0)


def test_too_few_samples_for_full_rank_covariance_warns_with_the_count():
    st = FeatureStats(10)
    st.update(torch.randn(6, 10))
    with pytest.warns(RuntimeWarning, match="only 6 samples for 10-dimensional"):
        st.covariance()


@pytest.mark.parametrize("n,splits", [(100, 10), (37, 10), (20, 1)])
def test_inception_score_equals_torch_fidelity(n, splits):
    logits = torch.randn(n, 30) * 3
    ours = inception_score(logits, splits=splits)
    theirs = isc_features_to_metric(logits, splits=splits, shuffle=True, rng_seed=2020)
    assert ours[0] == pytest.approx(theirs["inception_score_mean"], rel=1e-10)
    assert ours[1] == pytest.approx(theirs["inception_score_std"], rel=1e-6, abs=1e-12)


def test_inception_score_sums_are_order_and_partition_invariant():
    logits = torch.randn(60, 8) * 2
    whole = inception_score(logits)
    st = InceptionScoreStats(60, 8)
    for idx in (torch.arange(40, 60), torch.arange(0, 40, 2), torch.arange(1, 40, 2)):
        st.update(logits[idx], idx)
    assert st.score() == pytest.approx(whole, rel=1e-12)
    with pytest.raises(ValueError, match="inception score expects 60 samples, got 0"):
        InceptionScoreStats(60, 8).score()
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 60\)"):
        st.update(logits[:1], torch.tensor([60]))


def test_inception_score_closed_forms():
    # identical predictions: p(y|x) = p(y), KL = 0, IS = 1; one-hot over K balanced classes: IS = K
    assert inception_score(torch.zeros(40, 5))[0] == pytest.approx(1.0, abs=1e-12)
    onehot = torch.eye(4).repeat(10, 1) * 60.0
    assert inception_score(onehot, splits=1, shuffle=False)[0] == pytest.approx(4.0, rel=1e-9)


def test_reference_stats_roundtrip_npz_and_torch_fidelity_pt(tmp_path):
    rng = np.random.default_rng(3)
    mu, sigma = rng.standard_normal(6), _random_spd(rng, 6)
    digest = save_reference_stats(tmp_path / "r.npz", mu, sigma, {"dataset": "grf", "n": 10})
    mu2, s2, meta = load_reference_stats(tmp_path / "r.npz", expected_dim=6)
    assert mu2.dtype == np.float64 and np.array_equal(mu2, mu) and np.array_equal(s2, sigma)
    assert meta["dataset"] == "grf" and meta["sha256"] == digest
    # ADM/JiT-style file: float32 mu/sigma plus unrelated arrays, no metadata
    np.savez(tmp_path / "adm.npz", mu=mu.astype(np.float32), sigma=sigma.astype(np.float32), arr_0=np.zeros(3))
    mu3, _, meta3 = load_reference_stats(tmp_path / "adm.npz", 6)
    assert mu3.dtype == np.float64 and meta3 == {} and np.allclose(mu3, mu, rtol=1e-6)
    # torch-fidelity's cached statistics: torch.save'd dict
    torch.save({"mu": mu, "sigma": sigma}, tmp_path / "tf-stat-fid-2048.pt")
    assert np.array_equal(load_reference_stats(tmp_path / "tf-stat-fid-2048.pt", 6)[1], sigma)


def test_reference_stats_errors_name_the_problem(tmp_path):
    mu, sigma = np.zeros(4), np.eye(4)
    save_reference_stats(tmp_path / "r.npz", mu, sigma, {})
    with pytest.raises(ValueError, match="dimension 4, the extractor produces 2048"):
        load_reference_stats(tmp_path / "r.npz", expected_dim=2048)
    np.savez(tmp_path / "int.npz", mu=np.zeros(4, dtype=np.int64), sigma=np.eye(4))
    with pytest.raises(ValueError, match="mu must be float32 or float64, got dtype int64"):
        load_reference_stats(tmp_path / "int.npz", 4)
    np.savez(tmp_path / "shape.npz", mu=mu, sigma=np.eye(3))
    with pytest.raises(ValueError, match=r"got \(4,\) and \(3, 3\)"):
        load_reference_stats(tmp_path / "shape.npz")
    np.savez(tmp_path / "keys.npz", m=mu)
    with pytest.raises(ValueError, match="missing arrays"):
        load_reference_stats(tmp_path / "keys.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_reference_stats(tmp_path / "nope.npz")


def test_stats_cache_key_depends_on_every_part(tmp_path):
    cache = StatsCache(tmp_path)
    k = StatsCache.key(dataset={"name": "grf"}, n=10, extractor="pixel")
    assert k == StatsCache.key(extractor="pixel", n=10, dataset={"name": "grf"})
    assert k != StatsCache.key(dataset={"name": "grf"}, n=11, extractor="pixel")
    assert cache.get(k, 3) is None
    cache.put(k, np.zeros(3), np.eye(3), {"x": 1})
    assert json.loads(json.dumps(cache.get(k, 3)[2]))["x"] == 1
