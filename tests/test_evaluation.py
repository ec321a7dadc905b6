"""Evaluator end to end on real datasets (grf, digits) with the cheap metrics: fd_pixel, spectrum, floors, cache,
input checks. Independent references: NumPy covariance + scipy sqrtm FD, NumPy FFT spectra, closed forms."""
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from trainers.data.loader import build_dataset
from trainers.evaluation.references import REFERENCE_SEED
from trainers.evaluation.evaluator import Evaluator, evaluate_images
from trainers.evaluation.radial_spectrum import SpectrumStats, radial_bins, spectral_errors

N = 120


@pytest.fixture(scope="module")
def grf():
    return build_dataset("grf", image_size=8, split="test", num_samples=400)


def _stack(ds, idx):
    return torch.stack([ds[int(i)][0] for i in idx])


def _np_fd(x, y):
    x, y = x.reshape(len(x), -1).double().numpy(), y.reshape(len(y), -1).double().numpy()
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real))


def _evaluator(ds, tmp_path, metrics=("fd_pixel", "spectrum"), n=N, **kw):
    ev = Evaluator(metrics, ds, n, 50, "cpu", tmp_path, **kw)
    ev.prepare()
    return ev


def test_fd_pixel_and_floor_equal_numpy_reference_on_the_documented_sets(grf, tmp_path):
    ev = _evaluator(grf, tmp_path)
    perm = np.random.RandomState(REFERENCE_SEED).permutation(len(grf))
    ref, floor = _stack(grf, perm[:N]), _stack(grf, perm[N:2 * N])
    fake = torch.randn(N, 1, 8, 8) * 0.7
    res = ev.evaluate_batches([(fake[:70], None), (fake[70:], None)], N)
    assert res.metrics["fd_pixel"] == pytest.approx(_np_fd(fake, ref), rel=1e-6)
    assert res.metrics["fd_pixel_floor"] == pytest.approx(_np_fd(floor, ref), rel=1e-6)
    assert res.metrics["fd_pixel"] > 1.5 * res.metrics["fd_pixel_floor"]  # white noise is not a 1/k^2 field
    prov = res.provenance["fd_pixel"]
    assert prov["floor_source"] == "same split, disjoint images" and prov["floor_num_samples"] == N
    assert prov["num_samples"] == N and len(prov["reference_sha256"]) == 64


def test_real_data_as_samples_scores_near_the_floor(grf, tmp_path):
    ev = _evaluator(grf, tmp_path)
    train = build_dataset("grf", image_size=8, split="train")
    res = ev.evaluate_batches([(_stack(train, range(N)), None)], N)
    assert res.metrics["fd_pixel"] == pytest.approx(res.metrics["fd_pixel_floor"], rel=0.25)
    assert max(res.metrics[f"spec_err_{b}"] for b in ("low", "mid", "high")) < 0.15


def test_batch_size_invariance_and_cache_hit_miss(grf, tmp_path):
    x = torch.randn(N, 1, 8, 8) * 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        a = evaluate_images(x, grf, ("fd_pixel", "spectrum"), batch_size=7, cache_dir=tmp_path)
        ev = Evaluator(("fd_pixel",), grf, N, 50, "cpu", tmp_path)
        ev.prepare()
        assert ev.cache_events == {"fd_pixel": "hit"}
        b = evaluate_images(iter([x[:100], x[100:]]), grf, ("fd_pixel", "spectrum"), num_samples=N, cache_dir=tmp_path)
        ev2 = Evaluator(("fd_pixel",), grf, N - 1, 50, "cpu", tmp_path)
        ev2.prepare()
    assert ev2.cache_events == {"fd_pixel": "miss"}  # the sample count is part of the key
    for k in a.metrics:
        assert a.metrics[k] == pytest.approx(b.metrics[k], rel=1e-9)
    assert a.provenance["fd_pixel"]["reference_sha256"] == b.provenance["fd_pixel"]["reference_sha256"]


