"""Run a sweep spec on Ray: grid trials, baselines and the Optuna search, each trial a Ray Train run.

    specforce sweep sweeps/configs/smoke.yaml                 # embedded local Ray, ./mlflow.db, ./ray_results
    specforce sweep sweeps/configs/smoke.yaml --resume        # after a driver crash: finished trials are not rerun
    python -m sweeps.runner sweeps/configs/smoke.yaml         # the same without the CLI

A sweep has up to three phases, each its own Tune experiment under <storage>/<name>/: `grid` (the ablation grid),
`baselines` (the no-SF arms a search needs for pairing) and `search` (Optuna). All write to one MLflow parent run.
A spec with adaptive `seeds:` runs its grid as rounds `grid-r1`, `grid-r2`, ... until decided (sweeps/adaptive.py).
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

from ray.tune import Callback

import specforce_contracts as C
from sweeps.spec import SpecError, SweepSpec, baseline_plans, grid_plans, load_spec
from sweeps.trial import mark

os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Results carry eval metrics only from the first evaluation on; the spec validator has already checked that the
# search metric is one the trials report, so Tune's per-result strict check adds nothing but a crash.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Save Tune's experiment state at most a second after a change (default: every >= 10 s), so a driver crash right
# after a trial finished rarely makes `--resume` of a search re-enter it (it would resume at its final checkpoint,
# not retrain); grid phases resume from MLflow's record instead (plans_left)
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")


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


def default_storage() -> str:
    return str((pathlib.Path.cwd() / "ray_results").resolve())


def default_cache_dir() -> str:
    return os.environ.get("SPECFORCE_CACHE", str(pathlib.Path.home() / ".cache" / "specforce"))


class ProgressPrinter(Callback):
    """Prints one line per evaluation and per finished trial: trials done/total and current metrics."""

    def __init__(self, phase: str, total: int, metric: str | None):
        self.phase, self.total, self.metric = phase, total, metric
        self.done = 0
        self.t0 = time.time()

    def on_trial_start(self, iteration, trials, trial, **info):
        mark(_key(trial), "tune_trial_start")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        shown = {k: result[k] for k in (self.metric, C.DENOISE_LOSS, C.FD_PIXEL, C.TRAIN_LOSS)
                 if k and k in result}
        text = ", ".join(f"{k}={v:.4g}" for k, v in shown.items())
        print(f"[{self.phase}] {_key(trial)} @ {result.get(C.IMAGES_KEY, 0):,} images: {text}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        mark(_key(trial), "tune_trial_complete")
        self.done += 1
        print(f"[{self.phase}] trial {_key(trial)} finished ({self.done}/{self.total}, "
              f"{time.time() - self.t0:.0f}s elapsed)", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        from sweeps.progress import _last_line

        self.done += 1
        error_file = getattr(trial, "error_file", None)
        print(f"[{self.phase}] trial {_key(trial)} FAILED ({self.done}/{self.total}): {_last_line(error_file)} "
              f"(traceback: {error_file})", flush=True)


def _key(trial) -> str:
    plan = trial.config.get("plan")
    return plan["trial_id"] if plan else trial.trial_id


def _free_port(avoid: frozenset[int] = frozenset()) -> int:
    """A port the OS reports free on 127.0.0.1, never one of `avoid`."""
    import socket

    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in avoid:
            return port


def dashboard_port() -> int:
    """A free port for the embedded cluster's dashboard. Not the dashboard agent's fixed default (52365, inside the
    ephemeral range the OS picks from): Ray refuses to start when two of its components are given one port, and a
    test run once failed so ("dashboard_agent_http is trying to use a port number 52365 that is used by other
    components")."""
    from ray._private.ray_constants import DEFAULT_DASHBOARD_AGENT_LISTEN_PORT

    return _free_port(avoid=frozenset({DEFAULT_DASHBOARD_AGENT_LISTEN_PORT}))


def worker_pythonpath(project_root: str) -> str:
    """The workers' PYTHONPATH: the project first, then the user's own entries (a model.target package on their
    PYTHONPATH must import on workers from any cwd; Ray's runtime env would otherwise replace it). Relative entries
    are made absolute against this cwd, since workers start elsewhere; an empty entry means this cwd too."""
    entries = [project_root]
    user = os.environ.get("PYTHONPATH")
    for entry in (user.split(os.pathsep) if user else []):
        entries += [os.path.abspath(entry or os.getcwd())]
    return os.pathsep.join(dict.fromkeys(entries))


def _init_ray(address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    project_root = str(pathlib.Path(__file__).resolve().parents[1])
    env_vars = {"RAY_TRAIN_V2_ENABLED": "1", "PYTHONPATH": worker_pythonpath(project_root)}
    from sweeps.trial import TIMELINE_ENV

    if os.environ.get(TIMELINE_ENV):  # the overhead benchmark's profile: every trial process appends to one file
        env_vars[TIMELINE_ENV] = os.environ[TIMELINE_ENV]
    if not address and os.environ.get("RAY_ADDRESS"):
        # inside a Ray Job (`specforce submit`): join its cluster with the job's own runtime env (working_dir,
        # env vars); a second runtime_env here would conflict with it and Ray refuses the merge
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=True)
        return
    if address:
        ray.init(address=address, runtime_env={"env_vars": env_vars}, log_to_driver=True)
        return
    # Ray Train V2 cleans up placement groups through the State API, which locates "the" local cluster by
    # scanning processes and refuses when another Ray instance runs on the machine. Pin it to ours: we choose
    # the dashboard port, and every process of this job is told where the API server is.
    port = dashboard_port()
    env_vars["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    os.environ["RAY_API_SERVER_ADDRESS"] = env_vars["RAY_API_SERVER_ADDRESS"]
    from sweeps.trial import LEAN_RAY_ENV, launch_mode

    if launch_mode() == "lean":  # per-trial start-up on one machine (sweeps/trial.py's docstring)
        env_vars.update({k: v for k, v in LEAN_RAY_ENV.items() if k not in os.environ})
    # "local" never joins a stale cluster from /tmp/ray/ray_current_cluster (DESIGN.md §4)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=port, runtime_env={"env_vars": env_vars}, log_to_driver=True)


def resolve_resources(spec: SweepSpec) -> dict[str, Any]:
    import ray

    r = spec.resources
    gpus = ray.cluster_resources().get("GPU", 0)
    if r.use_gpu is True and gpus == 0:
        raise SpecError("resources.use_gpu: true, but this Ray cluster has no GPUs "
                        f"(cluster resources: {ray.cluster_resources()})")
    use_gpu = bool(gpus) if r.use_gpu == "auto" else bool(r.use_gpu)
    cpus = ray.cluster_resources().get("CPU", 0)
    if r.workers * r.cpus_per_worker > cpus:
        raise SpecError(f"resources: one trial needs {r.workers * r.cpus_per_worker:g} CPUs "
                        f"({r.workers} workers x {r.cpus_per_worker:g}) but the cluster has {cpus:g}")
    return {"workers": r.workers, "cpus_per_worker": r.cpus_per_worker, "gpus_per_worker": r.gpus_per_worker,
            "use_gpu": use_gpu}


def _sampler(spec: SweepSpec):
    import optuna

    s = spec.search
    assert s is not None
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=s.startup_trials, seed=s.seed)
    if s.sampler == "gp":
        return optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=s.startup_trials)
    if s.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=s.seed, n_startup_trials=s.startup_trials)
    return optuna.samplers.RandomSampler(seed=s.seed)


