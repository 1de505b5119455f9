"""The quantised-latent purifier (VI with latent-space quantisation for adversarial resilience): a VAE whose encoder mean is Lipschitz-bounded and
quantised per dimension, so that a small change of the input leaves the code, and hence the output, unchanged.

    mu(x) = g W_k relu(... relu(g W_1 x))   W_i spectrally normalised, g = L^(1/k): ||mu(x) - mu(x')||_2 <= L ||x - x'||_2
    Q(m)  = the nearest of `levels` evenly spaced values on [-radius, radius], per coordinate
    q(z|x) = N(Q(mu(x)), diag sigma^2(x)),  p(z) = N(0, I),  p(x|z) Bernoulli;  purify(x) = E[x | z = Q(mu(x))]

Q passes gradients straight through (d Q(m) / dm := 1), in training and in any attack that differentiates the
purifier (BPDA). A coordinate whose mean lies farther than L ||delta||_2 from every bin edge keeps its code,
which is the guarantee `margin` and `lipschitz_bound` measure. Training adds Gaussian noise of std
`input_noise` to the encoder's input while the reconstruction target stays clean.

Spectral normalisation divides each weight by its largest singular value as power iteration estimates it (one
iteration per training step), which falls short of the true value when the top singular values are close (on
MNIST the product came out 1.3 times the target); `lipschitz_bound` computes the exact norms, and the bound it
reports, not the target, is the one to rely on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Independent
from torch.nn.utils.parametrizations import spectral_norm

from ...core.distributions import FixedPrior, diag_normal
from .. import likelihoods
from ..vae.vae import mlp


@dataclass
class PurifierConfig:
    x_dim: int
    latent_dim: int = 32
    hidden: tuple[int, ...] = (512, 256)
    levels: int = 5  # code values per latent dimension
    radius: float = 2.0  # the code values are evenly spaced on [-radius, radius]
    input_noise: float = 0.2  # std of the Gaussian noise added to the encoder's input in training
    lipschitz: float = 16.0  # target bound of the encoder mean: each of its k layers scaled to norm lipschitz^(1/k)


def quantise(m: torch.Tensor, levels: int, radius: float) -> torch.Tensor:
    """Q(m): the nearest of `levels` evenly spaced values on [-radius, radius] (Q(Q(m)) = Q(m))."""
    step = 2 * radius / (levels - 1)
    return codes(m, levels, radius) * step - radius


def codes(m: torch.Tensor, levels: int, radius: float) -> torch.Tensor:
    """The index (0 .. levels - 1) of each coordinate's code value."""
    step = 2 * radius / (levels - 1)
    return torch.round((m.clamp(-radius, radius) + radius) / step)


def edge_distance(m: torch.Tensor, levels: int, radius: float) -> torch.Tensor:
    """Per coordinate, the distance from m to the nearest bin edge (edges halfway between code values)."""
    step = 2 * radius / (levels - 1)
    edges = -radius + step * (torch.arange(levels - 1, device=m.device, dtype=m.dtype) + 0.5)
    return (m.unsqueeze(-1) - edges).abs().amin(-1)


def straight_through(m: torch.Tensor, levels: int, radius: float) -> torch.Tensor:
    """Q(m) in the forward pass, the identity in the backward pass."""
    return m + (quantise(m, levels, radius) - m).detach()


class Purifier(nn.Module):
    def __init__(self, config: PurifierConfig):
        super().__init__()
        if config.levels < 2 or not config.radius > 0:
            raise ValueError(f"levels must be at least 2 and radius positive, got {config.levels} and {config.radius}")
        self.config = config
        h = list(config.hidden)
        self.trunk = mlp([config.x_dim, *h])
        for layer in self.trunk:
            spectral_norm(layer)
        self.mean_head = spectral_norm(nn.Linear(h[-1], config.latent_dim))
        self.gain = config.lipschitz ** (1 / (len(h) + 1))  # per layer: sigma(gain W / sigma(W)) = gain
        self.log_var_head = nn.Linear(h[-1], config.latent_dim)
        self.decoder = mlp([config.latent_dim, *reversed(h), config.x_dim])
        self.register_buffer("prior_loc", torch.zeros(config.latent_dim))
        self.register_buffer("prior_scale", torch.ones(config.latent_dim))
        self._prior = FixedPrior()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.trunk:
            x = torch.relu(self.gain * layer(x))
        return x

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        """mu(x), before quantisation: the Lipschitz-bounded part of the encoder."""
        return self.gain * self.mean_head(self.features(x))

    def encode(self, x: torch.Tensor) -> Independent:
        if self.training and self.config.input_noise > 0:
            x = (x + self.config.input_noise * torch.randn_like(x)).clamp(0, 1)
        h = self.features(x)
        mu = straight_through(self.gain * self.mean_head(h), self.config.levels, self.config.radius)
        return diag_normal(mu, self.log_var_head(h).clamp(-12, 6))

    def decode(self, z: torch.Tensor) -> Independent:
        return likelihoods.bernoulli(self.decoder(z))

    def prior(self) -> Independent:
        return self._prior(self.prior_loc, self.prior_scale)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The code of each point: the index of its quantised mean per latent dimension, [N, d]."""
        return codes(self.mean(x), self.config.levels, self.config.radius)

    def purify(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """E[x | z] at z = Q(mu(x)), one forward pass (differentiable straight through Q); with `sample`, at
        z ~ N(Q(mu(x)), sigma^2(x)) instead (a stochastic purifier: attack it with several draws)."""
        q = self.encode(x)
        z = q.rsample() if sample else q.mean
        return self.decode(z).mean

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        """Per point, the smallest distance of a mean coordinate to a bin edge, [N]: no input change of L2 norm
        below margin / lipschitz_bound() changes the point's code."""
        return edge_distance(self.mean(x), self.config.levels, self.config.radius).amin(-1)

    @torch.no_grad()
    def lipschitz_bound(self) -> float:
        """An upper bound on the L2 Lipschitz constant of mu(x): the product of the layers' exact spectral norms
        (ReLU is 1-Lipschitz; the power iteration's estimate is not trusted for the bound)."""
        layers = [*self.trunk, self.mean_head]
        return float(torch.tensor([self.gain * torch.linalg.matrix_norm(layer.weight, ord=2) for layer in layers]).prod())
