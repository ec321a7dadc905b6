"""Confidence intervals and p-values for seed-paired differences and for the difference of two mean gains.

Arms are compared on paired differences `d_i = sf_i - baseline_i` over matching seeds (docs/design.md §4); the interval is
for the mean of d. The coarse-vs-fine interaction is `mean(d_coarse) - mean(d_fine)`: two independent samples
(different models), so its default is Welch's interval. With fewer than 2 pairs (on either side) there is no spread
to estimate, so the interval is undefined, never invented.

Methods, selectable by name (`PAIRED` and `TWO_SAMPLE` registries; `register_method` adds one in one call):

    paired      "t" (default): Student-t, exact for normal differences at any n >= 2; p-value of the one-sample t-test
                "expanded-percentile", "percentile", "basic", "BCa": bootstrap (scipy.stats.bootstrap), no p-value
    two-sample  "welch" (default): Welch-Satterthwaite t; p-value of Welch's test; and the same bootstrap names

Beside every paired interval, `sign_flip_p_value` gives the exact two-sided permutation p-value, which needs no
normality; its floor is 2/2^n, so below 6 pairs it can never reach 0.05.

Why Student-t and not the bootstrap (measured with `python -m analysis.calibration`, 20 s on one core: 20,000 null
draws per n for the t and Welch intervals, 2,000 for the bootstrap and the sign-flip test; nominal 95%; cells are
the share of intervals that exclude 0 when nothing differs, coverage = 100% minus it):

    n pairs                          2      3      4      5      6      7      8      9     10
    t, normal differences          5.0%   5.1%   4.8%   4.9%   4.8%   5.3%   4.7%   4.8%   4.9%
    expanded-percentile, normal   50.0%  25.3%  12.5%   7.1%   6.7%   6.3%   5.8%   5.7%   5.4%
    t, t3 (heavy-tailed) diffs     4.5%   4.0%   3.8%   3.7%   3.7%   3.8%   3.7%   4.2%   3.7%
    Welch, n+1 vs n, SD 3:1        3.4%   4.4%   5.2%   5.0%   5.0%   5.1%   5.4%   4.8%   4.9%
    sign-flip p <= 0.05            0.0%   0.0%   0.0%   0.0%   2.5%   4.6%   5.0%   5.0%   4.9%

The expanded percentile interval at 2-3 pairs asks for a level within 1e-9 of 1, so it is [min, max] of the
differences, which excludes 0 whenever they share a sign (1/2^(n-1) of null draws: 50% at 2 pairs, 25% at 3).
On heavy-tailed differences (Student's t with 3 degrees of freedom) the t-interval is conservative: it excludes 0
in 3.7-4.5% of null draws instead of 5% (coverage 95.5-96.3%), so heavy tails cost power, not false positives.
The sign-flip test never rejects below 6 pairs (its floor 2/2^n is 0.0625 at n=5).

    python -c "from analysis.intervals import paired_mean_ci; print(paired_mean_ci([-6.0, -4.5, -7.2, -5.1]))"
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats

SIGN_FLIP_EXACT_MAX = 16  # 2^16 sign patterns enumerated; beyond that a fixed-seed Monte-Carlo sample of them
SIGN_FLIP_DRAWS = 65_536
SIGN_FLIP_WORK = 2 ** 24  # draws x pairs: beyond 256 pairs the draws shrink (never below 8,192) to stay within it


@dataclass(frozen=True)
class Interval:
    """A point estimate with its interval; low/high are NaN (and `note` says why) when undefined."""

    estimate: float
    low: float
    high: float
    n: int  # pairs behind the estimate (for a difference of gains: the smaller of the two counts)
    confidence: float
    note: str = ""
    method: str = ""  # registry name of the method that made it
    p_value: float = math.nan  # two-sided p of "no effect" from the same method; NaN when it gives none

    @property
    def defined(self) -> bool:
        return math.isfinite(self.low) and math.isfinite(self.high)

    def excludes_zero(self) -> bool:
        return self.defined and (self.low > 0 or self.high < 0)


PairedFn = Callable[..., Interval]  # (d: 1-D array with n >= 2 and spread, confidence, **options) -> Interval
TwoSampleFn = Callable[..., Interval]  # (a, b: 1-D arrays, each n >= 2, not both constant, confidence, **options)


@dataclass(frozen=True)
class Method:
    name: str
    label: str  # how the report names it, e.g. "Student-t"
    fn: Callable[..., Interval]


PAIRED: dict[str, Method] = {}
TWO_SAMPLE: dict[str, Method] = {}
# paired methods whose coarse-vs-fine interaction, when the same seeds ran at both patch sizes, is their paired
# interval on the per-seed double differences (the adaptive sweeps' rule: the report must show the interval the
# stopping decision used); otherwise their two-sample form
MATCHED_INTERACTION: set[str] = set()
# the two-sample method an interaction uses when the paired comparison uses a method with no two-sample form
DEFAULT_INTERACTION = "welch"


def register_method(name: str, label: str, *, paired: PairedFn | None = None,
                    two_sample: TwoSampleFn | None = None, matched_interaction: bool = False) -> None:
    """Make a method selectable by name. Each function gets the validated samples, the confidence and **options
    (n_resamples, seed: methods that do not resample ignore them) and returns an Interval. matched_interaction:
    with seed-matched deltas at two patch sizes, the interaction is the paired form on per-seed double differences."""
    if paired is None and two_sample is None:
        raise ValueError(f"method {name!r}: give a paired function, a two-sample function, or both")
    if matched_interaction and paired is None:
        raise ValueError(f"method {name!r}: matched_interaction needs a paired function")
    (MATCHED_INTERACTION.add if matched_interaction else MATCHED_INTERACTION.discard)(name)
    if paired is not None:
        PAIRED[name] = Method(name, label, paired)
    if two_sample is not None:
        TWO_SAMPLE[name] = Method(name, label, two_sample)


def method_label(name: str) -> str:
    method = PAIRED.get(name) or TWO_SAMPLE.get(name)
    if method is None:
        raise ValueError(f"method must be one of {tuple(PAIRED)} (paired) or {tuple(TWO_SAMPLE)} (two-sample), "
                         f"got {name!r}")
    return method.label


def interaction_method(paired_method: str) -> str:
    """The two-sample method that goes with a paired one: the same name when it has a two-sample form, else Welch."""
    return paired_method if paired_method in TWO_SAMPLE else DEFAULT_INTERACTION


# ------------------------------------------------------------------------------------------ Student-t and Welch
def t_bounds(d: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, p) of the Student-t interval for the mean along the last axis (vectorised over the others)."""
    n = d.shape[-1]
    mean = d.mean(axis=-1)
    se = d.std(axis=-1, ddof=1) / math.sqrt(n)
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * se
    with np.errstate(divide="ignore", invalid="ignore"):
        p = 2.0 * stats.t.sf(np.abs(mean / se), n - 1)
    return mean - half, mean + half, p


