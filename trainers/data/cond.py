"""Conditioning vectors beyond class labels: a fixed embedding per class, the stand-in for a text embedding.

    data: {name: digits, image_size: 16, options: {cond: {type: class_embedding, dim: 16, seed: 0}}}

With `data.options.cond` set, the model's `cond` is a float vector [B, dim] per image instead of an integer label.
The loader still yields (image, label): the vector is computed from the label ON THE DEVICE by `ClassEmbedding`, a
parameter-free module whose table is drawn from (seed, dim, num_classes) alone. Why not a third loader element: the
label stream, its sharding, exact resume, the held-out batch and the evaluator's class-balanced labels (and its
label-accuracy metric) all stay as they are, and a checkpoint needs nothing new (the table is rebuilt, not stored).

Convention (docs/design.md §1's CFG, for vectors): the NULL conditioning is the zero vector. Dropped labels during
training (trainers/model/flow.py) and the unconditional branch of classifier-free guidance (trainers/model/samplers.py) both use
it, and the null class index `num_classes` maps to it here. Every class's row has unit norm, so no real condition is
the null one.

CPU check:
    .venv/bin/python -c "import torch; from trainers.data.cond import ClassEmbedding; \\
e = ClassEmbedding(num_classes=10, dim=4, seed=0); print(e(torch.tensor([3, 10])))"
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import Tensor, nn

COND_TYPES = ("class_embedding",)
_TABLE_TAG = 0x636F6E64  # separates the table's stream from other uses of the same seed ("cond")


def check_cond(spec: Any) -> dict[str, Any]:
    """Validate `data.options.cond`; returns it with defaults filled. Messages start with "cond " so the config
    loader rewrites them as `data.options.cond: ... (got ...)`."""
    form = "{type: class_embedding, dim: D >= 1, seed: S >= 0}"
    if not isinstance(spec, Mapping):
        raise ValueError(f"cond must be a mapping {form}, got {spec!r}")
    unknown = sorted(set(spec) - {"type", "dim", "seed"})
    if unknown or spec.get("type") not in COND_TYPES:
        raise ValueError(f"cond must be {form} (unknown keys {unknown} or type not in {list(COND_TYPES)}), "
                         f"got {dict(spec)!r}")
    dim, seed = spec.get("dim"), spec.get("seed", 0)
    for name, value, low in (("dim", dim, 1), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"cond must be {form}; {name} must be an int >= {low}, got {dict(spec)!r}")
    return {"type": spec["type"], "dim": dim, "seed": seed}


def cond_dim(options: Mapping[str, Any]) -> int | None:
    """The vector width configured in data.options (None: integer class labels, today's conditioning)."""
    spec = options.get("cond")
    return None if spec is None else check_cond(spec)["dim"]


class ClassEmbedding(nn.Module):
    """label [B] int64 (null class = num_classes) -> float32 [B, dim]: a fixed unit vector per class, zeros for null."""

    def __init__(self, num_classes: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"cond: class_embedding needs labelled data, and this dataset has no classes "
                             f"(num_classes {num_classes})")
        gen = torch.Generator().manual_seed(_TABLE_TAG + seed)
        rows = torch.randn(num_classes, dim, generator=gen, dtype=torch.float64)
        rows = rows / rows.norm(dim=1, keepdim=True)
        # not persistent: rebuilt from (seed, dim, num_classes), so checkpoints and EMA copies hold nothing new
        self.register_buffer("table", torch.cat([rows, rows.new_zeros(1, dim)]).float(), persistent=False)
        self.num_classes, self.dim = num_classes, dim

    def forward(self, y: Tensor) -> Tensor:
        if torch.is_floating_point(y) or y.ndim != 1:
            raise ValueError(f"cond: expected integer labels [B], got dtype {y.dtype} shape {tuple(y.shape)}")
        return self.table.to(y.device)[y]


def build_cond(options: Mapping[str, Any], num_classes: int) -> ClassEmbedding | None:
    """The run's label -> vector map from data.options (None without `cond`: labels go to the model as they are)."""
    spec = options.get("cond")
    if spec is None:
        return None
    spec = check_cond(spec)
    return ClassEmbedding(num_classes, spec["dim"], spec["seed"])


def cond_of(cond: ClassEmbedding | None, y: Tensor) -> Tensor:
    """What the model is called with: the vectors of labels `y`, or `y` itself without a configured cond."""
    return y if cond is None else cond(y)


__all__ = ["COND_TYPES", "ClassEmbedding", "build_cond", "check_cond", "cond_dim", "cond_of"]
