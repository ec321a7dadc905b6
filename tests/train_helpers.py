"""Small models and configs for the training tests: perturbed weights, the source of a user's own denoiser module,
and a `specforce train` config small enough to run on CPU in seconds.

    .venv/bin/python -m pytest tests/test_unet.py tests/test_train_cli.py -q      # tests that use it (CPU, ~4 min)
"""
from __future__ import annotations

import textwrap

import torch


def perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add seeded noise of std `scale` to every parameter, in place. Zero-initialised layers (adaLN-zero, a zero
    output layer) make a fresh model's output exactly 0: equality checks on it would be vacuous."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen))
    return model


def conv_denoiser_source(kind: str, *, default_width: int, report_width: bool = False) -> str:
    """A user's module written against the model contract only: `build(*, image_size, channels, num_classes,
    width=default_width)` returns ConvDenoiser (conv in, class and time embeddings added, SiLU, conv out), whose
    describe() reports {"kind": kind} and, with `report_width`, its width. Its parameter count at width w and
    c channels with k classes: (c*9*w + w) + (k + 1)*w + 2*w + (w*9*c + c)."""
    described = f'{{"kind": {kind!r}, "width": self.width}}' if report_width else f'{{"kind": {kind!r}}}'
    return textwrap.dedent(f'''
        """A user's own denoiser, written against specforce's model contract only."""
        import torch
        from torch import nn


        class ConvDenoiser(nn.Module):
            def __init__(self, channels, num_classes, width):
                super().__init__()
                self.width = width
                self.inp = nn.Conv2d(channels, width, 3, padding=1)
                self.cls = nn.Embedding(num_classes + 1, width)
                self.time = nn.Linear(1, width)
                self.out = nn.Conv2d(width, channels, 3, padding=1)

            def forward(self, x_t, t, cond):
                h = self.inp(x_t) + (self.cls(cond) + self.time(t[:, None]))[:, :, None, None]
                return self.out(torch.nn.functional.silu(h))

            def describe(self):
                return {described}


        def build(*, image_size, channels, num_classes, width={default_width}):
            return ConvDenoiser(channels, num_classes, width)
    ''')


def tiny_train_config(model: dict, data: dict, *, batch_size: int, total_images: int, sample_steps: int,
                      eval: dict, every: int, checkpoint_every: int | None = None, sample: dict | None = None,
                      **top) -> dict:
    """A `specforce train` config tree small enough for CPU: SF on (paper defaults), AdamW at lr 1e-3 with one EMA
    (0.99), Euler sampling with `sample_steps` steps (plus the `sample` keys), metrics logged every `every` images
    and a checkpoint every `checkpoint_every` (default: `every`; 0: none). `top` adds top-level keys (device, flow)."""
    return {"model": model, "data": data, "spectral": {"enabled": True},
            "optim": {"batch_size": batch_size, "lr": 1e-3, "total_images": total_images, "ema_decays": [0.99]},
            "sample": {"sampler": "euler", "steps": sample_steps, **(sample or {})}, "eval": eval,
            "log_every_images": every,
            "checkpoint_every_images": every if checkpoint_every is None else checkpoint_every, **top}
