"""Null calibration of the interval methods: how often a nominal 95% interval excludes 0 when nothing differs.

For each n = 2..10 pairs it draws null paired differences (normal, and heavy-tailed t with 3 degrees of freedom),
builds intervals with the report's methods and counts the share that exclude 0 (nominal: 5%). Student-t and Welch
run vectorised over all draws; the bootstrap goes through `paired_mean_ci` one draw at a time, so it gets fewer
draws. The table in `analysis.intervals`' docstring comes from this script.

    python -m analysis.calibration                      # about a minute on one CPU core
    python -m analysis.calibration --draws 4000 --boot-draws 400
"""
from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from analysis.intervals import paired_mean_ci, sign_flip_p_value, t_bounds, welch_bounds

NS = tuple(range(2, 11))


def t_exclusion(n: int, draws: int, rng: np.random.Generator, confidence: float = 0.95, heavy: bool = False) -> float:
    d = rng.standard_t(3, (draws, n)) if heavy else rng.normal(0.0, 1.0, (draws, n))
    low, high, _ = t_bounds(d, confidence)
    return float(np.mean((low > 0) | (high < 0)))


def welch_exclusion(n: int, draws: int, rng: np.random.Generator, confidence: float = 0.95) -> float:
    # unequal spreads and sizes: the case Welch exists for (the fine side has n, the coarse side n + 1, SD 3x)
    a, b = rng.normal(0.0, 3.0, (draws, n + 1)), rng.normal(0.0, 1.0, (draws, n))
    low, high, _ = welch_bounds(a, b, confidence)
    return float(np.mean((low > 0) | (high < 0)))


def bootstrap_exclusion(n: int, draws: int, rng: np.random.Generator, method: str = "expanded-percentile",
                        confidence: float = 0.95, n_resamples: int = 1_000) -> float:
    hits = 0
    for i in range(draws):
        ci = paired_mean_ci(rng.normal(0.0, 1.0, n), confidence=confidence, method=method, n_resamples=n_resamples,
                            seed=i)
        hits += ci.excludes_zero()
    return hits / draws


def sign_flip_rejection(n: int, draws: int, rng: np.random.Generator, alpha: float = 0.05) -> float:
    return float(np.mean([sign_flip_p_value(rng.normal(0.0, 1.0, n)) <= alpha for _ in range(draws)]))


def table(draws: int, boot_draws: int, seed: int = 0) -> list[tuple[str, list[float]]]:
    rng = np.random.default_rng(seed)
    return [
        (f"Student-t, normal differences ({draws} draws)", [t_exclusion(n, draws, rng) for n in NS]),
        (f"expanded-percentile bootstrap, normal ({boot_draws} draws)",
         [bootstrap_exclusion(n, boot_draws, rng) for n in NS]),
        (f"Student-t, t3 heavy-tailed differences ({draws} draws)",
         [t_exclusion(n, draws, rng, heavy=True) for n in NS]),
        (f"Welch, normal, n+1 vs n pairs, SD 3:1 ({draws} draws)", [welch_exclusion(n, draws, rng) for n in NS]),
        (f"sign-flip p <= 0.05, normal ({boot_draws} draws)", [sign_flip_rejection(n, boot_draws, rng) for n in NS]),
    ]


def markdown(rows: list[tuple[str, list[float]]]) -> str:
    head = "| method (nominal 95%: 5% exclude 0) | " + " | ".join(f"n={n}" for n in NS) + " |"
    lines = [head, "|" + "---|" * (len(NS) + 1)]
    for label, rates in rows:
        cells = [f"{100 * r:.1f}% ({100 * (1 - r):.1f}%)" if math.isfinite(r) else "n/a" for r in rates]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\ncells: share of null intervals that exclude 0 (coverage in brackets)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.calibration", description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20_000, help="null draws per n for the vectorised methods")
    parser.add_argument("--boot-draws", type=int, default=2_000, help="null draws per n for the bootstrap")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.draws < 100 or args.boot_draws < 100:
        parser.error(f"--draws and --boot-draws must be >= 100, got {args.draws} and {args.boot_draws}")
    print(markdown(table(args.draws, args.boot_draws, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
