"""Sweep specs: expansion, stable trial ids, and validation before anything starts."""
import pathlib

import pytest
import yaml

from sweeps.spec import (SpecError, baseline_plans, describe_trials, grid_plans, load_spec, spec_from_dict,
                         validate_name)

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "sweeps" / "configs"
BASE = {"model": {"preset": "jit-tiny"}, "data": {"name": "grf", "image_size": 32}}


def spec(**kw):
    tree = {"name": "t", "base": BASE, "grid": {"spectral.enabled": [False, True]}}
    tree.update(kw)
    return spec_from_dict(tree)


def test_grid_is_a_full_factorial_with_stable_unique_ids():
    s = spec(grid={"model.patch_size": [4, 8], "spectral.enabled": [False, True], "seed": [0, 1, 2]})
    plans = grid_plans(s)
    assert len(plans) == 12
    assert len({p.trial_id for p in plans}) == 12
    assert [p.trial_id for p in plans] == [p.trial_id for p in grid_plans(s)]  # stable across reruns
    p = plans[-1]
    assert p.config.model.patch_size == 8 and p.config.spectral.enabled and p.config.seed == 2


def _is_sweep_spec(path: pathlib.Path) -> bool:
    tree = yaml.safe_load(path.read_text())
    return "grid" in tree or "search" in tree  # else a train config (tiny_train.yaml), checked by test_config


@pytest.mark.parametrize("shipped", [p for p in sorted(CONFIGS.glob("*.yaml")) if _is_sweep_spec(p)],
                         ids=lambda p: p.name)
def test_shipped_specs_validate(shipped):
    s = load_spec(shipped)
    lines = describe_trials(s)
    # one line per planned trial, in plan order, and the search's own line: what `--dry-run` shows a user
    if s.grid and s.seeds is None:
        assert [line.split()[1] for line in lines if line.startswith("grid ")] == [p.trial_id for p in grid_plans(s)]
    if s.grid and s.seeds is not None:
        assert lines[0].startswith(f"adaptive up to {len(s.seeds.looks)} rounds")
        assert sum(line.startswith("grid-r") for line in lines) > 0
    if s.search:
        if s.search.baselines:
            assert [line.split()[1] for line in lines if line.startswith("baseline ")] == [
                p.trial_id for p in baseline_plans(s)]
        assert lines[-1].startswith(f"search   {s.search.num_samples} Optuna trials ({s.search.sampler}, ")


@pytest.mark.parametrize("kw, needle", [
    ({"grid": {"model.patch_size": [7]}}, "patch size 7 does not divide data.image_size 32"),
    ({"grid": {"model.pach_size": [4]}}, "grid.model.pach_size: unknown config key"),
    ({"grid": {"seed": []}}, "grid.seed: needs a non-empty list"),
    ({"grid": {}}, "needs a 'grid', a 'search', or both"),
    ({"resources": {"workers": 0}}, "resources.workers"),
    ({"resources": {"workers": 3}}, "resources.workers: 3 does not divide base.optim.batch_size 64"),
    ({"resources": {"use_gpu": False, "gpus_per_worker": 1}}, "gpus_per_worker"),
    ({"name": "../escape"}, "'../escape' is not a valid name"),
    ({"name": "/abs"}, "is not a valid name"),
    ({"bogus": 1}, "bogus: unknown key"),
    ({"search": {"metric": "eval/fid", "space": {"spectral.alpha": {"type": "float", "low": 1, "high": 3}}}},
     "search.metric: 'eval/fid' is never reported"),
    ({"search": {"space": {"spectral.alpha": {"type": "float", "low": 3, "high": 1}}}}, "low=3.0 must be below"),
    ({"search": {"space": {"model.patch_size": {"type": "categorical", "choices": [4, 6]}}}},
     "search.space.model.patch_size: 6 does not divide"),
    ({"search": {"space": {"spectral.alpha": {"type": "float", "low": 1, "high": 3}},
                 "scheduler": {"type": "asha"}}}, "ASHA needs intermediate evaluations"),
])
def test_validation_names_key_and_value(kw, needle):
    with pytest.raises(SpecError) as err:
        spec(**kw)
    assert needle in str(err.value)


def test_search_adds_baselines_for_every_patch_size_and_seed():
    s = spec(grid={}, search={"space": {"spectral.alpha": {"type": "float", "low": 0.5, "high": 4, "log": True},
                                        "model.patch_size": {"type": "categorical", "choices": [4, 8]}},
                              "baseline_seeds": [0, 1]})
    plans = baseline_plans(s)
    assert sorted((p.config.model.patch_size, p.config.seed) for p in plans) == [(4, 0), (4, 1), (8, 0), (8, 1)]
    assert not any(p.config.spectral.enabled for p in plans)
    # TPE must not degrade to random search on small budgets (docs/design.md §4)
    assert s.search.startup_trials < 10


@pytest.mark.parametrize("name", ["demo", "alpha_search", "a.b-c_1"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["..", "a/b", ".hidden", "", "x" * 101, "a..b"])
def test_invalid_names(name):
    with pytest.raises(SpecError):
        validate_name(name)
