"""JiT ("Just image Transformers", Li & He 2025): a plain ViT on pixel patches that predicts the clean image.

The model is pure architecture (docs/design.md §2): it knows nothing of noise schedules or losses. `forward(x, t, y)`
takes the noisy image x [B, C, H, W], the time t [B] in [0, 1] (t=1 is data) and integer labels y [B]
(`num_classes` is the null class for classifier-free guidance) and returns the predicted clean image.

Architecture, following the paper's code family:
  bottleneck patch embedding (p*p*C -> bottleneck -> hidden) + fixed 2D sin-cos positional embedding;
  blocks with pre-norm RMSNorm, qk-normed attention with axial 2D RoPE, SwiGLU MLP, adaLN-zero modulation
  from c = t_emb + y_emb; from block `in_context_start` on, `in_context_len` class tokens (y_emb + a learned
  positional embedding) are prepended and dropped again before the zero-initialised final layer.
Spectral Forcing is a hook: `spectral(x, t)` filters the network input before the patch embedder (a forward
pre-hook of the denoiser contract, trainers/model/contract.py, the same one a user's model gets).

CPU usage:
    .venv/bin/python -c "import torch; from trainers.model.jit import build_jit; \
m = build_jit('jit-tiny', image_size=32, num_classes=10); \
print(m.num_tokens, m(torch.randn(2, 3, 32, 32), torch.rand(2), torch.tensor([3, 10])).shape)"
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.model.spectral_forcing import attach_spectral

__all__ = ["JiTPreset", "JIT_PRESETS", "JiT", "build_jit", "sincos_pos_embed_2d", "timestep_embedding",
           "rope_2d_tables", "apply_rope"]

TIME_FREQ_DIM = 256  # width of the sinusoidal time features fed to the time MLP (DiT/JiT value)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True)
class JiTPreset:
    """One architecture size. `in_context_start` is the block index where the class tokens are prepended."""

    depth: int
    hidden: int
    heads: int
    bottleneck: int
    patch_size: int
    in_context_len: int = 32
    in_context_start: int = 4
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        for name in ("depth", "hidden", "heads", "bottleneck", "patch_size"):
            _check_int(name, getattr(self, name), 1)
        _check_int("in_context_len", self.in_context_len, 0)
        _check_int("in_context_start", self.in_context_start, 0)
        if self.hidden % self.heads:
            raise ValueError(f"hidden: {self.hidden} is not divisible by heads={self.heads}")
        if self.head_dim % 4:
            # axial RoPE rotates pairs in each half of the head (rows, columns): needs head_dim % 4 == 0
            raise ValueError(f"hidden: head dim {self.head_dim} (= hidden {self.hidden} / heads {self.heads}) "
                             f"is not divisible by 4, which 2D RoPE needs")
        if self.in_context_len and self.in_context_start >= self.depth:
            raise ValueError(f"in_context_start: {self.in_context_start} must be < depth={self.depth} "
                             f"when in_context_len > 0 (the tokens would never be inserted)")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) \
                or not math.isfinite(self.mlp_ratio) or self.mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio: expected a positive finite number, got {self.mlp_ratio!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def mlp_hidden(self) -> int:
        # SwiGLU has three matrices instead of two: 2/3 of the plain MLP width keeps the parameter count
        return int(int(self.hidden * self.mlp_ratio) * 2 / 3)


def _family(depth: int, hidden: int, heads: int, bottleneck: int, start: int) -> dict[int, JiTPreset]:
    return {p: JiTPreset(depth, hidden, heads, bottleneck, p, 32, start) for p in (8, 16, 32)}


_B, _L, _H = _family(12, 768, 12, 128, 4), _family(24, 1024, 16, 128, 8), _family(32, 1280, 16, 256, 10)
JIT_PRESETS: dict[str, JiTPreset] = {
    "JiT-B/8": _B[8], "JiT-B/16": _B[16], "JiT-B/32": _B[32],
    "JiT-L/16": _L[16], "JiT-L/32": _L[32],
    "JiT-H/16": _H[16], "JiT-H/32": _H[32],
    "JiT-700M/32": JiTPreset(36, 1024, 16, 128, 32, 32, 12),
    # CPU presets for 32x32 images
    "jit-tiny": JiTPreset(depth=4, hidden=128, heads=4, bottleneck=32, patch_size=4, in_context_len=4,
                          in_context_start=1),
    "jit-small": JiTPreset(depth=6, hidden=256, heads=4, bottleneck=64, patch_size=4, in_context_len=8,
                           in_context_start=2),
}
_BY_LOWER = {name.lower(): name for name in JIT_PRESETS}


# -- fixed encodings --------------------------------------------------------------------------------------------

def _sincos_1d(dim: int, pos: Tensor) -> Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64, device=pos.device) / (dim / 2))
    angles = pos.reshape(-1, 1).to(torch.float64) * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> Tensor:
    """The MAE/DiT 2D sin-cos table [grid_size**2, dim] (float32), tokens in row-major order.

    The first half of the channels encodes the column index, the second half the row index (the MAE code's
    ordering: its meshgrid puts w first).
    """
    _check_int("grid_size", grid_size, 1)
    if _check_int("dim", dim, 4) % 4:
        raise ValueError(f"dim: must be divisible by 4 for a 2D sin-cos embedding, got {dim}")
    idx = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    return torch.cat([_sincos_1d(dim // 2, cols), _sincos_1d(dim // 2, rows)], dim=1).float()


def timestep_embedding(t: Tensor, dim: int = TIME_FREQ_DIM, max_period: float = 10000.0) -> Tensor:
    """[cos(t*f_i), sin(t*f_i)] with f_i = max_period^(-i/(dim/2)); t is used as given (JiT/SiT: t in [0, 1])."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


