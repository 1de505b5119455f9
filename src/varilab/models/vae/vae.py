"""The MLP variational autoencoder (Kingma & Welling, 2014).

q(z|x) = N(mu(x), diag sigma^2(x)),  p(z) = N(0, I),  p(x|z) Bernoulli or Gaussian (sigma^2 fixed or learned).
The objective lives in `varilab.core`; the model only says what the distributions are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Independent

from ...core.distributions import FixedPrior, diag_normal
from .. import likelihoods


@dataclass
class VAEConfig:
    x_dim: int
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512,)
    likelihood: str = "bernoulli"  # or "gaussian"
    obs_var: float | str = 1.0  # Gaussian only: a fixed variance or "learned"
    arch: str = "mlp"  # or "conv": two stride-2 convolutions each way (images with sides divisible by 4)
    image_shape: tuple[int, int] | None = None  # (H, W), needed by "conv"


class MLP(nn.ModuleList):
    """Linear layers with ReLU between them (a plain loop: fewer module calls than nn.Sequential)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self) - 1
        for i, layer in enumerate(self):
            x = layer(x)
            if i < last:
                x = torch.relu(x)
        return x


def mlp(sizes: list[int]) -> MLP:
    return MLP(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))


class _Images(nn.Module):
    """Rows [..., H*W] -> images [N, 1, H, W] through `net` -> rows [..., out] (leading dims kept)."""

    def __init__(self, net: nn.Module, shape: tuple[int, int], image_in: bool):
        super().__init__()
        self.net, self.shape, self.image_in = net, tuple(shape), image_in

    def forward(self, x):
        lead = x.shape[:-1]
        flat = x.reshape(-1, x.shape[-1])
        if self.image_in:
            flat = flat.reshape(-1, 1, *self.shape)
        return self.net(flat).reshape(*lead, -1)


def _check_conv(config) -> tuple[int, int]:
    if config.image_shape is None or len(config.image_shape) != 2:
        raise ValueError("arch 'conv' needs image data ([N, H, W]); this data has no image shape")
    h, w = config.image_shape
    if h % 4 or w % 4:
        raise ValueError(f"arch 'conv' needs image sides divisible by 4, got {h} x {w}")
    return h, w


def conv_encoder(config) -> nn.Module:
    h, w = _check_conv(config)
    net = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64 * (h // 4) * (w // 4), 2 * config.latent_dim))
    return _Images(net, (h, w), image_in=True)


def conv_decoder(config) -> nn.Module:
    h, w = _check_conv(config)
    net = nn.Sequential(nn.Linear(config.latent_dim, 64 * (h // 4) * (w // 4)), nn.ReLU(),
                        nn.Unflatten(1, (64, h // 4, w // 4)), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                        nn.ConvTranspose2d(32, 1, 4, 2, 1), nn.Flatten())
    return _Images(net, (h, w), image_in=False)


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        if config.likelihood not in likelihoods.LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(likelihoods.LIKELIHOODS)}, "
                             f"got {config.likelihood!r}")
        self.config = config
        h = list(config.hidden)
        if config.arch == "conv":
            self.encoder, self.decoder = conv_encoder(config), conv_decoder(config)
        elif config.arch == "mlp":
            self.encoder = mlp([config.x_dim, *h, 2 * config.latent_dim])
            self.decoder = mlp([config.latent_dim, *reversed(h), config.x_dim])
        else:
            raise ValueError(f"arch must be 'mlp' or 'conv', got {config.arch!r}")
        if config.likelihood == "gaussian":
            likelihoods.register_obs_log_var(self, config.obs_var)
        self.register_buffer("prior_loc", torch.zeros(config.latent_dim))
        self.register_buffer("prior_scale", torch.ones(config.latent_dim))
        self._prior = FixedPrior()  # one N(0, I) object while the buffers are unchanged

    def encode(self, x: torch.Tensor) -> Independent:
        mu, log_var = self.encoder(x).chunk(2, dim=-1)
        return diag_normal(mu, log_var)

    def decode(self, z: torch.Tensor) -> Independent:
        out = self.decoder(z)
        if self.config.likelihood == "bernoulli":
            return likelihoods.bernoulli(out)
        return likelihoods.gaussian(out, self.obs_log_var)

    def prior(self) -> Independent:
        return self._prior(self.prior_loc, self.prior_scale)
