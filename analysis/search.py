"""Search analysis: metric vs cutoff exponent per schedule, the best SF configs, and hyperparameter importance.

Importance comes from Optuna's own fANOVA evaluator on a study rebuilt from the completed Optuna trials
(tag specforce.search=optuna). The search space is read from the sweep's `spec/spec.json` artifact when the sweep
logged it; otherwise it is inferred from the params that vary across the trials, and the result says so.
Trials stopped early by the scheduler hold partial values and are left out. Each trial's spectral.alpha is the alpha
it ran with (the runs table's `alpha`, analysis.schedules.ran_alpha): with spectral.fit_from_data the snr schedule
replaced the sampled value by the data's fitted one, and the importance must not credit an alpha no trial used.

    python -c "from analysis import load_runs; from analysis.search import search_summary; \\
        print(search_summary(load_runs('demo', 'sqlite:///mlflow.db'), 'eval/denoise_loss', {}).importance)"
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import optuna
import pandas as pd

from analysis.selection import MEASURED_PREFIXES, usable_runs
from specforce_contracts import SEARCH_OPTUNA, higher_is_better

BEST_COLUMNS = ["rank", "run_name", "patch_size", "schedule", "alpha", "value", "search", "run_id"]
ALPHA = "spectral.alpha"  # the search dimension whose logged value is not always the one that ran


@dataclass(frozen=True)
class SearchSummary:
    metric: str
    sf_runs: pd.DataFrame  # usable SF runs (grid and searched): patch_size, schedule, alpha, value, search
    best: pd.DataFrame  # BEST_COLUMNS, best first
    importance: dict[str, float]  # param -> normalised fANOVA importance (empty when it cannot be computed)
    n_trials: int  # Optuna trials behind the importance
    notes: list[str] = field(default_factory=list)


def distribution(spec: Mapping[str, Any]) -> optuna.distributions.BaseDistribution:
    """An Optuna distribution from a sweep-spec dimension ({type, low, high, log, step, choices})."""
    kind = spec.get("type")
    if kind == "categorical":
        return optuna.distributions.CategoricalDistribution(list(spec["choices"]))
    if kind == "float":
        return optuna.distributions.FloatDistribution(float(spec["low"]), float(spec["high"]),
                                                      log=bool(spec.get("log")), step=spec.get("step"))
    if kind == "int":
        return optuna.distributions.IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")),
                                                    step=int(spec.get("step") or 1))
    raise ValueError(f"search space dimension type must be float, int or categorical, got {kind!r}")


def _parse(text: str, dist: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        for choice in dist.choices:  # params are logged as strings; match them back to the typed choice
            if str(choice) == text:
                return choice
        raise ValueError(f"param value {text!r} is not among the choices {dist.choices}")
    return int(float(text)) if isinstance(dist, optuna.distributions.IntDistribution) else float(text)


def refitted(trials: pd.DataFrame) -> pd.Series:
    """Per trial: did it run with another alpha than the logged spectral.alpha (fitted from the data)?"""
    if f"params.{ALPHA}" not in trials or "alpha" not in trials:
        return pd.Series(False, index=trials.index)
    logged = pd.to_numeric(trials[f"params.{ALPHA}"], errors="coerce")
    return trials["alpha"].notna() & (logged != trials["alpha"])


def ran_values(trials: pd.DataFrame, key: str) -> pd.Series:
    """The value of search dimension `key` each trial ran with, as logged strings: the logged param, except for
    the trials whose alpha was refitted, whose spectral.alpha is the alpha that ran."""
    logged = trials[f"params.{key}"]
    if key != ALPHA:
        return logged
    swap = refitted(trials)
    return logged.astype(object).where(~swap, trials["alpha"].map(lambda a: str(float(a))))


def inferred_space(trials: pd.DataFrame) -> dict[str, dict]:
    """Dimensions of the params that vary across trials: numeric -> float over the observed range, else categorical."""
    space = {}
    for col in sorted(c for c in trials.columns if c.startswith("params.") and not c.startswith(MEASURED_PREFIXES)
                      and c != "params.seed"):
        key = col.removeprefix("params.")
        values = ran_values(trials, key).dropna().astype(str)
        if values.nunique() < 2:
            continue
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().all():
            low, high = float(numbers.min()), float(numbers.max())
            space[key] = {"type": "float", "low": low, "high": high, "log": low > 0 and high / low > 10}
        else:
            space[key] = {"type": "categorical", "choices": sorted(values.unique())}
    return space


def _alpha_dimension(spec: Mapping[str, Any], ran: pd.Series) -> dict[str, Any]:
    """The alpha dimension as a float range over the spec's (its bounds or numeric choices) and every alpha that
    ran: a fitted alpha need not be one the sampler could draw."""
    bounds = [float(v) for v in (*spec.get("choices", ()), spec.get("low"), spec.get("high")) if v is not None]
    values = bounds + pd.to_numeric(ran, errors="coerce").dropna().tolist()
    return {"type": "float", "low": min(values), "high": max(values), "log": bool(spec.get("log"))}


def rebuild_study(trials: pd.DataFrame, metric: str, space: Mapping[str, Mapping[str, Any]]) -> optuna.Study:
    """An in-memory Optuna study holding the completed trials as COMPLETE FrozenTrials, with the values they ran
    with (`ran_values`)."""
    direction = "maximize" if higher_is_better(metric) else "minimize"
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line per report
    try:
        study = optuna.create_study(direction=direction)
    finally:
        optuna.logging.set_verbosity(verbosity)
    values = {k: ran_values(trials, k) for k in space}
    if ALPHA in space and refitted(trials).any():
        space = {**space, ALPHA: _alpha_dimension(space[ALPHA], values[ALPHA])}
    dists = {k: distribution(v) for k, v in space.items()}
    for i, (_, row) in enumerate(trials.iterrows()):
        params = {k: _parse(str(values[k].iloc[i]), d) for k, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists,
                                                  value=float(row[f"metrics.{metric}"])))
    return study


def search_summary(runs: pd.DataFrame, metric: str, spec_space: Mapping[str, Mapping[str, Any]] | None,
                   *, top: int = 5, seed: int = 0) -> SearchSummary:
    """Best SF configs and importance for `metric`; `spec_space` is the sweep spec's search.space (or None)."""
    usable = usable_runs(runs, metric).usable
    sf = usable[usable["sf"] == True].copy()  # noqa: E712
    sf["value"] = sf[f"metrics.{metric}"] if len(sf) else pd.Series(dtype=float)
    ascending = not higher_is_better(metric)
    ranked = sf.sort_values("value", ascending=ascending).head(top).reset_index(drop=True)
    ranked["rank"] = range(1, len(ranked) + 1)
    best = ranked.reindex(columns=BEST_COLUMNS)
    notes: list[str] = []
    searched = sf[sf["search"] == SEARCH_OPTUNA]
    importance: dict[str, float] = {}
    if len(searched) < 2:
        notes.append(f"Importance needs at least 2 completed Optuna trials reporting {metric}; found {len(searched)}.")
        return SearchSummary(metric, sf, best, importance, len(searched), notes)
    space = dict(spec_space or {})
    if not space:
        space = inferred_space(searched)
        notes.append("Search space inferred from the params that vary across the Optuna trials "
                     "(no spec/spec.json search.space on the sweep run).")
    missing = [k for k in space if f"params.{k}" not in searched.columns]
    if missing:
        raise ValueError(f"search space keys {missing} were not logged as params on the Optuna trials")
    if ALPHA in space and refitted(searched).any():
        notes.append(f"spectral.alpha is the alpha each trial ran with: {int(refitted(searched).sum())} trial(s) "
                     "fitted it from the data (spectral.fit_from_data) instead of the sampled value.")
    patches = sorted(int(p) for p in searched["patch_size"].dropna().unique())
    if len(patches) > 1 and "model.patch_size" not in space:
        notes.append(f"The Optuna trials span patch sizes {patches}; the importance pools them.")
    study = rebuild_study(searched, metric, space)
    raw = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    importance = {k: float(v) for k, v in raw.items() if math.isfinite(v)}
    return SearchSummary(metric, sf, best, importance, len(searched), notes)


def spec_search_space(spec_json: str | None) -> tuple[dict[str, dict], str | None, str | None]:
    """(space, metric, mode) from a sweep's spec/spec.json text; empty/None when it has no search section."""
    if not spec_json:
        return {}, None, None
    search = (json.loads(spec_json) or {}).get("search") or {}
    return dict(search.get("space") or {}), search.get("metric"), search.get("mode")
