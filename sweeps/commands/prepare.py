"""`specforce prepare`: convert a dataset once into a prepared dataset (uint8 shards + manifest), in parallel.

    specforce prepare photos/ data/photos64 --dataset imagefolder --image-size 64          # every core here
    specforce prepare /data/imagenet /data/in256 --dataset imagenet --image-size 256 --address ray://head:10001
    .venv/bin/python -c "from sweeps.commands.prepare import prepare_dataset; \
prepare_dataset('-', 'out', dataset='digits', image_size=16)"

What it does (the format: trainers/data/prepared_format.py; the reader: trainers/data/prepared.py):
1. Plans: lists the source (a folder's files in sorted order, or a built-in dataset's indices) and cuts each split into
   shards of `shard_size` images. The plan is written to DEST/.prepare/plan.json first.
2. Writes the shards in parallel: a process per core (`--workers`), or Ray tasks on the cluster at `--address` (DEST
   must then be storage every node sees). Each image is fully decoded and ADM centre-cropped (folders) or resized
   (cifar10 at other sizes, mnist, digits; quantised to uint8), so verification happens here, once. A shard is written
   to a temporary name and renamed when complete, and its size and sha256 go to DEST/.prepare/ after that.
3. Finishes: the labels, then manifest.json (atomically, last). DEST is a usable dataset only once it has a manifest.

Resuming: rerunning the same command after a kill skips the shards already written. Unreadable source images: their
shards are not written, the others are, and the command ends with one line listing the files; remove or replace them
and rerun (a changed listing needs `--restart`, which drops the partial shards). A DEST holding another dataset, image
size or source is refused. `--verify` rereads an existing prepared dataset and checks every shard's sha256.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

import numpy as np

from sweeps.errors import UserError

PREPARABLE = ("imagenet", "imagefolder", "cifar10", "mnist", "digits")
DEFAULT_SHARD_BYTES = 256 << 20  # ~256 MB shards: 1,365 images at 256 px, few files, ranged reads stay small
MIN_SHARDS = 64
STATE = ".prepare"
CROP = {"imagenet": "ADM centre crop (box-halve while short side >= 2N, bicubic short side to N, centre N x N), "
                    "RGB uint8, exactly the live imagenet dataset's pixels",
        "imagefolder": "ADM centre crop (box-halve while short side >= 2N, bicubic short side to N, centre N x N), "
                       "RGB uint8, exactly the live imagefolder dataset's pixels",
        "cifar10": "the pickles' uint8 pixels at 32 px; other sizes: bilinear antialiased resize, rounded to uint8",
        "mnist": "28 px digits padded to 32, bilinear antialiased resize to N, rounded to uint8",
        "digits": "8 px digits, bilinear antialiased resize to N, rounded to uint8"}


# ------------------------------------------------------------------------------------------------------- planning
def _splits(dataset: str) -> list[str]:
    return ["train"] if dataset == "imagefolder" else ["train", "test"]


def _source(dataset: str, src: str, split: str, image_size: int):
    """The live dataset the shards are made from (no flips, no verify: the decode below is the check)."""
    from trainers.data.loader import build_dataset

    opts: dict[str, Any] = {}
    if dataset in ("imagenet", "imagefolder"):
        opts = {"hflip": False, "verify": False}
    elif dataset == "cifar10":
        opts = {"hflip": False}
    return build_dataset(dataset, image_size=image_size, split=split, root=src if dataset in
                         ("imagenet", "imagefolder", "cifar10") else None, seed=0, **opts)


FOLDER_SPLITS = {"imagefolder": {"train": ""}, "imagenet": {"train": "train", "test": "val"}}


class _FolderListing:
    """A folder split as the planner needs it (classes, files, labels), read through the on-disk index cache without
    importing torch: the live dataset gives the same list (datasets/folder.py reads the same cache)."""

    def __init__(self, folder: str, dataset: str):
        from trainers.data.folder_index import cached_index
        from trainers.data.image_files import _build_index

        self.classes, self._samples, _ = cached_index(folder, dataset, False, _build_index)
        self.channels, self.num_classes = 3, len(self.classes)

    def __len__(self) -> int:
        return len(self._samples)

    def _label(self, i: int) -> int:
        return self._samples[i][1]


def plan(src: str, dataset: str, image_size: int, shard_size: int | None) -> dict[str, Any]:
    """Splits -> shards (start, stop) and, for folders, the files; plus what the source is made of."""
    splits: dict[str, Any] = {}
    listing = hashlib.sha256()
    classes = channels = None
    for split in _splits(dataset):
        if dataset in FOLDER_SPLITS:
            if not os.path.isdir(src):
                raise FileNotFoundError(f"{dataset}: root {src!r} does not exist")
            ds = _FolderListing(os.path.join(src, FOLDER_SPLITS[dataset][split]), dataset)
        else:
            ds = _source(dataset, src, split, image_size)
        n = len(ds)
        channels, num_classes = ds.channels, ds.num_classes
        per_image = ds.channels * image_size * image_size
        # ~256 MB shards, but at least MIN_SHARDS of them (>= 64 images each) so a small dataset keeps every core
        # busy; a rule of n alone, not of --workers, so a rerun with other workers continues the same plan
        size = shard_size or max(1, min(DEFAULT_SHARD_BYTES // per_image, max(64, -(-n // MIN_SHARDS))))
        files = [os.path.relpath(p, src) for p, _ in ds._samples] if dataset in FOLDER_SPLITS else None
        labels = [int(ds._label(i)) for i in range(n)]
        classes = getattr(ds, "classes", None) or [str(c) for c in range(num_classes)]
        listing.update(json.dumps([split, files, labels]).encode())
        splits[split] = {"count": n, "shards": [[a, min(a + size, n)] for a in range(0, n, size)], "files": files,
                         "labels": labels}
    return {"dataset": dataset, "image_size": image_size, "source": os.path.abspath(src), "channels": channels,
            "classes": classes, "num_classes": len(classes), "listing": listing.hexdigest(), "splits": splits}


# ------------------------------------------------------------------------------------------------------- workers
@functools.lru_cache(maxsize=4)
def _cached_source(dataset: str, src: str, split: str, image_size: int):
    return _source(dataset, src, split, image_size)


def write_shard(job: dict[str, Any]) -> dict[str, Any]:
    """One shard: decode/crop every image, write DEST/<split>/shard-K.npy atomically; returns its manifest entry, or
    {"bad": [...]} listing unreadable source files (nothing is written then). Runs in a pool process or a Ray task."""
    from trainers.data.image_files import ImageReadError, load_rgb_array  # PIL + NumPy: no torch here

    dataset, src, split, size = job["dataset"], job["src"], job["split"], job["image_size"]
    n = job["stop"] - job["start"]
    out = np.empty((n, job["channels"], size, size), dtype=np.uint8)
    bad = []
    if job["files"] is not None:
        for i, rel in enumerate(job["files"]):
            try:
                out[i] = load_rgb_array(os.path.join(src, rel), size, dataset)
            except ImageReadError as err:
                bad.append(f"{rel!r} ({' '.join(str(err).split(': ', 2)[-1].split())})")
    else:
        import torch

        ds = _cached_source(dataset, src if dataset == "cifar10" else "", split, size)
        for i, index in enumerate(range(job["start"], job["stop"])):
            x, _ = ds.raw_item(index)
            if x.dtype != torch.uint8:  # float [-1, 1] from a resize: round to the nearest level
                x = ((x.double() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
            out[i] = x.numpy()
    if bad:
        return {"bad": bad}
    path = os.path.join(job["dest"], job["file"])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(head, np.lib.format.header_data_from_array_1_0(out))
    body = memoryview(out).cast("B")  # C-contiguous: the .npy payload as it is, no copy
    digest = hashlib.sha256(head.getvalue())
    digest.update(body)  # hashed from memory: the shard is not read back
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(head.getvalue())
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # the shard appears whole or not at all
    return {"file": job["file"], "count": n, "bytes": len(head.getvalue()) + body.nbytes,
            "header_bytes": len(head.getvalue()), "sha256": digest.hexdigest()}


# ------------------------------------------------------------------------------------------------------- driver
def _check_dest(dest: str, want: dict[str, Any], restart: bool) -> dict[str, Any] | None:
    """Refuse a DEST that holds something else; return the finished manifest when DEST already holds this dataset."""
    from trainers.data.prepared_format import MANIFEST, PreparedDataError, read_manifest

    if os.path.exists(dest) and not os.path.isdir(dest):
        raise UserError("DEST", "exists and is a file, not a folder", dest)
    if not os.path.isdir(dest) or not os.listdir(dest):
        return None
    if os.path.exists(os.path.join(dest, MANIFEST)):
        try:
            have = read_manifest(dest)
        except PreparedDataError as err:
            raise UserError("DEST", f"holds a damaged prepared dataset ({err}); remove it or choose another DEST",
                            dest) from None
        for key in ("dataset", "image_size", "source"):
            if have[key] != want[key]:
                raise UserError("DEST", f"already holds a prepared dataset with {key} {have[key]!r}, not "
                                f"{want[key]!r}; choose another DEST or remove it", dest)
        return have
    state = os.path.join(dest, STATE, "plan.json")
    if not os.path.exists(state):
        raise UserError("DEST", "is a folder with other content (no manifest.json, no interrupted prepare); "
                        "choose an empty or new folder", dest)
    with open(state) as f:
        old = json.load(f)
    for key in ("dataset", "image_size", "source"):
        if old[key] != want[key]:
            raise UserError("DEST", f"holds an interrupted prepare of {key} {old[key]!r}, not {want[key]!r}; "
                            "choose another DEST or remove it", dest)
    if old["listing"] != want["listing"] and not restart:
        raise UserError("SRC", f"its listing changed since the interrupted prepare into {dest!r} (files added, "
                        "removed or relabelled); pass --restart to drop the partial shards and start over", want["source"])
    if old["listing"] != want["listing"] or restart:
        for split in want["splits"]:
            shutil.rmtree(os.path.join(dest, split), ignore_errors=True)
        shutil.rmtree(os.path.join(dest, STATE), ignore_errors=True)
    return None


def _jobs(p: dict[str, Any], src: str, dest: str) -> list[dict[str, Any]]:
    from trainers.data.prepared_format import SHARD_PATTERN

    jobs = []
    for split, part in p["splits"].items():
        for k, (a, b) in enumerate(part["shards"]):
            jobs.append({"dataset": p["dataset"], "src": src, "dest": dest, "split": split, "start": a, "stop": b,
                         "image_size": p["image_size"], "channels": p["channels"],
                         "file": SHARD_PATTERN.format(split=split, index=k),
                         "files": part["files"][a:b] if part["files"] is not None else None})
    return jobs


def _done_path(dest: str, file: str) -> str:
    return os.path.join(dest, STATE, file.replace("/", "-") + ".json")


def _atomic_json(path: str, value: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _finished(dest: str, job: dict[str, Any]) -> dict[str, Any] | None:
    """The entry of a shard a previous run completed (its file present at the recorded size), else None."""
    try:
        with open(_done_path(dest, job["file"])) as f:
            entry = json.load(f)
        return entry if os.path.getsize(os.path.join(dest, job["file"])) == entry["bytes"] else None
    except (OSError, ValueError, KeyError):
        return None


def _pool_context():
    """Not fork: a forked child of a process whose torch/OpenMP threads hold locks can hang forever. A fork server
    started clean, with NumPy and PIL imported once, forks workers that start in milliseconds; spawn elsewhere."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["sweeps.commands.prepare", "trainers.data.image_files"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run(jobs: list[dict[str, Any]], workers: int, address: str | None, on_done) -> None:
    """Run write_shard over `jobs` in a process pool (or Ray tasks at `address`), calling on_done(job, result)."""
    if address:
        import ray

        ray.init(address=address, log_to_driver=False)
        try:
            task = ray.remote(num_cpus=1, max_retries=2)(write_shard)
            pending = {task.remote(job): job for job in jobs}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    on_done(pending.pop(ref), ray.get(ref))
        finally:
            ray.shutdown()
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context()) as pool:
        pending = {pool.submit(write_shard, job): job for job in jobs}
        while pending:
            ready, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for fut in ready:
                on_done(pending.pop(fut), fut.result())