def welch_bounds(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(low, high, p) of Welch's interval for mean(a) - mean(b) along the last axis (vectorised over the others)."""
    na, nb = a.shape[-1], b.shape[-1]
    va, vb = a.var(axis=-1, ddof=1) / na, b.var(axis=-1, ddof=1) / nb
    se = np.sqrt(va + vb)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (va + vb) ** 2 / (va ** 2 / (na - 1) + vb ** 2 / (nb - 1))  # Welch-Satterthwaite
        diff = a.mean(axis=-1) - b.mean(axis=-1)
        half = stats.t.ppf(0.5 + confidence / 2, df) * se
        p = 2.0 * stats.t.sf(np.abs(diff / se), df)
    return diff - half, diff + half, p


def _t_paired(d: np.ndarray, confidence: float, **_options) -> Interval:
    low, high, p = t_bounds(d, confidence)
    return Interval(float(d.mean()), float(low), float(high), d.size, confidence, method="t", p_value=float(p))


def _welch(a: np.ndarray, b: np.ndarray, confidence: float, **_options) -> Interval:
    low, high, p = welch_bounds(a, b, confidence)
    return Interval(float(a.mean() - b.mean()), float(low), float(high), min(a.size, b.size), confidence,
                    method="welch", p_value=float(p))


# ------------------------------------------------------------------------------------------------- bootstrap
def _scipy_args(confidence: float, method: str, n: int) -> tuple[float, str]:
    """(confidence_level, method) for scipy: the expanded interval is a percentile one at a wider level
    (Hesterberg 2015: z' = sqrt(n/(n-1)) * t_{n-1}). With 2-3 pairs that level is within 1e-9 of 1, so the
    interval is the extreme resamples, [min, max] of the data: the miscalibration the table above measures."""
    if method != "expanded-percentile":
        return confidence, method
    z = math.sqrt(n / (n - 1)) * stats.t.ppf(0.5 + confidence / 2, n - 1)
    return min(1.0 - 2.0 * stats.norm.sf(z), 1.0 - 1e-9), "percentile"


def _bootstrap(name: str) -> tuple[PairedFn, TwoSampleFn]:
    def paired(d: np.ndarray, confidence: float, *, n_resamples: int = 10_000, seed: int = 0, **_o) -> Interval:
        level, kind = _scipy_args(confidence, name, d.size)
        res = stats.bootstrap((d,), lambda x, axis=-1: np.mean(x, axis=axis), n_resamples=n_resamples,
                              confidence_level=level, method=kind, vectorized=True, rng=np.random.default_rng(seed))
        ci = res.confidence_interval
        return Interval(float(d.mean()), float(ci.low), float(ci.high), d.size, confidence, method=name)

    def two_sample(a: np.ndarray, b: np.ndarray, confidence: float, *, n_resamples: int = 10_000, seed: int = 0,
                   **_o) -> Interval:
        level, kind = _scipy_args(confidence, name, min(a.size, b.size))  # the smaller side: conservative
        res = stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(x, axis=axis) - np.mean(y, axis=axis),
                              n_resamples=n_resamples, confidence_level=level, method=kind, paired=False,
                              vectorized=True, rng=np.random.default_rng(seed))
        ci = res.confidence_interval
        return Interval(float(a.mean() - b.mean()), float(ci.low), float(ci.high), min(a.size, b.size), confidence,
                        method=name)

    return paired, two_sample


