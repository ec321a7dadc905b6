"""Sweep specs: one YAML file describing an ablation grid and/or an Optuna search over trial configs.

    name: demo                      # MLflow experiment and Ray run name ([A-Za-z0-9_.-], no path parts)
    base: {model: {preset: jit-tiny}, data: {name: grf, image_size: 32}, ...}   # a `specforce train` config
    base_config: other.yaml         # optional: load the base from a file instead (relative to the spec)
    resources: {workers: 1, cpus_per_worker: 1, gpus_per_worker: 0, use_gpu: auto}
    max_concurrent_trials: 2
    grid:                           # full factorial over dotted keys
      model.patch_size: [4, 8]
      spectral.enabled: [false, true]
      seed: [0, 1, 2]
    search:                         # Optuna through Ray Tune's OptunaSearch
      metric: eval/denoise_loss
      mode: min                     # optional: the metric's direction in specforce_contracts (min for a loss)
      num_samples: 12
      sampler: tpe                  # tpe | gp | random | cmaes
      space:
        spectral.alpha: {type: float, low: 0.5, high: 4.0, log: true}
        spectral.schedule: {type: categorical, choices: [linear, contour, snr]}
      baselines: true               # also run the no-SF arm for each patch size and seed
    seeds: {start: 3, step: 2, max: 12, stop: decided}   # adaptive seeds for a grid without `seed` (sweeps/adaptive.py)

    python -m sweeps.spec sweeps/configs/demo.yaml      # print every trial the spec expands to
"""
from __future__ import annotations

import hashlib
import itertools
import json
import pathlib
import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

import specforce_contracts as C
from specforce_contracts import flatten
from trainers.training.config import ConfigError, TrainConfig, config_from_dict, config_with_overrides, read_yaml
from trainers.training.config_rules import check_world

# the spec's sections live in spec_schema.py; imported from here by the runner, the CLI and tests
from sweeps.spec_schema import Analysis, Resources, Search, Seeds, _Strict

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class SpecError(ValueError):
    """The sweep spec is wrong; the message names the key path and the bad value."""


def validate_name(name: str, what: str = "name") -> str:
    """Names become folders and MLflow experiments: they must not escape the storage folder."""
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise SpecError(f"{what}: {name!r} is not a valid name (letters, digits, '_', '.', '-'; no '/', no '..', "
                        "not starting with '.', at most 100 characters)")
    return name


class SweepSpec(_Strict):
    name: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    base_config: str | None = None
    resources: Resources = Resources()
    max_concurrent_trials: int = Field(default=2, gt=0)
    max_failures: int = Field(default=2, ge=0)  # worker-group restarts per trial (from its latest checkpoint)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    search: Search | None = None
    seeds: Seeds | None = None  # adaptive seeds for the grid (instead of a `seed` list in it)
    analysis: Analysis = Analysis()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return validate_name(v, "name")

    @model_validator(mode="after")
    def _one_kind(self) -> "SweepSpec":
        if not self.grid and self.search is None:
            raise ValueError("a spec needs a 'grid', a 'search', or both")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid.{key}: needs a non-empty list of values, got {values!r}")
        return self


@dataclass(frozen=True)
class TrialPlan:
    """One grid trial: its id (stable across reruns, so `--resume` and MLflow find it again) and config."""

    trial_id: str
    overrides: dict[str, Any]
    config: TrainConfig


def trial_id_for(overrides: dict[str, Any]) -> str:
    """Readable and stable: `p4-sf1-s0-<hash>` — the hash covers every override so ids never collide."""
    digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:6]
    short = []
    for key, value in overrides.items():
        leaf = key.split(".")[-1]
        tag = {"patch_size": "p", "enabled": "sf", "seed": "s", "schedule": "", "alpha": "a"}.get(leaf, leaf[:3])
        short.append(f"{tag}{int(value) if isinstance(value, bool) else value}")
    stem = re.sub(r"[^A-Za-z0-9_.-]", "", "-".join(short))[:60]
    return f"{stem}-{digest}" if stem else digest


