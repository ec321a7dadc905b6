"""`specforce train` on a prepared dataset: loader worker processes with prefetch, killed and resumed, ends with the
uninterrupted run's weights; the run records the data as its MLflow dataset input and `data.digest` param; a dry-run
refuses an image size the dataset was not prepared at.

    .venv/bin/python -m pytest tests/test_prepared_train.py -q
"""
from __future__ import annotations

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from cli_helpers import cli_env, kill_at_checkpoint, run_cli, spawn_cli
from image_helpers import make_folder
from specforce_contracts import DEFAULT_STORE_FILE, RUN_CHECKPOINT_FILE
from sweeps.commands.prepare import prepare_dataset
from train_helpers import tiny_train_config
from trainers.training.checkpoint import load_checkpoint


@pytest.fixture()
def setup(tmp_path):
    env = cli_env(SPECFORCE_CACHE=str(tmp_path / "c"))
    src = make_folder(tmp_path / "photos", classes=3, per_class=12)
    manifest = prepare_dataset(str(src), str(tmp_path / "p16"), dataset="imagefolder", image_size=16, workers=1,
                               progress=False)
    cfg = tiny_train_config({"preset": "jit-tiny", "patch_size": 4},
                            {"name": "prepared", "root": str(tmp_path / "p16"), "image_size": 16, "num_workers": 1,
                             "prefetch_factor": 2},
                            batch_size=8, total_images=320, sample_steps=2, every=80, device="cpu",
                            eval={"metrics": [], "denoise_batch": 8, "denoise_t_points": 10, "grid_size": 2})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, env, manifest


def test_train_on_prepared_data_resumes_exactly_and_records_the_dataset(setup, tmp_path):
    config, env, manifest = setup
    run_cli("train", str(config), "--out", "ref", "--no-mlflow", cwd=tmp_path, env=env)
    ref = load_checkpoint(tmp_path / "ref" / RUN_CHECKPOINT_FILE)

    proc = spawn_cli("train", str(config), "--out", "killed", cwd=tmp_path, env=env)
    ckpt = tmp_path / "killed" / RUN_CHECKPOINT_FILE
    kill_at_checkpoint(proc, ckpt)
    assert 0 < load_checkpoint(ckpt)["images_seen"] < 320
    out = run_cli("train", str(config), "--out", "killed", cwd=tmp_path, env=env)
    assert "resumed from" in out
    resumed = load_checkpoint(ckpt)
    assert resumed["images_seen"] == 320
    for key, value in ref["model"].items():  # the same uint8 stream after the resume: the same weights
        torch.testing.assert_close(resumed["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)

    client = MlflowClient(f"sqlite:///{tmp_path / DEFAULT_STORE_FILE}")
    run = client.search_runs([client.get_experiment_by_name("train").experiment_id])[0]
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1  # the resumed run did not log it twice
    assert inputs[0].dataset.name == "prepared:imagefolder@16"
    assert inputs[0].dataset.digest == manifest["digest"][:12] == run.data.params["data.digest"]
    assert str(tmp_path / "p16") in inputs[0].dataset.source


def test_dry_run_refuses_an_image_size_the_data_was_not_prepared_at(setup, tmp_path):
    config, env, _ = setup
    out = run_cli("train", str(config), "--dry-run", "--set", "data.image_size=32", cwd=tmp_path, env=env, code=2)
    lines = out.strip().splitlines()
    assert len(lines) == 1 and "data.image_size is 32 but the prepared dataset" in lines[0]
    assert "--image-size 32" in lines[0]
