"""The report's first-screen tables: the primary metric per patch size with the coarse-vs-fine row under it, and the
secondary metrics; one verdict word per row, numbers by the one rule of `analysis.numbers`.

Each row speaks about the (context, SF configuration) with the most seed pairs, as the verdict sentence does
(`analysis.verdict.main_group`). Cells are finished strings, so HTML, Markdown and LaTeX print the same digits.

    python -c "from analysis import load_runs; from analysis.compare import compare_arms; \\
        from analysis.headline import primary_table; r = load_runs('demo', 'sqlite:///mlflow.db'); \\
        print(primary_table(r, compare_arms(r, ['eval/denoise_loss']), 'eval/denoise_loss'))"
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.compare import Comparison, pairs_of
from analysis.numbers import ci_decimals, fmt_ci, fmt_num, fmt_relative, sig_decimals
from analysis.regime import RATIO_PARAM
from analysis.verdict import BUCKET_PREFIX, fmt_p, main_group, pct, short
from specforce_contracts import higher_is_better


def _defined(row) -> bool:
    return math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"])


def verdict_word(row: pd.Series, confidence: float, secondary: bool = False) -> str:
    """'SF better' / 'SF worse' only when the interval excludes 0 (and, for a secondary metric, Holm p < alpha)."""
    if int(row["n_pairs"]) < 2 or not _defined(row):
        return "no interval (< 2 pairs)"
    if not (row["ci_low"] > 0 or row["ci_high"] < 0):
        return "unclear"
    holm = row.get("p_holm", math.nan)
    if secondary and math.isfinite(holm) and holm >= 1 - confidence:
        return "unclear after Holm"
    better = (row["delta"] > 0) == higher_is_better(row["metric"])
    return "SF better" if better else "SF worse"


def interaction_word(inter: pd.Series) -> str:
    if not _defined(inter):
        return "no interval"
    if not (inter["ci_low"] > 0 or inter["ci_high"] < 0):
        return "unclear"
    # a more negative Δ at the coarse patch is a larger gain there for a lower-is-better metric
    coarse_gains = (inter["difference"] < 0) != higher_is_better(inter["metric"])
    return "coarse gains more" if coarse_gains else "fine gains more"


def _row_decimals(row) -> int:
    decimals = ci_decimals(row["ci_low"], row["ci_high"])
    return decimals if decimals is not None else sig_decimals(row["delta"])


def delta_text(delta, low, high) -> str:
    est, lo, hi = fmt_ci(delta, low, high)
    if not math.isfinite(delta):
        return "n/a"
    return f"{est} [{lo}, {hi}]" if math.isfinite(low) and math.isfinite(high) else f"{est} (no interval)"


def _ratio(runs: pd.DataFrame, comparison: Comparison, row: pd.Series) -> str:
    if RATIO_PARAM not in runs:
        return ""
    ids = pairs_of(comparison.pairs, row)
    members = runs[runs["run_id"].isin(set(ids["baseline_run_id"]) | set(ids["sf_run_id"]))]
    values = pd.to_numeric(members[RATIO_PARAM], errors="coerce").dropna().unique()
    return f"{values[0]:.3g}x" if len(values) == 1 else ""


def main_rows(comparison: Comparison, metric: str) -> pd.DataFrame:
    """The comparison rows of the metric's main (context, SF configuration), coarse first, with pairs."""
    group = main_group(comparison, metric)
    table = comparison.comparisons
    if group is None:
        return table.iloc[0:0]
    context, config = group
    rows = table[(table["metric"] == metric) & (table["context"] == context) & (table["sf_config"] == config)
                 & (table["n_pairs"] > 0)]
    return rows.sort_values("patch_size", ascending=False)


def main_interaction(comparison: Comparison, metric: str) -> pd.Series | None:
    """The coarsest-vs-finest interaction of the metric's main group (the one the verdict sentence states)."""
    group = main_group(comparison, metric)
    inter = comparison.interactions
    if group is None or inter.empty:
        return None
    inter = inter[(inter["metric"] == metric) & (inter["context"] == group[0]) & (inter["sf_config"] == group[1])]
    if inter.empty:
        return None
    return inter.sort_values(["coarse_patch", "fine_patch"], ascending=[False, True]).iloc[0]


