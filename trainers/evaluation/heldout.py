"""The held-out denoising loss (`eval.denoise_loss`): the v-loss on a FIXED batch, noise and t grid, by t-bucket.

    from trainers.evaluation.heldout import HeldOutLoss
    heldout = HeldOutLoss(test_set, batch=64, t_points=20, data_seed=0, noise_scale=1.0)   # nothing drawn yet
    heldout(flow, model)   # {"eval/denoise_loss": ..., "eval/denoise_loss_t0.0-0.2": ..., ...}

A run builds it from its config with trainers/training/builders.py `build_heldout` (eval.denoise_batch,
eval.denoise_t_points, data.seed, flow.noise_scale, data.options.cond).

CPU check: `.venv/bin/python -m pytest tests/test_heldout.py -q`.

Why fixed: the loss of one sampled batch at sampled times is too noisy to compare steps or arms; the same images,
the same noise and the same times for every evaluation of every run of a sweep make the number a deterministic
function of the weights. Batch and noise depend on the data seed alone, never on the run seed or the rank, so paired
arms and all ranks see identical inputs (no reduction across ranks is needed). The t grid is the midpoint of each of
`denoise_t_points` equal cells, never exactly 0 or 1. No sampling is needed, so it is cheap and low-variance.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

# T_BUCKET_EDGES: the t-bucket edges of the keys "eval/denoise_loss_t{lo}-{hi}" (t = 0 noise, t = 1 data), one
# definition for the loop, the spec validator and the analysis
from specforce_contracts import DENOISE_LOSS, T_BUCKET_EDGES, denoise_bucket_key
from trainers.data.base import check_seed

if TYPE_CHECKING:
    from trainers.model.flow import Model, RectifiedFlow

__all__ = ["HeldOutLoss", "bucket_denoise_loss", "empty_buckets", "fixed_eval_batch", "fixed_noise", "t_grid"]

_EVAL_TAG = 0x6576616C  # separates the eval-batch draw from other uses of the data seed
_NOISE_SEED = 10_007  # offset of the fixed noise's seed from the data seed


def fixed_eval_batch(dataset, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """n distinct samples (sorted indices drawn from seed) stacked as (x [n, C, H, W], y [n] int64): the same
    images for every call with the same arguments, for held-out losses comparable across steps and runs."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an int, got {n!r}")
    if not 0 < n <= len(dataset):
        raise ValueError(f"n must be in 1..{len(dataset)} (the dataset size), got {n}")
    seed = check_seed(seed)
    indices = np.sort(np.random.default_rng([seed, _EVAL_TAG]).choice(len(dataset), size=n, replace=False))
    samples = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in samples]), torch.tensor([int(y) for _, y in samples], dtype=torch.long)


def fixed_noise(shape: Sequence[int], seed: int, noise_scale: float) -> Tensor:
    """eps ~ N(0, noise_scale^2) of `shape` from a CPU generator seeded by `seed`: the same on every device."""
    g = torch.Generator().manual_seed(_NOISE_SEED + seed)
    return torch.randn(tuple(shape), generator=g) * noise_scale


def t_grid(points: int) -> Tensor:
    """The midpoints of `points` equal cells of [0, 1] (float32), so each t-bucket holds points / buckets times."""
    return (torch.arange(points, dtype=torch.float32) + 0.5) / points


