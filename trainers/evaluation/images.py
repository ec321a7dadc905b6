"""Image output helpers: [-1, 1] tensors to uint8, sample grids as PNG.

    python -c "import torch; from trainers.evaluation.images import save_grid; save_grid(torch.rand(16,3,32,32)*2-1, '/tmp/g.png')"
"""
from __future__ import annotations

import math
import pathlib

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 in [0, 255], the same rounding the FID code uses."""
    return ((images.detach().float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> HxWx3 uint8 array with a `pad`-pixel mid-grey border between tiles."""
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    ncol = math.ceil(n / nrow)
    tiles = to_uint8(images).cpu()
    if c == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    elif c != 3:
        raise ValueError(f"images must have 1 or 3 channels, got {c}")
    grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, 3), 128, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = tiles[i].permute(1, 2, 0).numpy()
    return grid


def save_grid(images: torch.Tensor, path: str | pathlib.Path, nrow: int | None = None, scale: int = 1) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(make_grid(images, nrow))
    if scale > 1:  # small images are unreadable at 1:1 in a browser
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path
