"""A plug-in model (unet-tiny through the model contract) trained with 2 DDP workers equals the 1-worker run, and its
evaluation runs distributed over both ranks (slow: two real sweeps through Ray Train with gloo on CPU).

    .venv/bin/python -m pytest tests/test_ddp_contract.py -q -m slow
"""
from __future__ import annotations

import pathlib

import pytest

from sweep_helpers import client_for, run_cli, trial_runs, write_spec
from test_ddp_equivalence import _curve_diff, _final_state, _history, _max_diff
from trainers.training.checkpoint import load_checkpoint

TOTAL = 2560  # the images _final_state looks for (test_ddp_equivalence.TOTAL)


def _spec(tmp_path: pathlib.Path, name: str, workers: int) -> pathlib.Path:
    return write_spec(tmp_path / f"{name}.yaml", name=name, grid={"spectral.enabled": [True]},
                      resources={"workers": workers, "cpus_per_worker": 1}, max_failures=0,
                      base__model={"preset": "jit-tiny", "target": "trainers.model.unet:build_unet", "predicts": "v"},
                      base__data={"name": "grf", "image_size": 16, "options": {"num_samples": 1024}},
                      base__optim={"batch_size": 32, "lr": 1e-3, "total_images": TOTAL, "ema_decays": [0.99]},
                      base__eval={"every_images": 1280, "num_samples": 32, "batch_size": 16, "metrics": ["fd_pixel"],
                                  "denoise_batch": 32, "denoise_t_points": 10, "grid_size": 2},
                      base__log_every_images=640)


@pytest.mark.slow
def test_a_contract_model_trains_the_same_with_two_ddp_workers_and_evaluates_on_both(tmp_path):
    run_cli(["sweep", str(_spec(tmp_path, "one", 1))], tmp_path)
    run_cli(["sweep", str(_spec(tmp_path, "two", 2))], tmp_path)
    one, two = _final_state(tmp_path, "one"), _final_state(tmp_path, "two")
    (half,) = (tmp_path / "ray_results" / "one" / "train").glob("*/checkpoint_000000001280/checkpoint.pt")
    # How far the last 40 AdamW steps moved the weights: a different stream would differ by that much. The U-Net's
    # convolutions sum their gradients in another order across 2 ranks, and Adam's normalised steps carry that
    # float noise further than in JiT (measured 7.7e-5 here against 2.4e-7 for jit-tiny): the bound is relative.
    moved = _max_diff(load_checkpoint(half)["model"], one["model"])
    assert _max_diff(one["model"], two["model"]) < moved / 100
    assert _max_diff(one["ema"], two["ema"]) < moved / 100
    for key in ("train/loss", "eval/denoise_loss"):
        assert _curve_diff(_history(tmp_path, "one", key), _history(tmp_path, "two", key)) < 1e-3, key
    run = trial_runs(client_for(tmp_path), "two")[0]
    assert run.data.params["model.target"] == "trainers.model.unet:build_unet"
    assert "eval/fd_pixel" in run.data.metrics  # sampled and evaluated across both ranks
