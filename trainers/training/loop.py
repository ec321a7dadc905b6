"""One training run: plain PyTorch, progress counted in images, resumable by re-running the same command.

    specforce train sweeps/configs/tiny_train.yaml --out runs/tiny        # CPU, a few minutes
    python -m trainers.training.loop sweeps/configs/tiny_train.yaml runs/tiny     # the same without the CLI

Ray Train and MLflow plug in through `Hooks` (see sweeps/trial.py): the loop never imports them. Under
torch.distributed (Ray Train sets it up) the model is wrapped in DDP, each rank draws its own data shard and its rows
of the global batch's noise, and logged scalars are float64 sums all-reduced across ranks.

Pairing: the model's initial weights depend only on the seed (Spectral Forcing has no parameters), and the data
order, t and noise of step k are drawn from generators seeded by (seed, k), for the global batch (N workers train
the same stream as one process at the same global batch: tests/test_ddp_equivalence.py). Two arms that differ only
in SF therefore see exactly the same images, times and noise, and a resumed run continues the same stream.

GPU options (trainers/training/accel.py), checked against the resolved device at setup, before any data is built:
`model.compile` compiles every JiT block in place (SF stays eager), `optim.fused` picks the fused AdamW kernel.

What the loop builds comes from trainers/training/builders.py (shared with `specforce eval`), its per-step rules (lr warm-up,
autocast, step generators, cadences) from trainers/training/step_rules.py, and the held-out denoising loss from
trainers/evaluation/heldout.py. CPU check: `.venv/bin/python -m pytest tests/test_train_cli.py tests/test_gpu_options.py -q`.
"""
from __future__ import annotations

import contextlib
import json
import pathlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

import specforce_contracts as C
from trainers.training.accel import build_adamw, compile_blocks
from trainers.training.builders import (build_denoiser, build_evaluator, build_flow, build_dataset_for, build_heldout,
                               data_spectrum, generate_images, model_shape_params)
from trainers.training.checkpoint import load_checkpoint, save_checkpoint
from trainers.training.config import TrainConfig, dump_yaml
from trainers.data.cond import build_cond, cond_of
from trainers.evaluation.heldout import HeldOutLoss
from trainers.evaluation.images import save_grid
from trainers.training.step_rules import autocast_for, lr_at, next_multiple, step_generator


class Hooks:
    """Edges of the loop. Default: print progress to stdout. Ray/MLflow layers subclass this."""

    def on_start(self, run: "TrainingRun") -> None:
        pass

    def on_metrics(self, images: int, metrics: dict[str, float]) -> None:
        """Called on every rank with the same all-reduced values; `images` = training images seen."""
        if _rank() == 0:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not k.endswith(C.FLOOR_SUFFIX))
            print(f"[{images:>9,d} img] {shown}", flush=True)

    def on_artifact(self, path: pathlib.Path, artifact_dir: str) -> None:
        """A file written by rank 0 under the run folder (sample grid, spectra, mask picture)."""

    def on_checkpoint(self, images: int, path: pathlib.Path, metrics: dict[str, float]) -> None:
        """Called on every rank after rank 0 wrote the checkpoint file (a barrier for Ray's report)."""

    def on_end(self, run: "TrainingRun", final_metrics: dict[str, float]) -> None:
        pass


@dataclass
class TrainingRun:
    cfg: TrainConfig
    out_dir: pathlib.Path
    model: torch.nn.Module
    ema: Any
    optimizer: torch.optim.Optimizer
    dataset: Any
    device: torch.device
    images_seen: int = 0
    step: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)
    extra_params: dict[str, Any] = field(default_factory=dict)  # e.g. fitted data spectrum

    @property
    def raw_model(self) -> torch.nn.Module:
        return self.model.module if hasattr(self.model, "module") else self.model


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1



