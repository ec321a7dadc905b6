"""Run a sweep spec on Ray: its phases of grid trials, baselines and the Optuna search, each trial a Ray Train run.

    specforce sweep sweeps/configs/smoke.yaml                 # embedded local Ray, ./mlflow.db, ./ray_results
    specforce sweep sweeps/configs/smoke.yaml --resume        # after a driver crash: finished trials are not rerun
    python -m sweeps.runner sweeps/configs/smoke.yaml         # the same without the CLI

A sweep has up to three phases, each its own Tune experiment under <storage>/<name>/: `grid` (the ablation grid),
`baselines` (the no-SF arms a search needs for pairing) and `search` (Optuna). All write to one MLflow parent run.
A spec with adaptive `seeds:` runs its grid as rounds `grid-r1`, `grid-r2`, ... until decided (sweeps/adaptive.py).

This module holds the phases and what happens around them (storage checks, MLflow parent run, interrupts, the
outcome). Ray's start-up is sweeps/ray_cluster.py's, each phase's Tune set-up sweeps/tune_setup.py's, the terminal
view sweeps/progress.py's.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import specforce_contracts as C
from sweeps.ray_cluster import init_ray, resolve_resources
from sweeps.spec import SpecError, SweepSpec, baseline_plans, grid_plans, load_spec
from sweeps.tune_setup import phase_trainable, phase_tuner, spec_total_images


@dataclass
class SweepOutcome:
    name: str
    experiment_id: str
    parent_run_id: str
    tracking_uri: str
    storage: str
    trials: int = 0
    errored: int = 0
    seconds: float = 0.0
    best: dict[str, Any] = field(default_factory=dict)


def default_cache_dir() -> str:
    return os.environ.get("SPECFORCE_CACHE", str(pathlib.Path.home() / ".cache" / "specforce"))


def run_sweep(spec: SweepSpec | str | pathlib.Path, *, tracking_uri: str | None = None, storage: str | None = None,
              resume: bool = False, address: str | None = None, num_cpus: int | None = None,
              verbose: bool = False) -> SweepOutcome:
    """Runs every phase of `spec`. The terminal shows one progress view per phase; Ray's, Tune's and the workers'
    output goes to `<storage>/<name>/logs/<time>.log` (sweeps/ray_log.py), also streamed when `verbose`."""
    from sweeps import tracking
    from sweeps.progress import SweepConsole
    from sweeps.ray_log import log_path_for

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    tracking_uri = tracking.absolute_tracking_uri(tracking_uri)
    if storage and "://" not in storage:
        storage = str(pathlib.Path(storage).resolve())
    storage = storage or C.default_storage()
    sweep_root = sweep_location(storage, spec.name)
    sweep_dir = pathlib.Path(sweep_root)  # only where the storage is local ("://" not in storage)
    phases = _phases(spec)
    if not resume and "://" not in storage:
        existing = [p for p, _ in phases if (sweep_dir / p).exists()]
        if existing:
            raise SpecError(f"{sweep_dir} already holds phase(s) {existing} of sweep {spec.name!r}: pass --resume to "
                            "continue it, or choose another --storage / name")
    if resume and "://" not in storage and not sweep_dir.exists():
        raise SpecError(f"--resume: nothing to resume at {sweep_dir}")
    from sweeps.fingerprint import check_or_record

    check_or_record(spec, sweep_root, resume)  # refuses --resume with an edited spec

    with SweepConsole(log_path_for(storage, spec.name), verbose=verbose) as console, _sigterm_interrupts():
        return _run_phases(spec, tracking_uri, storage, sweep_root, phases, resume, address, num_cpus, console)


_TERMINATED = threading.Event()


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM raises KeyboardInterrupt in the driver while the sweep runs, so `specforce stop` (Ray Jobs sends the
    entrypoint SIGTERM, then SIGKILL a few seconds later) and a plain `kill` mark the sweep's MLflow runs KILLED
    instead of leaving them RUNNING forever. ray.init replaces it with Ray's own (SystemExit), which _run_phases
    treats the same. Only the main thread may install signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        _TERMINATED.set()  # Tune may wrap the interrupt in its own error: the status still says KILLED
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def sweep_location(storage: str, name: str) -> str:
    """Where a sweep's Ray state lives: `<storage>/<name>`, joined as a string, because pathlib folds a storage URI's
    '//' (s3://bucket -> s3:/bucket, which pyarrow refuses: "Missing bucket name in S3 URI")."""
    return f"{storage.rstrip('/')}/{name}"


def _run_phases(spec: SweepSpec, tracking_uri: str, storage: str, sweep_root: str, phases, resume: bool,
                address: str | None, num_cpus: int | None, console) -> SweepOutcome:
    from sweeps import tracking

    t0 = time.time()
    client = tracking.prepare_store(tracking_uri)
    experiment_id = tracking.get_or_create_experiment(client, spec.name)
    parent = tracking.start_parent_run(client, experiment_id, spec.name, spec.model_dump(mode="json"), resume,
                                       run_name=f"{spec.name}-sweep")
    outcome = SweepOutcome(spec.name, experiment_id, parent, tracking_uri, storage)
    loggers: list[tracking.MlflowTrialLogger] = []
    console.print(f"sweep {spec.name!r}: MLflow {tracking_uri} (experiment {experiment_id}, parent run {parent}); "
                  f"Ray storage {sweep_root}")
    console.print(f"logs of Ray and its workers: {console.log.path}" +
                  ("" if console.verbose else " (--verbose also streams them here)"))
    try:
        init_ray(address, num_cpus)
        console.hook_ray()
        resources = resolve_resources(spec)
        from sweeps.trial import launch_mode

        common = dict(base=spec.base, resources=resources, storage=storage, sweep_name=spec.name,
                      max_failures=spec.max_failures, cache_dir=default_cache_dir(), lean=launch_mode() == "lean")
        rounds = None
        if spec.seeds is not None:  # adaptive seeds: only the rounds still needed, analysed in between
            from sweeps.adaptive import AdaptiveRounds

            rounds = AdaptiveRounds(spec, client=client, parent_run_id=parent, tracking_uri=tracking_uri,
                                    resume=resume)
        completed = tracking.completed_trial_ids(client, experiment_id, parent) if resume else set()
        own_cluster = not (address or os.environ.get("RAY_ADDRESS"))  # the embedded cluster dies with this driver
        for phase, param_space in (rounds if rounds is not None else phases):
            planned = len(param_space["plan"]["grid_search"]) if "plan" in param_space else None
            if planned is not None and completed:
                param_space, already = plans_left(param_space, completed)
                outcome.trials += already
                if already:
                    console.print(f"[{phase}] {already} of {planned} trial(s) already completed in MLflow: not rerun")
                if already == planned:
                    continue
            logger = tracking.MlflowTrialLogger(tracking_uri, experiment_id, parent,
                                                search_tag=C.SEARCH_OPTUNA if phase == "search" else None)
            loggers.append(logger)
            total = len(param_space["plan"]["grid_search"]) if planned is not None else spec.search.num_samples
            results = _run_phase(spec, phase, param_space, total, common, logger, console, sweep_root,
                                 restore=resume and planned is None, on_own_cluster=own_cluster)
            outcome.trials += len(results)
            outcome.errored += len(results.errors)
            if phase == "search" and spec.search:
                try:
                    best = results.get_best_result(spec.search.metric, spec.search.mode)
                    outcome.best = {k: best.config.get(k) for k in spec.search.space} | {
                        spec.search.metric: best.metrics.get(spec.search.metric)}
                except RuntimeError:
                    pass
        outcome.seconds = time.time() - t0
        client.log_metric(parent, C.SWEEP_SECONDS, outcome.seconds)
        client.log_metric(parent, C.SWEEP_TRIALS, outcome.trials)
        client.log_metric(parent, C.SWEEP_ERRORED, outcome.errored)
        client.set_terminated(parent, status="FINISHED" if outcome.errored == 0 else "FAILED")
        return outcome
    except BaseException as err:
        console.close_view()
        # no run is left RUNNING; an interrupt is KILLED, an error FAILED. Ctrl-C is a KeyboardInterrupt; SIGTERM
        # (`specforce stop`: Ray Jobs signals the entrypoint) is a SystemExit from the handler ray.init installs, or
        # our KeyboardInterrupt before ray.init
        interrupted = isinstance(err, (KeyboardInterrupt, SystemExit)) or _TERMINATED.is_set()
        status = "KILLED" if interrupted else "FAILED"
        for logger in loggers:
            logger.close_all(status)
        client.set_terminated(parent, status=status)
        print(f"sweep {spec.name!r} stopped ({type(err).__name__}); partial results in {sweep_root} and MLflow run "
              f"{parent} (marked {status}); rerun with --resume to continue; Ray's logs: {console.log.path}",
              file=sys.stderr, flush=True)
        raise


def _run_phase(spec: SweepSpec, phase: str, param_space: dict[str, Any], total: int, common: dict[str, Any],
               logger, console, sweep_root: str, *, restore: bool, on_own_cluster: bool):
    """One phase's Tuner run to its end, shown by the console; returns Tune's ResultGrid.

    `restore`: a search on --resume restores Tune's state (it holds the Optuna searcher); a grid phase on --resume
    runs its trials not completed in MLflow in a fresh Tuner, each trial's Train run (named by trial id) resuming
    from its own checkpoint."""
    from sweeps.progress import ProgressPrinter

    metric = spec.search.metric if spec.search else None
    if console.verbose:  # a line per evaluation, between Ray's streamed logs
        view = ProgressPrinter(phase, total, metric)
    else:
        view = console.phase(phase, total, spec.analysis.primary, spec_total_images(spec))
    trainable = phase_trainable(spec, phase, common, on_own_cluster=on_own_cluster)
    tuner = phase_tuner(spec, phase, param_space, trainable, [logger, view], sweep_root, restore=restore)
    console.print(f"[{phase}] {total} trial(s)")
    with console.capture():  # quiet: what Tune prints (its experiment table, result paths) goes to the log
        results = tuner.fit()
    console.close_view()
    return results


def plans_left(param_space: dict[str, Any], completed: set[str]) -> tuple[dict[str, Any], int]:
    """A grid phase's param space without the plans whose trial id is in `completed`, and how many were dropped."""
    from ray import tune

    plans = param_space["plan"]["grid_search"]
    left = [p for p in plans if p["trial_id"] not in completed]
    return {"plan": tune.grid_search(left)}, len(plans) - len(left)


def _phases(spec: SweepSpec) -> list[tuple[str, dict[str, Any]]]:
    from ray import tune

    if spec.seeds is not None:  # every planned round (the storage check sees them); AdaptiveRounds picks which run
        from sweeps.adaptive import round_phases

        return round_phases(spec)
    phases = []
    if spec.grid:
        plans = [{"trial_id": p.trial_id, "overrides": p.overrides} for p in grid_plans(spec)]
        phases.append(("grid", {"plan": tune.grid_search(plans)}))
    if spec.search:
        if spec.search.baselines:
            plans = [{"trial_id": p.trial_id, "overrides": p.overrides} for p in baseline_plans(spec)]
            phases.append(("baselines", {"plan": tune.grid_search(plans)}))
        phases.append(("search", {}))
    return phases


if __name__ == "__main__":
    out = run_sweep(sys.argv[1])
    print(json.dumps(out.__dict__, indent=2, default=str))
