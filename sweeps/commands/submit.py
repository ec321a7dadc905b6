"""Submit a sweep spec to a Ray cluster as a Ray Job, and follow it.

    specforce submit sweeps/configs/smoke.yaml --address http://127.0.0.1:8265 --tracking-uri http://127.0.0.1:5000 \
        --storage s3://bucket/specforce          # or an absolute path every node mounts (NFS); add --resume to continue
    specforce status raysubmit_XXXX --address http://127.0.0.1:8265
    specforce logs raysubmit_XXXX --address http://127.0.0.1:8265 --follow
    specforce stop raysubmit_XXXX --address http://127.0.0.1:8265

The project travels in the job's runtime env (working_dir = the repo, without venvs, databases or results), and the
entrypoint names the interpreter explicitly (`python -m sweeps.cli`): `ray job submit` runs the entrypoint with the
head node's PATH (docs/design.md §4). The sweep runs on the cluster as its own driver, so the tracking URI must be one the
cluster can reach: an MLflow server URL, or a sqlite file only when the cluster is this machine. Likewise `--storage`
is required and must be shared (s3://, gs://, or an absolute path all nodes mount): the default, a folder in the
working dir, would be the job's temporary copy on the cluster, lost with the job (and with it `--resume`).

A spec may lie anywhere (the user's own repository): one outside the project travels as a tiny staged package in the
runtime env's `py_modules` (`specforce_spec_<hash>/spec.yaml`, its `base_config` inlined), and the entrypoint,
`python -m sweeps.commands.staged_sweep specforce_spec_<hash> ...`, finds it there and runs the sweep on it. A
`model.target` builder outside the project travels the same way: its top-level package folder (or single-file
module), located with importlib.util.find_spec on this machine, goes into `py_modules`, so the cluster needs no copy
of the user's repository; installed packages (site-packages) must be installed on the cluster too.

    .venv/bin/python -m pytest tests/test_submit_external.py -q -m "slow or not slow"   # CPU, local Ray cluster
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import shlex
import shutil
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

from specforce_contracts import DEFAULT_STORAGE_DIR, DEFAULT_STORE_FILE, JOB_SPEC_METADATA
from sweeps.spec import SpecError, _read_yaml, load_spec

ROOT = pathlib.Path(__file__).resolve().parents[2]  # the project: the job's working_dir
# what stays on this machine: environments, stores and results (the defaults' names), caches
EXCLUDES = [".venv", ".git", DEFAULT_STORE_FILE, "mlartifacts", "mlruns", DEFAULT_STORAGE_DIR, "reports", "runs",
            "*.pyc", "__pycache__", ".pytest_cache", ".cache", ".specforce"]
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STOP_GRACE_S = 60  # seconds a stopped job's driver gets to close its MLflow runs before Ray's SIGKILL


def _is_local(address: str) -> bool:
    return (urllib.parse.urlparse(address).hostname or "") in LOCAL_HOSTS


def check_reachable(address: str) -> None:
    if not address.startswith(("http://", "https://")):
        raise SpecError(f"--address {address!r}: expected the Ray dashboard URL, e.g. http://HEAD:8265")
    request = urllib.request.Request(address.rstrip("/") + "/api/version", headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise SpecError(f"--address {address}: the cluster requires an auth token (HTTP {err.code}); export "
                            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> (or RAY_AUTH_TOKEN_PATH) — `ray get-auth-token` "
                            "on the head prints it") from None
    except (urllib.error.URLError, OSError) as err:
        raise SpecError(f"--address {address}: Ray dashboard not reachable ({err}); is the head running and the "
                        "dashboard port open?") from None


def _auth_headers() -> dict[str, str]:
    """The Authorization header Ray's own clients send (token from RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH)."""
    try:
        from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled
    except ImportError:  # an older Ray without token auth
        return {}
    return get_auth_headers_if_auth_enabled({})


