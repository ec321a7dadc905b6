"""Which on-disk format a prepared dataset should use: maintained libraries against plain formats, side by side.

    .venv/bin/python -m benchmarks.bench_formats --out reports/bench_formats.json            # 2,000 images, ~5 min
    .venv/bin/python -m benchmarks.bench_formats --quick                                     # 200 images, ~1 min
    .venv/bin/python -m benchmarks.bench_formats --folder /tmp/imagenet_like --images 2000   # reuse a folder

The input is a generated ImageNet-like folder (benchmarks/imagenet_like.py: JPEGs of 400-640 x 300-480 px, quality
90). Every image is ADM-centre-cropped to 256 px once through the live path (`trainers.data.folder.load_rgb`,
float in [-1, 1], turned back into its exact uint8 pixels) and the crops are written in each format:

  live path       the raw folder itself: a full JPEG decode plus the ADM crop per image (what training does today)
  npy mmap        uint8 [n, 3, 256, 256] .npy shards, np.load(mmap_mode="r"), one slice copied per image
  npy pyarrow.fs  the same shards through pyarrow.fs (FileSystem.from_uri + open_input_file().read_at), here with a
                  file:// URI: the code path of an s3:// or gs:// prepared root, one ranged read per image
  png / jpeg q95  one encoded image per record in a shard file with an offset index, decoded with PIL
  litdata         litdata.optimize -> StreamingDataset (uint8 arrays, no compression), ds[i]
  streaming       streaming-community MDSWriter -> StreamingDataset (ndarray column, no compression), ds[i]
  webdataset      TarWriter shards of .npy records, WebDataset(...).decode() (sequential by design)
  ray parquet     a Parquet file of raw uint8 bytes (row groups of 64), ray.data.read_parquet().iter_batches()

For each: decode rate per core (images per CPU-second of one process pinned to one CPU, torch on one thread, plus the
CPU of the processes Ray starts; the wall-clock rate is printed beside it, and on a machine shared with other work it
is lower by the others' share of the core), timed in interleaved rounds with the median round reported; the same in
random order (can image i be read without the ones before it), the time to open the dataset and to a pass's first
image (a pipeline's start-up), bytes per image on disk, the pixels
against the live path (lossless formats must be equal, asserted; lossy ones print their PSNR) and whether the reader
takes s3:// / gs:// URIs (from the library's own source; the function is named). Libraries that are not installed are
listed as such (they are not the project's dependencies: `pip install litdata streaming-community webdataset` to
measure them). Figures are ratios within one run on one machine, never pass/fail.
"""
from __future__ import annotations

import argparse
import bisect
import io
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.folder_cli import add_out, folder_parser, report
from benchmarks.format_base import NBYTES, SHAPE, SIZE, Format, _shard_bounds
from benchmarks.format_libraries import LitData, RayParquet, Streaming, WebDataset

# Whether each reader takes object-store URIs, read from the installed sources (the cited function is the reader).
REMOTE = {
    "live path": "no: local files (PIL.Image.open on a path)",
    "npy mmap": "no: np.load(mmap_mode='r') maps local files only",
    "npy pyarrow.fs": "yes: pyarrow.fs.FileSystem.from_uri(uri) -> S3FileSystem / GcsFileSystem (both built into "
                      "the installed pyarrow), open_input_file().read_at(nbytes, offset) is one ranged GET",
    "png": "no (plain files; the same pyarrow.fs ranged reads would serve them)",
    "jpeg q95": "no (plain files; the same pyarrow.fs ranged reads would serve them)",
    "litdata": "yes: StreamingDataset(input_dir='s3://...'|'gs://...'): litdata/streaming/downloader.py "
               "_DOWNLOADERS {'s3://': S3Downloader, 'gs://': GCPDownloader}; chunks are downloaded to a local cache",
    "streaming": "yes: StreamingDataset(remote='s3://...'|'gs://...', local=cache): streaming/base/storage/download.py "
                 "S3Downloader, GCSDownloader; shards are downloaded to the local cache",
    "webdataset": "gs:// only through the gsutil CLI (webdataset/gopen.py gopen_schemes: gs=gopen_gsutil); no s3 "
                  "scheme: s3 needs 'pipe:aws s3 cp ... -' URLs",
    "ray parquet": "yes: ray.data.read_parquet('s3://...'|'gs://...') resolves paths with pyarrow.fs "
                   "(ray/data/datasource/path_util.py _resolve_paths_and_filesystem)",
}


# ----------------------------------------------------------------------------------------------- helpers
def pin_one_core() -> str:
    """Run this process (and the threads/processes it starts) on one CPU: the 'per core' in images/s per core."""
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        note = f"pinned to CPU {cpu}"
    except (AttributeError, OSError):
        note = "not pinned (no sched_setaffinity here)"
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    return note


