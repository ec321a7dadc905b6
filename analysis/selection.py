"""Which runs may be averaged for a metric, and why the others are kept apart (listed, never silently mixed in).

A trial counts for a metric when: it is a trial (tag specforce.role=trial) that completed (MLflow status FINISHED,
and tag specforce.status=completed when the tag is present: runs logged by a user's own script have none; a
stopped_early or failed tag excludes the run), has the typed keys the comparison needs (patch size, seed,
spectral.enabled), reported the metric, and its evaluation provenance for that metric (extractor, weights, sample
count, reference set: tag specforce.provenance) equals the provenance most runs of the set share. A rerun of the
same configuration and seed keeps only its latest run.

    python -c "from analysis import load_runs; from analysis.selection import usable_runs; \\
        print(usable_runs(load_runs('demo', 'sqlite:///mlflow.db'), 'eval/fd_pixel'))"
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from specforce_contracts import (MEASURED_PARAM_PREFIXES, ROLE_TRIAL, STATUS_COMPLETED, STATUS_FAILED,
                                 STATUS_STOPPED_EARLY)

EXCLUDED_COLUMNS = ["run_id", "run_name", "experiment", "metric", "reason"]
# measured or derived params (data fits, token count): they describe a run, they do not configure it
MEASURED_PREFIXES = tuple(f"params.{p}" for p in MEASURED_PARAM_PREFIXES)
# the arm (spectral.*), seed and tokenisation are what a comparison varies, so they never define its context
_NOT_CONTEXT_PREFIXES = ("params.spectral.", "params.seed", "params.model.patch_size") + MEASURED_PREFIXES


@dataclass(frozen=True)
class Selection:
    usable: pd.DataFrame  # runs that may be averaged for the metric
    excluded: pd.DataFrame  # EXCLUDED_COLUMNS: one row per run kept apart, with the reason


def status_problem(row: pd.Series) -> str | None:
    """Why a run can never be averaged (any metric), or None."""
    if row.get("role") != ROLE_TRIAL:
        return f"not a trial run (tag specforce.role={row.get('role')!r})"
    status, mlflow_status = row.get("status"), row.get("mlflow_status")
    if status == STATUS_STOPPED_EARLY:
        return "stopped early by the scheduler (partial training)"
    if status == STATUS_FAILED or mlflow_status == "FAILED":
        return "failed"
    # no tag: a run logged by the user's own script (docs/design.md §3); its MLflow status alone decides
    if status is not None and not pd.isna(status) and status != STATUS_COMPLETED:
        return f"not completed (specforce.status={status!r}, MLflow status {mlflow_status})"
    if mlflow_status != "FINISHED":
        return f"MLflow status {mlflow_status} (expected FINISHED)"
    missing = [c for c in ("patch_size", "seed", "sf") if pd.isna(row.get(c))]
    if missing:
        return f"missing {', '.join(missing)} (params model.patch_size/model.tokens, seed, spectral.enabled)"
    return None


def status_problems(runs: pd.DataFrame) -> pd.Series:
    """status_problem of every row, evaluated once per distinct (role, status, MLflow status, missing keys): a
    search of 10,000 trials has a handful of such combinations, and a row-wise apply per metric cost seconds."""
    if runs.empty:
        return pd.Series([None] * 0, index=runs.index, dtype=object)
    keys = pd.DataFrame({c: (runs[c].astype("string") if c in runs else pd.Series(pd.NA, index=runs.index))
                         for c in ("role", "status", "mlflow_status")})
    for c in ("patch_size", "seed", "sf"):
        keys[c] = runs[c].isna() if c in runs else True
    group = keys.groupby(list(keys.columns), dropna=False, sort=False).ngroup()
    first = ~group.duplicated()
    answers = dict(zip(group[first], runs[first].apply(status_problem, axis=1)))
    return group.map(answers).astype(object).where(group.map(answers).notna(), None)


def provenance_key(provenance: object, metric: str) -> str:
    """Canonical JSON of the provenance entry of one metric ("eval/fd_pixel" -> entry "fd_pixel"); "" if none."""
    if not isinstance(provenance, str) or not provenance:
        return ""
    try:
        entries = json.loads(provenance)
    except json.JSONDecodeError:
        return "unreadable provenance tag"
    entry = entries.get(metric.split("/", 1)[-1]) if isinstance(entries, dict) else None
    return json.dumps(entry, sort_keys=True) if entry is not None else ""


def _describe_difference(reference: str, other: str) -> str:
    ref = json.loads(reference) if reference.startswith("{") else {}
    oth = json.loads(other) if other.startswith("{") else {}
    if not ref or not oth:
        return f"provenance {other or 'not recorded'} differs from the majority's {reference or 'not recorded'}"
    diffs = [f"{k}={oth.get(k)!r} (majority {ref.get(k)!r})" for k in sorted(set(ref) | set(oth))
             if ref.get(k) != oth.get(k)]
    return "incomparable evaluation: " + ", ".join(diffs)


def context_columns(runs: pd.DataFrame) -> list[str]:
    """Params besides arm, seed and tokenisation that vary across the runs: they split comparisons into contexts."""
    cols = [c for c in runs.columns if c.startswith("params.") and not c.startswith(_NOT_CONTEXT_PREFIXES)]
    return sorted(c for c in cols if runs[c].astype("string").fillna("<unset>").nunique() > 1)


def usable_runs(runs: pd.DataFrame, metric: str) -> Selection:
    """Split the runs table into runs usable for `metric` and runs kept apart, with reasons."""
    if not isinstance(metric, str) or "/" not in metric:
        raise ValueError(f"metric must be a slash-namespaced name like 'eval/fd_pixel', got {metric!r}")
    excluded: list[dict] = []

    def drop(frame: pd.DataFrame, reason) -> None:
        for _, row in frame.iterrows():
            excluded.append({"run_id": row["run_id"], "run_name": row["run_name"], "experiment": row["experiment"],
                             "metric": metric, "reason": reason(row) if callable(reason) else reason})

    problems = status_problems(runs)
    bad = problems.notna()
    drop(runs[bad], lambda r: problems[r.name])
    ok = runs[~bad]
    col = f"metrics.{metric}"
    has = ok[col].notna() if col in ok else pd.Series(False, index=ok.index)
    drop(ok[~has], f"did not report {metric}")
    ok = ok[has]
    if len(ok):
        keys = ok["provenance"].map(lambda p: provenance_key(p, metric))
        # within each context (e.g. one data spectrum of a data sweep), whose runs are averaged together: runs of
        # different data have different reference sets by design and are never averaged, so they must not outvote
        # each other
        ctx = context_columns(ok)
        groups = ok.groupby([ok[c].astype("string").fillna("<unset>") for c in ctx], sort=False).groups \
            if ctx else {(): ok.index}
        differs = pd.Series(False, index=ok.index)
        for index in groups.values():
            counts = keys[index].value_counts()
            # the majority wins; ties go to the lexically first key so the choice does not depend on run order
            reference = sorted(counts[counts == counts.max()].index)[0]
            bad = keys[index] != reference
            drop(ok.loc[bad[bad].index], lambda r, ref=reference: _describe_difference(ref, keys[r.name]))
            differs[bad[bad].index] = True
        ok = ok[~differs]
    ok, dupes = _latest_per_config(ok)
    drop(dupes, "superseded by a later run of the same configuration and seed")
    return Selection(ok.reset_index(drop=True), pd.DataFrame(excluded, columns=EXCLUDED_COLUMNS))


def _latest_per_config(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if runs.empty:
        return runs, runs
    params = [c for c in runs.columns if c.startswith("params.") and not c.startswith(MEASURED_PREFIXES)]
    values = runs[params].astype("string").fillna("<unset>")
    spectral = [c for c in params if c.startswith("params.spectral.") and c != "params.spectral.enabled"]
    values.loc[runs["sf"] == False, spectral] = "<off>"  # noqa: E712 (a baseline's SF settings are inert)
    key = pd.util.hash_pandas_object(values, index=False)  # one 64-bit hash per row: a join per row was seconds
    latest = runs.assign(_key=key).sort_values("start_time").groupby("_key").tail(1).index
    return runs.loc[runs.index.isin(latest)], runs.loc[~runs.index.isin(latest)]
