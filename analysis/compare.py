"""SF gain per tokenisation from seed-paired runs, and the coarse-vs-fine interaction, with calibrated intervals.

For each metric, patch size, SF configuration and context (the other params that vary, e.g. data.name), the SF
arm (spectral.enabled=True, grid runs; Optuna-searched SF trials go to `analysis.search`) is paired with the
baseline (spectral.enabled=False) of the same seed and context. `delta = sf - baseline` per pair; the table
(`comparisons.csv`, docs/design.md §3) has the mean delta, its CI (Student-t by default, `analysis.intervals`), the
number of pairs, the method's p-value, the exact sign-flip p-value, Holm-adjusted p-values over the secondary
metrics x patch sizes, the SD of the paired differences and the pairs a paired t-test would need for 80% power at
5%. The interaction is `delta(coarse) - delta(fine)` for every two patch sizes (Welch by default).

    python -c "from analysis import load_runs; from analysis.compare import compare_arms; \\
        print(compare_arms(load_runs('demo', 'sqlite:///mlflow.db'), ['eval/fd_pixel']).comparisons)"
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.intervals import (MATCHED_INTERACTION, PAIRED, Interval, difference_of_means_ci, interaction_method,
                                paired_mean_ci, sign_flip_p_value)
from analysis.power import pairs_for_power
from analysis.selection import EXCLUDED_COLUMNS, context_columns, status_problems, usable_runs
from specforce_contracts import FITTED_PREFIX, SF_USED_PREFIX

COMPARISON_COLUMNS = ["metric", "patch_size", "tokens", "baseline_mean", "sf_mean", "delta", "ci_low", "ci_high",
                      "n_pairs", "p_value", "p_signflip", "p_holm", "method", "sd_diff", "pairs_for_80pct_power",
                      "power_effect", "sf_config", "context", "n_baseline", "n_sf", "note"]
INTERACTION_COLUMNS = ["metric", "coarse_patch", "fine_patch", "coarse_tokens", "fine_tokens", "delta_coarse",
                       "delta_fine", "difference", "ci_low", "ci_high", "p_value", "method", "n_pairs_coarse",
                       "n_pairs_fine", "sf_config", "context", "note"]
PAIR_COLUMNS = ["metric", "context", "sf_config", "patch_size", "tokens", "seed", "baseline_run_id", "sf_run_id",
                "baseline", "sf", "delta"]
# the arm itself and what a run measured (snr fit, the operator's own description): never an SF configuration label
_ARM_EXCLUDE = ("params.spectral.enabled", f"params.{FITTED_PREFIX}", f"params.{SF_USED_PREFIX}")


@dataclass(frozen=True)
class Comparison:
    comparisons: pd.DataFrame  # COMPARISON_COLUMNS, one row per (metric, context, sf_config, patch size)
    interactions: pd.DataFrame  # INTERACTION_COLUMNS, one row per (metric, context, sf_config, two patch sizes)
    pairs: pd.DataFrame  # PAIR_COLUMNS, the seed pairs behind every delta
    excluded: pd.DataFrame  # EXCLUDED_COLUMNS, runs kept apart per metric, with the reason
    confidence: float
    method: str = "t"  # paired interval method (analysis.intervals registry name)
    interaction_method: str = "welch"  # two-sample method of the interactions
    primary: str | None = None  # the declared primary metric; every other one is secondary (Holm-adjusted)
    min_effect: float | None = None  # effect size the power column plans for (None: the observed |delta|)


def _labels(frame: pd.DataFrame, cols: list[str]) -> pd.Series:
    """"key=value, key=value" per row over `cols` (str() of each value, as an f-string would print it)."""
    out = pd.Series("", index=frame.index, dtype=object)
    for i, c in enumerate(cols):
        out = out + ("" if i == 0 else ", ") + f"{c.removeprefix('params.')}=" + frame[c].map(str)
    return out


def label_arms(runs: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Add `context` and `sf_config` labels: only params that vary in `reference` appear in them."""
    ctx_cols = context_columns(reference)
    sf_ref = reference[reference["sf"] == True]  # noqa: E712 (nullable boolean)
    arm_cols = sorted(c for c in reference.columns if c.startswith("params.spectral.")
                      and not c.startswith(_ARM_EXCLUDE) and sf_ref[c].astype("string").nunique() > 1)
    out = runs.copy()
    out["context"] = _labels(out, ctx_cols)
    sf_labels = _labels(out, arm_cols)
    out["sf_config"] = np.where(out["sf"] == True, sf_labels, "")  # noqa: E712
    return out


def comparable_trials(runs: pd.DataFrame) -> pd.DataFrame:
    """Completed trials that take part in arm comparisons: baselines and grid (non-searched) SF runs."""
    ok = runs[status_problems(runs).isna()] if len(runs) else runs
    return ok[(ok["sf"] == False) | ok["search"].isna()]  # noqa: E712


