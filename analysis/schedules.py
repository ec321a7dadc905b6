"""Spectral Forcing cutoff schedules c(t), the data's SNR front and the alpha a run used, in NumPy (no torch).

The report draws the schedules from logged params only. c(t) is `specforce_contracts.sf_cutoff`, the one written
form of the formula that the SF operator itself runs on torch tensors, here evaluated with NumPy (t=0 is pure
noise, t=1 is data; frequencies are the normalised radius r in [0, 1], docs/design.md §1):

    linear    c(t) = c_min + (c_max - c_min) * t
    contour   c(t) = min(c_max, c_min * (1 - t)^(-2/alpha))
    snr       c(t) = clip(r0 * (t / (1 - t))^(2/alpha), c_min, c_max)
    constant  c(t) = c_const
    front     r*(t) = r0 * (t / (1 - t))^(2/alpha)    the snr formula unclipped, with the data's fitted alpha, r0

Which alpha, r0 and cutoffs a run used is read from its trial record (params `spectral.used.*`, the operator's own
`describe()`); only runs logged by a user's own script, without a record, fall back to re-deriving them from the
config params the way training resolves them. `ran_alpha` is that rule for alpha alone: the runs table's `alpha`
column, the search importance and every figure read it, so none of them describes an alpha no run used.

    python -c "import numpy as np; from analysis.schedules import cutoff; \\
        print(cutoff('contour', np.linspace(0, 1, 5)))"
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np

from specforce_contracts import (DATA_SPECTRUM_PARAMS, FITTED_PARAMS, SF_DEFAULTS, SF_SCHEDULES, SF_USED_PREFIX,
                                 sf_cutoff)

SCHEDULES = tuple(s for s in SF_SCHEDULES if s != "none")  # `none` has no cutoff to draw
# what sf_cutoff needs of an array library, for NumPy (np.clip takes None for a missing bound)
_NUMPY_OPS = SimpleNamespace(where=np.where, clip=np.clip, full_like=np.full_like)


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


def snr_front(t: Any, alpha: float, r0: float) -> np.ndarray:
    """Normalised frequency where the per-band SNR of the noisy image crosses 1: the snr schedule with the bounds
    0 and +inf, so 0 at t=0 and +inf at t=1."""
    return sf_cutoff("snr", _times(t), _NUMPY_OPS, c_min=0.0, c_max=np.inf, alpha=_positive("alpha", alpha),
                     r0=_positive("r0", r0), c_const=SF_DEFAULTS["c_const"])


def cutoff(schedule: str, t: Any, *, c_min: float = SF_DEFAULTS["c_min"], c_max: float = SF_DEFAULTS["c_max"],
           alpha: float = SF_DEFAULTS["alpha"], r0: float | None = None,
           c_const: float = SF_DEFAULTS["c_const"]) -> np.ndarray:
    """c(t) of one schedule, element-wise over t in [0, 1]."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    c_min, c_max = float(c_min), float(c_max)
    if not (0.0 <= c_min <= c_max <= 1.0):
        raise ValueError(f"need 0 <= c_min <= c_max <= 1, got c_min={c_min!r}, c_max={c_max!r}")
    t = _times(t)
    if schedule == "constant" and not 0.0 < float(c_const) <= 1.0:
        raise ValueError(f"c_const must lie in (0, 1], got {c_const!r}")
    if schedule in ("contour", "snr"):
        alpha = _positive("alpha", alpha)
    if schedule == "snr":
        if r0 is None:
            raise ValueError("r0 is required for schedule='snr' (the fitted spectrum scale; see data.spectrum_r0)")
        r0 = _positive("r0", r0)
    return sf_cutoff(schedule, t, _NUMPY_OPS, c_min=c_min, c_max=c_max, alpha=alpha, r0=r0, c_const=float(c_const))


def _number(params: Mapping[str, Any], key: str) -> float | None:
    value = params.get(key)
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) in ("None", "", "nan"):
        return None
    return float(value)


def _fitted(params: Mapping[str, Any], key: str) -> float | None:
    """The snr schedule's own fit of `key` (alpha or r0), else the data spectrum's."""
    return _number(params, FITTED_PARAMS[key]) or _number(params, DATA_SPECTRUM_PARAMS[key])


def _fits_from_data(params: Mapping[str, Any]) -> bool:
    """Training fits alpha from the data only for the snr schedule with spectral.fit_from_data."""
    return (str(params.get("spectral.schedule")) == "snr"
            and str(params.get("spectral.fit_from_data", "False")).strip().lower() == "true")


def ran_alpha(params: Mapping[str, Any]) -> float | None:
    """The cutoff exponent alpha a run's SF operator used, from its logged (dotted, string) params.

    spectral.used.alpha when the run logged its trial record; without one, the fitted alpha when the snr schedule
    fitted it from the data (spectral.fit_from_data), else the configured spectral.alpha (None when not logged)."""
    used = _number(params, SF_USED_PREFIX + "alpha")
    if used is not None:
        return used
    fitted = _fitted(params, "alpha") if _fits_from_data(params) else None
    return fitted if fitted is not None else _number(params, "spectral.alpha")


def schedule_from_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of `cutoff` for one run's logged (dotted, string) params.

    A run with a trial record logged the operator it used as `spectral.used.*`: those values are taken as they are.
    Without one (a user's own script, docs/design.md §3), this mirrors how training resolves the snr schedule: an explicit
    spectral.r0 wins unless spectral.fit_from_data; otherwise the run fitted the spectrum (spectral.fitted_*, else
    data.spectrum_*); alpha is `ran_alpha`.
    """
    used = {k.removeprefix(SF_USED_PREFIX): v for k, v in params.items() if str(k).startswith(SF_USED_PREFIX)}
    recorded = str(used.get("schedule", "None")) not in ("None", "", "nan")
    source, prefix = (used, "") if recorded else (params, "spectral.")
    schedule = str(source.get(prefix + "schedule", SF_DEFAULTS["schedule"]))
    kw: dict[str, Any] = {"schedule": schedule}
    for key in ("c_min", "c_max", "c_const"):
        value = _number(source, prefix + key)
        if value is not None:
            kw[key] = value
    alpha = ran_alpha(params)
    if alpha is not None:
        kw["alpha"] = alpha
    if schedule == "snr":
        if recorded:
            kw["r0"] = _number(used, "r0")
        else:
            explicit_r0 = _number(params, "spectral.r0")
            kw["r0"] = _fitted(params, "r0") if (_fits_from_data(params) or explicit_r0 is None) else explicit_r0
        if kw["r0"] is None:
            raise ValueError("params: schedule 'snr' logged without spectral.used.r0" if recorded else
                             "params: schedule 'snr' without spectral.r0, spectral.fitted_r0 or data.spectrum_r0")
    return kw
