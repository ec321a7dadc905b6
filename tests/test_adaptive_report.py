"""The report of an adaptive sweep: its intervals are anytime-valid (the sweep's design, per patch and for the
coarse-vs-fine difference), and a section right after the verdict says how many seeds each arm got and why it
stopped. A plain sweep's report is unchanged (Student-t)."""
import json

import pytest
from mlflow.tracking import MlflowClient

from analysis.adaptive import DECISION_TAG, DESIGN_TAG, REASON_TAG, ROUND_TAG
from analysis.report import build_report
from analysis.sequential import Design
from synthetic_sweep import log_synthetic_sweep


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    base = tmp_path_factory.mktemp("adaptive_report")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    plain = log_synthetic_sweep(uri, "plain", seeds=(0, 1, 2, 3, 4), effects={8: -6.0, 4: 0.0})
    adaptive = log_synthetic_sweep(uri, "adaptive", seeds=(0, 1, 2, 3, 4), effects={8: -6.0, 4: 0.0})
    design = {**Design((3, 5), alpha=0.05, family_size=3).as_dict(), "primary": "eval/fd_pixel"}
    client = MlflowClient(uri)
    for key, value in {DESIGN_TAG: json.dumps(design), ROUND_TAG: "2", DECISION_TAG: "max_reached",
                       REASON_TAG: "max 5 seeds reached; undecided: patch 4"}.items():
        client.set_tag(adaptive.sweep_run_id, key, value)
    out = {name: build_report([name], uri, base / name, log_to_mlflow=False, primary="eval/fd_pixel",
                              metrics=["eval/fd_pixel"]) for name in ("plain", "adaptive")}
    return out


def test_adaptive_report_uses_anytime_valid_intervals_for_every_comparison(stores):
    plain, adaptive = stores["plain"].comparison, stores["adaptive"].comparison
    assert set(adaptive.comparisons["method"]) == {"confseq"} and set(plain.comparisons["method"]) == {"t"}
    assert set(adaptive.interactions["method"]) == {"confseq"}
    for table in ("comparisons", "interactions"):
        a, p = getattr(adaptive, table), getattr(plain, table)
        # same deltas (same synthetic data), wider intervals: they hold at every look, not just at n = 5
        assert (a["ci_high"] - a["ci_low"] > p["ci_high"] - p["ci_low"]).all()


def test_adaptive_section_follows_the_verdict(stores):
    html = stores["adaptive"].html_path.read_text()
    assert "Adaptive seeds: 2 of up to 2 rounds ran" in html
    assert "max 5 seeds reached; undecided: patch 4" in html
    assert html.index("Adaptive seeds") < html.index("SF gain per tokenization")
    assert "Adaptive seeds" not in stores["plain"].html_path.read_text()


def test_interaction_is_the_stopping_rules_interval_on_per_seed_double_differences(stores):
    # the sweep stops on the per-seed double differences delta_8(seed) - delta_4(seed); the report must show that
    # same interval, or its verdict can contradict the stop ("decided" vs "no clear difference")
    from analysis.sequential import sequential_interval

    comp = stores["adaptive"].comparison
    pairs = comp.pairs[comp.pairs["metric"] == "eval/fd_pixel"]
    delta = {p: g.set_index("seed")["delta"] for p, g in pairs.groupby("patch_size")}
    expected = sequential_interval((delta[8] - delta[4].reindex(delta[8].index)).to_numpy(),
                                   Design((3, 5), alpha=0.05, family_size=3))
    row = comp.interactions.iloc[0]
    assert (row["coarse_patch"], row["fine_patch"]) == (8, 4) and "double differences" in row["note"]
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((expected.low, expected.high), rel=1e-12)


def test_interaction_without_matched_seeds_falls_back_to_the_difference_of_intervals(stores):
    from analysis.compare import _interaction
    from analysis.intervals import paired_mean_ci

    comp = stores["adaptive"].comparison
    pairs = comp.pairs[comp.pairs["metric"] == "eval/fd_pixel"]
    pairs = pairs[~((pairs["patch_size"] == 4) & (pairs["seed"] == 4))]  # seed 4 lost at patch 4
    rows = comp.comparisons.set_index("patch_size")
    coarse, fine = rows.loc[8].copy(), rows.loc[4].copy()
    coarse["patch_size"], fine["patch_size"] = 8, 4
    row = _interaction(coarse, fine, pairs, 0.95, "confseq", 1000, 0)
    a = paired_mean_ci(pairs[pairs["patch_size"] == 8]["delta"].to_numpy(), method="confseq")
    b = paired_mean_ci(pairs[pairs["patch_size"] == 4]["delta"].to_numpy(), method="confseq")
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((a.low - b.high, a.high - b.low), rel=1e-12)