def rope_2d_tables(head_dim: int, grid_size: int, theta: float = 10000.0) -> tuple[Tensor, Tensor]:
    """cos and sin tables [grid_size**2, head_dim // 2], one angle per rotated channel pair.

    Axial 2D RoPE: the first head_dim/4 pairs rotate with the token's row index, the last head_dim/4 with its
    column index, each axis with the frequencies theta^(-2i/(head_dim/2)).
    """
    if _check_int("head_dim", head_dim, 4) % 4:
        raise ValueError(f"head_dim: must be divisible by 4 for 2D RoPE, got {head_dim}")
    _check_int("grid_size", grid_size, 1)
    quarter = head_dim // 4
    freqs = theta ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    idx = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")
    angles = torch.cat([rows.reshape(-1, 1) * freqs, cols.reshape(-1, 1) * freqs], dim=1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs (2i, 2i+1) of x [..., L, D] by the angles whose cos/sin are [L, D/2]."""
    pairs = x.unflatten(-1, (-1, 2))
    x1, x2 = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


# -- building blocks --------------------------------------------------------------------------------------------

class RMSNorm(nn.Module):
    """RMSNorm with a learned scale; statistics in fp32 so bf16 autocast does not lose the normalisation."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class BottleneckPatchEmbed(nn.Module):
    """p x p x C patches -> bottleneck (no bias) -> hidden: the low-rank first map is JiT's key to pixel tokens."""

    def __init__(self, patch_size: int, in_channels: int, bottleneck: int, hidden: int) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(in_channels, bottleneck, kernel_size=patch_size, stride=patch_size, bias=False)
        self.proj2 = nn.Conv2d(bottleneck, hidden, kernel_size=1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj2(self.proj1(x)).flatten(2).transpose(1, 2)  # [B, N, hidden], row-major tokens


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=True)
        self.q_norm = RMSNorm(hidden // heads)
        self.k_norm = RMSNorm(hidden // heads)
        self.proj = nn.Linear(hidden, hidden, bias=True)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        # q/k norm returns v's dtype, so SDPA sees one dtype under autocast too
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, mlp_hidden: int) -> None:
        super().__init__()
        self.w12 = nn.Linear(hidden, 2 * mlp_hidden, bias=True)
        self.w3 = nn.Linear(mlp_hidden, hidden, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        gate, value = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(gate) * value)


class JiTBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.norm1 = RMSNorm(hidden)
        self.attn = Attention(hidden, heads)
        self.norm2 = RMSNorm(hidden)
        self.mlp = SwiGLU(hidden, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 6 * hidden, bias=True))

    def forward(self, x: Tensor, c: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_a.unsqueeze(1) * self.attn(_modulate(self.norm1(x), shift_a, scale_a), cos, sin)
        return x + gate_m.unsqueeze(1) * self.mlp(_modulate(self.norm2(x), shift_m, scale_m))


class FinalLayer(nn.Module):
    def __init__(self, hidden: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm = RMSNorm(hidden)
        self.linear = nn.Linear(hidden, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=True))

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm(x), shift, scale))