def _optuna_space(spec: SweepSpec) -> dict[str, Any]:
    import optuna.distributions as od

    space = {}
    for key, dim in spec.search.space.items():  # type: ignore[union-attr]
        if dim.type == "categorical":
            space[key] = od.CategoricalDistribution(dim.choices)
        elif dim.type == "int":
            space[key] = od.IntDistribution(int(dim.low), int(dim.high), log=dim.log, step=int(dim.step or 1))
        else:
            space[key] = od.FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)
    return space


def run_sweep(spec: SweepSpec | str | pathlib.Path, *, tracking_uri: str | None = None, storage: str | None = None,
              resume: bool = False, address: str | None = None, num_cpus: int | None = None,
              verbose: bool = False) -> SweepOutcome:
    """Runs every phase of `spec`. The terminal shows one progress view per phase; Ray's, Tune's and the workers'
    output goes to `<storage>/<name>/logs/<time>.log` (sweeps/progress.py), also streamed when `verbose`."""
    from sweeps import tracking
    from sweeps.progress import SweepConsole, log_path_for

    if not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    tracking_uri = tracking.absolute_tracking_uri(tracking_uri)
    storage = str(pathlib.Path(storage).resolve()) if storage and "://" not in storage else (storage or default_storage())
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
    from ray import tune

    from sweeps import tracking
    from sweeps.trial import trial_trainable

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
        _init_ray(address, num_cpus)
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
        for phase, param_space in (rounds if rounds is not None else phases):
            planned = len(param_space["plan"]["grid_search"]) if "plan" in param_space else None
            if planned is not None and completed:
                param_space, already = plans_left(param_space, completed)
                outcome.trials += already
                if already:
                    console.print(f"[{phase}] {already} of {planned} trial(s) already completed in MLflow: not rerun")
                if already == planned:
                    continue
            search_keys = tuple(spec.search.space) if phase == "search" else ()
            # Ray's placement-group cleaner outlives a trial's controller; it matters only where a controller can die
            # while the cluster lives on: a scheduler's early stop, or any cluster the driver did not start
            keep_pg_cleaner = _stops_early(spec, phase) or bool(address or os.environ.get("RAY_ADDRESS"))
            trainable = tune.with_resources(tune.with_parameters(trial_trainable, search_keys=search_keys,
                                                                 keep_pg_cleaner=keep_pg_cleaner, **common),
                                            {"CPU": 0, "memory": 1024})
            # ^ the trial driver holds no CPU (its Train workers do), else 2 one-CPU trials never fit on 2 CPUs;
            #   a token memory request because Tune refuses an all-zero bundle
            logger = tracking.MlflowTrialLogger(tracking_uri, experiment_id, parent,
                                                search_tag=C.SEARCH_OPTUNA if phase == "search" else None)
            loggers.append(logger)
            total = len(param_space["plan"]["grid_search"]) if planned is not None else spec.search.num_samples
            metric = spec.search.metric if spec.search else None
            if console.verbose:  # a line per evaluation, between Ray's streamed logs (the behaviour before issue 13)
                view = ProgressPrinter(phase, total, metric)
            else:
                view = console.phase(phase, total, spec.analysis.primary, spec_total_images(spec))
            callbacks = [logger, view]
            path = f"{sweep_root}/{phase}"
            # a grid phase on --resume runs its trials not completed in MLflow in a fresh Tuner (each trial's Train
            # run, named by trial id, resumes from its own checkpoint); only the search restores Tune's state, which
            # holds the Optuna searcher
            if resume and planned is None and tune.Tuner.can_restore(path):
                tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
                tuner._local_tuner.get_run_config().callbacks = callbacks  # fresh driver-side callbacks
            else:
                tuner = tune.Tuner(trainable, param_space=param_space, tune_config=_tune_config(spec, phase),
                                   run_config=tune.RunConfig(name=phase, storage_path=sweep_root,
                                                             callbacks=callbacks, verbose=0))
            console.print(f"[{phase}] {total} trial(s)")
            with console.capture():  # quiet: what Tune prints (its experiment table, result paths) goes to the log
                results = tuner.fit()
            console.close_view()
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


