"""One trial, one name: the MLflow logger and both progress views identify a trial by the same rule
(sweeps/trial_identity.py), for a planned (grid/baseline) trial and for an Optuna search trial. The trainable's
Ray Train run, named after the same id, is checked end to end in tests/test_sweep_e2e.py.

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest tests/test_trial_identity.py -q     # CPU, no Ray cluster
"""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from sweep_helpers import trial_logger_in
from sweeps.trial_identity import SEARCH_FORCED, identify, trial_key

TINY = {"model": {"preset": "jit-tiny", "patch_size": 8},
        "data": {"name": "grf", "image_size": 32, "options": {"num_samples": 64}},
        "optim": {"batch_size": 16, "lr": 1e-3, "total_images": 64, "ema_decays": [0.99]},
        "sample": {"sampler": "euler", "steps": 2},
        "eval": {"metrics": [], "denoise_batch": 16, "denoise_t_points": 5, "grid_size": 2}}
PLANNED = SimpleNamespace(trial_id="tune_00000", last_result={}, error_file=None,
                          config={"plan": {"trial_id": "p8-sf1-abc123",
                                           "overrides": {"model.patch_size": 8, "spectral.enabled": True}}})
SEARCHED = SimpleNamespace(trial_id="tune_00001", last_result={}, error_file=None,
                           config={"spectral.kappa": 4.0, "optim.lr": 2e-3})
CASES = [(PLANNED, "p8-sf1-abc123", {"model.patch_size": 8, "spectral.enabled": True}),
         (SEARCHED, "tune_00001", {"spectral.kappa": 4.0, "optim.lr": 2e-3, **SEARCH_FORCED})]


@pytest.mark.parametrize("trial, key, overrides", CASES, ids=["planned", "searched"])
def test_the_rule(trial, key, overrides):
    assert identify(trial.config, trial.trial_id) == (key, overrides)
    assert trial_key(trial) == key
    # the trainable names the searched keys explicitly: the same overrides
    assert identify(trial.config, trial.trial_id, search_keys=["spectral.kappa", "optim.lr"]).overrides == \
        (overrides if trial is SEARCHED else PLANNED.config["plan"]["overrides"])


@pytest.mark.parametrize("trial, key, overrides", CASES, ids=["planned", "searched"])
def test_progress_views_and_mlflow_logger_name_the_trial_alike(trial, key, overrides, tmp_path, capsys):
    from sweeps.progress import ProgressPrinter, SweepConsole

    with SweepConsole(tmp_path / "v.log", out=io.StringIO()) as console:
        view = console.phase("grid", 1, "eval/denoise_loss")
        view.on_trial_start(0, [trial], trial)
        assert list(view.state.running) == [key]
        console.close_view()
    printer = ProgressPrinter("grid", 1, None)
    printer.on_trial_complete(0, [trial], trial)
    assert f"trial {key} finished" in capsys.readouterr().out

    client, _, parent, logger = trial_logger_in(tmp_path)
    logger.on_trial_error(0, [trial], trial)  # died before its record: the run's params are what it was asked to run
    run = client.get_run(logger.runs[key])
    assert run.data.tags["specforce.trial_id"] == key and run.info.run_name == key
    assert run.data.params == {k: str(v) for k, v in overrides.items()}
