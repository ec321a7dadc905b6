"""GPU benchmark of JiT training, sampling and Inception features, plus a 200-step training check through the loop.

Needs only torch and the `trainers` package (no Ray, no MLflow); the training check imports trainers.training.config, so it
also needs pydantic and PyYAML, and the Inception figure needs torch-fidelity (benchmarks/run_gpu_check.sh brings
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
import gc
import json
import math
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

# Dense (no sparsity) bf16 tensor-core peak per GPU, TFLOP/s, from NVIDIA's data sheets, keyed by the exact name
# torch.cuda.get_device_name returns. A device missing here gets no MFU rather than a guessed peak.
BF16_PEAK_TFLOPS = {
    "NVIDIA H200": 989.5,             # H200 SXM: 1,979 with sparsity
    "NVIDIA H200 NVL": 835.5,
    "NVIDIA H100 80GB HBM3": 989.5,   # H100 SXM5
    "NVIDIA H100 PCIe": 756.5,
    "NVIDIA H100 NVL": 835.5,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
}


@dataclass(frozen=True)
class Setting:
    """Everything that differs between a GPU run and the CPU toy run; the code path is the same."""

    models: tuple[tuple[str, int, dict], ...]  # (preset, image_size, build_jit overrides)
    batches: tuple[int, ...]
    steps: int
    warmup: int
    sample_n: int
    sample_steps: int
    inception_batch: int
    inception_size: int
    train_preset: str
    train_image_size: int
    inception_repeats: int = 3
    train_batch: int = 64
    train_steps: int = 200
    train_lr: float = 1e-4
    train_workers: int = 8
    # model.compile in the loop check: on for the GPU (the only end-to-end run of compile + fused AdamW there); off
    # for the toy, whose 2 CPU cores would spend minutes compiling (tests/test_gpu_options.py runs it, slow-marked)
    train_compile: bool = True
    # CPU threads for the toy run: inductor's OpenMP kernels on 2 threads of a busy 2-core machine spin-wait
    # (measured: a compiled toy step 20x slower at 2 threads than at 1); None leaves torch's default
    cpu_threads: int | None = None


GPU = Setting(models=(("JiT-B/32", 256, {}), ("JiT-B/16", 256, {})), batches=(256, 128, 64), steps=10, warmup=3,
              sample_n=64, sample_steps=50, inception_batch=256, inception_size=256, train_preset="JiT-B/32",
              train_image_size=256)
TOY = Setting(models=(("jit-tiny", 16, {"depth": 2, "in_context_len": 0}),), batches=(8, 4), steps=2, warmup=1,
              sample_n=2, sample_steps=3, inception_batch=1, inception_size=32, inception_repeats=1,
              train_preset="jit-tiny", train_image_size=16, train_batch=8, train_steps=40, train_lr=2e-3,
              train_workers=0, train_compile=False, cpu_threads=1)
CFG_SCALE, CFG_INTERVAL, NUM_CLASSES, CHANNELS = 2.9, (0.1, 1.0), 1000, 3
LOSS_WINDOW = 3  # logged losses averaged at each end of the training check


# ------------------------------------------------------------------------------------------------- FLOPs
def jit_forward_flops(model: torch.nn.Module, batch: int) -> int:
    """Closed-form matmul/conv/attention FLOPs (2 per multiply-add) of one JiT forward at `batch`, SF excluded."""
    from trainers.model.jit import TIME_FREQ_DIM

    p, n, c, ps = model.preset, model.num_tokens, model.in_channels, model.patch_size
    h, m, bn = p.hidden, p.mlp_hidden, p.bottleneck
    flops = 2 * (TIME_FREQ_DIM * h + h * h)                      # time MLP
    flops += 2 * n * (ps * ps * c * bn + bn * h)                 # bottleneck patch embedding (two convs)
    for i in range(p.depth):
        tokens = n + (p.in_context_len if p.in_context_len and i >= p.in_context_start else 0)
        flops += 2 * h * 6 * h                                   # adaLN modulation (per sample)
        flops += 2 * tokens * h * 3 * h + 2 * tokens * h * h     # qkv, output projection
        flops += 2 * 2 * tokens * tokens * h                     # q k^T and attention-weighted v, all heads
        flops += 2 * tokens * h * 2 * m + 2 * tokens * m * h     # SwiGLU
    flops += 2 * h * 2 * h + 2 * n * h * ps * ps * c             # final adaLN and output linear
    return batch * flops


def count_forward_flops(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> int:
    """FlopCounterMode's count of one forward of `model` with SF detached, attention on SDPA's math backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    spectral, model.spectral = model.spectral, None
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
            model(x, t, y)
    finally:
        model.spectral = spectral
    return int(counter.get_total_flops())


