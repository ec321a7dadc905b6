"""Our FID/IS equal torch-fidelity's `calculate_metrics` on the same images with the same (random) weights file.

No machine here has the real 2015-12-05 weights, so a randomly initialised torch-fidelity Inception state dict is
saved locally (no download) and both sides load it. Images sit on the uint8 grid, so the [-1, 1] -> uint8
conversion is exact and torch-fidelity gets the uint8 images directly (grayscale replicated to RGB by the test).
"""
import numpy as np
import pytest
import torch
import torch_fidelity
from torch.utils.data import Dataset

from trainers.evaluation.evaluator import evaluate_images
from trainers.evaluation.inception import (ENV_VAR, INCEPTION_FILENAME, InceptionExtractor, resolve_inception_weights,
                                save_random_inception_weights, to_uint8_rgb)

N = 20  # IS uses 10 splits; Inception at 299x299 costs ~0.2 s per image on this CPU


class Uint8Set(Dataset):
    """What torch-fidelity reads: uint8 [3, H, W] tensors."""

    def __init__(self, u8):
        self.u8 = u8

    def __len__(self):
        return len(self.u8)

    def __getitem__(self, i):
        return self.u8[i].repeat(3 // self.u8.shape[1], 1, 1)


class FloatSet(Dataset):
    """A bare reference dataset for our side: (float image in [-1, 1], label), no describe(), no other split."""

    channels, num_classes = 1, 0

    def __init__(self, x):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], 0


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    return save_random_inception_weights(tmp_path_factory.mktemp("inception") / "random_inception.pth", seed=0)


def _images(seed, blur):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, 1, 32, 32, generator=g)
    for _ in range(blur):  # different smoothness -> different feature distributions
        x = (x + x.roll(1, -1) + x.roll(1, -2)) / 3
    return (x * 255).round().to(torch.uint8)


@pytest.fixture(scope="module")
def both(weights, tmp_path_factory):
    a8, b8 = _images(1, 0), _images(2, 3)
    a, b = a8.float() / 127.5 - 1, b8.float() / 127.5 - 1
    with pytest.warns(RuntimeWarning, match="floors are not reported"):
        ours = evaluate_images(a, FloatSet(b), ("fid",), batch_size=8, inception_weights=weights,
                               cache_dir=tmp_path_factory.mktemp("cache"))
    theirs = torch_fidelity.calculate_metrics(input1=Uint8Set(a8), input2=Uint8Set(b8), fid=True, isc=True,
                                              feature_extractor_weights_path=str(weights), cuda=False,
                                              batch_size=8, cache=False, save_cpu_ram=True, verbose=False)
    return ours, theirs


def test_fid_equals_torch_fidelity(both):
    ours, theirs = both
    assert ours.metrics["fid"] > 1.0  # the two image sets really differ in feature space
    assert ours.metrics["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)


def test_is_equals_torch_fidelity(both):
    ours, theirs = both
    # with 2 images per split and random weights the score sits just above 1, so compare IS - 1 as well
    assert ours.metrics["is"] - 1 > 1e-4
    assert ours.metrics["is"] == pytest.approx(theirs["inception_score_mean"], rel=1e-4)
    assert ours.metrics["is"] - 1 == pytest.approx(theirs["inception_score_mean"] - 1, rel=1e-3)
    assert ours.metrics["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-3, abs=1e-6)


def test_provenance_names_extractor_weights_and_counts(both, weights):
    import hashlib

    prov = both[0].provenance
    assert prov["fid"]["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert prov["fid"]["official_weights"] is False  # random weights are flagged, not passed off as the real ones
    assert prov["fid"]["num_samples"] == N and prov["fid"]["reference_num_samples"] == N
    assert prov["fid"]["extractor"] == "inception-v3-compat/2048"
    assert "fid_floor" not in both[0].metrics and prov["fid"]["floor_source"] == "unavailable"


def test_extractor_is_batch_size_invariant_and_replicates_gray(weights):
    ex = InceptionExtractor(weights, "cpu")
    x = _images(3, 1)[:6].float() / 127.5 - 1
    whole = ex(x)["2048"]
    parts = torch.cat([ex(x[:3])["2048"], ex(x[3:])["2048"]])
    torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ex(x.expand(-1, 3, -1, -1))["2048"], whole, rtol=1e-5, atol=1e-6)


def test_uint8_conversion_matches_png_round_trip():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.7, -3.0]).view(1, 1, 1, 7)
    expected = np.clip(np.round((x.numpy() + 1) * 127.5), 0, 255).astype(np.uint8)
    u8 = to_uint8_rgb(x)
    assert u8.dtype == torch.uint8 and u8.shape == (1, 3, 1, 7)
    assert np.array_equal(u8[:, 0].numpy(), expected[:, 0]) and torch.equal(u8[:, 0], u8[:, 2])
    with pytest.raises(TypeError, match="floating-point"):
        to_uint8_rgb(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, 1 or 3, H, W\]"):
        to_uint8_rgb(torch.zeros(1, 2, 2, 2))


def test_missing_weights_say_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    with pytest.raises(FileNotFoundError) as err:
        resolve_inception_weights(None, allow_download=False)
    msg = str(err.value)
    assert INCEPTION_FILENAME in msg and ENV_VAR in msg and str(tmp_path / "torch_home") in msg
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        resolve_inception_weights(None)
    with pytest.raises(FileNotFoundError, match="inception_weights='/nope.pth'"):
        resolve_inception_weights("/nope.pth")


def test_weights_resolution_order(tmp_path, monkeypatch, weights):
    hub = tmp_path / "torch_home" / "hub" / "checkpoints" / INCEPTION_FILENAME
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_inception_weights(None, allow_download=False) == hub
    monkeypatch.setenv(ENV_VAR, str(weights))
    assert resolve_inception_weights(None) == weights
    assert resolve_inception_weights(hub) == hub  # an explicit path wins over the environment


def test_unloadable_weights_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match="not a loadable torch-fidelity Inception-v3 state dict"):
        InceptionExtractor(bad, "cpu")
