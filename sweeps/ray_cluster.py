"""Ray for a sweep: start the embedded local cluster (its dashboard port, the workers' environment) or join one.

    specforce sweep sweeps/configs/smoke.yaml                     # embedded local Ray on this machine's CPUs
    specforce sweep sweeps/configs/smoke.yaml --address HOST:6379 # an existing cluster
    .venv/bin/python -c "from sweeps.ray_cluster import dashboard_port; print(dashboard_port())"

Three cases (`init_ray`): inside a Ray Job (`specforce submit`: RAY_ADDRESS is set) the job's own runtime env is
used as it is; with --address the cluster is joined with the workers' PYTHONPATH; otherwise a fresh local cluster is
started ("local": never a stale one), its dashboard on a port we choose, so Ray Train's State API calls reach this
cluster and not another Ray instance running on the machine. `resolve_resources` then checks that one trial fits.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

from sweeps.spec import SpecError, SweepSpec

# Ray Train V2 (docs/design.md §4); also set on every Ray process through the runtime env below
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
PROJECT_ROOT = str(pathlib.Path(__file__).resolve().parents[1])


def free_port(avoid: frozenset[int] = frozenset()) -> int:
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

    return free_port(avoid=frozenset({DEFAULT_DASHBOARD_AGENT_LISTEN_PORT}))


def worker_pythonpath(project_root: str) -> str:
    """The workers' PYTHONPATH: the project first, then the user's own entries (a model.target package on their
    PYTHONPATH must import on workers from any cwd; Ray's runtime env would otherwise replace it). Relative entries
    are made absolute against this cwd, since workers start elsewhere; an empty entry means this cwd too."""
    entries = [project_root]
    user = os.environ.get("PYTHONPATH")
    for entry in (user.split(os.pathsep) if user else []):
        entries += [os.path.abspath(entry or os.getcwd())]
    return os.pathsep.join(dict.fromkeys(entries))


def init_ray(address: str | None, num_cpus: int | None) -> None:
    """Start or join Ray for this driver (the module docstring's three cases); a no-op when Ray is already up."""
    import ray

    if ray.is_initialized():
        return
    env_vars = {"RAY_TRAIN_V2_ENABLED": "1", "PYTHONPATH": worker_pythonpath(PROJECT_ROOT)}
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
    # "local" never joins a stale cluster from /tmp/ray/ray_current_cluster (docs/design.md §4)
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=port, runtime_env={"env_vars": env_vars}, log_to_driver=True)


def resolve_resources(spec: SweepSpec) -> dict[str, Any]:
    """One trial's Ray Train resources on the running cluster; refuses a spec whose trial cannot fit it."""
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