def prepare_dataset(src: str, dest: str, *, dataset: str, image_size: int, workers: int | None = None,
                    address: str | None = None, shard_size: int | None = None, restart: bool = False,
                    progress: bool = True) -> dict[str, Any]:
    """Prepare `dataset` from `src` at `image_size` into `dest` (see the module docstring); returns the manifest."""
    from tqdm import tqdm

    from trainers.data.prepared_format import (FORMAT, FORMAT_VERSION, LABELS_PATTERN, MANIFEST,
                                                   manifest_digest)

    if dataset not in PREPARABLE:
        raise UserError("--dataset", f"must be one of {', '.join(PREPARABLE)}", dataset)
    if "://" in str(dest):
        raise UserError("DEST", "must be a local or mounted folder (prepare there, then copy it to object storage; "
                        "the prepared dataset reads s3:// and gs:// URIs)", str(dest))
    src, dest = os.path.abspath(src) if dataset in ("imagenet", "imagefolder", "cifar10") else src, os.path.abspath(dest)
    workers = workers or os.cpu_count() or 1
    t0 = time.perf_counter()
    try:
        p = plan(src, dataset, image_size, shard_size)
    except (ValueError, OSError) as err:
        raise UserError("SRC", " ".join(str(err).split()), str(src)) from None
    if dataset not in ("imagenet", "imagefolder", "cifar10"):
        p["source"] = f"specforce:{dataset}"  # shipped inside an installed wheel: no folder to name
    finished = _check_dest(dest, p, restart)
    if finished is not None:
        print(f"{dest}: already holds {dataset} at {image_size} px (digest {finished['digest'][:12]}); nothing to do",
              file=sys.stderr)
        return finished
    os.makedirs(os.path.join(dest, STATE), exist_ok=True)
    _atomic_json(os.path.join(dest, STATE, "plan.json"), {k: p[k] for k in ("dataset", "image_size", "source",
                                                                             "listing")})
    jobs = _jobs(p, src, dest)
    entries = {job["file"]: _finished(dest, job) for job in jobs}
    todo = [job for job in jobs if entries[job["file"]] is None]
    total = sum(job["stop"] - job["start"] for job in todo)
    kept = len(jobs) - len(todo)
    where = f"Ray cluster {address}" if address else f"{workers} process(es)"
    print(f"prepare {dataset} {image_size}px: {sum(s['count'] for s in p['splits'].values()):,} images in "
          f"{len(jobs)} shard(s) -> {dest}" + (f" ({kept} shard(s) already written: kept)" if kept else "")
          + f"; {where}", file=sys.stderr)
    bad: list[str] = []
    bar = tqdm(total=total, unit="img", disable=not progress, file=sys.stderr, dynamic_ncols=True, smoothing=0.1)

    def on_done(job, result):
        bar.update(job["stop"] - job["start"])
        if "bad" in result:
            bad.extend(result["bad"])
            return
        _atomic_json(_done_path(dest, job["file"]), result)
        entries[job["file"]] = result

    try:
        _run(todo, workers, address, on_done)
    finally:
        bar.close()
    if bad:
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise UserError("SRC", f"{len(bad)} unreadable image(s): {shown}; remove or replace them and rerun with "
                        f"--restart (the {sum(e is not None for e in entries.values())} complete shard(s) are kept "
                        "until then)", str(src))
    manifest: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, "dataset": dataset,
                                "source": p["source"], "image_size": image_size, "channels": p["channels"],
                                "num_classes": p["num_classes"], "classes": p["classes"],
                                "crop": CROP[dataset], "flips": dataset not in ("mnist", "digits"),
                                "created_by": "specforce prepare", "splits": {}}
    for split, part in p["splits"].items():
        rel = LABELS_PATTERN.format(split=split)
        labels_path = os.path.join(dest, rel)
        tmp = f"{labels_path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            np.save(f, np.asarray(part["labels"], dtype=np.int64))
        os.replace(tmp, labels_path)
        manifest["splits"][split] = {
            "count": part["count"], "labels": {"file": rel, "sha256": _sha(labels_path)},
            "shards": [entries[job["file"]] for job in jobs if job["split"] == split]}
    if "test" not in manifest["splits"]:
        manifest["splits"]["test"] = {"same_as": "train"}  # imagefolder: as the live dataset, one set of images
    manifest["digest"] = manifest_digest(manifest)
    _atomic_json(os.path.join(dest, MANIFEST), manifest)
    shutil.rmtree(os.path.join(dest, STATE), ignore_errors=True)
    secs = time.perf_counter() - t0
    counts = ", ".join(f"{split} {part['count']:,}" for split, part in p["splits"].items())
    print(f"prepared {dataset} {image_size}px -> {dest}: {counts} images, {_size(dest, manifest)}, "
          f"digest {manifest['digest'][:12]}, {secs:.1f} s", file=sys.stderr)
    return manifest


