"""Latent diffusion (Rombach et al., 2022): an autoencoder with a Gaussian posterior and a small KL penalty,
then a DDPM on its latents, scaled to unit spread.

Stage 1, `KLAutoencoder`: diffusers' `AutoencoderKL`, the architecture of Stable Diffusion's VAE (DownEncoderBlock2D
and UpDecoderBlock2D blocks, GroupNorm, SiLU, one attention block in the middle), sized by `AutoencoderConfig`.
q(z|x) = N(mu(x), diag sigma^2(x)) over a [C, H/f, W/f] latent (f = 2^(levels - 1)); the decoder is deterministic.
Its loss per image is a reconstruction error plus a small KL weight, as Stable Diffusion's first stage:
    L(x) = ||D(z) - x||^2 + w KL(q(z|x) || N(0, I)),  z ~ q(z|x),  on the [-1, 1] scale
(Stable Diffusion adds a perceptual term and a patch discriminator, left out here).

Stage 2, `LatentDiffusion`: after stage 1 the latents are multiplied by a scaling factor c = 1 / std(z) over z ~ q(z|x)
on the training images (Stable Diffusion's 0.18215 came the same way), and a DDPM (`Denoiser`, varilab's U-Net) learns
c z. Sampling draws c z by any sampler and decodes z. `edit` is SDEdit (Meng et al., 2022) with DDIM: the latent mean
of x, noised to time t = strength with a given draw, denoised back to 0 deterministically and decoded.

Rows in and out: images are rows [B, C*H*W] in [0, 1] as varilab's data sets hold them (modelled on [-1, 1]);
latents are rows [B, C_z*h*w]. Sides that are not multiples of f are padded with black and cropped after decoding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributions import Independent, Normal
from torch.nn import functional as F

from . import samplers
from .denoiser import Denoiser
from .diffusion import add_noise


@dataclass
class AutoencoderConfig:
    image_shape: tuple[int, int]  # H, W
    channels: int = 1  # image channels
    widths: tuple[int, ...] = field(default_factory=lambda: (32, 64, 64))  # AutoencoderKL's block_out_channels
    latent_channels: int = 4
    layers_per_block: int = 1
    groups: int = 16  # GroupNorm groups (AutoencoderKL's norm_num_groups): must divide every width
    kl_weight: float = 1e-6

    def __post_init__(self):
        self.image_shape, self.widths = tuple(self.image_shape), tuple(self.widths)
        if len(self.image_shape) != 2 or min(self.image_shape) < 1 or self.channels < 1 or self.latent_channels < 1:
            raise ValueError(f"need image_shape (H, W), channels >= 1 and latent_channels >= 1, got {self}")
        if not self.widths or self.layers_per_block < 1 or any(w % self.groups for w in self.widths):
            raise ValueError(f"every width {list(self.widths)} must be a multiple of groups={self.groups}, with at "
                             "least one level and one layer per block")
        if not 0 <= self.kl_weight < math.inf:
            raise ValueError(f"kl_weight must be a finite non-negative number, got {self.kl_weight}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.widths) - 1)  # each level but the last halves the sides

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        h, w = (-(-s // self.factor) for s in self.image_shape)
        return self.latent_channels, h, w

    @property
    def latent_dim(self) -> int:
        c, h, w = self.latent_shape
        return c * h * w


def autoencoder_kl(config: AutoencoderConfig):
    """diffusers' AutoencoderKL of these sizes (imported here: diffusers is the `ldm` extra)."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise ImportError("the ldm model's autoencoder is diffusers' AutoencoderKL: pip install 'varilab[ldm]' "
                          "(diffusers==0.42.1)") from None
    levels = len(config.widths)
    return AutoencoderKL(in_channels=config.channels, out_channels=config.channels,
                         down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                         block_out_channels=config.widths, layers_per_block=config.layers_per_block,
                         latent_channels=config.latent_channels, norm_num_groups=config.groups,
                         sample_size=max(config.image_shape))


class KLAutoencoder(nn.Module):
    """encode(x) -> q(z|x) over the flattened latent, decode(z) -> images in [0, 1], loss(x) (stage 1)."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.net = autoencoder_kl(config)

    def _images(self, x: torch.Tensor) -> torch.Tensor:
        """Rows [B, C*H*W] in [0, 1] -> images [B, C, H', W'] on [-1, 1], padded with black to multiples of f."""
        c, (h, w) = self.config.channels, self.config.image_shape
        if x.dim() != 2 or x.shape[1] != c * h * w:
            raise ValueError(f"images must be rows [B, {c * h * w}] ({c} x {h} x {w}), got {tuple(x.shape)}")
        f = self.config.factor
        return F.pad(2 * x.reshape(-1, c, h, w) - 1, (0, -w % f, 0, -h % f), value=-1.0)

    def posterior(self, x: torch.Tensor):
        """diffusers' DiagonalGaussianDistribution of q(z|x), [B, C_z, h, w]."""
        return self.net.encode(self._images(x)).latent_dist

    def encode(self, x: torch.Tensor) -> Independent:
        """q(z|x) = N(mu, diag sigma^2) over the flattened latent, batch [B], event [C_z*h*w]."""
        q = self.posterior(x)
        return Independent(Normal(q.mean.flatten(1), q.std.flatten(1), validate_args=False), 1)

    def _decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Latent rows [B, C_z*h*w] -> the decoder's output on [-1, 1] (unclipped), as rows [B, C*H*W]."""
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"latents must be rows [B, {self.config.latent_dim}] {list(self.config.latent_shape)}, "
                             f"got {tuple(z.shape)}")
        h, w = self.config.image_shape
        out = self.net.decode(z.reshape(-1, *self.config.latent_shape)).sample[..., :h, :w]
        return out.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images [B, C*H*W] in [0, 1] from latent rows."""
        return ((self._decode_raw(z) + 1) / 2).clamp(0, 1)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """D(E[z|x]) in [0, 1]."""
        return self.decode(self.encode(x).mean)

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 1: ||D(z) - x||^2 + w KL(q(z|x) || N(0, I)) per image on [-1, 1], z ~ q(z|x) reparameterised;
        batch means of the loss, the reconstruction term and the KL (nats)."""
        q = self.posterior(x)
        z = q.mean + q.std * torch.randn_like(q.mean)  # z = mu + sigma eps
        x_hat = self._decode_raw(z.flatten(1))
        rec = (x_hat - (2 * x - 1)).pow(2).sum(1)
        kl = 0.5 * (q.mean.pow(2) + q.var - 1 - q.logvar).flatten(1).sum(1)  # KL(N(mu, sigma^2) || N(0, 1)), summed
        return {"loss": (rec + self.config.kl_weight * kl).mean(), "reconstruction": rec.mean(), "kl": kl.mean()}


