"""Reading an adaptive sweep: the comparison family of the primary metric, each round's decision, the report's summary.

An adaptive sweep (spec `seeds:` section, sweeps/adaptive.py) records on its MLflow parent run:
- tag `specforce.adaptive.design`: the design as JSON (looks, alpha, family size, min_effect, primary metric);
- tags `specforce.adaptive.round` (rounds analysed), `specforce.adaptive.decision` (continue | decided |
  max_reached) and `specforce.adaptive.reason` (one sentence);
- metrics `sweep/round` and `sweep/seeds_per_arm` (step = round);
- artifact `adaptive/round-<r>.json`: every comparison's anytime-valid interval and status after round r.

The family of the primary metric, per context and SF configuration: the SF − baseline delta at each patch size,
and for every two patch sizes the coarse-vs-fine interaction as the mean of per-seed double differences
delta_coarse(seed) − delta_fine(seed) (seeds are matched across patch sizes, so it is a one-sample problem with an
anytime-valid interval like the others; see analysis/sequential.py).

    python -m analysis.adaptive --tracking-uri sqlite:///mlflow.db --sweep-run-id RUN_ID   # print the summary
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from analysis.sequential import Decision, Design, decide
from specforce_contracts import (ADAPTIVE_DECISION_TAG, ADAPTIVE_DESIGN_TAG, ADAPTIVE_REASON_TAG, ADAPTIVE_ROUND_TAG,
                                 ARTIFACT_ADAPTIVE_ROUND)

DESIGN_TAG, ROUND_TAG = ADAPTIVE_DESIGN_TAG, ADAPTIVE_ROUND_TAG
DECISION_TAG, REASON_TAG = ADAPTIVE_DECISION_TAG, ADAPTIVE_REASON_TAG
ROUND_ARTIFACT = ARTIFACT_ADAPTIVE_ROUND


def family_size(n_groups: int, n_patches: int) -> int:
    """Comparisons per (context, SF configuration): each patch size plus each pair of patch sizes."""
    return n_groups * (n_patches + n_patches * (n_patches - 1) // 2)


def _name(base: str, context: str, sf_config: str) -> str:
    extra = "; ".join(x for x in (context, sf_config) if x)
    return f"{base} ({extra})" if extra else base


def family_from_pairs(pairs: pd.DataFrame, metric: str) -> dict[str, np.ndarray]:
    """name -> per-seed values (sorted by seed) for every comparison of `metric` in compare_arms(...).pairs."""
    rows = pairs[pairs["metric"] == metric]
    family: dict[str, np.ndarray] = {}
    for (context, config), group in rows.groupby(["context", "sf_config"], sort=True):
        by_patch = {int(p): g.set_index("seed")["delta"].astype(float).sort_index()
                    for p, g in group.groupby("patch_size")}
        if any(s.index.has_duplicates for s in by_patch.values()):
            raise ValueError(f"{metric} ({context or 'no context'}): a seed is paired twice at one patch size; "
                             "the grid repeats an arm (e.g. baselines for several SF-only settings)")
        for patch in sorted(by_patch, reverse=True):
            family[_name(f"patch {patch}", context, config)] = by_patch[patch].to_numpy()
        for coarse, fine in combinations(sorted(by_patch, reverse=True), 2):
            both = by_patch[coarse].index.intersection(by_patch[fine].index)
            double = by_patch[coarse].loc[both] - by_patch[fine].loc[both]
            family[_name(f"interaction patch {coarse} − patch {fine}", context, config)] = double.to_numpy()
    return family


def analyse_look(runs: pd.DataFrame, sweep_run_id: str, metric: str, design: Design, look: int,
                 seeds: list[int], grid_keys: list[str] | None = None) -> Decision:
    """The stopping rule on this sweep's completed trials with the seeds planned up to this look.

    grid_keys: the spec's grid keys. When given, only they may split comparisons into contexts: the family was
    fixed from the grid before the first look, and a param that differs between rounds for another reason (e.g. a
    derived param a newer specforce logs, after --resume with an upgraded install) must not add comparisons.
    """
    from analysis.compare import compare_arms

    mine = runs[(runs["sweep_run_id"] == sweep_run_id) & runs["seed"].isin(seeds)] if len(runs) else runs
    if grid_keys is not None:
        keep = {f"params.{k}" for k in [*grid_keys, "seed", "model.patch_size", "spectral.enabled"]}
        mine = mine.drop(columns=[c for c in mine.columns if c.startswith("params.") and c not in keep])
    if mine.empty:
        return decide({}, design, look)
    pairs = compare_arms(mine, [metric]).pairs
    return decide(family_from_pairs(pairs, metric), design, look)


# ------------------------------------------------------------------------------------------------ the report
CONFSEQ = "confseq"


def design_from_dict(design: dict) -> Design:
    """The Design recorded in the sweep's `specforce.adaptive.design` tag (the calibration is deterministic)."""
    return Design(tuple(design["looks"]), alpha=design["alpha"], family_size=design["family_size"],
                  min_effect=design.get("min_effect"), boundary=design.get("boundary", "pocock"))


