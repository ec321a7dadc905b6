"""Spectral Forcing cutoff schedules c(t) and the data's SNR front, in NumPy (no torch).

The report draws them from logged params only, so the formulas are re-derived here from DESIGN.md §1
(t=0 is pure noise, t=1 is data; frequencies are the normalised radius r in [0, 1]). Which alpha, r0 and cutoffs a
run used is read from its trial record (params `spectral.used.*`, the operator's own `describe()`); only runs logged
by a user's own script, without a record, fall back to re-deriving them from the config params:

    linear    c(t) = c_min + (c_max - c_min) * t                       (the paper)
    contour   c(t) = min(c_max, c_min * (1 - t)^(-2/alpha))            (the paper's front formula)
    snr       c(t) = clip(r0 * (t / (1 - t))^(2/alpha), c_min, c_max)  (the exact SNR crossover)
    constant  c(t) = c_const                                           (a time-independent low-pass)
    front     r*(t) = r0 * (t / (1 - t))^(2/alpha)                     with the data's fitted alpha, r0

    python -c "import numpy as np; from analysis.schedules import cutoff; print(cutoff('contour', np.linspace(0, 1, 5)))"
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from specforce_contracts import SF_USED_PREFIX

SCHEDULES = ("linear", "contour", "snr", "constant")


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return value


def _times(t: Any) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if t.size and (np.nanmin(t) < 0 or np.nanmax(t) > 1):
        raise ValueError(f"t must lie in [0, 1], got values in [{np.nanmin(t)}, {np.nanmax(t)}]")
    return t


def _power_ratio(t: np.ndarray, alpha: float) -> np.ndarray:
    """(t / (1 - t))^(2/alpha): 0 at t=0 and +inf at t=1, without division warnings at the ends."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.power(t / (1.0 - t), 2.0 / alpha)
    return np.where(t >= 1.0, np.inf, out)


def snr_front(t: Any, alpha: float, r0: float) -> np.ndarray:
    """Normalised frequency where the per-band SNR of the noisy image crosses 1 (unclipped)."""
    return float(_positive("r0", r0)) * _power_ratio(_times(t), _positive("alpha", alpha))


def cutoff(schedule: str, t: Any, *, c_min: float = 0.05, c_max: float = 1.0, alpha: float = 2.0,
           r0: float | None = None, c_const: float = 0.5) -> np.ndarray:
    """c(t) of one schedule, element-wise over t in [0, 1]."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    c_min, c_max = float(c_min), float(c_max)
    if not (0.0 <= c_min <= c_max <= 1.0):
        raise ValueError(f"need 0 <= c_min <= c_max <= 1, got c_min={c_min!r}, c_max={c_max!r}")
    t = _times(t)
    if schedule == "linear":
        return c_min + (c_max - c_min) * t
    if schedule == "constant":
        if not 0.0 < float(c_const) <= 1.0:
            raise ValueError(f"c_const must lie in (0, 1], got {c_const!r}")
        return np.full_like(t, float(c_const))
    alpha = _positive("alpha", alpha)
    if schedule == "contour":
        with np.errstate(divide="ignore"):
            grow = np.power(1.0 - t, -2.0 / alpha)
        return np.minimum(c_max, c_min * grow)
    if r0 is None:
        raise ValueError("r0 is required for schedule='snr' (the fitted spectrum scale; see data.spectrum_r0)")
    return np.clip(snr_front(t, alpha, r0), c_min, c_max)


def _number(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) in ("None", "", "nan"):
        return None
    return float(value)


def schedule_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `cutoff` for one run's logged (dotted, string) params.

    A run with a trial record logged the operator it used as `spectral.used.*`: those values are taken as they are.
    Without one (a user's own script, DESIGN.md §3), this mirrors how training resolves the snr schedule: an explicit
    spectral.r0 wins unless spectral.fit_from_data; otherwise the run fitted the spectrum (spectral.fitted_*, else
    data.spectrum_*); fit_from_data also takes its alpha.
    """
    used = {k.removeprefix(SF_USED_PREFIX): v for k, v in params.items() if str(k).startswith(SF_USED_PREFIX)}
    if str(used.get("schedule", "None")) not in ("None", "", "nan"):
        return _from_used(used)
    schedule = str(params.get("spectral.schedule", "linear"))
    kw: dict[str, Any] = {"schedule": schedule}
    for key in ("c_min", "c_max", "alpha", "c_const"):
        value = _number(params, f"spectral.{key}")
        if value is not None:
            kw[key] = value
    if schedule == "snr":
        fitted_r0 = _number(params, "spectral.fitted_r0") or _number(params, "data.spectrum_r0")
        fitted_alpha = _number(params, "spectral.fitted_alpha") or _number(params, "data.spectrum_alpha")
        fit_from_data = str(params.get("spectral.fit_from_data", "False")) == "True"
        explicit_r0 = _number(params, "spectral.r0")
        kw["r0"] = fitted_r0 if (fit_from_data or explicit_r0 is None) else explicit_r0
        if fit_from_data and fitted_alpha is not None:
            kw["alpha"] = fitted_alpha
        if kw["r0"] is None:
            raise ValueError("params: schedule 'snr' without spectral.r0, spectral.fitted_r0 or data.spectrum_r0")
    return kw


def _from_used(used: Mapping[str, Any]) -> dict[str, Any]:
    """`cutoff` arguments from the operator's logged `describe()` (the values it ran with, no re-derivation)."""
    schedule = str(used["schedule"])
    kw: dict[str, Any] = {"schedule": schedule}
    for key in ("c_min", "c_max", "alpha", "c_const"):
        value = _number(used, key)
        if value is not None:
            kw[key] = value
    if schedule == "snr":
        kw["r0"] = _number(used, "r0")
        if kw["r0"] is None:
            raise ValueError("params: schedule 'snr' logged without spectral.used.r0")
    return kw
