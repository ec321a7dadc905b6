"""unet-tiny (trainers/model/unet.py) and a user's model from OUTSIDE the repository, trained by `specforce train`,
evaluated by `specforce eval` and swept by a 1-trial `specforce sweep` through the plug-in denoiser contract.

    .venv/bin/python -m pytest tests/test_unet.py -q               # CPU, ~2 min
    .venv/bin/python -m pytest tests/test_unet.py -q -m slow       # + the 1-trial Ray sweep, ~3 min on 2 cores
"""
import json

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from cli_helpers import cli_env, run_cli_streams
from resume_helpers import assert_resumes_exactly
from specforce_contracts import DEFAULT_STORE_FILE, RUN_CHECKPOINT_FILE, RUN_EMA_FILE
from train_helpers import conv_denoiser_source, perturb, tiny_train_config
from trainers.model.unet import ResBlock, build_unet


def test_unet_tiny_shape_size_and_conditioning():
    model = build_unet(image_size=16, channels=3, num_classes=10)
    assert 300_000 <= sum(p.numel() for p in model.parameters()) <= 1_000_000
    assert model.class_emb.num_embeddings == 11  # the null class has its own row
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules()) >= 2 * 6
    assert sum(isinstance(m, ResBlock) for m in model.modules()) == 1 * 2 + 2 + 2 * 2  # down, mid, up (2 levels)
    x, t = torch.randn(4, 3, 16, 16), torch.rand(4)
    assert torch.equal(model(x, t, torch.tensor([0, 1, 2, 10])), torch.zeros_like(x))  # zero-initialised output
    perturb(model)
    out = model(x, t, torch.tensor([0, 1, 2, 10]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, model(x, t, torch.tensor([10, 10, 10, 10])))  # labels reach the output
    assert not torch.allclose(out, model(x, t.flip(0), torch.tensor([0, 1, 2, 10])))  # so does t
    # every parameter takes part: no dead branch in the encoder/decoder bookkeeping
    model(x, t, torch.tensor([0, 1, 2, 10])).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_unet_refuses_sizes_its_resolutions_cannot_halve():
    with pytest.raises(ValueError, match="image_size: 10 is not divisible by 2"):
        build_unet(image_size=10, channels=1, num_classes=0, channel_mult=(1, 2, 2))


# ---------------------------------------------------------------------- a user's model outside the repository
USER_NET = conv_denoiser_source("tiny-conv", default_width=8, report_width=True)
CONFIG = tiny_train_config({"target": "user_nets_outside:build", "options": {"width": 6}, "predicts": "v"},
                           {"name": "grf", "image_size": 8, "options": {"num_samples": 128}},
                           batch_size=16, total_images=96, sample_steps=3, every=48,
                           eval={"metrics": ["spectrum"], "num_samples": 16, "batch_size": 16, "denoise_batch": 16,
                                 "denoise_t_points": 10, "grid_size": 2})


@pytest.fixture()
def outside(tmp_path):
    """A folder outside the repository holding the user's module and config (the user's own repository)."""
    home = tmp_path / "their_repo"
    home.mkdir()
    (home / "user_nets_outside.py").write_text(USER_NET)
    (home / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return home


def _env(*front):
    # the user's folder on PYTHONPATH, as they would run it; the repository is installed (here: also on the path)
    return cli_env(*front, RAY_AUTH_MODE="disabled", PYTHONUNBUFFERED="1")


def _cli(args, home, timeout=600):
    return run_cli_streams(args, home, _env(home), timeout=timeout)


def test_an_outside_model_trains_evaluates_and_is_recorded(outside):
    _cli(["train", "config.yaml", "--out", "runs/user", "--experiment", "own-model"], outside)
    run_dir = outside / "runs" / "user"
    client = MlflowClient(f"sqlite:///{outside / DEFAULT_STORE_FILE}")
    exp = client.get_experiment_by_name("own-model")
    (run,) = client.search_runs([exp.experiment_id])
    params = run.data.params
    assert params["model.target"] == "user_nets_outside:build" and params["model.predicts"] == "v"
    assert params["model.options.width"] == "6"
    assert params["model.reported.kind"] == "tiny-conv" and params["model.reported.width"] == "6"
    # the parameter count of the module the builder returned (inp 1*6*9+6, cls 1*6, time 6+6, out 6*1*9+1)
    assert params["model.parameters"] == str(60 + 6 + 12 + 55)
    assert run.info.status == "FINISHED" and "eval/denoise_loss" in run.data.metrics
    # the checkpoint holds exactly the user's parameter names (the contract adds none)
    from trainers.training.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / RUN_CHECKPOINT_FILE)
    assert sorted(state["model"]) == sorted(["inp.weight", "inp.bias", "cls.weight", "time.weight", "time.bias",
                                             "out.weight", "out.bias"])
    # `specforce eval` rebuilds the same model from the run's stored config, and its held-out loss on the EMA
    # weights is the one the run logged at the end
    out = _cli(["eval", str(run_dir / RUN_EMA_FILE), "--metrics", "spectrum", "--num-samples", "16"], outside)
    result = json.loads(out.stdout[out.stdout.index("{\n"):])
    assert result["eval/denoise_loss"] == pytest.approx(run.data.metrics["eval/denoise_loss"], rel=1e-5)


def test_an_outside_target_is_refused_by_dry_run_when_it_does_not_import(outside):
    # from another folder and without the user's folder on PYTHONPATH (`python -m` puts the working dir on the path)
    out = run_cli_streams(["train", str(outside / "config.yaml"), "--dry-run"], outside.parent, _env(), code=2,
                          timeout=300)
    assert "model.target: module 'user_nets_outside' does not import" in out.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_an_outside_model_runs_in_a_one_trial_sweep(outside):
    # Ray adds the driver's working directory to every worker's sys.path: run from the folder holding the package
    spec = {"name": "own-sweep", "description": "one trial of a user's model", "base": CONFIG,
            "resources": {"workers": 1, "cpus_per_worker": 1}, "max_concurrent_trials": 1,
            "grid": {"seed": [0]}}
    spec["base"] = {**CONFIG, "checkpoint_every_images": 0}
    (outside / "spec.yaml").write_text(yaml.safe_dump(spec))
    out = _cli(["sweep", "spec.yaml", "--num-cpus", "2"], outside, timeout=900)
    assert "1 trials (0 failed)" in out.stdout, (out.stdout + out.stderr)[-3000:]
    client = MlflowClient(f"sqlite:///{outside / DEFAULT_STORE_FILE}")
    exp = client.get_experiment_by_name("own-sweep")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`specforce.role` = 'trial'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["model.target"] == "user_nets_outside:build"
    assert runs[0].data.params["model.reported.kind"] == "tiny-conv"


def test_a_contract_model_resumes_exactly_with_its_ema(tmp_path):
    from trainers.training.config import config_from_dict

    cfg = config_from_dict({**CONFIG, "model": {"target": "trainers.model.unet:build_unet",
                                                "options": {"base_channels": 8}, "predicts": "v"},
                            "eval": {**CONFIG["eval"], "metrics": []}, "device": "cpu"})
    assert_resumes_exactly(cfg, tmp_path, CONFIG["optim"]["total_images"])
