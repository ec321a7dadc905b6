"""unet-tiny (trainers/model/unet.py) and a user's model from OUTSIDE the repository, trained by `specforce train`,
evaluated by `specforce eval` and swept by a 1-trial `specforce sweep` through the plug-in denoiser contract.

    .venv/bin/python -m pytest tests/test_unet.py -q               # CPU, ~2 min
    .venv/bin/python -m pytest tests/test_unet.py -q -m slow       # + the 1-trial Ray sweep, ~3 min on 2 cores
"""
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from trainers.model.unet import ResBlock, build_unet

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _randomize(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model


def test_unet_tiny_shape_size_and_conditioning():
    model = build_unet(image_size=16, channels=3, num_classes=10)
    assert 300_000 <= sum(p.numel() for p in model.parameters()) <= 1_000_000
    assert model.class_emb.num_embeddings == 11  # the null class has its own row
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in model.modules()) >= 2 * 6
    assert sum(isinstance(m, ResBlock) for m in model.modules()) == 1 * 2 + 2 + 2 * 2  # down, mid, up (2 levels)
    x, t = torch.randn(4, 3, 16, 16), torch.rand(4)
    assert torch.equal(model(x, t, torch.tensor([0, 1, 2, 10])), torch.zeros_like(x))  # zero-initialised output
    _randomize(model)
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
USER_NET = textwrap.dedent('''
    """A user's own denoiser, written against specforce's model contract only."""
    import torch
    from torch import nn


    class TinyConvDenoiser(nn.Module):
        def __init__(self, channels, num_classes, width):
            super().__init__()
            self.width = width
            self.inp = nn.Conv2d(channels, width, 3, padding=1)
            self.cls = nn.Embedding(num_classes + 1, width)
            self.time = nn.Linear(1, width)
            self.out = nn.Conv2d(width, channels, 3, padding=1)

        def forward(self, x_t, t, cond):
            h = self.inp(x_t) + (self.cls(cond) + self.time(t[:, None]))[:, :, None, None]
            return self.out(torch.nn.functional.silu(h))

        def describe(self):
            return {"kind": "tiny-conv", "width": self.width}


    def build(*, image_size, channels, num_classes, width=8):
        return TinyConvDenoiser(channels, num_classes, width)
''')

CONFIG = {
    "model": {"target": "user_nets_outside:build", "options": {"width": 6}, "predicts": "v"},
    "data": {"name": "grf", "image_size": 8, "options": {"num_samples": 128}},
    "spectral": {"enabled": True},
    "optim": {"batch_size": 16, "lr": 1e-3, "total_images": 96, "ema_decays": [0.99]},
    "sample": {"sampler": "euler", "steps": 3},
    "eval": {"metrics": ["spectrum"], "num_samples": 16, "batch_size": 16, "denoise_batch": 16,
             "denoise_t_points": 10, "grid_size": 2},
    "log_every_images": 48,
    "checkpoint_every_images": 48,
}


@pytest.fixture()
def outside(tmp_path):
    """A folder outside the repository holding the user's module and config (the user's own repository)."""
    home = tmp_path / "their_repo"
    home.mkdir()
    (home / "user_nets_outside.py").write_text(USER_NET)
    (home / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return home


def _env(home):
    # the user's folder on PYTHONPATH, as they would run it; the repository is installed (here: also on the path)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(home), str(ROOT)]), "OMP_NUM_THREADS": "1",
            "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def _cli(args, home, timeout=600):
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=home, env=_env(home), text=True,
                         capture_output=True, timeout=timeout)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    return out


def test_an_outside_model_trains_evaluates_and_is_recorded(outside):
    _cli(["train", "config.yaml", "--out", "runs/user", "--experiment", "own-model"], outside)
    run_dir = outside / "runs" / "user"
    client = MlflowClient(f"sqlite:///{outside / 'mlflow.db'}")
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

    state = load_checkpoint(run_dir / "checkpoint.pt")
    assert sorted(state["model"]) == sorted(["inp.weight", "inp.bias", "cls.weight", "time.weight", "time.bias",
                                             "out.weight", "out.bias"])
    # `specforce eval` rebuilds the same model from the run's stored config, and its held-out loss on the EMA
    # weights is the one the run logged at the end
    out = _cli(["eval", str(run_dir / "ema.pt"), "--metrics", "spectrum", "--num-samples", "16"], outside)
    result = json.loads(out.stdout[out.stdout.index("{\n"):])
    assert result["eval/denoise_loss"] == pytest.approx(run.data.metrics["eval/denoise_loss"], rel=1e-5)


def test_an_outside_target_is_refused_by_dry_run_when_it_does_not_import(outside):
    # from another folder and without the user's folder on PYTHONPATH (`python -m` puts the working dir on the path)
    out = subprocess.run([sys.executable, "-m", "sweeps.cli", "train", str(outside / "config.yaml"), "--dry-run"],
                         cwd=outside.parent, env={**_env(outside), "PYTHONPATH": str(ROOT)}, text=True,
                         capture_output=True, timeout=300)
    assert out.returncode == 2
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
    client = MlflowClient(f"sqlite:///{outside / 'mlflow.db'}")
    exp = client.get_experiment_by_name("own-sweep")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`specforce.role` = 'trial'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params["model.target"] == "user_nets_outside:build"
    assert runs[0].data.params["model.reported.kind"] == "tiny-conv"


class _Killed(Exception):
    pass


class _KillAtFirstCheckpoint:
    """Hooks that end the run right after its first checkpoint is on disk (as a SIGKILL there would)."""

    def __getattr__(self, name):
        from trainers.training.loop import Hooks

        return getattr(Hooks(), name)

    def on_checkpoint(self, images, path, metrics):
        raise _Killed(images)


def test_a_contract_model_resumes_exactly_with_its_ema(tmp_path):
    from trainers.training.checkpoint import load_checkpoint
    from trainers.training.config import config_from_dict
    from trainers.training.loop import Trainer

    cfg = config_from_dict({**CONFIG, "model": {"target": "trainers.model.unet:build_unet",
                                                "options": {"base_channels": 8}, "predicts": "v"},
                            "eval": {**CONFIG["eval"], "metrics": []}, "device": "cpu"})
    Trainer(cfg, tmp_path / "straight").run()
    with pytest.raises(_Killed):
        Trainer(cfg, tmp_path / "killed", hooks=_KillAtFirstCheckpoint()).run()
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["images_seen"] < CONFIG["optim"]["total_images"]
    Trainer(cfg, tmp_path / "killed").run()  # re-running the same command resumes
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("straight", "killed"))
    assert a["images_seen"] == b["images_seen"] == CONFIG["optim"]["total_images"]
    for part in ("model", "ema"):
        flat_a, flat_b = _tensors(a[part]), _tensors(b[part])
        assert flat_a and flat_a.keys() == flat_b.keys() and all(torch.equal(flat_a[k], flat_b[k]) for k in flat_a)


def _tensors(tree, prefix=""):
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, (list, tuple)) else []
    return {k: v for key, sub in items for k, v in _tensors(sub, f"{prefix}/{key}").items()}
