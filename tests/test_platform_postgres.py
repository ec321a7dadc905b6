"""The team tracking server (platform/mlflow) on a real PostgreSQL, exercised over HTTP.

    .venv/bin/python -m pytest tests/test_platform_postgres.py -q
    .venv/bin/python -m pytest tests/test_platform_postgres.py -q -m slow   # + `specforce sweep smoke.yaml`

A throw-away PostgreSQL cluster (Debian `postgresql` package binaries, initdb + pg_ctl) listens on
127.0.0.1 and a socket in its temp dir; init_postgres.sh creates the role and database; serve.sh runs
`mlflow server` on it. Fixtures stop the server and the cluster even when a test fails.
"""
from __future__ import annotations

import glob
import os
import pathlib
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from proc_helpers import listen_addresses

ROOT = pathlib.Path(__file__).resolve().parents[1]
MLFLOW_DIR = ROOT / "platform" / "mlflow"
VENV = pathlib.Path(sys.executable).parents[1]


def pg_bin_dir() -> pathlib.Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return pathlib.Path(found[-1]).parent if found else None


PG_BIN = pg_bin_dir()
# only the tests that need a server skip without one (through the `postgres` fixture): the argument checks of
# serve.sh and init_postgres.sh run everywhere. .ci/run installs the package, so CI never skips.
NO_PG = "PostgreSQL server binaries (Debian package `postgresql`) not found under /usr/lib/postgresql/*/bin"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_owner(cmd: list[str], owner: str | None) -> list[str]:
    # initdb and postgres refuse to run as root: drop to the cluster's owner.
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


