"""The radial power spectrum and the power-law fit of trainers/model/spectral_forcing.py (what the snr schedule's
alpha and r0 come from) against exact rational binning and fields of known spectrum, and the snr front where signal
and noise power meet.

    .venv/bin/python -m pytest tests/test_spectral_spectrum.py -q      # CPU, seconds
"""
from fractions import Fraction

import numpy as np
import pytest
import scipy.fft
import torch

from spectral_helpers import ref_radius
from trainers.model.spectral_forcing import SpectralForcing, fit_power_law, radial_power_spectrum


# ---------------------------------------------------------------------- radial spectrum and power-law fit
def _exact_bin(u, v, h, w, n_bins):
    """Bin i holds r in (i/n_bins, (i+1)/n_bins], decided in exact rational arithmetic."""
    r2 = (Fraction(u * u, (h - 1) ** 2) + Fraction(v * v, (w - 1) ** 2)) / 2  # r^2
    i = 0
    while r2 > Fraction(i + 1, n_bins) ** 2:
        i += 1
    return i


# 26x26 with the default bins puts diagonal frequencies on bin edges where float rounding errs upwards
@pytest.mark.parametrize("shape, n_bins", [((8, 8), None), ((26, 26), None), ((8, 8), 5), ((9, 9), 13), ((6, 10), 4)])
def test_radial_power_spectrum_matches_exact_binning(shape, n_bins):
    h, w = shape
    x = np.random.default_rng(5).standard_normal((3, 2, h, w))
    r_got, p_got = radial_power_spectrum(x, n_bins=n_bins)
    power = (scipy.fft.dctn(x, axes=(-2, -1), norm="ortho") ** 2).mean(axis=(0, 1))
    radius = ref_radius(h, w)
    nb = n_bins or max(h, w) - 1
    groups = {}
    for u in range(h):
        for v in range(w):
            if u or v:
                groups.setdefault(_exact_bin(u, v, h, w, nb), []).append((radius[u, v], power[u, v]))
    keys = sorted(groups)
    np.testing.assert_allclose(r_got, [np.mean([a for a, _ in groups[k]]) for k in keys], rtol=1e-12)
    np.testing.assert_allclose(p_got, [np.mean([b for _, b in groups[k]]) for k in keys], rtol=1e-10)
    # tensors (any dtype, with grad) give the same answer as float64 arrays
    r_t, p_t = radial_power_spectrum(torch.tensor(x, requires_grad=True), n_bins=n_bins)
    np.testing.assert_array_equal(r_t, r_got)
    np.testing.assert_allclose(p_t, p_got, rtol=1e-14)


def _dct_field(rng, n, size, alpha, amplitude):
    """Gaussian field whose per-coefficient DCT power is exactly amplitude * r^-alpha (DC zero)."""
    r = ref_radius(size, size)
    r[0, 0] = np.inf
    coeffs = rng.standard_normal((n, 1, size, size)) * np.sqrt(amplitude * r ** (-alpha))
    return scipy.fft.idctn(coeffs, axes=(-2, -1), norm="ortho")


def _fft_field(rng, n, size, alpha):
    """Periodic Gaussian field with FFT power ~ k^-alpha: white noise shaped by k^(-alpha/2)."""
    f = np.fft.fftfreq(size)
    k = np.hypot(f[:, None], f[None, :])
    k[0, 0] = np.inf
    return np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, 1, size, size))) * k ** (-alpha / 2)).real


@pytest.mark.parametrize("alpha", [1.5, 2.0, 3.0])
def test_fit_power_law_recovers_alpha_of_fft_shaped_fields(alpha):
    x = _fft_field(np.random.default_rng(int(alpha * 10)), 64, 64, alpha)
    fitted, r0 = fit_power_law(x)
    assert abs(fitted - alpha) < 0.1
    assert r0 > 0


@pytest.mark.parametrize("alpha", [1.5, 2.0, 3.0])
def test_fit_power_law_recovers_alpha_and_r0_of_dct_shaped_fields(alpha):
    amplitude = 0.01
    x = _dct_field(np.random.default_rng(7), 256, 32, alpha, amplitude)
    fitted, r0 = fit_power_law(torch.tensor(x, dtype=torch.float32))
    assert abs(fitted - alpha) < 0.05
    assert r0 == pytest.approx(amplitude ** (1 / alpha), rel=0.08)  # r0 = (A / noise_var)^(1/alpha)


def test_r0_scales_in_closed_form_with_noise_var_and_image_scale():
    x = _dct_field(np.random.default_rng(8), 32, 32, 2.0, 0.05)
    alpha, r0 = fit_power_law(x)
    alpha4, r0_noise4 = fit_power_law(x, noise_var=4.0)
    alpha_s, r0_scaled = fit_power_law(3.0 * x)
    assert alpha4 == pytest.approx(alpha, rel=1e-12) and alpha_s == pytest.approx(alpha, rel=1e-12)
    assert r0_noise4 == pytest.approx(r0 * 4.0 ** (-1 / alpha), rel=1e-10)
    assert r0_scaled == pytest.approx(r0 * 9.0 ** (1 / alpha), rel=1e-10)


@pytest.mark.parametrize("t", [0.7, 0.8])
def test_snr_front_is_where_signal_and_noise_power_meet(t):
    # End to end: at the fitted snr cutoff, the band power of t*x equals that of (1-t)*eps (unit noise).
    rng = np.random.default_rng(9)
    x = _dct_field(rng, 256, 32, 2.0, 0.01)
    alpha, r0 = fit_power_law(x)
    front = SpectralForcing(32, "snr", alpha=alpha, r0=r0).cutoff(t).item()
    assert 0.1 < front < 0.6  # inside the fitted band, not at a clip
    r_s, p_s = radial_power_spectrum(t * x)
    r_n, p_n = radial_power_spectrum((1 - t) * rng.standard_normal(x.shape))
    assert np.interp(front, r_s, p_s) / np.interp(front, r_n, p_n) == pytest.approx(1.0, abs=0.12)


def _blue_field():
    """One image whose DCT power grows as r^2: the fit finds alpha = -2."""
    return scipy.fft.idctn(ref_radius(16, 16)[None, None], axes=(-2, -1), norm="ortho")


@pytest.mark.parametrize("call, words", [
    (lambda x: fit_power_law(x, k_min=0.0), ["k_min", "0.0"]),
    (lambda x: fit_power_law(x, k_min=0.4, k_max=0.3), ["k_max", "0.3"]),
    (lambda x: fit_power_law(x, k_max=1.5), ["k_max", "1.5"]),
    (lambda x: fit_power_law(x, noise_var=0.0), ["noise_var", "0.0"]),
    (lambda x: fit_power_law(x, k_min=0.3, k_max=0.31), ["k_min, k_max", "0.3", "0.31"]),
    (lambda x: fit_power_law(x[0]), ["images", "[1, 16, 16]"]),
    (lambda x: fit_power_law(_blue_field()), ["images", "fitted alpha=-1.9"]),
    (lambda x: radial_power_spectrum(x, n_bins=0), ["n_bins", "0"]),
    (lambda x: radial_power_spectrum(np.full((1, 1, 4, 4), np.nan)), ["images", "non-finite"]),
])
def test_spectrum_errors_name_argument_and_value(call, words):
    x = _dct_field(np.random.default_rng(10), 4, 16, 2.0, 1.0)
    with pytest.raises(ValueError) as err:
        call(x)
    for word in words:
        assert word in str(err.value), (word, str(err.value))
