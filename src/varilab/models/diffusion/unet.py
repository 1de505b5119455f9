"""A small U-Net for image diffusion, net(x_t, t, cond=None) -> a prediction of x_t's shape.

The layout is DDPM's (Ho et al., 2020), without attention: a 3x3 input convolution; per resolution
level `blocks` residual blocks, each adding a projection of the time embedding, then a stride-2
convolution down; two residual blocks in the middle; on the way up `blocks + 1` residual blocks per level,
each taking the matching skip connection, then nearest-neighbour upsampling and a convolution; GroupNorm,
SiLU and a zero-initialised 3x3 output convolution. With the same widths this is the network of diffusers'
`UNet2DModel` with `DownBlock2D`/`UpBlock2D` blocks and no mid-block attention.

Inputs may be rows [B, C*H*W] (as varilab's data sets hold images) or images [B, C, H, W]; the output
has the input's layout. `cond` [B, C_cond*H*W] or [B, C_cond, H, W] is concatenated to x_t as extra input
channels (DiffuseVAE's first form). Sides that are not multiples of 2^(levels - 1) are padded and cropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from .diffusion import timestep_embedding


@dataclass
class UNetConfig:
    image_shape: tuple[int, int]  # H, W
    in_channels: int = 1
    cond_channels: int = 0  # extra input channels (a conditioning image)
    channels: int = 32  # width of the first level
    mults: tuple[int, ...] = field(default_factory=lambda: (1, 2, 2))  # width multiplier per level
    blocks: int = 1  # residual blocks per level on the way down
    groups: int = 8  # GroupNorm groups

    def __post_init__(self):
        self.image_shape, self.mults = tuple(self.image_shape), tuple(self.mults)
        widths = [self.channels * m for m in self.mults]
        if len(self.image_shape) != 2 or min(self.image_shape) < 1 or self.in_channels < 1 or self.cond_channels < 0:
            raise ValueError(f"need image_shape (H, W), in_channels >= 1 and cond_channels >= 0, got {self}")
        if not self.mults or self.blocks < 1 or any(w % self.groups for w in widths):
            raise ValueError(f"every level width channels * mult ({widths}) must be a multiple of groups={self.groups}, "
                             f"with at least one level and one block")


class ResBlock(nn.Module):
    """h + conv(silu(norm(conv(silu(norm(h))) + W emb))), with a 1x1 convolution on the skip when widths differ."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(groups, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        a = self.conv1(F.silu(self.norm1(h))) + self.emb(emb)[:, :, None, None]
        return self.skip(h) + self.conv2(F.silu(self.norm2(a)))


class UNet(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = c = config
        widths = [c.channels * m for m in c.mults]
        emb_dim = 4 * c.channels
        self.time = nn.Sequential(nn.Linear(c.channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(c.in_channels + c.cond_channels, widths[0], 3, padding=1)
        self.down, skips, ch = nn.ModuleList(), [widths[0]], widths[0]
        for i, w in enumerate(widths):
            for _ in range(c.blocks):
                self.down.append(ResBlock(ch, w, emb_dim, c.groups))
                ch = w
                skips.append(ch)
            if i < len(widths) - 1:
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, c.groups), ResBlock(ch, ch, emb_dim, c.groups)])
        self.up = nn.ModuleList()
        for i, w in reversed(list(enumerate(widths))):
            for _ in range(c.blocks + 1):
                self.up.append(ResBlock(ch + skips.pop(), w, emb_dim, c.groups))
                ch = w
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch, ch, 3, padding=1)))
        self.norm_out, self.conv_out = nn.GroupNorm(c.groups, ch), nn.Conv2d(ch, c.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _image(self, x: torch.Tensor, channels: int, what: str) -> torch.Tensor:
        h, w = self.config.image_shape
        if x.dim() == 2 and x.shape[1] == channels * h * w:
            return x.reshape(-1, channels, h, w)
        if x.dim() == 4 and tuple(x.shape[1:]) == (channels, h, w):
            return x
        raise ValueError(f"{what} must be [B, {channels * h * w}] rows or [B, {channels}, {h}, {w}] images, "
                         f"got {tuple(x.shape)}")

    def forward(self, x_t: torch.Tensor, t, cond: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        x = self._image(x_t, c.in_channels, "x_t")
        if c.cond_channels:
            if cond is None:
                raise ValueError("this U-Net is conditional: pass cond, the conditioning image")
            x = torch.cat([x, self._image(cond, c.cond_channels, "cond").to(x.dtype)], 1)
        elif cond is not None:
            raise ValueError("this U-Net takes no condition (cond_channels = 0)")
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
        emb = self.time(timestep_embedding(t, c.channels).to(self.conv_in.weight.dtype))
        m = 2 ** (len(c.mults) - 1)
        H, W = x.shape[-2:]
        pad_h, pad_w = -H % m, -W % m
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, hs.pop()], 1), emb) if isinstance(layer, ResBlock) else layer(h)
        out = self.conv_out(F.silu(self.norm_out(h)))[..., :H, :W]
        return out.reshape(x_t.shape) if x_t.dim() == 2 else out