register_method("t", "Student-t", paired=_t_paired)
register_method("welch", "Welch", two_sample=_welch)
for _name, _label in (("expanded-percentile", "expanded-percentile bootstrap (Hesterberg 2015)"),
                      ("percentile", "percentile bootstrap"), ("basic", "basic bootstrap"), ("BCa", "BCa bootstrap")):
    _p, _t = _bootstrap(_name)
    register_method(_name, _label, paired=_p, two_sample=_t)

METHODS = tuple(PAIRED)  # built-in paired method names ("t" first: the default)
TWO_SAMPLE_METHODS = tuple(TWO_SAMPLE)  # built-in two-sample names ("welch" first: the default)


# ---------------------------------------------------------------------------------------------- entry points
def _sample(name: str, values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()!r}")
    return arr


def _check(confidence: float, n_resamples: int, method: str, registry: dict[str, Method]) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if not isinstance(n_resamples, int) or n_resamples < 100:
        raise ValueError(f"n_resamples must be an int >= 100, got {n_resamples!r}")
    if method not in registry:
        raise ValueError(f"method must be one of {tuple(registry)}, got {method!r}")


def paired_mean_ci(differences: Sequence[float], *, confidence: float = 0.95, method: str = "t",
                   n_resamples: int = 10_000, seed: int = 0) -> Interval:
    """Mean of paired differences with its CI (bootstrap methods use the fixed `seed`, so a report is reproducible)."""
    _check(confidence, n_resamples, method, PAIRED)
    d = _sample("differences", differences)
    n = d.size
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence, "undefined: no pairs", method)
    estimate = float(d.mean())
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, confidence, "CI undefined: 1 pair (needs at least 2)", method)
    if np.ptp(d) == 0:  # no spread: every method's interval is that point, and no test has a scale
        return Interval(estimate, estimate, estimate, n, confidence, "all differences equal", method)
    return PAIRED[method].fn(d, confidence, n_resamples=n_resamples, seed=seed)