@pytest.fixture(scope="module")
def postgres(request):
    if PG_BIN is None:
        pytest.skip(NO_PG)
    owner = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` OS user to own the cluster")
        owner = "postgres"
    base = pathlib.Path(tempfile.mkdtemp(prefix="sfpg-", dir="/tmp"))
    data = base / "data"
    port = free_port()
    if owner:
        shutil.chown(base, user=owner)
    subprocess.run(as_owner([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                             "--auth-host=scram-sha-256", "-E", "UTF8"], owner),
                   check=True, capture_output=True, text=True)

    def finalize():
        subprocess.run(as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], owner),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

    request.addfinalizer(finalize)
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={base}"
    res = subprocess.run(as_owner([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts,
                                   "-l", str(base / "postgres.log"), "-w", "-t", "120", "start"], owner),
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr + (base / "postgres.log").read_text()
    return {"socket_dir": str(base), "port": port, "base": base}


@pytest.fixture(scope="module")
def database(postgres, tmp_path_factory):
    pw_file = tmp_path_factory.mktemp("secrets") / "db_password"
    res = subprocess.run(
        ["bash", str(MLFLOW_DIR / "init_postgres.sh"), "--pg-host", postgres["socket_dir"],
         "--pg-port", str(postgres["port"]), "--superuser", "postgres", "--password-file", str(pw_file)],
        capture_output=True, text=True, env={k: v for k, v in os.environ.items() if k != "MLFLOW_DB_PASSWORD"},
    )
    assert res.returncode == 0, res.stderr
    return {"uri": res.stdout.strip().splitlines()[-1], "password": pw_file.read_text().strip(), "pw_file": pw_file}


def wait_http_ok(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not answering after {timeout}s")


@pytest.fixture(scope="module")
def server(database, tmp_path_factory):
    port = free_port()
    artifacts = tmp_path_factory.mktemp("artifacts")
    log = tmp_path_factory.mktemp("logs") / "mlflow.log"
    env = dict(os.environ, VENV=str(VENV), PGPASSWORD=database["password"])
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["bash", str(MLFLOW_DIR / "serve.sh"), "--backend-store-uri", database["uri"],
             "--artifacts-destination", str(artifacts), "--port", str(port), "--workers", "1"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http_ok(f"{url}/health", proc)
        yield {"url": url, "artifacts": artifacts, "proc": proc}
    except BaseException:
        print(log.read_text()[-4000:])
        raise
    finally:
        # serve.sh execs mlflow, which forks uvicorn: end the whole session we created.
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait)
                time.sleep(0.5)
            except subprocess.TimeoutExpired:
                continue


def test_init_postgres_is_idempotent_and_sets_the_password(postgres, database):
    import psycopg2

    again = subprocess.run(
        ["bash", str(MLFLOW_DIR / "init_postgres.sh"), "--pg-host", postgres["socket_dir"],
         "--pg-port", str(postgres["port"]), "--superuser", "postgres", "--password-file", str(database["pw_file"])],
        capture_output=True, text=True,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == database["uri"] == f"postgresql://mlflow@127.0.0.1:{postgres['port']}/mlflow"
    with psycopg2.connect(host="127.0.0.1", port=postgres["port"], user="mlflow", dbname="mlflow",
                          password=database["password"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_user, current_database()")
        assert cur.fetchone() == ("mlflow", "mlflow")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host="127.0.0.1", port=postgres["port"], user="mlflow", dbname="mlflow", password="wrong")


def test_init_postgres_rejects_unsafe_names(tmp_path):
    res = subprocess.run(["bash", str(MLFLOW_DIR / "init_postgres.sh"), "--db", "mlflow; DROP TABLE x"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "--db must match [a-z_][a-z0-9_]{0,62}, got 'mlflow; DROP TABLE x'" in res.stderr


def test_log_and_read_back_a_run_over_http(server, postgres, tmp_path):
    import mlflow
    import psycopg2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server["url"])
    exp_id = client.create_experiment("platform-postgres-test")
    run = client.create_run(exp_id, tags={"specforce.role": "trial"})
    rid = run.info.run_id
    client.log_param(rid, "model.patch_size", "8")
    for step, loss in enumerate([0.9, 0.5, 0.25]):
        client.log_metric(rid, "train/loss", loss, step=step * 64)
    (tmp_path / "report.md").write_text("# verdict\nSF helps\n")
    client.log_artifact(rid, str(tmp_path / "report.md"))
    client.set_terminated(rid)

    got = client.get_run(rid)
    assert got.data.params == {"model.patch_size": "8"}
    assert got.data.metrics["train/loss"] == 0.25
    assert [(m.step, m.value) for m in client.get_metric_history(rid, "train/loss")] == [(0, 0.9), (64, 0.5), (128, 0.25)]
    assert got.info.status == "FINISHED"
    assert [f.path for f in client.list_artifacts(rid)] == ["report.md"]
    local = mlflow.artifacts.download_artifacts(run_id=rid, artifact_path="report.md", tracking_uri=server["url"],
                                                dst_path=str(tmp_path / "dl"))
    assert pathlib.Path(local).read_text() == "# verdict\nSF helps\n"
    # The server proxied the upload into --artifacts-destination and wrote the run to PostgreSQL.
    assert list(server["artifacts"].rglob("report.md"))
    with psycopg2.connect(host=postgres["socket_dir"], port=postgres["port"], user="postgres", dbname="mlflow") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT key, value FROM params WHERE run_uuid = %s", (rid,))
            assert cur.fetchall() == [("model.patch_size", "8")]


def test_server_binds_loopback_and_checks_host_headers(server):
    port = int(server["url"].rsplit(":", 1)[1])
    assert listen_addresses(port) == {"127.0.0.1"}
    req = urllib.request.Request(f"{server['url']}/api/2.0/mlflow/experiments/search?max_results=1",
                                 headers={"Host": f"attacker.example:{port}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=60)
    assert err.value.code == 403


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--backend-store-uri (or MLFLOW_BACKEND_STORE_URI) is required"),
        (["--backend-store-uri", "sqlite:///x.db", "--artifacts-destination", "a"],
         "--backend-store-uri must be a PostgreSQL URI postgresql://USER@HOST:PORT/DB, got 'sqlite:///x.db'"),
        (["--backend-store-uri", "postgresql://u@h:1/db"], "--artifacts-destination (or MLFLOW_ARTIFACTS_DESTINATION) is required"),
        (["--backend-store-uri", "postgresql://u@h:1/db", "--artifacts-destination", "gs://b/x"],
         "--artifacts-destination must be a local path or s3://..., got 'gs://b/x'"),
        (["--backend-store-uri", "postgresql://u@h:1/db", "--artifacts-destination", "a", "--host", "0.0.0.0"],
         "--host '0.0.0.0' exposes the server beyond this machine: also pass --allowed-hosts"),
        (["--backend-store-uri", "postgresql://u@h:1/db", "--artifacts-destination", "a", "--port", "99999"],
         "--port must be a TCP port number in 1..65535, got '99999'"),
    ],
)
def test_serve_rejects_bad_arguments(tmp_path, args, message):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    res = subprocess.run(["bash", str(MLFLOW_DIR / "serve.sh"), *args], cwd=tmp_path, env=dict(env, VENV=str(VENV)),
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert message in res.stderr


def test_serve_command_line_defaults(tmp_path):
    env = dict(os.environ, VENV=str(VENV), MLFLOW_S3_ENDPOINT_URL="http://127.0.0.1:9000")
    res = subprocess.run(["bash", str(MLFLOW_DIR / "serve.sh"), "--print-command", "--backend-store-uri",
                          "postgresql://mlflow:s3cret@db:5432/mlflow", "--artifacts-destination", "arts", "--port", "5055"],
                         cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    argv = shlex.split(res.stdout)
    opt = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
    assert opt["--host"] == "127.0.0.1"
    assert opt["--allowed-hosts"] == "127.0.0.1:5055,localhost:5055"
    assert opt["--cors-allowed-origins"] == "http://127.0.0.1:5055,http://localhost:5055"
    # A bare postgresql:// gets the installed driver named (SQLAlchemy 2.1 would otherwise want psycopg 3).
    assert opt["--backend-store-uri"].split("://")[0] in {"postgresql+psycopg2", "postgresql+psycopg"}
    assert "s3cret" not in res.stderr
    assert opt["--artifacts-destination"] == str(tmp_path / "arts")
    assert "--serve-artifacts" in argv
    assert "password" in res.stderr and "PGPASSWORD" in res.stderr  # the warning about a password in the URI


def test_explicit_host_is_honoured_with_allowed_hosts(tmp_path):
    res = subprocess.run(["bash", str(MLFLOW_DIR / "serve.sh"), "--print-command", "--backend-store-uri",
                          "postgresql://mlflow@db/mlflow", "--artifacts-destination", "arts",
                          "--host", "0.0.0.0", "--allowed-hosts", "mlflow.example.org"],
                         cwd=tmp_path, env=dict(os.environ, VENV=str(VENV)), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    argv = shlex.split(res.stdout)
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert argv[argv.index("--allowed-hosts") + 1] == "mlflow.example.org"
    assert argv[argv.index("--cors-allowed-origins") + 1] == "http://mlflow.example.org"


def test_s3_artifact_destination_is_passed_through_or_needs_boto3(tmp_path):
    import importlib.util

    res = subprocess.run(["bash", str(MLFLOW_DIR / "serve.sh"), "--print-command", "--backend-store-uri",
                          "postgresql://mlflow@db/mlflow", "--artifacts-destination", "s3://bucket/mlflow"],
                         cwd=tmp_path, env=dict(os.environ, VENV=str(VENV), MLFLOW_S3_ENDPOINT_URL="http://minio:9000"),
                         capture_output=True, text=True)
    if importlib.util.find_spec("boto3") is None:
        assert res.returncode == 2
        assert "artifacts on s3://bucket/mlflow need boto3" in res.stderr
    else:
        assert res.returncode == 0, res.stderr
        argv = shlex.split(res.stdout)
        assert argv[argv.index("--artifacts-destination") + 1] == "s3://bucket/mlflow"


SMOKE = ROOT / "sweeps" / "configs" / "smoke.yaml"


@pytest.mark.slow
def test_smoke_sweep_against_the_postgres_server(server, tmp_path):
    """The issue's acceptance run: `specforce sweep smoke.yaml` logging to this server over HTTP."""
    specforce = VENV / "bin" / "specforce"
    assert SMOKE.exists() and specforce.exists(), "make setup installs the specforce CLI into the venv"
    from mlflow.tracking import MlflowClient

    res = subprocess.run([str(specforce), "sweep", str(SMOKE), "--tracking-uri", server["url"],
                          "--storage", str(tmp_path / "ray")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                         env=dict(os.environ, RAY_AUTH_MODE="disabled"))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    import yaml

    name = yaml.safe_load(SMOKE.read_text())["name"]
    client = MlflowClient(tracking_uri=server["url"])
    exp = client.get_experiment_by_name(name)
    assert exp is not None
    from sweeps.spec import grid_plans, load_spec

    runs = client.search_runs([exp.experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("specforce.role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("specforce.role") == "trial"]
    # one parent run and one child per planned trial, every one FINISHED, all under that parent
    assert [r.info.status for r in sweeps] == ["FINISHED"]
    assert sorted(r.data.tags.get("specforce.trial_id") for r in trials) == sorted(
        p.trial_id for p in grid_plans(load_spec(SMOKE)))
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags.get("mlflow.parentRunId") for r in trials} == {sweeps[0].info.run_id}
