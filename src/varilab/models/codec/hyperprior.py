"""The mean-scale hyperprior codec (Balle et al., 2018; Minnen et al., 2018): latents y = g_a(x) (`transforms`: ReLU
or GDN convolutions), a hyper latent z = h_a(y) coded under a learned density per channel, and each latent y_i coded under a Gaussian whose mean and
scale the decoder reads from the decoded z, (mu, sigma) = h_s(z^):

    y^ = round(y - mu) + mu,   P(k) = Phi((k + 1/2) / s) - Phi((k - 1/2) / s),   s the table scale at or above sigma.

In training the rate is that of noisy latents, y~ = y + u costing -log2 P(y~ - mu) under sigma itself (and z~ = z + u
under z's density), while the decoders see the rounded codes a file holds, their gradients passed straight through
(the mixed quantisation of Minnen & Singh, 2020): the reconstruction in training is the one a file decodes to. The rate of a
file is both parts: the side information z^ and the latents y^. Scales are read against a fixed table of log-spaced
scales, each with its integer probability table over codes in [-L, L] (the tails folded into the ends), computed in
float64 once; a latent is coded under the table its scale index picks (`varilab.codec.entropy.Writer.indexed`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ...codec.tables import quantise
from .density import LN2, ChannelDensity
from .transforms import transforms

SCALES = (0.11, 256.0, 64)  # the scale table: 64 scales log-spaced from 0.11 to 256


@dataclass
class HyperpriorConfig:
    channels: int = 1
    latent: int = 8  # M: channels of y
    hidden: int = 64  # N: channels of the transforms
    hyper: int = 8  # channels of z: few, so that small images do not pay for side information they cannot use
    downsample: int = 1  # stride-2 convolutions of g_a (z is one more stride 2 coarser)
    support: int = 63  # L: y's and z's codes lie in [-L, L]
    mixtures: int = 3  # logistics in each of z's channel densities
    transform: str = "relu"  # "relu": the vq-codec's convolutions; "gdn": four of kernel 5 per side with GDN between


def phi(x: torch.Tensor) -> torch.Tensor:
    """The standard normal CDF as erfc(-x / sqrt 2) / 2, accurate in the lower tail (where 1 - erf loses it)."""
    return 0.5 * torch.special.erfc(-x * 0.7071067811865476)


def gaussian_bits(v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """-log2 (Phi((1/2 - |v|) / sigma) - Phi((-1/2 - |v|) / sigma)): the bits of v (a code or a noisy latent minus its
    mean) under N(0, sigma^2) integrated over the unit bin around it (|v| keeps both CDFs in their accurate tail)."""
    a = v.abs()
    p = phi((0.5 - a) / sigma) - phi((-0.5 - a) / sigma)
    return -torch.log(p.clamp_min(1e-9)) / LN2


def scale_tables(support: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the table scales [T], integer tables [T, 2L + 1] of P(k) under N(0, s^2), tails folded into the ends)."""
    lo, hi, n = SCALES
    scales = torch.exp(torch.linspace(math.log(lo), math.log(hi), n, dtype=torch.float64, device="cpu"))
    k = torch.arange(-support, support + 1, dtype=torch.float64, device="cpu")
    upper = phi((k[None] + 0.5) / scales[:, None])
    lower = phi((k[None] - 0.5) / scales[:, None])
    p = upper - lower
    p[:, 0] += lower[:, 0]
    p[:, -1] += 1 - upper[:, -1]
    return scales, torch.as_tensor(quantise(p.clamp_min(0).numpy()))


