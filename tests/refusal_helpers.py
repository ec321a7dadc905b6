"""The refusal table's machinery (tests/test_cli_errors*.py): the bad inputs the rows read, the row record, and the
check each row passes through `sweeps.cli.main` in-process (exit code 2, one `specforce <command>:` line naming the
bad thing, no traceback, an unchanged directory tree).

    .venv/bin/python -m pytest tests/test_cli_errors.py tests/test_cli_errors_train.py tests/test_cli_errors_sweep.py -q
"""
from __future__ import annotations

import dataclasses
import pathlib
import socket
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from sweeps import cli
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(path: pathlib.Path, seed: int = 0, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def cfg(**sections) -> dict:
    tree = yaml.safe_load(yaml.safe_dump(TINY))
    for key, value in sections.items():
        node, *rest = key.split("__")
        if rest:
            tree.setdefault(node, {})[rest[0]] = value
        else:
            tree[node] = value
    return tree


def write_yaml(path: pathlib.Path, tree) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(tree, sort_keys=False))
    return path


def make_inputs(d: pathlib.Path) -> None:
    """Every bad input a row needs, written into `d`."""
    write_yaml(d / "tiny.yaml", TINY)
    (d / "syntax.yaml").write_text("model:\n  preset: jit-tiny\n  patch_size: [4\ndata: {name: grf}\n")
    (d / "evil.yaml").write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    (d / "list.yaml").write_text("- model\n- data\n")
    write_yaml(d / "preset.yaml", cfg(model={"preset": "jit-tinyy"}))
    write_yaml(d / "dataset.yaml", cfg(data={"name": "imagenette", "image_size": 32}))
    write_yaml(d / "option.yaml", cfg(data={"name": "grf", "options": {"alpha_dta": 2.0}}))
    write_yaml(d / "optval.yaml", cfg(data={"name": "grf", "options": {"alpha_data": -1}}))
    write_yaml(d / "noroot.yaml", cfg(data={"name": "imagefolder", "image_size": 8}))
    write_yaml(d / "missroot.yaml", cfg(data={"name": "imagefolder", "image_size": 8, "root": str(d / "nowhere")}))
    write_yaml(d / "grfroot.yaml", cfg(data={"name": "grf", "root": str(d)}))
    # an imagefolder with an empty class folder
    png(d / "photos_empty" / "cat" / "a.png")
    (d / "photos_empty" / "dog").mkdir()
    write_yaml(d / "emptycls.yaml", cfg(data={"name": "imagefolder", "image_size": 8,
                                          "root": str(d / "photos_empty")}))
    # 600 good images and one corrupt one sorted last: beyond the 512 the loop's spectrum sample reads first
    for i in range(600):
        png(d / "photos_bad" / ("a" if i < 300 else "b") / f"{i:04d}.png", seed=i, size=8)
    (d / "photos_bad" / "b" / "zzz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    write_yaml(d / "corrupt.yaml", cfg(data={"name": "imagefolder", "image_size": 8, "root": str(d / "photos_bad")}))
    write_yaml(d / "cuda.yaml", {**TINY, "device": "cuda"})
    write_yaml(d / "fid.yaml", cfg(eval={"metrics": ["fid"], "num_samples": 16, "denoise_batch": 16,
                                      "inception_weights": str(d / "no_such_inception.pth")}))
    write_yaml(d / "classifier.yaml", cfg(eval={"metrics": ["classifier"]}))
    (d / "a_file").write_text("not a folder")
    # escapes the property-based search found (tests/test_config_properties.py): each passed --dry-run, then failed
    write_yaml(d / "digits_heldout.yaml", cfg(data={"name": "digits", "image_size": 8},
                                           model={"preset": "jit-tiny", "patch_size": 4}, eval__denoise_batch=256))
    write_yaml(d / "digits_snr.yaml", cfg(data={"name": "digits", "image_size": 8}, eval__denoise_batch=16,
                                       model={"preset": "jit-tiny", "patch_size": 4},
                                       spectral={"enabled": True, "schedule": "snr"}))
    write_yaml(d / "spec_grid_snr.yaml", {**SPEC, "base": cfg(data={"name": "digits", "image_size": 8},
                                                            eval__denoise_batch=16,
                                                            model={"preset": "jit-tiny", "patch_size": 4}),
                                      "grid": {"spectral.enabled": [True], "spectral.schedule": ["linear", "snr"]}})
    # a prepared dataset's refusals (trainers/data/prepared.py): another image size, a missing shard
    from sweeps.commands.prepare import prepare_dataset

    for cls in ("a", "b"):
        for i in range(3):
            (d / "photos" / cls).mkdir(parents=True, exist_ok=True)
            png(d / "photos" / cls / f"{i}.png", seed=i)
    prepare_dataset(str(d / "photos"), str(d / "prep8"), dataset="imagefolder", image_size=8, workers=1,
                    shard_size=2, progress=False)
    write_yaml(d / "prepared_size.yaml", cfg(data={"name": "prepared", "root": str(d / "prep8"), "image_size": 16}))
    prepare_dataset(str(d / "photos"), str(d / "prep8_broken"), dataset="imagefolder", image_size=8, workers=1,
                    shard_size=2, progress=False)
    (d / "prep8_broken" / "train" / "shard-00001.npy").unlink()
    write_yaml(d / "prepared_shard.yaml", cfg(data={"name": "prepared", "root": str(d / "prep8_broken"), "image_size": 8},
                                          model={"preset": "jit-tiny", "patch_size": 4}))
    write_yaml(d / "spec_grid_workers.yaml", {**SPEC, "resources": {"workers": 2, "cpus_per_worker": 1},
                                          "grid": {"optim.batch_size": [16, 17]}})
    search = {"metric": "eval/denoise_loss", "num_samples": 2}
    write_yaml(d / "spec_int_step.yaml", {"name": "errs", "base": TINY, "search": {**search, "space": {
        "optim.batch_size": {"type": "int", "low": 8, "high": 16, "step": 0.5}}}})
    write_yaml(d / "spec_float_low.yaml", {"name": "errs", "base": TINY, "search": {**search, "space": {
        "spectral.kappa": {"type": "float", "low": 0, "high": 50}}}})
    # an --out folder holding the checkpoint of another config
    other = config_from_dict(cfg(optim={**TINY["optim"], "lr": 0.5}))
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
    write_yaml(d / "spec.yaml", SPEC)
    (d / "spec_syntax.yaml").write_text("name: errs\ngrid:\n  seed: [0, 1\nbase: {}\n")
    (d / "spec_evil.yaml").write_text("name: !!python/object/apply:os.system ['echo pwned']\ngrid: {seed: [0]}\n")
    write_yaml(d / "spec_preset.yaml", {**SPEC, "base": cfg(model={"preset": "jit-tinyy"})})
    write_yaml(d / "spec_dataset.yaml", {**SPEC, "base": cfg(data={"name": "imagenette"})})
    write_yaml(d / "spec_gridkey.yaml", {**SPEC, "grid": {"model.pach_size": [4, 8]}})
    write_yaml(d / "spec_gridval.yaml", {**SPEC, "grid": {"model.preset": ["jit-tiny", "jit-smal"]}})
    write_yaml(d / "spec_metric.yaml", {**{k: v for k, v in SPEC.items() if k != "grid"}, "search": {
        "metric": "eval/fid", "space": {"spectral.alpha": {"type": "float", "low": 1, "high": 3}}}})
    write_yaml(d / "spec_cpus.yaml", {**SPEC, "resources": {"workers": 2, "cpus_per_worker": 1}})
    write_yaml(d / "spec_gpu.yaml", {**SPEC, "resources": {"workers": 1, "use_gpu": True}})
    write_yaml(d / "spec_baseconfig.yaml", {**SPEC, "base_config": "no_such_base.yaml"})
    write_yaml(d / "spec_root.yaml", {**SPEC, "base": cfg(data={"name": "imagefolder", "image_size": 8,
                                                             "root": str(d / "nowhere")})})
    # a sweep started with spec.yaml, then the spec edited: --resume must refuse and list the keys
    from sweeps.fingerprint import check_or_record
    from sweeps.spec import load_spec

    check_or_record(load_spec(d / "spec.yaml"), d / "storage" / "errs", resume=False)
    (d / "storage" / "errs" / "grid").mkdir()
    edited = {**SPEC, "base": cfg(optim={**TINY["optim"], "lr": 2e-3}), "grid": {"spectral.enabled": [False, True],
                                                                                  "seed": [0, 1]}}
    write_yaml(d / "spec_edited.yaml", edited)
    # an MLflow store (for report rows) and a file that is not one
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{d / 'store' / 'mlflow.db'}").search_experiments(max_results=1)
    (d / "notadb.db").write_text("just text")


_MADE: dict[str, pathlib.Path] = {}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> pathlib.Path:
    """The bad inputs, made once per test session (600 images and two prepared datasets); rows only read them."""
    if "inputs" not in _MADE:
        d = tmp_path_factory.mktemp("inputs")
        make_inputs(d)
        _MADE["inputs"] = d
    return _MADE["inputs"]


@dataclasses.dataclass(frozen=True)
class Row:
    id: str
    argv: list[str]  # "{in}" is the inputs folder, "{port}" a free port, "{busy}" a port someone listens on
    needle: str  # must appear in the refusal line
    skip: Callable[[], bool] | None = None


def cuda() -> bool:
    return torch.cuda.is_available()


@pytest.fixture()
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def fill(text: str, inputs: pathlib.Path, port: int, busy: int) -> str:
    return text.replace("{in}", str(inputs)).replace("{port}", str(port)).replace("{busy}", str(busy))


def tree(path: pathlib.Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def check_refusal(row: Row, inputs: pathlib.Path, tmp_path: pathlib.Path, busy_port: int, monkeypatch, capsys) -> None:
    """`specforce ARGV` refuses in one line naming the bad thing, and leaves nothing behind."""
    if row.skip and row.skip():
        pytest.skip("this machine has what the row lacks")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("SPECFORCE_DEBUG", raising=False)
    port = free_port()
    argv = [fill(a, inputs, port, busy_port) for a in row.argv]
    before, before_cwd = tree(inputs), tree(tmp_path)
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
    assert fill(row.needle, inputs, port, busy_port) in lines[0], lines[0]
    # nothing half-written: no new file or folder in the inputs or the working dir (so no mlflow.db either)
    assert tree(inputs) == before, sorted(tree(inputs) ^ before)
    assert tree(tmp_path) == before_cwd, sorted(tree(tmp_path) ^ before_cwd)
