"""What an evaluation measures on one image set: its settings, input checks, the feature extractors, the additive
statistics.

    import torch
    from trainers.evaluation.features import Accumulator, EvalSettings, Extractors
    s = EvalSettings(metrics=("fd_pixel", "spectrum"), num_samples=8, batch_size=4, channels=1, image_size=8,
                     num_classes=10, device=torch.device("cpu"), max_abs=5.0)
    acc = Accumulator(s, Extractors(s), total=8, with_is=False)
    acc.update(torch.rand(8, 1, 8, 8) * 2 - 1, None, 0)
    acc.all_reduce(); acc.fd["fd_pixel"].count, acc.spectrum.spectrum()   # (8, 5 shell powers)

`EvalSettings` holds the checked arguments of an evaluation that the feature pass and the reference pass
(trainers/evaluation/references.py) both need; the Evaluator (trainers/evaluation/evaluator.py) builds it and owns
everything else. `Extractors` builds the networks the requested metrics need (Inception for fid/is; the digit
classifier's weights are set by the Evaluator), `Accumulator` keeps every metric's float64 sums for one image set
(generated samples, or a real reference/floor set) and, for KID, the features themselves. Feature sources are named
by their FD key: fd_pixel, fid (Inception pool3) and fd_digitcnn.
CPU check: `.venv/bin/python -m pytest tests/test_evaluation.py tests/test_evaluation_kid.py -q`.

Inputs are checked: float dtype, [B, C, H, W] matching the dataset, finite values (a NaN sample fails the evaluation
with a ValueError that the trial records) and |x| <= max_abs (default 5: `grf` data is unclipped Gaussian with pixel
std 0.5 and legitimately reaches about +-2.5, while [0, 255] images are caught). Inception sees uint8 images,
i.e. values clipped to [-1, 1], as the field's PNG-based pipelines do; fd_pixel and spectra see the raw values.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from specforce_contracts import CLASSIFIER_EXTRACTOR, EVAL_PREFIX, FD_PIXEL, FD_PREFIX, FID, PIXEL_EXTRACTOR
from trainers.distributed import all_reduce_sum_, gather_objects
# the module, not the class: tests replace inception.InceptionExtractor with a stand-in that needs no weights
from trainers.evaluation import inception as inception_module
from trainers.evaluation.classifier import FEATURE_DIM as CLASSIFIER_DIM
from trainers.evaluation.kid import SUBSET_SIZE as KID_SUBSET_SIZE
from trainers.evaluation.metrics import FeatureStats, InceptionScoreStats
from trainers.evaluation.radial_spectrum import SpectrumStats

# Feature sources, named by their FD key without "eval/" (the KID keys follow from them: specforce_contracts.kid_name)
PIXEL_SOURCE = FD_PIXEL.removeprefix(EVAL_PREFIX)  # fd_pixel: raw pixels
INCEPTION_SOURCE = FID.removeprefix(EVAL_PREFIX)  # fid: Inception-v3 pool3
CLASSIFIER_SOURCE = FD_PREFIX.removeprefix(EVAL_PREFIX) + CLASSIFIER_EXTRACTOR  # fd_digitcnn: the digit CNN
INCEPTION_DIM = 2048


def check_images(images: Any, *, channels: int, image_size: int, max_abs: float, what: str) -> torch.Tensor:
    """Raises TypeError/ValueError naming `what` unless images are finite float [B, C, H, W] with |x| <= max_abs."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"{what} must be floating point in [-1, 1], got dtype {images.dtype} "
                        "(convert uint8 images with x / 127.5 - 1)")
    expected = (channels, image_size, image_size)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"{what} must have shape [B, {channels}, {image_size}, {image_size}] to match the "
                         f"dataset, got {tuple(images.shape)}")
    bad = int((~torch.isfinite(images)).sum())
    if bad:
        raise ValueError(f"{what} contain {bad} non-finite values (NaN/inf) out of {images.numel()}")
    peak = float(images.abs().max()) if images.numel() else 0.0
    if peak > max_abs:
        raise ValueError(f"{what} reach |x| = {peak:.4g} > max_abs={max_abs}: images must be in [-1, 1] "
                         "(is this a [0, 255] image?)")
    return images


