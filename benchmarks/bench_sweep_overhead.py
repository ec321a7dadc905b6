"""Per-trial overhead of a sweep on embedded local Ray, and CPU utilisation while it runs.

Runs a 4-trial grid (jit-tiny, patch 8 and 4, SF off/on, 1 CPU per trial, 2 at a time) through the real
`specforce sweep` path, samples /proc/stat every second, and reads the trials' own time from MLflow:
own time = training time (images / images_per_s over each log interval) + evaluation time (eval/seconds).

    overhead per trial = (sweep wall time - sum(own time) / concurrency) / trials
    CPU utilisation    = busy jiffies / all jiffies over the sweep, all cores

    .venv/bin/python -m benchmarks.bench_sweep_overhead          # ~3 min on 2 cores
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
import threading
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _cpu_times() -> tuple[int, int]:
    fields = [int(v) for v in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def main() -> dict:
    from mlflow.tracking import MlflowClient

    from sweeps.runner import run_sweep
    from sweeps.spec import spec_from_dict

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tree = yaml.safe_load((ROOT / "sweeps" / "configs" / "smoke.yaml").read_text())
    tree["name"] = "bench_overhead"
    tree["grid"] = {"model.patch_size": [8, 4], "spectral.enabled": [False, True]}
    tree["max_concurrent_trials"] = 2
    spec = spec_from_dict(tree)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    samples: list[tuple[int, int]] = [_cpu_times()]
    stop = threading.Event()

    def sample():
        while not stop.wait(1.0):
            samples.append(_cpu_times())

    thread = threading.Thread(target=sample, daemon=True)
    t0 = time.time()
    thread.start()
    out = run_sweep(spec, tracking_uri=uri, storage=str(work / "ray_results"), num_cpus=2)
    wall = time.time() - t0
    stop.set()
    thread.join()
    busy = (samples[-1][0] - samples[0][0]) / max(1, samples[-1][1] - samples[0][1])

    client = MlflowClient(uri)
    own = []
    for run in client.search_runs([out.experiment_id], "tags.`specforce.role` = 'trial'"):
        rid = run.info.run_id
        speed = {m.step: m.value for m in client.get_metric_history(rid, "train/images_per_s")}
        steps = sorted(speed)
        train_s = sum((b - a) / speed[b] for a, b in zip([0] + steps[:-1], steps))
        eval_s = sum(m.value for m in client.get_metric_history(rid, "eval/seconds"))
        own.append(train_s + eval_s)
    concurrency = spec.max_concurrent_trials
    result = {"trials": len(own), "wall_s": round(wall, 1), "own_s_per_trial": round(sum(own) / len(own), 1),
              "overhead_s_per_trial": round((wall - sum(own) / concurrency) / len(own), 1),
              "cpu_utilisation": round(busy, 3), "cores": os.cpu_count()}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
