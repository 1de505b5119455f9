"""The linear VAE of Lucas et al. (2019): the probabilistic-PCA model with an amortised linear posterior.

q(z|x) = N(A (x - b) , diag(s^2)) with s^2 a learned vector (independent of x),
p(z) = N(0, I),  p(x|z) = N(W z + b, sigma^2 I) with sigma^2 fixed or learned.
Its marginal likelihood is exact: x ~ N(b, W W^T + sigma^2 I).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

from .. import likelihoods


@dataclass
class LinearVAEConfig:
    x_dim: int
    latent_dim: int = 16
    obs_var: float | str = 1.0


class LinearVAE(nn.Module):
    def __init__(self, config: LinearVAEConfig):
        super().__init__()
        self.config = config
        d, k = config.x_dim, config.latent_dim
        self.enc = nn.Linear(d, k, bias=False)
        self.enc_log_var = nn.Parameter(torch.zeros(k))
        self.dec = nn.Linear(k, d)
        nn.init.normal_(self.dec.weight, std=0.1)
        nn.init.normal_(self.enc.weight, std=0.1)
        likelihoods.register_obs_log_var(self, config.obs_var)
        self.register_buffer("prior_loc", torch.zeros(k))

    def encode(self, x: torch.Tensor) -> Independent:
        mu = self.enc(x - self.dec.bias)
        return Independent(Normal(mu, (0.5 * self.enc_log_var).exp().expand_as(mu), validate_args=False), 1)

    def decode(self, z: torch.Tensor) -> Independent:
        return likelihoods.gaussian(self.dec(z), self.obs_log_var)

    def prior(self) -> Independent:
        return Independent(Normal(self.prior_loc, torch.ones_like(self.prior_loc), validate_args=False), 1)

    def marginal(self) -> MultivariateNormal:
        """p(x) = N(b, W W^T + sigma^2 I), the exact marginal likelihood of the decoder."""
        w = self.dec.weight  # [D, K]
        cov = w @ w.T + self.obs_log_var.exp() * torch.eye(w.shape[0], device=w.device)
        return MultivariateNormal(self.dec.bias, covariance_matrix=cov, validate_args=False)
