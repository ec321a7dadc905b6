"""What an evaluation measures on one image set: input checks, the feature extractors, the additive statistics.

    from trainers.evaluation.features import check_images, kid_name
    check_images(torch.zeros(4, 3, 32, 32), channels=3, image_size=32, max_abs=5.0, what="samples")
    kid_name("fid"), kid_name("fd_pixel")   # ("kid", "kid_pixel")

`Extractors` builds the networks the requested metrics need (Inception for fid/is, the digit classifier's weights
are set by the Evaluator), `Accumulator` keeps every metric's float64 sums for one image set (generated samples, or a
real reference/floor set) and, for KID, the features themselves. Feature sources are named by their FD metric:
fd_pixel, fid (Inception pool3) and fd_digitcnn. Both take the Evaluator as their context (trainers/evaluation/evaluator.py).
CPU check: `.venv/bin/python -m pytest tests/test_evaluation.py tests/test_evaluation_kid.py -q`.

Inputs are checked: float dtype, [B, C, H, W] matching the dataset, finite values (a NaN sample fails the evaluation
with a ValueError that the trial records) and |x| <= max_abs (default 5: `grf` data is unclipped Gaussian with pixel
std 0.5 and legitimately reaches about +-2.5, while [0, 255] images are caught). Inception sees uint8 images,
i.e. values clipped to [-1, 1], as the field's PNG-based pipelines do; fd_pixel and spectra see the raw values.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from specforce_contracts import kid_name  # noqa: F401 (the registry's rule; imported from here by the evaluator)
from trainers.distributed import gather_objects
from trainers.evaluation.kid import SUBSET_SIZE as KID_SUBSET_SIZE
from trainers.evaluation.metrics import FeatureStats, InceptionScoreStats
from trainers.evaluation.radial_spectrum import SpectrumStats

if TYPE_CHECKING:
    from trainers.evaluation.evaluator import Evaluator


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


def fd_wanted(metrics: tuple[str, ...], source: str) -> bool:
    """Whether the Fréchet distance of this feature source is computed (KID alone needs no covariance)."""
    return source != "fd_pixel" or "fd_pixel" in metrics


def feature_dim(source: str, channels: int, image_size: int) -> int:
    """Width of one feature row of a source: pixels, Inception pool3 or the digit classifier's penultimate layer."""
    if source == "fd_pixel":
        return channels * image_size ** 2
    if source == "fid":
        return 2048
    from trainers.evaluation.classifier import FEATURE_DIM

    return FEATURE_DIM


class Extractors:
    """The feature extractors the requested metrics need, built once per Evaluator."""

    def __init__(self, ev: "Evaluator"):
        self.pixel = "fd_pixel" in ev.metrics or "kid" in ev.metrics  # KID always includes pixel features
        self.inception = None
        self.classifier = None  # the Evaluator sets it (rank 0 trains or loads it, the others receive its weights)
        self.classifier_info: dict[str, Any] = {}
        if "fid" in ev.metrics or "is" in ev.metrics:
            from trainers.evaluation.inception import InceptionExtractor

            feats = (("2048",) if "fid" in ev.metrics else ()) + ("logits_unbiased",)
            self.inception = InceptionExtractor(ev.inception_weights, ev.device, feats,
                                                allow_download=ev.allow_download)

    def sources(self) -> dict[str, tuple[str, str | None]]:
        """Feature source, named by its FD metric -> (extractor name, weights sha256), for provenance and cache keys.
        Includes fd_pixel when only KID asked for pixel features: see `fd_wanted` for the FDs to compute."""
        out: dict[str, tuple[str, str | None]] = {}
        if self.pixel:
            out["fd_pixel"] = ("pixel", None)
        if self.inception is not None and "2048" in self.inception.features:
            out["fid"] = (f"{self.inception.name}/2048", self.inception.weights_sha256)
        if self.classifier is not None:
            from trainers.evaluation.classifier import CLASSIFIER_NAME

            out[f"fd_{CLASSIFIER_NAME}"] = (CLASSIFIER_NAME, self.classifier_info["weights_sha256"])
        return out


