"""Whatever the loader accepts runs (issue 23): property-based tests over drawn training configs and sweep specs.

For a config drawn across the schema (tests/config_strategies.py), either the loader refuses it, as `--dry-run`
does (load + `check_environment`), with a one-line ConfigError naming a key, or a tiny real run of it completes:
one or two optimizer steps, the evaluation, the sample grid, the checkpoint, and a rerun that resumes from it.
For a drawn sweep spec, either `spec_from_dict` + `check_spec_environment` refuse it with a one-line SpecError, or
one of its trials (a grid, baseline or search trial, resolved as the runner resolves it) runs the same tiny run in
one process (a Ray sweep per example would cost seconds each; the world-size rules are checked at load by
trainers/config_rules.check_world, which the spec validation applies to every trial).

Profiles (seeded, derandomized, no deadline): `fast` (default) and `slow` (the @pytest.mark.slow tests).

    .venv/bin/python -m pytest tests/test_config_properties.py -q                  # fast profile, < 60 s
    .venv/bin/python -m pytest tests/test_config_properties.py -q -m slow          # the longer search
"""
from __future__ import annotations

import contextlib
import io
import pathlib
import tempfile
import warnings

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sweeps.preflight import check_spec_environment
from sweeps.spec import SpecError, baseline_plans, grid_plans, spec_from_dict
from config_strategies import ALL_METRICS, KNOWN_KEYS, assert_one_line_naming_a_key, config_trees, image_folder
from trainers.training.checkpoint import load_checkpoint
from trainers.training.config import ConfigError, config_from_dict, config_with_overrides
from trainers.training.environment import check_environment
from trainers.training.loop import Hooks, Trainer

FAST_CONFIGS, FAST_SPECS, SLOW_CONFIGS, SLOW_SPECS = 10, 8, 150, 50
_COMMON = dict(derandomize=True, deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile("fast", max_examples=FAST_CONFIGS, **_COMMON)
FOLDER = image_folder(pathlib.Path(tempfile.mkdtemp(prefix="sf_props_")) / "photos")
CACHE = FOLDER.parent / "cache"  # shared: reference statistics and the digit classifier are computed once


class _Quiet(Hooks):
    def on_metrics(self, images, metrics):  # the loop's progress lines would flood the test output
        pass


def tiny_run(cfg, out: pathlib.Path) -> None:
    """The real loop, twice: the run, then the same command again, which resumes from its final checkpoint."""
    torch.set_num_threads(1)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # small-n warnings (reference sets, rank-deficient covariances) are expected
        first = Trainer(cfg, out, _Quiet(), cache_dir=CACHE).run()
        second = Trainer(cfg, out, _Quiet(), cache_dir=CACHE).run()
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["images_seen"] >= cfg.optim.total_images
    assert (out / "samples" / "final.png").is_file()
    assert {k for k in first if k.startswith("eval/")} == {k for k in second if k.startswith("eval/")}  # resumed


def accepted(tree: dict):
    """The loader's verdict, as `specforce train --dry-run` gives it: a config, or a one-line refusal (None)."""
    try:
        cfg = config_from_dict(tree)
        check_environment(cfg)
    except ConfigError as err:
        assert_one_line_naming_a_key(err)
        event(f"refused: {str(err).split(':', 1)[0]}")  # --hypothesis-show-statistics lists what was refused
        return None
    event("accepted and ran")
    return cfg


def _config_property(tree: dict) -> None:
    cfg = accepted(tree)
    if cfg is not None:
        with tempfile.TemporaryDirectory() as out:
            tiny_run(cfg, pathlib.Path(out) / "run")


@settings(settings.get_profile("fast"))
@given(config_trees(FOLDER))
def test_a_config_is_refused_in_one_line_or_runs(tree):
    _config_property(tree)


@pytest.mark.slow
@settings(settings.get_profile("fast"), max_examples=SLOW_CONFIGS)
@given(config_trees(FOLDER, metrics=ALL_METRICS))
def test_a_config_is_refused_in_one_line_or_runs_long(tree):
    _config_property(tree)


# ------------------------------------------------------------------------------------------------- sweep specs
GRID_VALUES = {
    "model.patch_size": st.sampled_from((1, 2, 3, 4, 8, None)),
    "spectral.enabled": st.booleans(),
    "spectral.schedule": st.sampled_from(("linear", "contour", "snr", "constant", "none")),
    "optim.batch_size": st.integers(1, 12),
    "eval.denoise_t_points": st.one_of(st.integers(5, 8), st.integers(2, 8)),
    "sample.cfg_interval": st.one_of(st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted),
                                     st.tuples(st.floats(-0.2, 1.2), st.floats(-0.2, 1.2)).map(list)),
    "data.options.num_samples": st.integers(1, 24),
    "seed": st.integers(0, 3),
}
SEARCH_DIMS = {
    "spectral.kappa": st.tuples(st.floats(-1, 50), st.floats(0, 80)).map(lambda v: {"type": "float", "low": v[0],
                                                                                  "high": v[1]}),
    "spectral.c_min": st.tuples(st.floats(-0.5, 1), st.floats(0, 1.5)).map(lambda v: {"type": "float", "low": v[0],
                                                                                    "high": v[1]}),
    "optim.batch_size": st.tuples(st.integers(0, 8), st.integers(1, 16), st.sampled_from((None, 1, 2, 0.5))).map(
        lambda v: {"type": "int", "low": v[0], "high": v[1], "step": v[2]}),
    "model.patch_size": st.lists(st.sampled_from((1, 2, 4, 8, 3)), min_size=1, max_size=3, unique=True).map(
        lambda v: {"type": "categorical", "choices": v}),
}