def _sha(path: str) -> str:
    from trainers.data.prepared_format import sha256_file

    return sha256_file(path)


def _size(dest: str, manifest: dict[str, Any]) -> str:
    total = sum(s["bytes"] for part in manifest["splits"].values() for s in part.get("shards", []))
    return f"{total / 2**20:,.1f} MiB"


def verify_prepared(dest: str, workers: int | None = None) -> dict[str, Any]:
    """Reread every shard of the prepared dataset at `dest` and compare sha256s (in parallel); UserError on the first
    failure, naming the shard."""
    from trainers.data.prepared_format import PreparedDataError, join, read_manifest

    try:
        manifest = read_manifest(dest)
    except PreparedDataError as err:
        raise UserError("DEST", str(err), dest) from None
    shards = [s for part in manifest["splits"].values() for s in part.get("shards", [])]
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=_pool_context()) as pool:
        for shard, digest in zip(shards, pool.map(_sha_or_none, [join(dest, s["file"]) for s in shards])):
            if digest != shard["sha256"]:
                why = "is missing" if digest is None else "fails its checksum"
                raise UserError("DEST", f"shard {shard['file']} {why}; prepare the dataset again", dest)
    print(f"{dest}: {len(shards)} shard(s) match their sha256 (digest {manifest['digest'][:12]})", file=sys.stderr)
    return manifest


def _sha_or_none(path: str) -> str | None:
    from trainers.data.prepared_format import sha256_file

    try:
        return sha256_file(path)
    except FileNotFoundError:
        return None
