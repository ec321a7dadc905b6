"""Spectral fidelity: radially averaged power spectra of samples vs data, and their log-error per band.

Shows *where* in frequency samples differ from data (the effect Spectral Forcing targets). The spectrum is
FFT-based: for each image and channel, P[kx, ky] = |FFT2(x)|^2 / (H W) with integer frequencies kx, ky in
[-H/2, H/2) (square images), averaged over the shell k = round(sqrt(kx^2 + ky^2)) for k = 0..H//2. Corner
frequencies beyond the Nyquist circle (k > H/2) form incomplete, anisotropic shells and are left out. Power sums
per shell are additive, so ranks all-reduce them like the Fréchet statistics.

    import torch
    from trainers.evaluation.radial_spectrum import SpectrumStats, spectral_errors
    a, b = SpectrumStats(32), SpectrumStats(32)
    a.update(torch.randn(100, 1, 32, 32)); b.update(torch.randn(100, 1, 32, 32))
    print(spectral_errors(a.spectrum(), b.spectrum()))  # {"spec_err_low": ..., "spec_err_mid": ..., ...}

Bands split the normalised radius f = k / (H/2) in thirds: low f <= 1/3 (DC included), mid 1/3 < f <= 2/3,
high f > 2/3. Each error is the mean over the band's shells of |log10 P_samples(k) - log10 P_data(k)|
(0.301 = a factor of 2 in power). CPU check: `.venv/bin/python -m pytest tests/test_evaluation.py -q -k spectr`.
"""
from __future__ import annotations

import numpy as np
import torch

from specforce_contracts import EVAL_PREFIX, SPEC_ERR_PREFIX, SPECTRUM_BANDS
from trainers.distributed import all_reduce_sum_

__all__ = ["radial_bins", "SpectrumStats", "spectral_errors", "BANDS"]

BANDS = SPECTRUM_BANDS  # eval/spec_err_<band> (specforce_contracts)


def radial_bins(size: int) -> torch.Tensor:
    """[size, size] LongTensor of shell indices k (FFT layout); -1 marks frequencies outside the Nyquist circle."""
    if not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    f = torch.fft.fftfreq(size, d=1.0 / size)  # integer frequencies, FFT order
    k = torch.sqrt(f[:, None] ** 2 + f[None, :] ** 2).round().long()
    return torch.where(k <= size // 2, k, torch.full_like(k, -1))


class SpectrumStats:
    """Sum over images and channels of the shell-averaged power spectrum, plus the image count."""

    def __init__(self, size: int):
        self.size = size
        self.bins = radial_bins(size)
        self.num_shells = size // 2 + 1
        inside = self.bins >= 0
        self._shell_counts = torch.bincount(self.bins[inside], minlength=self.num_shells).double()
        self.count = 0
        self.power_sum = torch.zeros(self.num_shells, dtype=torch.float64)

    def update(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[-2:] != (self.size, self.size):
            raise ValueError(f"images must have shape [B, C, {self.size}, {self.size}], got {tuple(images.shape)}")
        x = images.detach().double().cpu()
        power = torch.fft.fft2(x).abs().pow(2) / (self.size * self.size)
        per_image = power.mean(dim=1)  # channel average: one spectrum per image
        inside = self.bins >= 0
        shells = torch.zeros(x.shape[0], self.num_shells, dtype=torch.float64)
        shells.index_add_(1, self.bins[inside], per_image[:, inside])
        self.power_sum += (shells / self._shell_counts).sum(0)
        self.count += x.shape[0]

    def all_reduce(self) -> "SpectrumStats":
        count = torch.tensor([float(self.count)], dtype=torch.float64)
        all_reduce_sum_([count, self.power_sum])
        self.count = int(round(count.item()))
        return self

    def spectrum(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no images accumulated: count is 0")
        return (self.power_sum / self.count).numpy()

    def radii(self) -> np.ndarray:
        """Normalised radius f = k / (size/2) of each shell (1 = Nyquist)."""
        return np.arange(self.num_shells) / (self.size / 2)


def spectral_errors(samples: np.ndarray, data: np.ndarray, floor: float = 1e-12) -> dict[str, float]:
    """Mean |log10 power ratio| per band between two shell spectra of equal length (see module docstring)."""
    s, d = np.asarray(samples, dtype=np.float64), np.asarray(data, dtype=np.float64)
    if s.shape != d.shape or s.ndim != 1 or s.size < 3:
        raise ValueError(f"spectra must be 1-D of equal length >= 3, got {s.shape} and {d.shape}")
    # `floor` keeps an all-zero band (e.g. constant images) finite instead of -inf; it is far below any real power.
    err = np.abs(np.log10(np.maximum(s, floor)) - np.log10(np.maximum(d, floor)))
    f = np.arange(s.size) / (s.size - 1)
    out = {}
    for name, (lo, hi) in BANDS.items():
        sel = (f >= lo) & (f <= hi) if lo == 0 else (f > lo) & (f <= hi)
        out[SPEC_ERR_PREFIX.removeprefix(EVAL_PREFIX) + name] = float(err[sel].mean())
    return out