# -- the model --------------------------------------------------------------------------------------------------

class JiT(nn.Module):
    """The JiT denoiser; build it with `build_jit`. See the module docstring for the forward contract.

    In-context class tokens get the identity rotation in RoPE (equivalently: RoPE is applied to image tokens
    only), as in the reference code, so their relation to image tokens is content-based, not positional.
    """

    def __init__(self, preset: JiTPreset, *, image_size: int, in_channels: int = 3, num_classes: int = 1000,
                 spectral: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(preset, JiTPreset):
            raise TypeError(f"preset: expected a JiTPreset, got {preset!r}")
        _check_int("image_size", image_size, 1)
        _check_int("in_channels", in_channels, 1)
        _check_int("num_classes", num_classes, 0)  # 0 = unconditional: only the null class
        if image_size % preset.patch_size:
            raise ValueError(f"patch_size: {preset.patch_size} does not divide image_size={image_size}")
        if spectral is not None and not isinstance(spectral, nn.Module):
            raise TypeError(f"spectral: expected an nn.Module with forward(z, t) or None, got {spectral!r}")
        self.preset = preset
        self.image_size = image_size
        self.patch_size = preset.patch_size
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.in_context_len = preset.in_context_len
        self.in_context_start = preset.in_context_start
        self.grid_size = image_size // preset.patch_size
        hidden = preset.hidden

        # SF filters x before the patch embedder through the denoiser contract's forward pre-hook, the path every
        # model takes (trainers/model/contract.py); `spectral` stays a submodule, so state_dict keys are unchanged
        self.spectral = spectral
        attach_spectral(self, spectral)
        self.t_embedder = nn.Sequential(nn.Linear(TIME_FREQ_DIM, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.y_embedder = nn.Embedding(num_classes + 1, hidden)  # last row = null class
        self.x_embedder = BottleneckPatchEmbed(preset.patch_size, in_channels, preset.bottleneck, hidden)
        # deterministic tables: non-persistent, so checkpoints stay valid and tiny, and they follow .to(device)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden, self.grid_size)[None], persistent=False)
        cos, sin = rope_2d_tables(preset.head_dim, self.grid_size)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.in_context_pos = (nn.Parameter(torch.zeros(1, preset.in_context_len, hidden))
                               if preset.in_context_len else None)
        self.blocks = nn.ModuleList(JiTBlock(hidden, preset.heads, preset.mlp_hidden) for _ in range(preset.depth))
        self.final_layer = FinalLayer(hidden, preset.patch_size, in_channels)
        self._init_weights()

    @property
    def num_tokens(self) -> int:
        """Image tokens per sample (in-context class tokens not counted)."""
        return self.grid_size * self.grid_size

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for conv in (self.x_embedder.proj1, self.x_embedder.proj2):
            # a conv over patches is a Linear on flattened patches: give it the same xavier scale
            nn.init.xavier_uniform_(conv.weight.view(conv.weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj2.bias)
        nn.init.normal_(self.y_embedder.weight, std=0.02)
        nn.init.normal_(self.t_embedder[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder[2].weight, std=0.02)
        if self.in_context_pos is not None:
            nn.init.normal_(self.in_context_pos, std=0.02)
        # adaLN-zero: every block starts as the identity and the output as exactly zero
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for p in (*self.final_layer.adaLN_modulation[-1].parameters(), *self.final_layer.linear.parameters()):
            nn.init.zeros_(p)

    def _check_inputs(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
            raise ValueError(f"x: expected a floating [B, C, H, W] tensor, got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else x!r}")
        expected = (self.in_channels, self.image_size, self.image_size)
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"x: shape {tuple(x.shape)} does not match [B, {expected[0]}, {expected[1]}, "
                             f"{expected[2]}] (in_channels={self.in_channels}, image_size={self.image_size})")
        b = x.shape[0]
        if not isinstance(t, Tensor) or not t.is_floating_point():
            raise ValueError(f"t: expected a floating tensor of shape [{b}] or a scalar, got {t!r}")
        if t.ndim == 0:
            t = t.expand(b)
        if tuple(t.shape) != (b,):
            raise ValueError(f"t: shape {tuple(t.shape)} does not match the batch [{b}]")
        if not isinstance(y, Tensor) or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TypeError(f"y: expected an integer label tensor, got {y!r}")
        if tuple(y.shape) != (b,):
            raise ValueError(f"y: shape {tuple(y.shape)} does not match the batch [{b}]")
        # nn.Embedding would fail with an opaque device assert on CUDA; one host sync buys a readable error
        if b and not torch.compiler.is_compiling():
            lo, hi = (int(v) for v in torch.aminmax(y))
            if lo < 0 or hi > self.num_classes:
                bad = lo if lo < 0 else hi
                raise ValueError(f"y: label {bad} outside [0, {self.num_classes}] "
                                 f"({self.num_classes} = null class)")
        return t

    def _rope(self, prefix: int) -> tuple[Tensor, Tensor]:
        if not prefix:
            return self.rope_cos, self.rope_sin
        cos = F.pad(self.rope_cos, (0, 0, prefix, 0), value=1.0)  # identity rotation for prefix tokens
        sin = F.pad(self.rope_sin, (0, 0, prefix, 0), value=0.0)
        return cos, sin

    def unpatchify(self, tokens: Tensor) -> Tensor:
        """[B, N, p*p*C] (channel-last within a patch) -> [B, C, H, W]."""
        b, g, p, ch = tokens.shape[0], self.grid_size, self.patch_size, self.in_channels
        x = tokens.reshape(b, g, g, p, p, ch)
        return torch.einsum("bhwpqc->bchpwq", x).reshape(b, ch, g * p, g * p)

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        t = self._check_inputs(x, t, y)  # x arrives SF-filtered by the `spectral` pre-hook (only the input is)
        y_emb = self.y_embedder(y)
        c = self.t_embedder(timestep_embedding(t)) + y_emb
        h = self.x_embedder(x) + self.pos_embed
        prefix = 0
        cos, sin = self._rope(prefix)
        for i, block in enumerate(self.blocks):
            if self.in_context_pos is not None and i == self.in_context_start:
                ctx = y_emb.unsqueeze(1) + self.in_context_pos
                h = torch.cat([ctx.to(h.dtype), h], dim=1)
                prefix = self.in_context_len
                cos, sin = self._rope(prefix)
            h = block(h, c, cos, sin)
        return self.unpatchify(self.final_layer(h[:, prefix:], c))


def build_jit(preset: str | JiTPreset, *, image_size: int, patch_size: int | None = None, in_channels: int = 3,
              num_classes: int = 1000, spectral: nn.Module | None = None, bottleneck: int | None = None,
              **overrides: object) -> JiT:
    """Build a JiT from a preset name (case-insensitive) or a JiTPreset.

    `patch_size=None` and `bottleneck=None` keep the preset's own; `overrides` replace other preset fields (e.g.
    depth=2). The bottleneck sets the patch compression ratio in_channels*p*p / bottleneck at a fixed token count.
    """
    if isinstance(preset, str):
        key = _BY_LOWER.get(preset.lower())
        if key is None:
            raise ValueError(f"preset: unknown name {preset!r}; known: {', '.join(JIT_PRESETS)}")
        arch = JIT_PRESETS[key]
    elif isinstance(preset, JiTPreset):
        arch = preset
    else:
        raise TypeError(f"preset: expected a preset name or a JiTPreset, got {preset!r}")
    fields = {f.name for f in dataclasses.fields(JiTPreset)} - {"patch_size", "bottleneck"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"overrides: unknown field(s) {unknown}; allowed: {sorted(fields)}")
    if patch_size is not None:
        overrides["patch_size"] = patch_size
    if bottleneck is not None:
        overrides["bottleneck"] = bottleneck
    arch = dataclasses.replace(arch, **overrides)  # re-runs the preset's validation
    return JiT(arch, image_size=image_size, in_channels=in_channels, num_classes=num_classes, spectral=spectral)
