"""Which trial a Tune trial is, and what it was asked to run: the one rule every part of a sweep applies.

A grid or baseline trial carries its plan in its Tune config, `{"plan": {"trial_id": ..., "overrides": {...}}}` (built
by sweeps/spec.py; the id hashes the overrides, so a rerun finds the same trial). A search trial carries the Optuna
searcher's suggestion (the searched dotted keys) and is known by its Tune trial id; it always runs with Spectral
Forcing on, because its no-SF arms are the spec's `baselines`, a grid phase of their own.

The trainable (sweeps/trial.py: the Ray Train run's name), the MLflow logger (sweeps/tracking.py: the child run's
trial-id tag) and the progress views (sweeps/progress.py) all ask `identify`, so one trial has one name everywhere.

    .venv/bin/python -c "from sweeps.trial_identity import identify; print(identify({'spectral.kappa': 4.0}, 't_1'))"
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple

# what every search trial runs on top of the searcher's suggestion
SEARCH_FORCED: dict[str, Any] = {"spectral.enabled": True}


class TrialIdentity(NamedTuple):
    trial_id: str
    overrides: dict[str, Any]  # dotted config keys -> values, applied to the spec's base config


def identify(config: Mapping[str, Any], tune_trial_id: str,
             search_keys: Iterable[str] | None = None) -> TrialIdentity:
    """The trial id and overrides of a trial whose Tune config is `config` and whose Tune id is `tune_trial_id`.

    A planned trial (grid, baselines) is its plan. A search trial is its Tune id, and its overrides are the searched
    keys (`search_keys`; without them, every dotted key and `seed` of the config, which is what a suggestion holds)
    with SEARCH_FORCED on top."""
    plan = config.get("plan")
    if plan:
        return TrialIdentity(plan["trial_id"], dict(plan["overrides"]))
    keys = list(search_keys) if search_keys is not None else [k for k in config if "." in k or k == "seed"]
    return TrialIdentity(tune_trial_id, {**{key: config[key] for key in keys}, **SEARCH_FORCED})


def trial_key(trial) -> str:
    """The trial id of a Tune `Trial` object, as the driver's callbacks receive it."""
    return identify(trial.config, trial.trial_id).trial_id
