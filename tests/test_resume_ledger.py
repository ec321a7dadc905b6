"""What `--resume` does not run again: grid trials whose MLflow run completed (sweeps.tracking.completed_trial_ids),
dropped from the phase's plans (sweeps.runner.plans_left). Real sqlite MLflow store, no Ray cluster.

    .venv/bin/python -m pytest tests/test_resume_ledger.py -q
"""
from __future__ import annotations

import specforce_contracts as C
from sweep_helpers import grid_trial as _trial, trial_logger_in
from sweeps.runner import plans_left
from sweeps.spec import spec_from_dict
from sweeps.tracking import MlflowTrialLogger, completed_trial_ids


def test_only_runs_that_completed_their_training_in_this_sweep_count(tmp_path):
    client, exp, parent, logger = trial_logger_in(tmp_path)
    logger._writer(_trial("done")).end(C.STATUS_COMPLETED)
    logger._writer(_trial("early")).end(C.STATUS_STOPPED_EARLY)  # an ASHA stop did not finish its training
    logger.on_trial_error(0, [], _trial("failed"))
    logger.on_trial_start(0, [], _trial("running"))
    logger.on_trial_start(0, [], _trial("killed"))
    logger._writer(_trial("running")).end(C.STATUS_COMPLETED)
    client.update_run(logger.runs["running"], status="RUNNING")  # reopened by a resumed sweep: not done any more
    logger.close_all("KILLED")  # what the driver does when interrupted: "killed" is marked KILLED
    other_parent = client.create_run(exp).info.run_id  # another sweep in the same experiment
    MlflowTrialLogger(logger.tracking_uri, exp, other_parent)._writer(_trial("elsewhere")).end(C.STATUS_COMPLETED)

    statuses = {key: client.get_run(rid).info.status for key, rid in logger.runs.items()}
    assert statuses == {"done": "FINISHED", "early": "FINISHED", "failed": "FAILED", "running": "KILLED",
                        "killed": "KILLED"}
    assert completed_trial_ids(client, exp, parent) == {"done"}
    assert completed_trial_ids(client, exp, other_parent) == {"elsewhere"}


def test_every_page_of_the_store_is_read(tmp_path):
    client, exp, parent, logger = trial_logger_in(tmp_path)
    for i in range(5):
        logger._writer(_trial(f"t{i}")).end(C.STATUS_COMPLETED)
    assert completed_trial_ids(client, exp, parent, page_size=2) == {f"t{i}" for i in range(5)}


def test_plans_left_drops_completed_trials_and_keeps_the_order():
    from sweeps.adaptive import round_param_space

    spec = spec_from_dict({"name": "a", "base": {"model": {"preset": "jit-tiny", "patch_size": 8},
                                                 "data": {"name": "grf", "image_size": 32}},
                           "grid": {"model.patch_size": [8, 4], "spectral.enabled": [False, True]},
                           "seeds": {"start": 2, "step": 1, "max": 3}})
    space = round_param_space(spec, 1)
    ids = [p["trial_id"] for p in space["plan"]["grid_search"]]
    assert len(ids) == 8 == len(set(ids))
    left, dropped = plans_left(space, {ids[1], ids[4], "not-in-this-phase"})
    assert dropped == 2
    assert [p["trial_id"] for p in left["plan"]["grid_search"]] == [i for k, i in enumerate(ids) if k not in (1, 4)]
    none_left, dropped = plans_left(space, set(ids))
    assert dropped == 8 and none_left["plan"]["grid_search"] == []
