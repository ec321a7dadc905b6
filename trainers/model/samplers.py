"""ODE samplers for the x-prediction rectified flow, classifier-free guidance, and `generate`.

Every sampler shares one signature, `sampler(denoise, z0, *, steps, t_eps_last=None) -> x`, where
`denoise(z, t) -> x_hat` with t a [B] tensor. It integrates dz/dt = v(z, t) = (x_hat - z) / (1 - t) from
t = 0 (noise) to t = 1 (data) on the uniform grid t_k = k / steps.

The denominator is the exact 1 - t: every evaluation point has t < 1, and the training loss's clamp
max(1 - t, t_eps) would make the last Euler step (t = 0.98 with 50 steps, t_eps = 0.05) move z only 40% of the
way to the prediction. `t_eps_last=0.05` reproduces that clamped (JiT) behaviour for comparison.

    from trainers.model.samplers import generate
    x = generate(model, n=16, image_shape=(3, 32, 32), labels=torch.arange(16) % 10, num_classes=10)

CPU check (a "model" that always predicts 0.5: every sampler must return exactly 0.5):

    python -c "import torch; from trainers.model.samplers import generate; \
print(generate(lambda z, t, y: torch.full_like(z, .5), n=2, image_shape=(1, 4, 4), labels=[0, 1], \
num_classes=2, steps=10).unique())"
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

Denoiser = Callable[[Tensor, Tensor], Tensor]
Sampler = Callable[..., Tensor]


def _check_common(z0: Tensor, steps: int, t_eps_last: float | None) -> None:
    if not isinstance(z0, Tensor) or not torch.is_floating_point(z0) or z0.ndim < 1:
        raise TypeError(f"z0: expected a floating-point tensor [B, ...], got {type(z0).__name__} "
                        f"{getattr(z0, 'dtype', '')}")
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise TypeError(f"steps: expected an int, got {steps!r}")
    if steps < 1:
        raise ValueError(f"steps: must be >= 1, got {steps!r}")
    if t_eps_last is not None:
        if isinstance(t_eps_last, bool) or not isinstance(t_eps_last, (int, float)) or not 0 < t_eps_last < 1:
            raise ValueError(f"t_eps_last: must be None or lie in (0, 1), got {t_eps_last!r}")


def _velocity(denoise: Denoiser, z: Tensor, t: float, t_eps_last: float | None) -> Tensor:
    # t in float32 at least: a bf16 t would turn 0.98 into 0.98046875.
    tb = torch.full((z.shape[0],), t, dtype=torch.promote_types(z.dtype, torch.float32), device=z.device)
    x_hat = denoise(z, tb)
    if x_hat.shape != z.shape:
        raise ValueError(f"denoise: returned shape {tuple(x_hat.shape)}, expected z's {tuple(z.shape)}")
    den = 1.0 - t if t_eps_last is None else max(1.0 - t, t_eps_last)
    return (x_hat.to(z.dtype) - z) / den


def euler(denoise: Denoiser, z0: Tensor, *, steps: int, t_eps_last: float | None = None) -> Tensor:
    """First-order: `steps` model calls. With the exact 1 - t the last step lands on the prediction itself."""
    _check_common(z0, steps, t_eps_last)
    z, h = z0, 1.0 / steps
    for k in range(steps):
        z = z + h * _velocity(denoise, z, k / steps, t_eps_last)
    return z


def heun(denoise: Denoiser, z0: Tensor, *, steps: int, t_eps_last: float | None = None) -> Tensor:
    """Second-order (trapezoidal predictor-corrector) except the last step, which is Euler: its corrector
    would need v at t = 1, where the denominator vanishes. 2 * steps - 1 model calls."""
    _check_common(z0, steps, t_eps_last)
    z, h = z0, 1.0 / steps
    for k in range(steps - 1):
        t0, t1 = k / steps, (k + 1) / steps
        v0 = _velocity(denoise, z, t0, t_eps_last)
        v1 = _velocity(denoise, z + h * v0, t1, t_eps_last)
        z = z + (0.5 * h) * (v0 + v1)
    return z + h * _velocity(denoise, z, (steps - 1) / steps, t_eps_last)


SAMPLERS: dict[str, Sampler] = {"euler": euler, "heun": heun}


def get_sampler(name: str) -> Sampler:
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"sampler: unknown name {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


def make_cfg_denoiser(model: Callable[[Tensor, Tensor, Tensor], Tensor], y: Tensor, *, cfg_scale: float = 1.0,
                      interval: tuple[float, float] = (0.1, 1.0), null_class: int) -> Denoiser:
    """Wrap `model(z, t, y)` into `denoise(z, t)` with classifier-free guidance on t in [lo, hi] (closed).

    y: integer labels [B] (unconditional = `null_class`) or float conditioning vectors [B, D] (unconditional = 0).

    x_hat = x_u + s * (x_c - x_u) with s = cfg_scale inside the interval and 1 elsewhere (plain conditional).
    Guiding x_hat equals guiding v, since v is affine in x_hat with the same z and 1 - t.
    Conditional and unconditional passes share one batched forward; when no sample of the batch is inside
    the interval, or cfg_scale == 1, only the conditional forward runs.
    """
    if isinstance(cfg_scale, bool) or not isinstance(cfg_scale, (int, float)) or not math.isfinite(cfg_scale):
        raise ValueError(f"cfg_scale: expected a finite number, got {cfg_scale!r}")
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise ValueError(f"interval: expected a pair (lo, hi), got {interval!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"interval: expected 0 <= lo <= hi <= 1, got {interval!r}")
    if isinstance(null_class, bool) or not isinstance(null_class, int) or null_class < 0:
        raise ValueError(f"null_class: expected a non-negative int, got {null_class!r}")
    vector = isinstance(y, Tensor) and torch.is_floating_point(y) and y.ndim == 2
    if not vector and (not isinstance(y, Tensor) or y.ndim != 1 or torch.is_floating_point(y) or y.dtype == torch.bool):
        raise ValueError(f"y: expected a 1-D integer label tensor or float vectors [B, D], got {y!r}")
    # the unconditional branch: the null class for labels, the zero vector for conditioning vectors (the null
    # condition the flow's dropout trained, trainers/data/cond.py)
    y_null = torch.zeros_like(y) if vector else torch.full_like(y, null_class)

    def cond_only(z: Tensor, t: Tensor) -> Tensor:
        if z.shape[0] != y.shape[0]:
            raise ValueError(f"z: batch {z.shape[0]} differs from the {y.shape[0]} labels")
        return model(z, t, y)

    if cfg_scale == 1:
        return cond_only

    def guided(z: Tensor, t: Tensor) -> Tensor:
        inside = (t >= lo) & (t <= hi)
        if not bool(inside.any()):
            return cond_only(z, t)
        if z.shape[0] != y.shape[0]:
            raise ValueError(f"z: batch {z.shape[0]} differs from the {y.shape[0]} labels")
        out = model(torch.cat([z, z]), torch.cat([t, t]), torch.cat([y, y_null]))
        x_c, x_u = out.chunk(2)
        s = torch.where(inside, cfg_scale, 1.0).to(x_c.dtype).reshape((-1,) + (1,) * (z.ndim - 1))
        return x_u + s * (x_c - x_u)

    return guided


def _labels(labels: Tensor | Sequence[int], n: int, num_classes: int, device: torch.device) -> Tensor:
    y = torch.as_tensor(labels, device=device)
    if torch.is_floating_point(y) and y.ndim == 2:  # conditioning vectors, one per sample
        if y.shape[0] != n or not torch.isfinite(y).all():
            raise ValueError(f"labels: expected {n} finite conditioning vectors, got shape {tuple(y.shape)}")
        return y
    if y.shape != (n,) or torch.is_floating_point(y) or y.dtype == torch.bool:
        raise ValueError(f"labels: expected {n} integer labels, got dtype {y.dtype} shape {tuple(y.shape)}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > num_classes):
        raise ValueError(f"labels: must lie in [0, {num_classes}] ({num_classes} = unconditional), "
                         f"got min {int(y.min())} max {int(y.max())}")
    return y.long()


def _infer_device(model: object) -> torch.device:
    if isinstance(model, nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def generate(model: Callable[[Tensor, Tensor, Tensor], Tensor], *, n: int, image_shape: Sequence[int],
             labels: Tensor | Sequence[int], sampler: str = "heun", steps: int = 50, cfg_scale: float = 1.0,
             cfg_interval: tuple[float, float] = (0.1, 1.0), noise_scale: float = 1.0, num_classes: int,
             generator: torch.Generator | None = None, device: torch.device | str | None = None,
             t_eps_last: float | None = None) -> Tensor:
    """Draw n images [n, C, H, W]: z0 = noise_scale * eps, then the named sampler, under no_grad and eval().

    Labels equal to `num_classes` ask for unconditional samples; `labels` may instead be float conditioning vectors
    [n, D] (zeros = unconditional; trainers/data/cond.py). The noise is drawn on the generator's own
    device and then moved, so a CPU generator gives the same images on any device. `device` defaults to
    the model's parameters' device (CPU for a parameterless callable).
    """
    run = get_sampler(sampler)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    shape = tuple(image_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"image_shape: expected positive ints like (C, H, W), got {image_shape!r}")
    if isinstance(noise_scale, bool) or not isinstance(noise_scale, (int, float)) or not noise_scale > 0:
        raise ValueError(f"noise_scale: must be > 0, got {noise_scale!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        # 0 = unconditional data: the only label is the null class 0
        raise ValueError(f"num_classes: expected an int >= 0, got {num_classes!r}")
    device = torch.device(device) if device is not None else _infer_device(model)
    y = _labels(labels, n, num_classes, device)
    eps = torch.randn((n,) + shape, generator=generator,
                      device=generator.device if generator is not None else device)
    z0 = noise_scale * eps.to(device)
    denoise = make_cfg_denoiser(model, y, cfg_scale=cfg_scale, interval=cfg_interval, null_class=num_classes)
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    try:
        if isinstance(model, nn.Module):
            model.eval()
        with torch.no_grad():
            return run(denoise, z0, steps=steps, t_eps_last=t_eps_last)
    finally:
        # restore each submodule's own flag: model.train(prev) would flatten deliberately mixed modes
        for m, training in modes:
            m.training = training


__all__ = ["SAMPLERS", "get_sampler", "euler", "heun", "make_cfg_denoiser", "generate", "Denoiser", "Sampler"]
