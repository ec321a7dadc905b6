"""A trial with 2 Ray Train workers (DDP over gloo on CPU) trains the same global stream as 1 worker at the same global
batch, through the real sweep path (`specforce sweep`, Ray Tune -> Ray Train -> trainers.training.loop), and a 2-worker trial
whose sweep is killed mid-run resumes with `--resume` and ends where the uninterrupted one ends.

    .venv/bin/python -m pytest tests/test_ddp_equivalence.py -q                                        # fast part
    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest tests/test_ddp_equivalence.py -q -m slow -s   # ~4.5 min, 2 cores

Same global stream: the data shard of rank r is global rows r, r+2, ... of each global batch (trainers/data/loader.py) and
the flow draws t, noise and label dropout for the global batch, keeping the rank's rows (trainers/model/flow.py), so the
only differences are float summation orders (gradient all-reduce, loss mean over shards). The tolerances below
bound those; the measured figures are printed (`-s`) for the record.
"""
from __future__ import annotations

import json
import pathlib

import pytest
import torch

from resume_helpers import flat_tensors
from sweep_helpers import client_for, kill_group, run_cli, start_cli, trial_runs, wait_for, write_spec
from trainers.training.checkpoint import load_checkpoint

TOTAL = 2560  # 80 steps of 32 images; checkpoints (with the held-out evaluation) every 640 images
WEIGHT_TOL = 1e-5  # max abs difference of any weight or EMA value after 80 AdamW steps (float32; measured 2.4e-7)
LOSS_TOL = 1e-5  # max abs difference of a logged train/loss or eval/denoise_loss value (measured 3.8e-7)


def _spec(tmp_path: pathlib.Path, name: str, workers: int) -> pathlib.Path:
    return write_spec(tmp_path / f"{name}.yaml", name=name, grid={"spectral.enabled": [True]},
                      resources={"workers": workers, "cpus_per_worker": 1}, max_failures=0,
                      base__optim={"batch_size": 32, "lr": 1e-3, "total_images": TOTAL, "ema_decays": [0.99]},
                      base__eval={"every_images": 640, "num_samples": 16, "batch_size": 16, "metrics": [],
                                  "denoise_batch": 32, "denoise_t_points": 10, "grid_size": 2},
                      base__log_every_images=320)


def _final_state(tmp_path: pathlib.Path, name: str) -> dict:
    found = sorted((tmp_path / "ray_results" / name / "train").glob(f"*/checkpoint_{TOTAL:012d}/checkpoint.pt"))
    assert len(found) == 1, found
    return load_checkpoint(found[0])


def _max_diff(a: dict, b: dict) -> float:
    ta, tb = flat_tensors(a), flat_tensors(b)
    assert ta.keys() == tb.keys() and ta
    return max(float((ta[k].double() - tb[k].double()).abs().max()) for k in ta)


def _history(tmp_path: pathlib.Path, name: str, key: str) -> list[tuple[int, float]]:
    client = client_for(tmp_path)
    runs = trial_runs(client, name)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED", [(r.info.status, r.data.tags) for r in runs]
    return [(m.step, m.value) for m in client.get_metric_history(runs[0].info.run_id, key)]


def _curve_diff(a: list[tuple[int, float]], b: list[tuple[int, float]]) -> float:
    assert [s for s, _ in a] == [s for s, _ in b] and a, (a, b)
    return max(abs(x - y) for (_, x), (_, y) in zip(a, b))


