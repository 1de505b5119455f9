"""ARD-VAE: a VAE whose prior N(0, diag(tau)) learns which latent axes are relevant.

tau_j is re-estimated from the aggregate posterior, tau_j = (1/N) sum_n mu_j(x_n)^2 (posterior means only,
so an unused axis is driven to tau -> 0 rather than kept at any tau), from about `refresh_points`
encoded training points, and frozen between refreshes. This is the large-N limit of the Student-t
prior obtained by integrating a Gamma hyper-prior on 1/tau_j. Relevance of axis j:
tau_j * E_x ||d mean(x|z)/d z_j||^2 (varilab.diagnostics.ard_relevance); `relevant_dims` keeps the
axes that cover `share` of the total relevance.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import Independent, Normal

from .vae import VAE, VAEConfig


@dataclass
class ARDVAEConfig(VAEConfig):
    latent_dim: int = 32
    refresh_points: int = 5000  # re-estimate tau after this many encoded training points
    tau_floor: float = 1e-6


class ARDVAE(VAE):
    def __init__(self, config: ARDVAEConfig):
        super().__init__(config)
        k = config.latent_dim
        self.register_buffer("tau", torch.ones(k))
        self.register_buffer("acc_sum", torch.zeros(k))
        self.register_buffer("acc_count", torch.zeros(()))

    def encode(self, x):
        q = super().encode(x)
        if self.training and torch.is_grad_enabled():  # accumulate sum_n mu_n^2 over training batches
            mu = q.base_dist.loc.detach().reshape(-1, self.config.latent_dim)
            self.acc_sum += mu.pow(2).sum(0)
            self.acc_count += len(mu)
            if self.acc_count >= self.config.refresh_points:
                self.tau.copy_((self.acc_sum / self.acc_count).clamp_min(self.config.tau_floor))  # tau_j = E[mu_j^2]
                self.acc_sum.zero_()
                self.acc_count.zero_()
        return q

    def prior(self):
        return Independent(Normal(self.prior_loc, self.tau.sqrt(), validate_args=False), 1)

