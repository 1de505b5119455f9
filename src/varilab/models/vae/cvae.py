"""Conditional VAE (Sohn et al., 2015): q(z|x, c), p(z) = N(0, I), p(x|z, c).

The condition c is a label (one-hot) or part of the input (e.g. the top half of an image whose
bottom half is x). The linear version (Gaussian observations, linear maps) is the model whose
collapse Dang et al. (2023) solve in closed form.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Independent, Normal

from ...core.distributions import diag_normal
from .. import likelihoods
from .vae import mlp


@dataclass
class CVAEConfig:
    x_dim: int
    cond_dim: int = 10
    latent_dim: int = 16
    hidden: tuple[int, ...] = (512,)
    likelihood: str = "bernoulli"
    obs_var: float | str = 1.0
    linear: bool = False


@dataclass
class LinearCVAEConfig(CVAEConfig):
    likelihood: str = "gaussian"
    linear: bool = True


class CVAE(nn.Module):
    def __init__(self, config: CVAEConfig):
        super().__init__()
        if config.likelihood not in likelihoods.LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(likelihoods.LIKELIHOODS)}, got {config.likelihood!r}")
        if config.cond_dim < 1:
            raise ValueError(f"a conditional VAE needs a condition (cond_dim >= 1), got {config.cond_dim}")
        self.config = config
        h = [] if config.linear else list(config.hidden)
        d, c, k = config.x_dim, config.cond_dim, config.latent_dim
        self.encoder = mlp([d + c, *h, 2 * k])
        self.decoder = mlp([k + c, *reversed(h), d])
        if config.likelihood == "gaussian":
            likelihoods.register_obs_log_var(self, config.obs_var)
        self.register_buffer("prior_loc", torch.zeros(k))

    def _check(self, c):
        if c is None or c.shape[-1] != self.config.cond_dim:
            got = "none" if c is None else list(c.shape)
            raise ValueError(f"the conditional VAE needs a condition of width {self.config.cond_dim}, got {got}")

    def encode(self, x, c=None):
        self._check(c)
        mu, log_var = self.encoder(torch.cat([x, c], -1)).chunk(2, -1)
        return diag_normal(mu, log_var)

    def decode(self, z, c=None):
        self._check(c)
        out = self.decoder(torch.cat([z, c.expand(*z.shape[:-1], c.shape[-1])], -1))
        if self.config.likelihood == "bernoulli":
            return likelihoods.bernoulli(out)
        return likelihoods.gaussian(out, self.obs_log_var)

    def prior(self):
        return Independent(Normal(self.prior_loc, torch.ones_like(self.prior_loc), validate_args=False), 1)
