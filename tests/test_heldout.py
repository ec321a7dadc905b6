"""trainers/evaluation/heldout.py: the fixed batch, noise and t grid of the held-out denoising loss, and its per-bucket values."""
import pytest
import torch

from specforce_contracts import T_BUCKET_EDGES
from trainers.data.loader import build_dataset
from trainers.model.flow import RectifiedFlow
from trainers.evaluation.heldout import HeldOutLoss, t_grid


@pytest.fixture(scope="module")
def digits():
    return build_dataset("digits", image_size=8, split="test")


def _heldout(ds, **kw):
    args = dict(batch=16, t_points=10, data_seed=3, noise_scale=1.0)
    return HeldOutLoss(ds, **{**args, **kw})


def test_inputs_are_fixed_across_calls_and_ranks(digits):
    a, b = _heldout(digits), _heldout(digits)  # two ranks (or two runs of a sweep) build their own
    first = a.inputs()
    assert all(t is u for t, u in zip(first, a.inputs()))  # drawn once, then the same tensors
    assert all(torch.equal(t, u) for t, u in zip(first, b.inputs()))
    x, y, eps, grid = first
    assert x.shape == eps.shape == (16, 1, 8, 8) and y.shape == (16,)
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(_heldout(digits).inputs()[2], eps)
    assert not torch.equal(_heldout(digits, data_seed=4).inputs()[2], eps)
    assert torch.equal(_heldout(digits, noise_scale=0.5).inputs()[2], eps * 0.5)
    assert torch.allclose(grid, torch.tensor([0.05, 0.15, 0.25, 0.35, 0.45, 0.55, 0.65, 0.75, 0.85, 0.95]))
    assert torch.equal(grid, t_grid(10)) and grid.min() > 0 and grid.max() < 1


def test_bucket_losses_equal_a_hand_computation(digits):
    # A model that predicts 0: v_hat - v = -x / max(1 - t, t_eps), so the loss at t is mean(x^2) / max(1 - t, t_eps)^2.
    flow = RectifiedFlow(t_eps=0.05, num_classes=digits.num_classes)
    heldout = _heldout(digits)
    out = heldout(flow, lambda z, t, y: torch.zeros_like(z))
    x, _, _, grid = heldout.inputs()
    ms = float(x.double().square().mean())
    per_t = [ms / max(1 - t, 0.05) ** 2 for t in grid.double().tolist()]
    assert out["eval/denoise_loss"] == pytest.approx(sum(per_t) / len(per_t), rel=1e-5)
    for i, (lo, hi) in enumerate(zip(T_BUCKET_EDGES, T_BUCKET_EDGES[1:])):
        inside = per_t[2 * i:2 * i + 2]  # 10 midpoints, 5 equal buckets: two each
        assert out[f"eval/denoise_loss_t{lo:.1f}-{hi:.1f}"] == pytest.approx(sum(inside) / 2, rel=1e-5)
    assert len(out) == 1 + len(T_BUCKET_EDGES) - 1
    assert heldout(flow, lambda z, t, y: torch.zeros_like(z)) == out  # the same number on every call
