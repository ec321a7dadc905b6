"""specforce_contracts: one registry of metric names and directions that the evaluator, the spec validator, the
searcher and the analysis all agree with (regression tests for the drift of issue 10), and the trial record."""
import json
import math
import pathlib
from dataclasses import FrozenInstanceError

import pytest
import torch

import specforce_contracts as C
from specforce_contracts import TrialRecord


# ------------------------------------------------------------------------------------------------ registry itself
def test_every_entry_is_well_formed_and_patterns_resolve_to_the_most_specific_entry():
    for m in C.METRICS:
        assert m.direction in C.DIRECTIONS and m.producer and m.summary, m
        assert m.key.startswith((C.EVAL_PREFIX, C.TRAIN_PREFIX, C.SWEEP_PREFIX)), m
    assert len({m.key for m in C.METRICS}) == len(C.METRICS)
    assert C.lookup("eval/fd_pixel_floor").key == "eval/fd_{extractor}_floor"
    assert C.lookup("eval/kid_pixel_std").key == "eval/kid_{extractor}_std"
    assert C.lookup("eval/kid_std").key == "eval/kid_std"
    assert C.lookup("eval/fd_dinov2").direction == C.LOWER  # another extractor's FD (docs/design.md §3)
    assert C.lookup("my/own_metric") is None and C.direction("my/own_metric") == C.LOWER


def test_directions_of_the_drift_bugs():
    for key in ("eval/cls_accuracy_digitcnn", "eval/cls_label_acc_digitcnn", "eval/cls_score_digitcnn", "eval/is"):
        assert C.higher_is_better(key) and C.search_mode(key) == "max", key
    for key in ("eval/is_std", "eval/kid_std", "eval/fd_pixel_floor", "eval/fid_floor", "train/images_per_s",
                "eval/seconds", "sweep/round"):
        assert C.direction(key) == C.NONE, key
    for key in ("eval/denoise_loss", "eval/denoise_loss_t0.8-1.0", "eval/fid", "eval/kid", "eval/kid_pixel",
                "eval/spec_err_high", "train/loss"):
        assert C.direction(key) == C.LOWER and C.search_mode(key) == "min", key


def test_t_buckets_are_the_loops():
    assert C.t_bucket_names() == ("0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0")
    assert C.denoise_loss_keys()[:2] == ("eval/denoise_loss", "eval/denoise_loss_t0.0-0.2")
    assert C.denoise_bucket_key(0.25, 0.5) == "eval/denoise_loss_t0.25-0.5"
    from trainers.evaluation.heldout import bucket_denoise_loss

    t = torch.linspace(0.025, 0.975, 20)
    assert tuple(bucket_denoise_loss(t, torch.ones(20))) == C.denoise_loss_keys()


def test_default_tracking_uri_is_one_rule(tmp_path, monkeypatch):
    from analysis.report import default_tracking_uri as analysis_uri
    from sweeps.tracking import absolute_tracking_uri

    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real").mkdir()
    monkeypatch.chdir(link)
    expected = f"sqlite:///{(tmp_path / 'real' / 'mlflow.db').resolve()}"
    assert analysis_uri() == absolute_tracking_uri(None) == C.default_tracking_uri() == expected


# ------------------------------------------------------------------------------- evaluator == registry == validator
class _FakeInception:
    """The Inception extractor's interface on a fixed random projection (the real weights cannot be downloaded)."""

    name, weights_sha256, official = "fake-inception", "0" * 64, False

    def __init__(self, weights, device, features, allow_download=True):
        self.features = tuple(features)
        g = torch.Generator().manual_seed(0)
        self.proj = {"2048": torch.randn(64, 2048, generator=g), "logits_unbiased": torch.randn(64, 1008, generator=g)}

    def __call__(self, images):
        x = images.flatten(1).double().float()
        return {k: x @ self.proj[k] for k in self.features}


def test_every_metric_the_evaluator_emits_is_registered_and_reported(tmp_path, monkeypatch):
    import trainers.evaluation.inception
    from sweeps.spec import reported_metrics
    from trainers.training.config import config_from_dict
    from trainers.data.loader import build_dataset
    from trainers.evaluation.evaluator import Evaluator

    monkeypatch.setattr(trainers.evaluation.inception, "InceptionExtractor", _FakeInception)
    options = ("fd_pixel", "fid", "is", "classifier", "spectrum", "kid")
    test = build_dataset("digits", image_size=8, split="test")
    ev = Evaluator(options, test, 60, 30, "cpu", tmp_path, classifier_epochs=3, classifier_min_accuracy=0.8)
    ev.prepare()
    gen = torch.Generator().manual_seed(0)
    result = ev.evaluate(lambda labels: torch.rand(len(labels), 1, 8, 8, generator=gen) * 2 - 1)
    emitted = {f"eval/{k}" for k in result.metrics}
    assert emitted == {f"eval/{k}" for k in C.evaluator_keys(options)}  # floors exist: digits has a second set
    cfg = config_from_dict({"data": {"name": "digits", "image_size": 8},
                            "eval": {"metrics": list(options), "num_samples": 60}})
    assert emitted <= reported_metrics(cfg)
    assert all(C.lookup(k) is not None for k in emitted | reported_metrics(cfg))
    assert {"eval/is_std", "eval/cls_accuracy_digitcnn", "eval/cls_label_acc_digitcnn"} <= emitted


