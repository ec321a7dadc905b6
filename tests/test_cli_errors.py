"""Every bad input gets a one-line refusal before any work starts, and leaves nothing behind (issue 14).

The table below is run through `sweeps.cli.main` in-process: each row asserts exit code 2, one `specforce <command>:`
line on stderr that names the bad thing, no traceback, and an unchanged directory tree (no new files, folders,
MLflow stores). A few rows run again as real subprocesses to prove the terminal sees no traceback either.

    .venv/bin/python -m pytest tests/test_cli_errors.py -q
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import socket
import subprocess
import sys
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sweeps import cli
from sweeps.errors import UserError, run_command
from trainers.training.checkpoint import save_checkpoint
from trainers.training.config import config_from_dict

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = {
    "model": {"preset": "jit-tiny", "patch_size": 8},
    "data": {"name": "grf", "image_size": 32, "options": {"num_samples": 64}},
    "optim": {"batch_size": 16, "lr": 1e-3, "total_images": 64, "ema_decays": [0.99]},
    "sample": {"sampler": "euler", "steps": 2},
    "eval": {"metrics": [], "denoise_batch": 16, "denoise_t_points": 5, "grid_size": 2},
}
SPEC = {"name": "errs", "base": TINY, "resources": {"workers": 1, "cpus_per_worker": 1},
        "grid": {"spectral.enabled": [False, True]}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(path: pathlib.Path, seed: int = 0, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def _cfg(**sections) -> dict:
    tree = yaml.safe_load(yaml.safe_dump(TINY))
    for key, value in sections.items():
        node, *rest = key.split("__")
        if rest:
            tree.setdefault(node, {})[rest[0]] = value
        else:
            tree[node] = value
    return tree


def _write(path: pathlib.Path, tree) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> pathlib.Path:
    """Every bad input a row needs, made once; rows only read them."""
    d = tmp_path_factory.mktemp("inputs")
    _write(d / "tiny.yaml", TINY)
    (d / "syntax.yaml").write_text("model:\n  preset: jit-tiny\n  patch_size: [4\ndata: {name: grf}\n")
    (d / "evil.yaml").write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    (d / "list.yaml").write_text("- model\n- data\n")
    _write(d / "preset.yaml", _cfg(model={"preset": "jit-tinyy"}))
    _write(d / "dataset.yaml", _cfg(data={"name": "imagenette", "image_size": 32}))
    _write(d / "option.yaml", _cfg(data={"name": "grf", "options": {"alpha_dta": 2.0}}))
    _write(d / "optval.yaml", _cfg(data={"name": "grf", "options": {"alpha_data": -1}}))
    _write(d / "noroot.yaml", _cfg(data={"name": "imagefolder", "image_size": 8}))
    _write(d / "missroot.yaml", _cfg(data={"name": "imagefolder", "image_size": 8, "root": str(d / "nowhere")}))
    _write(d / "grfroot.yaml", _cfg(data={"name": "grf", "root": str(d)}))
    # an imagefolder with an empty class folder
    _png(d / "photos_empty" / "cat" / "a.png")
    (d / "photos_empty" / "dog").mkdir()
    _write(d / "emptycls.yaml", _cfg(data={"name": "imagefolder", "image_size": 8,
                                          "root": str(d / "photos_empty")}))
    # 600 good images and one corrupt one sorted last: beyond the 512 the loop's spectrum sample reads first
    for i in range(600):
        _png(d / "photos_bad" / ("a" if i < 300 else "b") / f"{i:04d}.png", seed=i, size=8)
    (d / "photos_bad" / "b" / "zzz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    _write(d / "corrupt.yaml", _cfg(data={"name": "imagefolder", "image_size": 8, "root": str(d / "photos_bad")}))
    _write(d / "cuda.yaml", {**TINY, "device": "cuda"})
    _write(d / "fid.yaml", _cfg(eval={"metrics": ["fid"], "num_samples": 16, "denoise_batch": 16,
                                      "inception_weights": str(d / "no_such_inception.pth")}))
    _write(d / "classifier.yaml", _cfg(eval={"metrics": ["classifier"]}))
    (d / "a_file").write_text("not a folder")
    # escapes the property-based search found (tests/test_config_properties.py): each passed --dry-run, then failed
    _write(d / "digits_heldout.yaml", _cfg(data={"name": "digits", "image_size": 8},
                                           model={"preset": "jit-tiny", "patch_size": 4}, eval__denoise_batch=256))
    _write(d / "digits_snr.yaml", _cfg(data={"name": "digits", "image_size": 8}, eval__denoise_batch=16,
                                       model={"preset": "jit-tiny", "patch_size": 4},
                                       spectral={"enabled": True, "schedule": "snr"}))
    _write(d / "spec_grid_snr.yaml", {**SPEC, "base": _cfg(data={"name": "digits", "image_size": 8},
                                                            eval__denoise_batch=16,
                                                            model={"preset": "jit-tiny", "patch_size": 4}),
                                      "grid": {"spectral.enabled": [True], "spectral.schedule": ["linear", "snr"]}})
    # a prepared dataset's refusals (trainers/data/prepared.py): another image size, a missing shard
    from sweeps.prepare import prepare_dataset

    for cls in ("a", "b"):
        for i in range(3):
            (d / "photos" / cls).mkdir(parents=True, exist_ok=True)
            _png(d / "photos" / cls / f"{i}.png", seed=i)
    prepare_dataset(str(d / "photos"), str(d / "prep8"), dataset="imagefolder", image_size=8, workers=1,
                    shard_size=2, progress=False)
    _write(d / "prepared_size.yaml", _cfg(data={"name": "prepared", "root": str(d / "prep8"), "image_size": 16}))
    prepare_dataset(str(d / "photos"), str(d / "prep8_broken"), dataset="imagefolder", image_size=8, workers=1,
                    shard_size=2, progress=False)
    (d / "prep8_broken" / "train" / "shard-00001.npy").unlink()
    _write(d / "prepared_shard.yaml", _cfg(data={"name": "prepared", "root": str(d / "prep8_broken"), "image_size": 8},
                                          model={"preset": "jit-tiny", "patch_size": 4}))
    _write(d / "spec_grid_workers.yaml", {**SPEC, "resources": {"workers": 2, "cpus_per_worker": 1},
                                          "grid": {"optim.batch_size": [16, 17]}})
    search = {"metric": "eval/denoise_loss", "num_samples": 2}
    _write(d / "spec_int_step.yaml", {"name": "errs", "base": TINY, "search": {**search, "space": {
        "optim.batch_size": {"type": "int", "low": 8, "high": 16, "step": 0.5}}}})
    _write(d / "spec_float_low.yaml", {"name": "errs", "base": TINY, "search": {**search, "space": {
        "spectral.kappa": {"type": "float", "low": 0, "high": 50}}}})
    # an --out folder holding the checkpoint of another config
    other = config_from_dict(_cfg(optim={**TINY["optim"], "lr": 0.5}))
    save_checkpoint({"model": {}, "images_seen": 16, "config": other.model_dump(mode="json")},
                    d / "other_run" / "checkpoint.pt")
    # checkpoints that are not checkpoints
    good_cfg = config_from_dict(TINY).model_dump(mode="json")
    save_checkpoint({"model": {"w": torch.ones(2)}, "images_seen": 64, "config": good_cfg}, d / "ok" / "ema.pt")
    data = (d / "ok" / "ema.pt").read_bytes()
    (d / "trunc").mkdir()
    (d / "trunc" / "ema.pt").write_bytes(data[: len(data) // 2])
    (d / "yamlpt").mkdir()
    (d / "yamlpt" / "ema.pt").write_text(yaml.safe_dump(TINY))
    (d / "statedict").mkdir()
    torch.save({"w": torch.ones(2)}, d / "statedict" / "ema.pt")
    # sweep specs
    _write(d / "spec.yaml", SPEC)
    (d / "spec_syntax.yaml").write_text("name: errs\ngrid:\n  seed: [0, 1\nbase: {}\n")
    (d / "spec_evil.yaml").write_text("name: !!python/object/apply:os.system ['echo pwned']\ngrid: {seed: [0]}\n")
    _write(d / "spec_preset.yaml", {**SPEC, "base": _cfg(model={"preset": "jit-tinyy"})})
    _write(d / "spec_dataset.yaml", {**SPEC, "base": _cfg(data={"name": "imagenette"})})
    _write(d / "spec_gridkey.yaml", {**SPEC, "grid": {"model.pach_size": [4, 8]}})
    _write(d / "spec_gridval.yaml", {**SPEC, "grid": {"model.preset": ["jit-tiny", "jit-smal"]}})
    _write(d / "spec_metric.yaml", {**{k: v for k, v in SPEC.items() if k != "grid"}, "search": {
        "metric": "eval/fid", "space": {"spectral.alpha": {"type": "float", "low": 1, "high": 3}}}})
    _write(d / "spec_cpus.yaml", {**SPEC, "resources": {"workers": 2, "cpus_per_worker": 1}})
    _write(d / "spec_gpu.yaml", {**SPEC, "resources": {"workers": 1, "use_gpu": True}})
    _write(d / "spec_baseconfig.yaml", {**SPEC, "base_config": "no_such_base.yaml"})
    _write(d / "spec_root.yaml", {**SPEC, "base": _cfg(data={"name": "imagefolder", "image_size": 8,
                                                             "root": str(d / "nowhere")})})
    # a sweep started with spec.yaml, then the spec edited: --resume must refuse and list the keys
    from sweeps.fingerprint import check_or_record
    from sweeps.spec import load_spec

    check_or_record(load_spec(d / "spec.yaml"), d / "storage" / "errs", resume=False)
    (d / "storage" / "errs" / "grid").mkdir()
    edited = {**SPEC, "base": _cfg(optim={**TINY["optim"], "lr": 2e-3}), "grid": {"spectral.enabled": [False, True],
                                                                                  "seed": [0, 1]}}
    _write(d / "spec_edited.yaml", edited)
    # an MLflow store (for report rows) and a file that is not one
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{d / 'store' / 'mlflow.db'}").search_experiments(max_results=1)
    (d / "notadb.db").write_text("just text")
    return d


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    argv: list[str]  # "{in}" is the inputs folder, "{port}" a free port, "{busy}" a port someone listens on
    needle: str  # must appear in the refusal line
    skip: Callable[[], bool] | None = None


def _cuda() -> bool:
    return torch.cuda.is_available()


ROWS = [
    # ------------------------------------------------------------------------------------------------ train
    Row("train-config-missing", ["train", "{in}/nope.yaml"], "config file '{in}/nope.yaml': does not exist"),
    Row("train-yaml-syntax", ["train", "{in}/syntax.yaml"], "{in}/syntax.yaml: line 4, column 5: invalid YAML"),
    Row("train-yaml-python-tag", ["train", "{in}/evil.yaml"], "constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'"),
    Row("train-yaml-not-mapping", ["train", "{in}/list.yaml"], "top level must be a mapping of sections"),
    Row("train-preset-typo", ["train", "{in}/preset.yaml"], "model.preset: unknown preset, did you mean 'jit-tiny'?"),
    Row("train-dataset-typo", ["train", "{in}/dataset.yaml"], "data.name: unknown dataset, did you mean 'imagenet'?"),
    Row("train-option-typo", ["train", "{in}/option.yaml"], "data.options.alpha_dta: unknown option of dataset 'grf' (did you mean 'alpha_data'?"),
    Row("train-option-value", ["train", "{in}/optval.yaml"], "data.options.alpha_data: must be a positive finite number (got -1)"),
    Row("train-root-missing-key", ["train", "{in}/noroot.yaml"], "data.root: dataset 'imagefolder' reads files"),
    Row("train-root-not-found", ["train", "{in}/missroot.yaml"], "data.root: folder does not exist (got '{in}/nowhere')"),
    Row("train-root-for-grf", ["train", "{in}/grfroot.yaml"], "data.root: dataset 'grf' reads no files"),
    Row("train-empty-class", ["train", "{in}/emptycls.yaml"], "class folder '{in}/photos_empty/dog' has no images"),
    Row("train-corrupt-image-past-512", ["train", "{in}/corrupt.yaml"], "1 unreadable image(s) under '{in}/photos_bad': '{in}/photos_bad/b/zzz_broken.png'"),
    Row("train-device-cuda", ["train", "{in}/cuda.yaml"], "device: CUDA is not available on this machine", skip=_cuda),
    Row("train-inception-missing", ["train", "{in}/fid.yaml"], "eval.inception_weights: no such file (got '{in}/no_such_inception.pth')"),
    Row("train-classifier-on-grf", ["train", "{in}/classifier.yaml"], "eval.metrics: 'classifier' needs a digit dataset"),
    Row("train-out-is-file", ["train", "{in}/tiny.yaml", "--out", "{in}/a_file"], "--out: exists and is a file, not a folder"),
    Row("train-out-below-file", ["train", "{in}/tiny.yaml", "--out", "{in}/a_file/run"], "--out: {in}/a_file is a file"),
    Row("train-out-other-config", ["train", "{in}/tiny.yaml", "--out", "{in}/other_run"], "was written by a different config (optim.lr: 0.5 -> 0.001)"),
    Row("train-set-no-equals", ["train", "{in}/tiny.yaml", "--set", "model.patch_size"], "--set: expects KEY=VALUE"),
    Row("train-set-unknown-key", ["train", "{in}/tiny.yaml", "--set", "model.pach_size=4"], "model.pach_size: unknown key (did you mean 'patch_size'?)"),
    Row("train-set-bad-yaml", ["train", "{in}/tiny.yaml", "--set", "optim.betas=[0.9"], "--set optim.betas: the value is not valid YAML"),
    Row("train-tracking-file", ["train", "{in}/tiny.yaml", "--tracking-uri", "file:///tmp/mlruns"], "--tracking-uri: the file: store is deprecated"),
    Row("train-tracking-bogus", ["train", "{in}/tiny.yaml", "--tracking-uri", "bogus://x"], "--tracking-uri: unknown tracking store scheme"),
    Row("train-tracking-unreachable", ["train", "{in}/tiny.yaml", "--tracking-uri", "http://127.0.0.1:{port}"], "--tracking-uri: MLflow server not reachable"),
    Row("train-experiment-name", ["train", "{in}/tiny.yaml", "--experiment", "../x"], "--experiment: '../x' is not a valid name"),
    Row("train-patch-size", ["train", "{in}/tiny.yaml", "--dry-run", "--set", "model.patch_size=7"], "model.patch_size: patch size 7 does not divide data.image_size 32"),
    Row("train-dry-run-sees-data", ["train", "{in}/corrupt.yaml", "--dry-run"], "zzz_broken.png"),
    # ---------------------------------------------- train: escapes found by the property-based search (issue 23)
    *[Row(f"train-escape-{name}", ["train", "{in}/tiny.yaml", "--dry-run", *[a for kv in sets for a in ("--set", kv)]],
          needle) for name, sets, needle in [
        ("t-points", ["eval.denoise_t_points=2"], "eval.denoise_t_points: the held-out loss is reported per t bucket "
         "[0.0, 0.2, 0.4, 0.6, 0.8, 1.0] and bucket [0.0, 0.2] would hold no t of the grid; use at least 5 points (got 2)"),
        ("preset-patch", ["model.patch_size=null", "data.image_size=30"], "model.patch_size: the preset jit-tiny's "
         "patch size 4 does not divide data.image_size 30"),
        ("cfg-interval", ["sample.cfg_interval=[0.9, 0.1]"], "sample.cfg_interval: expected [lo, hi] with 0 <= lo <= "
         "hi <= 1 (got [0.9, 0.1])"),
        ("grf-train-split", ["data.options.num_samples=8"], "optim.batch_size: larger than the grf train split (8 "
         "images) (got 16)"),
        ("grf-test-split", ["eval.denoise_batch=100"], "eval.denoise_batch: larger than the grf test split (64 images) "
         "(got 100)"),
        ("grf-channels", ["data.options.channels=2"], "data.options.channels: sample grids and Inception read (1, 3) "
         "channels, the data has 2 (got 2)"),
        ("window-1", ["spectral.window_size=1"], "spectral.window_size: a DCT window needs at least 2 pixels per side "
         "(got 1)"),
        ("kappa-inf", ["spectral.kappa=.inf"], "spectral.kappa: Input should be a finite number (got inf)"),
        ("betas", ["optim.betas=[1.0, 0.95]"], "optim.betas: AdamW's betas must each lie in [0, 1) (got [1.0, 0.95])"),
        ("betas-unbounded-step", ["optim.betas=[0.999999, 0.0]"], "optim.betas: Adam needs beta1^2 < sqrt(beta2) for "
         "a bounded step (Kingma & Ba 2015) (got [0.999999, 0.0])"),
        ("fd-pixel-dims", ["data.image_size=64", "data.options.channels=3", "eval.metrics=[fd_pixel]"],
         "eval.metrics: 'fd_pixel' at 3x64x64 needs a 12288-d covariance (limit 8192)"),
        ("snr-fit-bins", ["data.image_size=4", "model.patch_size=4", "spectral.enabled=true", "spectral.schedule=snr"],
         "spectral.r0: the snr schedule fits alpha and r0 to the data's radial spectrum, which at data.image_size 4 "
         "has 1 bins"),
        ("spectrum-size", ["data.image_size=2", "model.patch_size=2", "eval.metrics=[spectrum]"],
         "eval.metrics: 'spectrum' needs data.image_size >= 4 (3 radial shells) (got ['spectrum'])"),
        ("c-min-above-c-max", ["spectral.c_min=0.5", "spectral.c_max=0.2"], "spectral.c_min: c_min=0.5 must not "
         "exceed c_max=0.2 (got 0.5)"),
        ("noise-left-in-samples", ["flow.noise_scale=40", "sample.t_eps_last=0.99", "sample.steps=3",
                                   "eval.metrics=[fd_pixel]"], "flow.noise_scale: with sample.t_eps_last 0.99 and 3 "
         "euler steps the samples keep 0.293 of the initial noise"),
    ]],
    # --------------------------------------------- train: the plug-in denoiser contract (issue 19), refused at load
    *[Row(f"train-model-target-{name}", ["train", "{in}/tiny.yaml", "--dry-run", "--set", "model.patch_size=null",
                                         *[a for kv in sets for a in ("--set", kv)]], needle) for name, sets, needle in [
        ("import", ["model.target=no_such_pkg.nets:build"], "model.target: module 'no_such_pkg.nets' does not import"),
        ("name", ["model.target=trainers.model.unet:build_unett"], "model.target: module 'trainers.model.unet' has no attribute "
         "'build_unett' (got 'trainers.model.unet:build_unett')"),
        ("option", ["model.target=trainers.model.unet:build_unet", "model.options.depth=3"], "model.options: ['depth'] not "
         "accepted by model.target 'trainers.model.unet:build_unet'"),
        ("builder-raises", ["model.target=trainers.model.unet:build_unet", "model.options.base_channels=0"],
         "model.target: the builder raised ValueError: base_channels, num_res_blocks and channel_mult must be "
         "positive"),
        ("predicts", ["model.target=trainers.model.unet:build_unet", "model.predicts=score"], "model.predicts: Input should "
         "be 'x', 'v' or 'eps' (got 'score')"),
    ]],
    Row("train-escape-snr-fit-data", ["train", "{in}/digits_snr.yaml", "--dry-run"], "spectral.r0: the snr schedule "
        "fits a power law to the training images' spectrum, and digits at 8 px has none"),
    Row("train-escape-digits-test-split", ["train", "{in}/digits_heldout.yaml", "--dry-run"], "eval.denoise_batch: "
        "larger than the digits test split (180 images) (got 256)"),
    # ------------------------------------------------------------------------------------------------ sweep
    Row("sweep-spec-missing", ["sweep", "{in}/nope.yaml"], "sweep spec '{in}/nope.yaml': does not exist (shipped specs:"),
    Row("sweep-yaml-syntax", ["sweep", "{in}/spec_syntax.yaml", "--dry-run"], "{in}/spec_syntax.yaml: line 4, column 5: invalid YAML"),
    Row("sweep-yaml-python-tag", ["sweep", "{in}/spec_evil.yaml", "--dry-run"], "python/object/apply:os.system"),
    Row("sweep-preset-typo", ["sweep", "{in}/spec_preset.yaml", "--dry-run"], "base.model.preset: unknown preset, did you mean 'jit-tiny'?"),
    Row("sweep-dataset-typo", ["sweep", "{in}/spec_dataset.yaml", "--dry-run"], "base.data.name: unknown dataset"),
    Row("sweep-grid-unknown-key", ["sweep", "{in}/spec_gridkey.yaml", "--dry-run"], "grid.model.pach_size: unknown config key"),
    Row("sweep-grid-bad-value", ["sweep", "{in}/spec_gridval.yaml", "--dry-run"], "model.preset: unknown preset, did you mean 'jit-small'?"),
    Row("sweep-search-metric", ["sweep", "{in}/spec_metric.yaml", "--dry-run"], "search.metric: 'eval/fid' is never reported"),
    Row("sweep-too-many-cpus", ["sweep", "{in}/spec_cpus.yaml", "--num-cpus", "1", "--dry-run"], "resources: one trial needs 2 CPUs"),
    Row("sweep-gpu-on-cpu", ["sweep", "{in}/spec_gpu.yaml", "--dry-run"], "resources.use_gpu: this machine has no CUDA GPU", skip=_cuda),
    Row("sweep-base-config-missing", ["sweep", "{in}/spec_baseconfig.yaml", "--dry-run"], "base_config: 'no_such_base.yaml' not found"),
    Row("sweep-root-missing", ["sweep", "{in}/spec_root.yaml", "--dry-run"], "base.data.root: folder does not exist"),
    Row("sweep-escape-grid-vs-workers", ["sweep", "{in}/spec_grid_workers.yaml", "--num-cpus", "4", "--dry-run"],
        "grid trial {'optim.batch_size': 17}: resources.workers: does not divide optim.batch_size 17 (got 2)"),
    Row("sweep-escape-grid-snr-fit", ["sweep", "{in}/spec_grid_snr.yaml", "--dry-run"],
        'grid trial {"spectral.enabled": true, "spectral.schedule": "snr"}: spectral.r0: the snr schedule fits'),
    Row("train-prepared-image-size", ["train", "{in}/prepared_size.yaml", "--dry-run"],
        "data.image_size is 16 but the prepared dataset at '{in}/prep8' holds 8 px images"),
    Row("train-prepared-shard-missing", ["train", "{in}/prepared_shard.yaml", "--dry-run"],
        "prepared: shard '{in}/prep8_broken/train/shard-00001.npy' is missing"),
    Row("prepare-dest-other-size", ["prepare", "{in}/photos", "{in}/prep8", "--dataset", "imagefolder",
                                    "--image-size", "16"], "DEST: already holds a prepared dataset with image_size 8"),
    Row("sweep-escape-int-step", ["sweep", "{in}/spec_int_step.yaml", "--dry-run"], "search.space.optim.batch_size: "
        "an int dimension needs whole low, high and step"),
    Row("sweep-escape-float-low", ["sweep", "{in}/spec_float_low.yaml", "--dry-run"], "search.space.spectral.kappa "
        "value {'spectral.kappa': 0.0, 'spectral.enabled': True}: spectral.kappa: Input should be greater than 0"),
    Row("sweep-num-cpus-zero", ["sweep", "{in}/spec.yaml", "--num-cpus", "0"], "argument --num-cpus: must be a positive integer (got '0')"),
    Row("sweep-tracking-bogus", ["sweep", "{in}/spec.yaml", "--tracking-uri", "bogus://x"], "--tracking-uri: unknown tracking store scheme"),
    Row("sweep-tracking-file", ["sweep", "{in}/spec.yaml", "--tracking-uri", "file:./mlruns"], "--tracking-uri: the file: store is deprecated"),
    Row("sweep-tracking-bare-path", ["sweep", "{in}/spec.yaml", "--tracking-uri", "mlruns"], "a bare path is MLflow's deprecated file store"),
    Row("sweep-storage-is-file", ["sweep", "{in}/spec.yaml", "--storage", "{in}/a_file"], "--storage: exists and is a file"),
    Row("sweep-storage-scheme", ["sweep", "{in}/spec.yaml", "--storage", "ftp://host/x"], "--storage: unknown storage scheme 'ftp'"),
    Row("sweep-resume-nothing", ["sweep", "{in}/spec.yaml", "--resume", "--storage", "{in}/empty_storage"], "--resume: nothing to resume at {in}/empty_storage/errs"),
    Row("sweep-resume-edited-spec", ["sweep", "{in}/spec_edited.yaml", "--resume", "--storage", "{in}/storage"], "base.optim.lr: 0.001 -> 0.002; grid.seed: (absent) -> [0, 1]"),
    # ----------------------------------------------------------------------------------------------- report
    Row("report-store-missing", ["report", "--experiment", "x", "--tracking-uri", "sqlite:///{in}/no/such/dir/mlflow.db"], "--tracking-uri: no MLflow store at {in}/no/such/dir/mlflow.db"),
    Row("report-store-not-sqlite", ["report", "--experiment", "x", "--tracking-uri", "sqlite:///{in}/notadb.db"], "is not an SQLite database"),
    Row("report-tracking-file", ["report", "--experiment", "x", "--tracking-uri", "file:///tmp/mlruns"], "--tracking-uri: the file: store is deprecated"),
    Row("report-out-is-file", ["report", "--experiment", "x", "--tracking-uri", "sqlite:///{in}/store/mlflow.db", "--out", "{in}/a_file"], "--out: exists and is a file"),
    Row("report-experiment-missing", ["report", "--experiment", "nosuch", "--tracking-uri", "sqlite:///{in}/store/mlflow.db", "--no-log", "--out", "{in}/rep"], "nosuch"),
    # ------------------------------------------------------------------------------------------------- eval
    Row("eval-missing", ["eval", "{in}/nowhere/ema.pt"], "checkpoint '{in}/nowhere/ema.pt': no such file"),
    Row("eval-truncated", ["eval", "{in}/trunc/ema.pt"], "checkpoint '{in}/trunc/ema.pt': not a readable torch checkpoint, truncated or corrupt"),
    Row("eval-yaml-named-pt", ["eval", "{in}/yamlpt/ema.pt"], "checkpoint '{in}/yamlpt/ema.pt': not a torch checkpoint"),
    Row("eval-state-dict", ["eval", "{in}/statedict/ema.pt"], "checkpoint '{in}/statedict/ema.pt': not a specforce checkpoint"),
    Row("eval-folder", ["eval", "{in}/ok"], "checkpoint '{in}/ok': not a file"),
    Row("eval-num-samples-zero", ["eval", "{in}/ok/ema.pt", "--num-samples", "0"], "argument --num-samples: must be a positive integer (got '0')"),
    Row("eval-num-samples-one", ["eval", "{in}/ok/ema.pt", "--num-samples", "1"], "--num-samples (eval.num_samples"),
    Row("eval-metric-unknown", ["eval", "{in}/ok/ema.pt", "--metrics", "fdd"], "--metrics (eval.metrics: unknown metric 'fdd'"),
    Row("eval-inception-missing", ["eval", "{in}/ok/ema.pt", "--metrics", "fid", "--inception-weights", "{in}/none.pth"], "eval.inception_weights: no such file"),
    # --------------------------------------------------------------------------------------------------- ui
    Row("ui-port-taken", ["ui", "--port", "{busy}"], "--port: 127.0.0.1:{busy} is not available"),
    Row("ui-port-zero", ["ui", "--port", "0"], "argument --port: must be a TCP port in 1..65535 (got '0')"),
    Row("ui-public-host", ["ui", "--host", "0.0.0.0"], "--host: the MLflow UI has no authentication"),
    Row("ui-tracking-bogus", ["ui", "--tracking-uri", "bogus://x"], "--tracking-uri: unknown tracking store scheme"),
    # ----------------------------------------------------------------------------------------------- submit
    Row("submit-no-storage", ["submit", "smoke.yaml", "--address", "http://127.0.0.1:{port}"], "--storage: required for a submitted sweep"),
    Row("submit-relative-storage", ["submit", "smoke.yaml", "--address", "http://127.0.0.1:{port}", "--storage", "ray_results"], "--storage: a relative path would resolve inside the job's temporary working dir"),
    Row("submit-storage-scheme", ["submit", "smoke.yaml", "--address", "http://127.0.0.1:{port}", "--storage", "ftp://h/x"], "--storage: unknown storage scheme"),
    Row("submit-sqlite-remote", ["submit", "smoke.yaml", "--address", "http://10.1.2.3:8265", "--storage", "s3://b/x", "--tracking-uri", "sqlite:///{in}/m.db"], "cannot be reached from the remote cluster"),
    Row("submit-address-not-url", ["submit", "smoke.yaml", "--address", "127.0.0.1:6379", "--storage", "s3://b/x", "--tracking-uri", "http://10.0.0.1:5000"], "expected the Ray dashboard URL"),
    Row("submit-unreachable", ["submit", "smoke.yaml", "--address", "http://127.0.0.1:{port}", "--storage", "{in}/st"], "Ray dashboard not reachable"),
    Row("submit-spec-outside-project", ["submit", "{in}/spec.yaml", "--address", "http://127.0.0.1:{port}", "--storage", "{in}/st"], "Ray dashboard not reachable"),  # a spec outside the project travels with the job: checked up to the network
    Row("submit-spec-missing", ["submit", "nope.yaml", "--address", "http://127.0.0.1:{port}", "--storage", "/abs"], "sweep spec 'nope.yaml': does not exist"),
    Row("status-unreachable", ["status", "raysubmit_x", "--address", "http://127.0.0.1:{port}"], "Ray dashboard not reachable"),
    Row("logs-unreachable", ["logs", "raysubmit_x", "--address", "http://127.0.0.1:{port}"], "Ray dashboard not reachable"),
    # -------------------------------------------------------------------------------------------- argparse
    Row("unknown-command", ["trian", "x.yaml"], "invalid choice: 'trian'"),
    Row("train-no-config", ["train"], "the following arguments are required: config"),
    Row("unknown-flag", ["sweep", "{in}/spec.yaml", "--dryrun"], "unrecognized arguments: --dryrun"),
]


def _tree(path: pathlib.Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.fixture()
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def _fill(text: str, inputs: pathlib.Path, port: int, busy: int) -> str:
    return text.replace("{in}", str(inputs)).replace("{port}", str(port)).replace("{busy}", str(busy))


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_refused_in_one_line_and_leaves_nothing(row, inputs, tmp_path, busy_port, monkeypatch, capsys):
    if row.skip and row.skip():
        pytest.skip("this machine has what the row lacks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("SPECFORCE_DEBUG", raising=False)
    port = _free_port()
    argv = [_fill(a, inputs, port, busy_port) for a in row.argv]
    before, before_cwd = _tree(inputs), _tree(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("specforce")]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    command = "trian" if row.id == "unknown-command" else argv[0]
    prefix = "specforce: " if row.id == "unknown-command" else f"specforce {command}: "
    assert lines[0].startswith(prefix), lines[0]
    assert _fill(row.needle, inputs, port, busy_port) in lines[0], lines[0]
    # nothing half-written: no new file or folder in the inputs or the working dir (so no mlflow.db either)
    assert _tree(inputs) == before, sorted(_tree(inputs) ^ before)
    assert _tree(tmp_path) == before_cwd, sorted(_tree(tmp_path) ^ before_cwd)


def test_the_table_is_large_enough():
    assert len(ROWS) >= 40 and len({r.id for r in ROWS}) == len(ROWS)
    assert {r.argv[0] for r in ROWS} >= {"train", "sweep", "report", "eval", "ui", "submit", "status", "logs"}


SUBPROCESS_ROWS = ["train-config-missing", "sweep-preset-typo", "eval-truncated", "ui-port-taken",
                   "report-store-missing", "train-corrupt-image-past-512"]


@pytest.mark.parametrize("row_id", SUBPROCESS_ROWS)
def test_the_terminal_sees_one_line_and_no_traceback(row_id, inputs, tmp_path, busy_port):
    row = next(r for r in ROWS if r.id == row_id)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "SPECFORCE_DEBUG")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", *[_fill(a, inputs, port, busy_port) for a in row.argv]],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"specforce {row.argv[0]}: "), out.stderr
    assert _fill(row.needle, inputs, port, busy_port) in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(inputs, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "sweeps.cli", "train", str(inputs / "preset.yaml")]
    flag = subprocess.run(argv + ["--debug"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    env_var = subprocess.run(argv, cwd=tmp_path, env={**env, "SPECFORCE_DEBUG": "1"}, capture_output=True, text=True,
                             timeout=300)
    for out in (flag, env_var):
        assert out.returncode == 2
        assert "Traceback (most recent call last)" in out.stderr and "ConfigError" in out.stderr
        assert out.stderr.strip().splitlines()[-1].startswith("specforce train: model.preset: unknown preset")


def test_unanticipated_errors_keep_their_traceback_and_ask_for_a_report(capsys):
    def bug():
        return {}["missing"]

    assert run_command("train", bug) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError" in err
    assert err.strip().splitlines()[-1].startswith("specforce train: unexpected KeyError: 'missing'. This is a bug")
    # anticipated classes print one line, with the traceback only under --debug
    assert run_command("ui", lambda: (_ for _ in ()).throw(UserError("--port", "taken", 5000))) == 2
    assert capsys.readouterr().err == "specforce ui: --port: taken (got 5000)\n"
    assert run_command("eval", lambda: open("/no/such/file")) == 2
    assert capsys.readouterr().err == "specforce eval: /no/such/file: No such file or directory\n"
    assert run_command("x", lambda: (_ for _ in ()).throw(KeyboardInterrupt())) == 130


def test_a_run_that_fails_mid_way_marks_its_run_failed_and_says_where_its_output_is(tmp_path, monkeypatch, capsys):
    """A JPEG cut after its header passes the index-time check (verifying it would need a full decode) and breaks
    when the loader reaches it, past the 512 images the setup reads: the run fails mid-way."""
    root = tmp_path / "photos"
    for i in range(600):  # the setup reads the first 512 (the data spectrum); the broken one sorts last
        _png(root / "a" / f"{i:03d}.png", seed=i, size=8)
    buf = pathlib.Path(tmp_path / "full.jpg")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (root / "a" / "zzz.jpg").write_bytes(buf.read_bytes()[: buf.stat().st_size // 2])
    buf.unlink()
    config = _write(tmp_path / "c.yaml", _cfg(
        data={"name": "imagefolder", "image_size": 8, "root": str(root)}, model={"preset": "jit-tiny", "patch_size": 4},
        optim={"batch_size": 30, "lr": 1e-3, "total_images": 1500, "ema_decays": [0.99]},
        eval={"metrics": [], "denoise_loss": False, "grid_size": 2}, checkpoint_every_images=60))
    monkeypatch.chdir(tmp_path)
    code = cli.main(["train", str(config), "--out", "run"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    stopped, refusal = err.strip().splitlines()[-2:]
    assert stopped.startswith("train stopped (ImageReadError): partial output in run; MLflow run ")
    assert stopped.endswith("marked FAILED; rerun the same command to resume from its last checkpoint")
    assert refusal.startswith(f"specforce train: imagefolder: cannot read image '{root}/a/zzz.jpg'")
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # the partial output it names
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert [(r.info.status, r.data.tags["specforce.status"]) for r in runs] == [("FAILED", "failed")]
