"""The report's one number-formatting rule (analysis.numbers) and the LaTeX escaping of its cells (analysis.latex).

    .venv/bin/python -m pytest tests/test_report_numbers.py -q
"""
import math

import pytest

from analysis.latex import booktabs, escape
from analysis.numbers import ci_decimals, fmt, fmt_ci, fmt_num, fmt_relative, sig_decimals


@pytest.mark.parametrize("low, high, decimals", [
    (-1.1, -0.3, 2),      # width 0.8: 0.80 shows two significant digits
    (-0.63, -0.29, 2),    # width 0.34
    (-31.0, 5.0, 0),      # width 36
    (0.01, 0.87, 2),      # width 0.86
    (-0.045, 0.031, 3),   # width 0.076
    (100.0, 250.0, 0),    # width 150: never negative decimals
    (0.0, 1.0, 1),        # width exactly 1: 1.0
    (0.0, 0.1, 2),        # width exactly 0.1: 0.10
])
def test_decimals_follow_the_interval_width(low, high, decimals):
    assert ci_decimals(low, high) == decimals


def test_the_issue_examples_now_share_one_rule():
    # the headline used to print "Δ -0.7, 95% CI [-1.1, -0.3]" beside "Δ -0.46, 95% CI [-0.63, -0.29]"
    assert fmt_ci(-0.7, -1.1, -0.3) == ["-0.70", "-1.10", "-0.30"]
    assert fmt_ci(-0.46, -0.63, -0.29) == ["-0.46", "-0.63", "-0.29"]
    assert fmt_ci(-12.83, -30.9, 5.2) == ["-13", "-31", "5"]


def test_undefined_or_degenerate_intervals_fall_back_to_two_significant_digits():
    assert ci_decimals(math.nan, 1.0) is None and ci_decimals(0.5, 0.5) is None and ci_decimals(1.0, 0.5) is None
    assert fmt_ci(-0.0123, math.nan, math.nan) == ["-0.012", "n/a", "n/a"]
    assert fmt_ci(3.0, 3.0, 3.0) == ["3.0", "3.0", "3.0"]


def test_values_without_an_interval_align_on_the_largest():
    assert sig_decimals(0.0067) == 4 and sig_decimals(13.0) == 0 and sig_decimals(0.0, math.nan) == 1
    assert fmt(0.2, 0.079) == ["0.20", "0.08"]
    assert fmt(None) == ["n/a"]


def test_no_negative_zero_and_tiny_intervals_are_capped():
    assert fmt_num(-0.0004, 2) == "0.00" and fmt_num(-0.004, 2) == "0.00" and fmt_num(-0.006, 2) == "-0.01"
    assert ci_decimals(0.0, 1e-300) == 12


def test_relative_delta_is_a_share_of_the_baseline_magnitude():
    assert fmt_relative(-0.54, 2.346) == "-23.0%"
    assert fmt_relative(0.5, -2.0) == "+25.0%"  # relative to |baseline|: the sign stays the sign of Δ
    assert fmt_relative(0.1, 0.0) == "" and fmt_relative(math.nan, 1.0) == ""
    assert fmt_relative(-1e-6, 10.0) == "0.0%"


def test_latex_escaping_and_minus_signs():
    assert escape("eval/denoise_loss") == r"eval/denoise\_loss"
    assert escape("Δ SF − baseline [95% CI]") == r"$\Delta$ SF $-$ baseline [95\% CI]"
    assert escape("-0.10 [-0.60, 0.40]") == "$-$0.10 [$-$0.60, 0.40]"
    assert escape("p8-sf-s1 & 3 # x") == r"p8-sf-s1 \& 3 \# x"  # a hyphen inside a word stays a hyphen


def test_booktabs_table_has_rules_caption_label_and_a_rule_before_the_interaction_row():
    import pandas as pd

    table = pd.DataFrame([["8", "-0.10 [-0.60, 0.40]"], ["4", "-0.54 [-0.74, -0.34]"],
                          ["coarse − fine: 8 vs 4", "0.44 [0.01, 0.87]"]], columns=["patch", "Δ SF − baseline [95% CI]"])
    tex = booktabs(table, "denoise_loss, 95% Student-t interval, 3 pairs", "primary", rule_before_last=True)
    lines = tex.splitlines()
    assert lines[0] == r"\begin{table}[t]" and r"\toprule" in lines and r"\bottomrule" in lines
    assert r"\caption{denoise\_loss, 95\% Student-t interval, 3 pairs}" in lines
    assert r"\label{tab:specforce-primary}" in lines and r"\begin{tabular}{lr}" in lines
    assert r"patch & $\Delta$ [95\% CI] \\" in lines  # the caption explains Δ; the header stays short
    body = lines[lines.index(r"\toprule") + 2:lines.index(r"\bottomrule")]
    assert body[0] == r"\midrule" and body[-2] == r"\midrule" and body[-1].startswith(r"coarse $-$ fine")
