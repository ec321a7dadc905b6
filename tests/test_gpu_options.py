"""GPU options (trainers/training/accel.py, model.compile / optim.fused): off by default, refused loudly where they cannot run,
and numerically equal to the eager/default path where they do (inductor on CPU, torch's fused AdamW on CPU).

Compile-vs-eager tolerance: outputs within 1e-5 absolute (outputs are O(1) here), gradients within 1e-5 of the
largest gradient entry. Spectral Forcing is never traced: a recording SF sees torch.compiler.is_compiling() False.
"""
import copy
import time

import pytest
import torch
import yaml

from trainers.training.accel import build_adamw, check_compile_supported, compile_blocks, resolve_fused
from trainers.training.config import ConfigError, config_from_dict
from trainers.model.jit import build_jit
from trainers.model.spectral_forcing import SpectralForcing

CPU = torch.device("cpu")
TOL = 1e-5


class RecordingSF(SpectralForcing):
    """The real operator, recording whether each call ran inside a compiled graph (it must never)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[bool] = []

    def forward(self, z, t):
        self.calls.append(torch.compiler.is_compiling())
        return super().forward(z, t)


def _model(**overrides):
    torch.manual_seed(0)
    m = build_jit("jit-tiny", image_size=16, patch_size=4, in_channels=3, num_classes=10,
                  spectral=RecordingSF(16), **overrides)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # adaLN-zero and the output layer start at 0: give them weight so every path matters
        for p in m.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return m


# --------------------------------------------------------------------------------------------------- config
def test_gpu_options_are_off_by_default():
    cfg = config_from_dict({})
    assert (cfg.model.compile, cfg.model.compile_mode, cfg.optim.fused) == (False, "default", False)
    flat = cfg.flat()
    assert flat["model.compile"] is False and flat["optim.fused"] is False


def test_config_accepts_the_documented_values_and_round_trips_through_yaml():
    cfg = config_from_dict({"model": {"compile": True, "compile_mode": "max-autotune-no-cudagraphs"},
                            "optim": {"fused": "auto"}})
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(cfg.model_dump(mode="json"))))
    assert again == cfg and again.optim.fused == "auto"
    assert config_from_dict(yaml.safe_load("optim: {fused: true}")).optim.fused is True


def test_compile_mode_without_compile_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"^model.compile_mode: 'max-autotune-no-cudagraphs' has no effect unless "
                                          r"model.compile is true$"):
        config_from_dict({"model": {"compile_mode": "max-autotune-no-cudagraphs"}})


@pytest.mark.parametrize("tree, match", [
    ({"model": {"compile_mode": "reduce-overhead", "compile": True}}, r"^model.compile_mode: Input should be"),
    ({"optim": {"fused": "yes"}}, r"^optim.fused: Input should be 'auto', True or False \(got 'yes'\)"),
])
def test_bad_values_are_refused_naming_the_key(tree, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(tree)


# ---------------------------------------------------------------------------------------------- fused AdamW
def test_resolve_fused_auto_is_fused_on_cuda_only():
    assert resolve_fused("auto", torch.device("cuda")) is True
    assert resolve_fused("auto", CPU) is False
    assert resolve_fused(False, torch.device("cuda")) is False


def test_fused_on_a_device_without_the_kernel_is_an_error_naming_the_key():
    with pytest.raises(RuntimeError, match=r"^optim.fused: torch .* has no fused AdamW kernel for device 'meta'"):
        resolve_fused(True, torch.device("meta"))


def test_fused_adamw_matches_the_default_implementation():
    # torch's fused kernel (CPU since torch 2.4) against the default for-loop AdamW: same algorithm, other rounding
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    fused = copy.deepcopy(ref)
    w0 = ref[0].weight.detach().clone()
    opt_ref = build_adamw(ref.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.01, fused=False, device=CPU)
    opt_fused = build_adamw(fused.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.01, fused=True, device=CPU)
    assert opt_fused.defaults["fused"] is True and not opt_ref.defaults["fused"]
    x = torch.randn(64, 16)
    for _ in range(10):
        for model, opt in ((ref, opt_ref), (fused, opt_fused)):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
    moved = max((a - b).abs().max().item() for a, b in zip(ref.parameters(), fused.parameters()))
    assert (ref[0].weight - w0).abs().max() > 1e-2  # the optimizers really moved the weights
    assert moved < 1e-6


# ------------------------------------------------------------------------------------------------- compile
def test_compile_without_a_cpp_compiler_is_an_error_naming_the_key():
    import torch._inductor.config as inductor_config

    with inductor_config.patch({"cpp.cxx": ("no-such-c++-compiler-here",)}):
        with pytest.raises(RuntimeError, match=r"^model.compile: inductor needs a C\+\+ compiler for CPU kernels"):
            check_compile_supported(CPU)
        model = _model()
        with pytest.raises(RuntimeError, match=r"^model.compile: inductor needs a C\+\+ compiler"):
            compile_blocks(model, device=CPU)
        assert all(b._compiled_call_impl is None for b in model.blocks)  # refused before touching the model
    check_compile_supported(CPU)  # the real compiler again


def test_compile_on_an_unsupported_device_type_is_an_error():
    with pytest.raises(RuntimeError, match=r"^model.compile: not offered on device type 'meta'"):
        check_compile_supported(torch.device("meta"))


def test_compile_blocks_refuses_a_model_without_blocks_and_unknown_modes():
    with pytest.raises(TypeError, match="model.compile: expected a JiT"):
        compile_blocks(torch.nn.Linear(2, 2), device=CPU)
    with pytest.raises(ValueError, match="model.compile_mode: expected one of"):
        compile_blocks(_model(), device=CPU, mode="reduce-overhead")


def test_compiled_blocks_match_eager_within_1e5_and_sf_is_never_traced():
    """The compile-vs-eager equality test (inductor on CPU; ~30 s of compilation on 2 idle cores)."""
    eager = _model(depth=2, in_context_len=0)
    compiled = copy.deepcopy(eager)
    keys = list(compiled.state_dict())
    assert compile_blocks(compiled, device=CPU) == 2
    assert list(compiled.state_dict()) == keys  # in place: checkpoints and EMA see the same names
    g = torch.Generator().manual_seed(3)
    x, t, y = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([0.3, 0.8]), torch.tensor([4, 10])
    t0 = time.perf_counter()
    out_c = compiled(x, t, y)
    out_c.square().mean().backward()
    print(f"compile + first forward/backward: {time.perf_counter() - t0:.1f} s")
    out_e = eager(x, t, y)
    out_e.square().mean().backward()
    assert out_e.abs().max() > 0.5  # O(1) outputs: an absolute 1e-5 is a tight bound
    grad_scale = max(p.grad.abs().max().item() for p in eager.parameters())
    grad_diff = max((pc.grad - pe.grad).abs().max().item() for pc, pe in zip(compiled.parameters(), eager.parameters()))
    print(f"max |compiled - eager|: output {(out_c - out_e).abs().max().item():.2e} (max |output| "
          f"{out_e.abs().max().item():.2f}), gradient {grad_diff:.2e} (max |gradient| {grad_scale:.2e})")
    assert (out_c - out_e).abs().max().item() <= TOL
    for (name, pc), pe in zip(compiled.named_parameters(), eager.parameters()):
        assert (pc.grad - pe.grad).abs().max().item() <= TOL * grad_scale, name
    # SF ran, eagerly, in both models; and its output is the eager operator's, bit for bit
    assert compiled.spectral.calls == [False] and eager.spectral.calls == [False]
    assert torch.equal(compiled.spectral(x, t), eager.spectral(x, t))


@pytest.mark.slow
def test_loop_with_compile_and_fused_adamw_matches_the_eager_loop(tmp_path):
    """Both options through trainers.training.loop on CPU: the same losses as the default run, step for step."""
    from trainers.training.loop import Hooks, Trainer

    tree = {"model": {"preset": "jit-tiny", "patch_size": 4},
            "data": {"name": "grf", "image_size": 16, "options": {"channels": 3, "num_samples": 64}},
            "spectral": {"enabled": True},
            "optim": {"batch_size": 8, "lr": 1e-3, "total_images": 48, "ema_decays": [0.9]},
            "sample": {"sampler": "heun", "steps": 2, "cfg_scale": 2.0},
            "eval": {"metrics": [], "denoise_batch": 8, "denoise_t_points": 5, "grid_size": 2},
            "log_every_images": 8, "save_checkpoint": False, "device": "cpu"}
    runs = {}
    for name, extra in (("eager", {}), ("fast", {"model": {"compile": True}, "optim": {"fused": True}})):
        t = copy.deepcopy(tree)
        for section, values in extra.items():
            t[section].update(values)
        logged, started = [], []

        class Record(Hooks):
            def on_start(self, run):
                started.append(run)

            def on_metrics(self, images, metrics):
                logged.append(metrics)

        final = Trainer(config_from_dict(t), tmp_path / name, Record()).run()
        runs[name] = ([m["train/loss"] for m in logged if "train/loss" in m], final["eval/denoise_loss"])
    run = started[0]  # the compiled, fused run
    assert run.optimizer.defaults["fused"] is True
    assert all(b._compiled_call_impl is not None for b in run.model.blocks)
    (loss_e, den_e), (loss_f, den_f) = runs["eager"], runs["fast"]
    assert len(loss_e) == len(loss_f) == 6
    assert max(abs(a - b) for a, b in zip(loss_e, loss_f)) <= 1e-4 * max(loss_e)
    assert abs(den_e - den_f) <= 1e-4 * den_e
