"""The plug-in denoiser contract: any `nn.Module` built by a user's builder trains, samples and is ablated with SF.

    model: {target: "my_pkg.nets:build", options: {width: 64}, predicts: x}   # in a training config

The builder is called as `build(image_size=..., channels=..., num_classes=..., **options)` and returns an nn.Module
called as `module(x_t, t, cond)`: x_t [B, C, H, W] the noisy image, t [B] in [0, 1] (t=0 noise, t=1 data, as in
trainers/model/flow.py), cond [B] integer labels where `num_classes` is the null (dropped) class, or, with
data.options.cond (trainers/data/cond.py), float vectors [B, D] where the zero vector is the null; it returns a
tensor of x_t's shape and dtype: the clean image (predicts: x), the velocity x - eps (v) or the noise (eps). With no target, the
built-in JiT (`builtin_jit`, options preset/patch_size/bottleneck) goes through the same path.

What this module adds to the returned module, in place (its parameter names and state_dict keys are unchanged):
  - `module.spectral` (the SpectralForcing operator, or None) and a forward pre-hook that filters x_t with it
    before the module's own forward: the network sees SF_t(x_t), nothing else does (docs/design.md §1);
  - for predicts v or eps, a forward hook that turns the output into the clean-image estimate x_hat the flow's
    v-loss and the samplers use, from the UNFILTERED x_t. With z = t x + (1-t) eps and v = x - eps:
        v:   x_hat = z + (1 - t) * v_out          (so v_hat = (x_hat - z) / (1 - t) = v_out exactly)
        eps: x_hat = (z - (1 - t) * eps_out) / max(t, t_eps)   (exact for t >= t_eps; t=0 carries no x)
    The flow clamps its denominator at t_eps (v_hat = (x_hat - z) / max(1-t, t_eps)), so with the exact 1-t above
    the training loss is (v_out - v)^2 wherever t <= 1 - t_eps (all but ~1e-6 of the logit-normal draws), and the
    ODE samplers, whose denominator is the exact 1 - t, integrate v_out itself up to the last step. Clamping 1-t
    here instead would make the sampler's last step (t = 0.98) move 2.5x too far.

`check_model(cfg, channels=, num_classes=)` refuses a bad target at config load with one line naming model.target;
`build_from_config(cfg, channels=, num_classes=, spectral=)` is what trainers/training/builders.py builds a run's model with.

CPU check:
    .venv/bin/python -c "import torch; from trainers.model.contract import build_module; \\
m = build_module('trainers.model.unet:build_unet', {}, image_size=16, channels=1, num_classes=0, predicts='v'); \\
print(type(m).__name__, m(torch.randn(2, 1, 16, 16), torch.rand(2), torch.zeros(2, dtype=torch.long)).shape)"
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from trainers.model.spectral_forcing import attach_spectral

PREDICTS = ("x", "v", "eps")
RESERVED = ("image_size", "channels", "num_classes")  # the contract passes these itself
PROBE_BATCH = 2
_PROBED: dict[tuple, None] = {}  # probe results by (target, options, sizes): a sweep validates many equal configs


class ContractError(ValueError):
    """A builder or its module breaks the contract; the message starts with the config key."""


def _fail(key: str, why: str, got: object) -> ContractError:
    return ContractError(f"{key}: {why} (got {got!r})")


# -------------------------------------------------------------------------------------- resolving the builder
def resolve_target(target: str) -> Callable[..., nn.Module]:
    """`package.module:builder` -> the callable; ContractError naming model.target otherwise."""
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise _fail("model.target", "expected 'package.module:builder'", target)
    mod_name, attr = target.split(":")
    try:
        module = importlib.import_module(mod_name)
    except Exception as err:  # noqa: BLE001 - any import failure is the user's module's, reported in one line
        raise _fail("model.target", f"module {mod_name!r} does not import ({type(err).__name__}: "
                                    f"{' '.join(str(err).split())[:200]}); is its folder on PYTHONPATH?", target) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _fail("model.target", f"module {mod_name!r} has no attribute {attr!r}", target)
        obj = getattr(obj, part)
    if not callable(obj):
        raise _fail("model.target", f"{attr!r} is a {type(obj).__name__}, not a callable builder", target)
    return obj


def check_options(builder: Callable[..., Any], options: Mapping[str, Any], target: str) -> None:
    """Options the builder's signature does not accept are refused before it is called (no **kwargs swallowing)."""
    reserved = sorted(set(options) & set(RESERVED))
    if reserved:
        raise _fail("model.options", f"{reserved} are passed by the contract from the data (model.target "
                                     f"{target!r}); remove them", dict(options))
    try:
        sig = inspect.signature(builder)
    except (TypeError, ValueError):  # a builtin without a signature: the call itself will tell
        return
    params = sig.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    named = {n for n, p in params.items() if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                          inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    missing = sorted(set(RESERVED) - named)
    if missing:
        raise _fail("model.target", f"the builder must accept keyword arguments {list(RESERVED)}; it lacks "
                                    f"{missing}", target)
    unknown = sorted(set(options) - named)
    if unknown:
        accepted = sorted(named - set(RESERVED))
        raise _fail("model.options", f"{unknown} not accepted by model.target {target!r} (it accepts: "
                                     f"{', '.join(accepted) or 'no options'})", dict(options))


# -------------------------------------------------------------------------------------- the hooks
def x_from_prediction(out: Tensor, z: Tensor, t: Tensor, predicts: str, t_eps: float) -> Tensor:
    """The clean-image estimate from a model's x, v or eps output at the unfiltered z (module docstring)."""
    if predicts == "x":
        return out
    tb = t.expand(z.shape[0]) if t.ndim == 0 else t
    tb = tb.reshape(-1, *([1] * (z.ndim - 1))).to(out.dtype)
    if predicts == "v":
        return z.to(out.dtype) + (1 - tb) * out
    if predicts == "eps":
        return (z.to(out.dtype) - (1 - tb) * out) / tb.clamp_min(t_eps)
    raise ValueError(f"model.predicts: expected one of {PREDICTS} (got {predicts!r})")


def _stash_pre_hook(module: nn.Module, args: tuple) -> None:
    # runs before SF (prepended): the conversion needs the unfiltered x_t
    module.__dict__["_contract_input"] = (args[0], args[1])


def _to_x_hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor:
    z, t = module.__dict__.pop("_contract_input")
    return x_from_prediction(out, z, t, module._contract_predicts, module._contract_t_eps)


def attach_prediction(module: nn.Module, predicts: str, t_eps: float) -> nn.Module:
    """Make a v- or eps-predicting module return x_hat (x: nothing to do)."""
    if predicts not in PREDICTS:
        raise ValueError(f"model.predicts: expected one of {PREDICTS} (got {predicts!r})")
    if predicts == "x":
        return module
    module._contract_predicts, module._contract_t_eps = predicts, float(t_eps)
    if _to_x_hook not in module._forward_hooks.values():
        module.register_forward_pre_hook(_stash_pre_hook, prepend=True)
        module.register_forward_hook(_to_x_hook)
    return module


# -------------------------------------------------------------------------------------- building and probing
def builtin_jit(*, image_size: int, channels: int, num_classes: int, preset: str = "jit-tiny",
                patch_size: int | None = None, bottleneck: int | None = None) -> nn.Module:
    """The default target: the built-in JiT, without SF (the contract attaches it like any model's)."""
    from trainers.model.jit import build_jit

    return build_jit(preset, image_size=image_size, patch_size=patch_size, in_channels=channels,
                     num_classes=num_classes, bottleneck=bottleneck)


def _call_builder(target: str, options: Mapping[str, Any], **sizes: int) -> nn.Module:
    builder = resolve_target(target)
    check_options(builder, options, target)
    try:
        module = builder(**sizes, **dict(options))
    except Exception as err:  # noqa: BLE001 - reported in one line, naming the key
        raise _fail("model.target", f"the builder raised {type(err).__name__}: "
                                    f"{' '.join(str(err).split())[:200]}", target) from None
    if not isinstance(module, nn.Module):
        raise _fail("model.target", f"the builder returned a {type(module).__name__}, not a torch.nn.Module", target)
    return module


def probe(module: nn.Module, target: str, *, image_size: int, channels: int, num_classes: int,
          cond_dim: int | None = None) -> None:
    """One forward on a small float32 batch (a real label and the null class, or with cond_dim a unit vector and the
    null zero vector): shape, dtype and finiteness."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(PROBE_BATCH, channels, image_size, image_size, generator=gen)
    t = torch.tensor([0.3, 0.8])
    if cond_dim is None:
        cond = torch.tensor([0, num_classes])
    else:  # row 0 a unit vector (like a class's), row 1 the null zero vector
        cond = torch.zeros(PROBE_BATCH, cond_dim)
        cond[0, 0] = 1.0
    what = "cond [2]" if cond_dim is None else f"a vector cond [2, {cond_dim}] (data.options.cond.dim)"
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            out = module(x, t, cond)
    except Exception as err:  # noqa: BLE001
        raise _fail("model.target", f"the model's forward(x_t {list(x.shape)}, t [2], {what}) raised "
                                    f"{type(err).__name__}: {' '.join(str(err).split())[:200]}", target) from None
    finally:
        for m, training in modes:
            m.training = training
    if not isinstance(out, Tensor):
        raise _fail("model.target", f"the model returned a {type(out).__name__}, expected a tensor", target)
    if tuple(out.shape) != tuple(x.shape):
        raise _fail("model.target", f"the model returned shape {list(out.shape)} for x_t of shape {list(x.shape)}; "
                                    "it must return x_t's shape", target)
    if out.dtype != x.dtype:
        raise _fail("model.target", f"the model returned dtype {out.dtype} for x_t of dtype {x.dtype}", target)
    if not torch.isfinite(out).all():
        raise _fail("model.target", "the model returned non-finite values at initialisation", target)


def build_module(target: str | None, options: Mapping[str, Any], *, image_size: int, channels: int,
                 num_classes: int, predicts: str = "x", spectral: nn.Module | None = None, t_eps: float = 0.05,
                 probe_first: bool = False) -> nn.Module:
    """Build the model of `target` (None: the built-in JiT with `options`), attach SF and the x_hat conversion."""
    sizes = {"image_size": image_size, "channels": channels, "num_classes": num_classes}
    if target is None:
        module = builtin_jit(**sizes, **dict(options))
    else:
        module = _call_builder(target, options, **sizes)
        if probe_first:
            probe(module, target, **sizes)
    try:
        attach_spectral(module, spectral)
    except ValueError as err:
        raise _fail("model.target", str(err), target) from None
    return attach_prediction(module, predicts, t_eps)


def jit_options(model_cfg: Any) -> dict[str, Any]:
    return {"preset": model_cfg.preset, "patch_size": model_cfg.patch_size, "bottleneck": model_cfg.bottleneck}


def build_from_config(cfg: Any, *, channels: int, num_classes: int, spectral: nn.Module | None) -> nn.Module:
    """The run's model for a TrainConfig (trainers/builders.build_model)."""
    m = cfg.model
    options = jit_options(m) if m.target is None else m.options
    return build_module(m.target, options, image_size=cfg.data.image_size, channels=channels,
                        num_classes=num_classes, predicts=m.predicts, spectral=spectral, t_eps=cfg.flow.t_eps)


def check_model(cfg: Any, *, channels: int | None = None, num_classes: int | None = None) -> None:
    """Config-load checks of model.* (ValueError/ContractError naming the key). Without the data's channels and
    classes only the target, its name and its options are checked; with them the builder is called and probed once
    (cached per target, options and sizes), with the global RNG left as it was."""
    m = cfg.model
    from trainers.data.cond import cond_dim as data_cond_dim

    try:
        dim = data_cond_dim(cfg.data.options)
    except ValueError as err:
        raise _fail("data.options.cond", str(err).partition(", got ")[0], cfg.data.options.get("cond")) from None
    if m.target is None:
        if dim is not None:
            raise _fail("data.options.cond", "the built-in JiT takes integer class labels only; a conditioning "
                                             "vector needs a model.target that takes one (e.g. trainers.model.unet:"
                                             "build_unet with options.cond_dim)", cfg.data.options["cond"])
        if m.options:
            raise _fail("model.options", "options go to model.target's builder; the built-in JiT takes "
                                         "model.preset, model.patch_size and model.bottleneck", dict(m.options))
        if m.predicts != "x":
            raise _fail("model.predicts", "the built-in JiT predicts x (set model.target for a v or eps model)",
                        m.predicts)
        return
    for key in ("patch_size", "bottleneck"):
        if getattr(m, key) is not None:
            raise _fail(f"model.{key}", f"applies to the built-in JiT only, not to model.target {m.target!r}",
                        getattr(m, key))
    check_options(resolve_target(m.target), m.options, m.target)
    if channels is None or num_classes is None:
        return
    key = (m.target, repr(sorted(m.options.items())), cfg.data.image_size, channels, num_classes, dim)
    if key in _PROBED:
        return
    with torch.random.fork_rng(devices=[]):
        module = _call_builder(m.target, m.options, image_size=cfg.data.image_size, channels=channels,
                               num_classes=num_classes)
        probe(module, m.target, image_size=cfg.data.image_size, channels=channels, num_classes=num_classes,
              cond_dim=dim)
        try:
            attach_spectral(module, None)  # the name SF takes must be free on the module
        except ValueError as err:
            raise _fail("model.target", str(err), m.target) from None
        blocks = getattr(module, "blocks", None)
        if m.compile and not (isinstance(blocks, nn.ModuleList) and len(blocks)):
            # trainers/accel.compile_blocks compiles a `blocks` ModuleList in place (SF stays eager)
            raise _fail("model.compile", f"compiles the module's `blocks` ModuleList in place, and model.target "
                                         f"{m.target!r} returns a {type(module).__name__} without one", m.compile)
    _PROBED[key] = None


def reported_params(module: nn.Module, cfg: Any) -> dict[str, Any]:
    """Params of the contract for the MLflow record: each option as model.options.<key>, and what the module's
    optional `describe() -> dict` reports as model.reported.<key> (plain values only)."""
    out: dict[str, Any] = {}
    if cfg.model.target is None:
        return out
    plain = lambda v: v if isinstance(v, (bool, int, float, str)) or v is None else str(v)  # noqa: E731
    for k, v in cfg.model.options.items():
        out[f"model.options.{k}"] = plain(v)
    describe = getattr(module, "describe", None)
    if callable(describe):
        reported = describe()
        if not isinstance(reported, Mapping):
            raise TypeError(f"model.target: {type(module).__name__}.describe() returned a "
                            f"{type(reported).__name__}, expected a dict")
        for k, v in reported.items():
            out[f"model.reported.{k}"] = plain(v)
    return out


__all__ = ["PREDICTS", "ContractError", "resolve_target", "check_options", "attach_prediction",
           "x_from_prediction", "builtin_jit", "build_module", "build_from_config", "check_model", "probe",
           "reported_params"]
