"""The regime study: model.bottleneck (config, model, logged params), the regime spec, the SF-gain-vs-compression
analysis (trend, figure, sentences) and which floor measures separate the arms, on real MLflow stores."""
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from scipy import stats

from analysis.regime import slope_contrast
from analysis.report import build_report
from trainers.training.config import ConfigError, config_from_dict
from trainers.model.jit import JIT_PRESETS, build_jit
from trainers.training.builders import build_model, model_shape_params

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------------------- the model side
def test_build_jit_bottleneck_sets_the_compression_at_a_fixed_token_count():
    narrow = build_jit("jit-tiny", image_size=32, patch_size=8, in_channels=3, num_classes=0, bottleneck=8)
    default = build_jit("jit-tiny", image_size=32, patch_size=8, in_channels=3, num_classes=0)
    assert tuple(narrow.x_embedder.proj1.weight.shape) == (8, 3, 8, 8)  # 192 patch dims -> 8
    assert default.preset.bottleneck == JIT_PRESETS["jit-tiny"].bottleneck == 32
    assert narrow.num_tokens == default.num_tokens == 16
    out = narrow(torch.randn(2, 3, 32, 32), torch.rand(2), torch.zeros(2, dtype=torch.long))
    assert out.shape == (2, 3, 32, 32)
    with pytest.raises(ValueError, match=r"^bottleneck: must be >= 1, got 0$"):
        build_jit("jit-tiny", image_size=32, bottleneck=0)


def test_config_bottleneck_is_validated_and_resolved_in_the_logged_params():
    with pytest.raises(ConfigError, match=r"^model.bottleneck: Input should be greater than 0 \(got 0\)$"):
        config_from_dict({"model": {"bottleneck": 0}})
    cfg = config_from_dict({"model": {"patch_size": 8, "bottleneck": 8},
                            "data": {"name": "grf", "options": {"channels": 3}}})
    assert cfg.flat()["model.bottleneck"] == 8
    params = model_shape_params(build_model(cfg, 3, 0, None))
    assert params["model.bottleneck"] == 8 and params["model.compression_ratio"] == 3 * 8 * 8 / 8 == 24.0
    assert params["model.tokens"] == 16
    preset = model_shape_params(build_model(config_from_dict({"model": {"patch_size": 8}}), 1, 0, None))
    assert preset["model.bottleneck"] == 32 and preset["model.compression_ratio"] == 64 / 32  # the preset's width


def test_trial_logger_logs_the_resolved_bottleneck_not_none(tmp_path):
    from specforce_contracts import REPORT_RECORD_KEY, TrialRecord
    from sweep_helpers import grid_trial, trial_logger_in
    from sweeps.trial import IMAGES_KEY
    from trainers.training.config import config_with_overrides

    client, exp, parent, logger = trial_logger_in(tmp_path)
    ids = {}
    for key, overrides, extras in (("a", {}, {"model.bottleneck": 32, "model.compression_ratio": 2.0}),
                                   ("b", {"model.bottleneck": 8}, {"model.bottleneck": 8, "model.compression_ratio": 8.0})):
        trial = grid_trial(key, overrides)
        logger.on_trial_start(0, [], trial)
        ids[key] = logger.runs[key]
        before = client.get_run(ids[key]).data.params
        assert "model.bottleneck" not in before or before["model.bottleneck"] == "8"  # never "None"
        # the worker's first report carries its trial record: the config as it ran plus the derived params
        record = TrialRecord(config_with_overrides({"model": {"patch_size": 8}}, overrides).model_dump(mode="json"),
                             derived=extras)
        logger.on_trial_result(0, [], trial, {IMAGES_KEY: 64, REPORT_RECORD_KEY: record.to_json()})
    a, b = (client.get_run(ids[k]).data.params for k in "ab")
    assert a["model.bottleneck"] == "32" and a["model.compression_ratio"] == "2.0"
    assert b["model.bottleneck"] == "8" and b["model.compression_ratio"] == "8.0"


