"""trainers.data.loader.infinite_loader, the training stream: epochs and reshuffling, ranks that are disjoint and
form the global batch, exact resumption from any image count, worker processes, the argument errors; and
trainers.evaluation.heldout.fixed_eval_batch.

    .venv/bin/python -m pytest tests/test_data_loader.py -q      # CPU, seconds
"""
from __future__ import annotations

import pytest
import torch

from data_helpers import write_cifar
from trainers.data.loader import build_dataset, infinite_loader
from trainers.evaluation.heldout import fixed_eval_batch


def stream_indices(ds, it, steps: int) -> list[list[int]]:
    """Batches of a loader mapped back to dataset indices (grf images are unique, so they identify the index)."""
    index_of = {ds[i][0].numpy().tobytes(): i for i in range(len(ds))}
    return [[index_of[x.numpy().tobytes()] for x in next(it)[0]] for _ in range(steps)]


# -------------------------------------------------------------------------------------------------------- loader
def test_loader_single_rank_epochs():
    ds = build_dataset("grf", image_size=4, num_samples=30)
    x, y = next(infinite_loader(ds, batch_size=4, seed=0))
    assert x.shape == (4, 1, 4, 4) and y.dtype == torch.int64 and (y == 0).all()
    batches = stream_indices(ds, infinite_loader(ds, batch_size=4, seed=0), 14)  # 7 full batches (28 of 30) an epoch
    first, second = sum(batches[:7], []), sum(batches[7:], [])
    assert len(set(first)) == 28 and len(set(second)) == 28  # no repeats inside an epoch
    assert first != second  # reshuffled every epoch
    again = stream_indices(ds, infinite_loader(ds, batch_size=4, seed=0), 14)
    other = stream_indices(ds, infinite_loader(ds, batch_size=4, seed=1), 14)
    assert again == batches and other != again


def test_loader_ranks_are_disjoint_and_form_the_global_batch():
    ds = build_dataset("grf", image_size=4, num_samples=30)
    per_rank = [stream_indices(ds, infinite_loader(ds, batch_size=2, seed=4, rank=r, world_size=3), 5)
                for r in range(3)]
    shards = [set(i for b in batches for i in b) for batches in per_rank]
    assert all(len(s) == 10 for s in shards) and set().union(*shards) == set(range(30))
    single = stream_indices(ds, infinite_loader(ds, batch_size=6, seed=4), 5)
    for step in range(5):
        assert sorted(sum((per_rank[r][step] for r in range(3)), [])) == sorted(single[step])


def test_loader_without_drop_last_covers_everything():
    ds = build_dataset("grf", image_size=4, num_samples=10)
    per_rank = [stream_indices(ds, infinite_loader(ds, batch_size=2, seed=0, rank=r, world_size=3,
                                                   drop_last=False), 2) for r in range(3)]
    epoch0 = [i for r in range(3) for b in per_rank[r] for i in b]  # 4 per rank = 12 = 10 + 2 wrapped
    assert set(epoch0) == set(range(10)) and len(epoch0) == 12


@pytest.mark.parametrize("drop_last", [True, False])
@pytest.mark.parametrize("start", [0, 12, 18, 42, 84])
def test_loader_resumes_exactly(start, drop_last):
    ds = build_dataset("grf", image_size=4, num_samples=17)
    batch, world = 3, 2
    for rank in range(world):
        full = stream_indices(ds, infinite_loader(ds, batch_size=batch, seed=9, rank=rank, world_size=world,
                                                  drop_last=drop_last), 24)
        resumed = stream_indices(ds, infinite_loader(ds, batch_size=batch, seed=9, rank=rank, world_size=world,
                                                     drop_last=drop_last, start_images=start), 6)
        flat_full, flat_resumed = sum(full, []), sum(resumed, [])
        skip = start // world  # images this rank had consumed
        assert flat_resumed == flat_full[skip : skip + len(flat_resumed)]
        if start % (batch * world) == 0:
            assert resumed == full[start // (batch * world) :][:6]  # same batch boundaries too


def test_loader_workers_and_flips_reproduce(tmp_path):
    write_cifar(tmp_path)
    ds = build_dataset("cifar10", image_size=8, root=tmp_path, seed=2)  # train: random flips
    a = infinite_loader(ds, batch_size=4, seed=3, num_workers=0, start_images=8)
    b = infinite_loader(ds, batch_size=4, seed=3, num_workers=1, start_images=8)
    for _ in range(8):  # crosses into the second epoch, where flips are redrawn
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
    ({"batch_size": 2.0}, TypeError, "batch_size must be an int"),
    ({"world_size": 0}, ValueError, "world_size must be >= 1"),
    ({"rank": 2, "world_size": 2}, ValueError, "rank must be < world_size=2"),
    ({"rank": -1}, ValueError, "rank must be >= 0"),
    ({"start_images": -4}, ValueError, "start_images must be >= 0"),
    ({"start_images": 3, "world_size": 2}, ValueError, "start_images=3 is not a multiple of world_size=2"),
    ({"batch_size": 6, "world_size": 2}, ValueError, "fewer than one global batch"),
    ({"num_workers": -1}, ValueError, "num_workers"),
    ({"seed": -1}, ValueError, "seed"),
    ({"drop_last": 1}, TypeError, "drop_last"),
])
def test_loader_argument_errors(kwargs, exc, match):
    ds = build_dataset("grf", image_size=4, num_samples=10)
    args = {"batch_size": 2, "seed": 0} | kwargs
    with pytest.raises(exc, match=match):
        infinite_loader(ds, **args)  # raised at the call, before the first batch


def test_small_dataset_without_drop_last_still_streams():
    ds = build_dataset("grf", image_size=4, num_samples=3)
    x, _ = next(infinite_loader(ds, batch_size=8, seed=0, drop_last=False))
    assert x.shape[0] == 8  # batches span epochs rather than shrinking


# -------------------------------------------------------------------------------------------- fixed_eval_batch
def test_fixed_eval_batch():
    ds = build_dataset("digits", image_size=8, split="test")
    x, y = fixed_eval_batch(ds, 32, seed=0)
    assert x.shape == (32, 1, 8, 8) and y.dtype == torch.int64 and y.shape == (32,)
    x2, y2 = fixed_eval_batch(ds, 32, seed=0)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, fixed_eval_batch(ds, 32, seed=1)[0])
    assert len({img.numpy().tobytes() for img in x}) == 32  # distinct samples
    x_all, _ = fixed_eval_batch(ds, len(ds), seed=0)
    assert torch.equal(x_all, torch.stack([ds[i][0] for i in range(len(ds))]))  # n = len: the whole split, in order
    for n, exc in ((0, ValueError), (len(ds) + 1, ValueError), (2.0, TypeError)):
        with pytest.raises(exc, match="n must be"):
            fixed_eval_batch(ds, n, seed=0)
