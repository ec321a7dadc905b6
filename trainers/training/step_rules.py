"""Per-step rules of the train loop: the learning-rate schedule, bf16 autocast, the step's random streams, cadences.

    .venv/bin/python -c "
    from trainers.training.config import load_config; from trainers.training.step_rules import lr_at
    cfg = load_config('sweeps/configs/tiny_train.yaml'); print([lr_at(cfg, i) for i in (0, 640, 10**9)])"

Progress is counted in training images (EDM2), so every rule here takes `images`, not a step count.
CPU check: `.venv/bin/python -m pytest tests/test_train_cli.py tests/test_gpu_options.py -q`.
"""
from __future__ import annotations

import contextlib
import sys

import torch

from trainers.training.config import TrainConfig


def lr_at(cfg: TrainConfig, images: int) -> float:
    """Linear warm-up over `optim.warmup_images` (counting the batch about to be taken), then constant."""
    base = cfg.optim.learning_rate
    if cfg.optim.warmup_images and images < cfg.optim.warmup_images:
        return base * (images + cfg.optim.batch_size) / cfg.optim.warmup_images
    return base


def autocast_for(cfg: TrainConfig, device: torch.device):
    """bf16 autocast when `optim.amp` asks for it ("auto": on CUDA only), else a no-op context."""
    use = cfg.optim.amp == "bf16" or (cfg.optim.amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def step_generator(seed: int, rank: int, step: int, stream: int, device: torch.device) -> torch.Generator:
    # One generator per (seed, rank, step, stream): exact resume and identical streams across paired arms.
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + rank) * 1_000_033 + step) * 7 + stream)
    return g


def next_multiple(value: int, every: int) -> int:
    """The next multiple of `every` after `value` (a cadence in images); never, when `every` is 0."""
    return (value // every + 1) * every if every else sys.maxsize
