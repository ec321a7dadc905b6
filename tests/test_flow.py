"""RectifiedFlow against NumPy/SciPy re-computations: t law, noising, v-loss, label dropout, held-out loss."""
import numpy as np
import pytest
import torch
from scipy import stats as sps

from trainers.model.flow import RectifiedFlow
from trainers.evaluation.heldout import bucket_denoise_loss


def _x_y(b=6, seed=0, shape=(2, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b,) + shape, generator=g) * 2 - 1, torch.randint(0, 10, (b,), generator=g)


class Recorder:
    """A model that predicts a fixed function of its inputs and records what it was given."""

    def __init__(self, predict):
        self.predict, self.seen = predict, []

    def __call__(self, z, t, y):
        self.seen.append((z.detach().clone(), t.clone(), y.clone(), torch.is_grad_enabled()))
        return self.predict(z, t, y)


@pytest.mark.parametrize("kwargs,exc,msg", [
    (dict(p_std=0.0), ValueError, "p_std: must be > 0, got 0.0"),
    (dict(p_mean=float("inf")), ValueError, "p_mean: must be finite, got inf"),
    (dict(t_eps=1.0), ValueError, r"t_eps: must lie in \(0, 1\), got 1.0"),
    (dict(noise_scale=-1), ValueError, "noise_scale: must be > 0, got -1"),
    (dict(label_drop=1.5), ValueError, r"label_drop: must lie in \[0, 1\], got 1.5"),
    (dict(num_classes=-1), ValueError, "num_classes: must be >= 0, got -1"),
    (dict(num_classes=2.0), TypeError, "num_classes: expected an int, got 2.0"),
    (dict(p_mean="-0.8"), TypeError, "p_mean: expected a real number, got '-0.8'"),
])
def test_constructor_rejects_bad_arguments(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        RectifiedFlow(**{"num_classes": 10, **kwargs})


def test_num_classes_is_required_keyword():
    with pytest.raises(TypeError):
        RectifiedFlow()  # type: ignore[call-arg]


def test_sample_t_is_logit_normal():
    flow = RectifiedFlow(p_mean=-0.8, p_std=0.8, num_classes=10)
    t = flow.sample_t(200_000, generator=torch.Generator().manual_seed(0)).double().numpy()
    assert t.shape == (200_000,) and np.all((t > 0) & (t < 1))
    logit = np.log(t) - np.log1p(-t)
    assert logit.mean() == pytest.approx(-0.8, abs=0.01)
    assert logit.std() == pytest.approx(0.8, abs=0.01)
    assert sps.kstest(logit, sps.norm(-0.8, 0.8).cdf).pvalue > 1e-3
    # and it is not some other law: the same draws fail against a shifted mean
    assert sps.kstest(logit, sps.norm(-0.7, 0.8).cdf).pvalue < 1e-6


def test_sample_t_is_reproducible_and_checks_n():
    flow = RectifiedFlow(num_classes=3)
    a = flow.sample_t(5, generator=torch.Generator().manual_seed(1))
    b = flow.sample_t(5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.float32
    with pytest.raises(ValueError, match="n: must be >= 1, got 0"):
        flow.sample_t(0)


def test_noise_like_and_interpolate():
    flow = RectifiedFlow(noise_scale=0.5, num_classes=3)
    x, _ = _x_y(4000, shape=(1, 8, 8))
    eps = flow.noise_like(x.double(), torch.Generator().manual_seed(0))
    assert eps.dtype == torch.float64 and eps.shape == x.shape
    assert eps.std().item() == pytest.approx(0.5, rel=0.02)
    t = torch.tensor([0.0, 1.0, 0.3, 0.9]).repeat(1000)
    z = flow.interpolate(x.double(), eps, t).numpy()
    tn = t.numpy()[:, None, None, None]
    np.testing.assert_allclose(z, tn * x.double().numpy() + (1 - tn) * eps.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(z[0], eps[0].numpy())  # t = 0 is pure noise
    np.testing.assert_array_equal(z[1], x[1].double().numpy())  # t = 1 is data
    with pytest.raises(ValueError, match=r"t: expected shape \[4000\].*got \(3,\)"):
        flow.interpolate(x, x, torch.zeros(3))


def test_perfect_model_has_zero_loss():
    flow = RectifiedFlow(num_classes=10)
    x, y = _x_y()
    loss, stats = flow.loss(lambda z, t, y_: x, x, y, generator=torch.Generator().manual_seed(0))
    assert loss.item() == 0.0
    assert set(stats) == {"t", "loss_per_sample", "label_dropped"}
    assert stats["t"].shape == stats["loss_per_sample"].shape == stats["label_dropped"].shape == (6,)


@pytest.mark.parametrize("noise_scale", [1.0, 0.3])
def test_zero_model_loss_matches_numpy_for_replayed_draws(noise_scale):
    # p_mean = 1.5 puts ~7% of t above 1 - t_eps, so the clamp is exercised
    flow = RectifiedFlow(p_mean=1.5, p_std=1.0, t_eps=0.05, noise_scale=noise_scale, label_drop=0.0,
                         num_classes=10)
    x, y = _x_y(64, seed=3)
    x = x.double()
    model = Recorder(lambda z, t, y_: torch.zeros_like(z))
    loss, stats = flow.loss(model, x, y, generator=torch.Generator().manual_seed(11))
    # replay the documented draw order: t normals, then eps normals
    g = torch.Generator().manual_seed(11)
    t = 1 / (1 + np.exp(-(torch.randn(64, generator=g).double().numpy() * 1.0 + 1.5)))
    eps = (torch.randn(x.shape, generator=g, dtype=torch.float64) * noise_scale).numpy()
    xn, tb = x.numpy(), t[:, None, None, None]
    z = tb * xn + (1 - tb) * eps
    den = np.maximum(1 - tb, 0.05)
    per = (((0 - z) / den - (xn - z) / den) ** 2).reshape(64, -1).mean(1)
    np.testing.assert_allclose(stats["t"].numpy(), t, rtol=1e-6)
    np.testing.assert_allclose(model.seen[0][0].numpy(), z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["loss_per_sample"].numpy(), per, rtol=1e-5)
    assert loss.item() == pytest.approx(per.mean(), rel=1e-5)
    assert (t > 0.95).any() and (t < 0.95).any()


def test_loss_math_is_fp32_when_model_returns_bf16():
    flow = RectifiedFlow(num_classes=10, label_drop=0.0)
    x, y = _x_y(16)
    x_hat = (x + 0.01 * torch.randn_like(x)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, stats = flow.loss(lambda z, t, y_: x_hat, x, y, generator=torch.Generator().manual_seed(0))
    assert loss.dtype == torch.float32
    t = stats["t"].double().numpy()[:, None, None, None]
    ref = ((x_hat.double().numpy() - x.double().numpy()) / np.maximum(1 - t, 0.05)) ** 2
    assert loss.item() == pytest.approx(ref.mean(), rel=1e-4)


def test_label_dropout_rate_and_untouched_labels():
    flow = RectifiedFlow(label_drop=0.3, num_classes=10)
    x, y = _x_y(20_000, shape=(1, 1, 1))
    model = Recorder(lambda z, t, y_: torch.zeros_like(z))
    _, stats = flow.loss(model, x, y, generator=torch.Generator().manual_seed(5))
    y_seen, dropped = model.seen[0][2], stats["label_dropped"]
    assert dropped.float().mean().item() == pytest.approx(0.3, abs=0.015)  # 4.6 binomial sigmas
    assert torch.all(y_seen[dropped] == 10) and torch.equal(y_seen[~dropped], y[~dropped])
    for p, expect in ((0.0, 0), (1.0, 20_000)):
        m = Recorder(lambda z, t, y_: torch.zeros_like(z))
        RectifiedFlow(label_drop=p, num_classes=10).loss(m, x, y)
        assert int((m.seen[0][2] == 10).sum()) == expect


def test_loss_backpropagates_to_model_parameters():
    flow = RectifiedFlow(num_classes=10)
    lin = torch.nn.Linear(4, 4)
    x, y = _x_y(8, shape=(1, 4, 4))
    loss, _ = flow.loss(lambda z, t, y_: lin(z), x, y, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0


def test_loss_rejects_bad_batches():
    flow = RectifiedFlow(num_classes=10)
    x, y = _x_y(4)
    with pytest.raises(ValueError, match=r"y: expected shape \[4\]"):
        flow.loss(lambda z, t, y_: z, x, y[:3])
    with pytest.raises(TypeError, match="y: expected integer class labels, got dtype torch.float32"):
        flow.loss(lambda z, t, y_: z, x, y.float())
    with pytest.raises(ValueError, match=r"model: returned shape \(4, 2\)"):
        flow.loss(lambda z, t, y_: z[:, :2, 0, 0], x, y)


def test_denoise_loss_is_deterministic_and_matches_numpy_per_t():
    flow = RectifiedFlow(t_eps=0.05, num_classes=10)
    x, y = _x_y(8)
    eps = flow.noise_like(x, torch.Generator().manual_seed(2))
    grid = [0.0, 0.25, 0.5, 0.97, 1.0]
    model = Recorder(lambda z, t, y_: 0.5 * z)
    a = flow.denoise_loss(model, x, y, t_grid=grid, eps=eps)
    b = flow.denoise_loss(model, x, y, t_grid=torch.tensor(grid), eps=eps)
    assert torch.equal(a, b) and a.shape == (5,)
    assert all(torch.equal(yy, y) and not grad for _, _, yy, grad in model.seen)  # no label drop, no grad
    xn, en = x.double().numpy(), eps.double().numpy()
    for i, t in enumerate(grid):
        z = t * xn + (1 - t) * en
        ref = (((0.5 * z - z) - (xn - z)) / max(1 - t, 0.05)) ** 2
        assert a[i].item() == pytest.approx(ref.mean(), rel=1e-5)


def test_denoise_loss_uses_eval_mode_and_restores_it():
    flow = RectifiedFlow(num_classes=10)
    net = torch.nn.Sequential(torch.nn.Dropout(0.9))
    x, y = _x_y(4)
    eps = torch.zeros_like(x)
    out = flow.denoise_loss(lambda z, t, y_: net(z), x, y, t_grid=[1.0], eps=eps)
    assert out.item() > 0  # a plain callable is not switched: dropout stays active
    wrapped = _Wrap(net)
    wrapped.train()
    out = flow.denoise_loss(wrapped, x, y, t_grid=[1.0], eps=eps)
    assert out.item() == 0.0 and wrapped.training and net.training


class _Wrap(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z, t, y):
        return self.net(z)


def test_denoise_loss_argument_errors():
    flow = RectifiedFlow(num_classes=10)
    x, y = _x_y(4)
    with pytest.raises(ValueError, match=r"t_grid: expected a non-empty list of times in \[0, 1\], got \[1.5\]"):
        flow.denoise_loss(lambda z, t, y_: z, x, y, t_grid=[1.5], eps=x)
    with pytest.raises(ValueError, match="eps: shape"):
        flow.denoise_loss(lambda z, t, y_: z, x, y, t_grid=[0.5], eps=x[:2])


def test_bucket_names_and_means():
    t = np.array([0.0, 0.1, 0.2, 0.3, 0.45, 0.55, 0.6, 0.79, 0.8, 1.0])
    losses = np.arange(10.0) ** 2
    out = bucket_denoise_loss(torch.tensor(t), torch.tensor(losses))
    assert list(out) == ["eval/denoise_loss", "eval/denoise_loss_t0.0-0.2", "eval/denoise_loss_t0.2-0.4",
                         "eval/denoise_loss_t0.4-0.6", "eval/denoise_loss_t0.6-0.8", "eval/denoise_loss_t0.8-1.0"]
    assert out["eval/denoise_loss"] == pytest.approx(losses.mean())
    # [lo, hi) buckets, the last one closed
    for key, idx in [("t0.0-0.2", [0, 1]), ("t0.2-0.4", [2, 3]), ("t0.4-0.6", [4, 5]), ("t0.6-0.8", [6, 7]),
                     ("t0.8-1.0", [8, 9])]:
        assert out[f"eval/denoise_loss_{key}"] == pytest.approx(losses[idx].mean())
    assert all(isinstance(v, float) for v in out.values())


def test_bucket_custom_edges_and_errors():
    out = bucket_denoise_loss([0.1, 0.3, 0.9], [1.0, 2.0, 4.0], edges=(0.0, 0.25, 1.0))
    assert out == {"eval/denoise_loss": pytest.approx(7 / 3), "eval/denoise_loss_t0.0-0.25": 1.0,
                   "eval/denoise_loss_t0.25-1.0": 3.0}
    with pytest.raises(ValueError, match=r"edges: bucket \[0.2, 0.4\] holds no t"):
        bucket_denoise_loss([0.1, 0.5, 0.7, 0.9], [1.0] * 4)
    with pytest.raises(ValueError, match="edges: expected at least two strictly increasing"):
        bucket_denoise_loss([0.5], [1.0], edges=(0.0, 0.5, 0.5, 1.0))
    with pytest.raises(ValueError, match="losses: expected 2 values"):
        bucket_denoise_loss([0.1, 0.5], [1.0])
    with pytest.raises(ValueError, match=r"t_grid: times \[1.5\] lie outside"):
        bucket_denoise_loss([0.1, 1.5], [1.0, 1.0], edges=(0.0, 1.0))
