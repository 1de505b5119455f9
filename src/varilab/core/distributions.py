"""Factorised Gaussians as `torch.distributions`, built the way the objectives can use cheaply.

`diag_normal(mu, log_var)` keeps log sigma = log_var / 2 beside the distribution, so the closed-form
KL need not take the log of exp again; `FixedPrior` hands out one prior object for as long as its
parameters are unchanged, so a training step builds no prior and the KL's constants are computed once.
"""
from __future__ import annotations

import torch
from torch.distributions import Independent, Normal


def diag_normal(mu: torch.Tensor, log_var: torch.Tensor) -> Independent:
    """N(mu, diag exp(log_var)) over the last dimension, with `.base_dist.log_scale` = log_var / 2."""
    log_scale = 0.5 * log_var
    base = Normal(mu, log_scale.exp(), validate_args=False)
    base.log_scale = log_scale  # log sigma, read by the KL (objectives._kl_normal_fixed_prior)
    return Independent(base, 1)


class FixedPrior:
    """p(z) = N(loc, diag scale^2) from two tensors (a module's buffers), rebuilt only when one of them
    is replaced or changed in place (torch counts in-place changes in `tensor._version`)."""

    def __init__(self):
        self._key, self._dist = None, None

    def __call__(self, loc: torch.Tensor, scale: torch.Tensor) -> Independent:
        k = self._key
        if k is None or k[0] is not loc or k[1] is not scale or k[2] != loc._version or k[3] != scale._version:
            self._key = (loc, scale, loc._version, scale._version)
            self._dist = Independent(Normal(loc, scale, validate_args=False), 1)
        return self._dist
