"""Bulk history reading against a real `mlflow server` over HTTP, and the SQL fast path against the API path.

A server bound to 127.0.0.1 on a free port serves a sqlite store; the same store is also read directly. References:
the runs table and histories read the old way (search_runs pages + one get_metric_history call per run and key).

    .venv/bin/python -m pytest tests/test_report_remote.py -q
"""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis import history
from analysis.report import NOTE_TAG, build_report
from analysis.runs import load_tables
from synthetic_sweep import log_synthetic_sweep

KEY = ["run_id", "metric", "timestamp", "step", "value"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("remote")
    db = f"sqlite:///{base}/mlflow.db"
    MlflowClient(db).search_experiments()  # create the schema before the server and the test share the file
    port = _free_port()
    log = open(base / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", db, "--artifacts-destination", str(base / "artifacts"),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (base / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not answer /health"
            time.sleep(0.5)
        # 10 trials with 37 points over 10 metric keys each; one run still RUNNING, one failed
        log_synthetic_sweep(url, "remote", seeds=(0, 1), effects={8: -6.0}, search_trials=2,
                            statuses={"p4-sf-s1": "failed"}, sample_images=True)
        yield url, db
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # mlflow server forks uvicorn: end the session it started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _sorted(frame: pd.DataFrame, by) -> pd.DataFrame:
    return frame.sort_values(by).reset_index(drop=True)


def test_http_bulk_history_equals_one_call_per_run_and_key(server, monkeypatch):
    url, _ = server
    client = MlflowClient(url)
    assert history.store_kind(client) == "http"
    runs = client.search_runs([client.get_experiment_by_name("remote").experiment_id])
    reference = _sorted(history.per_key_histories(client, runs), KEY)
    assert len(reference) > 300
    pd.testing.assert_frame_equal(_sorted(history.bulk_histories(client, runs), KEY), reference)
    # responses that come back full are split, down to one run read page by page: same rows
    monkeypatch.setattr(history, "HTTP_MAX_POINTS", 7)
    pd.testing.assert_frame_equal(_sorted(history.bulk_histories(client, runs), KEY), reference)


def test_sql_fast_path_equals_the_api_path_and_http(server):
    url, db = server
    fast, api, remote = (load_tables("remote", db), load_tables("remote", db, bulk=False),
                         load_tables("remote", url))
    for tables in (api, remote):
        assert sorted(tables.runs.columns) == sorted(fast.runs.columns)
        pd.testing.assert_frame_equal(_sorted(fast.runs, "run_id")[sorted(fast.runs.columns)],
                                      _sorted(tables.runs, "run_id")[sorted(fast.runs.columns)])
        pd.testing.assert_frame_equal(_sorted(fast.history, KEY), _sorted(tables.history, KEY))
        pd.testing.assert_frame_equal(fast.sweeps, tables.sweeps)


def test_report_over_http_logs_the_whole_report_and_the_verdict_note(server, tmp_path):
    url, _ = server
    result = build_report(["remote"], url, tmp_path / "out", n_resamples=500)
    client = MlflowClient(url)
    assert client.get_run(result.logged_run_id).data.tags[NOTE_TAG] == result.verdict
    logged = {f.path.removeprefix("report/") for f in client.list_artifacts(result.logged_run_id, "report")}
    assert {p.name for p in tmp_path.joinpath("out").iterdir()} <= logged
