"""Runs on different data never pair: the `data.digest` param that file-backed datasets log is a context of the
analysis, so a baseline trained on one prepared dataset and an SF run on another are not compared.

    .venv/bin/python -m pytest tests/test_data_identity.py -q
"""
from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

import specforce_contracts as C
from analysis import load_runs
from analysis.compare import compare_arms
from synthetic_sweep import log_synthetic_sweep


def _stamp(uri: str, run_ids, digest: str) -> None:
    client = MlflowClient(uri)
    for run_id in run_ids:
        client.log_param(run_id, C.DATA_DIGEST_PARAM, digest)


def _pairs(uri: str) -> int:
    runs = load_runs("ident", uri)
    table = compare_arms(runs, [C.FD_PIXEL]).comparisons
    return int(table["n_pairs"].sum())


@pytest.mark.parametrize("sf_digest, pairs", [("aaaaaaaaaaaa", 3), ("bbbbbbbbbbbb", 0)],
                         ids=["same-data-pairs", "different-data-never-pairs"])
def test_runs_pair_only_on_the_same_data(tmp_path, sf_digest, pairs):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    base = log_synthetic_sweep(uri, "ident", patch_sizes=(8,), arms=(False,), sweep_name="a")
    sf = log_synthetic_sweep(uri, "ident", patch_sizes=(8,), arms=(True,), sweep_name="b", rng_seed=1)
    _stamp(uri, base.trial_run_ids.values(), "aaaaaaaaaaaa")
    _stamp(uri, sf.trial_run_ids.values(), sf_digest)
    assert _pairs(uri) == pairs  # the same data: three seed pairs; other data: none
