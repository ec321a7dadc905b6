"""ImageNet input at GPU speed: the raw folder against a prepared dataset, through the project's own loader, in one run.

    .venv/bin/python -m benchmarks.bench_data --out reports/bench_data.json          # 2,000 generated JPEGs, ~4 min
    .venv/bin/python -m benchmarks.bench_data --quick                               # 256 JPEGs, ~1 min
    .venv/bin/python -m benchmarks.bench_data --folder /tmp/imagenet_like           # reuse a generated folder

On a generated ImageNet-like folder (benchmarks/imagenet_like.py: JPEGs of 400-640 x 300-480 px, quality 90, 20
classes), side by side in one process:

1. `specforce prepare` (sweeps.commands.prepare.prepare_dataset) into a fresh DEST with 1 worker and with 2 workers, in
   interleaved order (1, 2, 2, 1), wall time each; the ratio is the parallel speed-up. It uses every core it is given,
   so this part runs unpinned; "cores busy" (CPU seconds of prepare and its pool / wall seconds) shows how many cores
   the machine actually gave it: on a machine shared with other work the ratio understates the speed-up.
2. Start-up per worker, i.e. the time to build the dataset object: the raw folder with a cold index (a fresh
   $SPECFORCE_CACHE, the in-process verify memo cleared: walk + verify() every file), the raw folder with the on-disk
   index cached (what every later worker and trial pays), and opening the prepared dataset (a path and a file:// URI).
3. Images/s per core through `trainers.data.loader.infinite_loader(ds, batch_size=64, seed=0, num_workers=0, raw=True)`,
   the training stream (uint8 batches; hflip on, the train split's default), with this process pinned to one CPU and
   torch on one thread: the raw folder (full JPEG decode + ADM crop per image), the prepared dataset from a path
   (memory-mapped .npy shards) and from a file:// URI (pyarrow ranged reads, the s3:// / gs:// code path), the
   prepared dataset as float batches (raw=False: the float conversion on the CPU, as before uint8 batches), and
   the same 256 px crops stored as JPEG q95 and PNG records (bench_formats' readers) behind the same loader. The rate
   is images per CPU-second of this process (on a machine shared with other work the wall-clock rate, printed beside
   it, is lower by the others' share of the core); timed in interleaved rounds, median reported.
4. Bytes per image on disk, and the CPU cores per GPU each path needs to feed JiT-B/32 and JiT-B/16 at 256 px at 40%
   MFU on an H200 (989.5 TFLOP/s dense bf16; a training step costs 3 x forward FLOPs; forward FLOPs per image from
   benchmarks.gpu_flops.jit_forward_flops, the closed form bench_gpu checks against torch's FlopCounterMode).

Figures are ratios within one run on one machine, never pass/fail. The targets the prepared format was built to meet,
for reading the table: the prepared stream >= 1,500 images/s per core and >= 7x the raw folder; opening a prepared
dataset <= 2 s, flat in size; prepare on 2 cores >= 1.7x one core.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from benchmarks.bench_formats import Jpeg95, Png, ensure_folder, pin_one_core
from benchmarks.folder_cli import add_out, folder_parser, report

IMAGE_SIZE = 256
BATCH = 64
H200_BF16_TFLOPS = 989.5
MFU = 0.40
PRESETS = ("JiT-B/32", "JiT-B/16")


def forward_gflops(preset: str) -> float:
    """Forward GFLOPs per image of `preset` at 256 px (bench_gpu's closed form; the model is built on the meta
    device, so nothing is allocated)."""
    from benchmarks.gpu_flops import jit_forward_flops
    from trainers.model.jit import build_jit

    with torch.device("meta"):
        model = build_jit(preset, image_size=IMAGE_SIZE, in_channels=3, num_classes=1000)
    return jit_forward_flops(model, 1) / 1e9


def gpu_demand() -> dict[str, dict[str, float]]:
    """Images/s one H200 consumes per preset at 40% MFU."""
    out = {}
    for preset in PRESETS:
        fwd = forward_gflops(preset)
        out[preset] = {"forward_gflops": fwd, "images_per_s": MFU * H200_BF16_TFLOPS * 1e12 / (3 * fwd * 1e9)}
    return out


class FormatDataset(torch.utils.data.Dataset):
    """A bench_formats reader behind the project's loader: (uint8 [3, H, W], label) by index."""

    def __init__(self, fmt, labels: list[int]):
        self.fmt, self.labels = fmt, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.fmt.read(int(i))), self.labels[int(i)]