class Trainer:
    """Builds everything from a config and runs to `optim.total_images`. `run()` resumes when a checkpoint exists."""

    def __init__(self, cfg: TrainConfig, out_dir: str | pathlib.Path, hooks: Hooks | None = None,
                 *, cache_dir: str | pathlib.Path | None = None):
        self.cfg = cfg
        self.out_dir = pathlib.Path(out_dir)
        self.hooks = hooks or Hooks()
        self.resume_from = self.out_dir / C.RUN_CHECKPOINT_FILE  # resuming = re-running the same command
        self.cache_dir = pathlib.Path(cache_dir) if cache_dir else self.out_dir.parent / ".cache"
        self.rank, self.world = _rank(), _world()
        if cfg.optim.batch_size % self.world:
            raise ValueError(f"optim.batch_size {cfg.optim.batch_size} is not divisible by {self.world} workers")
        self.local_batch = cfg.optim.batch_size // self.world

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self) -> TrainingRun:
        from trainers.model.ema import EMA

        cfg = self.cfg
        built = build_denoiser(cfg)  # checks the GPU options against the device before any data is built
        device, dataset, model = built.device, built.dataset, built.model
        ema = EMA(model, decays=cfg.optim.ema_decays, warmup=cfg.optim.ema_warmup)
        optimizer = build_adamw(model.parameters(), lr=cfg.optim.learning_rate, betas=cfg.optim.betas,
                                weight_decay=cfg.optim.weight_decay, fused=cfg.optim.fused, device=device)
        if cfg.model.compile:  # in place: parameter names, EMA and checkpoints are unchanged; SF stays eager
            compile_blocks(model, device=device, mode=cfg.model.compile_mode)
        self.flow = build_flow(cfg, dataset.num_classes)
        # data.options.cond: labels -> fixed vectors on the device (trainers/data/cond.py); None keeps labels
        self.cond = build_cond(cfg.data.options, dataset.num_classes)
        run = TrainingRun(cfg, self.out_dir, model, ema, optimizer, dataset, device)
        run.extra_params.update(built.fitted)
        run.extra_params.update(data_spectrum(built.sample))
        run.extra_params.update(model_shape_params(model, cfg))
        if getattr(dataset, "uses_root", False):  # file-backed data: its digest keeps runs on other data apart
            run.extra_params[C.DATA_DIGEST_PARAM] = dataset.identity()["digest"][:C.DATA_DIGEST_CHARS]
        if self.resume_from.is_file():
            self._load(run, load_checkpoint(self.resume_from, map_location=device))
        if self.world > 1:
            ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
            run.model = torch.nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / C.RUN_CONFIG_FILE).write_text(dump_yaml(cfg))
        # the held-out split, built once: the evaluator's reference and the fixed denoising batch both come from it
        self.eval_set = build_dataset_for(cfg, "test") if (cfg.eval.metrics or cfg.eval.denoise_loss) else None
        self.heldout = build_heldout(cfg, self.eval_set, device) if cfg.eval.denoise_loss else None
        self.evaluator = build_evaluator(cfg, self.eval_set, device, self.cache_dir, rank=self.rank,
                                         world_size=self.world)
        return run

    def _load(self, run: TrainingRun, state: dict[str, Any]) -> None:
        if state["config"] != self.cfg.model_dump(mode="json"):
            raise ValueError(f"checkpoint {self.resume_from} was written by a different config; "
                             "use a new output folder or the same config to resume")
        run.model.load_state_dict(state["model"])
        run.ema.load_state_dict(state["ema"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.images_seen, run.step = int(state["images_seen"]), int(state["step"])
        if self.rank == 0:
            print(f"resumed from {self.resume_from} at {run.images_seen:,d} images", flush=True)

    def _save(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        path = self.out_dir / C.RUN_CHECKPOINT_FILE
        if self.rank == 0:
            save_checkpoint({"model": run.raw_model.state_dict(), "ema": run.ema.state_dict(),
                             "optimizer": run.optimizer.state_dict(), "images_seen": run.images_seen,
                             "step": run.step, "config": self.cfg.model_dump(mode="json")}, path)
        if self.world > 1:
            dist.barrier()
        self.hooks.on_checkpoint(run.images_seen, path, metrics)

    # ------------------------------------------------------------------------------------------- training
    def run(self) -> dict[str, float]:
        from trainers.data.loader import infinite_loader, to_model_input

        run = self.setup()
        cfg = self.cfg
        self.hooks.on_start(run)
        if self.rank == 0:
            self._save_mask_picture(run)
        # uint8 batches from uint8-native data (4x fewer bytes per image to the device), float on the device
        pin = run.device.type == "cuda" if cfg.data.pin_memory is None else cfg.data.pin_memory
        loader = infinite_loader(run.dataset, batch_size=self.local_batch, seed=cfg.seed, rank=self.rank,
                                 world_size=self.world, num_workers=cfg.data.num_workers,
                                 start_images=run.images_seen, pin_memory=pin,
                                 persistent_workers=cfg.data.persistent_workers,
                                 prefetch_factor=cfg.data.prefetch_factor, raw=True)
        total = cfg.optim.total_images
        next_log = next_multiple(run.images_seen, cfg.log_every_images)
        next_eval = next_multiple(run.images_seen, cfg.eval.every_images) if cfg.eval.every_images else None
        next_grid = next_multiple(run.images_seen, cfg.eval.grid_every_images) if cfg.eval.grid_every_images else None
        next_ckpt = next_multiple(run.images_seen, cfg.checkpoint_every_images) if cfg.checkpoint_every_images else None
        loss_sum = torch.zeros(2, dtype=torch.float64, device=run.device)  # (sum of losses, count)
        t_log = time.perf_counter()
        images_at_log = run.images_seen
        run.model.train()
        last_metrics: dict[str, float] = {}
        while run.images_seen < total:
            x, y = next(loader)
            x, y = to_model_input(x.to(run.device, non_blocking=True)), y.to(run.device, non_blocking=True)
            y = cond_of(self.cond, y)
            lr = lr_at(cfg, run.images_seen)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            # one generator for every rank (rank 0's): the global batch's t and noise do not depend on the world size
            gen = step_generator(cfg.seed, 0, run.step, 0, run.device)
            with autocast_for(cfg, run.device):
                loss, _ = self.flow.loss(run.model, x, y, generator=gen, shard=(self.rank, self.world))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss is {loss.item()} at {run.images_seen:,d} images")
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.optim.grad_clip:
                torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip)
            run.optimizer.step()
            run.ema.update(run.raw_model, run.step)
            run.step += 1
            run.images_seen += cfg.optim.batch_size
            loss_sum += torch.stack([loss.detach().double(), torch.ones((), dtype=torch.float64, device=run.device)])

            done = run.images_seen >= total
            if run.images_seen >= next_log or done:
                if self.world > 1:
                    dist.all_reduce(loss_sum)
                elapsed = time.perf_counter() - t_log
                metrics = {C.TRAIN_LOSS: float(loss_sum[0] / loss_sum[1]), C.TRAIN_LR: lr,
                           C.TRAIN_IMAGES_PER_S: (run.images_seen - images_at_log) / max(elapsed, 1e-9)}
                last_metrics.update(metrics)
                self._emit(run, metrics)
                loss_sum.zero_()
                t_log, images_at_log = time.perf_counter(), run.images_seen
                next_log = next_multiple(run.images_seen, cfg.log_every_images)
            if next_grid is not None and run.images_seen >= next_grid and not done:
                self._save_grid(run, f"grid_{run.images_seen:09d}.png")
                next_grid = next_multiple(run.images_seen, cfg.eval.grid_every_images)
            evaluated = False
            if next_eval is not None and run.images_seen >= next_eval and not done:
                last_metrics.update(self.evaluate(run))
                next_eval = next_multiple(run.images_seen, cfg.eval.every_images)
                evaluated = True
            # every evaluation is followed by a checkpoint: Ray reports (metrics + checkpoint) happen there
            if not done and (evaluated or (next_ckpt is not None and run.images_seen >= next_ckpt)):
                self._save(run, last_metrics)
                if next_ckpt is not None:
                    next_ckpt = next_multiple(run.images_seen, cfg.checkpoint_every_images)
        # the end: final grid, final evaluation, final checkpoint (reported with the final metrics)
        self._save_grid(run, "final.png")
        last_metrics.update(self.evaluate(run, final=True))
        if cfg.save_checkpoint and self.rank == 0:
            self._save_ema(run)
        self._save(run, last_metrics)
        self.hooks.on_end(run, last_metrics)
        return last_metrics

    def _save_ema(self, run: TrainingRun) -> None:
        """The sampling weights alone (a `specforce eval` input), loadable like any checkpoint."""
        with self._ema_weights(run) as model:
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        path = save_checkpoint({"model": weights, "images_seen": run.images_seen, "step": run.step,
                                "config": self.cfg.model_dump(mode="json"), "ema_index": self.cfg.sample.ema_index},
                               self.out_dir / C.RUN_EMA_FILE)
        self.hooks.on_artifact(path, C.ARTIFACT_CHECKPOINTS_DIR)

    def _emit(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        if self.rank == 0:
            with (self.out_dir / C.RUN_METRICS_FILE).open("a") as f:
                f.write(json.dumps({C.IMAGES_KEY: run.images_seen, **metrics}) + "\n")
        self.hooks.on_metrics(run.images_seen, metrics)

    # ----------------------------------------------------------------------------------------- evaluation
    @contextlib.contextmanager
    def _ema_weights(self, run: TrainingRun):
        with run.ema.swapped(run.raw_model, index=self.cfg.sample.ema_index):
            yield run.raw_model

    def generate(self, run: TrainingRun, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples from the EMA weights for the given labels (null class = dataset.num_classes)."""
        with self._ema_weights(run) as model:
            return generate_images(self.cfg, model, labels, channels=run.dataset.channels,
                                   num_classes=run.dataset.num_classes, device=run.device, generator=generator)

    def _grid_labels(self, run: TrainingRun) -> torch.Tensor:
        n = self.cfg.eval.grid_size**2
        k = run.dataset.num_classes
        return torch.arange(n) % k if k > 0 else torch.full((n,), 0, dtype=torch.long)

    def _save_grid(self, run: TrainingRun, name: str) -> None:
        if self.rank != 0:
            return
        gen = torch.Generator(device=run.device).manual_seed(self.cfg.seed + 12345)  # same noise for every grid
        images = self.generate(run, self._grid_labels(run), generator=gen)
        path = save_grid(images, self.out_dir / C.ARTIFACT_SAMPLES_DIR / name, nrow=self.cfg.eval.grid_size, scale=2)
        self.hooks.on_artifact(path, C.ARTIFACT_SAMPLES_DIR)

    def _save_mask_picture(self, run: TrainingRun) -> None:
        spectral = getattr(run.raw_model, "spectral", None)
        if spectral is None:
            return
        from trainers.training.sf_figures import plot_spectral_mask

        path = plot_spectral_mask(spectral, self.out_dir / C.ARTIFACT_SPECTRAL_DIR / "mask.png")
        self.hooks.on_artifact(path, C.ARTIFACT_SPECTRAL_DIR)

    def evaluate(self, run: TrainingRun, final: bool = False) -> dict[str, float]:
        with self._ema_weights(run) as model:
            metrics, provenance = evaluate_weights(
                self.cfg, model, channels=run.dataset.channels, num_classes=run.dataset.num_classes,
                device=run.device, rank=self.rank, flow=self.flow, heldout=self.heldout, evaluator=self.evaluator,
                out_dir=self.out_dir, on_artifact=self.hooks.on_artifact)
        run.provenance.update(provenance)
        self._emit(run, metrics)
        return metrics


def evaluate_weights(cfg: TrainConfig, model: torch.nn.Module, *, channels: int, num_classes: int,
                     device: torch.device, rank: int, flow, heldout: HeldOutLoss | None, evaluator,
                     out_dir: pathlib.Path, on_artifact: Callable[[pathlib.Path, str], None]
                     ) -> tuple[dict[str, float], dict[str, Any]]:
    """One evaluation of the sampling weights in `model`: the held-out loss, then the sample metrics of `evaluator`
    (its artifacts written by rank 0 under out_dir/eval/), and `eval/seconds`. Returns (metrics, provenance).
    The loop calls it with the EMA swapped in; `specforce eval` (sweeps/commands/evaluate.py) with a checkpoint's."""
    metrics: dict[str, float] = {}
    provenance: dict[str, Any] = {}
    t0 = time.perf_counter()
    if heldout is not None:
        # every rank holds the same fixed batch and weights, so no reduction is needed
        metrics.update(heldout(flow, model))
    if evaluator is not None:
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 7919 + rank + 1)
        result = evaluator.evaluate(lambda labels: generate_images(cfg, model, labels, channels=channels,
                                                                   num_classes=num_classes, device=device,
                                                                   generator=gen))
        metrics.update({C.EVAL_PREFIX + k: float(v) for k, v in result.metrics.items()})
        provenance.update(result.provenance)
        if rank == 0 and result.artifacts:
            for name, obj in result.artifacts.items():
                path = out_dir / C.ARTIFACT_EVAL_DIR / f"{name}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(obj))
                on_artifact(path, C.ARTIFACT_EVAL_DIR)
    metrics[C.EVAL_SECONDS] = time.perf_counter() - t0
    return metrics, provenance


def train(cfg: TrainConfig, out_dir: str | pathlib.Path, hooks: Hooks | None = None) -> dict[str, float]:
    return Trainer(cfg, out_dir, hooks).run()


if __name__ == "__main__":
    from trainers.training.config import load_config

    if len(sys.argv) != 3:
        sys.exit("usage: python -m trainers.training.loop CONFIG.yaml OUT_DIR")
    print(json.dumps(train(load_config(sys.argv[1]), sys.argv[2]), indent=2))