def bucket_denoise_loss(t_grid: Sequence[float] | Tensor, losses: Sequence[float] | Tensor,
                        edges: Sequence[float] = T_BUCKET_EDGES) -> dict[str, float]:
    """Metric dict from `RectifiedFlow.denoise_loss`: the overall mean and the mean inside each t bucket.

    Keys: "eval/denoise_loss" and "eval/denoise_loss_t{lo}-{hi}" (e.g. "eval/denoise_loss_t0.0-0.2").
    Buckets are [lo, hi) except the last, which includes its upper edge. Every t must fall in a bucket and
    every bucket must hold at least one t (an empty one would silently vanish from reports).
    """
    t = torch.as_tensor(t_grid, dtype=torch.float64).flatten()
    loss = torch.as_tensor(losses, dtype=torch.float64).detach().cpu().flatten()
    t = t.cpu()
    if t.numel() == 0 or t.shape != loss.shape:
        raise ValueError(f"losses: expected {t.numel()} values (one per t of t_grid, non-empty), got {loss.numel()}")
    e = [float(v) for v in edges]
    if len(e) < 2 or any(not math.isfinite(v) for v in e) or any(b <= a for a, b in zip(e, e[1:])):
        raise ValueError(f"edges: expected at least two strictly increasing finite values, got {list(edges)}")
    outside = t[(t < e[0]) | (t > e[-1])]
    if outside.numel():
        raise ValueError(f"t_grid: times {outside.tolist()} lie outside edges [{e[0]}, {e[-1]}]")
    out = {DENOISE_LOSS: float(loss.mean())}
    for i, (lo, hi) in enumerate(zip(e, e[1:])):
        inside = _in_bucket(t, lo, hi, last=i == len(e) - 2)
        if not inside.any():
            raise ValueError(f"edges: bucket [{lo}, {hi}] holds no t of t_grid {t.tolist()}")
        out[denoise_bucket_key(lo, hi)] = float(loss[inside].mean())
    return out


def _in_bucket(t: Tensor, lo: float, hi: float, *, last: bool) -> Tensor:
    return (t >= lo) & ((t <= hi) if last else (t < hi))  # [lo, hi), the last bucket [lo, hi]


def empty_buckets(points: int, edges: Sequence[float] = T_BUCKET_EDGES) -> list[tuple[float, float]]:
    """The buckets that no t of `t_grid(points)` falls in (each must hold one): the rule config validation states
    for eval.denoise_t_points, computed with the grid and bucket test the loss itself uses."""
    t = t_grid(points).to(torch.float64)
    e = [float(v) for v in edges]
    return [(lo, hi) for i, (lo, hi) in enumerate(zip(e, e[1:]))
            if not _in_bucket(t, lo, hi, last=i == len(e) - 2).any()]


class HeldOutLoss:
    """The fixed batch, noise and t grid of one run, drawn once on first use; calling it gives the bucket metrics."""

    def __init__(self, dataset, *, batch: int, t_points: int, data_seed: int, noise_scale: float,
                 device: torch.device | str = "cpu", edges: Sequence[float] = T_BUCKET_EDGES, cond=None):
        # cond: the label -> vector map of data.options.cond (trainers/data/cond.py), or None for labels
        self.dataset, self.batch, self.t_points, self.cond = dataset, batch, t_points, cond
        self.data_seed, self.noise_scale = data_seed, noise_scale
        self.device, self.edges = torch.device(device), tuple(edges)
        self._fixed: tuple[Tensor, Tensor, Tensor, Tensor] | None = None

    def inputs(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x, y, eps, t_grid) on the device; drawn on the first call (lazily: a run that never evaluates pays
        nothing), the same tensors afterwards."""
        if self._fixed is None:
            x, y = fixed_eval_batch(self.dataset, self.batch, seed=self.data_seed)
            eps = fixed_noise(x.shape, self.data_seed, self.noise_scale)
            grid = t_grid(self.t_points)
            y = y if self.cond is None else self.cond(y)  # the fixed batch's conditioning vectors
            self._fixed = (x.to(self.device), y.to(self.device), eps.to(self.device), grid.to(self.device))
        return self._fixed

    def __call__(self, flow: "RectifiedFlow", model: "Model") -> dict[str, float]:
        """The held-out metrics of `model` (the sampling weights: the caller swaps the EMA in)."""
        x, y, eps, grid = self.inputs()
        losses = flow.denoise_loss(model, x, y, t_grid=grid, eps=eps)
        return bucket_denoise_loss(grid.cpu(), losses.cpu(), edges=self.edges)
