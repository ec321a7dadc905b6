"""analysis.schedules: c(t) and the SNR front against the closed forms of docs/design.md §1."""
import re

import numpy as np
import pytest

from analysis.schedules import cutoff, schedule_from_params, snr_front

T = np.linspace(0.0, 1.0, 101)


def test_linear_is_the_paper_ramp():
    c = cutoff("linear", T, c_min=0.05, c_max=1.0)
    np.testing.assert_allclose(c, 0.05 + 0.95 * T)
    assert c[0] == pytest.approx(0.05) and c[-1] == pytest.approx(1.0)


def test_contour_saturates_where_the_closed_form_says():
    alpha, c_min, c_max = 2.0, 0.05, 0.8
    c = cutoff("contour", T, c_min=c_min, c_max=c_max, alpha=alpha)
    expected = np.minimum(c_max, c_min * (1.0 - T[:-1]) ** (-2.0 / alpha))
    np.testing.assert_allclose(c[:-1], expected)
    assert c[-1] == c_max  # (1-t)^(-2/alpha) is infinite at t=1: clipped, not NaN
    t_sat = 1.0 - (c_min / c_max) ** (alpha / 2.0)  # c_min (1-t)^(-2/a) = c_max
    assert cutoff("contour", t_sat - 1e-6, c_min=c_min, c_max=c_max, alpha=alpha) < c_max
    assert cutoff("contour", t_sat + 1e-6, c_min=c_min, c_max=c_max, alpha=alpha) == c_max


def test_snr_schedule_is_the_clipped_front():
    alpha, r0 = 1.5, 0.1
    front = snr_front(T, alpha, r0)
    assert front[0] == 0.0 and np.isinf(front[-1])
    assert snr_front(0.5, alpha, r0) == pytest.approx(r0)  # t/(1-t) = 1 at t = 0.5
    assert np.all(np.diff(front[:-1]) > 0)
    c = cutoff("snr", T, alpha=alpha, r0=r0, c_min=0.05, c_max=0.9)
    np.testing.assert_allclose(c, np.clip(front, 0.05, 0.9))


def test_constant_is_time_independent():
    np.testing.assert_array_equal(cutoff("constant", T, c_const=0.3), np.full_like(T, 0.3))


@pytest.mark.parametrize("kwargs, message", [
    ({"schedule": "cosine", "t": 0.5}, "schedule must be one of"),
    ({"schedule": "linear", "t": 1.5}, "t must lie in [0, 1]"),
    ({"schedule": "linear", "t": 0.5, "c_min": 0.9, "c_max": 0.2}, "c_min=0.9"),
    ({"schedule": "snr", "t": 0.5}, "r0 is required"),
    ({"schedule": "contour", "t": 0.5, "alpha": -1.0}, "alpha must be a finite positive number, got -1.0"),
    ({"schedule": "constant", "t": 0.5, "c_const": 0.0}, "c_const must lie in (0, 1], got 0.0"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        cutoff(**kwargs)


def test_schedule_from_logged_params_follows_training_resolution():
    logged = {"spectral.schedule": "snr", "spectral.alpha": "2.5", "spectral.c_min": "0.05", "spectral.r0": "None",
              "data.spectrum_alpha": "1.8", "data.spectrum_r0": "0.07", "spectral.fit_from_data": "False"}
    kw = schedule_from_params(logged)
    assert kw == {"schedule": "snr", "c_min": 0.05, "alpha": 2.5, "r0": 0.07}  # r0 fitted, alpha chosen
    kw = schedule_from_params({**logged, "spectral.r0": "0.2"})
    assert kw["r0"] == 0.2
    kw = schedule_from_params({**logged, "spectral.r0": "0.2", "spectral.fit_from_data": "True",
                               "spectral.fitted_alpha": "1.7", "spectral.fitted_r0": "0.09"})
    assert (kw["alpha"], kw["r0"]) == (1.7, 0.09)
    with pytest.raises(ValueError, match="schedule 'snr' without spectral.r0"):
        schedule_from_params({"spectral.schedule": "snr"})
