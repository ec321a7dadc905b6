"""`specforce train` and `specforce eval` without Ray: one process, so it may write MLflow directly.

    specforce train sweeps/configs/tiny_train.yaml --out runs/tiny          # logs to ./mlflow.db, experiment "train"
    specforce eval runs/tiny/ema.pt --num-samples 500
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import torch

from trainers.config import TrainConfig, config_from_dict
from trainers.loop import Hooks, Trainer, TrainingRun


class MlflowHooks(Hooks):
    """Single-process logging: params at start, metrics as they come (step = images), artifacts as written."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str):
        from sweeps import tracking

        self.client = tracking.prepare_store(tracking_uri)
        self.logged: dict[str, int] = {}
        exp_id = tracking.get_or_create_experiment(self.client, experiment)
        existing = tracking.find_run(self.client, exp_id, **{"specforce.role": "train", "specforce.run_name": run_name})
        if existing is not None and existing.info.status != "FINISHED":  # rerun of an interrupted train: same run
            self.run_id = existing.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            for key in existing.data.metrics:  # the resumed loop re-reports steps after its checkpoint
                self.logged[key] = max(m.step for m in self.client.get_metric_history(self.run_id, key))
        else:
            self.run_id = self.client.create_run(exp_id, run_name=run_name, tags={
                "specforce.role": "train", "specforce.run_name": run_name}).info.run_id
        print(f"MLflow: {tracking_uri} experiment {experiment!r} run {self.run_id}", flush=True)

    def on_start(self, run: TrainingRun) -> None:
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        params = {**run.cfg.flat(), **run.extra_params}
        from sweeps.tracking import param_value

        new = [Param(k, param_value(v, k)) for k, v in params.items() if k not in have]
        if new:
            self.client.log_batch(self.run_id, params=new)

    def on_metrics(self, images: int, metrics: dict[str, float]) -> None:
        super().on_metrics(images, metrics)
        from mlflow.entities import Metric
        import time

        now = int(time.time() * 1000)
        new = [Metric(k, float(v), now, images) for k, v in metrics.items() if images > self.logged.get(k, -1)]
        if new:
            self.client.log_batch(self.run_id, metrics=new)

    def on_artifact(self, path: pathlib.Path, artifact_dir: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def on_end(self, run: TrainingRun, final_metrics: dict[str, float]) -> None:
        self.client.log_text(self.run_id, (run.out_dir / "config.yaml").read_text(), "config/resolved.yaml")
        if run.provenance:
            self.client.set_tag(self.run_id, "specforce.provenance", json.dumps(run.provenance, default=str))
        self.client.set_tag(self.run_id, "specforce.status", "completed")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self) -> None:
        self.client.set_tag(self.run_id, "specforce.status", "failed")
        self.client.set_terminated(self.run_id, "FAILED")


def train_with_mlflow(cfg: TrainConfig, out_dir: pathlib.Path, *, tracking_uri: str | None, experiment: str,
                      run_name: str | None) -> dict[str, float]:
    if tracking_uri == "none":
        return Trainer(cfg, out_dir).run()
    from sweeps import tracking
    from sweeps.spec import validate_name

    validate_name(experiment, "--experiment")
    hooks = MlflowHooks(tracking.absolute_tracking_uri(tracking_uri), experiment, run_name or out_dir.name)
    try:
        return Trainer(cfg, out_dir, hooks).run()
    except BaseException:
        hooks.fail()
        raise


def evaluate_checkpoint(path: pathlib.Path, *, num_samples: int | None = None, metrics: list[str] | None = None,
                        inception_weights: str | None = None) -> dict[str, Any]:
    """Sample from a saved run's weights and evaluate them with the same code the training loop uses."""
    from trainers.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    tree = dict(state["config"])
    ev = dict(tree.get("eval", {}))
    if num_samples:
        ev["num_samples"] = num_samples
    if metrics:
        ev["metrics"] = metrics
    if inception_weights:
        ev["inception_weights"] = inception_weights
    ev["denoise_loss"] = True
    tree["eval"] = ev
    cfg = config_from_dict(tree)
    trainer = Trainer(cfg, path.parent / f"eval-{path.stem}", resume_from=pathlib.Path("/nonexistent"),
                      cache_dir=path.parent.parent / ".cache")
    run = trainer.setup()
    weights = state["model"] if "ema" not in state else None
    if weights is not None:  # ema.pt: the sampling weights themselves; make EMA a copy of them
        run.raw_model.load_state_dict(weights)
        run.ema = _FrozenEMA(run.raw_model)
    else:
        run.raw_model.load_state_dict(state["model"])
        run.ema.load_state_dict(state["ema"])
    with torch.no_grad():
        out = trainer.evaluate(run, final=True)
    return {"images_seen": int(state["images_seen"]), **out, "provenance": run.provenance}


class _FrozenEMA:
    """EMA stand-in for weights that already are EMA weights: swapping is a no-op."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def swapped(self, model: torch.nn.Module, index: int = 0):
        import contextlib

        return contextlib.nullcontext(model)
