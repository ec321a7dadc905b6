"""The lean trial launch's Ray Train pieces (sweeps/train_backend.py, sweeps/trial.py `lean_trainer_class`).

- the backend config a Train controller unpickles pulls in no torch (what it exists for);
- a real 2-worker Ray Train run on it gets a gloo process group of the right size, ranks and env vars, and an
  all-reduce over it sums across workers (the same DDP set-up as Ray's TorchConfig);
- `lean_trainer_class(keep_pg_cleaner=...)` drops exactly the callbacks it says it drops.

    pytest tests/test_train_backend.py        # ~1 min on 2 cores (starts a local Ray)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_controller_side_imports_no_torch():
    # a fresh interpreter: unpickle the config and build its backend as the controller does, then look for torch
    code = ("import pickle, sys; from sweeps.train_backend import WorkerTorchConfig; "
            "c = pickle.loads(pickle.dumps(WorkerTorchConfig(backend='gloo'))); b = c.backend_cls(); "
            "c.framework; c.to_dict(); print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_rejects_init_methods_and_backends_it_does_not_offer():
    from sweeps.train_backend import WorkerTorchBackend, WorkerTorchConfig

    class OneCpuGroup:
        def get_resources_per_worker(self):
            return {"CPU": 1}

    with pytest.raises(ValueError, match="init_method: only 'env'.*'tcp'"):
        WorkerTorchBackend().on_start(OneCpuGroup(), WorkerTorchConfig(init_method="tcp"))
    with pytest.raises(ValueError, match="backend: expected one of.*'hccl'"):
        WorkerTorchBackend().on_start(OneCpuGroup(), WorkerTorchConfig(backend="hccl"))


def _worker_fn(config):
    import pathlib

    import torch
    import torch.distributed as dist

    import ray.train

    rank = ray.train.get_context().get_world_rank()
    total = torch.tensor([float(rank + 1)])
    dist.all_reduce(total)  # 1 + 2 over two workers
    seen = {"rank": rank, "world": dist.get_world_size(), "backend": dist.get_backend(), "sum": float(total.item()),
            "env_rank": os.environ["RANK"], "env_world": os.environ["WORLD_SIZE"], "master": os.environ["MASTER_ADDR"]}
    (pathlib.Path(config["out"]) / f"rank{rank}.json").write_text(json.dumps(seen))


@pytest.mark.timeout(300)
def test_two_workers_get_a_gloo_process_group(tmp_path):
    import ray
    import ray.train

    from sweeps.trial import lean_trainer_class

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"RAY_TRAIN_V2_ENABLED": "1",  # workers import _worker_fn from here
                                       "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}})
    try:
        lean_trainer_class(keep_pg_cleaner=False)(
            _worker_fn, train_loop_config={"out": str(tmp_path)},
            scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
            run_config=ray.train.RunConfig(name="backend-check", storage_path=str(tmp_path / "ray"))).fit()
    finally:
        ray.shutdown()
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, m in enumerate(seen):
        assert (m["rank"], m["world"], m["backend"], m["sum"]) == (rank, 2, "gloo", 3.0), m
        assert (m["env_rank"], m["env_world"]) == (str(rank), "2"), m
    assert seen[0]["master"] and seen[0]["master"] == seen[1]["master"]


def test_lean_trainer_drops_only_what_it_says():
    import ray.train
    from ray.train.v2._internal.callbacks.backend_setup import BackendSetupCallback
    from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

    from sweeps.train_backend import WorkerTorchConfig
    from sweeps.trial import lean_trainer_class

    def kinds(keep):
        trainer = lean_trainer_class(keep_pg_cleaner=keep)(_worker_fn, scaling_config=ray.train.ScalingConfig(
            num_workers=1))
        assert isinstance(trainer.backend_config, WorkerTorchConfig) and trainer.backend_config.backend == "gloo"
        return {type(c) for c in trainer._create_default_callbacks()}

    kept, dropped = kinds(True), kinds(False)
    assert DatasetsCallback not in kept and DatasetsCallback not in dropped
    assert PlacementGroupCleanerCallback in kept and PlacementGroupCleanerCallback not in dropped
    assert BackendSetupCallback in kept and kept - dropped == {PlacementGroupCleanerCallback}
