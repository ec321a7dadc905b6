"""Timing on a GPU or CPU for benchmarks/bench_gpu.py: synchronised per-call seconds, freeing memory between
attempts, and the largest batch that fits (an out-of-memory error means "does not fit"; any other error propagates).

    .venv/bin/python -m pytest tests/test_bench_gpu.py -q -k largest_batch      # CPU, seconds
"""
from __future__ import annotations

import gc
import time
from typing import Any, Callable, Sequence

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs no wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    """Seconds per call over `repeats` back-to-back calls (one sync at each end: the GPU's throughput)."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / repeats


def free(device: torch.device) -> None:
    """Release what the last measurement left: Python garbage, and CUDA's cached blocks so the next one starts empty."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def is_oom(err: BaseException) -> bool:
    """Whether `err` is running out of device memory (some CUDA paths raise a plain RuntimeError saying so)."""
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def largest_batch(candidates: Sequence[int], fits: Callable[[int], None]) -> tuple[int, list[int]]:
    """The largest candidate for which `fits(batch)` returns without running out of memory, and those that did not
    fit. Errors other than out-of-memory propagate; none fitting raises RuntimeError naming the candidates."""
    refused = []
    for b in sorted(candidates, reverse=True):
        try:
            fits(b)
            return b, refused
        except Exception as err:  # noqa: BLE001 - only OOM is a "does not fit"
            if not is_oom(err):
                raise
            refused.append(b)
        gc.collect()  # the caught error's frames held the failed attempt's tensors
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    raise RuntimeError(f"no batch of {sorted(candidates, reverse=True)} fits in device memory")