def register_confseq(design: dict | Design) -> str:
    """Register the sweep's anytime-valid interval as the paired method "confseq" of analysis.intervals, so that
    `compare_arms(..., method="confseq")` shows, for every metric's per-patch delta, intervals valid at the
    data-dependent stopping time. Returns the method name.

    The coarse-vs-fine rows use the same interval as the stopping rule: with the same seeds at both patch sizes
    (an adaptive sweep's rounds run every arm on the same seeds), the paired form on the per-seed double
    differences (`matched_interaction`, analysis/compare.py). Where seeds differ (a failed trial), the two-sample
    form: the difference of the two per-patch intervals, [low_a - high_b, high_a - low_b], which covers
    mean(a) - mean(b) whenever both per-patch intervals cover (simultaneously, at every look, with probability
    >= 1 - 2 alpha / family_size >= 1 - alpha): anytime-valid too, and wider."""
    from dataclasses import replace

    from analysis.intervals import register_method
    from analysis.sequential import sequential_interval

    d = design if isinstance(design, Design) else design_from_dict(design)

    def paired(values, confidence, **_options):
        if abs(confidence - d.confidence) > 1e-9:
            raise ValueError(f"confidence {confidence} differs from the adaptive design's {d.confidence}")
        return replace(sequential_interval(values, d), method=CONFSEQ)

    def two_sample(a, b, confidence, **_options):
        ia, ib = paired(a, confidence), paired(b, confidence)
        return replace(ia, estimate=ia.estimate - ib.estimate, low=ia.low - ib.high, high=ia.high - ib.low,
                       n=min(ia.n, ib.n), note="anytime-valid: difference of the two per-patch intervals")

    register_method(CONFSEQ, "anytime-valid group-sequential t", paired=paired, two_sample=two_sample,
                    matched_interaction=True)
    return CONFSEQ


@dataclass(frozen=True)
class AdaptiveSummary:
    rounds: int
    outcome: str  # continue (still running or interrupted) | decided | max_reached
    reason: str
    design: dict
    comparisons: pd.DataFrame  # comparison, estimate, ci_low, ci_high, n, status (the last analysed round)
    seeds_per_arm: pd.DataFrame  # patch, arm, seeds, seed list

    @property
    def paragraphs(self) -> list[str]:
        looks = self.design["looks"]
        done = looks[self.rounds - 1] if self.rounds else 0
        why = {"decided": "every comparison of the primary metric was decided",
               "max_reached": f"it reached the maximum of {looks[-1]} seeds per arm",
               "continue": "it has not finished (interrupted, or still running)"}[self.outcome]
        return [
            f"Adaptive seeds: {self.rounds} of up to {len(looks)} rounds ran ({done} seeds per arm planned; "
            f"looks at {', '.join(map(str, looks))}). The sweep stopped because {why}: {self.reason}.",
            f"Intervals for {self.design.get('primary', 'the primary metric')} are anytime-valid: "
            f"{1 - self.design['alpha']:.0%} simultaneously over every look and the {self.design['family_size']} "
            f"comparison(s) (group-sequential t with a Pocock-type boundary calibrated by simulation, nominal "
            f"{self.design['nominal_alpha_per_look']:.3g} per look; Bonferroni across comparisons"
            + (f"; 'no effect' means the interval lies within ±{self.design['min_effect']:g}"
               if self.design.get("min_effect") else "") + "). They are wider than fixed-n intervals: that is the "
            "price of deciding when to stop from the data."]

    def section(self):
        """The report section (analysis.render.Section)."""
        from analysis.render import Section

        return Section("Adaptive seeds: rounds and stopping", paragraphs=self.paragraphs,
                       tables=[("Primary metric, anytime-valid intervals at the last look", self.comparisons),
                               ("Seeds per arm (completed trials)", self.seeds_per_arm)])


