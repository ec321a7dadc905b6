"""One SF cutoff formula: the operator (torch) and the report (NumPy) both evaluate specforce_contracts.sf_cutoff, and
agree on a t grid with both ends (t = 0 pure noise, t = 1 data) for every schedule the report draws, at several alphas.

    .venv/bin/python -m pytest -q tests/test_cutoff_one_formula.py
"""
import numpy as np
import pytest
import torch

from analysis.schedules import SCHEDULES, cutoff, snr_front
from specforce_contracts import SF_DEFAULTS, SF_SCHEDULES
from trainers.model.spectral_forcing import SpectralForcing

T = np.concatenate([[0.0, 1e-9, 1e-3], np.linspace(0.0, 1.0, 41), [0.5 - 1e-9, 0.999, 1.0 - 1e-9, 1.0]])
ALPHAS = (0.5, 1.0, 2.0, 3.7)
CASES = [("linear", {"c_min": 0.05, "c_max": 1.0}), ("linear", {"c_min": 0.0, "c_max": 0.8}),
         ("contour", {"c_min": 0.05, "c_max": 1.0}), ("contour", {"c_min": 0.0, "c_max": 0.9}),
         ("contour", {"c_min": 0.2, "c_max": 0.7}), ("snr", {"c_min": 0.05, "c_max": 1.0, "r0": 0.08}),
         ("snr", {"c_min": 0.0, "c_max": 0.6, "r0": 0.3}), ("constant", {"c_const": 0.3})]


def _torch(schedule: str, alpha: float, kw: dict) -> np.ndarray:
    sf = SpectralForcing(16, schedule, alpha=alpha, **kw)
    return sf.cutoff(torch.as_tensor(T, dtype=torch.float64)).numpy()


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("schedule, kw", CASES)
def test_torch_and_numpy_cutoffs_agree(schedule, kw, alpha):
    expected = _torch(schedule, alpha, kw)
    got = cutoff(schedule, T, alpha=alpha, **kw)
    assert np.all(np.isfinite(got)), "no NaN or inf at either end"
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0.0)
    if schedule != "constant":  # the ends: c_min-or-front at noise, c_max at data
        assert got[-1] == pytest.approx(kw["c_max"])


@pytest.mark.parametrize("alpha", ALPHAS)
def test_the_front_is_the_unclipped_snr_formula(alpha):
    r0 = 0.08
    front = snr_front(T, alpha, r0)
    inner = T < 1.0
    np.testing.assert_allclose(front[inner], r0 * (T[inner] / (1.0 - T[inner])) ** (2.0 / alpha), rtol=1e-12)
    assert front[0] == 0.0 and np.isinf(front[-1])
    clipped = SpectralForcing(16, "snr", alpha=alpha, r0=r0, c_min=0.0, c_max=1.0).cutoff(
        torch.as_tensor(T, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(np.clip(front, 0.0, 1.0), clipped, rtol=1e-12)


def test_defaults_and_names_are_the_operators():
    assert SCHEDULES == tuple(s for s in SF_SCHEDULES if s != "none")
    for schedule in SCHEDULES:
        kw = {"r0": 0.1} if schedule == "snr" else {}
        np.testing.assert_allclose(cutoff(schedule, T, **kw), SpectralForcing(16, schedule, **kw).cutoff(
            torch.as_tensor(T, dtype=torch.float64)).numpy(), rtol=1e-12)
    assert SpectralForcing(16).schedule == SF_DEFAULTS["schedule"]
    with pytest.raises(ValueError, match="schedule must be one of"):
        cutoff("none", T)
