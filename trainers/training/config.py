"""Typed, frozen training configuration: what one run is, validated at load.

A config is a YAML file with the sections below (every key optional, defaults are a tiny CPU run):

    model:    {preset: jit-tiny, patch_size: 4}
    data:     {name: grf, image_size: 32}
    spectral: {enabled: true, schedule: linear, c_min: 0.05, kappa: 30}
    optim:    {batch_size: 64, blr: 5.0e-5, total_images: 38400}
    sample:   {sampler: heun, steps: 50}
    eval:     {num_samples: 1000, metrics: [fd_pixel, spectrum]}
    seed: 0

Errors name the dotted key path and the bad value, e.g.
`ConfigError: model.patch_size: patch size 7 does not divide data.image_size 32`.

    python -c "from trainers.training.config import load_config; print(load_config('sweeps/configs/tiny_train.yaml'))"
"""
from __future__ import annotations

import copy
import difflib
import pathlib
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from specforce_contracts import CLASSIFIER_DATASETS, EVAL_METRIC_OPTIONS, SF_DEFAULTS, SF_SCHEDULES, flatten


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the dotted key path."""


class _Frozen(BaseModel):
    # allow_inf_nan=False: every number is finite (the SF operator, sampler and optimiser refuse inf and nan later)
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True, allow_inf_nan=False)


class ModelConfig(_Frozen):
    # the plug-in denoiser contract (trainers/model/contract.py, docs/own_model.md): "package.module:builder",
    # called as builder(image_size=, channels=, num_classes=, **options); None = the built-in JiT (preset below)
    target: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    # what the target's module returns: the clean image x, the velocity v = x - eps, or the noise eps
    predicts: Literal["x", "v", "eps"] = "x"
    preset: str = "jit-tiny"  # the built-in JiT's size (ignored with a target, as are patch_size and bottleneck)
    # None keeps the preset's own patch size; set it to tokenise the same architecture coarse or fine.
    patch_size: int | None = Field(default=None, gt=0)
    # None keeps the preset's own bottleneck width (the patch embedder's p*p*C -> bottleneck map). Set it to vary the
    # patch compression ratio (C*p*p / bottleneck, logged as model.compression_ratio) at a fixed token count.
    bottleneck: int | None = Field(default=None, gt=0)
    # torch.compile each transformer block (trainers/training/accel.py); SF and the embedders stay eager. Off by default:
    # compiled kernels round differently (tests/test_gpu_options.py holds them to eager within 1e-5).
    compile: bool = False
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] = "default"


class DataConfig(_Frozen):
    name: str = "grf"
    image_size: int = Field(default=32, gt=0)
    root: str | None = None  # folder for imagefolder/imagenet/cifar10
    # which grf fields / flip draws make up the dataset; independent of the run seed, so every seed of a sweep
    # trains on the same data and is evaluated against the same reference statistics
    seed: int = Field(default=0, ge=0)
    # dataset-specific options passed to trainers.data.loader.build_dataset (e.g. alpha_data for grf)
    options: dict[str, Any] = Field(default_factory=dict)
    # the training loader (trainers/data/loader.py): worker processes per training worker, and how they feed the device
    num_workers: int = Field(default=0, ge=0)
    pin_memory: bool | None = None  # None: pin when the run's device is CUDA
    persistent_workers: bool = True  # keep loader workers alive between evaluations (only with num_workers > 0)
    prefetch_factor: int | None = Field(default=None, gt=0)  # batches each loader worker reads ahead; None: torch's 2


class SpectralConfig(_Frozen):
    enabled: bool = False
    schedule: Literal[SF_SCHEDULES] = SF_DEFAULTS["schedule"]  # type: ignore[valid-type] (a tuple of literals)
    c_min: float = Field(default=SF_DEFAULTS["c_min"], ge=0.0, le=1.0)
    c_max: float = Field(default=SF_DEFAULTS["c_max"], gt=0.0, le=1.0)
    c_const: float = Field(default=SF_DEFAULTS["c_const"], gt=0.0, le=1.0)
    kappa: float = Field(default=SF_DEFAULTS["kappa"], gt=0.0)
    alpha: float = Field(default=SF_DEFAULTS["alpha"], gt=0.0)
    # snr schedule: None fits alpha and r0 from the training data's radial DCT power spectrum
    r0: float | None = Field(default=None, gt=0.0)
    fit_from_data: bool = False
    window_size: int | None = Field(default=None, gt=0)
    identity_at_data: bool = False
    # c_min <= c_max and the other cross-field rules: trainers/training/config_rules.py (their refusals name the key path)


class FlowConfig(_Frozen):
    p_mean: float = -0.8
    p_std: float = Field(default=0.8, gt=0.0)
    t_eps: float = Field(default=0.05, gt=0.0, lt=1.0)
    noise_scale: float = Field(default=1.0, gt=0.0)
    label_drop: float = Field(default=0.1, ge=0.0, le=1.0)


class OptimConfig(_Frozen):
    batch_size: int = Field(default=64, gt=0)  # global batch, split across workers
    blr: float = Field(default=5e-5, gt=0.0)  # lr = blr * batch_size / 256 (JiT recipe)
    lr: float | None = Field(default=None, gt=0.0)  # explicit lr overrides blr scaling
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = Field(default=0.0, ge=0.0)
    warmup_images: int = Field(default=0, ge=0)
    total_images: int = Field(default=38_400, gt=0)
    grad_clip: float | None = Field(default=None, gt=0.0)
    ema_decays: tuple[float, ...] = (0.999, 0.9996)
    ema_warmup: bool = True
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    # AdamW kernel: false = torch's default (foreach on CUDA), true = fused (CUDA; CPU too in torch>=2.4),
    # auto = fused on CUDA only. Off by default: the fused kernel rounds differently from the reference recipe.
    fused: Literal["auto", True, False] = False

    @field_validator("ema_decays")
    @classmethod
    def _decays(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(not 0.0 < d < 1.0 for d in v):
            raise ValueError(f"every EMA decay must lie in (0, 1), got {list(v)}")
        return v

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else self.blr * self.batch_size / 256


class SampleConfig(_Frozen):
    sampler: Literal["euler", "heun"] = "heun"
    steps: int = Field(default=50, gt=0)
    cfg_scale: float = Field(default=1.0, ge=0.0)
    cfg_interval: tuple[float, float] = (0.1, 1.0)
    ema_index: int = Field(default=0, ge=0)  # which EMA decay samples come from
    # None: exact 1-t in the sampler (t < 1 at every evaluation point). 0.05 reproduces JiT's clamped sampler.
    t_eps_last: float | None = Field(default=None, gt=0.0, lt=1.0)


class EvalConfig(_Frozen):
    every_images: int = Field(default=0, ge=0)  # 0: only at the end
    num_samples: int = Field(default=500, gt=1)
    batch_size: int = Field(default=250, gt=0)
    # fd_pixel, fid (gives is too), is, classifier (mnist/digits), spectrum (spec_err_low|mid|high)
    metrics: tuple[str, ...] = ("fd_pixel", "spectrum")
    denoise_loss: bool = True  # held-out v-loss on a fixed batch, fixed noise, fixed t grid
    denoise_batch: int = Field(default=256, gt=0)
    denoise_t_points: int = Field(default=20, gt=1)
    grid_every_images: int = Field(default=0, ge=0)  # 0: only at the end
    grid_size: int = Field(default=8, gt=0)  # grid_size x grid_size samples
    inception_weights: str | None = None

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for m in v:
            if m not in EVAL_METRIC_OPTIONS:
                raise ValueError(f"unknown metric {m!r}; known: {', '.join(EVAL_METRIC_OPTIONS)}")
        return v


class TrainConfig(_Frozen):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    spectral: SpectralConfig = SpectralConfig()
    flow: FlowConfig = FlowConfig()
    optim: OptimConfig = OptimConfig()
    sample: SampleConfig = SampleConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = Field(default=0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every_images: int = Field(default=2_560, gt=0)
    # checkpoint.pt (resume state) is written after every evaluation, at this interval, and at the end
    checkpoint_every_images: int = Field(default=0, ge=0)
    save_checkpoint: bool = True  # also write the final EMA weights as ema.pt (logged as checkpoints/ema.pt)

    @model_validator(mode="after")
    def _cross(self) -> "TrainConfig":
        patch = self.model.patch_size
        if patch is not None and self.data.image_size % patch:
            raise ValueError(f"model.patch_size: patch size {patch} does not divide data.image_size {self.data.image_size}")
        win = self.spectral.window_size
        if win is not None and self.data.image_size % win:
            raise ValueError(f"spectral.window_size: {win} does not divide data.image_size {self.data.image_size}")
        if self.sample.ema_index >= len(self.optim.ema_decays):
            raise ValueError(f"sample.ema_index: {self.sample.ema_index} but only {len(self.optim.ema_decays)} EMA decays")
        if self.data.prefetch_factor is not None and self.data.num_workers == 0:
            raise ValueError(f"data.prefetch_factor: needs data.num_workers > 0 (loader worker processes) "
                             f"(got {self.data.prefetch_factor})")
        if self.optim.batch_size > self.optim.total_images:
            raise ValueError(f"optim.total_images: {self.optim.total_images} is smaller than one batch ({self.optim.batch_size})")
        return self

    @model_validator(mode="after")
    def _known_names(self) -> "TrainConfig":
        # names checked against the registries the run will use, so a typo is refused at load (and by --dry-run),
        # not inside a Ray worker; imported lazily because the registries import torch
        _check_preset(self.model.preset)
        _check_data(self.data)
        _check_model(self)
        _check_eval(self)
        # cross-field rules the run relies on (patch grid, t buckets, CFG interval, SF, data sizes): config_rules.py
        from trainers.training.config_rules import check_rules

        check_rules(self)
        return self

    @model_validator(mode="after")
    def _gpu_options(self) -> "TrainConfig":
        # device-dependent checks (a C++ compiler or Triton for compile, a fused kernel) run where the run starts:
        # trainers.training.accel, called by the loop's setup
        if self.model.compile_mode != "default" and not self.model.compile:
            raise ValueError(f"model.compile_mode: {self.model.compile_mode!r} has no effect unless model.compile "
                             f"is true")
        return self

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values (lists for tuples), as logged to MLflow params."""
        return flatten(self.model_dump(mode="json"))


