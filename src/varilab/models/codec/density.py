"""A learned density per channel for integer codes (Balle et al., 2017, simplified): a mixture of M logistics with
CDF c(v) = sum_m pi_m sigmoid((v - mu_m) / s_m); a code k has probability P(k) = c(k + 1/2) - c(k - 1/2), and in
training a noisy latent y~ = y + u, u ~ U(-1/2, 1/2), costs -log2 (c(y~ + 1/2) - c(y~ - 1/2)) bits, differentiable in
y. Codes are clamped to [-L, L]; the integer tables give the two ends their tails' mass."""
from __future__ import annotations

import torch
from torch import nn

from ...codec.tables import quantise

LN2 = 0.6931471805599453


class ChannelDensity(nn.Module):
    def __init__(self, channels: int, mixtures: int, support: int):
        super().__init__()
        if support < 1 or mixtures < 1:
            raise ValueError(f"need support L >= 1 and at least one mixture component, got {support}, {mixtures}")
        self.support = support
        self.mix_logits = nn.Parameter(torch.zeros(channels, mixtures))
        self.means = nn.Parameter(torch.linspace(-2, 2, mixtures).repeat(channels, 1))
        self.log_scales = nn.Parameter(torch.zeros(channels, mixtures))
        self.register_buffer("tables", torch.ones(channels, 2 * support + 1, dtype=torch.int64))

    def cdf(self, v: torch.Tensor) -> torch.Tensor:
        """c(v) per channel for v [..., C] (channels last)."""
        z = (v[..., None] - self.means) / self.log_scales.exp()
        return (torch.softmax(self.mix_logits, -1) * torch.sigmoid(z)).sum(-1)

    def bits(self, v: torch.Tensor) -> torch.Tensor:
        """-log2 P(v) = -log2 (c(v + 1/2) - c(v - 1/2)) elementwise, v [..., C]."""
        p = self.cdf(v + 0.5) - self.cdf(v - 0.5)
        return -torch.log(p.clamp_min(1e-9)) / LN2

    def codes(self, y: torch.Tensor) -> torch.Tensor:
        return torch.round(y).clamp(-self.support, self.support).long()

    @torch.no_grad()
    def freeze_tables(self) -> None:
        """Integer tables of P(k), k in [-L, L] per channel, the tails folded into the two ends (float64)."""
        L = self.support
        k = torch.arange(-L, L + 1, dtype=torch.float64, device=self.means.device)
        edges = torch.cat([k - 0.5, k[-1:] + 0.5])
        mix = torch.softmax(self.mix_logits.double(), -1)
        c = (mix * torch.sigmoid((edges[:, None, None] - self.means.double()) / self.log_scales.double().exp())).sum(-1)
        p = (c[1:] - c[:-1]).T.clone()  # [C, 2L + 1]
        p[:, 0] += c[0]
        p[:, -1] += 1 - c[-1]
        self.tables.copy_(torch.as_tensor(quantise(p.clamp_min(0).cpu().numpy()), device=self.tables.device))
