"""Parquet export of the runs and history tables with explicit pyarrow schemas (no type guessing per file).

Params and tags are strings exactly as MLflow stores them; metrics are float64; the typed analysis keys keep their
types (nullable ints, bool), so two exports of different sweeps concatenate cleanly.

    python -c "from analysis.runs import load_tables; from analysis.tables import write_parquet; \\
        t = load_tables('demo', 'sqlite:///mlflow.db'); print(write_parquet(t.runs, t.history, 'out'))"
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.history import HISTORY_COLUMNS

_FIXED = {
    "run_id": pa.string(), "run_name": pa.string(), "experiment": pa.string(), "experiment_id": pa.string(),
    "sweep_run_id": pa.string(), "sweep_name": pa.string(), "trial_id": pa.string(), "role": pa.string(),
    "status": pa.string(), "mlflow_status": pa.string(), "search": pa.string(), "provenance": pa.string(),
    "start_time": pa.timestamp("ms", tz="UTC"), "end_time": pa.timestamp("ms", tz="UTC"),
    "patch_size": pa.int64(), "tokens": pa.int64(), "image_size": pa.int64(), "seed": pa.int64(),
    "sf": pa.bool_(), "schedule": pa.string(), "alpha": pa.float64(),
}
_PREFIX_TYPES = {"params.": pa.string(), "tags.": pa.string(), "metrics.": pa.float64(), "best.": pa.float64()}
HISTORY_SCHEMA = pa.schema([("run_id", pa.string()), ("metric", pa.string()), ("step", pa.int64()),
                            ("value", pa.float64()), ("timestamp", pa.int64())])


def runs_schema(columns) -> pa.Schema:
    """The schema for a runs table with these columns; unknown columns are an error, not a guess."""
    fields = []
    for col in columns:
        if col in _FIXED:
            fields.append(pa.field(col, _FIXED[col]))
            continue
        kind = next((t for p, t in _PREFIX_TYPES.items() if col.startswith(p)), None)
        if kind is None:
            raise ValueError(f"runs table column {col!r} has no declared type (expected one of {sorted(_FIXED)} "
                             f"or a prefix in {sorted(_PREFIX_TYPES)})")
        fields.append(pa.field(col, kind))
    return pa.schema(fields)


def write_parquet(runs: pd.DataFrame, history: pd.DataFrame, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `runs.parquet` and `history.parquet` into out_dir; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if list(history.columns) != list(HISTORY_COLUMNS):
        raise ValueError(f"history columns must be {list(HISTORY_COLUMNS)}, got {list(history.columns)}")
    frame = runs.copy()
    for col in frame.columns:  # pyarrow wants None, not NaN, in string columns
        if col in _FIXED and _FIXED[col] == pa.string() or col.startswith(("params.", "tags.")):
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
    runs_table = pa.Table.from_pandas(frame, schema=runs_schema(frame.columns), preserve_index=False)
    history_table = pa.Table.from_pandas(history, schema=HISTORY_SCHEMA, preserve_index=False)
    runs_path, history_path = out / "runs.parquet", out / "history.parquet"
    pq.write_table(runs_table, runs_path)
    pq.write_table(history_table, history_path)
    return runs_path, history_path
