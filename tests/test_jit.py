"""Tests for trainers/model/jit.py: architecture (parameter counts vs closed form and the paper), fixed encodings vs
NumPy re-computations, and the construction and input errors. Its behaviour (zero-init, the Spectral Forcing hook,
the CFG null class, gradients, bf16) is in tests/test_jit_behaviour.py.

    .venv/bin/python -m pytest tests/test_jit.py -q
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from jit_helpers import jit_batch, tiny_jit
from trainers.model.jit import (JIT_PRESETS, JiTPreset, apply_rope, build_jit, rope_2d_tables, sincos_pos_embed_2d,
                                timestep_embedding)


def _expected_params(p: JiTPreset, channels: int, num_classes: int) -> int:
    """Closed-form parameter count of the JiT architecture, written out from the paper's layer list."""
    d, hd, k = p.hidden, p.hidden // p.heads, p.patch_size
    m = int(int(d * p.mlp_ratio) * 2 / 3)
    block = (d * 3 * d + 3 * d) + (d * d + d) + 2 * hd           # qkv, proj, q/k RMSNorm
    block += (d * 2 * m + 2 * m) + (m * d + d) + 2 * d           # SwiGLU, two pre-norms
    block += d * 6 * d + 6 * d                                    # adaLN
    total = p.depth * block
    total += (256 * d + d) + (d * d + d)                          # time MLP
    total += (num_classes + 1) * d                                # label table incl. null
    total += k * k * channels * p.bottleneck + p.bottleneck * d + d   # bottleneck patch embed
    total += p.in_context_len * d                                 # in-context positional embedding
    total += d + (d * k * k * channels + k * k * channels) + (d * 2 * d + 2 * d)  # final norm, linear, adaLN
    return total


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# -- architecture size ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, paper_millions", [("JiT-B/16", 131.1), ("JiT-B/32", 133.2), ("JiT-700M/32", 688.2)])
def test_param_count_matches_paper_on_meta_device(name, paper_millions):
    with torch.device("meta"):
        model = build_jit(name, image_size=256, num_classes=1000)
    assert all(p.is_meta for p in model.parameters())  # nothing was allocated
    n = _count(model)
    assert abs(n / 1e6 - paper_millions) / paper_millions < 0.01, (name, n)
    assert n == _expected_params(JIT_PRESETS[name], 3, 1000)


@pytest.mark.parametrize("name, kw", [
    ("jit-tiny", {}), ("jit-small", {}), ("jit-tiny", {"patch_size": 8}), ("jit-tiny", {"in_context_len": 0}),
    ("jit-tiny", {"mlp_ratio": 3.0, "depth": 2}), ("JiT-H/16", {"patch_size": 32}),
])
def test_param_count_matches_closed_form(name, kw):
    with torch.device("meta"):
        model = build_jit(name, image_size=64, in_channels=1, num_classes=7, **kw)
    assert _count(model) == _expected_params(model.preset, 1, 7)
    assert model.preset == dataclasses.replace(JIT_PRESETS[name], **kw)


def test_presets_have_the_requested_fields():
    assert JIT_PRESETS["JiT-700M/32"] == JiTPreset(36, 1024, 16, 128, 32, 32, 12, 4.0)
    assert [JIT_PRESETS[f"JiT-{s}/16"].in_context_start for s in "BLH"] == [4, 8, 10]
    assert JIT_PRESETS["JiT-H/32"].bottleneck == 256 and JIT_PRESETS["JiT-B/8"].patch_size == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        JIT_PRESETS["jit-tiny"].depth = 3


def test_preset_lookup_is_case_insensitive_and_accepts_a_preset_object():
    assert build_jit("JIT-TINY", image_size=32).preset == JIT_PRESETS["jit-tiny"]
    custom = JiTPreset(depth=2, hidden=64, heads=2, bottleneck=16, patch_size=8, in_context_len=2, in_context_start=1)
    model = build_jit(custom, image_size=32, num_classes=3)
    assert len(model.blocks) == 2 and model.num_tokens == 16


# -- fixed encodings vs independent references -----------------------------------------------------------------

