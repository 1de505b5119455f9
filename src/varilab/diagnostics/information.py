"""Mutual information I(x; z) and KL(q(z) || p(z)) from the aggregate posterior q(z) = (1/N) sum_n q(z|x_n).

"ELBO surgery" (Hoffman & Johnson, 2016): E_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || p(z)).
Both terms are estimated from one z_n ~ q(z|x_n) per point with
log q(z) ~ logsumexp_m log q(z|x_m) - log N.  I <= log N for this estimator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .posterior import Posteriors


@dataclass
class Information:
    mutual_information: float  # I_q(x; z), nats
    marginal_kl: float  # KL(q(z) || p(z)), nats
    average_kl: float  # E_x KL(q(z|x) || p(z)) = the sum of the two, closed form


def _log_q_matrix(z: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(z_m; mean_n, diag var_n) for all pairs, [M, N], by expanding the square into matmuls."""
    inv = 1.0 / var  # [N, d]
    quad = (z * z) @ inv.T - 2.0 * z @ (mean * inv).T + (mean * mean * inv).sum(1)  # sum_i (z_i - mu_i)^2 / var_i
    return -0.5 * (quad + torch.log(var).sum(1) + z.shape[1] * math.log(2 * math.pi))


@torch.no_grad()
def aggregate_information(post: Posteriors, max_points: int = 10_000, chunk: int = 2048,
                          generator: torch.Generator | None = None) -> Information:
    """Estimate I(x; z) and KL(q(z) || p(z)) for a diagonal-Gaussian posterior (on up to `max_points` points)."""
    if not post.gaussian:
        raise ValueError("aggregate_information needs diagonal Gaussian posteriors and prior")
    n = min(len(post.mean), max_points)
    mean, var = post.mean[:n], post.var[:n].clamp_min(1e-12)
    z = mean + var.sqrt() * torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
    log_q_own, log_q_agg = [], []
    for s in range(0, n, chunk):
        zc = z[s:s + chunk]
        log_q_agg.append(torch.logsumexp(_log_q_matrix(zc, mean, var), 1) - math.log(n))  # log q(z)
        log_q_own.append(-0.5 * (((zc - mean[s:s + chunk]) ** 2 / var[s:s + chunk]).sum(1)
                                 + torch.log(var[s:s + chunk]).sum(1) + zc.shape[1] * math.log(2 * math.pi)))
    log_q_own, log_q_agg = torch.cat(log_q_own), torch.cat(log_q_agg)
    pm, pv = post.prior_mean, post.prior_var
    log_p = -0.5 * (((z - pm) ** 2 / pv).sum(1) + torch.log(pv).sum() + z.shape[1] * math.log(2 * math.pi))
    mi = float((log_q_own - log_q_agg).mean())  # I = E[log q(z|x) - log q(z)]
    marginal = float((log_q_agg - log_p).mean())  # KL(q(z) || p(z)) = E[log q(z) - log p(z)]
    return Information(mi, marginal, float(post.kl[:n].sum(1).mean()))