def test_rank_shards_of_the_flow_draws_make_up_the_one_process_draw():
    """Fast: what each of 2 ranks draws (t, noise, label dropout) is its rows of the 1-process draw, exactly."""
    from trainers.model.flow import RectifiedFlow
    from trainers.training.step_rules import step_generator

    flow = RectifiedFlow(label_drop=0.5, num_classes=10)
    x, y = torch.randn(8, 3, 4, 4), torch.arange(8)
    seen = {}

    def model(z, t, y_in):  # records what the network sees
        seen.setdefault("z", []).append(z), seen.setdefault("y", []).append(y_in)
        return torch.zeros_like(z)

    whole, stats = flow.loss(model, x, y, generator=step_generator(3, 0, 5, 0, torch.device("cpu")))
    parts = [flow.loss(model, x[r::2], y[r::2], generator=step_generator(3, 0, 5, 0, torch.device("cpu")),
                       shard=(r, 2)) for r in (0, 1)]
    z_whole, z0, z1 = seen["z"]
    assert torch.equal(z0, z_whole[0::2]) and torch.equal(z1, z_whole[1::2])
    assert torch.equal(seen["y"][1], seen["y"][0][0::2]) and torch.equal(seen["y"][2], seen["y"][0][1::2])
    assert torch.equal(parts[0][1]["t"], stats["t"][0::2]) and torch.equal(parts[1][1]["t"], stats["t"][1::2])
    assert (parts[0][0] + parts[1][0]) / 2 == pytest.approx(float(whole), rel=1e-6)


@pytest.mark.slow
def test_two_workers_train_the_one_worker_stream_and_resume_to_the_same_end(tmp_path):
    for name, workers in (("w1", 1), ("w2", 2)):
        out = run_cli(["sweep", str(_spec(tmp_path, name, workers)), "--num-cpus", "2"], tmp_path)
        assert f"sweep '{name}': 1 trials (0 failed)" in out, out

    # the 2-worker sweep again, its driver and Ray SIGKILLed once the first checkpoint is persisted, then --resume
    spec = _spec(tmp_path, "w2kill", 2)
    proc = start_cli(["sweep", str(spec), "--num-cpus", "2"], tmp_path, tmp_path / "w2kill-first.log")
    train_dir = tmp_path / "ray_results" / "w2kill" / "train"
    try:
        wait_for(lambda: any(train_dir.glob("*/checkpoint_000000000640/checkpoint.pt")), 900, proc,
                 "the first checkpoint of the 2-worker trial")
    finally:
        kill_group(proc)
    assert not any(train_dir.glob(f"*/checkpoint_{TOTAL:012d}")), "the trial ended before the kill: nothing resumed"
    # kept for the last check: the Train run keeps only its latest 2 checkpoints
    first = load_checkpoint(sorted(train_dir.glob("*/checkpoint_000000000640/checkpoint.pt"))[0])
    resumed = run_cli(["sweep", str(spec), "--resume", "--num-cpus", "2"], tmp_path)
    assert "sweep 'w2kill': 1 trials (0 failed)" in resumed, resumed

    w1, w2, w2kill = (_final_state(tmp_path, n) for n in ("w1", "w2", "w2kill"))
    figures = {
        "weights_w1_vs_w2": _max_diff(w1["model"], w2["model"]),
        "ema_w1_vs_w2": _max_diff(w1["ema"], w2["ema"]),
        "weights_w2_vs_w2_resumed": _max_diff(w2["model"], w2kill["model"]),
        "ema_w2_vs_w2_resumed": _max_diff(w2["ema"], w2kill["ema"]),
        "train_loss_w1_vs_w2": _curve_diff(_history(tmp_path, "w1", "train/loss"),
                                           _history(tmp_path, "w2", "train/loss")),
        "denoise_loss_w1_vs_w2": _curve_diff(_history(tmp_path, "w1", "eval/denoise_loss"),
                                             _history(tmp_path, "w2", "eval/denoise_loss")),
        "denoise_loss_w2_vs_w2_resumed": _curve_diff(_history(tmp_path, "w2", "eval/denoise_loss"),
                                                     _history(tmp_path, "w2kill", "eval/denoise_loss")),
    }
    print("DDP equivalence (max abs differences):", json.dumps(figures, indent=2))
    assert [s for s, _ in _history(tmp_path, "w2", "train/loss")] == list(range(320, TOTAL + 1, 320))
    assert w1["images_seen"] == w2["images_seen"] == w2kill["images_seen"] == TOTAL
    assert w1["step"] == w2["step"] == w2kill["step"] == TOTAL // 32  # same global batch: same number of steps
    for key, value in figures.items():
        assert value <= (WEIGHT_TOL if key.startswith(("weights", "ema")) else LOSS_TOL), (key, figures)
    # the weights did move (a vacuous pass would compare two untrained models)
    assert _max_diff(first["model"], w2kill["model"]) > 100 * WEIGHT_TOL
