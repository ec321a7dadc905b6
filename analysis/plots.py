"""Report figures (matplotlib, object API only: no pyplot, so no global backend switch in the caller's process).

Each function draws one PNG from tidy tables and returns its path (or None when there is nothing to draw).
Colours are fixed per arm across figures: baseline slate, SF orange.

    python -c "from analysis.plots import plot_schedules; \\
        print(plot_schedules([('linear', {'schedule': 'linear'})], (2.0, 0.08), 'schedules.png'))"
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from analysis.schedules import cutoff, snr_front
from specforce_contracts import DENOISE_BUCKET_PREFIX, higher_is_better

BASELINE, SF = "#5f6b7a", "#e4572e"
ARM_COLORS = {False: BASELINE, True: SF}
ARM_NAMES = {False: "baseline", True: "SF"}
SCHEDULE_COLORS = {"linear": "#1f77b4", "contour": "#2ca02c", "snr": "#9467bd", "constant": "#8c564b"}
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9, "figure.dpi": 110,
         "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3}


def _figure(n_panels: int, width: float = 4.2, height: float = 3.4, max_cols: int = 3) -> tuple[Figure, list]:
    cols = min(max_cols, max(1, n_panels))
    rows = math.ceil(max(1, n_panels) / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


VECTOR_FORMATS = ("pdf", "svg")  # every figure also as vector graphics, for papers (report.tex includes the PDFs)


def _save(fig: Figure, path: str | Path) -> Path:
    """The PNG (embedded in report.html) and, beside it, the same figure as PDF and SVG; returns the PNG's path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    fig.set_layout_engine("none")  # keep the layout the PNG computed: the vector copies are plain redraws
    for fmt in VECTOR_FORMATS:
        fig.savefig(path.with_suffix(f".{fmt}"), metadata={"Creator": "specforce report", "Date": None} if fmt == "svg"
                    else {"Creator": "specforce report", "CreationDate": None})
    return path


MAX_DOTS = 100  # seeds drawn as dots per arm and patch size; beyond, a fixed-seed sample (the mean ± SD uses all)


def _at_most(frame: pd.DataFrame, n: int) -> pd.DataFrame:
    """At most n rows per patch size, a fixed-seed sample: 10,000 dots say no more than 100 and cost seconds in SVG."""
    shuffled = frame.sample(frac=1.0, random_state=0)
    return shuffled[shuffled.groupby("patch_size").cumcount() < n]


def _better(metric: str) -> str:
    return "higher is better" if higher_is_better(metric) else "lower is better"


def _token_label(patch: int, tokens: Any) -> str:
    return f"{patch}\n({int(tokens)} tok)" if tokens is not None and not pd.isna(tokens) else str(patch)


def plot_metric_vs_patch(values: Mapping[str, pd.DataFrame], path: str | Path) -> Path | None:
    """Per metric: mean ± SD over seeds of each arm at each patch size, seeds as dots, data floor if logged.

    values: metric -> frame with columns patch_size, tokens, sf, seed, value, floor (floor may be NaN).
    """
    values = {m: v for m, v in values.items() if len(v)}
    if not values:
        return None
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(len(values))
        for ax, (metric, frame) in zip(axes, values.items()):
            patches = sorted(frame["patch_size"].unique(), reverse=True)  # coarse (few tokens) on the left
            x_of = {p: i for i, p in enumerate(patches)}
            for sf, shift in ((False, -0.12), (True, 0.12)):
                arm = frame[frame["sf"] == sf]
                if arm.empty:
                    continue
                stats = arm.groupby("patch_size")["value"].agg(["mean", "std", "count"])
                xs = np.array([x_of[p] for p in stats.index]) + shift
                ax.errorbar(xs, stats["mean"], yerr=stats["std"].fillna(0.0), fmt="o-", color=ARM_COLORS[sf],
                            capsize=4, lw=1.8, ms=7, label=f"{ARM_NAMES[sf]} (mean ± SD)")
                dots = _at_most(arm, MAX_DOTS)
                jitter = np.array([x_of[p] for p in dots["patch_size"]]) + shift + 0.05 * np.sign(shift)
                ax.scatter(jitter, dots["value"], s=14, color=ARM_COLORS[sf], alpha=0.45, zorder=3)
            floor = frame["floor"].dropna() if "floor" in frame else pd.Series(dtype=float)
            if len(floor):
                ax.axhline(floor.mean(), color="0.45", ls=":", lw=1.2, label="data-vs-data floor")
            tokens = frame.groupby("patch_size")["tokens"].first()
            ax.set_xticks(range(len(patches)), [_token_label(p, tokens.get(p)) for p in patches])
            ax.set_xlim(-0.5, len(patches) - 0.5)
            ax.set_xlabel("patch size (image tokens)")
            ax.set_ylabel(f"{metric} ({_better(metric)})")
            ax.set_title(metric.split("/", 1)[-1])
        axes[0].legend(loc="best")
        return _save(fig, path)


