"""`specforce train` on a prepared dataset: loader worker processes with prefetch, killed and resumed, ends with the
uninterrupted run's weights; the run records the data as its MLflow dataset input and `data.digest` param; a dry-run
refuses an image size the dataset was not prepared at.

    .venv/bin/python -m pytest tests/test_prepared_train.py -q
"""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from image_helpers import make_folder
from sweeps.commands.prepare import prepare_dataset
from trainers.training.checkpoint import load_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cli(*args, cwd, env):
    return subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run(*args, cwd, env, code=0):
    proc = _cli(*args, cwd=cwd, env=env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == code, out
    return out


@pytest.fixture()
def setup(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "SPECFORCE_CACHE": str(tmp_path / "c")}
    src = make_folder(tmp_path / "photos", classes=3, per_class=12)
    manifest = prepare_dataset(str(src), str(tmp_path / "p16"), dataset="imagefolder", image_size=16, workers=1,
                               progress=False)
    cfg = {"model": {"preset": "jit-tiny", "patch_size": 4},
           "data": {"name": "prepared", "root": str(tmp_path / "p16"), "image_size": 16, "num_workers": 1,
                    "prefetch_factor": 2},
           "spectral": {"enabled": True},
           "optim": {"batch_size": 8, "lr": 1e-3, "total_images": 320, "ema_decays": [0.99]},
           "sample": {"sampler": "euler", "steps": 2},
           "eval": {"metrics": [], "denoise_batch": 8, "denoise_t_points": 10, "grid_size": 2},
           "log_every_images": 80, "checkpoint_every_images": 80, "device": "cpu"}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, env, manifest


def test_train_on_prepared_data_resumes_exactly_and_records_the_dataset(setup, tmp_path):
    config, env, manifest = setup
    _run("train", str(config), "--out", "ref", "--no-mlflow", cwd=tmp_path, env=env)
    ref = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")

    proc = _cli("train", str(config), "--out", "killed", cwd=tmp_path, env=env)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < load_checkpoint(ckpt)["images_seen"] < 320
    out = _run("train", str(config), "--out", "killed", cwd=tmp_path, env=env)
    assert "resumed from" in out
    resumed = load_checkpoint(ckpt)
    assert resumed["images_seen"] == 320
    for key, value in ref["model"].items():  # the same uint8 stream after the resume: the same weights
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("train").experiment_id])[0]
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1  # the resumed run did not log it twice
    assert inputs[0].dataset.name == "prepared:imagefolder@16"
    assert inputs[0].dataset.digest == manifest["digest"][:12] == run.data.params["data.digest"]
    assert str(tmp_path / "p16") in inputs[0].dataset.source


def test_dry_run_refuses_an_image_size_the_data_was_not_prepared_at(setup, tmp_path):
    config, env, _ = setup
    out = _run("train", str(config), "--dry-run", "--set", "data.image_size=32", cwd=tmp_path, env=env, code=2)
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "data.image_size is 32 but the prepared dataset" in lines[0]
    assert "--image-size 32" in lines[0]
