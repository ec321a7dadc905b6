"""Shared pytest setup: keep CPU tests on few threads so parallel work on a 2-core machine stays predictable, and the
one local Ray cluster fixture the submit and job-control tests share (platform/local/start.sh, token auth on)."""
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_cluster(with_worker: bool):
    """A Ray head (2 CPUs; with_worker: plus a 1-CPU second node) and an MLflow server on loopback ports, stopped by
    stop.sh even when the test fails. Yields the dashboard and MLflow URLs, the run folder and the env whose token
    file lets `specforce submit/status/logs/stop` in."""
    run_dir = tempfile.mkdtemp(prefix="sf", dir="/tmp")  # Ray's temp dir path must stay short
    names = ("ray", "dash", "client", "agent", "mlflow") + (("wagent",) if with_worker else ())
    ports = {name: _free_port() for name in names}
    env = {**os.environ, "VENV": str(pathlib.Path(sys.executable).parents[1]), "RAY_AUTH_MODE": "token",
           "SPECFORCE_HEAD_CPUS": "2"}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    args = ["bash", str(ROOT / "platform" / "local" / "start.sh"), "--run-dir", run_dir,
            "--ray-port", str(ports["ray"]), "--dashboard-port", str(ports["dash"]),
            "--ray-client-port", str(ports["client"]), "--agent-port", str(ports["agent"]),
            "--mlflow-port", str(ports["mlflow"])]
    if with_worker:
        env.update(SPECFORCE_WORKER_AGENT_PORT=str(ports["wagent"]), SPECFORCE_WORKER_CPUS="1")
        args.append("--with-worker")
    started = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield {"run_dir": pathlib.Path(run_dir), "dashboard": f"http://127.0.0.1:{ports['dash']}",
               "mlflow": f"http://127.0.0.1:{ports['mlflow']}", "env": env,
               "token_path": str(pathlib.Path(run_dir) / "ray_auth_token")}
    finally:
        subprocess.run(["bash", str(ROOT / "platform" / "local" / "stop.sh"), "--run-dir", run_dir], cwd=ROOT,
                       env=env, capture_output=True, timeout=120)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture()
def local_cluster():
    """Two Ray nodes (head + worker) and MLflow; `env` has no token (tests add `token_path` themselves)."""
    yield from _local_cluster(with_worker=True)


@pytest.fixture()
def one_node_cluster():
    """One Ray node and MLflow; `env` carries the token file."""
    for cluster in _local_cluster(with_worker=False):
        cluster["env"]["RAY_AUTH_TOKEN_PATH"] = cluster["token_path"]
        yield cluster
