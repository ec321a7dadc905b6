"""MLflow runs of one or more experiments into a tidy pandas table (one row per trial) and a long metric history.

Columns of the runs table (docs/design.md §3): identity (`run_id`, `run_name`, `experiment`, `sweep_run_id`,
`sweep_name`, `trial_id`), state (`role`, `status` = tag specforce.status, `mlflow_status`, `search`,
`provenance`), typed analysis keys (`patch_size`, `tokens`, `image_size`, `seed`, `sf`, `schedule`, and `alpha`:
the cutoff exponent the run's SF operator used, `analysis.schedules.ran_alpha`, which with spectral.fit_from_data
is not the configured one), then every param as `params.<dotted key>` (string), every tag as `tags.<key>`, the
final value of every metric as `metrics.<name>` and its best value over the run as `best.<name>` (min, or max for
the metrics the registry in specforce_contracts calls higher-is-better: eval/is, eval/cls_score_*, classifier
accuracies eval/cls_*acc*).
The history table is long: `run_id, metric, step, value, timestamp` (step = training images seen).

    python -c "from analysis import load_runs; print(load_runs('demo', 'sqlite:///mlflow.db'))"
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import pandas as pd
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from analysis.history import HISTORY_COLUMNS, bulk_histories, per_key_histories
from analysis.schedules import ran_alpha
from analysis.sqlstore import read_store, sql_engine
import specforce_contracts as contracts
from specforce_contracts import MODEL_TOKENS, higher_is_better

ROLE, STATUS, TRIAL_ID, SEARCH, PROVENANCE = (contracts.ROLE_TAG, contracts.STATUS_TAG, contracts.TRIAL_ID_TAG,
                                              contracts.SEARCH_TAG, contracts.PROVENANCE_TAG)
PARENT = contracts.PARENT_TAG
PAGE_SIZE = 1000  # search_runs pages; a sweep of thousands of trials takes several round trips
IDENTITY_COLUMNS = ("run_id", "run_name", "experiment", "experiment_id", "sweep_run_id", "sweep_name", "trial_id",
                    "role", "status", "mlflow_status", "search", "provenance", "start_time", "end_time")
TYPED_COLUMNS = ("patch_size", "tokens", "image_size", "seed", "sf", "schedule", "alpha")


@dataclass(frozen=True)
class RunTables:
    runs: pd.DataFrame  # one row per non-sweep run (trials, plus anything else logged in the experiments)
    history: pd.DataFrame  # long format, HISTORY_COLUMNS
    sweeps: pd.DataFrame  # one row per sweep parent run: run_id, run_name, experiment, start_time, status


def _as_list(experiments: str | Sequence[str]) -> list[str]:
    names = [experiments] if isinstance(experiments, str) else list(experiments)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"experiment must be a non-empty name or list of names, got {experiments!r}")
    return names


def _experiment_ids(client: MlflowClient, names: list[str], tracking_uri: str) -> dict[str, str]:
    ids = {}
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None or exp.lifecycle_stage == "deleted":
            known = sorted(e.name for e in client.search_experiments(max_results=200))
            raise ValueError(f"experiment {name!r} not found in {tracking_uri}; experiments there: {known}")
        ids[exp.experiment_id] = name
    return ids


def all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str = "",
             page_size: int = PAGE_SIZE) -> Iterable:
    """Every active run of the experiments that matches `filter_string`, oldest first, page after page."""
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, ViewType.ACTIVE_ONLY, page_size,
                                  ["attributes.start_time ASC"], page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _int_or_none(text) -> int | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return int(value) if math.isfinite(value) and value == int(value) else None


def _float_or_nan(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _tokenisation(params: dict[str, str]) -> tuple[int | None, int | None, int | None]:
    """(patch_size, tokens, image_size); patch size is derived from the token count when the preset chose it."""
    image = _int_or_none(params.get("data.image_size"))
    patch = _int_or_none(params.get("model.patch_size"))
    tokens = _int_or_none(params.get(MODEL_TOKENS))
    if patch is None and tokens and image:
        side = math.isqrt(tokens)
        patch = image // side if side * side == tokens and image % side == 0 else None
    if tokens is None and patch and image and image % patch == 0:
        tokens = (image // patch) ** 2
    return patch, tokens, image


def _row(run, experiments: dict[str, str], sweep_names: dict[str, str]) -> dict:
    info, data = run.info, run.data
    params, tags = data.params, data.tags
    patch, tokens, image = _tokenisation(params)
    enabled = params.get("spectral.enabled")
    row = {
        "run_id": info.run_id,
        "run_name": info.run_name,
        "experiment": experiments[info.experiment_id],
        "experiment_id": info.experiment_id,
        "sweep_run_id": tags.get(PARENT),
        "sweep_name": sweep_names.get(tags.get(PARENT, ""), None),
        "trial_id": tags.get(TRIAL_ID),
        "role": tags.get(ROLE),
        "status": tags.get(STATUS),
        "mlflow_status": info.status,
        "search": tags.get(SEARCH),
        "provenance": tags.get(PROVENANCE),
        "start_time": info.start_time,
        "end_time": info.end_time,
        "patch_size": patch,
        "tokens": tokens,
        "image_size": image,
        "seed": _int_or_none(params.get("seed")),
        # str(bool) from our logger; "true"/"false" from a user's own script or a YAML-minded one
        "sf": {"true": True, "false": False}.get(str(enabled).strip().lower()) if enabled is not None else None,
        "schedule": params.get("spectral.schedule"),
        "alpha": _float_or_nan(ran_alpha(params)),
    }
    row.update({f"params.{k}": v for k, v in params.items()})
    row.update({f"tags.{k}": v for k, v in tags.items() if not k.startswith("mlflow.log-model")})
    row.update({f"metrics.{k}": float(v) for k, v in data.metrics.items()})
    return row


def _best(history: pd.DataFrame) -> pd.DataFrame:
    """Wide table run_id -> best.<metric> (min, or max for higher-is-better metrics), NaN values ignored."""
    if history.empty:
        return pd.DataFrame(index=pd.Index([], name="run_id", dtype="string"))
    grouped = history.groupby(["run_id", "metric"], observed=True)["value"]
    best = grouped.min().unstack("metric")
    high = [m for m in best.columns if higher_is_better(m)]
    if high:
        best[high] = grouped.max().unstack("metric")[high]
    return best.add_prefix("best.")


def load_tables(experiments: str | Sequence[str], tracking_uri: str, *, with_history: bool = True,
                workers: int = 4, bulk: bool = True) -> RunTables:
    """Runs, metric histories and sweep parent runs of the named experiments (all sweeps of each).

    bulk=True (default): a SQL store is read table by table (analysis.sqlstore), any other store through
    search_runs and the bulk history reader (analysis.history). bulk=False pages through search_runs and reads each
    (run, metric) history with its own call, as the report did before (the tests' and benchmark's reference)."""
    names = _as_list(experiments)
    if not isinstance(tracking_uri, str) or not tracking_uri:
        raise ValueError(f"tracking_uri must be a non-empty string, got {tracking_uri!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    client = MlflowClient(tracking_uri)
    exp_ids = _experiment_ids(client, names, tracking_uri)
    direct = bulk and sql_engine(client) is not None
    if direct:
        runs, sql_history = read_store(client, list(exp_ids), with_history=with_history)
    else:
        runs = list(all_runs(client, list(exp_ids)))
    sweeps = [r for r in runs if r.data.tags.get(ROLE) == contracts.ROLE_SWEEP]
    others = [r for r in runs if r.data.tags.get(ROLE) != contracts.ROLE_SWEEP]
    sweep_names = {r.info.run_id: r.info.run_name for r in sweeps}
    table = pd.DataFrame([_row(r, exp_ids, sweep_names) for r in others])
    if table.empty:
        table = pd.DataFrame(columns=list(IDENTITY_COLUMNS + TYPED_COLUMNS))
    if not with_history:
        history = pd.DataFrame(columns=list(HISTORY_COLUMNS))
    elif direct:  # the store's metrics table holds the sweep runs' metrics too: keep the others' only
        keep = sql_history["run_id"].isin([r.info.run_id for r in others])
        history = sql_history[keep].reset_index(drop=True)
    else:
        history = (bulk_histories if bulk else per_key_histories)(client, others, workers)
    if with_history and len(table):
        table = table.merge(_best(history), left_on="run_id", right_index=True, how="left")
    table = _typed(table)
    sweep_table = pd.DataFrame(
        [{"run_id": r.info.run_id, "run_name": r.info.run_name, "experiment": exp_ids[r.info.experiment_id],
          "start_time": r.info.start_time, "status": r.info.status} for r in sweeps],
        columns=["run_id", "run_name", "experiment", "start_time", "status"])
    return RunTables(runs=table, history=history, sweeps=sweep_table)


def _typed(table: pd.DataFrame) -> pd.DataFrame:
    out = table.copy()
    for col in ("patch_size", "tokens", "image_size", "seed"):
        out[col] = pd.array(out[col].tolist(), dtype="Int64")
    out["sf"] = pd.array(out["sf"].tolist(), dtype="boolean")
    out["alpha"] = out["alpha"].astype("float64")
    for col in ("start_time", "end_time"):
        out[col] = pd.to_datetime(out[col], unit="ms", utc=True)
    for col in out.columns:
        if col.startswith(("metrics.", "best.")):
            out[col] = out[col].astype("float64")
    return out.reset_index(drop=True)


def load_runs(experiment: str | Sequence[str], tracking_uri: str) -> pd.DataFrame:
    """One row per run of the experiment(s): params, final and best metrics, status, tags, sweep (docs/design.md §3)."""
    return load_tables(experiment, tracking_uri).runs


def metric_columns(runs: pd.DataFrame) -> list[str]:
    """Metric names (without the `metrics.` prefix) present in a runs table."""
    return sorted(c.removeprefix("metrics.") for c in runs.columns if c.startswith("metrics."))
