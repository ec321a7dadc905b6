"""Fréchet distance and Inception-Score math on float64 sufficient statistics, and reference-stats files.

Everything here works on feature tensors / arrays, never on images or networks, so it is exact to test:

    import torch
    from trainers.evaluation.metrics import FeatureStats, frechet_distance
    a, b = FeatureStats(8), FeatureStats(8)
    a.update(torch.randn(500, 8)); b.update(torch.randn(500, 8) + 0.1)
    print(frechet_distance(a.mean(), a.covariance(), b.mean(), b.covariance()))

CPU check: `.venv/bin/python -m pytest tests/test_metrics.py -q`.

Distributed use (EDM2 style): every rank accumulates `FeatureStats` / `InceptionScoreStats` over its own samples,
`all_reduce()` sums count, sum and sum of outer products in float64 across ranks (trainers/distributed.py), and
any rank can then compute the distance; the result equals the single-process value on the same samples (up to
summation order).
"""
from __future__ import annotations

import hashlib
import json
import math
import pathlib
import warnings
from typing import Any

import numpy as np
import torch

from trainers.distributed import all_reduce_sum_

__all__ = [
    "frechet_distance", "FeatureStats", "InceptionScoreStats", "inception_score", "stats_sha256",
    "load_reference_stats", "save_reference_stats", "StatsCache",
]


def _as_f64(name: str, value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    # A covariance is symmetric PSD up to rounding; tiny negative eigenvalues are rounding, so clip them to 0.
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), computed in float64.

    tr((S1 S2)^(1/2)) is taken from the eigenvalues of the symmetric PSD matrix S1^(1/2) S2 S1^(1/2), which has the
    same spectrum as S1 S2. Unlike `scipy.linalg.sqrtm` (Schur-based, can return complex parts and NaN on singular
    inputs) it stays real and finite for rank-deficient covariances, e.g. fewer samples than feature dimensions.
    """
    m1, m2 = _as_f64("mu1", mu1), _as_f64("mu2", mu2)
    s1, s2 = _as_f64("sigma1", sigma1), _as_f64("sigma2", sigma2)
    if m1.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"mu1 and mu2 must be 1-D of equal length, got shapes {m1.shape} and {m2.shape}")
    d = m1.shape[0]
    for name, s in (("sigma1", s1), ("sigma2", s2)):
        if s.shape != (d, d):
            raise ValueError(f"{name} must have shape {(d, d)} to match mu, got {s.shape}")
    for name, a in (("mu1", m1), ("mu2", m2), ("sigma1", s1), ("sigma2", s2)):
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    root1 = _sqrt_psd(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


class FeatureStats:
    """Count, sum and sum of outer products of D-dimensional features, in float64 (additive across ranks).

    The covariance is the unbiased one (ddof=1), as `numpy.cov` in torch-fidelity. Forming it from raw sums loses
    about log10(|mean|^2 / variance) digits of float64's 16; for image and Inception features that is a few digits.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu"):
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        self.count = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, features: torch.Tensor) -> None:
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"features must be a torch.Tensor, got {type(features).__name__}")
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features must have shape [N, {self.dim}], got {tuple(features.shape)}")
        if not torch.isfinite(features).all():
            raise ValueError(f"features contain {int((~torch.isfinite(features)).sum())} non-finite values")
        f = features.detach().to(device=self.sum.device, dtype=torch.float64)
        self.count += f.shape[0]
        self.sum += f.sum(0)
        self.outer += f.T @ f

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        if other.dim != self.dim:
            raise ValueError(f"cannot merge stats of dim {other.dim} into dim {self.dim}")
        self.count += other.count
        self.sum += other.sum.to(self.sum.device)
        self.outer += other.outer.to(self.outer.device)
        return self

    def all_reduce(self) -> "FeatureStats":
        """Sums the statistics over all ranks of the default process group (no-op when not distributed)."""
        count = torch.tensor([float(self.count)], dtype=torch.float64)
        all_reduce_sum_([count, self.sum, self.outer])
        self.count = int(round(count.item()))
        return self

    def mean(self) -> np.ndarray:
        if self.count < 1:
            raise ValueError("no features accumulated: count is 0")
        return (self.sum / self.count).cpu().numpy()

    def covariance(self) -> np.ndarray:
        n = self.count
        if n < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got count={n}")
        if n <= self.dim:
            warnings.warn(f"only {n} samples for {self.dim}-dimensional features: the covariance is rank-deficient "
                          f"(rank <= {n - 1}) and the Fréchet distance is strongly biased", RuntimeWarning,
                          stacklevel=2)
        mu = self.sum / n
        cov = (self.outer - n * torch.outer(mu, mu)) / (n - 1)
        return ((cov + cov.T) / 2).cpu().numpy()


