"""`prepared`: a dataset converted once by `specforce prepare` (uint8 shards + manifest), read without decoding.

    specforce prepare photos/ data/photos64 --dataset imagefolder --image-size 64
    python -c "from trainers.data.loader import build_dataset; print(build_dataset('prepared', image_size=64, root='data/photos64'))"

`root` is the prepared folder or a URI (s3://bucket/prefix, gs://..., file:///...; see prepared_format). Opening reads
`manifest.json` and the split's `labels.npy`, and checks every shard's size against the manifest with one stat per
shard (option `verify: size`, the default), so a missing or truncated shard is refused before training; no image file
is opened and nothing is listed, so opening costs the same at 1,000 or 1.28M images. `verify: checksum` also reads
every shard once and compares its sha256 (the whole dataset: minutes at ImageNet scale; `specforce prepare --verify`
does the same from the command line). Shards are memory-mapped (local) or read with one ranged read per image (URI)
when first used, in the process that uses them (DataLoader workers included).

`data.image_size` must equal the size the dataset was prepared at (the ADM crop is done once, at that size).
Option `hflip`: random horizontal flips, a function of (seed, index, epoch) as for every dataset (datasets.base); by
default the source's own rule (train split only, and never for mnist and digits: the manifest's `flips`). A source without a held-out split (`imagefolder`) is
prepared once and its test split reads the same images, exactly as the live `imagefolder` dataset does.
"""
from __future__ import annotations

import bisect
import io
import os
from typing import Any

import numpy as np
import torch

from trainers.data.base import ImageDataset, check_bool, flip_draw, pixels_to_float
from trainers.data.prepared_format import (MANIFEST, PreparedDataError, is_uri, join, open_filesystem,
                                               read_bytes, read_manifest, sha256_file)

VERIFY_MODES = ("size", "checksum")


