"""Conditioning vectors beyond class labels: a fixed embedding per class (data.options.cond), its
dropout to the null (zero) vector in training, classifier-free guidance with it, unet-tiny's cond_dim, the refusals at
load, and `specforce train` / resume / `specforce eval` / guided sampling of unet-tiny with vector conditioning.

    .venv/bin/python -m pytest tests/test_cond_vector.py -q     # CPU, ~1-2 min on 2 shared cores
"""
import json

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from cli_helpers import cli_env, run_cli_streams
from resume_helpers import assert_resumes_exactly, flat_tensors
from specforce_contracts import DEFAULT_STORE_FILE, RUN_EMA_FILE
from train_helpers import perturb, tiny_train_config
from trainers.data.cond import ClassEmbedding, build_cond
from trainers.model.flow import RectifiedFlow
from trainers.model.samplers import generate, make_cfg_denoiser
from trainers.model.unet import build_unet

COND = {"type": "class_embedding", "dim": 16, "seed": 3}
CONFIG = tiny_train_config({"target": "trainers.model.unet:build_unet", "options": {"base_channels": 8, "cond_dim": 16},
                            "predicts": "v"},
                           {"name": "digits", "image_size": 8, "options": {"cond": COND}},
                           batch_size=16, total_images=96, sample_steps=3, every=48, device="cpu",
                           sample={"cfg_scale": 2.0, "cfg_interval": [0.0, 1.0]}, flow={"label_drop": 0.25},
                           eval={"metrics": ["spectrum"], "num_samples": 20, "batch_size": 20, "denoise_batch": 16,
                                 "denoise_t_points": 10, "grid_size": 2})


class _Recorder(torch.nn.Module):
    """A 'model' that remembers the cond it was called with and predicts a fixed function of it."""

    def forward(self, z, t, cond):
        self.seen = cond.clone()
        shift = cond.float().sum(1) if cond.ndim == 2 else cond.float()
        return 0.5 * z + shift.reshape(-1, 1, 1, 1)


# ------------------------------------------------------------------------------------------------ the embedding
def test_class_embedding_is_seeded_unit_norm_with_a_zero_null_row_and_not_checkpointed():
    a, b = ClassEmbedding(10, 16, seed=3), ClassEmbedding(10, 16, seed=3)
    assert torch.equal(a.table, b.table) and a.table.shape == (11, 16) and a.table.dtype == torch.float32
    assert torch.allclose(a.table[:10].norm(dim=1), torch.ones(10), atol=1e-6)
    assert torch.equal(a.table[10], torch.zeros(16))  # the null class is the null (zero) vector
    assert not torch.equal(a.table, ClassEmbedding(10, 16, seed=4).table)
    assert a.state_dict() == {}  # rebuilt from (seed, dim, classes): checkpoints hold nothing new
    y = torch.tensor([3, 10, 0])
    assert torch.equal(a(y), a.table[y]) and build_cond({}, 10) is None
    assert torch.equal(build_cond({"cond": COND}, 10).table, a.table)


# ------------------------------------------------------------------------------------------------ training dropout
def test_dropout_replaces_the_vector_by_the_null_vector_at_the_drawn_rate():
    flow, n = RectifiedFlow(num_classes=10, label_drop=0.3), 4000
    y = torch.arange(n) % 10
    vec = ClassEmbedding(10, 8, seed=0)(y)
    x = torch.randn(n, 1, 2, 2)
    model = _Recorder()
    _, stats = flow.loss(model, x, vec, generator=torch.Generator().manual_seed(5))
    drop, seen = stats["label_dropped"], model.seen
    assert torch.equal(seen[drop], torch.zeros_like(seen[drop])) and torch.equal(seen[~drop], vec[~drop])
    # the same generator draws the same mask for labels (draw order t, eps, drop unchanged): paired streams agree
    _, stats_int = flow.loss(model, x, y, generator=torch.Generator().manual_seed(5))
    assert torch.equal(stats_int["label_dropped"], drop) and torch.equal(stats_int["t"], stats["t"])
    assert torch.equal(model.seen, torch.where(drop, torch.full_like(y, 10), y))
    # binomial(4000, 0.3): 5 standard deviations is 145 draws
    assert abs(int(drop.sum()) - 0.3 * n) < 5 * (n * 0.3 * 0.7) ** 0.5


