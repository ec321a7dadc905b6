"""The coarse-vs-fine verdict in plain words, and what is missing (which arms, which seeds to run).

    SF lowers fd_pixel by 6.1 [3.2, 9.0] at patch 8 (16 tokens) and by 0.4 [-1.1, 1.9] at patch 4 (64 tokens)
    (95% bootstrap CIs over 3 and 3 seed pairs). SF helps more with coarse tokenization: its gain is 5.7 [2.5, 8.9]
    larger at patch 8 than at patch 4.

    python -c "from analysis import load_runs; from analysis.compare import compare_arms; \\
        from analysis.verdict import verdict; r = load_runs('demo', 'sqlite:///mlflow.db'); \\
        print(verdict(compare_arms(r, ['eval/fd_pixel']), 'eval/fd_pixel'))"
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.compare import Comparison, comparable_trials
from analysis.runs import higher_is_better
from analysis.selection import context_columns, status_problem


def fmt(*values: float) -> list[str]:
    """Format numbers together with two significant digits of the largest, so an estimate and its CI align."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    top = max(finite, default=0.0)
    decimals = 1 if top == 0 else max(0, 1 - math.floor(math.log10(top)))
    out = [f"{v:.{decimals}f}" if v is not None and math.isfinite(v) else "n/a" for v in values]
    return [t[1:] if t.startswith("-") and float(t) == 0 else t for t in out]  # no "-0.00"


def short(metric: str) -> str:
    return metric.split("/", 1)[-1]


def _where(row: pd.Series) -> str:
    return f"patch {int(row['patch_size'])} ({int(row['tokens'])} tokens)"


def main_group(comparison: Comparison, metric: str) -> tuple[str, str] | None:
    """(context, sf_config) with the most seed pairs for the metric: the one the verdict speaks about."""
    rows = comparison.comparisons[comparison.comparisons["metric"] == metric]
    if rows.empty:
        return None
    totals = rows.groupby(["context", "sf_config"])["n_pairs"].sum()
    best = totals[totals == totals.max()]
    return sorted(best.index)[0]


def _clauses(rows: pd.DataFrame, metric: str) -> str:
    first = rows.iloc[0]["delta"]
    verb, sign = ("lowers", -1.0) if first < 0 else ("raises", 1.0)
    parts = []
    for i, (_, row) in enumerate(rows.iterrows()):
        lo, hi = sorted((sign * row["ci_low"], sign * row["ci_high"]))
        est, lo_s, hi_s = fmt(sign * row["delta"], lo, hi)
        interval = f"[{lo_s}, {hi_s}]" if math.isfinite(row["ci_low"]) else "(1 pair: CI undefined)"
        lead = f"SF {verb} {short(metric)} by" if i == 0 else "by"
        parts.append(f"{lead} {est} {interval} at {_where(row)}")
    return ", ".join(parts[:-1]) + (" and " if len(parts) > 1 else "") + parts[-1]


def _favoured(side: str, gain: float) -> str:
    # "helps more" only when SF actually improves the metric there; when it worsens it everywhere, it "hurts less"
    return f"SF helps more with {side} tokenization" if gain > 0 else f"SF hurts less with {side} tokenization"


def _interaction_sentence(inter: pd.Series, metric: str) -> str:
    # gain = improvement: lower is better for every metric except eval/is
    flip = 1.0 if higher_is_better(metric) else -1.0
    est = flip * inter["difference"]
    lo, hi = sorted((flip * inter["ci_low"], flip * inter["ci_high"]))
    coarse, fine = f"patch {int(inter['coarse_patch'])}", f"patch {int(inter['fine_patch'])}"
    if not math.isfinite(inter["ci_low"]):
        (e,) = fmt(est)
        return (f"The gain differs by {e} between {coarse} and {fine}, but its interval is undefined "
                f"({inter['note']}).")
    if lo > 0:
        e, l, h = fmt(est, lo, hi)
        lead = _favoured("coarse", flip * inter["delta_coarse"])
        return f"{lead}: its gain is {e} [{l}, {h}] larger at {coarse} than at {fine}."
    if hi < 0:
        e, l, h = fmt(-est, -hi, -lo)
        lead = _favoured("fine", flip * inter["delta_fine"])
        return f"{lead}: its gain is {e} [{l}, {h}] larger at {fine} than at {coarse}."
    e, l, h = fmt(est, lo, hi)
    return (f"The gain at {coarse} minus the gain at {fine} is {e} [{l}, {h}], an interval that includes 0: "
            f"no evidence that the effect depends on tokenization with these seeds.")


