"""Sample-quality evaluation at training time and for finished runs: FID/IS, fd_pixel, fd_digitcnn, spectra.

    from trainers.evaluation.evaluator import Evaluator
    ev = Evaluator(metrics=("fd_pixel", "spectrum"), dataset=test_set, num_samples=1000, batch_size=250,
                   device=torch.device("cpu"), cache_dir=pathlib.Path("cache"), rank=0, world_size=1, seed=0)
    ev.prepare()                       # reference stats + data-vs-data floors (cached), fails before training
    result = ev.evaluate(generate)     # generate(labels LongTensor[k]) -> float [k, C, H, W] in [-1, 1]
    result.metrics["fd_pixel"], result.metrics["fd_pixel_floor"]

    # already generated samples (e.g. `specforce eval CHECKPOINT`):
    from trainers.evaluation.evaluator import evaluate_images
    result = evaluate_images(samples, dataset=test_set, metrics=("fid",), cache_dir="cache")

CPU check: `.venv/bin/python -m pytest tests/test_evaluation.py -q`.

Metrics (keys without the "eval/" prefix; the train loop adds it):
  fd_pixel    Fréchet distance of raw pixels (exact Gaussian divergence for `grf`)  -> fd_pixel, fd_pixel_floor
  fid         FID with torch-fidelity's Inception-v3 (see trainers/evaluation/inception.py)   -> fid, fid_floor, is, is_std
  is          Inception Score only                                                 -> is, is_std
  classifier  mnist/digits only: fd_digitcnn, fd_digitcnn_floor, cls_accuracy_digitcnn (the classifier's held-out
              accuracy), cls_score_digitcnn (exp E KL(p(y|x) || p(y)), one split), cls_label_acc_digitcnn (share of
              samples classified as the label they were generated for)
  spectrum    spec_err_low|mid|high (trainers/evaluation/radial_spectrum.py); artifact "spectra" with the full curves
  kid         the unbiased kernel distance (trainers/evaluation/kid.py) on raw pixels (kid_pixel, always: no covariance is
              formed, so it also runs where fd_pixel's D x D covariance is too large) and on the features of the other
              extractors requested with it: fid -> kid (Inception), classifier -> kid_digitcnn; each with `_std` (SD
              of half-size subset estimates) and `_floor` (the same measure between the two real sets). Unlike an FD it
              is not biased upward at small n: real-vs-real scores 0 on average, so arms that an FD cannot tell from
              its floor can differ here. Needs the features themselves (kept in memory, gathered on rank 0, cached
              for references).

Reference and floor: trainers/evaluation/references.py (which real images, their cached statistics, the
data-vs-data floor `<metric>_floor`; provenance records `reference_num_samples`, `floor_num_samples` and
`floor_source`). Features, input checks and the settings both passes share (`EvalSettings`):
trainers/evaluation/features.py. Rank helpers: trainers/distributed.py. This module validates the request, owns the
evaluation's state (settings, extractors, cache, references), runs the generation/feature pass and computes the final
numbers.

Distributed (EDM2 style): rank r generates the contiguous share r of the num_samples global samples (labels
`arange(num_samples) % num_classes`, class-balanced; the null class `num_classes` for unconditional data), extracts
features, and float64 sums are all-reduced; rank 0 computes the numbers and broadcasts them, so every rank returns
the same EvalResult. `prepare` runs the reference pass on rank 0 only; the others wait for its status (and receive
the classifier's weights), so a failure on rank 0 is raised on every rank instead of hanging them. No PNGs are
written. Sampling is run under a forked RNG seeded by (seed, rank): it never disturbs the training RNG streams.

Samples are checked (finite float [B, C, H, W] in about [-1, 1], `check_images`) before any feature is taken: a NaN
sample fails the evaluation with a ValueError that the trial records.
"""
from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch

from specforce_contracts import (CLASSIFIER_DATASETS, CLASSIFIER_EXTRACTOR, EVAL_METRIC_OPTIONS, EVAL_PREFIX,
                                 FLOOR_SUFFIX, IS, SPECTRUM_BANDS, STD_SUFFIX, kid_name)
from trainers.distributed import broadcast_from_rank0, process_group, raise_if_any_failed, share
from trainers.evaluation.classifier import DigitCNN, load_or_train_classifier
from trainers.evaluation.features import (CLASSIFIER_SOURCE, INCEPTION_SOURCE, Accumulator, EvalSettings, Extractors,
                                          kid_subset_size)
from trainers.evaluation.kid import kernel_distance
from trainers.evaluation.metrics import StatsCache, frechet_distance
from trainers.evaluation.references import describe_dataset, other_split, prepare_references, stack_items
from trainers.evaluation.radial_spectrum import spectral_errors

__all__ = ["EvalResult", "Evaluator", "evaluate_images", "MAX_PIXEL_DIM"]

