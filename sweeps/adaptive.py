"""Adaptive seeds: run a grid round by round until the primary metric's comparisons are decided.

A spec with `seeds: {start: 3, step: 2, max: 12, stop: decided}` (and no `seed` in its grid) runs as rounds. Round r
is its own Tune experiment `grid-r<r>` under the sweep's storage and adds the seeds planned for it to every grid arm
(round 1: seeds first_seed .. first_seed+start-1). After each round the driver loads this sweep's finished trials
from MLflow, pairs them with the analysis package (`compare_arms`, the code behind `specforce report`) and applies
the stopping rule of analysis/sequential.py: stop when every comparison of the primary metric (each patch size,
and each coarse-vs-fine interaction) has an anytime-valid interval that excludes 0 or lies within ±min_effect, or
when `max` seeds are reached.

Recorded on the sweep's parent MLflow run (analysis/adaptive.py reads them back for the report): metrics
`sweep/round` and `sweep/seeds_per_arm` (step = round), tags `specforce.adaptive.round|decision|reason|design`,
and the artifact `adaptive/round-<r>.json` with every interval. `--resume` skips every round whose decision is on
record (a finished round is never rerun) and continues the round it was in through Tune's own restore.

    specforce sweep sweeps/configs/demo_adaptive.yaml --dry-run    # the planned rounds and their trials
    specforce sweep sweeps/configs/demo_adaptive.yaml              # run it (CPU; up to 48 trials)
"""
from __future__ import annotations

import json
import math
import time
from typing import Any, Iterator

from mlflow.entities import Metric, RunTag

from analysis.adaptive import analyse_look, family_size
from analysis.sequential import Decision, Design
from specforce_contracts import (ADAPTIVE_DECISION_TAG as DECISION_TAG, ADAPTIVE_DESIGN_TAG as DESIGN_TAG,
                                 ADAPTIVE_REASON_TAG as REASON_TAG, ADAPTIVE_ROUND_TAG as ROUND_TAG,
                                 ARTIFACT_ADAPTIVE_ROUND as ROUND_ARTIFACT, SWEEP_ROUND, SWEEP_SEEDS_PER_ARM)
from sweeps.spec import SpecError, SweepSpec, adaptive_primary, base_config, round_plans, round_seeds


DESIGN_KEYS = ("looks", "alpha", "family_size", "min_effect", "boundary", "primary")


def phase_name(round_index: int) -> str:
    return f"grid-r{round_index}"


def design_for(spec: SweepSpec) -> Design:
    """The stopping design: planned looks, family-wise alpha over the primary metric's comparisons, min_effect."""
    assert spec.seeds is not None
    analysis = getattr(spec, "analysis", None)  # the spec's analysis section; absent: 95%, no equivalence margin
    confidence = getattr(analysis, "confidence", None) or 0.95
    min_effect = getattr(analysis, "min_effect", None)
    others = [len(v) for k, v in spec.grid.items() if k not in ("spectral.enabled", "model.patch_size")]
    groups = math.prod(others) if others else 1
    patches = len(spec.grid.get("model.patch_size", [base_config(spec).model.patch_size]))
    return Design(spec.seeds.looks, alpha=round(1.0 - confidence, 12), family_size=family_size(groups, patches),
                  min_effect=min_effect)


def round_param_space(spec: SweepSpec, round_index: int) -> dict[str, Any]:
    from ray import tune

    plans = [{"trial_id": p.trial_id, "overrides": p.overrides} for p in round_plans(spec, round_index)]
    return {"plan": tune.grid_search(plans)}


def round_phases(spec: SweepSpec) -> list[tuple[str, dict[str, Any]]]:
    """Every planned round as (phase, param_space): what the storage may hold for this sweep."""
    assert spec.seeds is not None
    return [(phase_name(r), round_param_space(spec, r)) for r in range(1, len(spec.seeds.looks) + 1)]


