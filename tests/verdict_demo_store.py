"""An MLflow store that mirrors the `make demo` numbers, for before/after views of the verdict: a test fixture.

The demo (jit-tiny, 32 px, patch 8 vs 4, SF on/off, seeds 0-2) printed "SF lowers denoise_loss by 0.10
[-0.03, 0.33] at patch 8 ... its gain is 0.44 [0.11, 0.67] larger at patch 4" and fd_pixel at patch 8 as
-13 [-21, -7]. With 3 pairs the old expanded-percentile interval is [min, max] of the differences, so the paired
differences below reproduce those intervals: denoise_loss at patch 8 {-0.33, 0.00, +0.03} (mean -0.10), at patch 4
{-0.60, -0.45, -0.57} (mean -0.54); fd_pixel at patch 8 {-21, -10.5, -7} (mean -12.8), at patch 4 {-3, +4, +1}.
Runs are logged as the sweeps layer logs them (docs/design.md §3: parent run, role/status tags, dotted params).

    python tests/verdict_demo_store.py /tmp/ba                 # writes /tmp/ba/mlflow.db, experiment "demo"
    python -m analysis.report --experiment demo --tracking-uri sqlite:////tmp/ba/mlflow.db --out /tmp/ba/new \
        --no-log --metric eval/denoise_loss --metric eval/fd_pixel --metric eval/spec_err_high
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import specforce_contracts as C

DIFFS = {  # metric -> patch -> SF - baseline per seed 0, 1, 2
    "eval/denoise_loss": {8: [-0.33, 0.00, 0.03], 4: [-0.60, -0.45, -0.57]},
    "eval/fd_pixel": {8: [-21.0, -10.5, -7.0], 4: [-3.0, 4.0, 1.0]},
    "eval/spec_err_high": {8: [-0.02, 0.01, -0.01], 4: [0.01, -0.02, 0.00]},
}
LEVELS = {"eval/denoise_loss": 2.5, "eval/fd_pixel": 80.0, "eval/spec_err_high": 0.3}


def build(out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{out.resolve()}/mlflow.db"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("demo")
    if exp is not None:
        raise SystemExit(f"{out}/mlflow.db already holds an experiment 'demo'; use a fresh folder")
    exp_id = client.create_experiment("demo")
    parent = client.create_run(exp_id, run_name="demo", tags={C.ROLE_TAG: C.ROLE_SWEEP}).info.run_id
    rng = np.random.default_rng(0)
    for patch in (8, 4):
        base_level = {m: LEVELS[m] * (1 + 0.1 * rng.normal(size=3)) for m in LEVELS}  # seed-to-seed spread
        for sf in (False, True):
            for seed in range(3):
                name = f"p{patch}-{'sf' if sf else 'base'}-s{seed}"
                run_id = client.create_run(exp_id, run_name=name, tags={
                    C.ROLE_TAG: C.ROLE_TRIAL, C.PARENT_TAG: parent, C.TRIAL_ID_TAG: name,
                    C.STATUS_TAG: C.STATUS_COMPLETED}).info.run_id
                params = {"model.preset": "jit-tiny", "model.patch_size": patch, "model.tokens": (32 // patch) ** 2,
                          "spectral.enabled": sf, "spectral.schedule": "linear", "data.name": "grf",
                          "data.image_size": 32, "seed": seed,
                          # one-channel grf into jit-tiny's 32-wide bottleneck (docs/design.md §1): 2x at patch 8, 0.5x at 4
                          "model.bottleneck": 32, "model.compression_ratio": patch * patch / 32}
                metrics = [Metric(m, float(base_level[m][seed] + (DIFFS[m][patch][seed] if sf else 0.0)), 0, 5760)
                           for m in LEVELS]
                client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()],
                                 tags=[RunTag("mlflow.runName", name)])
                client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return uri


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/verdict_demo_store.py OUT_DIR")
    print(build(Path(sys.argv[1])))
