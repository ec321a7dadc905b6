"""Atomic, weights-only-loadable training checkpoints.

A checkpoint is one file holding plain tensors and Python scalars (model, EMA, optimizer, counters, config dict),
written to a temporary name and renamed into place, so a crash mid-write never leaves a truncated file that a
resumed run would trust. Loading uses `torch.load(weights_only=True)`: a checkpoint can never execute code.

    python -c "from trainers.checkpoint import load_checkpoint; print(load_checkpoint('runs/tiny/checkpoint.pt')['images_seen'])"
"""
from __future__ import annotations

import os
import pathlib
import tempfile
from typing import Any

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(state: dict[str, Any], path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half of one
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | pathlib.Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    state = torch.load(path, map_location=map_location, weights_only=True)
    missing = {"model", "images_seen", "config"} - set(state)
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} is missing {sorted(missing)}; not a specforce checkpoint")
    return state
