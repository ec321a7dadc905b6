"""A user's spec and model package from OUTSIDE the project, swept and submitted.

`specforce submit` stages a spec that lies outside the project and the folder of each `model.target` package into
the job's runtime env (`py_modules`, sweeps/commands/submit.py); `specforce sweep` keeps the user's PYTHONPATH on the
Ray workers (sweeps/ray_cluster.py), so it works from any cwd. Fast tests check the located folders, the staged spec
and the refusal; slow ones run a 1-trial sweep from a foreign cwd and submit to a local Ray cluster
(tests/conftest.py).

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest tests/test_submit_external.py -q                # CPU, seconds
    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest tests/test_submit_external.py -q -m slow -s     # + Ray, minutes
"""
from __future__ import annotations

import os
import pathlib
import types
import zipfile

import pytest
import yaml
from mlflow.tracking import MlflowClient

from cli_helpers import cli_env, run_cli_streams
from specforce_contracts import DEFAULT_STORAGE_DIR, DEFAULT_STORE_FILE
from sweeps import cli
from sweeps.ray_cluster import worker_pythonpath
from sweeps.spec import SpecError, load_spec
from sweeps.commands.submit import model_modules, stage_spec
from train_helpers import conv_denoiser_source, tiny_train_config

PACKAGE = "extnets_pkg"  # a name no other test uses: Ray workers and sys.modules must not find another copy
TARGET = f"{PACKAGE}.nets:build"
NETS = conv_denoiser_source("ext-conv", default_width=4)
CONFIG = tiny_train_config({"target": TARGET, "options": {"width": 4}, "predicts": "v"},
                           {"name": "grf", "image_size": 8, "options": {"num_samples": 64}},
                           batch_size=16, total_images=48, sample_steps=2, every=48, checkpoint_every=0,
                           eval={"metrics": [], "denoise_batch": 16, "denoise_t_points": 5, "grid_size": 2})


def _spec(name: str) -> dict:
    return {"name": name, "description": "one trial of a model from outside the project", "base": CONFIG,
            "resources": {"workers": 1, "cpus_per_worker": 1}, "max_concurrent_trials": 1, "grid": {"seed": [0]}}


@pytest.fixture()
def user_repo(tmp_path):
    """The user's own repository: the package in one folder, the spec in another, a third folder to run from."""
    pkgs, specs, elsewhere = tmp_path / "pkgs", tmp_path / "specs", tmp_path / "elsewhere"
    (pkgs / PACKAGE).mkdir(parents=True)
    (pkgs / PACKAGE / "__init__.py").write_text("")
    (pkgs / PACKAGE / "nets.py").write_text(NETS)
    specs.mkdir()
    elsewhere.mkdir()
    return types.SimpleNamespace(pkgs=pkgs, specs=specs, elsewhere=elsewhere)


def _fake_spec(*targets, grid_targets=()):
    # model_modules reads only base/grid/search: a stand-in spares the builder probe of a real load
    grid = {"model.target": list(grid_targets)} if grid_targets else {}
    return types.SimpleNamespace(base={"model": {"target": targets[0]}} if targets else {}, grid=grid, search=None)


def test_model_modules_finds_the_folders_that_must_travel(user_repo, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(user_repo.pkgs))
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "extnets_single.py").write_text(NETS)
    monkeypatch.syspath_prepend(str(tmp_path / "single"))
    # a package folder, a single-file module; project (trainers) and installed (torch) ones stay home; no target
    spec = _fake_spec(TARGET, grid_targets=[None, "extnets_single:build", "trainers.model.unet:build_unet",
                                            "torch.nn:Identity", "collections:OrderedDict",
                                            f"{PACKAGE}.nets:ConvDenoiser"])
    assert model_modules(spec) == [str((user_repo.pkgs / PACKAGE).resolve()),
                                   str((tmp_path / "single" / "extnets_single.py").resolve())]
    assert model_modules(_fake_spec(None)) == []


