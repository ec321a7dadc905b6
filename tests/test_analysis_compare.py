"""Paired SF-vs-baseline comparisons, the coarse-vs-fine verdict and the missing-arm messages, on real MLflow runs."""
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from analysis import load_runs
from analysis.compare import COMPARISON_COLUMNS, compare_arms
from analysis.synthetic import log_synthetic_sweep
from analysis.verdict import fmt, missing_arms, verdict

FD = "eval/fd_pixel"


@pytest.fixture(scope="module")
def uri(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('compare')}/mlflow.db"
    MlflowClient(uri).search_experiments()  # create the schema once
    return uri


def _rows(comparison, metric=FD):
    table = comparison.comparisons
    return table[table["metric"] == metric].set_index("patch_size")


def test_planted_coarse_effect_is_found_and_fine_is_not(uri):
    log_synthetic_sweep(uri, "planted", seeds=range(5), effects={8: -6.0, 4: 0.0}, noise=1.0)
    runs = load_runs("planted", uri)
    comparison = compare_arms(runs, [FD, "eval/is"])
    rows = _rows(comparison)
    assert list(comparison.comparisons.columns[:9]) == COMPARISON_COLUMNS[:9]
    assert rows.loc[8, "ci_high"] < 0  # SF lowers FD at coarse tokenisation
    assert rows.loc[4, "ci_low"] < 0 < rows.loc[4, "ci_high"]  # and not detectably at fine
    assert rows.loc[8, "n_pairs"] == 5 and rows.loc[8, "tokens"] == 16 and rows.loc[4, "tokens"] == 64
    # independent recomputation of the paired deltas from the runs table
    for patch in (8, 4):
        at = runs[runs["patch_size"] == patch].set_index("seed")
        d = (at[at["sf"] == True][f"metrics.{FD}"] - at[at["sf"] == False][f"metrics.{FD}"]).to_numpy()
        assert rows.loc[patch, "delta"] == pytest.approx(d.mean())
        assert rows.loc[patch, "sf_mean"] - rows.loc[patch, "baseline_mean"] == pytest.approx(d.mean())
    inter = comparison.interactions.set_index("metric").loc[FD]
    assert inter["difference"] == pytest.approx(rows.loc[8, "delta"] - rows.loc[4, "delta"])
    assert inter["ci_high"] < 0
    text = verdict(comparison, FD)
    est, lo, hi = fmt(-rows.loc[8, "delta"], -rows.loc[8, "ci_high"], -rows.loc[8, "ci_low"])
    assert text.startswith(f"SF lowers fd_pixel by {est} [{lo}, {hi}] at patch 8 (16 tokens) and by ")
    assert "at patch 4 (64 tokens)" in text and "SF helps more with coarse tokenization" in text
    assert "SF raises is by" in verdict(comparison, "eval/is")  # higher-is-better metric: same finding, other verb
    assert "helps more with coarse" in verdict(comparison, "eval/is")


def test_no_planted_effect_gives_intervals_that_include_zero(uri):
    log_synthetic_sweep(uri, "null", seeds=range(5), effects={}, noise=1.0, rng_seed=1)
    comparison = compare_arms(load_runs("null", uri), [FD])
    rows = _rows(comparison)
    assert ((rows["ci_low"] < 0) & (rows["ci_high"] > 0)).all()
    inter = comparison.interactions.iloc[0]
    assert inter["ci_low"] < 0 < inter["ci_high"]
    assert "includes 0: no evidence that the effect depends on tokenization" in verdict(comparison, FD)


def test_failed_stopped_and_incomparable_runs_are_kept_apart(uri):
    log_synthetic_sweep(uri, "messy", seeds=range(4), effects={8: -6.0}, noise=0.5,
                        statuses={"p8-sf-s0": "failed", "p8-base-s1": "stopped_early"},
                        num_samples={"p4-sf-s2": 500})
    runs = load_runs("messy", uri)
    comparison = compare_arms(runs, [FD, "eval/denoise_loss"])
    reasons = comparison.excluded.set_index(["run_name", "metric"])["reason"]
    assert reasons[("p8-sf-s0", FD)] == "failed"
    assert reasons[("p8-base-s1", FD)].startswith("stopped early")
    assert "num_samples=500 (majority 1000)" in reasons[("p4-sf-s2", FD)]
    assert ("p4-sf-s2", "eval/denoise_loss") not in reasons.index  # provenance only matters for its own metric
    rows = _rows(comparison)
    assert rows.loc[8, "n_pairs"] == 2 and rows.loc[4, "n_pairs"] == 3
    assert _rows(comparison, "eval/denoise_loss").loc[4, "n_pairs"] == 4
    # none of the kept-apart runs leaks into a pair
    used = set(comparison.pairs["baseline_run_id"]) | set(comparison.pairs["sf_run_id"])
    dropped = set(runs.set_index("run_name").loc[["p8-sf-s0", "p8-base-s1"], "run_id"])
    assert not used & dropped


def test_missing_arm_is_named_with_what_to_run(uri):
    log_synthetic_sweep(uri, "no-fine-baseline", seeds=range(3), effects={8: -6.0},
                        statuses={f"p4-base-s{s}": "failed" for s in range(3)})
    runs = load_runs("no-fine-baseline", uri)
    messages = missing_arms(runs)
    assert "At patch 4 (64 tokens) the baseline (spectral.enabled=false) arm is missing: run it with seeds 0, 1, 2." \
        in messages
    assert any(m.startswith("Only patch 8 has paired runs") and "run both arms at patch 16 or 4" in m
               for m in messages)
    comparison = compare_arms(runs, [FD])
    assert _rows(comparison).loc[4, "note"] == "no baseline run"
    assert "needs paired runs at a second patch size" in verdict(comparison, FD)


def test_single_pair_and_unpaired_seeds(uri):
    log_synthetic_sweep(uri, "thin", patch_sizes=(8,), seeds=(0, 1, 2),
                        statuses={"p8-sf-s1": "failed", "p8-sf-s2": "failed", "p8-base-s0": "failed"})
    runs = load_runs("thin", uri)
    comparison = compare_arms(runs, [FD])
    row = _rows(comparison).loc[8]
    assert row["n_pairs"] == 0 and "no common seed (baseline seeds [1, 2], SF seeds [0])" == row["note"]
    messages = missing_arms(runs)
    assert any("share no seed (baseline 1, 2, SF 0)" in m for m in messages)
    assert verdict(comparison, FD).startswith("No verdict on fd_pixel")

    log_synthetic_sweep(uri, "one-pair", patch_sizes=(8, 4), seeds=(0,), effects={8: -6.0})
    comparison = compare_arms(load_runs("one-pair", uri), [FD])
    assert (comparison.comparisons["note"] == "CI undefined: 1 pair (needs at least 2)").all()
    assert np.isnan(comparison.comparisons["ci_low"]).all()
    text = verdict(comparison, FD)
    assert "(1 pair: CI undefined)" in text and "interval is undefined" in text


def test_bad_metric_arguments(uri):
    log_synthetic_sweep(uri, "args", patch_sizes=(8,), seeds=(0, 1))
    runs = load_runs("args", uri)
    with pytest.raises(ValueError, match="metrics must be a non-empty list"):
        compare_arms(runs, FD)
    with pytest.raises(ValueError, match="metric must be a slash-namespaced name like 'eval/fd_pixel', got 'fd'"):
        compare_arms(runs, ["fd"])