def kid_subset_size(n1: int, n2: int) -> int:
    """torch-fidelity's 1,000, or half the smaller set when that is smaller: subsets of the whole set would all be
    the same rows, and their SD (`kid_*_std`) would be 0 instead of the spread of half-size estimates."""
    return max(2, min(KID_SUBSET_SIZE, min(n1, n2) // 2))


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """The checked settings of one evaluation that its feature pass and its reference pass share."""

    metrics: tuple[str, ...]  # eval.metrics options (specforce_contracts.EVAL_METRIC_OPTIONS)
    num_samples: int  # images in each compared set: the samples, the reference R and the floor set B
    batch_size: int
    channels: int
    image_size: int
    num_classes: int  # 0 for unconditional data (samples then carry the null class 0)
    device: torch.device
    max_abs: float  # bound of check_images
    world_size: int = 1

    def check(self, images: Any, what: str) -> torch.Tensor:
        """`check_images` against this evaluation's image shape and bound."""
        return check_images(images, channels=self.channels, image_size=self.image_size, max_abs=self.max_abs,
                            what=what)

    def wants_fd(self, source: str) -> bool:
        """Whether the Fréchet distance of this feature source is computed (KID alone needs no pixel covariance)."""
        return source != PIXEL_SOURCE or "fd_pixel" in self.metrics

    def feature_dim(self, source: str) -> int:
        """Width of one feature row of a source: pixels, Inception pool3 or the digit classifier's penultimate layer."""
        if source == PIXEL_SOURCE:
            return self.channels * self.image_size ** 2
        return INCEPTION_DIM if source == INCEPTION_SOURCE else CLASSIFIER_DIM


class Extractors:
    """The feature extractors the requested metrics need, built once per evaluation."""

    def __init__(self, settings: EvalSettings, inception_weights=None, *, allow_download: bool = True):
        metrics = settings.metrics
        self.pixel = "fd_pixel" in metrics or "kid" in metrics  # KID always includes pixel features
        self.inception = None
        self.classifier = None  # the Evaluator sets it (rank 0 trains or loads it, the others receive its weights)
        self.classifier_info: dict[str, Any] = {}
        if "fid" in metrics or "is" in metrics:
            feats = (("2048",) if "fid" in metrics else ()) + ("logits_unbiased",)
            self.inception = inception_module.InceptionExtractor(inception_weights, settings.device, feats,
                                                                 allow_download=allow_download)

    @property
    def pool(self) -> bool:
        """Whether the Inception pool3 features (the fid source) are extracted, not only the IS logits."""
        return self.inception is not None and "2048" in self.inception.features

    def sources(self) -> dict[str, tuple[str, str | None]]:
        """Feature source, named by its FD key -> (extractor name, weights sha256), for provenance and cache keys.
        Includes fd_pixel when only KID asked for pixel features: see `EvalSettings.wants_fd` for the FDs to compute."""
        out: dict[str, tuple[str, str | None]] = {}
        if self.pixel:
            out[PIXEL_SOURCE] = (PIXEL_EXTRACTOR, None)
        if self.pool:
            out[INCEPTION_SOURCE] = (f"{self.inception.name}/2048", self.inception.weights_sha256)
        if self.classifier is not None:
            out[CLASSIFIER_SOURCE] = (CLASSIFIER_EXTRACTOR, self.classifier_info["weights_sha256"])
        return out


class Accumulator:
    """Additive statistics of one image set for every requested metric."""

    def __init__(self, settings: EvalSettings, extractors: Extractors, total: int, with_is: bool):
        self.settings, self.extractors, self.total = settings, extractors, total
        self.fd: dict[str, FeatureStats] = {}
        if "fd_pixel" in settings.metrics:
            self.fd[PIXEL_SOURCE] = FeatureStats(settings.feature_dim(PIXEL_SOURCE))
        if extractors.pool:
            self.fd[INCEPTION_SOURCE] = FeatureStats(INCEPTION_DIM)
        if extractors.classifier is not None:
            self.fd[CLASSIFIER_SOURCE] = FeatureStats(CLASSIFIER_DIM)
            self.cls = InceptionScoreStats(total, settings.num_classes, splits=1, shuffle=False)
            self.label_hits = torch.zeros(2, dtype=torch.float64)  # (hits, labelled samples)
        self.isc = InceptionScoreStats(total, 1008) if with_is and extractors.inception is not None else None
        self.spectrum = SpectrumStats(settings.image_size) if "spectrum" in settings.metrics else None
        # KID needs the features themselves: (global index, float32 rows) per feature source, gathered on rank 0
        self.bank: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] | None = (
            {m: [] for m in extractors.sources()} if "kid" in settings.metrics else None)

    def _keep(self, source: str, features: torch.Tensor, indices: torch.Tensor) -> None:
        if self.bank is not None and source in self.bank:
            self.bank[source].append((indices.clone(), features.detach().to("cpu", torch.float32)))

    def features(self, source: str) -> np.ndarray:
        """All kept features of one source in global sample order (after all_reduce: every rank's rows)."""
        assert self.bank is not None
        rows = self.bank[source]
        idx = torch.cat([i for i, _ in rows])
        return torch.cat([f for _, f in rows])[torch.argsort(idx)].numpy()

    @torch.no_grad()
    def update(self, images: torch.Tensor, labels: torch.Tensor | None, start: int) -> None:
        """Adds images (global samples start..start+B-1; labels None for real sets) to every statistic."""
        ex, n = self.extractors, images.shape[0]
        indices = torch.arange(start, start + n)
        if PIXEL_SOURCE in self.fd:
            self.fd[PIXEL_SOURCE].update(images.flatten(1))
        self._keep(PIXEL_SOURCE, images.flatten(1), indices)
        if ex.inception is not None:
            out = ex.inception(images)
            if INCEPTION_SOURCE in self.fd:
                self.fd[INCEPTION_SOURCE].update(out["2048"])
                self._keep(INCEPTION_SOURCE, out["2048"], indices)
            if self.isc is not None:
                self.isc.update(out["logits_unbiased"], indices)
        if ex.classifier is not None:
            x = images.to(self.settings.device, torch.float32)
            feats = ex.classifier.features(x)
            logits = ex.classifier.fc2(feats)
            self.fd[CLASSIFIER_SOURCE].update(feats)
            self._keep(CLASSIFIER_SOURCE, feats, indices)
            self.cls.update(logits, indices)
            if labels is not None:
                labelled = labels < self.settings.num_classes  # the null class has no label to agree with
                hits = (logits.argmax(1).cpu() == labels.cpu()) & labelled.cpu()
                self.label_hits += torch.tensor([float(hits.sum()), float(labelled.sum())], dtype=torch.float64)
        if self.spectrum is not None:
            self.spectrum.update(images)

    def all_reduce(self) -> None:
        """Sums every statistic over the ranks and gathers the KID features (every rank then holds all of them)."""
        for st in self.fd.values():
            st.all_reduce()
        if self.isc is not None:
            self.isc.all_reduce()
        if self.extractors.classifier is not None:
            self.cls.all_reduce()
            all_reduce_sum_([self.label_hits])
        if self.spectrum is not None:
            self.spectrum.all_reduce()
        if self.bank is not None and self.settings.world_size > 1:
            gathered = gather_objects(self.bank, self.settings.world_size)
            self.bank = {m: [row for bank in gathered for row in bank[m]] for m in self.bank}
