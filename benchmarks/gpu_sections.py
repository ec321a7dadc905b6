"""The measured sections of benchmarks/bench_gpu.py and the sizes they run at: JiT training steps (eager and compiled,
at the largest batch that fits, with SF's share of a step), sampling, Inception features, and the training check
through trainers.training.loop. GPU sizes on CUDA, the same code at toy sizes on CPU.

    .venv/bin/python -m benchmarks.bench_gpu --toy --skip inception train_check     # CPU: the training section only
"""
from __future__ import annotations

import math
import pathlib
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.gpu_flops import count_forward_flops, count_sf_flops, jit_forward_flops
from benchmarks.gpu_timing import free, largest_batch, sync, timed


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


# ------------------------------------------------------------------------------------------ training step
def _nonzero_init(model: torch.nn.Module, seed: int = 0) -> None:
    """Give all-zero parameters (adaLN-zero, output layer) small random values: benchmark weights, not training."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


class TrainStep:
    """One loop step (flow loss with SF, backward, AdamW, EMA) on a fixed synthetic batch, as trainers.training.loop
    runs it."""

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
    """One model: the largest batch that fits (eager), then eager and compiled steps timed at it, each with its
    MFU against `peak`, peak memory and SF's share; the FLOP count checked against the closed form; sampling."""
    out: dict[str, Any] = {"preset": preset, "image_size": image_size, "overrides": overrides}

    def fits(b: int) -> None:
        step = None
        try:
            step = TrainStep(preset, image_size, overrides, b, device, compile_blocks=False)
            step()
            sync(device)
        finally:
            del step
            free(device)

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
        sync(device)
        warm = time.perf_counter() - t0
        sec = timed(step, s.steps, device)
        losses.append(step())
        losses = [float(v.detach()) for v in losses]
        if not all(math.isfinite(v) for v in losses):
            raise FloatingPointError(f"{variant} step gave a non-finite loss: {losses}")
        row = {"step_ms": sec * 1e3, "images_per_s": batch / sec, "warmup_s": warm,
               "tflops": out["step_flops"] / sec / 1e12,
               "mfu": (out["step_flops"] / sec / 1e12 / peak) if peak else None,
               "peak_mem_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None}
        # SF alone, as the step calls it (under autocast, which SF switches off for its fp32 DCT)
        z, t, sf = step.x.clone(), torch.rand(batch, device=device), step.sf

        def sf_call():
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                sf(z, t)

        sf_call()
        sf_sec = timed(sf_call, max(s.steps, 10), device)
        row.update(sf_ms=sf_sec * 1e3, sf_share=sf_sec / sec)
        out[variant] = row
        if variant == "eager":
            out["sampling"] = bench_sampling(step.model, image_size, s, device)
        del step
        free(device)
    out["compile_speedup"] = out["compiled"]["images_per_s"] / out["eager"]["images_per_s"]
    return out


def bench_sampling(model: torch.nn.Module, image_size: int, s: Setting, device: torch.device) -> dict:
    """Images/s of Heun sampling with CFG on the trained-step model (eager, bf16 autocast), one warm-up run first."""
    from trainers.model.samplers import generate

    labels = torch.arange(s.sample_n, device=device) % NUM_CLASSES

    def run(steps: int) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return generate(model, n=s.sample_n, image_shape=(CHANNELS, image_size, image_size), labels=labels,
                            sampler="heun", steps=steps, cfg_scale=CFG_SCALE, cfg_interval=CFG_INTERVAL,
                            num_classes=NUM_CLASSES, device=device)

    run(2)  # warm-up: eval-mode kernels, the doubled CFG batch
    sec = timed(lambda: run(s.sample_steps), 1, device)
    grid = [k / s.sample_steps for k in range(s.sample_steps)]
    guided = sum(CFG_INTERVAL[0] <= v <= CFG_INTERVAL[1] for v in grid) / len(grid)
    return {"n": s.sample_n, "sampler": f"heun {s.sample_steps}", "model_calls": 2 * s.sample_steps - 1,
            "cfg_scale": CFG_SCALE, "cfg_interval": list(CFG_INTERVAL), "guided_fraction_of_steps": guided,
            "seconds": sec, "images_per_s": s.sample_n / sec}


# ------------------------------------------------------------------------------------------------ Inception
def bench_inception(s: Setting, device: torch.device, tmp: str) -> dict:
    """Images/s of Inception-v3 2048-d features (random weights saved under `tmp`: nothing is downloaded)."""
    from trainers.evaluation.inception import InceptionExtractor, save_random_inception_weights

    weights = save_random_inception_weights(pathlib.Path(tmp) / "random_inception.pth")
    ex = InceptionExtractor(weights, device, features=("2048",), allow_download=False)
    x = torch.rand(s.inception_batch, 3, s.inception_size, s.inception_size, device=device) * 2 - 1
    ex(x)
    times = [timed(lambda: ex(x), 1, device) for _ in range(s.inception_repeats)]
    sec = statistics.median(times)
    return {"weights": "RANDOM initialisation (torch-fidelity Inception-v3 architecture): throughput only",
            "batch": s.inception_batch, "input_px": s.inception_size, "resized_to": 299,
            "images_per_s": s.inception_batch / sec}


# -------------------------------------------------------------------------------------------- training check
def train_check(s: Setting, device: torch.device, tmp: str) -> dict:
    """A short real run through trainers.training.loop.Trainer (grf data, SF on): its logged losses, whether they
    are finite and fall, and the loop's own images/s."""
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
