"""EMA against the closed-form weighted sum, fp32 shadows, swapping, buffers and checkpoint round trips."""
import io

import numpy as np
import pytest
import torch

from trainers.model.ema import EMA


class Scalar(torch.nn.Module):
    def __init__(self, value=0.0, dtype=torch.float32):
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor(value, dtype=dtype))


def _closed_form(init, values, decay, warmup):
    """shadow_N = prod_k d_k * init + sum_k (1 - d_k) prod_{j>k} d_j * p_k, written as an explicit sum."""
    d = np.array([min(decay, (1 + k) / (10 + k)) if warmup else decay for k in range(len(values))])
    out = np.prod(d) * init
    for k, p in enumerate(values):
        out += (1 - d[k]) * np.prod(d[k + 1:]) * p
    return out


@pytest.mark.parametrize("warmup", [True, False])
def test_update_matches_closed_form_for_each_decay(warmup):
    m = Scalar(1.0, dtype=torch.float64)
    ema = EMA(m, decays=(0.9, 0.5), warmup=warmup)
    values = [2.0, -1.0, 4.0, 0.5, 3.0]
    for step, v in enumerate(values):
        m.p.data.fill_(v)
        ema.update(m, step)
    for i, decay in enumerate((0.9, 0.5)):
        assert ema.shadows[i]["p"].item() == pytest.approx(_closed_form(1.0, values, decay, warmup), rel=1e-6)
    if warmup:  # step 0 uses decay 1/10: 0.1 * init + 0.9 * p
        e = EMA(Scalar(1.0), decays=(0.9999,))
        e.update(Scalar(2.0), 0)
        assert e.shadows[0]["p"].item() == pytest.approx(0.1 * 1 + 0.9 * 2)


def test_warmup_forgets_the_initialisation_in_short_runs():
    # docs/design.md §4: a plain 0.999 EMA after 600 steps still holds ~exp(-0.6) ~ half of the initial weights.
    for warmup, expect_init_weight in ((False, 0.999**600), (True, 0.0)):
        m = Scalar(0.0)
        ema = EMA(m, decays=(0.999,), warmup=warmup)
        m.p.data.fill_(1.0)
        for step in range(600):
            ema.update(m, step)
        assert 1 - ema.shadows[0]["p"].item() == pytest.approx(expect_init_weight, abs=1e-4)


def test_shadow_is_fp32_for_bf16_model_and_accumulates_tiny_updates():
    m = Scalar(1.0, dtype=torch.bfloat16)
    ema = EMA(m, decays=(0.9999,), warmup=False)
    assert ema.shadows[0]["p"].dtype == torch.float32
    m.p.data.fill_(2.0)
    for step in range(10):
        ema.update(m, step)
    # 1 + (1 - 0.9999^10) = 1.0009996; bf16 spacing near 1 is 2^-7, so a bf16 EMA would still read 1.0
    assert ema.shadows[0]["p"].item() == pytest.approx(2 - 0.9999**10, rel=1e-6)
    assert m.p.dtype == torch.bfloat16


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))


def test_buffers_are_copied_not_averaged_and_copy_to_picks_the_decay():
    net = _net()
    ema = EMA(net, decays=(0.5, 0.0), warmup=False)
    net.train()
    net(torch.randn(16, 3) + 5)  # moves BatchNorm running stats
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    ema.update(net, 0)
    torch.testing.assert_close(ema.buffers["1.running_mean"], net[1].running_mean)
    assert ema.buffers["1.num_batches_tracked"].item() == 1
    target = _net()
    ema.copy_to(target, index=1)  # decay 0: exactly the latest weights
    for a, b in zip(target.parameters(), net.parameters()):
        torch.testing.assert_close(a, b)
    ema.copy_to(target, index=0)  # decay 0.5: halfway between init and latest, i.e. latest - 0.5
    for a, b in zip(target.parameters(), net.parameters()):
        torch.testing.assert_close(a, b - 0.5)
    torch.testing.assert_close(target[1].running_var, net[1].running_var)


def test_swapped_loads_ema_and_restores_originals_even_on_error():
    net = _net()
    ema = EMA(net, decays=(0.0,), warmup=False)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(3.0)
        net[1].running_mean.fill_(7.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with ema.swapped(net) as m:
        assert m is net
        torch.testing.assert_close(net[0].weight, ema.shadows[0]["0.weight"])
        assert torch.all(net[1].running_mean == 0)  # the EMA's buffer copy (taken at construction)
        assert not torch.equal(net[0].weight, before["0.weight"])
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(RuntimeError, match="boom"):
        with ema.swapped(net):
            raise RuntimeError("boom")
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_state_dict_round_trip_with_weights_only_load():
    net = _net()
    ema = EMA(net, decays=(0.9, 0.99))
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(net, 3)
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = EMA(_net(), decays=(0.9, 0.99))
    assert not torch.equal(fresh.shadows[0]["0.weight"], ema.shadows[0]["0.weight"])
    fresh.load_state_dict(state)
    for i in range(2):
        for k in ema.shadows[i]:
            assert torch.equal(fresh.shadows[i][k], ema.shadows[i][k])
    with pytest.raises(ValueError, match=r"state: decays \[0.9, 0.99\] differ from this EMA's \[0.9\]"):
        EMA(_net(), decays=(0.9,)).load_state_dict(state)
    with pytest.raises(ValueError, match="state: shadow 0 keys differ"):
        EMA(torch.nn.Linear(3, 4), decays=(0.9, 0.99)).load_state_dict(state)


def test_wrapped_model_uses_the_inner_module():
    net = _net()
    wrapped = torch.nn.DataParallel(net)  # same `.module` contract as DistributedDataParallel
    ema = EMA(wrapped, decays=(0.0,), warmup=False)
    assert "0.weight" in ema.shadows[0] and not any(k.startswith("module.") for k in ema.shadows[0])
    with torch.no_grad():
        net[0].weight.fill_(2.0)
    ema.update(wrapped, 0)
    plain = _net()
    ema.copy_to(plain)
    assert torch.all(plain[0].weight == 2.0)


def test_argument_errors():
    m = Scalar()
    with pytest.raises(ValueError, match=r"decays: every decay must lie in \[0, 1\), got \[0.9, 1.0\]"):
        EMA(m, decays=(0.9, 1.0))
    with pytest.raises(TypeError, match="decays: expected a non-empty sequence"):
        EMA(m, decays=0.9)
    ema = EMA(m, decays=(0.9,))
    with pytest.raises(ValueError, match="step: expected an int >= 0, got -1"):
        ema.update(m, -1)
    with pytest.raises(ValueError, match=r"index: expected 0..0 .* got 1"):
        ema.copy_to(m, index=1)
    with pytest.raises(ValueError, match=r"model: its tensors differ from the EMA's \(missing \['p'\]"):
        ema.update(torch.nn.Linear(1, 1), 0)
