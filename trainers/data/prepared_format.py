"""The on-disk format of a prepared dataset (written by `specforce prepare`, read by the `prepared` dataset).

    python -c "from trainers.data.prepared_format import read_manifest; print(read_manifest('data/in256')['counts'])"

A prepared dataset is a folder (or an object-store prefix: s3://, gs://, any URI pyarrow.fs opens):

    manifest.json                 what is here: format version, dataset, source, image size, channels, classes,
                                  crop recipe, whether the source flips its training images, per split the shard list (file, count, bytes, header bytes, sha256)
                                  and the labels file; `digest` = sha256 of the rest, so it names the content
    train/shard-00000.npy ...     uint8 [n, C, H, W] arrays, NumPy's .npy format (np.load(mmap_mode="r") opens one)
    train/labels.npy              int64 [count] class labels of the whole split, in shard order
    test/...                      the same for the held-out split (absent when the source has none: see `same_as`)

Why uint8 .npy shards (the format comparison is `benchmarks/bench_formats.py`): the pixels equal the live path's
exactly (lossless), a sample is one memory-mapped slice (random access for the exact-resume stream, no decode), and a
remote shard is read with one ranged read at `header_bytes + i * C*H*W`. Opening a prepared dataset reads this
manifest and the labels only: no directory walk, no image file opened.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

FORMAT = "specforce-prepared"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_PATTERN = "{split}/shard-{index:05d}.npy"
LABELS_PATTERN = "{split}/labels.npy"


class PreparedDataError(ValueError):
    """A prepared dataset is missing, damaged or of another format version; the message names the file."""


def is_uri(root: str) -> bool:
    return "://" in str(root)


def join(root: str, rel: str) -> str:
    """root/rel for a folder or a URI (URIs always use '/')."""
    return f"{str(root).rstrip('/')}/{rel}" if is_uri(root) else os.path.join(root, rel)


def open_filesystem(root: str):
    """(pyarrow FileSystem, path inside it) for a URI such as s3://bucket/prefix, gs://..., file:///abs/path."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(str(root))
    except (ValueError, OSError) as err:
        raise PreparedDataError(f"prepared: cannot open {root!r}: {err}") from None


def read_bytes(root: str, rel: str) -> bytes:
    """A whole (small) file of the dataset: the manifest or a labels file."""
    path = join(root, rel)
    try:
        if is_uri(root):
            fs, inner = open_filesystem(path)
            with fs.open_input_stream(inner) as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as err:
        if "not found" in str(err).lower() or "no such file" in str(err).lower():
            raise FileNotFoundError(path) from None
        raise PreparedDataError(f"prepared: cannot read {path!r}: {err}") from None


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of the manifest without its own digest (canonical JSON): changes with any shard's checksum."""
    body = {k: v for k, v in manifest.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_manifest(root: str) -> dict[str, Any]:
    """The checked manifest of the prepared dataset at `root`; PreparedDataError naming what is wrong."""
    try:
        raw = read_bytes(root, MANIFEST)
    except FileNotFoundError:
        partial = not is_uri(root) and os.path.isdir(os.path.join(root, ".prepare"))
        why = ("a prepare into it was interrupted; rerun the same `specforce prepare` command to finish it"
               if partial else "not a prepared dataset; make one with `specforce prepare SRC DEST`")
        raise PreparedDataError(f"prepared: no {MANIFEST} under {root!r}: {why}") from None
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise PreparedDataError(f"prepared: {join(root, MANIFEST)!r} is not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PreparedDataError(f"prepared: {join(root, MANIFEST)!r} is not a specforce prepared-dataset manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise PreparedDataError(f"prepared: {join(root, MANIFEST)!r} has format_version {version!r}, newer than this "
                                f"specforce reads ({FORMAT_VERSION}); upgrade specforce")
    if manifest.get("digest") != manifest_digest(manifest):
        raise PreparedDataError(f"prepared: {join(root, MANIFEST)!r} was edited after it was written (its digest "
                                "does not match its content); prepare the dataset again")
    return manifest


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