def stream_rate(make_loader, min_seconds: float) -> tuple[float, float]:
    """(images per CPU-second, images per wall-second) of a fresh infinite_loader: one warm-up batch, then batches
    until min_seconds of CPU time have passed (num_workers=0: all the work is this process's)."""
    loader = make_loader()
    next(loader)
    images, c0, t0 = 0, time.process_time(), time.perf_counter()
    while time.process_time() - c0 < min_seconds:
        x, _ = next(loader)
        images += x.shape[0]
    return images / (time.process_time() - c0), images / (time.perf_counter() - t0)


def cpu_with_children() -> float:
    """CPU seconds of this process and of its finished (waited-for) child processes, e.g. prepare's pool."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def clear_verify_memo() -> None:
    """Forget which files this process has verify()-ed, so the next index build is a cold one."""
    from trainers.data import image_files

    memo = getattr(image_files, "_VERIFIED", None)
    if memo is not None:
        memo.clear()


def prepare_times(folder: str, tmp: str, shard_size: int, order: tuple[int, ...]) -> dict[str, Any]:
    """Wall time of prepare_dataset with each worker count in `order`, each into a fresh DEST."""
    from sweeps.commands.prepare import prepare_dataset

    times: dict[int, list[float]] = {}
    cores: dict[int, list[float]] = {}
    manifest = None
    for k, workers in enumerate(order):
        dest = os.path.join(tmp, f"prepared_w{workers}_{k}")
        t, c = time.perf_counter(), cpu_with_children()
        manifest = prepare_dataset(folder, dest, dataset="imagefolder", image_size=IMAGE_SIZE, workers=workers,
                                   shard_size=shard_size, progress=False)
        wall = time.perf_counter() - t
        times.setdefault(workers, []).append(wall)
        cores.setdefault(workers, []).append((cpu_with_children() - c) / wall)
        if k:
            shutil.rmtree(dest, ignore_errors=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    return {"shard_size": shard_size, "seconds": {str(w): v for w, v in times.items()},
            "cores_busy": {str(w): v for w, v in cores.items()}, "one_worker_s": one,
            "two_workers_s": two, "speedup_2_vs_1": one / two, "manifest": manifest,
            "dest": os.path.join(tmp, f"prepared_w{order[0]}_0")}


def startup_times(folder: str, dest: str, tmp: str, repeats: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median (wall, CPU) seconds to build each dataset object (one worker's start-up)."""
    from trainers.data.loader import build_dataset

    uri = "file://" + os.path.abspath(dest)
    raw = lambda: build_dataset("imagefolder", image_size=IMAGE_SIZE, root=folder)  # noqa: E731
    cases = {  # in this order: the cold case runs on a fresh cache, the cached case then finds it
        "raw folder, cold index (walk + verify)": raw,
        "raw folder, cached index": raw,
        "prepared (path)": lambda: build_dataset("prepared", image_size=IMAGE_SIZE, split="train", root=dest),
        "prepared (file:// URI)": lambda: build_dataset("prepared", image_size=IMAGE_SIZE, split="train", root=uri),
    }
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    old = os.environ.get("SPECFORCE_CACHE")
    try:
        for r in range(repeats):
            cache = os.path.join(tmp, f"sfcache_{r}")
            os.environ["SPECFORCE_CACHE"] = cache
            for name, fn in cases.items():
                clear_verify_memo()  # every case is a new worker process's first build
                t, c = time.perf_counter(), time.process_time()
                fn()
                walls[name].append(time.perf_counter() - t)
                cpus[name].append(time.process_time() - c)
            shutil.rmtree(cache, ignore_errors=True)
    finally:
        if old is None:
            os.environ.pop("SPECFORCE_CACHE", None)
        else:
            os.environ["SPECFORCE_CACHE"] = old
    return ({name: statistics.median(v) for name, v in walls.items()},
            {name: statistics.median(v) for name, v in cpus.items()})


