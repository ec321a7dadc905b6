"""Sample-quality evaluation at training time and for finished runs: FID/IS, fd_pixel, fd_digitcnn, spectra.

    from trainers.evaluation import Evaluator
    ev = Evaluator(metrics=("fd_pixel", "spectrum"), dataset=test_set, num_samples=1000, batch_size=250,
                   device=torch.device("cpu"), cache_dir=pathlib.Path("cache"), rank=0, world_size=1, seed=0)
    ev.prepare()                       # reference stats + data-vs-data floors (cached), fails before training
    result = ev.evaluate(generate)     # generate(labels LongTensor[k]) -> float [k, C, H, W] in [-1, 1]
    result.metrics["fd_pixel"], result.metrics["fd_pixel_floor"]

    # already generated samples (e.g. `specforce eval CHECKPOINT`):
    from trainers.evaluation import evaluate_images
    result = evaluate_images(samples, dataset=test_set, metrics=("fid",), cache_dir="cache")

CPU check: `.venv/bin/python -m pytest tests/test_evaluation.py -q`.

Metrics (keys without the "eval/" prefix; the train loop adds it):
  fd_pixel    Fréchet distance of raw pixels (exact Gaussian divergence for `grf`)  -> fd_pixel, fd_pixel_floor
  fid         FID with torch-fidelity's Inception-v3 (see trainers/inception.py)   -> fid, fid_floor, is, is_std
  is          Inception Score only                                                 -> is, is_std
  classifier  mnist/digits only: fd_digitcnn, fd_digitcnn_floor, cls_accuracy_digitcnn (the classifier's held-out
              accuracy), cls_score_digitcnn (exp E KL(p(y|x) || p(y)), one split), cls_label_acc_digitcnn (share of
              samples classified as the label they were generated for)
  spectrum    spec_err_low|mid|high (trainers/spectra.py); artifact "spectra" with the full curves
  kid         the unbiased kernel distance (trainers/kid.py) on raw pixels (kid_pixel, always: no covariance is
              formed, so it also runs where fd_pixel's D x D covariance is too large) and on the features of the other
              extractors requested with it: fid -> kid (Inception), classifier -> kid_digitcnn; each with `_std` (SD
              of half-size subset estimates) and `_floor` (the same measure between the two real sets). Unlike an FD it
              is not biased upward at small n: real-vs-real scores 0 on average, so arms that an FD cannot tell from
              its floor can differ here. Needs the features themselves (kept in memory, gathered on rank 0, cached
              for references).

Reference and floor (DESIGN.md §4). The reference set R is min(num_samples, len(dataset)) images of `dataset`, drawn
with a fixed permutation (REFERENCE_SEED, independent of the run seed, so every run of a sweep shares it). The floor
`<metric>_floor` is FD(B, R) for a second real set B of num_samples images disjoint from R, so it carries the same
finite-sample bias as FD(samples, R). B comes from the rest of `dataset` when it has num_samples more images;
otherwise from the other split of the same dataset (train vs test: disjoint images of the same distribution; for
`grf`, an independent generator stream). If neither is large enough, B is the largest of the two, a warning is
issued and provenance says `floor_num_samples` < num_samples (that floor is then biased upward); with no second set
at all (a bare tensor dataset) `<metric>_floor` is omitted, with a warning. Provenance always records
`reference_num_samples`, `floor_num_samples` and `floor_source`.

Distributed (EDM2 style): rank r generates the contiguous share r of the num_samples global samples (labels
`arange(num_samples) % num_classes`, class-balanced; the null class `num_classes` for unconditional data), extracts
features, and float64 sums are all-reduced; rank 0 computes the numbers and broadcasts them, so every rank returns
the same EvalResult. `prepare` runs the reference pass on rank 0 only; the others wait for its status (and receive
the classifier's weights), so a failure on rank 0 is raised on every rank instead of hanging them. No PNGs are
written. Sampling is run under a forked RNG seeded by (seed, rank): it never disturbs the training RNG streams.

Inputs are checked: float dtype, [B, C, H, W] matching the dataset, finite values (a NaN sample fails the evaluation
with a ValueError that the trial records) and |x| <= max_abs (default 5: `grf` data is unclipped Gaussian with pixel
std 0.5 and legitimately reaches about +-2.5, while [0, 255] images are caught). Inception sees uint8 images,
i.e. values clipped to [-1, 1], as the field's PNG-based pipelines do; fd_pixel and spectra see the raw values.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from trainers.kid import SUBSET_SIZE as KID_SUBSET_SIZE
from trainers.kid import kernel_distance
from trainers.metrics import FeatureStats, InceptionScoreStats, StatsCache, frechet_distance, stats_sha256
from trainers.spectra import SpectrumStats, spectral_errors

__all__ = ["KNOWN_METRICS", "EvalResult", "Evaluator", "evaluate_images", "check_images", "result_to_json"]

KNOWN_METRICS = ("fd_pixel", "fid", "is", "classifier", "spectrum", "kid")
CLASSIFIER_DATASETS = ("mnist", "digits")
REFERENCE_SEED = 0
MAX_PIXEL_DIM = 8192  # fd_pixel needs a D x D covariance and two D x D eigendecompositions


@dataclasses.dataclass
class EvalResult:
    metrics: dict[str, float]
    provenance: dict[str, dict[str, Any]]
    artifacts: dict[str, Any]
    timings: dict[str, float]  # seconds spent in: sampling, features, metrics (this rank's sampling/features)


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


def _share(n: int, rank: int, world: int) -> tuple[int, int]:
    base, rem = divmod(n, world)
    start = rank * base + min(rank, rem)
    return start, start + base + (1 if rank < rem else 0)


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def _broadcast(obj: Any, rank: int, world: int) -> Any:
    if world == 1:
        return obj
    box = [obj if rank == 0 else None]
    _dist().broadcast_object_list(box, src=0)
    return box[0]


class _Extractors:
    """The feature extractors the requested metrics need, built once per Evaluator."""

    def __init__(self, ev: "Evaluator"):
        self.pixel = "fd_pixel" in ev.metrics or "kid" in ev.metrics  # KID always includes pixel features
        self.inception = None
        self.classifier = None
        self.classifier_info: dict[str, Any] = {}
        if "fid" in ev.metrics or "is" in ev.metrics:
            from trainers.inception import InceptionExtractor

            feats = (("2048",) if "fid" in ev.metrics else ()) + ("logits_unbiased",)
            self.inception = InceptionExtractor(ev.inception_weights, ev.device, feats,
                                                allow_download=ev.allow_download)


class _Accumulator:
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
            from trainers.classifier import CLASSIFIER_NAME, FEATURE_DIM

            self.fd[f"fd_{CLASSIFIER_NAME}"] = FeatureStats(FEATURE_DIM)
            self.cls = InceptionScoreStats(total, ev.num_classes, splits=1, shuffle=False)
            self.label_hits = torch.zeros(2, dtype=torch.float64)  # (hits, labelled samples)
        self.isc = InceptionScoreStats(total, 1008) if with_is and ex.inception is not None else None
        self.spectrum = SpectrumStats(ev.image_size) if "spectrum" in ev.metrics else None
        # KID needs the features themselves: (global index, float32 rows) per FD metric, gathered on rank 0
        self.bank: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] | None = (
            {m: [] for m in ev.feature_sources()} if "kid" in ev.metrics else None)

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
            from trainers.classifier import CLASSIFIER_NAME

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
            from trainers.metrics import _all_reduce_

            _all_reduce_([self.label_hits])
        if self.spectrum is not None:
            self.spectrum.all_reduce()
        dist = _dist()
        if self.bank is not None and dist is not None and self.ev.world_size > 1:
            gathered: list[Any] = [None] * self.ev.world_size
            dist.all_gather_object(gathered, self.bank)
            self.bank = {m: [row for bank in gathered for row in bank[m]] for m in self.bank}


class Evaluator:
    """Computes the requested metrics of generated samples against cached reference statistics."""

    def __init__(self, metrics: Iterable[str], dataset, num_samples: int, batch_size: int,
                 device: torch.device | str = "cpu", cache_dir: str | os.PathLike = "cache",
                 inception_weights: str | os.PathLike | None = None, rank: int = 0, world_size: int = 1,
                 seed: int = 0, *, floor_dataset=None, classifier_min_accuracy: float = 0.97,
                 classifier_epochs: int = 10, max_abs: float = 5.0, allow_download: bool = True):
        metrics = tuple(metrics) if not isinstance(metrics, str) else (metrics,)
        unknown = [m for m in metrics if m not in KNOWN_METRICS]
        if unknown or not metrics:
            raise ValueError(f"metrics must be a non-empty subset of {KNOWN_METRICS}, got {metrics!r}")
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
            dist = _dist()
            if dist is None or dist.get_world_size() != world_size or dist.get_rank() != rank:
                raise ValueError(f"world_size={world_size}, rank={rank} needs an initialised torch.distributed "
                                 "process group of that size and rank")
        self.dataset = dataset
        self.channels = int(getattr(dataset, "channels"))
        self.num_classes = int(getattr(dataset, "num_classes"))
        first = dataset[0][0]
        self.image_size = int(first.shape[-1])
        if tuple(first.shape) != (self.channels, self.image_size, self.image_size):
            raise ValueError(f"dataset images must be square [C, H, W] with C = dataset.channels = {self.channels}, "
                             f"got {tuple(first.shape)}")
        name = self._describe(dataset).get("name")
        if "classifier" in metrics and name not in CLASSIFIER_DATASETS:
            raise ValueError(f"metric 'classifier' needs a digit dataset {CLASSIFIER_DATASETS}, got dataset {name!r}")
        if ("fid" in metrics or "is" in metrics) and self.channels not in (1, 3):
            raise ValueError(f"fid/is need 1- or 3-channel images, the dataset has {self.channels} channels")
        if "fd_pixel" in metrics and self.channels * self.image_size ** 2 > MAX_PIXEL_DIM:
            raise ValueError(f"fd_pixel at {self.channels}x{self.image_size}x{self.image_size} needs a "
                             f"{self.channels * self.image_size ** 2}-d covariance (limit {MAX_PIXEL_DIM}); "
                             "use fid or a smaller image_size")
        self.metrics, self.num_samples, self.batch_size = metrics, num_samples, batch_size
        self.device = torch.device(device)
        self.cache = StatsCache(cache_dir)
        self.cache_dir = pathlib.Path(cache_dir)
        self.inception_weights = inception_weights
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.floor_dataset = floor_dataset
        self.classifier_min_accuracy = classifier_min_accuracy
        self.classifier_epochs = classifier_epochs
        self.max_abs = max_abs
        self.allow_download = allow_download
        self.extractors: _Extractors | None = None
        self.references: dict[str, dict[str, Any]] = {}  # rank 0: metric -> mu, sigma, floor, provenance bits
        self.cache_events: dict[str, str] = {}  # metric -> "hit" | "miss" (reference stats on disk)

    # ------------------------------------------------------------------------------------------------ prepare
    @staticmethod
    def _describe(dataset) -> dict[str, Any]:
        d = dataset.describe() if hasattr(dataset, "describe") else {}
        return {"name": getattr(dataset, "name", d.get("name")), **d}

    def prepare(self) -> None:
        """Builds extractors on every rank; rank 0 computes or loads reference stats and floors (see module doc)."""
        # Every rank resolves the Inception weights itself: a missing file fails on all ranks at once.
        self.extractors = _Extractors(self)
        status, cls_state = None, None
        if self.rank == 0:
            try:
                if "classifier" in self.metrics:
                    self._prepare_classifier()
                    cls_state = (self.extractors.classifier.state_dict(), self.extractors.classifier_info)
                self._prepare_references()
            except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks were told
                status = e
        msg, cls_state = _broadcast((None if status is None else f"{type(status).__name__}: {status}", cls_state),
                                    self.rank, self.world_size)
        if status is not None:
            raise status
        if msg is not None:
            raise RuntimeError(f"evaluation setup failed on rank 0: {msg}")
        if self.rank != 0 and cls_state is not None:
            from trainers.classifier import DigitCNN

            model = DigitCNN(self.num_classes, self.channels)
            model.load_state_dict(cls_state[0])
            self.extractors.classifier = model.eval().to(self.device)
            self.extractors.classifier_info = cls_state[1]

    def _other_split(self, dataset):
        d = self._describe(dataset)
        if "split" not in d or "size" not in d:
            return None
        from trainers.data import build_dataset

        other = "train" if d["split"] == "test" else "test"
        return build_dataset(d["name"], image_size=d["size"], split=other, root=d.get("root"),
                             seed=d.get("seed", 0), **d.get("options", {}))

    @staticmethod
    def _stack(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
        items = [dataset[int(i)] for i in indices]
        return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items], dtype=torch.long)

    def _prepare_classifier(self) -> None:
        from trainers.classifier import load_or_train_classifier

        d = self._describe(self.dataset)
        other = self._other_split(self.dataset)
        if other is None:
            raise ValueError("metric 'classifier' needs a dataset with describe() giving its split, to train on the "
                             "train split and test on the test split")
        train, test = (self.dataset, other) if d["split"] == "train" else (other, self.dataset)
        xt, yt = self._stack(train, range(len(train)))
        xe, ye = self._stack(test, range(len(test)))
        model, info = load_or_train_classifier(xt, yt, xe, ye, self.cache_dir, dataset_name=d["name"],
                                               num_classes=self.num_classes,
                                               min_accuracy=self.classifier_min_accuracy,
                                               epochs=self.classifier_epochs)
        self.extractors.classifier = model.to(self.device)
        self.extractors.classifier_info = info

    def _fd_extractors(self) -> dict[str, tuple[str, str | None]]:
        """Feature source, named by its FD metric -> (extractor name, weights sha256), for provenance and cache keys.
        Includes fd_pixel when only KID asked for pixel features: see `fd_wanted` for the FDs to compute."""
        ex, out = self.extractors, {}
        if ex.pixel:
            out["fd_pixel"] = ("pixel", None)
        if ex.inception is not None and "2048" in ex.inception.features:
            out["fid"] = (f"{ex.inception.name}/2048", ex.inception.weights_sha256)
        if ex.classifier is not None:
            from trainers.classifier import CLASSIFIER_NAME

            out[f"fd_{CLASSIFIER_NAME}"] = (CLASSIFIER_NAME, ex.classifier_info["weights_sha256"])
        return out

    def _real_sets(self):
        """(R indices, floor dataset, B indices, floor_source) per the module docstring."""
        n, ds = self.num_samples, self.dataset
        perm = np.random.RandomState(REFERENCE_SEED).permutation(len(ds))
        n_ref = min(n, len(ds))
        if n_ref < n:
            warnings.warn(f"the dataset has {len(ds)} images < num_samples={n}: the reference uses all {len(ds)}",
                          RuntimeWarning, stacklevel=3)
        ref = perm[:n_ref]
        rest = perm[n_ref:]
        if len(rest) >= n:
            return ref, ds, rest[:n], "same split, disjoint images"
        other = self.floor_dataset if self.floor_dataset is not None else self._other_split(ds)
        other_n = len(other) if other is not None else 0
        if other_n >= n or other_n > len(rest):
            operm = np.random.RandomState(REFERENCE_SEED + 1).permutation(other_n)[:n]
            source = f"other split ({self._describe(other).get('split', 'floor_dataset')})"
            fds, fidx = other, operm
        else:
            fds, fidx, source = ds, rest, "same split, disjoint images"
        if len(fidx) < 2:
            warnings.warn(f"no second set of real images for the data-vs-data floor (the dataset has {len(ds)} "
                          "images and no other split or floor_dataset): floors are not reported", RuntimeWarning,
                          stacklevel=3)
            return ref, None, fidx[:0], "unavailable"
        if len(fidx) < n:
            warnings.warn(f"only {len(fidx)} real images are available for the data-vs-data floor (num_samples={n}): "
                          "the floor is biased upward", RuntimeWarning, stacklevel=3)
        return ref, fds, fidx, source

    def _identity(self, dataset, indices) -> dict[str, Any]:
        d = self._describe(dataset)
        ident = {k: d.get(k) for k in ("name", "split", "size", "channels", "count", "seed", "root", "options")}
        ident["indices_sha256"] = hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()
        if not hasattr(dataset, "describe"):  # no description to key on: key on the pixels themselves
            h = hashlib.sha256()
            for i in indices:
                h.update(dataset[int(i)][0].numpy().tobytes())
            ident["content_sha256"] = h.hexdigest()
        return ident

    def _prepare_references(self) -> None:
        ref_idx, floor_ds, floor_idx, floor_source = self._real_sets()
        fd_ex = self._fd_extractors()
        keys, loaded = {}, {}
        roles = (("reference", self.dataset, ref_idx),) + ((("floor", floor_ds, floor_idx),) if floor_ds is not None else ())
        for role, ds, idx in roles:
            ident = self._identity(ds, idx)
            for metric, (ex_name, sha) in fd_ex.items():
                keys[(role, metric)] = StatsCache.key(role=role, dataset=ident, n=len(idx), extractor=ex_name,
                                                      weights_sha256=sha)
                if self.fd_wanted(metric):
                    loaded[(role, metric)] = self.cache.get(keys[(role, metric)], self._dim(metric))
                if "kid" in self.metrics:
                    p = self._features_path(keys[(role, metric)])
                    loaded[(role, f"features:{metric}")] = np.load(p) if p.is_file() else None
            if "spectrum" in self.metrics:
                keys[(role, "spectrum")] = StatsCache.key(role=role, dataset=ident, n=len(idx), extractor="fft-radial")
                p = self._spectrum_path(keys[(role, "spectrum")])
                loaded[(role, "spectrum")] = np.load(p) if p.is_file() else None
        self._compute_real("reference", self.dataset, ref_idx, keys, loaded)
        if floor_ds is not None:
            self._compute_real("floor", floor_ds, floor_idx, keys, loaded)
        for metric, (ex_name, sha) in fd_ex.items():
            kid_ref = loaded.get(("reference", f"features:{metric}"))
            mu = sigma = floor = None
            if self.fd_wanted(metric):
                mu, sigma, meta = loaded[("reference", metric)]
                if floor_ds is not None:
                    fmu, fsigma, _ = loaded[("floor", metric)]
                    floor = frechet_distance(fmu, fsigma, mu, sigma)
                self.cache_events[metric] = meta.get("event", "hit")
                ref_sha = meta["sha256"]
            else:  # KID only: the reference is identified by its features
                ref_sha = hashlib.sha256(np.ascontiguousarray(kid_ref).tobytes()).hexdigest()
            kid_floor = None
            if kid_ref is not None and floor_ds is not None:
                floor_feats = loaded[("floor", f"features:{metric}")]
                kid_floor = kernel_distance(floor_feats, kid_ref, subset_size=kid_subset_size(len(floor_feats),
                                                                                             len(kid_ref)))
            self.references[metric] = {
                "mu": mu, "sigma": sigma, "floor": floor, "features": kid_ref, "kid_floor": kid_floor,
                "provenance": {"extractor": ex_name, "weights_sha256": sha, "reference_sha256": ref_sha,
                               "reference_num_samples": len(ref_idx), "floor_num_samples": len(floor_idx),
                               "floor_source": floor_source},
            }
        if "spectrum" in self.metrics:
            self.references["spectrum"] = {"data": loaded[("reference", "spectrum")],
                                           "provenance": {"extractor": "fft-radial", "weights_sha256": None,
                                                          "reference_num_samples": len(ref_idx)}}
            self.references["spectrum"]["provenance"]["reference_sha256"] = hashlib.sha256(
                np.ascontiguousarray(self.references["spectrum"]["data"]).tobytes()).hexdigest()

    def feature_sources(self) -> list[str]:
        return list(self._fd_extractors())

    def fd_wanted(self, metric: str) -> bool:
        """Whether the Fréchet distance of this feature source is computed (KID alone needs no covariance)."""
        return metric != "fd_pixel" or "fd_pixel" in self.metrics

    def _dim(self, metric: str) -> int:
        if metric == "fd_pixel":
            return self.channels * self.image_size ** 2
        if metric == "fid":
            return 2048
        from trainers.classifier import FEATURE_DIM

        return FEATURE_DIM

    def _spectrum_path(self, key: str) -> pathlib.Path:
        return self.cache.root / "reference_stats" / f"{key}.spectrum.npy"

    def _features_path(self, key: str) -> pathlib.Path:
        return self.cache.root / "reference_stats" / f"{key}.features.npy"

    @staticmethod
    def _save_npy(path: pathlib.Path, array: np.ndarray) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, array)
        tmp.replace(path)  # atomic, as the stats files

    def _compute_real(self, role, dataset, indices, keys, loaded) -> None:
        todo = [m for (r, m), v in loaded.items() if r == role and v is None]
        if not todo:
            return
        acc = _Accumulator(self, len(indices), with_is=False)
        for i in range(0, len(indices), self.batch_size):
            chunk = indices[i:i + self.batch_size]
            x, _ = self._stack(dataset, chunk)
            check_images(x, channels=self.channels, image_size=self.image_size, max_abs=self.max_abs,
                         what=f"dataset images ({role})")
            acc.update(x.to(self.device), None, i)
        meta = {"role": role, "dataset": self._identity(dataset, indices), "image_size": self.image_size}
        for metric in todo:
            if metric == "spectrum":
                spec = acc.spectrum.spectrum()
                self._save_npy(self._spectrum_path(keys[(role, metric)]), spec)
                loaded[(role, metric)] = spec
                continue
            if metric.startswith("features:"):
                feats = acc.features(metric.removeprefix("features:"))
                self._save_npy(self._features_path(keys[(role, metric.removeprefix("features:"))]), feats)
                loaded[(role, metric)] = feats
                continue
            st = acc.fd[metric]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # rank deficiency is reported once, for samples
                mu, sigma = st.mean(), st.covariance()
            ex_name, sha = self._fd_extractors()[metric]
            digest = self.cache.put(keys[(role, metric)], mu, sigma,
                                    {**meta, "extractor": ex_name, "weights_sha256": sha, "num_samples": st.count})
            loaded[(role, metric)] = (mu, sigma, {"sha256": digest, "event": "miss"})

    # ----------------------------------------------------------------------------------------------- evaluate
    def evaluate(self, generate: Callable[[torch.Tensor], torch.Tensor]) -> EvalResult:
        """Generates this rank's share of num_samples class-balanced samples and evaluates them (module doc)."""
        n = self.num_samples
        k = self.num_classes
        labels = torch.arange(n) % k if k > 0 else torch.full((n,), k, dtype=torch.long)
        start, end = _share(n, self.rank, self.world_size)

        def batches():
            devices = [self.device.index or 0] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.seed * 1_000_003 + self.rank)
                for i in range(start, end, self.batch_size):
                    lab = labels[i:min(i + self.batch_size, end)]
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
        timings = {"sampling": 0.0, "features": 0.0, "metrics": 0.0}
        acc = _Accumulator(self, total, with_is=True)
        error: Exception | None = None
        try:
            for make, lab, i in batches:
                t0 = time.perf_counter()
                images = make()
                t1 = time.perf_counter()
                check_images(images, channels=self.channels, image_size=self.image_size, max_abs=self.max_abs,
                             what=f"{what} (samples {i}..{i + len(images) - 1})")
                if lab is not None and len(lab) != len(images):
                    raise ValueError(f"generate returned {len(images)} images for {len(lab)} labels")
                acc.update(images.to(self.device), lab, i)
                timings["sampling"] += t1 - t0
                timings["features"] += time.perf_counter() - t1
        except Exception as e:  # noqa: BLE001 - every rank must learn of a failure before the collective reduce
            error = e
        self._raise_if_any_failed(error)
        t0 = time.perf_counter()
        acc.all_reduce()
        out, failure = None, None
        if self.rank == 0:
            try:
                out = self._finish(acc)
            except Exception as e:  # noqa: BLE001 - the other ranks wait in the broadcast: tell them, then raise
                failure = e
        out = _broadcast(out if failure is None else f"{type(failure).__name__}: {failure}", self.rank,
                         self.world_size)
        if failure is not None:
            raise failure
        if isinstance(out, str):
            raise RuntimeError(f"evaluation failed on rank 0: {out}")
        metrics, provenance, artifacts = out
        timings["metrics"] = time.perf_counter() - t0
        return EvalResult(metrics, provenance, artifacts, timings)

    def _raise_if_any_failed(self, error: Exception | None) -> None:
        if self.world_size > 1:
            flag = torch.tensor([0.0 if error is None else 1.0])
            from trainers.metrics import _all_reduce_

            _all_reduce_([flag])
            if error is None and flag.item() > 0:
                raise RuntimeError("evaluation failed on another rank (see its error)")
        if error is not None:
            raise error

    def _finish(self, acc: _Accumulator) -> tuple[dict, dict, dict]:
        metrics: dict[str, float] = {}
        prov: dict[str, dict] = {}
        for metric, st in acc.fd.items():
            ref = self.references[metric]
            if st.count != acc.total:
                raise ValueError(f"{metric}: expected {acc.total} samples across ranks, got {st.count}")
            metrics[metric] = frechet_distance(st.mean(), st.covariance(), ref["mu"], ref["sigma"])
            if ref["floor"] is not None:
                metrics[f"{metric}_floor"] = ref["floor"]
            prov[metric] = {**ref["provenance"], "num_samples": st.count}
        for metric in acc.bank or {}:
            ref, name, feats = self.references[metric], kid_name(metric), acc.features(metric)
            if len(feats) != acc.total:
                raise ValueError(f"{name}: expected {acc.total} samples across ranks, got {len(feats)}")
            kid = kernel_distance(feats, ref["features"], subset_size=kid_subset_size(len(feats), len(ref["features"])))
            metrics[name], metrics[f"{name}_std"] = kid.mean, kid.std
            if ref["kid_floor"] is not None:
                metrics[f"{name}_floor"] = ref["kid_floor"].mean
            prov[name] = {**ref["provenance"], "num_samples": len(feats), "estimator": "unbiased MMD^2, cubic "
                          "polynomial kernel", "subsets": kid.subsets, "subset_size": kid.subset_size}
        if acc.isc is not None:
            metrics["is"], metrics["is_std"] = acc.isc.score()
            ex = self.extractors.inception
            prov["is"] = {"extractor": f"{ex.name}/logits_unbiased", "weights_sha256": ex.weights_sha256,
                          "num_samples": acc.total, "reference_sha256": None, "splits": 10}
        if "fid" in prov:
            prov["fid"]["official_weights"] = self.extractors.inception.official
        if self.extractors.classifier is not None:
            from trainers.classifier import CLASSIFIER_NAME

            info = self.extractors.classifier_info
            metrics[f"cls_accuracy_{CLASSIFIER_NAME}"] = info["accuracy"]
            metrics[f"cls_score_{CLASSIFIER_NAME}"] = acc.cls.score()[0]
            hits, labelled = acc.label_hits.tolist()
            if labelled > 0:
                metrics[f"cls_label_acc_{CLASSIFIER_NAME}"] = hits / labelled
            prov[f"fd_{CLASSIFIER_NAME}"]["classifier_accuracy"] = info["accuracy"]
        artifacts: dict[str, Any] = {}
        if acc.spectrum is not None:
            ref = self.references["spectrum"]
            samples = acc.spectrum.spectrum()
            metrics.update(spectral_errors(samples, ref["data"]))
            prov["spectrum"] = {**ref["provenance"], "num_samples": acc.spectrum.count}
            artifacts["spectra"] = {"r": acc.spectrum.radii().tolist(), "data": ref["data"].tolist(),
                                    "samples": samples.tolist(), "bands": {"low": [0, 1 / 3], "mid": [1 / 3, 2 / 3],
                                                                           "high": [2 / 3, 1]},
                                    "definition": "FFT power |F|^2/(H*W), channel mean, round(|k|) shells, "
                                                  "r = k / (H/2)"}
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            raise ValueError(f"non-finite metric values: {bad}")
        return metrics, prov, artifacts


def kid_subset_size(n1: int, n2: int) -> int:
    """torch-fidelity's 1,000, or half the smaller set when that is smaller: subsets of the whole set would all be
    the same rows, and their SD (`kid_*_std`) would be 0 instead of the spread of half-size estimates."""
    return max(2, min(KID_SUBSET_SIZE, min(n1, n2) // 2))


def kid_name(fd_metric: str) -> str:
    """The KID key that goes with an FD key: fid -> kid (Inception), fd_pixel -> kid_pixel, fd_<x> -> kid_<x>."""
    return "kid" if fd_metric == "fid" else "kid_" + fd_metric.removeprefix("fd_")


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


def result_to_json(result: EvalResult) -> str:
    """One JSON document with metrics, provenance, artifacts and timings (for `specforce eval` output files)."""
    return json.dumps(dataclasses.asdict(result), indent=2, sort_keys=True)
