"""unet-tiny: a small ADM-style U-Net written against the denoiser contract as a user would write their own model.

It knows nothing of specforce beyond the contract (trainers/model/contract.py): the builder takes image_size,
channels and num_classes (plus its own options), and the module is called as `model(x_t, t, cond)` and returns a
tensor of x_t's shape. It has no patch bottleneck: every pixel reaches the first convolution, which separates SF's
effect from JiT's patch compression (sweeps/configs/unet_vs_jit.yaml runs both).

Architecture (ADM, Dhariwal & Nichol 2021, shrunk): sinusoidal time features of 1000*t -> MLP; a learned class
embedding with one extra row for the null (dropped) class, added to the time embedding (or, with the option
`cond_dim`, a linear projection of a conditioning vector per image, the zero vector being the null condition);
a 3x3 input conv; per resolution `num_res_blocks` ResBlocks (GroupNorm, SiLU, 3x3 conv, scale-shift from the embedding, zero-initialised
last conv) then a strided-conv downsample; a middle pair of ResBlocks; the mirrored decoder with skip concatenation
and nearest-neighbour upsampling; GroupNorm, SiLU and a zero-initialised 3x3 output conv (it starts predicting 0).

    model: {target: "trainers.model.unet:build_unet", options: {base_channels: 32}, predicts: x}

CPU check:
    .venv/bin/python -c "import torch; from trainers.model.unet import build_unet; \\
m = build_unet(image_size=16, channels=1, num_classes=10); print(m.describe(), \\
m(torch.randn(2, 1, 16, 16), torch.rand(2), torch.tensor([3, 10])).shape)"
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

TIME_FEATURES = 128  # sinusoidal features of the time; their frequencies span 1 .. 1/10000 of 1000*t


def _time_features(t: Tensor, dim: int = TIME_FEATURES) -> Tensor:
    # ADM embeds integer steps 0..999; scaling t in [0, 1] by 1000 keeps the same frequency range
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, ch), ch)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, scale-shift by the embedding, GroupNorm-SiLU-conv (zero-init), plus a skip."""

    def __init__(self, c_in: int, c_out: int, emb: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * c_out)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(e))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class UNet(nn.Module):
    """See the module docstring. Two resolutions by default (image_size and image_size / 2)."""

    def __init__(self, *, image_size: int, channels: int, num_classes: int, base_channels: int = 32,
                 channel_mult: tuple[int, ...] = (1, 2), num_res_blocks: int = 1, cond_dim: int = 0) -> None:
        super().__init__()
        levels = len(channel_mult)
        if image_size % 2 ** (levels - 1):
            raise ValueError(f"image_size: {image_size} is not divisible by 2^{levels - 1} "
                             f"({levels} resolutions)")
        if cond_dim < 0:
            raise ValueError(f"cond_dim: must be >= 0 (0 = integer class labels), got {cond_dim}")
        if base_channels < 1 or num_res_blocks < 1 or not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"base_channels, num_res_blocks and channel_mult must be positive, got "
                             f"{base_channels}, {num_res_blocks}, {channel_mult}")
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.base_channels, self.channel_mult, self.num_res_blocks = base_channels, tuple(channel_mult), num_res_blocks
        emb = 4 * base_channels
        self.time_mlp = nn.Sequential(nn.Linear(TIME_FEATURES, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.cond_dim = cond_dim
        if cond_dim:  # a vector per image (e.g. a text embedding): projected; the zero vector (null) maps to the bias
            self.cond_proj = nn.Linear(cond_dim, emb)
        else:
            self.class_emb = nn.Embedding(num_classes + 1, emb)  # last row: the null class (dropped label)
        self.conv_in = nn.Conv2d(channels, base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips, ch = [base_channels], base_channels
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, base_channels * mult, emb))
                ch = base_channels * mult
                skips.append(ch)
            if level < levels - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb), ResBlock(ch, ch, emb)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for _ in range(num_res_blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), base_channels * mult, emb))
                ch = base_channels * mult
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
        self.norm_out, self.conv_out = _norm(ch), nn.Conv2d(ch, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def describe(self) -> dict[str, object]:
        """What the contract logs as model.reported.*: the architecture as built."""
        return {"arch": "unet", "base_channels": self.base_channels, "resolutions": len(self.channel_mult),
                "channel_mult": "x".join(map(str, self.channel_mult)), "num_res_blocks": self.num_res_blocks,
                **({"cond_dim": self.cond_dim} if self.cond_dim else {})}

    def _cond_embedding(self, cond: Tensor) -> Tensor:
        vector = torch.is_floating_point(cond)
        if vector != bool(self.cond_dim) or (vector and (cond.ndim != 2 or cond.shape[1] != self.cond_dim)):
            want = f"float vectors [B, {self.cond_dim}]" if self.cond_dim else "integer labels [B] (or set cond_dim)"
            raise ValueError(f"cond: this unet takes {want}, got dtype {cond.dtype} shape {tuple(cond.shape)}")
        return self.cond_proj(cond) if vector else self.class_emb(cond)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        e = self.time_mlp(_time_features(t)) + self._cond_embedding(cond)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, e) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for block in self.mid:
            h = block(h, e)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], dim=1), e) if isinstance(layer, ResBlock) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def build_unet(*, image_size: int, channels: int, num_classes: int, base_channels: int = 32,
               channel_mult: tuple[int, ...] | list[int] = (1, 2), num_res_blocks: int = 1, cond_dim: int = 0) -> UNet:
    """The contract's builder (model.target "trainers.model.unet:build_unet"); defaults are unet-tiny (~0.5M params).
    cond_dim > 0: cond is a float vector [B, cond_dim] (data.options.cond.dim) instead of a label."""
    return UNet(image_size=image_size, channels=channels, num_classes=num_classes, base_channels=base_channels,
                channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks, cond_dim=cond_dim)