@pytest.mark.parametrize("options", [("fd_pixel",), ("fid",), ("is",), ("spectrum",), ("kid",), ("fd_pixel", "kid"),
                                     ("fid", "kid"), ("is", "kid"), ()])
def test_reported_metrics_follow_the_registry(options):
    from sweeps.spec import reported_metrics
    from trainers.training.config import config_from_dict

    for denoise in (True, False):
        cfg = config_from_dict({"eval": {"metrics": list(options), "denoise_loss": denoise}})
        names = reported_metrics(cfg)
        assert names == C.emitted_metrics(options, denoise_loss=denoise)
        assert ("eval/denoise_loss_t0.4-0.6" in names) == denoise
        assert all(C.lookup(k) is not None for k in names)


def _spec(metric, mode=None, eval_metrics=("fid",), data=None):
    search = {"metric": metric, "num_samples": 2, "space": {"spectral.alpha": {"type": "float", "low": 1, "high": 3}}}
    if mode:
        search["mode"] = mode
    base = {"data": data or {"name": "grf", "image_size": 16}, "eval": {"metrics": list(eval_metrics)}}
    return {"name": "t", "base": base, "search": search, "analysis": {"primary": metric}}


@pytest.mark.parametrize("metric, eval_metrics, data", [
    ("eval/is_std", ("fid",), None),
    ("eval/is_std", ("is",), None),
    ("eval/cls_accuracy_digitcnn", ("classifier",), {"name": "digits", "image_size": 8}),
    ("eval/cls_label_acc_digitcnn", ("classifier",), {"name": "digits", "image_size": 8}),
    ("eval/cls_score_digitcnn", ("classifier",), {"name": "digits", "image_size": 8}),
])
def test_emitted_metrics_are_accepted_as_search_and_primary_metrics(metric, eval_metrics, data):
    from sweeps.spec import spec_from_dict

    spec = spec_from_dict(_spec(metric, eval_metrics=eval_metrics, data=data))
    assert spec.search.metric == spec.analysis.primary == metric
    assert spec.search.mode == C.search_mode(metric)  # the registry's direction when the spec gives none


def test_searcher_never_minimises_a_higher_is_better_metric():
    from sweeps.spec import SpecError, spec_from_dict

    assert spec_from_dict(_spec("eval/is")).search.mode == "max"
    assert spec_from_dict(_spec("eval/fid")).search.mode == "min"
    assert spec_from_dict(_spec("eval/is_std", mode="max")).search.mode == "max"  # no quality direction: as given
    with pytest.raises(SpecError, match=r"^search.mode: 'min' would search for the worst eval/is: it is higher-is-better"):
        spec_from_dict(_spec("eval/is", mode="min"))


def test_analysis_directions_are_the_registrys():
    from analysis.runs import higher_is_better

    keys = [k for m in C.METRICS for k in ([m.key] if not m.is_pattern else [
        m.key.replace("{extractor}", "digitcnn").replace("{bucket}", "0.0-0.2").replace("{band}", "low")])]
    keys += sorted(C.emitted_metrics(C.EVAL_METRIC_OPTIONS, denoise_loss=True))
    for key in keys:
        assert higher_is_better(key) == (C.direction(key) == C.HIGHER), key


def test_analysis_and_sweeps_read_names_from_the_contracts():
    import analysis.adaptive
    import analysis.runs
    import analysis.selection
    import analysis.verdict
    import sweeps.adaptive
    import sweeps.tracking
    import synthetic_sweep

    assert analysis.verdict.BUCKET_PREFIX == C.DENOISE_BUCKET_PREFIX
    assert synthetic_sweep.BUCKETS == C.t_bucket_names()
    assert "params.model.compression_ratio" in analysis.selection.MEASURED_PREFIXES
    assert "params." + C.SF_USED_PREFIX in analysis.selection.MEASURED_PREFIXES
    assert (analysis.runs.ROLE, analysis.runs.STATUS, analysis.runs.PROVENANCE) == (
        sweeps.tracking.ROLE, sweeps.tracking.STATUS, C.PROVENANCE_TAG)
    assert analysis.adaptive.DESIGN_TAG == sweeps.adaptive.DESIGN_TAG == C.ADAPTIVE_DESIGN_TAG


# -------------------------------------------------------------------------------------------------- trial record
def _record(spectral=True):
    from trainers.training.config import config_from_dict

    cfg = config_from_dict({"spectral": {"enabled": spectral, "schedule": "snr", "r0": 0.1}})
    sf = {"image_size": 32, "schedule": "snr", "c_min": 0.05, "c_max": 1.0, "kappa": 30.0, "alpha": 2.0, "r0": 0.1,
          "c_const": 0.5, "window_size": None, "identity_at_data": False, "t_eps": 0.05}
    extra = {"model.tokens": 64, "model.bottleneck": 32, "data.spectrum_alpha": 1.9, "data.spectrum_r0": 0.12}
    return TrialRecord.from_run(cfg.model_dump(mode="json"), extra, sf if spectral else None)


