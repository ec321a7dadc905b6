"""The report's one number-formatting rule, used by every sentence, table (HTML, Markdown, LaTeX) and CSV-free view.

An estimate and its interval are printed with the same number of decimals, chosen so that the interval's width
shows two significant digits: [-1.1, -0.3] (width 0.8) prints as -0.70 [-1.10, -0.30], [-31, 5] (width 36) as
-13 [-31, 5]. A reader sees at once which digits the data support, and two intervals of similar width look alike.
A value without an interval (an SD, an effect size, a mean on its own) keeps two significant digits of its own
magnitude; a row of a table (baseline, SF, Δ, bounds) uses the decimals of its Δ's interval.

    python -c "from analysis.numbers import fmt_ci; print(fmt_ci(-0.7, -1.1, -0.3))"   # ['-0.70', '-1.10', '-0.30']
"""
from __future__ import annotations

import math

MAX_DECIMALS = 12  # a degenerate, tiny interval must not print 300 digits


def _finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def ci_decimals(low, high) -> int | None:
    """Decimals that show the interval's width with two significant digits; None when it has no positive width."""
    if not (_finite(low) and _finite(high)) or float(high) - float(low) <= 0:
        return None
    width = float(high) - float(low)
    return min(MAX_DECIMALS, max(0, 1 - math.floor(math.log10(width))))


def sig_decimals(*values) -> int:
    """Decimals that show the largest |value| with two significant digits (1 when every value is 0 or missing)."""
    top = max((abs(float(v)) for v in values if _finite(v)), default=0.0)
    return 1 if top == 0 else min(MAX_DECIMALS, max(0, 1 - math.floor(math.log10(top))))


def fmt_num(value, decimals: int) -> str:
    """One number at a fixed number of decimals; 'n/a' when missing; never '-0.00'."""
    if not _finite(value):
        return "n/a"
    text = f"{float(value):.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def fmt(*values) -> list[str]:
    """Numbers without an interval, together at two significant digits of the largest (so they align)."""
    decimals = sig_decimals(*values)
    return [fmt_num(v, decimals) for v in values]


def fmt_ci(estimate, low, high) -> list[str]:
    """[estimate, low, high] at the decimals of the interval's width (two significant digits of the width)."""
    decimals = ci_decimals(low, high)
    if decimals is None:
        decimals = sig_decimals(estimate, low, high)
    return [fmt_num(v, decimals) for v in (estimate, low, high)]


def fmt_relative(delta, baseline) -> str:
    """Δ as a signed share of |baseline| with one decimal of a percent; '' when the baseline is 0 or missing."""
    if not (_finite(delta) and _finite(baseline)) or float(baseline) == 0:
        return ""
    share = float(delta) / abs(float(baseline))
    text = f"{share:+.1%}"
    return "0.0%" if float(text.rstrip("%")) == 0 else text