def test_a_target_whose_package_cannot_travel_is_refused_naming_model_target(user_repo, tmp_path, monkeypatch,
                                                                             capsys):
    with pytest.raises(SpecError) as err:
        model_modules(_fake_spec("extnets_nowhere.nets:build"))
    assert str(err.value) == ("model.target 'extnets_nowhere.nets:build': package 'extnets_nowhere' not found on "
                              "this machine, so it cannot travel to the cluster with the job; put its folder on "
                              "PYTHONPATH (a folder, not a zip)")
    # importable (so the spec loads and the model probes), but from a zip: there is no folder to upload. Refused in
    # one line by the CLI before storage, tracking and the cluster are looked at (port 9 has no dashboard)
    archive = tmp_path / "nets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("extnets_zipped/__init__.py", "")
        zf.writestr("extnets_zipped/nets.py", NETS)
    monkeypatch.syspath_prepend(str(archive))
    tree = _spec("zipped")
    tree["base"] = {**CONFIG, "model": {**CONFIG["model"], "target": "extnets_zipped.nets:build"}}
    (user_repo.specs / "spec.yaml").write_text(yaml.safe_dump(tree))
    monkeypatch.chdir(user_repo.elsewhere)
    code = cli.main(["submit", str(user_repo.specs / "spec.yaml"), "--address", "http://127.0.0.1:9",
                     "--storage", "/abs"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0] == ("specforce submit: model.target 'extnets_zipped.nets:build': package 'extnets_zipped' is "
                        f"not one folder or .py file (found {archive}/extnets_zipped) on this machine, so "
                        "it cannot travel to the cluster with the job; put its folder on PYTHONPATH (a folder, not a "
                        "zip)"), lines[0]
    assert list(user_repo.elsewhere.iterdir()) == []


def test_a_staged_spec_loads_as_the_original_with_its_base_config_inlined(user_repo, monkeypatch):
    monkeypatch.syspath_prepend(str(user_repo.pkgs))
    (user_repo.specs / "common").mkdir()
    (user_repo.specs / "common" / "base.yaml").write_text(yaml.safe_dump(CONFIG))
    tree = {**_spec("staged"), "base_config": "common/base.yaml", "base": {"seed": 3}}
    original = user_repo.specs / "spec.yaml"
    original.write_text(yaml.safe_dump(tree))
    name = stage_spec(original, user_repo.elsewhere)
    staged = user_repo.elsewhere / name / "spec.yaml"
    assert name.startswith("specforce_spec_") and (user_repo.elsewhere / name / "__init__.py").is_file()
    assert "base_config" not in yaml.safe_load(staged.read_text())
    assert load_spec(staged).model_dump() == {**load_spec(original).model_dump(), "base_config": None}


def test_workers_keep_the_users_pythonpath_after_the_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/abs/one", "rel", "", "/proj"]))
    assert worker_pythonpath("/proj").split(os.pathsep) == ["/proj", "/abs/one", str(tmp_path / "rel"),
                                                            str(tmp_path)]
    monkeypatch.delenv("PYTHONPATH")
    assert worker_pythonpath("/proj") == "/proj"


def _env(extra_path: pathlib.Path, base: dict | None = None) -> dict:
    # the user's package folder on PYTHONPATH, as they would set it; the project too (it is installed for them)
    return cli_env(extra_path, base=base or None, PYTHONUNBUFFERED="1")


def _trial(tracking_uri: str, experiment: str):
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`specforce.role` = 'trial'")
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_a_sweep_of_an_outside_model_runs_from_a_cwd_that_is_not_its_folder(user_repo):
    # cwd holds neither the package nor the spec: workers find the package only through the user's PYTHONPATH
    (user_repo.specs / "spec.yaml").write_text(yaml.safe_dump(_spec("ext-sweep")))
    uri = f"sqlite:///{user_repo.elsewhere / DEFAULT_STORE_FILE}"
    out = run_cli_streams(["sweep", str(user_repo.specs / "spec.yaml"), "--num-cpus", "2", "--tracking-uri", uri],
                          user_repo.elsewhere, {**_env(user_repo.pkgs), "RAY_AUTH_MODE": "disabled"}, timeout=900)
    assert "1 trials (0 failed)" in out.stdout, (out.stdout + out.stderr)[-4000:]
    run = _trial(uri, "ext-sweep")
    assert run.info.status == "FINISHED" and run.data.params["model.target"] == TARGET
    assert run.data.params["model.reported.kind"] == "ext-conv"


@pytest.mark.slow
def test_submit_of_an_outside_spec_and_model_to_the_local_cluster(one_node_cluster, user_repo, tmp_path):
    # the cluster was started before the package existed and never had it on its path: only py_modules brings it
    (user_repo.specs / "spec.yaml").write_text(yaml.safe_dump(_spec("ext-submit")))
    cluster = one_node_cluster
    out = run_cli_streams(["submit", str(user_repo.specs / "spec.yaml"), "--address", cluster["dashboard"],
                           "--tracking-uri", cluster["mlflow"], "--storage", str(tmp_path / DEFAULT_STORAGE_DIR),
                           "--wait"], user_repo.elsewhere, _env(user_repo.pkgs, cluster["env"]), timeout=900)
    assert "sweep 'ext-submit': 1 trials (0 failed)" in out.stderr, out.stderr[-4000:]
    run = _trial(cluster["mlflow"], "ext-submit")
    assert run.info.status == "FINISHED" and run.data.params["model.target"] == TARGET
    assert run.data.params["model.reported.kind"] == "ext-conv"
    assert list(user_repo.elsewhere.iterdir()) == []  # nothing staged where the user ran it
