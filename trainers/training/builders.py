"""Everything a run builds from its config: device, datasets, the SF operator, the denoiser, flow, evaluator, sampler.

    .venv/bin/python -c "
    from trainers.training.config import load_config; from trainers.training.builders import build_denoiser
    d = build_denoiser(load_config('sweeps/configs/tiny_train.yaml')); print(d.device, type(d.model).__name__)"

Shared by the train loop (trainers/training/loop.py) and `specforce eval` (sweeps/commands/evaluate.py), so a checkpoint is
evaluated with exactly the model, SF operator, sampler and evaluator its run trained and evaluated with.
CPU check: `.venv/bin/python -m pytest tests/test_regime.py tests/test_train_cli.py -q`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

import specforce_contracts as C
from trainers.training.accel import check_compile_supported, resolve_fused
from trainers.training.config import TrainConfig

SPECTRUM_SAMPLE = 512  # training images a power-law fit of the data spectrum looks at


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device=cuda was asked for but torch.cuda.is_available() is False")
        index = torch.cuda.current_device()
        return torch.device("cuda", index)
    return torch.device("cpu")


def build_dataset_for(cfg: TrainConfig, split: str = "train"):
    from trainers.data.loader import build_dataset

    return build_dataset(cfg.data.name, image_size=cfg.data.image_size, split=split, root=cfg.data.root,
                         seed=cfg.data.seed, **cfg.data.options)


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
    from trainers.model.spectral_forcing import SpectralForcing, fit_power_law

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
    """The run's denoiser through the plug-in contract (trainers/model/contract.py): model.target's builder, or
    the built-in JiT when it is None, with SF attached before the model and its prediction turned into x_hat."""
    from trainers.model.contract import build_from_config

    return build_from_config(cfg, channels=channels, num_classes=num_classes, spectral=spectral)


def model_shape_params(model: torch.nn.Module, cfg: TrainConfig | None = None) -> dict[str, Any]:
    """Derived params of the built model: token count, parameter count, the resolved bottleneck width and the patch
    compression ratio (patch dim C*p*p over the bottleneck; JiT-B/32 at 3 channels: 3072/128 = 24).

    With `cfg` and a model.target: model.options.<key> and the module's describe() as model.reported.<key>; a module
    without `num_tokens` counts every pixel as a position (tokens = image_size^2, so the analysis keys it as patch 1)."""
    preset = getattr(model, "preset", None)
    tokens = getattr(model, "num_tokens", None)
    if tokens is None and cfg is not None and cfg.model.target is not None:
        tokens = cfg.data.image_size ** 2
    out: dict[str, Any] = {C.MODEL_TOKENS: tokens, C.MODEL_PARAMETERS: sum(p.numel() for p in model.parameters())}
    if cfg is not None:
        from trainers.model.contract import reported_params

        out.update(reported_params(model, cfg))
    if preset is not None:
        out[C.MODEL_BOTTLENECK] = preset.bottleneck
        out[C.MODEL_COMPRESSION_RATIO] = model.in_channels * preset.patch_size ** 2 / preset.bottleneck
    return out


def data_spectrum(images: torch.Tensor) -> dict[str, float]:
    """Power-law fit of the data's radial DCT spectrum: logged with every run so reports can draw the SNR front."""
    from trainers.model.spectral_forcing import fit_power_law

    try:
        alpha, r0 = fit_power_law(images)
    except ValueError as err:  # e.g. 8x8 digits peak at the stroke width: no power law to log
        print(f"note: data spectrum is not a power law ({err}); logging NaN", flush=True)
        return {"data.spectrum_alpha": float("nan"), "data.spectrum_r0": float("nan")}
    return {"data.spectrum_alpha": float(alpha), "data.spectrum_r0": float(r0)}


