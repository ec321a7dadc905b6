"""`imagefolder` and `imagenet`: RGB images from class folders, ADM centre-cropped to image_size (PIL only).

    python -c "from trainers.data import build_dataset; print(build_dataset('imagefolder', image_size=64, root='photos').describe())"

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

import numpy as np
import torch
from PIL import Image

from trainers.datasets.base import ImageDataset, check_bool, flip_draw, pixels_to_float
from trainers.datasets.folder_index import cache_dir, cached_index  # noqa: F401 (cache_dir: public here)

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
IMAGENET_CLASSES = 1000
_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) of files that passed verify() in this process
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def adm_center_crop(image: Image.Image, size: int) -> Image.Image:
    """The ADM recipe (used by DiT and JiT): halve with a box filter while the short side is >= 2*size, bicubic-resize
    the short side to exactly `size`, then cut the central size x size square.

    The box halving first keeps the bicubic step's shrink factor below 2, where bicubic alone would alias.
    """
    while min(image.size) >= 2 * size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)),
                         resample=Image.Resampling.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


def _visible(name: str) -> bool:
    return not name.startswith(".")


def scan_folder(root: str, dataset: str, dirs: list | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """(sorted class names, [(image path, class index)]) for root/<class>/**/<image>; clear errors when empty.

    `dirs`, when given, receives (directory, mtime_ns) for every directory listed, stamped before its listing
    (the validity key of the on-disk index cache, datasets/folder_index.py)."""
    if not os.path.exists(root):
        raise FileNotFoundError(f"{dataset}: root {root!r} does not exist")
    if not os.path.isdir(root):
        raise ValueError(f"{dataset}: root {root!r} is not a directory")
    stamp = (lambda d: dirs.append((d, os.stat(d).st_mtime_ns))) if dirs is not None else (lambda d: None)
    stamp(root)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and _visible(e.name))
    if not classes:
        raise ValueError(f"{dataset}: no class folders in {root!r}; expected {root}/<class>/<image>")
    samples = []
    for label, cls in enumerate(classes):
        found = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, cls), followlinks=True):
            stamp(dirpath)  # (just after os.walk listed it: a change in between is at worst re-checked later)
            dirnames[:] = [d for d in dirnames if _visible(d)]  # prune in place: os.walk honours it
            found += [os.path.join(dirpath, f) for f in filenames
                      if _visible(f) and f.lower().endswith(EXTENSIONS)]
        if not found:
            # an empty class would silently leave a label with no data
            raise ValueError(f"{dataset}: class folder {os.path.join(root, cls)!r} has no images "
                             f"(extensions {', '.join(EXTENSIONS)})")
        samples += [(path, label) for path in sorted(found)]
    return classes, samples


def verify_images(paths: list[str], dataset: str, root: str) -> None:
    """Open and verify() every file (see the module docstring); ValueError listing the unreadable ones."""
    bad = []
    for path in paths:
        try:
            st = os.stat(path)
            key = (path, st.st_size, st.st_mtime_ns)
            if key in _VERIFIED:
                continue
            with Image.open(path) as image:
                image.verify()
            _VERIFIED.add(key)
        except _READ_ERRORS as e:
            bad.append(f"{path!r} ({' '.join(str(e).split()) or type(e).__name__})")
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ValueError(f"{dataset}: {len(bad)} unreadable image(s) under {root!r}: {shown}; remove or replace "
                         "them (or pass option verify: false to find them only when read)")


class ImageReadError(ValueError):
    """An indexed image cannot be decoded when it is read (it broke after indexing, or verify could not tell)."""


def load_rgb_uint8(path: str, size: int, dataset: str) -> torch.Tensor:
    """One file -> uint8 [3, size, size], ADM centre-cropped (what `specforce prepare` stores)."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")  # forces the full decode inside the try
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{dataset}: cannot read image {path!r}: {e}") from e
    array = np.asarray(adm_center_crop(image, size), dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def load_rgb(path: str, size: int, dataset: str) -> torch.Tensor:
    """One file -> float32 [3, size, size] in [-1, 1], ADM centre-cropped."""
    return pixels_to_float(load_rgb_uint8(path, size, dataset))


def _build_index(folder: str, dataset: str, verify: bool, dirs: list) -> tuple[list[str], list[tuple[str, int]]]:
    classes, samples = scan_folder(folder, dataset, dirs)
    if verify:
        verify_images([p for p, _ in samples], dataset, folder)
    return classes, samples


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
