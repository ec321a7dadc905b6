"""The sections of a sweep spec (sweeps/spec.py): resources, search dimensions and settings, adaptive seeds, analysis.

Each is a frozen pydantic model refusing unknown keys; `sweeps.spec` re-exports them and validates the whole spec.

    .venv/bin/python -c "from sweeps.spec_schema import Dimension; print(Dimension(type='int', low=2, high=8, step=2).endpoints())"
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

import specforce_contracts as C


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Resources(_Strict):
    workers: int = Field(default=1, gt=0)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    gpus_per_worker: float = Field(default=0.0, ge=0)
    use_gpu: Literal["auto", True, False] = "auto"


class Dimension(_Strict):
    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> "Dimension":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical dimension needs a non-empty 'choices' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"{self.type} dimension needs 'low' and 'high'")
            if self.low >= self.high:
                raise ValueError(f"low={self.low} must be below high={self.high}")
            if self.log and self.low <= 0:
                raise ValueError(f"log scale needs low > 0, got low={self.low}")
            # what Optuna's Int/FloatDistribution accept (sweeps/tune_setup.py builds them only when the sweep starts)
            if self.step is not None and not self.step > 0:
                raise ValueError(f"step must be > 0, got step={self.step}")
            if self.type == "int" and any(v is not None and v != int(v) for v in (self.low, self.high, self.step)):
                raise ValueError(f"an int dimension needs whole low, high and step, got {self.low}, {self.high}, "
                                 f"{self.step}")
            if self.log and self.step is not None and (self.type == "float" or self.step != 1):
                raise ValueError(f"log: true allows no step (int: step 1), got step={self.step}")
        return self

    def endpoints(self) -> list[Any]:
        """What validation resolves: every choice, every value of an int range of <= 64 values (else its ends), the
        ends of a float range (the config's rules are ranges or divisibility)."""
        if self.type == "categorical":
            return list(self.choices or [])
        values = list(range(int(self.low), int(self.high) + 1, int(self.step or 1))) if self.type == "int" else []
        if 0 < len(values) <= 64:
            return values
        return [values[0], values[-1]] if values else [self.low, self.high]
        return [self.low, self.high]


class Asha(_Strict):
    type: Literal["asha"] = "asha"
    grace_images: int = Field(default=12_800, gt=0)
    reduction_factor: float = Field(default=3.0, gt=1)


class Search(_Strict):
    metric: str = C.DENOISE_LOSS
    mode: Literal["min", "max"] = "min"  # when not given: the metric's direction in the registry
    num_samples: int = Field(default=8, gt=0)
    sampler: Literal["tpe", "gp", "random", "cmaes"] = "tpe"
    # TPE's default of 10 random start-up trials turns small sweeps into random search (docs/design.md §4)
    n_startup_trials: int | None = Field(default=None, ge=1)
    max_concurrent: int = Field(default=2, gt=0)
    seed: int = 0
    space: dict[str, Dimension]
    scheduler: Asha | None = None
    baselines: bool = True
    baseline_seeds: list[int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _mode_from_registry(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("mode") is None:
            data = {**data, "mode": C.search_mode(data.get("metric") or C.DENOISE_LOSS)}
        return data

    @field_validator("mode")
    @classmethod
    def _mode_agrees(cls, mode: str, info: ValidationInfo) -> str:
        metric = info.data.get("metric")
        better = C.direction(metric) if metric else C.NONE
        if better in (C.LOWER, C.HIGHER) and mode != C.search_mode(metric):
            raise ValueError(f"{mode!r} would search for the worst {metric}: it is {better}-is-better (omit mode, or "
                             f"use {C.search_mode(metric)!r})")
        return mode

    @field_validator("space")
    @classmethod
    def _space(cls, v: dict[str, Dimension]) -> dict[str, Dimension]:
        if not v:
            raise ValueError("search.space must name at least one dotted key")
        return v

    @property
    def startup_trials(self) -> int:
        return self.n_startup_trials or max(2, min(10, self.num_samples // 3))


class Seeds(_Strict):
    """Adaptive seeds: rounds of seed pairs (start, then +step, up to max per arm) until the primary metric's
    comparisons are decided with anytime-valid intervals (analysis/sequential.py)."""

    start: int = Field(default=3, ge=2)  # a t interval needs 2 pairs
    step: int = Field(default=2, ge=1)
    max: int = Field(default=12, ge=2, le=200)
    stop: Literal["decided"] = "decided"
    first_seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "Seeds":
        if self.max < self.start:
            raise ValueError(f"max={self.max} must be at least start={self.start}")
        return self

    @property
    def looks(self) -> tuple[int, ...]:
        """Seeds per arm after each round: start, start+step, ..., max."""
        looks = list(range(self.start, self.max + 1, self.step))
        return tuple(looks if looks[-1] == self.max else looks + [self.max])


class Analysis(_Strict):
    """How `specforce report` judges the sweep, declared before it runs: the primary metric the headline speaks
    about (every other metric is secondary, Holm-adjusted), the smallest effect worth detecting (power planning),
    the confidence level and the interval method (analysis/intervals.py)."""

    primary: str = C.DENOISE_LOSS
    min_effect: float | None = Field(default=None, gt=0)  # in the primary metric's units
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    method: Literal["t", "expanded-percentile", "percentile", "basic", "BCa"] = "t"
