"""`imagefolder` and `imagenet`: RGB images from class folders, ADM centre-cropped to image_size (PIL only).

    python -c "from trainers.data.loader import build_dataset; print(build_dataset('imagefolder', image_size=64, root='photos').describe())"

Layout: `root/<class>/<image>` for `imagefolder`; `root/train/<class>/...` and `root/val/<class>/...` for `imagenet`
(split "test" reads `val/`; a class count other than 1000 only warns, so subsets work). Classes are the sorted
sub-folder names (label = position); images are found recursively with extensions jpg/jpeg/png/bmp/webp in any case,
in sorted path order. Names starting with "." are skipped (editor and macOS metadata files). `imagefolder` has no
split folders: both splits read the same images and differ only in augmentation — give the test split its own root
(or use the `imagenet` layout) for truly held-out data.

Every image goes through the ADM/DiT/JiT centre crop (`adm_center_crop`) and is read lazily on access. Option
`hflip`: random horizontal flips, default True for train and False for test; the coin is a function of
(seed, index, epoch) (see datasets.base).

The index (and its verification) is cached on disk and reused while the folder's listing is unchanged
(datasets/folder_index.py), so the workers of a trial and later trials do not walk and verify it again. For
ImageNet-scale training prepare the folder once instead (`specforce prepare`, the `prepared` dataset): decoding a
full JPEG and cropping it costs ~4.6 ms per image per core, far below what a GPU consumes.

Corrupt images are refused when the folder is indexed, not mid-training: with option `verify` (default True) every
file is opened and `PIL.Image.verify()`-ed once (the header for every format, plus the chunk CRCs of PNGs; no pixel
decode, so it costs a file open per image, and a process re-indexing the same unchanged files skips them), and the
dataset refuses to build with a ValueError listing the unreadable files. A JPEG truncated after an intact header
passes this check (verifying it would need a full decode); it, or any file that breaks after indexing, raises
ValueError naming the file when the loader reaches it. `verify: false` skips the check for very large folders.
"""
from __future__ import annotations

import os
import warnings

import torch

from trainers.data.base import ImageDataset, check_bool, flip_draw, pixels_to_float
from trainers.data.folder_index import cached_index
from trainers.data.image_files import _build_index, load_rgb_array

IMAGENET_CLASSES = 1000


def load_rgb_uint8(path: str, size: int, dataset: str) -> torch.Tensor:
    """One file -> uint8 [3, size, size], ADM centre-cropped (what `specforce prepare` stores)."""
    return torch.from_numpy(load_rgb_array(path, size, dataset))


def load_rgb(path: str, size: int, dataset: str) -> torch.Tensor:
    """One file -> float32 [3, size, size] in [-1, 1], ADM centre-cropped."""
    return pixels_to_float(load_rgb_uint8(path, size, dataset))


class ImageFolderDataset(ImageDataset):
    name = "imagefolder"
    OPTIONS = {"hflip": None, "verify": True}
    uses_root = True
    uint8_native = True

    @classmethod
    def _check_option_values(cls, options: dict) -> None:
        for key in ("hflip", "verify"):
            if options.get(key) is not None:
                check_bool(key, options[key])

    def __init__(self, *, image_size: int, split: str, seed: int, root: str, hflip: bool | None = None,
                 verify: bool = True):
        hflip = split == "train" if hflip is None else check_bool("hflip", hflip)
        folder = self._folder(root, split)
        self.classes, self._samples, self._digest = cached_index(folder, self.name, check_bool("verify", verify),
                                                                 _build_index)
        super().__init__(image_size=image_size, split=split, seed=seed, num_classes=len(self.classes), channels=3,
                         options={"hflip": hflip}, root=root)
        self._hflip = hflip

    @staticmethod
    def _folder(root: str, split: str) -> str:
        return root

    def __len__(self) -> int:
        return len(self._samples)

    def _image_uint8(self, index: int, epoch: int) -> torch.Tensor:
        x = load_rgb_uint8(self._samples[index][0], self.image_size, self.name)
        if self._hflip and flip_draw(self.seed, index, epoch):
            x = x.flip(-1)
        return x

    def _image(self, index: int, epoch: int) -> torch.Tensor:
        return pixels_to_float(self._image_uint8(index, epoch))

    def identity(self) -> dict[str, str]:
        # the listing's digest: the same files under the same labels (the pixels at this size follow from them)
        return {"name": f"{self.name}@{self.image_size}", "digest": self._digest,
                "source": os.path.abspath(str(self.root))}

    def _label(self, index: int) -> int:
        return self._samples[index][1]


class ImageNetDataset(ImageFolderDataset):
    name = "imagenet"
    SPLIT_FOLDERS = {"train": "train", "test": "val"}

    def __init__(self, *, image_size: int, split: str, seed: int, root: str, hflip: bool | None = None,
                 verify: bool = True):
        super().__init__(image_size=image_size, split=split, seed=seed, root=root, hflip=hflip, verify=verify)
        if self.num_classes != IMAGENET_CLASSES:
            warnings.warn(f"imagenet: found {self.num_classes} classes under "
                          f"{self._folder(root, split)!r}, expected {IMAGENET_CLASSES}", stacklevel=3)

    @classmethod
    def _folder(cls, root: str, split: str) -> str:
        if not os.path.isdir(root):
            raise FileNotFoundError(f"imagenet: root {root!r} does not exist")
        return os.path.join(root, cls.SPLIT_FOLDERS[split])
