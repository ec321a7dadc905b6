"""Independent references and fixtures for the data tests: PIL's float resize, and a CIFAR-10 folder written in the
real pickle format.

    .venv/bin/python -m pytest tests/test_data.py tests/test_data_files.py tests/test_data_loader.py -q
"""
from __future__ import annotations

import pickle

import numpy as np
from PIL import Image


def pil_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """PIL's float-image bilinear resize: the independent reference for the torch resizes."""
    return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))


def write_cifar(root, sizes=(4, 4, 4, 4, 4), test_size=3, seed=0):
    """A cifar-10-batches-py folder in the real pickle format; returns {batch name: (HWC uint8 images, labels)}."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    truth = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, list(sizes) + [test_size]):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        # the documented row layout: the R plane, then G, then B, each 32x32 row-major
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        truth[name] = (images, labels)
    return truth
