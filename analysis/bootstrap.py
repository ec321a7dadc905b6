"""Bootstrap confidence intervals for seed-paired differences and for the difference of two gains.

Short runs are dominated by seed-to-seed spread (DESIGN.md §4), so arms are compared on paired differences
`d_i = sf_i - baseline_i` over matching seeds; the interval is for the mean of d. The coarse-vs-fine interaction is
`mean(d_coarse) - mean(d_fine)`, resampling the two sets of pairs independently (they are different models).
With fewer than 2 pairs there is no spread to resample, so the interval is reported as undefined, never invented.

The default method is the *expanded* percentile interval (Hesterberg 2015): the plain percentile bootstrap covers
too rarely with the 3-5 seeds a sweep affords (about 88% instead of 95% at n=5), so the percentile levels are
widened to those matching Student's t: z' = sqrt(n/(n-1)) * t_{n-1}. Plain "percentile", "basic" and "BCa"
(all scipy.stats.bootstrap) remain available.

    python -c "from analysis.bootstrap import paired_mean_ci; print(paired_mean_ci([-6.0, -4.5, -7.2, -5.1]))"
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import stats

METHODS = ("expanded-percentile", "percentile", "basic", "BCa")


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval; low/high are NaN (and `note` says why) when undefined."""

    estimate: float
    low: float
    high: float
    n: int  # pairs behind the estimate (for a difference of gains: the smaller of the two counts)
    confidence: float
    note: str = ""

    @property
    def defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def excludes_zero(self) -> bool:
        return self.defined and (self.low > 0 or self.high < 0)


def _sample(name: str, values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()!r}")
    return arr


def _check(confidence: float, n_resamples: int, method: str) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if not isinstance(n_resamples, int) or n_resamples < 100:
        raise ValueError(f"n_resamples must be an int >= 100, got {n_resamples!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _scipy_args(confidence: float, method: str, n: int) -> tuple[float, str]:
    """(confidence_level, method) for scipy: the expanded interval is a percentile one at a wider level."""
    if method != "expanded-percentile":
        return confidence, method
    z = math.sqrt(n / (n - 1)) * stats.t.ppf(0.5 + confidence / 2, n - 1)
    # with 2-3 pairs the level is within 1e-9 of 1: the interval is then the extreme resamples
    return min(1.0 - 2.0 * stats.norm.sf(z), 1.0 - 1e-9), "percentile"


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def paired_mean_ci(differences: Sequence[float], *, confidence: float = 0.95, n_resamples: int = 10_000,
                   seed: int = 0, method: str = "expanded-percentile") -> Interval:
    """Mean of paired differences with a bootstrap CI (fixed `seed`, so a report is reproducible)."""
    _check(confidence, n_resamples, method)
    d = _sample("differences", differences)
    n = d.size
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence, "undefined: no pairs")
    estimate = float(d.mean())
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, confidence, "CI undefined: 1 pair (needs at least 2)")
    if np.ptp(d) == 0:  # every resample has the same mean: the interval is exactly that point
        return Interval(estimate, estimate, estimate, n, confidence, "all differences equal")
    level, kind = _scipy_args(confidence, method, n)
    res = stats.bootstrap((d,), _mean, n_resamples=n_resamples, confidence_level=level, method=kind,
                          vectorized=True, rng=np.random.default_rng(seed))
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high), n, confidence)


def difference_of_means_ci(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95,
                           n_resamples: int = 10_000, seed: int = 0,
                           method: str = "expanded-percentile") -> Interval:
    """mean(a) - mean(b) for two independent samples (e.g. SF gains at two patch sizes) with a bootstrap CI."""
    _check(confidence, n_resamples, method)
    a_arr, b_arr = _sample("a", a), _sample("b", b)
    n = min(a_arr.size, b_arr.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence, "undefined: a side has no pairs")
    estimate = float(a_arr.mean() - b_arr.mean())
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, confidence,
                        f"CI undefined: {a_arr.size} and {b_arr.size} pairs (each side needs at least 2)")
    if np.ptp(a_arr) == 0 and np.ptp(b_arr) == 0:
        return Interval(estimate, estimate, estimate, n, confidence, "all differences equal")
    level, kind = _scipy_args(confidence, method, n)  # n = the smaller side: the conservative expansion
    res = stats.bootstrap((a_arr, b_arr), _mean_difference, n_resamples=n_resamples, confidence_level=level,
                          method=kind, paired=False, vectorized=True, rng=np.random.default_rng(seed))
    return Interval(estimate, float(res.confidence_interval.low), float(res.confidence_interval.high), n, confidence)
