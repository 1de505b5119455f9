"""Variational objectives as plain functions of a model that has `encode`, `decode` and `prior`.

ELBO (Kingma & Welling, 2014) and beta-ELBO (Higgins et al., 2017). Values are per example ([B]);
a training loss is their negated mean.
"""
from __future__ import annotations

import torch
from torch.distributions import Distribution, kl_divergence


def kl(q: Distribution, p: Distribution, z: torch.Tensor | None = None, analytic: bool | None = None) -> torch.Tensor:
    """KL(q || p) per example: closed form when torch knows the pair, else log q(z) - log p(z) at z ~ q.

    `analytic=None` chooses automatically; True forces the closed form, False the Monte-Carlo estimate.
    """
    if analytic is not False:
        try:
            return kl_divergence(q, p)
        except NotImplementedError:
            if analytic:
                raise
    z = q.rsample() if z is None else z
    return q.log_prob(z) - p.log_prob(z)  # KL ~ log q(z|x) - log p(z), z ~ q


def elbo_terms(model, x: torch.Tensor, beta: float = 1.0, analytic_kl: bool | None = None) -> dict[str, torch.Tensor]:
    """Per-example reconstruction log-likelihood, KL and beta-ELBO, each [B]."""
    q = model.encode(x)
    z = q.rsample()
    recon = model.decode(z).log_prob(x)  # log p(x|z), z ~ q(z|x)
    kl_z = kl(q, model.prior(), z, analytic_kl)
    return {"elbo": recon - beta * kl_z, "recon": recon, "kl": kl_z}  # ELBO_beta = E_q log p(x|z) - beta KL


def elbo(model, x: torch.Tensor) -> torch.Tensor:
    """The evidence lower bound per example: E_q[log p(x|z)] - KL(q(z|x) || p(z)), [B]."""
    return elbo_terms(model, x)["elbo"]


def vae_loss(model, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
    """Training loss -mean(ELBO_beta) under "loss", with the batch means of recon and KL beside it."""
    t = elbo_terms(model, x, beta)
    return {"loss": -t["elbo"].mean(), "recon": t["recon"].mean(), "kl": t["kl"].mean()}
