"""How the ranks of one job split the work, sum their statistics and agree on failures (EDM2 style, see
trainers/evaluation/evaluator.py). Imports nothing from the rest of trainers: every other subpackage may use it.

    from trainers.distributed import all_reduce_sum_, share
    share(10, rank=1, world=3)   # (4, 7): rank 1 evaluates global samples 4..6
    all_reduce_sum_([count, sums])   # in place, summed over ranks (no-op in one process)

Rank r takes the contiguous share r of the global samples; statistics are float64 sums all-reduced across ranks
(`all_reduce_sum_`, used by trainers/evaluation/metrics.py and radial_spectrum.py), and rank 0 alone computes the
numbers and broadcasts them. Every helper here is a no-op with world size 1, so everything runs in one CPU process
without torch.distributed:
`.venv/bin/python -m pytest tests/test_distributed_eval.py -q` (it also starts two gloo ranks on CPU).

Why the failure helpers: a rank that raises while the others wait in a collective would hang them; instead each rank
reports whether it failed, and all of them raise.
"""
from __future__ import annotations

from typing import Any

import torch


def share(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of rank's contiguous share of n items; the first n % world ranks take one more."""
    base, rem = divmod(n, world)
    start = rank * base + min(rank, rem)
    return start, start + base + (1 if rank < rem else 0)


def process_group():
    """torch.distributed when a process group is initialised, else None (one process)."""
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def all_reduce_sum_(tensors: list[torch.Tensor]) -> None:
    """Sums each tensor in place over all ranks of the default process group (no-op in one process).

    The tensors may live on the CPU under either backend: NCCL reduces on the rank's CUDA device, so they are moved
    there and back; gloo and NCCL both reduce float64, which keeps the sums exact enough for covariances."""
    dist = process_group()
    if dist is None or dist.get_world_size() == 1:
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    for t in tensors:
        moved = t.to(device)
        dist.all_reduce(moved)
        t.copy_(moved.cpu())


def broadcast_from_rank0(obj: Any, rank: int, world: int) -> Any:
    """Rank 0's `obj` on every rank (any picklable object)."""
    if world == 1:
        return obj
    box = [obj if rank == 0 else None]
    process_group().broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, world: int) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    dist = process_group()
    if world == 1 or dist is None:
        return [obj]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


def raise_if_any_failed(error: Exception | None, world: int) -> None:
    """Raises `error` on its own rank and a RuntimeError on the others, so no rank is left in a collective."""
    if world > 1:
        flag = torch.tensor([0.0 if error is None else 1.0])
        all_reduce_sum_([flag])
        if error is None and flag.item() > 0:
            raise RuntimeError("evaluation failed on another rank (see its error)")
    if error is not None:
        raise error
