"""Which sample-quality measures can separate the arms at the run's sample count, judged against their own floor.

A sample-quality measure from n samples has a floor: the same measure between two real sets of n images
(`<metric>_floor`, trainers/evaluation/references.py). Whether it can tell SF from the baseline at this n is decided per
comparison (metric, context, patch size), from what the runs logged:

- with a subset SD (`<metric>_std`, e.g. KID): the estimator's own noise for the difference of two runs is
  sqrt(2) x the median subset SD; the measure separates the arms when the mean paired |Δ| is at least twice that.
- without one (Fréchet distances): the floor is the estimator's bias at this n. When both arms sit within 10% of it
  (value - floor < 0.1 x floor) the values are mostly bias and the measure cannot separate the arms at this n;
  otherwise it does when the paired interval excludes 0.

The report leads its secondary list with the measures that separate the arms (`order_secondary`).

    python -c "from analysis import load_runs; from analysis.compare import compare_arms; \\
        from analysis.resolution import resolution_table; r = load_runs('demo', 'sqlite:///mlflow.db'); \\
        print(resolution_table(r, compare_arms(r, ['eval/denoise_loss', 'eval/kid_pixel'])))"
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.compare import Comparison, pairs_of

AT_FLOOR = 0.10  # FD within 10% of its floor: the value is mostly the estimator's bias
RESOLUTION_COLUMNS = ["metric", "patch_size", "context", "baseline_mean", "sf_mean", "floor", "excess_over_floor",
                      "abs_delta", "noise", "noise_source", "resolves", "why"]


def floor_metrics(runs: pd.DataFrame, metrics: list[str]) -> list[str]:
    """The compared metrics that logged a data-vs-data floor."""
    return [m for m in metrics if f"metrics.{m}_floor" in runs and runs[f"metrics.{m}_floor"].notna().any()]


def _judge(abs_delta: float, excess: float, floor: float, noise: float, has_std: bool, row: pd.Series
           ) -> tuple[bool, str]:
    if has_std:
        if not math.isfinite(noise):
            return False, "no subset SD logged"
        ok = abs_delta >= 2 * noise
        return ok, (f"|Δ| is {abs_delta / noise:.2g}x the estimator's SD of a difference" if noise > 0 else
                    "the estimator's SD is 0") + ("" if ok else " (needs >= 2x)")
    if not (math.isfinite(floor) and floor > 0):
        return False, "no positive floor to compare with"
    if excess < AT_FLOOR * floor:
        return False, f"both arms sit within {AT_FLOOR:.0%} of the floor: the values are mostly estimator bias"
    defined = math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"])
    if defined and (row["ci_low"] > 0 or row["ci_high"] < 0):
        return True, "above the floor, and the paired interval excludes 0"
    return False, "above the floor, but the paired interval includes 0 at this n"


def resolution_table(runs: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """One row per comparison of a floor-carrying metric: value, floor, noise, and whether it separates the arms."""
    table = comparison.comparisons
    metrics = floor_metrics(runs, list(dict.fromkeys(table["metric"])))
    by_id = runs.set_index("run_id")
    out = []
    for _, row in table[table["metric"].isin(metrics) & (table["n_pairs"] > 0)].iterrows():
        m = row["metric"]
        sel = pairs_of(comparison.pairs, row)
        members = by_id.loc[list(sel["baseline_run_id"]) + list(sel["sf_run_id"])]
        floor = float(pd.to_numeric(members[f"metrics.{m}_floor"], errors="coerce").mean())
        std_col = f"metrics.{m}_std"
        has_std = std_col in members and members[std_col].notna().any()
        noise = math.sqrt(2) * float(np.nanmedian(pd.to_numeric(members[std_col], errors="coerce"))) if has_std \
            else math.nan
        excess = max(row["baseline_mean"], row["sf_mean"]) - floor
        abs_delta = abs(float(row["delta"]))
        ok, why = _judge(abs_delta, excess, floor, noise, has_std, row)
        out.append({"metric": m, "patch_size": int(row["patch_size"]), "context": row["context"],
                    "baseline_mean": row["baseline_mean"], "sf_mean": row["sf_mean"], "floor": floor,
                    "excess_over_floor": excess, "abs_delta": abs_delta, "noise": noise,
                    "noise_source": "sqrt(2) x median subset SD" if has_std else "floor (bias at this n)",
                    "resolves": ok, "why": why})
    return pd.DataFrame(out, columns=RESOLUTION_COLUMNS)


def order_secondary(metrics: list[str], resolution: pd.DataFrame) -> list[str]:
    """The primary first; then floor measures that separate the arms somewhere, then measures without a floor,
    then floor measures that separate them nowhere (order otherwise kept)."""
    if resolution.empty:
        return list(metrics)
    resolving = set(resolution.loc[resolution["resolves"].astype(bool), "metric"])
    floored = set(resolution["metric"])
    head, rest = metrics[:1], metrics[1:]
    rank = {m: 0 if m in resolving else 2 if m in floored else 1 for m in rest}
    return head + sorted(rest, key=lambda m: rank[m])  # sorted is stable