IS_KEY = IS.removeprefix(EVAL_PREFIX)
MAX_PIXEL_DIM = 8192  # fd_pixel needs a D x D covariance and two D x D eigendecompositions


@dataclasses.dataclass
class EvalResult:
    metrics: dict[str, float]
    provenance: dict[str, dict[str, Any]]
    artifacts: dict[str, Any]
    timings: dict[str, float]  # seconds spent in: sampling, features, metrics (this rank's sampling/features)


class Evaluator:
    """Computes the requested metrics of generated samples against cached reference statistics."""

    def __init__(self, metrics: Iterable[str], dataset, num_samples: int, batch_size: int,
                 device: torch.device | str = "cpu", cache_dir: str | os.PathLike = "cache",
                 inception_weights: str | os.PathLike | None = None, rank: int = 0, world_size: int = 1,
                 seed: int = 0, *, floor_dataset=None, classifier_min_accuracy: float = 0.97,
                 classifier_epochs: int = 10, max_abs: float = 5.0, allow_download: bool = True):
        metrics = tuple(metrics) if not isinstance(metrics, str) else (metrics,)
        unknown = [m for m in metrics if m not in EVAL_METRIC_OPTIONS]  # each option's keys: evaluator_keys
        if unknown or not metrics:
            raise ValueError(f"metrics must be a non-empty subset of {EVAL_METRIC_OPTIONS}, got {metrics!r}")
        for name, v, lo in (("num_samples", num_samples, 2), ("batch_size", batch_size, 1),
                            ("world_size", world_size, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
        if ("is" in metrics or "fid" in metrics) and num_samples < 10:
            raise ValueError(f"the Inception Score (also reported with fid) uses 10 splits: num_samples must be "
                             f">= 10, got {num_samples}")
        if world_size > 1:
            dist = process_group()
            if dist is None or dist.get_world_size() != world_size or dist.get_rank() != rank:
                raise ValueError(f"world_size={world_size}, rank={rank} needs an initialised torch.distributed "
                                 "process group of that size and rank")
        channels, num_classes = int(getattr(dataset, "channels")), int(getattr(dataset, "num_classes"))
        first = dataset[0][0]
        size = int(first.shape[-1])
        if tuple(first.shape) != (channels, size, size):
            raise ValueError(f"dataset images must be square [C, H, W] with C = dataset.channels = {channels}, "
                             f"got {tuple(first.shape)}")
        name = describe_dataset(dataset).get("name")
        if "classifier" in metrics and name not in CLASSIFIER_DATASETS:
            raise ValueError(f"metric 'classifier' needs a digit dataset {CLASSIFIER_DATASETS}, got dataset {name!r}")
        if ("fid" in metrics or "is" in metrics) and channels not in (1, 3):
            raise ValueError(f"fid/is need 1- or 3-channel images, the dataset has {channels} channels")
        if "fd_pixel" in metrics and channels * size ** 2 > MAX_PIXEL_DIM:
            raise ValueError(f"fd_pixel at {channels}x{size}x{size} needs a {channels * size ** 2}-d covariance "
                             f"(limit {MAX_PIXEL_DIM}); use fid or a smaller image_size")
        self.settings = EvalSettings(metrics=metrics, num_samples=num_samples, batch_size=batch_size,
                                     channels=channels, image_size=size, num_classes=num_classes,
                                     device=torch.device(device), max_abs=max_abs, world_size=world_size)
        self.dataset, self.floor_dataset = dataset, floor_dataset
        self.cache_dir = pathlib.Path(cache_dir)
        self.cache = StatsCache(self.cache_dir)
        self.inception_weights, self.allow_download = inception_weights, allow_download
        self.rank, self.seed = rank, seed
        self.classifier_min_accuracy, self.classifier_epochs = classifier_min_accuracy, classifier_epochs
        self.extractors: Extractors | None = None  # built by prepare()
        self.references: dict[str, dict[str, Any]] = {}  # rank 0: metric -> mu, sigma, floor, provenance bits
        self.cache_events: dict[str, str] = {}  # metric -> "hit" | "miss" (reference stats on disk)

    # ------------------------------------------------------------------------------------------------ prepare
    def prepare(self) -> None:
        """Builds extractors on every rank; rank 0 computes or loads reference stats and floors (see module doc)."""
        s = self.settings
        # Every rank resolves the Inception weights itself: a missing file fails on all ranks at once.
        self.extractors = Extractors(s, self.inception_weights, allow_download=self.allow_download)
        status, cls_state = None, None
        if self.rank == 0:
            try:
                if "classifier" in s.metrics:
                    self._prepare_classifier()
                    cls_state = (self.extractors.classifier.state_dict(), self.extractors.classifier_info)
                references, cache_events = prepare_references(s, self.extractors, self.cache, self.dataset,
                                                              self.floor_dataset)
                self.references.update(references)
                self.cache_events.update(cache_events)
            except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks were told
                status = e
        msg, cls_state = broadcast_from_rank0((None if status is None else f"{type(status).__name__}: {status}",
                                               cls_state), self.rank, s.world_size)
        if status is not None:
            raise status
        if msg is not None:
            raise RuntimeError(f"evaluation setup failed on rank 0: {msg}")
        if self.rank != 0 and cls_state is not None:
            model = DigitCNN(s.num_classes, s.channels)
            model.load_state_dict(cls_state[0])
            self.extractors.classifier = model.eval().to(s.device)
            self.extractors.classifier_info = cls_state[1]

    def _prepare_classifier(self) -> None:
        """Rank 0: the digit classifier trained on the dataset's train split (cached), checked on its test split."""
        d = describe_dataset(self.dataset)
        other = other_split(self.dataset)
        if other is None:
            raise ValueError("metric 'classifier' needs a dataset with describe() giving its split, to train on the "
                             "train split and test on the test split")
        train, test = (self.dataset, other) if d["split"] == "train" else (other, self.dataset)
        xt, yt = stack_items(train, range(len(train)))
        xe, ye = stack_items(test, range(len(test)))
        model, info = load_or_train_classifier(xt, yt, xe, ye, self.cache_dir, dataset_name=d["name"],
                                               num_classes=self.settings.num_classes,
                                               min_accuracy=self.classifier_min_accuracy,
                                               epochs=self.classifier_epochs)
        self.extractors.classifier = model.to(self.settings.device)
        self.extractors.classifier_info = info

    # ----------------------------------------------------------------------------------------------- evaluate
    def evaluate(self, generate: Callable[[torch.Tensor], torch.Tensor]) -> EvalResult:
        """Generates this rank's share of num_samples class-balanced samples and evaluates them (module doc)."""
        s = self.settings
        n, k = s.num_samples, s.num_classes
        labels = torch.arange(n) % k if k > 0 else torch.full((n,), k, dtype=torch.long)
        start, end = share(n, self.rank, s.world_size)

        def batches():
            devices = [s.device.index or 0] if s.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed * 1_000_003 + self.rank)
                for i in range(start, end, s.batch_size):
                    lab = labels[i:min(i + s.batch_size, end)]
                    yield (lambda lab=lab: generate(lab)), lab, i

        return self._run(batches(), n, "generated images")

    def evaluate_batches(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor | None]], total: int,
                         start: int = 0) -> EvalResult:
        """Evaluates already-generated images: this rank's (images, labels or None) batches, whose first image is
        global sample `start` of `total` (all ranks together must cover 0..total-1 once)."""
        def wrap():
            i = start
            for images, lab in batches:
                yield (lambda images=images: images), lab, i
                i += len(images)

        return self._run(wrap(), total, "images")

    def _run(self, batches, total: int, what: str) -> EvalResult:
        if self.extractors is None:
            raise RuntimeError("call Evaluator.prepare() before evaluate()")
        s = self.settings
        timings = {"sampling": 0.0, "features": 0.0, "metrics": 0.0}
        acc = Accumulator(s, self.extractors, total, with_is=True)
        error: Exception | None = None
        try:
            for make, lab, i in batches:
                t0 = time.perf_counter()
                images = make()
                t1 = time.perf_counter()
                s.check(images, f"{what} (samples {i}..{i + len(images) - 1})")
                if lab is not None and len(lab) != len(images):
                    raise ValueError(f"generate returned {len(images)} images for {len(lab)} labels")
                acc.update(images.to(s.device), lab, i)
                timings["sampling"] += t1 - t0
                timings["features"] += time.perf_counter() - t1
        except Exception as e:  # noqa: BLE001 - every rank must learn of a failure before the collective reduce
            error = e
        raise_if_any_failed(error, s.world_size)
        t0 = time.perf_counter()
        acc.all_reduce()
        out, failure = None, None
        if self.rank == 0:
            try:
                out = self._finish(acc)
            except Exception as e:  # noqa: BLE001 - the other ranks wait in the broadcast: tell them, then raise
                failure = e
        out = broadcast_from_rank0(out if failure is None else f"{type(failure).__name__}: {failure}", self.rank,
                                   s.world_size)
        if failure is not None:
            raise failure
        if isinstance(out, str):
            raise RuntimeError(f"evaluation failed on rank 0: {out}")
        metrics, provenance, artifacts = out
        timings["metrics"] = time.perf_counter() - t0
        return EvalResult(metrics, provenance, artifacts, timings)

    def _finish(self, acc: Accumulator) -> tuple[dict, dict, dict]:
        """Rank 0, after the all-reduce: (metrics, provenance, artifacts) from the sums and the references."""
        metrics: dict[str, float] = {}
        prov: dict[str, dict] = {}
        for metric, st in acc.fd.items():
            ref = self.references[metric]
            if st.count != acc.total:
                raise ValueError(f"{metric}: expected {acc.total} samples across ranks, got {st.count}")
            metrics[metric] = frechet_distance(st.mean(), st.covariance(), ref["mu"], ref["sigma"])
            if ref["floor"] is not None:
                metrics[metric + FLOOR_SUFFIX] = ref["floor"]
            prov[metric] = {**ref["provenance"], "num_samples": st.count}
        for metric in acc.bank or {}:
            ref, name, feats = self.references[metric], kid_name(metric), acc.features(metric)
            if len(feats) != acc.total:
                raise ValueError(f"{name}: expected {acc.total} samples across ranks, got {len(feats)}")
            kid = kernel_distance(feats, ref["features"], subset_size=kid_subset_size(len(feats), len(ref["features"])))
            metrics[name], metrics[name + STD_SUFFIX] = kid.mean, kid.std
            if ref["kid_floor"] is not None:
                metrics[name + FLOOR_SUFFIX] = ref["kid_floor"].mean
            prov[name] = {**ref["provenance"], "num_samples": len(feats), "estimator": "unbiased MMD^2, cubic "
                          "polynomial kernel", "subsets": kid.subsets, "subset_size": kid.subset_size}
        if acc.isc is not None:
            metrics[IS_KEY], metrics[IS_KEY + STD_SUFFIX] = acc.isc.score()
            ex = self.extractors.inception
            prov[IS_KEY] = {"extractor": f"{ex.name}/logits_unbiased", "weights_sha256": ex.weights_sha256,
                          "num_samples": acc.total, "reference_sha256": None, "splits": 10}
        if INCEPTION_SOURCE in prov:
            prov[INCEPTION_SOURCE]["official_weights"] = self.extractors.inception.official
        if self.extractors.classifier is not None:
            info = self.extractors.classifier_info
            metrics[f"cls_accuracy_{CLASSIFIER_EXTRACTOR}"] = info["accuracy"]
            metrics[f"cls_score_{CLASSIFIER_EXTRACTOR}"] = acc.cls.score()[0]
            hits, labelled = acc.label_hits.tolist()
            if labelled > 0:
                metrics[f"cls_label_acc_{CLASSIFIER_EXTRACTOR}"] = hits / labelled
            prov[CLASSIFIER_SOURCE]["classifier_accuracy"] = info["accuracy"]
        artifacts: dict[str, Any] = {}
        if acc.spectrum is not None:
            ref = self.references["spectrum"]
            samples = acc.spectrum.spectrum()
            metrics.update(spectral_errors(samples, ref["data"]))
            prov["spectrum"] = {**ref["provenance"], "num_samples": acc.spectrum.count}
            artifacts["spectra"] = {"r": acc.spectrum.radii().tolist(), "data": ref["data"].tolist(),
                                    "samples": samples.tolist(),
                                    "bands": {band: list(edges) for band, edges in SPECTRUM_BANDS.items()},
                                    "definition": "FFT power |F|^2/(H*W), channel mean, round(|k|) shells, "
                                                  "r = k / (H/2)"}
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"non-finite metric values: {bad}")
        return metrics, prov, artifacts