def compare_arms(runs: pd.DataFrame, metrics: Sequence[str], *, confidence: float = 0.95, method: str = "t",
                 n_resamples: int = 10_000, seed: int = 0, primary: str | None = None,
                 min_effect: float | None = None, interaction: str | None = None) -> Comparison:
    """Paired SF-minus-baseline deltas per patch size and their interactions, for each metric.

    method: paired interval method by name (analysis.intervals.PAIRED); interaction: two-sample method (default: the
    same name when it has a two-sample form, else Welch). primary: the declared primary metric (default: the first
    of `metrics`); every other metric is secondary and gets Holm-adjusted p-values. min_effect: the effect size the
    power column plans for (default: the observed |delta| of each row).
    """
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics must be a non-empty list of metric names, got {metrics!r}")
    if method not in PAIRED:
        raise ValueError(f"method must be one of {tuple(PAIRED)}, got {method!r}")
    primary = metrics[0] if primary is None else primary
    if primary not in metrics:
        raise ValueError(f"primary metric {primary!r} is not among the compared metrics {list(metrics)}")
    if min_effect is not None and not (np.isfinite(min_effect) and min_effect > 0):
        raise ValueError(f"min_effect must be a positive number, got {min_effect!r}")
    inter_method = interaction or interaction_method(method)
    reference = comparable_trials(runs)
    rows, inter_rows, pair_rows, excluded = [], [], [], []
    for metric in metrics:
        selection = usable_runs(runs, metric)
        excluded.append(selection.excluded)
        usable = label_arms(comparable_trials(selection.usable), reference)
        value = f"metrics.{metric}"
        for (context, patch), group in usable.groupby(["context", "patch_size"], sort=False):
            base = group[group["sf"] == False]  # noqa: E712
            configs = sorted(group.loc[group["sf"] == True, "sf_config"].unique()) or [""]  # noqa: E712
            for config in configs:
                sf = group[(group["sf"] == True) & (group["sf_config"] == config)]  # noqa: E712
                paired = base.merge(sf, on="seed", suffixes=("_b", "_s"))
                d = (paired[f"{value}_s"] - paired[f"{value}_b"]).to_numpy(dtype=np.float64)
                ci = paired_mean_ci(d, confidence=confidence, method=method, n_resamples=n_resamples, seed=seed)
                tokens = group["tokens"].dropna()
                rows.append({
                    "metric": metric, "patch_size": int(patch), "tokens": int(tokens.iloc[0]) if len(tokens) else None,
                    "baseline_mean": float(paired[f"{value}_b"].mean()) if len(paired) else _mean(base[value]),
                    "sf_mean": float(paired[f"{value}_s"].mean()) if len(paired) else _mean(sf[value]),
                    "delta": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n_pairs": len(paired),
                    "p_value": ci.p_value, "p_signflip": sign_flip_p_value(d) if len(d) else np.nan,
                    "p_holm": np.nan, "method": method,
                    # min_effect is in the primary metric's units: the other metrics plan for their observed effect
                    **_power(d, ci, min_effect if metric == primary else None),
                    "sf_config": config, "context": context, "n_baseline": len(base), "n_sf": len(sf),
                    "note": ci.note if len(paired) else _unpaired_note(base, sf)})
                pair_rows.append(pd.DataFrame({  # one frame per comparison: an iterrows per pair was seconds
                    "metric": metric, "context": context, "sf_config": config, "patch_size": int(patch),
                    "tokens": rows[-1]["tokens"], "seed": paired["seed"].astype(int).to_numpy(),
                    "baseline_run_id": paired["run_id_b"].to_numpy(), "sf_run_id": paired["run_id_s"].to_numpy(),
                    "baseline": paired[f"{value}_b"].to_numpy(), "sf": paired[f"{value}_s"].to_numpy(),
                    "delta": d}, columns=PAIR_COLUMNS))
    comparisons = _sorted(pd.DataFrame(rows, columns=COMPARISON_COLUMNS), list(metrics))
    comparisons["p_holm"] = holm_column(comparisons, primary)
    pairs = (pd.concat([p for p in pair_rows if len(p)], ignore_index=True) if any(len(p) for p in pair_rows)
             else pd.DataFrame(columns=PAIR_COLUMNS))
    for _, rows_g in comparisons[comparisons["n_pairs"] > 0].groupby(["metric", "context", "sf_config"], sort=False):
        for (_, coarse), (_, fine) in combinations(rows_g.sort_values("patch_size", ascending=False).iterrows(), 2):
            inter_rows.append(_interaction(coarse, fine, pairs, confidence, inter_method, n_resamples, seed))
    interactions = pd.DataFrame(inter_rows, columns=INTERACTION_COLUMNS)
    excluded_all = pd.concat(excluded, ignore_index=True) if excluded else pd.DataFrame(columns=EXCLUDED_COLUMNS)
    return Comparison(comparisons, interactions, pairs, excluded_all, confidence, method, inter_method, primary,
                      min_effect)


def _power(d: np.ndarray, ci: Interval, min_effect: float | None) -> dict:
    """SD of the paired differences and the pairs a paired t-test needs for 80% power at 5% (two-sided)."""
    sd = float(np.std(d, ddof=1)) if d.size >= 2 else np.nan
    effect = min_effect if min_effect is not None else (abs(ci.estimate) if d.size else np.nan)
    n = pairs_for_power(effect, sd) if np.isfinite(sd) and np.isfinite(effect) else None
    return {"sd_diff": sd, "pairs_for_80pct_power": float(n) if n is not None else np.nan, "power_effect": effect}


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count towards the family size)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = finite.size
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))  # monotone: never below an earlier adjusted p
        out[idx] = running
    return out


