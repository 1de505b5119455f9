"""A two-level hierarchical VAE, x <- z_1 <- z_2, with an MLP and a linear version.

q(z_1|x) = N(mu_1(x), s_1^2),  q(z_2|z_1) = N(mu_2(z_1), s_2^2),
p(z_2) = N(0, I),  p(z_1|z_2) = N(m(z_2), I),  p(x|z_1) Bernoulli or Gaussian.
The first level's encoder variance is either learned (a function of x) or fixed at `enc_var_1`,
the setting whose interplay with beta_2 Dang et al. (2023) show to decide collapse.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Independent, Normal

from . import likelihoods
from .vae import mlp


@dataclass
class HVAEConfig:
    x_dim: int
    latent_dim: int = 16  # z_1
    latent_dim_2: int = 8  # z_2
    hidden: tuple[int, ...] = (512,)
    likelihood: str = "bernoulli"
    obs_var: float | str = 1.0
    enc_var_1: float | None = None  # fixed encoder variance of z_1; None = learned
    linear: bool = False


def _normal(mu, std):
    return Independent(Normal(mu, std, validate_args=False), 1)


class HVAE(nn.Module):
    levels = 2

    def __init__(self, config: HVAEConfig):
        super().__init__()
        if config.likelihood not in likelihoods.LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(likelihoods.LIKELIHOODS)}, got {config.likelihood!r}")
        if config.enc_var_1 is not None and not config.enc_var_1 > 0:
            raise ValueError(f"enc_var_1 must be positive or None (learned), got {config.enc_var_1}")
        self.config = config
        d, k1, k2 = config.x_dim, config.latent_dim, config.latent_dim_2
        h = [] if config.linear else list(config.hidden)
        out1 = k1 if config.enc_var_1 is not None else 2 * k1
        self.enc1 = mlp([d, *h, out1])
        self.enc2 = mlp([k1, *h, 2 * k2])
        self.dec2 = mlp([k2, *reversed(h), k1])  # mean of p(z_1|z_2)
        self.dec1 = mlp([k1, *reversed(h), d])
        if config.likelihood == "gaussian" or config.linear:
            likelihoods.register_obs_log_var(self, config.obs_var)
        self.register_buffer("prior_loc", torch.zeros(k2))

    def encode(self, x):
        out = self.enc1(x)
        if self.config.enc_var_1 is not None:
            return _normal(out, torch.full_like(out, self.config.enc_var_1**0.5))
        mu, log_var = out.chunk(2, -1)
        return _normal(mu, (0.5 * log_var).exp())

    def encode_up(self, level: int, z):
        mu, log_var = self.enc2(z).chunk(2, -1)
        return _normal(mu, (0.5 * log_var).exp())

    def prior(self):
        return _normal(self.prior_loc, torch.ones_like(self.prior_loc))

    def prior_down(self, level: int, z):
        mu = self.dec2(z)
        return _normal(mu, torch.ones_like(mu))

    def decode(self, z):
        out = self.dec1(z)
        if self.config.likelihood == "gaussian" or self.config.linear:
            return likelihoods.gaussian(out, self.obs_log_var)
        return likelihoods.bernoulli(out)


@dataclass
class LinearHVAEConfig(HVAEConfig):
    """The linear two-level model of the theory: every map linear, Gaussian observations."""

    likelihood: str = "gaussian"
    linear: bool = True
