"""trainers/model/jit.py's behaviour: zero-init (identity blocks, zero output, which gradients flow first), where
positions and labels enter, the Spectral Forcing hook before the embedder, the CFG null class, samples that do not
interact, bf16 autocast and (with CUDA) CPU/GPU agreement.

    .venv/bin/python -m pytest tests/test_jit_behaviour.py -q      # CPU, seconds
"""
from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from jit_helpers import NUM_CLASSES, jit_batch, randomize_zero_inits, tiny_jit
from trainers.model.jit import JIT_PRESETS, JiT, build_jit, timestep_embedding


# -- behaviour --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("patch", [None, 2, 8, 16])
def test_output_shape_and_num_tokens(patch):
    model = tiny_jit(patch_size=patch)
    p = patch or JIT_PRESETS["jit-tiny"].patch_size
    assert model.patch_size == p and model.num_tokens == (32 // p) ** 2
    x, t, y = jit_batch()
    out = model(x, t, y)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_patch_size_knob_changes_tokens_not_depth():
    with torch.device("meta"):
        fine, coarse = (build_jit("JiT-B/16", image_size=256, patch_size=p) for p in (16, 32))
    assert (fine.num_tokens, coarse.num_tokens) == (256, 64)
    assert fine.preset == dataclasses.replace(coarse.preset, patch_size=16)


def test_every_block_is_the_identity_at_init():
    model = tiny_jit()
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda mod, args, out: seen.append(torch.equal(out, args[0])))
    model(*jit_batch())
    assert seen == [True] * len(model.blocks)


def _identity_blocks_random_head(**kw) -> JiT:
    """Blocks stay the identity (adaLN-zero), only the final layer is random: out = head(embed(x) + pos)."""
    model = tiny_jit(**kw)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in (*model.final_layer.linear.parameters(), *model.final_layer.adaLN_modulation.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def test_positional_embedding_is_added_to_the_patch_tokens():
    model = _identity_blocks_random_head()
    x, t, y = jit_batch()
    zeros = torch.zeros_like(x)  # patch embedding of 0 is 0 at init (proj1 has no bias, proj2's is zero)
    c = model.t_embedder(timestep_embedding(t)) + model.y_embedder(y)
    expected = model.unpatchify(model.final_layer(model.pos_embed.expand(4, -1, -1), c))
    torch.testing.assert_close(model(zeros, t, y), expected)
    assert not torch.allclose(expected[..., :4, :4], expected[..., 4:8, :4])  # patches differ by position only


def test_output_patch_comes_from_its_own_image_token():
    """With identity blocks, changing input patch (r, c) changes exactly output patch (r, c)."""
    model = _identity_blocks_random_head(patch_size=8)
    x, t, y = jit_batch()
    x2 = x.clone()
    x2[..., 8:16, 16:24] += 1.0  # patch (1, 2)
    changed = (model(x2, t, y) - model(x, t, y)).abs().amax(dim=(0, 1)).reshape(4, 8, 4, 8).amax(dim=(1, 3))
    assert torch.nonzero(changed > 0).tolist() == [[1, 2]]


def test_in_context_tokens_are_label_embedding_plus_position_from_their_start_block():
    model = randomize_zero_inits(tiny_jit())
    start, n_ctx = model.in_context_start, model.in_context_len
    inputs = {}
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda mod, args, i=i: inputs.__setitem__(i, args[0].detach()))
    x, t, y = jit_batch()
    model(x, t, y)
    assert [inputs[i].shape[1] for i in range(len(model.blocks))] == \
        [model.num_tokens] * start + [model.num_tokens + n_ctx] * (len(model.blocks) - start)
    expected = model.y_embedder(y)[:, None] + model.in_context_pos
    torch.testing.assert_close(inputs[start][:, :n_ctx], expected.detach(), rtol=0, atol=0)