class LatentDiffusion(nn.Module):
    """A frozen `KLAutoencoder` and a DDPM on c z; c (`scale`) is a buffer, saved with the weights."""

    def __init__(self, autoencoder: KLAutoencoder, denoiser: Denoiser):
        super().__init__()
        if denoiser.config.x_dim != autoencoder.config.latent_dim or denoiser.config.unit_range:
            raise ValueError(f"the latent DDPM must model {autoencoder.config.latent_dim} unbounded values (the "
                             f"autoencoder's latent {list(autoencoder.config.latent_shape)}, unit_range=False), got "
                             f"x_dim={denoiser.config.x_dim}, unit_range={denoiser.config.unit_range}")
        self.autoencoder, self.denoiser = autoencoder, denoiser
        self.register_buffer("scale", torch.ones(()))

    def encode(self, x: torch.Tensor) -> Independent:
        """The autoencoder's q(z|x) (unscaled), the posterior an attack or a diagnosis reads."""
        return self.autoencoder.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.reconstruct(x)

    @torch.no_grad()
    def fit_scale(self, x: torch.Tensor, seed: int = 0, batch: int = 1000) -> float:
        """c = 1 / std(z) over every value of z ~ q(z|x) for the rows of x; kept as the buffer `scale`."""
        g = torch.Generator().manual_seed(seed)
        device = self.scale.device
        s1 = s2 = 0.0
        count = 0
        for xb in x.split(batch):
            q = self.autoencoder.encode(xb.to(device))
            z = q.mean + q.stddev * torch.randn(q.mean.shape, generator=g).to(device)
            z = z.double()
            s1, s2, count = s1 + float(z.sum()), s2 + float((z * z).sum()), count + z.numel()
        var = (s2 - s1 * s1 / count) / (count - 1)  # the unbiased variance of all values
        self.scale.fill_(1 / math.sqrt(var))
        return float(self.scale)

    def latents(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """c z for z ~ q(z|x) (the DDPM's training data), or c E[z|x] with sample=False; rows [B, C_z*h*w]."""
        with torch.no_grad():
            q = self.autoencoder.encode(x)
            z = q.sample() if sample else q.mean
        return self.scale * z

    def loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage 2: the DDPM's loss on c z, z ~ q(z|x) drawn afresh for every batch."""
        return self.denoiser.loss(self.latents(x))

    def after_optimizer_step(self) -> None:
        self.denoiser.after_optimizer_step()  # the denoiser's weight average, if it keeps one

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, sampler: str = "ddim", generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """n images [n, C*H*W] in [0, 1]: c z drawn by `sampler` from noise, then decoded from z."""
        z = self.denoiser.sample(n, steps=steps, sampler=sampler, generator=generator, noise=noise)
        return self.decode(z / self.scale)

    def _check_edit(self, strength: float, steps: int) -> None:
        if not 0 < strength <= 1:
            raise ValueError(f"the edit's strength is the time t in (0, 1] its latent is noised to, got {strength}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"the edit's DDIM steps must be a positive integer, got {steps!r}")
        if self.denoiser.config.process != "ddpm":
            raise ValueError("the edit noises the latent on the DDPM's schedule: the denoiser must be a ddpm")

    @torch.no_grad()
    def edit(self, x: torch.Tensor, noise: torch.Tensor, strength: float = 0.5, steps: int = 20) -> torch.Tensor:
        """SDEdit with DDIM: z_0 = c E[z|x], z_t = alpha_t z_0 + sigma_t noise at t = strength, DDIM from t down to 0
        in `steps` steps, decoded; images [B, C*H*W] in [0, 1]. `noise` [B, C_z*h*w] fixes the draw."""
        self._check_edit(strength, steps)
        z0 = self.latents(x, sample=False)
        if noise.shape != z0.shape:
            raise ValueError(f"noise must have the latents' shape {tuple(z0.shape)}, got {tuple(noise.shape)}")
        z_t, _ = add_noise(z0, strength, self.denoiser.schedule, eps=noise.to(z0))
        pred = lambda z, t: self.denoiser(z, t.to(z.dtype), ema=True)  # noqa: E731 (the averaged weights)
        z = samplers.ddim(pred, self.denoiser.schedule, z_t, steps=steps, kind=self.denoiser.kind, t_max=strength)
        return self.decode(z / self.scale)