def evaluate_images(images, dataset, metrics: Iterable[str], *, labels: torch.Tensor | None = None,
                    num_samples: int | None = None, batch_size: int = 250, device: torch.device | str = "cpu",
                    cache_dir: str | os.PathLike = "cache", inception_weights: str | os.PathLike | None = None,
                    **evaluator_kwargs) -> EvalResult:
    """Evaluates already-generated images (one process) against `dataset`'s reference stats.

    `images`: a float tensor [N, C, H, W] in [-1, 1] (with optional `labels` [N] for cls_label_acc), or an iterable
    of such tensors or of (images, labels) pairs; an iterable needs `num_samples` (the IS shuffles over all N).
    """
    if isinstance(images, torch.Tensor):
        if num_samples not in (None, len(images)):
            raise ValueError(f"num_samples={num_samples} but {len(images)} images were given")
        num_samples = len(images)
        if labels is not None and len(labels) != len(images):
            raise ValueError(f"labels has {len(labels)} entries for {len(images)} images")
        batches = [(images[i:i + batch_size], None if labels is None else labels[i:i + batch_size])
                   for i in range(0, len(images), batch_size)]
    else:
        if num_samples is None:
            raise ValueError("num_samples is required when images is an iterable (the IS needs the total upfront)")
        batches = (b if isinstance(b, tuple) else (b, None) for b in images)
    ev = Evaluator(metrics, dataset, num_samples, batch_size, device, cache_dir, inception_weights, **evaluator_kwargs)
    ev.prepare()
    result = ev.evaluate_batches(batches, num_samples)
    return result

