"""The standard FID/IS Inception-v3 (2015-12-05 TF weights) via torch-fidelity's own extractor, and its weights.

Weights are resolved in this order, never substituted by another network:
  1. an explicit path (`EvalConfig.inception_weights`),
  2. the file named by the environment variable SPECFORCE_INCEPTION_WEIGHTS,
  3. torch hub's cache: <torch.hub.get_dir()>/checkpoints/weights-inception-2015-12-05-6726825d.pth,
  4. a download of torch-fidelity's release file into (3), where the machine is online.
If none works, `resolve_inception_weights` raises FileNotFoundError naming the file and where to put it.

    import torch
    from trainers.evaluation.inception import InceptionExtractor, save_random_inception_weights
    path = save_random_inception_weights("/tmp/random_inception.pth")   # offline stand-in for tests/benchmarks
    ex = InceptionExtractor(path, device=torch.device("cpu"))
    feats = ex(torch.rand(4, 1, 32, 32) * 2 - 1)   # {"2048": [4, 2048], "logits_unbiased": [4, 1008]}

Images enter as float in [-1, 1] and are quantised as saved PNGs would be, round((x + 1) * 127.5) clipped to
0..255, then handed as uint8 to torch-fidelity's network, which resizes to 299 with its TF1-compatible bilinear
interpolation. Grayscale images are replicated to RGB, as torch-fidelity's PIL loading does ("RGB" conversion).
CPU check (random weights, FID against torch-fidelity's own): `.venv/bin/python -m pytest tests/test_fid_parity.py -q`.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import urllib.request

import torch

__all__ = [
    "INCEPTION_URL", "INCEPTION_FILENAME", "OFFICIAL_SHA256_PREFIX", "resolve_inception_weights", "file_sha256",
    "to_uint8_rgb", "InceptionExtractor", "save_random_inception_weights",
]

INCEPTION_URL = ("https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                 "weights-inception-2015-12-05-6726825d.pth")
INCEPTION_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
# torch hub's convention: the hex string in the file name is the prefix of the file's sha256
OFFICIAL_SHA256_PREFIX = "6726825d"
ENV_VAR = "SPECFORCE_INCEPTION_WEIGHTS"
EXTRACTOR_NAME = "inception-v3-compat"

_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | pathlib.Path) -> str:
    p = pathlib.Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


def hub_weights_path() -> pathlib.Path:
    return pathlib.Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILENAME


def _download(dst: pathlib.Path, timeout: float) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    h = hashlib.sha256()
    with urllib.request.urlopen(INCEPTION_URL, timeout=timeout) as r, tmp.open("wb") as f:
        for chunk in iter(lambda: r.read(1 << 20), b""):
            h.update(chunk)
            f.write(chunk)
    if not h.hexdigest().startswith(OFFICIAL_SHA256_PREFIX):
        tmp.unlink()
        raise RuntimeError(f"downloaded {INCEPTION_URL} but its sha256 {h.hexdigest()} does not start with "
                           f"{OFFICIAL_SHA256_PREFIX}")
    tmp.replace(dst)


def resolve_inception_weights(path: str | os.PathLike | None = None, *, allow_download: bool = True,
                              timeout: float = 30.0) -> pathlib.Path:
    """Returns an existing weights file following the order in the module docstring, or raises FileNotFoundError."""
    if path is not None:
        p = pathlib.Path(path).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"inception_weights={str(path)!r} does not exist; point it at "
                                    f"{INCEPTION_FILENAME} (from {INCEPTION_URL})")
        return p
    env = os.environ.get(ENV_VAR)
    if env:
        p = pathlib.Path(env).expanduser()
        if not p.is_file():
            raise FileNotFoundError(f"{ENV_VAR}={env!r} does not exist; point it at {INCEPTION_FILENAME} "
                                    f"(from {INCEPTION_URL})")
        return p
    hub = hub_weights_path()
    if hub.is_file():
        return hub
    reason = "downloads are disabled"
    if allow_download:
        try:
            _download(hub, timeout)
            return hub
        except Exception as e:  # noqa: BLE001 - any failure becomes the same actionable message below
            reason = f"the download failed ({type(e).__name__}: {e})"
    raise FileNotFoundError(
        f"Inception-v3 weights for FID/IS not found and {reason}. Download {INCEPTION_URL} on a machine with "
        f"internet access and either put it at {hub} or set {ENV_VAR}=/path/to/{INCEPTION_FILENAME} "
        f"(or eval.inception_weights in the run config).")


def to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float [B, C, H, W] (C = 1 or 3) -> uint8 [B, 3, H, W], as writing and re-reading PNGs would do."""
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor in [-1, 1], got "
                        f"{getattr(images, 'dtype', type(images).__name__)}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must have shape [B, 1 or 3, H, W], got {tuple(images.shape)}")
    u8 = ((images.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return u8.expand(-1, 3, -1, -1).contiguous() if u8.shape[1] == 1 else u8


class InceptionExtractor:
    """torch-fidelity's FeatureExtractorInceptionV3 on float images; returns 2048-d pool features and logits."""

    name = EXTRACTOR_NAME

    def __init__(self, weights: str | os.PathLike | None, device: torch.device | str = "cpu",
                 features: tuple[str, ...] = ("2048", "logits_unbiased"), *, allow_download: bool = True):
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_path = resolve_inception_weights(weights, allow_download=allow_download)
        self.weights_sha256 = file_sha256(self.weights_path)
        self.official = self.weights_sha256.startswith(OFFICIAL_SHA256_PREFIX)
        self.features = tuple(features)
        try:
            net = FeatureExtractorInceptionV3(EXTRACTOR_NAME, list(self.features),
                                              feature_extractor_weights_path=str(self.weights_path))
        except Exception as e:  # noqa: BLE001 - re-raised with the file named
            raise ValueError(f"{self.weights_path} is not a loadable torch-fidelity Inception-v3 state dict: "
                             f"{type(e).__name__}: {e}") from e
        self.device = torch.device(device)
        self.net = net.to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.net(to_uint8_rgb(images).to(self.device))
        return dict(zip(self.features, out))


def save_random_inception_weights(path: str | os.PathLike, seed: int = 0) -> pathlib.Path:
    """Writes a randomly initialised (not trained) Inception-v3 state dict that torch-fidelity can load.

    For tests and benchmarks on machines without the real weights; the network runs the same computation at the
    same cost, only its numbers are meaningless. Convs get He-normal weights and the classifier a wide normal so
    features and logits keep a useful spread through ~100 layers (PyTorch's default init shrinks them). No download.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the fresh random parameters
            return None

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    empty = path.with_name(path.name + ".empty")
    torch.save({}, empty)  # the constructor insists on loading a file; this one is ignored by _Unloaded
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _Unloaded(EXTRACTOR_NAME, ["2048"], feature_extractor_weights_path=str(empty))
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.normal_(m.running_mean, 0.0, 0.1)
                torch.nn.init.uniform_(m.running_var, 0.5, 1.5)
                torch.nn.init.normal_(m.bias, 0.0, 0.1)
        torch.nn.init.normal_(net.fc.weight, 0.0, 0.2)
        torch.nn.init.normal_(net.fc.bias, 0.0, 0.05)
    empty.unlink()
    torch.save(net.state_dict(), path)
    return path
