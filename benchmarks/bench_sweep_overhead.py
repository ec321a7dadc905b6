"""Per-trial overhead of a sweep on embedded local Ray: Ray's stock per-trial launch vs the lean one, side by side.

Runs the same grid (jit-tiny, patch 8 and 4, SF off/on, smoke-sized trials, 1 CPU per trial, 2 at a time) through
the real `run_sweep` path once per launch mode (`SPECFORCE_TRIAL_LAUNCH=stock`: Ray's own per-trial settings;
`lean`: the default, see sweeps/trial.py), each in a fresh process with its own Ray cluster, alternating
the modes when repeated so a change in machine load hits both. It samples /proc/stat every second and reads the
trials' own time from MLflow: own time = training time (images / images_per_s over each log interval) + evaluation
time (eval/seconds).

    overhead per trial = (sweep wall time - sum(own time) / concurrency) / trials
    CPU utilisation    = busy jiffies / all jiffies over the sweep, all cores

and, from the timeline every trial process writes ($SPECFORCE_TIMELINE, sweeps/trial.py `mark`), where a trial's
seconds went: Tune actor start, Train controller + worker group start, worker set-up (data, model, evaluator),
training + evaluation, teardown, and the processes Ray started per trial (State API).

    .venv/bin/python -m benchmarks.bench_sweep_overhead                 # ~7 min on 2 cores: stock, lean
    .venv/bin/python -m benchmarks.bench_sweep_overhead --repeats 2     # stock, lean, stock, lean
    .venv/bin/python -m benchmarks.bench_sweep_overhead --seeds 2       # 8 trials per sweep
    .venv/bin/python -m benchmarks.bench_sweep_overhead --import-profile   # + import seconds per Ray process kind

`--import-profile` runs every Ray process with `PYTHONPROFILEIMPORTTIME=1` (it slows imports a little, so its wall
times are not the headline figures) and reads each process's log: seconds spent importing, per actor class, and the
heaviest top-level imports. On 2 cores that CPU time, not waiting, is most of a trial's start-up.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODES = ("stock", "lean")
# timeline intervals (start event, end event) -> what the seconds are; rank 0's events stand for the worker group
SEGMENTS = (
    ("tune_trial_start", "fit_start", "trial actor: function start -> TorchTrainer.fit"),
    ("fit_start", "loop_start_r0", "fit -> worker's first line (controller, worker group, process group)"),
    ("loop_start_r0", "setup_done_r0", "worker set-up (imports on first use, data, model, evaluator)"),
    ("setup_done_r0", "loop_end_r0", "training + evaluation + reports"),
    ("loop_end_r0", "fit_end", "worker's last line -> fit returns (poll, shutdown)"),
    ("fit_end", "tune_trial_complete", "fit returns -> Tune marks the trial complete"),
)


def _cpu_times() -> tuple[int, int]:
    fields = [int(v) for v in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _spec(seeds: int):
    from sweeps.spec import spec_from_dict

    tree = yaml.safe_load((ROOT / "sweeps" / "configs" / "smoke.yaml").read_text())
    tree["name"] = "bench_overhead"
    tree["grid"] = {"model.patch_size": [8, 4], "spectral.enabled": [False, True]}
    if seeds > 1:
        tree["grid"]["seed"] = list(range(seeds))
    tree["max_concurrent_trials"] = 2
    return spec_from_dict(tree)


def run_one(mode: str, seeds: int, out: pathlib.Path, import_profile: bool = False) -> dict:
    """One sweep in this process (called in a fresh subprocess per mode)."""
    os.environ["SPECFORCE_TRIAL_LAUNCH"] = mode
    if import_profile:  # inherited by the local Ray's processes, which log it to their worker-*.err files
        os.environ["PYTHONPROFILEIMPORTTIME"] = "1"
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"bench-sweep-{mode}-"))
    timeline = work / "timeline.jsonl"
    os.environ["SPECFORCE_TIMELINE"] = str(timeline)
    from mlflow.tracking import MlflowClient

    from sweeps.runner import run_sweep

    spec = _spec(seeds)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    samples: list[tuple[int, int]] = [_cpu_times()]
    stop = threading.Event()

    def sample():
        while not stop.wait(1.0):
            samples.append(_cpu_times())

    thread = threading.Thread(target=sample, daemon=True)
    t0 = time.time()
    thread.start()
    result = run_sweep(spec, tracking_uri=uri, storage=str(work / "ray_results"), num_cpus=2)
    wall = time.time() - t0
    stop.set()
    thread.join()
    busy = (samples[-1][0] - samples[0][0]) / max(1, samples[-1][1] - samples[0][1])
    processes = _actors_per_sweep()
    imports = _import_profile() if import_profile else {}

    client = MlflowClient(uri)
    own = []
    for run in client.search_runs([result.experiment_id], "tags.`specforce.role` = 'trial'"):
        rid = run.info.run_id
        speed = {m.step: m.value for m in client.get_metric_history(rid, "train/images_per_s")}
        steps = sorted(speed)
        train_s = sum((b - a) / speed[b] for a, b in zip([0] + steps[:-1], steps))
        eval_s = sum(m.value for m in client.get_metric_history(rid, "eval/seconds"))
        own.append(train_s + eval_s)
    events = [json.loads(line) for line in timeline.read_text().splitlines()]
    # the first trial process (not this driver, which marks Tune's events too)
    first_actor = min((e["t"] for e in events if e["event"] == "process_created" and e["pid"] != os.getpid()),
                      default=t0)
    concurrency = spec.max_concurrent_trials
    summary = {"mode": mode, "trials": len(own), "errored": result.errored, "wall_s": round(wall, 1),
               "own_s_per_trial": round(sum(own) / len(own), 1),
               "overhead_s_per_trial": round((wall - sum(own) / concurrency) / len(own), 1),
               # Ray start, MLflow store, Tune set-up: paid once per sweep, not per trial
               "sweep_start_s": round(first_actor - t0, 1),
               "overhead_s_per_trial_after_start": round((wall - (first_actor - t0) - sum(own) / concurrency)
                                                         / len(own), 1),
               "cpu_utilisation": round(busy, 3), "cores": os.cpu_count(),
               "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
               "segments_s": _segments(events, os.getpid()), "actors_per_sweep": processes,
               "import_s_by_actor": imports}
    out.write_text(json.dumps(summary, indent=2))
    return summary


def _segments(events: list[dict], driver_pid: int) -> dict[str, float]:
    """Mean seconds per timeline segment over trials, plus the trial actor's own start when a new one was made."""
    by_trial: dict[str, dict[str, float]] = collections.defaultdict(dict)
    for e in events:
        if e["event"] == "process_created" and e["pid"] == driver_pid:
            continue
        by_trial[e["trial"]].setdefault(e["event"], e["t"])  # first occurrence (a restarted group would repeat)
    first_start = min((ev["tune_trial_start"] for ev in by_trial.values() if "tune_trial_start" in ev), default=0.0)
    out: dict[str, float] = {}
    for start, end, label in SEGMENTS:
        values = [ev[end] - ev[start] for ev in by_trial.values() if start in ev and end in ev]
        if values:
            out[label] = round(statistics.mean(values), 2)
    # a new trial actor's process start + imports, before Tune calls on_trial_start. Only trials after the first
    # wave: the first wave's actors take processes Ray pre-started with the cluster. A reused actor has none.
    starts = [ev["tune_trial_start"] - ev["process_created"] for ev in by_trial.values()
              if first_start < ev.get("process_created", 0) < ev.get("tune_trial_start", 0)]
    first_done = min((ev["tune_trial_complete"] for ev in by_trial.values() if "tune_trial_complete" in ev),
                     default=first_start)
    later = sum(ev.get("tune_trial_start", 0) > first_done for ev in by_trial.values())
    label = "new trial actor: process start -> trial start (later waves)"
    out[label] = round(statistics.mean(starts), 2) if starts else 0.0
    out[f"trials after the first wave that needed a new trial actor (of {later})"] = len(starts)
    return out


_IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def _import_profile() -> dict[str, dict]:
    """Per actor class: processes, mean seconds importing per process, and the heaviest top-level imports."""
    import ray

    logs = pathlib.Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    by_class: dict[str, list[tuple[float, dict[str, float]]]] = collections.defaultdict(list)
    for err in logs.glob("worker-*.err"):
        out = err.with_suffix(".out")
        match = re.search(r":actor_name:(\w+)", out.read_text(errors="replace")) if out.is_file() else None
        total, top = 0.0, {}
        for line in err.read_text(errors="replace").splitlines():
            m = _IMPORT_LINE.match(line)
            if m:
                total += int(m[1]) / 1e6
                if len(m[3]) == 1:  # a top-level import (its cumulative time includes what it pulled in)
                    top[m[4]] = top.get(m[4], 0.0) + int(m[2]) / 1e6
        if total:
            by_class[match[1] if match else "(idle worker)"].append((total, top))
    summary = {}
    for cls, rows in sorted(by_class.items()):
        heavy: dict[str, float] = collections.Counter()
        for _, top in rows:
            heavy.update(top)
        summary[cls] = {"processes": len(rows), "import_s_per_process": round(statistics.mean(t for t, _ in rows), 2),
                        "heaviest": {k: round(v / len(rows), 2) for k, v in heavy.most_common(3)}}
    return summary