def _split_bounds(n: int, splits: int) -> list[tuple[int, int]]:
    return [(i * n // splits, (i + 1) * n // splits) for i in range(splits)]


class InceptionScoreStats:
    """Inception Score as torch-fidelity defines it, from additive per-split sums (so ranks can all-reduce).

    torch-fidelity shuffles the N logit rows with `np.random.RandomState(seed).permutation(N)` and cuts the shuffled
    order into `splits` contiguous chunks; the score of chunk k is exp(mean_i KL(p_i || q_k)) with q_k the chunk's
    mean p. Since sum_i KL(p_i||q_k) = sum_i sum_c p_ic log p_ic - sum_c P_kc log q_kc with P_k = sum_i p_i, the
    per-chunk sums (count, P_k, sum p log p) suffice. Samples are identified by their global index 0..N-1 (the order
    torch-fidelity would see them in), so each rank only needs to know where its samples sit in that order.
    """

    def __init__(self, total: int, num_classes: int, splits: int = 10, shuffle: bool = True, seed: int = 2020):
        if not isinstance(total, int) or total < splits:
            raise ValueError(f"total must be an int >= splits={splits}, got {total!r}")
        if splits < 1:
            raise ValueError(f"splits must be >= 1, got {splits!r}")
        self.total, self.num_classes, self.splits = total, num_classes, splits
        perm = np.random.RandomState(seed).permutation(total) if shuffle else np.arange(total)
        split_of_position = np.empty(total, dtype=np.int64)
        for k, (lo, hi) in enumerate(_split_bounds(total, splits)):
            split_of_position[lo:hi] = k
        # shuffled position j holds original sample perm[j]
        self._split_of_index = np.empty(total, dtype=np.int64)
        self._split_of_index[perm] = split_of_position
        self.count = torch.zeros(splits, dtype=torch.float64)
        self.p_sum = torch.zeros(splits, num_classes, dtype=torch.float64)
        self.plogp_sum = torch.zeros(splits, dtype=torch.float64)

    def update(self, logits: torch.Tensor, indices: torch.Tensor | np.ndarray) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must have shape [N, {self.num_classes}], got {tuple(logits.shape)}")
        idx = np.asarray(torch.as_tensor(indices).cpu(), dtype=np.int64)
        if idx.shape != (logits.shape[0],):
            raise ValueError(f"indices must have shape ({logits.shape[0]},), got {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.total):
            raise ValueError(f"indices must lie in [0, {self.total}), got range [{idx.min()}, {idx.max()}]")
        lg = logits.detach().cpu().double()
        if not torch.isfinite(lg).all():
            raise ValueError("logits contain non-finite values")
        log_p = lg.log_softmax(dim=1)
        p = log_p.exp()
        split = torch.from_numpy(self._split_of_index[idx])
        self.count.index_add_(0, split, torch.ones(len(idx), dtype=torch.float64))
        self.p_sum.index_add_(0, split, p)
        self.plogp_sum.index_add_(0, split, (p * log_p).sum(1))

    def all_reduce(self) -> "InceptionScoreStats":
        all_reduce_sum_([self.count, self.p_sum, self.plogp_sum])
        return self

    def score(self) -> tuple[float, float]:
        """(mean, std) over the splits; requires all `total` samples to have been added exactly once."""
        n = int(round(self.count.sum().item()))
        if n != self.total:
            raise ValueError(f"inception score expects {self.total} samples, got {n}")
        scores = []
        for k in range(self.splits):
            c = self.count[k].item()
            q = self.p_sum[k] / c
            # q_c = 0 only if every p_ic = 0 (underflow); such classes contribute 0, as 0 * log 0 := 0.
            cross = torch.where(self.p_sum[k] > 0, self.p_sum[k] * q.clamp_min(1e-300).log(), 0.0).sum().item()
            scores.append(math.exp((self.plogp_sum[k].item() - cross) / c))
        return float(np.mean(scores)), float(np.std(scores))


def inception_score(logits: torch.Tensor, splits: int = 10, shuffle: bool = True, seed: int = 2020):
    """(mean, std) Inception Score of all rows of `logits`, in torch-fidelity's order and split convention."""
    st = InceptionScoreStats(logits.shape[0], logits.shape[1], splits=splits, shuffle=shuffle, seed=seed)
    st.update(logits, torch.arange(logits.shape[0]))
    return st.score()


# ----------------------------------------------------------------------------------------- reference stats files
def stats_sha256(mu: np.ndarray, sigma: np.ndarray) -> str:
    """Content hash of a (mu, sigma) pair in float64, so provenance can tell two references apart."""
    h = hashlib.sha256()
    for a in (mu, sigma):
        a = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _check_stats(mu: Any, sigma: Any, expected_dim: int | None, source: str) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, a in (("mu", mu), ("sigma", sigma)):
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().numpy()
        a = np.asarray(a)
        if a.dtype not in (np.float32, np.float64):
            raise ValueError(f"{source}: {name} must be float32 or float64, got dtype {a.dtype}")
        arrays.append(a.astype(np.float64))
    mu, sigma = arrays
    d = mu.shape[0] if mu.ndim == 1 else None
    if d is None or sigma.shape != (d, d):
        raise ValueError(f"{source}: expected mu of shape (D,) and sigma of shape (D, D), "
                         f"got {mu.shape} and {sigma.shape}")
    if expected_dim is not None and d != expected_dim:
        raise ValueError(f"{source}: stats have dimension {d}, the extractor produces {expected_dim}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{source}: mu or sigma contains non-finite values")
    return mu, sigma


def load_reference_stats(path: str | pathlib.Path, expected_dim: int | None = None):
    """Loads (mu, sigma, metadata) in float64 from a reference-stats file.

    Accepted: `.npz` with arrays `mu` and `sigma` (ours, and the ADM/JiT ImageNet reference batches, whose
    other arrays are ignored) and torch-fidelity's cached statistics (`torch.save`d dict with `mu`, `sigma`; any
    suffix other than .npz). Metadata is the JSON written by `save_reference_stats`, or {} for foreign files.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference stats file not found: {path}")
    meta: dict[str, Any] = {}
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("mu", "sigma") if k not in z.files]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing}; found {z.files} (need 'mu' and 'sigma')")
            mu, sigma = z["mu"], z["sigma"]
            if "metadata" in z.files:
                meta = json.loads(str(z["metadata"]))
    else:
        obj = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(obj, dict) or not {"mu", "sigma"} <= set(obj):
            raise ValueError(f"{path}: expected a dict with keys 'mu' and 'sigma' (torch-fidelity stats), "
                             f"got {type(obj).__name__}" + (f" with keys {sorted(obj)}" if isinstance(obj, dict) else ""))
        mu, sigma = obj["mu"], obj["sigma"]
    mu, sigma = _check_stats(mu, sigma, expected_dim, str(path))
    return mu, sigma, meta


def save_reference_stats(path: str | pathlib.Path, mu: np.ndarray, sigma: np.ndarray, metadata: dict) -> str:
    """Writes mu, sigma (float64) and metadata JSON atomically to `path` (.npz); returns the stats' sha256."""
    path = pathlib.Path(path)
    mu, sigma = _check_stats(mu, sigma, None, "save_reference_stats")
    digest = stats_sha256(mu, sigma)
    meta = {**metadata, "sha256": digest, "dim": int(mu.shape[0])}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, mu=mu, sigma=sigma, metadata=np.array(json.dumps(meta, sort_keys=True)))
    tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new one, never half of it
    return digest


class StatsCache:
    """Reference statistics on disk, keyed by everything that changes them (hashed into the file name)."""

    def __init__(self, root: str | pathlib.Path):
        self.root = pathlib.Path(root)

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def path(self, key: str) -> pathlib.Path:
        return self.root / "reference_stats" / f"{key}.npz"

    def get(self, key: str, expected_dim: int):
        p = self.path(key)
        return load_reference_stats(p, expected_dim) if p.is_file() else None

    def put(self, key: str, mu: np.ndarray, sigma: np.ndarray, metadata: dict) -> str:
        return save_reference_stats(self.path(key), mu, sigma, metadata)
