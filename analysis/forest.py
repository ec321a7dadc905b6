"""The first screen's figure: a forest plot of the primary metric's Δ (SF − baseline) and interval per patch size,
with the coarse-vs-fine difference Δ(coarse) − Δ(fine) as a last row, a zero line and the "SF better" side shaded
and labelled in the metric's own direction (left for lower-is-better metrics, right for higher-is-better ones).

    python -c "from analysis.forest import plot_forest; import pandas as pd; \\
        print(plot_forest([('patch 8', -0.2, -0.3, -0.1), ('patch 4', -0.1, -0.3, 0.1)], \\
        ('coarse − fine', -0.1, -0.3, 0.1), 'eval/denoise_loss', '95% Student-t', 'forest.png'))"
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from analysis.plots import SF, STYLE, _save
from specforce_contracts import higher_is_better

Row = tuple[str, float, float, float]  # label, estimate, low, high (NaN bounds: no interval)


def _draw(ax, y: float, row: Row, marker: str, color: str) -> None:
    _, est, lo, hi = row
    if math.isfinite(lo) and math.isfinite(hi):
        ax.errorbar([est], [y], xerr=[[est - lo], [hi - est]], fmt=marker, color=color, capsize=4, lw=2, ms=8)
    else:  # one pair: a point without an interval, hollow so it does not read as certain
        ax.scatter([est], [y], marker=marker, facecolors="white", edgecolors=color, s=60, zorder=3)


def plot_forest(rows: Sequence[Row], interaction: Row | None, metric: str, interval: str,
                path: str | Path) -> Path | None:
    """rows: one per patch size, coarse first; interaction: the coarse-vs-fine difference of gains, or None."""
    rows = [r for r in rows if math.isfinite(r[1])]
    if not rows:
        return None
    shown = rows + ([interaction] if interaction is not None and math.isfinite(interaction[1]) else [])
    ys = list(range(len(shown)))[::-1]
    values = [v for r in shown for v in r[1:] if math.isfinite(v)] + [0.0]
    span = (max(values) - min(values)) or 1.0
    left, right = min(values) - 0.12 * span, max(values) + 0.12 * span
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(6.8, 0.45 * len(shown) + 1.15), layout="constrained")
        ax = fig.subplots()
        higher = higher_is_better(metric)
        # shade the side where SF improves the metric: Δ < 0 for lower-is-better, Δ > 0 for higher-is-better
        better_lo, better_hi = (0.0, right) if higher else (left, 0.0)
        ax.axvspan(better_lo, better_hi, color=SF, alpha=0.07, lw=0)
        ax.text(0.99 if higher else 0.01, 1.01, ("SF better →" if higher else "← SF better"), color=SF,
                transform=ax.transAxes, ha="right" if higher else "left", va="bottom", fontsize=9)
        ax.axvline(0.0, color="0.25", lw=1.1)
        for y, row in zip(ys, rows):
            _draw(ax, y, row, "o", SF)
        if len(shown) > len(rows):
            ax.axhline(ys[-1] + 0.5, color="0.75", lw=0.8, ls=":")
            _draw(ax, ys[-1], shown[-1], "D", "0.3")
        ax.set_yticks(ys, [r[0] for r in shown])
        ax.set_ylim(-0.6, len(shown) - 0.4)
        ax.set_xlim(left, right)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"Δ {metric.split('/', 1)[-1]} (SF − baseline), {interval}")
        ax.tick_params(axis="y", length=0)
        fig.get_layout_engine().set(h_pad=0.02)
        return _save(fig, path)


def forest_rows(main_rows, interaction) -> tuple[list[Row], Row | None]:
    """Rows of analysis.headline.main_rows / main_interaction as (label, estimate, low, high)."""
    rows = [(f"patch {int(r['patch_size'])}" + (f" ({int(r['tokens'])} tok)" if pd.notna(r["tokens"]) else ""),
             float(r["delta"]), float(r["ci_low"]), float(r["ci_high"])) for _, r in main_rows.iterrows()]
    inter = None if interaction is None else (
        f"coarse − fine ({int(interaction['coarse_patch'])} vs {int(interaction['fine_patch'])})",
        float(interaction["difference"]), float(interaction["ci_low"]), float(interaction["ci_high"]))
    return rows, inter