def _actors_per_sweep() -> dict[str, int]:
    """Actor processes Ray started during the sweep, by class (the State API of the still-running cluster)."""
    from ray.util.state import list_actors

    counts = collections.Counter(a.class_name for a in list_actors(limit=10_000, raise_on_missing_output=False))
    return dict(sorted(counts.items()))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode, alternating (default 1)")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per arm: trials per sweep = 4 x seeds")
    parser.add_argument("--import-profile", action="store_true",
                        help="also log every Ray process's imports and print import seconds per actor class")
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)  # internal: one sweep in this process
    parser.add_argument("--out", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        return run_one(args.one, args.seeds, args.out, args.import_profile)

    results: dict[str, list[dict]] = {m: [] for m in MODES}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for mode in MODES:
            out = pathlib.Path(tempfile.mkstemp(suffix=f"-{mode}.json")[1])
            env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            # the sweep's own output goes to its log file; only the summary lines come back here
            proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_sweep_overhead", "--one", mode,
                                   "--seeds", str(args.seeds), "--out", str(out)]
                                  + (["--import-profile"] if args.import_profile else []), cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"bench_sweep_overhead: the {mode} sweep failed (exit {proc.returncode}):\n"
                                 f"{proc.stdout[-4000:]}")
            results[mode].append(json.loads(out.read_text()))
            print(json.dumps(results[mode][-1], indent=2), flush=True)

    def mean(mode: str, key: str) -> float:
        return round(statistics.mean(r[key] for r in results[mode]), 1)

    summary = {"load_avg_1min_before": round(load_before, 2), "repeats": args.repeats,
               "trials_per_sweep": results["lean"][0]["trials"]}
    for key in ("overhead_s_per_trial", "overhead_s_per_trial_after_start", "wall_s", "own_s_per_trial",
                "sweep_start_s"):
        summary[key] = {m: mean(m, key) for m in MODES}
    summary["overhead_ratio_lean_over_stock"] = round(
        summary["overhead_s_per_trial"]["lean"] / summary["overhead_s_per_trial"]["stock"], 2)
    print("\nwhere a trial's seconds go (mean per trial, s):")
    labels = list(dict.fromkeys(k for m in MODES for r in results[m] for k in r["segments_s"]))
    print(f"  {'stock':>7} {'lean':>7}  segment")
    for label in labels:
        cells = []
        for m in MODES:
            values = [r["segments_s"][label] for r in results[m] if label in r["segments_s"]]
            cells.append(f"{statistics.mean(values):7.2f}" if values else f"{'-':>7}")
        print(f"  {cells[0]} {cells[1]}  {label}")
    print("actor processes per sweep (stock -> lean):")
    classes = sorted({c for m in MODES for c in results[m][0]["actors_per_sweep"]})
    for c in classes:
        stock, lean = (results[m][0]["actors_per_sweep"].get(c, 0) for m in MODES)
        print(f"  {c:32s} {stock:3d} -> {lean:3d}")
    if args.import_profile:
        print("seconds importing per process (mean), stock -> lean:")
        classes = sorted({c for m in MODES for c in results[m][0]["import_s_by_actor"]})
        for c in classes:
            cells = [results[m][0]["import_s_by_actor"].get(c) for m in MODES]
            text = [f"{x['processes']:2d} x {x['import_s_per_process']:5.2f} s" if x else f"{'-':>11}" for x in cells]
            heaviest = (cells[1] or cells[0])["heaviest"]
            print(f"  {c:30s} {text[0]} -> {text[1]}   heaviest: {heaviest}")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