def _seeds_per_arm(runs: pd.DataFrame, sweep_run_id: str) -> pd.DataFrame:
    from analysis.selection import status_problem

    mine = runs[runs["sweep_run_id"] == sweep_run_id] if len(runs) else runs
    if len(mine):
        mine = mine[mine.apply(status_problem, axis=1).isna()]
    rows = []
    for (patch, sf), group in mine.groupby(["patch_size", "sf"], sort=True):
        seeds = sorted(int(s) for s in group["seed"].dropna().unique())
        rows.append({"patch": int(patch), "arm": "SF" if sf else "baseline", "seeds": len(seeds),
                     "seed list": ", ".join(map(str, seeds))})
    return pd.DataFrame(rows, columns=["patch", "arm", "seeds", "seed list"])


def adaptive_summary(tracking_uri: str, sweep_run_id: str, runs: pd.DataFrame | None = None) -> AdaptiveSummary | None:
    """What the report says about an adaptive sweep; None when the sweep run is not adaptive.

    runs: the experiment's runs table (analysis.runs.load_tables(...).runs) when the caller has it loaded already.
    """
    from mlflow.tracking import MlflowClient

    from analysis.artifacts import read_text
    from analysis.runs import load_tables

    client = MlflowClient(tracking_uri)
    run = client.get_run(sweep_run_id)
    tags = run.data.tags
    if DESIGN_TAG not in tags:
        return None
    design = json.loads(tags[DESIGN_TAG])
    rounds = int(tags.get(ROUND_TAG, 0))
    record = json.loads(read_text(tracking_uri, sweep_run_id, ROUND_ARTIFACT.format(rounds)) or "{}") \
        if rounds else {}
    comparisons = pd.DataFrame(
        [{"comparison": c["name"], "estimate": c["estimate"], "ci_low": _num(c["ci_low"]),
          "ci_high": _num(c["ci_high"]), "n": c["n"], "status": c["status"]}
         for c in record.get("comparisons", [])],
        columns=["comparison", "estimate", "ci_low", "ci_high", "n", "status"])
    if runs is None:
        experiment = client.get_experiment(run.info.experiment_id).name
        runs = load_tables([experiment], tracking_uri, with_history=False).runs
    return AdaptiveSummary(rounds, tags.get(DECISION_TAG, "continue"), tags.get(REASON_TAG, "not analysed yet"),
                           design, comparisons, _seeds_per_arm(runs, sweep_run_id))


def _num(value) -> float:
    return float(value) if value is not None else math.nan


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m analysis.adaptive", description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--sweep-run-id", required=True)
    args = parser.parse_args()
    summary = adaptive_summary(args.tracking_uri, args.sweep_run_id)
    if summary is None:
        raise SystemExit(f"sweep run {args.sweep_run_id} is not an adaptive sweep (no tag {DESIGN_TAG})")
    print("\n\n".join(summary.paragraphs))
    print(summary.comparisons.to_string(index=False))
    print(summary.seeds_per_arm.to_string(index=False))
