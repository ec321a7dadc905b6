"""Spectral Forcing's cost as a fraction of one training step (forward + backward), measured in one process.

Two figures per setting, both ratios within the same run:
- `op/step`: time of SF's forward alone (the DCT round trip and mask) / time of a full model step without SF.
  SF has no parameters and its input needs no gradient, so its whole training cost is this forward.
- `with/without - 1`: step time with SF in the model over step time without it (noisier: two large numbers).

    .venv/bin/python -m benchmarks.bench_sf_cost                  # jit-tiny@32 (batch 64) and JiT-B/32@256 (batch 8)
    .venv/bin/python -m benchmarks.bench_sf_cost --device cuda --bf16
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch


def _timeit(fn, *, steps: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(preset: str, *, image_size: int, patch_size: int | None, batch: int, steps: int, warmup: int,
            device: torch.device, bf16: bool) -> dict[str, float]:
    from trainers.model.jit import build_jit
    from trainers.model.spectral_forcing import SpectralForcing

    torch.manual_seed(0)
    sf = SpectralForcing(image_size).to(device)
    plain = build_jit(preset, image_size=image_size, patch_size=patch_size, num_classes=1000).to(device)
    with_sf = build_jit(preset, image_size=image_size, patch_size=patch_size, num_classes=1000, spectral=sf).to(device)
    with_sf.load_state_dict(plain.state_dict())
    x = torch.randn(batch, 3, image_size, image_size, device=device)
    t = torch.rand(batch, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    ctx = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else torch.enable_grad

    def step(model):
        def run():
            with ctx():
                out = model(x, t, y)
            out.float().square().mean().backward()
        return run

    def op():
        with torch.no_grad(), ctx():
            sf(x, t)

    base = _timeit(step(plain), steps=steps, warmup=warmup, device=device)
    full = _timeit(step(with_sf), steps=steps, warmup=warmup, device=device)
    sf_time = _timeit(op, steps=max(steps, 10), warmup=warmup, device=device)
    return {"step_s": base, "step_sf_s": full, "sf_s": sf_time, "op_over_step": sf_time / base,
            "with_over_without": full / base - 1.0}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    settings = [("jit-tiny", 32, 4, 64), ("jit-tiny", 32, 8, 64), ("JiT-B/32", 256, None, 8)]
    rows = []
    print(f"{'setting':<24}{'step (ms)':>11}{'SF op (ms)':>12}{'op/step':>10}{'with/without-1':>16}")
    for preset, size, patch, batch in settings:
        r = measure(preset, image_size=size, patch_size=patch, batch=batch, steps=args.steps, warmup=2,
                    device=device, bf16=args.bf16)
        name = f"{preset}@{size}" + (f" p{patch}" if patch else "") + f" b{batch}"
        print(f"{name:<24}{r['step_s'] * 1e3:>11.1f}{r['sf_s'] * 1e3:>12.2f}{r['op_over_step']:>10.2%}"
              f"{r['with_over_without']:>16.2%}", flush=True)
        rows.append({"setting": name, **r})
    return rows


if __name__ == "__main__":
    main()
