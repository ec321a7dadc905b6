"""MLflow bookkeeping for sweeps, all on the driver: the tracking store has exactly one writer.

Many processes writing one sqlite file race on schema migration and hit "database is locked" (docs/design.md §4), so
Ray workers never talk to MLflow. They report to Tune; `MlflowTrialLogger`, a Tune callback running in the driver,
turns each result into MLflow calls:

- experiment = spec name; one parent run per sweep (tag specforce.role=sweep), one child per trial
  (tag specforce.role=trial, mlflow.parentRunId, specforce.trial_id); names from specforce_contracts;
- params = the trial record the worker sent with its first report (dotted config keys as run, derived model params,
  data spectrum fit, the SF operator's `spectral.used.*`), also logged as config/record.json; metrics
  slash-namespaced with step = training images seen; the writes themselves are sweeps/mlflow_writer.py's;
- artifacts from the trial's persisted Ray checkpoint folder (sample grids, mask picture, spectra, config, EMA);
- on completion the run is FINISHED (tag specforce.status completed | stopped_early), on error FAILED: no run is
  left RUNNING.

Resuming never duplicates: child runs are found again by trial id, and metrics at steps already logged are skipped;
`completed_trial_ids` tells `--resume` which grid trials need not run again.

    python -c "from sweeps.tracking import absolute_tracking_uri; print(absolute_tracking_uri(None))"
"""
from __future__ import annotations

import json
import pathlib
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from ray.tune import Callback

import specforce_contracts as C
from specforce_contracts import IMAGES_KEY, TrialRecord, default_tracking_uri
from specforce_contracts import REPORT_HISTORY_KEY as HISTORY_KEY, REPORT_PROVENANCE_KEY as PROVENANCE_KEY
from specforce_contracts import REPORT_RECORD_KEY as RECORD_KEY
from sweeps.mlflow_writer import RunWriter, find_run, redact
from sweeps.trial_identity import identify, trial_key

ROLE, TRIAL_ID, STATUS, SWEEP_KEY, PARENT = C.ROLE_TAG, C.TRIAL_ID_TAG, C.STATUS_TAG, C.SWEEP_KEY_TAG, C.PARENT_TAG
# run-folder subfolders whose files become artifacts in the folder of the same name
ARTIFACT_DIRS = {d: d for d in (C.ARTIFACT_SAMPLES_DIR, C.ARTIFACT_SPECTRAL_DIR, C.ARTIFACT_EVAL_DIR)}


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
                        f"sqlite:///path/{C.DEFAULT_STORE_FILE} or an http(s):// tracking server", uri)
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
        hint = (f" (a bare path is MLflow's deprecated file store; use sqlite:///path/{C.DEFAULT_STORE_FILE})"
                if not scheme else "")
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
        return client.create_experiment(name, tags={C.EXPERIMENT_KIND_TAG: C.EXPERIMENT_KIND})
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def start_parent_run(client: MlflowClient, experiment_id: str, sweep_key: str, spec_dict: dict, resume: bool,
                     run_name: str) -> str:
    if resume:
        run = find_run(client, experiment_id, **{ROLE: C.ROLE_SWEEP, SWEEP_KEY: sweep_key})
        if run is not None:
            if run.info.status != "RUNNING":
                client.update_run(run.info.run_id, status="RUNNING")
            return run.info.run_id
    run = client.create_run(experiment_id, run_name=run_name, tags={ROLE: C.ROLE_SWEEP, SWEEP_KEY: sweep_key})
    client.log_text(run.info.run_id, json.dumps(redact("spec", spec_dict), indent=2, default=str), C.ARTIFACT_SPEC)
    return run.info.run_id


def completed_trial_ids(client: MlflowClient, experiment_id: str, parent_run_id: str,
                        page_size: int | None = None) -> set[str]:
    """Trial ids of this sweep whose MLflow run finished its whole training (FINISHED, specforce.status completed).

    `--resume` runs a grid phase's other trials only. MLflow is the ledger here, not Tune's experiment state: Tune
    saves that state asynchronously, and a driver killed between two saves restores a phase that can re-enter a
    finished trial or lack one (a CI run of the driver-kill resume test once failed so)."""
    from analysis.runs import PAGE_SIZE, all_runs

    filt = (f"tags.`{PARENT}` = '{parent_run_id}' and tags.`{ROLE}` = '{C.ROLE_TRIAL}' "
            f"and tags.`{STATUS}` = '{C.STATUS_COMPLETED}' and attributes.status = 'FINISHED'")
    return {r.data.tags[TRIAL_ID] for r in all_runs(client, [experiment_id], filt, page_size or PAGE_SIZE)
            if TRIAL_ID in r.data.tags}


