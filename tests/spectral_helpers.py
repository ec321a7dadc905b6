"""Independent NumPy/SciPy references for the Spectral Forcing tests: the normalised frequency radius, each
schedule's cutoff c(t) written out afresh (not trainers' formula), and the whole operator IDCT2(DCT2(z) * M(t)).

    .venv/bin/python -m pytest tests/test_spectral.py tests/test_spectral_spectrum.py -q
"""
import numpy as np
import scipy.fft

from trainers.model.spectral_forcing import SCHEDULES, SpectralForcing

ALL = list(SCHEDULES)
FILTERING = ["linear", "contour", "snr", "constant"]
SNR_R0 = 0.3  # a front at r = 0.3 when t = 1/2: inside (c_min, c_max), so the clip is not the whole story


def make(size=16, schedule="linear", **kw):
    """SpectralForcing(size, schedule, **kw); the snr schedule gets SNR_R0 as its front unless r0 is given."""
    if schedule == "snr":
        kw.setdefault("r0", SNR_R0)
    return SpectralForcing(size, schedule, **kw)


# ---------------------------------------------------------------------- NumPy reference
def ref_radius(h, w):
    u, v = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    if h == w:
        return np.sqrt(u**2 + v**2) / (np.sqrt(2) * (h - 1))
    return np.sqrt((u / (h - 1)) ** 2 + (v / (w - 1)) ** 2) / np.sqrt(2)


def ref_cutoff(t, schedule, c_min=0.05, c_max=1.0, alpha=2.0, r0=SNR_R0, c_const=0.5):
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):  # t = 1: the fronts run off to +inf and the clip brings them to c_max
        if schedule == "linear":
            return c_min + (c_max - c_min) * t
        if schedule == "contour":
            return np.minimum(c_max, c_min * (1 - t) ** (-2 / alpha))
        if schedule == "snr":
            return np.clip(r0 * (t / (1 - t)) ** (2 / alpha), c_min, c_max)
        if schedule == "constant":
            return np.full_like(t, c_const)
    raise AssertionError(schedule)


def ref_operator(z, t, schedule, kappa=30.0, **kw):
    """IDCT2(DCT2(z) * M(t)) with scipy's orthonormal DCT-II over the last two axes."""
    z = np.asarray(z, dtype=np.float64)
    c = ref_cutoff(t, schedule, **kw)
    m = 1 / (1 + np.exp(-kappa * (c[:, None, None] - ref_radius(*z.shape[-2:]))))
    coeffs = scipy.fft.dctn(z, axes=(-2, -1), norm="ortho") * m[:, None]
    return scipy.fft.idctn(coeffs, axes=(-2, -1), norm="ortho")