def test_evaluate_passes_balanced_labels_and_keeps_the_training_rng(tmp_path):
    digits = build_dataset("digits", image_size=8, split="test")
    seen = []

    def generate(labels):
        seen.append(labels.clone())
        return torch.rand(len(labels), 1, 8, 8) * 2 - 1

    ev = _evaluator(digits, tmp_path, n=100)
    state = torch.get_rng_state()
    r1, r2 = ev.evaluate(generate), ev.evaluate(generate)
    assert torch.equal(torch.get_rng_state(), state)  # sampling ran under a forked RNG
    assert r1.metrics == r2.metrics  # ... seeded by (seed, rank): evaluations are repeatable
    labels = torch.cat(seen[: len(seen) // 2])
    assert torch.equal(torch.bincount(labels), torch.full((10,), 10))
    assert r1.timings["sampling"] > 0 and r1.timings["features"] > 0


def test_unconditional_data_gets_the_null_class(grf, tmp_path):
    seen = []
    ev = _evaluator(grf, tmp_path, metrics=("spectrum",))
    ev.evaluate(lambda lab: seen.append(lab) or torch.zeros(len(lab), 1, 8, 8))
    assert torch.cat(seen).tolist() == [grf.num_classes] * N


def test_floor_comes_from_the_other_split_when_the_split_is_small(tmp_path):
    digits = build_dataset("digits", image_size=8, split="test")  # 180 images
    ev = _evaluator(digits, tmp_path, metrics=("fd_pixel",), n=100)
    assert ev.references["fd_pixel"]["provenance"]["floor_source"] == "other split (train)"
    with pytest.warns(RuntimeWarning, match="has 180 images < num_samples=200"):
        ev = _evaluator(digits, tmp_path, metrics=("fd_pixel",), n=200)
    prov = ev.references["fd_pixel"]["provenance"]
    assert prov["reference_num_samples"] == 180 and prov["floor_num_samples"] == 200


def test_bad_images_give_clear_errors(grf, tmp_path):
    ev = _evaluator(grf, tmp_path, metrics=("fd_pixel",))
    good = torch.zeros(N, 1, 8, 8)
    bad_nan = good.clone()
    bad_nan[3, 0, 1, 1] = float("nan")
    cases = [(bad_nan, ValueError, "1 non-finite values"),
             (good.to(torch.uint8), TypeError, "floating point"),
             (torch.zeros(N, 1, 16, 16), ValueError, r"\[B, 1, 8, 8\] to match the dataset"),
             (good + 200.0, ValueError, r"max_abs=5.0.*\[0, 255\]")]
    for images, exc, match in cases:
        with pytest.raises(exc, match=match):
            ev.evaluate_batches([(images, None)], N)
    with pytest.raises(ValueError, match="expected 120 samples across ranks, got 60"):
        ev.evaluate_batches([(good[:60], None)], N)


def test_bad_arguments_give_clear_errors(grf, tmp_path):
    with pytest.raises(ValueError, match="metrics must be a non-empty subset"):
        Evaluator(("fid_pixel",), grf, N, 10, "cpu", tmp_path)
    with pytest.raises(ValueError, match="'classifier' needs a digit dataset.*'grf'"):
        Evaluator(("classifier",), grf, N, 10, "cpu", tmp_path)
    with pytest.raises(ValueError, match="num_samples must be an int >= 2, got 1"):
        Evaluator(("fd_pixel",), grf, 1, 10, "cpu", tmp_path)
    with pytest.raises(ValueError, match="world_size=2, rank=1 needs an initialised"):
        Evaluator(("fd_pixel",), grf, N, 10, "cpu", tmp_path, rank=1, world_size=2)
    with pytest.raises(RuntimeError, match="prepare"):
        Evaluator(("fd_pixel",), grf, N, 10, "cpu", tmp_path).evaluate(lambda lab: None)
    with pytest.raises(ValueError, match="num_samples is required"):
        evaluate_images(iter([]), grf, ("fd_pixel",), cache_dir=tmp_path)


def test_missing_inception_weights_fail_in_prepare(grf, tmp_path, monkeypatch):
    monkeypatch.delenv("SPECFORCE_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    ev = Evaluator(("fid",), grf, N, 10, "cpu", tmp_path, allow_download=False)
    with pytest.raises(FileNotFoundError, match="weights-inception-2015-12-05-6726825d.pth"):
        ev.prepare()


# --------------------------------------------------------------------------------------------- spectra
def test_radial_spectrum_equals_numpy_fft_shell_means():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 8, 8))
    st = SpectrumStats(8)
    st.update(torch.from_numpy(x))
    power = (np.abs(np.fft.fft2(x)) ** 2 / 64).mean(axis=(0, 1))
    k = np.rint(np.hypot(*np.meshgrid(np.fft.fftfreq(8) * 8, np.fft.fftfreq(8) * 8, indexing="ij")))
    expected = [power[k == r].mean() for r in range(5)]
    np.testing.assert_allclose(st.spectrum(), expected, rtol=1e-12)
    assert (radial_bins(8) == -1).sum() == (k > 4).sum() > 0  # corners past Nyquist are left out


def test_white_noise_spectrum_is_flat_at_its_variance_and_grf_follows_its_power_law():
    st = SpectrumStats(16)
    # seeded, and enough images that the one-mode shell at k=0 (a chi-square with 2,000 dof: 3% SD) sits well
    # inside the tolerance (400 unseeded images failed about one run in seven)
    st.update(torch.randn(2000, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.5)
    np.testing.assert_allclose(st.spectrum(), 0.25, rtol=0.1)  # Parseval: E|F|^2/(HW) = sigma^2
    ds = build_dataset("grf", image_size=16, split="train", alpha_data=3.0)
    st = SpectrumStats(16)
    st.update(_stack(ds, range(200)))
    k = np.arange(2, 8)
    slope = np.polyfit(np.log(k), np.log(st.spectrum()[2:8]), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.25)


def test_spectral_errors_closed_form_and_checks():
    data = np.linspace(1.0, 2.0, 17)
    errs = spectral_errors(data * 10.0, data)
    assert errs == pytest.approx({"spec_err_low": 1.0, "spec_err_mid": 1.0, "spec_err_high": 1.0})
    only_high = data.copy()
    only_high[-3:] *= 100.0
    errs = spectral_errors(only_high, data)
    assert errs["spec_err_low"] == 0 and errs["spec_err_mid"] == 0 and errs["spec_err_high"] > 0
    with pytest.raises(ValueError, match="equal length"):
        spectral_errors(data, data[:-1])


def test_spectra_artifact_is_json_ready(grf, tmp_path):
    import json

    res = _evaluator(grf, tmp_path, metrics=("spectrum",)).evaluate_batches([(torch.zeros(N, 1, 8, 8) + 0.1, None)],
                                                                             N)
    art = json.loads(json.dumps(res.artifacts["spectra"]))
    assert len(art["r"]) == len(art["data"]) == len(art["samples"]) == 5 and art["r"][-1] == 1.0


def test_integration_with_jit_tiny_and_the_sampler(tmp_path):
    from trainers.model.jit import build_jit
    from trainers.model.samplers import generate

    digits = build_dataset("digits", image_size=8, split="test")
    torch.manual_seed(0)
    model = build_jit("jit-tiny", image_size=8, patch_size=4, in_channels=1, num_classes=10)
    ev = _evaluator(digits, tmp_path, n=40)
    res = ev.evaluate(lambda lab: generate(model, n=len(lab), image_shape=(1, 8, 8), labels=lab, sampler="heun",
                                           steps=2, num_classes=10))
    assert set(res.metrics) == {"fd_pixel", "fd_pixel_floor", "spec_err_low", "spec_err_mid", "spec_err_high"}
    assert all(np.isfinite(v) for v in res.metrics.values())
    assert res.metrics["fd_pixel"] > res.metrics["fd_pixel_floor"]  # an untrained model is worse than real data