def cpu_seconds(children: bool = False) -> float:
    """CPU seconds used so far by this process (all threads), and with `children` by every process it started (Ray's
    raylet and workers), live or finished: the clock of 'per core' on a machine shared with other work, where
    wall-clock time also counts the other work's turns on the core."""
    import psutil

    total = time.process_time()
    if not children:
        return total
    me = psutil.Process()
    t = me.cpu_times()
    total += t.children_user + t.children_system
    for child in me.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.Error:  # exited between the listing and the read
            pass
    return total


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def folder_paths(folder: str, n: int) -> tuple[list[str], list[int]]:
    """The first n images of the folder in the imagefolder dataset's order, and their labels."""
    from trainers.data.image_files import scan_folder

    _, samples = scan_folder(folder, "imagefolder")
    if len(samples) < n:
        raise SystemExit(f"{folder} holds {len(samples)} images, fewer than --images {n}")
    samples = samples[:n]
    return [p for p, _ in samples], [y for _, y in samples]


def live_uint8(path: str) -> np.ndarray:
    """The live path's pixels as uint8 [3, 256, 256]: load_rgb's float x in [-1, 1] -> round((x + 1) * 127.5)."""
    from trainers.data.folder import load_rgb

    x = load_rgb(path, SIZE, "imagefolder").numpy()
    return np.rint((x + 1.0) * 127.5).astype(np.uint8)


def ensure_folder(folder: str | None, n: int, tmp: str) -> str:
    from benchmarks.imagenet_like import make_imagenet_like

    if folder is None:
        folder = os.path.join(tmp, "imagenet_like")
        print(f"generating {n} ImageNet-like JPEGs in {folder} ...", file=sys.stderr, flush=True)
        make_imagenet_like(folder, n, 20, 0)
    return folder


# ----------------------------------------------------------------------------------------------- formats
class Live(Format):
    name = "live path"
    lossless = True

    def __init__(self, root: str, paths: list[str]):
        self.paths = paths
        self.root = ""

    def write(self, images, labels):
        pass

    def open(self):
        pass

    def read(self, i):
        return live_uint8(self.paths[i])

    def nbytes(self):
        return sum(os.path.getsize(p) for p in self.paths)


class NpyMmap(Format):
    name = "npy mmap"

    def write(self, images, labels):
        os.makedirs(self.root, exist_ok=True)
        bounds = _shard_bounds(len(images))
        for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
            np.save(os.path.join(self.root, f"shard-{k:05d}.npy"), images[a:b])
        self.starts = bounds

    def open(self):
        self.shards = [np.load(os.path.join(self.root, f"shard-{k:05d}.npy"), mmap_mode="r")
                       for k in range(len(self.starts) - 1)]

    def read(self, i):
        k = bisect.bisect_right(self.starts, i) - 1
        return np.array(self.shards[k][i - self.starts[k]])

    def close(self):
        self.shards = []


class NpyArrowFs(NpyMmap):
    """The same .npy files through pyarrow.fs, as a URI root (s3://, gs://, file://) is read."""

    name = "npy pyarrow.fs"

    def write(self, images, labels):
        super().write(images, labels)
        with open(os.path.join(self.root, "shard-00000.npy"), "rb") as f:
            np.lib.format.read_magic(f)
            np.lib.format.read_array_header_1_0(f)
            self.header = f.tell()

    def open(self):
        import pyarrow.fs

        self.fs, base = pyarrow.fs.FileSystem.from_uri("file://" + os.path.abspath(self.root))
        self.files = [self.fs.open_input_file(f"{base}/shard-{k:05d}.npy") for k in range(len(self.starts) - 1)]

    def read(self, i):
        k = bisect.bisect_right(self.starts, i) - 1
        buf = self.files[k].read_at(NBYTES, self.header + (i - self.starts[k]) * NBYTES)
        return np.frombuffer(buf, dtype=np.uint8).reshape(SHAPE).copy()

    def close(self):
        for f in self.files:
            f.close()


