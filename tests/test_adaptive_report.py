"""The report of an adaptive sweep: its intervals are anytime-valid (the sweep's design, per patch and for the
coarse-vs-fine difference), and a section right after the verdict says how many seeds each arm got and why it
stopped. A plain sweep's report is unchanged (Student-t)."""
import json

import pytest
from mlflow.tracking import MlflowClient

from analysis.adaptive import DECISION_TAG, DESIGN_TAG, REASON_TAG, ROUND_TAG
from analysis.report import build_report
from analysis.sequential import Design
from analysis.synthetic import log_synthetic_sweep


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
