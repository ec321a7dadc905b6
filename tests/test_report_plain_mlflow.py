"""A report from runs logged by a plain `mlflow` script that follows docs/design.md §3 (only the role tags, the parent
run, params and metrics: no specforce.status, no provenance): the planted effect is found and nothing else."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import build_report
from analysis.selection import status_problem

ROOT = Path(__file__).resolve().parents[1]

# what a user writes: the fluent mlflow API, nothing from specforce. SF lowers the held-out denoising loss by 0.05
# at patch 8 (coarse) and does nothing at patch 4; fd_pixel is unaffected everywhere. Seed effects are shared by
# both arms of a seed, as in real seed-paired runs.
SCRIPT = textwrap.dedent("""
    import sys
    import mlflow
    import numpy as np

    mlflow.set_tracking_uri(sys.argv[1])
    mlflow.set_experiment("plain")
    rng = np.random.default_rng(2)
    with mlflow.start_run(run_name="my-sweep", tags={"specforce.role": "sweep"}):
        for patch in (8, 4):
            offsets = rng.normal(0.0, 1.0, 7)
            for sf in (False, True):
                for seed in range(7):
                    # seed 6 of the SF arm at patch 8: one run stopped early, one still RUNNING (crashed)
                    if seed == 6 and not (sf and patch == 8):
                        continue
                    with mlflow.start_run(run_name=f"p{patch}-{'sf' if sf else 'base'}-s{seed}", nested=True,
                                          tags={"specforce.role": "trial"}) as run:
                        mlflow.log_params({"model.patch_size": patch, "spectral.enabled": sf, "seed": seed,
                                           "data.image_size": 32, "data.name": "grf"})
                        loss = 0.5 + 0.1 * offsets[seed] - (0.05 if sf and patch == 8 else 0.0)
                        fd = 70.0 + 5.0 * offsets[seed]
                        for step in (2880, 5760):
                            mlflow.log_metric("eval/denoise_loss", loss + rng.normal(0, 0.01), step=step)
                            mlflow.log_metric("eval/fd_pixel", fd + rng.normal(0, 1.0), step=step)
                            mlflow.log_metric("train/loss", 0.4 + rng.normal(0, 0.01), step=step)
                        if seed == 6:
                            mlflow.set_tag("specforce.status", "stopped_early")
                    if seed == 6:
                        crashed = mlflow.start_run(run_name="p8-sf-s6-crashed", nested=True,
                                                   tags={"specforce.role": "trial"})
                        mlflow.log_params({"model.patch_size": patch, "spectral.enabled": sf, "seed": seed,
                                           "data.image_size": 32, "data.name": "grf"})
                        mlflow.log_metric("eval/denoise_loss", 0.1, step=5760)
                        mlflow.end_run(status="RUNNING")  # what a killed process leaves behind
""")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    base = tmp_path_factory.mktemp("plain")
    uri = f"sqlite:///{base}/mlflow.db"
    # a separate process, as a user's script would be (and the fluent API's globals stay out of this one)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, uri], cwd=base, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return uri, build_report(["plain"], uri, base / "report")


def test_untagged_finished_runs_count_and_the_planted_effect_is_found_alone(plain):
    _, result = plain
    table = result.comparison.comparisons
    assert set(table["metric"]) == {"eval/denoise_loss", "eval/fd_pixel"} and (table["n_pairs"] == 6).all()
    found = {(m, int(p)) for m, p, lo, hi in zip(table["metric"], table["patch_size"], table["ci_low"],
                                                  table["ci_high"]) if lo > 0 or hi < 0}
    assert found == {("eval/denoise_loss", 8)}
    inter = result.comparison.interactions.set_index("metric")
    assert inter.loc["eval/denoise_loss", "ci_low"] > 0 or inter.loc["eval/denoise_loss", "ci_high"] < 0
    assert inter.loc["eval/fd_pixel", "ci_low"] < 0 < inter.loc["eval/fd_pixel", "ci_high"]
    assert result.primary == "eval/denoise_loss"
    planted = table.set_index(["metric", "patch_size"]).loc[("eval/denoise_loss", 8)]
    assert planted["delta"] == pytest.approx(-0.05, abs=0.01) and planted["p_value"] < 0.01
    assert planted["p_signflip"] == pytest.approx(2 / 2 ** 6)  # all six pairs lower: the exact test's floor
    assert result.verdict.startswith("SF lowers denoise_loss at patch 8 (better): Δ -0.0")
    assert "; no clear effect of SF on denoise_loss at patch 4: Δ " in result.verdict
    assert "; SF helps more with coarse tokenization: its gain is " in result.verdict
    md = result.md_path.read_text()
    assert "- No clear effect of SF on fd_pixel at patch 8: Δ " in md  # the secondary metric, in words
    assert not any(m.startswith("No completed") for m in result.messages)


def test_stopped_early_and_unfinished_runs_stay_excluded(plain):
    _, result = plain
    excluded = pd.read_csv(result.out_dir / "excluded.csv").set_index("run_name")["reason"]
    assert excluded["p8-sf-s6"].startswith("stopped early by the scheduler")
    assert excluded["p8-sf-s6-crashed"] == "MLflow status RUNNING (expected FINISHED)"
    assert len(excluded) == 2
    assert status_problem(pd.Series({"role": "trial", "status": None, "mlflow_status": "FINISHED",
                                     "patch_size": 8, "seed": 0, "sf": True})) is None
    assert status_problem(pd.Series({"role": "trial", "status": "weird", "mlflow_status": "FINISHED",
                                     "patch_size": 8, "seed": 0, "sf": True})).startswith(
        "not completed (specforce.status='weird'")
