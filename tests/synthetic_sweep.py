"""A synthetic ablation logged through the real MLflow client, laid out like a sweep (docs/design.md §3): a test fixture.

For the analysis tests, benchmarks/bench_report.py and trying the report without training: one parent run (specforce.role=sweep) and one
child per trial with the params, metric histories, status and provenance tags the sweeps layer logs. Each metric
value is `level(patch) + seed_offset(seed, patch) + effect(patch) * sf + noise`; the seed offset is shared by
both arms of a seed, as in real seed-paired runs, so paired differences see only `effect + noise`.

    PYTHONPATH=tests python -c "from synthetic_sweep import log_synthetic_sweep; \\
        print(log_synthetic_sweep('sqlite:////tmp/synth.db', 'synth', effects={8: -6.0, 4: 0.0}))"
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

import specforce_contracts as C

LEVELS = {C.FD_PIXEL: 70.0, C.DENOISE_LOSS: 0.5, C.IS: 2.0}
BUCKETS = C.t_bucket_names()  # ("0.0-0.2", ...): the loop's t-buckets
DATA_ALPHA, DATA_R0 = 2.0, 0.08


@dataclass
class SyntheticSweep:
    experiment_id: str
    sweep_run_id: str
    trial_run_ids: dict[str, str] = field(default_factory=dict)  # trial id -> run id


def _sample_grid(seed: int, sf: bool) -> np.ndarray:
    grid = np.random.default_rng(seed).random((32, 32, 3))
    if sf:  # visibly different so a reader can tell the arms apart in the side-by-side figure
        grid = np.clip(grid * 0.5 + np.linspace(0, 0.5, 32)[None, :, None], 0, 1)
    return (grid * 255).astype(np.uint8)


def _provenance(num_samples: int) -> str:
    entry = {"extractor": "pixel", "weights_sha256": None, "num_samples": num_samples, "reference_sha256": "ab12"}
    fd = C.FD_PIXEL.removeprefix(C.EVAL_PREFIX)
    return json.dumps({fd: entry, fd + C.FLOOR_SUFFIX: entry})


def log_synthetic_sweep(tracking_uri: str, experiment: str, *, patch_sizes: Sequence[int] = (8, 4),
                        seeds: Sequence[int] = (0, 1, 2), effects: Mapping[int, float] | None = None,
                        noise: float = 0.5, seed_spread: float = 5.0, arms: Sequence[bool] = (False, True),
                        image_size: int = 32, total_images: int = 3200, eval_points: int = 3,
                        train_points: int = 10, statuses: Mapping[str, str] | None = None,
                        num_samples: Mapping[str, int] | None = None, search_trials: int = 0,
                        sample_images: bool = False, rng_seed: int = 0, sweep_name: str = "sweep") -> SyntheticSweep:
    """Log one synthetic sweep; returns the run ids.

    effects: patch size -> additive SF effect on eval/fd_pixel (scaled to the other metrics' levels).
    statuses / num_samples: per trial id (e.g. "p8-sf-s1"), override the completed status / eval sample count.
    search_trials: extra SF trials tagged specforce.search=optuna with random spectral.alpha and schedule.
    """
    if not patch_sizes or any(image_size % p for p in patch_sizes):
        raise ValueError(f"patch_sizes must be non-empty divisors of image_size={image_size}, got {patch_sizes!r}")
    effects = dict(effects or {})
    statuses, num_samples = dict(statuses or {}), dict(num_samples or {})
    rng = np.random.default_rng(rng_seed)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    parent = client.create_run(exp_id, run_name=sweep_name, tags={C.ROLE_TAG: C.ROLE_SWEEP}).info.run_id
    spec = {"name": experiment, "search": {"metric": C.FD_PIXEL, "mode": C.search_mode(C.FD_PIXEL), "space": {
        "spectral.alpha": {"type": "float", "low": 0.5, "high": 4.0, "log": True},
        "spectral.schedule": {"type": "categorical", "choices": ["linear", "contour", "snr"]}}}}
    client.log_text(parent, json.dumps(spec), C.ARTIFACT_SPEC)
    result = SyntheticSweep(exp_id, parent)
    offsets = {(s, p): rng.normal(0.0, seed_spread) for s in seeds for p in patch_sizes}

    trials = [(p, sf, s, None) for p in patch_sizes for sf in arms for s in seeds]
    for i in range(search_trials):
        alpha = float(np.exp(rng.uniform(np.log(0.5), np.log(4.0))))
        schedule = ["linear", "contour", "snr"][i % 3]
        trials.append((patch_sizes[i % len(patch_sizes)], True, seeds[0], (schedule, alpha, i)))
    now = int(time.time() * 1000)
    for patch, sf, seed, searched in trials:
        trial_id = f"p{patch}-{'sf' if sf else 'base'}-s{seed}" + (f"-opt{searched[2]}" if searched else "")
        status = statuses.get(trial_id, "completed")
        tags = {C.ROLE_TAG: C.ROLE_TRIAL, C.PARENT_TAG: parent, C.TRIAL_ID_TAG: trial_id,
                C.STATUS_TAG: status, C.PROVENANCE_TAG: _provenance(num_samples.get(trial_id, 1000))}
        if searched:
            tags[C.SEARCH_TAG] = C.SEARCH_OPTUNA
        schedule, alpha = (searched[0], searched[1]) if searched else ("linear", 2.0)
        run_id = client.create_run(exp_id, run_name=trial_id, tags=tags).info.run_id
        params = {"model.preset": "jit-tiny", "model.patch_size": patch, "model.tokens": (image_size // patch) ** 2,
                  "spectral.enabled": sf, "spectral.schedule": schedule, "spectral.alpha": alpha,
                  "spectral.c_min": 0.05, "spectral.c_max": 1.0, "spectral.kappa": 30.0, "spectral.c_const": 0.5,
                  "spectral.identity_at_data": False, "data.name": "grf", "data.image_size": image_size,
                  "seed": seed, "optim.total_images": total_images, "eval.num_samples": 1000,
                  C.DATA_SPECTRUM_PARAMS["alpha"]: DATA_ALPHA, C.DATA_SPECTRUM_PARAMS["r0"]: DATA_R0}
        # an off-optimum alpha costs the searched trials a little, so the search analysis has a signal
        search_cost = 3.0 * abs(np.log(alpha / 1.5)) if searched else 0.0
        effect = effects.get(patch, 0.0) * sf + search_cost
        steps = np.linspace(total_images / eval_points, total_images, eval_points).astype(int)
        if status != "completed":
            steps = steps[: max(1, eval_points // 2)]
        metrics: list[Metric] = []
        for name, level in LEVELS.items():
            scale = level / LEVELS[C.FD_PIXEL]
            sign = -1.0 if C.higher_is_better(name) else 1.0
            final = level + scale * (offsets[(seed, patch)] + sign * effect + rng.normal(0.0, noise))
            for j, step in enumerate(steps):  # improves over training towards the final value
                decay = 1.0 + 0.5 * (len(steps) - 1 - j) / max(1, len(steps) - 1)
                value = final * decay if sign > 0 else final / decay
                metrics.append(Metric(name, float(value), now, int(step)))
        for step in steps:
            metrics.append(Metric(C.FD_PIXEL + C.FLOOR_SUFFIX, float(55.0 + rng.normal(0, 0.3)), now, int(step)))
            for k, bucket in enumerate(BUCKETS):
                value = 0.2 + 0.15 * k + 0.01 * (effects.get(patch, 0.0) * sf if k < 2 else 0) + rng.normal(0, 2e-3)
                metrics.append(Metric(C.DENOISE_BUCKET_PREFIX + bucket, float(value), now, int(step)))
        for step in np.linspace(total_images / train_points, steps[-1], train_points).astype(int):
            loss = 0.3 + 1.0 / (1.0 + step / 500.0) - 0.02 * sf + rng.normal(0, 0.01)
            metrics.append(Metric(C.TRAIN_LOSS, float(loss), now, int(step)))
        client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()],
                         tags=[RunTag("mlflow.runName", trial_id)])
        if sample_images:
            client.log_image(run_id, _sample_grid(seed * 7 + patch, sf), C.ARTIFACT_FINAL_SAMPLES)
            client.log_text(run_id, json.dumps({"r": [0.1, 0.5, 1.0], "data": [1.0, 0.1, 0.01],
                                                "samples": [1.0, 0.12, 0.02]}), C.ARTIFACT_SPECTRA)
        client.set_terminated(run_id, status="FAILED" if status == "failed" else "FINISHED")
        result.trial_run_ids[trial_id] = run_id
    client.set_terminated(parent, status="FINISHED")
    return result

