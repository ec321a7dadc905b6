"""SF's gain against the patch compression ratio (patch dim C*p*p over the bottleneck width): the regime study.

The paper's claim is that SF helps most where tokenization is coarse, i.e. where the patch embedder squeezes many
pixel dims into few (JiT-B/32: 3,072 -> 128, 24x; B/16: 768 -> 128, 6x). Runs log the derived param
`model.compression_ratio` (trainers/training/builders.py), so every seed-paired comparison of `analysis.compare` gets an x value
whether the ratio was varied through the patch size or through `model.bottleneck` at a fixed patch size (which keeps
the token count fixed and so separates compression from token count).

- `ratio_table`: one row per comparison (metric, context, SF configuration, patch size) with its ratio, grouped into
  lines = the context without the bottleneck (e.g. one line per data spectrum); the interval is the comparison's own
  (calibrated Student-t by default, `analysis.intervals`).
- `trend_table`: per line, the trend of the gain with log2(ratio): the least-squares slope of the individual
  seed-paired differences on log2(ratio), which is a linear contrast of the per-ratio mean differences; its interval
  uses each ratio's own variance and Welch-Satterthwaite degrees of freedom (`slope_contrast`), so a ratio whose
  differences spread more does not make the interval too narrow (pooled OLS would assume one SD for all ratios);
  plus the difference of the mean gains at the largest and smallest ratio (the coarse-vs-fine interaction's method,
  `analysis.compare.gain_difference_ci`). An adaptive sweep's report shows no trend test: only its family's
  anytime-valid intervals hold at the data-dependent stopping time.
- `regime_sentences`: the verdict in words, following those intervals ("grows" only when the slope's interval
  excludes 0 in the gain direction).

    python -c "from analysis import load_runs; from analysis.compare import compare_arms; \\
        from analysis.regime import ratio_table; r = load_runs('regime', 'sqlite:///mlflow.db'); \\
        print(ratio_table(r, compare_arms(r, ['eval/denoise_loss']), 'eval/denoise_loss'))"
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
from scipy import stats

from analysis.compare import Comparison, comparable_trials, gain_difference_ci, pairs_of, seed_deltas
from analysis.intervals import MATCHED_INTERACTION, difference_of_means_ci, method_label
from analysis.selection import context_columns
from analysis.numbers import fmt_ci
from analysis.verdict import fmt_p, pct, short
from specforce_contracts import MODEL_BOTTLENECK, MODEL_COMPRESSION_RATIO, higher_is_better

RATIO_PARAM, BOTTLENECK_PARAM = f"params.{MODEL_COMPRESSION_RATIO}", f"params.{MODEL_BOTTLENECK}"
RATIO_COLUMNS = ["metric", "line", "compression_ratio", "patch_size", "bottleneck", "tokens", "baseline_mean",
                 "sf_mean", "delta", "ci_low", "ci_high", "n_pairs", "relative_delta", "context", "sf_config"]
TREND_COLUMNS = ["metric", "line", "ratios", "n_pairs", "slope_per_doubling", "slope_low", "slope_high", "slope_p",
                 "low_ratio", "high_ratio", "extremes_difference", "extremes_low", "extremes_high", "extremes_p"]


def _numeric(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")


def _options_label(value: object, varying: list[str]) -> str:
    try:
        options = json.loads(value) if isinstance(value, str) else {}
    except json.JSONDecodeError:
        return f"data.options={value}"
    return ", ".join(f"{k}={options.get(k)}" for k in varying)


def _line_labeller(trials: pd.DataFrame):
    """A function run row -> line label: the context params (bar the bottleneck, which is on the x axis); for
    data.options only the option keys that vary (e.g. "alpha_data=1.5")."""
    cols = [c for c in context_columns(trials) if c != BOTTLENECK_PARAM]
    varying: dict[str, list[str]] = {}
    for c in cols:
        if c.endswith(".options"):
            parsed = [json.loads(v) if isinstance(v, str) and v.startswith("{") else {} for v in trials[c].dropna()]
            keys = sorted({k for p in parsed for k in p})
            varying[c] = [k for k in keys if len({json.dumps(p.get(k)) for p in parsed}) > 1]

    def label(row: pd.Series) -> str:
        parts = [_options_label(row[c], varying[c]) if c in varying else f"{c.removeprefix('params.')}={row[c]}"
                 for c in cols]
        return ", ".join(p for p in parts if p)
    return label


def ratio_table(runs: pd.DataFrame, comparison: Comparison, metric: str) -> pd.DataFrame:
    """One row per comparison of `metric` that has seed pairs and a logged compression ratio (RATIO_COLUMNS)."""
    table = comparison.comparisons
    rows = table[(table["metric"] == metric) & (table["n_pairs"] > 0)]
    pairs = comparison.pairs[comparison.pairs["metric"] == metric]
    if rows.empty or RATIO_PARAM not in runs or pairs.empty:
        return pd.DataFrame(columns=RATIO_COLUMNS)
    by_id = runs.set_index("run_id")
    label = _line_labeller(comparable_trials(runs))
    out = []
    for _, row in rows.iterrows():
        sel = pairs_of(pairs, row)
        members = by_id.loc[list(sel["baseline_run_id"]) + list(sel["sf_run_id"])]
        ratios = _numeric(members[RATIO_PARAM]).dropna().unique()
        if len(ratios) != 1:  # not logged (older runs), or a comparison that mixes ratios: no x value to plot
            continue
        bottleneck = _numeric(members.get(BOTTLENECK_PARAM, pd.Series(dtype=float))).dropna().unique()
        line = ", ".join(x for x in (label(members.iloc[0]), row["sf_config"]) if x)
        base = row["baseline_mean"]
        out.append({"metric": metric, "line": line or "all runs", "compression_ratio": float(ratios[0]),
                    "patch_size": int(row["patch_size"]), "bottleneck": int(bottleneck[0]) if len(bottleneck) == 1
                    else None, "tokens": row["tokens"], "baseline_mean": base, "sf_mean": row["sf_mean"],
                    "delta": row["delta"], "ci_low": row["ci_low"], "ci_high": row["ci_high"],
                    "n_pairs": int(row["n_pairs"]),
                    "relative_delta": row["delta"] / abs(base) if base and math.isfinite(base) else math.nan,
                    "context": row["context"], "sf_config": row["sf_config"]})
    return (pd.DataFrame(out, columns=RATIO_COLUMNS).sort_values(["line", "compression_ratio", "patch_size"])
            .reset_index(drop=True))


def varies_ratio(ratios: pd.DataFrame) -> bool:
    """True when some line has comparisons at two or more compression ratios (the figure has something to show)."""
    return bool(len(ratios)) and bool((ratios.groupby("line")["compression_ratio"].nunique() >= 2).any())


def slope_contrast(groups: list[tuple[float, np.ndarray]], confidence: float) -> tuple[float, float, float, float]:
    """Least-squares slope of the pooled points (x_i, d_ij) on x, with a Welch-Satterthwaite interval.

    The slope is sum_i c_i * mean_i with c_i = n_i (x_i - xbar) / Sxx (xbar and Sxx weighted by the n_i), so its
    variance is sum_i c_i^2 s_i^2 / n_i from each group's own variance s_i^2, on Satterthwaite's degrees of freedom
    (the Welch t-test is the two-group case). Needs >= 2 distinct x and >= 2 points per group; else NaNs.
    Returns (slope, low, high, two-sided p)."""
    groups = [(float(x), np.asarray(d, dtype=np.float64)) for x, d in groups]
    if len({x for x, _ in groups}) < 2 or any(d.size < 2 for _, d in groups):
        return math.nan, math.nan, math.nan, math.nan
    n = np.array([d.size for _, d in groups], dtype=np.float64)
    x = np.array([x for x, _ in groups])
    means = np.array([d.mean() for _, d in groups])
    var = np.array([d.var(ddof=1) for _, d in groups])
    xbar = float(np.sum(n * x) / n.sum())
    sxx = float(np.sum(n * (x - xbar) ** 2))
    c = n * (x - xbar) / sxx
    slope = float(np.sum(c * means))
    terms = c ** 2 * var / n
    se2 = float(terms.sum())
    if se2 == 0:
        return slope, slope, slope, 0.0 if slope else 1.0
    df = se2 ** 2 / float(np.sum(terms ** 2 / (n - 1)))
    se = math.sqrt(se2)
    q = stats.t.ppf(0.5 + confidence / 2, df)
    return slope, slope - q * se, slope + q * se, float(2 * stats.t.sf(abs(slope / se), df))


def trend_table(ratios: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """Per line with >= 2 ratios: the slope of the paired Δ per doubling of the ratio and the extremes' difference."""
    out = []
    pairs = comparison.pairs
    for line, rows in ratios.groupby("line", sort=True):
        if rows["compression_ratio"].nunique() < 2:
            continue
        per_row = []  # (ratio, SF - baseline deltas indexed by seed) for each comparison on the line
        for _, row in rows.iterrows():
            per_row.append((row["compression_ratio"], seed_deltas(pairs, row)))
        # two comparisons at one ratio (patch and bottleneck axes mixed) pool into one group of that x
        by_x: dict[float, list[np.ndarray]] = {}
        for r, d in per_row:
            by_x.setdefault(math.log2(r), []).append(d.to_numpy())
        groups = [(x, np.concatenate(ds)) for x, ds in sorted(by_x.items())]
        slope, lo, hi, p = slope_contrast(groups, comparison.confidence)
        low_ratio, high_ratio = min(r for r, _ in per_row), max(r for r, _ in per_row)
        at_high = [d for r, d in per_row if r == high_ratio]
        at_low = [d for r, d in per_row if r == low_ratio]
        if len(at_high) == 1 and len(at_low) == 1:  # one comparison per extreme: seeds can be matched
            ext = gain_difference_ci(at_high[0], at_low[0], confidence=comparison.confidence,
                                     method=comparison.interaction_method)
        else:  # pooled comparisons: a seed may appear twice, so no matching
            ext = difference_of_means_ci(pd.concat(at_high).to_numpy(), pd.concat(at_low).to_numpy(),
                                         confidence=comparison.confidence, method=comparison.interaction_method)
        out.append({"metric": rows["metric"].iloc[0], "line": line, "ratios": int(rows["compression_ratio"].nunique()),
                    "n_pairs": int(sum(d.size for _, d in groups)), "slope_per_doubling": slope, "slope_low": lo, "slope_high": hi,
                    "slope_p": p, "low_ratio": low_ratio, "high_ratio": high_ratio,
                    "extremes_difference": ext.estimate, "extremes_low": ext.low, "extremes_high": ext.high,
                    "extremes_p": ext.p_value})
    return pd.DataFrame(out, columns=TREND_COLUMNS)


