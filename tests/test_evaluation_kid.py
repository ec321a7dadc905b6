"""KID inside the Evaluator: the numbers equal trainers.evaluation.kid on the documented sets (samples vs reference R, floor set
B vs R), real data scores ~0 where the FD sits at its biased floor, features are cached, bad requests are refused."""
import numpy as np
import pytest
import torch

from specforce_contracts import kid_name
from trainers.training.config import config_from_dict
from trainers.data.loader import build_dataset
from trainers.evaluation.references import REFERENCE_SEED
from trainers.evaluation.evaluator import Evaluator
from trainers.evaluation.kid import kernel_distance

N = 100


@pytest.fixture(scope="module")
def grf():
    return build_dataset("grf", image_size=8, split="test", num_samples=400)


def _flat(ds, idx):
    return torch.stack([ds[int(i)][0] for i in idx]).flatten(1).numpy()


def _evaluate(ds, cache, samples):
    ev = Evaluator(("fd_pixel", "kid"), ds, N, 30, "cpu", cache)
    ev.prepare()
    return ev, ev.evaluate_batches([(samples[:45], None), (samples[45:], None)], N)


def test_kid_pixel_and_floor_equal_the_kernel_distance_of_the_documented_sets(grf, tmp_path):
    fake = torch.randn(N, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.6
    _, res = _evaluate(grf, tmp_path, fake)
    perm = np.random.RandomState(REFERENCE_SEED).permutation(len(grf))
    ref, floor = _flat(grf, perm[:N]), _flat(grf, perm[N:2 * N])
    expected = kernel_distance(fake.flatten(1).numpy(), ref, subset_size=N // 2)
    assert res.metrics["kid_pixel"] == pytest.approx(expected.mean, rel=1e-6)
    assert res.metrics["kid_pixel_std"] == pytest.approx(expected.std, rel=1e-6)
    assert res.metrics["kid_pixel_floor"] == pytest.approx(kernel_distance(floor, ref, subset_size=N // 2).mean, rel=1e-6)
    prov = res.provenance["kid_pixel"]
    assert prov["num_samples"] == N and prov["subset_size"] == N // 2 and prov["subsets"] == 100


def test_real_data_scores_near_zero_while_fd_sits_at_its_floor(grf, tmp_path):
    train = build_dataset("grf", image_size=8, split="train")
    real = torch.stack([train[i][0] for i in range(N)])
    _, res = _evaluate(grf, tmp_path, real)
    assert res.metrics["fd_pixel"] > 0.5 * res.metrics["fd_pixel_floor"] > 0  # FD: biased well above 0
    # KID: unbiased, so real-vs-real is within a few subset SDs of 0, and far below white noise
    assert abs(res.metrics["kid_pixel"]) < 3 * res.metrics["kid_pixel_std"] + 1e-3
    noise = torch.randn(N, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    _, res_noise = _evaluate(grf, tmp_path, noise)
    assert res_noise.metrics["kid_pixel"] > 2 * res_noise.metrics["kid_pixel_std"]
    assert res_noise.metrics["kid_pixel"] > 5 * abs(res.metrics["kid_pixel"])


def test_reference_features_are_cached_and_reused(grf, tmp_path):
    fake = torch.randn(N, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    _, first = _evaluate(grf, tmp_path, fake)
    cached = sorted(p.name for p in (tmp_path / "reference_stats").glob("*.features.npy"))
    assert len(cached) == 2  # reference R and floor set B
    ev, second = _evaluate(grf, tmp_path, fake)
    assert ev.cache_events["fd_pixel"] == "hit"
    assert second.metrics == first.metrics


def test_kid_alone_needs_no_covariance_and_gives_the_same_numbers(grf, tmp_path):
    # where fd_pixel's D x D covariance is refused (3 x 64 x 64 = 12,288 dims), kid_pixel still runs
    big = build_dataset("grf", image_size=64, split="test", num_samples=60, channels=3)
    with pytest.raises(ValueError, match="12288-d covariance"):
        Evaluator(("fd_pixel",), big, 20, 10, "cpu", tmp_path)
    ev = Evaluator(("kid",), big, 20, 10, "cpu", tmp_path)
    ev.prepare()
    res = ev.evaluate_batches([(torch.zeros(20, 3, 64, 64), None)], 20)
    assert set(res.metrics) == {"kid_pixel", "kid_pixel_std", "kid_pixel_floor"}
    assert res.provenance["kid_pixel"]["reference_sha256"]
    fake = torch.randn(N, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    alone = Evaluator(("kid", "spectrum"), grf, N, 30, "cpu", tmp_path / "alone")
    alone.prepare()
    _, with_fd = _evaluate(grf, tmp_path / "with", fake)
    assert alone.evaluate_batches([(fake, None)], N).metrics["kid_pixel"] == with_fd.metrics["kid_pixel"]
    assert config_from_dict({"eval": {"metrics": ["kid"]}}).eval.metrics == ("kid",)


def test_kid_names_follow_the_fd_names():
    assert [kid_name(m) for m in ("fid", "fd_pixel", "fd_digitcnn")] == ["kid", "kid_pixel", "kid_digitcnn"]
