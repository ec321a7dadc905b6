"""GPU benchmark of JiT training, sampling and Inception features, plus a 200-step training check through the loop.

Needs only torch and the `trainers` package (no Ray, no MLflow); the training check imports trainers.training.config,
so it also needs pydantic and PyYAML, and the Inception figure needs torch-fidelity (benchmarks/run_gpu_check.sh brings
the wheels to a bare GPU machine). Without CUDA it runs the same code at toy size on CPU (`--toy` forces that).

    .venv/bin/python -m benchmarks.bench_gpu --out /tmp/bench_gpu.json     # CPU: toy sizes, ~2 min on 2 cores
    make bench-gpu                                                         # the same, JSON in reports/
    python -m benchmarks.bench_gpu --out bench_gpu.json                    # one GPU: ~4 min on an H200
    bash benchmarks/run_gpu_check.sh                                       # a bare GPU machine (see that file)

What it prints, for JiT-B/32 and JiT-B/16 at 256 px (toy: jit-tiny at 16 px), 3 channels, 1000 classes,
synthetic data, bf16 autocast, at the largest batch of 256/128/64 that fits (eager, one full step is tried):

- training images/s, eager and compiled (`model.compile`: torch.compile of every block, SF eager). One step is
  the loop's: RectifiedFlow loss with SF on, backward, AdamW (`optim.fused: auto`, fused on CUDA), EMA update
  (2 decays). Timed over `--steps` steps after `--warmup` (compilation happens in the warm-up; its time is shown).
- MFU = (3 x forward FLOPs) / step time / the GPU's dense bf16 peak. Forward FLOPs are counted by
  torch.utils.flop_counter.FlopCounterMode on the actual model (SF detached) at the actual batch, with SDPA on its
  math backend so attention shows up as two batched matmuls: matmuls, convolutions and attention; norms,
  elementwise ops, SF and the optimizer are not counted. Backward = 2 x forward. The closed form
  `jit_forward_flops` must agree exactly (checked here and in tests/test_bench_gpu.py). Peaks: BF16_PEAK_TFLOPS,
  keyed by the exact CUDA device name; an unknown device gets no MFU (and a note), never a guess. `--peak-tflops`.
- peak memory (torch.cuda.max_memory_allocated, per variant; none on CPU).
- SF's share of a step: time of SF's forward alone (the fp32 DCT round trip; SF has no parameters and its input
  needs no gradient, so that is its whole cost) / step time, eager and compiled.
- sampling images/s: Heun 50 steps (99 model calls), CFG 2.9 on t in [0.1, 1], bf16, eager model.
- Inception-v3 feature extraction images/s on 256 px images (resized to 299 inside, torch-fidelity's network),
  with RANDOMLY INITIALISED weights: no weights can be downloaded on the GPU machine, and the cost does not
  depend on the weights' values. The figure is throughput only.
- a training check through `trainers.training.loop.Trainer`: JiT-B/32 on 3-channel grf at 256 px, SF on, compile on,
  fused AdamW auto, 200 steps of batch 64 (toy: jit-tiny at 16 px, 40 steps of 8, compile off); the loss must be
  finite and the mean of the last 3 logged losses (10 steps each; toy: 4) below the mean of the first 3.

Weights: zero-initialised parameters (adaLN-zero, the output layer) get small random values first, so every
matmul multiplies non-zero data (tensor cores run faster on zeros). Figures are measurements, never pass/fail;
the script exits 1 if a section failed (its error is in the table and the JSON) or the training check failed.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

import torch

# The FLOP counting, timing helpers and measured sections live in benchmarks/gpu_flops.py, gpu_timing.py and
# gpu_sections.py; this module runs them, prints the table and writes the JSON.
from benchmarks.gpu_flops import FLOP_NOTE, bf16_peak
from benchmarks.gpu_sections import GPU, LOSS_WINDOW, TOY, bench_inception, bench_training, train_check


# ---------------------------------------------------------------------------------------------------- main
def environment(device: torch.device, peak: float | None, peak_note: str) -> dict:
    """What the figures were measured on: torch, Python, device, threads and the bf16 peak; on CUDA also the GPU,
    its compute capability and memory, and the CUDA and Triton versions."""
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "threads": torch.get_num_threads(), "bf16_peak_tflops": peak, "peak_note": peak_note,
           "fp32_matmul_precision": torch.get_float32_matmul_precision()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
        try:
            import triton

            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = None
    return env


def _fmt(v: Any, spec: str) -> str:
    return format("-", spec.split(".")[0]) if v is None else format(v, spec)


def _print_part(part: dict, label: str, line: Callable[[dict], str]) -> None:
    """One optional section's line: nothing when it was skipped, its error, or `line(part)`."""
    if not part:
        return
    print(f"{label}: ERROR {part['error']}" if "error" in part else line(part))


