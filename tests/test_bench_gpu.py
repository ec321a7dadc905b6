"""benchmarks/bench_gpu.py on CPU: its FLOP count against a closed form, its MFU peak table, batch choice, and the
whole toy run (training eager and compiled, sampling, Inception, the loop's training check) with its JSON."""
import json

import pytest
import torch

from benchmarks import bench_gpu, gpu_flops, gpu_timing
from trainers.model.jit import build_jit


@pytest.mark.parametrize("preset, size, kw, batch", [
    ("jit-tiny", 32, {}, 1),                                # class tokens from block 1 on: two sequence lengths
    ("jit-tiny", 32, {}, 3),
    ("jit-tiny", 32, {"patch_size": 8, "in_channels": 1}, 2),
    ("jit-small", 16, {"in_context_len": 0}, 3),
    ("JiT-B/32", 256, {}, 1),                               # the benchmark's own model at its own size
])
def test_flop_counter_equals_the_closed_form(preset, size, kw, batch):
    torch.manual_seed(0)
    model = build_jit(preset, image_size=size, num_classes=10, **kw)
    x = torch.randn(batch, model.in_channels, size, size)
    counted = gpu_flops.count_forward_flops(model, x, torch.rand(batch), torch.arange(batch) % 11)
    assert counted == gpu_flops.jit_forward_flops(model, batch)


def test_flop_count_detaches_sf_and_puts_it_back():
    from trainers.model.spectral_forcing import SpectralForcing

    sf = SpectralForcing(32)
    model = build_jit("jit-tiny", image_size=32, num_classes=10, spectral=sf)
    counted = gpu_flops.count_forward_flops(model, torch.randn(2, 3, 32, 32), torch.rand(2), torch.tensor([1, 2]))
    assert counted == gpu_flops.jit_forward_flops(model, 2) and model.spectral is sf


def test_jit_b32_forward_is_about_2_flops_per_weight_and_token():
    # the usual estimate from parameter counts: 2 FLOPs per weight per token, except adaLN (once per sample);
    # attention scores and the embedders are left out, so the closed form is a few percent above it
    model = build_jit("JiT-B/32", image_size=256, num_classes=1000)
    per_block = sum(p.numel() for p in model.blocks[0].parameters())
    ada = sum(p.numel() for p in model.blocks[0].adaLN_modulation.parameters())
    tokens = [64 + (32 if i >= 4 else 0) for i in range(12)]  # 32 class tokens from block 4 on
    approx = sum(2 * (per_block - ada) * n + 2 * ada for n in tokens)
    assert 1.0 < gpu_flops.jit_forward_flops(model, 1) / approx < 1.05


def test_bf16_peak_is_looked_up_never_guessed(monkeypatch):
    assert gpu_flops.bf16_peak(torch.device("cpu"), None)[0] is None
    assert gpu_flops.bf16_peak(torch.device("cpu"), 123.0) == (123.0, "--peak-tflops 123")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert gpu_flops.bf16_peak(torch.device("cuda"), None)[0] == 989.5
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    peak, note = gpu_flops.bf16_peak(torch.device("cuda"), None)
    assert peak is None and "unknown device 'Some Future GPU'" in note and "no MFU is guessed" in note


def test_largest_batch_steps_down_on_out_of_memory_only():
    def fits_up_to_128(b):
        if b > 128:
            raise torch.OutOfMemoryError(f"CUDA out of memory at batch {b}")

    assert gpu_timing.largest_batch((64, 256, 128), fits_up_to_128) == (128, [256])

    def broken(b):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        gpu_timing.largest_batch((64, 128), broken)

    def never(b):
        raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(RuntimeError, match=r"no batch of \[128, 64\] fits"):
        gpu_timing.largest_batch((64, 128), never)


def test_toy_run_end_to_end_writes_every_figure(tmp_path):
    """`make bench-gpu` without CUDA: the same code at toy size (cold inductor cache: ~40 s of compiling on 2 cores)."""
    out = tmp_path / "bench.json"
    res = bench_gpu.main(["--toy", "--out", str(out)])
    assert res["errors"] == []
    saved = json.loads(out.read_text())
    assert saved["mode"] == "toy" and saved["environment"]["bf16_peak_tflops"] is None
    (m,) = saved["models"]
    assert m["batch"] == 8 and m["batches_refused_oom"] == []
    assert m["step_flops"] == 3 * gpu_flops.jit_forward_flops(build_jit("jit-tiny", image_size=16, num_classes=1000,
                                                                         depth=2, in_context_len=0), 8)
    for variant in ("eager", "compiled"):
        r = m[variant]
        assert r["images_per_s"] > 0 and r["mfu"] is None and r["peak_mem_gib"] is None and 0 < r["sf_share"]
    assert m["sf_flops_per_image"] == 2 * 2 * 2 * 16**3 * 3  # (DCT + inverse) x 2 matmuls x 2 n^3, 3 channels
    assert m["sampling"]["model_calls"] == 5 and m["sampling"]["images_per_s"] > 0
    assert saved["inception"]["images_per_s"] > 0 and "RANDOM" in saved["inception"]["weights"]
    tc = saved["train_check"]
    losses = tc["logged_losses"]
    assert len(losses) == 10  # 40 steps of 8 through trainers.training.loop, logged every 4 steps
    assert tc["first_mean"] == pytest.approx(sum(losses[:3]) / 3)
    assert tc["last_mean"] == pytest.approx(sum(losses[-3:]) / 3)
    assert tc["finite"] and tc["falls"] and tc["last_mean"] < 0.9 * tc["first_mean"]
