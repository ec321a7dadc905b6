"""`grf`: Gaussian random fields with an isotropic power-law spectrum P(k) ~ k^-alpha_data.

    python -c "from trainers.data.loader import build_dataset; ds = build_dataset('grf', image_size=32, alpha_data=3.0); print(ds[0][0].std())"

Why this data: it is the cleanest test of Spectral Forcing's premise (a known spectrum, so a known SNR front), and it is
exactly Gaussian, so the Fréchet distance in pixel space between model samples and data is an exact divergence of the
first two moments (the evaluation code relies on this).

Construction: white noise N(0, 1) per channel, multiplied in the periodic 2D Fourier domain by sqrt(P(k)), where k is
the radial frequency in cycles per image (integers on each axis, so the lowest non-zero k is 1). The DC term uses
P(1) rather than P(0) = inf, which keeps the covariance full rank (a zero-mean constraint would make it singular).
The amplitude is scaled so every pixel has standard deviation exactly 0.5. Nothing is clipped — clipping would make
the data non-Gaussian — so about 4.6% of pixel values (|x| > 2 sigma) lie outside [-1, 1].

Options: `alpha_data` (spectral exponent, default 2.0), `num_samples` (default 10,000 for train, 2,000 for test),
`channels` (default 1: independent fields per channel). Sample i of a split is generated on access from its own
generator seeded by (seed, split, i): construction is instant, sample i does not depend on `num_samples`, and the train
and test streams are independent. Labels are the null class 0 (`num_classes` = 0: unconditional data).
"""
from __future__ import annotations

import numpy as np
import torch

from trainers.data.base import ImageDataset, check_positive_float, check_positive_int

PIXEL_STD = 0.5
_GRF_TAG = 0x677266  # separates grf streams from other uses of the run seed
_SPLIT_CODE = {"train": 0, "test": 1}


def grf_amplitude(image_size: int, alpha_data: float) -> np.ndarray:
    """Fourier amplitude [H, W] (numpy FFT layout) with mean(A^2) = PIXEL_STD^2.

    For x = ifft2(fft2(w) * A) with white w, Parseval gives Var(x_pixel) = sum(A^2) / (H*W) = mean(A^2).
    """
    k_axis = np.fft.fftfreq(image_size) * image_size  # integer cycles per image
    k = np.hypot(k_axis[:, None], k_axis[None, :])
    power = np.empty_like(k)
    nonzero = k > 0
    power[nonzero] = k[nonzero] ** (-alpha_data)
    power[~nonzero] = 1.0  # = P(k=1): finite DC variance, full-rank covariance
    return np.sqrt(power) * (PIXEL_STD / np.sqrt(power.mean()))


class GaussianRandomField(ImageDataset):
    name = "grf"
    OPTIONS = {"alpha_data": 2.0, "num_samples": None, "channels": 1}
    DEFAULT_NUM_SAMPLES = {"train": 10_000, "test": 2_000}

    @classmethod
    def _check_option_values(cls, options: dict) -> None:
        for key, check in (("alpha_data", check_positive_float), ("num_samples", check_positive_int),
                           ("channels", check_positive_int)):
            if options.get(key) is not None:
                check(key, options[key])

    def __init__(self, *, image_size: int, split: str, seed: int, root: str | None = None,
                 alpha_data: float = 2.0, num_samples: int | None = None, channels: int = 1):
        alpha_data = check_positive_float("alpha_data", alpha_data)
        num_samples = self.DEFAULT_NUM_SAMPLES[split] if num_samples is None else \
            check_positive_int("num_samples", num_samples)
        channels = check_positive_int("channels", channels)
        super().__init__(image_size=image_size, split=split, seed=seed, num_classes=0, channels=channels,
                         options={"alpha_data": alpha_data, "num_samples": num_samples, "channels": channels})
        self._num_samples = num_samples
        self._amplitude = grf_amplitude(image_size, alpha_data)

    def __len__(self) -> int:
        return self._num_samples

    def _image(self, index: int, epoch: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, _GRF_TAG, _SPLIT_CODE[self.split], index])
        noise = rng.standard_normal((self.channels, self.image_size, self.image_size))
        # A is real and even (A[k] = A[-k]), so the product stays Hermitian and the inverse is real up to rounding.
        field = np.fft.ifft2(np.fft.fft2(noise) * self._amplitude).real
        return torch.from_numpy(field.astype(np.float32))

    def _label(self, index: int) -> int:
        return 0
