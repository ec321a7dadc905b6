"""The real images an evaluation compares against: which ones, their statistics and the cache that keeps them.

    from trainers.evaluation.references import prepare_references
    # rank 0 only; Evaluator.prepare() calls it with its settings, extractors and cache
    references, cache_events = prepare_references(settings, extractors, cache, dataset, floor_dataset=None)

CPU check: `.venv/bin/python -m pytest tests/test_evaluation.py -q -k "cache or floor or reference"`.

Reference and floor (docs/design.md §4). The reference set R is min(num_samples, len(dataset)) images of `dataset`, drawn
with a fixed permutation (REFERENCE_SEED, independent of the run seed, so every run of a sweep shares it). The floor
`<metric>_floor` is FD(B, R) for a second real set B of num_samples images disjoint from R, so it carries the same
finite-sample bias as FD(samples, R). B comes from the rest of `dataset` when it has num_samples more images;
otherwise from the other split of the same dataset (train vs test: disjoint images of the same distribution; for
`grf`, an independent generator stream). If neither is large enough, B is the largest of the two, a warning is
issued and provenance says `floor_num_samples` < num_samples (that floor is then biased upward); with no second set
at all (a bare tensor dataset) `<metric>_floor` is omitted, with a warning. Provenance always records
`reference_num_samples`, `floor_num_samples` and `floor_source`.

Cache (under `<cache_dir>/reference_stats/`): the Gaussian statistics of each (role, feature source) in a
`StatsCache` (trainers/evaluation/metrics.py), the radial spectrum and, for KID, the features themselves as .npy
files. Keys hash the dataset's identity (its describe(), or its pixels when it has none), the chosen indices, the extractor and
its weights, so a change to any of them is a miss, never a stale hit.
"""
from __future__ import annotations

import hashlib
import pathlib
import warnings
from typing import Any

import numpy as np
import torch

from trainers.data.loader import build_dataset
from trainers.evaluation.features import Accumulator, EvalSettings, Extractors, kid_subset_size
from trainers.evaluation.kid import kernel_distance
from trainers.evaluation.metrics import StatsCache, frechet_distance

REFERENCE_SEED = 0
SPECTRUM_EXTRACTOR = "fft-radial"  # the radial power spectrum's name in cache keys and provenance


def describe_dataset(dataset) -> dict[str, Any]:
    """The dataset's describe() (empty for a bare dataset), with its name."""
    d = dataset.describe() if hasattr(dataset, "describe") else {}
    return {"name": getattr(dataset, "name", d.get("name")), **d}


def other_split(dataset):
    """The same dataset's other split (train <-> test), or None when describe() cannot say how to build it."""
    d = describe_dataset(dataset)
    if "split" not in d or "size" not in d:
        return None
    other = "train" if d["split"] == "test" else "test"
    return build_dataset(d["name"], image_size=d["size"], split=other, root=d.get("root"),
                         seed=d.get("seed", 0), **d.get("options", {}))


def stack_items(dataset, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [n, C, H, W], labels [n] int64) of the given dataset indices."""
    items = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items], dtype=torch.long)


def real_sets(ds, n: int, floor_dataset=None):
    """(R indices, floor dataset, B indices, floor_source) of `n` images per set, per the module docstring."""
    perm = np.random.RandomState(REFERENCE_SEED).permutation(len(ds))
    n_ref = min(n, len(ds))
    if n_ref < n:
        warnings.warn(f"the dataset has {len(ds)} images < num_samples={n}: the reference uses all {len(ds)}",
                      RuntimeWarning, stacklevel=3)
    ref = perm[:n_ref]
    rest = perm[n_ref:]
    if len(rest) >= n:
        return ref, ds, rest[:n], "same split, disjoint images"
    other = floor_dataset if floor_dataset is not None else other_split(ds)
    other_n = len(other) if other is not None else 0
    if other_n >= n or other_n > len(rest):
        operm = np.random.RandomState(REFERENCE_SEED + 1).permutation(other_n)[:n]
        source = f"other split ({describe_dataset(other).get('split', 'floor_dataset')})"
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


def dataset_identity(dataset, indices) -> dict[str, Any]:
    """What a cache key says about a set of real images: the dataset's description and a hash of the indices."""
    d = describe_dataset(dataset)
    ident = {k: d.get(k) for k in ("name", "split", "size", "channels", "count", "seed", "root", "options")}
    ident["indices_sha256"] = hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()
    if not hasattr(dataset, "describe"):  # no description to key on: key on the pixels themselves
        h = hashlib.sha256()
        for i in indices:
            h.update(dataset[int(i)][0].numpy().tobytes())
        ident["content_sha256"] = h.hexdigest()
    return ident


def _spectrum_path(cache: StatsCache, key: str) -> pathlib.Path:
    return cache.root / "reference_stats" / f"{key}.spectrum.npy"


def _features_path(cache: StatsCache, key: str) -> pathlib.Path:
    return cache.root / "reference_stats" / f"{key}.features.npy"


