"""`specforce report` over N synthetic trial runs: today's code beside an earlier revision, in one run.

For each size (default 1,000 and 10,000 runs: 4 patch sizes x 2 arms x N/8 seeds) it logs a synthetic sweep (the
tests' fixture, tests/synthetic_sweep.py) into a fresh sqlite MLflow store (setup, not part of the figures; beyond
1,000 runs the logged runs are replicated in SQL with new run ids and seeds, `replicate`), then times in fresh
processes, one after the other:

- `new`: `build_report` of this checkout (bulk metric histories, analysis.history);
- `before`: `build_report` of `--before REV` (default: the last revision that read one history per run and key),
  extracted with `git archive` into a temporary folder, on the same store;
- `load_tables` alone (runs + metric histories), bulk vs search_runs pages + one history call per (run, key), in
  this checkout.

Each process reports its wall seconds and peak resident memory (ru_maxrss); the table prints seconds and ratios,
never a pass/fail.

    python -m benchmarks.bench_report                          # 1,000 and 10,000 runs (about 15 min on 2 cores)
    python -m benchmarks.bench_report --runs 200 --before none  # quick look, this checkout only
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATCHES = (16, 8, 4, 2)
TIMEOUT_S = 900  # per measured process: the old per-key path at 10,000 runs may take longer on a busy machine
BEFORE = "bb30a6c"  # one get_metric_history call per (run, key); prose-first report

# run in a child process so each figure has its own peak memory; argv: uri, out, mode
CHILD = r"""
import json, resource, sys, time
uri, out, mode = sys.argv[1:4]
t0 = time.perf_counter()
if mode == "report":
    from analysis.report import build_report
    result = build_report(["bench"], uri, out)
    extra = {"verdict": result.verdict[:160]}
else:
    from analysis.runs import load_tables
    tables = load_tables("bench", uri, bulk=(mode == "load-bulk"))
    extra = {"history_rows": len(tables.history)}
