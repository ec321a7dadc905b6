"""Metric histories of many runs in bulk: one query per (metric key, block of runs), not one per (run, key).

A search of 1,000 trials with ten metric keys used to cost 10,000 `get_metric_history` round trips, most of a
report's time. Here the runs are grouped by metric key and each group is read in blocks:

- SQL tracking stores (sqlite, PostgreSQL, MySQL): the store's own `get_metric_history_bulk`, blocks of
  `SQL_BLOCK` run ids per query;
- HTTP(S) tracking servers: the server's `get-history-bulk` endpoint (the one the MLflow UI's charts use; at most
  100 run ids and 25,000 points per request). A block that comes back full is split in two and read again, down to
  one run, which is then read page by page with `get_metric_history`; threads overlap the round trips;
- any other store: one `get_metric_history` call per (run, key), threaded (`per_key_histories`, the path used
  before; the benchmark measures both).

Rows are `run_id, metric, step, value, timestamp` (HISTORY_COLUMNS), built column-wise so memory
stays a few numpy arrays per block rather than one Python object per point.

    python -c "from mlflow import MlflowClient; from analysis.history import bulk_histories; \\
        c = MlflowClient('sqlite:///mlflow.db'); r = c.search_runs(['0']); print(bulk_histories(c, r))"
"""
from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

HISTORY_COLUMNS = ("run_id", "metric", "step", "value", "timestamp")
HISTORY_DTYPES = {"run_id": "string", "metric": "string", "step": "int64", "value": "float64", "timestamp": "int64"}
SQL_BLOCK = 500  # run ids per SQL query: far below sqlite's 32,766 bound variables, a few MB of rows per block
HTTP_BLOCK = 100  # the tracking server's limit of run ids per get-history-bulk request
HTTP_MAX_POINTS = 25_000  # ... and of points per response
BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"


def _frame(run_ids, key: str, steps, values, timestamps) -> pd.DataFrame:
    return pd.DataFrame({"run_id": run_ids, "metric": key, "step": np.asarray(steps, dtype="int64"),
                         "value": np.asarray(values, dtype="float64"),
                         "timestamp": np.asarray(timestamps, dtype="int64")}, columns=list(HISTORY_COLUMNS))


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in HISTORY_DTYPES.items()})


def _concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return _empty()
    return pd.concat(frames, ignore_index=True).astype(HISTORY_DTYPES)


def _keys(runs: Sequence) -> dict[str, list[str]]:
    """metric key -> the run ids that logged it (from the runs' latest metrics, which search_runs returns)."""
    by_key: dict[str, list[str]] = defaultdict(list)
    for run in runs:
        for key in run.data.metrics:
            by_key[key].append(run.info.run_id)
    return {k: by_key[k] for k in sorted(by_key)}


def _blocks(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def _one_run(client: MlflowClient, run_id: str, key: str) -> pd.DataFrame:
    points = client.get_metric_history(run_id, key)  # the client pages through long histories itself
    return _frame([run_id] * len(points), key, [m.step for m in points], [m.value for m in points],
                  [m.timestamp for m in points])


def per_key_histories(client: MlflowClient, runs: Sequence, workers: int = 4) -> pd.DataFrame:
    """One get_metric_history call per (run, key): works with every store, costs a round trip per pair."""
    jobs = [(run_id, key) for key, ids in _keys(runs).items() for run_id in ids]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return _concat(pool.map(lambda job: _one_run(client, *job), jobs))


def _sql_block(store, ids: list[str], key: str) -> pd.DataFrame:
    # no max_results cap in effect: the store's bulk query takes a LIMIT, so ask for more than any block can hold
    rows = store.get_metric_history_bulk(ids, key, max_results=2 ** 62)
    return _frame([r.run_id for r in rows], key, [r.step for r in rows], [r.value for r in rows],
                  [r.timestamp for r in rows])


def _http_block(client: MlflowClient, store, ids: list[str], key: str) -> pd.DataFrame:
    from mlflow.utils.rest_utils import http_request, verify_rest_response

    response = http_request(store.get_host_creds(), BULK_ENDPOINT, "GET",
                            params={"run_id": ids, "metric_key": key, "max_results": HTTP_MAX_POINTS})
    points = verify_rest_response(response, BULK_ENDPOINT).json().get("metrics", [])
    if len(points) >= HTTP_MAX_POINTS:  # possibly cut off: split the block, and page a lone run's history
        if len(ids) == 1:
            return _one_run(client, ids[0], key)
        half = len(ids) // 2
        return _concat([_http_block(client, store, ids[:half], key), _http_block(client, store, ids[half:], key)])
    return _frame([p["run_id"] for p in points], key, [int(p.get("step", 0)) for p in points],
                  [float(p["value"]) for p in points], [int(p.get("timestamp", 0)) for p in points])


def store_kind(client: MlflowClient) -> str:
    """'sql', 'http' or 'other': which bulk path the client's tracking store allows."""
    from mlflow.store.tracking.rest_store import RestStore

    store = client._tracking_client.store  # MLflow keeps no public accessor for the store a client talks to
    if hasattr(store, "get_metric_history_bulk") and hasattr(store, "ManagedSessionMaker"):
        return "sql"
    if isinstance(store, RestStore):
        return "http"
    return "other"


def bulk_histories(client: MlflowClient, runs: Sequence, workers: int = 4) -> pd.DataFrame:
    """Every metric history of `runs` (search_runs results), read in blocks per metric key."""
    kind = store_kind(client)
    if kind == "other":
        return per_key_histories(client, runs, workers)
    store = client._tracking_client.store
    if kind == "sql":  # one connection does it: sqlite serialises readers of one file anyway
        jobs = [(ids, key) for key, all_ids in _keys(runs).items() for ids in _blocks(all_ids, SQL_BLOCK)]
        return _concat(_sql_block(store, ids, key) for ids, key in jobs)
    jobs = [(ids, key) for key, all_ids in _keys(runs).items() for ids in _blocks(all_ids, HTTP_BLOCK)]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # overlap the server's round trips
        return _concat(pool.map(lambda job: _http_block(client, store, *job), jobs))
