"""The on-disk index cache of raw image folders: walk and verify a folder once, not in every worker of every trial.

    SPECFORCE_CACHE=/tmp/sfcache python -c "
    from trainers.data.folder_index import cached_index; print(len(cached_index('photos', 'imagefolder', True)[1]))"

A raw `imagefolder`/`imagenet` split costs a walk plus an open and `verify()` per file (~38 us per file warm, ~50 s
per process for ImageNet's 1.33M files, and ~1 ms per file on network storage). The result is cached in
`$SPECFORCE_CACHE/folder-index/` (default `~/.cache/specforce/folder-index/`), one `.npz` per folder, keyed by the
folder's real path. The key's validity is the folder's listing: the cache stores the mtime of every directory it
walked, and a directory's mtime changes whenever an entry is added, removed or renamed in it. Checking the cache is
one stat per directory (1,001 for an ImageNet split), with no file walk and no image opened. A file rewritten in place
keeps its directory's mtime: if it broke, reading it raises ImageReadError naming it (see datasets/folder.py).

Concurrent builders (8 Ray Train workers starting at once) take an exclusive lock on the entry, so one builds and the
others read its result. A cache folder that cannot be written is reported once per process, and the index is built
without it.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Callable

import numpy as np

INDEX_VERSION = 1
_WARNED: set[str] = set()


def cache_dir() -> str:
    base = os.environ.get("SPECFORCE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "specforce")
    return os.path.join(base, "folder-index")


def _entry(folder: str) -> str:
    real = os.path.realpath(folder)
    return os.path.join(cache_dir(), hashlib.sha256(real.encode()).hexdigest()[:24] + ".npz")


def _dirs_unchanged(real: str, dirs: dict[str, int]) -> bool:
    for rel, mtime in dirs.items():
        try:
            if os.stat(os.path.join(real, rel)).st_mtime_ns != mtime:
                return False
        except OSError:
            return False
    return True


def _load(path: str, folder: str, real: str, need_verified: bool):
    """(classes, samples, digest) from a valid cache entry, or None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("version") != INDEX_VERSION or meta.get("root") != real:
                return None
            if need_verified and not meta.get("verified"):
                return None
            if not _dirs_unchanged(real, meta["dirs"]):
                return None
            files = bytes(z["files"]).decode().split("\n") if len(z["labels"]) else []
            labels = z["labels"].tolist()
    except (OSError, ValueError, KeyError):
        return None  # absent, torn or foreign: rebuild
    samples = [(os.path.join(folder, f), label) for f, label in zip(files, labels)]  # as a fresh scan names them
    return meta["classes"], samples, meta["digest"]


def _save(path: str, folder: str, real: str, classes, samples, dirs, verified: bool, digest: str) -> None:
    files = "\n".join(os.path.relpath(p, folder) for p, _ in samples).encode()
    meta = json.dumps({"version": INDEX_VERSION, "root": real, "classes": classes, "dirs": dirs,
                       "verified": verified, "digest": digest})
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.array(meta), files=np.frombuffer(files, dtype=np.uint8),
                 labels=np.array([label for _, label in samples], dtype=np.int32))
    os.replace(tmp, path)  # readers see the old entry or the whole new one, never a torn file


def listing_digest(folder: str, samples) -> str:
    """sha256 of the folder's (relative path, label) listing: the raw folder's identity in a run's record."""
    h = hashlib.sha256()
    for path, label in samples:
        h.update(f"{os.path.relpath(path, folder)}\t{label}\n".encode())
    return h.hexdigest()


def cached_index(folder: str, dataset: str, verify: bool,
                 build: Callable[[str, str, bool, list], tuple[list[str], list[tuple[str, int]]]]):
    """(classes, samples, digest) of `folder`, from the cache when its listing is unchanged, else from
    `build(folder, dataset, verify, dirs)` and then cached. `build` appends (directory, mtime_ns) to `dirs` for every
    directory it lists, each stamp taken *before* the listing, so a change during the walk invalidates the entry at
    the next check instead of hiding in it."""
    real = os.path.realpath(folder)
    path = _entry(folder)
    hit = _load(path, folder, real, verify)
    if hit is not None:
        return hit
    try:
        os.makedirs(cache_dir(), exist_ok=True)
        lock = open(path + ".lock", "a")
    except OSError as err:
        if cache_dir() not in _WARNED:
            _WARNED.add(cache_dir())
            warnings.warn(f"{dataset}: folder index cache {cache_dir()!r} is not writable ({err}); indexing "
                          "without it (set SPECFORCE_CACHE to a writable folder)", stacklevel=3)
        dirs: list[str] = []
        classes, samples = build(folder, dataset, verify, dirs)
        return classes, samples, listing_digest(folder, samples)
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be building this entry: wait for it, then reuse it
        hit = _load(path, folder, real, verify)
        if hit is not None:
            return hit
        dirs = []
        classes, samples = build(folder, dataset, verify, dirs)
        stamps = {os.path.relpath(d, folder): mtime for d, mtime in dirs}
        digest = listing_digest(folder, samples)
        try:
            _save(path, folder, real, classes, samples, stamps, verify, digest)
        except OSError as err:
            warnings.warn(f"{dataset}: could not write the folder index cache {path!r} ({err})", stacklevel=3)
        return classes, samples, digest