class PreparedDataset(ImageDataset):
    name = "prepared"
    OPTIONS = {"hflip": None, "verify": "size"}
    uses_root = True
    uint8_native = True

    @classmethod
    def _check_option_values(cls, options: dict) -> None:
        if options.get("hflip") is not None:
            check_bool("hflip", options["hflip"])
        if "verify" in options and options["verify"] not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {', '.join(VERIFY_MODES)}, got {options['verify']!r}")

    def __init__(self, *, image_size: int, split: str, seed: int, root: str, hflip: bool | None = None,
                 verify: str = "size"):
        self._check_option_values({"hflip": hflip, "verify": verify})
        root = str(root)
        manifest = read_manifest(root)
        # the source's own default: train-split flips for photos, never for digits (they are not mirror-symmetric)
        hflip = split == "train" and manifest["flips"] if hflip is None else check_bool("hflip", hflip)
        if manifest["image_size"] != image_size:
            raise ValueError(f"data.image_size is {image_size} but the prepared dataset at {root!r} holds "
                             f"{manifest['image_size']} px images; set data.image_size: {manifest['image_size']} or "
                             f"prepare the source again with --image-size {image_size}")
        part = manifest["splits"].get(split)
        if part is not None and "same_as" in part:  # imagefolder: one set of images for both splits
            part = manifest["splits"][part["same_as"]]
        if part is None:
            raise ValueError(f"prepared: {root!r} has no {split!r} split (it has {', '.join(manifest['splits'])})")
        self.manifest, self.digest = manifest, manifest["digest"]
        self._shards = part["shards"]
        self._starts = np.cumsum([0] + [s["count"] for s in self._shards]).tolist()
        self._shape = (manifest["channels"], image_size, image_size)
        self._nbytes = int(np.prod(self._shape))
        self._labels = self._read_labels(root, part)
        if len(self._labels) != self._starts[-1]:
            raise PreparedDataError(f"prepared: {join(root, part['labels']['file'])!r} holds {len(self._labels)} "
                                    f"labels but the shards hold {self._starts[-1]} images")
        self._check_shards(root, verify)
        super().__init__(image_size=image_size, split=split, seed=seed, num_classes=manifest["num_classes"],
                         channels=manifest["channels"], options={"hflip": hflip, "verify": verify}, root=root)
        self._hflip = hflip
        self._open: dict[int, Any] = {}  # shard index -> memmap or pyarrow file, per process
        self._pid = os.getpid()

    # ------------------------------------------------------------------------------------------------ opening
    @staticmethod
    def _read_labels(root: str, part: dict) -> np.ndarray:
        rel = part["labels"]["file"]
        try:
            raw = read_bytes(root, rel)
        except FileNotFoundError:
            raise PreparedDataError(f"prepared: labels file {join(root, rel)!r} is missing") from None
        try:
            labels = np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as err:
            raise PreparedDataError(f"prepared: labels file {join(root, rel)!r} is damaged ({err})") from None
        return labels.astype(np.int64, copy=False)

    def _check_shards(self, root: str, verify: str) -> None:
        """Every shard exists with the byte size the manifest says (one stat each); with `checksum`, its sha256."""
        fs = None
        if is_uri(root):
            fs, base = open_filesystem(root)
        for shard in self._shards:
            path = join(root, shard["file"])
            if fs is not None:
                info = fs.get_file_info(f"{base.rstrip('/')}/{shard['file']}")
                size = info.size if info.type.name == "File" else None
            else:
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    size = None
            if size is None:
                raise PreparedDataError(f"prepared: shard {path!r} is missing ({MANIFEST} lists it); prepare the "
                                        "dataset again or restore the file")
            if size != shard["bytes"]:
                raise PreparedDataError(f"prepared: shard {path!r} has {size} bytes, {MANIFEST} says "
                                        f"{shard['bytes']}: it is truncated or was replaced")
            if verify == "checksum":
                digest = _remote_sha256(fs, f"{base.rstrip('/')}/{shard['file']}") if fs else sha256_file(path)
                if digest != shard["sha256"]:
                    raise PreparedDataError(f"prepared: shard {path!r} fails its checksum (sha256 {digest[:12]}..., "
                                            f"{MANIFEST} says {shard['sha256'][:12]}...): the file is damaged")

    # ------------------------------------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return self._starts[-1]

    def _shard(self, k: int):
        if os.getpid() != self._pid:  # a forked DataLoader worker opens its own handles
            self._open, self._pid = {}, os.getpid()
        handle = self._open.get(k)
        if handle is None:
            rel = self._shards[k]["file"]
            if is_uri(self.root):
                fs, base = open_filesystem(self.root)
                handle = fs.open_input_file(f"{base.rstrip('/')}/{rel}")
            else:
                handle = np.load(join(self.root, rel), mmap_mode="r")
                if handle.dtype != np.uint8 or handle.shape != (self._shards[k]["count"], *self._shape):
                    raise PreparedDataError(f"prepared: shard {join(self.root, rel)!r} holds {handle.dtype} "
                                            f"{handle.shape}, expected uint8 {(self._shards[k]['count'], *self._shape)}")
            self._open[k] = handle
        return handle

    def _image_uint8(self, index: int, epoch: int) -> torch.Tensor:
        k = bisect.bisect_right(self._starts, index) - 1
        i = index - self._starts[k]
        handle = self._shard(k)
        if isinstance(handle, np.ndarray):
            array = np.array(handle[i])  # one copy out of the page cache; the memmap stays read-only
        else:
            offset = self._shards[k]["header_bytes"] + i * self._nbytes
            array = np.frombuffer(handle.read_at(self._nbytes, offset), dtype=np.uint8).reshape(self._shape).copy()
        x = torch.from_numpy(array)
        if self._hflip and flip_draw(self.seed, index, epoch):
            x = x.flip(-1)
        return x

    def _image(self, index: int, epoch: int) -> torch.Tensor:
        return pixels_to_float(self._image_uint8(index, epoch))

    def _label(self, index: int) -> int:
        return int(self._labels[index])

    def identity(self) -> dict[str, str]:
        return {"name": f"prepared:{self.manifest['dataset']}@{self.image_size}", "digest": self.digest,
                "source": self.root if is_uri(self.root) else os.path.abspath(self.root)}

    def __getstate__(self):  # DataLoader workers and Ray pickle datasets: open handles stay behind
        state = dict(self.__dict__)
        state["_open"] = {}
        return state


def _remote_sha256(fs, path: str, chunk: int = 1 << 22) -> str:
    import hashlib

    h = hashlib.sha256()
    with fs.open_input_stream(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