def test_regime_spec_spans_four_ratios_two_spectra_four_seeds():
    from sweeps.spec import grid_plans, load_spec, validate_spec

    spec = load_spec(ROOT / "sweeps" / "configs" / "regime.yaml")
    validate_spec(spec)
    assert spec.analysis.primary == "eval/denoise_loss"
    plans = grid_plans(spec)
    assert len({p.overrides["seed"] for p in plans}) >= 4
    assert {p.config.data.options["alpha_data"] for p in plans} == {1.5, 3.0}
    ratios = {}
    for p in plans:
        if p.overrides["seed"] == 0 and not p.overrides["spectral.enabled"]:
            m = build_model(p.config, p.config.data.options["channels"], 0, None)
            shape = model_shape_params(m)
            ratios.setdefault(p.config.data.options["alpha_data"], set()).add(shape["model.compression_ratio"])
            assert shape["model.tokens"] == 16  # the bottleneck axis keeps the token count fixed
    assert ratios == {1.5: {3.0, 6.0, 12.0, 24.0}, 3.0: {3.0, 6.0, 12.0, 24.0}}


# ---------------------------------------------------------------------------------------------------- the trend test
def test_slope_contrast_is_the_least_squares_slope_with_a_welch_interval():
    rng = np.random.default_rng(3)
    x = np.log2([3.0, 6.0, 12.0, 24.0])
    groups = [(xi, -0.02 * xi + rng.normal(0, 0.01, n)) for xi, n in zip(x, (4, 4, 5, 3))]
    slope, lo, hi, p = slope_contrast(groups, 0.95)
    pooled_x = np.concatenate([np.full(d.size, xi) for xi, d in groups])
    assert slope == pytest.approx(stats.linregress(pooled_x, np.concatenate([d for _, d in groups])).slope, rel=1e-12)
    # two groups: the slope is the difference of means over the x gap, and the interval is Welch's
    a, b = rng.normal(0, 1, 4), rng.normal(1, 3, 6)
    slope, lo, hi, p = slope_contrast([(0.0, a), (2.0, b)], 0.95)
    welch = stats.ttest_ind(b, a, equal_var=False)
    ci = welch.confidence_interval(0.95)
    assert slope == pytest.approx((b.mean() - a.mean()) / 2) and p == pytest.approx(welch.pvalue, rel=1e-9)
    assert (lo, hi) == pytest.approx((ci.low / 2, ci.high / 2), rel=1e-9)
    assert all(math.isnan(v) for v in slope_contrast([(1.0, a), (1.0, b)], 0.95))  # one ratio: no slope
    assert all(math.isnan(v) for v in slope_contrast([(0.0, a), (1.0, b[:1])], 0.95))  # a ratio with 1 pair


def test_slope_contrast_is_calibrated_under_the_null_with_unequal_spreads():
    # the 24x pairs spread 5 times more than the 3x ones (as a noisy coarse ratio would): still ~5% false trends
    rng = np.random.default_rng(0)
    x, sds = np.log2([3.0, 6.0, 12.0, 24.0]), (0.2, 0.4, 0.6, 1.0)
    false = 0
    for _ in range(4000):
        lo, hi = slope_contrast([(xi, rng.normal(0, sd, 4)) for xi, sd in zip(x, sds)], 0.95)[1:3]
        false += not lo <= 0 <= hi
    assert 0.03 < false / 4000 < 0.065  # nominal 5%; Satterthwaite is slightly conservative; binomial SD 0.35%


# ----------------------------------------------------------------------------------------------- a synthetic regime
ALPHAS = (1.5, 3.0)
BOTTLENECKS = (64, 32, 16, 8)  # ratios 3, 6, 12, 24 at 3 x 8 x 8 = 192 patch dims
SEEDS = (0, 1, 2, 3)


def _effect(alpha: float, ratio: float) -> float:
    # alpha 3: SF's gain grows by 0.02 per doubling of the ratio; alpha 1.5: a constant gain of 0.01
    return -0.02 * math.log2(ratio) if alpha == 3.0 else -0.01


