"""'What to run next' as a table: the open comparisons (interval includes 0) that more seeds can realistically settle.

A comparison whose paired t-test needs more than `REALISTIC_PAIRS` seed pairs for 80% power (at the observed |Δ|, or
analysis.min_effect for the primary metric) is not a to-do: its effect is tiny next to the seed-to-seed spread. Those
are named once, under the table, with what to do instead. Power as in `analysis.power` (two-sided 5%, noncentral t).

    python -c "from analysis import load_runs; from analysis.compare import compare_arms; \\
        from analysis.next_runs import next_runs_table; r = load_runs('demo', 'sqlite:///mlflow.db'); \\
        print(next_runs_table(compare_arms(r, ['eval/denoise_loss', 'eval/fd_pixel'])))"
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.compare import Comparison
from analysis.headline import delta_text
from analysis.numbers import fmt
from analysis.verdict import BUCKET_PREFIX, pct, short

REALISTIC_PAIRS = 50  # seed pairs per comparison a CPU or single-GPU ablation can still afford
UNREALISTIC = "no realistic number of seeds resolves this; set analysis.min_effect"


def _open_rows(comparison: Comparison) -> pd.DataFrame:
    table = comparison.comparisons
    table = table[~table["metric"].str.startswith(BUCKET_PREFIX) & (table["n_pairs"] >= 2)]
    defined = table["ci_low"].notna() & table["ci_high"].notna()
    return table[defined & (table["ci_low"] <= 0) & (table["ci_high"] >= 0)]


def _where(row: pd.Series) -> str:
    scope = "".join(f" [{x}]" for x in (row["sf_config"], row["context"]) if x)
    return f"{short(row['metric'])} at patch {int(row['patch_size'])}{scope}"


def next_runs_table(comparison: Comparison) -> tuple[pd.DataFrame, list[str]]:
    """(table of realistic next runs, the open comparisons no realistic seed count settles)."""
    cols = ["comparison", f"Δ [{pct(comparison.confidence)} CI]", "pairs now", "pairs for 80% power",
            "planned effect", "run"]
    rows, beyond = [], []
    for _, row in _open_rows(comparison).iterrows():
        need, n = row["pairs_for_80pct_power"], int(row["n_pairs"])
        if not math.isfinite(need):
            continue  # no spread or Δ = 0: no power estimate to plan with
        need = int(need)
        source = ("analysis.min_effect" if comparison.min_effect is not None and row["metric"] == comparison.primary
                  else "observed |Δ|")
        if need > REALISTIC_PAIRS:
            beyond.append(f"{_where(row)} (needs {need} pairs)")
            continue
        action = (f"{need - n} more seed(s) in both arms" if need > n else
                  "nothing: this many pairs already ran, so the effect is likely smaller than planned")
        rows.append([_where(row), delta_text(row["delta"], row["ci_low"], row["ci_high"]), str(n), str(need),
                     f"{fmt(row['power_effect'])[0]} ({source})", action])
    return pd.DataFrame(rows, columns=cols), beyond


def beyond_sentence(beyond: list[str]) -> str:
    return (f"Beyond {REALISTIC_PAIRS} seed pairs: " + "; ".join(beyond) + f". For these, {UNREALISTIC} "
            "(the smallest effect worth detecting) to plan for it, or accept that the data cannot tell.")
