"""Search analysis: Optuna study rebuilt from logged trials, fANOVA importance, best configurations."""

import numpy as np
import optuna
import pytest

from analysis import load_runs
from analysis.artifacts import read_text
from analysis.search import inferred_space, rebuild_study, search_summary, spec_search_space
from synthetic_sweep import log_synthetic_sweep

FD = "eval/fd_pixel"


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('search')}/mlflow.db"
    sweep = log_synthetic_sweep(uri, "search", patch_sizes=(8,), seeds=(0, 1), search_trials=12, noise=0.05)
    return uri, sweep, load_runs("search", uri)


def test_space_is_read_from_the_sweep_spec(searched):
    uri, sweep, _ = searched
    space, metric, mode = spec_search_space(read_text(uri, sweep.sweep_run_id, "spec/spec.json"))
    assert set(space) == {"spectral.alpha", "spectral.schedule"} and (metric, mode) == (FD, "min")
    assert spec_search_space(None) == ({}, None, None)
    assert read_text(uri, sweep.sweep_run_id, "spec/missing.json") is None


def test_rebuilt_study_holds_the_logged_values(searched):
    uri, sweep, runs = searched
    space, _, _ = spec_search_space(read_text(uri, sweep.sweep_run_id, "spec/spec.json"))
    trials = runs[runs["search"] == "optuna"]
    study = rebuild_study(trials, FD, space)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert len(study.trials) == 12
    assert sorted(t.value for t in study.trials) == sorted(trials[f"metrics.{FD}"])
    logged = {float(a): s for a, s in zip(trials["params.spectral.alpha"], trials["params.spectral.schedule"])}
    for t in study.trials:
        assert logged[t.params["spectral.alpha"]] == t.params["spectral.schedule"]
    assert rebuild_study(trials, "eval/is", space).direction == optuna.study.StudyDirection.MAXIMIZE


def test_importance_finds_the_param_that_drives_the_metric(searched):
    uri, sweep, runs = searched
    space, _, _ = spec_search_space(read_text(uri, sweep.sweep_run_id, "spec/spec.json"))
    summary = search_summary(runs, FD, space)
    # the synthetic search cost depends on alpha only (3 |log(alpha / 1.5)|), not on the schedule
    assert set(summary.importance) == {"spectral.alpha", "spectral.schedule"}
    assert summary.importance["spectral.alpha"] > 0.6 > summary.importance["spectral.schedule"]
    assert sum(summary.importance.values()) == pytest.approx(1.0)
    values = summary.best["value"].to_numpy()
    assert np.all(np.diff(values) >= 0) and summary.best["rank"].tolist() == list(range(1, 6))
    assert values[0] == pytest.approx(runs.loc[runs["sf"] == True, f"metrics.{FD}"].min())  # noqa: E712
    assert summary.n_trials == 12 and summary.notes == []


def test_inferred_space_is_announced(searched):
    _, _, runs = searched
    trials = runs[runs["search"] == "optuna"]
    space = inferred_space(trials)
    assert space["spectral.schedule"] == {"type": "categorical", "choices": ["contour", "linear", "snr"]}
    assert space["spectral.alpha"]["type"] == "float" and "seed" not in space
    summary = search_summary(runs, FD, None)
    assert any("inferred" in n for n in summary.notes)


def test_too_few_trials_and_bad_space(searched):
    _, _, runs = searched
    grid_only = runs[runs["search"].isna()]
    summary = search_summary(grid_only, FD, {})
    assert summary.importance == {} and "at least 2 completed Optuna trials" in summary.notes[0]
    with pytest.raises(ValueError, match=r"search space keys \['optim.blr'\] were not logged"):
        search_summary(runs, FD, {"optim.blr": {"type": "float", "low": 1e-5, "high": 1e-3}})
    with pytest.raises(ValueError, match="type must be float, int or categorical, got 'grid'"):
        search_summary(runs, FD, {"spectral.alpha": {"type": "grid"}})