def difference_of_means_ci(a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95,
                           method: str = "welch", n_resamples: int = 10_000, seed: int = 0) -> Interval:
    """mean(a) - mean(b) for two independent samples (e.g. SF gains at two patch sizes) with its CI."""
    _check(confidence, n_resamples, method, TWO_SAMPLE)
    a_arr, b_arr = _sample("a", a), _sample("b", b)
    n = min(a_arr.size, b_arr.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence, "undefined: a side has no pairs", method)
    estimate = float(a_arr.mean() - b_arr.mean())
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, confidence,
                        f"CI undefined: {a_arr.size} and {b_arr.size} pairs (each side needs at least 2)", method)
    if np.ptp(a_arr) == 0 and np.ptp(b_arr) == 0:
        return Interval(estimate, estimate, estimate, n, confidence, "all differences equal", method)
    return TWO_SAMPLE[method].fn(a_arr, b_arr, confidence, n_resamples=n_resamples, seed=seed)


def sign_flip_p_value(differences: Sequence[float]) -> float:
    """Exact two-sided sign-flip (permutation) p-value of "mean difference = 0" for paired differences.

    Under the null each difference is symmetric about 0, so every sign pattern is equally likely; the p-value is the
    share of the 2^n patterns whose |mean| is at least the observed one (enumerated for n <= 16; beyond, 65,536
    fixed-seed random patterns, (k+1)/(N+1); beyond 256 pairs N shrinks so that N x n <= 2^24,
    never below 8,192). Its floor is 2/2^n: the observed pattern and its mirror. NaN for n = 0.
    """
    d = _sample("differences", differences)
    n = d.size
    if n == 0:
        return math.nan
    observed = abs(d.mean())
    # ties (at least the mirror pattern) count; the tolerance absorbs rounding of sums taken in another order
    threshold = observed - 1e-9 * float(np.abs(d).mean())
    if n <= SIGN_FLIP_EXACT_MAX:
        signs = ((np.arange(2 ** n)[:, None] >> np.arange(n)) & 1) * 2.0 - 1.0
        return int(np.sum(np.abs(signs @ d) / n >= threshold)) / signs.shape[0]
    # random patterns from random bytes, 8 signs each, in blocks. Each byte indexes a table of the 256 signed sums
    # of its 8 pairs, so a pattern's statistic is one lookup per 8 pairs: a 65,536 x n sign matrix (650 MB at
    # n = 1,250) drawn sign by sign took a third of a 1,000-run report
    groups = (n + 7) // 8
    padded = np.zeros(groups * 8)
    padded[:n] = d  # padding pairs are 0: their signs add nothing
    byte_signs = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1) * 2.0 - 1.0  # (256, 8)
    table = byte_signs @ padded.reshape(groups, 8).T  # (256, groups): signed sum of each group's 8 pairs
    draws = max(8_192, min(SIGN_FLIP_DRAWS, SIGN_FLIP_WORK // n))  # Monte-Carlo SE of p <= 0.0056
    rng, hits, rows = np.random.default_rng(0), 0, max(1, min(draws, 2 ** 21 // groups))
    for start in range(0, draws, rows):
        m = min(rows, draws - start)
        codes = rng.integers(0, 256, size=(m, groups), dtype=np.uint8)
        flipped = table[codes, np.arange(groups)].sum(axis=1)
        hits += int(np.sum(np.abs(flipped) / n >= threshold))
    return (hits + 1) / (draws + 1)


def sign_flip_floor(n: int) -> float:
    """The smallest two-sided sign-flip p-value n pairs can give: 2/2^n (1.0 for n <= 1)."""
    return min(1.0, math.ldexp(1.0, 1 - n)) if n > 0 else math.nan  # 2/2**n overflowed a float past 1,023 pairs
