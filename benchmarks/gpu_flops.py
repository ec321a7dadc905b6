"""FLOPs and MFU peaks for benchmarks/bench_gpu.py: JiT's forward FLOPs in closed form and as torch's FlopCounterMode
counts them on the model, SF's own FLOPs, and the dense bf16 peak of the GPU the benchmark runs on.

    .venv/bin/python -m pytest tests/test_bench_gpu.py -q -k flop       # the closed form against the counter (CPU)
"""
from __future__ import annotations

import torch

# Dense (no sparsity) bf16 tensor-core peak per GPU, TFLOP/s, from NVIDIA's data sheets, keyed by the exact name
# torch.cuda.get_device_name returns. A device missing here gets no MFU rather than a guessed peak.
BF16_PEAK_TFLOPS = {
    "NVIDIA H200": 989.5,             # H200 SXM: 1,979 with sparsity
    "NVIDIA H200 NVL": 835.5,
    "NVIDIA H100 80GB HBM3": 989.5,   # H100 SXM5
    "NVIDIA H100 PCIe": 756.5,
    "NVIDIA H100 NVL": 835.5,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
    "NVIDIA A100 80GB PCIe": 312.0,
    "NVIDIA A100-PCIE-40GB": 312.0,
}

# how the MFU figures count FLOPs, printed with the table and stored in the JSON
FLOP_NOTE = ("MFU FLOPs = 3 x forward FLOPs (backward = 2 x forward), forward counted by "
             "torch.utils.flop_counter.FlopCounterMode on the model with SF detached at the measured batch, SDPA on "
             "its math backend: matmuls, convolutions and attention only (norms, elementwise, SF, optimizer and EMA "
             "not counted); equal to the closed form jit_forward_flops")



def jit_forward_flops(model: torch.nn.Module, batch: int) -> int:
    """Closed-form matmul/conv/attention FLOPs (2 per multiply-add) of one JiT forward at `batch`, SF excluded."""
    from trainers.model.jit import TIME_FREQ_DIM

    p, n, c, ps = model.preset, model.num_tokens, model.in_channels, model.patch_size
    h, m, bn = p.hidden, p.mlp_hidden, p.bottleneck
    flops = 2 * (TIME_FREQ_DIM * h + h * h)                      # time MLP
    flops += 2 * n * (ps * ps * c * bn + bn * h)                 # bottleneck patch embedding (two convs)
    for i in range(p.depth):
        tokens = n + (p.in_context_len if p.in_context_len and i >= p.in_context_start else 0)
        flops += 2 * h * 6 * h                                   # adaLN modulation (per sample)
        flops += 2 * tokens * h * 3 * h + 2 * tokens * h * h     # qkv, output projection
        flops += 2 * 2 * tokens * tokens * h                     # q k^T and attention-weighted v, all heads
        flops += 2 * tokens * h * 2 * m + 2 * tokens * m * h     # SwiGLU
    flops += 2 * h * 2 * h + 2 * n * h * ps * ps * c             # final adaLN and output linear
    return batch * flops


def count_forward_flops(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> int:
    """FlopCounterMode's count of one forward of `model` with SF detached, attention on SDPA's math backend."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    spectral, model.spectral = model.spectral, None
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), sdpa_kernel([SDPBackend.MATH]), counter:
            model(x, t, y)
    finally:
        model.spectral = spectral
    return int(counter.get_total_flops())


def count_sf_flops(sf: torch.nn.Module, z: torch.Tensor, t: torch.Tensor) -> int:
    """FlopCounterMode's count of SF's forward (its DCT round trip: four fp32 matmuls per channel)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        sf(z, t)
    return int(counter.get_total_flops())


def bf16_peak(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """(dense bf16 peak in TFLOP/s or None, a note saying where it came from): `override` (--peak-tflops) first,
    else BF16_PEAK_TFLOPS by the CUDA device's exact name; no peak off CUDA or for an unknown device."""
    if override is not None:
        return override, f"--peak-tflops {override:g}"
    if device.type != "cuda":
        return None, f"no bf16 peak for device type {device.type!r}: MFU is reported on CUDA only"
    name = torch.cuda.get_device_name(device)
    if name not in BF16_PEAK_TFLOPS:
        return None, (f"unknown device {name!r}: add its dense bf16 peak to BF16_PEAK_TFLOPS or pass "
                      f"--peak-tflops; no MFU is guessed")
    return BF16_PEAK_TFLOPS[name], f"{name}: {BF16_PEAK_TFLOPS[name]:g} TFLOP/s dense bf16 (data sheet)"
