"""Two gloo processes on CPU give the same metrics (KID included: features gathered in global order) as one process."""
import pickle

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainers.data.loader import build_dataset
from trainers.distributed import share as _share
from trainers.evaluation.evaluator import Evaluator
from trainers.evaluation.metrics import InceptionScoreStats, inception_score

N = 90


def _samples():
    return torch.rand(N, 1, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1


def _worker(rank, world, init_file, cache_dir, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        ds = build_dataset("digits", image_size=8, split="test")
        ev = Evaluator(("fd_pixel", "spectrum", "kid"), ds, N, 20, "cpu", cache_dir, rank=rank, world_size=world)
        ev.prepare()
        start, end = _share(N, rank, world)
        x = _samples()
        res = ev.evaluate_batches([(x[i:min(i + 20, end)], None) for i in range(start, end, 20)], N, start=start)
        labels = []
        ev.evaluate(lambda lab: labels.append(lab) or torch.zeros(len(lab), 1, 8, 8))
        logits = torch.randn(N, 7, generator=torch.Generator().manual_seed(9))
        isc = InceptionScoreStats(N, 7)
        isc.update(logits[start:end], torch.arange(start, end))
        is_value = isc.all_reduce().score()
        bad = torch.zeros(end - start, 1, 8, 8)
        if rank == 1:
            bad[0, 0, 0, 0] = float("nan")
        try:
            ev.evaluate_batches([(bad, None)], N, start=start)
            error = None
        except Exception as e:  # noqa: BLE001 - recorded for the parent to check
            error = f"{type(e).__name__}: {e}"
        with open(f"{out_dir}/rank{rank}.pkl", "wb") as f:
            pickle.dump({"metrics": res.metrics, "labels": torch.cat(labels), "is": is_value, "error": error}, f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "cache"), str(tmp_path)), nprocs=2)
    out = [pickle.load(open(tmp_path / f"rank{r}.pkl", "rb")) for r in range(2)]
    ds = build_dataset("digits", image_size=8, split="test")
    ev = Evaluator(("fd_pixel", "spectrum", "kid"), ds, N, 20, "cpu", tmp_path / "cache1")
    ev.prepare()
    single = ev.evaluate_batches([(_samples(), None)], N).metrics
    for r in range(2):  # rank 1 receives rank 0's numbers by broadcast
        assert out[r]["metrics"].keys() == single.keys()
        for k, v in single.items():
            assert out[r]["metrics"][k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    labels = torch.cat([out[0]["labels"], out[1]["labels"]])
    assert torch.equal(labels, torch.arange(N) % 10)  # contiguous shares of the global class-balanced labels
    logits = torch.randn(N, 7, generator=torch.Generator().manual_seed(9))
    assert np.allclose(out[0]["is"], inception_score(logits), rtol=1e-12)
    assert "1 non-finite values" in out[1]["error"]
    assert out[0]["error"] == "RuntimeError: evaluation failed on another rank (see its error)"
