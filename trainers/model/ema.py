"""Exponential moving averages of a model's weights, one fp32 shadow per decay (JiT keeps 0.9999 and 0.9996).

    shadow <- d * shadow + (1 - d) * param,   d = min(decay, (1 + step) / (10 + step)) with warm-up

The warm-up matters for short runs: a plain 0.999 EMA after 600 steps still holds about half of the random
initial weights, so samples would come from a barely trained model. Shadows are fp32 even for a bf16 model,
because (1 - 0.9999) * delta is below bf16 resolution and would round to no change at all.
Buffers (e.g. normalisation statistics) are not averaged: the latest values are copied.

    ema = EMA(model, decays=(0.9999, 0.9996))
    for step, batch in enumerate(loader):
        ...; optimizer.step(); ema.update(model, step)
    with ema.swapped(model, index=0):
        samples = generate(model, ...)

CPU check:

    python -c "import torch; from trainers.model.ema import EMA; m = torch.nn.Linear(2, 1); e = EMA(m, decays=(0.5,), \
warmup=False); torch.nn.init.zeros_(m.weight); e.update(m, 0); print(e.state_dict()['shadows'][0]['weight'])"
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module that owns the weights: strips DDP/DataParallel (`.module`) and torch.compile (`._orig_mod`),
    so EMA keys never carry a "module." prefix and checkpoints load into the bare model."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


class EMA:
    def __init__(self, model: nn.Module, decays: Sequence[float] = (0.9999, 0.9996), warmup: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
        if isinstance(decays, (str, bytes)) or not isinstance(decays, Sequence) or len(decays) == 0:
            raise TypeError(f"decays: expected a non-empty sequence of floats, got {decays!r}")
        for d in decays:
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not math.isfinite(d) or not 0 <= d < 1:
                raise ValueError(f"decays: every decay must lie in [0, 1), got {list(decays)}")
        if not isinstance(warmup, bool):
            raise TypeError(f"warmup: expected a bool, got {warmup!r}")
        self.decays = tuple(float(d) for d in decays)
        self.warmup = warmup
        m = unwrap(model)
        params = dict(m.named_parameters())
        for name, p in params.items():
            if not torch.is_floating_point(p):
                raise ValueError(f"model: parameter {name} has non-float dtype {p.dtype}; it cannot be averaged")
        self.shadows: list[dict[str, Tensor]] = [
            {k: p.detach().to(torch.float32, copy=True) for k, p in params.items()} for _ in self.decays]
        # buffers are copied, not averaged, so one copy serves every decay
        self.buffers: dict[str, Tensor] = {k: b.detach().clone() for k, b in m.named_buffers()}

    def effective_decay(self, index: int, step: int) -> float:
        d = self.decays[index]
        return min(d, (1 + step) / (10 + step)) if self.warmup else d

    def _named(self, model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        m = unwrap(model)
        params, buffers = dict(m.named_parameters()), dict(m.named_buffers())
        if params.keys() != self.shadows[0].keys() or buffers.keys() != self.buffers.keys():
            missing = sorted((self.shadows[0].keys() | self.buffers.keys()) - (params.keys() | buffers.keys()))
            extra = sorted((params.keys() | buffers.keys()) - (self.shadows[0].keys() | self.buffers.keys()))
            raise ValueError(f"model: its tensors differ from the EMA's (missing {missing[:5]}, extra {extra[:5]})")
        return params, buffers

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Fold the model's current weights into every shadow; `step` counts optimizer steps from 0."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step: expected an int >= 0, got {step!r}")
        params, buffers = self._named(model)
        for i, shadow in enumerate(self.shadows):
            w = 1.0 - self.effective_decay(i, step)
            for k, s in shadow.items():
                s.lerp_(params[k].detach().to(torch.float32), w)
        for k, b in self.buffers.items():
            b.copy_(buffers[k])

    def _check_index(self, index: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self.decays):
            raise ValueError(f"index: expected 0..{len(self.decays) - 1} (one per decay {list(self.decays)}), "
                             f"got {index!r}")

    @torch.no_grad()
    def copy_to(self, model: nn.Module, index: int = 0) -> None:
        """Overwrite the model's weights with shadow `index` (cast to each parameter's dtype) and the buffers."""
        self._check_index(index)
        params, buffers = self._named(model)
        for k, p in params.items():
            p.copy_(self.shadows[index][k])
        for k, b in buffers.items():
            b.copy_(self.buffers[k])

    @contextlib.contextmanager
    def swapped(self, model: nn.Module, index: int = 0) -> Iterator[nn.Module]:
        """Temporarily load shadow `index` into the model; the original weights return on exit, even on error."""
        self._check_index(index)
        params, buffers = self._named(model)
        saved = {k: t.detach().clone() for k, t in (*params.items(), *buffers.items())}
        self.copy_to(model, index)
        try:
            yield model
        finally:
            with torch.no_grad():
                for k, t in (*params.items(), *buffers.items()):
                    t.copy_(saved[k])

    def state_dict(self) -> dict:
        """Plain containers of tensors and numbers: loads with torch.load(weights_only=True)."""
        return {"decays": list(self.decays), "warmup": self.warmup,
                "shadows": [dict(s) for s in self.shadows], "buffers": dict(self.buffers)}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or not {"decays", "warmup", "shadows", "buffers"} <= state.keys():
            raise ValueError("state: expected a dict with keys decays, warmup, shadows, buffers "
                             f"(from EMA.state_dict), got {type(state).__name__}")
        if tuple(float(d) for d in state["decays"]) != self.decays:
            raise ValueError(f"state: decays {list(state['decays'])} differ from this EMA's {list(self.decays)}")
        if bool(state["warmup"]) != self.warmup:
            raise ValueError(f"state: warmup {state['warmup']} differs from this EMA's {self.warmup}")
        shadows, buffers = state["shadows"], state["buffers"]
        for i, s in enumerate(shadows):
            if s.keys() != self.shadows[i].keys():
                raise ValueError(f"state: shadow {i} keys differ from the model's parameters")
            for k, v in s.items():
                if v.shape != self.shadows[i][k].shape:
                    raise ValueError(f"state: shadow {i} {k} has shape {tuple(v.shape)}, "
                                     f"expected {tuple(self.shadows[i][k].shape)}")
        if buffers.keys() != self.buffers.keys():
            raise ValueError("state: buffer keys differ from the model's buffers")
        for k, v in buffers.items():
            if v.shape != self.buffers[k].shape:
                raise ValueError(f"state: buffer {k} has shape {tuple(v.shape)}, expected {tuple(self.buffers[k].shape)}")
        for i, s in enumerate(shadows):
            for k, v in s.items():
                self.shadows[i][k].copy_(v)
        for k, v in buffers.items():
            self.buffers[k].copy_(v)


__all__ = ["EMA", "unwrap"]
