"""trainers.data.loader's file-backed datasets: imagefolder (the ADM crop recomputed by hand with PIL, flips, the
unreadable-file and layout errors), imagenet's layout, cifar10 read from the real pickle format, and describe().

    .venv/bin/python -m pytest tests/test_data_files.py -q      # CPU, seconds
"""
from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from data_helpers import pil_bilinear, write_cifar
from trainers.data.loader import build_dataset


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture()
def folder(tmp_path):
    """root/cat, root/dog with PNG/JPEG/BMP/WEBP images of several sizes, plus files that must be ignored."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    layout = {"cat": [("a.png", (40, 30)), ("B.JPG", (64, 64)), ("c.webp", (33, 47))],
              "dog": [("d.bmp", (20, 50)), ("e.png", (100, 70))]}
    arrays = {}
    for cls, files in layout.items():
        (root / cls).mkdir(parents=True)
        for fname, (w, h) in files:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / fname)
            arrays[f"{cls}/{fname}"] = arr
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"editor metadata, not an image")
    (root / "README.png").write_bytes(b"loose file at the root: not in a class")
    return root, arrays


# ---------------------------------------------------------------------------------------------------- imagefolder
def test_imagefolder_crop_size_labels_and_range(folder):
    root, _ = folder
    ds = build_dataset("imagefolder", image_size=16, root=root, split="test")
    assert ds.classes == ["cat", "dog"] and (ds.num_classes, ds.channels, len(ds)) == (2, 3, 5)
    labels = [ds[i][1] for i in range(len(ds))]
    assert labels == [0, 0, 0, 1, 1]
    for i in range(len(ds)):
        x = ds[i][0]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and -1.0 <= x.min() and x.max() <= 1.0


def test_adm_crop_recomputed_by_hand(folder):
    root, arrays = folder
    ds = build_dataset("imagefolder", image_size=16, root=root, split="test")
    # dog/e.png is 100x70 (w x h): short side 70 >= 32 -> 50x35; 35 >= 32 -> 25x17; 17 < 32 stops.
    # Bicubic to short side 16: (round(25 * 16/17), 16) = (24, 16); centre crop starts at x = (24 - 16) // 2 = 4.
    img = Image.fromarray(arrays["dog/e.png"])
    img = img.resize((50, 35), Image.BOX).resize((25, 17), Image.BOX).resize((24, 16), Image.BICUBIC)
    expected = np.asarray(img)[:, 4:20].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_array_equal(ds[4][0].permute(1, 2, 0).numpy(), expected)
    # dog/d.bmp is 20x50: no halving (20 < 32), bicubic up to (16, 40), crop rows (40 - 16) // 2 = 12 .. 28
    img = Image.fromarray(arrays["dog/d.bmp"]).resize((16, 40), Image.BICUBIC)
    expected = np.asarray(img)[12:28].astype(np.float32) / 127.5 - 1.0
    np.testing.assert_array_equal(ds[3][0].permute(1, 2, 0).numpy(), expected)


def test_flips_only_in_train(folder):
    root, _ = folder
    test = build_dataset("imagefolder", image_size=16, root=root, split="test")
    train = build_dataset("imagefolder", image_size=16, root=root, seed=5)
    plain = build_dataset("imagefolder", image_size=16, root=root, hflip=False)
    assert train.describe()["options"] == {"hflip": True} and test.describe()["options"] == {"hflip": False}
    flips = []
    for i, epoch in itertools.product(range(len(test)), range(8)):
        ref = test[i][0]
        assert torch.equal(test[(i, epoch)][0], ref) and torch.equal(plain[(i, epoch)][0], ref)
        x = train[(i, epoch)][0]
        assert torch.equal(x, ref) or torch.equal(x, ref.flip(-1))
        flips.append(not torch.equal(x, ref))
        assert torch.equal(x, train[(i, epoch)][0])  # a pure function of the key
    assert 0.25 < np.mean(flips) < 0.75
    per_image = np.array(flips).reshape(len(test), 8)
    assert (per_image.any(axis=1) & ~per_image.all(axis=1)).any()  # redrawn every epoch, not fixed per image


def test_imagefolder_unreadable_image_is_named(folder):
    root, _ = folder
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG truncated")
    # indexing verifies every file: refused before any training, naming the file
    with pytest.raises(ValueError, match=r"imagefolder: 1 unreadable image\(s\) under .*broken\.png"):
        build_dataset("imagefolder", image_size=8, root=root)
    # with verify off the same file is named when the loader reaches it
    ds = build_dataset("imagefolder", image_size=8, root=root, verify=False)
    broken = [p for p, _ in ds._samples].index(str(root / "dog" / "broken.png"))
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        ds[broken]


def test_imagefolder_error_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"imagefolder: root .*nowhere.* does not exist"):
        build_dataset("imagefolder", image_size=8, root=tmp_path / "nowhere")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a directory"):
        build_dataset("imagefolder", image_size=8, root=tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no class folders in"):
        build_dataset("imagefolder", image_size=8, root=tmp_path / "empty")
    (tmp_path / "empty" / "cls").mkdir()
    (tmp_path / "empty" / "cls" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match=r"class folder .*cls.* has no images"):
        build_dataset("imagefolder", image_size=8, root=tmp_path / "empty")
    with pytest.raises(TypeError, match="hflip"):
        build_dataset("imagefolder", image_size=8, root=tmp_path, hflip="yes")


def test_imagenet_layout_and_class_count_warning(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("n01", "n02"):
            (tmp_path / split / cls).mkdir(parents=True)
            for j in range(n):
                Image.new("RGB", (12, 10), (j * 40, 0, 0)).save(tmp_path / split / cls / f"{j}.JPEG")
    with pytest.warns(UserWarning, match="found 2 classes .* expected 1000"):
        train = build_dataset("imagenet", image_size=8, root=tmp_path)
    with pytest.warns(UserWarning, match="expected 1000"):
        test = build_dataset("imagenet", image_size=8, root=tmp_path, split="test")
    assert (len(train), len(test), test.num_classes) == (6, 4, 2)
    with pytest.raises(FileNotFoundError, match="imagenet: root .* does not exist"):
        build_dataset("imagenet", image_size=8, root=tmp_path / "nope")
    (tmp_path / "other" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"other.*val.* does not exist"):
        build_dataset("imagenet", image_size=8, root=tmp_path / "other", split="val")


# --------------------------------------------------------------------------------------------------------- cifar10
def test_cifar_reads_the_pickle_format(tmp_path):
    truth = write_cifar(tmp_path)
    train = build_dataset("cifar10", image_size=32, root=tmp_path, hflip=False)
    test = build_dataset("cifar10", image_size=32, root=tmp_path, split="test")
    assert (len(train), len(test), train.num_classes, train.channels) == (20, 3, 10, 3)
    images, labels = truth["data_batch_3"]
    x, y = train[2 * 4 + 1]  # batches are concatenated in order 1..5
    np.testing.assert_array_equal(x.permute(1, 2, 0).numpy(), images[1].astype(np.float32) / 127.5 - 1.0)
    assert y == labels[1]
    images, labels = truth["test_batch"]
    assert [test[i][1] for i in range(3)] == labels
    np.testing.assert_array_equal(test[2][0].permute(1, 2, 0).numpy(), images[2] / np.float32(127.5) - 1)
    small = build_dataset("cifar10", image_size=16, root=tmp_path, split="test")
    for c in range(3):
        ref = pil_bilinear(images[0][..., c].astype(np.float32) / 127.5 - 1.0, 16)
        np.testing.assert_allclose(small[0][0][c].numpy(), ref, atol=1e-5)


def test_cifar_train_flips_by_default(tmp_path):
    write_cifar(tmp_path)
    plain = build_dataset("cifar10", image_size=32, root=tmp_path, hflip=False)
    flipped = build_dataset("cifar10", image_size=32, root=tmp_path)
    outcomes = [not torch.equal(flipped[(i, e)][0], plain[i][0]) for i in range(20) for e in range(2)]
    assert all(torch.equal(flipped[(i, e)][0], plain[i][0]) or torch.equal(flipped[(i, e)][0], plain[i][0].flip(-1))
               for i in range(20) for e in range(2))
    assert 0.25 < np.mean(outcomes) < 0.75


def test_cifar_error_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"root .*absent.* does not exist.*download=True"):
        build_dataset("cifar10", image_size=32, root=tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"missing .*cifar-10-batches-py.*data_batch_1.*download=True"):
        build_dataset("cifar10", image_size=32, root=tmp_path)
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing .*data_batch_3"):
        build_dataset("cifar10", image_size=32, root=tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"cannot read batch .*test_batch"):
        build_dataset("cifar10", image_size=32, root=tmp_path, split="test")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"test_batch has data uint8 \(2, 100\)"):
        build_dataset("cifar10", image_size=32, root=tmp_path, split="test")
    with pytest.raises(TypeError, match="download"):
        build_dataset("cifar10", image_size=32, root=tmp_path, split="test", download=1)


# ------------------------------------------------------------------------------------------------- describe()
def test_describe_is_json_and_complete(folder, tmp_path):
    write_cifar(tmp_path / "c")
    root, _ = folder
    for ds in (build_dataset("grf", image_size=8, alpha_data=3.0), build_dataset("digits", image_size=8),
               build_dataset("cifar10", image_size=8, root=tmp_path / "c"),
               build_dataset("imagefolder", image_size=8, root=root)):
        d = json.loads(json.dumps(ds.describe()))
        assert {"name", "size", "count", "classes", "options", "split", "channels"} <= set(d)
        assert (d["size"], d["count"], d["classes"]) == (8, len(ds), ds.num_classes)
    assert build_dataset("grf", image_size=8, alpha_data=3.0).describe()["options"] == \
        {"alpha_data": 3.0, "num_samples": 10_000, "channels": 1}
