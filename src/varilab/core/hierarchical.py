"""The ELBO of a hierarchical VAE with L levels and one KL term (and one beta) per level.

Inference runs bottom-up, generation top-down (as in Dang et al., 2023, for the two-level MHVAE):
q(z_1|x) q(z_2|z_1) ... q(z_L|z_{L-1}),   p(z_L) p(z_{L-1}|z_L) ... p(z_1|z_2) p(x|z_1).

ELBO = E_q[log p(x|z_1)] - sum_l beta_l R_l, with z_0 = x and p(z_L|z_{L+1}) = p(z_L), where the rate of level l is
R_l = E_q[log q(z_l|z_{l-1}) - log p(z_l|z_{l+1})].
Below the top, z_{l+1} is drawn from q(z_{l+1}|z_l) at the sampled z_l, so z_l and z_{l+1} are dependent and
R_l is estimated at that very z_l: -H[q(z_l|z_{l-1})] - log p(z_l|z_{l+1}) (entropy in closed form). A closed-form
KL(q(z_l|z_{l-1}) || p(z_l|z_{l+1})) would average z_l afresh, independently of z_{l+1}, and is not the ELBO.
Only the top level's rate is the closed-form KL(q(z_L|z_{L-1}) || p(z_L)).

The model provides `levels` (L), `encode(x)` = q(z_1|x), `encode_up(l, z_l)` = q(z_{l+1}|z_l),
`prior()` = p(z_L), `prior_down(l, z_{l+1})` = p(z_l|z_{l+1}) and `decode(z_1)` = p(x|z_1).
"""
from __future__ import annotations

import torch

from .objectives import kl


def hierarchical_elbo_terms(model, x: torch.Tensor, betas=None) -> dict[str, torch.Tensor]:
    """Per-example ELBO, reconstruction and per-level rates ("kl_1", ..., "kl_L", see above), each [B]."""
    levels = model.levels
    betas = [1.0] * levels if betas is None else list(betas)
    if len(betas) != levels:
        raise ValueError(f"one beta per level: the model has {levels} levels, got {len(betas)} betas")
    qs, zs = [model.encode(x)], []
    zs.append(qs[0].rsample())
    for level in range(1, levels):
        qs.append(model.encode_up(level, zs[-1]))  # q(z_{l+1} | z_l)
        zs.append(qs[-1].rsample())
    recon = model.decode(zs[0]).log_prob(x)  # log p(x|z_1)
    out = {"recon": recon}
    value = recon
    for level in range(levels):
        if level == levels - 1:
            kl_l = kl(qs[level], model.prior(), zs[level])  # KL(q(z_L|z_{L-1}) || p(z_L))
        else:  # -H[q(z_l|z_{l-1})] - log p(z_l|z_{l+1}) at the z_l that z_{l+1} was drawn from
            kl_l = -qs[level].entropy() - model.prior_down(level + 1, zs[level + 1]).log_prob(zs[level])
        out[f"kl_{level + 1}"] = kl_l
        value = value - betas[level] * kl_l
    out["kl"] = sum(out[f"kl_{i + 1}"] for i in range(levels))
    out["elbo"] = value
    return out


def hierarchical_loss(model, x: torch.Tensor, betas=None, beta: float | None = None) -> dict[str, torch.Tensor]:
    """-mean(ELBO) with the batch means of the reconstruction and each level's KL.

    `beta`, when given (a KL schedule), scales every level's weight."""
    betas = [1.0] * model.levels if betas is None else list(betas)
    if beta is not None:
        betas = [b * beta for b in betas]
    t = hierarchical_elbo_terms(model, x, betas)
    return {"loss": -t["elbo"].mean(), **{k: v.mean() for k, v in t.items() if k != "elbo"}}


def hierarchical_log_weights(model, x: torch.Tensor, k: int) -> torch.Tensor:
    """log w = log p(x|z_1) + sum_l log p(z_l|z_{l+1}) - sum_l log q(z_l|z_{l-1}), K samples, [K, B]."""
    q = model.encode(x)
    z = q.sample((k,))
    log_w = model.decode(z).log_prob(x) - q.log_prob(z)
    for level in range(1, model.levels):
        q_up = model.encode_up(level, z)  # q(z_{l+1}|z_l)
        z_up = q_up.sample()
        log_w = log_w + model.prior_down(level, z_up).log_prob(z) - q_up.log_prob(z_up)
        z = z_up
    return log_w + model.prior().log_prob(z)


@torch.no_grad()
def sample_latent(model, n: int) -> torch.Tensor:
    """z_1 drawn top-down from the prior, taking the mean of each conditional p(z_l|z_{l+1}); [n, d_1]."""
    z = model.prior().sample((n,))
    for level in range(getattr(model, "levels", 1) - 1, 0, -1):
        z = model.prior_down(level, z).mean
    return z