class Hyperprior(nn.Module):
    def __init__(self, config: HyperpriorConfig):
        super().__init__()
        c = self.config = config
        self.encoder, self.decoder = transforms(c)
        self.hyper_encoder = nn.Sequential(  # h_a: y -> z, one stride 2
            nn.Conv2d(c.latent, c.hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(c.hidden, c.hidden, 5, 2, 2), nn.ReLU(),
            nn.Conv2d(c.hidden, c.hyper, 3, 1, 1))
        self.hyper_decoder = nn.Sequential(  # h_s: z^ -> (mu, log sigma), back to y's grid
            nn.ConvTranspose2d(c.hyper, c.hidden, 5, 2, 2, output_padding=1), nn.ReLU(),
            nn.Conv2d(c.hidden, c.hidden, 3, 1, 1), nn.ReLU(), nn.Conv2d(c.hidden, 2 * c.latent, 3, 1, 1))
        self.z_density = ChannelDensity(c.hyper, c.mixtures, c.support)
        scales, tables = scale_tables(c.support)
        self.register_buffer("scales", scales.float())
        self.register_buffer("scale_table", tables)

    def mean_scale(self, z: torch.Tensor, grid) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, sigma) [B, M, h, w] of y from z [B, C, h', w'], cropped to y's grid (h, w); sigma within the table."""
        out = self.hyper_decoder(z)[..., :grid[0], :grid[1]]
        mu, log_sigma = out.chunk(2, 1)
        return mu, log_sigma.exp().clamp(SCALES[0], SCALES[1])

    def forward(self, x: torch.Tensor, tau: float | None = None):
        """(reconstruction from the codes a file holds, rate in bits per pixel [B]); with tau (training) the rate is
        that of noisy latents, else of the codes; `parts` keeps the side information's and the latents' bpp."""
        y = self.encoder(x)
        z = self.hyper_encoder(y)
        z_hat = self.z_density.codes(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).to(y.dtype)
        z_hat = z + (z_hat - z).detach()  # the codes a file holds, gradient straight through
        mu, sigma = self.mean_scale(z_hat, y.shape[-2:])
        y_hat = self.y_codes(y, mu).to(y.dtype) + mu
        y_hat = y + (y_hat - y).detach()
        if tau is not None:  # the rates of noisy latents, y~ = y + u and z~ = z + u (the decoder sees the codes)
            z_rated, y_rated = z + torch.rand_like(z) - 0.5, y + torch.rand_like(y) - 0.5
        else:
            z_rated, y_rated = z_hat, y_hat
        z_bits = self.z_density.bits(z_rated.permute(0, 2, 3, 1)).sum((1, 2, 3))
        y_bits = gaussian_bits(y_rated - mu, sigma).sum((1, 2, 3))
        pixels = x.shape[-1] * x.shape[-2]
        self.parts = {"bpp_side": (z_bits / pixels).mean().detach(), "bpp_latent": (y_bits / pixels).mean().detach()}
        return self.decoder(y_hat), (z_bits + y_bits) / pixels

    def y_codes(self, y: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        return torch.round(y - mu).clamp(-self.config.support, self.config.support).long()

    def scale_index(self, sigma: torch.Tensor) -> torch.Tensor:
        """The first table scale at or above sigma: a code is never coded under a narrower Gaussian than its own."""
        return torch.searchsorted(self.scales, sigma.contiguous()).clamp_max(len(self.scales) - 1)

    def freeze_tables(self) -> None:
        self.z_density.freeze_tables()

    def table_rows(self) -> torch.Tensor:
        return self.scale_table

    # the codec family's interface for models whose tables depend on what was decoded before: write and read parts
    @torch.no_grad()
    def write(self, x: torch.Tensor, writer) -> tuple[torch.Tensor, list[int], float]:
        """Codes x into the writer (z^'s rows, then y's codes under the tables z^ picks); (y's symbol rows [M, N h w],
        y's grid [N, h, w], the model's estimate of the bits)."""
        L, y = self.config.support, self.encoder(x)
        z = self.z_density.codes(self.hyper_encoder(y).permute(0, 2, 3, 1))  # [N, h', w', C]
        writer.rows((z + L).permute(3, 0, 1, 2).reshape(z.shape[-1], -1).cpu().numpy(),
                    self.z_density.tables.cpu().numpy())
        mu, sigma = self.mean_scale(z.permute(0, 3, 1, 2).to(y.dtype), y.shape[-2:])
        k = self.y_codes(y, mu)
        rows = (k + L).permute(1, 0, 2, 3).reshape(k.shape[1], -1)
        writer.indexed(rows.cpu().numpy(), self.scale_index(sigma).permute(1, 0, 2, 3).cpu().numpy(),
                       self.scale_table.cpu().numpy())
        bits = self.z_density.bits(z.to(y.dtype)).sum() + gaussian_bits(k.to(y.dtype), sigma).sum()
        return rows, [k.shape[0], *k.shape[2:]], float(bits)

    @torch.no_grad()
    def read(self, reader, grid: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [N, C, H, W], y's symbol rows) from a reader positioned at `write`'s parts, y's grid [N, h, w]."""
        L, (n, h, w) = self.config.support, grid
        device = self.scales.device
        hz, wz = -(-h // 2), -(-w // 2)
        z = torch.as_tensor(reader.rows(self.z_density.tables.cpu().numpy(), n * hz * wz), device=device)
        z = (z.long() - L).reshape(-1, n, hz, wz).permute(1, 0, 2, 3).to(self.scales.dtype)
        mu, sigma = self.mean_scale(z, (h, w))
        index = self.scale_index(sigma).permute(1, 0, 2, 3)
        rows = torch.as_tensor(reader.indexed(index.cpu().numpy(), self.scale_table.cpu().numpy()),
                               device=device).long().reshape(self.config.latent, -1)
        k = (rows - L).reshape(self.config.latent, n, h, w).permute(1, 0, 2, 3)
        return self.decoder(k.to(mu.dtype) + mu).clamp(0, 1), rows
