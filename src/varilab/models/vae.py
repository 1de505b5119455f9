"""The MLP variational autoencoder (Kingma & Welling, 2014).

q(z|x) = N(mu(x), diag sigma^2(x)),  p(z) = N(0, I),  p(x|z) Bernoulli or Gaussian (sigma^2 fixed or learned).
The objective lives in `varilab.core`; the model only says what the distributions are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Independent, Normal

from . import likelihoods


@dataclass
class VAEConfig:
    x_dim: int
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512,)
    likelihood: str = "bernoulli"  # or "gaussian"
    obs_var: float | str = 1.0  # Gaussian only: a fixed variance or "learned"


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


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        if config.likelihood not in likelihoods.LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(likelihoods.LIKELIHOODS)}, "
                             f"got {config.likelihood!r}")
        self.config = config
        h = list(config.hidden)
        self.encoder = mlp([config.x_dim, *h, 2 * config.latent_dim])
        self.decoder = mlp([config.latent_dim, *reversed(h), config.x_dim])
        if config.likelihood == "gaussian":
            likelihoods.register_obs_log_var(self, config.obs_var)
        self.register_buffer("prior_loc", torch.zeros(config.latent_dim))
        self.register_buffer("prior_scale", torch.ones(config.latent_dim))

    def encode(self, x: torch.Tensor) -> Independent:
        mu, log_var = self.encoder(x).chunk(2, dim=-1)
        return Independent(Normal(mu, (0.5 * log_var).exp(), validate_args=False), 1)

    def decode(self, z: torch.Tensor) -> Independent:
        out = self.decoder(z)
        if self.config.likelihood == "bernoulli":
            return likelihoods.bernoulli(out)
        return likelihoods.gaussian(out, self.obs_log_var)

    def prior(self) -> Independent:
        return Independent(Normal(self.prior_loc, self.prior_scale, validate_args=False), 1)
