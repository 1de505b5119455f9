"""A two-level hierarchical VAE, x <- z_1 <- z_2, with an MLP and a linear version.

q(z_1|x) = N(mu_1(x), s_1^2),  q(z_2|z_1) = N(mu_2(z_1), s_2^2),
p(z_2) = N(0, I),  p(z_1|z_2) = N(m(z_2), I),  p(x|z_1) Bernoulli or Gaussian.
The first level's encoder variance is either learned (a function of x) or fixed at `enc_var_1`,
the setting whose interplay with beta_2 Dang et al. (2023) show to decide collapse.
The linear version is their MHVAE: every map linear and q(z_2|z_1) = N(A_2 z_1, diag(s_2^2)) with a learned
variance that does not depend on z_1; `linear_expected_loss` gives its beta-ELBO in closed form.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Independent, Normal

from .. import likelihoods
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
        self.enc2 = mlp([k1, *h, k2 if config.linear else 2 * k2])
        if config.linear:  # log s_2^2 of q(z_2|z_1), one learned constant per dimension
            self.enc_log_var_2 = nn.Parameter(torch.zeros(k2))
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
        if self.config.linear:
            mu = self.enc2(z)
            return _normal(mu, (0.5 * self.enc_log_var_2).exp().expand_as(mu))
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


def linear_expected_loss(model: HVAE, cov: torch.Tensor, betas=(1.0, 1.0)) -> torch.Tensor:
    """The exact -beta-ELBO of a linear HVAE with a fixed first-level encoder variance, averaged over data of
    covariance `cov` (per example, nats), for biases at the optimum's values: the first encoder's at -A_1 m and the
    output's at m (m the data mean), those of q(z_2|z_1) and p(z_1|z_2) at 0. Then, writing x for x - m,
    with q(z_1|x) = N(A_1 x, s_1^2 I), q(z_2|z_1) = N(A_2 z_1, S_2), p(z_1|z_2) = N(U_2 z_2, I),
    p(x|z_1) = N(U_1 z_1, s^2 I), p(z_2) = N(0, I) and M = A_1 C A_1^T + s_1^2 I = E[z_1 z_1^T]:
    recon = d/2 log(2 pi s^2) + [tr((I - U_1 A_1) C (I - U_1 A_1)^T) + s_1^2 ||U_1||^2] / (2 s^2)
    R_1 = 1/2 [tr((I - U_2 A_2) M (I - U_2 A_2)^T) + tr(U_2 S_2 U_2^T) - k_1 - k_1 log s_1^2]
    R_2 = 1/2 [tr S_2 + tr(A_2 M A_2^T) - k_2 - log det S_2]
    """
    if not model.config.linear or model.config.enc_var_1 is None:
        raise ValueError("linear_expected_loss needs a linear HVAE with a fixed first-level encoder variance (enc_var_1)")
    a1, u1 = model.enc1[0].weight, model.dec1[0].weight
    a2, u2 = model.enc2[0].weight, model.dec2[0].weight
    k1, d = a1.shape
    eye1, s1 = torch.eye(k1, dtype=a1.dtype), model.config.enc_var_1
    s2, v2 = model.obs_log_var.exp(), model.enc_log_var_2.exp()
    r1 = torch.eye(d, dtype=a1.dtype) - u1 @ a1
    m = a1 @ cov @ a1.T + s1 * eye1
    recon = 0.5 * d * torch.log(2 * torch.pi * s2) + (torch.trace(r1 @ cov @ r1.T) + s1 * (u1 * u1).sum()) / (2 * s2)
    r2 = eye1 - u2 @ a2
    rate1 = 0.5 * (torch.trace(r2 @ m @ r2.T) + (u2 * u2 * v2).sum() - k1 - k1 * math.log(s1))
    rate2 = 0.5 * (v2.sum() + torch.trace(a2 @ m @ a2.T) - len(v2) - model.enc_log_var_2.sum())
    return recon + betas[0] * rate1 + betas[1] * rate2
