"""Time to build a report over N synthetic trial runs (default 1,000) in a fresh sqlite MLflow store.

Measures, in one process: logging the runs (setup, not part of the figure), loading runs + metric histories,
loading runs alone (no histories), and the whole `build_report` (load, compare, bootstrap, plots, HTML/MD,
parquet, logging to the sweep run). Prints seconds and ratios; never a pass/fail.

    python -m benchmarks.bench_report                 # 1,000 runs: 4 patch sizes x 2 arms x 125 seeds
    python -m benchmarks.bench_report --runs 200
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from analysis.report import build_report
from analysis.runs import load_tables
from analysis.synthetic import log_synthetic_sweep

PATCHES = (16, 8, 4, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="trial runs (rounded to 4 patch sizes x 2 arms)")
    parser.add_argument("--dir", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args()
    if args.runs < 16:
        raise ValueError(f"--runs must be at least 16 (4 patch sizes x 2 arms x 2 seeds), got {args.runs}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{work.resolve()}/bench.db"
        MlflowClient(uri).search_experiments()  # schema migration is setup, not report time
        seeds = range(max(2, args.runs // (2 * len(PATCHES))))
        t0 = time.perf_counter()
        log_synthetic_sweep(uri, "bench", patch_sizes=PATCHES, seeds=seeds, image_size=32,
                            effects={16: -6.0, 8: -3.0, 4: -1.0, 2: 0.0})
        t_log = time.perf_counter() - t0
        t0 = time.perf_counter()
        tables = load_tables("bench", uri)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_tables("bench", uri, with_history=False)
        t_runs = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = build_report(["bench"], uri, work / "report")
        t_report = time.perf_counter() - t0
        figures = {
            "runs": len(tables.runs), "history_rows": len(tables.history),
            "log_runs_s": round(t_log, 2), "load_runs_and_history_s": round(t_load, 2),
            "load_runs_only_s": round(t_runs, 2), "build_report_s": round(t_report, 2),
            "history_share_of_load": round(1 - t_runs / t_load, 3),
            "load_share_of_report": round(t_load / t_report, 3),
            "report_ms_per_run": round(1000 * t_report / len(tables.runs), 2),
        }
        print(json.dumps(figures, indent=2))
        print(result.verdict)


if __name__ == "__main__":
    main()
