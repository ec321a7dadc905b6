"""Samplers against a Gaussian whose optimal denoiser and ODE flow are known in closed form; CFG and generate.

For x ~ N(mu, Sigma) and eps ~ N(0, s^2 I), z_t = t x + (1-t) eps is Gaussian and
    E[x | z_t] = mu + t Sigma (t^2 Sigma + (1-t)^2 s^2 I)^-1 (z - t mu).
With Sigma = Q diag(l) Q^T the velocity is affine and diagonal in the eigenbasis, so the probability-flow ODE
maps z0 to z_t = t mu + Q diag(sqrt(t^2 l + (1-t)^2 s^2) / s) Q^T z0 (cross-checked with SciPy's solve_ivp below).
"""
import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from trainers.model.samplers import SAMPLERS, euler, generate, get_sampler, heun, make_cfg_denoiser

D = 16  # a 4x4 single-channel image, flattened


class Gaussian:
    def __init__(self, noise_scale: float, seed: int = 0):
        rng = np.random.default_rng(seed)
        a = rng.standard_normal((D, D))
        self.sigma = a @ a.T / D + 0.1 * np.eye(D)
        self.mu = rng.standard_normal(D)
        self.s = noise_scale
        self.l, self.q = np.linalg.eigh(self.sigma)

    def x_hat_np(self, z: np.ndarray, t: float) -> np.ndarray:
        m = t * self.sigma @ np.linalg.inv(t**2 * self.sigma + (1 - t) ** 2 * self.s**2 * np.eye(D))
        return self.mu + (z - t * self.mu) @ m.T

    def denoise(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # images [B, 1, 4, 4]; the optimal predictor built from a direct solve, not the eigenbasis
        assert t.dtype == torch.float64 and t.shape == (z.shape[0],)
        tv = float(t[0])
        assert torch.all(t == tv)
        x = self.x_hat_np(z.reshape(-1, D).numpy(), tv)
        return torch.from_numpy(x).reshape(z.shape)

    def flow_map(self, z0: np.ndarray, t: float) -> np.ndarray:
        g = np.sqrt(t**2 * self.l + (1 - t) ** 2 * self.s**2) / self.s
        return t * self.mu + ((z0 @ self.q) * g) @ self.q.T


def _z0(g: Gaussian, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return g.s * torch.randn(n, 1, 4, 4, dtype=torch.float64, generator=gen)


def test_closed_form_flow_map_matches_scipy_ode_solution():
    g = Gaussian(noise_scale=0.7)
    z0 = _z0(g, 2, seed=3).reshape(2, D).numpy()
    t_end = 0.999  # v has 1/(1-t): stop just before the singular end point

    def rhs(t, z):
        return (g.x_hat_np(z[None], t)[0] - z) / (1 - t)

    for z in z0:
        sol = solve_ivp(rhs, (0.0, t_end), z, rtol=1e-10, atol=1e-12, method="DOP853")
        np.testing.assert_allclose(sol.y[:, -1], g.flow_map(z, t_end), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("noise_scale", [1.0, 0.5])
def test_samplers_reproduce_gaussian_mean_and_covariance(noise_scale):
    g = Gaussian(noise_scale)
    z0 = _z0(g, 40_000, seed=1)
    errs = {}
    for name in ("euler", "heun"):
        x = SAMPLERS[name](g.denoise, z0, steps=100).reshape(-1, D).numpy()
        cov = np.cov(x, rowvar=False)
        errs[name] = np.linalg.norm(cov - g.sigma) / np.linalg.norm(g.sigma)
        assert errs[name] < 0.05, (name, errs[name])
        np.testing.assert_allclose(x.mean(0), g.mu, atol=0.03)
    assert errs["heun"] < errs["euler"]


def test_pathwise_error_and_convergence_order():
    # Same z0 for all runs: the error against the exact flow map has no Monte-Carlo noise.
    g = Gaussian(noise_scale=1.0)
    z0 = _z0(g, 2_000, seed=2)
    exact = g.flow_map(z0.reshape(-1, D).numpy(), 1.0)
    scale = np.linalg.norm(exact - g.mu)

    def err(sampler, steps):
        return np.linalg.norm(sampler(g.denoise, z0, steps=steps).reshape(-1, D).numpy() - exact) / scale

    e_eu = [err(euler, n) for n in (25, 50)]
    e_he = [err(heun, n) for n in (25, 50)]
    assert e_he[1] < e_eu[1] / 20
    assert 1.7 < e_eu[0] / e_eu[1] < 2.3  # first order
    assert 3.3 < e_he[0] / e_he[1] < 4.7  # second order, despite the final Euler step


def _constant(c: float, calls: list):
    def denoise(z, t):
        calls.append(float(t[0]))
        return torch.full_like(z, c)
    return denoise


@pytest.mark.parametrize("name,steps", [("euler", 1), ("euler", 7), ("heun", 1), ("heun", 7)])
def test_constant_prediction_is_reached_exactly_and_grid_is_uniform(name, steps):
    # z_t = c + (z0 - c)(1 - t) is linear in t, so both integrators are exact and end on c.
    calls = []
    z0 = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    x = get_sampler(name)(_constant(0.25, calls), z0, steps=steps)
    torch.testing.assert_close(x, torch.full_like(z0, 0.25), rtol=0, atol=1e-12)
    grid = [k / steps for k in range(steps)]
    if name == "euler":
        assert calls == pytest.approx(grid)
    else:
        assert len(calls) == 2 * steps - 1
        expected = [t for k in range(steps - 1) for t in (grid[k], (k + 1) / steps)] + [grid[-1]]
        assert calls == pytest.approx(expected)
    assert max(calls) < 1.0  # the singular point t = 1 is never evaluated


def test_t_eps_last_reproduces_clamped_last_step():
    # Euler, 50 steps, exact until t = 0.96: z_48 = c + 0.04 (z0 - c). At t = 0.96 and 0.98 (1 - t < 0.05) the
    # clamped steps each move 0.02 / 0.05 = 40% of the remaining way, leaving 0.6^2 of it.
    z0 = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    c = 0.5
    x = euler(_constant(c, []), z0, steps=50, t_eps_last=0.05)
    torch.testing.assert_close(x, c + 0.6**2 * 0.04 * (z0 - c))
    x_exact = euler(_constant(c, []), z0, steps=50)
    torch.testing.assert_close(x_exact, torch.full_like(z0, c))
    assert not torch.allclose(heun(_constant(c, []), z0, steps=50, t_eps_last=0.05), x_exact)


def test_sampler_argument_errors():
    z0 = torch.zeros(1, 1, 2, 2)
    den = _constant(0.0, [])
    with pytest.raises(ValueError, match=r"sampler: unknown name 'rk4'.*euler.*heun"):
        get_sampler("rk4")
    with pytest.raises(ValueError, match="steps: must be >= 1, got 0"):
        heun(den, z0, steps=0)
    with pytest.raises(TypeError, match="steps: expected an int, got 2.5"):
        euler(den, z0, steps=2.5)
    with pytest.raises(ValueError, match="t_eps_last: .* got 1.5"):
        euler(den, z0, steps=2, t_eps_last=1.5)
    with pytest.raises(ValueError, match=r"denoise: returned shape \(1, 4\)"):
        euler(lambda z, t: torch.zeros(1, 4), z0, steps=2)


class LabelModel:
    """x_hat = label value everywhere (the null class gives num_classes): cond and uncond differ knowingly."""

    def __init__(self):
        self.batches = []

    def __call__(self, z, t, y):
        self.batches.append((z.shape[0], y.clone(), torch.is_grad_enabled()))
        return y.to(z.dtype).reshape(-1, 1, 1, 1).expand_as(z).clone()


def test_cfg_scale_one_runs_one_conditional_forward():
    m = LabelModel()
    y = torch.tensor([0, 1, 2])
    den = make_cfg_denoiser(m, y, cfg_scale=1.0, interval=(0.0, 1.0), null_class=5)
    out = den(torch.zeros(3, 1, 2, 2), torch.full((3,), 0.5))
    assert len(m.batches) == 1 and m.batches[0][0] == 3 and torch.equal(m.batches[0][1], y)
    torch.testing.assert_close(out[:, 0, 0, 0], y.float())


def test_cfg_inside_interval_one_batched_forward_and_known_guidance():
    m = LabelModel()
    y = torch.tensor([0, 1, 2])
    den = make_cfg_denoiser(m, y, cfg_scale=3.0, interval=(0.1, 0.9), null_class=5)
    out = den(torch.zeros(3, 1, 2, 2), torch.full((3,), 0.5))
    assert len(m.batches) == 1 and m.batches[0][0] == 6
    assert torch.equal(m.batches[0][1], torch.tensor([0, 1, 2, 5, 5, 5]))
    # x_u + s (x_c - x_u) with x_u = 5
    torch.testing.assert_close(out[:, 0, 0, 0], 5 + 3.0 * (y.float() - 5))


def test_cfg_is_off_outside_interval_per_sample():
    m = LabelModel()
    y = torch.tensor([1, 1, 1, 1])
    den = make_cfg_denoiser(m, y, cfg_scale=2.0, interval=(0.1, 0.9), null_class=3)
    t = torch.tensor([0.05, 0.1, 0.9, 0.95], dtype=torch.float64)
    out = den(torch.zeros(4, 1, 1, 1), t)[:, 0, 0, 0]
    # inside (closed interval): 3 + 2 (1 - 3) = -1; outside: the plain conditional prediction 1
    torch.testing.assert_close(out, torch.tensor([1.0, -1.0, -1.0, 1.0]))
    m.batches.clear()
    out = den(torch.zeros(4, 1, 1, 1), torch.full((4,), 0.95))
    assert [b[0] for b in m.batches] == [4]  # nothing inside: no unconditional pass at all
    torch.testing.assert_close(out[:, 0, 0, 0], torch.ones(4))


def test_cfg_argument_errors():
    y = torch.tensor([0])
    with pytest.raises(ValueError, match=r"interval: expected 0 <= lo <= hi <= 1, got \(0.5, 0.2\)"):
        make_cfg_denoiser(LabelModel(), y, cfg_scale=2.0, interval=(0.5, 0.2), null_class=1)
    with pytest.raises(ValueError, match="cfg_scale: expected a finite number, got nan"):
        make_cfg_denoiser(LabelModel(), y, cfg_scale=float("nan"), null_class=1)
    with pytest.raises(ValueError, match="null_class: expected a non-negative int, got -1"):
        make_cfg_denoiser(LabelModel(), y, null_class=-1)


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.drop = torch.nn.Dropout(0.5)
        self.calls = []

    def forward(self, z, t, y):
        self.calls.append((z.shape[0], self.training, self.drop.training, torch.is_grad_enabled()))
        return z  # identity prediction: v = 0, so the sampler returns z0 itself


def test_generate_draws_scaled_noise_runs_no_grad_eval_and_restores_modes():
    net = TinyNet()
    net.train()
    net.drop.eval()  # deliberately mixed modes must survive
    gen = torch.Generator().manual_seed(7)
    x = generate(net, n=3, image_shape=(2, 4, 4), labels=[0, 1, 4], sampler="heun", steps=4, cfg_scale=2.0,
                 cfg_interval=(0.1, 1.0), noise_scale=0.5, num_classes=4, generator=gen)
    expected = 0.5 * torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(x, expected)
    assert len(net.calls) == 2 * 4 - 1
    assert all(not tr and not dr and not grad for _, tr, dr, grad in net.calls)
    # t grid 0, .25, .5, .75 (+ corrector points): only t = 0 is outside [0.1, 1], so one forward is batch 3
    assert sorted(b for b, *_ in net.calls) == [3] + [6] * 6
    assert net.training and not net.drop.training and net.lin.training


def test_generate_counts_and_reproducibility_without_guidance():
    m = LabelModel()
    a = generate(m, n=2, image_shape=(1, 2, 2), labels=torch.tensor([3, 3]), sampler="euler", steps=5,
                 num_classes=3, generator=torch.Generator().manual_seed(0))
    assert [b[0] for b in m.batches] == [2] * 5 and all(not b[2] for b in m.batches)
    assert torch.equal(a, torch.full((2, 1, 2, 2), 3.0))


def test_generate_argument_errors():
    kw = dict(n=2, image_shape=(1, 2, 2), num_classes=3)
    with pytest.raises(ValueError, match=r"labels: must lie in \[0, 3\].*max 4"):
        generate(LabelModel(), labels=[0, 4], **kw)
    with pytest.raises(ValueError, match=r"labels: expected 2 integer labels.*shape \(3,\)"):
        generate(LabelModel(), labels=[0, 1, 2], **kw)
    with pytest.raises(ValueError, match="sampler: unknown name 'ddim'"):
        generate(LabelModel(), labels=[0, 1], sampler="ddim", **kw)
    with pytest.raises(ValueError, match="noise_scale: must be > 0, got 0"):
        generate(LabelModel(), labels=[0, 1], noise_scale=0, **kw)
