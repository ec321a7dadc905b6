"""A sweep with a failing trial, end to end: one arm reads an image folder holding a file that cannot be decoded
(`imagefolder` with `verify: false`, so indexing does not open it and the loader meets it mid-trial).

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest tests/test_failing_trial.py -q -m slow -s   # ~4 min, 2 cores

What a user relies on when a trial breaks: the sweep exits non-zero; the trial and its exception are named while it
runs and again at the end; Ray Train retried it `max_failures` times; its MLflow run is FAILED; the report keeps it
apart with the reason; and `--resume`, once the file is fixed, runs only that trial.
"""
from __future__ import annotations

import csv
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from trainers.data.image_files import ImageReadError

from sweep_helpers import cli_env, client_for, trial_runs, write_spec

pytestmark = pytest.mark.slow
IMAGES = 32  # one global batch: epoch 0 reads every image in its first step, the broken one included


def _folder(root: pathlib.Path, broken: bool) -> pathlib.Path:
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        path = root / "cls0" / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    if broken:
        (root / "cls0" / "img07.png").write_bytes(b"not a png: the file broke after it was listed")
    return root


def _run(args: list[str], cwd: pathlib.Path) -> tuple[int, str]:
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=cli_env(), timeout=1500,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    (cwd / f"cli-{args[0]}-{len(list(cwd.glob('cli-*.log')))}.log").write_text(res.stdout)
    return res.returncode, res.stdout


def test_a_failing_trial_is_reported_retried_marked_failed_excluded_and_resumed_alone(tmp_path):
    good, bad = _folder(tmp_path / "good", False), _folder(tmp_path / "bad", True)
    spec = write_spec(tmp_path / "broken.yaml", name="broken", max_failures=1, max_concurrent_trials=1,
                      grid={"data.root": [str(good), str(bad)], "spectral.enabled": [True]},
                      base__data={"name": "imagefolder", "image_size": 32, "root": str(good),
                                  "options": {"verify": False}},
                      base__optim={"batch_size": 16, "lr": 1e-3, "total_images": 320, "ema_decays": [0.99]},
                      base__eval={"every_images": 0, "num_samples": 16, "batch_size": 16, "metrics": [],
                                  "denoise_batch": 16, "denoise_t_points": 5, "grid_size": 2})
    rc, out = _run(["sweep", str(spec), "--num-cpus", "2"], tmp_path)
    print(f"--- first sweep: exit code {rc}\n{out}")
    assert rc == 1, out
    broken_file = str(bad / "cls0" / "img07.png")
    # named as it happens and at the end: the trial id, the exception class and the file
    lines = out.splitlines()
    failed_lines = [i for i, line in enumerate(lines) if "FAILED" in line and "cannot read image" in line]
    assert len(failed_lines) == 2 and all(broken_file in lines[i] for i in failed_lines), out
    summary = next(i for i, line in enumerate(lines) if re.match(r"\[grid\] 1/2 trials done, 1 FAILED in ", line))
    assert failed_lines[0] < summary < failed_lines[1], out  # as it happened, and again under the phase's summary
    assert "2 trials (1 failed)" in lines[-1], out
    client = client_for(tmp_path)
    runs = {r.data.params["data.root"]: r for r in trial_runs(client, "broken")}
    assert runs[str(good)].info.status == "FINISHED" and runs[str(bad)].info.status == "FAILED", runs
    bad_id = runs[str(bad)].data.tags["specforce.trial_id"]
    good_id = runs[str(good)].data.tags["specforce.trial_id"]
    assert re.search(rf"trial {bad_id} FAILED: .*ImageReadError", out), out
    # max_failures: 1 -> two worker processes (the first and its restart) each met the broken file (Ray's log)
    log = pathlib.Path(re.search(r"logs of Ray and its workers: (\S+\.log)", out)[1]).read_text()
    error_class = re.escape(f"{ImageReadError.__module__}.{ImageReadError.__name__}")  # wherever the class lives
    attempts = set(re.findall(rf"\(RayTrainWorker pid=(\d+)\) {error_class}: .*" + re.escape(broken_file), log))
    assert len(attempts) == 1 + 1, log[-4000:]

    # the report keeps the failed run apart and says why
    rc, rep = _run(["report", "--experiment", "broken", "--out", str(tmp_path / "report"), "--no-log"], tmp_path)
    assert rc == 0, rep  # a run without params (it failed before its first report) once crashed the report
    with open(tmp_path / "report" / "excluded.csv") as f:
        excluded = list(csv.DictReader(f))
    assert [(row["run_id"], row["reason"]) for row in excluded] == [(runs[str(bad)].info.run_id, "failed")], excluded

    # the file fixed, --resume runs the failed trial only
    _folder(bad, False)
    rc, out2 = _run(["sweep", str(spec), "--resume", "--num-cpus", "2"], tmp_path)
    print(f"--- resumed sweep: exit code {rc}\n{out2}")
    assert rc == 0, out2
    assert "[grid] 1 of 2 trial(s) already completed in MLflow: not rerun" in out2, out2
    assert f"trial {bad_id} finished" in out2 and good_id not in out2, out2
    finished = [r for r in trial_runs(client, "broken") if r.info.status == "FINISHED"]
    assert sorted(r.data.tags["specforce.trial_id"] for r in finished) == sorted([bad_id, good_id])