def count_sf_flops(sf: torch.nn.Module, z: torch.Tensor, t: torch.Tensor) -> int:
    """FlopCounterMode's count of SF's forward (its DCT round trip: four fp32 matmuls per channel)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        sf(z, t)
    return int(counter.get_total_flops())


def bf16_peak(device: torch.device, override: float | None) -> tuple[float | None, str]:
    if override is not None:
        return override, f"--peak-tflops {override:g}"
    if device.type != "cuda":
        return None, f"no bf16 peak for device type {device.type!r}: MFU is reported on CUDA only"
    name = torch.cuda.get_device_name(device)
    if name not in BF16_PEAK_TFLOPS:
        return None, (f"unknown device {name!r}: add its dense bf16 peak to BF16_PEAK_TFLOPS or pass "
                      f"--peak-tflops; no MFU is guessed")
    return BF16_PEAK_TFLOPS[name], f"{name}: {BF16_PEAK_TFLOPS[name]:g} TFLOP/s dense bf16 (data sheet)"


# ---------------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Seconds per call over `repeats` back-to-back calls (one sync at each end: the GPU's throughput)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def largest_batch(candidates: Sequence[int], fits: Callable[[int], None]) -> tuple[int, list[int]]:
    """The largest candidate for which `fits(batch)` returns without running out of memory, and those that did not
    fit. Errors other than out-of-memory propagate; none fitting raises RuntimeError naming the candidates."""
    refused = []
    for b in sorted(candidates, reverse=True):
        try:
            fits(b)
            return b, refused
        except Exception as err:  # noqa: BLE001 - only OOM is a "does not fit"
            if not _is_oom(err):
                raise
            refused.append(b)
        gc.collect()  # the caught error's frames held the failed attempt's tensors
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    raise RuntimeError(f"no batch of {sorted(candidates, reverse=True)} fits in device memory")


# ------------------------------------------------------------------------------------------ training step
def _nonzero_init(model: torch.nn.Module, seed: int = 0) -> None:
    """Give all-zero parameters (adaLN-zero, output layer) small random values: benchmark weights, not training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


class TrainStep:
    """One loop step (flow loss with SF, backward, AdamW, EMA) on a fixed synthetic batch, as trainers.training.loop runs it."""

    def __init__(self, preset: str, image_size: int, overrides: dict, batch: int, device: torch.device,
                 compile_blocks: bool):
        from trainers.training.accel import build_adamw, compile_blocks as compile_fn
        from trainers.model.ema import EMA
        from trainers.model.flow import RectifiedFlow
        from trainers.model.jit import build_jit
        from trainers.model.spectral_forcing import SpectralForcing

        torch.manual_seed(0)
        self.device, self.batch = device, batch
        self.sf = SpectralForcing(image_size)
        self.model = build_jit(preset, image_size=image_size, in_channels=CHANNELS, num_classes=NUM_CLASSES,
                               spectral=self.sf, **overrides)
        _nonzero_init(self.model)
        self.model.to(device)
        self.optimizer = build_adamw(self.model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0,
                                     fused="auto", device=device)
        self.ema = EMA(self.model, decays=(0.9999, 0.9996))
        self.flow = RectifiedFlow(num_classes=NUM_CLASSES)
        if compile_blocks:
            compile_fn(self.model, device=device)
        g = torch.Generator(device=device).manual_seed(1)
        self.x = torch.randn(batch, CHANNELS, image_size, image_size, device=device, generator=g) * 0.5
        self.y = torch.randint(0, NUM_CLASSES, (batch,), device=device, generator=g)
        self.gen = torch.Generator(device=device).manual_seed(2)
        self.count = 0

    def __call__(self) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            loss, _ = self.flow.loss(self.model, self.x, self.y, generator=self.gen)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.ema.update(self.model, self.count)
        self.count += 1
        return loss


