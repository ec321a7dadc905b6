"""The report's content: which sections, in which order, with which sentences, tables and figures.

Rendering (HTML/Markdown) lives in `analysis.render`; this module only decides the order: what a reader sees first
(the verdict with its table and forest plot, secondary metrics, what to run next: analysis.front), then the
evidence, then what was left out and why, and Methods last.

    python -m analysis.report --experiment demo --out reports/demo   # builds these sections
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.compare import Comparison
from analysis.intervals import method_label
from analysis.render import Plot, Section
from analysis.runs import RunTables
from analysis.search import SearchSummary
from analysis.resolution import AT_FLOOR
from analysis.numbers import ci_decimals, fmt_ci, fmt_num, sig_decimals
from analysis.front import methods_section, next_runs_section, secondary_section, verdict_section
from analysis.verdict import BUCKET_PREFIX, fmt_p, pct

EXCLUDED_BY_RUN = ["run_name", "experiment", "reason", "metrics", "run_id"]


def excluded_by_run(excluded: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per (run, reason): the metrics it is kept apart for ("all" when every compared metric)."""
    if excluded.empty:
        return pd.DataFrame(columns=EXCLUDED_BY_RUN)
    rows = []
    for (run_id, name, exp, reason), group in excluded.groupby(["run_id", "run_name", "experiment", "reason"]):
        ms = sorted(set(group["metric"]))
        rows.append({"run_name": name, "experiment": exp, "reason": reason,
                     "metrics": "all" if len(ms) == len(metrics) else ", ".join(ms), "run_id": run_id})
    return pd.DataFrame(rows, columns=EXCLUDED_BY_RUN).sort_values(["reason", "run_name"]).reset_index(drop=True)


def _with_ci(row: pd.Series) -> str:
    est, lo, hi = fmt_ci(row["delta"], row["ci_low"], row["ci_high"])
    return f"{est} [{lo}, {hi}]" if pd.notna(row["ci_low"]) else (f"{est} (CI undefined)" if pd.notna(row["delta"])
                                                                    else "n/a")


def _at_row_decimals(table: pd.DataFrame, column: str) -> list[str]:
    """A column printed at the decimals of each row's Δ interval (analysis.numbers: one rule for the whole row)."""
    return [fmt_num(v, d if d is not None else sig_decimals(delta)) for v, d, delta in zip(
        table[column], (ci_decimals(lo, hi) for lo, hi in zip(table["ci_low"], table["ci_high"])), table["delta"])]


def _p(values: pd.Series) -> list[str]:
    return [fmt_p(v) if pd.notna(v) else "" for v in values]


def comparison_table(table: pd.DataFrame, confidence: float = 0.95, primary: str | None = None) -> pd.DataFrame:
    ci_col = f"Δ SF − baseline [{pct(confidence)} CI]"
    cols = ["metric", "patch", "tokens", "baseline", "SF", ci_col, "pairs", "p", "sign-flip p", "Holm p",
            "pairs for 80% power", "note"]
    if table.empty:
        return pd.DataFrame(columns=cols)
    role = table["metric"].map(lambda m: " (primary)" if m == primary else "")
    out = pd.DataFrame({
        "metric": table["metric"] + role, "patch": table["patch_size"], "tokens": table["tokens"],
        "baseline": _at_row_decimals(table, "baseline_mean"), "SF": _at_row_decimals(table, "sf_mean"),
        ci_col: table.apply(_with_ci, axis=1),
        "pairs": table["n_pairs"], "p": _p(table["p_value"]), "sign-flip p": _p(table["p_signflip"]),
        "Holm p": [fmt_p(h) if m != primary and pd.notna(h) else "" for m, h in zip(table["metric"], table["p_holm"])],
        "pairs for 80% power": [str(int(k)) if pd.notna(k) and not (lo > 0 or hi < 0) else ""
                                for k, lo, hi in zip(table["pairs_for_80pct_power"], table["ci_low"], table["ci_high"])],
        "note": table["note"]}, columns=cols)
    for extra in ("sf_config", "context"):
        if table[extra].astype(bool).any():
            out[extra] = table[extra]
    return out