def test_zero_init_output_then_nonzero_after_one_step():
    model = tiny_jit()
    x, t, y = jit_batch()
    assert torch.equal(model(x, t, y), torch.zeros_like(x))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    torch.nn.functional.mse_loss(model(x, t, y), x).backward()
    opt.step()
    out = model(x, t, y)
    assert out.abs().max() > 0
    x2, _, _ = jit_batch(seed=1)
    assert not torch.allclose(model(x2, t, y), out)  # depends on the input


def test_first_step_gradient_reaches_only_the_final_linear():
    """adaLN-zero + zero final layer: at init every other gradient is exactly zero (expected, not dead)."""
    model = tiny_jit(patch_size=8)  # 16 tokens keep it cheap; the structure is the same
    x, t, y = jit_batch(8)
    torch.nn.functional.mse_loss(model(x, t, y), x).backward()
    live = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert live == {"final_layer.linear.weight", "final_layer.linear.bias"}


def test_gradient_reaches_every_parameter_after_two_steps():
    model = tiny_jit(patch_size=8)
    x, t, y = jit_batch(NUM_CLASSES + 1)  # every label, null class included
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
    model = randomize_zero_inits(tiny_jit(spectral=hook))
    assert model.spectral is hook and any(m is hook for m in model.modules())
    x, t, y = jit_batch()
    out = model(x, t, y)
    torch.testing.assert_close(hook.seen[0][0], x, rtol=0, atol=0)
    torch.testing.assert_close(hook.seen[0][1], t, rtol=0, atol=0)
    x2, _, _ = jit_batch(seed=5)
    torch.testing.assert_close(model(x2, t, y), out, rtol=0, atol=0)  # x never reached the embedder

    plain = tiny_jit()
    assert plain.spectral is None
    plain.load_state_dict(model.state_dict())
    assert not torch.allclose(plain(x2, t, y), plain(x, t, y))  # control: without the hook, x matters


def test_spectral_forcing_module_composes_with_the_model():
    spectral = pytest.importorskip("trainers.model.spectral_forcing")
    sf = spectral.SpectralForcing(32)
    model = randomize_zero_inits(tiny_jit(spectral=sf))
    plain = tiny_jit()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("spectral.")})
    x, t, y = jit_batch()
    torch.testing.assert_close(model(x, t, y), plain(sf(x, t), t, y))


@pytest.mark.parametrize("in_context_len", [4, 0])  # 0: the label reaches the output only through adaLN's c
def test_cfg_null_class_is_a_valid_label(in_context_len):
    model = randomize_zero_inits(tiny_jit(in_context_len=in_context_len))
    assert model.y_embedder.num_embeddings == NUM_CLASSES + 1
    x, t, _ = jit_batch()
    uncond = model(x, t, torch.full((4,), NUM_CLASSES))
    cond = model(x, t, torch.full((4,), 2))
    assert torch.isfinite(uncond).all() and not torch.allclose(uncond, cond)


def test_in_context_tokens_take_part_in_attention():
    model = randomize_zero_inits(tiny_jit())
    x, t, y = jit_batch()
    before = model(x, t, y)
    with torch.no_grad():
        model.in_context_pos.add_(1.0)
    assert not torch.allclose(model(x, t, y), before)


def test_samples_do_not_interact():
    model = randomize_zero_inits(tiny_jit())
    x, t, y = jit_batch(6)
    together = model(x, t, y)
    alone = torch.cat([model(x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


def test_scalar_t_is_broadcast_to_the_batch():
    model = randomize_zero_inits(tiny_jit())
    x, _, y = jit_batch()
    torch.testing.assert_close(model(x, torch.tensor(0.4), y), model(x, torch.full((4,), 0.4), y))


def test_bf16_autocast_forward_and_backward():
    model = randomize_zero_inits(tiny_jit())
    x, t, y = jit_batch()
    ref = model(x, t, y).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, t, y)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = randomize_zero_inits(tiny_jit())
    x, t, y = jit_batch()
    ref = model(x, t, y)
    out = model.cuda()(x.cuda(), t.cuda(), y.cuda()).cpu()
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-4)