def bench_training(preset: str, image_size: int, overrides: dict, s: Setting, device: torch.device,
                   peak: float | None) -> dict:
    out: dict[str, Any] = {"preset": preset, "image_size": image_size, "overrides": overrides}

    def fits(b: int) -> None:
        step = None
        try:
            step = TrainStep(preset, image_size, overrides, b, device, compile_blocks=False)
            step()
            _sync(device)
        finally:
            del step
            _free(device)

    batch, refused = largest_batch(s.batches, fits)
    out.update(batch=batch, batches_refused_oom=refused)
    for variant in ("eager", "compiled"):
        if variant == "compiled":
            torch._dynamo.reset()  # compile each model from scratch: no graphs borrowed from the previous model
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        step = TrainStep(preset, image_size, overrides, batch, device, compile_blocks=variant == "compiled")
        if variant == "eager":
            model = step.model
            out["tokens"], out["parameters"] = model.num_tokens, sum(p.numel() for p in model.parameters())
            flops = count_forward_flops(model, step.x, torch.rand(batch, device=device), step.y)
            closed = jit_forward_flops(model, batch)
            del model
            if flops != closed:
                raise RuntimeError(f"FlopCounterMode counted {flops} forward FLOPs, the closed form {closed}")
            out["forward_flops_per_image"] = flops // batch
            out["step_flops"] = 3 * flops
            out["sf_flops_per_image"] = count_sf_flops(step.sf, step.x, torch.rand(batch, device=device)) // batch
            out["sf_share_of_step_flops"] = out["sf_flops_per_image"] * batch / out["step_flops"]
        t0 = time.perf_counter()
        losses = [step() for _ in range(s.warmup)]
        _sync(device)
        warm = time.perf_counter() - t0
        sec = _timed(step, s.steps, device)
        losses.append(step())
        losses = [float(v.detach()) for v in losses]
        if not all(math.isfinite(v) for v in losses):
            raise FloatingPointError(f"{variant} step gave a non-finite loss: {losses}")
        row = {"step_ms": sec * 1e3, "images_per_s": batch / sec, "warmup_s": warm,
               "tflops": out["step_flops"] / sec / 1e12,
               "mfu": (out["step_flops"] / sec / 1e12 / peak) if peak else None,
               "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
        # SF alone, as the step calls it (under autocast, which SF switches off for its fp32 DCT)
        z, t = step.x.clone(), torch.rand(batch, device=device)

        def sf_call():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                step.sf(z, t)

        sf_call()
        sf_sec = _timed(sf_call, max(s.steps, 10), device)
        row.update(sf_ms=sf_sec * 1e3, sf_share=sf_sec / sec)
        out[variant] = row
        if variant == "eager":
            out["sampling"] = bench_sampling(step.model, image_size, s, device)
        del step
        _free(device)
    out["compile_speedup"] = out["compiled"]["images_per_s"] / out["eager"]["images_per_s"]
    return out


def bench_sampling(model: torch.nn.Module, image_size: int, s: Setting, device: torch.device) -> dict:
    from trainers.model.samplers import generate

    labels = torch.arange(s.sample_n, device=device) % NUM_CLASSES

    def run(steps: int) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return generate(model, n=s.sample_n, image_shape=(CHANNELS, image_size, image_size), labels=labels,
                            sampler="heun", steps=steps, cfg_scale=CFG_SCALE, cfg_interval=CFG_INTERVAL,
                            num_classes=NUM_CLASSES, device=device)

    run(2)  # warm-up: eval-mode kernels, the doubled CFG batch
    sec = _timed(lambda: run(s.sample_steps), 1, device)
    grid = [k / s.sample_steps for k in range(s.sample_steps)]
    guided = sum(CFG_INTERVAL[0] <= v <= CFG_INTERVAL[1] for v in grid) / len(grid)
    return {"n": s.sample_n, "sampler": f"heun {s.sample_steps}", "model_calls": 2 * s.sample_steps - 1,
            "cfg_scale": CFG_SCALE, "cfg_interval": list(CFG_INTERVAL), "guided_fraction_of_steps": guided,
            "seconds": sec, "images_per_s": s.sample_n / sec}


# ------------------------------------------------------------------------------------------------ Inception
def bench_inception(s: Setting, device: torch.device, tmp: str) -> dict:
    from trainers.evaluation.inception import InceptionExtractor, save_random_inception_weights

    weights = save_random_inception_weights(pathlib.Path(tmp) / "random_inception.pth")
    ex = InceptionExtractor(weights, device, features=("2048",), allow_download=False)
    x = torch.rand(s.inception_batch, 3, s.inception_size, s.inception_size, device=device) * 2 - 1
    ex(x)
    times = [_timed(lambda: ex(x), 1, device) for _ in range(s.inception_repeats)]
    sec = statistics.median(times)
    return {"weights": "RANDOM initialisation (torch-fidelity Inception-v3 architecture): throughput only",
            "batch": s.inception_batch, "input_px": s.inception_size, "resized_to": 299,
            "images_per_s": s.inception_batch / sec}


# -------------------------------------------------------------------------------------------- training check
def train_check(s: Setting, device: torch.device, tmp: str) -> dict:
    from trainers.training.config import config_from_dict
    from trainers.training.loop import Hooks, Trainer

    tree = {
        "model": {"preset": s.train_preset, "compile": s.train_compile},
        "data": {"name": "grf", "image_size": s.train_image_size, "num_workers": s.train_workers,
                 "options": {"channels": CHANNELS, "num_samples": s.train_batch * s.train_steps}},
        "spectral": {"enabled": True},
        "optim": {"batch_size": s.train_batch, "lr": s.train_lr, "total_images": s.train_batch * s.train_steps,
                  "ema_decays": [0.999], "fused": "auto"},
        "sample": {"sampler": "euler", "steps": 2},
        "eval": {"metrics": [], "denoise_loss": False, "grid_size": 2},
        "log_every_images": s.train_batch * 10 if s.train_steps >= 100 else s.train_batch * 4,
        "save_checkpoint": False,
        "device": device.type,
    }
    cfg = config_from_dict(tree)
    logged: list[tuple[int, float, float]] = []

    class Record(Hooks):
        def on_metrics(self, images: int, metrics: dict[str, float]) -> None:
            if "train/loss" in metrics:
                logged.append((images, metrics["train/loss"], metrics["train/images_per_s"]))

    t0 = time.perf_counter()
    Trainer(cfg, pathlib.Path(tmp) / "train_check", Record()).run()
    wall = time.perf_counter() - t0
    losses = [v for _, v, _ in logged]
    first, last = statistics.fmean(losses[:LOSS_WINDOW]), statistics.fmean(losses[-LOSS_WINDOW:])
    finite = all(math.isfinite(v) for v in losses)
    speeds = [v for _, _, v in logged[1:]] or [logged[0][2]]  # the first interval holds compilation
    return {"preset": s.train_preset, "image_size": s.train_image_size, "data": "grf, 3 channels",
            "spectral": "on (paper defaults)", "compile": s.train_compile, "fused": "auto", "batch": s.train_batch,
            "steps": s.train_steps, "lr": s.train_lr, "logged_losses": losses,
            "first_mean": first, "last_mean": last, "finite": finite, "falls": finite and last < first,
            "loop_images_per_s_median": statistics.median(speeds), "wall_s": wall}


# ---------------------------------------------------------------------------------------------------- main
def environment(device: torch.device, peak: float | None, peak_note: str) -> dict:
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


FLOP_NOTE = ("MFU FLOPs = 3 x forward FLOPs (backward = 2 x forward), forward counted by "
             "torch.utils.flop_counter.FlopCounterMode on the model with SF detached at the measured batch, SDPA on "
             "its math backend: matmuls, convolutions and attention only (norms, elementwise, SF, optimizer and EMA "
             "not counted); equal to the closed form jit_forward_flops")


def _fmt(v: Any, spec: str) -> str:
    return format("-", spec.split(".")[0]) if v is None else format(v, spec)


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
    inc = res["inception"]
    if not inc:
        pass
    elif "error" in inc:
        print(f"Inception: ERROR {inc['error']}")
    else:
        print(f"Inception-v3 features: {inc['images_per_s']:.1f} images/s (batch {inc['batch']}, "
              f"{inc['input_px']} px -> 299; {inc['weights']})")
    tc = res["train_check"]
    if not tc:
        pass
    elif "error" in tc:
        print(f"training check: ERROR {tc['error']}")
    else:
        print(f"training check ({tc['preset']}@{tc['image_size']}, {tc['steps']} steps of {tc['batch']}, SF on, "
              f"compile {'on' if tc['compile'] else 'off'}, through trainers.training.loop): loss first-{LOSS_WINDOW} mean {tc['first_mean']:.4f} -> "
              f"last-{LOSS_WINDOW} mean {tc['last_mean']:.4f}, finite={tc['finite']}, falls={tc['falls']}; loop "
              f"{tc['loop_images_per_s_median']:.1f} images/s (data included), {tc['wall_s']:.0f} s")
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
