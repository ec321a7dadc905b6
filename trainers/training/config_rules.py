"""Cross-field rules of a training config: what the run's code relies on, stated at load time.

Every rule here mirrors a check that the code raises later, inside the run (the JiT's patch grid, the held-out
loss's t buckets, the sampler's CFG interval, the SF operator, the training stream, the evaluator, the sample grid),
so `specforce train --dry-run`, `sweep --dry-run` and `submit` refuse a config before any work instead of every
trial dying on a cluster. Each refusal is one line naming the dotted key path and the value:
`model.patch_size: the preset jit-tiny's patch size 4 does not divide data.image_size 10; ... (got None)`.

    .venv/bin/python -c "from trainers.training.config import config_from_dict; config_from_dict({'eval': {'denoise_t_points': 2}})"

Three entry points:
- `check_rules(cfg)`: called by TrainConfig's validation (trainers/training/config.py), so every load applies it;
- `check_data(cfg, channels=, train_size=, test_size=)`: rules on the dataset's shape and size. Called at load for
  datasets whose shape and size the config alone fixes (`grf`), and by `check_environment` (trainers/training/environment.py) with the built datasets;
- `check_world(cfg, workers)`: rules that need the number of training workers (a sweep's resources.workers).

CPU check: `.venv/bin/python -m pytest tests/test_config.py tests/test_config_properties.py -q`.
"""
from __future__ import annotations

import inspect
from typing import Any

# a trainers.training.config.TrainConfig; not imported, because config.py calls check_rules while validating
TrainConfig = Any

# image grids (trainers/evaluation/images.py) and the Inception extractor read 1- or 3-channel images only
GRID_CHANNELS = (1, 3)


def _fail(key: str, why: str, got: Any) -> None:
    raise ValueError(f"{key}: {why} (got {got!r})")


def check_rules(cfg: "TrainConfig") -> None:
    """Every world-independent rule; raises ValueError("<key path>: <why> (got <value>)")."""
    _model(cfg)
    _optim(cfg)
    _spectral(cfg)
    _sample(cfg)
    _heldout(cfg)
    _metrics(cfg)
    facts = static_data_facts(cfg)
    if facts is not None:
        check_data(cfg, **facts)


def _model(cfg: "TrainConfig") -> None:
    # JiT cuts the image into a grid of patch x patch tokens: the patch (the preset's own when unset) must divide it
    from trainers.model.jit import JIT_PRESETS

    if getattr(cfg.model, "target", None) is not None:  # an outside builder: preset and patch_size are ignored
        return
    presets = {name.lower(): p for name, p in JIT_PRESETS.items()}
    patch = cfg.model.patch_size or presets[cfg.model.preset.lower()].patch_size
    size = cfg.data.image_size
    if size % patch:
        _fail("model.patch_size", f"the preset {cfg.model.preset}'s patch size {patch} does not divide data.image_size "
              f"{size}; set model.patch_size to a divisor of it", cfg.model.patch_size)


def _optim(cfg: "TrainConfig") -> None:
    betas = cfg.optim.betas
    if not all(0.0 <= b < 1.0 for b in betas):  # torch.optim.AdamW refuses others ("Invalid beta parameter")
        _fail("optim.betas", "AdamW's betas must each lie in [0, 1)", list(betas))
    if not betas[0] ** 2 < betas[1] ** 0.5:
        # Adam's step stays bounded only when beta1^2 < sqrt(beta2) (Kingma & Ba 2015, Theorem 4.1): (0.999999, 0)
        # blew the weights up in two steps and the evaluator refused the samples (|x| > 5)
        _fail("optim.betas", "Adam needs beta1^2 < sqrt(beta2) for a bounded step (Kingma & Ba 2015)", list(betas))


def _spectral(cfg: "TrainConfig") -> None:
    s, size = cfg.spectral, cfg.data.image_size
    if s.c_min > s.c_max:  # the cutoff rises from c_min to c_max (trainers/model/spectral_forcing.py refuses the reverse)
        _fail("spectral.c_min", f"c_min={s.c_min} must not exceed c_max={s.c_max}", s.c_min)
    if s.window_size is not None and s.window_size < 2:
        # the DCT radius r = |(u, v)| / (sqrt(2) (n - 1)) divides by n - 1 (trainers/model/spectral_forcing.py)
        _fail("spectral.window_size", "a DCT window needs at least 2 pixels per side", s.window_size)
    if not s.enabled or s.schedule == "none":
        return
    if size < 2:
        _fail("data.image_size", "Spectral Forcing's DCT needs at least 2 pixels per side (or spectral.enabled: "
              "false)", size)
    if s.schedule == "snr" and (s.r0 is None or s.fit_from_data):
        # the power-law fit needs >= 3 radial bins inside its band; how many there are depends only on the size
        from trainers.model.spectral_forcing import fit_power_law, radial_power_spectrum

        import numpy as np

        params = inspect.signature(fit_power_law).parameters
        lo, hi = params["k_min"].default, params["k_max"].default
        r, _ = radial_power_spectrum(np.zeros((1, 1, size, size)))
        bins = int(((r >= lo) & (r <= hi)).sum())
        if bins < 3:
            key = "spectral.fit_from_data" if s.fit_from_data else "spectral.r0"
            _fail(key, f"the snr schedule fits alpha and r0 to the data's radial spectrum, which at data.image_size "
                  f"{size} has {bins} bins in the fitted band [{lo}, {hi}] (needs 3); set spectral.r0 (and "
                  f"fit_from_data: false) or use larger images", getattr(s, key.split(".")[1]))


