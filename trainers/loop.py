"""One training run: plain PyTorch, progress counted in images, resumable by re-running the same command.

    specforce train sweeps/configs/tiny_train.yaml --out runs/tiny        # CPU, a few minutes
    python -m trainers.loop sweeps/configs/tiny_train.yaml runs/tiny     # the same without the CLI

Ray Train and MLflow plug in through `Hooks` (see sweeps/trial.py): the loop never imports them. Under
torch.distributed (Ray Train sets it up) the model is wrapped in DDP, each rank draws its own data shard and noise,
and logged scalars are float64 sums all-reduced across ranks.

Pairing: the model's initial weights depend only on the seed (Spectral Forcing has no parameters), and the data
order, t and noise of step k are drawn from generators seeded by (seed, rank, k). Two arms that differ only in SF
therefore see exactly the same images, times and noise, and a resumed run continues the same stream.

GPU options (trainers/accel.py), checked against the resolved device at setup, before any data is built:
`model.compile` compiles every JiT block in place (SF stays eager), `optim.fused` picks the fused AdamW kernel.
"""
from __future__ import annotations

import contextlib
import json
import math
import pathlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist

from trainers.accel import build_adamw, check_compile_supported, compile_blocks, resolve_fused
from trainers.checkpoint import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
from trainers.config import TrainConfig, dump_yaml
from trainers.images import save_grid

T_GRID_BUCKETS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class Hooks:
    """Edges of the loop. Default: print progress to stdout. Ray/MLflow layers subclass this."""

    def on_start(self, run: "TrainingRun") -> None:
        pass

    def on_metrics(self, images: int, metrics: dict[str, float]) -> None:
        """Called on every rank with the same all-reduced values; `images` = training images seen."""
        if _rank() == 0:
            shown = ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if not k.endswith("_floor"))
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


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for but torch.cuda.is_available() is False")
        index = torch.cuda.current_device()
        return torch.device("cuda", index)
    return torch.device("cpu")


def build_dataset_for(cfg: TrainConfig, split: str = "train"):
    from trainers.data import build_dataset

    return build_dataset(cfg.data.name, image_size=cfg.data.image_size, split=split, root=cfg.data.root,
                         seed=cfg.data.seed, **cfg.data.options)


SPECTRUM_SAMPLE = 512  # training images a power-law fit of the data spectrum looks at


def spectrum_sample(dataset, n: int = SPECTRUM_SAMPLE) -> torch.Tensor:
    """The first n training images, stacked once for every power-law fit of a run."""
    return torch.stack([dataset[i][0] for i in range(min(len(dataset), n))])


def build_spectral(cfg: TrainConfig, images: torch.Tensor | None = None) -> tuple[torch.nn.Module | None, dict[str, float]]:
    """The SF operator for this config (None when disabled), plus fitted spectrum params to log.

    `images` (see `spectrum_sample`) are needed only by the snr schedule without an explicit r0."""
    s = cfg.spectral
    fitted: dict[str, float] = {}
    if not s.enabled or s.schedule == "none":
        return None, fitted
    from trainers.spectral import SpectralForcing, fit_power_law

    alpha, r0 = s.alpha, s.r0
    if s.schedule == "snr" and (r0 is None or s.fit_from_data):
        if images is None:
            raise ValueError("spectral.schedule=snr without spectral.r0 needs data images to fit the power law")
        fit_alpha, fit_r0 = fit_power_law(images, noise_var=cfg.flow.noise_scale**2)
        fitted = {"spectral.fitted_alpha": float(fit_alpha), "spectral.fitted_r0": float(fit_r0)}
        r0 = float(fit_r0) if r0 is None or s.fit_from_data else r0
        alpha = float(fit_alpha) if s.fit_from_data else alpha
    sf = SpectralForcing(cfg.data.image_size, s.schedule, c_min=s.c_min, c_max=s.c_max, kappa=s.kappa, alpha=alpha,
                         r0=r0, c_const=s.c_const, window_size=s.window_size, identity_at_data=s.identity_at_data)
    return sf, fitted


def build_model(cfg: TrainConfig, channels: int, num_classes: int, spectral: torch.nn.Module | None) -> torch.nn.Module:
    from trainers.jit import build_jit

    return build_jit(cfg.model.preset, image_size=cfg.data.image_size, patch_size=cfg.model.patch_size,
                     in_channels=channels, num_classes=num_classes, spectral=spectral, bottleneck=cfg.model.bottleneck)


def model_shape_params(model: torch.nn.Module) -> dict[str, Any]:
    """Derived params of the built model: token count, parameter count, the resolved bottleneck width and the patch
    compression ratio (patch dim C*p*p over the bottleneck; JiT-B/32 at 3 channels: 3072/128 = 24)."""
    preset = getattr(model, "preset", None)
    out: dict[str, Any] = {"model.tokens": getattr(model, "num_tokens", None),
                           "model.parameters": sum(p.numel() for p in model.parameters())}
    if preset is not None:
        out["model.bottleneck"] = preset.bottleneck
        out["model.compression_ratio"] = model.in_channels * preset.patch_size ** 2 / preset.bottleneck
    return out