def run(args: argparse.Namespace) -> dict[str, Any]:
    from trainers.data.loader import build_dataset, infinite_loader

    tmp = tempfile.mkdtemp(prefix="bench_data_")
    try:
        folder = ensure_folder(args.folder, args.images, tmp)
        os.environ["SPECFORCE_CACHE"] = os.path.join(tmp, "sfcache")  # never the user's cache
        from trainers.data.image_files import scan_folder

        _, samples = scan_folder(folder, "imagefolder")
        n = len(samples)
        print(f"{n} images in {folder}", file=sys.stderr, flush=True)

        # 1. prepare, 1 vs 2 workers (unpinned: it uses the cores it is given)
        print("prepare: 1 and 2 workers ...", file=sys.stderr, flush=True)
        prep = prepare_times(folder, tmp, args.shard_size, (1, 2) if args.quick else (1, 2, 2, 1))
        dest = prep["dest"]

        # 2. start-up
        pin_note = pin_one_core()
        print(f"start-up ...; {pin_note}", file=sys.stderr, flush=True)
        startup, startup_cpu = startup_times(folder, dest, tmp, args.startup_repeats)

        # 3. the stream, per core
        raw_ds = build_dataset("imagefolder", image_size=IMAGE_SIZE, root=folder)
        prep_ds = build_dataset("prepared", image_size=IMAGE_SIZE, split="train", root=dest)
        uri_ds = build_dataset("prepared", image_size=IMAGE_SIZE, split="train", root="file://" + os.path.abspath(dest))
        all_labels = [y for _, y in samples]

        def loader(ds, raw=True):
            return lambda: infinite_loader(ds, batch_size=BATCH, seed=0, num_workers=0, raw=raw, pin_memory=False)

        paths_all = [p for p, _ in samples]
        live_bytes = sum(os.path.getsize(p) for p in paths_all) / n
        prep_bytes = sum(s["bytes"] for s in prep["manifest"]["splits"]["train"]["shards"]) / n
        streams: dict[str, dict[str, Any]] = {
            "raw folder (JPEG decode + ADM crop)": {"make": loader(raw_ds), "bytes": live_bytes,
                                                   "min_s": args.min_seconds_raw},
            "prepared, path (.npy memory map)": {"make": loader(prep_ds), "bytes": prep_bytes},
            "prepared, file:// URI (pyarrow read_at)": {"make": loader(uri_ds), "bytes": prep_bytes},
            "prepared, float batches (raw=False)": {"make": loader(prep_ds, raw=False), "bytes": prep_bytes},
        }
        if not args.no_formats:
            print("writing the crops as JPEG q95 and PNG ...", file=sys.stderr, flush=True)
            crops = _crops(prep_ds, n)
            for cls, label in ((Jpeg95, "JPEG q95 records (PIL decode)"), (Png, "PNG records (PIL decode)")):
                fmt = cls(tmp)
                fmt.write(crops, all_labels)
                fmt.open()
                streams[f"{label}"] = {"make": loader(FormatDataset(fmt, all_labels)), "bytes": fmt.nbytes() / n,
                                       "lossy": cls is Jpeg95}
            del crops
        rates: dict[str, list[float]] = {name: [] for name in streams}
        walls: dict[str, list[float]] = {name: [] for name in streams}
        for r in range(args.rounds):
            names = list(streams) if r % 2 == 0 else list(streams)[::-1]
            for name in names:
                s = streams[name]
                cpu_rate, wall_rate = stream_rate(s["make"], s.get("min_s", args.min_seconds))
                rates[name].append(cpu_rate)
                walls[name].append(wall_rate)
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k.split(' (')[0]} {v[-1]:,.0f}/s"
                                                               for k, v in rates.items()), file=sys.stderr, flush=True)

        # 4. what a GPU needs
        demand = gpu_demand()
        raw_rate = statistics.median(rates["raw folder (JPEG decode + ADM crop)"])
        rows = []
        for name, s in streams.items():
            rate = statistics.median(rates[name])
            row = {"path": name, "images_per_s_per_core": rate, "x_raw_folder": rate / raw_rate,
                   "wall_images_per_s": statistics.median(walls[name]), "bytes_per_image": s["bytes"],
                   "rounds": rates[name]}
            for preset, d in demand.items():
                row[f"cores_per_gpu_{preset}"] = d["images_per_s"] / rate
            rows.append(row)
        manifest = prep.pop("manifest")
        return {"images": n, "folder": folder, "image_size": IMAGE_SIZE, "batch_size": BATCH, "pinning": pin_note,
                "rounds": args.rounds, "streams": rows, "startup_s": startup, "startup_cpu_s": startup_cpu,
                "prepare": prep,
                "gpu_demand": demand, "mfu": MFU, "h200_bf16_tflops": H200_BF16_TFLOPS,
                "manifest_summary": {"counts": {k: v.get("count", v) for k, v in manifest["splits"].items()},
                                     "shards": len(manifest["splits"]["train"]["shards"]),
                                     "digest": manifest["digest"]},
                "torch_threads": torch.get_num_threads()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _crops(ds, n: int) -> np.ndarray:
    """The prepared dataset's stored pixels (equal to the live path's: bench_formats asserts it) as [n, 3, H, W]."""
    from trainers.data.loader import build_dataset

    plain = build_dataset("prepared", image_size=IMAGE_SIZE, split="test", root=ds.root)  # test split: no hflip
    return np.stack([plain.raw_item((i, 0))[0].numpy() for i in range(n)])


def _runs(p: dict[str, Any], w: str) -> str:
    return "; ".join(f"{sec:.1f} s wall, {cores:.2f} cores busy, {sec * cores:.1f} CPU s"
                     for sec, cores in zip(p["seconds"][w], p["cores_busy"][w]))


def table(res: dict[str, Any]) -> str:
    d = res["gpu_demand"]
    head = (f"| path (through infinite_loader, batch {res['batch_size']}, num_workers=0) | images/s per core | "
            f"x raw folder | wall images/s | bytes/image | cores per H200, JiT-B/32 ({d['JiT-B/32']['images_per_s']:,.0f} img/s) | "
            f"cores per H200, JiT-B/16 ({d['JiT-B/16']['images_per_s']:,.0f} img/s) |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for row in res["streams"]:
        lines.append(f"| {row['path']} | {row['images_per_s_per_core']:,.0f} | {row['x_raw_folder']:.1f} | "
                     f"{row['wall_images_per_s']:,.0f} | {row['bytes_per_image'] / 1e3:,.1f} kB | {row['cores_per_gpu_JiT-B/32']:.2f} | "
                     f"{row['cores_per_gpu_JiT-B/16']:.2f} |")
    lines += ["", "| start-up per worker (build the dataset object) | wall ms | CPU ms |", "|---|---|---|"]
    lines += [f"| {name} | {sec * 1e3:.2f} | {res['startup_cpu_s'][name] * 1e3:.2f} |"
              for name, sec in res["startup_s"].items()]
    p = res["prepare"]
    lines += ["", f"| specforce prepare, {res['images']} images, shard size {p['shard_size']} | seconds |", "|---|---|",
              f"| 1 worker | {p['one_worker_s']:.1f} ({_runs(p, '1')}) |",
              f"| 2 workers | {p['two_workers_s']:.1f} ({_runs(p, '2')}) |",
              f"| speed-up | {p['speedup_2_vs_1']:.2f}x |", ""]
    lines += [f"- {k}: forward {v['forward_gflops']:.2f} GFLOP/image (bench_gpu.jit_forward_flops), 3x per training "
              f"image, at {res['mfu']:.0%} of {res['h200_bf16_tflops']} TFLOP/s: {v['images_per_s']:,.0f} images/s"
              for k, v in d.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = folder_parser(__doc__, images_help="JPEGs to generate (default 2000; ignored with --folder)",
                       quick_help="256 images, 1 round, prepare once per worker count", min_seconds=1.0,
                       min_seconds_help="seconds per timed stream pass (prepared paths)")
    ap.add_argument("--min-seconds-raw", type=float, default=3.0, help="seconds per timed raw-folder pass")
    ap.add_argument("--startup-repeats", type=int, default=3)
    ap.add_argument("--shard-size", type=int, default=125,
                    help="images per shard for the prepare timing (default 125: 16 shards of 2,000 images, so two "
                         "workers get equal work; prepare's own default holds ~1,365 images at 256 px)")
    ap.add_argument("--no-formats", action="store_true", help="skip the JPEG q95 / PNG record streams")
    add_out(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.rounds, args.min_seconds, args.min_seconds_raw = 256, 1, 0.3, 1.0
        args.startup_repeats, args.shard_size = 1, 32
    return report(run(args), table, args.out)


if __name__ == "__main__":
    main()
