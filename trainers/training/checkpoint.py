"""Atomic, weights-only-loadable training checkpoints.

A checkpoint is one file holding plain tensors and Python scalars (model, EMA, optimizer, counters, config dict),
written to a temporary name and renamed into place, so a crash mid-write never leaves a truncated file that a
resumed run would trust. Loading uses `torch.load(weights_only=True)`: a checkpoint can never execute code.
Every way a file can fail to be a checkpoint (missing, truncated, not a torch file, a plain state dict, a pickle that
wants to run code) raises a `CheckpointError` that names the file; the unsafe-pickle case is also a
`pickle.UnpicklingError`, as torch itself raises.

    python -c "from trainers.training.checkpoint import load_checkpoint; print(load_checkpoint('runs/tiny/checkpoint.pt')['images_seen'])"
"""
from __future__ import annotations

import os
import pathlib
import pickle
import tempfile
from typing import Any

import torch


class CheckpointError(ValueError):
    """A file is not a readable specforce checkpoint; the message starts with the file's path."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The file's pickle asks for objects outside the weights-only allow-list (it could run code)."""


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
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r}: no such file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: not a file")
    with path.open("rb") as f:
        head = f.read(4)
    # torch.save writes a zip (PK\x03\x04); the legacy format is a pickle (protocol marker 0x80)
    if not head.startswith((b"PK\x03\x04", b"\x80")):
        what = "an empty file" if not head else f"a file starting with {head!r}"
        raise CheckpointError(f"checkpoint {str(path)!r}: not a torch checkpoint ({what}); expected ema.pt or "
                              "checkpoint.pt written by `specforce train` or a sweep trial")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # weights_only refused a global: the file wants to construct objects
        lines = [ln.strip() for ln in str(err).splitlines() if "Unsupported global" in ln or "unsupported" in ln]
        why = lines[0] if lines else _first_sentence(err)
        raise UnsafeCheckpointError(f"checkpoint {str(path)!r}: refused to load, it holds more than tensors and "
                                    f"numbers and could run code ({why})") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as err:
        # torch reports truncated zips and foreign files as RuntimeError/EOFError/... without the file's name
        raise CheckpointError(f"checkpoint {str(path)!r}: not a readable torch checkpoint, truncated or corrupt "
                              f"({_first_sentence(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r}: holds a {type(state).__name__}, not a specforce "
                              "checkpoint (a dict with model, images_seen, config)")
    missing = {"model", "images_seen", "config"} - set(state)
    if missing:
        raise CheckpointError(f"checkpoint {str(path)!r}: not a specforce checkpoint, it lacks {sorted(missing)} "
                              "(a plain state dict? expected ema.pt or checkpoint.pt written by `specforce train` or "
                              "a sweep trial)")
    return state


def _first_sentence(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text.split(". ")[0] if text else type(err).__name__
