"""Driver side: sweep specs, Ray Tune + Optuna, Ray Train trial launch, MLflow bookkeeping, the `specforce` CLI.

    specforce sweep sweeps/configs/smoke.yaml --dry-run        # CPU, seconds: the spec resolved, every trial listed

- cli.py parses `specforce ...` and dispatches; errors.py is its refusal contract; commands/ holds train, eval,
  prepare and submit; preflight.py the checks every command runs before it writes anything.
- spec.py / spec_schema.py: a sweep spec and its trial plans; fingerprint.py: what `--resume` may continue;
  adaptive.py: seed rounds until decided.
- runner.py: a sweep's phases; ray_cluster.py starts Ray, tune_setup.py sets up each phase's Tuner, trial.py (with
  train_backend.py) is one trial as a Ray Train run, trial_identity.py names a trial.
- tracking.py / mlflow_writer.py: the driver's MLflow writes; progress.py / ray_log.py: the terminal and the log file.
"""