def data_spectrum(images: torch.Tensor) -> dict[str, float]:
    """Power-law fit of the data's radial DCT spectrum: logged with every run so reports can draw the SNR front."""
    from trainers.spectral import fit_power_law

    try:
        alpha, r0 = fit_power_law(images)
    except ValueError as err:  # e.g. 8x8 digits peak at the stroke width: no power law to log
        print(f"note: data spectrum is not a power law ({err}); logging NaN", flush=True)
        return {"data.spectrum_alpha": float("nan"), "data.spectrum_r0": float("nan")}
    return {"data.spectrum_alpha": float(alpha), "data.spectrum_r0": float(r0)}


def lr_at(cfg: TrainConfig, images: int) -> float:
    base = cfg.optim.learning_rate
    if cfg.optim.warmup_images and images < cfg.optim.warmup_images:
        return base * (images + cfg.optim.batch_size) / cfg.optim.warmup_images
    return base


def _autocast(cfg: TrainConfig, device: torch.device):
    use = cfg.optim.amp == "bf16" or (cfg.optim.amp == "auto" and device.type == "cuda")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _step_generator(seed: int, rank: int, step: int, stream: int, device: torch.device) -> torch.Generator:
    # One generator per (seed, rank, step, stream): exact resume and identical streams across paired arms.
    g = torch.Generator(device=device)
    g.manual_seed(((seed * 1_000_003 + rank) * 1_000_033 + step) * 7 + stream)
    return g


