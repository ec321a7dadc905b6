"""The plug-in denoiser contract (trainers/model/contract.py): the built-in JiT through it is today's JiT bit for
bit, the x/v/eps conversions against their closed forms, SF before the model, and the one-line refusals at load.

    .venv/bin/python -m pytest tests/test_model_contract.py -q      # CPU, ~1 min
"""
import copy
import subprocess
import sys
import textwrap
import types

import pytest
import torch
from torch import nn

from train_helpers import perturb
from trainers.training.builders import build_model, model_shape_params
from trainers.training.config import ConfigError, config_from_dict
from trainers.model.contract import build_module, x_from_prediction
from trainers.model.spectral_forcing import attach_spectral
from trainers.model.flow import RectifiedFlow
from trainers.model.jit import build_jit
from trainers.model.samplers import generate
from trainers.model.spectral_forcing import SpectralForcing

BEFORE_CONTRACT = "3b8ba27"  # the last commit whose JiT applied SF inside its own forward
SIZE = 16


def _cfg(**model):
    return config_from_dict({"model": model, "data": {"name": "grf", "image_size": SIZE, "options": {"num_samples": 64}},
                             "spectral": {"enabled": True}, "eval": {"metrics": [], "denoise_batch": 16}, "device": "cpu",
                             "optim": {"batch_size": 8, "total_images": 64}})


def _batch(b=4, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, SIZE, SIZE, generator=gen), torch.rand(b, generator=gen),
            torch.randint(0, 11, (b,), generator=gen))


def _old_jit_module():
    try:
        source = subprocess.run(["git", "show", f"{BEFORE_CONTRACT}:trainers/jit.py"], capture_output=True,
                                text=True, check=True, cwd=pathlib_root()).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with commit {BEFORE_CONTRACT} is not available")
    module = types.ModuleType("specforce_old_jit")
    sys.modules[module.__name__] = module  # dataclasses look their module up while the class is created
    try:
        exec(compile(source, "old_jit.py", "exec"), module.__dict__)  # noqa: S102 - our own file at a fixed commit
    finally:
        del sys.modules[module.__name__]
    return module


def pathlib_root():
    import pathlib

    return pathlib.Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- JiT through the contract
def test_builtin_jit_through_the_contract_equals_todays_jit_bit_for_bit():
    old_jit = _old_jit_module()
    cfg = _cfg(preset="jit-tiny", patch_size=4)
    torch.manual_seed(0)
    new = perturb(build_model(cfg, 3, 10, SpectralForcing(SIZE)), seed=1)
    torch.manual_seed(0)
    old = old_jit.build_jit("jit-tiny", image_size=SIZE, patch_size=4, in_channels=3, num_classes=10,
                            spectral=SpectralForcing(SIZE))
    # same parameter names and state_dict keys; the seed alone gives the same initial weights
    assert [n for n, _ in new.named_parameters()] == [n for n, _ in old.named_parameters()]
    assert list(new.state_dict()) == list(old.state_dict())
    unperturbed = build_jit("jit-tiny", image_size=SIZE, patch_size=4, num_classes=10)
    torch.manual_seed(0)
    fresh = build_model(cfg, 3, 10, SpectralForcing(SIZE))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), old.state_dict().values()))
    assert list(unperturbed.state_dict()) == list(new.state_dict())  # SF adds no keys
    old.load_state_dict(new.state_dict())  # a checkpoint of the contract model loads into today's JiT ...
    new.load_state_dict(old.state_dict())  # ... and back
    x, t, y = _batch()
    assert torch.equal(new(x, t, y), old(x, t, y))
    # one training step: the same loss and the same gradient, bit for bit
    flow = RectifiedFlow(num_classes=10)
    losses = []
    for model in (new, old):
        model.zero_grad()
        loss, _ = flow.loss(model, x, y, generator=torch.Generator().manual_seed(3))
        loss.backward()
        losses.append(loss)
    assert torch.equal(losses[0], losses[1])
    assert all(torch.equal(a.grad, b.grad) for a, b in zip(new.parameters(), old.parameters()))


def test_build_jit_with_spectral_keeps_designs_contract():
    # docs/design.md §3: build_jit(..., spectral=sf) filters the input before the patch embedder
    sf = SpectralForcing(SIZE, schedule="constant", c_const=0.3)
    with_sf = perturb(build_jit("jit-tiny", image_size=SIZE, num_classes=10, spectral=sf), seed=1)
    plain = build_jit("jit-tiny", image_size=SIZE, num_classes=10)
    plain.load_state_dict(with_sf.state_dict())
    x, t, y = _batch()
    assert torch.equal(with_sf(x, t, y), plain(sf(x, t), t, y))
    assert not torch.allclose(with_sf(x, t, y), plain(x, t, y))  # control: the filter changes the output
    attach_spectral(with_sf, sf)  # attaching again registers no second hook (the input is not filtered twice)
    assert torch.equal(with_sf(x, t, y), plain(sf(x, t), t, y))


