"""Ex-post density estimation of a VAE's latent space (Ghosh et al., 2020; used by DiffuseVAE to sample).

A VAE trained against p(z) = N(0, I) leaves its aggregate posterior q(z) = E_x q(z|x) unlike the prior:
regions the prior weights but no x encodes to ("holes") decode to images unlike the data. Fitting a
Gaussian mixture to codes z ~ q(z|x) of the training set after training, and sampling z from it instead of
from p(z), keeps generation where the decoder was trained. The fit is scikit-learn's EM; the mixture is
kept as buffers (mixing logits, means, Cholesky factors) so that it saves with the model's weights.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal


class GaussianMixturePrior(nn.Module):
    """A K-component, full-covariance Gaussian mixture over a d-dimensional latent space."""

    def __init__(self, components: int, dim: int):
        super().__init__()
        if components < 1 or dim < 1:
            raise ValueError(f"a Gaussian mixture needs at least one component and dimension, got {components}, {dim}")
        self.register_buffer("logits", torch.zeros(components))
        self.register_buffer("loc", torch.zeros(components, dim))
        self.register_buffer("scale_tril", torch.eye(dim).repeat(components, 1, 1))

    @classmethod
    def fit(cls, z: torch.Tensor, components: int = 10, seed: int = 0) -> "GaussianMixturePrior":
        """EM fit of `components` full-covariance Gaussians to codes z [N, d]."""
        from sklearn.mixture import GaussianMixture

        z = torch.as_tensor(z)
        if z.ndim != 2 or len(z) < components:
            raise ValueError(f"fit needs codes of shape [N, d] with N >= {components} components, got {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise ValueError("the codes to fit hold NaN or Inf values")
        gm = GaussianMixture(components, covariance_type="full", random_state=seed).fit(z.double().numpy())
        prior = cls(components, z.shape[1])
        prior.logits.copy_(torch.from_numpy(np.log(gm.weights_)))
        prior.loc.copy_(torch.from_numpy(gm.means_))
        prior.scale_tril.copy_(torch.linalg.cholesky(torch.from_numpy(gm.covariances_)))
        return prior

    def distribution(self) -> MixtureSameFamily:
        # p(z) = sum_k pi_k N(z; m_k, L_k L_k^T)
        return MixtureSameFamily(Categorical(logits=self.logits), MultivariateNormal(self.loc, scale_tril=self.scale_tril))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.distribution().log_prob(z)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes [n, d]; reproducible with `generator` (torch.distributions takes none)."""
        device = self.loc.device
        k = torch.multinomial(self.logits.softmax(0), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.loc.shape[1], 1, generator=generator, device=device)
        return self.loc[k] + (self.scale_tril[k] @ eps).squeeze(-1)  # z = m_k + L_k eps
