"""Anytime-valid intervals and the adaptive-seeds stopping rule (analysis/sequential.py, analysis/adaptive.py).

References: scipy's Student-t interval (one look), Pocock's (1977) published boundaries (many looks, large n), a
fresh Monte Carlo of the crossing probability, and the rule itself run on simulated null data to `max`: the share
of simulated sweeps that ever declare an effect that is not there must stay at or below 5% family-wise (Monte Carlo
error allowed), while peeking at fixed-n intervals through the same looks must not.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.adaptive import family_from_pairs, family_size
from analysis.sequential import (EFFECT, NO_EFFECT, UNDECIDED, Design, crossing_probability, decide, nominal_alpha,
                                 planned_looks, sequential_interval, simulate)

DEMO_LOOKS = (3, 5, 7, 9, 11, 12)


def test_planned_looks_end_at_max_and_reject_bad_plans():
    assert planned_looks(3, 2, 12) == DEMO_LOOKS
    assert planned_looks(2, 1, 3) == (2, 3)
    assert planned_looks(4, 4, 12) == (4, 8, 12)
    assert planned_looks(5, 3, 5) == (5,)
    with pytest.raises(ValueError, match="start: needs at least 2"):
        planned_looks(1, 2, 12)
    with pytest.raises(ValueError, match=r"max: must be an integer >= start \(3\), got 2"):
        planned_looks(3, 2, 2)


def test_one_look_is_scipys_student_t_interval():
    x = np.array([-0.21, -0.17, -0.25, -0.19, -0.30])
    design = Design((5,), alpha=0.05)
    assert design.nominal == 0.05
    got = sequential_interval(x, design)
    low, high = stats.t.interval(0.95, 4, loc=x.mean(), scale=stats.sem(x))
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-12)
    assert got.estimate == pytest.approx(x.mean())


@pytest.mark.parametrize("k, pocock_c", [(2, 2.178), (5, 2.413)])
def test_calibration_reproduces_pocock_boundaries_at_large_n(k, pocock_c):
    # Pocock (1977), equally spaced looks, two-sided 0.05: |Z| > c at every look. With 100+ values per look the t
    # statistics behave like Z, so the calibrated per-look level must be 2 * (1 - Phi(c)).
    looks = tuple(range(100, 100 * k + 1, 100))
    level = nominal_alpha(looks, 0.05, n_sim=100_000, seed=7, conservative=False)
    assert level == pytest.approx(2 * stats.norm.sf(pocock_c), abs=0.0012)


def test_calibrated_level_crosses_with_probability_alpha_on_fresh_draws():
    alpha = 0.05 / 3
    level = nominal_alpha(DEMO_LOOKS, alpha)
    assert alpha / len(DEMO_LOOKS) < level < alpha  # tighter than Bonferroni over looks, stricter than one look
    n_sim = 200_000
    p = crossing_probability(DEMO_LOOKS, level, n_sim=n_sim, seed=12345)  # not the calibration's draws
    se = math.sqrt(alpha * (1 - alpha) / n_sim)
    assert alpha - 6 * se < p <= alpha + 3 * se


def test_decide_statuses_reasons_and_max():
    design = Design((3, 5), alpha=0.05, family_size=3, min_effect=1.0)
    effect = [-2.0, -2.1, -1.9]
    null = [0.01, -0.01, 0.0]
    noisy = [1.0, -1.0, 0.3]
    d = decide({"patch 8": effect, "patch 4": null, "interaction": noisy}, design, 1)
    status = {c.name: c.status for c in d.comparisons}
    assert status == {"patch 8": EFFECT, "patch 4": NO_EFFECT, "interaction": UNDECIDED}
    assert not d.stop and d.outcome == "continue" and d.reason == "undecided: interaction"
    d = decide({"patch 8": effect, "patch 4": null, "interaction": [-2.0, -2.02, -1.98]}, design, 1)
    assert d.stop and d.outcome == "decided"
    assert d.reason == ("every comparison decided: effect in patch 8, interaction; no effect beyond ±1 in patch 4")
    d = decide({"patch 8": effect + [-2, -2], "patch 4": null, "interaction": noisy}, design, 2)
    assert d.stop and d.outcome == "max_reached" and d.reason == "max 5 seeds reached; undecided: interaction"
    d = decide({"patch 8": effect}, design, 1)  # the other comparisons have no pairs yet
    assert not d.stop and d.reason == "missing 2 of 3 comparisons (no seed pairs yet)"
    with pytest.raises(ValueError, match="4 comparisons .* shares alpha among 3"):
        decide({"a": effect, "b": effect, "c": effect, "d": effect}, design, 1)
    with pytest.raises(ValueError, match="comparison 'patch 8': 4 values at look 1, which plans 3"):
        decide({"patch 8": effect + [0.0]}, design, 1)
    one = decide({"patch 8": [-1.0]}, Design((3, 5)), 1)
    assert one.comparisons[0].status == UNDECIDED and "1 pair" in one.comparisons[0].interval.note


def _null_rate_bound(rate: float, n_sim: int) -> float:
    return 0.05 + 3 * math.sqrt(0.05 * 0.95 / n_sim)


def test_null_family_wise_false_effects_at_most_5pct_while_peeking_inflates_them():
    # demo design: 2 patch sizes + their interaction share alpha; run to max (nothing can be decided but effects)
    n_sim = 4000
    shipped = simulate(Design(DEMO_LOOKS, 0.05, family_size=3), (0.0, 0.0), n_sim=n_sim, seed=1)
    assert shipped.false_effect <= _null_rate_bound(shipped.false_effect, n_sim)
    assert shipped.mean_seeds > 11.5  # with no effect and no min_effect it (almost) always runs to max
    peeking = simulate(Design(DEMO_LOOKS, 0.05, family_size=3, boundary="fixed-n"), (0.0, 0.0), n_sim=n_sim,
                       seed=1)
    assert peeking.false_effect > 0.10  # the harness sees what peeking does (measured ~15%)


@pytest.mark.parametrize("options", [{}, {"noise": "t3"}, {"lost": (2, 6)}, {"correlation": 0.8}],
                         ids=["normal", "t3-tails", "lost-seeds", "correlated"])
def test_null_false_effects_single_comparison_and_robustness(options):
    n_sim = 3000
    r = simulate(Design(DEMO_LOOKS, 0.05, family_size=1 if not options.get("correlation") else 3),
                 (0.0,) if not options.get("correlation") else (0.0, 0.0), n_sim=n_sim, seed=2, **options)
    assert r.false_effect <= _null_rate_bound(r.false_effect, n_sim)


def test_planted_effect_stops_early():
    n_sim = 1000
    one = simulate(Design(DEMO_LOOKS, 0.05, family_size=1), (-2.0,), n_sim=n_sim, seed=3)
    assert one.decided > 0.95 and one.mean_seeds < 7  # an effect of 2 seed-SDs: decided by 5-7 seeds
    assert one.any_error <= 0.05
    two = simulate(Design(DEMO_LOOKS, 0.05, family_size=3), (-4.0, -2.0), n_sim=n_sim, seed=4)
    assert two.decided > 0.5 and two.mean_seeds < 10
    null = simulate(Design(DEMO_LOOKS, 0.05, family_size=1), (0.0,), n_sim=n_sim, seed=3)
    assert null.mean_seeds > 11.5


def test_family_from_pairs_builds_patch_deltas_and_seed_matched_interactions():
    rows = []
    for patch, deltas in ((8, {0: -3.0, 1: -2.0, 2: -4.0}), (4, {0: -1.0, 2: -0.5})):
        for seed, delta in deltas.items():
            rows.append({"metric": "eval/denoise_loss", "context": "", "sf_config": "", "patch_size": patch,
                         "seed": seed, "delta": delta})
    rows.append({"metric": "eval/fd_pixel", "context": "", "sf_config": "", "patch_size": 8, "seed": 0,
                 "delta": 9.0})
    family = family_from_pairs(pd.DataFrame(rows), "eval/denoise_loss")
    assert list(family) == ["patch 8", "patch 4", "interaction patch 8 − patch 4"]
    np.testing.assert_array_equal(family["patch 8"], [-3.0, -2.0, -4.0])
    np.testing.assert_array_equal(family["interaction patch 8 − patch 4"], [-2.0, -3.5])  # seeds 0 and 2 only
    assert family_size(1, 2) == 3 and family_size(2, 3) == 12 and family_size(1, 1) == 1


def test_confseq_method_in_the_interval_registry_gives_the_designs_interval():
    from analysis.adaptive import register_confseq
    from analysis.intervals import paired_mean_ci

    design = Design(DEMO_LOOKS, 0.05, family_size=3)
    name = register_confseq(design.as_dict())
    d = [-0.3, -0.1, -0.25, -0.2, -0.15]
    got = paired_mean_ci(d, method=name)
    want = sequential_interval(d, design)
    assert (got.low, got.high, got.method) == (want.low, want.high, "confseq")
    half = design.critical_value(5) * np.std(d, ddof=1) / math.sqrt(5)
    assert got.high - got.low == pytest.approx(2 * half)
    assert half > stats.t.ppf(0.975, 4) * np.std(d, ddof=1) / math.sqrt(5)  # wider than the fixed-n interval
    with pytest.raises(ValueError, match="confidence 0.9 differs from the adaptive design's 0.95"):
        paired_mean_ci(d, method=name, confidence=0.9)


def test_analyse_look_on_a_logged_sweep_uses_the_grid_family_only(tmp_path):
    from mlflow.tracking import MlflowClient

    from analysis.adaptive import analyse_look
    from analysis.runs import load_tables
    from synthetic_sweep import log_synthetic_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep = log_synthetic_sweep(uri, "adaptive", patch_sizes=(8, 4), seeds=(0, 1, 2, 3, 4),
                                effects={8: -6.0, 4: -1.0}, rng_seed=3)
    client = MlflowClient(uri)
    for trial_id, run_id in sweep.trial_run_ids.items():  # a derived param that only later rounds logged
        if trial_id.endswith(("-s3", "-s4")):
            client.log_param(run_id, "model.bottleneck", "32")
    runs = load_tables(["adaptive"], uri, with_history=False).runs
    design = Design((3, 5), 0.05, family_size=3)
    grid = ["model.patch_size", "spectral.enabled"]
    decision = analyse_look(runs, sweep.sweep_run_id, "eval/denoise_loss", design, 2, [0, 1, 2, 3, 4], grid)
    assert [c.name for c in decision.comparisons] == ["patch 8", "patch 4", "interaction patch 8 − patch 4"]
    # independent of compare_arms: the deltas straight from the logged runs
    value = {}
    for run_id in sweep.trial_run_ids.values():
        run = client.get_run(run_id)
        p = run.data.params
        value[(int(p["model.patch_size"]), p["spectral.enabled"] == "True", int(p["seed"]))] = \
            run.data.metrics["eval/denoise_loss"]
    deltas = {patch: np.array([value[(patch, True, s)] - value[(patch, False, s)] for s in range(5)])
              for patch in (8, 4)}
    got = {c.name: c.interval for c in decision.comparisons}
    for name, values in (("patch 8", deltas[8]), ("patch 4", deltas[4]),
                         ("interaction patch 8 − patch 4", deltas[8] - deltas[4])):
        want = sequential_interval(values, design)
        assert (got[name].estimate, got[name].low, got[name].high) == pytest.approx(
            (want.estimate, want.low, want.high), rel=1e-9)
        assert got[name].n == 5
    # only the seeds planned so far count at an earlier look
    early = analyse_look(runs, sweep.sweep_run_id, "eval/denoise_loss", design, 1, [0, 1, 2], grid)
    assert all(c.interval.n == 3 for c in early.comparisons)
    with pytest.raises(ValueError, match="but the design shares alpha among 3"):  # the derived param splits runs
        analyse_look(runs, sweep.sweep_run_id, "eval/denoise_loss", design, 2, [0, 1, 2, 3, 4])
