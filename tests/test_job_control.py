"""Job control against a real local Ray cluster (platform/local/start.sh, token auth on, MLflow server):
`specforce submit` -> `status` while running and after -> `logs --follow` to the end -> `stop` of a second job,
which ends STOPPED with its MLflow runs KILLED and nothing left RUNNING; an unknown job id is refused in one line.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest tests/test_job_control.py -q -m slow -s   # ~4 min, 2 cores
"""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweep_helpers import ROOT, SMOKE, wait_for

pytestmark = pytest.mark.slow


def _cli(cluster, *args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=ROOT, env=cluster["env"],
                          capture_output=True, text=True, timeout=timeout)


def _spec(name: str, total_images: int):
    """A copy of smoke.yaml under another name, inside the project (a submitted spec travels with the job's working
    dir, which leaves out .pytest_cache and git-ignored files); removed again by the test."""
    tree = yaml.safe_load(SMOKE.read_text())
    tree["name"] = name
    tree["base"]["optim"]["total_images"] = total_images
    path = ROOT / "tests" / f"_job_control_{name}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def _submit(cluster, spec, storage) -> str:
    out = _cli(cluster, "submit", str(spec), "--address", cluster["dashboard"], "--tracking-uri", cluster["mlflow"],
               "--storage", str(storage), timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return re.search(r"submitted '[\w-]+' as (\S+) to ", out.stderr)[1]


def _status(cluster, job_id) -> str:
    out = _cli(cluster, "status", job_id, "--address", cluster["dashboard"], timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_submit_status_logs_stop_and_unknown_job(one_node_cluster, tmp_path):
    cluster, seen = one_node_cluster, []
    specs = [_spec("jobs-done", 3200), _spec("jobs-stop", 320_000)]
    try:
        done_id = _submit(cluster, specs[0], tmp_path / "ray_results")
        def running() -> bool:
            status = _status(cluster, done_id)
            if "RUNNING" in status:
                seen.append(status)
            return "RUNNING" in status

        wait_for(running, 300, what="the first job RUNNING")
        follow = _cli(cluster, "logs", done_id, "--address", cluster["dashboard"], "--follow")
        assert follow.returncode == 0, follow.stderr[-3000:]
        assert "sweep 'jobs-done': 2 trials (0 failed)" in follow.stderr, follow.stderr[-3000:]  # the log to its end
        seen.append(_status(cluster, done_id))
        assert seen[-1].startswith(f"{done_id}: SUCCEEDED"), seen

        # a second, long job: stopped once its trials train; its MLflow runs end KILLED
        stop_id = _submit(cluster, specs[1], tmp_path / "ray_results")
        client = MlflowClient(cluster["mlflow"])

        def training() -> bool:
            exp = client.get_experiment_by_name("jobs-stop")
            return exp is not None and len(client.search_runs(
                [exp.experiment_id], filter_string="tags.`specforce.role` = 'trial'")) == 2

        wait_for(training, 600, what="the second job's two trial runs in MLflow")
        stop = _cli(cluster, "stop", stop_id, "--address", cluster["dashboard"], timeout=120)
        assert stop.returncode == 0 and stop.stdout.strip() == f"{stop_id}: stop requested", stop
        wait_for(lambda: "STOPPED" in _status(cluster, stop_id), 120, what="the second job STOPPED")
        seen.append(_status(cluster, stop_id))
        logs = _cli(cluster, "logs", stop_id, "--address", cluster["dashboard"], timeout=120).stdout
        seen += ["its log ends: " + line for line in logs.strip().splitlines()[-2:]]
        exp = client.get_experiment_by_name("jobs-stop")
        deadline = time.time() + 60  # the driver marks its runs as it exits
        while time.time() < deadline:
            runs = client.search_runs([exp.experiment_id])
            if all(r.info.status != "RUNNING" for r in runs):
                break
            time.sleep(1)
        statuses = sorted((r.data.tags.get("specforce.role"), r.info.status) for r in runs)
        seen.append(f"MLflow runs of jobs-stop: {statuses}")
        assert statuses == [("sweep", "KILLED"), ("trial", "KILLED"), ("trial", "KILLED")], statuses

        # an unknown job id: one line naming it, no traceback
        unknown = _cli(cluster, "status", "raysubmit_doesnotexist", "--address", cluster["dashboard"], timeout=120)
        seen.append(f"rc {unknown.returncode}: {unknown.stderr.strip()}")
        assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1, unknown.stderr
        assert "raysubmit_doesnotexist" in unknown.stderr and "no such job" in unknown.stderr
    finally:
        print("job-control sequence:", *seen, sep="\n  ")
        for spec in specs:
            spec.unlink(missing_ok=True)
