"""The sections a reader meets first and last: the verdict with its table and forest plot, the secondary metrics as a
table, what to run next as a table, and one Methods section at the end that explains intervals, p-values, Holm and
power once (analysis.sections builds the evidence in between).

    python -m analysis.report --experiment demo --out reports/demo   # builds these sections
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.compare import Comparison
from analysis.headline import primary_table, secondary_table
from analysis.intervals import method_label
from analysis.next_runs import REALISTIC_PAIRS, beyond_sentence, next_runs_table
from analysis.render import Plot, Section
from analysis.verdict import BUCKET_PREFIX, details, pct, short, verdict


def _labels(comparison: Comparison) -> tuple[str, str]:
    return (f"{pct(comparison.confidence)} {method_label(comparison.method)}",
            method_label(comparison.interaction_method))


def primary_caption(comparison: Comparison, primary: str) -> str:
    paired, inter = _labels(comparison)
    return (f"{primary} per patch size: mean of each arm over the seed pairs; Δ = SF − baseline over seed-matched "
            f"pairs with its {paired} interval; relative Δ = Δ / |baseline|. Last row: Δ(coarse) − Δ(fine), "
            f"{inter} interval.")


def verdict_section(runs: pd.DataFrame, comparison: Comparison, primary: str, sentence: str, regime_lines: list[str],
                    figures: dict[str, Path]) -> Section:
    paired, inter = _labels(comparison)
    plots = [Plot(figures["forest"], f"Δ {short(primary)} (SF − baseline) per patch size with its {paired} interval; "
                  f"diamond: coarse − fine ({inter}); shaded: the side where SF is better")] \
        if "forest" in figures else []
    return Section("Verdict", [sentence, *regime_lines], tables=[(primary_caption(comparison, primary),
                                                                 primary_table(runs, comparison, primary))],
                   figures=plots, css_class="verdict", tables_first=True)


def secondary_section(comparison: Comparison, metrics: list[str]) -> Section | None:
    table = secondary_table(comparison, metrics)
    if table.empty:
        return None
    secondary = [m for m in metrics if m != comparison.primary and not m.startswith(BUCKET_PREFIX)]
    paired, _ = _labels(comparison)
    return Section("Secondary metrics", tables=[(
        f"Δ = SF − baseline over seed-matched pairs, {paired} interval; Holm p adjusted over every secondary metric × "
        "patch size; 'SF better' only when the interval excludes 0 and Holm p < "
        f"{1 - comparison.confidence:.2g}", table)],
        details=[verdict(comparison, m) for m in secondary], details_title="The same in words")


def next_runs_section(comparison: Comparison, missing: list[str]) -> Section | None:
    table, beyond = next_runs_table(comparison)
    if not missing and table.empty and not beyond:
        return None
    paragraphs = [] if table.empty else [
        f"Open comparisons (the interval includes 0) that at most {REALISTIC_PAIRS} seed pairs can settle, with the "
        "pairs a paired t-test needs for 80% power:"]
    return Section("What to run next", paragraphs, bullets=missing, tables=[("", table)] if len(table) else [],
                   after=[beyond_sentence(beyond)] if beyond else [], css_class="todo")


def _declared(comparison: Comparison, metrics: list[str], primary_source: str) -> str:
    primary = comparison.primary
    table = comparison.comparisons
    n_holm = int(table.loc[table["metric"] != primary, "p_value"].notna().sum())
    text = f"Primary metric: {primary}" + (f" ({primary_source})" if primary_source else "") + "."
    if any(m != primary for m in metrics):
        buckets = " (t buckets included)" if any(m.startswith(BUCKET_PREFIX) for m in metrics) else ""
        holm = (f" Holm-adjusted over {n_holm} secondary comparisons (metrics × patch sizes){buckets}"
                if n_holm else " not adjusted: the interval method gives no p-value")
        text += f" The other metrics are secondary; their p-values are{holm}."
    return text


def methods_section(comparison: Comparison, metrics: list[str], primary_source: str, method_statement: str,
                    n_resamples: int) -> Section:
    resampled = (f" Bootstrap intervals use {n_resamples} resamples, rng seed 0."
                 if "bootstrap" in method_label(comparison.method) else "")
    return Section("Methods", [
        "Deltas are SF − baseline over seed-matched pairs (same seed and config); a negative Δ is better except for "
        "higher-is-better metrics (eval/is, classifier scores and accuracies). Relative Δ = Δ / |baseline mean|.",
        method_statement + resampled,
        *details(comparison, comparison.primary),
        _declared(comparison, metrics, primary_source),
        "Verdict words: 'SF better' or 'SF worse' only when the interval excludes 0 (for a secondary metric, also "
        f"Holm p < {1 - comparison.confidence:.2g}); otherwise 'unclear'. The coarse-vs-fine row says which patch "
        "size gains more only when its interval excludes 0.",
        "Pairs for 80% power: the seed pairs a two-sided paired t-test at 5% needs to detect the planned effect "
        "(analysis.min_effect for the primary metric when set, else the observed |Δ|), from the SD of the observed "
        "paired differences and the noncentral t distribution. Shown only where the interval includes 0.",
        "Numbers: an estimate and its interval bounds share one number of decimals, the one that shows the "
        "interval's width with two significant digits; a mean in the same row uses the same decimals."],
        css_class="methods")
