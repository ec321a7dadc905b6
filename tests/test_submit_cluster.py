"""`specforce submit` against a real two-node Ray cluster on this machine, with token auth on.

platform/local/start.sh brings up a Ray head, a second Ray node and an MLflow server (all loopback where Ray
allows it); the test submits the shipped smoke.yaml over the Jobs API, waits for success and finds the trials
in MLflow over HTTP. Fast tests check the refusals that need no cluster.
"""
from __future__ import annotations

import pathlib
import socket
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from sweeps.spec import SpecError
from sweeps.commands.submit import check_reachable, check_tracking_uri

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "configs" / "smoke.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_address_is_a_clear_error():
    port = _free_port()  # nothing listens there
    with pytest.raises(SpecError, match=f"--address http://127.0.0.1:{port}: Ray dashboard not reachable"):
        check_reachable(f"http://127.0.0.1:{port}")
    with pytest.raises(SpecError, match="expected the Ray dashboard URL"):
        check_reachable("127.0.0.1:6379")


def test_local_sqlite_store_refused_for_a_remote_cluster(tmp_path):
    with pytest.raises(SpecError, match="cannot be reached from the remote cluster"):
        check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db", "http://10.1.2.3:8265")
    with pytest.raises(SpecError, match="'localhost' on a remote cluster"):
        check_tracking_uri("http://127.0.0.1:5000", "http://10.1.2.3:8265")
    # the same sqlite store is fine when the cluster is this machine
    assert check_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db", "http://127.0.0.1:8265").startswith("sqlite:////")


# the cluster fixture `local_cluster` lives in conftest.py (shared with test_submit_resume, test_job_control)


@pytest.mark.slow
def test_submit_smoke_to_two_node_cluster_with_token_auth(local_cluster, tmp_path):
    cmd = [sys.executable, "-m", "sweeps.cli", "submit", str(SMOKE), "--address", local_cluster["dashboard"],
           "--tracking-uri", local_cluster["mlflow"], "--storage", str(tmp_path / "ray_results"), "--wait"]
    # without the token: refused with a message that says how to pass it
    no_token = {k: v for k, v in local_cluster["env"].items() if not k.startswith("RAY_AUTH_TOKEN")}
    no_token["RAY_AUTH_MODE"] = "token"
    out = subprocess.run(cmd, cwd=ROOT, env=no_token, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "RAY_AUTH_TOKEN" in out.stderr, out.stderr[-2000:]
    # with the token the job runs the sweep on the cluster and logs to the MLflow server
    env = {**local_cluster["env"], "RAY_AUTH_TOKEN_PATH": str(local_cluster["run_dir"] / "ray_auth_token")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "2 trials (0 failed)" in done.stderr
    client = MlflowClient(local_cluster["mlflow"])
    exp = client.get_experiment_by_name("smoke")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`specforce.role` = 'trial'")
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert sorted(r.data.params["spectral.enabled"] for r in runs) == ["False", "True"]
