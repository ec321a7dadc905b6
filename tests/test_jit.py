"""Tests for trainers/model/jit.py: architecture (parameter counts vs closed form and the paper), fixed encodings vs
NumPy re-computations, zero-init behaviour, the Spectral Forcing hook, CFG null class, gradients, errors, bf16.

    .venv/bin/python -m pytest tests/test_jit.py -q
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from trainers.model.jit import (JIT_PRESETS, JiT, JiTPreset, apply_rope, build_jit, rope_2d_tables, sincos_pos_embed_2d,
                          timestep_embedding)

NUM_CLASSES = 10


def _tiny(**kw) -> JiT:
    torch.manual_seed(0)
    kw.setdefault("num_classes", NUM_CLASSES)
    return build_jit("jit-tiny", image_size=32, **kw)


def _randomize_zero_inits(model: JiT, std: float = 0.05) -> JiT:
    """Give the adaLN-zero and final layers random weights, so the output depends on every input path."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for block in model.blocks:
            lin = block.adaLN_modulation[-1]
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * std)
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * std + 0.5)  # open the gates
        for p in (*model.final_layer.linear.parameters(), *model.final_layer.adaLN_modulation.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def _batch(b: int = 4, seed: int = 0, size: int = 32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 3, size, size, generator=g)
    t = torch.rand(b, generator=g)
    y = torch.arange(b) % (NUM_CLASSES + 1)
    return x, t, y


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
    model = _tiny(patch_size=8)
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
    model = _tiny(patch_size=8)  # 16 image tokens, head dim 32, 4 in-context tokens
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
    model = _tiny(patch_size=8)
    img = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    # channel-last within each patch, patches in row-major order
    patches = img.reshape(2, 3, 4, 8, 4, 8).transpose(0, 2, 4, 3, 5, 1).reshape(2, 16, 8 * 8 * 3)
    np.testing.assert_array_equal(model.unpatchify(torch.from_numpy(patches)).numpy(), img)


def test_patch_tokens_are_row_major():
    model = _tiny(patch_size=8)
    x = torch.zeros(1, 3, 32, 32)
    x[..., 8:16, 24:32] = 1.0  # patch (row 1, column 3)
    tokens = model.x_embedder(x)[0]  # proj1 has no bias and proj2's bias is zero at init
    assert torch.nonzero(tokens.abs().sum(-1)).flatten().tolist() == [1 * 4 + 3]


# -- behaviour --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("patch", [None, 2, 8, 16])
def test_output_shape_and_num_tokens(patch):
    model = _tiny(patch_size=patch)
    p = patch or JIT_PRESETS["jit-tiny"].patch_size
    assert model.patch_size == p and model.num_tokens == (32 // p) ** 2
    x, t, y = _batch()
    out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_patch_size_knob_changes_tokens_not_depth():
    with torch.device("meta"):
        fine, coarse = (build_jit("JiT-B/16", image_size=256, patch_size=p) for p in (16, 32))
    assert (fine.num_tokens, coarse.num_tokens) == (256, 64)
    assert fine.preset == dataclasses.replace(coarse.preset, patch_size=16)


def test_every_block_is_the_identity_at_init():
    model = _tiny()
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda mod, args, out: seen.append(torch.equal(out, args[0])))
    model(*_batch())
    assert seen == [True] * len(model.blocks)


def _identity_blocks_random_head(**kw) -> JiT:
    """Blocks stay the identity (adaLN-zero), only the final layer is random: out = head(embed(x) + pos)."""
    model = _tiny(**kw)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in (*model.final_layer.linear.parameters(), *model.final_layer.adaLN_modulation.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_positional_embedding_is_added_to_the_patch_tokens():
    model = _identity_blocks_random_head()
    x, t, y = _batch()
    zeros = torch.zeros_like(x)  # patch embedding of 0 is 0 at init (proj1 has no bias, proj2's is zero)
    c = model.t_embedder(timestep_embedding(t)) + model.y_embedder(y)
    expected = model.unpatchify(model.final_layer(model.pos_embed.expand(4, -1, -1), c))
    torch.testing.assert_close(model(zeros, t, y), expected)
    assert not torch.allclose(expected[..., :4, :4], expected[..., 4:8, :4])  # patches differ by position only


def test_output_patch_comes_from_its_own_image_token():
    """With identity blocks, changing input patch (r, c) changes exactly output patch (r, c)."""
    model = _identity_blocks_random_head(patch_size=8)
    x, t, y = _batch()
    x2 = x.clone()
    x2[..., 8:16, 16:24] += 1.0  # patch (1, 2)
    changed = (model(x2, t, y) - model(x, t, y)).abs().amax(dim=(0, 1)).reshape(4, 8, 4, 8).amax(dim=(1, 3))
    assert torch.nonzero(changed > 0).tolist() == [[1, 2]]


def test_in_context_tokens_are_label_embedding_plus_position_from_their_start_block():
    model = _randomize_zero_inits(_tiny())
    start, n_ctx = model.in_context_start, model.in_context_len
    inputs = {}
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda mod, args, i=i: inputs.__setitem__(i, args[0].detach()))
    x, t, y = _batch()
    model(x, t, y)
    assert [inputs[i].shape[1] for i in range(len(model.blocks))] == \
        [model.num_tokens] * start + [model.num_tokens + n_ctx] * (len(model.blocks) - start)
    expected = model.y_embedder(y)[:, None] + model.in_context_pos
    torch.testing.assert_close(inputs[start][:, :n_ctx], expected.detach(), rtol=0, atol=0)


def test_zero_init_output_then_nonzero_after_one_step():
    model = _tiny()
    x, t, y = _batch()
    assert torch.equal(model(x, t, y), torch.zeros_like(x))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.nn.functional.mse_loss(model(x, t, y), x).backward()
    opt.step()
    out = model(x, t, y)
    assert out.abs().max() > 0
    x2, _, _ = _batch(seed=1)
    assert not torch.allclose(model(x2, t, y), out)  # depends on the input


def test_first_step_gradient_reaches_only_the_final_linear():
    """adaLN-zero + zero final layer: at init every other gradient is exactly zero (expected, not dead)."""
    model = _tiny(patch_size=8)  # 16 tokens keep it cheap; the structure is the same
    x, t, y = _batch(8)
    torch.nn.functional.mse_loss(model(x, t, y), x).backward()
    live = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert live == {"final_layer.linear.weight", "final_layer.linear.bias"}


def test_gradient_reaches_every_parameter_after_two_steps():
    model = _tiny(patch_size=8)
    x, t, y = _batch(NUM_CLASSES + 1)  # every label, null class included
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x, t, y), x).backward()
        if _ < 2:
            opt.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


