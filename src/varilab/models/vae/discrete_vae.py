"""A VAE with discrete latents: n categorical variables of C classes each, one-hot coded.

q(z|x) = prod_i Cat(z_i; softmax(logits_i(x))),  p(z) = prod_i Cat(z_i; 1/C),  p(x|z) Bernoulli.
No reparameterised sampler exists, so train it with estimator "score" (with a baseline),
"gumbel" or "straight-through" (varilab.core.estimators).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Independent, OneHotCategorical

from .. import likelihoods
from .vae import mlp


@dataclass
class DiscreteVAEConfig:
    x_dim: int
    latent_dim: int = 16  # number of categorical variables
    categories: int = 10
    hidden: tuple[int, ...] = (512,)


class DiscreteVAE(nn.Module):
    def __init__(self, config: DiscreteVAEConfig):
        super().__init__()
        if config.categories < 2:
            raise ValueError(f"categories must be at least 2, got {config.categories}")
        self.config = config
        n, c, h = config.latent_dim, config.categories, list(config.hidden)
        self.encoder = mlp([config.x_dim, *h, n * c])
        self.decoder = mlp([n * c, *reversed(h), config.x_dim])
        self.register_buffer("prior_logits", torch.zeros(n, c))

    def encode(self, x: torch.Tensor) -> Independent:
        logits = self.encoder(x).unflatten(-1, (self.config.latent_dim, self.config.categories))
        return Independent(OneHotCategorical(logits=logits, validate_args=False), 1)

    def decode(self, z: torch.Tensor) -> Independent:
        return likelihoods.bernoulli(self.decoder(z.flatten(-2)))

    def prior(self) -> Independent:
        return Independent(OneHotCategorical(logits=self.prior_logits, validate_args=False), 1)
