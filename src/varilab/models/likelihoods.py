"""Observation models p(x|z) as `torch.distributions`, shared by the model families."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.distributions import Bernoulli, Independent, Normal

LIKELIHOODS = ("bernoulli", "gaussian")


def register_obs_log_var(module: nn.Module, obs_var: float | str) -> None:
    """Give `module.obs_log_var`: a learned scalar parameter for "learned", else a fixed buffer."""
    obs_var = parse_obs_var(obs_var)
    if obs_var == "learned":
        module.obs_log_var = nn.Parameter(torch.zeros(()))
    else:
        module.register_buffer("obs_log_var", torch.tensor(math.log(obs_var)))


def parse_obs_var(value) -> float | str:
    """Accept a positive number or the word "learned" (from a CLI string or a config)."""
    if isinstance(value, str) and value.strip().lower() == "learned":
        return "learned"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"obs_var must be a positive number or 'learned', got {value!r}") from None
    if not v > 0:
        raise ValueError(f"obs_var must be positive or 'learned', got {value!r}")
    return v


def bernoulli(logits: torch.Tensor) -> Independent:
    """p(x|z) = prod_d Bernoulli(x_d; sigmoid(logits_d)); grey levels in [0, 1] are allowed (cross-entropy)."""
    return Independent(Bernoulli(logits=logits, validate_args=False), 1)


def gaussian(mean: torch.Tensor, log_var: torch.Tensor) -> Independent:
    """p(x|z) = N(x; mean, sigma^2 I) with sigma^2 = exp(log_var), a scalar."""
    return Independent(Normal(mean, (0.5 * log_var).exp().expand_as(mean), validate_args=False), 1)
