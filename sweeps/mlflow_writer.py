"""One MLflow run's writes, used by both paths that log runs: `specforce train` (sweeps/commands/train.py `MlflowHooks`)
and `specforce sweep` (sweeps/tracking.py `MlflowTrialLogger`, a Tune callback on the driver).

A `RunWriter` is opened on a run found again by its tags (a rerun or `--resume` continues the same run and skips
metric steps it already has) or created; it logs the trial record (params + the JSON artifact, names from
specforce_contracts), metric rows with step = training images seen, artifacts, the provenance tag, and ends the run
with a specforce.status tag and MLflow's status, so no run is left RUNNING. Params are never changed once logged
(MLflow refuses that); secrets are masked in every param (`redact`).

    python -c "from sweeps.mlflow_writer import param_value; print(param_value('postgresql://u:pw@h/db', 'x'))"
"""
from __future__ import annotations

import json
import re
import time
from typing import Any, Iterable, Mapping

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.tracking import MlflowClient

import specforce_contracts as C
from specforce_contracts import TrialRecord

SECRET_WORDS = ("password", "passwd", "secret", "api_key", "apikey", "credential", "access_key")
_URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^/@:\s]+):(?P<pw>[^/@\s]+)@", re.I)
BATCH = 900  # log_batch accepts at most 1000 metrics per call


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


def find_run(client: MlflowClient, experiment_id: str, **tags: str):
    filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([experiment_id], filter_string=filt, max_results=1, order_by=["attributes.start_time DESC"])
    return runs[0] if runs else None


class RunWriter:
    """Writes one MLflow run. `last_step` (metric -> highest step logged) makes metric logging idempotent."""

    def __init__(self, client: MlflowClient, run_id: str, last_step: dict[str, int] | None = None):
        self.client, self.run_id = client, run_id
        self.last_step: dict[str, int] = dict(last_step or {})
        self.record: TrialRecord | None = None

    @classmethod
    def open(cls, client: MlflowClient, experiment_id: str, *, match: Mapping[str, str], tags: Mapping[str, str],
             run_name: str, reopen_finished: bool = True) -> "RunWriter":
        """The run with tags `match` (set RUNNING again, its logged steps remembered), else a new one with `tags`.
        A FINISHED run is continued only when `reopen_finished` (a `train` rerun after success starts a new run)."""
        existing = find_run(client, experiment_id, **match)
        if existing is not None and (reopen_finished or existing.info.status != "FINISHED"):
            run_id = existing.info.run_id
            if existing.info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            last = {k: max((m.step for m in client.get_metric_history(run_id, k)), default=-1)
                    for k in existing.data.metrics}
            return cls(client, run_id, last)
        return cls(client, client.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id)

    # ---------------------------------------------------------------------------------------------------- params
    def log_params(self, params: Mapping[str, Any]) -> None:
        """The params this run does not have yet (a resumed run keeps the values it logged first)."""
        have = self.client.get_run(self.run_id).data.params
        new = [Param(k, param_value(v, k)) for k, v in params.items() if k not in have]
        for i in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=new[i:i + 100])

    def log_record(self, record: TrialRecord) -> None:
        """What the trial ran, exactly as the worker reported it: its params and the record as a JSON artifact."""
        self.log_params(record.params())
        self.client.log_text(self.run_id, record.to_json(), C.ARTIFACT_TRIAL_RECORD)
        if record.dataset is not None:
            self.log_dataset(record.dataset)
        self.record = record

    def log_dataset(self, identity: Mapping[str, str]) -> None:
        """The training data as the run's MLflow dataset input (the UI's Dataset column), once per run."""
        if self.client.get_run(self.run_id).inputs.dataset_inputs:
            return  # a resumed run logged it already
        source = str(identity["source"])
        source_type = source.split("://", 1)[0] if "://" in source else ("local" if source.startswith("/") else "code")
        dataset = Dataset(name=identity["name"], digest=identity["digest"][:C.DATA_DIGEST_CHARS],
                          source_type=source_type, source=json.dumps({"uri": source}))
        self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])])

    # --------------------------------------------------------------------------------------------------- metrics
    def log_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Metric rows `{images: step, key: value, ...}`; steps already logged for a key are skipped."""
        now = int(time.time() * 1000)
        metrics: list[Metric] = []
        for row in rows:
            row = dict(row)
            step = int(row.pop(C.IMAGES_KEY))
            metrics += [Metric(k, float(v), now, step) for k, v in row.items() if step > self.last_step.get(k, -1)]
        for m in metrics:
            self.last_step[m.key] = max(self.last_step.get(m.key, -1), m.step)
        for i in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + BATCH])

    def log_metrics(self, images: int, metrics: Mapping[str, float]) -> None:
        self.log_rows([{C.IMAGES_KEY: images, **metrics}])

    # ------------------------------------------------------------------------------------------ artifacts, tags
    def log_artifact(self, path: str, artifact_dir: str) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def set_provenance(self, provenance: Mapping[str, Any] | str | None) -> None:
        text = provenance if isinstance(provenance, str) else json.dumps(provenance or {}, default=str)
        if text and text != "{}":
            self.client.set_tag(self.run_id, C.PROVENANCE_TAG, text)

    def end(self, status_tag: str, mlflow_status: str = "FINISHED") -> None:
        """Tag specforce.status and terminate the run (FINISHED, FAILED or KILLED)."""
        self.client.set_tag(self.run_id, C.STATUS_TAG, status_tag)
        self.client.set_terminated(self.run_id, status=mlflow_status)

    def end_if_running(self, status_tag: str, mlflow_status: str) -> None:
        if self.client.get_run(self.run_id).info.status == "RUNNING":
            self.end(status_tag, mlflow_status)
