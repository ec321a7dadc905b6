"""What every dataset shares: argument checks, sample keys with an epoch, resizing and describe().

    python -c "from trainers.data.base import check_split; print(check_split('val'))"   # -> test

A sample is addressed either by an index `ds[i]` or by an `(index, epoch)` key `ds[(i, e)]`. The epoch only matters
to datasets with random augmentation (horizontal flips): the draw is a pure function of (seed, index, epoch), so the
stream `trainers.data.loader.infinite_loader` produces is reproducible and resumable, with or without worker processes.
`ds[i]` is `ds[(i, 0)]`.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
import operator
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

SPLITS = ("train", "test")
# "val" is accepted because ImageNet calls its held-out split so; every dataset treats it as "test".
SPLIT_ALIASES = {"val": "test"}
_FLIP_TAG = 0x666C6970  # separates the flip stream from every other use of the run seed


def check_split(split: Any) -> str:
    """Canonical split name ("train" or "test"); "val" is an alias of "test"."""
    if not isinstance(split, str) or (split not in SPLITS and split not in SPLIT_ALIASES):
        raise ValueError(f"split must be one of {SPLITS + tuple(SPLIT_ALIASES)}, got {split!r}")
    return SPLIT_ALIASES.get(split, split)


def check_image_size(image_size: Any) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise TypeError(f"image_size must be an int, got {image_size!r} ({type(image_size).__name__})")
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return int(image_size)


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r} ({type(seed).__name__})")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (it seeds numpy SeedSequences), got {seed}")
    return int(seed)


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def check_positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    # A config file that says `hflip: "no"` must not silently mean True.
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
    return bool(value)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of [N, C, H, W] to size x size, antialiased when shrinking (PIL's convention).

    The filter weights are non-negative, so values stay inside the input's range ([-1, 1] stays [-1, 1]).
    """
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def pixels_to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1], the same arithmetic as every uint8 dataset's float path (bit for bit);
    float input is returned as it is. The loop calls it on the device, after the uint8 batch has travelled."""
    if x.dtype != torch.uint8:
        return x
    return x.to(torch.float32) / 127.5 - 1.0


def flip_draw(seed: int, index: int, epoch: int) -> bool:
    """The horizontal-flip coin of one (index, epoch): independent of worker, rank and access order."""
    return bool(np.random.default_rng([seed, _FLIP_TAG, epoch, index]).integers(2))


class ImageDataset(Dataset):
    """Base class: images float32 [C, H, W] (in [-1, 1] unless a subclass documents otherwise), integer labels.

    Subclasses set `name`, `OPTIONS` (option -> default; None means "depends on the split") and `uses_root`,
    and implement `__len__`, `_image(index, epoch)` and `_label(index)`.
    """

    name: ClassVar[str] = ""
    OPTIONS: ClassVar[dict[str, Any]] = {}
    uses_root: ClassVar[bool] = False
    # True when the images are uint8 pixels at heart (files, CIFAR at 32 px, prepared shards): such a dataset also
    # implements `_image_uint8`, and the training stream carries them as uint8 (4x fewer bytes to the device)
    uint8_native: bool = False

    def __init__(self, *, image_size: int, split: str, seed: int, num_classes: int, channels: int,
                 options: dict[str, Any], root: str | None = None):
        self.image_size = image_size
        self.split = split
        self.seed = seed
        self.num_classes = num_classes
        self.channels = channels
        self.options = dict(options)  # resolved values, for describe()
        self.root = root

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Refuse unknown option names and ill-typed values before anything is read or built (config load time).

        Raises ValueError/TypeError whose message starts with the option's name. `cond` (a conditioning vector
        per image, trainers/data/cond.py) is an option of every dataset: trainers.data.loader strips it before building."""
        for key in options:
            if key == "cond":
                from trainers.data.cond import check_cond

                check_cond(options[key])
            elif key not in cls.OPTIONS:
                close = difflib.get_close_matches(str(key), list(cls.OPTIONS), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                known = ", ".join(sorted(cls.OPTIONS)) or "none"
                raise ValueError(f"{key}: unknown option of dataset {cls.name!r} ({hint}known options: {known})")
        cls._check_option_values(options)

    @classmethod
    def _check_option_values(cls, options: dict[str, Any]) -> None:
        """Subclasses check their options' values with the same helpers their constructors use."""

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _image(self, index: int, epoch: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _label(self, index: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, epoch = self._parse_key(key)
        return self._image(index, epoch), self._label(index)

    def _image_uint8(self, index: int, epoch: int) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def raw_item(self, key) -> tuple[torch.Tensor, int]:
        """Like `ds[key]`, but uint8 [C, H, W] pixels for a uint8-native dataset (`pixels_to_float` of them equals
        `ds[key]` exactly); other datasets return their float image."""
        if not self.uint8_native:
            return self[key]
        index, epoch = self._parse_key(key)
        return self._image_uint8(index, epoch), self._label(index)

    def identity(self) -> dict[str, str]:
        """What data a run read, for its MLflow dataset input: name, digest (changes when the data would) and source.
        Subclasses that read files override it with a digest of what they read."""
        d = self.describe()
        body = json.dumps({k: d[k] for k in ("name", "size", "channels", "count", "classes", "seed", "options")},
                          sort_keys=True, default=str)
        return {"name": f"{self.name}@{self.image_size}", "digest": hashlib.sha256(body.encode()).hexdigest(),
                "source": self.root or f"specforce:{self.name}"}

    def _parse_key(self, key) -> tuple[int, int]:
        if isinstance(key, tuple):
            if len(key) != 2:
                raise TypeError(f"{self.name}: a sample key is an index or (index, epoch), got {key!r}")
            index, epoch = key
        else:
            index, epoch = key, 0
        try:
            index, epoch = operator.index(index), operator.index(epoch)
        except TypeError:
            raise TypeError(f"{self.name}: index and epoch must be integers, got {key!r}") from None
        n = len(self)
        # IndexError (not ValueError) past the end: Python's sequence-iteration protocol relies on it.
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} samples")
        if epoch < 0:
            raise ValueError(f"{self.name}: epoch must be >= 0, got {epoch}")
        return index % n, epoch

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary for logging next to a run."""
        return {"name": self.name, "split": self.split, "size": self.image_size, "channels": self.channels,
                "count": len(self), "classes": self.num_classes, "seed": self.seed, "root": self.root,
                "options": dict(self.options)}

    def __repr__(self) -> str:
        d = self.describe()
        return (f"{type(self).__name__}(name={d['name']!r}, split={d['split']!r}, size={d['size']}, "
                f"count={d['count']}, classes={d['classes']}, options={d['options']})")
