"""Ray Tune for one phase of a sweep: the trainable with its resources, the Tune config (Optuna searcher, ASHA
scheduler, concurrency, actor reuse) and the Tuner, new or restored.

    .venv/bin/python -c "from sweeps.spec import load_spec; from sweeps.tune_setup import tune_config; \
print(tune_config(load_spec('sweeps/configs/alpha_search.yaml'), 'search'))"

The phases themselves (which param spaces, in which order, what --resume skips) are sweeps/runner.py's; the trial
each Tune trial runs is sweeps/trial.py's `trial_trainable`.
"""
from __future__ import annotations

import os
from typing import Any

import specforce_contracts as C
from sweeps.spec import SweepSpec, base_config

# Results carry eval metrics only from the first evaluation on; the spec validator has already checked that the
# search metric is one the trials report, so Tune's per-result strict check adds nothing but a crash.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Save Tune's experiment state at most a second after a change (default: every >= 10 s), so a driver crash right
# after a trial finished rarely makes `--resume` of a search re-enter it (it would resume at its final checkpoint,
# not retrain); grid phases resume from MLflow's record instead (runner.plans_left)
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")


def spec_total_images(spec: SweepSpec) -> int:
    return base_config(spec).optim.total_images


def stops_early(spec: SweepSpec, phase: str) -> bool:
    """Whether this phase's trials can be stopped early by a scheduler (ASHA on a search)."""
    return phase == "search" and spec.search is not None and spec.search.scheduler is not None


def sampler(spec: SweepSpec):
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


def optuna_space(spec: SweepSpec) -> dict[str, Any]:
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


def tune_config(spec: SweepSpec, phase: str):
    from ray import tune

    from sweeps.trial import launch_mode

    # the next trial reuses a finished trial's Tune actor (a process that already imported torch); trial_trainable
    # keeps no state between trials. Not with a scheduler: Tune caches the actor of a trial it stops early while its
    # fit() still runs, and the next trial's reset then fails after 2 s and errors that trial
    reuse = launch_mode() == "lean" and not stops_early(spec, phase)
    if phase != "search":
        return tune.TuneConfig(max_concurrent_trials=spec.max_concurrent_trials, reuse_actors=reuse)
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    s = spec.search
    searcher = OptunaSearch(space=optuna_space(spec), metric=s.metric, mode=s.mode, sampler=sampler(spec),
                            seed=None)
    scheduler = None
    if s.scheduler:
        scheduler = ASHAScheduler(time_attr=C.IMAGES_KEY, metric=s.metric, mode=s.mode,
                                  grace_period=s.scheduler.grace_images, reduction_factor=s.scheduler.reduction_factor,
                                  max_t=spec_total_images(spec))
    return tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=s.max_concurrent),
                           num_samples=s.num_samples, scheduler=scheduler,
                           max_concurrent_trials=min(s.max_concurrent, spec.max_concurrent_trials),
                           reuse_actors=reuse)


def phase_trainable(spec: SweepSpec, phase: str, common: dict[str, Any], *, on_own_cluster: bool):
    """`trial_trainable` with this phase's parameters and the trial driver's resources.

    `common` holds the trainable's keyword arguments shared by every phase; `on_own_cluster`: the driver started the
    embedded cluster (it dies with the driver)."""
    from ray import tune

    from sweeps.trial import trial_trainable

    search_keys = tuple(spec.search.space) if phase == "search" and spec.search else ()
    # Ray's placement-group cleaner outlives a trial's controller; it matters only where a controller can die
    # while the cluster lives on: a scheduler's early stop, or any cluster the driver did not start
    keep_pg_cleaner = stops_early(spec, phase) or not on_own_cluster
    # the trial driver holds no CPU (its Train workers do), else 2 one-CPU trials never fit on 2 CPUs; a token
    # memory request because Tune refuses an all-zero bundle
    return tune.with_resources(tune.with_parameters(trial_trainable, search_keys=search_keys,
                                                    keep_pg_cleaner=keep_pg_cleaner, **common),
                               {"CPU": 0, "memory": 1024})


def phase_tuner(spec: SweepSpec, phase: str, param_space: dict[str, Any], trainable, callbacks: list,
                sweep_root: str, *, restore: bool):
    """The phase's Tuner under `<sweep_root>/<phase>`: restored (Tune's state, which holds the Optuna searcher) when
    `restore` and Tune saved one there, with fresh driver-side `callbacks`; otherwise a new one."""
    from ray import tune

    path = f"{sweep_root}/{phase}"
    if restore and tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=True)
        tuner._local_tuner.get_run_config().callbacks = callbacks  # the pickled ones are inert copies
        return tuner
    return tune.Tuner(trainable, param_space=param_space, tune_config=tune_config(spec, phase),
                      run_config=tune.RunConfig(name=phase, storage_path=sweep_root, callbacks=callbacks, verbose=0))