print(json.dumps({"seconds": round(time.perf_counter() - t0, 2),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), **extra}))
"""


def _child(src: Path, uri: str, out: Path, mode: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(src), MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false")
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, uri, str(out), mode], cwd=src, env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"seconds": None, "error": f"did not finish within {TIMEOUT_S} s"}
    if proc.returncode:  # a path that cannot produce a report at this size is a finding, not a crash of the bench
        return {"seconds": None, "error": (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _checkout(rev: str, dst: Path) -> Path:
    dst.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "analysis", "specforce_contracts.py"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    return dst


LOGGED_MAX = 1000  # runs logged through the client; larger stores replicate them in SQL (see replicate)


def replicate(db: Path, copies: int, seeds: int) -> None:
    """Grow a sqlite store to `copies` x its trials in SQL: each copy gets new run ids, seeds shifted by `seeds`,
    names suffixed -rK and every metric value jittered by up to ±1%. Logging 10,000 runs through the client takes
    half an hour on two busy cores; this takes seconds and gives the report the same rows to read."""
    import sqlite3

    con = sqlite3.connect(db)
    con.execute("CREATE TEMP TABLE originals AS SELECT run_uuid FROM tags "
                "WHERE key = 'specforce.role' AND value = 'trial'")  # copies of copies would collide
    trials = "SELECT run_uuid FROM originals"
    cols = {t: [r[1] for r in con.execute(f"PRAGMA table_info({t})")]
            for t in ("runs", "params", "tags", "metrics", "latest_metrics")}
    for k in range(1, copies):
        new_id = f"substr(run_uuid, 1, 28) || printf('r%03d', {k})"
        special = {
            "run_uuid": new_id, "name": f"name || '-r{k}'", "start_time": f"start_time + {k}",
            "value": {"params": f"CASE WHEN key = 'seed' THEN CAST(CAST(value AS INTEGER) + {k * seeds} AS TEXT) "
                                "ELSE value END",
                      "tags": f"CASE WHEN key IN ('mlflow.runName', 'specforce.trial_id') THEN value || '-r{k}' "
                              "ELSE value END",
                      "metrics": "value * (1 + 0.02 * ((abs(random()) % 1000) / 1000.0 - 0.5))",
                      "latest_metrics": "value * (1 + 0.02 * ((abs(random()) % 1000) / 1000.0 - 0.5))"}}
        for table, names in cols.items():
            exprs = [special["value"].get(table, c) if c == "value" else special.get(c, c) for c in names]
            con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(exprs)} FROM {table} "
                        f"WHERE run_uuid IN ({trials})")
    con.commit()
    con.close()


def measure(n_runs: int, work: Path, before: Path | None) -> dict:
    from mlflow.tracking import MlflowClient

    sys.path.insert(0, str(ROOT / "tests"))  # the synthetic store is a test fixture, not package code
    from synthetic_sweep import log_synthetic_sweep

    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work.resolve()}/bench.db"
    client = MlflowClient(uri)
    client.search_experiments()  # schema migration is setup, not report time
    t0 = time.perf_counter()
    if client.get_experiment_by_name("bench") is None:  # a --dir from an earlier run keeps its store
        copies = max(1, n_runs // LOGGED_MAX)
        seeds = max(2, n_runs // (2 * len(PATCHES) * copies))
        log_synthetic_sweep(uri, "bench", patch_sizes=PATCHES, seeds=range(seeds), image_size=32,
                            effects={16: -6.0, 8: -3.0, 4: -1.0, 2: 0.0})
        replicate(work / "bench.db", copies, seeds)
    row = {"runs": n_runs, "log_runs_s": round(time.perf_counter() - t0, 1)}
    row["load_bulk"] = _child(ROOT, uri, work / "h", "load-bulk")
    row["load_per_key"] = _child(ROOT, uri, work / "h", "load-per-key")
    row["report_new"] = _child(ROOT, uri, work / "new", "report")
    if before is not None:
        row["report_before"] = _child(before, uri, work / "before", "report")
    return row


def _secs(figure: dict) -> str:
    return f"{figure['seconds']:.1f} s" if figure["seconds"] is not None else f"failed ({figure['error']})"


def _ratio(slow: dict, fast: dict) -> str:
    if slow["seconds"] is None or fast["seconds"] is None:
        return ""
    return f" ({slow['seconds'] / fast['seconds']:.1f}x)"


def summary(row: dict) -> str:
    new, bulk, per_key = row["report_new"], row["load_bulk"], row["load_per_key"]
    rows = bulk.get("history_rows", "?")
    lines = [f"{row['runs']:>6} runs  load runs + histories: bulk {_secs(bulk)} vs per (run, key) {_secs(per_key)}"
             f"{_ratio(per_key, bulk)}; {rows} history rows",
             f"{'':>6}       report: new {_secs(new)}, peak {new.get('peak_rss_mb', '?')} MB"]
    if "report_before" in row:
        old = row["report_before"]
        lines[-1] += f"; before {_secs(old)}, peak {old.get('peak_rss_mb', '?')} MB{_ratio(old, new)}"
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1000, 10_000],
                        help="trial run counts to measure (each rounded to 4 patch sizes x 2 arms)")
    parser.add_argument("--before", default=BEFORE, help="git revision to compare with, or 'none'")
    parser.add_argument("--dir", type=Path, default=None,
                        help="working folder; a store already there is reused (default: a temporary one)")
    args = parser.parse_args()
    if min(args.runs) < 16:
        raise ValueError(f"--runs must be at least 16 (4 patch sizes x 2 arms x 2 seeds), got {args.runs}")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.dir or Path(tmp)
        before = None if args.before == "none" else _checkout(args.before, Path(tmp) / f"src-{args.before}")
        rows = []
        for n in args.runs:
            rows.append(measure(n, work / f"n{n}", before))
            print(summary(rows[-1]), flush=True)
        print(json.dumps({"before": args.before, "cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
