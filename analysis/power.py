"""Power of the paired t-test, and the number of seed pairs that would detect an effect.

With n pairs whose differences have SD `sd`, the two-sided level-alpha t-test of "mean difference = 0" rejects when
|T| > t_{1-alpha/2, n-1}; under a true mean difference `effect`, T follows a noncentral t with n-1 degrees of freedom
and noncentrality effect / sd * sqrt(n). Power is the probability of that rejection; `pairs_for_power` is the
smallest n that reaches the target. The SD comes from the observed paired differences, so with 2-3 pairs the answer
is itself uncertain: it is a plan for the next runs, not a guarantee.

    python -c "from analysis.power import pairs_for_power; print(pairs_for_power(0.10, 0.20))"   # -> 34
"""
from __future__ import annotations

import math

from scipy import integrate, stats

MAX_PAIRS = 100_000


def paired_t_power(effect: float, sd: float, n: int, *, alpha: float = 0.05) -> float:
    """Probability that the two-sided paired t-test at level alpha rejects with n pairs, true mean `effect`."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2 (the t-test needs a spread), got {n!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if not (math.isfinite(sd) and sd > 0):
        raise ValueError(f"sd must be a positive finite number, got {sd!r}")
    df = n - 1
    crit = stats.t.ppf(1.0 - alpha / 2.0, df)
    nc = abs(effect) / sd * math.sqrt(n)
    power = float(stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc))
    if not math.isfinite(power):  # scipy's noncentral t returns NaN far in its tail (e.g. nc 11 at df 2)
        power = _power_by_integration(crit, df, nc)
    return power


def _power_by_integration(crit: float, df: int, nc: float) -> float:
    """P(|T| > crit) for T = (Z + nc) / sqrt(V / df), V ~ chi2(df), by integrating the normal tails over V."""
    def tails(v: float) -> float:
        scale = crit * math.sqrt(v / df)
        return (stats.norm.sf(scale - nc) + stats.norm.cdf(-scale - nc)) * stats.chi2.pdf(v, df)

    value, _ = integrate.quad(tails, 0.0, math.inf, limit=200)
    return min(1.0, max(0.0, float(value)))


def pairs_for_power(effect: float, sd: float, *, power: float = 0.8, alpha: float = 0.05) -> int | None:
    """Smallest number of pairs (>= 2) whose paired t-test reaches `power` for `effect`; None when it cannot be
    computed (effect 0 or not finite, sd not positive) or would exceed 100,000 pairs."""
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie in (0, 1), got {power!r}")
    if not (math.isfinite(effect) and math.isfinite(sd)) or effect == 0 or sd <= 0:
        return None
    # normal approximation as the starting point, then walk to the exact noncentral-t answer
    z = stats.norm.ppf(1.0 - alpha / 2.0) + stats.norm.ppf(power)
    n = max(2, math.ceil((z * sd / abs(effect)) ** 2))
    if n > MAX_PAIRS:
        return None
    while n > 2 and paired_t_power(effect, sd, n - 1, alpha=alpha) >= power:
        n -= 1
    while paired_t_power(effect, sd, n, alpha=alpha) < power:
        n += 1
        if n > MAX_PAIRS:
            return None
    return n