def _format(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        got = e.get("input")
        suffix = "" if isinstance(got, dict) or e["type"] == "missing" else f" (got {got!r})"
        parts.append(f"{path or '<spec>'}: {msg}{suffix}" if e["type"] != "extra_forbidden" else f"{path}: unknown key")
    return "; ".join(parts)


def _read_yaml(path: pathlib.Path, what: str) -> Any:
    """The file's YAML; syntax errors and Python tags are a SpecError naming the file, line and column."""
    try:
        return read_yaml(path, what)
    except ConfigError as err:
        raise SpecError(str(err)) from None


def load_spec(path: str | pathlib.Path) -> SweepSpec:
    path = pathlib.Path(path)
    if not path.is_file():
        raise SpecError(f"sweep spec {str(path)!r} does not exist")
    tree = _read_yaml(path, "sweep spec")  # safe_load: specs never construct Python objects
    if not isinstance(tree, dict):
        raise SpecError(f"{path}: a sweep spec is a mapping with at least 'name' and 'grid' or 'search'")
    if tree.get("base_config"):
        base_file = (path.parent / tree["base_config"]).resolve()
        if not base_file.is_file():
            raise SpecError(f"base_config: {tree['base_config']!r} not found (looked at {base_file})")
        base = _read_yaml(base_file, "base_config") or {}
        if not isinstance(base, dict):
            raise SpecError(f"base_config: {base_file} must hold a mapping of config sections (got {type(base).__name__})")
        base.update(tree.get("base") or {})
        tree["base"] = base
    return spec_from_dict(tree)


def spec_from_dict(tree: dict[str, Any]) -> SweepSpec:
    try:
        spec = SweepSpec.model_validate(tree)
    except ValidationError as err:
        raise SpecError(_format(err)) from None
    validate_spec(spec)
    return spec


def base_config(spec: SweepSpec) -> TrainConfig:
    try:
        return config_from_dict(spec.base)
    except ConfigError as err:
        raise SpecError(f"base.{err}") from None


def _resolve(spec: SweepSpec, overrides: dict[str, Any], where: str) -> TrainConfig:
    """The trial's config; its rules include those of resources.workers ranks (trainers/config_rules.check_world)."""
    try:
        cfg = config_with_overrides(spec.base, overrides)
        check_world(cfg, spec.resources.workers)
    except ValueError as err:  # ConfigError, or a world rule naming resources.workers
        raise SpecError(f"{where} {overrides}: {err}") from None
    return cfg


def grid_plans(spec: SweepSpec) -> list[TrialPlan]:
    keys = list(spec.grid)
    plans = []
    for combo in itertools.product(*(spec.grid[k] for k in keys)):
        overrides = dict(zip(keys, combo))
        plans.append(TrialPlan(trial_id_for(overrides), overrides, _resolve(spec, overrides, "grid trial")))
    return plans


def baseline_plans(spec: SweepSpec) -> list[TrialPlan]:
    """The no-SF arm for every patch size a search can pick and every seed it uses: the analysis pairs against it."""
    assert spec.search is not None
    base = base_config(spec)
    patch_dim = spec.search.space.get("model.patch_size")
    patches = patch_dim.choices if patch_dim and patch_dim.type == "categorical" else [base.model.patch_size]
    seeds = spec.search.baseline_seeds or [base.seed]
    plans = []
    for patch, seed in itertools.product(patches, seeds):
        overrides = {"model.patch_size": patch, "spectral.enabled": False, "seed": seed}
        if patch is None:
            del overrides["model.patch_size"]
        plans.append(TrialPlan(trial_id_for(overrides), overrides, _resolve(spec, overrides, "baseline trial")))
    return plans


def reported_metrics(cfg: TrainConfig) -> set[str]:
    """Every metric name a trial with this config reports (the search metric must be one of them): the registry's
    list for its eval settings (specforce_contracts.emitted_metrics)."""
    return C.emitted_metrics(cfg.eval.metrics, denoise_loss=cfg.eval.denoise_loss)


def validate_spec(spec: SweepSpec) -> None:
    base = base_config(spec)
    r = spec.resources
    if base.optim.batch_size % r.workers:  # the same rule for each trial: _resolve (config_rules.check_world)
        raise SpecError(f"resources.workers: {r.workers} does not divide base.optim.batch_size {base.optim.batch_size}")
    flat_base = set(flatten(TrainConfig().model_dump(mode="json")))
    for key in list(spec.grid) + list(spec.search.space if spec.search else []):
        if key not in flat_base and not key.startswith("data.options."):
            close = [k for k in flat_base if k.endswith(key.split(".")[-1])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SpecError(f"{'grid' if key in spec.grid else 'search.space'}.{key}: unknown config key{hint}")
    plans = grid_plans(spec) if spec.grid else []
    ids = [p.trial_id for p in plans]
    if len(set(ids)) != len(ids):
        raise SpecError("grid: two trials resolve to the same id; a key is listed twice with equal values")
    if spec.search:
        s = spec.search
        for key, dim in s.space.items():
            if key in spec.grid:
                raise SpecError(f"search.space.{key}: also in grid; a key is either searched or swept, not both")
            if key == "model.patch_size":
                for choice in dim.choices or []:
                    if base.data.image_size % int(choice):
                        raise SpecError(f"search.space.model.patch_size: {choice} does not divide "
                                        f"data.image_size {base.data.image_size}")
            # every value a search trial can draw must make a valid config (as sweeps/trial.py builds it: SF on)
            for value in dim.endpoints():
                where = "search.space choice" if dim.type == "categorical" else f"search.space.{key} value"
                _resolve(spec, {key: value, "spectral.enabled": True}, where)
        if s.metric not in reported_metrics(base):
            known = ", ".join(sorted(m for m in reported_metrics(base) if m.startswith(C.EVAL_PREFIX)))
            raise SpecError(f"search.metric: {s.metric!r} is never reported by these trials; they report: {known}")
        if s.scheduler and base.eval.every_images == 0:
            raise SpecError("search.scheduler: ASHA needs intermediate evaluations; set base.eval.every_images")
        if s.sampler == "cmaes" and any(d.type == "categorical" for d in s.space.values()):
            pass  # optuna falls back to independent sampling for categorical dims; documented, allowed
        baseline_plans(spec)
    if r.use_gpu is False and r.gpus_per_worker > 0:
        raise SpecError(f"resources.gpus_per_worker: {r.gpus_per_worker} with use_gpu: false")
    if spec.seeds is not None:
        _validate_seeds(spec, base)
    if spec.analysis.primary not in reported_metrics(base):
        known = ", ".join(sorted(m for m in reported_metrics(base) if m.startswith(C.EVAL_PREFIX)))
        raise SpecError(f"analysis.primary: {spec.analysis.primary!r} is never reported by these trials; they "
                        f"report: {known}")


def adaptive_primary(spec: SweepSpec) -> str:
    """The metric adaptive seeds decide on: the spec's analysis.primary when it has one, else eval/denoise_loss."""
    return getattr(getattr(spec, "analysis", None), "primary", None) or C.DENOISE_LOSS


def _validate_seeds(spec: SweepSpec, base: TrainConfig) -> None:
    if spec.search is not None:
        raise SpecError("seeds: adaptive seeds apply to a grid; a spec with a 'search' section cannot have them "
                        "(run the search as its own spec)")
    arms = [v for v in spec.grid.get("spectral.enabled", [])]
    if sorted(set(map(bool, arms))) != [False, True] or any(not isinstance(v, bool) for v in arms):
        raise SpecError(f"seeds: adaptive seeds need a grid that varies spectral.enabled over [false, true] "
                        f"(got grid.spectral.enabled: {spec.grid.get('spectral.enabled')!r})")
    if "seed" in spec.grid:
        raise SpecError(f"grid.seed: {spec.grid['seed']!r} listed together with 'seeds'; adaptive seeds choose the "
                        "seeds of each round (seeds.first_seed, seeds.start, seeds.step, seeds.max)")
    sf_only = [k for k in spec.grid if k.startswith("spectral.") and k != "spectral.enabled"]
    if sf_only:  # the grid would also repeat the baseline per value: a seed's delta would pair two baselines
        raise SpecError(f"grid.{sf_only[0]}: adaptive seeds pair each SF run with the baseline of its seed, and an "
                        "SF-only key in the grid repeats the baseline arm per value; run one adaptive spec per "
                        f"{sf_only[0]} value (set it in base)")
    primary = adaptive_primary(spec)
    if primary not in reported_metrics(base):
        known = ", ".join(sorted(m for m in reported_metrics(base) if m.startswith(C.EVAL_PREFIX)))
        raise SpecError(f"seeds: the primary metric {primary!r} is never reported by these trials; they report: "
                        f"{known}")


def round_seeds(spec: SweepSpec, round_index: int) -> list[int]:
    """The seeds a round adds to every arm (round 1: the first `start` seeds)."""
    assert spec.seeds is not None
    looks = spec.seeds.looks
    if not 1 <= round_index <= len(looks):
        raise SpecError(f"round {round_index}: the spec plans rounds 1..{len(looks)}")
    done = looks[round_index - 2] if round_index > 1 else 0
    return [spec.seeds.first_seed + i for i in range(done, looks[round_index - 1])]


def round_plans(spec: SweepSpec, round_index: int) -> list[TrialPlan]:
    """Every grid combination with each seed this round adds (trial ids as if `seed` ended the grid)."""
    plans = []
    for combo in grid_plans(spec):
        for seed in round_seeds(spec, round_index):
            overrides = {**combo.overrides, "seed": seed}
            plans.append(TrialPlan(trial_id_for(overrides), overrides, _resolve(spec, overrides, "grid trial")))
    return plans


def describe_rounds(spec: SweepSpec) -> list[str]:
    assert spec.seeds is not None
    looks = spec.seeds.looks
    lines = [f"adaptive up to {len(looks)} rounds, seeds per arm {', '.join(map(str, looks))}: stops when every "
             f"comparison of {adaptive_primary(spec)} is decided (anytime-valid intervals) or at {looks[-1]} seeds"]
    for r in range(1, len(looks) + 1):
        plans = round_plans(spec, r)
        lines.append(f"round {r:<3} seeds {round_seeds(spec, r)}: {len(plans)} trials (phase grid-r{r})")
        lines.extend(f"grid-r{r:<3} {p.trial_id:<40} {json.dumps(p.overrides)}" for p in plans)
    return lines


def describe_trials(spec: SweepSpec) -> list[str]:
    lines = []
    if spec.grid and spec.seeds is not None:
        lines.extend(describe_rounds(spec))
    elif spec.grid:
        for p in grid_plans(spec):
            lines.append(f"grid     {p.trial_id:<40} {json.dumps(p.overrides)}")
    if spec.search:
        if spec.search.baselines:
            for p in baseline_plans(spec):
                lines.append(f"baseline {p.trial_id:<40} {json.dumps(p.overrides)}")
        s = spec.search
        space = ", ".join(f"{k}~{d.choices if d.type == 'categorical' else (d.low, d.high)}" for k, d in s.space.items())
        lines.append(f"search   {s.num_samples} Optuna trials ({s.sampler}, {s.metric} {s.mode}) over {space}")
    return lines


if __name__ == "__main__":
    import sys

    sp = load_spec(sys.argv[1])
    print("\n".join(describe_trials(sp)))