def plot_gain_vs_tokens(comparisons: pd.DataFrame, path: str | Path) -> Path | None:
    """Per metric: SF − baseline (mean paired delta) with its confidence interval against the token count.

    Only (metric, SF configuration, context) groups measured at two or more token counts are drawn: a sweep at one
    patch size (e.g. over the bottleneck, see `plot_gain_vs_ratio`) has no token axis."""
    table = comparisons[(comparisons["n_pairs"] > 0) & comparisons["tokens"].notna()]
    spans = table.groupby(["metric", "sf_config", "context"])["tokens"].transform("nunique")
    table = table[spans >= 2]
    metrics = list(dict.fromkeys(table["metric"]))
    if not metrics:
        return None
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(len(metrics))
        for ax, metric in zip(axes, metrics):
            rows = table[table["metric"] == metric].sort_values("tokens")
            for (config, context), group in rows.groupby(["sf_config", "context"], sort=False):
                defined = group["ci_low"].notna()
                err = np.vstack([group["delta"] - group["ci_low"], group["ci_high"] - group["delta"]])
                label = ", ".join(x for x in (config, context) if x) or "SF − baseline"
                ax.errorbar(group["tokens"][defined], group["delta"][defined], yerr=err[:, defined.to_numpy()],
                            fmt="o-", color=SF, capsize=5, lw=1.8, ms=7, label=f"{label} (CI)")
                if (~defined).any():
                    ax.scatter(group["tokens"][~defined], group["delta"][~defined], facecolors="white",
                               edgecolors=SF, s=50, zorder=3, label="1 pair: CI undefined")
            ax.axhline(0.0, color="0.3", lw=1)
            ax.set_xscale("log", base=2)
            ticks = sorted(rows["tokens"].astype(int).unique())
            ax.set_xticks(ticks, [f"{t}\n(patch {int(p)})" for t, p in
                                  zip(ticks, rows.groupby("tokens")["patch_size"].first().loc[ticks])])
            ax.minorticks_off()
            ax.set_xlabel("image tokens (patch size)")
            better = "SF better ↑" if higher_is_better(metric) else "SF better ↓"
            ax.margins(x=0.15)
            ax.set_ylabel(f"Δ {metric.split('/', 1)[-1]} (SF − baseline)")
            ax.text(0.02, 0.97, better, transform=ax.transAxes, va="top", color="0.35", fontsize=9)
            ax.set_title(f"SF gain vs tokens: {metric.split('/', 1)[-1]}")
            ax.legend(loc="best")
        return _save(fig, path)


