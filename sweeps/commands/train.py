"""`specforce train` without Ray: one process, so it may write MLflow directly (`specforce eval`: evaluate.py).

    specforce train sweeps/configs/tiny_train.yaml --out runs/tiny          # logs to ./mlflow.db, experiment "train"
    specforce train sweeps/configs/tiny_train.yaml --dry-run --set model.patch_size=8   # CPU, seconds: checks only

`train_command` is the command (sweeps/cli.py parses its flags); `preflight_train` refuses what a run would trip over
before it writes anything; `MlflowHooks` logs the run through the sweeps' own writer (sweeps/mlflow_writer.py).
"""
from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import Any

import specforce_contracts as C
from trainers.training.config import TrainConfig
from trainers.training.loop import Hooks, Trainer, TrainingRun


class MlflowHooks(Hooks):
    """Single-process logging through the same writer as a sweep (sweeps/mlflow_writer.py): the trial record at start
    (params + config/record.json), metrics as they come (step = images), artifacts as written."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str):
        from sweeps import tracking
        from sweeps.mlflow_writer import RunWriter

        self.client = tracking.prepare_store(tracking_uri)
        exp_id = tracking.get_or_create_experiment(self.client, experiment)
        tags = {C.ROLE_TAG: C.ROLE_TRAIN, C.RUN_NAME_TAG: run_name}
        # a rerun of an interrupted train continues its run (the resumed loop re-reports steps after its checkpoint,
        # which the writer skips); a rerun after success starts a new one
        self.writer = RunWriter.open(self.client, exp_id, match=tags, tags=tags, run_name=run_name,
                                     reopen_finished=False)
        self.run_id = self.writer.run_id
        print(f"MLflow: {tracking_uri} experiment {experiment!r} run {self.run_id}", flush=True)

    def on_start(self, run: TrainingRun) -> None:
        from trainers.training.record import trial_record

        self.writer.log_record(trial_record(run))

    def on_metrics(self, images: int, metrics: dict[str, float]) -> None:
        super().on_metrics(images, metrics)
        self.writer.log_metrics(images, metrics)

    def on_artifact(self, path: pathlib.Path, artifact_dir: str) -> None:
        self.writer.log_artifact(str(path), artifact_dir)

    def on_end(self, run: TrainingRun, final_metrics: dict[str, float]) -> None:
        self.writer.log_text((run.out_dir / C.RUN_CONFIG_FILE).read_text(), C.ARTIFACT_RESOLVED_CONFIG)
        self.writer.set_provenance(run.provenance)
        self.writer.end(C.STATUS_COMPLETED)

    def fail(self) -> None:
        self.writer.end(C.STATUS_FAILED, "FAILED")


def preflight_train(cfg: TrainConfig, out_dir: pathlib.Path, *, tracking_uri: str | None, experiment: str,
                    run_name: str | None = None, dry_run: bool = False) -> str | None:
    """Everything `specforce train` can refuse, refused before it writes anything (no --out folder, no MLflow store
    or run): output folder, a checkpoint there from another config, device, data (indexed, images verified),
    Inception weights, tracking URI and names. Returns the absolute tracking URI (None for --no-mlflow)."""
    from sweeps.preflight import check_inception_weights, check_out_dir, check_train_out
    from trainers.training.environment import check_environment

    check_out_dir(out_dir)
    check_train_out(cfg, out_dir)
    uri = None
    if tracking_uri != "none":
        from sweeps import tracking
        from sweeps.spec import validate_name

        validate_name(experiment, "--experiment")
        name = run_name or out_dir.absolute().name
        if "'" in name or "`" in name:  # it is matched in an MLflow filter string to find a rerun's run
            from sweeps.errors import UserError

            raise UserError("--run-name" if run_name else "--out", "the MLflow run name may not contain quotes", name)
        uri = tracking.check_tracking_uri(tracking_uri, creates_store=True)
    t0 = time.perf_counter()
    check_environment(cfg)
    if dry_run:
        from sweeps.preflight import raw_folder_note

        note = raw_folder_note(cfg, time.perf_counter() - t0)
        if note:
            print(note, file=sys.stderr, flush=True)
    if "fid" in cfg.eval.metrics or "is" in cfg.eval.metrics:
        check_inception_weights(cfg, dry_run=dry_run)
    return uri


def train_with_mlflow(cfg: TrainConfig, out_dir: pathlib.Path, *, tracking_uri: str | None, experiment: str,
                      run_name: str | None) -> dict[str, float]:
    uri = preflight_train(cfg, out_dir, tracking_uri=tracking_uri, experiment=experiment, run_name=run_name)
    hooks = None
    try:
        if uri is None:
            return Trainer(cfg, out_dir).run()
        hooks = MlflowHooks(uri, experiment, run_name or out_dir.absolute().name)
        return Trainer(cfg, out_dir, hooks).run()
    except BaseException as err:
        if hooks is not None:
            hooks.fail()
        marked = f"; MLflow run {hooks.run_id} marked FAILED" if hooks is not None else ""
        if (out_dir / C.RUN_CHECKPOINT_FILE).is_file():
            where, then = f"partial output in {out_dir}", "resume from its last checkpoint"
        elif out_dir.exists():
            where, then = f"partial output in {out_dir} (no checkpoint yet)", "start over"
        else:
            where, then = f"nothing was written to {out_dir}", "start over"
        print(f"train stopped ({type(err).__name__}): {where}{marked}; rerun the same command to {then}",
              file=sys.stderr, flush=True)
        raise


def train_command(config: str, out_dir: pathlib.Path, *, sets: list[str], dry_run: bool, tracking_uri: str | None,
                  experiment: str, run_name: str | None) -> int:
    """`specforce train CONFIG --out OUT [--set K=V ...] [--dry-run]`: the metrics as JSON on stdout; a dry run prints
    the resolved config after the same checks as a real run, so "valid" means the run will start."""
    from trainers.training.config import dump_yaml, load_config

    cfg = load_config(config, dict(parse_set(s) for s in sets))
    if dry_run:
        preflight_train(cfg, out_dir, tracking_uri=tracking_uri, experiment=experiment, run_name=run_name,
                        dry_run=True)
        print(dump_yaml(cfg), end="")
        model = cfg.model.target or cfg.model.preset  # a plug-in model is named by its builder
        print(f"# valid: would train {model} on {cfg.data.name} for {cfg.optim.total_images:,} images "
              f"-> {out_dir}", file=sys.stderr)
        return 0
    metrics = train_with_mlflow(cfg, out_dir, tracking_uri=tracking_uri, experiment=experiment, run_name=run_name)
    print(json.dumps(metrics, indent=2))
    return 0


def parse_set(text: str) -> tuple[str, Any]:
    """One `--set KEY=VALUE`: the dotted key and the value read as YAML (`8`, `true`, `[0.9, 0.95]`)."""
    import yaml

    from trainers.training.config import ConfigError

    if "=" not in text:
        raise ConfigError(f"--set: expects KEY=VALUE, e.g. model.patch_size=8 (got {text!r})")
    key, value = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set: the key before '=' is empty (got {text!r})")
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key.strip()}: the value is not valid YAML ({' '.join(str(err).split())}) "
                          f"(got {value!r})") from None
