"""One sweep trial = one Ray Train run: a Tune function trainable that builds and fits a TorchTrainer.

This is Ray Train V2's pattern (docs/design.md §4): `Tuner(TorchTrainer(...))` raises in V2, so the Tune trial runs
`trial_trainable`, which launches a TorchTrainer named after the trial id (never a timestamp: a rerun finds the
same Train run in storage and resumes it), with `TuneReportCallback` forwarding worker reports to Tune.

Inside each worker (`worker_loop`) the plain PyTorch `trainers.training.loop.Trainer` runs with `RayReportHooks`:
- training metrics are sent with the next evaluation as a JSON history (fewer barriers, and every Tune result then
  carries the eval metrics the searcher and scheduler need); rank 0 sends every row of the run so far (its
  metrics.jsonl, part of the checkpoint), so rows whose report died with a killed driver are sent again after
  `--resume` (the MLflow logger skips steps it already has);
- each evaluation reports with a checkpoint: the run folder (checkpoint.pt, sample grids, spectra, mask picture),
  which Ray persists to the sweep's storage. After a worker failure the group restarts from that checkpoint
  (FailureConfig), and the loop resumes from its checkpoint.pt: resume is idempotent.

The MLflow side lives on the driver (sweeps/tracking.py): workers never write to the tracking store.

Start-up per trial: Ray starts about eight processes per trial (Tune's trial actor and its report queue,
the Train controller, its placement-group cleaner, a synchronization actor, the worker, a Ray Data manager and a
preemption watcher), each paying Python + Ray start-up, most of them `import ray.train` (pandas, ray.data: ~3 s of
one core) and three of them `import torch`. On 2 cores those imports, not waiting, are the overhead. The lean launch
(default) keeps Ray Train's workers, DDP, FailureConfig and checkpoints and drops the rest where it is idle:
- the Tune trial actor is reused by the next trial (`reuse_actors`, sweeps/tune_setup.py);
- no Ray Data manager when the trainer gets no datasets, and the controller never imports torch (its backend
  config is `WorkerTorchConfig`, sweeps/train_backend.py) (`lean_trainer_class`);
- no placement-group cleaner on the embedded local cluster in phases without an early-stopping scheduler
  (sweeps/tune_setup.py decides; `lean_trainer_class` says why it is safe there);
- on the embedded local cluster the preemption watcher is off and the controller polls every 0.5 s instead of 2 s
  (`LEAN_RAY_ENV`).
`SPECFORCE_TRIAL_LAUNCH=stock` restores Ray's settings (benchmarks/bench_sweep_overhead.py compares the two).

    python -m sweeps.cli sweep sweeps/configs/smoke.yaml      # runs trials through this module on local Ray
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import time
from typing import Any

from trainers.training.config import config_from_dict, config_with_overrides
from trainers.training.loop import Hooks, Trainer, TrainingRun
# what a report carries besides metrics: names shared with the driver's MLflow logger (sweeps/tracking.py)
from specforce_contracts import IMAGES_KEY, REPORT_HISTORY_KEY as HISTORY_KEY, RUN_METRICS_FILE
from specforce_contracts import REPORT_PROVENANCE_KEY as PROVENANCE_KEY, REPORT_RECORD_KEY as RECORD_KEY
from sweeps.trial_identity import identify

# benchmarks/bench_sweep_overhead.py sets this to a file: every process of a trial appends timestamped events to it
TIMELINE_ENV = "SPECFORCE_TIMELINE"
_PROCESS_MARKED: set[int] = set()

LAUNCH_ENV = "SPECFORCE_TRIAL_LAUNCH"
LAUNCH_MODES = ("lean", "stock")
# Ray Train settings for the embedded local cluster (environment of every Ray process it starts); a value the user
# exported already wins. The preemption watcher polls Ray for node drains, which one machine never has, costs one
# actor process per trial and, on CPU, logs an error line per trial; the controller's poll interval is how late a
# finished trial is noticed.
LEAN_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def launch_mode() -> str:
    """`lean` (default) or `stock` (Ray's own per-trial settings), from $SPECFORCE_TRIAL_LAUNCH."""
    value = os.environ.get(LAUNCH_ENV, "lean").strip().lower() or "lean"
    if value not in LAUNCH_MODES:
        from sweeps.errors import UserError

        raise UserError(LAUNCH_ENV, "must be 'lean' (the default) or 'stock' (Ray's own per-trial settings)", value)
    return value


def mark(trial_id: str, event: str) -> None:
    """Appends `{trial, event, t, pid}` to $SPECFORCE_TIMELINE (a no-op when unset); the first mark of a process
    also records when the process was created, so a profile sees process start-up and imports separately."""
    path = os.environ.get(TIMELINE_ENV)
    if not path:
        return
    rows = []
    pid = os.getpid()
    if pid not in _PROCESS_MARKED:
        import psutil  # a Ray dependency

        _PROCESS_MARKED.add(pid)
        rows.append({"trial": trial_id, "event": "process_created", "t": psutil.Process().create_time(), "pid": pid})
    rows.append({"trial": trial_id, "event": event, "t": time.time(), "pid": pid})
    with open(path, "a") as f:  # one short append per line: lines from concurrent processes do not interleave
        f.write("".join(json.dumps(r) + "\n" for r in rows))


class RayReportHooks(Hooks):
    """Turns loop events into `ray.train.report` calls (every rank calls report: it is a barrier). The first report
    of this worker carries the trial record (trainers/training/record.py): what the driver logs as the run's params."""

    def __init__(self, rank: int, trial_id: str = ""):
        self.rank, self.trial_id = rank, trial_id
        self.history: list[dict[str, Any]] = []
        self.latest: dict[str, float] = {}
        self.run: TrainingRun | None = None
        self.record_sent = False

    def on_start(self, run: TrainingRun) -> None:
        self.run = run
        mark(self.trial_id, f"setup_done_r{self.rank}")

    def on_metrics(self, images: int, metrics: dict[str, float]) -> None:
        # no print here: the driver prints progress once per evaluation (workers' stdout is forwarded and noisy)
        self.history.append({IMAGES_KEY: images, **metrics})
        self.latest.update(metrics)

    def on_checkpoint(self, images: int, path: pathlib.Path, metrics: dict[str, float]) -> None:
        import ray.train

        assert self.run is not None
        history = self.history
        log_file = path.parent / RUN_METRICS_FILE  # rank 0's every metrics row, part of the checkpointed run folder
        if self.rank == 0 and log_file.is_file():
            # every row so far, not only those since the last report: if the driver dies after Ray persisted this
            # checkpoint but before it logged this report, the resumed trial restarts from the checkpoint and would
            # never send these rows again (lost train/* steps, seen in the driver-kill test); the MLflow logger skips
            # steps it already has, so resending is idempotent
            history = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
        payload: dict[str, Any] = {IMAGES_KEY: images, **self.latest,
                                   HISTORY_KEY: json.dumps(history),
                                   PROVENANCE_KEY: json.dumps(self.run.provenance, default=str)}
        if not self.record_sent:  # once per worker process: a restarted worker (resume) sends it again, harmlessly
            from trainers.training.record import trial_record

            payload[RECORD_KEY] = trial_record(self.run).to_json()
        checkpoint = ray.train.Checkpoint.from_directory(str(path.parent)) if self.rank == 0 else None
        mark(self.trial_id, f"report_r{self.rank}")
        ray.train.report(payload, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{images:012d}",
                         delete_local_checkpoint_after_upload=False)
        mark(self.trial_id, f"reported_r{self.rank}")
        self.history = []
        self.record_sent = True


def worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker (torch.distributed already initialised by TorchTrainer)."""
    import ray.train

    cfg = config_from_dict(loop_config["config"])
    rank = ray.train.get_context().get_world_rank()
    mark(loop_config["trial_id"], f"loop_start_r{rank}")
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix=f"specforce-{loop_config['trial_id']}-r{rank}-"))
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # restarted after a failure: continue from the latest registered checkpoint
        with checkpoint.as_directory() as ckpt_dir:
            shutil.copytree(ckpt_dir, out_dir, dirs_exist_ok=True)
    try:
        Trainer(cfg, out_dir, RayReportHooks(rank, loop_config["trial_id"]), cache_dir=loop_config["cache_dir"]).run()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    mark(loop_config["trial_id"], f"loop_end_r{rank}")


def lean_trainer_class(keep_pg_cleaner: bool = True):
    """TorchTrainer whose controller imports no torch and starts only the processes a trial needs.

    - no Ray Data manager when it is given no datasets (ours never are): Ray Train 2.60 adds its datasets callback to
      every run, and that callback starts a `DatasetManager` actor per worker group, importing ray.data, for nothing;
    - `WorkerTorchConfig` (sweeps/train_backend.py): the same process-group set-up on the workers, no `import torch`
      in the controller;
    - `keep_pg_cleaner=False` drops the detached `PlacementGroupCleaner` actor (its process imports ray.train,
      pandas and ray.dag: ~3 s of one core per trial). It frees a trial's placement group only when the controller
      dies while the cluster lives on; `trial_trainable` is told to drop it only on the embedded local cluster (it
      dies with the driver) in phases without an early-stopping scheduler (a Tune-stopped trial's controller is the
      case it exists for: ray#54305).
    Workers, DDP, FailureConfig and checkpoints are TorchTrainer's own.
    """
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from sweeps.train_backend import WorkerTorchConfig

    drop = (DatasetsCallback,) if keep_pg_cleaner else (DatasetsCallback, PlacementGroupCleanerCallback)

    class LeanTorchTrainer(TorchTrainer):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("torch_config", WorkerTorchConfig())
            super().__init__(*args, **kwargs)

        def _create_default_callbacks(self):
            callbacks = super()._create_default_callbacks()
            if self.datasets:
                return callbacks
            return [c for c in callbacks if not isinstance(c, drop)]

    return LeanTorchTrainer


def trial_trainable(config: dict[str, Any], *, base: dict[str, Any], resources: dict[str, Any], storage: str,
                    sweep_name: str, max_failures: int, cache_dir: str, search_keys: tuple[str, ...] = (),
                    lean: bool = True, keep_pg_cleaner: bool = True) -> None:
    """The Tune function trainable. `config` holds either a grid plan or the searcher's suggestion."""
    import ray
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    # a grid plan, or an Optuna suggestion: the searched keys, always with SF on (baselines run as their own grid)
    trial_id, overrides = identify(config, ray.tune.get_context().get_trial_id(), search_keys)
    mark(trial_id, "trainable_start")
    cfg = config_with_overrides(base, overrides)
    use_gpu = bool(resources["use_gpu"])
    per_worker = {"CPU": resources["cpus_per_worker"]}
    if use_gpu:
        per_worker["GPU"] = resources["gpus_per_worker"] or 1
    trainer = (lean_trainer_class(keep_pg_cleaner) if lean else TorchTrainer)(
        worker_loop,
        train_loop_config={"config": cfg.model_dump(mode="json"), "trial_id": trial_id, "cache_dir": cache_dir},
        scaling_config=ray.train.ScalingConfig(num_workers=resources["workers"], use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=f"{sweep_name}-{trial_id}",  # stable: a resumed sweep finds this run and its checkpoints
            storage_path=os.path.join(storage, sweep_name, "train"),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
            # Train's INFO lines repeat every report's full metrics; the driver prints a one-line summary instead
            logging_config=ray.LoggingConfig(log_level="WARNING"),
        ),
    )
    mark(trial_id, "fit_start")
    trainer.fit()
    mark(trial_id, "fit_end")
