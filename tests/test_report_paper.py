"""The report a reader meets: results first (verdict, primary table with the coarse-vs-fine row, forest plot), the
secondary metrics as a table, a capped 'What to run next', Methods once at the end; report.tex with booktabs tables;
every figure as PNG, PDF and SVG; the verdict as the sweep run's MLflow description.

The store is tests/verdict_demo_store.py (the `make demo` numbers): its per-seed paired differences are known,
so the table's numbers are checked against SciPy's t interval on those differences, printed by the rule.

    .venv/bin/python -m pytest tests/test_report_paper.py -q
"""
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from analysis.numbers import fmt_ci
from analysis.report import NOTE_TAG, build_report
from verdict_demo_store import DIFFS, build


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("paper")
    uri = build(base / "store")
    return uri, build_report(["demo"], uri, base / "out", n_resamples=1_000)


def _ci(diffs):
    d = np.asarray(diffs)
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    return fmt_ci(d.mean(), ci.low, ci.high)


def test_first_screen_is_the_verdict_the_primary_table_and_the_forest_plot(demo):
    _, result = demo
    html = result.html_path.read_text()
    order = [html.index(x) for x in (result.verdict.split(" (")[0], "<table>", 'alt="Δ denoise_loss (SF − baseline)',
                                     "<h2>Secondary metrics</h2>", "<h2>What to run next</h2>",
                                     "<h2>SF gain per tokenization</h2>", "<h2>Methods</h2>")]
    assert order == sorted(order)
    assert html.rindex("<h2>") == html.index("<h2>Methods</h2>")  # Methods is the last section
    verdict_html = html[html.index("<h2>Verdict</h2>"):html.index("<h2>Secondary metrics</h2>")]
    assert "sign-flip" not in verdict_html and "Holm" not in verdict_html  # explained once, in Methods
    md = result.md_path.read_text()
    first = md[:md.index("## Secondary metrics")]
    rows = {line.split(" | ")[0].strip("| "): line for line in first.splitlines() if line.startswith("| ")}
    for patch, ratio in ((8, "2x"), (4, "0.5x")):
        est, lo, hi = _ci(DIFFS["eval/denoise_loss"][patch])
        cells = [c.strip() for c in rows[str(patch)].strip("|").split("|")]
        assert cells[1:3] == [str((32 // patch) ** 2), ratio] and cells[5] == f"{est} [{lo}, {hi}]"
        assert cells[7] == "3"
    assert [c.strip() for c in rows[str(8)].strip("|").split("|")][8] == "unclear"
    assert [c.strip() for c in rows[str(4)].strip("|").split("|")][8] == "SF better"
    inter = [c.strip() for c in rows["coarse − fine: 8 vs 4"].strip("|").split("|")]
    welch = stats.ttest_ind(DIFFS["eval/denoise_loss"][8], DIFFS["eval/denoise_loss"][4], equal_var=False)
    ci = welch.confidence_interval(0.95)
    est, lo, hi = fmt_ci(np.mean(DIFFS["eval/denoise_loss"][8]) - np.mean(DIFFS["eval/denoise_loss"][4]), ci.low,
                         ci.high)
    assert inter[5] == f"{est} [{lo}, {hi}]" and inter[7] == "3 / 3" and inter[8] == "fine gains more"
    # the headline sentence prints the same digits as the table
    e4, lo4, hi4 = _ci(DIFFS["eval/denoise_loss"][4])
    assert f"Δ {e4}, 95% CI [{lo4}, {hi4}], 3 pairs" in result.verdict


def test_secondary_table_and_capped_next_runs(demo):
    _, result = demo
    md = result.md_path.read_text()
    secondary = md[md.index("## Secondary metrics"):md.index("## What to run next")]
    est, lo, hi = _ci(DIFFS["eval/fd_pixel"][8])
    assert f"| fd_pixel | 8 |" in secondary and f"| {est} [{lo}, {hi}] |" in secondary
    assert "- No clear effect of SF on fd_pixel at patch 8: Δ " in secondary  # the sentences, folded away in HTML
    start = md.index("## What to run next")
    nxt = md[start:md.index("\n## ", start)]
    table_rows = [line for line in nxt.splitlines() if line.startswith("| ") and "comparison" not in line]
    # fd_pixel at patch 4 needs 220 pairs and spec_err_high at 4 needs 167: named once below, not as rows
    assert {r.split(" | ")[0].strip("| ") for r in table_rows} == {
        "denoise_loss at patch 8", "fd_pixel at patch 8", "spec_err_high at patch 8"}
    assert "fd_pixel at patch 4 (needs 220 pairs)" in nxt
    assert "no realistic number of seeds resolves this; set analysis.min_effect" in nxt
    assert "takes 220 seed pairs" in " ".join(result.messages)  # the CLI's list keeps every plan


def test_report_tex_tables_and_vector_figures(demo):
    _, result = demo
    out = result.out_dir
    assert result.tex_path == out / "report.tex"
    for stem in ("table_primary", "table_secondary", "table_interaction"):
        tex = (out / f"{stem}.tex").read_text()
        assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1 and r"\caption{" in tex
        assert "95\\% Student-t" in tex or "Welch" in tex
    primary = (out / "table_primary.tex").read_text()
    assert "pairs" in primary.split(r"\caption{")[1].split("}\n")[0] and primary.count(r"\midrule") == 2
    e, lo, hi = _ci(DIFFS["eval/denoise_loss"][4])
    assert f"{e} [{lo}, {hi}]".replace("-", "$-$") in primary
    report = result.tex_path.read_text()
    assert all(rf"\input{{{s}}}" in report for s in ("table_primary", "table_secondary", "table_interaction"))
    assert len(re.findall(r"\\includegraphics", report)) == len(result.figures)
    for png in result.figures.values():
        assert png.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
        assert ET.parse(png.with_suffix(".svg")).getroot().tag.endswith("svg")


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no pdflatex (apt-get install texlive-latex-recommended)")
def test_report_tex_compiles(demo, tmp_path):
    _, result = demo
    shutil.copytree(result.out_dir, tmp_path / "tex")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
                          cwd=tmp_path / "tex", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (tmp_path / "tex" / "report.pdf").read_bytes()[:5] == b"%PDF-"


def test_the_sweep_run_carries_the_verdict_and_the_whole_report(demo):
    uri, result = demo
    client = MlflowClient(uri)
    run = client.get_run(result.logged_run_id)
    assert run.data.tags[NOTE_TAG] == result.verdict
    logged = {f.path.removeprefix("report/") for f in client.list_artifacts(result.logged_run_id, "report")}
    written = {p.name for p in result.out_dir.iterdir()}
    assert written <= logged and {"report.tex", "table_primary.tex", "forest.pdf", "forest.svg"} <= logged


def test_schedule_figure_skips_an_sf_run_that_logged_no_params():
    # a trial that failed before its first report has no params: its NaN schedule once raised KeyError: 'nan'
    import pandas as pd

    from analysis.report import _schedule_configs

    runs = pd.DataFrame({"run_id": ["a", "b"], "sf": [True, True], "search": [None, None],
                         "params.spectral.schedule": ["contour", float("nan")],
                         "params.spectral.alpha": ["2.0", float("nan")]})
    assert [label for label, _ in _schedule_configs(runs, pd.DataFrame())] == ["contour (α=2, c_min=0.05)"]