def log_regime(uri: str, experiment: str, *, noise: float = 0.003, kid_std: float = 1e-4, rng_seed: int = 0) -> None:
    """A regime sweep through the real MLflow client, with the params the trainer logs (bottleneck, ratio)."""
    rng = np.random.default_rng(rng_seed)
    client = MlflowClient(uri)
    exp = client.create_experiment(experiment)
    parent = client.create_run(exp, run_name="sweep", tags={"specforce.role": "sweep"}).info.run_id
    now = int(time.time() * 1000)
    for alpha in ALPHAS:
        for bottleneck in BOTTLENECKS:
            ratio = 192 / bottleneck
            for seed in SEEDS:
                offset = rng.normal(0, 0.05)
                for sf in (False, True):
                    name = f"a{alpha}-b{bottleneck}-{'sf' if sf else 'base'}-s{seed}"
                    # each spectrum has its own reference set, as the evaluator records it: never outvoted
                    entry = {"extractor": "pixel", "num_samples": 256, "reference_sha256": f"ref-{alpha}"}
                    provenance = json.dumps({k: entry for k in ("kid_pixel", "kid_pixel_floor", "fd_pixel")})
                    run_id = client.create_run(exp, run_name=name, tags={
                        "specforce.role": "trial", "mlflow.parentRunId": parent, "specforce.status": "completed",
                        "specforce.provenance": provenance}).info.run_id
                    params = {"model.preset": "jit-tiny", "model.patch_size": 8, "model.bottleneck": bottleneck,
                              "model.compression_ratio": ratio, "model.tokens": 16, "model.parameters": 1300000 + bottleneck,
                              "spectral.enabled": sf, "spectral.schedule": "linear", "data.name": "grf",
                              "data.image_size": 32, "data.options": json.dumps({"channels": 3, "alpha_data": alpha}),
                              "seed": seed}
                    loss = 0.5 + offset + _effect(alpha, ratio) * sf + rng.normal(0, noise)
                    # kid_pixel: SF lowers it by 0.004 everywhere, far above its subset SD; fd_pixel sits at its floor
                    kid = 0.01 + offset / 100 - 0.004 * sf + rng.normal(0, kid_std)
                    metrics = {"eval/denoise_loss": loss, "eval/kid_pixel": kid, "eval/kid_pixel_std": kid_std,
                               "eval/kid_pixel_floor": 0.0, "eval/fd_pixel": 140.0 + rng.normal(0, 1.0),
                               "eval/fd_pixel_floor": 139.0, "eval/denoise_loss_t0.0-0.5": loss / 2,
                               "eval/denoise_loss_t0.5-1.0": loss * 1.5}
                    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 9600) for k, v in metrics.items()],
                                     params=[Param(k, str(v)) for k, v in params.items()])
                    client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")


@pytest.fixture(scope="module")
def regime(tmp_path_factory):
    base = tmp_path_factory.mktemp("regime")
    uri = f"sqlite:///{base}/mlflow.db"
    log_regime(uri, "regime")
    return build_report(["regime"], uri, base / "out", log_to_mlflow=False,
                        metrics=["eval/denoise_loss", "eval/fd_pixel", "eval/kid_pixel", "eval/denoise_loss_t0.0-0.5",
                                 "eval/denoise_loss_t0.5-1.0"])


def test_regime_table_has_one_point_per_spectrum_and_ratio(regime):
    ratios = pd.read_csv(regime.out_dir / "regime.csv")
    assert len(ratios) == 8 and set(ratios["line"]) == {"alpha_data=1.5", "alpha_data=3.0"}
    assert sorted(ratios["compression_ratio"].unique()) == [3.0, 6.0, 12.0, 24.0]
    assert (ratios["n_pairs"] == 4).all() and (ratios["tokens"] == 16).all()
    # the bottleneck splits the comparisons into contexts; the derived ratio does not
    contexts = set(regime.comparison.comparisons["context"])
    assert len(contexts) == 8 and all("model.bottleneck=" in c for c in contexts)
    assert not any("compression_ratio" in c for c in contexts)
    row = ratios[(ratios["line"] == "alpha_data=3.0") & (ratios["compression_ratio"] == 24.0)].iloc[0]
    assert row["delta"] == pytest.approx(-0.02 * math.log2(24), abs=0.01) and row["ci_high"] < 0