def _stops_early(spec: SweepSpec, phase: str) -> bool:
    """Whether this phase's trials can be stopped early by a scheduler (ASHA on a search)."""
    return phase == "search" and spec.search is not None and spec.search.scheduler is not None


def _tune_config(spec: SweepSpec, phase: str):
    from ray import tune

    from sweeps.trial import launch_mode

    # the next trial reuses a finished trial's Tune actor (a process that already imported torch); trial_trainable
    # keeps no state between trials. Not with a scheduler: Tune caches the actor of a trial it stops early while its
    # fit() still runs, and the next trial's reset then fails after 2 s and errors that trial
    reuse = launch_mode() == "lean" and not _stops_early(spec, phase)
    if phase != "search":
        return tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials, reuse_actors=reuse)
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    s = spec.search
    searcher = OptunaSearch(space=_optuna_space(spec), metric=s.metric, mode=s.mode, sampler=_sampler(spec),
                            seed=None)
    scheduler = None
    if s.scheduler:
        scheduler = ASHAScheduler(time_attr="images", metric=s.metric, mode=s.mode,
                                  grace_period=s.scheduler.grace_images, reduction_factor=s.scheduler.reduction_factor,
                                  max_t=spec_total_images(spec))
    return tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent),
                           num_samples=s.num_samples, scheduler=scheduler,
                           max_concurrent_trials=min(s.max_concurrent, spec.max_concurrent_trials),
                           reuse_actors=reuse)


def spec_total_images(spec: SweepSpec) -> int:
    from sweeps.spec import base_config

    return base_config(spec).optim.total_images


if __name__ == "__main__":
    out = run_sweep(sys.argv[1])
    print(json.dumps(out.__dict__, indent=2, default=str))
