"""The rectified-flow process (JiT convention): t sampling, noising, the x-prediction v-loss, and that loss at
fixed t on a fixed batch (`denoise_loss`; the held-out batch, noise and t-buckets live in trainers/evaluation/heldout.py).

    z_t = t * x + (1 - t) * eps,   t = 0 noise, t = 1 data,   eps ~ N(0, noise_scale^2)
    v = (x - z) / max(1 - t, t_eps),   v_hat = (x_hat - z) / max(1 - t, t_eps),   loss = mean((v_hat - v)^2)

JiT clamps the denominator of BOTH the target and the prediction, so the loss equals
mean((x_hat - x)^2) / max(1 - t, t_eps)^2: an x-loss re-weighted towards clean data, capped at t = 1 - t_eps.
The model is any callable `model(z, t, y) -> x_hat`; this module knows nothing about its architecture.

    from trainers.model.flow import RectifiedFlow
    flow = RectifiedFlow(num_classes=10)
    loss, stats = flow.loss(model, x, y, generator=g)

CPU check (a "model" that always predicts zeros):

    python -c "import torch; from trainers.model.flow import RectifiedFlow; f = RectifiedFlow(num_classes=10); \
print(f.loss(lambda z, t, y: torch.zeros_like(z), torch.randn(8, 3, 16, 16), torch.arange(8))[0])"
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

Model = Callable[[Tensor, Tensor, Tensor], Tensor]


def _real(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return float(value)


def _check_generator(generator: torch.Generator | None, device: torch.device | str | None) -> None:
    # torch's own message for this mismatch does not say which argument is wrong.
    if generator is not None and device is not None and torch.device(device).type != generator.device.type:
        raise ValueError(f"generator: lives on {generator.device} but the tensors are on {device}")


def _bshape(t: Tensor, like: Tensor) -> Tensor:
    """[B] -> [B, 1, 1, ...] so t broadcasts over every non-batch axis of `like`."""
    return t.reshape(t.shape + (1,) * (like.ndim - 1))


class RectifiedFlow:
    """Logit-normal t, Gaussian noise, label (or cond vector) dropout for classifier-free guidance, the clamped v-loss.

    Random draws in `loss` happen in a fixed order from the one `generator`: t ([B] normals), then eps
    (x-shaped normals), then the label-drop uniforms ([B]). Replaying a generator with the same seed
    therefore reproduces a step exactly (the tests rely on it, and so can paired-seed ablations).
    """

    def __init__(
        self,
        *,
        p_mean: float = -0.8,
        p_std: float = 0.8,
        t_eps: float = 0.05,
        noise_scale: float = 1.0,
        label_drop: float = 0.1,
        num_classes: int,
    ) -> None:
        self.p_mean = _real("p_mean", p_mean)
        self.p_std = _real("p_std", p_std)
        if self.p_std <= 0:
            raise ValueError(f"p_std: must be > 0, got {p_std!r}")
        self.t_eps = _real("t_eps", t_eps)
        if not 0.0 < self.t_eps < 1.0:
            raise ValueError(f"t_eps: must lie in (0, 1), got {t_eps!r}")
        self.noise_scale = _real("noise_scale", noise_scale)
        if self.noise_scale <= 0:
            raise ValueError(f"noise_scale: must be > 0, got {noise_scale!r}")
        self.label_drop = _real("label_drop", label_drop)
        if not 0.0 <= self.label_drop <= 1.0:
            raise ValueError(f"label_drop: must lie in [0, 1], got {label_drop!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int):
            raise TypeError(f"num_classes: expected an int, got {num_classes!r}")
        if num_classes < 0:  # 0 = unconditional data: every label is the null class 0
            raise ValueError(f"num_classes: must be >= 0, got {num_classes!r}")
        self.num_classes = num_classes

    @property
    def null_class(self) -> int:
        """The label meaning "no class": unconditional samples and dropped labels use it."""
        return self.num_classes

    def __repr__(self) -> str:
        return (f"RectifiedFlow(p_mean={self.p_mean}, p_std={self.p_std}, t_eps={self.t_eps}, "
                f"noise_scale={self.noise_scale}, label_drop={self.label_drop}, num_classes={self.num_classes})")

    # -- the process -------------------------------------------------------------------------------------------

    def sample_t(self, n: int, *, generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> Tensor:
        """[n] float32 times t = sigmoid(N(p_mean, p_std)), strictly inside (0, 1) up to float rounding."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n: expected an int, got {n!r}")
        if n < 1:
            raise ValueError(f"n: must be >= 1, got {n!r}")
        if device is None and generator is not None:
            device = generator.device
        _check_generator(generator, device)
        normal = torch.randn(n, generator=generator, device=device, dtype=torch.float32)
        return torch.sigmoid(normal * self.p_std + self.p_mean)

    def noise_like(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """eps ~ N(0, noise_scale^2) with x's shape, dtype and device."""
        if not torch.is_floating_point(x):
            raise TypeError(f"x: expected a floating-point tensor, got dtype {x.dtype}")
        _check_generator(generator, x.device)
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype) * self.noise_scale

    @staticmethod
    def interpolate(x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """z_t = t * x + (1 - t) * eps, with t of shape [B] (one time per sample)."""
        if x.shape != eps.shape:
            raise ValueError(f"eps: shape {tuple(eps.shape)} differs from x's {tuple(x.shape)}")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t: expected shape [{x.shape[0]}] (one time per sample), got {tuple(t.shape)}")
        tb = _bshape(t, x).to(x.dtype)
        return tb * x + (1 - tb) * eps

    def _velocity_loss(self, x_hat: Tensor, x: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """Per-sample mean of (v_hat - v)^2, computed in at least fp32 with autocast off."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        # bf16 autocast would leave a bf16 x_hat; squaring small velocity differences in bf16 loses the signal.
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, z, x_hat = x.to(dtype), z.to(dtype), x_hat.to(dtype)
            den = (1 - _bshape(t.to(dtype), x)).clamp_min(self.t_eps)
            v = (x - z) / den
            v_hat = (x_hat - z) / den
            return (v_hat - v).square().flatten(1).mean(1)

    def _check_batch(self, x: Tensor, y: Tensor) -> None:
        if not torch.is_floating_point(x) or x.ndim < 2:
            raise ValueError(f"x: expected a floating-point batch [B, ...], got dtype {x.dtype} shape {tuple(x.shape)}")
        if torch.is_floating_point(y) and y.ndim == 2 and y.shape[0] == x.shape[0]:
            return  # a conditioning vector per sample (trainers/data/cond.py); zeros are the null condition
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"y: expected shape [{x.shape[0]}] (one label per sample) or [{x.shape[0]}, D] (one "
                             f"conditioning vector per sample), got {tuple(y.shape)}")
        if torch.is_floating_point(y) or y.dtype == torch.bool or torch.is_complex(y):
            raise TypeError(f"y: expected integer class labels, got dtype {y.dtype} shape {tuple(y.shape)} "
                            f"(conditioning vectors are float [B, D])")

    def null_cond(self, y: Tensor) -> Tensor:
        """The "no condition" of y's kind: the null class for labels, the zero vector for conditioning vectors."""
        return torch.zeros_like(y) if torch.is_floating_point(y) else torch.full_like(y, self.null_class)

    def loss(self, model: Model, x: Tensor, y: Tensor, *, generator: torch.Generator | None = None,
             shard: tuple[int, int] = (0, 1)) -> tuple[Tensor, dict[str, Tensor]]:
        """One training loss: draws t, eps and label dropout, runs `model(z, t, y)`, returns (loss, stats).

        y: integer labels [B] (a dropped one becomes the null class) or conditioning vectors [B, D] float (a dropped
        one becomes the zero vector, the null condition of trainers/data/cond.py).

        stats (all detached): "t" [B], "loss_per_sample" [B] and "label_dropped" [B] bool, so the loop can
        log the loss per t-bucket without a second forward.

        shard=(rank, world): x is one rank's share of a global batch of world * B samples, its row i being global row
        rank + i * world (trainers/data/loader.py's sharding). t, eps and dropout are drawn for the whole global batch from
        `generator` (the same on every rank) and this rank's rows kept, so any number of ranks draws what one process
        draws for the global batch; (0, 1) is the plain single-process draw.
        """
        self._check_batch(x, y)
        rank, world = shard
        b, rows = x.shape[0], slice(rank, None, world)
        t = self.sample_t(b * world, generator=generator, device=x.device)[rows]
        eps = self.noise_like(x if world == 1 else x.new_empty((b * world, *x.shape[1:])), generator)[rows]
        drop = (torch.rand(b * world, generator=generator, device=x.device) < self.label_drop)[rows]
        # the same draws for labels and vectors (paired-seed streams unchanged); a dropped vector becomes zeros
        y = torch.where(_bshape(drop, y), self.null_cond(y), y)
        z = self.interpolate(x, eps, t)
        x_hat = model(z, t, y)
        if x_hat.shape != x.shape:
            raise ValueError(f"model: returned shape {tuple(x_hat.shape)}, expected x's {tuple(x.shape)}")
        per_sample = self._velocity_loss(x_hat, x, z, t)
        stats = {"t": t.detach(), "loss_per_sample": per_sample.detach(), "label_dropped": drop}
        return per_sample.mean(), stats

    # -- held-out evaluation -----------------------------------------------------------------------------------

    @torch.no_grad()
    def denoise_loss(self, model: Model, x: Tensor, y: Tensor, *,
                     t_grid: Sequence[float] | Tensor, eps: Tensor) -> Tensor:
        """The v-loss of a FIXED batch (x, y, eps) at each t of a fixed grid: a [len(t_grid)] float tensor.

        Labels are used as given (no dropout) and `eps` is the noise itself (already scaled, e.g. drawn once
        with `noise_like`). An nn.Module is evaluated in eval mode and its previous modes are restored, so
        dropout cannot make the number noisy. No sampling is needed, so it is cheap and low-variance.
        """
        self._check_batch(x, y)
        if eps.shape != x.shape:
            raise ValueError(f"eps: shape {tuple(eps.shape)} differs from x's {tuple(x.shape)}")
        grid = torch.as_tensor(t_grid, dtype=torch.float64).flatten()
        if grid.numel() == 0 or not torch.isfinite(grid).all() or (grid < 0).any() or (grid > 1).any():
            raise ValueError(f"t_grid: expected a non-empty list of times in [0, 1], got {grid.tolist()}")
        modes = _eval_modes(model)
        try:
            out = []
            for t in grid.tolist():
                tb = torch.full((x.shape[0],), t, dtype=torch.float32, device=x.device)
                z = self.interpolate(x, eps, tb)
                out.append(self._velocity_loss(model(z, tb, y), x, z, tb).mean())
            return torch.stack(out)
        finally:
            _restore_modes(modes)


def _eval_modes(model: object) -> list[tuple[nn.Module, bool]]:
    """Put an nn.Module in eval mode; return every submodule's previous flag (modes may be mixed)."""
    if not isinstance(model, nn.Module):
        return []
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    return modes


def _restore_modes(modes: list[tuple[nn.Module, bool]]) -> None:
    for m, training in modes:
        m.training = training


__all__ = ["RectifiedFlow", "Model"]
