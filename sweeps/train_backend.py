"""Ray Train's torch process-group set-up, without `import torch` in the Train controller.

Ray Train unpickles a run's backend config in its controller actor, and Ray's `TorchConfig` lives in a module that
imports torch at the top: one `import torch` per trial (1.6 s on an idle core, 2-4 s while the trial's other
processes start on the same cores; measured with `python -X importtime` in the controller's log) in a process that
never touches a tensor. `WorkerTorchConfig` is the same configuration (`backend`, `init_method="env"`, `timeout_s`)
whose backend runs, on the workers, the same functions Ray's `_TorchBackend` runs: MASTER_ADDR/MASTER_PORT from rank
0's address, Ray's distributed environment variables (LOCAL_RANK, RANK, WORLD_SIZE, ...), Ray's
`_setup_torch_process_group`, and Ray's `_shutdown_torch` at the end. Those are imported inside the worker functions
(the workers import torch anyway), so the controller side of this module needs only Ray.

Offered for the devices our trainers run on: CPU workers get gloo, GPU workers NCCL (TorchTrainer fills `backend`
from `ScalingConfig.use_gpu`). Ray's TPU/HPU set-up is not offered.

    python -c "import pickle, sys; from sweeps.train_backend import WorkerTorchConfig; \
c = pickle.loads(pickle.dumps(WorkerTorchConfig(backend='gloo'))); c.backend_cls(); print('torch' in sys.modules)"
    pytest tests/test_train_backend.py      # a 2-worker Ray Train run all-reduces over this process group (~40 s)
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

import ray
from ray.train.backend import Backend, BackendConfig

logger = logging.getLogger(__name__)
BACKENDS = ("gloo", "nccl")


class _CudaDeviceContext:
    """Ray's TorchConfigContextManager, imported when the train function starts (on a worker, never the controller)."""

    def __enter__(self):
        from ray.train.torch.config import TorchConfigContextManager

        self._inner = TorchConfigContextManager()
        return self._inner.__enter__()

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


@dataclass
class WorkerTorchConfig(BackendConfig):
    """Drop-in `torch_config` for `TorchTrainer`: Ray's TorchConfig fields, env:// initialisation only."""

    backend: Optional[str] = None
    init_method: str = "env"
    timeout_s: int = 1800

    @property
    def backend_cls(self):
        return WorkerTorchBackend

    @property
    def train_func_context(self):
        return _CudaDeviceContext

    @property
    def framework(self):
        from ray.train.v2._internal.util import TrainingFramework

        return TrainingFramework.TORCH

    def to_dict(self) -> Dict[str, Any]:
        return {"backend": self.backend, "init_method": self.init_method, "timeout_s": self.timeout_s}


def _set_master_and_ray_env(addr: str, port: int) -> None:
    from ray.train.torch.config import _set_torch_distributed_env_vars

    os.environ["MASTER_ADDR"] = addr
    os.environ["MASTER_PORT"] = str(port)
    _set_torch_distributed_env_vars()  # LOCAL_RANK, RANK, WORLD_SIZE, ...: torch's env:// init reads them


def _init_process_group(**kwargs: Any) -> None:
    from ray.train.torch.config import _setup_torch_process_group

    _setup_torch_process_group(**kwargs)


def _shutdown_process_group(destroy_process_group: bool) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(destroy_process_group=destroy_process_group)


class WorkerTorchBackend(Backend):
    """The controller side: decides the backend, tells workers the rendezvous address, waits for their set-up."""

    share_cuda_visible_devices: bool = True  # as Ray's torch backend: workers on one node see all of its GPUs

    def on_start(self, worker_group, backend_config: WorkerTorchConfig) -> None:
        from ray.train._internal.utils import get_address_and_port

        if backend_config.init_method != "env":
            raise ValueError(f"WorkerTorchConfig.init_method: only 'env' is offered, got {backend_config.init_method!r}")
        backend = backend_config.backend
        if backend is None:
            backend = "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo"
        if backend not in BACKENDS:
            raise ValueError(f"WorkerTorchConfig.backend: expected one of {BACKENDS}, got {backend!r}")
        addr, port = worker_group.execute_single(0, get_address_and_port)
        worker_group.execute(_set_master_and_ray_env, addr=addr, port=port)
        n = len(worker_group)
        ray.get([worker_group.execute_single_async(i, _init_process_group, backend=backend, world_rank=i,
                                                   world_size=n, init_method="env://",
                                                   timeout_s=backend_config.timeout_s) for i in range(n)])

    def on_shutdown(self, worker_group, backend_config: WorkerTorchConfig) -> None:
        from ray._private.ray_constants import env_integer
        from ray.exceptions import GetTimeoutError
        from ray.train.constants import (DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S,
                                         TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)

        futures = worker_group.execute_async(_shutdown_process_group, destroy_process_group=len(worker_group) > 1)
        # Ray's own setting, read as Ray's torch backend reads it
        timeout_s = env_integer(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)
        try:
            ray.get(futures, timeout=timeout_s)
        except GetTimeoutError:
            logger.warning("torch process group shutdown timed out after %s s", timeout_s)
