"""`specforce prepare` and the `prepared` dataset: pixels equal the live path's, the stream keeps every property of
today's (order, shards, resume, flips), opening reads no image, and every damaged input is refused in one line.

    .venv/bin/python -m pytest tests/test_prepared.py -q
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from image_helpers import make_folder
from sweep_helpers import wait_for
from sweeps.errors import UserError
from sweeps.commands.prepare import prepare_dataset, verify_prepared
from trainers.data.loader import build_dataset, infinite_loader, to_model_input
from trainers.data.prepared_format import (FORMAT, FORMAT_VERSION, MANIFEST, PreparedDataError,
                                               manifest_digest)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECFORCE_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def prepared(tmp_path):
    src = make_folder(tmp_path / "src")
    dest = tmp_path / "dst"
    manifest = prepare_dataset(str(src), str(dest), dataset="imagefolder", image_size=16, workers=2, shard_size=5,
                               progress=False)
    return src, dest, manifest


def assert_same_images(a, b, epochs=(0, 1)):
    assert len(a) == len(b)
    for i in range(len(a)):
        for e in epochs:
            xa, ya = a[(i, e)]
            xb, yb = b[(i, e)]
            assert torch.equal(xa, xb) and ya == yb, (i, e)


# ------------------------------------------------------------------------------------------------- equality
def test_prepared_equals_the_live_folder_exactly(prepared):
    src, dest, manifest = prepared
    assert manifest["splits"]["train"]["count"] == 21 and len(manifest["splits"]["train"]["shards"]) == 5
    assert manifest["format_version"] == FORMAT_VERSION and manifest["digest"] == manifest_digest(manifest)
    for split in ("train", "test"):  # test reads the same images without flips, as the live imagefolder does
        live = build_dataset("imagefolder", image_size=16, split=split, root=str(src))
        prep = build_dataset("prepared", image_size=16, split=split, root=str(dest))
        assert prep.num_classes == 3 and prep.channels == 3
        assert_same_images(live, prep)


def test_uri_reader_equals_local_reader(prepared):
    _, dest, _ = prepared
    local = build_dataset("prepared", image_size=16, root=str(dest))
    remote = build_dataset("prepared", image_size=16, root=f"file://{dest}")  # pyarrow.fs ranged reads
    assert_same_images(local, remote)


def test_imagenet_layout_keeps_its_two_splits(tmp_path):
    make_folder(tmp_path / "in" / "train", classes=2, per_class=4)
    make_folder(tmp_path / "in" / "val", classes=2, per_class=3, seed=1)
    with pytest.warns(UserWarning, match="expected 1000"):
        prepare_dataset(str(tmp_path / "in"), str(tmp_path / "p"), dataset="imagenet", image_size=8,
                        workers=1, progress=False)
        for split, n in (("train", 8), ("test", 6)):
            live = build_dataset("imagenet", image_size=8, split=split, root=str(tmp_path / "in"))
            prep = build_dataset("prepared", image_size=8, split=split, root=str(tmp_path / "p"))
            assert len(prep) == n
            assert_same_images(live, prep, epochs=(0,))


@pytest.mark.parametrize("name", ["digits", "mnist"])
def test_resized_sources_are_rounded_to_the_nearest_level(tmp_path, name):
    prepare_dataset("-", str(tmp_path / name), dataset=name, image_size=12, workers=1, progress=False)
    for split in ("train", "test"):
        live = build_dataset(name, image_size=12, split=split)
        prep = build_dataset("prepared", image_size=12, split=split, root=str(tmp_path / name))
        assert len(live) == len(prep) and prep.channels == 1
        for i in range(0, len(live), 97):
            x, y = live[(i, 1)]  # epoch 1: a flip would show if the prepared dataset drew one
            q, yq = prep[(i, 1)]
            assert y == yq
            # half a uint8 level of the [-1, 1] range, plus float rounding
            assert (x.clamp(-1, 1) - q).abs().max() <= 1 / 127.5 / 2 + 1e-6


# ------------------------------------------------------------------------------------------------- the stream
def test_uint8_stream_equals_the_float_stream_and_keeps_its_properties(prepared):
    src, dest, _ = prepared
    live = build_dataset("imagefolder", image_size=16, root=str(src))
    prep = build_dataset("prepared", image_size=16, root=str(dest))
    ref = infinite_loader(live, batch_size=4, seed=3)  # today's float path
    raw = infinite_loader(prep, batch_size=4, seed=3, num_workers=2, raw=True, prefetch_factor=2,
                          persistent_workers=True)
    for _ in range(12):  # 48 images: more than two epochs of 20 (drop_last)
        (xf, yf), (xu, yu) = next(ref), next(raw)
        assert xu.dtype == torch.uint8 and torch.equal(to_model_input(xu), xf) and torch.equal(yu, yf)
    # two ranks: disjoint shards of the same global order, and a resume mid-epoch continues it exactly
    glob = [next(infinite_loader(prep, batch_size=4, seed=3, raw=True))[0] for _ in range(1)]
    r0 = infinite_loader(prep, batch_size=2, seed=3, rank=0, world_size=2, raw=True)
    r1 = infinite_loader(prep, batch_size=2, seed=3, rank=1, world_size=2, raw=True)
    a, b = next(r0)[0], next(r1)[0]
    assert torch.equal(torch.stack([a[0], b[0], a[1], b[1]]), glob[0])
    full = infinite_loader(prep, batch_size=4, seed=3, raw=True)
    batches = [next(full)[0] for _ in range(7)]
    resumed = infinite_loader(prep, batch_size=4, seed=3, raw=True, start_images=12)
    for k in range(3, 7):
        assert torch.equal(next(resumed)[0], batches[k])


# ------------------------------------------------------------------------------------------------- opening
def test_opening_reads_the_manifest_only_at_imagenet_scale(tmp_path):
    """1.28M entries in 940 sparse shards: opening stats each shard once and opens none (no image is read)."""
    n, per, c, s = 1_281_167, 1365, 3, 256
    root = tmp_path / "big"
    (root / "train").mkdir(parents=True)
    header = 128
    shards = []
    for k, a in enumerate(range(0, n, per)):
        count = min(per, n - a)
        rel = f"train/shard-{k:05d}.npy"
        with open(root / rel, "wb") as f:
            f.truncate(header + count * c * s * s)  # sparse: no disk, the right size
        shards.append({"file": rel, "count": count, "bytes": header + count * c * s * s, "header_bytes": header,
                       "sha256": "0" * 64})
    np.save(root / "train" / "labels.npy", np.arange(n, dtype=np.int64) % 1000)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "dataset": "imagenet", "source": "/data",
                "image_size": s, "channels": c, "num_classes": 1000, "classes": [str(i) for i in range(1000)],
                "crop": "adm", "flips": True, "created_by": "test",
                "splits": {"train": {"count": n, "labels": {"file": "train/labels.npy", "sha256": "0"},
                                     "shards": shards}}}
    manifest["digest"] = manifest_digest(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest))
    opened: list[str] = []
    watching = [True]

    def hook(event, args):
        if watching[0] and event == "open" and isinstance(args[0], str) and "shard-" in args[0]:
            opened.append(args[0])

    sys.addaudithook(hook)
    try:
        ds = build_dataset("prepared", image_size=s, root=str(root))
    finally:
        watching[0] = False
    assert len(ds) == n and ds.num_classes == 1000 and opened == []


# ------------------------------------------------------------------------------------------------- refusals
def test_damaged_prepared_roots_are_refused_naming_the_file(prepared, tmp_path):
    _, dest, manifest = prepared
    shard = dest / manifest["splits"]["train"]["shards"][2]["file"]
    data = shard.read_bytes()
    shard.write_bytes(data[:-7])  # truncated
    with pytest.raises(PreparedDataError, match=r"shard-00002.npy.*bytes.*truncated"):
        build_dataset("prepared", image_size=16, root=str(dest))
    flipped = bytearray(data)
    flipped[-1] ^= 0xFF  # same size, one bit pattern changed: only the checksum sees it
    shard.write_bytes(bytes(flipped))
    build_dataset("prepared", image_size=16, root=str(dest))  # verify: size passes
    with pytest.raises(PreparedDataError, match=r"shard-00002.npy.*fails its checksum"):
        build_dataset("prepared", image_size=16, root=str(dest), verify="checksum")
    with pytest.raises(UserError, match=r"shard-00002.npy fails its checksum"):
        verify_prepared(str(dest), workers=1)
    shard.unlink()
    with pytest.raises(PreparedDataError, match=r"shard-00002.npy.*is missing"):
        build_dataset("prepared", image_size=16, root=str(dest))


def test_manifest_problems_are_refused(prepared):
    _, dest, manifest = prepared
    with pytest.raises(ValueError, match=r"data.image_size is 32 but .* holds 16 px.*--image-size 32"):
        build_dataset("prepared", image_size=32, root=str(dest))
    newer = dict(manifest, format_version=FORMAT_VERSION + 1)
    newer["digest"] = manifest_digest(newer)
    (dest / MANIFEST).write_text(json.dumps(newer))
    with pytest.raises(PreparedDataError, match=r"format_version 2, newer than this specforce reads \(1\)"):
        build_dataset("prepared", image_size=16, root=str(dest))
    (dest / MANIFEST).write_text(json.dumps(dict(manifest, num_classes=7)))
    with pytest.raises(PreparedDataError, match=r"edited after it was written"):
        build_dataset("prepared", image_size=16, root=str(dest))
    (dest / MANIFEST).unlink()
    with pytest.raises(PreparedDataError, match=r"no manifest.json .*not a prepared dataset"):
        build_dataset("prepared", image_size=16, root=str(dest))


def test_dest_holding_something_else_is_refused(prepared, tmp_path):
    src, dest, _ = prepared
    with pytest.raises(UserError, match=r"DEST: already holds a prepared dataset with image_size 16, not 8"):
        prepare_dataset(str(src), str(dest), dataset="imagefolder", image_size=8, progress=False)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"DEST: is a folder with other content"):
        prepare_dataset(str(src), str(other), dataset="imagefolder", image_size=16, progress=False)
    assert sorted(os.listdir(other)) == ["notes.txt"]  # nothing written


def test_unreadable_images_are_listed_and_the_rest_kept(tmp_path):
    src = make_folder(tmp_path / "src", classes=2, per_class=6)
    (src / "c1" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "c0" / "0.jpg").write_bytes(b"\xff\xd8\xff broken")
    with pytest.raises(UserError, match=r"SRC: 2 unreadable image\(s\): 'c0/0.jpg' .*'c1/3.png'"):
        prepare_dataset(str(src), str(tmp_path / "d"), dataset="imagefolder", image_size=8, workers=1,
                        shard_size=3, progress=False)
    assert not (tmp_path / "d" / MANIFEST).exists()  # not a dataset until it is whole
    with pytest.raises(PreparedDataError, match="interrupted; rerun the same `specforce prepare`"):
        build_dataset("prepared", image_size=8, root=str(tmp_path / "d"))
    kept = sorted(os.listdir(tmp_path / "d" / "train"))
    assert kept == ["shard-00001.npy", "shard-00002.npy"]  # shards 0 (c0/0.jpg) and 3 (c1/3.png) were not written
    # the user replaces the files (same names: same listing) and reruns: only the missing shards are made
    for bad in (src / "c1" / "3.png", src / "c0" / "0.jpg"):
        Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(bad, format="PNG" if bad.suffix == ".png" else "JPEG")
    prepare_dataset(str(src), str(tmp_path / "d"), dataset="imagefolder", image_size=8, workers=1, shard_size=3,
                    progress=False)
    assert_same_images(build_dataset("imagefolder", image_size=8, root=str(src)),
                       build_dataset("prepared", image_size=8, root=str(tmp_path / "d")))


def test_a_killed_prepare_continues_where_it_stopped(tmp_path):
    """The real CLI killed once the first shards exist; rerunning it keeps them and ends with the same dataset."""
    # one image a shard, 400 shards: a whole prepare here takes ~0.4 s, so the kill needs shards to land between
    src = make_folder(tmp_path / "src", classes=4, per_class=100)
    dest = tmp_path / "d"
    cmd = [sys.executable, "-m", "sweeps.cli", "prepare", str(src), str(dest), "--dataset", "imagefolder",
           "--image-size", "16", "--workers", "1", "--shard-size", "1", "--no-progress"]
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    def three_shards_recorded() -> bool:
        try:
            return sum(f.startswith("train-") for f in os.listdir(dest / ".prepare")) >= 3
        except FileNotFoundError:  # not made yet, or removed by a prepare that finished
            return False

    wait_for(three_shards_recorded, 120, proc, "3 shards recorded (a prepare that ends first cannot be killed)",
             every=0.002)
    proc.kill()
    proc.wait()
    assert not (dest / MANIFEST).exists(), "the prepare finished before it could be killed"
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "already written: kept" in out.stderr
    reference = prepare_dataset(str(src), str(tmp_path / "ref"), dataset="imagefolder", image_size=16, workers=1,
                                shard_size=1, progress=False)
    resumed = json.loads((dest / MANIFEST).read_text())
    assert [s["sha256"] for s in resumed["splits"]["train"]["shards"]] == \
        [s["sha256"] for s in reference["splits"]["train"]["shards"]]


def test_cli_refusals_are_one_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO, SPECFORCE_CACHE=str(tmp_path / "c"))
    run = lambda *a: subprocess.run([sys.executable, "-m", "sweeps.cli", "prepare", *a], cwd=REPO, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=120)
    out = run(str(tmp_path / "nope"), str(tmp_path / "d"), "--dataset", "imagefolder", "--image-size", "8")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert out.stderr.startswith("specforce prepare: SRC: imagefolder: root") and "does not exist" in out.stderr
    out = run(str(tmp_path), "--dataset", "imagefolder")
    assert out.returncode == 2 and "DEST: is required" in out.stderr and out.stderr.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_planning_and_folder_workers_never_import_torch(prepared, tmp_path):
    """prepare's serial start-up is the planner's and the pool workers' imports: for folders they stay torch-free."""
    src, _, _ = prepared
    code = ("import sys; from sweeps.commands.prepare import plan, write_shard; "
            f"p = plan({str(src)!r}, 'imagefolder', 8, 4); "
            f"job = dict(dataset='imagefolder', src={str(src)!r}, dest={str(tmp_path / 'w')!r}, split='train', "
            "start=0, stop=4, image_size=8, channels=3, file='train/shard-00000.npy', "
            "files=p['splits']['train']['files'][:4]); "
            "r = write_shard(job); assert r['count'] == 4, r; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
