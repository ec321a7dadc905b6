"""build_report end to end on a real MLflow store: files, contracts, MLflow logging and the CLI entry point."""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.report import add_arguments, build_report, main
from synthetic_sweep import log_synthetic_sweep

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ["metric", "patch_size", "tokens", "baseline_mean", "sf_mean", "delta", "ci_low", "ci_high", "n_pairs"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{base}/mlflow.db"
    sweep = log_synthetic_sweep(uri, "demo", seeds=(0, 1, 2), effects={8: -6.0, 4: 0.0}, search_trials=6,
                                sample_images=True, statuses={"p4-sf-s2": "failed"})
    result = build_report(["demo"], uri, base / "out", n_resamples=2_000)
    return uri, sweep, result


def test_report_files_and_comparison_contract(demo):
    _, _, result = demo
    out = result.out_dir
    for name in ("report.html", "report.md", "runs.parquet", "history.parquet", "comparisons.csv",
                 "interactions.csv", "excluded.csv", "metric_vs_patch.png", "gain_vs_tokens.png",
                 "training_curves.png", "samples.png", "cutoff_schedules.png", "metric_vs_alpha.png",
                 "importance.png", "gain_per_t_bucket.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(result.comparisons_path)
    assert list(table.columns[:9]) == CONTRACT
    assert not table.duplicated(["metric", "patch_size"]).any()  # one SF configuration: one row per pair
    # no analysis section in the logged spec: the held-out denoising loss is the default primary metric
    assert result.metrics[0] == result.primary == "eval/denoise_loss"
    assert result.primary_source == "default: the held-out denoising loss"
    assert result.verdict.startswith("SF lowers denoise_loss at patch 8 (better): Δ ")
    assert {"p_value", "p_signflip", "p_holm", "method", "sd_diff", "pairs_for_80pct_power"} <= set(table.columns)
    assert set(table["method"]) == {"t"}
    html = result.html_path.read_text()
    assert result.verdict.split(" (")[0] in html and html.count("data:image/png;base64,") == len(result.figures)
    assert "<script" not in html and "src=\"http" not in html  # self-contained, nothing to fetch
    md = result.md_path.read_text()
    assert all(f"]({p.name})" in md for p in result.figures.values())
    assert set(pd.read_csv(out / "excluded.csv")["run_name"]) == {"p4-sf-s2"}
    # the report names its method, the sign-flip floor and the primary/secondary split
    assert "95% Student-t for the mean of the seed-paired differences; Welch for the coarse-vs-fine" in md
    assert "with 3 pairs the sign-flip p can never be below 2/2^3 = 0.25" in md
    assert "Primary metric: eval/denoise_loss (default: the held-out denoising loss)." in md
    assert "The other metrics are secondary; their p-values are Holm-adjusted over" in md
    assert "expanded-percentile" not in md and "bootstrap" not in md.split("## Search")[0]
    # every interval that includes 0 gets a power plan under "What to run next"
    open_rows = table[(table["ci_low"] <= 0) & (table["ci_high"] >= 0) & (table["n_pairs"] >= 2)
                      & ~table["metric"].str.startswith("eval/denoise_loss_t")]
    assert len(open_rows) and sum("with 80% power at the 5% level" in m for m in result.messages) == len(open_rows)


def test_report_is_logged_on_the_sweep_run(demo):
    uri, sweep, result = demo
    assert result.logged_run_id == sweep.sweep_run_id
    logged = {f.path for f in MlflowClient(uri).list_artifacts(sweep.sweep_run_id, "report")}
    assert {"report/report.html", "report/runs.parquet", "report/comparisons.csv"} <= logged


def test_cli_main_prints_the_verdict_and_path(demo, tmp_path, capsys):
    uri, _, result = demo
    args = add_arguments(argparse.ArgumentParser()).parse_args(
        ["--experiment", "demo", "--tracking-uri", uri, "--out", str(tmp_path / "cli"), "--no-log",
         "--metric", "eval/denoise_loss"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("SF lowers denoise_loss at patch 8") and f"report: {tmp_path / 'cli' / 'report.html'}" in out
    args = add_arguments(argparse.ArgumentParser()).parse_args(
        ["--experiment", "demo", "--tracking-uri", uri, "--out", str(tmp_path / "cli2"), "--no-log",
         "--primary", "eval/fd_pixel", "--method", "expanded-percentile"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("SF lowers fd_pixel at patch 8")
    md = (tmp_path / "cli2" / "report.md").read_text()
    assert "Primary metric: eval/fd_pixel (set by --primary)." in md
    assert "expanded-percentile bootstrap (Hesterberg 2015) for the mean of the seed-paired" in md


def test_cli_errors_name_the_bad_value(demo, tmp_path, capsys):
    uri, _, _ = demo
    parser = add_arguments(argparse.ArgumentParser())
    assert main(parser.parse_args(["--experiment", "nope", "--tracking-uri", uri, "--out", str(tmp_path)])) == 2
    assert "experiment 'nope' not found" in capsys.readouterr().err
    assert main(parser.parse_args(["--experiment", "demo", "--tracking-uri", uri, "--out", str(tmp_path),
                                   "--metric", "eval/fid"])) == 2
    assert "metrics ['eval/fid'] were not logged by any run" in capsys.readouterr().err
    with pytest.raises(ValueError, match="sweep_run_id 'feed' is not a run"):
        build_report(["demo"], uri, tmp_path, sweep_run_id="feed")


def test_module_entry_point_runs_without_torch(demo, tmp_path):
    uri, _, _ = demo
    code = ("import runpy, sys; sys.argv = ['analysis.report', '--experiment', 'demo', '--tracking-uri', "
            f"{uri!r}, '--out', {str(tmp_path / 'm')!r}, '--no-log']; "
            "import analysis.report; assert 'torch' not in sys.modules, 'analysis.report imported torch'; "
            "runpy.run_module('analysis.report', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SF lowers denoise_loss" in proc.stdout and (tmp_path / "m" / "report.html").is_file()


def test_primary_and_min_effect_come_from_the_logged_spec(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    sweep = log_synthetic_sweep(uri, "declared", seeds=(0, 1, 2), effects={8: -6.0, 4: 0.0})
    spec = {"name": "declared", "analysis": {"primary": "eval/fd_pixel", "min_effect": 3.0, "confidence": 0.9,
                                             "method": "t"}}
    MlflowClient(uri).log_text(sweep.sweep_run_id, json.dumps(spec), "spec/spec.json")
    result = build_report(["declared"], uri, tmp_path / "out", log_to_mlflow=False,
                          metrics=["eval/denoise_loss", "eval/fd_pixel"])
    assert result.primary == result.metrics[0] == "eval/fd_pixel"
    assert result.primary_source == "declared in the spec's analysis.primary"
    assert result.comparison.confidence == 0.9 and "90% CI [" in result.verdict
    table = result.comparison.comparisons
    fd = table[table["metric"] == "eval/fd_pixel"]
    assert (fd["power_effect"] == 3.0).all() and fd["pairs_for_80pct_power"].notna().all()
    assert (table.loc[table["metric"] != "eval/fd_pixel", "power_effect"] != 3.0).all()  # other units: observed Δ
    assert build_report(["declared"], uri, tmp_path / "o2", log_to_mlflow=False,
                        primary="eval/is").primary == "eval/is"  # the argument wins over the spec
    spec["analysis"]["primary"] = "eval/fid"
    MlflowClient(uri).log_text(sweep.sweep_run_id, json.dumps(spec), "spec/spec.json")
    with pytest.raises(ValueError, match=r"analysis.primary 'eval/fid' in the spec logged on sweep run \w+ was not "
                                         r"logged by any run; available: .* \(override it with --primary\)"):
        build_report(["declared"], uri, tmp_path / "o3", log_to_mlflow=False)


def test_spec_analysis_section_is_validated():
    import yaml

    from sweeps.spec import SpecError, load_spec, spec_from_dict

    assert load_spec(ROOT / "sweeps" / "configs" / "demo.yaml").analysis.primary == "eval/denoise_loss"
    tree = yaml.safe_load((ROOT / "sweeps" / "configs" / "demo_32px.yaml").read_text())
    assert spec_from_dict(tree).analysis.primary == "eval/denoise_loss"  # the default, which the demo reports
    spec = spec_from_dict({**tree, "analysis": {"primary": "eval/fd_pixel", "min_effect": 2.0}})
    assert spec.analysis.min_effect == 2.0 and spec.model_dump(mode="json")["analysis"]["primary"] == "eval/fd_pixel"
    with pytest.raises(SpecError, match=r"analysis.primary: 'eval/fid' is never reported by these trials; they "
                                        r"report: .*eval/denoise_loss"):
        spec_from_dict({**tree, "analysis": {"primary": "eval/fid"}})
    with pytest.raises(SpecError, match=r"analysis.min_effect: Input should be greater than 0 \(got -1\)"):
        spec_from_dict({**tree, "analysis": {"min_effect": -1}})
    with pytest.raises(SpecError, match=r"analysis.method: Input should be 't'"):
        spec_from_dict({**tree, "analysis": {"method": "bootstrap"}})


def test_floor_measures_section_and_no_regime_without_a_ratio(demo):
    _, _, result = demo
    res = pd.read_csv(result.out_dir / "resolution.csv")
    assert set(res["metric"]) == {"eval/fd_pixel"} and len(res) == 2  # the only floor measure, two patch sizes
    # synthetic fd_pixel ~70 against a floor ~55: above the floor, so the paired interval decides
    assert res["why"].str.startswith("above the floor").all()
    assert list(res["resolves"]) == [(lo > 0 or hi < 0) for lo, hi in zip(
        *(result.comparison.comparisons.set_index(["metric", "patch_size"]).loc[
            [("eval/fd_pixel", p) for p in res["patch_size"]], c] for c in ("ci_low", "ci_high")))]
    md = result.md_path.read_text()
    assert "## Which measures resolve the arms" in md
    # the synthetic runs log no model.compression_ratio: no regime section, figure or files
    assert "## SF gain vs compression ratio" not in md and result.regime == []
    assert not (result.out_dir / "regime.csv").exists() and "gain_vs_ratio" not in result.figures


def test_default_metrics_include_kid_but_not_its_sd_or_floor():
    from analysis.report import default_metrics

    runs = pd.DataFrame({f"metrics.{m}": [1.0] for m in (
        "eval/denoise_loss", "eval/fd_pixel", "eval/fd_pixel_floor", "eval/kid_pixel", "eval/kid_pixel_std",
        "eval/kid_pixel_floor", "eval/spec_err_low")})
    assert default_metrics(runs) == ["eval/fd_pixel", "eval/denoise_loss", "eval/kid_pixel", "eval/spec_err_low"]
