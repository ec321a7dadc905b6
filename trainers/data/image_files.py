"""Image files without torch: find them, verify them, decode and ADM-centre-crop them to uint8 arrays (PIL + NumPy).

    python -c "from trainers.data.image_files import scan_folder; print(len(scan_folder('photos', 'imagefolder')[1]))"

The `imagefolder`/`imagenet` datasets (datasets/folder.py) wrap these in tensors; `specforce prepare` (sweeps/commands/prepare.py)
uses them directly, so its planner and its worker processes start without importing torch (seconds per process that
would otherwise be serial start-up on a small machine).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
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


def _build_index(folder: str, dataset: str, verify: bool, dirs: list) -> tuple[list[str], list[tuple[str, int]]]:
    classes, samples = scan_folder(folder, dataset, dirs)
    if verify:
        verify_images([p for p, _ in samples], dataset, folder)
    return classes, samples


def load_rgb_array(path: str, size: int, dataset: str) -> np.ndarray:
    """One file -> uint8 [3, size, size] (channels first), ADM centre-cropped; ImageReadError names the file."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")  # forces the full decode inside the try
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageReadError(f"{dataset}: cannot read image {path!r}: {e}") from e
    return np.ascontiguousarray(np.asarray(adm_center_crop(image, size), dtype=np.uint8).transpose(2, 0, 1))
