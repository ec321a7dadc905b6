"""The verdict in plain words: a one-line headline a reviewer can quote, then the detail; and what to run next.

Words follow the evidence: "SF lowers/raises <metric>" only when the interval excludes 0, otherwise "no clear
effect"; "helps more with coarse/fine tokenization" only when the interaction's interval excludes 0. Secondary
metrics follow their Holm-adjusted p-values (over every secondary metric x patch size). For example:

    No clear effect of SF on denoise_loss at patch 8: Δ -0.10, 95% CI [-0.60, 0.40], 3 pairs; SF lowers
    denoise_loss at patch 4 (better): Δ -0.54, 95% CI [-0.74, -0.34], 3 pairs; SF helps more with fine
    tokenization: its gain is 0.44 larger at patch 4 than at patch 8 (95% CI [0.01, 0.87], Welch).

(the store of `tests/verdict_demo_store.py`, which mirrors the `make demo` numbers)

    python -c "from analysis import load_runs; from analysis.compare import compare_arms; \\
        from analysis.verdict import verdict; r = load_runs('demo', 'sqlite:///mlflow.db'); \\
        print(verdict(compare_arms(r, ['eval/denoise_loss']), 'eval/denoise_loss'))"
"""
from __future__ import annotations

import math

import pandas as pd

from analysis.compare import Comparison, comparable_trials
from analysis.intervals import method_label, sign_flip_floor
from analysis.numbers import fmt, fmt_ci  # noqa: F401 (fmt: the other analysis modules import it from here)
from analysis.selection import context_columns, status_problem
from specforce_contracts import DENOISE_BUCKET_PREFIX, MODEL_BOTTLENECK, higher_is_better

BUCKET_PREFIX = DENOISE_BUCKET_PREFIX  # per-t-bucket losses: detail tables, not headline sentences


def fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "< 0.001" if p < 0.001 else f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def short(metric: str) -> str:
    return metric.split("/", 1)[-1]


def pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _where(row: pd.Series) -> str:
    return f"patch {int(row['patch_size'])} ({int(row['tokens'])} tokens)"


def _pairs(n: int) -> str:
    return f"{n} pair" + ("" if n == 1 else "s")


def main_group(comparison: Comparison, metric: str) -> tuple[str, str] | None:
    """(context, sf_config) with the most seed pairs for the metric: the one the verdict speaks about."""
    rows = comparison.comparisons[comparison.comparisons["metric"] == metric]
    if rows.empty:
        return None
    totals = rows.groupby(["context", "sf_config"])["n_pairs"].sum()
    best = totals[totals == totals.max()]
    return sorted(best.index)[0]


def is_secondary(comparison: Comparison, metric: str) -> bool:
    return comparison.primary is not None and metric != comparison.primary


