"""Paired SF-vs-baseline comparisons, the coarse-vs-fine verdict and the missing-arm messages, on real MLflow runs."""
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from analysis import load_runs
from analysis.compare import COMPARISON_COLUMNS, compare_arms, holm
from analysis.intervals import sign_flip_p_value
from analysis.numbers import fmt_ci
from analysis.verdict import effect_sentence, missing_arms, power_messages, verdict
from specforce_contracts import higher_is_better
from synthetic_sweep import log_synthetic_sweep

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
        # the interval, its p-value and the sign-flip p against SciPy and a direct enumeration
        ref = stats.ttest_1samp(d, 0.0)
        ci = ref.confidence_interval(0.95)
        assert (rows.loc[patch, "ci_low"], rows.loc[patch, "ci_high"]) == pytest.approx((ci.low, ci.high))
        assert rows.loc[patch, "p_value"] == pytest.approx(ref.pvalue)
        assert rows.loc[patch, "p_signflip"] == pytest.approx(sign_flip_p_value(d))
        assert rows.loc[patch, "sd_diff"] == pytest.approx(np.std(d, ddof=1)) and rows.loc[patch, "method"] == "t"
    inter = comparison.interactions.set_index("metric").loc[FD]
    assert inter["difference"] == pytest.approx(rows.loc[8, "delta"] - rows.loc[4, "delta"])
    assert inter["ci_high"] < 0 and inter["method"] == "welch"
    pairs = comparison.pairs[comparison.pairs["metric"] == FD]
    welch = stats.ttest_ind(pairs.loc[pairs["patch_size"] == 8, "delta"], pairs.loc[pairs["patch_size"] == 4, "delta"],
                            equal_var=False)
    assert (inter["ci_low"], inter["ci_high"]) == pytest.approx(tuple(welch.confidence_interval(0.95)))
    assert inter["p_value"] == pytest.approx(welch.pvalue)
    text = verdict(comparison, FD)
    est, lo, hi = fmt_ci(rows.loc[8, "delta"], rows.loc[8, "ci_low"], rows.loc[8, "ci_high"])
    assert text.startswith(f"SF lowers fd_pixel at patch 8 (better): Δ {est}, 95% CI [{lo}, {hi}], 5 pairs; "
                           "no clear effect of SF on fd_pixel at patch 4: Δ ")
    assert "; SF helps more with coarse tokenization: its gain is " in text and "(95% CI [" in text
    assert " by -" not in text and "lowers fd_pixel by" not in text
    is_text = verdict(comparison, "eval/is")  # higher-is-better metric: same finding, other verb
    assert is_text.startswith("SF raises is at patch 8 (better): Δ ") and "helps more with coarse" in is_text
    assert ", Holm p = " in is_text  # eval/is is secondary: fd_pixel (the first metric) is the primary


def test_no_planted_effect_gives_intervals_that_include_zero(uri):
    log_synthetic_sweep(uri, "null", seeds=range(5), effects={}, noise=1.0, rng_seed=1)
    comparison = compare_arms(load_runs("null", uri), [FD])
    rows = _rows(comparison)
    assert ((rows["ci_low"] < 0) & (rows["ci_high"] > 0)).all()
    inter = comparison.interactions.iloc[0]
    assert inter["ci_low"] < 0 < inter["ci_high"]
    text = verdict(comparison, FD)
    assert text.startswith("No clear effect of SF on fd_pixel at patch 8: Δ ")
    assert "; no clear effect of SF on fd_pixel at patch 4: Δ " in text
    assert "no clear difference between the gains at patch 8 and patch 4: " in text
    assert "lowers" not in text and "raises" not in text and "helps" not in text
    # what to run next: every interval includes 0, so each gets its pairs-for-80%-power plan
    messages = power_messages(comparison)
    assert len(messages) == 2 and all("with 80% power at the 5% level" in m for m in messages)
    assert all(m.startswith("fd_pixel at patch ") and "the interval includes 0" in m for m in messages)


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
    assert text.startswith("No interval for SF on fd_pixel at patch 8: Δ ")
    assert "1 pair (a CI needs at least 2)" in text and "interval is undefined" in text


