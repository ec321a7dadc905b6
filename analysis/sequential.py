"""Anytime-valid intervals for adaptive seeds, and the pure stopping rule `decide(...)` (numpy + scipy only).

An adaptive sweep (spec section `seeds: {start, step, max, stop: decided}`) looks at the primary metric after each
round of seed pairs — at n = 3, 5, 7, 9, 11, 12 pairs for `{start: 3, step: 2, max: 12}` — and stops once every
comparison is decided. Looking repeatedly at fixed-n intervals and stopping when one excludes 0 ("peeking") makes
false discoveries far likelier than the nominal 5% (benchmarks/bench_sequential.py: 15.9% for one comparison over
those 6 looks, 15.1% family-wise for the demo's three comparisons). The intervals used for the decision, and
shown in the report, are therefore simultaneous over the looks.

Method: a group-sequential design with a Pocock-type boundary on the one-sample t statistic, calibrated by
simulation. Every comparison is a mean of per-seed values (the SF − baseline delta at one patch size, or for the
coarse-vs-fine interaction the per-seed double difference delta_coarse − delta_fine: seeds are matched across patch
sizes, so this is again a one-sample problem and needs no assumption on how the two deltas correlate). At look k
with n_k values the interval is

    mean ± t_{n_k − 1}(1 − a/2) · s / sqrt(n_k),

one nominal level `a` for every look. For iid normal values the joint law of (T_1, …, T_K), T_k = sqrt(n_k)
(mean_k − mu) / s_k, does not depend on mu or sigma (location-scale invariance), so `a` chosen by simulation such
that P(some |T_k| exceeds its quantile) = alpha gives intervals that cover mu *at every look simultaneously* with
probability 1 − alpha (up to Monte Carlo error, which the calibration spends conservatively: it targets alpha minus
two standard errors). Simultaneous coverage is what makes optional stopping honest: whichever look the rule stops
at, the interval reported there covers with probability >= 1 − alpha, and a "no effect larger than X" decision is
wrong only if an interval missed.

Why this one (widths for the demo's design, 3 comparisons sharing alpha 0.05, looks n = 3, 5, 7, 9, 11, 12; the
half-width in units of s/sqrt(n); `python -m analysis.sequential` prints it):

    n                                              3      5      7      9     11     12
    fixed-n t at 0.05/3 (NOT valid when peeking) 7.65   3.96   3.29   3.02   2.87   2.82
    Bonferroni over the 6 looks, t               18.9   6.57   4.88   4.26   3.94   3.83
    this design (nominal 0.00375 per look)       16.3   6.06   4.58   4.04   3.75   3.66

- Normal-mixture confidence sequences plug in a variance: invalid at n = 3 with unknown variance.
- Bonferroni over the looks is exactly valid but ignores that the looks share data; it is uniformly wider.
- Exact t confidence sequences (Lai 1976; Wang & Ramdas 2023) allow unplanned looks at any n, but must hold at
  every n up to infinity, so they spend alpha on looks this sweep never takes. The looks here are planned by the
  spec, so a group-sequential design that spends alpha only on them is the natural valid choice. Its guarantee is
  for the planned looks: a look with fewer pairs than planned (failed trials) uses the same nominal level at its
  own degrees of freedom; simulated, losing 2 of 12 seeds keeps the null error at 4.5% (bench_sequential.py).
- O'Brien-Fleming spends almost nothing early; with few seeds per round, stopping early is the point: Pocock.

Several comparisons share alpha by Bonferroni (alpha / number of comparisons each), which is valid whatever their
dependence: the family-wise probability that any interval, at any look, misses its true value is <= alpha.
Normality of the per-seed values is assumed (as by any t interval). Measured with 20,000 simulated sweeps run
through `decide` to max (bench_sequential.py), family-wise false effects for the demo's design: 4.5% (normal), 4.3%
(deltas at the two patch sizes correlated 0.8), 2.7% (t3 heavy tails); peeking at fixed-n intervals: 15.1%.

    python -m analysis.sequential                     # the width table above and the calibrated level
    python -m benchmarks.bench_sequential             # null false-decision rate and seeds used with an effect
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from analysis.intervals import Interval

N_SIMULATIONS = 200_000  # calibration draws: alpha = 0.0167 gets ~3,300 crossings, MC s.e. of the level ~1.7%
CALIBRATION_SEED = 20_110_511  # fixed: the same design always gets the same boundary, on every machine
EFFECT, NO_EFFECT, UNDECIDED = "effect", "no effect", "undecided"


def planned_looks(start: int, step: int, maximum: int) -> tuple[int, ...]:
    """Cumulative seed pairs at each look: start, start+step, ... and `maximum` as the last look."""
    if not (isinstance(start, int) and start >= 2):
        raise ValueError(f"start: needs at least 2 seed pairs per arm for a t interval, got {start!r}")
    if not (isinstance(step, int) and step >= 1):
        raise ValueError(f"step: must be a positive integer, got {step!r}")
    if not (isinstance(maximum, int) and maximum >= start):
        raise ValueError(f"max: must be an integer >= start ({start}), got {maximum!r}")
    looks = list(range(start, maximum + 1, step))
    if looks[-1] != maximum:
        looks.append(maximum)
    return tuple(looks)


def _check_looks(looks: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(n) for n in looks)
    if not out or out[0] < 2 or any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"looks must be strictly increasing sample sizes starting at >= 2, got {list(looks)!r}")
    return out


def min_p_values(looks: Sequence[int], n_sim: int, seed: int, chunk: int = 50_000) -> np.ndarray:
    """For `n_sim` iid N(0,1) sequences: the smallest two-sided t-test p-value over the looks (one per sequence).

    The design crosses at nominal level `a` exactly when this minimum is <= a.
    """
    looks = _check_looks(looks)
    idx = np.asarray(looks) - 1
    n = np.asarray(looks, dtype=np.float64)
    rng = np.random.default_rng(seed)
    out = []
    for begin in range(0, n_sim, chunk):
        x = rng.standard_normal((min(chunk, n_sim - begin), looks[-1]))
        s1 = np.cumsum(x, axis=1)[:, idx]
        s2 = np.cumsum(x * x, axis=1)[:, idx]
        mean = s1 / n
        var = np.maximum(s2 - n * mean * mean, 0.0) / (n - 1)
        t = mean / np.sqrt(var / n)
        out.append((2.0 * stats.t.sf(np.abs(t), n - 1)).min(axis=1))
    return np.concatenate(out)


@lru_cache(maxsize=64)
def nominal_alpha(looks: tuple[int, ...], alpha: float, n_sim: int = N_SIMULATIONS, seed: int = CALIBRATION_SEED,
                  conservative: bool = True) -> float:
    """The per-look two-sided level `a` at which the chance of any crossing over `looks` is `alpha` (normal data).

    conservative: target alpha minus two Monte Carlo standard errors, so the error is <= alpha despite the
    simulation noise. One look is a fixed-n t interval: `a` = alpha exactly.
    """
    looks = _check_looks(looks)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if len(looks) == 1:
        return float(alpha)
    target = alpha - (2.0 * math.sqrt(alpha * (1.0 - alpha) / n_sim) if conservative else 0.0)
    return float(np.quantile(min_p_values(looks, n_sim, seed), target))


def crossing_probability(looks: Sequence[int], level: float, n_sim: int, seed: int) -> float:
    """Monte Carlo P(any look's t-test rejects at two-sided `level`) for iid normal data (checks a calibration)."""
    return float(np.mean(min_p_values(looks, n_sim, seed) <= level))


@dataclass(frozen=True)
class Design:
    """The planned looks, the family-wise alpha shared by `family_size` comparisons, and the equivalence margin."""

    looks: tuple[int, ...]
    alpha: float = 0.05
    family_size: int = 1
    min_effect: float | None = None
    # "pocock": the calibrated boundary (shipped); "bonferroni": alpha/looks per look (valid, wider); "fixed-n": every
    # look at the single-look level (NOT valid when peeking; the benchmark's picture of what peeking does)
    boundary: str = "pocock"
    nominal: float = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "looks", _check_looks(self.looks))
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha!r}")
        if not (isinstance(self.family_size, int) and self.family_size >= 1):
            raise ValueError(f"family_size must be a positive integer, got {self.family_size!r}")
        if self.min_effect is not None and not (math.isfinite(self.min_effect) and self.min_effect > 0):
            raise ValueError(f"min_effect must be a positive number or None, got {self.min_effect!r}")
        each = self.alpha / self.family_size
        levels = {"pocock": lambda: nominal_alpha(self.looks, each), "bonferroni": lambda: each / len(self.looks),
                  "fixed-n": lambda: each}
        if self.boundary not in levels:
            raise ValueError(f"boundary must be one of {tuple(levels)}, got {self.boundary!r}")
        object.__setattr__(self, "nominal", float(levels[self.boundary]()))

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha

    def critical_value(self, n: int) -> float:
        """The t multiplier of s/sqrt(n) at a look with n values."""
        return _t_quantile(self.nominal, n - 1)

    def as_dict(self) -> dict:
        return {"looks": list(self.looks), "alpha": self.alpha, "family_size": self.family_size,
                "min_effect": self.min_effect, "nominal_alpha_per_look": self.nominal, "boundary": self.boundary,
                "method": "group-sequential t, Pocock-type boundary calibrated by simulation; Bonferroni across "
                          "comparisons" if self.boundary == "pocock" else f"t at every look, {self.boundary} level"}


