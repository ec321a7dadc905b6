"""`specforce train`: a real tiny run on CPU, its outputs, MLflow record, and exact resume after a hard kill."""
import json
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

from trainers.training.checkpoint import load_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {
    "model": {"preset": "jit-tiny", "patch_size": 8},
    "data": {"name": "grf", "image_size": 32, "options": {"num_samples": 512}},
    "spectral": {"enabled": True},
    "optim": {"batch_size": 32, "lr": 1e-3, "total_images": 1280, "ema_decays": [0.99]},
    "sample": {"sampler": "euler", "steps": 4},
    "eval": {"metrics": [], "denoise_batch": 32, "denoise_t_points": 10, "grid_size": 4},
    "log_every_images": 320,
    "checkpoint_every_images": 320,
}


def _cli(*args, cwd, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sweeps.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _run(*args, cwd):
    proc = _cli(*args, cwd=cwd)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


@pytest.fixture()
def config(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def test_dry_run_prints_resolved_config_and_validates(config, tmp_path):
    out = _run("train", str(config), "--dry-run", "--set", "model.patch_size=4", cwd=tmp_path)
    resolved = yaml.safe_load(out)
    assert resolved["model"]["patch_size"] == 4 and resolved["spectral"]["kappa"] == 30.0
    bad = _cli("train", str(config), "--dry-run", "--set", "model.patch_size=7", cwd=tmp_path)
    out, _ = bad.communicate(timeout=120)
    assert bad.returncode == 2 and "model.patch_size: patch size 7 does not divide" in out


def test_train_writes_outputs_logs_mlflow_and_resumes_exactly_after_kill(config, tmp_path):
    # 1) uninterrupted reference run
    _run("train", str(config), "--out", "ref", "--no-mlflow", cwd=tmp_path)
    ref = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")
    assert ref["images_seen"] == 1280
    for name in ("config.yaml", "metrics.jsonl", "ema.pt", "samples/final.png", "spectral/mask.png"):
        assert (tmp_path / "ref" / name).is_file(), name
    losses = [json.loads(l)["train/loss"] for l in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
              if "train/loss" in l]
    assert len(losses) == 4 and all(map(lambda v: v == v, losses)) and losses[-1] < losses[0]

    # `specforce eval` re-evaluates the saved EMA weights with the loop's own evaluation code
    out = _run("eval", str(tmp_path / "ref" / "ema.pt"), "--num-samples", "32", "--metrics", "fd_pixel", cwd=tmp_path)
    report = json.loads(out[out.index("{"):])
    assert report["images_seen"] == 1280 and report["eval/fd_pixel"] > 0 and "eval/denoise_loss" in report
    assert report["provenance"]["fd_pixel"]["num_samples"] == 32

    # 2) the same run killed hard after its first checkpoint, then the same command again
    proc = _cli("train", str(config), "--out", "killed", cwd=tmp_path)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = load_checkpoint(ckpt)["images_seen"]
    assert 0 < partial < 1280
    out = _run("train", str(config), "--out", "killed", cwd=tmp_path)
    assert f"resumed from" in out
    resumed = load_checkpoint(ckpt)
    assert resumed["images_seen"] == 1280
    # same data, t and noise stream after resume: weights equal the uninterrupted run's
    for key, value in ref["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)

    # 3) MLflow: one run (the rerun continued it), FINISHED, contract params, step = images
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("train")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    params = runs[0].data.params
    assert params["model.patch_size"] == "8" and params["spectral.enabled"] == "True"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "train/loss")]
    assert max(steps) == 1280


def test_changed_config_refuses_to_resume(config, tmp_path):
    _run("train", str(config), "--out", "a", "--no-mlflow", "--set", "optim.total_images=320", cwd=tmp_path)
    proc = _cli("train", str(config), "--out", "a", "--no-mlflow", "--set", "optim.lr=0.01", cwd=tmp_path)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "different config" in out
