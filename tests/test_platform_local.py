"""platform/local/{start,stop,status}.sh against a real Ray head and a real MLflow server.

    .venv/bin/python -m pytest tests/test_platform_local.py -q            # fast tier (one stack, ~20-60 s)
    .venv/bin/python -m pytest tests/test_platform_local.py -q -m slow    # two-node cluster, auth disabled

Every service runs on free loopback ports in a private run folder; fixtures stop it even when a test
fails. Processes are identified by the session ids recorded in the pid files (start.sh uses setsid).
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib.metadata import version

import pytest

from proc_helpers import listening_sockets, session_pids

ROOT = pathlib.Path(__file__).resolve().parents[1]
LOCAL = ROOT / "platform" / "local"
VENV = pathlib.Path(sys.executable).parents[1]


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(free_port())
    return sorted(ports)


def script_env(ports: dict[str, int], **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPECFORCE_", "RAY_AUTH"))}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    env["VENV"] = str(VENV)
    env.update({f"SPECFORCE_{k}": str(v) for k, v in ports.items()})
    env.update(extra)
    return env


def run(script: str, run_dir: pathlib.Path, env: dict[str, str], *args: str, timeout: float = 300):
    return subprocess.run(
        ["bash", str(LOCAL / script), "--run-dir", str(run_dir), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def http_get(url: str, token: str | None = None, host: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def kill_leftovers(run_dir: pathlib.Path) -> None:
    """Last resort for a failed stop.sh: SIGKILL the sessions named in the pid files, and only those."""
    for pidfile in run_dir.glob("*.pid"):
        sid = int(pidfile.read_text())
        for pid in session_pids(sid):
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


class Stack:
    def __init__(self, run_dir: pathlib.Path, ports: dict[str, int], env: dict[str, str], start_out: str):
        self.run_dir, self.ports, self.env, self.start_out = run_dir, ports, env, start_out

    def sid(self, name: str) -> int:
        return int((self.run_dir / f"{name}.pid").read_text())

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.ports['DASHBOARD_PORT']}"

    @property
    def mlflow(self) -> str:
        return f"http://127.0.0.1:{self.ports['MLFLOW_PORT']}"

    @property
    def token(self) -> str:
        return (self.run_dir / "ray_auth_token").read_text().strip()


def stack_ports() -> dict[str, int]:
    names = ["RAY_PORT", "DASHBOARD_PORT", "RAY_CLIENT_PORT", "AGENT_PORT", "WORKER_AGENT_PORT", "MLFLOW_PORT"]
    return dict(zip(names, free_ports(len(names))))


@pytest.fixture(scope="module")
def stack(request):
    # Short path: Ray's unix sockets live under <run-dir>/ray/session_*/sockets (107-byte limit).
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix="sf-", dir="/tmp"))
    ports = stack_ports()
    env = script_env(ports)  # RAY_AUTH_MODE unset: the secure default (token) is what we test

    def finalize():
        run("stop.sh", run_dir, env, timeout=180)
        kill_leftovers(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)

    request.addfinalizer(finalize)
    res = run("start.sh", run_dir, env)
    assert res.returncode == 0, res.stdout + res.stderr
    return Stack(run_dir, ports, env, res.stdout)


def test_start_brings_up_ray_and_mlflow(stack):
    status, body = http_get(f"{stack.dashboard}/api/version", token=stack.token)
    assert status == 200
    assert json.loads(body)["ray_version"] == version("ray")
    status, body = http_get(f"{stack.mlflow}/health")
    assert (status, body.strip()) == (200, b"OK")
    assert (stack.run_dir / "mlflow.db").is_file()
    assert (stack.run_dir / "logs" / "ray-head.log").stat().st_size > 0


def test_token_auth_is_on_by_default_and_printed(stack):
    status, body = http_get(f"{stack.dashboard}/api/version")
    assert status == 401, body
    status, _ = http_get(f"{stack.dashboard}/api/version", token="0" * 64)
    assert status == 403  # a wrong token is refused too (401 means "no token")
    token_file = stack.run_dir / "ray_auth_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert len(stack.token) == 64 and int(stack.token, 16) >= 0
    assert f"RAY_AUTH_TOKEN_PATH={token_file}" in stack.start_out
    assert f"--address {stack.dashboard}" in stack.start_out


def test_ray_status_answers_on_the_gcs_port(stack):
    env = dict(stack.env, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(stack.run_dir / "ray_auth_token"),
               RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    res = subprocess.run([str(VENV / "bin" / "ray"), "status", "--address", f"127.0.0.1:{stack.ports['RAY_PORT']}"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    active = res.stdout.split("Active:")[1].split("Pending:")[0]
    assert active.count("node_") == 1


def test_every_listening_socket_is_on_loopback(stack):
    pids = set(session_pids(stack.sid("ray-head"))) | set(session_pids(stack.sid("mlflow")))
    expected = {stack.ports[k] for k in ("RAY_PORT", "DASHBOARD_PORT", "RAY_CLIENT_PORT", "AGENT_PORT", "MLFLOW_PORT")}
    # The dashboard answers before the node's agents have bound their ports; give them time.
    deadline = time.monotonic() + 60
    while True:
        socks = listening_sockets(pids)
        if expected <= {port for _, port, _ in socks} or time.monotonic() > deadline:
            break
        time.sleep(1)
        pids |= set(session_pids(stack.sid("ray-head")))
    assert expected <= {port for _, port, _ in socks}, socks
    exposed = [s for s in socks if s[0] not in LOOPBACK]
    assert not exposed, f"listening beyond loopback: {exposed}"


def test_mlflow_rejects_foreign_host_headers(stack):
    url = f"{stack.mlflow}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_get(url)[0] == 200
    assert http_get(url, host=f"evil.example:{stack.ports['MLFLOW_PORT']}")[0] == 403
    # mlflow's own default would admit private addresses; start.sh pins the served address only.
    assert http_get(url, host=f"10.0.0.7:{stack.ports['MLFLOW_PORT']}")[0] == 403


def test_second_start_is_idempotent(stack):
    before = {n: stack.sid(n) for n in ("ray-head", "mlflow")}
    res = run("start.sh", stack.run_dir, stack.env)
    assert res.returncode == 0, res.stderr
    assert "already running" in res.stdout
    assert {n: stack.sid(n) for n in before} == before
    assert all(session_pids(sid) for sid in before.values())


def test_status_reports_running_services(stack):
    res = run("status.sh", stack.run_dir, stack.env, "--brief")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"ray-head: running (session {stack.sid('ray-head')}" in res.stdout
    assert f"mlflow: running (session {stack.sid('mlflow')}" in res.stdout
    assert "ray-worker: not running" in res.stdout


@pytest.mark.parametrize("taken", ["RAY_PORT", "MLFLOW_PORT", "DASHBOARD_PORT"])
def test_taken_port_is_a_clear_error_and_starts_nothing(tmp_path, taken):
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix="sf-", dir="/tmp"))
    ports = stack_ports()
    try:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", ports[taken]))
            holder.listen()
            res = run("start.sh", run_dir, script_env(ports, RAY_AUTH_MODE="disabled"))
        assert res.returncode == 3, res.stdout + res.stderr
        assert f"port {ports[taken]}" in res.stderr and "already in use" in res.stderr
        flag = {"RAY_PORT": "--ray-port", "MLFLOW_PORT": "--mlflow-port", "DASHBOARD_PORT": "--dashboard-port"}[taken]
        assert flag in res.stderr
        assert not list(run_dir.glob("*.pid"))
    finally:
        kill_leftovers(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        (["--ray-port", "abc"], {}, "--ray-port must be a TCP port number in 1..65535, got 'abc'"),
        (["--mlflow-port", "70000"], {}, "--mlflow-port must be a TCP port number in 1..65535, got '70000'"),
        (["--bogus"], {}, "unknown argument '--bogus'"),
        ([], {"RAY_AUTH_MODE": "none"}, "RAY_AUTH_MODE must be 'token' or 'disabled', got 'none'"),
        ([], {"VENV": "/nonexistent/venv"}, "VENV='/nonexistent/venv' is not a directory"),
        (["--worker-cpus", "0"], {}, "--worker-cpus must be a positive integer, got '0'"),
    ],
)
def test_bad_arguments_are_named(tmp_path, args, extra_env, message):
    res = run("start.sh", tmp_path / "run", script_env(stack_ports(), **extra_env), *args)
    assert res.returncode == 2
    assert message in res.stderr


def test_long_run_dir_is_refused_before_starting(tmp_path):
    run_dir = tmp_path / ("x" * 60)
    res = run("start.sh", run_dir, script_env(stack_ports(), RAY_AUTH_MODE="disabled"))
    assert res.returncode == 2
    assert "too long for Ray's unix socket paths" in res.stderr


def test_stop_leaves_no_processes(stack):
    # Runs last in this module (pytest keeps file order); the fixture's own stop is then a no-op.
    sids = [stack.sid(n) for n in ("ray-head", "mlflow")]
    res = run("stop.sh", stack.run_dir, stack.env, timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [session_pids(s) for s in sids] == [[], []]
    assert not list(stack.run_dir.glob("*.pid"))
    assert run("status.sh", stack.run_dir, stack.env, "--brief").returncode == 1
    again = run("stop.sh", stack.run_dir, stack.env)
    assert again.returncode == 0 and "ray-head: not running" in again.stdout


JOB = (
    "import ray, socket\n"
    "ray.init()\n"
    "nodes = [n for n in ray.nodes() if n['Alive']]\n"
    "@ray.remote(num_cpus=1)\n"
    "def where():\n"
    "    return ray.get_runtime_context().get_node_id()\n"
    "from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as A\n"
    "ids = ray.get([where.options(scheduling_strategy=A(n['NodeID'], soft=False)).remote() for n in nodes])\n"
    "print('NODES', len(nodes), 'DISTINCT', len(set(ids)))\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("auth", ["token", "disabled"])
def test_two_node_cluster_runs_a_submitted_job(auth):
    """--with-worker: two raylets on this machine; a job submitted over the Jobs API runs on both."""
    run_dir = pathlib.Path(tempfile.mkdtemp(prefix="sf-", dir="/tmp"))
    ports = stack_ports()
    env = script_env(ports, RAY_AUTH_MODE=auth, SPECFORCE_HEAD_CPUS="1", SPECFORCE_WORKER_CPUS="1")
    try:
        res = run("start.sh", run_dir, env, "--with-worker")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "2 nodes" in res.stdout
        client_env = dict(env)
        if auth == "token":
            client_env["RAY_AUTH_TOKEN_PATH"] = str(run_dir / "ray_auth_token")
        job = subprocess.run(
            [str(VENV / "bin" / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{ports['DASHBOARD_PORT']}",
             "--", str(VENV / "bin" / "python"), "-c", JOB],
            env=client_env, capture_output=True, text=True, timeout=600,
        )
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
        assert "NODES 2 DISTINCT 2" in job.stdout
        sids = [int((run_dir / f"{n}.pid").read_text()) for n in ("ray-worker", "ray-head", "mlflow")]
        stop = run("stop.sh", run_dir, env, timeout=240)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert all(session_pids(s) == [] for s in sids)
    finally:
        run("stop.sh", run_dir, env, timeout=240)
        kill_leftovers(run_dir)
        shutil.rmtree(run_dir, ignore_errors=True)

# `specforce submit smoke.yaml` on the two-node stack lives in tests/test_submit_cluster.py