class Encoded(Format):
    """Encoded images concatenated in shard files, with an offset index; decode with PIL."""

    fmt = ""
    save_args: dict[str, Any] = {}

    def write(self, images, labels):
        from PIL import Image

        os.makedirs(self.root, exist_ok=True)
        bounds = _shard_bounds(len(images))
        self.starts = bounds
        for k, (a, b) in enumerate(zip(bounds, bounds[1:])):
            offsets = [0]
            with open(os.path.join(self.root, f"shard-{k:05d}.bin"), "wb") as f:
                for img in images[a:b]:
                    out = io.BytesIO()
                    Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(out, format=self.fmt,
                                                                                    **self.save_args)
                    f.write(out.getvalue())
                    offsets.append(offsets[-1] + out.tell())
            np.save(os.path.join(self.root, f"shard-{k:05d}.index.npy"), np.asarray(offsets, dtype=np.int64))

    def open(self):
        self.files = [open(os.path.join(self.root, f"shard-{k:05d}.bin"), "rb") for k in range(len(self.starts) - 1)]
        self.offsets = [np.load(os.path.join(self.root, f"shard-{k:05d}.index.npy"))
                        for k in range(len(self.starts) - 1)]

    def read(self, i):
        from PIL import Image

        k = bisect.bisect_right(self.starts, i) - 1
        j = i - self.starts[k]
        a, b = int(self.offsets[k][j]), int(self.offsets[k][j + 1])
        data = os.pread(self.files[k].fileno(), b - a, a)
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()

    def close(self):
        for f in self.files:
            f.close()


class Png(Encoded):
    name, fmt, lossless = "png", "PNG", True
    save_args = {"compress_level": 6}


class Jpeg95(Encoded):
    name, fmt, lossless = "jpeg q95", "JPEG", False
    save_args = {"quality": 95}


