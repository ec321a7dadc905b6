"""The trial record of one training run: what the worker actually ran, built once from the run it set up.

`trial_record(run)` is a `specforce_contracts.TrialRecord`: the resolved config tree, the params derived from the
built model (tokens, parameters, resolved bottleneck, compression ratio), the data spectrum's power-law fit, the snr
schedule's own fit, and `SpectralForcing.describe()` of the operator inside the model (None without SF). The Ray
worker sends it with its first report (sweeps/trial.py) and `specforce train` logs it (sweeps/commands/train.py); both
log it through sweeps/mlflow_writer.py, so a run's params say what ran, not what a driver re-derived.

    python -c "from trainers.training.loop import Trainer; from trainers.training.config import config_from_dict; \\
        from trainers.training.record import trial_record; \\
        print(trial_record(Trainer(config_from_dict({'device': 'cpu', 'eval': {'metrics': []}}), '/tmp/r').setup()))"
"""
from __future__ import annotations

from typing import Any

from specforce_contracts import TrialRecord


def trial_record(run: Any) -> TrialRecord:
    """`run`: the loop's TrainingRun after setup (config, extra params and the built model)."""
    model = run.raw_model
    spectral = getattr(model, "spectral", None)
    identity = run.dataset.identity() if hasattr(run.dataset, "identity") else None
    return TrialRecord.from_run(run.cfg.model_dump(mode="json"), run.extra_params,
                                spectral.describe() if spectral is not None else None, identity)
