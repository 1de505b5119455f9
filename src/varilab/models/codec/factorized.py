"""The factorized-prior baseline (Balle et al., 2017, simplified): a convolutional encoder, scalar quantisation of
each latent to an integer (additive uniform noise in training, rounding at coding time) and a learned density per
channel, the same for every position (`density.ChannelDensity`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .density import ChannelDensity
from .transforms import transforms


@dataclass
class FactorizedConfig:
    channels: int = 1
    latent: int = 8  # latent channels
    hidden: int = 64
    downsample: int = 1
    support: int = 15  # L: codes in [-L, L]
    mixtures: int = 3  # logistics per channel density
    transform: str = "relu"  # "relu": the vq-codec's convolutions; "gdn": four of kernel 5 per side with GDN between


class Factorized(ChannelDensity):
    def __init__(self, config: FactorizedConfig):
        c = config
        super().__init__(c.latent, c.mixtures, c.support)
        self.config = c
        self.encoder, self.decoder = transforms(c)

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