def verdict(comparison: Comparison, metric: str) -> str:
    """One or two plain sentences answering "does SF help, and does that depend on tokenisation?" for a metric."""
    group = main_group(comparison, metric)
    if group is None:
        return f"No verdict on {short(metric)}: no completed run reported it."
    context, config = group
    table = comparison.comparisons
    rows = table[(table["metric"] == metric) & (table["context"] == context) & (table["sf_config"] == config)
                 & (table["n_pairs"] > 0)].sort_values("patch_size", ascending=False)
    if rows.empty:
        return (f"No verdict on {short(metric)}: no seed-matched SF/baseline pair completed "
                "(see 'What to run next').")
    pct = f"{comparison.confidence * 100:g}%"
    n = [int(k) for k in rows["n_pairs"]]
    counts = f"{n[0]} seed pairs" + (" each" if len(n) > 1 else "") if len(set(n)) == 1 else \
        ", ".join(map(str, n[:-1])) + f" and {n[-1]} seed pairs"
    scope = "".join(f" [{x}]" for x in (config, context) if x)
    text = f"{_clauses(rows, metric)}{scope} ({pct} bootstrap CIs over {counts})."
    inter = comparison.interactions
    inter = inter[(inter["metric"] == metric) & (inter["context"] == context) & (inter["sf_config"] == config)]
    if inter.empty:
        return text + " The coarse-vs-fine comparison needs paired runs at a second patch size."
    coarsest_vs_finest = inter.sort_values(["coarse_patch", "fine_patch"], ascending=[False, True]).iloc[0]
    return text + " " + _interaction_sentence(coarsest_vs_finest, metric)


def _seeds(values) -> str:
    return ", ".join(str(int(s)) for s in sorted(set(values)))


def _why_absent(runs: pd.DataFrame, patch: int, sf: bool, seeds: set[int]) -> str:
    """' (the partner runs failed: ...)' when the partner arm was run but kept apart, else ''."""
    tried = runs[(runs["patch_size"] == patch) & (runs["sf"] == sf) & runs["seed"].isin(list(seeds))]
    tried = tried[tried.apply(status_problem, axis=1).notna()] if len(tried) else tried
    states = sorted(set(tried["status"].fillna(tried["mlflow_status"]).astype(str)))
    return f" (their partner runs ended {', '.join(states)}: see Excluded runs)" if states else ""


def missing_arms(runs: pd.DataFrame) -> list[str]:
    """What is missing for the comparison, and what to run: one message per problem."""
    trials = comparable_trials(runs)
    if trials.empty:
        return ["No completed trial to compare: run the sweep (baseline spectral.enabled=false and SF "
                "spectral.enabled=true at two patch sizes, several seeds each)."]
    ctx_cols = context_columns(trials)
    messages = []
    patches_paired: dict[str, set[int]] = {}
    groups = trials.groupby([trials[c].astype("string") for c in ctx_cols], dropna=False) if ctx_cols \
        else [((), trials)]
    image_sizes = sorted(trials["image_size"].dropna().astype(int).unique())
    for key, group in groups:
        values = key if isinstance(key, tuple) else (key,)
        where = "" if not ctx_cols else " (" + ", ".join(
            f"{c.removeprefix('params.')}={v}" for c, v in zip(ctx_cols, values)) + ")"
        if not (group["sf"] == True).any():  # noqa: E712
            messages.append(f"No completed SF run (spectral.enabled=true){where}: run the SF arm at patch sizes "
                            f"{_seeds(group['patch_size'])} with seeds {_seeds(group['seed'])}.")
        if not (group["sf"] == False).any():  # noqa: E712
            messages.append(f"No completed baseline run (spectral.enabled=false){where}: run the baseline at patch "
                            f"sizes {_seeds(group['patch_size'])} with seeds {_seeds(group['seed'])}.")
        paired = patches_paired.setdefault(where, set())
        for patch, at in group.groupby("patch_size"):
            base = set(at.loc[at["sf"] == False, "seed"].astype(int))  # noqa: E712
            sf = set(at.loc[at["sf"] == True, "seed"].astype(int))  # noqa: E712
            tokens = at["tokens"].dropna()
            label = f"patch {int(patch)}" + (f" ({int(tokens.iloc[0])} tokens)" if len(tokens) else "") + where
            if not base or not sf:
                if base or sf:
                    arm, other = ("baseline (spectral.enabled=false)", sf) if not base else (
                        "SF (spectral.enabled=true)", base)
                    messages.append(f"At {label} the {arm} arm is missing: run it with seeds {_seeds(other)}.")
                continue
            common = base & sf
            if not common:
                messages.append(f"At {label} the arms share no seed (baseline {_seeds(base)}, SF {_seeds(sf)}), so "
                                f"nothing pairs: run the baseline with seeds {_seeds(sf)} or SF with {_seeds(base)}.")
                continue
            paired.add(int(patch))
            if len(common) == 1:
                messages.append(f"At {label} only seed {_seeds(common)} has both arms: the interval is undefined; "
                                "run both arms with at least one more seed.")
            for arm, extra, partner in (("SF", sf - base, False), ("baseline", base - sf, True)):
                if extra:
                    why = _why_absent(runs, int(patch), partner, extra)
                    messages.append(f"At {label} {arm} seed(s) {_seeds(extra)} have no partner in the other arm "
                                    f"and are left out of the comparison{why}.")
        if len(paired) == 1:
            (patch,) = paired
            finer = patch // 2 if patch % 2 == 0 and patch > 1 else None
            coarser = patch * 2 if all(s % (patch * 2) == 0 for s in image_sizes) else None
            suggest = " or ".join(str(p) for p in (coarser, finer) if p)
            messages.append(f"Only patch {patch}{where} has paired runs: the coarse-vs-fine question needs a second "
                            f"patch size; run both arms at patch {suggest or 'another size'}.")
    return messages
