"""Which latents are alive: KL per dimension, active units, and active / passive / mixed variables.

Active units: Burda et al. (2016), A_i = Cov_x(E_q[z_i|x]) > 0.01.
Active, passive and mixed variables in mean and sampled representations: Bonheme & Grzes (2022),
"Be More Active! Understanding the Differences between Mean and Sampled Representations of VAEs".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .posterior import Posteriors


def kl_per_dim(post: Posteriors) -> torch.Tensor:
    """Mean over data of KL(q(z_i|x) || p(z_i)), [d], in nats."""
    return post.kl.mean(0)


def activity(post: Posteriors) -> torch.Tensor:
    """A_i = Cov_x(E_q[z_i|x]), the variance over data of each posterior mean, [d]."""
    return post.mean.var(0)


def active_units(post: Posteriors, threshold: float = 0.01) -> tuple[int, torch.Tensor]:
    """(number of units with A_i > threshold, A)."""
    a = activity(post)
    return int((a > threshold).sum()), a


@dataclass
class Variables:
    """The Bonheme & Grzes decision per dimension, with the statistics behind it."""

    active: list[int]
    passive: list[int]
    mixed: list[int]
    share_active: torch.Tensor  # [d] share of points where var_q(z_i|x) < var_ratio * prior variance
    mean_rep_var: torch.Tensor  # [d] Var_x(mu_i(x)): the mean representation
    sampled_rep_var: torch.Tensor  # [d] Var(mu_i + sigma_i eps): the sampled representation
    mean_posterior_var: torch.Tensor  # [d] E_x var_q(z_i|x)
    var_ratio: float
    share: float


def classify(post: Posteriors, var_ratio: float = 0.5, share: float = 0.95) -> Variables:
    """Active at x when var_q(z_i|x) < var_ratio * prior variance; a variable is active when it is active
    at >= `share` of the points, passive at <= 1 - share of them, mixed otherwise.

    The paper's polarised regime has sigma^2 << 1 (active) or sigma^2 ~ 1 (passive); the cut at half
    the prior variance keeps a barely trained, collapsed dimension (sigma^2 scattered around 1) out of
    "mixed". A weakly informative dimension can then be passive here yet an active unit by Burda's
    criterion: a linear VAE's latent i has sigma^2 = beta s^2 / lambda_i, 0.67 for lambda_i = 1.5.
    """
    at_x = post.var < var_ratio * post.prior_var  # [N, d]
    s = at_x.float().mean(0)
    active = [i for i in range(post.dim) if s[i] >= share]
    passive = [i for i in range(post.dim) if s[i] <= 1 - share]
    mixed = [i for i in range(post.dim) if i not in active and i not in passive]
    mean_var = post.mean.var(0)
    sampled_var = mean_var + post.var.mean(0)  # Var(mu + sigma eps) = Var mu + E sigma^2, eps independent of x
    return Variables(active, passive, mixed, s, mean_var, sampled_var, post.var.mean(0), var_ratio, share)


def sampled_representation(post: Posteriors, generator: torch.Generator | None = None) -> torch.Tensor:
    """z = mu(x) + sigma(x) * eps, one draw per point, [N, d]."""
    eps = torch.randn(post.mean.shape, generator=generator, device=post.mean.device)
    return post.mean + post.var.sqrt() * eps


def correlation(z: torch.Tensor) -> torch.Tensor:
    """Pearson correlation matrix of the columns of z [N, d]; constant columns get zero correlation."""
    zc = z - z.mean(0)
    std = zc.pow(2).mean(0).sqrt().clamp_min(1e-12)
    c = (zc.T @ zc) / len(z) / (std[:, None] * std[None, :])
    c[std < 1e-6] = 0.0
    c[:, std < 1e-6] = 0.0
    return c
