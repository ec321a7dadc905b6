"""MLflow bookkeeping for sweeps, all on the driver: the tracking store has exactly one writer.

Many processes writing one sqlite file race on schema migration and hit "database is locked" (DESIGN.md §4), so
Ray workers never talk to MLflow. They report to Tune; `MlflowTrialLogger`, a Tune callback running in the driver,
turns each result into MLflow calls:

- experiment = spec name; one parent run per sweep (tag specforce.role=sweep), one child per trial
  (tag specforce.role=trial, mlflow.parentRunId, specforce.trial_id);
- params = the trial's dotted config keys; metrics slash-namespaced with step = training images seen;
- artifacts from the trial's persisted Ray checkpoint folder (sample grids, mask picture, spectra, config, EMA);
- on completion the run is FINISHED (tag specforce.status completed | stopped_early), on error FAILED: no run is
  left RUNNING.

Resuming never duplicates: child runs are found again by trial id, and metrics at steps already logged are skipped.

    python -c "from sweeps.tracking import default_tracking_uri; print(default_tracking_uri())"
"""
from __future__ import annotations

import json
import pathlib
import re
import time
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune import Callback

from sweeps.trial import HISTORY_KEY, IMAGES_KEY, PARAMS_KEY, PROVENANCE_KEY
from trainers.config import config_with_overrides

ROLE, TRIAL_ID, STATUS, SWEEP_KEY = "specforce.role", "specforce.trial_id", "specforce.status", "specforce.sweep_key"
PARENT = "mlflow.parentRunId"
ARTIFACT_DIRS = {"samples": "samples", "spectral": "spectral", "eval": "eval"}
# config keys whose None means "the preset's": the worker reports the resolved value with its extra params (MLflow
# params cannot change once logged, so the None is not logged first)
RESOLVED_BY_WORKER = ("model.bottleneck",)


def default_tracking_uri(cwd: pathlib.Path | None = None) -> str:
    """`sqlite:///<abs>/mlflow.db`: absolute, because Ray processes have other working directories."""
    return f"sqlite:///{((cwd or pathlib.Path.cwd()) / 'mlflow.db').resolve()}"


# MLflow's tracking stores by URI scheme (database schemes may name a driver: postgresql+psycopg2://)
KNOWN_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
_SQLITE_MAGIC = b"SQLite format 3\x00"


def absolute_tracking_uri(uri: str | None) -> str:
    if not uri:
        return default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{pathlib.Path(uri.removeprefix('sqlite:///')).resolve()}"
    if uri.startswith("file:"):
        from sweeps.errors import UserError

        raise UserError("--tracking-uri", "the file: store is deprecated in MLflow 3 and raises; use "
                        "sqlite:///path/mlflow.db or an http(s):// tracking server", uri)
    return uri