def interaction_table(inter: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    ci_col = f"Δ coarse − Δ fine [{pct(confidence)} CI]"
    cols = ["metric", "coarse vs fine", "Δ coarse", "Δ fine", ci_col, "p", "pairs", "note"]
    if inter.empty:
        return pd.DataFrame(columns=cols)
    ci = inter.rename(columns={"difference": "delta"}).apply(_with_ci, axis=1)
    return pd.DataFrame({
        "metric": inter["metric"],
        "coarse vs fine": [f"patch {int(c)} vs {int(f)}" for c, f in zip(inter["coarse_patch"], inter["fine_patch"])],
        "Δ coarse": _at_row_decimals(inter.rename(columns={"difference": "delta"}), "delta_coarse"),
        "Δ fine": _at_row_decimals(inter.rename(columns={"difference": "delta"}), "delta_fine"), ci_col: ci,
        "p": _p(inter["p_value"]),
        "pairs": [f"{int(a)} / {int(b)}" for a, b in zip(inter["n_pairs_coarse"], inter["n_pairs_fine"])],
        "note": inter["note"]}, columns=cols)


def run_counts(runs: pd.DataFrame) -> pd.DataFrame:
    trials = runs[runs["role"] == "trial"]
    if trials.empty:
        return pd.DataFrame()
    arm = trials["sf"].map({True: "SF", False: "baseline"}).astype(object).fillna("unknown arm")
    arm = arm.where(~((trials["sf"] == True) & trials["search"].notna()), "SF (searched)")  # noqa: E712
    status = trials["status"].fillna(trials["mlflow_status"]).astype(str)
    counts = pd.crosstab([trials["patch_size"].astype("Int64").astype(str), arm.rename("arm")], status)
    return counts.reset_index().rename(columns={"patch_size": "patch"})


def ratio_display(ratios: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """The per-ratio comparisons of the regime section, one row per line and compression ratio."""
    ci_col = f"Δ SF − baseline [{pct(confidence)} CI]"
    cols = ["line", "ratio", "patch", "bottleneck", "tokens", "baseline", "SF", ci_col, "relative Δ", "pairs"]
    if ratios.empty:
        return pd.DataFrame(columns=cols)
    return pd.DataFrame({
        "line": ratios["line"], "ratio": [f"{r:.3g}x" for r in ratios["compression_ratio"]],
        "patch": ratios["patch_size"], "bottleneck": ratios["bottleneck"], "tokens": ratios["tokens"],
        "baseline": ratios["baseline_mean"], "SF": ratios["sf_mean"], ci_col: ratios.apply(_with_ci, axis=1),
        "relative Δ": [f"{v:+.1%}" if pd.notna(v) else "" for v in ratios["relative_delta"]],
        "pairs": ratios["n_pairs"]}, columns=cols)


def trend_display(trends: pd.DataFrame, confidence: float) -> pd.DataFrame:
    slope_col, ext_col = f"Δ per doubling [{pct(confidence)} CI]", f"Δ(highest) − Δ(lowest) [{pct(confidence)} CI]"
    cols = ["line", "ratios", "pairs", slope_col, "slope p", "extremes", ext_col, "extremes p"]
    if trends.empty:
        return pd.DataFrame(columns=cols)
    slope = trends.rename(columns={"slope_per_doubling": "delta", "slope_low": "ci_low", "slope_high": "ci_high"})
    ext = trends.rename(columns={"extremes_difference": "delta", "extremes_low": "ci_low",
                                 "extremes_high": "ci_high"})
    return pd.DataFrame({
        "line": trends["line"], "ratios": trends["ratios"], "pairs": trends["n_pairs"],
        slope_col: slope.apply(_with_ci, axis=1), "slope p": _p(trends["slope_p"]),
        "extremes": [f"{h:.3g}x vs {lo:.3g}x" for h, lo in zip(trends["high_ratio"], trends["low_ratio"])],
        ext_col: ext.apply(_with_ci, axis=1), "extremes p": _p(trends["extremes_p"])}, columns=cols)


def resolution_display(resolution: pd.DataFrame) -> pd.DataFrame:
    cols = ["metric", "patch", "context", "baseline", "SF", "floor", "excess over floor", "|Δ|", "noise",
            "separates the arms", "why"]
    if resolution.empty:
        return pd.DataFrame(columns=cols)
    out = pd.DataFrame({
        "metric": resolution["metric"], "patch": resolution["patch_size"], "context": resolution["context"],
        "baseline": resolution["baseline_mean"], "SF": resolution["sf_mean"], "floor": resolution["floor"],
        "excess over floor": resolution["excess_over_floor"], "|Δ|": resolution["abs_delta"],
        "noise": resolution["noise"], "separates the arms": resolution["resolves"].map({True: "yes", False: "no"}),
        "why": resolution["why"]}, columns=cols)
    return out if resolution["context"].astype(bool).any() else out.drop(columns=["context"])


def resolution_sentence(resolution: pd.DataFrame) -> str:
    per_metric = resolution.groupby("metric", sort=False)["resolves"].agg(["sum", "size"])
    per_metric = per_metric.sort_values("sum", ascending=False, kind="stable")  # the measures that separate lead
    parts = [f"{m.split('/', 1)[-1]} in {int(r['sum'])} of {int(r['size'])} comparison(s)"
             for m, r in per_metric.iterrows()]
    return "Separates the arms at this sample count: " + "; ".join(parts) + "."


def _plot(figures: dict[str, Path], key: str, caption: str) -> list[Plot]:
    return [Plot(figures[key], caption)] if key in figures else []


def method_statement(comparison: Comparison) -> str:
    return (f"Intervals: {pct(comparison.confidence)} {method_label(comparison.method)} for the mean of the "
            f"seed-paired differences; {method_label(comparison.interaction_method)} for the coarse-vs-fine difference "
            "of two mean gains (independent models). Beside each paired interval, the exact sign-flip (permutation) "
            "p-value, which assumes no normality; with n pairs it can never be below 2/2^n, so under 6 pairs it "
            "cannot reach 0.05.")


def build_sections(tables: RunTables, metrics: list[str], comparison: Comparison, sentence: str,
                   messages: list[str], excluded: pd.DataFrame, figures: dict[str, Path],
                   search: SearchSummary | None, primary_source: str = "",
                   regime: tuple[list[str], pd.DataFrame, pd.DataFrame] | None = None,
                   resolution: pd.DataFrame | None = None, n_resamples: int = 10_000) -> list[Section]:
    """The report's sections in reading order; `messages`: the missing or unpaired arms (analysis.verdict)."""
    primary = metrics[0]
    table = comparison.comparisons
    regime_lines = [f"SF gain vs compression ratio, {s[:1].lower() + s[1:]}" for s in (regime[0] if regime else [])]
    sections = [verdict_section(tables.runs, comparison, primary, sentence, regime_lines, figures)]
    sections += [s for s in (secondary_section(comparison, metrics), next_runs_section(comparison, messages)) if s]
    conf, label = comparison.confidence, method_label(comparison.method)
    if regime is not None and regime[0]:
        sentences, ratios, trends = regime
        sections.append(Section(
            "SF gain vs compression ratio",
            [f"The patch compression ratio is the patch dim C·p² over the bottleneck width (JiT-B/32 at 256 px: "
             f"3,072 / 128 = 24x; B/16: 6x). Each point is the mean seed-paired Δ of {primary} at one ratio with its "
             f"{pct(conf)} {label} interval; one line per context. The trend is the least-squares slope of the "
             "individual paired differences on log2(ratio), a contrast of the per-ratio means whose interval uses each "
             "ratio's own variance on Welch-Satterthwaite degrees of freedom, beside the difference of the mean gains "
             "at the highest and lowest ratio "
             f"({method_label(comparison.interaction_method)}).", *sentences],
            tables=[("Per-ratio comparisons (regime.csv)", ratio_display(ratios, conf)),
                    ("Trend with the compression ratio (regime_trend.csv)", trend_display(trends, conf))],
            figures=_plot(figures, "gain_vs_ratio", f"SF gain vs compression ratio (mean paired Δ with {pct(conf)} "
                          f"{label} CI; log x axis)")))
    if resolution is not None and len(resolution):
        sections.append(Section(
            "Which measures resolve the arms",
            ["Sample-quality measures from n samples have a floor: the same measure between two real sets of n "
             "images. A measure with a subset SD (KID) separates the arms when the mean paired |Δ| is at least twice "
             "its noise, sqrt(2) × the median subset SD; a Fréchet distance cannot when both arms sit within "
             f"{AT_FLOOR:.0%} of its floor (the values are then mostly the estimator's bias), and otherwise does "
             "when the paired interval excludes 0. The secondary list above leads with the measures that separate "
             "the arms.", resolution_sentence(resolution)],
            tables=[("Floor measures at this sample count (resolution.csv)", resolution_display(resolution))]))
    headline = table[~table["metric"].str.startswith(BUCKET_PREFIX)]
    inter = comparison.interactions
    inter_buckets = inter["metric"].str.startswith(BUCKET_PREFIX)
    sections.append(Section(
        "SF gain per tokenization",
        [f"Every comparison in full (comparisons.csv): intervals {pct(conf)} {label}; p: {label} test; sign-flip p: "
         "exact permutation test; Holm p and pairs for 80% power as in Methods. Error bars on the left are the SD "
         "over seeds; on the right the interval."],
        tables=[("Paired comparisons (comparisons.csv)", comparison_table(headline, conf, primary)),
                ("Coarse-vs-fine interaction (interactions.csv)", interaction_table(inter[~inter_buckets], conf))],
        figures=_plot(figures, "metric_vs_patch", "Metric vs patch size, with and without SF (mean ± SD over seeds; "
                      "dots are seeds; dotted: data-vs-data floor at the same sample count)")
        + _plot(figures, "gain_vs_tokens", f"SF gain vs image tokens (mean paired Δ with {pct(conf)} {label} CI)")))
    buckets = table[table["metric"].str.startswith(BUCKET_PREFIX)]
    if len(buckets) or "bucket_gains" in figures:
        sections.append(Section(
            "Where in time SF helps",
            ["Held-out denoising loss on a fixed batch, fixed noise and a fixed t grid, per t bucket: a "
             "low-variance measure that needs no sampling."],
            tables=[("Per-bucket comparisons", comparison_table(buckets, conf, primary)),
                    ("Per-bucket coarse-vs-fine interaction", interaction_table(inter[inter_buckets], conf))],
            figures=_plot(figures, "bucket_gains", f"SF − baseline per t bucket ({pct(conf)} {label} CI)")))
    sections.append(Section("Training", figures=_plot(
        figures, "training_curves", "Training loss and the primary metric vs training images seen "
        "(median over seeds, band = min..max)")))
    sections.append(Section("Samples", figures=_plot(
        figures, "samples", "Final sample grids of each arm side by side (the same seed for both arms)"),
        paragraphs=[] if "samples" in figures else ["No run logged samples/final.png."]))
    sections.append(Section("Cutoff schedules", figures=_plot(
        figures, "schedules", "c(t) of the SF configurations that ran, over the data's SNR front "
        "r*(t) = r0 (t/(1-t))^(2/α) fitted from its radial DCT spectrum")))
    if search is not None:
        best = search.best.drop(columns=["run_id"])
        sections.append(Section(
            f"Search: {search.metric}", search.notes,
            tables=[(f"Best SF configurations by {search.metric}", best)],
            figures=_plot(figures, "alpha", f"{search.metric} vs the cutoff exponent alpha, by schedule "
                          "(dashed: baseline mean, band: ± SD)")
            + _plot(figures, "importance", "Hyperparameter importance (Optuna fANOVA on a study rebuilt from "
                    "the completed Optuna trials)")))
    counts = run_counts(tables.runs)
    sections.append(Section("Runs", [f"{len(tables.runs)} runs loaded from {tables.runs['experiment'].nunique()} "
                                     f"experiment(s) and {len(tables.sweeps)} sweep(s)."],
                            tables=[("Trials by patch size, arm and status", counts)] if len(counts) else []))
    sections.append(Section(
        "Excluded runs",
        ["Runs that failed, were stopped early, were superseded by a rerun, or whose evaluation is not comparable "
         "(different extractor, weights, sample count or reference set) are kept apart, never averaged in."]
        if len(excluded) else ["None: every completed trial was used."],
        tables=[("", excluded.drop(columns=["run_id"]))] if len(excluded) else []))
    sections.append(methods_section(comparison, metrics, primary_source, method_statement(comparison),
                                    n_resamples))
    return sections