def test_trial_record_round_trips_and_gives_the_run_params():
    rec = _record()
    assert TrialRecord.from_json(rec.to_json()) == rec
    assert TrialRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    params = rec.params()
    assert params["model.bottleneck"] == 32  # the resolved value replaces the config's None
    assert params["spectral.alpha"] == 2.0 and params["spectral.used.alpha"] == 2.0
    assert params["spectral.used.r0"] == 0.1 and params["data.spectrum_alpha"] == 1.9
    assert rec.total_images == params["optim.total_images"]
    assert not any(k.startswith(C.SF_USED_PREFIX) for k in _record(spectral=False).params())
    nan = TrialRecord(rec.config, data_spectrum={"alpha": math.nan, "r0": math.nan})
    assert math.isnan(TrialRecord.from_json(nan.to_json()).data_spectrum["alpha"])
    with pytest.raises(FrozenInstanceError):
        rec.config = {}


@pytest.mark.parametrize("bad, message", [
    ({"version": 2, "config": {"a": 1}}, "version 2"),
    ({"version": 1, "config": {}}, "config: the resolved config tree is required"),
    ({"version": 1, "config": {"a": 1}, "extra": 1}, "unknown keys"),
    ({"version": 1, "config": {"a": 1}, "fitted": {"beta": 1}}, "fitted: keys must be alpha and r0"),
    ({"version": 1, "config": {"a": 1}, "derived": {"spectral.used.alpha": 1}}, "not dotted derived-param names"),
])
def test_bad_records_are_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        TrialRecord.from_dict(bad)


def test_worker_record_describes_the_operator_it_built(tmp_path):
    from trainers.training.config import config_from_dict
    from trainers.training.loop import Trainer
    from trainers.training.record import trial_record

    cfg = config_from_dict({"device": "cpu", "eval": {"metrics": [], "denoise_loss": False},
                            "spectral": {"enabled": True, "schedule": "snr", "fit_from_data": True}})
    run = Trainer(cfg, tmp_path / "run").setup()
    rec = trial_record(run)
    assert rec.spectral == json.loads(json.dumps(run.raw_model.spectral.describe()))
    params = rec.params()
    # fit_from_data: the operator ran with the fitted alpha, not the config's 2.0
    assert params["spectral.alpha"] == 2.0 and params["spectral.used.alpha"] == params["spectral.fitted_alpha"] != 2.0
    from analysis.schedules import schedule_from_params

    kw = schedule_from_params({k: str(v) for k, v in params.items()})
    assert kw["alpha"] == pytest.approx(params["spectral.used.alpha"]) and kw["r0"] == pytest.approx(
        params["spectral.used.r0"])


def test_schedule_params_fall_back_for_runs_without_a_record():
    from analysis.schedules import schedule_from_params

    plain = {"spectral.schedule": "contour", "spectral.alpha": "1.5", "spectral.c_min": "0.1"}
    assert schedule_from_params(plain) == {"schedule": "contour", "alpha": 1.5, "c_min": 0.1}
    used = {**plain, "spectral.used.schedule": "contour", "spectral.used.alpha": "1.25", "spectral.used.c_min": "0.1",
            "spectral.used.c_max": "1.0", "spectral.used.c_const": "0.5", "spectral.used.r0": "None"}
    assert schedule_from_params(used)["alpha"] == 1.25  # the record wins over the config param


def test_trial_logger_logs_exactly_the_workers_record(tmp_path):
    from sweep_helpers import grid_trial, trial_logger_in

    client, exp, parent, logger = trial_logger_in(tmp_path)
    trial = grid_trial("x", {"seed": 3})
    logger.on_trial_start(0, [], trial)
    assert client.get_run(logger.runs["x"]).data.params == {}  # nothing re-resolved on the driver
    rec = _record()
    history = json.dumps([{"images": 64, "train/loss": 1.0}])
    logger.on_trial_result(0, [], trial, {"images": 64, C.REPORT_RECORD_KEY: rec.to_json(),
                                          C.REPORT_HISTORY_KEY: history})
    final = {"images": rec.total_images, C.REPORT_HISTORY_KEY: history}  # resent rows: skipped
    logger.on_trial_result(0, [], trial, final)
    trial.last_result = final
    logger.on_trial_complete(0, [], trial)
    run = client.get_run(logger.runs["x"])
    from sweeps.mlflow_writer import param_value

    assert run.data.params == {k: param_value(v, k) for k, v in rec.params().items()}
    local = client.download_artifacts(run.info.run_id, C.ARTIFACT_TRIAL_RECORD, str(tmp_path))
    assert TrialRecord.from_json(pathlib.Path(local).read_text()) == rec
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 1
    assert run.info.status == "FINISHED" and run.data.tags[C.STATUS_TAG] == C.STATUS_COMPLETED
