"""Run every benchmark in turn (`make bench`); each prints its own figures. Ratios within one run, never pass/fail.

    .venv/bin/python -m benchmarks.run_all            # ~25 min on 2 CPU cores
"""
import subprocess
import sys

BENCHMARKS = ["bench_sf_cost", "bench_jit_throughput", "bench_eval", "bench_report", "bench_sweep_overhead",
              "bench_sequential", "bench_formats", "bench_data"]

if __name__ == "__main__":
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== benchmarks.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"]).returncode != 0:
            failed.append(name)
    sys.exit(f"failed: {', '.join(failed)}" if failed else 0)