def holm_column(comparisons: pd.DataFrame, primary: str) -> np.ndarray:
    """The primary metric keeps its raw p; the secondary rows (every other metric x patch size x context x SF
    configuration) are one Holm family."""
    p = comparisons["p_value"].to_numpy(dtype=np.float64)
    secondary = (comparisons["metric"] != primary).to_numpy()
    out = p.copy()
    out[secondary] = holm(p[secondary])
    return out


def _mean(values: pd.Series) -> float:
    return float(values.mean()) if len(values) else float("nan")


def _unpaired_note(base: pd.DataFrame, sf: pd.DataFrame) -> str:
    if base.empty:
        return "no baseline run"
    if sf.empty:
        return "no SF run"
    return (f"no common seed (baseline seeds {sorted(base['seed'].astype(int))}, "
            f"SF seeds {sorted(sf['seed'].astype(int))})")


def gain_difference_ci(a: pd.Series, b: pd.Series, *, confidence: float, method: str, n_resamples: int = 10_000,
                       seed: int = 0) -> Interval:
    """mean(a) - mean(b) for SF - baseline deltas indexed by seed at two settings (two patch sizes, two ratios).

    A method registered with `matched_interaction` (the adaptive sweeps' anytime-valid one) gets, when the same
    seeds ran at both settings, its paired interval on the per-seed double differences: the interval its stopping
    rule used. Every other case uses the method's two-sample form."""
    if (method in MATCHED_INTERACTION and len(a) and a.index.is_unique and b.index.is_unique
            and set(a.index) == set(b.index)):
        ci = paired_mean_ci((a - b.reindex(a.index)).to_numpy(dtype=np.float64), confidence=confidence,
                            method=method, n_resamples=n_resamples, seed=seed)
        return replace(ci, note="per-seed double differences (seeds matched)") if ci.defined else ci
    return difference_of_means_ci(a.to_numpy(dtype=np.float64), b.to_numpy(dtype=np.float64), confidence=confidence,
                                  method=method, n_resamples=n_resamples, seed=seed)


def pairs_of(pairs: pd.DataFrame, row: pd.Series) -> pd.DataFrame:
    """The seed pairs behind one comparison row: those of its metric, context, SF config and patch size."""
    return pairs[(pairs["metric"] == row["metric"]) & (pairs["context"] == row["context"])
                 & (pairs["sf_config"] == row["sf_config"]) & (pairs["patch_size"] == row["patch_size"])]


def seed_deltas(pairs: pd.DataFrame, row: pd.Series) -> pd.Series:
    """The SF - baseline deltas behind one comparison row, indexed by seed: what `gain_difference_ci` matches on."""
    sel = pairs_of(pairs, row)
    return pd.Series(sel["delta"].to_numpy(dtype=np.float64), index=sel["seed"].astype(int).to_numpy())


def _interaction(coarse: pd.Series, fine: pd.Series, pairs: pd.DataFrame, confidence: float, method: str,
                 n_resamples: int, seed: int) -> dict:
    ci = gain_difference_ci(seed_deltas(pairs, coarse), seed_deltas(pairs, fine), confidence=confidence,
                            method=method, n_resamples=n_resamples, seed=seed)
    return {"metric": coarse["metric"], "coarse_patch": coarse["patch_size"], "fine_patch": fine["patch_size"],
            "coarse_tokens": coarse["tokens"], "fine_tokens": fine["tokens"], "delta_coarse": coarse["delta"],
            "delta_fine": fine["delta"], "difference": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
            "p_value": ci.p_value, "method": method, "n_pairs_coarse": coarse["n_pairs"],
            "n_pairs_fine": fine["n_pairs"], "sf_config": coarse["sf_config"], "context": coarse["context"],
            "note": ci.note}


def _sorted(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(metrics)}
    return (table.assign(_m=table["metric"].map(order))
            .sort_values(["_m", "context", "sf_config", "patch_size"], ascending=[True, True, True, False])
            .drop(columns="_m").reset_index(drop=True))


def metric_values(runs: pd.DataFrame, metric: str, group: tuple[str, str] | None = None) -> pd.DataFrame:
    """Usable comparison runs for a metric with `value` (final) and `floor` (the data-vs-data floor, if logged).

    group: (context, sf_config) to keep only that context and SF configuration (baselines of the context stay).
    """
    usable = label_arms(comparable_trials(usable_runs(runs, metric).usable), comparable_trials(runs))
    if group is not None:
        context, config = group
        usable = usable[(usable["context"] == context)
                        & ((usable["sf"] == False) | (usable["sf_config"] == config))]  # noqa: E712
    out = usable.assign(value=usable[f"metrics.{metric}"])
    floor = f"metrics.{metric}_floor"
    return out.assign(floor=out[floor] if floor in out else np.nan)