def _save_npy(path: pathlib.Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    tmp.replace(path)  # atomic, as the stats files


def _compute_real(s: EvalSettings, extractors: Extractors, cache: StatsCache, role, dataset, indices, keys,
                  loaded) -> None:
    """Fills the cache misses of one real set (reference or floor) in `loaded`, and writes them to the cache."""
    todo = [m for (r, m), v in loaded.items() if r == role and v is None]
    if not todo:
        return
    acc = Accumulator(s, extractors, len(indices), with_is=False)
    for i in range(0, len(indices), s.batch_size):
        x, _ = stack_items(dataset, indices[i:i + s.batch_size])
        s.check(x, f"dataset images ({role})")
        acc.update(x.to(s.device), None, i)
    meta = {"role": role, "dataset": dataset_identity(dataset, indices), "image_size": s.image_size}
    sources = extractors.sources()
    for metric in todo:
        if metric == "spectrum":
            spec = acc.spectrum.spectrum()
            _save_npy(_spectrum_path(cache, keys[(role, metric)]), spec)
            loaded[(role, metric)] = spec
            continue
        if metric.startswith("features:"):
            feats = acc.features(metric.removeprefix("features:"))
            _save_npy(_features_path(cache, keys[(role, metric.removeprefix("features:"))]), feats)
            loaded[(role, metric)] = feats
            continue
        st = acc.fd[metric]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # rank deficiency is reported once, for samples
            mu, sigma = st.mean(), st.covariance()
        ex_name, sha = sources[metric]
        digest = cache.put(keys[(role, metric)], mu, sigma,
                              {**meta, "extractor": ex_name, "weights_sha256": sha, "num_samples": st.count})
        loaded[(role, metric)] = (mu, sigma, {"sha256": digest, "event": "miss"})


def prepare_references(s: EvalSettings, extractors: Extractors, cache: StatsCache, dataset, floor_dataset=None
                       ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Loads or computes every reference statistic and floor that `s.metrics` need, with these extractors, against
    `dataset` (floor set from `floor_dataset` when given; module docstring).

    Returns (references: metric -> mu, sigma, floor, features, kid_floor, provenance; or, for "spectrum", data and
    provenance) and (cache_events: FD metric -> "hit" | "miss")."""
    ref_idx, floor_ds, floor_idx, floor_source = real_sets(dataset, s.num_samples, floor_dataset)
    fd_ex = extractors.sources()
    keys, loaded = {}, {}
    roles = (("reference", dataset, ref_idx),) + ((("floor", floor_ds, floor_idx),) if floor_ds is not None else ())
    for role, ds, idx in roles:
        ident = dataset_identity(ds, idx)
        for metric, (ex_name, sha) in fd_ex.items():
            keys[(role, metric)] = StatsCache.key(role=role, dataset=ident, n=len(idx), extractor=ex_name,
                                                  weights_sha256=sha)
            if s.wants_fd(metric):
                loaded[(role, metric)] = cache.get(keys[(role, metric)], s.feature_dim(metric))
            if "kid" in s.metrics:
                p = _features_path(cache, keys[(role, metric)])
                loaded[(role, f"features:{metric}")] = np.load(p) if p.is_file() else None
        if "spectrum" in s.metrics:
            keys[(role, "spectrum")] = StatsCache.key(role=role, dataset=ident, n=len(idx),
                                                      extractor=SPECTRUM_EXTRACTOR)
            p = _spectrum_path(cache, keys[(role, "spectrum")])
            loaded[(role, "spectrum")] = np.load(p) if p.is_file() else None
    _compute_real(s, extractors, cache, "reference", dataset, ref_idx, keys, loaded)
    if floor_ds is not None:
        _compute_real(s, extractors, cache, "floor", floor_ds, floor_idx, keys, loaded)
    references: dict[str, dict[str, Any]] = {}
    cache_events: dict[str, str] = {}
    for metric, (ex_name, sha) in fd_ex.items():
        kid_ref = loaded.get(("reference", f"features:{metric}"))
        mu = sigma = floor = None
        if s.wants_fd(metric):
            mu, sigma, meta = loaded[("reference", metric)]
            if floor_ds is not None:
                fmu, fsigma, _ = loaded[("floor", metric)]
                floor = frechet_distance(fmu, fsigma, mu, sigma)
            cache_events[metric] = meta.get("event", "hit")
            ref_sha = meta["sha256"]
        else:  # KID only: the reference is identified by its features
            ref_sha = hashlib.sha256(np.ascontiguousarray(kid_ref).tobytes()).hexdigest()
        kid_floor = None
        if kid_ref is not None and floor_ds is not None:
            floor_feats = loaded[("floor", f"features:{metric}")]
            kid_floor = kernel_distance(floor_feats, kid_ref, subset_size=kid_subset_size(len(floor_feats),
                                                                                         len(kid_ref)))
        references[metric] = {
            "mu": mu, "sigma": sigma, "floor": floor, "features": kid_ref, "kid_floor": kid_floor,
            "provenance": {"extractor": ex_name, "weights_sha256": sha, "reference_sha256": ref_sha,
                           "reference_num_samples": len(ref_idx), "floor_num_samples": len(floor_idx),
                           "floor_source": floor_source},
        }
    if "spectrum" in s.metrics:
        references["spectrum"] = {"data": loaded[("reference", "spectrum")],
                                  "provenance": {"extractor": SPECTRUM_EXTRACTOR, "weights_sha256": None,
                                                 "reference_num_samples": len(ref_idx)}}
        references["spectrum"]["provenance"]["reference_sha256"] = hashlib.sha256(
            np.ascontiguousarray(references["spectrum"]["data"]).tobytes()).hexdigest()
    return references, cache_events