def test_vector_dropout_sharded_over_ranks_equals_the_single_process_draw():
    flow, n = RectifiedFlow(num_classes=10, label_drop=0.5), 12
    vec = ClassEmbedding(10, 4, seed=1)(torch.arange(n) % 10)
    x = torch.randn(n, 1, 2, 2)
    one, shards = _Recorder(), _Recorder()
    flow.loss(one, x, vec, generator=torch.Generator().manual_seed(2))
    for rank in range(3):
        rows = slice(rank, None, 3)
        flow.loss(shards, x[rows], vec[rows], generator=torch.Generator().manual_seed(2), shard=(rank, 3))
        assert torch.equal(shards.seen, one.seen[rows])


def test_flow_refuses_a_cond_of_the_wrong_shape():
    flow = RectifiedFlow(num_classes=10)
    with pytest.raises(ValueError, match="one conditioning vector per sample"):
        flow.loss(_Recorder(), torch.randn(4, 1, 2, 2), torch.zeros(3, 8))


# ------------------------------------------------------------------------------------------------ guidance
@pytest.mark.parametrize("scale", [1.0, 0.0, 3.0])
def test_cfg_with_vectors_scale_1_is_conditional_0_unconditional(scale):
    model = _Recorder()
    vec = ClassEmbedding(10, 8, seed=0)(torch.tensor([1, 4, 7]))
    z, t = torch.randn(3, 1, 2, 2), torch.full((3,), 0.5)
    denoise = make_cfg_denoiser(model, vec, cfg_scale=scale, interval=(0.0, 1.0), null_class=10)
    out = denoise(z, t)
    x_c, x_u = model(z, t, vec), model(z, t, torch.zeros_like(vec))  # zeros: the null vector
    assert torch.allclose(out, x_u + scale * (x_c - x_u), atol=1e-6)
    if scale == 1.0:
        assert torch.equal(out, x_c)
    if scale == 0.0:
        assert torch.allclose(out, x_u, atol=1e-6)


def test_generate_takes_vectors_and_the_null_vector_means_unconditional():
    model = _Recorder()
    vec = ClassEmbedding(10, 8, seed=0)(torch.tensor([1, 10]))
    x = generate(model, n=2, image_shape=(1, 2, 2), labels=vec, num_classes=10, steps=4, cfg_scale=2.0,
                 cfg_interval=(0.0, 1.0), generator=torch.Generator().manual_seed(0))
    assert x.shape == (2, 1, 2, 2) and torch.isfinite(x).all()
    with pytest.raises(ValueError, match="finite conditioning vectors"):
        generate(model, n=3, image_shape=(1, 2, 2), labels=vec, num_classes=10, steps=2)


# ------------------------------------------------------------------------------------------------ unet-tiny
def test_unet_projects_a_vector_cond_and_refuses_the_other_kind():
    model = build_unet(image_size=8, channels=1, num_classes=10, base_channels=8, cond_dim=16)
    assert not hasattr(model, "class_emb") and model.describe()["cond_dim"] == 16
    perturb(model)
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    vec = ClassEmbedding(10, 16, seed=0)(torch.tensor([2, 10]))
    out = model(x, t, vec)
    assert out.shape == x.shape and not torch.allclose(out, model(x, t, torch.zeros_like(vec)))
    out.square().mean().backward()  # every parameter, cond_proj included, takes part
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    with pytest.raises(ValueError, match=r"takes float vectors \[B, 16\]"):
        model(x, t, torch.tensor([2, 10]))
    with pytest.raises(ValueError, match="takes integer labels"):
        build_unet(image_size=8, channels=1, num_classes=10, base_channels=8)(x, t, vec)


# ------------------------------------------------------------------------------------------------ refusals at load
@pytest.mark.parametrize("patch, starts", [
    ({"model": {}}, "data.options.cond: the built-in JiT takes integer class labels only"),
    ({"data": {"name": "digits", "image_size": 8, "options": {"cond": {"type": "clip", "dim": 4}}}},
     "data.options.cond: must be {type: class_embedding"),
    ({"data": {"name": "digits", "image_size": 8, "options": {"cond": {"type": "class_embedding", "dim": 0}}}},
     "data.options.cond: must be {type: class_embedding"),
])
def test_config_load_refuses_vector_cond_it_cannot_use(patch, starts):
    from trainers.training.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as err:
        config_from_dict({**CONFIG, **patch})
    assert str(err.value).startswith(starts) and "\n" not in str(err.value)