class MlflowTrialLogger(Callback):
    """Tune callback: one MLflow child run per trial, logged from the driver only, through `RunWriter`.

    The run's params are the trial record the worker sends with its first report (TrialRecord: the config as it ran,
    the data spectrum fit, the SF operator's describe()); nothing is re-resolved here. A trial's run is found by its
    trial id (sweeps/trial_identity.py), the name its Ray Train run and progress line carry too."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, search_tag: str | None = None):
        self.tracking_uri = tracking_uri
        self._client: MlflowClient | None = None
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.search_tag = search_tag
        self.runs: dict[str, str] = {}  # trial key -> run id
        self.writers: dict[str, RunWriter] = {}  # trial key -> its run's writer
        self.logged_files: dict[str, set[str]] = {}
        self.last_images: dict[str, int] = {}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def __getstate__(self):  # Tune pickles its run config (callbacks included) into tuner.pkl
        state = dict(self.__dict__)
        state["_client"] = None
        state["writers"] = {}
        return state

    def _writer(self, trial) -> RunWriter:
        key = trial_key(trial)
        if key not in self.writers:
            tags = {C.ROLE_TAG: C.ROLE_TRIAL, C.TRIAL_ID_TAG: key, C.PARENT_TAG: self.parent_run_id,
                    C.STATUS_TAG: C.STATUS_RUNNING}
            if self.search_tag:
                tags[C.SEARCH_TAG] = self.search_tag
            # a resumed sweep continues the same run (found by trial id) and skips steps already logged
            writer = RunWriter.open(self.client, self.experiment_id, run_name=key, tags=tags,
                                    match={C.TRIAL_ID_TAG: key, C.PARENT_TAG: self.parent_run_id})
            self.writers[key], self.runs[key] = writer, writer.run_id
            self.logged_files.setdefault(writer.run_id, set())
        return self.writers[key]

    # ------------------------------------------------------------------ Tune events
    def on_trial_start(self, iteration, trials, trial, **info):
        self._writer(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._log_result(self._writer(trial), result)

    def _log_result(self, writer: RunWriter, result: dict[str, Any]) -> None:
        if writer.record is None and result.get(RECORD_KEY):  # the worker's first report of this run
            writer.log_record(TrialRecord.from_json(result[RECORD_KEY]))
        writer.log_rows(json.loads(result.get(HISTORY_KEY) or "[]"))
        if IMAGES_KEY in result:
            self.last_images[writer.run_id] = int(result[IMAGES_KEY])
        writer.set_provenance(result.get(PROVENANCE_KEY))
        ckpt = result.get("checkpoint_path")
        if ckpt:
            self._log_artifacts(writer, pathlib.Path(ckpt), final=False)

    def _log_artifacts(self, writer: RunWriter, folder: pathlib.Path, final: bool) -> None:
        if not folder.is_dir():  # remote storage (s3://...): artifacts stay in Ray storage, say so once
            return
        done = self.logged_files[writer.run_id]
        for sub, dest in ARTIFACT_DIRS.items():
            for path in sorted((folder / sub).glob("*")):
                key = f"{dest}/{path.name}"
                if path.is_file() and (key not in done or sub == C.ARTIFACT_EVAL_DIR):
                    writer.log_artifact(str(path), dest)
                    done.add(key)
        if final:
            config = folder / C.RUN_CONFIG_FILE
            if config.is_file():
                writer.log_artifact(str(config), C.ARTIFACT_CONFIG_DIR)
                # the resolved config under the contract's name
                writer.log_text(config.read_text(), C.ARTIFACT_RESOLVED_CONFIG)
            if (folder / C.RUN_EMA_FILE).is_file():
                writer.log_artifact(str(folder / C.RUN_EMA_FILE), C.ARTIFACT_CHECKPOINTS_DIR)
            if (folder / C.RUN_METRICS_FILE).is_file():
                writer.log_artifact(str(folder / C.RUN_METRICS_FILE), C.ARTIFACT_LOGS_DIR)

    def _total_images(self, writer: RunWriter) -> int | None:
        if writer.record is not None:
            return writer.record.total_images
        logged = self.client.get_run(writer.run_id).data.params.get("optim.total_images")  # a record of an earlier
        return int(logged) if logged is not None else None  # driver session (resumed sweep)

    def on_trial_complete(self, iteration, trials, trial, **info):
        writer = self._writer(trial)
        result = trial.last_result or {}
        ckpt = result.get("checkpoint_path")
        if ckpt:
            self._log_artifacts(writer, pathlib.Path(ckpt), final=True)
        images = self.last_images.get(writer.run_id, int(result.get(IMAGES_KEY, 0) or 0))
        total = self._total_images(writer)
        done = total is not None and images >= total
        writer.end(C.STATUS_COMPLETED if done else C.STATUS_STOPPED_EARLY)

    def on_trial_error(self, iteration, trials, trial, **info):
        writer = self._writer(trial)
        if writer.record is None:  # died before its first report: log what it was asked to run
            writer.log_params(identify(trial.config, trial.trial_id).overrides)
        error = getattr(trial, "error_file", None)
        if error and pathlib.Path(error).is_file():
            writer.log_artifact(error, C.ARTIFACT_LOGS_DIR)
        writer.end(C.STATUS_FAILED, "FAILED")

    def close_all(self, status: str = "KILLED") -> None:
        """Driver interrupted: leave no child run RUNNING."""
        for key, run_id in self.runs.items():
            writer = self.writers.get(key) or RunWriter(self.client, run_id)
            writer.end_if_running(C.STATUS_INTERRUPTED, status)