def check_tracking_uri(tracking_uri: str | None, address: str) -> str:
    from sweeps.tracking import check_tracking_uri as check_uri

    # not asked for /health: the cluster, not this machine, must reach the server
    uri = check_uri(tracking_uri, creates_store=True, reach=False)
    if uri.startswith("sqlite:") and not _is_local(address):
        raise SpecError(f"--tracking-uri {uri}: a local sqlite file cannot be reached from the remote cluster at "
                        f"{address}; run an MLflow server (platform/mlflow) and pass its http:// URL")
    host = urllib.parse.urlparse(uri).hostname
    if uri.startswith("http") and host in LOCAL_HOSTS and not _is_local(address):
        raise SpecError(f"--tracking-uri {uri}: 'localhost' on a remote cluster is the cluster's own machine; pass "
                        "an address the cluster can reach")
    return uri


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address)
    except Exception as err:  # noqa: BLE001 - the SDK raises bare exceptions for auth/connection problems
        text = str(err)
        if "401" in text or "403" in text or "auth" in text.lower():
            raise SpecError(f"--address {address}: authentication failed ({text.splitlines()[0]}); export "
                            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN=<token> (`ray get-auth-token` on the head prints it)") from None
        raise SpecError(f"--address {address}: cannot connect to the Ray Jobs API ({text.splitlines()[0]}); if the "
                        "cluster uses token auth, export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH") from None


SHARED_STORAGE_HINT = ("pass shared storage every node and a later --resume job can reach: s3://bucket/path, "
                       "gs://bucket/path, or an absolute path on a filesystem all nodes mount (NFS)")


def check_job_storage(storage: str | None, address: str) -> str:
    """A submitted sweep's Ray storage must outlive the job and be reachable from every node.

    Without --storage (or with a relative path) the sweep's driver, which runs in the job's temporary working-dir
    copy on the cluster, writes `ray_results/` there: checkpoints and the state `--resume` needs vanish with the job,
    and workers on other machines cannot reach it."""
    from sweeps.errors import UserError
    from sweeps.preflight import check_storage

    if not storage:
        raise UserError("--storage", "required for a submitted sweep: by default the sweep's Ray storage would land "
                        "in the job's temporary working-dir copy on the cluster and vanish with the job; "
                        + SHARED_STORAGE_HINT, None)
    if "://" not in storage and not os.path.isabs(storage):
        raise UserError("--storage", "a relative path would resolve inside the job's temporary working dir on the "
                        "cluster; " + SHARED_STORAGE_HINT, storage)
    if "://" in storage or _is_local(address):  # a local cluster shares this machine's files: check them here
        check_storage(storage)
    return storage


def _targets(spec) -> list[str]:
    """Every model.target a trial of the spec can build: the base's, a grid's values, a search's choices."""
    found = [(spec.base.get("model") or {}).get("target")]
    found += list((spec.grid or {}).get("model.target") or [])
    dim = (spec.search.space.get("model.target") if spec.search else None)
    found += list(getattr(dim, "choices", None) or [])
    return sorted({t for t in found if isinstance(t, str)})


def _inside(path: pathlib.Path, folder: pathlib.Path) -> bool:
    return path == folder or folder in path.parents


def model_modules(spec) -> list[str]:
    """The local folders (or single .py files) that carry the spec's model.target builders to the cluster.

    Only the top-level package is located (importing `pkg.mod` on a worker needs all of `pkg`). Packages inside the
    project already travel with the working dir, and installed ones (site-packages) come from the cluster's own
    environment (as does the standard library): uploading e.g. torchvision would shadow the cluster's copy."""
    modules: list[str] = []
    for target in _targets(spec):
        top = target.split(":")[0].split(".")[0]
        try:
            found = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            found = None
        locations = list(found.submodule_search_locations or []) if found else []
        if found and not locations and found.origin and found.origin.endswith(".py"):
            locations = [found.origin]  # a single-file module: Ray's py_modules takes a .py file as well
        if len(locations) != 1 or not os.path.exists(locations[0]):
            where = ", ".join(locations) or (found.origin if found else "")
            why = f"is not one folder or .py file (found {where})" if found else "not found"
            raise SpecError(f"model.target {target!r}: package {top!r} {why} on this machine, so it cannot travel "
                            "to the cluster with the job; put its folder on PYTHONPATH (a folder, not a zip)")
        path = pathlib.Path(locations[0]).resolve()
        installed = {"site-packages", "dist-packages"} & set(path.parts)
        if _inside(path, ROOT) or installed or _inside(path, pathlib.Path(sysconfig.get_paths()["stdlib"]).resolve()):
            continue
        if str(path) not in modules:
            modules.append(str(path))
    return modules


def stage_spec(spec_path: pathlib.Path, into: pathlib.Path) -> str:
    """A package `specforce_spec_<hash>` under `into` holding the spec as spec.yaml, its base_config inlined (the
    file it names stays on this machine), for py_modules. Returns the package name."""
    import yaml

    tree = _read_yaml(spec_path, "sweep spec")
    if tree.get("base_config"):  # as load_spec merges it; load_spec has already checked the file exists
        base = _read_yaml((spec_path.parent / tree.pop("base_config")).resolve(), "base_config") or {}
        base.update(tree.get("base") or {})
        tree["base"] = base
    text = yaml.safe_dump(tree, sort_keys=False)
    name = "specforce_spec_" + hashlib.sha256(text.encode()).hexdigest()[:12]
    (into / name).mkdir(parents=True)
    (into / name / "__init__.py").write_text("")  # an importable package, so the job finds it by find_spec
    (into / name / "spec.yaml").write_text(text)
    return name


def submit(spec_path: pathlib.Path, *, address: str, tracking_uri: str | None, storage: str | None = None,
           wait: bool = False, resume: bool = False, verbose: bool = False) -> str:
    spec = load_spec(spec_path)  # validate locally before anything reaches the cluster
    spec_rel = os.path.relpath(spec_path.resolve(), ROOT)
    outside = spec_rel.startswith("..")
    py_modules = model_modules(spec)
    storage = check_job_storage(storage, address)
    uri = check_tracking_uri(tracking_uri, address)  # before the network: refusals that need none come first
    check_reachable(address)
    sweep_dir = pathlib.Path(storage) / spec.name
    if resume and "://" not in storage and _is_local(address):  # refuse here what the job would refuse there
        if not sweep_dir.exists():
            raise SpecError(f"--resume: nothing to resume at {sweep_dir}")
        from sweeps.fingerprint import check_resume

        check_resume(spec, sweep_dir)
    sweep_args = ["--tracking-uri", uri, "--storage", storage]
    if resume:
        sweep_args.append("--resume")
    if verbose:  # the job's log streams Ray's and the workers' logs too (else they go to the sweep's log file)
        sweep_args.append("--verbose")
    python = os.environ.get("SPECFORCE_CLUSTER_PYTHON", sys.executable if _is_local(address) else "python")
    client = _client(address)
    staging = pathlib.Path(tempfile.mkdtemp(prefix="specforce-submit-"))  # only until submit_job has uploaded it
    try:
        if outside:
            package = stage_spec(spec_path, staging)
            py_modules.append(str(staging / package))
            args = ["-m", "sweeps.commands.staged_sweep", package, *sweep_args]
        else:
            args = ["-m", "sweeps.cli", "sweep", spec_rel, *sweep_args]
        entrypoint = " ".join(shlex.quote(a) for a in [python, *args])
        # `specforce stop` = Ray's SIGTERM, then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S (Ray's default: 3 s, read by
        # the job supervisor from this runtime env). The driver needs longer on a busy head to mark its sweep and
        # trial runs KILLED and stop Ray; with 3 s a stopped job left runs RUNNING in MLflow.
        runtime_env = {"working_dir": str(ROOT), "excludes": EXCLUDES,
                       "env_vars": {"RAY_TRAIN_V2_ENABLED": "1", "PYTHONUNBUFFERED": "1",
                                    "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S)}}
        if py_modules:
            runtime_env["py_modules"] = py_modules
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                                   metadata={JOB_SPEC_METADATA: spec.name})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"submitted {spec.name!r} as {job_id} to {address}; follow with: specforce logs {job_id} "
          f"--address {address} --follow", file=sys.stderr)
    if wait:
        status = wait_for(client, job_id)
        if status != "SUCCEEDED":
            raise SystemExit(f"specforce submit: job {job_id} ended {status}; its logs: specforce logs {job_id} "
                             f"--address {address}")
    return job_id


def wait_for(client, job_id: str, timeout: float | None = None, stream: bool = True) -> str:
    from ray.job_submission import JobStatus

    start, seen = time.time(), 0
    while True:
        status = client.get_job_status(job_id)
        if stream:
            logs = client.get_job_logs(job_id)
            sys.stderr.write(logs[seen:])
            seen = len(logs)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status.value)
        if timeout and time.time() - start > timeout:
            raise TimeoutError(f"job {job_id} still {status.value} after {timeout:.0f}s")
        time.sleep(2)


def job_command(command: str, job_id: str, *, address: str, follow: bool = False) -> int:
    check_reachable(address)
    client = _client(address)
    try:
        return _job_command(client, command, job_id, follow)
    except RuntimeError as err:  # the SDK reports an unknown job id as RuntimeError("... status code 404 ...")
        if "404" in str(err) or "does not exist" in str(err):
            from sweeps.errors import UserError

            raise UserError("JOB_ID", f"no such job on the cluster at {address}", job_id) from None
        raise


def _job_command(client, command: str, job_id: str, follow: bool) -> int:
    if command == "status":
        info = client.get_job_info(job_id)
        print(f"{job_id}: {info.status.value}  {info.message or ''}".rstrip())
        return 0
    if command == "logs":
        if follow:
            return 0 if wait_for(client, job_id) == "SUCCEEDED" else 1
        print(client.get_job_logs(job_id), end="")
        return 0
    if command == "stop":
        stopped = client.stop_job(job_id)
        print(f"{job_id}: {'stop requested' if stopped else 'already finished'}")
        return 0
    raise SpecError(f"unknown job command {command!r}")