class Trainer:
    """Builds everything from a config and runs to `optim.total_images`. `run()` resumes when a checkpoint exists."""

    def __init__(self, cfg: TrainConfig, out_dir: str | pathlib.Path, hooks: Hooks | None = None,
                 *, resume_from: str | pathlib.Path | None = None, cache_dir: str | pathlib.Path | None = None):
        self.cfg = cfg
        self.out_dir = pathlib.Path(out_dir)
        self.hooks = hooks or Hooks()
        self.resume_from = pathlib.Path(resume_from) if resume_from else self.out_dir / CHECKPOINT_NAME
        self.cache_dir = pathlib.Path(cache_dir) if cache_dir else self.out_dir.parent / ".cache"
        self.rank, self.world = _rank(), _world()
        if cfg.optim.batch_size % self.world:
            raise ValueError(f"optim.batch_size {cfg.optim.batch_size} is not divisible by {self.world} workers")
        self.local_batch = cfg.optim.batch_size // self.world

    # ----------------------------------------------------------------------------------------------- setup
    def setup(self) -> TrainingRun:
        from trainers.ema import EMA
        from trainers.flow import RectifiedFlow

        cfg = self.cfg
        device = resolve_device(cfg.device)
        # GPU options are checked against the resolved device before any data is built: no silent fallback
        if cfg.model.compile:
            check_compile_supported(device)
        resolve_fused(cfg.optim.fused, device)
        torch.manual_seed(cfg.seed)
        dataset = build_dataset_for(cfg, "train")
        sample = spectrum_sample(dataset)
        spectral, fitted = build_spectral(cfg, sample)
        num_classes = dataset.num_classes
        torch.manual_seed(cfg.seed)  # the same initial weights with and without SF
        model = build_model(cfg, dataset.channels, num_classes, spectral).to(device)
        ema = EMA(model, decays=cfg.optim.ema_decays, warmup=cfg.optim.ema_warmup)
        optimizer = build_adamw(model.parameters(), lr=cfg.optim.learning_rate, betas=cfg.optim.betas,
                                weight_decay=cfg.optim.weight_decay, fused=cfg.optim.fused, device=device)
        if cfg.model.compile:  # in place: parameter names, EMA and checkpoints are unchanged; SF stays eager
            compile_blocks(model, device=device, mode=cfg.model.compile_mode)
        self.flow = RectifiedFlow(p_mean=cfg.flow.p_mean, p_std=cfg.flow.p_std, t_eps=cfg.flow.t_eps,
                                  noise_scale=cfg.flow.noise_scale, label_drop=cfg.flow.label_drop,
                                  num_classes=num_classes)
        run = TrainingRun(cfg, self.out_dir, model, ema, optimizer, dataset, device)
        run.extra_params.update(fitted)
        run.extra_params.update(data_spectrum(sample))
        run.extra_params.update(model_shape_params(model))
        if self.resume_from.is_file():
            self._load(run, load_checkpoint(self.resume_from, map_location=device))
        if self.world > 1:
            ddp_kwargs = {"device_ids": [device.index]} if device.type == "cuda" else {}
            run.model = torch.nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(dump_yaml(cfg))
        # the held-out split, built once: the evaluator's reference and the fixed denoising batch both come from it
        self.eval_set = build_dataset_for(cfg, "test") if (cfg.eval.metrics or cfg.eval.denoise_loss) else None
        self.evaluator = self._build_evaluator(run)
        return run

    def _build_evaluator(self, run: TrainingRun):
        metrics = self.cfg.eval.metrics
        if not metrics:
            return None
        from trainers.evaluation import Evaluator

        ev = Evaluator(metrics=metrics, dataset=self.eval_set, num_samples=self.cfg.eval.num_samples,
                       batch_size=self.cfg.eval.batch_size, device=run.device, cache_dir=self.cache_dir,
                       inception_weights=self.cfg.eval.inception_weights, rank=self.rank, world_size=self.world,
                       seed=self.cfg.seed)
        ev.prepare()  # fails here, before any training, if e.g. Inception weights are missing
        return ev

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
        path = self.out_dir / CHECKPOINT_NAME
        if self.rank == 0:
            save_checkpoint({"model": run.raw_model.state_dict(), "ema": run.ema.state_dict(),
                             "optimizer": run.optimizer.state_dict(), "images_seen": run.images_seen,
                             "step": run.step, "config": self.cfg.model_dump(mode="json")}, path)
        if self.world > 1:
            dist.barrier()
        self.hooks.on_checkpoint(run.images_seen, path, metrics)

    # ------------------------------------------------------------------------------------------- training
    def run(self) -> dict[str, float]:
        from trainers.data import infinite_loader

        run = self.setup()
        cfg = self.cfg
        self.hooks.on_start(run)
        if self.rank == 0:
            self._save_mask_picture(run)
        loader = infinite_loader(run.dataset, batch_size=self.local_batch, seed=cfg.seed, rank=self.rank,
                                 world_size=self.world, num_workers=cfg.data.num_workers,
                                 start_images=run.images_seen)
        total = cfg.optim.total_images
        next_log = _next_multiple(run.images_seen, cfg.log_every_images)
        next_eval = _next_multiple(run.images_seen, cfg.eval.every_images) if cfg.eval.every_images else None
        next_grid = _next_multiple(run.images_seen, cfg.eval.grid_every_images) if cfg.eval.grid_every_images else None
        next_ckpt = _next_multiple(run.images_seen, cfg.checkpoint_every_images) if cfg.checkpoint_every_images else None
        loss_sum = torch.zeros(2, dtype=torch.float64, device=run.device)  # (sum of losses, count)
        t_log = time.perf_counter()
        images_at_log = run.images_seen
        run.model.train()
        last_metrics: dict[str, float] = {}
        while run.images_seen < total:
            x, y = next(loader)
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            lr = lr_at(cfg, run.images_seen)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            gen = _step_generator(cfg.seed, self.rank, run.step, 0, run.device)
            with _autocast(cfg, run.device):
                loss, _ = self.flow.loss(run.model, x, y, generator=gen)
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
                metrics = {"train/loss": float(loss_sum[0] / loss_sum[1]), "train/lr": lr,
                           "train/images_per_s": (run.images_seen - images_at_log) / max(elapsed, 1e-9)}
                last_metrics.update(metrics)
                self._emit(run, metrics)
                loss_sum.zero_()
                t_log, images_at_log = time.perf_counter(), run.images_seen
                next_log = _next_multiple(run.images_seen, cfg.log_every_images)
            if next_grid is not None and run.images_seen >= next_grid and not done:
                self._save_grid(run, f"grid_{run.images_seen:09d}.png")
                next_grid = _next_multiple(run.images_seen, cfg.eval.grid_every_images)
            evaluated = False
            if next_eval is not None and run.images_seen >= next_eval and not done:
                last_metrics.update(self.evaluate(run))
                next_eval = _next_multiple(run.images_seen, cfg.eval.every_images)
                evaluated = True
            # every evaluation is followed by a checkpoint: Ray reports (metrics + checkpoint) happen there
            if not done and (evaluated or (next_ckpt is not None and run.images_seen >= next_ckpt)):
                self._save(run, last_metrics)
                if next_ckpt is not None:
                    next_ckpt = _next_multiple(run.images_seen, cfg.checkpoint_every_images)
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
                               self.out_dir / "ema.pt")
        self.hooks.on_artifact(path, "checkpoints")

    def _emit(self, run: TrainingRun, metrics: dict[str, float]) -> None:
        if self.rank == 0:
            with (self.out_dir / "metrics.jsonl").open("a") as f:
                f.write(json.dumps({"images": run.images_seen, **metrics}) + "\n")
        self.hooks.on_metrics(run.images_seen, metrics)

    # ----------------------------------------------------------------------------------------- evaluation
    @contextlib.contextmanager
    def _ema_weights(self, run: TrainingRun):
        with run.ema.swapped(run.raw_model, index=self.cfg.sample.ema_index):
            yield run.raw_model

    def generate(self, run: TrainingRun, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Samples from the EMA weights for the given labels (null class = dataset.num_classes)."""
        from trainers.samplers import generate

        s = self.cfg.sample
        ds = run.dataset
        with self._ema_weights(run) as model:
            return generate(model, n=len(labels), image_shape=(ds.channels, self.cfg.data.image_size,
                                                               self.cfg.data.image_size),
                            labels=labels.to(run.device), sampler=s.sampler, steps=s.steps, cfg_scale=s.cfg_scale,
                            cfg_interval=s.cfg_interval, noise_scale=self.cfg.flow.noise_scale,
                            num_classes=ds.num_classes, generator=generator, device=run.device,
                            t_eps_last=s.t_eps_last)

    def _grid_labels(self, run: TrainingRun) -> torch.Tensor:
        n = self.cfg.eval.grid_size**2
        k = run.dataset.num_classes
        return torch.arange(n) % k if k > 0 else torch.full((n,), 0, dtype=torch.long)

    def _save_grid(self, run: TrainingRun, name: str) -> None:
        if self.rank != 0:
            return
        gen = torch.Generator(device=run.device).manual_seed(self.cfg.seed + 12345)  # same noise for every grid
        images = self.generate(run, self._grid_labels(run), generator=gen)
        path = save_grid(images, self.out_dir / "samples" / name, nrow=self.cfg.eval.grid_size, scale=2)
        self.hooks.on_artifact(path, "samples")

    def _save_mask_picture(self, run: TrainingRun) -> None:
        spectral = getattr(run.raw_model, "spectral", None)
        if spectral is None:
            return
        from trainers.figures import plot_spectral_mask

        path = plot_spectral_mask(spectral, self.out_dir / "spectral" / "mask.png")
        self.hooks.on_artifact(path, "spectral")

    def evaluate(self, run: TrainingRun, final: bool = False) -> dict[str, float]:
        cfg = self.cfg
        metrics: dict[str, float] = {}
        t0 = time.perf_counter()
        if cfg.eval.denoise_loss:
            metrics.update(self._denoise_loss(run))
        if self.evaluator is not None:
            gen = torch.Generator(device=run.device).manual_seed(cfg.seed * 7919 + self.rank + 1)
            result = self.evaluator.evaluate(lambda labels: self.generate(run, labels, generator=gen))
            metrics.update({f"eval/{k}": float(v) for k, v in result.metrics.items()})
            run.provenance.update(result.provenance)
            if self.rank == 0 and result.artifacts:
                for name, obj in result.artifacts.items():
                    path = self.out_dir / "eval" / f"{name}.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(json.dumps(obj))
                    self.hooks.on_artifact(path, "eval")
        metrics["eval/seconds"] = time.perf_counter() - t0
        self._emit(run, metrics)
        return metrics

    def _denoise_loss(self, run: TrainingRun) -> dict[str, float]:
        from trainers.data import fixed_eval_batch
        from trainers.flow import bucket_denoise_loss

        cfg = self.cfg
        if not hasattr(self, "_fixed"):
            x, y = fixed_eval_batch(self.eval_set, cfg.eval.denoise_batch, seed=cfg.data.seed)
            g = torch.Generator().manual_seed(10_007 + cfg.data.seed)  # same batch and noise for every run
            eps = torch.randn(x.shape, generator=g) * cfg.flow.noise_scale
            n = cfg.eval.denoise_t_points
            t_grid = (torch.arange(n, dtype=torch.float32) + 0.5) / n  # bucket midpoints, never exactly 0 or 1
            self._fixed = (x.to(run.device), y.to(run.device), eps.to(run.device), t_grid.to(run.device))
        x, y, eps, t_grid = self._fixed
        with self._ema_weights(run) as model:
            losses = self.flow.denoise_loss(model, x, y, t_grid=t_grid, eps=eps)
        # every rank holds the same fixed batch and weights, so no reduction is needed
        return bucket_denoise_loss(t_grid.cpu(), losses.cpu(), edges=T_GRID_BUCKETS)


def _next_multiple(value: int, every: int) -> int:
    return (value // every + 1) * every if every else sys.maxsize


def train(cfg: TrainConfig, out_dir: str | pathlib.Path, hooks: Hooks | None = None) -> dict[str, float]:
    return Trainer(cfg, out_dir, hooks).run()


if __name__ == "__main__":
    from trainers.config import load_config

    if len(sys.argv) != 3:
        sys.exit("usage: python -m trainers.loop CONFIG.yaml OUT_DIR")
    print(json.dumps(train(load_config(sys.argv[1]), sys.argv[2]), indent=2))
