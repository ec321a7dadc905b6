"""`specforce submit` with shared storage, then `specforce submit --resume`, against a real local Ray cluster.

platform/local/start.sh brings up a one-node Ray head (token auth on) and an MLflow server on loopback. The sweep is
submitted with an absolute --storage (on a one-machine cluster a local folder is shared storage), finishes, and is
resumed by a second job that finds the recorded spec fingerprint and the finished trials: nothing is retrained and
MLflow still holds one sweep run and two trial runs. Refusals that need no job (no --storage, a relative one, a
resume with an edited spec) are checked against the same cluster before anything is submitted.

    flock /tmp/specforce-ray.lock .venv/bin/python -m pytest -m slow tests/test_submit_resume.py -q
"""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "configs" / "smoke.yaml"


# the cluster fixture `one_node_cluster` lives in conftest.py (shared with test_submit_cluster, test_job_control)


def _submit(cluster, *extra, spec=SMOKE, timeout=900):
    cmd = [sys.executable, "-m", "sweeps.cli", "submit", str(spec), "--address", cluster["dashboard"],
           "--tracking-uri", cluster["mlflow"], *extra]
    return subprocess.run(cmd, cwd=ROOT, env=cluster["env"], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_submit_with_shared_storage_then_resume(one_node_cluster, tmp_path):
    storage = tmp_path / "shared" / "ray_results"
    # refused before anything is submitted: storage only the job's temporary working dir would hold
    for extra, needle in (((), "--storage: required for a submitted sweep"),
                          (("--storage", "ray_results"), "--storage: a relative path would resolve inside")):
        out = _submit(one_node_cluster, *extra, timeout=120)
        assert out.returncode == 2 and needle in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert not storage.exists()

    first = _submit(one_node_cluster, "--storage", str(storage), "--wait")
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    assert "2 trials (0 failed)" in first.stderr
    record = json.loads((storage / "smoke" / "spec_fingerprint.json").read_text())
    assert record["name"] == "smoke" and record["resolved"]["grid.spectral.enabled"] == [False, True]
    assert (storage / "smoke" / "grid").is_dir()  # the state --resume needs outlived the job

    # an edited spec is refused here, with the keys that changed, before a job is submitted
    edited = ROOT / ".pytest_cache" / "submit_resume_edited_smoke.yaml"  # inside the project, as submit requires
    edited.parent.mkdir(exist_ok=True)
    tree = yaml.safe_load(SMOKE.read_text())
    tree["base"]["optim"]["lr"] = 2e-3
    edited.write_text(yaml.safe_dump(tree))
    try:
        out = _submit(one_node_cluster, "--storage", str(storage), "--resume", spec=edited, timeout=120)
    finally:
        edited.unlink()
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "specforce submit: --resume: the spec differs from the one sweep 'smoke' was started with" in out.stderr
    assert "base.optim.lr: 0.001 -> 0.002" in out.stderr

    # the same spec resumes in a second job: finished trials are found, not retrained
    second = _submit(one_node_cluster, "--storage", str(storage), "--resume", "--wait")
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert "2 trials (0 failed)" in second.stderr
    # finished trials are not trained again: none of their intermediate evaluations is printed by the second job
    assert "@ 1,600 images" in first.stderr and "@ 1,600 images" not in second.stderr
    client = MlflowClient(one_node_cluster["mlflow"])
    exp = client.get_experiment_by_name("smoke")
    sweeps = client.search_runs([exp.experiment_id], filter_string="tags.`specforce.role` = 'sweep'")
    trials = client.search_runs([exp.experiment_id], filter_string="tags.`specforce.role` = 'trial'")
    assert len(sweeps) == 1 and sweeps[0].info.status == "FINISHED"
    assert len(trials) == 2 and all(r.info.status == "FINISHED" for r in trials)
    # not retrained: each trial's train/loss history has each step once
    for run in trials:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert len(steps) == len(set(steps)) and max(steps) == 3200