def check_tracking_uri(uri: str | None, *, creates_store: bool, reach: bool = True, timeout: float = 5.0) -> str:
    """The absolute form of `uri`, or a UserError before anything touches the store.

    Scheme known; for sqlite, a reading command (`creates_store=False`) needs the file to exist and be an SQLite
    database (else MLflow would silently create an empty store, folders included); an existing file is always
    checked to be one. http(s) servers are asked for /health (`reach`) so a typo fails in seconds, not after
    MLflow's minutes of retries.
    """
    from sweeps.errors import UserError

    given = uri
    uri = absolute_tracking_uri(uri)
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in KNOWN_SCHEMES:
        hint = " (a bare path is MLflow's deprecated file store; use sqlite:///path/mlflow.db)" if not scheme else ""
        raise UserError("--tracking-uri", f"unknown tracking store scheme{hint}; known: "
                        f"{', '.join(s + '://' for s in KNOWN_SCHEMES)}", given)
    if scheme == "sqlite":
        if not uri.startswith("sqlite:///"):
            raise UserError("--tracking-uri", "a sqlite store is sqlite:///relative/path.db or "
                            "sqlite:////absolute/path.db", given)
        path = pathlib.Path(uri.removeprefix("sqlite:///"))
        if path.exists():
            if not path.is_file():
                raise UserError("--tracking-uri", f"{path} is not a file", given)
            with path.open("rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
            if head and head != _SQLITE_MAGIC:
                raise UserError("--tracking-uri", f"{path} is not an SQLite database (an MLflow store)", given)
        elif not creates_store:
            raise UserError("--tracking-uri", f"no MLflow store at {path}; run a sweep or `specforce train` first, "
                            "or pass the store's URI", given)
    if scheme in ("http", "https") and reach:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as resp:
                resp.read(64)
        except urllib.error.HTTPError:
            pass  # the server answered: reachable (an auth proxy or an older server without /health)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", err)
            raise UserError("--tracking-uri", f"MLflow server not reachable ({reason}); start it "
                            "(platform/local/start.sh) or check the URL", given) from None
    return uri


def prepare_store(tracking_uri: str) -> MlflowClient:
    """Create the schema once, here, before any other process could race on the migration."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    client.search_experiments(max_results=1)  # forces store creation + migration in this process
    return client


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is None:
        # MLflow 3's UI opens unknown experiments on its GenAI traces overview; this tag opens the runs table
        return client.create_experiment(name, tags={"mlflow.experimentKind": "custom_model_development"})
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def find_run(client: MlflowClient, experiment_id: str, **tags: str):
    filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=filt, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


def start_parent_run(client: MlflowClient, experiment_id: str, sweep_key: str, spec_dict: dict, resume: bool,
                     run_name: str) -> str:
    if resume:
        run = find_run(client, experiment_id, **{ROLE: "sweep", SWEEP_KEY: sweep_key})
        if run is not None:
            if run.info.status != "RUNNING":
                client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
    run = client.create_run(experiment_id, run_name=run_name, tags={ROLE: "sweep", SWEEP_KEY: sweep_key})
    client.log_text(run.info.run_id, json.dumps(redact("spec", spec_dict), indent=2, default=str), "spec/spec.json")
    return run.info.run_id


SECRET_WORDS = ("password", "passwd", "secret", "api_key", "apikey", "credential", "access_key")
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/@:\s]+):(?P<pw>[^/@\s]+)@", re.I)


def redact(key: str, value: Any) -> Any:
    """Params and logged specs never carry secrets: secret-named keys are masked, URI passwords removed."""
    leaf = key.rsplit(".", 1)[-1].lower()
    # secret-named leaves only: `model.tokens` (a token count) is not a secret, `data.options.api_token` is
    if any(word in leaf for word in SECRET_WORDS) or leaf == "token" or leaf.endswith(("_token", "-token")):
        return "***"
    if isinstance(value, dict):
        return {k: redact(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(key, v) for v in value]
    if isinstance(value, str):
        return _URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}{m['user']}:***@", value)
    return value


def param_value(value: Any, key: str = "") -> str:
    value = redact(key, value)
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]


class MlflowTrialLogger(Callback):
    """Tune callback: one MLflow child run per trial, logged from the driver only."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, base: dict[str, Any],
                 search_tag: str | None = None):
        self.tracking_uri = tracking_uri
        self._client: MlflowClient | None = None
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.base = base  # the spec's base config tree; each trial = base + its overrides
        self.total_images: dict[str, int] = {}
        self.search_tag = search_tag
        self.runs: dict[str, str] = {}  # trial key -> run id
        self.last_step: dict[str, dict[str, int]] = {}  # run id -> metric -> last logged step
        self.logged_files: dict[str, set[str]] = {}
        self.extras_logged: set[str] = set()
        self.last_images: dict[str, int] = {}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def __getstate__(self):  # Tune pickles its run config (callbacks included) into tuner.pkl
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    # ------------------------------------------------------------------ identity
    @staticmethod
    def trial_key(trial) -> str:
        plan = trial.config.get("plan")
        return plan["trial_id"] if plan else trial.trial_id

    def _overrides(self, trial) -> dict[str, Any]:
        plan = trial.config.get("plan")
        if plan:
            return dict(plan["overrides"])
        out = {k: v for k, v in trial.config.items() if "." in k or k == "seed"}
        out["spectral.enabled"] = True
        return out

    def _run_for(self, trial) -> str:
        key = self.trial_key(trial)
        if key in self.runs:
            return self.runs[key]
        cfg = config_with_overrides(self.base, self._overrides(trial))
        existing = find_run(self.client, self.experiment_id, **{TRIAL_ID: key, PARENT: self.parent_run_id})
        if existing is not None:  # resumed sweep: continue the same run, skip steps already logged
            run_id = existing.info.run_id
            if existing.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            self.last_step[run_id] = {k: self._max_step(run_id, k) for k in existing.data.metrics}
        else:
            tags = {ROLE: "trial", TRIAL_ID: key, PARENT: self.parent_run_id, STATUS: "running"}
            if self.search_tag:
                tags["specforce.search"] = self.search_tag
            run_id = self.client.create_run(self.experiment_id, run_name=key, tags=tags).info.run_id
            params = sorted((k, v) for k, v in cfg.flat().items() if not (v is None and k in RESOLVED_BY_WORKER))
            self.client.log_batch(run_id, params=[Param(k, param_value(v, k)) for k, v in params])
            self.last_step[run_id] = {}
        self.runs[key] = run_id
        self.total_images[run_id] = cfg.optim.total_images
        self.logged_files.setdefault(run_id, set())
        return run_id

    def _max_step(self, run_id: str, key: str) -> int:
        history = self.client.get_metric_history(run_id, key)
        return max((m.step for m in history), default=-1)

    # ------------------------------------------------------------------ Tune events
    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run_for(trial)
        self._log_result(run_id, result)

    def _log_result(self, run_id: str, result: dict[str, Any]) -> None:
        last = self.last_step[run_id]
        metrics: list[Metric] = []
        now = int(time.time() * 1000)
        rows = json.loads(result.get(HISTORY_KEY) or "[]")
        for row in rows:
            step = int(row.pop(IMAGES_KEY))
            for key, value in row.items():
                if step > last.get(key, -1):
                    metrics.append(Metric(key, float(value), now, step))
        for m in metrics:
            last[m.key] = max(last.get(m.key, -1), m.step)
        for i in range(0, len(metrics), 900):  # log_batch accepts at most 1000 metrics per call
            self.client.log_batch(run_id, metrics=metrics[i : i + 900])
        if IMAGES_KEY in result:
            self.last_images[run_id] = int(result[IMAGES_KEY])
        if run_id not in self.extras_logged and result.get(PARAMS_KEY):
            extras = json.loads(result[PARAMS_KEY])
            existing = self.client.get_run(run_id).data.params
            params = [Param(k, param_value(v, k)) for k, v in extras.items() if k not in existing]
            if params:
                self.client.log_batch(run_id, params=params)
            self.extras_logged.add(run_id)
        if result.get(PROVENANCE_KEY) and result[PROVENANCE_KEY] != "{}":
            self.client.set_tag(run_id, "specforce.provenance", result[PROVENANCE_KEY])
        ckpt = result.get("checkpoint_path")
        if ckpt:
            self._log_artifacts(run_id, pathlib.Path(ckpt), final=False)

    def _log_artifacts(self, run_id: str, folder: pathlib.Path, final: bool) -> None:
        if not folder.is_dir():  # remote storage (s3://...): artifacts stay in Ray storage, say so once
            return
        done = self.logged_files[run_id]
        for sub, dest in ARTIFACT_DIRS.items():
            for path in sorted((folder / sub).glob("*")):
                key = f"{dest}/{path.name}"
                if path.is_file() and (key not in done or sub == "eval"):
                    self.client.log_artifact(run_id, str(path), dest)
                    done.add(key)
        if final:
            if (folder / "config.yaml").is_file():
                self.client.log_artifact(run_id, str(folder / "config.yaml"), "config")
                # the resolved config under the contract's name
                self.client.log_text(run_id, (folder / "config.yaml").read_text(), "config/resolved.yaml")
            if (folder / "ema.pt").is_file():
                self.client.log_artifact(run_id, str(folder / "ema.pt"), "checkpoints")
            if (folder / "metrics.jsonl").is_file():
                self.client.log_artifact(run_id, str(folder / "metrics.jsonl"), "logs")

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        result = trial.last_result or {}
        ckpt = result.get("checkpoint_path")
        if ckpt:
            self._log_artifacts(run_id, pathlib.Path(ckpt), final=True)
        images = self.last_images.get(run_id, 0)
        status = "completed" if images >= self.total_images[run_id] else "stopped_early"
        self.client.set_tag(run_id, STATUS, status)
        self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        error = getattr(trial, "error_file", None)
        self.client.set_tag(run_id, STATUS, "failed")
        if error and pathlib.Path(error).is_file():
            self.client.log_artifact(run_id, error, "logs")
        self.client.set_terminated(run_id, status="FAILED")

    def close_all(self, status: str = "KILLED") -> None:
        """Driver interrupted: leave no child run RUNNING."""
        for run_id in self.runs.values():
            run = self.client.get_run(run_id)
            if run.info.status == "RUNNING":
                self.client.set_tag(run_id, STATUS, "interrupted")
                self.client.set_terminated(run_id, status=status)
