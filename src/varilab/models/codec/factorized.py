"""The factorized-prior baseline (Balle et al., 2017, simplified): a convolutional encoder, scalar quantisation of
each latent to an integer (additive uniform noise in training, rounding at coding time) and a learned density per
channel, the same for every position.

Each channel's density is a mixture of M logistics with CDF c(v) = sum_m pi_m sigmoid((v - mu_m) / s_m); a
quantised value k has probability P(k) = c(k + 1/2) - c(k - 1/2), and in training the noisy latent y~ costs
-log2 (c(y~ + 1/2) - c(y~ - 1/2)) bits, which is differentiable in y. Codes are clamped to [-L, L]; the tables give
the two ends their tails' mass, so every clamped code has its probability.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...codec.tables import quantise
from .vq_codec import LN2, VQCodecConfig, _decoder, _encoder


@dataclass
class FactorizedConfig:
    channels: int = 1
    latent: int = 8  # latent channels
    hidden: int = 64
    downsample: int = 1
    support: int = 15  # L: codes in [-L, L]
    mixtures: int = 3  # logistics per channel density


class Factorized(nn.Module):
    def __init__(self, config: FactorizedConfig):
        super().__init__()
        c = self.config = config
        if c.support < 1 or c.mixtures < 1:
            raise ValueError(f"need support L >= 1 and at least one mixture component, got {c.support}, {c.mixtures}")
        shape = VQCodecConfig(channels=c.channels, latent=c.latent, hidden=c.hidden, downsample=c.downsample, groups=1)
        self.encoder, self.decoder = _encoder(shape), _decoder(shape)
        self.mix_logits = nn.Parameter(torch.zeros(c.latent, c.mixtures))
        self.means = nn.Parameter(torch.linspace(-2, 2, c.mixtures).repeat(c.latent, 1))
        self.log_scales = nn.Parameter(torch.zeros(c.latent, c.mixtures))
        self.register_buffer("tables", torch.ones(c.latent, 2 * c.support + 1, dtype=torch.int64))

    def cdf(self, v: torch.Tensor) -> torch.Tensor:
        """c(v) per channel for v [..., C] (channels last)."""
        z = (v[..., None] - self.means) / self.log_scales.exp()
        return (torch.softmax(self.mix_logits, -1) * torch.sigmoid(z)).sum(-1)

    def bits(self, v: torch.Tensor) -> torch.Tensor:
        """-log2 P(v) = -log2 (c(v + 1/2) - c(v - 1/2)) elementwise, v [..., C]."""
        p = self.cdf(v + 0.5) - self.cdf(v - 0.5)
        return -torch.log(p.clamp_min(1e-9)) / LN2

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's latents, channels last [B, h, w, C]."""
        return self.encoder(x).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor, tau: float | None = None):
        """(reconstruction, rate in bits per pixel [B]); with tau (training) the latents get uniform noise, else
        they are rounded and clamped to the support."""
        y = self.latents(x)
        yq = y + torch.rand_like(y) - 0.5 if tau is not None else self.codes(y).to(y.dtype)
        rate = self.bits(yq).sum((1, 2, 3))
        return self.decoder(yq.permute(0, 3, 1, 2)), rate / (x.shape[-1] * x.shape[-2])

    def codes(self, y: torch.Tensor) -> torch.Tensor:
        return torch.round(y).clamp(-self.config.support, self.config.support).long()

    @torch.no_grad()
    def freeze_tables(self) -> None:
        """Integer tables of P(k), k in [-L, L] per channel, the tails folded into the two ends (float64)."""
        L = self.config.support
        k = torch.arange(-L, L + 1, dtype=torch.float64, device=self.means.device)
        edges = torch.cat([k - 0.5, k[-1:] + 0.5])
        mix = torch.softmax(self.mix_logits.double(), -1)
        c = (mix * torch.sigmoid((edges[:, None, None] - self.means.double()) / self.log_scales.double().exp())).sum(-1)
        p = (c[1:] - c[:-1]).T.clone()  # [C, 2L + 1]
        p[:, 0] += c[0]
        p[:, -1] += 1 - c[-1]
        self.tables.copy_(torch.as_tensor(quantise(p.clamp_min(0).cpu().numpy()), device=self.tables.device))

    # the codec family's interface: symbol rows, their tables, and images back from them
    @torch.no_grad()
    def symbols(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int], float]:
        """(rows [C, N h w] of codes + L, the latent grid [N, h, w], the model's estimate of the bits)."""
        k = self.codes(self.latents(x))
        return (k + self.config.support).permute(3, 0, 1, 2).reshape(self.config.latent, -1), list(k.shape[:3]), \
            float(self.bits(k.to(x.dtype)).sum())

    def table_rows(self) -> torch.Tensor:
        return self.tables

    @torch.no_grad()
    def from_symbols(self, rows: torch.Tensor, grid: list[int]) -> torch.Tensor:
        k = (rows - self.config.support).reshape(self.config.latent, *grid).permute(1, 0, 2, 3)
        return self.decoder(k.to(self.means.dtype))
