"""Training-step throughput of the JiT denoiser: forward + backward per step, reported as images/s.

Default: jit-tiny at 32x32, patch 4 (64 tokens) and patch 8 (16 tokens), batch 64, on CPU. Both arms run
in the same process so their ratio is meaningful even on a shared machine; absolute numbers are not.

    .venv/bin/python -m benchmarks.bench_jit_throughput
    .venv/bin/python -m benchmarks.bench_jit_throughput --patch-sizes 2 4 8 --steps 10 --device cuda --bf16
"""
from __future__ import annotations

import argparse
import time

import torch


def step_time(preset: str, patch_size: int, *, image_size: int, batch: int, steps: int, warmup: int,
              device: torch.device, bf16: bool) -> float:
    """Median seconds per forward+backward step (the optimizer update is excluded: it does not scale with tokens)."""
    from trainers.model.jit import build_jit

    torch.manual_seed(0)
    model = build_jit(preset, image_size=image_size, patch_size=patch_size, num_classes=10).to(device)
    x = torch.randn(batch, model.in_channels, image_size, image_size, device=device)
    t = torch.rand(batch, device=device)
    y = torch.randint(0, 11, (batch,), device=device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = (model(x, t, y).float() - x).square().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="jit-tiny")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--patch-sizes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (the JiT recipe on GPU)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    print(f"{args.preset} {args.image_size}px batch {args.batch} on {device} "
          f"({torch.get_num_threads()} threads, bf16={args.bf16})")
    for p in args.patch_sizes:
        sec = step_time(args.preset, p, image_size=args.image_size, batch=args.batch, steps=args.steps,
                        warmup=args.warmup, device=device, bf16=args.bf16)
        rows.append({"patch_size": p, "tokens": (args.image_size // p) ** 2, "s_per_step": sec,
                     "images_per_s": args.batch / sec})
        print(f"  patch {p:2d} ({rows[-1]['tokens']:4d} tokens): {sec * 1e3:8.1f} ms/step  "
              f"{rows[-1]['images_per_s']:8.1f} images/s")
    if len(rows) > 1:
        base = rows[0]["images_per_s"]
        print("  speed-up vs patch %d: %s" % (rows[0]["patch_size"], ", ".join(
            f"patch {r['patch_size']} x{r['images_per_s'] / base:.2f}" for r in rows[1:])))
    return rows


if __name__ == "__main__":
    main()