def test_bad_metric_arguments(uri):
    log_synthetic_sweep(uri, "args", patch_sizes=(8,), seeds=(0, 1))
    runs = load_runs("args", uri)
    with pytest.raises(ValueError, match="metrics must be a non-empty list"):
        compare_arms(runs, FD)
    with pytest.raises(ValueError, match="metric must be a slash-namespaced name like 'eval/fd_pixel', got 'fd'"):
        compare_arms(runs, ["fd"])


def _row(delta, low, high, n=3, metric="eval/denoise_loss", patch=8, p_holm=np.nan):
    return pd.Series({"metric": metric, "patch_size": patch, "tokens": 16, "delta": delta, "ci_low": low,
                      "ci_high": high, "n_pairs": n, "p_holm": p_holm})


def test_words_follow_the_interval():
    # the example: an interval that includes 0 is never "lowers"
    # (decimals from the interval's width, analysis.numbers: 1.02 wide -> one decimal)
    assert effect_sentence(_row(-0.10, -0.61, 0.41), 0.95) == \
        "no clear effect of SF on denoise_loss at patch 8: Δ -0.1, 95% CI [-0.6, 0.4], 3 pairs"
    assert effect_sentence(_row(-0.23, -0.28, -0.18, n=4), 0.95) == \
        "SF lowers denoise_loss at patch 8 (better): Δ -0.23, 95% CI [-0.28, -0.18], 4 pairs"
    assert effect_sentence(_row(0.9, 0.2, 1.6, metric="eval/fd_pixel"), 0.9) == \
        "SF raises fd_pixel at patch 8 (worse): Δ 0.9, 90% CI [0.2, 1.6], 3 pairs"
    assert effect_sentence(_row(0.02, 0.01, 0.03, metric="eval/cls_accuracy_digitcnn"), 0.95).startswith(
        "SF raises cls_accuracy_digitcnn at patch 8 (better)")
    # a secondary metric whose interval excludes 0 but does not survive Holm's adjustment
    assert effect_sentence(_row(-0.23, -0.28, -0.18, p_holm=0.2), 0.95, secondary=True) == \
        ("no clear effect of SF on denoise_loss at patch 8 after Holm adjustment: Δ -0.23, 95% CI [-0.28, -0.18], "
         "3 pairs, Holm p = 0.20")
    assert effect_sentence(_row(-0.23, -0.28, -0.18, p_holm=0.01), 0.95, secondary=True).startswith(
        "SF lowers denoise_loss at patch 8 (better)")


def test_holm_matches_the_step_down_definition():
    p = [0.01, 0.04, 0.03, np.nan, 0.005]
    # sorted finite: 0.005, 0.01, 0.03, 0.04 (m = 4) -> 4*0.005, 3*0.01, 2*0.03, 1*0.04, made monotone
    expected = [0.03, 0.06, 0.06, np.nan, 0.02]
    np.testing.assert_allclose(holm(p), expected)
    assert holm([0.5, 0.9]).tolist() == [1.0, 1.0]


def test_holm_covers_secondary_metrics_only(uri):
    log_synthetic_sweep(uri, "holm", seeds=range(4), effects={8: -6.0}, noise=1.0, rng_seed=4)
    metrics = ["eval/denoise_loss", FD, "eval/is"]
    comparison = compare_arms(load_runs("holm", uri), metrics, primary="eval/denoise_loss")
    table = comparison.comparisons
    primary = table["metric"] == "eval/denoise_loss"
    assert (table.loc[primary, "p_holm"] == table.loc[primary, "p_value"]).all()
    np.testing.assert_allclose(table.loc[~primary, "p_holm"], holm(table.loc[~primary, "p_value"]))
    assert (table.loc[~primary, "p_holm"] >= table.loc[~primary, "p_value"]).all()
    with pytest.raises(ValueError, match="primary metric 'eval/fid' is not among the compared metrics"):
        compare_arms(load_runs("holm", uri), metrics, primary="eval/fid")
    with pytest.raises(ValueError, match="min_effect must be a positive number, got -1.0"):
        compare_arms(load_runs("holm", uri), metrics, min_effect=-1.0)


