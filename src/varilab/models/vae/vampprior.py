"""VampPrior VAE (Tomczak & Welling, 2018): the prior is the mixture of variational posteriors at
K learned pseudo-inputs, p(z) = (1/K) sum_k q(z|u_k). Its KL has no closed form, so the ELBO uses the
Monte-Carlo estimate log q(z|x) - log p(z) automatically.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from .vae import VAE, VAEConfig


@dataclass
class VampPriorConfig(VAEConfig):
    pseudo_inputs: int = 100


class VampPriorVAE(VAE):
    def __init__(self, config: VampPriorConfig):
        super().__init__(config)
        g = torch.Generator().manual_seed(0)
        self.pseudo = nn.Parameter(0.5 + 0.05 * torch.randn(config.pseudo_inputs, config.x_dim, generator=g))

    def prior(self):
        q = super().encode(self.pseudo)  # q(z|u_k), batch [K]
        base = Independent(Normal(q.base_dist.loc, q.base_dist.scale, validate_args=False), 1)
        mix = Categorical(logits=torch.zeros(len(self.pseudo), device=self.pseudo.device))
        return MixtureSameFamily(mix, base, validate_args=False)
