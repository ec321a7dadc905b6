"""End-to-end sweeps on a real embedded Ray cluster, recorded in a real sqlite MLflow store.

Fast suite: a 4-trial grid run concurrently (one MLflow writer, full layout check) and dry-run / validation errors.
Slow suite (`pytest -m slow`): a Ray Train worker SIGKILLed mid-trial, and the sweep driver SIGKILLed mid-sweep
followed by `--resume`.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal

import pytest

from proc_helpers import pids_with
from sweep_helpers import (SMOKE, client_for, kill_group, run_cli, start_cli, sweep_runs, trial_runs, wait_for,
                           write_spec)

CONTRACT_PARAMS = ("model.patch_size", "model.preset", "spectral.enabled", "spectral.schedule", "spectral.alpha",
                   "spectral.c_min", "spectral.kappa", "data.name", "data.image_size", "seed")


def _steps(client, run_id, key):
    return [m.step for m in client.get_metric_history(run_id, key)]


def test_dry_run_lists_every_trial_and_bad_spec_fails_before_starting(tmp_path):
    out = run_cli(["sweep", str(SMOKE), "--dry-run"], tmp_path, timeout=120)
    assert "valid spec 'smoke'" in out and out.count("grid     ") == 2
    bad = write_spec(tmp_path / "bad.yaml", grid={"model.patch_size": [7]})
    log = tmp_path / "bad.log"
    proc = start_cli(["sweep", str(bad)], tmp_path, log)
    assert proc.wait(timeout=120) == 2
    assert "patch size 7 does not divide data.image_size 32" in log.read_text()
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


def test_four_concurrent_trials_full_mlflow_layout(tmp_path):
    spec = write_spec(tmp_path / "four.yaml", name="four", max_concurrent_trials=4,
                      grid={"model.patch_size": [8, 4], "spectral.enabled": [False, True]},
                      base__optim={"batch_size": 32, "lr": 1e-3, "total_images": 1600, "ema_decays": [0.99]},
                      base__eval={"every_images": 0, "num_samples": 64, "batch_size": 64,
                                  "metrics": ["fd_pixel", "spectrum"], "denoise_batch": 32, "denoise_t_points": 10,
                                  "grid_size": 4})
    out = run_cli(["sweep", str(spec), "--num-cpus", "4"], tmp_path)
    assert "database is locked" not in out
    assert "4 trials (0 failed)" in out
    # the quiet display as a log or pipe gets it: a line per evaluation and per finished trial, Ray's and
    # the workers' output in the log file named at the start, the rank-deficient covariance warning once
    assert len(out.splitlines()) <= 20 and len(out) < 5000, out
    for noise in ("TrainingReport", "PreemptionWatcher", "RayTrainWorker", "Configuration for experiment"):
        assert noise not in out, noise
    assert out.count("warning: only 64 samples for 1024-dimensional features") == 1, out
    assert re.search(r"^\[grid\] trial p4-sf1-\w+ finished: eval/denoise_loss=[\d.]+ \(\d/4 done", out, re.M), out
    log = pathlib.Path(re.search(r"logs of Ray and its workers: (\S+\.log)", out)[1])
    assert log.parent == tmp_path / "ray_results" / "four" / "logs"
    assert log.read_text().count("Reporting training result") == 4  # one evaluation per trial, every one logged
    client = client_for(tmp_path)
    parents = sweep_runs(client, "four")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    runs = trial_runs(client, "four")
    assert len(runs) == 4
    arms = sorted((r.data.params["model.patch_size"], r.data.params["spectral.enabled"]) for r in runs)
    assert arms == [("4", "False"), ("4", "True"), ("8", "False"), ("8", "True")]
    for run in runs:
        rid = run.info.run_id
        assert run.info.status == "FINISHED", run.info
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["specforce.status"] == "completed"
        # one name everywhere (sweeps/trial_identity.py): the MLflow run, its trial-id tag, the Ray Train run folder
        trial_id = run.data.tags["specforce.trial_id"]
        assert run.info.run_name == trial_id
        assert (tmp_path / "ray_results" / "four" / "train" / f"four-{trial_id}").is_dir(), trial_id
        for key in CONTRACT_PARAMS:
            assert key in run.data.params, key
        assert run.data.params["model.tokens"] in ("16", "64")
        assert float(run.data.params["data.spectrum_alpha"]) == pytest.approx(2.0, abs=0.3)
        steps = _steps(client, rid, "train/loss")
        assert steps == sorted(set(steps)) and steps[-1] == 1600  # step = images seen, each logged once
        metrics = run.data.metrics
        for key in ("eval/fd_pixel", "eval/fd_pixel_floor", "eval/denoise_loss", "eval/denoise_loss_t0.0-0.2",
                    "eval/spec_err_low", "eval/spec_err_high", "train/images_per_s"):
            assert key in metrics and metrics[key] == metrics[key], key
        assert _steps(client, rid, "eval/fd_pixel") == [1600]
        provenance = json.loads(run.data.tags["specforce.provenance"])
        assert provenance["fd_pixel"]["num_samples"] == 64
        files = {a.path for d in ("samples", "config", "checkpoints", "eval")
                 for a in client.list_artifacts(rid, d)}
        assert {"samples/final.png", "config/resolved.yaml", "checkpoints/ema.pt"} <= files, files
        if run.data.params["spectral.enabled"] == "True":
            assert [a.path for a in client.list_artifacts(rid, "spectral")] == ["spectral/mask.png"]


def _train_worker_pids(session: int) -> list[int]:
    pids = []
    for pid in pids_with("RayTrainWorker"):
        try:
            if os.getsid(pid) == session:
                pids.append(pid)
        except ProcessLookupError:
            pass
    return pids


@pytest.mark.slow
def test_worker_killed_mid_trial_resumes_from_checkpoint(tmp_path):
    spec = write_spec(tmp_path / "fault.yaml", name="fault", grid={"spectral.enabled": [True]},
                      base__optim={"batch_size": 32, "lr": 1e-3, "total_images": 6400, "ema_decays": [0.99]},
                      base__eval={"every_images": 1600, "num_samples": 64, "batch_size": 64,
                                  "metrics": ["fd_pixel"], "denoise_batch": 32, "denoise_t_points": 10,
                                  "grid_size": 4})
    log = tmp_path / "fault.log"
    proc = start_cli(["sweep", str(spec)], tmp_path, log)
    try:
        train_dir = tmp_path / "ray_results" / "fault" / "train"
        wait_for(lambda: any(train_dir.glob("*/checkpoint_000000001600")), 600, proc, "first checkpoint")
        pids = _train_worker_pids(proc.pid)
        assert pids, "no RayTrainWorker process found in the sweep's session"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        kill_group(proc)
    text = log.read_text()
    assert "1 trials (0 failed)" in text
    client = client_for(tmp_path)
    runs = trial_runs(client, "fault")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    rid = runs[0].info.run_id
    steps = _steps(client, rid, "train/loss")
    assert steps == sorted(set(steps)) and steps[-1] == 6400, steps
    assert _steps(client, rid, "eval/denoise_loss") == [1600, 3200, 4800, 6400]


@pytest.mark.slow
def test_driver_killed_mid_sweep_then_resume_runs_each_trial_once(tmp_path):
    spec = write_spec(tmp_path / "crash.yaml", name="crash", max_concurrent_trials=2,
                      grid={"model.patch_size": [8, 4], "spectral.enabled": [False, True]},
                      base__optim={"batch_size": 32, "lr": 1e-3, "total_images": 3200, "ema_decays": [0.99]})
    log = tmp_path / "first.log"
    proc = start_cli(["sweep", str(spec)], tmp_path, log)
    client = client_for(tmp_path)

    def one_finished():
        try:
            return any(r.info.status == "FINISHED" for r in trial_runs(client, "crash"))
        except Exception:  # noqa: BLE001 - the store may not exist yet
            return False

    try:
        wait_for(one_finished, 900, proc, "a finished trial")
    finally:
        kill_group(proc)  # the driver and the embedded Ray it started, without any cleanup
    finished_before = {r.data.tags["specforce.trial_id"] for r in trial_runs(client, "crash")
                       if r.info.status == "FINISHED"}
    assert 0 < len(finished_before) < 4
    out = run_cli(["sweep", str(spec), "--resume"], tmp_path)
    runs = trial_runs(client, "crash")
    assert len(runs) == 4, [r.data.tags for r in runs]  # no duplicated MLflow runs
    assert len(sweep_runs(client, "crash")) == 1  # the resumed sweep continues its parent run
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = _steps(client, run.info.run_id, "train/loss")
        assert steps == sorted(set(steps)) and steps[-1] == 3200
    # completed trials are not entered again (MLflow's record decides, not Tune's saved state): neither trained nor
    # finished a second time
    assert f"[grid] {len(finished_before)} of 4 trial(s) already completed in MLflow: not rerun" in out
    assert f"[grid] {4 - len(finished_before)} trial(s)" in out and "sweep 'crash': 4 trials (0 failed)" in out
    for trial_id in finished_before:
        assert f"{trial_id} @ 1,600 images" not in out and f"trial {trial_id} finished" not in out
    assert re.search(r"p\d-sf\d-\w+ @ 1,600 images of 3,200: ", out), out  # the format the line above looks for


@pytest.mark.slow
def test_optuna_search_with_asha_and_baselines(tmp_path):
    spec = write_spec(tmp_path / "search.yaml", name="search", grid={},
                      base__optim={"batch_size": 32, "lr": 1e-3, "total_images": 1600, "ema_decays": [0.99]},
                      base__eval={"every_images": 800, "num_samples": 32, "batch_size": 32, "metrics": ["fd_pixel"],
                                  "denoise_batch": 32, "denoise_t_points": 10, "grid_size": 2},
                      search={"metric": "eval/denoise_loss", "mode": "min", "num_samples": 3, "sampler": "tpe",
                              "n_startup_trials": 2, "max_concurrent": 2,
                              "space": {"spectral.alpha": {"type": "float", "low": 0.5, "high": 4.0, "log": True},
                                        "spectral.schedule": {"type": "categorical",
                                                              "choices": ["linear", "contour", "snr"]}},
                              "scheduler": {"type": "asha", "grace_images": 800, "reduction_factor": 2},
                              "baselines": True})
    out = run_cli(["sweep", str(spec)], tmp_path)
    assert "4 trials (0 failed)" in out and "best:" in out
    runs = trial_runs(client_for(tmp_path), "search")
    assert len(runs) == 4
    searched = [r for r in runs if r.data.tags.get("specforce.search") == "optuna"]
    baselines = [r for r in runs if r.data.params["spectral.enabled"] == "False"]
    assert len(searched) == 3 and len(baselines) == 1
    for run in searched:
        assert run.data.params["spectral.enabled"] == "True"
        assert 0.5 <= float(run.data.params["spectral.alpha"]) <= 4.0
        assert run.data.params["spectral.schedule"] in ("linear", "contour", "snr")
        assert run.data.tags["specforce.status"] in ("completed", "stopped_early")
        assert run.info.status == "FINISHED"