def test_power_column_uses_min_effect_for_the_primary_only(uri):
    log_synthetic_sweep(uri, "power", seeds=range(3), effects={}, noise=1.0, rng_seed=6)
    runs = load_runs("power", uri)
    comparison = compare_arms(runs, [FD, "eval/denoise_loss"], min_effect=2.0)
    table = comparison.comparisons.set_index(["metric", "patch_size"])
    from analysis.power import pairs_for_power
    for patch in (8, 4):
        row = table.loc[(FD, patch)]
        assert row["power_effect"] == 2.0
        assert row["pairs_for_80pct_power"] == pairs_for_power(2.0, row["sd_diff"])
        other = table.loc[("eval/denoise_loss", patch)]
        assert other["power_effect"] == pytest.approx(abs(other["delta"]))
    messages = power_messages(comparison)
    assert any("to detect an effect of 2.0 (analysis.min_effect)" in m for m in messages)


def test_methods_are_selectable_by_name(uri):
    log_synthetic_sweep(uri, "methods", patch_sizes=(8, 4), seeds=range(3), effects={8: -6.0}, rng_seed=8)
    runs = load_runs("methods", uri)
    boot = compare_arms(runs, [FD], method="expanded-percentile", n_resamples=1_000)
    assert set(boot.comparisons["method"]) == {"expanded-percentile"}
    assert set(boot.interactions["method"]) == {"expanded-percentile"} and boot.comparisons["p_value"].isna().all()
    pairs = boot.pairs[(boot.pairs["patch_size"] == 8)]
    row = boot.comparisons.set_index("patch_size").loc[8]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((pairs["delta"].min(), pairs["delta"].max()))
    with pytest.raises(ValueError, match="method must be one of"):
        compare_arms(runs, [FD], method="welch")


def test_classifier_accuracy_and_scores_are_higher_is_better():
    for metric in ("eval/is", "eval/cls_accuracy_digitcnn", "eval/cls_label_acc_digitcnn", "eval/cls_score_digitcnn"):
        assert higher_is_better(metric), metric
    for metric in ("eval/fid", "eval/fd_pixel", "eval/fd_digitcnn", "eval/denoise_loss", "eval/spec_err_high",
                   "train/loss"):
        assert not higher_is_better(metric), metric


def test_demo_numbers_before_and_after(tmp_path):
    """The store mirroring the `make demo` numbers: the old default said "lowers" at patch 8; the new one does not."""
    from verdict_demo_store import build

    runs = load_runs("demo", build(tmp_path))
    metrics = ["eval/denoise_loss", FD]
    old = compare_arms(runs, metrics, method="expanded-percentile", interaction="expanded-percentile")
    old_rows = _rows(old, "eval/denoise_loss")
    assert (old_rows.loc[8, "ci_low"], old_rows.loc[8, "ci_high"]) == pytest.approx((-0.33, 0.03))  # [min, max]
    assert _rows(old).loc[8, "ci_high"] == pytest.approx(-7.0)  # fd_pixel "-13 [-21, -7]"
    new = compare_arms(runs, metrics)
    rows = _rows(new, "eval/denoise_loss")
    assert (rows.loc[8, "ci_low"], rows.loc[8, "ci_high"]) == pytest.approx((-0.596, 0.396), abs=1e-3)
    assert _rows(new).loc[8, "ci_low"] < 0 < _rows(new).loc[8, "ci_high"]  # fd_pixel at patch 8: not significant
    assert verdict(new, "eval/denoise_loss") == (
        "No clear effect of SF on denoise_loss at patch 8: Δ -0.10, 95% CI [-0.60, 0.40], 3 pairs; SF lowers "
        "denoise_loss at patch 4 (better): Δ -0.54, 95% CI [-0.74, -0.34], 3 pairs; SF helps more with fine "
        "tokenization: its gain is 0.44 larger at patch 4 than at patch 8 (95% CI [0.01, 0.87], Welch).")
    assert rows.loc[8, "pairs_for_80pct_power"] == 34 and rows.loc[8, "p_signflip"] == 1.0