def set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` inside a nested dict, creating sections; `seed` works at the top level."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{dotted}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            known = _known_keys(e["loc"][:-1])
            close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
            lines.append(f"{path}: unknown key ({hint})")
        elif not path:
            lines.append(msg)  # cross-field checks already name their key path
        elif isinstance(e.get("input"), Mapping):
            lines.append(f"{path}: {msg}")
        else:
            lines.append(f"{path}: {msg} (got {e.get('input')!r})")
    return "; ".join(lines)


def _known_keys(loc: tuple) -> list[str]:
    model: type[BaseModel] = TrainConfig
    for p in loc:
        field = model.model_fields.get(str(p))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return sorted(model.model_fields)


def config_from_dict(tree: Mapping[str, Any] | None) -> TrainConfig:
    tree = dict(tree or {})
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def read_yaml(path: str | pathlib.Path, what: str = "config file") -> Any:
    """yaml.safe_load of a file; a syntax error or a Python tag raises ConfigError naming the file, line and column."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ConfigError(f"{what} {str(path)!r}: does not exist")
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r}: not a file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{what} {str(path)!r}: cannot be read as text ({err})") from None
    try:
        return yaml.safe_load(text)  # safe_load: a config must never construct Python objects
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "YAML"
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        if getattr(err, "context", None) and "constructor" not in problem:
            problem = f"{' '.join(str(err.context).split())}: {problem}"
        raise ConfigError(f"{path}: {where}: invalid YAML, {problem}") from None


def load_yaml(path: str | pathlib.Path) -> dict[str, Any]:
    path = pathlib.Path(path)
    tree = read_yaml(path)
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(tree).__name__}")
    return tree


def config_with_overrides(tree: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """A validated config from a nested tree plus dotted-key overrides; `tree` itself is left untouched."""
    tree = copy.deepcopy(dict(tree))
    for key, value in (overrides or {}).items():
        set_dotted(tree, key, value)
    return config_from_dict(tree)


def load_config(path: str | pathlib.Path, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    return config_with_overrides(load_yaml(path), overrides)


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


# ----------------------------------------------------------------------------------------- name and environment checks
def _check_preset(preset: str) -> None:
    from trainers.model.jit import JIT_PRESETS

    names = list(JIT_PRESETS)
    if preset.lower() not in {n.lower() for n in names}:
        close = difflib.get_close_matches(preset, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"model.preset: unknown preset, {hint}known: {', '.join(names)} (got {preset!r})")


def _check_model(cfg: "TrainConfig") -> None:
    # model.target imports, names a builder taking model.options; probed on a batch when the config alone fixes the
    # data's channels (grf, unconditional); other data are probed by check_environment once built
    from trainers.training.config_rules import static_data_facts
    from trainers.model.contract import check_model

    facts = static_data_facts(cfg) if cfg.model.target is not None else None
    check_model(cfg, channels=facts and facts["channels"], num_classes=0 if facts else None)


def _check_data(data: DataConfig) -> None:
    from trainers.data.loader import DATASETS

    if data.name not in DATASETS:
        close = difflib.get_close_matches(data.name, list(DATASETS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ValueError(f"data.name: unknown dataset, {hint}known: {', '.join(sorted(DATASETS))} (got {data.name!r})")
    cls = DATASETS[data.name]
    try:
        cls.check_options(dict(data.options))
    except (ValueError, TypeError) as err:
        text = str(err)
        for key in data.options:  # the dataset helpers say "alpha_data must be ..., got -1"
            if text.startswith(f"{key} "):
                why, _, got = text[len(key) + 1:].rpartition(", got ")
                text = f"{key}: {why} (got {got})" if why else f"{key}: {text[len(key) + 1:]}"
                break
        raise ValueError(f"data.options.{text}") from None
    if cls.uses_root and not data.root:
        raise ValueError(f"data.root: dataset {data.name!r} reads files and needs the folder holding them (got None)")
    if not cls.uses_root and data.root is not None:
        raise ValueError(f"data.root: dataset {data.name!r} reads no files; remove data.root (got {data.root!r})")


def _check_eval(cfg: "TrainConfig") -> None:
    # the evaluator refuses these too, but only after the run folder and MLflow run exist
    metrics = cfg.eval.metrics
    if "classifier" in metrics and cfg.data.name not in CLASSIFIER_DATASETS:
        raise ValueError(f"eval.metrics: 'classifier' needs a digit dataset ({', '.join(CLASSIFIER_DATASETS)}) "
                         f"(got data.name {cfg.data.name!r})")
    if ("fid" in metrics or "is" in metrics) and cfg.eval.num_samples < 10:
        raise ValueError(f"eval.num_samples: the Inception Score (reported with fid) uses 10 splits, so at least 10 "
                         f"samples (got {cfg.eval.num_samples})")