def _loads(tree: dict) -> bool:
    try:
        config_from_dict(tree)
    except ConfigError:
        return False
    return True


@st.composite
def spec_trees(draw) -> dict:
    # a base the loader accepts (the config property covers bad bases), so that the spec's own keys are exercised
    base = draw(config_trees(FOLDER, wild=False).filter(_loads))
    base["optim"]["total_images"] = base["optim"]["batch_size"]  # one step per trial
    batch = base["optim"]["batch_size"]
    fits = [w for w in (1, 2, 3) if batch % w == 0]  # mostly a world size the base batch splits over
    workers = draw(st.one_of(st.sampled_from(fits), st.sampled_from(fits), st.sampled_from(fits), st.integers(1, 3)))
    tree = {"name": "props", "base": base, "resources": {"workers": workers, "cpus_per_worker": 1}}
    grid_keys = draw(st.lists(st.sampled_from(sorted(GRID_VALUES)), max_size=2, unique=True))
    tree["grid"] = {k: draw(st.lists(GRID_VALUES[k], min_size=1, max_size=3)) for k in grid_keys}
    if draw(st.booleans()) or not grid_keys:
        keys = draw(st.lists(st.sampled_from(sorted(SEARCH_DIMS)), min_size=1, max_size=2, unique=True))
        tree["search"] = {"metric": "eval/denoise_loss", "num_samples": 2,
                          "space": {k: draw(SEARCH_DIMS[k]) for k in keys}}
    if not tree["grid"]:
        del tree["grid"]
    return tree


def _spec_property(tree: dict, data) -> None:
    try:
        spec = spec_from_dict(tree)
        check_spec_environment(spec, num_cpus=8)
    except SpecError as err:
        text = str(err)
        assert "\n" not in text, text
        assert any(k in text for k in KNOWN_KEYS | {"grid", "search", "resources", "name", "base"}), text
        event(f"spec refused: {text.split(':', 1)[0][:40]}")
        return
    event("spec accepted, a trial ran")
    # one trial, resolved as the runner resolves it: a grid or baseline plan, or a search draw with SF on
    plans = (grid_plans(spec) if spec.grid else []) + (baseline_plans(spec) if spec.search else [])
    choices = [p.config for p in plans]
    if spec.search:
        overrides = {"spectral.enabled": True}
        for key, dim in spec.search.space.items():
            if dim.type == "categorical":
                overrides[key] = data.draw(st.sampled_from(dim.choices))
            elif dim.type == "int":
                lo, hi, step = int(dim.low), int(dim.high), int(dim.step or 1)
                overrides[key] = lo + step * data.draw(st.integers(0, (hi - lo) // step))
            else:
                overrides[key] = data.draw(st.floats(dim.low, dim.high))
        try:
            choices.append(config_with_overrides(spec.base, overrides))
        except ConfigError as err:  # validation resolved the range's ends; an inner value must be valid too
            pytest.fail(f"search value {overrides} passed validation but is refused: {err}")
    cfg = data.draw(st.sampled_from(choices))
    with tempfile.TemporaryDirectory() as out:
        tiny_run(cfg, pathlib.Path(out) / "trial")


@settings(settings.get_profile("fast"), max_examples=FAST_SPECS)
@given(spec_trees(), st.data())
def test_a_sweep_spec_is_refused_in_one_line_or_its_trial_runs(tree, data):
    _spec_property(tree, data)


@pytest.mark.slow
@settings(settings.get_profile("fast"), max_examples=SLOW_SPECS)
@given(spec_trees(), st.data())
def test_a_sweep_spec_is_refused_in_one_line_or_its_trial_runs_long(tree, data):
    _spec_property(tree, data)
