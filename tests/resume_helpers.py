"""Exact resume of an in-process training run (trainers.training.loop.Trainer): the run ended right after its first
checkpoint, the same run again, and the end state compared bit for bit with a run that was never interrupted.

    .venv/bin/python -m pytest tests/test_unet.py -q -k resumes     # one of the tests that use it (CPU, ~1 min)
"""
from __future__ import annotations

import pathlib

import pytest
import torch

from specforce_contracts import RUN_CHECKPOINT_FILE


class Killed(Exception):
    """Raised by KillAtFirstCheckpoint: the run ended at this many images."""


class KillAtFirstCheckpoint:
    """Hooks that end the run right after its first checkpoint is on disk (as a SIGKILL there would): every other
    hook is the loop's default one."""

    def __getattr__(self, name):
        from trainers.training.loop import Hooks

        return getattr(Hooks(), name)

    def on_checkpoint(self, images, path, metrics):
        raise Killed(images)


def flat_tensors(tree, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a nested dict/list/tuple (a checkpoint's model or EMA state), keyed by its path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else []
    return {k: v for key, sub in items for k, v in flat_tensors(sub, f"{prefix}/{key}").items()}


def assert_resumes_exactly(cfg, tmp_path: pathlib.Path, total_images: int) -> tuple[dict, dict]:
    """Train `cfg` straight through into tmp_path/straight, and into tmp_path/killed ended at its first checkpoint
    then run again (which resumes): both reach `total_images` with model and EMA equal bit for bit. Returns the two
    final checkpoints (straight, resumed)."""
    from trainers.training.checkpoint import load_checkpoint
    from trainers.training.loop import Trainer

    Trainer(cfg, tmp_path / "straight").run()
    with pytest.raises(Killed):
        Trainer(cfg, tmp_path / "killed", hooks=KillAtFirstCheckpoint()).run()
    assert load_checkpoint(tmp_path / "killed" / RUN_CHECKPOINT_FILE)["images_seen"] < total_images
    Trainer(cfg, tmp_path / "killed").run()  # re-running the same command resumes
    a, b = (load_checkpoint(tmp_path / d / RUN_CHECKPOINT_FILE) for d in ("straight", "killed"))
    assert a["images_seen"] == b["images_seen"] == total_images
    for part in ("model", "ema"):
        flat_a, flat_b = flat_tensors(a[part]), flat_tensors(b[part])
        assert flat_a and flat_a.keys() == flat_b.keys() and all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a)
    return a, b