class AdaptiveRounds:
    """Iterates the rounds still to run as (phase, param_space); between two, analyses the round just run.

    run_sweep fits each yielded phase before asking for the next, so the analysis here always sees the finished
    round's trials in MLflow (the trial logger terminates their runs before `fit()` returns).
    """

    def __init__(self, spec: SweepSpec, *, client, parent_run_id: str, tracking_uri: str, resume: bool):
        assert spec.seeds is not None
        self.spec, self.client, self.parent, self.tracking_uri, self.resume = (spec, client, parent_run_id,
                                                                              tracking_uri, resume)
        self.design = design_for(spec)
        self.primary = adaptive_primary(spec)
        self.decision: Decision | None = None

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        looks = self.design.looks
        tags = self.client.get_run(self.parent).data.tags if self.resume else {}
        design = {**self.design.as_dict(), "primary": self.primary}
        if DESIGN_TAG in tags:  # the stopping rule must not change between looks (analysis.* is not fingerprinted)
            recorded = json.loads(tags[DESIGN_TAG])
            changed = [f"{k}: {recorded.get(k)!r} -> {design[k]!r}" for k in DESIGN_KEYS if recorded.get(k) != design[k]]
            if changed:
                raise SpecError(f"--resume: the adaptive design of sweep {self.spec.name!r} changed "
                                f"({'; '.join(changed)}); its stopping rule cannot change between looks: restore the "
                                "spec's analysis section, or start a new sweep (another name or --storage)")
        self.client.set_tag(self.parent, DESIGN_TAG, json.dumps(design))
        done = int(tags.get(ROUND_TAG, 0))
        if done and tags.get(DECISION_TAG) != "continue":
            print(f"[adaptive] already stopped after round {done} ({tags.get(DECISION_TAG)}): "
                  f"{tags.get(REASON_TAG)}", flush=True)
            return
        if done:
            print(f"[adaptive] resuming: round(s) 1-{done} finished and analysed, continuing at round {done + 1}",
                  flush=True)
        print(f"[adaptive] up to {len(looks)} rounds (seeds per arm {', '.join(map(str, looks))}); stops when every "
              f"comparison of {self.primary} is decided ({self.design.family_size} comparisons, "
              f"{self.design.confidence:.0%} anytime-valid, min_effect {self.design.min_effect})", flush=True)
        for r in range(done + 1, len(looks) + 1):
            seeds = round_seeds(self.spec, r)
            started = time.time()
            which = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
            print(f"[round {r}/{len(looks)}] {which} -> {looks[r - 1]} per arm", flush=True)
            yield phase_name(r), round_param_space(self.spec, r)
            self.decision = self._analyse(r)
            self._record(r, time.time() - started)
            if self.decision.stop:
                return

    def _analyse(self, r: int) -> Decision:
        from analysis.runs import load_tables

        runs = load_tables([self.spec.name], self.tracking_uri, with_history=False).runs
        seeds = [self.spec.seeds.first_seed + i for i in range(self.design.looks[r - 1])]  # type: ignore[union-attr]
        return analyse_look(runs, self.parent, self.primary, self.design, r, seeds, grid_keys=list(self.spec.grid))

    def _record(self, r: int, seconds: float) -> None:
        d = self.decision
        assert d is not None
        self.client.log_text(self.parent, json.dumps({**d.as_dict(), "seconds": seconds}, indent=2),
                             ROUND_ARTIFACT.format(r))
        # metrics and tags in one batch, after the record: on resume the round tag marks a round whose decision,
        # reason and record are all written
        now = int(time.time() * 1000)
        self.client.log_batch(self.parent, metrics=[Metric(SWEEP_ROUND, r, now, r),
                                                    Metric(SWEEP_SEEDS_PER_ARM, d.planned_seeds, now, r)],
                              tags=[RunTag(DECISION_TAG, d.outcome), RunTag(REASON_TAG, d.reason[:5000]),
                                    RunTag(ROUND_TAG, str(r))])
        for c in d.comparisons:
            print(f"[round {r}] {c.text}", flush=True)
        verb = {"continue": "continuing", "decided": "STOP (decided)", "max_reached": "STOP (max reached)"}
        print(f"[round {r}] {verb[d.outcome]} after {seconds:.0f}s: {d.reason}", flush=True)
