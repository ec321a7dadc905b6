"""Pre-flight checks the CLI runs before any work starts: output paths, ports, storage, and a sweep's environment.

    python -c "from sweeps.preflight import check_port; check_port('127.0.0.1', 5000)"

Each check raises `sweeps.errors.UserError` (or ConfigError/SpecError for config keys) naming the flag or key, and
writes nothing. What is checked where (the CLI decides which apply):

- `check_out_dir`: --out (train, report, demo) must be a folder or creatable as one (no file in its place or above).
- `check_storage`: --storage is a local folder (not a file) or a URI with a filesystem scheme Ray can write to.
- `check_port`: `specforce ui --port` is free on its host (a bind test), so a taken port is refused instead of
  uvicorn logging "Address already in use" and exiting 0.
- `check_spec_environment`: every distinct config a sweep will train passes `trainers.training.environment.check_environment`
  (device, files, datasets index cleanly), and one trial fits the embedded Ray's CPUs and GPUs. Only when the Ray
  cluster is this machine: a remote cluster's head and workers have their own files and devices.
- `check_train_out`: `specforce train` refuses an --out whose checkpoint.pt was written by another config, before it
  creates an MLflow run (the loop would refuse later, mid-way).
- `check_inception_weights`: `specforce train` and `eval` with fid/is fetch or find the Inception weights first.
"""
from __future__ import annotations

import os
import pathlib
import socket
import sys
import time
import urllib.parse
from typing import Any

from sweeps.errors import UserError

# filesystem schemes pyarrow (Ray's storage layer) understands
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "az", "file", "memory")


def check_out_dir(path: str | os.PathLike, flag: str = "--out") -> pathlib.Path:
    p = pathlib.Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(flag, "exists and is a file, not a folder", str(path))
    for parent in p.absolute().parents:  # a file anywhere above it makes it impossible to create
        if parent.exists():
            if not parent.is_dir():
                raise UserError(flag, f"{parent} is a file, so the folder cannot be created", str(path))
            if not os.access(parent, os.W_OK | os.X_OK) and not p.exists():
                raise UserError(flag, f"{parent} is not writable", str(path))
            break
    return p


def check_storage(storage: str | None, flag: str = "--storage") -> None:
    if not storage:
        return
    if "://" in storage:
        scheme = urllib.parse.urlparse(storage).scheme.lower()
        if scheme not in STORAGE_SCHEMES:
            raise UserError(flag, f"unknown storage scheme {scheme!r}; Ray storage is a folder or one of "
                            f"{', '.join(s + '://' for s in STORAGE_SCHEMES)}", storage)
        return
    check_out_dir(storage, flag)