def _sample(cfg: "TrainConfig") -> None:
    lo, hi = cfg.sample.cfg_interval
    if not 0.0 <= lo <= hi <= 1.0:  # the sampler guides on lo <= t <= hi (trainers/model/samplers.py)
        _fail("sample.cfg_interval", "expected [lo, hi] with 0 <= lo <= hi <= 1", [lo, hi])
    s = cfg.sample
    if s.t_eps_last is not None and cfg.eval.metrics:
        # The clamped last step leaves part of the initial noise (noise_scale * eps) in every sample, and the
        # evaluator refuses samples beyond |x| <= max_abs (its guard against [0, 255] images). The share left is
        # what the real sampler returns for a model that predicts 0 from a z0 of ones (the ODE is linear in z then).
        import torch

        from trainers.evaluation.evaluator import Evaluator
        from trainers.model.samplers import get_sampler

        max_abs = inspect.signature(Evaluator).parameters["max_abs"].default
        z = get_sampler(s.sampler)(lambda z, t: torch.zeros_like(z), torch.ones(1, dtype=torch.float64),
                                   steps=s.steps, t_eps_last=s.t_eps_last)
        left = abs(float(z[0]))
        if cfg.flow.noise_scale * left * 7 > max_abs:  # 7 sigma: no sample of any realistic size reaches it
            _fail("flow.noise_scale", f"with sample.t_eps_last {s.t_eps_last} and {s.steps} {s.sampler} steps the "
                  f"samples keep {left:.3g} of the initial noise, which at 7 sigma exceeds the evaluator's "
                  f"|x| <= {max_abs}; lower flow.noise_scale or unset sample.t_eps_last", cfg.flow.noise_scale)


def _heldout(cfg: "TrainConfig") -> None:
    if not cfg.eval.denoise_loss:
        return
    from trainers.evaluation.heldout import T_BUCKET_EDGES, empty_buckets

    empty = empty_buckets(cfg.eval.denoise_t_points)
    if empty:
        lo, hi = empty[0]
        _fail("eval.denoise_t_points", f"the held-out loss is reported per t bucket {list(T_BUCKET_EDGES)} and "
              f"bucket [{lo}, {hi}] would hold no t of the grid; use at least {len(T_BUCKET_EDGES) - 1} points",
              cfg.eval.denoise_t_points)


def _metrics(cfg: "TrainConfig") -> None:
    if "spectrum" in cfg.eval.metrics and cfg.data.image_size < 4:
        # spec_err_low|mid|high compare radial spectra of size // 2 + 1 shells, at least 3 (trainers/evaluation/radial_spectrum.py)
        _fail("eval.metrics", "'spectrum' needs data.image_size >= 4 (3 radial shells)", list(cfg.eval.metrics))


# --------------------------------------------------------------------------------------------- data shape and size
def static_data_facts(cfg: "TrainConfig") -> dict[str, int] | None:
    """channels, train_size, test_size of datasets the config alone determines (grf), else None (read at build)."""
    if cfg.data.name != "grf":
        return None
    from trainers.data.loader import DATASETS

    cls = DATASETS["grf"]
    opts = {**cls.OPTIONS, **cfg.data.options}
    sizes = {split: opts["num_samples"] or cls.DEFAULT_NUM_SAMPLES[split] for split in ("train", "test")}
    return {"channels": opts["channels"], "train_size": sizes["train"], "test_size": sizes["test"]}


def check_data(cfg: "TrainConfig", *, channels: int, train_size: int, test_size: int) -> None:
    """Rules on the dataset's channels and split sizes (ValueError naming the key)."""
    from trainers.evaluation.evaluator import MAX_PIXEL_DIM

    size, metrics = cfg.data.image_size, cfg.eval.metrics
    if channels not in GRID_CHANNELS:  # every run ends with a sample grid (samples/final.png)
        key = "data.options.channels" if "channels" in cfg.data.options else "data.name"
        _fail(key, f"sample grids and Inception read {GRID_CHANNELS} channels, the data has {channels}",
              cfg.data.options.get("channels", cfg.data.name))
    if train_size < cfg.optim.batch_size:  # the training stream takes whole global batches only
        _fail("optim.batch_size", f"larger than the {cfg.data.name} train split ({train_size} images)",
              cfg.optim.batch_size)
    if cfg.eval.denoise_loss and test_size < cfg.eval.denoise_batch:  # the fixed batch: distinct held-out images
        _fail("eval.denoise_batch", f"larger than the {cfg.data.name} test split ({test_size} images)",
              cfg.eval.denoise_batch)
    if "fd_pixel" in metrics and channels * size * size > MAX_PIXEL_DIM:
        _fail("eval.metrics", f"'fd_pixel' at {channels}x{size}x{size} needs a {channels * size * size}-d "
              f"covariance (limit {MAX_PIXEL_DIM}); use kid, fid or a smaller data.image_size", list(metrics))


def check_world(cfg: "TrainConfig", workers: int, key: str = "resources.workers") -> None:
    """Rules that need the number of training workers (ranks); ValueError naming `key`."""
    if cfg.optim.batch_size % workers:  # every rank takes the same share of the global batch (trainers/training/loop.py)
        _fail(key, f"does not divide optim.batch_size {cfg.optim.batch_size}", workers)
