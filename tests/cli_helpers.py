"""`specforce` (sweeps.cli) run in a child process, as a user runs it, for the end-to-end tests: the environment it
gets, a run to its end (merged or separate output) and a hard kill once a run's first checkpoint is on disk.

    .venv/bin/python -m pytest tests/test_train_cli.py -q        # one of the tests that use it (CPU, ~2 min)
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

from sweep_helpers import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[1]


def cli_env(*front: str | os.PathLike, base: dict | None = None, **extra: str) -> dict[str, str]:
    """`base` (default: this process's environment) with PYTHONPATH = the `front` folders (a user's own code), then
    the project (installed for a user; here it is on the path), one OpenMP thread (the tests share few cores), and
    the `extra` variables on top."""
    env = dict(os.environ if base is None else base)
    env.update(PYTHONPATH=os.pathsep.join([*map(str, front), str(ROOT)]), OMP_NUM_THREADS="1", **extra)
    return env


def spawn_cli(*args: str, cwd, env: dict[str, str]) -> subprocess.Popen:
    """`python -m sweeps.cli ARGS` started in `cwd`, stdout and stderr merged into one text pipe."""
    return subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def run_cli(*args: str, cwd, env: dict[str, str], code: int = 0, timeout: float = 600) -> str:
    """`spawn_cli` to its end: the merged output, once its exit status is asserted to be `code`."""
    proc = spawn_cli(*args, cwd=cwd, env=env)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == code, out
    return out


def run_cli_streams(args: list[str], cwd, env: dict[str, str], code: int = 0,
                    timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m sweeps.cli ARGS` to its end with stdout and stderr kept apart (a JSON report on stdout, a one-line
    refusal on stderr), once its exit status is asserted to be `code` (the tail of both is the message)."""
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=env, text=True,
                         capture_output=True, timeout=timeout)
    assert out.returncode == code, (out.stdout + out.stderr)[-5000:]
    return out


def kill_at_checkpoint(proc: subprocess.Popen, checkpoint: pathlib.Path, timeout: float = 300) -> None:
    """SIGKILL the running `proc` as soon as `checkpoint` exists, as a crash or a preempted machine would end it
    (nothing of its own shutdown runs); fails if the run ends first or no checkpoint appears in `timeout` s."""
    wait_for(checkpoint.exists, timeout, proc, f"{checkpoint} (a run that ends first is too short to kill)", every=0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