def primary_columns(confidence: float) -> list[str]:
    return ["patch", "tokens", "compression", "baseline", "SF", f"Δ SF − baseline [{pct(confidence)} CI]",
            "relative Δ", "pairs", "verdict"]


def primary_table(runs: pd.DataFrame, comparison: Comparison, metric: str) -> pd.DataFrame:
    """One row per patch size (coarse first), then the coarse-vs-fine row: Δ(coarse) − Δ(fine) with its interval."""
    conf = comparison.confidence
    out = []
    for _, row in main_rows(comparison, metric).iterrows():
        d = _row_decimals(row)
        out.append([str(int(row["patch_size"])), "" if pd.isna(row["tokens"]) else str(int(row["tokens"])),
                    _ratio(runs, comparison, row), fmt_num(row["baseline_mean"], d), fmt_num(row["sf_mean"], d),
                    delta_text(row["delta"], row["ci_low"], row["ci_high"]),
                    fmt_relative(row["delta"], row["baseline_mean"]), str(int(row["n_pairs"])),
                    verdict_word(row, conf)])
    inter = main_interaction(comparison, metric)
    if inter is not None:
        tokens = "" if pd.isna(inter["coarse_tokens"]) or pd.isna(inter["fine_tokens"]) else \
            f"{int(inter['coarse_tokens'])} vs {int(inter['fine_tokens'])}"
        out.append([f"coarse − fine: {int(inter['coarse_patch'])} vs {int(inter['fine_patch'])}", tokens, "", "", "",
                    delta_text(inter["difference"], inter["ci_low"], inter["ci_high"]), "",
                    f"{int(inter['n_pairs_coarse'])} / {int(inter['n_pairs_fine'])}", interaction_word(inter)])
    table = pd.DataFrame(out, columns=primary_columns(conf))
    # runs that log no model.compression_ratio (older runs, users' scripts) get no empty column
    return table.drop(columns=["compression"]) if not table["compression"].astype(bool).any() else table


def secondary_columns(confidence: float) -> list[str]:
    return ["metric", "patch", "baseline", "SF", f"Δ SF − baseline [{pct(confidence)} CI]", "relative Δ", "pairs",
            "Holm p", "verdict"]


def secondary_table(comparison: Comparison, metrics: list[str]) -> pd.DataFrame:
    """The secondary metrics (no per-t-bucket losses: they have their own section), each in its main group."""
    conf = comparison.confidence
    out = []
    for metric in metrics:
        if metric == comparison.primary or metric.startswith(BUCKET_PREFIX):
            continue
        for _, row in main_rows(comparison, metric).iterrows():
            d = _row_decimals(row)
            out.append([short(metric), str(int(row["patch_size"])), fmt_num(row["baseline_mean"], d),
                        fmt_num(row["sf_mean"], d), delta_text(row["delta"], row["ci_low"], row["ci_high"]),
                        fmt_relative(row["delta"], row["baseline_mean"]), str(int(row["n_pairs"])),
                        fmt_p(row["p_holm"]) if math.isfinite(row["p_holm"]) else "",
                        verdict_word(row, conf, secondary=True)])
    return pd.DataFrame(out, columns=secondary_columns(conf))


def interaction_columns(confidence: float) -> list[str]:
    return ["metric", "coarse vs fine", "Δ coarse", "Δ fine", f"Δ coarse − Δ fine [{pct(confidence)} CI]", "p",
            "pairs", "verdict"]


def interaction_table(comparison: Comparison, metrics: list[str]) -> pd.DataFrame:
    """The coarsest-vs-finest row of every compared metric's main group (per-t-bucket losses left out)."""
    out = []
    for metric in metrics:
        inter = None if metric.startswith(BUCKET_PREFIX) else main_interaction(comparison, metric)
        if inter is None:
            continue
        d = _row_decimals(inter.rename({"difference": "delta"}))
        out.append([short(metric), f"{int(inter['coarse_patch'])} vs {int(inter['fine_patch'])}",
                    fmt_num(inter["delta_coarse"], d), fmt_num(inter["delta_fine"], d),
                    delta_text(inter["difference"], inter["ci_low"], inter["ci_high"]),
                    fmt_p(inter["p_value"]) if math.isfinite(inter["p_value"]) else "",
                    f"{int(inter['n_pairs_coarse'])} / {int(inter['n_pairs_fine'])}", interaction_word(inter)])
    return pd.DataFrame(out, columns=interaction_columns(comparison.confidence))