class _ZeroRecorder(nn.Module):
    """A real hook: records what it is given and blanks the image, so nothing of x can reach the output."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, z, t):
        self.seen.append((z.detach().clone(), t.detach().clone()))
        return z * 0


def test_spectral_hook_filters_the_input_before_embedding():
    hook = _ZeroRecorder()
    model = _randomize_zero_inits(_tiny(spectral=hook))
    assert model.spectral is hook and any(m is hook for m in model.modules())
    x, t, y = _batch()
    out = model(x, t, y)
    torch.testing.assert_close(hook.seen[0][0], x, rtol=0, atol=0)
    torch.testing.assert_close(hook.seen[0][1], t, rtol=0, atol=0)
    x2, _, _ = _batch(seed=5)
    torch.testing.assert_close(model(x2, t, y), out, rtol=0, atol=0)  # x never reached the embedder

    plain = _tiny()
    assert plain.spectral is None
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(x2, t, y), plain(x, t, y))  # control: without the hook, x matters


def test_spectral_forcing_module_composes_with_the_model():
    spectral = pytest.importorskip("trainers.model.spectral_forcing")
    sf = spectral.SpectralForcing(32)
    model = _randomize_zero_inits(_tiny(spectral=sf))
    plain = _tiny()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("spectral.")})
    x, t, y = _batch()
    torch.testing.assert_close(model(x, t, y), plain(sf(x, t), t, y))


@pytest.mark.parametrize("in_context_len", [4, 0])  # 0: the label reaches the output only through adaLN's c
def test_cfg_null_class_is_a_valid_label(in_context_len):
    model = _randomize_zero_inits(_tiny(in_context_len=in_context_len))
    assert model.y_embedder.num_embeddings == NUM_CLASSES + 1
    x, t, _ = _batch()
    uncond = model(x, t, torch.full((4,), NUM_CLASSES))
    cond = model(x, t, torch.full((4,), 2))
    assert torch.isfinite(uncond).all() and not torch.allclose(uncond, cond)


def test_in_context_tokens_take_part_in_attention():
    model = _randomize_zero_inits(_tiny())
    x, t, y = _batch()
    before = model(x, t, y)
    with torch.no_grad():
        model.in_context_pos.add_(1.0)
    assert not torch.allclose(model(x, t, y), before)


def test_samples_do_not_interact():
    model = _randomize_zero_inits(_tiny())
    x, t, y = _batch(6)
    together = model(x, t, y)
    alone = torch.cat([model(x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_scalar_t_is_broadcast_to_the_batch():
    model = _randomize_zero_inits(_tiny())
    x, _, y = _batch()
    torch.testing.assert_close(model(x, torch.tensor(0.4), y), model(x, torch.full((4,), 0.4), y))


def test_bf16_autocast_forward_and_backward():
    model = _randomize_zero_inits(_tiny())
    x, t, y = _batch()
    ref = model(x, t, y).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = _randomize_zero_inits(_tiny())
    x, t, y = _batch()
    ref = model(x, t, y)
    out = model.cuda()(x.cuda(), t.cuda(), y.cuda()).cpu()
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-4)


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
    model = _tiny()
    x, t, y = _batch()
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