def plot_bucket_gains(comparisons: pd.DataFrame, path: str | Path) -> Path | None:
    """SF − baseline of the held-out denoising loss per t bucket (where in time SF helps), one bar group per patch
    (and per context and SF configuration when the runs have several, e.g. a bottleneck or data sweep)."""
    table = comparisons[comparisons["metric"].str.startswith(DENOISE_BUCKET_PREFIX) & (comparisons["n_pairs"] > 0)]
    if table.empty:
        return None
    buckets = sorted(table["metric"].unique())
    groups = (table[["context", "sf_config", "patch_size"]].drop_duplicates()
              .sort_values(["context", "sf_config", "patch_size"], ascending=[True, True, False]))
    many = len(groups) > len(groups["patch_size"].unique())  # several contexts: name them in the legend
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(min(12.0, 1.4 * len(buckets) + 2.5 + (3.5 if many else 0)), 3.8),
                     layout="constrained")
        ax = fig.subplots()
        width = 0.8 / len(groups)
        shades = np.linspace(1.0, 0.35, len(groups))
        for i, (_, g) in enumerate(groups.iterrows()):
            rows = table[(table["patch_size"] == g["patch_size"]) & (table["context"] == g["context"])
                         & (table["sf_config"] == g["sf_config"])].set_index("metric").reindex(buckets)
            xs = np.arange(len(buckets)) + (i - (len(groups) - 1) / 2) * width
            err = np.vstack([rows["delta"] - rows["ci_low"], rows["ci_high"] - rows["delta"]])
            tokens = rows["tokens"].dropna()
            label = f"patch {int(g['patch_size'])}" + (f" ({int(tokens.iloc[0])} tokens)" if len(tokens) else "")
            if many:
                label = ", ".join(x for x in (label, g["sf_config"], g["context"]) if x)
            ax.bar(xs, rows["delta"], width=width * 0.92, color=SF, alpha=float(shades[i]), label=label,
                   yerr=np.nan_to_num(err), capsize=3 if len(groups) < 5 else 1, ecolor="0.25")
        ax.axhline(0.0, color="0.3", lw=1)
        ax.set_xticks(range(len(buckets)), [b.removeprefix(DENOISE_BUCKET_PREFIX) for b in buckets])
        ax.set_xlabel("t bucket (0 = pure noise, 1 = data)")
        ax.set_ylabel("Δ denoise loss (SF − baseline)")
        ax.text(0.01, 0.97, "SF better ↓", transform=ax.transAxes, va="top", color="0.35", fontsize=9)
        ax.set_title("Held-out denoising loss per t bucket: SF − baseline (CI)")
        if many:
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
        else:
            ax.legend(loc="best")
        return _save(fig, path)


def plot_training_curves(history: pd.DataFrame, runs: pd.DataFrame, metrics: Sequence[str],
                         path: str | Path) -> Path | None:
    """Rows: metrics; columns: patch sizes. Median over seeds per arm, band = min..max over seeds."""
    metrics = [m for m in metrics if (history["metric"] == m).any()]
    if not metrics or runs.empty:
        return None
    patches = sorted(runs["patch_size"].dropna().unique(), reverse=True)
    arms = runs.set_index("run_id")[["sf", "patch_size"]]
    data = history[history["metric"].isin(metrics)]
    data = data[data["run_id"].isin(arms.index)].join(arms, on="run_id")
    data = data.assign(metric=data["metric"].astype(object), sf=data["sf"].astype(bool))
    # one grouping for every panel: filtering the long history per panel and arm cost seconds at 1,000 runs
    stats = data.groupby(["metric", "patch_size", "sf", "step"])["value"].agg(["median", "min", "max"])
    seeds = data.groupby(["metric", "patch_size", "sf"])["run_id"].nunique()
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(4.2 * len(patches), 3.0 * len(metrics)), layout="constrained")
        axes = fig.subplots(len(metrics), len(patches), squeeze=False)
        for r, metric in enumerate(metrics):
            for c, patch in enumerate(patches):
                ax = axes[r][c]
                for sf in (False, True):
                    if (metric, patch, sf) not in seeds.index:
                        continue
                    part = stats.loc[(metric, patch, sf)]
                    ax.plot(part.index, part["median"], color=ARM_COLORS[sf], lw=1.8,
                            label=f"{ARM_NAMES[sf]} ({seeds.loc[(metric, patch, sf)]} seeds)")
                    ax.fill_between(part.index, part["min"], part["max"], color=ARM_COLORS[sf], alpha=0.18)
                ax.set_title(f"{metric} · patch {int(patch)}")
                ax.set_xlabel("training images seen")
                ax.set_ylabel(metric.split("/", 1)[-1])
                if ax.has_data():
                    ax.legend(loc="best")
        return _save(fig, path)