def test_regime_trend_and_sentences_follow_the_intervals(regime):
    trend = pd.read_csv(regime.out_dir / "regime_trend.csv").set_index("line")
    steep = trend.loc["alpha_data=3.0"]
    assert steep["slope_per_doubling"] == pytest.approx(-0.02, abs=0.004) and steep["slope_high"] < 0
    assert steep["n_pairs"] == 16 and (steep["low_ratio"], steep["high_ratio"]) == (3.0, 24.0)
    flat = trend.loc["alpha_data=1.5"]
    assert flat["slope_low"] < 0 < flat["slope_high"]
    by_line = {s.split(":")[0]: s for s in regime.regime}
    assert "SF's gain in denoise_loss grows with compression: gain per doubling of the ratio 0.02" \
        in by_line["alpha_data=3.0"] and "Welch-Satterthwaite" in by_line["alpha_data=3.0"]
    assert "SF better at 24x, 12x, 6x, 3x" in by_line["alpha_data=3.0"]
    assert "no clear trend of SF's gain in denoise_loss with compression" in by_line["alpha_data=1.5"]
    md = regime.md_path.read_text()
    assert "## SF gain vs compression ratio" in md and "](gain_vs_compression_ratio.png)" in md
    assert "SF gain vs compression ratio, alpha_data=3.0: SF's gain" in md.split("## SF gain vs")[0]  # in the verdict
    assert "the coarse-vs-fine question needs a second patch size" not in md  # the bottleneck sweep needs no hint
    assert regime.figures["gain_vs_ratio"].is_file()
    assert regime.figures["bucket_gains"].is_file()  # one bar group per bottleneck context, no duplicate-label crash
    assert "gain_vs_tokens" not in regime.figures  # one patch size: no token axis to draw


def test_floor_measures_that_separate_the_arms_lead_the_secondary_list(regime):
    res = pd.read_csv(regime.out_dir / "resolution.csv")
    kid, fd = res[res["metric"] == "eval/kid_pixel"], res[res["metric"] == "eval/fd_pixel"]
    assert len(kid) == len(fd) == 8  # both spectra, though their reference sets differ
    assert regime.excluded.empty
    assert kid["resolves"].all() and not fd["resolves"].any()
    assert kid["noise"].to_numpy() == pytest.approx(math.sqrt(2) * 1e-4)
    assert fd["why"].str.startswith("both arms sit within 10% of the floor").all()
    # the measure that separates the arms leads, the floor-bound one comes after the measures without a floor
    assert regime.metrics == ["eval/denoise_loss", "eval/kid_pixel", "eval/denoise_loss_t0.0-0.5",
                              "eval/denoise_loss_t0.5-1.0", "eval/fd_pixel"]
    md = regime.md_path.read_text()
    assert "Separates the arms at this sample count: kid_pixel in 8 of 8 comparison(s); fd_pixel in 0 of 8" in md


def test_kid_within_its_subset_sd_does_not_separate(tmp_path):
    from analysis import load_runs
    from analysis.compare import compare_arms
    from analysis.resolution import order_secondary, resolution_table

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    log_regime(uri, "noisy", kid_std=0.01)  # |Δ| 0.004 against a noise of sqrt(2) x 0.01
    runs = load_runs("noisy", uri)
    metrics = ["eval/denoise_loss", "eval/fd_pixel", "eval/kid_pixel"]
    res = resolution_table(runs, compare_arms(runs, metrics))
    assert len(res) == 16 and not res["resolves"].any()
    assert res.loc[res["metric"] == "eval/kid_pixel", "why"].str.endswith("(needs >= 2x)").all()
    assert order_secondary(metrics, res) == metrics  # nothing separates: order kept


