"""Reads MLflow runs into pandas/parquet, compares arms with uncertainty, writes reports. Never imports torch.

    from analysis import load_runs, build_report
    runs = load_runs("demo", "sqlite:///mlflow.db")            # one row per trial (docs/design.md §3)
    result = build_report(["demo"], "sqlite:///mlflow.db", Path("reports/demo"))
    print(result.verdict, result.html_path)

    python -m analysis.report --experiment demo --tracking-uri sqlite:///mlflow.db --out reports/demo

Names are imported on first use, so `import analysis` stays cheap (no mlflow, pandas or matplotlib until needed).
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "load_runs": "analysis.runs",
    "load_tables": "analysis.runs",
    "compare_arms": "analysis.compare",
    "verdict": "analysis.verdict",
    "build_report": "analysis.report",
    "ReportResult": "analysis.report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
