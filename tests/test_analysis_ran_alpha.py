"""The analysis describes the alpha each run's SF operator used (analysis.schedules.ran_alpha), never only the
configured one: with spectral.fit_from_data the snr schedule replaces spectral.alpha by the data's fitted alpha, and
the runs table, the search-importance input and the figures' data must all show the alpha that ran.

    .venv/bin/python -m pytest -q tests/test_analysis_ran_alpha.py
"""
import pandas as pd
import pytest
from matplotlib.axes import Axes
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import specforce_contracts as C
from analysis import load_runs
from analysis.plots import plot_alpha
from analysis.report import _schedule_configs
from analysis.schedules import ran_alpha, schedule_from_params
from analysis.search import rebuild_study, search_summary

FD = C.FD_PIXEL
SPACE = {"spectral.alpha": {"type": "float", "low": 0.5, "high": 4.0, "log": True},
         "spectral.schedule": {"type": "categorical", "choices": ["contour", "snr"]}}
USED = {"schedule": "snr", "c_min": 0.05, "c_max": 1.0, "c_const": 0.5, "kappa": 30.0, "r0": 0.09}
# name -> (searched, logged params, the alpha that ran, fd_pixel)
TRIALS = {
    # the regression: configured 2, fitted from the data, the record says 1.3
    "fit-record": (True, {"spectral.schedule": "snr", "spectral.alpha": 2.0, "spectral.fit_from_data": True,
                          **{C.SF_USED_PREFIX + k: v for k, v in {**USED, "alpha": 1.3}.items()}}, 1.3, 60.0),
    # no record (a user's own script): the fitted alpha, here outside the sampled range
    "fit-no-record": (True, {"spectral.schedule": "snr", "spectral.alpha": 0.7, "spectral.fit_from_data": True,
                             C.FITTED_PARAMS["alpha"]: 0.4, C.FITTED_PARAMS["r0"]: 0.1}, 0.4, 66.0),
    "snr-record": (True, {"spectral.schedule": "snr", "spectral.alpha": 3.0, "spectral.fit_from_data": False,
                          **{C.SF_USED_PREFIX + k: v for k, v in {**USED, "alpha": 3.0}.items()}}, 3.0, 64.0),
    "contour": (True, {"spectral.schedule": "contour", "spectral.alpha": 2.5}, 2.5, 62.0),
    "grid-fit": (False, {"spectral.schedule": "snr", "spectral.alpha": 2.0, "spectral.fit_from_data": True,
                         **{C.SF_USED_PREFIX + k: v for k, v in {**USED, "alpha": 1.3}.items()}}, 1.3, 61.0),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('ran-alpha')}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("fit")
    for seed, (name, (searched, params, _, value)) in enumerate(TRIALS.items()):
        tags = {C.ROLE_TAG: C.ROLE_TRIAL, C.STATUS_TAG: C.STATUS_COMPLETED, C.TRIAL_ID_TAG: name}
        if searched:
            tags[C.SEARCH_TAG] = C.SEARCH_OPTUNA
        run_id = client.create_run(exp, run_name=name, tags=tags).info.run_id
        logged = {"model.patch_size": 8, "data.image_size": 32, "seed": seed, "spectral.enabled": True,
                  "spectral.c_min": 0.05, "spectral.c_max": 1.0, **params}
        client.log_batch(run_id, metrics=[Metric(FD, value, 0, 100)],
                         params=[Param(k, str(v)) for k, v in logged.items()], tags=[RunTag("mlflow.runName", name)])
        client.set_terminated(run_id, "FINISHED")
    return load_runs("fit", uri)


def _by_name(frame: pd.DataFrame, column: str) -> dict:
    return dict(zip(frame["run_name"], frame[column]))


def test_runs_table_alpha_is_the_alpha_that_ran(runs):
    assert _by_name(runs, "alpha") == pytest.approx({n: t[2] for n, t in TRIALS.items()})
    assert _by_name(runs, "params.spectral.alpha")["fit-record"] == "2.0"  # the logged param stays as logged
    params = {k.removeprefix("params."): v for k, v in runs.iloc[0].items() if str(k).startswith("params.")}
    assert ran_alpha(params) == schedule_from_params(params)["alpha"] == TRIALS[runs.iloc[0]["run_name"]][2]


def test_search_importance_reads_the_alpha_that_ran(runs):
    summary = search_summary(runs, FD, SPACE)
    assert _by_name(summary.sf_runs, "alpha")["fit-record"] == pytest.approx(1.3)
    assert any("2 trial(s) fitted it from the data" in n for n in summary.notes)
    assert set(summary.importance) == set(SPACE)
    searched = runs[runs["search"] == C.SEARCH_OPTUNA]
    study = rebuild_study(searched, FD, SPACE)  # 0.4 lies outside the sampled [0.5, 4]: the range covers it
    ran = {t.value: t.params["spectral.alpha"] for t in study.trials}
    assert ran == pytest.approx({t[3]: t[2] for t in TRIALS.values() if t[0]})


def test_figures_draw_the_alpha_that_ran(runs, tmp_path, monkeypatch):
    summary = search_summary(runs, FD, SPACE)
    labels = [label for label, _ in _schedule_configs(runs, summary.best)]
    assert "snr (α=1.3, r0=0.09)" in labels and not any("α=2," in label for label in labels)
    drawn, scatter = [], Axes.scatter

    def spy(ax, x, y, **kw):  # the x positions plot_alpha draws its points at
        drawn.extend(list(x))
        return scatter(ax, x, y, **kw)

    monkeypatch.setattr(Axes, "scatter", spy)
    empty = pd.DataFrame({"patch_size": pd.Series(dtype="Int64"), "value": pd.Series(dtype=float)})
    assert plot_alpha(summary.sf_runs, empty, FD, tmp_path / "alpha.png") is not None
    assert sorted(drawn) == pytest.approx(sorted(t[2] for t in TRIALS.values() if t[1]["spectral.schedule"] in
                                                 ("snr", "contour")))