def effect_sentence(row: pd.Series, confidence: float, *, secondary: bool = False) -> str:
    """One comparison in words: "SF lowers/raises" only when the interval excludes 0 (and, for a secondary metric,
    when its Holm-adjusted p is below 1 - confidence), else "no clear effect"."""
    metric, patch, n = short(row["metric"]), int(row["patch_size"]), int(row["n_pairs"])
    est, lo, hi = fmt_ci(row["delta"], row["ci_low"], row["ci_high"])
    if not (math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"])):
        return f"no interval for SF on {metric} at patch {patch}: Δ {est}, {_pairs(n)} (a CI needs at least 2)"
    stats = f"Δ {est}, {pct(confidence)} CI [{lo}, {hi}], {_pairs(n)}"
    excludes = row["ci_low"] > 0 or row["ci_high"] < 0
    holm = row.get("p_holm", math.nan)
    holm_ok = not secondary or not math.isfinite(holm) or holm < 1 - confidence
    tail = f", Holm p = {fmt_p(holm)}" if secondary and math.isfinite(holm) else ""
    if excludes and holm_ok:
        verb = "lowers" if row["delta"] < 0 else "raises"
        better = (row["delta"] > 0) == higher_is_better(row["metric"])
        return f"SF {verb} {metric} at patch {patch} ({'better' if better else 'worse'}): {stats}{tail}"
    if excludes:
        return f"no clear effect of SF on {metric} at patch {patch} after Holm adjustment: {stats}{tail}"
    return f"no clear effect of SF on {metric} at patch {patch}: {stats}{tail}"


def _favoured(side: str, gain: float) -> str:
    # "helps more" only when SF actually improves the metric there; when it worsens it everywhere, it "hurts less"
    return f"SF helps more with {side} tokenization" if gain > 0 else f"SF hurts less with {side} tokenization"


def interaction_sentence(inter: pd.Series, confidence: float) -> str:
    """The coarse-vs-fine difference of gains (gain = improvement, in the metric's better direction)."""
    flip = 1.0 if higher_is_better(inter["metric"]) else -1.0
    est = flip * inter["difference"]
    lo, hi = sorted((flip * inter["ci_low"], flip * inter["ci_high"]))
    coarse, fine = f"patch {int(inter['coarse_patch'])}", f"patch {int(inter['fine_patch'])}"
    label = method_label(inter["method"]) if isinstance(inter.get("method"), str) and inter["method"] else ""
    how = f", {label}" if label else ""
    if not (math.isfinite(inter["ci_low"]) and math.isfinite(inter["ci_high"])):
        (e,) = fmt(est)
        return (f"the gain differs by {e} between {coarse} and {fine}, but its interval is undefined "
                f"({inter['note']})")
    if lo > 0:
        e, l, h = fmt_ci(est, lo, hi)
        lead = _favoured("coarse", flip * inter["delta_coarse"])
        return f"{lead}: its gain is {e} larger at {coarse} than at {fine} ({pct(confidence)} CI [{l}, {h}]{how})"
    if hi < 0:
        e, l, h = fmt_ci(-est, -hi, -lo)
        lead = _favoured("fine", flip * inter["delta_fine"])
        return f"{lead}: its gain is {e} larger at {fine} than at {coarse} ({pct(confidence)} CI [{l}, {h}]{how})"
    e, l, h = fmt_ci(est, lo, hi)
    return (f"no clear difference between the gains at {coarse} and {fine}: gain({coarse}) - gain({fine}) = {e}, "
            f"{pct(confidence)} CI [{l}, {h}]{how}")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _rows(comparison: Comparison, metric: str) -> tuple[pd.DataFrame, tuple[str, str] | None]:
    group = main_group(comparison, metric)
    if group is None:
        return comparison.comparisons.iloc[0:0], None
    context, config = group
    table = comparison.comparisons
    rows = table[(table["metric"] == metric) & (table["context"] == context) & (table["sf_config"] == config)
                 & (table["n_pairs"] > 0)].sort_values("patch_size", ascending=False)
    return rows, group


def _main_interaction(comparison: Comparison, metric: str, group: tuple[str, str]) -> pd.Series | None:
    context, config = group
    inter = comparison.interactions
    inter = inter[(inter["metric"] == metric) & (inter["context"] == context) & (inter["sf_config"] == config)]
    if inter.empty:
        return None
    return inter.sort_values(["coarse_patch", "fine_patch"], ascending=[False, True]).iloc[0]


def verdict(comparison: Comparison, metric: str) -> str:
    """The one-line headline for a metric: its effect at each patch size, then the coarse-vs-fine difference."""
    rows, group = _rows(comparison, metric)
    if group is None:
        return f"No verdict on {short(metric)}: no completed run reported it."
    if rows.empty:
        return (f"No verdict on {short(metric)}: no seed-matched SF/baseline pair completed "
                "(see 'What to run next').")
    secondary = is_secondary(comparison, metric)
    parts = [effect_sentence(row, comparison.confidence, secondary=secondary) for _, row in rows.iterrows()]
    context, config = group
    scope = "".join(f" [{x}]" for x in (config, context) if x)
    inter = _main_interaction(comparison, metric, group)
    tail = ("the coarse-vs-fine comparison needs paired runs at a second patch size" if inter is None
            else interaction_sentence(inter, comparison.confidence))
    # a bottleneck that varies only because another architecture has none (model.target differs) is no sweep
    if inter is None and f"{MODEL_BOTTLENECK}=" in context and "model.target=" not in context:
        tail = "the bottleneck sweep compares compression ratios at this patch size (see 'SF gain vs compression ratio')"
    return _capital("; ".join(parts + [tail])) + scope + "."


def details(comparison: Comparison, metric: str) -> list[str]:
    """The evidence behind the headline: method, p-values (t-test and exact sign-flip, with its floor), spread."""
    rows, group = _rows(comparison, metric)
    if rows.empty:
        return []
    out = []
    label = method_label(comparison.method)
    for _, row in rows.iterrows():
        n = int(row["n_pairs"])
        if n < 2:
            continue
        floor = sign_flip_floor(n)
        sd = fmt(row["sd_diff"])[0]
        text = (f"At {_where(row)}: {label} p = {fmt_p(row['p_value'])}, exact sign-flip p = "
                f"{fmt_p(row['p_signflip'])}")
        if n < 6:
            text += (f" (with {n} pairs the sign-flip p can never be below 2/2^{n} = {floor:.3g}, so it cannot reach "
                     "0.05 under 6 pairs)")
        out.append(text + f"; SD of the paired differences {sd}.")
    inter = _main_interaction(comparison, metric, group)
    if inter is not None and math.isfinite(inter["ci_low"]):
        out.append(f"Coarse vs fine (patch {int(inter['coarse_patch'])} vs {int(inter['fine_patch'])}): "
                   f"{method_label(inter['method'])} interval for the difference of the two mean gains, "
                   f"p = {fmt_p(inter['p_value'])}, {int(inter['n_pairs_coarse'])} and {int(inter['n_pairs_fine'])} "
                   "pairs (independent models).")
    return out


def power_messages(comparison: Comparison) -> list[str]:
    """For each comparison whose interval includes 0: the seed pairs a paired t-test needs for 80% power at 5%."""
    table = comparison.comparisons
    table = table[~table["metric"].str.startswith(BUCKET_PREFIX) & (table["n_pairs"] >= 2)]
    messages = []
    for _, row in table.iterrows():
        if not (math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"])) or \
                row["ci_low"] > 0 or row["ci_high"] < 0:
            continue
        n = int(row["n_pairs"])
        est, lo, hi = fmt_ci(row["delta"], row["ci_low"], row["ci_high"])
        effect_src = ("analysis.min_effect" if comparison.min_effect is not None and row["metric"] == comparison.primary
                      else "the observed |Δ|")
        (effect,) = fmt(row["power_effect"])
        (sd,) = fmt(row["sd_diff"])
        where = f"{short(row['metric'])} at {_where(row)}" + "".join(
            f" [{x}]" for x in (row["sf_config"], row["context"]) if x)
        head = f"{where}: the interval includes 0 (Δ {est}, {pct(comparison.confidence)} CI [{lo}, {hi}], {n} pairs)"
        need = row["pairs_for_80pct_power"]
        if not math.isfinite(need):
            messages.append(f"{head}; no power estimate: the paired differences have no spread or Δ is 0.")
            continue
        need = int(need)
        more = f"run {need - n} more seed(s) in both arms" if need > n else (
            "this many pairs already ran, so the observed effect is likely smaller than assumed")
        if need > 100 and effect_src == "the observed |Δ|":
            more += (" (the observed effect is tiny next to the seed-to-seed spread; set analysis.min_effect to "
                     "plan for the smallest effect that matters)")
        messages.append(f"{head}; to detect an effect of {effect} ({effect_src}) with 80% power at the 5% level "
                        f"(two-sided paired t, SD of paired differences {sd}) takes {need} seed pairs: {more}.")
    return messages


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
        # a sweep over model.bottleneck asks the compression question at one patch size (analysis.regime): no hint
        if len(paired) == 1 and f"params.{MODEL_BOTTLENECK}" not in ctx_cols:
            (patch,) = paired
            finer = patch // 2 if patch % 2 == 0 and patch > 1 else None
            coarser = patch * 2 if all(s % (patch * 2) == 0 for s in image_sizes) else None
            suggest = " or ".join(str(p) for p in (coarser, finer) if p)
            messages.append(f"Only patch {patch}{where} has paired runs: the coarse-vs-fine question needs a second "
                            f"patch size; run both arms at patch {suggest or 'another size'}.")
    return messages