class Accumulator:
    """Additive statistics of one image set for every requested metric."""

    def __init__(self, ev: "Evaluator", total: int, with_is: bool):
        ex = ev.extractors
        self.ev, self.total = ev, total
        self.fd: dict[str, FeatureStats] = {}
        if "fd_pixel" in ev.metrics:
            self.fd["fd_pixel"] = FeatureStats(ev.channels * ev.image_size ** 2)
        if ex.inception is not None and "2048" in ex.inception.features:
            self.fd["fid"] = FeatureStats(2048)
        if ex.classifier is not None:
            from trainers.evaluation.classifier import CLASSIFIER_NAME, FEATURE_DIM

            self.fd[f"fd_{CLASSIFIER_NAME}"] = FeatureStats(FEATURE_DIM)
            self.cls = InceptionScoreStats(total, ev.num_classes, splits=1, shuffle=False)
            self.label_hits = torch.zeros(2, dtype=torch.float64)  # (hits, labelled samples)
        self.isc = InceptionScoreStats(total, 1008) if with_is and ex.inception is not None else None
        self.spectrum = SpectrumStats(ev.image_size) if "spectrum" in ev.metrics else None
        # KID needs the features themselves: (global index, float32 rows) per FD metric, gathered on rank 0
        self.bank: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] | None = (
            {m: [] for m in ex.sources()} if "kid" in ev.metrics else None)

    def _keep(self, metric: str, features: torch.Tensor, indices: torch.Tensor) -> None:
        if self.bank is not None and metric in self.bank:
            self.bank[metric].append((indices.clone(), features.detach().to("cpu", torch.float32)))

    def features(self, metric: str) -> np.ndarray:
        """All kept features of one FD metric in global sample order (after all_reduce: every rank's rows)."""
        assert self.bank is not None
        rows = self.bank[metric]
        idx = torch.cat([i for i, _ in rows])
        return torch.cat([f for _, f in rows])[torch.argsort(idx)].numpy()

    @torch.no_grad()
    def update(self, images: torch.Tensor, labels: torch.Tensor | None, start: int) -> None:
        ex, n = self.ev.extractors, images.shape[0]
        indices = torch.arange(start, start + n)
        if "fd_pixel" in self.fd:
            self.fd["fd_pixel"].update(images.flatten(1))
        self._keep("fd_pixel", images.flatten(1), indices)
        if ex.inception is not None:
            out = ex.inception(images)
            if "fid" in self.fd:
                self.fd["fid"].update(out["2048"])
                self._keep("fid", out["2048"], indices)
            if self.isc is not None:
                self.isc.update(out["logits_unbiased"], indices)
        if ex.classifier is not None:
            from trainers.evaluation.classifier import CLASSIFIER_NAME

            x = images.to(self.ev.device, torch.float32)
            feats = ex.classifier.features(x)
            logits = ex.classifier.fc2(feats)
            self.fd[f"fd_{CLASSIFIER_NAME}"].update(feats)
            self._keep(f"fd_{CLASSIFIER_NAME}", feats, indices)
            self.cls.update(logits, indices)
            if labels is not None:
                labelled = labels < self.ev.num_classes  # the null class has no label to agree with
                hits = (logits.argmax(1).cpu() == labels.cpu()) & labelled.cpu()
                self.label_hits += torch.tensor([float(hits.sum()), float(labelled.sum())], dtype=torch.float64)
        if self.spectrum is not None:
            self.spectrum.update(images)

    def all_reduce(self) -> None:
        for st in self.fd.values():
            st.all_reduce()
        if self.isc is not None:
            self.isc.all_reduce()
        if self.ev.extractors.classifier is not None:
            self.cls.all_reduce()
            from trainers.evaluation.metrics import _all_reduce_

            _all_reduce_([self.label_hits])
        if self.spectrum is not None:
            self.spectrum.all_reduce()
        if self.bank is not None and self.ev.world_size > 1:
            gathered = gather_objects(self.bank, self.ev.world_size)
            self.bank = {m: [row for bank in gathered for row in bank[m]] for m in self.bank}
