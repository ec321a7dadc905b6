"""`specforce demo` end to end on a small spec: the sweep, then the report built from that sweep's own MLflow runs and
the verdict; a demo killed after its first finished trial is continued by running the same command again, without
retraining the finished trials.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest tests/test_demo_e2e.py -q -m slow -s   # ~5 min, 2 cores
"""
from __future__ import annotations

import re
import time

import pandas as pd
import pytest

from sweep_helpers import client_for, kill_group, run_cli, start_cli, sweep_runs, trial_runs, wait_for, write_spec

pytestmark = pytest.mark.slow


def test_demo_writes_verdict_and_report_from_its_runs_and_continues_when_rerun(tmp_path):
    t0 = time.time()
    spec = write_spec(tmp_path / "minidemo.yaml", name="minidemo", max_concurrent_trials=1,
                      grid={"spectral.enabled": [False, True], "seed": [0, 1]},
                      analysis={"primary": "eval/denoise_loss"},
                      base__optim={"batch_size": 32, "lr": 1e-3, "total_images": 960, "ema_decays": [0.99]},
                      base__eval={"every_images": 480, "num_samples": 64, "batch_size": 64, "metrics": ["fd_pixel"],
                                  "denoise_batch": 32, "denoise_t_points": 10, "grid_size": 2})
    args = ["demo", "--spec", str(spec), "--out", str(tmp_path / "report"), "--num-cpus", "2"]
    client = client_for(tmp_path)

    def one_finished() -> bool:
        try:
            return any(r.info.status == "FINISHED" for r in trial_runs(client, "minidemo"))
        except Exception:  # noqa: BLE001 - the store or the experiment may not exist yet
            return False

    proc = start_cli(args, tmp_path, tmp_path / "demo-first.log")
    try:
        wait_for(one_finished, 900, proc, "the demo's first finished trial")
    finally:
        kill_group(proc)  # the driver and its embedded Ray, with no chance to clean up
    finished = {r.data.tags["specforce.trial_id"] for r in trial_runs(client, "minidemo") if r.info.status == "FINISHED"}
    assert 0 < len(finished) < 4

    out = run_cli(args, tmp_path)  # the same command again
    print(f"--- the rerun demo ({time.time() - t0:.0f} s in all)\n{out}")
    assert f"demo: continuing the sweep found in {tmp_path / 'ray_results'}/minidemo" in out, out
    assert f"[grid] {len(finished)} of 4 trial(s) already completed in MLflow: not rerun" in out, out
    for trial_id in finished:  # neither trained nor finished again
        assert f"{trial_id} @ 480 images" not in out and f"trial {trial_id} finished" not in out, out
    left = 4 - len(finished)
    assert f"[grid] {left}/{left} trials done in " in out and "FAILED" not in out, out
    verdict = re.search(r"^verdict: (.+)$", out, re.M)
    assert verdict and len(verdict[1]) > 20, out
    assert re.search(rf"^report:  {re.escape(str(tmp_path / 'report' / 'report.html'))}$", out, re.M), out

    # the report is built from this sweep's own runs: its runs table holds exactly the 4 FINISHED trial runs
    runs = trial_runs(client, "minidemo")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    table = pd.read_parquet(tmp_path / "report" / "runs.parquet")
    assert sorted(table["run_id"]) == sorted(r.info.run_id for r in runs)
    for name in ("report.html", "report.md", "comparisons.csv"):
        assert (tmp_path / "report" / name).stat().st_size > 0, name
    # ... and logged to the sweep's parent run (one, continued by the rerun)
    parents = sweep_runs(client, "minidemo")
    assert len(parents) == 1
    logged = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    logged |= {a.path for d in logged for a in client.list_artifacts(parents[0].info.run_id, d)}
    assert any(p.endswith("report.html") for p in logged), logged