@dataclass
class Denoiser:
    """What `build_denoiser` returns: the model on its device and the training data it was sized and fitted from."""
    device: torch.device
    dataset: Any  # the training split (channels, num_classes, and the images SF's power law is fitted on)
    model: torch.nn.Module
    sample: torch.Tensor  # `spectrum_sample(dataset)`
    fitted: dict[str, float]  # SF's fitted power law, when the snr schedule fits it


def build_denoiser(cfg: TrainConfig) -> Denoiser:
    """Device, training data, SF operator and the seeded model (not compiled: the caller compiles after its EMA)."""
    device = resolve_device(cfg.device)
    # GPU options are checked against the resolved device before any data is built: no silent fallback
    if cfg.model.compile:
        check_compile_supported(device)
    resolve_fused(cfg.optim.fused, device)
    torch.manual_seed(cfg.seed)
    dataset = build_dataset_for(cfg, "train")
    sample = spectrum_sample(dataset)
    spectral, fitted = build_spectral(cfg, sample)
    torch.manual_seed(cfg.seed)  # the same initial weights with and without SF
    model = build_model(cfg, dataset.channels, dataset.num_classes, spectral).to(device)
    return Denoiser(device, dataset, model, sample, fitted)


def build_flow(cfg: TrainConfig, num_classes: int):
    from trainers.model.flow import RectifiedFlow

    return RectifiedFlow(p_mean=cfg.flow.p_mean, p_std=cfg.flow.p_std, t_eps=cfg.flow.t_eps,
                         noise_scale=cfg.flow.noise_scale, label_drop=cfg.flow.label_drop, num_classes=num_classes)


def build_evaluator(cfg: TrainConfig, dataset, device: torch.device, cache_dir: str | os.PathLike, *, rank: int = 0,
                    world_size: int = 1):
    """The prepared Evaluator of `eval.metrics` against `dataset` (None without metrics). Preparing fails here,
    before any training, if e.g. Inception weights are missing."""
    if not cfg.eval.metrics:
        return None
    from trainers.evaluation.evaluator import Evaluator

    ev = Evaluator(metrics=cfg.eval.metrics, dataset=dataset, num_samples=cfg.eval.num_samples,
                   batch_size=cfg.eval.batch_size, device=device, cache_dir=cache_dir,
                   inception_weights=cfg.eval.inception_weights, rank=rank, world_size=world_size, seed=cfg.seed)
    ev.prepare()
    return ev


def build_heldout(cfg: TrainConfig, dataset, device: torch.device):
    """The held-out denoising loss of eval.denoise_loss against `dataset` (its fixed batch is drawn on first use)."""
    from trainers.data.cond import build_cond
    from trainers.evaluation.heldout import HeldOutLoss

    return HeldOutLoss(dataset, batch=cfg.eval.denoise_batch, t_points=cfg.eval.denoise_t_points,
                       data_seed=cfg.data.seed, noise_scale=cfg.flow.noise_scale, device=device,
                       cond=build_cond(cfg.data.options, dataset.num_classes))


def generate_images(cfg: TrainConfig, model: torch.nn.Module, labels: torch.Tensor, *, channels: int,
                    num_classes: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    """Samples of `model` (the sampling weights: the caller swaps EMA in) with the config's sampler, for the given
    labels (null class = num_classes). With data.options.cond the model is conditioned on each label's vector
    (trainers/data/cond.py) and guidance's unconditional branch on the zero vector."""
    from trainers.data.cond import build_cond, cond_of
    from trainers.model.samplers import generate

    s = cfg.sample
    cond = build_cond(cfg.data.options, num_classes)
    return generate(model, n=len(labels), image_shape=(channels, cfg.data.image_size, cfg.data.image_size),
                    labels=cond_of(cond, labels.to(device)), sampler=s.sampler, steps=s.steps, cfg_scale=s.cfg_scale,
                    cfg_interval=s.cfg_interval, noise_scale=cfg.flow.noise_scale, num_classes=num_classes,
                    generator=generator, device=device, t_eps_last=s.t_eps_last)