def _x(ratio: float) -> str:
    return f"{ratio:.3g}x"


def _status(rows: pd.DataFrame, metric: str) -> str:
    """Which ratios SF helps, hurts or leaves unresolved, by each comparison's own interval."""
    hib = higher_is_better(metric)
    groups: dict[str, list[str]] = {"better": [], "worse": [], "no clear effect": []}
    for _, r in rows.sort_values("compression_ratio", ascending=False).iterrows():
        if not (math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])) or r["ci_low"] <= 0 <= r["ci_high"]:
            key = "no clear effect"
        else:
            key = "better" if (r["delta"] > 0) == hib else "worse"
        groups[key].append(_x(r["compression_ratio"]))
    words = {"better": "SF better at", "worse": "SF worse at", "no clear effect": "no clear effect at"}
    return "; ".join(f"{words[k]} {', '.join(v)}" for k, v in groups.items() if v)


def regime_sentences(ratios: pd.DataFrame, trends: pd.DataFrame, comparison: Comparison) -> list[str]:
    """One sentence per line: the trend of SF's gain with compression, then where it helps, in the metric's words."""
    out = []
    conf = comparison.confidence
    for _, t in trends.iterrows():
        metric = t["metric"]
        flip = 1.0 if higher_is_better(metric) else -1.0  # gain = improvement in the metric's better direction
        g, gl, gh = flip * t["slope_per_doubling"], *sorted((flip * t["slope_low"], flip * t["slope_high"]))
        rows = ratios[ratios["line"] == t["line"]]
        hi_row = rows[rows["compression_ratio"] == t["high_ratio"]].iloc[0]
        lo_row = rows[rows["compression_ratio"] == t["low_ratio"]].iloc[0]
        ends = []
        for r in (hi_row, lo_row):
            e, lo, hi = fmt_ci(r["delta"], r["ci_low"], r["ci_high"])
            ends.append(f"at {_x(r['compression_ratio'])} Δ {e} [{lo}, {hi}]")
        if comparison.method in MATCHED_INTERACTION:
            # an adaptive sweep: its stopping rule made only the family's intervals valid at the stopping time; a
            # fixed-n trend test on the same data would not hold its coverage
            trend = (f"SF's gain in {short(metric)} across compression (no trend test: this sweep stopped "
                     "adaptively, and only its anytime-valid comparisons are shown)")
        elif not (math.isfinite(gl) and math.isfinite(gh)):
            trend = f"no trend estimate for SF's gain in {short(metric)} (too few pairs)"
        else:
            e, lo, hi = fmt_ci(g, gl, gh)
            stats_text = (f"gain per doubling of the ratio {e} ({pct(conf)} CI [{lo}, {hi}], p = {fmt_p(t['slope_p'])}, "
                          f"least-squares slope of {int(t['n_pairs'])} seed-paired differences on log2 ratio, "
                          "Welch-Satterthwaite)")
            if gl > 0:
                trend = f"SF's gain in {short(metric)} grows with compression: {stats_text}"
            elif gh < 0:
                trend = f"SF's gain in {short(metric)} shrinks with compression: {stats_text}"
            else:
                trend = f"no clear trend of SF's gain in {short(metric)} with compression: {stats_text}"
        ext = ""
        if math.isfinite(t["extremes_low"]):
            e, lo, hi = fmt_ci(flip * t["extremes_difference"], *sorted((flip * t["extremes_low"],
                                                                    flip * t["extremes_high"])))
            ext = (f"; gain at {_x(t['high_ratio'])} minus gain at {_x(t['low_ratio'])}: {e} ({pct(conf)} CI [{lo}, "
                   f"{hi}], {method_label(comparison.interaction_method)})")
        out.append(f"{t['line']}: {trend}; {'; '.join(ends)}{ext}; {_status(rows, metric)}.")
    return out