@pytest.mark.parametrize("patch, starts", [
    ({"model": {"target": "trainers.model.unet:build_unet", "options": {"base_channels": 8}}},
     "model.target: the model's forward(x_t [2, 1, 8, 8], t [2], a vector cond [2, 16]"),
    ({"data": {"name": "grf", "image_size": 8, "options": {"cond": COND, "num_samples": 64}}},
     "data (grf, train split): cond: class_embedding needs labelled data"),
])
def test_the_environment_check_refuses_a_model_or_data_without_vectors(patch, starts):
    from trainers.training.config import ConfigError, config_from_dict
    from trainers.training.environment import check_environment

    with pytest.raises(ConfigError) as err:
        check_environment(config_from_dict({**CONFIG, **patch}))
    assert str(err.value).startswith(starts) and "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------------ end to end
def _cli(args, home, timeout=600):
    return run_cli_streams(args, home, cli_env(PYTHONUNBUFFERED="1"), timeout=timeout)


def test_specforce_train_eval_and_guided_sampling_of_unet_with_vector_cond(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    _cli(["train", "config.yaml", "--out", "runs/cond", "--experiment", "cond-vector"], tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path / DEFAULT_STORE_FILE}")
    (run,) = client.search_runs([client.get_experiment_by_name("cond-vector").experiment_id])
    params, metrics = run.data.params, run.data.metrics
    assert run.info.status == "FINISHED" and params["model.options.cond_dim"] == "16"
    assert params["model.reported.cond_dim"] == "16"
    assert torch.isfinite(torch.tensor(metrics["eval/denoise_loss"]))
    run_dir = tmp_path / "runs" / "cond"
    # `specforce eval` rebuilds the cond map from the stored config: the same held-out loss on the EMA weights
    out = _cli(["eval", str(run_dir / RUN_EMA_FILE), "--metrics", "spectrum", "--num-samples", "20"], tmp_path)
    result = json.loads(out.stdout[out.stdout.index("{\n"):])
    assert result["eval/denoise_loss"] == pytest.approx(metrics["eval/denoise_loss"], rel=1e-5)

    # guided sampling from the trained EMA weights (the null vector as the unconditional branch): finite samples,
    # and guidance changes them (scale 2 is not scale 1)
    from sweeps.commands.evaluate import checkpoint_config, load_sampling_weights
    from trainers.training.builders import build_denoiser, generate_images
    from trainers.training.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / RUN_EMA_FILE)
    cfg = checkpoint_config(state, run_dir / RUN_EMA_FILE, num_samples=None, metrics=None, inception_weights=None)
    built = build_denoiser(cfg)
    load_sampling_weights(built.model, state, cfg)
    labels = torch.tensor([0, 3, 9, 10])  # 10: the null class, i.e. the zero vector
    images = {}
    for scale in (1.0, 2.0):
        c = cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"cfg_scale": scale})})
        images[scale] = generate_images(c, built.model, labels, channels=1, num_classes=10, device=built.device,
                                        generator=torch.Generator().manual_seed(0))
        assert images[scale].shape == (4, 1, 8, 8) and torch.isfinite(images[scale]).all()
    assert not torch.allclose(images[1.0][:3], images[2.0][:3])
    # the null row is unconditional either way: guidance x_u + s (x_u - x_u) leaves it as it is
    assert torch.allclose(images[1.0][3], images[2.0][3], atol=1e-5)


def test_vector_conditioned_unet_resumes_exactly(tmp_path):
    from trainers.training.config import config_from_dict

    cfg = config_from_dict({**CONFIG, "eval": {**CONFIG["eval"], "metrics": []}})
    straight, _ = assert_resumes_exactly(cfg, tmp_path, CONFIG["optim"]["total_images"])
    assert any("cond_proj" in k for k in flat_tensors(straight["model"]))  # the vector projection is what was trained
