"""Helpers for end-to-end sweep tests: run the real CLI in a scratch folder and read the real MLflow store."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import yaml
from mlflow.tracking import MlflowClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "configs" / "smoke.yaml"


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1", "SPECFORCE_CACHE": str(ROOT / ".pytest_cache" / "specforce")}


def start_cli(args: list[str], cwd: pathlib.Path, log: pathlib.Path) -> subprocess.Popen:
    # its own session, so a test can kill the driver together with the Ray processes it started
    return subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=cli_env(),
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def run_cli(args: list[str], cwd: pathlib.Path, timeout: float = 900) -> str:
    log = cwd / f"cli-{int(time.time() * 1000)}.log"
    proc = start_cli(args, cwd, log)
    try:
        proc.wait(timeout=timeout)
    finally:
        kill_group(proc)
    out = log.read_text()
    assert proc.returncode == 0, out[-5000:]
    return out


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def write_spec(path: pathlib.Path, **changes) -> pathlib.Path:
    tree = yaml.safe_load(SMOKE.read_text())
    for key, value in changes.items():
        node = tree
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    path.write_text(yaml.safe_dump(tree))
    return path


def client_for(cwd: pathlib.Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")


def trial_runs(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment!r} not in MLflow"
    return client.search_runs([exp.experiment_id], filter_string="tags.`specforce.role` = 'trial'")


def sweep_runs(client: MlflowClient, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string="tags.`specforce.role` = 'sweep'")


def trial_logger_in(tmp_path: pathlib.Path):
    """A fresh sqlite store with an experiment and a parent run, and the sweep's MLflow trial logger on it:
    (client, experiment id, parent run id, logger)."""
    from sweeps.tracking import MlflowTrialLogger

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("t")
    parent = client.create_run(exp).info.run_id
    return client, exp, parent, MlflowTrialLogger(uri, exp, parent)


def grid_trial(trial_id: str, overrides: dict | None = None):
    """What MlflowTrialLogger reads of a Tune trial in a grid phase: its plan, Tune id, last result, error file."""
    from types import SimpleNamespace

    return SimpleNamespace(config={"plan": {"trial_id": trial_id, "overrides": dict(overrides or {})}},
                           trial_id=trial_id, last_result={}, error_file=None)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "",
             every: float = 0.5) -> None:
    """Polls `predicate` every `every` seconds; fails when `proc` ends first or after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before: {what}")
        time.sleep(every)
    raise AssertionError(f"timed out waiting for: {what}")
