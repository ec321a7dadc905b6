"""Kernel distance (KID): the unbiased polynomial-kernel MMD² between two feature sets, torch-fidelity's estimator.

Fréchet distances from a few hundred samples are biased upward by far more than the differences between arms
(docs/design.md §4: `fd_pixel` from 256 samples in 1,024 dims sits at its own floor). The kernel distance of Bińkowski et
al. (2018) has an *unbiased* estimator: its expectation does not depend on the sample count, so two sets drawn from
the same distribution score 0 on average at any n, and the spread over random subsets gives an error bar.

    MMD²_u(X, Y) = Σ_{i≠j} k(x_i, x_j) / (m(m-1)) + Σ_{i≠j} k(y_i, y_j) / (m(m-1)) - 2 Σ_{i,j} k(x_i, y_j) / m²
    k(x, y) = (gamma · x·y + coef0)^degree,  gamma = 1/D, coef0 = 1, degree = 3

averaged over `subsets` random subsets of `subset_size` rows drawn without replacement from each side (numpy
RandomState(seed), the same draws torch-fidelity makes), with the standard deviation over subsets. Defaults are
torch-fidelity's (100 subsets of 1,000, seed 2020) except that the subset size is capped at the smaller set, since
our evaluation sets are often smaller than 1,000. Computed in float64 (torch-fidelity uses the features' float32).

    python -c "import torch; from trainers.evaluation.kid import kernel_distance; \
        print(kernel_distance(torch.randn(300, 16), torch.randn(300, 16) + 0.2))"
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SUBSETS = 100
SUBSET_SIZE = 1000
SEED = 2020  # torch-fidelity's rng_seed


@dataclass(frozen=True)
class KernelDistance:
    mean: float  # the KID value: mean of the unbiased MMD² over subsets
    std: float  # SD over subsets (numpy's ddof=0, as torch-fidelity)
    subset_size: int
    subsets: int


def _features(name: str, x) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D [N, D] feature array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr.astype(np.float64, copy=False)


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, *, degree: int = 3, gamma: float | None = None,
                  coef0: float = 1.0) -> float:
    """The unbiased MMD² of two equally sized sets under the polynomial kernel (one subset's value)."""
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"mmd2_unbiased needs two sets of equal size >= 2, got {x.shape[0]} and {y.shape[0]}")
    g = 1.0 / x.shape[1] if gamma is None else gamma
    k_xx = (x @ x.T * g + coef0) ** degree
    k_yy = (y @ y.T * g + coef0) ** degree
    k_xy = (x @ y.T * g + coef0) ** degree
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kernel_distance(features_1, features_2, *, subsets: int = SUBSETS, subset_size: int | None = SUBSET_SIZE,
                    seed: int = SEED, degree: int = 3, gamma: float | None = None,
                    coef0: float = 1.0) -> KernelDistance:
    """KID of two feature sets [N1, D], [N2, D]; `subset_size` is capped at min(N1, N2) (None: that minimum)."""
    f1, f2 = _features("features_1", features_1), _features("features_2", features_2)
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}")
    n1, n2 = f1.shape[0], f2.shape[0]
    if min(n1, n2) < 2:
        raise ValueError(f"KID needs at least 2 samples in each set, got {n1} and {n2}")
    if not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive int, got {subsets!r}")
    size = min(n1, n2) if subset_size is None else min(int(subset_size), n1, n2)
    if size < 2:
        raise ValueError(f"subset_size must be >= 2, got {subset_size!r}")
    rng = np.random.RandomState(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        a = f1[rng.choice(n1, size, replace=False)]
        b = f2[rng.choice(n2, size, replace=False)]
        values[i] = mmd2_unbiased(a, b, degree=degree, gamma=gamma, coef0=coef0)
    return KernelDistance(float(values.mean()), float(values.std()), size, subsets)