def print_table(res: dict) -> None:
    env = res["environment"]
    print(f"\n== bench_gpu ({res['mode']}) on {env.get('gpu', env['device'])}, torch {env['torch']}; "
          f"{env['peak_note']}")
    print(FLOP_NOTE)
    head = (f"{'model':<18}{'batch':>6}{'variant':>10}{'img/s':>10}{'ms/step':>10}{'TFLOP/s':>9}{'MFU':>7}"
            f"{'peak GiB':>10}{'SF share':>10}{'warm-up s':>11}")
    print(head)
    for m in res["models"]:
        if "error" in m:
            print(f"{m['preset']:<18} ERROR {m['error']}")
            continue
        for v in ("eager", "compiled"):
            r = m[v]
            print(f"{m['preset'] + '@' + str(m['image_size']):<18}{m['batch']:>6}{v:>10}{r['images_per_s']:>10.1f}"
                  f"{r['step_ms']:>10.1f}{r['tflops']:>9.1f}{_fmt(r['mfu'], '>7.1%')}"
                  f"{_fmt(r['peak_mem_gib'], '>10.1f')}{r['sf_share']:>10.2%}{r['warmup_s']:>11.1f}")
        sm = m["sampling"]
        print(f"{'':<18}sampling {sm['sampler']} CFG {sm['cfg_scale']} ({sm['model_calls']} calls), "
              f"n={sm['n']}: {sm['images_per_s']:.2f} images/s (eager, bf16); compile speed-up "
              f"x{m['compile_speedup']:.2f}; {m['forward_flops_per_image'] / 1e9:.2f} GFLOP/image forward; SF "
              f"{m['sf_flops_per_image'] / 1e6:.1f} MFLOP/image in fp32 = {m['sf_share_of_step_flops']:.2%} of "
              f"the step's FLOPs")
    _print_part(res["inception"], "Inception", lambda inc: (
        f"Inception-v3 features: {inc['images_per_s']:.1f} images/s (batch {inc['batch']}, "
        f"{inc['input_px']} px -> 299; {inc['weights']})"))
    _print_part(res["train_check"], "training check", lambda tc: (
        f"training check ({tc['preset']}@{tc['image_size']}, {tc['steps']} steps of {tc['batch']}, SF on, "
        f"compile {'on' if tc['compile'] else 'off'}, through trainers.training.loop): loss first-{LOSS_WINDOW} "
        f"mean {tc['first_mean']:.4f} -> last-{LOSS_WINDOW} mean {tc['last_mean']:.4f}, finite={tc['finite']}, "
        f"falls={tc['falls']}; loop {tc['loop_images_per_s_median']:.1f} images/s (data included), "
        f"{tc['wall_s']:.0f} s"))
    print(f"total {res['total_s']:.0f} s; errors: {len(res['errors'])}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=pathlib.Path, default=None, help="write the figures as JSON here")
    p.add_argument("--toy", action="store_true", help="toy sizes (automatic without CUDA)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU (default: table)")
    p.add_argument("--skip", nargs="*", default=[], choices=["models", "inception", "train_check"])
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    toy = args.toy or device.type != "cuda"
    s = TOY if toy else GPU
    if s.cpu_threads and device.type == "cpu":
        torch.set_num_threads(s.cpu_threads)
    peak, peak_note = bf16_peak(device, args.peak_tflops)
    res: dict[str, Any] = {"mode": "toy" if toy else "full", "environment": environment(device, peak, peak_note),
                           "flop_count": FLOP_NOTE, "models": [], "inception": {}, "train_check": {}, "errors": []}
    if toy and device.type != "cuda" and not args.toy:
        print("no CUDA device: running the toy sizes on CPU (same code path)", flush=True)
    t_start = time.perf_counter()

    def save() -> None:
        res["total_s"] = time.perf_counter() - t_start
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(res, indent=2))

    def section(name: str, fn: Callable[[], dict]) -> dict:
        t0 = time.perf_counter()
        print(f"-- {name} ...", flush=True)
        try:
            out = fn()
        except Exception as err:  # noqa: BLE001 - recorded, printed, and the exit code says so
            traceback.print_exc()
            out = {"error": f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"}
            res["errors"].append(f"{name}: {out['error']}")
        print(f"   {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
        return out

    with tempfile.TemporaryDirectory() as tmp:
        if "models" not in args.skip:
            for preset, size, overrides in s.models:
                row = section(f"{preset}@{size}", lambda: bench_training(preset, size, overrides, s, device, peak))
                res["models"].append({"preset": preset, "image_size": size, **row})
                save()
        if "inception" not in args.skip:
            res["inception"] = section("inception", lambda: bench_inception(s, device, tmp))
            save()
        if "train_check" not in args.skip:
            res["train_check"] = section("train_check", lambda: train_check(s, device, tmp))
            tc = res["train_check"]
            if "error" not in tc and not tc["falls"]:
                res["errors"].append(f"train_check: loss did not fall ({tc['first_mean']:.4g} -> "
                                     f"{tc['last_mean']:.4g}, finite={tc['finite']})")
    save()
    print_table(res)
    if args.out:
        print(f"figures written to {args.out}")
    return res


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