def check_port(host: str, port: int, flag: str = "--port") -> None:
    if not 0 < port < 65536:
        raise UserError(flag, "must be a TCP port in 1..65535", port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR, as uvicorn sets it: a port in TIME_WAIT is usable, a listening one is not
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as err:
            raise UserError(flag, f"{host}:{port} is not available ({err.strerror or err}); another MLflow UI or "
                            "server may be running there: choose another --port", port) from None


def check_train_out(cfg, out_dir: pathlib.Path) -> None:
    """Refuse an --out whose checkpoint.pt belongs to another config (the resume would be refused mid-way)."""
    from specforce_contracts import RUN_CHECKPOINT_FILE
    from trainers.training.checkpoint import load_checkpoint

    ckpt = out_dir / RUN_CHECKPOINT_FILE
    if not ckpt.is_file():
        return
    state = load_checkpoint(ckpt)
    if state["config"] != cfg.model_dump(mode="json"):
        from sweeps.fingerprint import changed_keys
        from specforce_contracts import flatten

        changes = changed_keys(flatten(state["config"]), cfg.flat())
        shown = "; ".join(changes[:8]) + (f"; and {len(changes) - 8} more" if len(changes) > 8 else "")
        raise UserError("--out", f"{ckpt} was written by a different config ({shown or 'schema changed'}); "
                        "use a new --out or the same config to resume", str(out_dir))



def check_inception_weights(cfg, *, dry_run: bool) -> None:
    """A run whose eval.metrics has fid/is needs the Inception weights: a real run fetches missing weights now (as
    the evaluator would), before anything is written; a dry run only notes that they are not cached yet."""
    import sys

    from trainers.training.config import ConfigError
    from trainers.evaluation.inception import resolve_inception_weights

    try:
        resolve_inception_weights(cfg.eval.inception_weights, allow_download=not dry_run)
    except FileNotFoundError as err:
        if dry_run and cfg.eval.inception_weights is None:
            print("# note: Inception weights are not cached; the run will try to download them", file=sys.stderr)
            return
        raise ConfigError(f"eval.metrics: fid/is need the Inception weights: {err}") from None

def _trial_configs(spec) -> list[tuple[str, Any]]:
    """(label for messages, config) of the base and every planned trial; a message reads `<label><key>: ...`."""
    import json

    from sweeps.spec import base_config, baseline_plans, grid_plans

    configs = [("base.", base_config(spec))]
    if spec.grid:
        configs += [(f"grid trial {json.dumps(p.overrides)}: ", p.config) for p in grid_plans(spec)]
    if spec.search and spec.search.baselines:
        configs += [(f"baseline trial {json.dumps(p.overrides)}: ", p.config) for p in baseline_plans(spec)]
    return configs


def check_spec_environment(spec, *, num_cpus: int | None = None) -> None:
    """Every distinct trial config passes check_environment here, and one trial fits the embedded Ray."""
    from sweeps.spec import SpecError
    from trainers.training.config import ConfigError
    from trainers.training.environment import check_environment

    seen = set()
    for label, cfg in _trial_configs(spec):
        # configs differing only in model/optim/spectral share their environment: check each distinct one once
        s = cfg.spectral  # an snr schedule that fits its power law on the data is checked against that data too
        fits = s.enabled and s.schedule == "snr" and (s.r0 is None or s.fit_from_data)
        key = (cfg.device, cfg.eval.inception_weights, cfg.data.model_dump_json(),
               bool(cfg.eval.metrics or cfg.eval.denoise_loss), fits)
        if key in seen:
            continue
        seen.add(key)
        t0 = time.perf_counter()
        try:
            check_environment(cfg)
        except ConfigError as err:
            raise SpecError(f"{label}{err}") from None
        note = raw_folder_note(cfg, time.perf_counter() - t0)
        if note:
            print(note, file=sys.stderr, flush=True)
    r = spec.resources
    cpus = num_cpus or os.cpu_count() or 1
    if r.workers * r.cpus_per_worker > cpus:
        raise SpecError(f"resources: one trial needs {r.workers * r.cpus_per_worker:g} CPUs ({r.workers} workers x "
                        f"{r.cpus_per_worker:g}) but the embedded Ray has {cpus} (--num-cpus or this machine)")
    if r.use_gpu is True or r.gpus_per_worker > 0:
        import torch

        if not torch.cuda.is_available():
            what = "resources.use_gpu" if r.use_gpu is True else "resources.gpus_per_worker"
            got = r.use_gpu if r.use_gpu is True else r.gpus_per_worker
            raise SpecError(f"{what}: this machine has no CUDA GPU for the embedded Ray (got {got!r})")


RAW_FOLDER_NOTE_MIN = 10_000  # below this a raw folder costs seconds, not minutes: no note


def raw_folder_note(cfg, seconds: float, sample: int = 8) -> str | None:
    """For a raw imagefolder/imagenet config: what indexing cost here, what decoding costs per image and core
    (measured on `sample` images), and the `specforce prepare` command that removes both costs. None otherwise."""
    if cfg.data.name not in ("imagefolder", "imagenet"):
        return None
    from trainers.data.loader import build_dataset
    from trainers.data.folder import load_rgb_uint8
    from trainers.data.folder_index import cache_dir

    ds = build_dataset(cfg.data.name, image_size=cfg.data.image_size, split="train", root=cfg.data.root,
                       seed=cfg.data.seed, **cfg.data.options)  # a cache hit now: the check above indexed it
    if len(ds) < RAW_FOLDER_NOTE_MIN:
        return None
    paths = [ds._samples[i][0] for i in range(0, len(ds), max(1, len(ds) // sample))][:sample]
    t0 = time.perf_counter()
    for path in paths:
        load_rgb_uint8(path, cfg.data.image_size, cfg.data.name)
    ms = (time.perf_counter() - t0) / len(paths) * 1e3
    return (f"note: data.root {cfg.data.root!r} is a raw {cfg.data.name} folder of {len(ds):,} training images: "
            f"indexing and verifying it took {seconds:.1f} s here (cached in {cache_dir()}, so each machine pays it "
            f"once per folder), and decoding + cropping costs {ms:.1f} ms per image per core here "
            f"(~{1e3 / ms:,.0f} images/s per loader process). For GPU training prepare it once: specforce prepare "
            f"{cfg.data.root} DEST --dataset {cfg.data.name} --image-size {cfg.data.image_size}, then "
            f"data: {{name: prepared, root: DEST}}")