def plot_alpha(sf_runs: pd.DataFrame, baselines: pd.DataFrame, metric: str, path: str | Path) -> Path | None:
    """Metric vs the cutoff exponent alpha for the schedules that use it (contour, snr), one panel per patch size.

    Schedules that ignore alpha (linear, constant) are drawn as their mean over runs, dotted; the baseline as a
    dashed line with a ± SD band.
    """
    sf_runs = sf_runs.dropna(subset=["value"])
    uses_alpha = sf_runs["schedule"].isin(["contour", "snr"]) & sf_runs["alpha"].notna()
    if not uses_alpha.any() or sf_runs.loc[uses_alpha, "alpha"].nunique() < 2:
        return None
    patches = sorted(sf_runs["patch_size"].unique(), reverse=True)
    with matplotlib.rc_context(STYLE):
        fig, axes = _figure(len(patches))
        for ax, patch in zip(axes, patches):
            part = sf_runs[sf_runs["patch_size"] == patch]
            for schedule, group in part.groupby("schedule"):
                color = SCHEDULE_COLORS.get(schedule, "0.4")
                if schedule in ("contour", "snr"):
                    ax.scatter(group["alpha"], group["value"], s=40, color=color, alpha=0.85, label=schedule)
                else:
                    ax.axhline(group["value"].mean(), color=color, ls=":", lw=1.6,
                               label=f"{schedule} (no α; mean of {len(group)})")
            base = baselines[baselines["patch_size"] == patch]["value"]
            if len(base):
                sd = base.std(ddof=1) if len(base) > 1 else 0.0
                ax.axhspan(base.mean() - sd, base.mean() + sd, color=BASELINE, alpha=0.15)
                ax.axhline(base.mean(), color=BASELINE, ls="--", lw=1.4, label="baseline mean ± SD")
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel("cutoff exponent α the runs used (log scale)")
            ax.set_ylabel(f"{metric} ({_better(metric)})")
            ax.set_title(f"{metric.split('/', 1)[-1]} vs α · patch {int(patch)}")
            ax.legend(loc="best", fontsize=8)
        return _save(fig, path)


def plot_importance(importance: Mapping[str, float], metric: str, n_trials: int, path: str | Path) -> Path | None:
    if not importance:
        return None
    items = sorted(importance.items(), key=lambda kv: kv[1])
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.0, 0.5 * len(items) + 1.4), layout="constrained")
        ax = fig.subplots()
        ax.barh([k for k, _ in items], [v for _, v in items], color=SF)
        ax.set_xlim(0, 1)
        ax.set_xlabel("fANOVA importance (share of explained variance)")
        ax.set_title(f"Hyperparameter importance for {metric} ({n_trials} Optuna trials)")
        return _save(fig, path)


def plot_samples(grids: Mapping[tuple[int, bool], np.ndarray | None], labels: Mapping[int, str],
                 path: str | Path) -> Path | None:
    """Final sample grids side by side: rows = patch sizes (coarse first), columns = baseline | SF."""
    if not any(img is not None for img in grids.values()):
        return None
    patches = sorted({p for p, _ in grids}, reverse=True)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(5.6, 2.9 * len(patches)), layout="constrained")
        axes = fig.subplots(len(patches), 2, squeeze=False)
        for r, patch in enumerate(patches):
            for c, sf in enumerate((False, True)):
                ax = axes[r][c]
                ax.grid(False)
                ax.set_xticks([])
                ax.set_yticks([])
                img = grids.get((patch, sf))
                if img is None:
                    ax.text(0.5, 0.5, "no samples/final.png logged", ha="center", va="center", color="0.4")
                else:
                    ax.imshow(img, interpolation="nearest")
                ax.set_title(f"{ARM_NAMES[sf]} · {labels.get(patch, f'patch {patch}')}", color=ARM_COLORS[sf])
        return _save(fig, path)


