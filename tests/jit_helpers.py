"""The small JiT the model tests build, a seeded batch for it, and random weights for its zero-initialised layers.

    .venv/bin/python -m pytest tests/test_jit.py tests/test_jit_behaviour.py -q
"""
from __future__ import annotations

import torch

from trainers.model.jit import JiT, build_jit

NUM_CLASSES = 10


def tiny_jit(**kw) -> JiT:
    """jit-tiny at 32 px with NUM_CLASSES classes (build_jit overrides in `kw`), seeded: the same weights each call."""
    torch.manual_seed(0)
    kw.setdefault("num_classes", NUM_CLASSES)
    return build_jit("jit-tiny", image_size=32, **kw)


def randomize_zero_inits(model: JiT, std: float = 0.05) -> JiT:
    """Give the adaLN-zero and final layers random weights, so the output depends on every input path."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.blocks:
            lin = block.adaLN_modulation[-1]
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * std)
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * std + 0.5)  # open the gates
        for p in (*model.final_layer.linear.parameters(), *model.final_layer.adaLN_modulation.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def jit_batch(b: int = 4, seed: int = 0, size: int = 32):
    """A seeded (x, t, y) of `b` 3-channel images; the labels cycle through every class, the null class included."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, size, size, generator=g)
    t = torch.rand(b, generator=g)
    y = torch.arange(b) % (NUM_CLASSES + 1)
    return x, t, y
