"""Every bad input gets a one-line refusal before any work starts, and leaves nothing behind.

The tables of bad inputs run through `sweeps.cli.main` in-process, by subject: tests/test_cli_errors_train.py (train,
eval, prepare) and tests/test_cli_errors_sweep.py (sweep, submit, status, logs, report, ui, argparse); each row
asserts exit code 2, one `specforce <command>:` line on stderr that names the bad thing, no traceback, and an
unchanged directory tree (no new files, folders, MLflow stores). Here: the tables together cover every command, a few
rows run again as real subprocesses to prove the terminal sees no traceback either, `--debug`, unanticipated errors,
and a run that fails mid-way.

    .venv/bin/python -m pytest tests/test_cli_errors.py -q
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from refusal_helpers import ROOT, busy_port, cfg, fill, free_port, inputs, png, write_yaml  # noqa: F401 (fixtures)
from sweeps import cli
from sweeps.errors import UserError, run_command
from test_cli_errors_sweep import ROWS as SWEEP_ROWS
from test_cli_errors_train import ROWS as TRAIN_ROWS

ROWS = TRAIN_ROWS + SWEEP_ROWS


def test_the_table_is_large_enough():
    assert len(ROWS) >= 40 and len({r.id for r in ROWS}) == len(ROWS)
    assert {r.argv[0] for r in ROWS} >= {"train", "sweep", "report", "eval", "ui", "submit", "status", "logs"}


SUBPROCESS_ROWS = ["train-config-missing", "sweep-preset-typo", "eval-truncated", "ui-port-taken",
                   "report-store-missing", "train-corrupt-image-past-512"]


@pytest.mark.parametrize("row_id", SUBPROCESS_ROWS)
def test_the_terminal_sees_one_line_and_no_traceback(row_id, inputs, tmp_path, busy_port):
    row = next(r for r in ROWS if r.id == row_id)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SPECFORCE_DEBUG")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", *[fill(a, inputs, port, busy_port) for a in row.argv]],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"specforce {row.argv[0]}: "), out.stderr
    assert fill(row.needle, inputs, port, busy_port) in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(inputs, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "sweeps.cli", "train", str(inputs / "preset.yaml")]
    flag = subprocess.run(argv + ["--debug"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    env_var = subprocess.run(argv, cwd=tmp_path, env={**env, "SPECFORCE_DEBUG": "1"}, capture_output=True, text=True,
                             timeout=300)
    for out in (flag, env_var):
        assert out.returncode == 2
        assert "Traceback (most recent call last)" in out.stderr and "ConfigError" in out.stderr
        assert out.stderr.strip().splitlines()[-1].startswith("specforce train: model.preset: unknown preset")


def test_unanticipated_errors_keep_their_traceback_and_ask_for_a_report(capsys):
    def bug():
        return {}["missing"]

    assert run_command("train", bug) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError" in err
    assert err.strip().splitlines()[-1].startswith("specforce train: unexpected KeyError: 'missing'. This is a bug")
    # anticipated classes print one line, with the traceback only under --debug
    assert run_command("ui", lambda: (_ for _ in ()).throw(UserError("--port", "taken", 5000))) == 2
    assert capsys.readouterr().err == "specforce ui: --port: taken (got 5000)\n"
    assert run_command("eval", lambda: open("/no/such/file")) == 2
    assert capsys.readouterr().err == "specforce eval: /no/such/file: No such file or directory\n"
    assert run_command("x", lambda: (_ for _ in ()).throw(KeyboardInterrupt())) == 130


def test_a_run_that_fails_mid_way_marks_its_run_failed_and_says_where_its_output_is(tmp_path, monkeypatch, capsys):
    """A JPEG cut after its header passes the index-time check (verifying it would need a full decode) and breaks
    when the loader reaches it, past the 512 images the setup reads: the run fails mid-way."""
    root = tmp_path / "photos"
    for i in range(600):  # the setup reads the first 512 (the data spectrum); the broken one sorts last
        png(root / "a" / f"{i:03d}.png", seed=i, size=8)
    buf = pathlib.Path(tmp_path / "full.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "a" / "zzz.jpg").write_bytes(buf.read_bytes()[: buf.stat().st_size // 2])
    buf.unlink()
    config = write_yaml(tmp_path / "c.yaml", cfg(
        data={"name": "imagefolder", "image_size": 8, "root": str(root)}, model={"preset": "jit-tiny", "patch_size": 4},
        optim={"batch_size": 30, "lr": 1e-3, "total_images": 1500, "ema_decays": [0.99]},
        eval={"metrics": [], "denoise_loss": False, "grid_size": 2}, checkpoint_every_images=60))
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", str(config), "--out", "run"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    stopped, refusal = err.strip().splitlines()[-2:]
    assert stopped.startswith("train stopped (ImageReadError): partial output in run; MLflow run ")
    assert stopped.endswith("marked FAILED; rerun the same command to resume from its last checkpoint")
    assert refusal.startswith(f"specforce train: imagefolder: cannot read image '{root}/a/zzz.jpg'")
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # the partial output it names
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert [(r.info.status, r.data.tags["specforce.status"]) for r in runs] == [("FAILED", "failed")]
