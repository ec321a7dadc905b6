"""Evaluation cost on this machine: Inception features/s, one 2048-d Fréchet distance, and how evaluating N
jit-tiny samples splits between sampling and feature extraction. Measured figures, never pass/fail.

    .venv/bin/python -m benchmarks.bench_eval                      # CPU, random Inception weights if none found
    .venv/bin/python -m benchmarks.bench_eval --num-samples 64 --steps 10 --device cuda

Inception weights: the real file if `resolve_inception_weights` finds one (SPECFORCE_INCEPTION_WEIGHTS, hub
cache), else a randomly initialised state dict: the cost is identical, only the numbers are meaningless.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch


def _weights(tmp: str):
    from trainers.evaluation.inception import resolve_inception_weights, save_random_inception_weights

    try:
        return resolve_inception_weights(None, allow_download=False), "real"
    except FileNotFoundError:
        return save_random_inception_weights(f"{tmp}/random_inception.pth"), "random (no real weights here)"


def bench_inception(weights, device, batch: int, repeats: int) -> dict:
    from trainers.evaluation.inception import InceptionExtractor

    ex = InceptionExtractor(weights, device)
    x = torch.rand(batch, 3, 32, 32, device=device) * 2 - 1
    ex(x)  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ex(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return {"inception_batch": batch, "inception_features_per_s": batch / float(np.median(times)),
            "inception_s_per_batch_median": float(np.median(times))}


def bench_fd(repeats: int) -> dict:
    from trainers.evaluation.metrics import frechet_distance

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3000, 2048)), rng.standard_normal((3000, 2048)) * 1.1
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        frechet_distance(a.mean(0), s1, b.mean(0), s2)
        times.append(time.perf_counter() - t0)
    return {"fd_2048_s_median": float(np.median(times))}


def bench_split(weights, device, num_samples: int, batch: int, steps: int, tmp: str) -> dict:
    from trainers.data.loader import build_dataset
    from trainers.evaluation.evaluator import Evaluator
    from trainers.model.jit import build_jit
    from trainers.model.samplers import generate

    ds = build_dataset("mnist", image_size=32, split="test")
    model = build_jit("jit-tiny", image_size=32, patch_size=4, in_channels=1, num_classes=10).to(device).eval()
    out = {"split_num_samples": num_samples, "split_sampler": f"heun {steps} steps", "model": "jit-tiny/4 (untrained)"}
    for metrics in (("fid",), ("fd_pixel", "spectrum")):
        ev = Evaluator(metrics, ds, num_samples, batch, device, f"{tmp}/cache", inception_weights=weights)
        ev.prepare()
        res = ev.evaluate(lambda lab: generate(model, n=len(lab), image_shape=(1, 32, 32), labels=lab,
                                               sampler="heun", steps=steps, num_classes=10, device=device)
                          .clamp(-1, 1))
        tag = "+".join(metrics)
        out[f"{tag}: sampling_s"] = res.timings["sampling"]
        out[f"{tag}: features_s"] = res.timings["features"]
        out[f"{tag}: metrics_s"] = res.timings["metrics"]
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--steps", type=int, default=50)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        weights, kind = _weights(tmp)
        res = {"device": str(device), "torch_threads": torch.get_num_threads(), "inception_weights": kind}
        res.update(bench_inception(weights, device, args.batch, args.repeats))
        res.update(bench_fd(args.repeats))
        res.update(bench_split(weights, device, args.num_samples, min(args.batch, args.num_samples), args.steps, tmp))
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