@lru_cache(maxsize=4096)
def _t_quantile(level: float, df: int) -> float:
    return float(stats.t.ppf(1.0 - level / 2.0, df))


def sequential_interval(values: Sequence[float], design: Design) -> Interval:
    """The design's interval for the mean of `values` (the seed values available at this look)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError(f"values must be a finite one-dimensional sequence, got {values!r}")
    n = x.size
    if n > design.looks[-1]:
        raise ValueError(f"{n} values but the design plans at most {design.looks[-1]} per comparison")
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, design.confidence, "undefined: no pairs")
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1, design.confidence, "undefined: 1 pair (needs at least 2)")
    half = design.critical_value(n) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, design.confidence,
                    f"anytime-valid over {len(design.looks)} looks")


@dataclass(frozen=True)
class ComparisonDecision:
    name: str
    interval: Interval
    status: str  # EFFECT | NO_EFFECT | UNDECIDED

    @property
    def text(self) -> str:
        i = self.interval
        if not i.defined:
            return f"{self.name}: undecided ({i.note})"
        span = f"{i.estimate:+.4g} [{i.low:+.4g}, {i.high:+.4g}]"
        if self.status == EFFECT:
            return f"{self.name}: {span} excludes 0"
        if self.status == NO_EFFECT:
            return f"{self.name}: {span} inside ±min_effect: no effect that large"
        return f"{self.name}: {span} undecided"


@dataclass(frozen=True)
class Decision:
    look: int  # 1-based index of the look (round)
    planned_seeds: int  # seeds per arm planned by this look
    stop: bool
    reason: str
    comparisons: tuple[ComparisonDecision, ...]
    missing: int = 0  # comparisons of the design with no values yet

    @property
    def outcome(self) -> str:
        """decided (every comparison decided) | max_reached | continue"""
        if not self.stop:
            return "continue"
        return "decided" if self.all_decided else "max_reached"

    @property
    def all_decided(self) -> bool:
        return bool(self.comparisons) and not self.missing and all(c.status != UNDECIDED for c in self.comparisons)

    def as_dict(self) -> dict:
        return {"look": self.look, "planned_seeds": self.planned_seeds, "stop": self.stop, "outcome": self.outcome,
                "reason": self.reason,
                "comparisons": [{"name": c.name, "status": c.status, "estimate": c.interval.estimate,
                                 "ci_low": c.interval.low, "ci_high": c.interval.high, "n": c.interval.n,
                                 "confidence": c.interval.confidence, "note": c.interval.note, "text": c.text}
                                for c in self.comparisons]}


def classify(interval: Interval, min_effect: float | None) -> str:
    if not interval.defined:
        return UNDECIDED
    if interval.low > 0 or interval.high < 0:
        return EFFECT
    if min_effect is not None and -min_effect < interval.low and interval.high < min_effect:
        return NO_EFFECT
    return UNDECIDED


def decide(comparisons: Mapping[str, Sequence[float]], design: Design, look: int) -> Decision:
    """The stopping rule: stop when every one of the design's comparisons is decided, or at the last look.

    comparisons: name -> the per-seed values available at this look (SF − baseline deltas, or per-seed double
    differences for an interaction). A comparison of the design that has no entry yet counts as undecided.
    look: 1-based index into design.looks.
    """
    if not (isinstance(look, int) and 1 <= look <= len(design.looks)):
        raise ValueError(f"look must be an integer in 1..{len(design.looks)}, got {look!r}")
    if len(comparisons) > design.family_size:
        raise ValueError(f"{len(comparisons)} comparisons ({sorted(comparisons)}) but the design shares alpha among "
                         f"{design.family_size}: the family must be fixed before the first look")
    planned = design.looks[look - 1]
    decisions = []
    for name, values in comparisons.items():
        if len(values) > planned:
            raise ValueError(f"comparison {name!r}: {len(values)} values at look {look}, which plans {planned}")
        interval = sequential_interval(values, design)
        decisions.append(ComparisonDecision(name, interval, classify(interval, design.min_effect)))
    missing = design.family_size - len(decisions)
    undecided = [d.name for d in decisions if d.status == UNDECIDED]
    last = look == len(design.looks)
    if missing:
        reason = f"missing {missing} of {design.family_size} comparisons (no seed pairs yet)"
    elif undecided:
        reason = f"undecided: {', '.join(undecided)}"
    else:
        effects = [d.name for d in decisions if d.status == EFFECT]
        nulls = [d.name for d in decisions if d.status == NO_EFFECT]
        parts = ([f"effect in {', '.join(effects)}"] if effects else []) + \
                ([f"no effect beyond ±{design.min_effect:g} in {', '.join(nulls)}"] if nulls else [])
        reason = "every comparison decided: " + "; ".join(parts)
    if last and (missing or undecided):
        reason = f"max {planned} seeds reached; {reason}"
    return Decision(look, planned, last or not (missing or undecided), reason, tuple(decisions), missing)


@dataclass(frozen=True)
class Simulation:
    """The stopping rule run on simulated seeds, `n_sim` times."""

    false_effect: float  # share of runs where a comparison with true mean 0 was ever declared an effect
    false_no_effect: float  # share where a comparison with |true mean| >= min_effect was declared "no effect"
    any_error: float  # share with either error, or an effect declared with the wrong sign (family-wise)
    mean_seeds: float  # average seeds per arm when the rule stopped
    decided: float  # share of runs that stopped with every comparison decided (rather than at max)
    stop_looks: tuple[float, ...]  # share of runs stopping at each look
    n_sim: int


def comparison_means(patch_means: Sequence[float]) -> dict[str, float]:
    """True means of the family of P patch sizes (coarse first): each patch delta, then each coarse − fine pair."""
    names = {f"patch {i}": float(m) for i, m in enumerate(patch_means)}
    for i in range(len(patch_means)):
        for j in range(i + 1, len(patch_means)):
            names[f"interaction {i}-{j}"] = float(patch_means[i]) - float(patch_means[j])
    return names


def simulate(design: Design, patch_means: Sequence[float], *, n_sim: int, seed: int, sd: float = 1.0,
             correlation: float = 0.0, noise: str = "normal", lost: Sequence[int] = ()) -> Simulation:
    """Run `decide` look by look on simulated per-seed SF − baseline deltas, one per patch size, until it stops.

    noise: "normal", or "t3" (Student-t with 3 df scaled to sd: heavy tails). correlation: between the deltas of
    the same seed at different patch sizes. lost: 0-based seed indices whose pairs are missing (failed trials).
    """
    P = len(patch_means)
    truth = comparison_means(patch_means)
    if len(truth) != design.family_size:
        raise ValueError(f"{P} patch sizes make {len(truth)} comparisons; the design plans {design.family_size}")
    rng = np.random.default_rng(seed)
    n_max = design.looks[-1]
    cov = sd * sd * (np.full((P, P), correlation) + (1 - correlation) * np.eye(P))
    chol = np.linalg.cholesky(cov)
    keep = np.ones(n_max, dtype=bool)
    keep[list(lost)] = False
    false_effect = false_null = any_error = decided = 0
    seeds_used, stops = [], np.zeros(len(design.looks))
    for _ in range(n_sim):
        z = rng.standard_normal((n_max, P))
        if noise == "t3":  # unit variance: t3 has variance 3
            z = z / np.sqrt(rng.chisquare(3, size=(n_max, 1)) / 3) / math.sqrt(3)
        elif noise != "normal":
            raise ValueError(f"noise must be 'normal' or 't3', got {noise!r}")
        d = np.asarray(patch_means) + z @ chol.T
        err_effect = err_null = err_any = False
        for k, n in enumerate(design.looks, start=1):
            sel = d[:n][keep[:n]]
            values = {f"patch {i}": sel[:, i] for i in range(P)}
            for i in range(P):
                for j in range(i + 1, P):
                    values[f"interaction {i}-{j}"] = sel[:, i] - sel[:, j]
            decision = decide(values, design, k)
            for c in decision.comparisons:
                mu = truth[c.name]
                if c.status == EFFECT and mu == 0:
                    err_effect = True
                if c.status == EFFECT and not (c.interval.low <= mu <= c.interval.high):
                    err_any = True
                if c.status == NO_EFFECT and design.min_effect is not None and abs(mu) >= design.min_effect:
                    err_null = True
            if decision.stop:
                seeds_used.append(n)
                stops[k - 1] += 1
                decided += decision.all_decided
                break
        false_effect += err_effect
        false_null += err_null
        any_error += err_effect or err_null or err_any
    return Simulation(false_effect / n_sim, false_null / n_sim, any_error / n_sim, float(np.mean(seeds_used)),
                      decided / n_sim, tuple(float(x) for x in stops / n_sim), n_sim)


def width_table(design: Design) -> str:
    """Half-width multipliers (units of s/sqrt(n)) at each look: fixed-n t, Bonferroni over looks, this design."""
    a = design.alpha / design.family_size
    rows = [("n", [str(n) for n in design.looks]),
            (f"fixed-n t, {a:.3g} (not valid when peeking)", [f"{_t_quantile(a, n - 1):.3g}" for n in design.looks]),
            (f"Bonferroni over {len(design.looks)} looks, t",
             [f"{_t_quantile(a / len(design.looks), n - 1):.3g}" for n in design.looks]),
            (f"this design (nominal {design.nominal:.4g} per look)",
             [f"{design.critical_value(n):.3g}" for n in design.looks])]
    return "\n".join(f"{label:<48}" + "".join(f"{v:>7}" for v in values) for label, values in rows)


if __name__ == "__main__":
    demo = Design(planned_looks(3, 2, 12), alpha=0.05, family_size=3)
    print(f"design: {demo.as_dict()}")
    print(width_table(demo))
