"""What every measured storage format of `bench_formats` shares: the image shape, shard bounds, the Format interface.

    .venv/bin/python -m benchmarks.bench_formats --quick        # the comparison that uses it (CPU, about a minute)
"""
from __future__ import annotations

import os

import numpy as np

SIZE = 256
SHAPE = (3, SIZE, SIZE)
NBYTES = int(np.prod(SHAPE))
SHARD = 1000  # images per shard for the sharded plain formats (256 MB-class shards at ImageNet scale hold ~1,365)


def dir_bytes(path: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return total


def _shard_bounds(n: int) -> list[int]:
    return list(range(0, n, SHARD)) + [n]


class Format:
    """One storage format: write the crops, open, read image i as uint8 [3, 256, 256]."""

    name = ""
    lossless = True
    random_access = True
    available = True
    children_cpu = False  # count the CPU time of processes it starts (Ray's)
    missing = ""

    def __init__(self, root: str):
        self.root = os.path.join(root, self.name.replace(" ", "_"))

    def write(self, images: np.ndarray, labels: list[int]) -> None:
        raise NotImplementedError

    def open(self) -> None:
        raise NotImplementedError

    def read(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def iterate(self, order: list[int]):
        """Images in `order`, read one by one by index (the random-access path)."""
        for i in order:
            yield self.read(i)

    def stream(self, n: int):
        """All n images in stored order through the format's own sequential reader (the decode-rate pass)."""
        yield from self.iterate(range(n))

    def close(self) -> None:
        pass

    def nbytes(self) -> int:
        return dir_bytes(self.root)