def test_deep_copies_use_their_own_spectral_module():
    # EMA and the loop copy models: the hook reads `module.spectral` at call time, never a captured operator
    model = perturb(build_jit("jit-tiny", image_size=SIZE, num_classes=10, spectral=SpectralForcing(SIZE)), seed=1)
    twin = copy.deepcopy(model)
    twin.spectral = None
    x, t, y = _batch()
    plain = build_jit("jit-tiny", image_size=SIZE, num_classes=10)
    plain.load_state_dict(model.state_dict())
    assert torch.equal(twin(x, t, y), plain(x, t, y))
    assert torch.equal(model(x, t, y), plain(model.spectral(x, t), t, y))


# ------------------------------------------------------------------------------------------- prediction targets
def _flow_sample(seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, eps = torch.randn(6, 1, 4, 4, generator=gen), torch.randn(6, 1, 4, 4, generator=gen)
    t = torch.tensor([0.0, 0.05, 0.3, 0.5, 0.9, 0.95])
    return x, eps, t, RectifiedFlow.interpolate(x, eps, t)


def test_v_and_eps_conversions_recover_the_clean_image():
    x, eps, t, z = _flow_sample()
    torch.testing.assert_close(x_from_prediction(x - eps, z, t, "v", 0.05), x)  # v = x - eps (z = tx + (1-t)eps)
    at = t >= 0.05  # below t_eps the eps-parameterisation is clamped (t = 0 holds no x at all)
    torch.testing.assert_close(x_from_prediction(eps, z, t, "eps", 0.05)[at], x[at])
    assert torch.equal(x_from_prediction(z * 2, z, t, "x", 0.05), z * 2)
    # at t = 0 a perfect eps prediction (eps = z) gives x_hat = 0, not a division by zero
    assert torch.equal(x_from_prediction(eps, z, t, "eps", 0.05)[0], torch.zeros_like(x[0]))


def test_v_loss_is_exactly_on_the_v_output():
    x, eps, t, z = _flow_sample()
    v_out = torch.randn_like(x)
    flow = RectifiedFlow(num_classes=0)
    loss = flow._velocity_loss(x_from_prediction(v_out, z, t, "v", flow.t_eps), x, z, t)
    reference = (v_out - (x - eps)).square().flatten(1).mean(1)  # the flow's v target is x - eps for t <= 1-t_eps
    torch.testing.assert_close(loss, reference)


class _Recorder(nn.Module):
    """A user model: records the input it sees and returns a constant output."""

    def __init__(self, value=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.value, self.seen = value, []

    def forward(self, x, t, cond):
        self.seen.append(x.clone())
        return torch.full_like(x, self.value) + 0 * self.w


def test_sf_filters_the_model_input_and_conversions_use_the_unfiltered_input(monkeypatch):
    sf = SpectralForcing(SIZE)
    x, t, y = _batch(c=1)
    for predicts, expected in (("x", lambda z: torch.zeros_like(z)), ("v", lambda z: z),
                               ("eps", lambda z: z / t.clamp_min(0.05)[:, None, None, None])):
        rec = _Recorder()
        monkeypatch.setattr("trainers.model.unet.build_unet", lambda **kw: rec)
        model = build_module("trainers.model.unet:build_unet", {}, image_size=SIZE, channels=1, num_classes=10,
                             predicts=predicts, spectral=sf)
        out = model(x, t, y)
        assert torch.equal(rec.seen[-1], sf(x, t))  # the network sees SF_t(x_t) ...
        torch.testing.assert_close(out, expected(x), rtol=0, atol=0)  # ... and x_hat comes from the raw x_t
        assert model.spectral is sf and list(model.state_dict()) == ["w"]


def test_a_v_model_is_integrated_with_its_own_velocity(monkeypatch):
    # a model predicting the constant velocity c moves z0 by exactly c from t=0 to 1 (dz/dt = c); a clamped
    # 1 - t in the conversion would make the last step overshoot
    c = 0.7
    monkeypatch.setattr("trainers.model.unet.build_unet", lambda **kw: _Recorder(c))
    model = build_module("trainers.model.unet:build_unet", {}, image_size=4, channels=1, num_classes=0, predicts="v")
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    for sampler in ("euler", "heun"):
        out = generate(model, n=2, image_shape=(1, 4, 4), labels=[0, 0], num_classes=0, steps=10, sampler=sampler,
                       generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out, z0 + c)
    del gen


# ------------------------------------------------------------------------------------------- refusals at load
USER_MODULE = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self, channels, out_shape=None, dtype=None):
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
            self.out_shape, self.dtype = out_shape, dtype

        def forward(self, x, t, cond):
            out = self.conv(x)
            if self.out_shape:
                out = out[..., : self.out_shape, : self.out_shape]
            return out.to(self.dtype) if self.dtype else out

    def build(*, image_size, channels, num_classes, width=8):
        return Net(channels)

    def bad_shape(*, image_size, channels, num_classes):
        return Net(channels, out_shape=image_size // 2)

    def bad_dtype(*, image_size, channels, num_classes):
        return Net(channels, dtype=torch.float64)

    def raises(*, image_size, channels, num_classes):
        raise RuntimeError("out of ideas")

    def not_a_module(*, image_size, channels, num_classes):
        return lambda x, t, c: x

    def no_sizes(width=8):
        return Net(1)

    class Taken(Net):
        def __init__(self, channels):
            super().__init__(channels)
            self.spectral = nn.Identity()

    def taken(*, image_size, channels, num_classes):
        return Taken(channels)

    NOT_CALLABLE = 3
""")


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_nets.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_nets"


@pytest.mark.parametrize("model, expected", [
    ({"target": "no_such_pkg.nets:build"}, "model.target: module 'no_such_pkg.nets' does not import"),
    ({"target": "user_nets"}, "model.target: expected 'package.module:builder' (got 'user_nets')"),
    ({"target": "user_nets:missing"}, "model.target: module 'user_nets' has no attribute 'missing'"),
    ({"target": "user_nets:NOT_CALLABLE"}, "model.target: 'NOT_CALLABLE' is a int, not a callable builder"),
    ({"target": "user_nets:raises"}, "model.target: the builder raised RuntimeError: out of ideas "
                                     "(got 'user_nets:raises')"),
    ({"target": "user_nets:not_a_module"}, "model.target: the builder returned a function, not a torch.nn.Module"),
    ({"target": "user_nets:build", "options": {"depth": 3}}, "model.options: ['depth'] not accepted by "
                                                             "model.target 'user_nets:build' (it accepts: width)"),
    ({"target": "user_nets:build", "options": {"channels": 3}}, "model.options: ['channels'] are passed by the "
                                                                "contract"),
    ({"target": "user_nets:no_sizes"}, "model.target: the builder must accept keyword arguments"),
    ({"target": "user_nets:bad_shape"}, "model.target: the model returned shape [2, 1, 8, 8] for x_t of shape "
                                        "[2, 1, 16, 16]"),
    ({"target": "user_nets:bad_dtype"}, "model.target: the model returned dtype torch.float64"),
    ({"target": "user_nets:taken"}, "model.target: spectral: Taken already has an attribute 'spectral'"),
    ({"target": "user_nets:build", "predicts": "score"}, "model.predicts: Input should be 'x', 'v' or 'eps'"),
    ({"predicts": "v"}, "model.predicts: the built-in JiT predicts x"),
    ({"options": {"width": 8}}, "model.options: options go to model.target's builder"),
    ({"target": "user_nets:build", "patch_size": 4}, "model.patch_size: applies to the built-in JiT only"),
    ({"target": "user_nets:build", "compile": True}, "model.compile: compiles the module's `blocks` ModuleList"),
])
def test_bad_targets_are_refused_at_load_in_one_line(user_module, model, expected):
    with pytest.raises(ConfigError) as info:
        _cfg(**model)
    message = str(info.value)
    assert message.startswith(expected.split(" (got")[0]) and expected in message and "\n" not in message


def test_a_good_target_loads_and_records_its_params(user_module):
    cfg = _cfg(target="user_nets:build", options={"width": 4}, predicts="eps")
    model = build_model(cfg, 1, 0, None)
    params = {**cfg.flat(), **model_shape_params(model, cfg)}
    assert params["model.target"] == "user_nets:build" and params["model.predicts"] == "eps"
    assert params["model.options.width"] == 4
    assert params["model.parameters"] == 1 * 1 * 9 + 1 and params["model.tokens"] == SIZE * SIZE
    unet = _cfg(target="trainers.model.unet:build_unet", options={"base_channels": 8})
    reported = model_shape_params(build_model(unet, 1, 0, None), unet)
    assert reported["model.reported.arch"] == "unet" and reported["model.reported.base_channels"] == 8


# ------------------------------------------------------------------------------------------- analysis contexts
def test_two_architectures_never_pair_in_the_analysis(tmp_path):
    from mlflow.tracking import MlflowClient

    from analysis import load_runs
    from analysis.compare import compare_arms
    from synthetic_sweep import log_synthetic_sweep

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    client.search_experiments()  # create the schema once
    target_of = {}
    for target, effect in (("None", -6.0), ("trainers.model.unet:build_unet", 0.0)):  # JiT logs its unset target so
        sweep = log_synthetic_sweep(uri, "two-archs", patch_sizes=(8,), seeds=range(3), effects={8: effect},
                                    sweep_name=f"sweep-{target}", rng_seed=len(target_of))
        for run_id in sweep.trial_run_ids.values():
            client.log_param(run_id, "model.target", target)
            target_of[run_id] = target
    comparison = compare_arms(load_runs("two-archs", uri), ["eval/fd_pixel"])
    pairs = comparison.pairs
    assert len(pairs) == 6  # 3 seed pairs per architecture, none across
    assert all(target_of[b] == target_of[s] for b, s in zip(pairs["baseline_run_id"], pairs["sf_run_id"]))
    rows = comparison.comparisons
    assert len(rows) == 2 and set(rows["n_pairs"]) == {3}
    assert all("model.target" in c for c in rows["context"])
