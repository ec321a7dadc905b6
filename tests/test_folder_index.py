"""The raw folder's on-disk index cache: a second build walks and verifies nothing, a changed listing is seen,
concurrent builders build once; `prepare --address` runs its shards as Ray tasks; dry-runs on a large raw folder
suggest `specforce prepare`.

    .venv/bin/python -m pytest tests/test_folder_index.py -q
"""
from __future__ import annotations

import multiprocessing
import os
import sys

import numpy as np
import pytest
from PIL import Image

from image_helpers import make_folder
from trainers.data.loader import build_dataset
from trainers.data import folder, folder_index, image_files


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECFORCE_CACHE", str(tmp_path / "cache"))


class Watch:
    """Audit-hook record of files opened and folders listed under `root` while active."""
    hooked = False
    active: "Watch | None" = None

    def __init__(self, root):
        self.root, self.opened, self.listed = str(root), [], []
        if not Watch.hooked:
            sys.addaudithook(Watch._hook)
            Watch.hooked = True

    @staticmethod
    def _hook(event, args):
        w = Watch.active
        if w is None or not args or not isinstance(args[0], str) or not args[0].startswith(w.root):
            return
        if event == "open":
            w.opened.append(args[0])
        elif event in ("os.scandir", "os.listdir"):
            w.listed.append(args[0])

    def __enter__(self):
        Watch.active = self
        return self

    def __exit__(self, *exc):
        Watch.active = None


def test_second_build_opens_no_image_and_lists_no_folder(tmp_path):
    src = make_folder(tmp_path / "src")
    with Watch(src) as cold:
        first = build_dataset("imagefolder", image_size=8, root=str(src))
    assert len(cold.opened) == 21 and cold.listed  # verify() opened every image once
    with Watch(src) as warm:
        second = build_dataset("imagefolder", image_size=8, root=str(src))
    assert warm.opened == [] and warm.listed == []  # one stat per directory, nothing else
    assert second._samples == first._samples and second.classes == first.classes
    assert second.identity() == first.identity()
    assert os.listdir(tmp_path / "cache" / "folder-index")


def test_a_changed_listing_rebuilds_and_verifies_again(tmp_path):
    src = make_folder(tmp_path / "src")
    before = build_dataset("imagefolder", image_size=8, root=str(src))
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(src / "c1" / "new.png")
    after = build_dataset("imagefolder", image_size=8, root=str(src))
    assert len(after) == len(before) + 1 and after.identity()["digest"] != before.identity()["digest"]
    (src / "c2" / "bad.png").write_bytes(b"not an image")  # added after caching: the rebuild verifies it
    with pytest.raises(ValueError, match=r"1 unreadable image\(s\).*bad.png"):
        build_dataset("imagefolder", image_size=8, root=str(src))
    # an index cached without verification never stands in for a verified one
    (src / "c2" / "bad.png").unlink()
    build_dataset("imagefolder", image_size=8, root=str(src), verify=False)
    image_files._VERIFIED.clear()  # as in a new process: only the on-disk cache remembers
    with Watch(src) as w:
        build_dataset("imagefolder", image_size=8, root=str(src))
    assert len(w.opened) == 22


def _build_and_count(args):
    root, cache = args
    os.environ["SPECFORCE_CACHE"] = cache
    built = []
    real = folder_index.cached_index

    def counting(folder, dataset, verify, build):
        def counted(*a):
            built.append(1)
            return build(*a)
        return real(folder, dataset, verify, counted)

    folder_index.cached_index = counting
    folder.cached_index = counting
    ds = build_dataset("imagefolder", image_size=8, root=root)
    return len(ds), len(built)


def test_concurrent_workers_build_the_index_once(tmp_path):
    src = make_folder(tmp_path / "src", classes=4, per_class=20)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        results = pool.map(_build_and_count, [(str(src), str(tmp_path / "cache"))] * 4)
    assert {n for n, _ in results} == {80}
    assert sum(b for _, b in results) == 1  # the lock made the others read the first builder's entry


def test_unwritable_cache_warns_once_and_still_indexes(tmp_path, monkeypatch):
    src = make_folder(tmp_path / "src", classes=1, per_class=2)
    (tmp_path / "ro").write_text("a file where the cache folder should be")
    monkeypatch.setenv("SPECFORCE_CACHE", str(tmp_path / "ro"))
    with pytest.warns(UserWarning, match=r"folder index cache .* is not writable"):
        ds = build_dataset("imagefolder", image_size=8, root=str(src))
    assert len(ds) == 2


def test_prepare_runs_its_shards_as_ray_tasks(tmp_path, monkeypatch):
    from sweeps.commands.prepare import prepare_dataset

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    src = make_folder(tmp_path / "src", classes=2, per_class=5)
    ray_made = prepare_dataset(str(src), str(tmp_path / "r"), dataset="imagefolder", image_size=8, shard_size=3,
                               address="local", progress=False)  # "local": a fresh Ray instance, as in the tests
    pool_made = prepare_dataset(str(src), str(tmp_path / "p"), dataset="imagefolder", image_size=8, shard_size=3,
                                workers=1, progress=False)
    assert [s["sha256"] for s in ray_made["splits"]["train"]["shards"]] == \
        [s["sha256"] for s in pool_made["splits"]["train"]["shards"]]


def test_dry_run_on_a_large_raw_folder_suggests_prepare(tmp_path, monkeypatch):
    from sweeps import preflight
    from trainers.training.config import config_from_dict

    src = make_folder(tmp_path / "src", classes=2, per_class=3)
    monkeypatch.setattr(preflight, "RAW_FOLDER_NOTE_MIN", 5)  # the note's threshold, lowered for 6 images
    cfg = config_from_dict({"data": {"name": "imagefolder", "root": str(src), "image_size": 8}})
    note = preflight.raw_folder_note(cfg, 1.5)
    assert note.startswith(f"note: data.root {str(src)!r} is a raw imagefolder folder of 6 training images")
    assert "took 1.5 s here" in note and "ms per image per core" in note
    assert f"specforce prepare {src} DEST --dataset imagefolder --image-size 8" in note
    grf = config_from_dict({"data": {"name": "grf", "image_size": 8}})
    assert preflight.raw_folder_note(grf, 1.0) is None
