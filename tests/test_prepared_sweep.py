"""A two-trial sweep on a prepared dataset, its driver killed after the first checkpoint and resumed, ends with the
same weights as the uninterrupted sweep; both record the data as each run's MLflow dataset input (slow: two sweeps).

    .venv/bin/python -m pytest tests/test_prepared_sweep.py -q -m slow
"""
from __future__ import annotations

import pytest
import torch

from image_helpers import make_folder
from sweep_helpers import client_for, kill_group, run_cli, start_cli, trial_runs, wait_for, write_spec
from sweeps.commands.prepare import prepare_dataset
from trainers.training.checkpoint import load_checkpoint


def _spec(tmp_path, name):
    return write_spec(tmp_path / f"{name}.yaml", name=name,
                      base__model={"preset": "jit-tiny", "patch_size": 4},
                      base__data={"name": "prepared", "root": str(tmp_path / "p16"), "image_size": 16,
                                  "num_workers": 1, "prefetch_factor": 2},
                      base__optim={"batch_size": 16, "lr": 1e-3, "total_images": 1600, "ema_decays": [0.99]},
                      base__eval={"every_images": 800, "num_samples": 32, "batch_size": 32, "metrics": ["fd_pixel"],
                                  "denoise_batch": 16, "denoise_t_points": 10, "grid_size": 2})


def _final_weights(tmp_path, name):
    out = {}
    for ckpt in (tmp_path / "ray_results" / name / "train").glob("*/checkpoint_000000001600/checkpoint.pt"):
        trial = ckpt.parent.parent.name  # <sweep name>-<arm>-<hash>: the arm and hash match across the two sweeps
        out[trial.removeprefix(f"{name}-")] = load_checkpoint(ckpt)["model"]
    return out


@pytest.mark.slow
def test_sweep_on_prepared_data_killed_and_resumed_equals_the_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECFORCE_CACHE", str(tmp_path / "cache"))
    make_folder(tmp_path / "photos", classes=3, per_class=20)
    manifest = prepare_dataset(str(tmp_path / "photos"), str(tmp_path / "p16"), dataset="imagefolder",
                               image_size=16, workers=1, progress=False)
    run_cli(["sweep", str(_spec(tmp_path, "whole"))], tmp_path)

    spec = _spec(tmp_path, "cut")
    proc = start_cli(["sweep", str(spec)], tmp_path, tmp_path / "cut.log")
    train_dir = tmp_path / "ray_results" / "cut" / "train"
    try:
        wait_for(lambda: any(train_dir.glob("*/checkpoint_000000000800")), 900, proc, "a first checkpoint")
    finally:
        kill_group(proc)
    assert not any(train_dir.glob("*/checkpoint_000000001600")), "a trial finished before the kill"
    out = run_cli(["sweep", str(spec), "--resume"], tmp_path)
    assert "sweep 'cut': 2 trials (0 failed)" in out

    whole, cut = _final_weights(tmp_path, "whole"), _final_weights(tmp_path, "cut")
    assert len(whole) == 2 and whole.keys() == cut.keys()
    for trial, weights in whole.items():
        for key, value in weights.items():
            torch.testing.assert_close(cut[trial][key], value, rtol=1e-5, atol=1e-6, msg=f"{trial} {key}")
    client = client_for(tmp_path)
    for name in ("whole", "cut"):
        runs = trial_runs(client, name)
        assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
        for run in runs:
            (dataset_input,) = run.inputs.dataset_inputs
            assert dataset_input.dataset.digest == manifest["digest"][:12] == run.data.params["data.digest"]
