"""`cifar10`: the python-pickle CIFAR-10 batches under `root/cifar-10-batches-py/`.

    python -c "from trainers.data.loader import build_dataset; print(build_dataset('cifar10', image_size=32, root='data').describe())"

Reads `data_batch_1` .. `data_batch_5` (train, 50,000) or `test_batch` (test, 10,000): pickled dicts with b"data"
(uint8 [N, 3072], channel-major R, G, B planes of 32x32 row-major pixels) and b"labels" (N ints in 0..9). Pixels map to
[-1, 1]; other sizes are a bilinear (antialiased) resize. Options: `download` (default False: fetch the archive with
torchvision.datasets.CIFAR10 into `root` when the batches are missing — needs internet) and `hflip` (random horizontal
flips, default True for train, False for test; the coin is a function of (seed, index, epoch), see datasets.base).
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch

from trainers.data.base import ImageDataset, check_bool, flip_draw, resize

FOLDER = "cifar-10-batches-py"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch -> (uint8 [N, 3, 32, 32], int64 [N]); errors name the file."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="bytes")
    except OSError:  # missing or unreadable file: the OS error already names the path
        raise
    except Exception as e:  # truncated or foreign files surface as many different pickle errors
        raise ValueError(f"cifar10: cannot read batch {path}: {e}") from e
    if not isinstance(entry, dict) or b"data" not in entry or b"labels" not in entry:
        raise ValueError(f"cifar10: {path} is not a CIFAR-10 python batch (needs b'data' and b'labels')")
    data, labels = np.asarray(entry[b"data"]), np.asarray(entry[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(f"cifar10: {path} has data {data.dtype} {data.shape} and {len(labels)} labels; "
                         f"expected uint8 [N, 3072] with N labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"cifar10: {path} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


class Cifar10(ImageDataset):
    name = "cifar10"
    OPTIONS = {"download": False, "hflip": None}
    uses_root = True

    @classmethod
    def _check_option_values(cls, options: dict) -> None:
        for key in ("download", "hflip"):
            if options.get(key) is not None:
                check_bool(key, options[key])

    def __init__(self, *, image_size: int, split: str, seed: int, root: str, download: bool = False,
                 hflip: bool | None = None):
        download = check_bool("download", download)
        hflip = split == "train" if hflip is None else check_bool("hflip", hflip)
        folder = os.path.join(root, FOLDER)
        paths = [os.path.join(folder, b) for b in BATCHES[split]]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing and download:
            import torchvision

            torchvision.datasets.CIFAR10(root, train=split == "train", download=True)
            missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            if not os.path.isdir(root):
                raise FileNotFoundError(f"cifar10: root {root!r} does not exist; create it and extract "
                                        f"cifar-10-python.tar.gz there (giving {FOLDER}/), or pass download=True")
            raise FileNotFoundError(f"cifar10: missing {', '.join(missing)}; extract cifar-10-python.tar.gz into "
                                    f"{root!r} (giving {FOLDER}/data_batch_1..5, test_batch), or pass download=True")
        parts = [read_batch(p) for p in paths]
        # kept as uint8 (150 MB for train) and converted per access; float32 would be 4x that
        self._data = np.concatenate([d for d, _ in parts])
        self._labels = np.concatenate([lab for _, lab in parts])
        if len(self._labels) == 0:
            raise ValueError(f"cifar10: the {split} batches under {folder!r} hold no images")
        super().__init__(image_size=image_size, split=split, seed=seed, num_classes=10, channels=3,
                         options={"download": download, "hflip": hflip}, root=root)
        self._hflip = hflip
        self.uint8_native = image_size == 32  # the pickles' own pixels; other sizes are a float resize

    def __len__(self) -> int:
        return len(self._labels)

    def _image(self, index: int, epoch: int) -> torch.Tensor:
        x = torch.from_numpy(self._data[index].astype(np.float32)) / 127.5 - 1.0
        x = resize(x.unsqueeze(0), self.image_size)[0]
        if self._hflip and flip_draw(self.seed, index, epoch):
            x = x.flip(-1)
        return x

    def _image_uint8(self, index: int, epoch: int) -> torch.Tensor:
        x = torch.from_numpy(self._data[index].copy())
        if self._hflip and flip_draw(self.seed, index, epoch):
            x = x.flip(-1)
        return x

    def _label(self, index: int) -> int:
        return int(self._labels[index])
