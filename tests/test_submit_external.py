"""A user's spec and model package from OUTSIDE the project, swept and submitted (issue 19, item 2).

`specforce submit` stages a spec that lies outside the project and the folder of each `model.target` package into
the job's runtime env (`py_modules`, sweeps/commands/submit.py); `specforce sweep` keeps the user's PYTHONPATH on the Ray
workers (sweeps/ray_cluster.py), so it works from any cwd. Fast tests check the located folders, the staged spec and
the refusal; slow ones run a 1-trial sweep from a foreign cwd and submit to a local Ray cluster (tests/conftest.py).

    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest tests/test_submit_external.py -q                # CPU, seconds
    RAY_AUTH_MODE=disabled .venv/bin/python -m pytest tests/test_submit_external.py -q -m slow -s     # + Ray, minutes
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
import types
import zipfile

import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweeps import cli
from sweeps.ray_cluster import worker_pythonpath
from sweeps.spec import SpecError, load_spec
from sweeps.commands.submit import model_modules, stage_spec

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "extnets_pkg"  # a name no other test uses: Ray workers and sys.modules must not find another copy
TARGET = f"{PACKAGE}.nets:build"
NETS = textwrap.dedent('''
    import torch
    from torch import nn


    class ConvDenoiser(nn.Module):
        def __init__(self, channels, num_classes, width):
            super().__init__()
            self.inp = nn.Conv2d(channels, width, 3, padding=1)
            self.cls = nn.Embedding(num_classes + 1, width)
            self.time = nn.Linear(1, width)
            self.out = nn.Conv2d(width, channels, 3, padding=1)

        def forward(self, x_t, t, cond):
            h = self.inp(x_t) + (self.cls(cond) + self.time(t[:, None]))[:, :, None, None]
            return self.out(torch.nn.functional.silu(h))

        def describe(self):
            return {"kind": "ext-conv"}


    def build(*, image_size, channels, num_classes, width=4):
        return ConvDenoiser(channels, num_classes, width)
''')
CONFIG = {
    "model": {"target": TARGET, "options": {"width": 4}, "predicts": "v"},
    "data": {"name": "grf", "image_size": 8, "options": {"num_samples": 64}},
    "spectral": {"enabled": True},
    "optim": {"batch_size": 16, "lr": 1e-3, "total_images": 48, "ema_decays": [0.99]},
    "sample": {"sampler": "euler", "steps": 2},
    "eval": {"metrics": [], "denoise_batch": 16, "denoise_t_points": 5, "grid_size": 2},
    "log_every_images": 48,
    "checkpoint_every_images": 0,
}


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
    env = dict(base or os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(extra_path), str(ROOT)]), OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    return env


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
    uri = f"sqlite:///{user_repo.elsewhere / 'mlflow.db'}"
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", "sweep", str(user_repo.specs / "spec.yaml"),
                          "--num-cpus", "2", "--tracking-uri", uri], cwd=user_repo.elsewhere,
                         env={**_env(user_repo.pkgs), "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0 and "1 trials (0 failed)" in out.stdout, (out.stdout + out.stderr)[-4000:]
    run = _trial(uri, "ext-sweep")
    assert run.info.status == "FINISHED" and run.data.params["model.target"] == TARGET
    assert run.data.params["model.reported.kind"] == "ext-conv"


@pytest.mark.slow
def test_submit_of_an_outside_spec_and_model_to_the_local_cluster(one_node_cluster, user_repo, tmp_path):
    # the cluster was started before the package existed and never had it on its path: only py_modules brings it
    (user_repo.specs / "spec.yaml").write_text(yaml.safe_dump(_spec("ext-submit")))
    cluster = one_node_cluster
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", "submit", str(user_repo.specs / "spec.yaml"),
                          "--address", cluster["dashboard"], "--tracking-uri", cluster["mlflow"],
                          "--storage", str(tmp_path / "ray_results"), "--wait"],
                         cwd=user_repo.elsewhere, env=_env(user_repo.pkgs, cluster["env"]), capture_output=True,
                         text=True, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    assert "sweep 'ext-submit': 1 trials (0 failed)" in out.stderr, out.stderr[-4000:]
    run = _trial(cluster["mlflow"], "ext-submit")
    assert run.info.status == "FINISHED" and run.data.params["model.target"] == TARGET
    assert run.data.params["model.reported.kind"] == "ext-conv"
    assert list(user_repo.elsewhere.iterdir()) == []  # nothing staged where the user ran it
