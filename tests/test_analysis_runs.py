"""analysis.runs / analysis.tables on a real MLflow sqlite store filled through the MLflow client."""
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import analysis.runs as runs_module
from analysis import load_runs
from analysis.runs import load_tables
from analysis.tables import runs_schema, write_parquet


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two experiments; in 'exp-a' a sweep parent plus three trials with hand-written metric histories."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('runs')}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("exp-a")
    client.create_experiment("exp-b")
    parent = client.create_run(exp, run_name="sweep-1", tags={"specforce.role": "sweep"}).info.run_id
    logged = {}
    for i, (patch, sf, status) in enumerate([(8, False, "completed"), (8, True, "completed"),
                                             (None, True, "stopped_early")]):
        run = client.create_run(exp, run_name=f"t{i}", tags={
            "specforce.role": "trial", "mlflow.parentRunId": parent, "specforce.trial_id": f"t{i}",
            "specforce.status": status, "specforce.provenance": json.dumps({"fd_pixel": {"num_samples": 100}})})
        fd = [90.0 - 10 * k + i for k in range(4)]
        fd[2] = 50.0 + i  # the best value is not the last one
        isc = [1.0, 3.0 + i, 2.0]
        metrics = [Metric("eval/fd_pixel", v, 0, 100 * (k + 1)) for k, v in enumerate(fd)]
        metrics += [Metric("eval/is", v, 0, 100 * (k + 1)) for k, v in enumerate(isc)]
        params = {"data.image_size": "32", "seed": str(i), "spectral.enabled": str(sf), "spectral.alpha": "2.0",
                  "spectral.schedule": "linear", "model.tokens": "64"}
        if patch is not None:
            params["model.patch_size"] = str(patch)
            params["model.tokens"] = "16"
        client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag("note", "x")])
        client.set_terminated(run.info.run_id, "FINISHED")
        logged[f"t{i}"] = (run.info.run_id, fd, isc)
    return uri, parent, logged


def test_one_row_per_trial_with_final_and_best_metrics(store):
    uri, parent, logged = store
    tables = load_tables("exp-a", uri)
    runs = tables.runs.set_index("run_name")
    assert sorted(runs.index) == ["t0", "t1", "t2"]  # the sweep parent is not a trial row
    assert list(tables.sweeps["run_id"]) == [parent]
    for name, (run_id, fd, isc) in logged.items():
        row = runs.loc[name]
        assert row["run_id"] == run_id and row["sweep_run_id"] == parent and row["sweep_name"] == "sweep-1"
        assert row["metrics.eval/fd_pixel"] == fd[-1]  # final = value at the last step
        assert row["best.eval/fd_pixel"] == min(fd)  # lower is better
        assert row["best.eval/is"] == max(isc)  # higher is better for the Inception score
        assert row["params.spectral.alpha"] == "2.0" and row["tags.note"] == "x"
    assert runs.loc["t2", "status"] == "stopped_early"
    hist = tables.history
    mine = hist[(hist["run_id"] == logged["t0"][0]) & (hist["metric"] == "eval/fd_pixel")].sort_values("step")
    assert mine["value"].tolist() == logged["t0"][1] and mine["step"].tolist() == [100, 200, 300, 400]


def test_typed_keys_and_patch_derived_from_tokens(store):
    uri, _, _ = store
    runs = load_runs("exp-a", uri).set_index("run_name")
    assert runs.loc["t0", "patch_size"] == 8 and runs.loc["t0", "tokens"] == 16
    assert runs.loc["t2", "patch_size"] == 4  # 64 tokens of a 32px image: patch 32/sqrt(64)
    assert runs["sf"].tolist() == [False, True, True]
    assert str(runs["seed"].dtype) == "Int64" and runs["alpha"].dtype == np.float64


def test_pagination_reads_every_run(store, monkeypatch):
    uri, _, _ = store
    monkeypatch.setattr(runs_module, "PAGE_SIZE", 1)  # three trials + one sweep: four pages
    assert len(load_runs("exp-a", uri)) == 3


def test_several_experiments_and_clear_errors(store):
    uri, _, _ = store
    both = load_tables(["exp-a", "exp-b"], uri)
    assert set(both.runs["experiment"]) == {"exp-a"}
    with pytest.raises(ValueError, match=r"experiment 'nope' not found in .*experiments there: .*'exp-a'"):
        load_runs("nope", uri)
    with pytest.raises(ValueError, match="experiment must be a non-empty name"):
        load_runs([], uri)


def test_parquet_round_trip_keeps_the_declared_types(store, tmp_path):
    uri, _, _ = store
    tables = load_tables("exp-a", uri)
    runs_path, history_path = write_parquet(tables.runs, tables.history, tmp_path)
    schema = pq.read_schema(runs_path)
    assert schema.field("patch_size").type == "int64" and schema.field("sf").type == "bool"
    assert schema.field("params.seed").type == "string" and schema.field("best.eval/is").type == "double"
    back = pd.read_parquet(runs_path)
    assert back["metrics.eval/fd_pixel"].tolist() == tables.runs["metrics.eval/fd_pixel"].tolist()
    hist = pd.read_parquet(history_path)
    assert len(hist) == len(tables.history) and str(pq.read_schema(history_path).field("step").type) == "int64"
    with pytest.raises(ValueError, match="column 'surprise' has no declared type"):
        runs_schema(["run_id", "surprise"])