def test_patch_size_axis_gives_the_figure_too(tmp_path, capsys):
    """The demo's axis: patch 16 vs 8 at a fixed bottleneck (ratio and token count change together)."""
    import argparse

    from analysis.report import add_arguments, main

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rng = np.random.default_rng(1)
    client = MlflowClient(uri)
    exp = client.create_experiment("patches")
    parent = client.create_run(exp, tags={"specforce.role": "sweep"}).info.run_id
    for patch, effect in ((16, -0.2), (8, -0.1)):  # 64 px, one channel, bottleneck 32: ratios 8 and 2
        for seed in range(4):
            offset = rng.normal(0, 0.05)
            for sf in (False, True):
                run_id = client.create_run(exp, tags={"specforce.role": "trial", "mlflow.parentRunId": parent}
                                           ).info.run_id
                params = {"model.patch_size": patch, "model.bottleneck": 32, "model.compression_ratio": patch ** 2 / 32,
                          "model.tokens": (64 // patch) ** 2, "spectral.enabled": sf, "seed": seed,
                          "data.image_size": 64}
                loss = 1.0 + offset + effect * sf + rng.normal(0, 0.01)
                client.log_batch(run_id, metrics=[Metric("eval/denoise_loss", loss, 0, 100)],
                                 params=[Param(k, str(v)) for k, v in params.items()])
                client.set_terminated(run_id, "FINISHED")
    args = add_arguments(argparse.ArgumentParser()).parse_args(
        ["--experiment", "patches", "--tracking-uri", uri, "--out", str(tmp_path / "out"), "--no-log"])
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "  regime: all runs: SF's gain in denoise_loss grows with compression: gain per doubling of the ratio 0.05" \
        in out
    ratios = pd.read_csv(tmp_path / "out" / "regime.csv")
    assert list(ratios["compression_ratio"]) == [2.0, 8.0] and list(ratios["tokens"]) == [64, 16]
    assert (tmp_path / "out" / "gain_vs_compression_ratio.png").is_file()


def test_an_adaptive_report_shows_no_fixed_n_trend_and_matches_seeds_at_the_extremes(regime):
    # with the adaptive sweeps' anytime-valid method, the trend's fixed-n interval would not hold at the stopping
    # time, so it is not shown; the extremes' difference is the interval on per-seed double differences
    from analysis import load_runs
    from analysis.adaptive import register_confseq
    from analysis.compare import compare_arms
    from analysis.regime import ratio_table, regime_sentences, trend_table
    from analysis.sequential import Design, sequential_interval

    design = Design((3, 4), alpha=0.05, family_size=3)
    method = register_confseq(design)
    runs = load_runs("regime", f"sqlite:///{regime.out_dir.parent}/mlflow.db")  # the fixture's store
    comparison = compare_arms(runs, ["eval/denoise_loss"], method=method)
    ratios = ratio_table(runs, comparison, "eval/denoise_loss")
    trends = trend_table(ratios, comparison)
    by_line = {s.split(":")[0]: s for s in regime_sentences(ratios, trends, comparison)}
    steep = by_line["alpha_data=3.0"]
    assert "no trend test: this sweep stopped adaptively" in steep and "Welch-Satterthwaite" not in steep
    pairs = comparison.pairs
    row = ratios[(ratios["line"] == "alpha_data=3.0")].set_index("compression_ratio")

    def deltas(ratio):
        r = row.loc[ratio]
        sel = pairs[(pairs["context"] == r["context"]) & (pairs["patch_size"] == r["patch_size"])]
        return sel.set_index("seed")["delta"]

    expected = sequential_interval((deltas(24.0) - deltas(3.0)).to_numpy(), design)
    t = trends.set_index("line").loc["alpha_data=3.0"]
    assert (t["extremes_low"], t["extremes_high"]) == pytest.approx((expected.low, expected.high), rel=1e-12)