# ----------------------------------------------------------------------------------------------- timing
def rate(passes: Callable[[], Any], min_seconds: float, children: bool = False) -> tuple[float, float, float]:
    """(images per CPU-second, images per wall-second, wall seconds to a pass's first image): passes() is one pass's
    iterator, repeated until min_seconds of CPU time have passed. The first image of each pass is left out of the
    rates (a pipeline's start-up, e.g. Ray Data planning its read, is the third figure instead)."""
    done, cpu, wall, firsts = 0, 0.0, 0.0, []
    while cpu < min_seconds:
        t0 = time.perf_counter()
        t_first = c_first = None
        for img in passes():
            if t_first is None:
                t_first, c_first = time.perf_counter(), cpu_seconds(children)
                firsts.append(t_first - t0)
            else:
                done += 1
            if img.dtype != np.uint8:
                raise AssertionError(f"read {img.dtype}")
        wall += time.perf_counter() - t_first
        cpu += cpu_seconds(children) - c_first
    return done / cpu, done / wall, statistics.median(firsts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    pin_note = pin_one_core()
    tmp = tempfile.mkdtemp(prefix="bench_formats_")
    try:
        folder = ensure_folder(args.folder, args.images, tmp)
        paths, labels = folder_paths(folder, args.images)
        n = len(paths)
        print(f"{n} images from {folder}; {pin_note}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        ref = np.stack([live_uint8(p) for p in paths])
        print(f"live-path crops: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        images_path = os.path.join(tmp, "crops.npy")
        np.save(images_path, ref)

        fmts: list[Format] = [Live(tmp, paths), NpyMmap(tmp), NpyArrowFs(tmp), Png(tmp), Jpeg95(tmp),
                              LitData(tmp, images_path), Streaming(tmp), WebDataset(tmp), RayParquet(tmp)]
        if args.formats:
            wanted = {s.strip() for s in args.formats.split(",")}
            fmts = [f for f in fmts if f.name in wanted or f.name == "live path"]
        rows: dict[str, dict[str, Any]] = {}
        for f in fmts:
            row = rows.setdefault(f.name, {"format": f.name, "lossless": f.lossless, "remote": REMOTE[f.name],
                                           "random_access": f.random_access})
            if not f.available:
                row["missing"] = f.missing
                continue
            try:
                t = time.perf_counter()
                f.write(ref, labels)
                row["write_s"] = time.perf_counter() - t
                t = time.perf_counter()
                f.open()
                row["open_s"] = time.perf_counter() - t
                row["bytes_per_image"] = f.nbytes() / n
                got = np.stack(list(f.iterate(range(n)) if f.random_access else f.stream(n)))
                if got.shape != ref.shape or got.dtype != np.uint8:
                    raise AssertionError(f"{f.name}: read {got.dtype} {got.shape}, expected uint8 {ref.shape}")
                if getattr(f, "seen_index", None) is not None:  # a stream that may reorder rows: map them back
                    order = np.asarray(f.seen_index)
                    row["order_preserved"] = bool(np.array_equal(order, np.arange(n)))
                    back = np.empty_like(got)
                    back[order] = got
                    got = back
                row["equal_to_live"] = bool(np.array_equal(got, ref))
                row["psnr_db"] = psnr(got, ref)
                if f.lossless:
                    assert row["equal_to_live"], f"{f.name} is lossless but its pixels differ from the live path"
                if f.random_access:  # image i alone, checked against the live path
                    for i in np.random.default_rng(1).choice(n, size=min(n, 20), replace=False):
                        assert np.array_equal(f.read(int(i)), ref[i]) or not f.lossless, f"{f.name}: image {i}"
            except Exception as err:  # a library that fails here is a finding, not a crash of the whole comparison
                row["error"] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
                print(f"{f.name}: {row['error']}", file=sys.stderr, flush=True)
        live_n = min(n, args.live_images)
        shuffled = [int(i) for i in np.random.default_rng(0).permutation(n)]
        samples: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):  # interleaved: every format once per round, rounds alternate the order
            for f in (fmts if r % 2 == 0 else fmts[::-1]):
                row = rows[f.name]
                if not f.available or "error" in row:
                    continue
                m = live_n if isinstance(f, Live) else n
                seq, seq_wall, first = rate(lambda: f.stream(m), args.min_seconds, f.children_cpu)
                samples.setdefault((f.name, "seq"), []).append(seq)
                samples.setdefault((f.name, "wall"), []).append(seq_wall)
                samples.setdefault((f.name, "first"), []).append(first)
                if f.random_access:
                    rnd = shuffled[:live_n] if isinstance(f, Live) else shuffled
                    samples.setdefault((f.name, "rnd"), []).append(rate(lambda: f.iterate(rnd), args.min_seconds)[0])
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        for f in fmts:
            rows[f.name]["images_per_s"] = statistics.median(samples.get((f.name, "seq"), [math.nan]))
            if f.random_access:
                rows[f.name]["random_images_per_s"] = statistics.median(samples.get((f.name, "rnd"), [math.nan]))
            rows[f.name]["wall_images_per_s"] = statistics.median(samples.get((f.name, "wall"), [math.nan]))
            rows[f.name]["first_image_s"] = statistics.median(samples.get((f.name, "first"), [math.nan]))
            rows[f.name]["rounds_seq"] = samples.get((f.name, "seq"), [])
            rows[f.name]["rounds_random"] = samples.get((f.name, "rnd"), [])
            f.close()
        live = rows["live path"]["images_per_s"]
        for row in rows.values():
            if "images_per_s" in row:
                row["x_live"] = row["images_per_s"] / live
        return {"images": n, "folder": folder, "image_size": SIZE, "pinning": pin_note, "rounds": args.rounds,
                "live_images_timed": live_n, "formats": list(rows.values()), "versions": versions()}
    finally:
        try:
            import ray

            if ray.is_initialized():
                ray.shutdown()
        except ImportError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("numpy", "pillow", "pyarrow", "ray", "litdata", "streaming-community", "mosaicml-streaming",
                "webdataset"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def table(result: dict[str, Any]) -> str:
    lines = ["| format | images/s per core | x live | random order, images/s per core | wall images/s | open s | "
             "first image s | bytes/image | pixels vs live | s3:// gs:// |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["formats"]:
        if "missing" in row or "error" in row:
            lines.append(f"| {row['format']} | {row.get('missing') or row.get('error')} | | | | | | | | "
                         f"{row['remote'].split(':')[0]} |")
            continue
        rnd = f"{row['random_images_per_s']:,.0f}" if row["random_access"] else "no (sequential only)"
        pix = ("equal" if row["equal_to_live"] else f"differs: PSNR {row['psnr_db']:.1f} dB")
        if row.get("order_preserved") is False:
            pix += " (rows out of order: matched by the stored index)"
        opened = "-" if row["format"] == "live path" else f"{row['open_s']:.3f}"
        lines.append(f"| {row['format']} | {row['images_per_s']:,.0f} | {row['x_live']:.1f} | {rnd} | {row['wall_images_per_s']:,.0f} | {opened} | "
                     f"{row['first_image_s']:.3f} | {row['bytes_per_image'] / 1e3:,.1f} kB | {pix} | {row['remote'].split(':')[0]} |")
    lines.append("")
    lines += [f"- {row['format']}: {row['remote']}" for row in result["formats"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = folder_parser(__doc__, images_help="images to convert and read (default 2000)",
                       quick_help="200 images, 1 round: a smoke run", min_seconds=0.5,
                       min_seconds_help="minimum CPU seconds per timed measurement")
    ap.add_argument("--live-images", type=int, default=200, help="images per live-path timing pass (it is slow)")
    ap.add_argument("--formats", help="comma-separated subset (the live path is always measured)")
    add_out(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.rounds, args.min_seconds, args.live_images = min(args.images, 200), 1, 0.2, 50
    return report(run(args), table, args.out)


if __name__ == "__main__":
    main()
