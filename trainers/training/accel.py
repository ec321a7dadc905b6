"""GPU execution options of a run: torch.compile of the denoiser's blocks and the AdamW implementation.

Each option names its config key in every error, and nothing falls back silently: asking for compile where it
cannot run, or for a fused AdamW on a device without the kernel, raises before any training step.

    model.compile       torch.compile every JiT block in place (the JiT authors compile their blocks). Spectral
                        Forcing, the embedders and the final layer stay eager, so SF's fp32 DCT is never traced,
                        and state_dict keys are unchanged (checkpoints and EMA work as before).
    model.compile_mode  "default" or "max-autotune-no-cudagraphs" (CUDA-graph modes are not offered: the loop
                        swaps EMA weights in place between steps, which CUDA graphs would have to re-record)
    optim.fused         False: torch's default AdamW (foreach); True: the fused kernel (CUDA, and CPU in torch>=2.4);
                        "auto": fused on CUDA, the default elsewhere

CPU check (compiles two small blocks with inductor: needs a C++ compiler, ~30 s on 2 cores):

    python -c "import torch; from trainers.model.jit import build_jit; from trainers.training.accel import compile_blocks; \
m = build_jit('jit-tiny', image_size=16, num_classes=0, depth=2, in_context_len=0); \
print(compile_blocks(m, device=torch.device('cpu')), m(torch.randn(2, 3, 16, 16), torch.rand(2), torch.zeros(2, dtype=torch.long)).shape)"
"""
from __future__ import annotations

from typing import Iterable, Literal

import torch
from torch import nn

COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
Fused = Literal["auto", True, False]


def check_compile_supported(device: torch.device) -> None:
    """Raise RuntimeError naming `model.compile` where torch.compile (inductor) cannot run on `device`."""
    try:
        from torch._dynamo.eval_frame import check_if_dynamo_supported

        check_if_dynamo_supported()
    except Exception as err:  # noqa: BLE001 - re-raised with the key named
        raise RuntimeError(f"model.compile: torch.compile is not supported here ({err}); set model.compile: false") \
            from None
    if device.type == "cpu":
        # inductor writes C++ for CPU kernels and builds it with the compiler in torch._inductor.config.cpp.cxx
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as err:  # noqa: BLE001
            raise RuntimeError(f"model.compile: inductor needs a C++ compiler for CPU kernels and found none "
                               f"({type(err).__name__}: {' '.join(str(err).split())[:200]}); install g++ or set "
                               f"model.compile: false") from None
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        major, minor = torch.cuda.get_device_capability(device)
        if major < 7:
            raise RuntimeError(f"model.compile: inductor's Triton kernels need CUDA compute capability >= 7.0, "
                               f"{torch.cuda.get_device_name(device)} has {major}.{minor}; set model.compile: false")
        if not has_triton():
            raise RuntimeError("model.compile: inductor needs the triton package on CUDA and it is not importable; "
                               "install the triton that matches this torch, or set model.compile: false")
    else:
        raise RuntimeError(f"model.compile: not offered on device type {device.type!r} (cpu and cuda only)")


def compile_blocks(model: nn.Module, *, device: torch.device, mode: str = "default") -> int:
    """torch.compile each transformer block of a JiT in place; returns how many were compiled.

    In place (`nn.Module.compile`) keeps parameter names and the module tree, so EMA, DDP, checkpoints and
    `spectral` see the same model. All blocks share one code object, so they share compiled graphs: the first
    step compiles once per input shape (image tokens, and image + class tokens from `in_context_start` on).
    """
    if mode not in COMPILE_MODES:
        raise ValueError(f"model.compile_mode: expected one of {COMPILE_MODES}, got {mode!r}")
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise TypeError(f"model.compile: expected a JiT with a non-empty `blocks` ModuleList, got {type(model).__name__}")
    check_compile_supported(device)
    for block in blocks:
        block.compile(mode=mode)
    return len(blocks)


def resolve_fused(fused: Fused, device: torch.device) -> bool:
    """The `fused` flag to give AdamW for `optim.fused` on `device`; raises where the kernel does not exist."""
    if fused == "auto":
        return device.type == "cuda"
    if fused is True:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        supported = _get_fused_kernels_supported_devices()
        if device.type not in supported:
            raise RuntimeError(f"optim.fused: torch {torch.__version__} has no fused AdamW kernel for device "
                               f"{device.type!r} (supported: {', '.join(supported)}); use optim.fused: false")
        return True
    if fused is False:
        return False
    raise ValueError(f"optim.fused: expected 'auto', true or false, got {fused!r}")


def build_adamw(params: Iterable[nn.Parameter], *, lr: float, betas: tuple[float, float], weight_decay: float,
                fused: Fused, device: torch.device) -> torch.optim.AdamW:
    """AdamW as the run asks for it; fused=None (torch's choice: foreach on CUDA) unless the fused kernel is asked."""
    use_fused = resolve_fused(fused, device)
    return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=weight_decay,
                             fused=True if use_fused else None)