def _np_sincos_1d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def _np_sincos_2d(dim, grid_size):
    """The MAE/DiT reference formula (meshgrid with w first, then h)."""
    grid = np.stack(np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32)), 0)
    grid = grid.reshape(2, 1, grid_size, grid_size)
    return np.concatenate([_np_sincos_1d(dim // 2, grid[0]), _np_sincos_1d(dim // 2, grid[1])], axis=1)


@pytest.mark.parametrize("dim, grid", [(128, 8), (768, 16), (64, 3)])
def test_sincos_pos_embed_matches_numpy_mae_formula(dim, grid):
    ours = sincos_pos_embed_2d(dim, grid)
    np.testing.assert_allclose(ours.numpy(), _np_sincos_2d(dim, grid), atol=1e-6)


def test_model_pos_embed_is_a_fixed_buffer():
    model = tiny_jit(patch_size=8)
    np.testing.assert_allclose(model.pos_embed[0].numpy(), _np_sincos_2d(128, 4), atol=1e-6)
    assert all(p is not model.pos_embed for p in model.parameters())
    assert "pos_embed" not in model.state_dict()  # recomputed at build: checkpoints do not carry it


def test_timestep_embedding_matches_closed_form():
    t = torch.tensor([0.0, 0.3, 1.0])
    half = 128
    freqs = np.exp(-np.log(10000.0) * np.arange(half) / half)
    args = t.numpy()[:, None].astype(np.float64) * freqs
    np.testing.assert_allclose(timestep_embedding(t).numpy(), np.concatenate([np.cos(args), np.sin(args)], 1),
                               atol=1e-6)


def test_rope_tables_rotate_rows_then_columns():
    head_dim, grid = 16, 5
    cos, sin = rope_2d_tables(head_dim, grid)
    freqs = 10000.0 ** (-np.arange(4) / 4)
    for token, (r, c) in [(0, (0, 0)), (7, (1, 2)), (24, (4, 4))]:
        angles = np.concatenate([r * freqs, c * freqs])
        np.testing.assert_allclose(cos[token].numpy(), np.cos(angles), atol=1e-6)
        np.testing.assert_allclose(sin[token].numpy(), np.sin(angles), atol=1e-6)


def test_rope_scores_depend_only_on_relative_position():
    head_dim, grid = 16, 6
    cos, sin = rope_2d_tables(head_dim, grid)
    g = torch.Generator().manual_seed(0)
    q = apply_rope(torch.randn(head_dim, generator=g, dtype=torch.float64).expand(grid * grid, -1), cos, sin)
    k = apply_rope(torch.randn(head_dim, generator=g, dtype=torch.float64).expand(grid * grid, -1), cos, sin)
    scores = (q @ k.T).reshape(grid, grid, grid, grid)  # [rq, cq, rk, ck]
    # same offset (dr, dc) = (1, -2) at two different absolute places
    assert scores[1, 3, 0, 5].item() == pytest.approx(scores[4, 2, 3, 4].item(), rel=1e-6)
    assert scores[1, 3, 0, 5].item() != pytest.approx(scores[1, 3, 0, 4].item(), rel=1e-3)
    torch.testing.assert_close(q.norm(dim=-1), q.new_full((grid * grid,), q[0].norm().item()))  # a rotation


def _np_rms(x, w, eps=1e-6):
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps) * w


def test_attention_matches_a_numpy_reference_with_rope_on_image_tokens_only():
    model = tiny_jit(patch_size=8)  # 16 image tokens, head dim 32, 4 in-context tokens
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.q_norm.weight.uniform_(0.5, 1.5)
        attn.k_norm.weight.uniform_(0.5, 1.5)
    prefix, n, heads, hd = 4, 16, 4, 32
    cos, sin = model._rope(prefix)
    x = torch.randn(2, prefix + n, 128, generator=torch.Generator().manual_seed(3))
    ours = attn(x, cos, sin).detach().numpy().astype(np.float64)

    W = {k: v.detach().numpy().astype(np.float64) for k, v in attn.state_dict().items()}
    qkv = (x.numpy() @ W["qkv.weight"].T + W["qkv.bias"]).reshape(2, prefix + n, 3, heads, hd)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # [B, heads, L, hd]
    q, k = _np_rms(q, W["q_norm.weight"]), _np_rms(k, W["k_norm.weight"])
    # complex form of 2D RoPE: pair (2i, 2i+1) -> x_2i + j x_2i+1, times exp(j angle); rows first, then columns
    freqs = 10000.0 ** (-np.arange(hd // 4) / (hd // 4))
    r, c = np.divmod(np.arange(n), 4)
    angles = np.concatenate([np.zeros((prefix, hd // 2)), np.concatenate([np.outer(r, freqs), np.outer(c, freqs)], 1)])

    def rot(a):
        z = (a[..., 0::2] + 1j * a[..., 1::2]) * np.exp(1j * angles)
        return np.stack([z.real, z.imag], -1).reshape(a.shape)

    q, k = rot(q), rot(k)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    out = (w / w.sum(-1, keepdims=True)) @ v
    ref = out.transpose(0, 2, 1, 3).reshape(2, prefix + n, 128) @ W["proj.weight"].T + W["proj.bias"]
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


def test_unpatchify_inverts_a_numpy_patchify():
    model = tiny_jit(patch_size=8)
    img = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    # channel-last within each patch, patches in row-major order
    patches = img.reshape(2, 3, 4, 8, 4, 8).transpose(0, 2, 4, 3, 5, 1).reshape(2, 16, 8 * 8 * 3)
    np.testing.assert_array_equal(model.unpatchify(torch.from_numpy(patches)).numpy(), img)


def test_patch_tokens_are_row_major():
    model = tiny_jit(patch_size=8)
    x = torch.zeros(1, 3, 32, 32)
    x[..., 8:16, 24:32] = 1.0  # patch (row 1, column 3)
    tokens = model.x_embedder(x)[0]  # proj1 has no bias and proj2's bias is zero at init
    assert torch.nonzero(tokens.abs().sum(-1)).flatten().tolist() == [1 * 4 + 3]


# -- errors -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"preset": "JiT-XL/2"}, r"preset: unknown name 'JiT-XL/2'; known: JiT-B/8, .*jit-tiny"),
    ({"patch_size": 5}, r"patch_size: 5 does not divide image_size=32"),
    ({"heads": 3}, r"hidden: 128 is not divisible by heads=3"),
    ({"hidden": 120, "heads": 4, "bottleneck": 8}, r"head dim 30 .* not divisible by 4"),
    ({"in_context_start": 4}, r"in_context_start: 4 must be < depth=4"),
    ({"width": 3}, r"overrides: unknown field\(s\) \['width'\]"),
    ({"mlp_ratio": -1.0}, r"mlp_ratio: .* -1.0"),
    ({"patch_size": 0}, r"patch_size: must be >= 1, got 0"),
])
def test_bad_construction_raises_value_error(kwargs, match):
    kwargs = {"preset": "jit-tiny", **kwargs}
    with pytest.raises(ValueError, match=match):
        build_jit(kwargs.pop("preset"), image_size=32, **kwargs)


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"image_size": 32.0}, TypeError, r"image_size: expected an int, got 32.0"),
    ({"num_classes": -1}, ValueError, r"num_classes: must be >= 0, got -1"),
    ({"spectral": lambda z, t: z}, TypeError, r"spectral: expected an nn.Module"),
])
def test_bad_build_arguments(kwargs, exc, match):
    kwargs = {"image_size": 32, **kwargs}
    with pytest.raises(exc, match=match):
        build_jit("jit-tiny", **kwargs)


def test_bad_inputs_raise_with_the_value():
    model = tiny_jit()
    x, t, y = jit_batch()
    with pytest.raises(ValueError, match=r"x: shape \(4, 1, 32, 32\) does not match \[B, 3, 32, 32\]"):
        model(x[:, :1], t, y)
    with pytest.raises(ValueError, match=r"x: shape \(4, 3, 16, 16\)"):
        model(x[..., :16, :16], t, y)
    with pytest.raises(ValueError, match=r"y: label 11 outside \[0, 10\]"):
        model(x, t, torch.tensor([0, 1, 11, 2]))
    with pytest.raises(ValueError, match=r"y: label -1 outside"):
        model(x, t, torch.tensor([0, -1, 1, 2]))
    with pytest.raises(TypeError, match=r"y: expected an integer label tensor"):
        model(x, t, y.float())
    with pytest.raises(ValueError, match=r"t: shape \(3,\) does not match the batch \[4\]"):
        model(x, t[:3], y)
    with pytest.raises(ValueError, match=r"y: shape \(2,\) does not match the batch \[4\]"):
        model(x, t, y[:2])