def plot_schedules(configs: Sequence[tuple[str, Mapping[str, Any]]], front: tuple[float, float] | None,
                   path: str | Path) -> Path:
    """Cutoff schedules c(t) over the data's SNR front r*(t); above the front the noisy input is mostly noise."""
    t = np.linspace(0.0, 1.0, 401)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(7.0, 4.4), layout="constrained")
        ax = fig.subplots()
        if front is not None:
            alpha, r0 = front
            r = np.clip(snr_front(t, alpha, r0), 0.0, 1.05)
            ax.fill_between(t, r, 1.05, color="0.85", alpha=0.7, label="noise-dominated band (SNR < 1)")
            ax.plot(t, r, color="black", lw=2.2, label=f"data SNR front r*(t), α={alpha:.2f}, r0={r0:.3g}")
        shown = {dict(kw)["schedule"] for _, kw in configs}
        references = [("contour", {"schedule": "contour"})]
        if front is not None:
            references.append(("snr", {"schedule": "snr", "alpha": front[0], "r0": front[1]}))
        for schedule, kw in references:  # the options not run, at their defaults, for comparison
            if schedule not in shown:
                ax.plot(t, cutoff(t=t, **kw), lw=1.2, ls="--", alpha=0.6, color=SCHEDULE_COLORS[schedule],
                        label=f"{schedule} at defaults (not run)")
        for label, kw in configs:
            kw = dict(kw)
            schedule = kw.pop("schedule")
            ax.plot(t, cutoff(schedule, t, **kw), lw=2, color=SCHEDULE_COLORS.get(schedule), label=label,
                    ls="-" if schedule != "constant" else "--")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("t (0 = pure noise, 1 = data)")
        ax.set_ylabel("normalised radial DCT frequency r")
        ax.set_title("SF cutoff schedules c(t) against the data's signal-to-noise front")
        ax.legend(loc="upper left", fontsize=8)
        return _save(fig, path)


LINE_COLORS = ("#1f77b4", "#e4572e", "#2ca02c", "#9467bd", "#8c564b", "#17becf")
TOKEN_MARKERS = ("o", "s", "^", "D", "v")


def plot_gain_vs_ratio(ratios: pd.DataFrame, path: str | Path) -> Path | None:
    """SF gain vs patch compression ratio (C*p*p / bottleneck, log axis): mean paired Δ with its interval, one line
    per context (e.g. data spectrum); marker shape = token count when the runs vary it (patch-size axis)."""
    if ratios.empty or ratios.groupby("line")["compression_ratio"].nunique().max() < 2:
        return None
    metric = ratios["metric"].iloc[0]
    lines = list(dict.fromkeys(ratios["line"]))
    tokens = sorted(ratios["tokens"].dropna().astype(int).unique())
    markers = {t: TOKEN_MARKERS[i % len(TOKEN_MARKERS)] for i, t in enumerate(tokens)}
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.4, 4.2), layout="constrained")
        ax = fig.subplots()
        # small multiplicative offsets so the intervals of two lines at the same ratio do not hide each other
        offsets = np.exp(np.linspace(-0.04, 0.04, len(lines))) if len(lines) > 1 else [1.0]
        for i, (line, offset) in enumerate(zip(lines, offsets)):
            rows = ratios[ratios["line"] == line].sort_values("compression_ratio")
            color = LINE_COLORS[i % len(LINE_COLORS)]
            x = rows["compression_ratio"].to_numpy(dtype=float) * offset
            ax.plot(x, rows["delta"], "-", color=color, lw=1.6, label=line)
            for xi, (_, r) in zip(x, rows.iterrows()):
                marker = markers.get(int(r["tokens"]), "o") if pd.notna(r["tokens"]) else "o"
                if pd.notna(r["ci_low"]):
                    ax.errorbar([xi], [r["delta"]], yerr=[[r["delta"] - r["ci_low"]], [r["ci_high"] - r["delta"]]],
                                fmt=marker, color=color, capsize=4, ms=6)
                else:
                    ax.scatter([xi], [r["delta"]], marker=marker, facecolors="white", edgecolors=color, zorder=3)
        if len(tokens) > 1:
            for t, m in markers.items():
                ax.scatter([], [], marker=m, color="0.4", label=f"{t} tokens")
        ax.axhline(0.0, color="0.3", lw=1)
        ax.set_xscale("log", base=2)
        ticks = sorted(ratios["compression_ratio"].unique())
        ax.set_xticks(ticks, [f"{t:.3g}x" for t in ticks])
        ax.minorticks_off()
        ax.margins(x=0.08)
        ax.set_xlabel("patch compression ratio (C·p² / bottleneck), log scale")
        ax.set_ylabel(f"Δ {metric.split('/', 1)[-1]} (SF − baseline)")
        better = "SF better ↑" if higher_is_better(metric) else "SF better ↓"
        ax.text(0.02, 0.97, better, transform=ax.transAxes, va="top", color="0.35", fontsize=9)
        ax.set_title(f"SF gain vs compression ratio: {metric.split('/', 1)[-1]}")
        ax.legend(loc="best")
        return _save(fig, path)
