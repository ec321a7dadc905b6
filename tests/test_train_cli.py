"""`specforce train`: a real tiny run on CPU, its outputs, MLflow record, and exact resume after a hard kill.

    .venv/bin/python -m pytest tests/test_train_cli.py -q      # CPU, ~2 min
"""
import json

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from cli_helpers import cli_env, kill_at_checkpoint, run_cli, spawn_cli
from specforce_contracts import (DEFAULT_STORE_FILE, RUN_CHECKPOINT_FILE, RUN_CONFIG_FILE, RUN_EMA_FILE,
                                 RUN_METRICS_FILE)
from train_helpers import tiny_train_config
from trainers.training.checkpoint import load_checkpoint

TINY = tiny_train_config({"preset": "jit-tiny", "patch_size": 8},
                         {"name": "grf", "image_size": 32, "options": {"num_samples": 512}},
                         batch_size=32, total_images=1280, sample_steps=4, every=320,
                         eval={"metrics": [], "denoise_batch": 32, "denoise_t_points": 10, "grid_size": 4})


def _cli(*args, cwd):
    return spawn_cli(*args, cwd=cwd, env=cli_env())


def _run(*args, cwd):
    return run_cli(*args, cwd=cwd, env=cli_env())


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
    ref = load_checkpoint(tmp_path / "ref" / RUN_CHECKPOINT_FILE)
    assert ref["images_seen"] == 1280
    for name in (RUN_CONFIG_FILE, RUN_METRICS_FILE, RUN_EMA_FILE, "samples/final.png", "spectral/mask.png"):
        assert (tmp_path / "ref" / name).is_file(), name
    losses = [json.loads(l)["train/loss"] for l in (tmp_path / "ref" / RUN_METRICS_FILE).read_text().splitlines()
              if "train/loss" in l]
    assert len(losses) == 4 and all(map(lambda v: v == v, losses)) and losses[-1] < losses[0]

    # `specforce eval` re-evaluates the saved EMA weights with the loop's own evaluation code
    out = _run("eval", str(tmp_path / "ref" / RUN_EMA_FILE), "--num-samples", "32", "--metrics", "fd_pixel",
               cwd=tmp_path)
    report = json.loads(out[out.index("{"):])
    assert report["images_seen"] == 1280 and report["eval/fd_pixel"] > 0 and "eval/denoise_loss" in report
    assert report["provenance"]["fd_pixel"]["num_samples"] == 32

    # 2) the same run killed hard after its first checkpoint, then the same command again
    proc = _cli("train", str(config), "--out", "killed", cwd=tmp_path)
    ckpt = tmp_path / "killed" / RUN_CHECKPOINT_FILE
    kill_at_checkpoint(proc, ckpt)
    partial = load_checkpoint(ckpt)["images_seen"]
    assert 0 < partial < 1280
    out = _run("train", str(config), "--out", "killed", cwd=tmp_path)
    assert "resumed from" in out
    resumed = load_checkpoint(ckpt)
    assert resumed["images_seen"] == 1280
    # same data, t and noise stream after resume: weights equal the uninterrupted run's
    for key, value in ref["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)

    # 3) MLflow: one run (the rerun continued it), FINISHED, contract params, step = images
    client = MlflowClient(f"sqlite:///{tmp_path / DEFAULT_STORE_FILE}")
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
