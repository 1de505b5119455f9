"""Variational objectives as plain functions of a model with `encode`, `decode` and `prior`.

ELBO (Kingma & Welling, 2014), beta-ELBO (Higgins et al., 2017), free bits (Kingma et al., 2016),
IWAE (Burda et al., 2016) with VIMCO for score-function latents (Mnih & Rezende, 2016) and the
doubly reparameterised gradient DReG (Tucker et al., 2019).

A model may have one latent (`encode` returns a Distribution) or several (`encode` returns a dict
of Distributions, `prior()` a dict with the same keys, `decode` takes a dict). The gradient
estimator is chosen per latent: `estimator="score"` or `estimator={"z": "reparam", "c": "score"}`.
Values are per example ([B]); their gradients are those of the chosen estimators.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Distribution, Independent, Normal, kl_divergence

from .estimators import MovingAverage, draw, leave_one_out, score_term, vimco_signal


def kl(q: Distribution, p: Distribution, z: torch.Tensor | None = None, analytic: bool | None = None) -> torch.Tensor:
    """KL(q || p): closed form when torch knows the pair, else log q(z) - log p(z) at z ~ q.

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


def _kl_normal_fixed_prior(q: Distribution, p: Distribution) -> torch.Tensor | None:
    """Closed-form KL between factorised Normals when the prior's parameters are constants (no gradient),
    with fewer recorded operations than the general formula; None when the pair is not of that kind.
    The prior's constants are computed once per prior object (see `distributions.FixedPrior`)."""
    if not (isinstance(q, Independent) and isinstance(p, Independent) and q.reinterpreted_batch_ndims == 1
            and p.reinterpreted_batch_ndims == 1 and type(q.base_dist) is Normal and type(p.base_dist) is Normal):
        return None
    qb, pb = q.base_dist, p.base_dist
    if pb.loc.requires_grad or pb.scale.requires_grad:
        return None
    mu, sigma = qb.loc, qb.scale
    log_sigma = getattr(qb, "log_scale", None)
    log_sigma = sigma.log() if log_sigma is None else log_sigma
    if torch.compiler.is_compiling():  # the compiler fuses the general formula; no cache to guard on
        c = {"standard": False, "loc": pb.loc, "inv_2s2": 0.5 / pb.scale.pow(2), "log_s_half": pb.scale.log() - 0.5}
    else:
        c = _prior_constants(pb)
    if c["standard"]:  # sum_i (mu_i^2 + sigma_i^2) / 2 - log sigma_i - 1/2
        return (torch.addcmul(mu * mu, sigma, sigma) * 0.5 - log_sigma).sum(-1) - 0.5 * mu.shape[-1]
    # sum_i (sigma_i^2 + (mu_i - m_i)^2) / (2 s_i^2) - log sigma_i + log s_i - 1/2
    d = mu - c["loc"]
    return (torch.addcmul(d * d, sigma, sigma) * c["inv_2s2"] - log_sigma + c["log_s_half"]).sum(-1)


def _prior_constants(pb: Normal) -> dict:
    """m, 1 / (2 s^2), log s - 1/2 and whether p is N(0, I), cached on the prior object while its
    parameters are unchanged."""
    versions = (pb.loc._version, pb.scale._version)
    c = getattr(pb, "_kl_constants", None)
    if c is None or c["versions"] != versions:
        with torch.no_grad():
            loc, scale = pb.loc, pb.scale
            c = {"versions": versions, "loc": loc, "inv_2s2": 0.5 / scale.pow(2), "log_s_half": scale.log() - 0.5,
                 "standard": bool((loc == 0).all() and (scale == 1).all())}
        pb._kl_constants = c
    return c


def kl_per_dim(q: Distribution, p: Distribution) -> torch.Tensor:
    """KL(q(z_i|x) || p(z_i)) per latent dimension, [B, d], for factorised (Independent) q and p."""
    qb = q.base_dist if isinstance(q, Independent) else q
    pb = p.base_dist if isinstance(p, Independent) else p
    return kl_divergence(qb, pb)


def free_bits(kl_dims: torch.Tensor, lam: float) -> torch.Tensor:
    """Free bits: sum_i max(lambda, mean_batch KL_i); kl_dims [B, d] -> scalar."""
    return torch.clamp(kl_dims.mean(0), min=lam).sum()


def _sites(d) -> dict[str, Distribution]:
    return d if isinstance(d, dict) else {"z": d}


def _estimators(estimator, names) -> dict[str, str]:
    if isinstance(estimator, str):
        return {n: estimator for n in names}
    unknown = set(estimator) - set(names)
    if unknown:
        raise ValueError(f"estimator given for unknown latent(s) {sorted(unknown)}; the model's latents are {sorted(names)}")
    return {n: estimator.get(n, "reparam") for n in names}


def _decode(model, z: dict, like):
    return model.decode(z if isinstance(like, dict) else z["z"])


def nll(p: Distribution, x: torch.Tensor) -> torch.Tensor:
    """-log p(x), with a shorter path for a factorised Bernoulli given by logits:
    -log p(x|z) = sum_d BCE(logits_d, x_d)."""
    base = p.base_dist if isinstance(p, Independent) else None
    if isinstance(base, Bernoulli) and p.reinterpreted_batch_ndims == 1 and "logits" in base.__dict__:
        logits = base.logits
        return F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
    return -p.log_prob(x)


def log_prob(p: Distribution, x: torch.Tensor) -> torch.Tensor:
    """p.log_prob(x), by the same shorter path as `nll` for a factorised Bernoulli given by logits."""
    return -nll(p, x)


def elbo_terms(model, x: torch.Tensor, beta: float = 1.0, estimator="reparam", k: int = 1,
               baseline: str | MovingAverage | None = None, analytic_kl: bool | None = None,
               temperature: float = 0.5, free_bits: float = 0.0) -> dict[str, torch.Tensor]:
    """Per-example beta-ELBO with its reconstruction and KL terms, each [B], averaged over k samples.

    baseline (score-function latents only): None, "leave-one-out" (k >= 2) or a MovingAverage.
    free_bits > 0 replaces each latent dimension's KL by max(lambda, its batch mean) in "elbo" (the
    training objective then); "kl" stays the true KL.
    """
    t = negative_elbo_terms(model, x, beta, estimator, k, baseline, analytic_kl, temperature, free_bits)
    return {"elbo": -t["loss"], "recon": -t["nll"], "kl": t["kl"]}


def negative_elbo_terms(model, x: torch.Tensor, beta: float = 1.0, estimator="reparam", k: int = 1,
                        baseline: str | MovingAverage | None = None, analytic_kl: bool | None = None,
                        temperature: float = 0.5, free_bits: float = 0.0) -> dict[str, torch.Tensor]:
    """`elbo_terms` with the signs a loss wants, each [B]: "loss" = -ELBO_beta, "nll" = -E_q log p(x|z),
    "kl". Computed in this form, a training step records no negations."""
    posterior = model.encode(x)
    qs, ps = _sites(posterior), _sites(model.prior())
    est = _estimators(estimator, qs)
    shape = (k,) if k > 1 else ()
    z, log_q = {}, {}
    for name, q in qs.items():
        z[name], log_q[name] = draw(q, est[name], shape, temperature)
    rec = nll(_decode(model, z, posterior), x)  # -log p(x|z), [K, B] or [B]
    kls, mc_kl = [], 0.0
    for name, q in qs.items():
        relaxed = est[name] in ("gumbel", "straight-through")  # always the closed-form discrete KL
        kl_s = None
        if analytic_kl is not False or relaxed:
            kl_s = _kl_normal_fixed_prior(q, ps[name])
            try:
                kl_s = kl_divergence(q, ps[name]) if kl_s is None else kl_s
            except NotImplementedError:
                if analytic_kl or relaxed:
                    raise
        if kl_s is None:
            kl_s = q.log_prob(z[name]) - ps[name].log_prob(z[name])  # Monte-Carlo KL at the sample
            mc_kl = mc_kl + kl_s
        kls.append(kl_s)
    kl_z = kls[0] if len(kls) == 1 else sum(kls)
    kl_train = kl_z if free_bits <= 0 else sum(_free_bits_per_example(q, ps[n], free_bits) for n, q in qs.items())
    loss = rec + (kl_train if beta == 1 else beta * kl_train)  # -ELBO_beta = -E_q log p(x|z) + beta KL(q(z|x) || p(z))
    scored = [n for n in qs if log_q[n] is not None]
    if scored:
        signal = -(rec + beta * mc_kl)  # the sample-dependent part of the ELBO
        if baseline == "leave-one-out":
            b = leave_one_out(signal)
        elif isinstance(baseline, MovingAverage):
            b = baseline(signal)
        elif baseline is None:
            b = 0.0
        else:
            raise ValueError(f"baseline must be None, 'leave-one-out' or a MovingAverage, got {baseline!r}")
        loss = loss - sum(score_term(log_q[n], signal, b) for n in scored)
    if k > 1:
        loss, rec, kl_z = loss.mean(0), rec.mean(0), kl_z.mean(0) if kl_z.dim() > 1 else kl_z
    return {"loss": loss, "nll": rec, "kl": kl_z}


def _free_bits_per_example(q: Distribution, p: Distribution, lam: float) -> torch.Tensor:
    """Per-example terms whose batch mean is sum_i max(lambda, mean_batch KL_i): dimensions under lambda
    count as lambda and pass no gradient."""
    kl_dims = kl_per_dim(q, p)  # [B, d]
    above = (kl_dims.detach().mean(0) > lam).to(kl_dims.dtype)
    return (above * kl_dims + (1 - above) * lam).sum(-1)


def elbo(model, x: torch.Tensor, **options) -> torch.Tensor:
    """The evidence lower bound per example: E_q[log p(x|z)] - KL(q(z|x) || p(z)), [B]."""
    return elbo_terms(model, x, **options)["elbo"]


def vae_loss(model, x: torch.Tensor, beta: float = 1.0, **options) -> dict[str, torch.Tensor]:
    """Training loss -mean(ELBO_beta) under "loss", with the batch means of recon and KL beside it."""
    t = negative_elbo_terms(model, x, beta, **options)
    return {"loss": t["loss"].mean(), "recon": -t["nll"].detach().mean(), "kl": t["kl"].detach().mean()}


def iwae_loss(model, x: torch.Tensor, k: int = 5, estimator="reparam", dreg: bool = False) -> dict[str, torch.Tensor]:
    """Training loss -mean(IWAE_K bound) under "loss" (Burda et al., 2016)."""
    bound = iwae_bound(model, x, k, estimator, dreg)
    return {"loss": -bound.mean(), "iwae": bound.mean()}


def _detached(q: Distribution) -> Distribution:
    """q with its parameters cut from the graph (DReG evaluates log q(z) with stopped parameters)."""
    if isinstance(q, Independent):
        return Independent(_detached(q.base_dist), q.reinterpreted_batch_ndims)
    if isinstance(q, Normal):
        return Normal(q.loc.detach(), q.scale.detach(), validate_args=False)
    raise TypeError(f"DReG needs a Normal posterior, got {type(q).__name__}")


def log_weights(model, x: torch.Tensor, k: int, estimator="reparam", dreg: bool = False):
    """Importance log-weights log w_k = log p(x, z_k) - log q(z_k|x), [K, B], with per-site log q for scoring."""
    posterior = model.encode(x)
    qs, ps = _sites(posterior), _sites(model.prior())
    est = _estimators(estimator, qs)
    z, score_lq, log_w = {}, {}, 0.0
    for name, q in qs.items():
        if est[name] not in ("reparam", "score"):
            raise ValueError(f"IWAE needs densities at the samples: use 'reparam' or 'score' for latent {name!r}")
        z[name], lq = draw(q, est[name], (k,))
        if lq is not None:
            score_lq[name] = lq
        q_eval = _detached(q) if dreg and est[name] == "reparam" else q
        log_w = log_w + ps[name].log_prob(z[name]) - (lq if lq is not None else q_eval.log_prob(z[name]))
    log_w = log_w + log_prob(_decode(model, z, posterior), x)  # [K, B]
    return log_w, z, score_lq


def iwae_bound(model, x: torch.Tensor, k: int = 10, estimator="reparam", dreg: bool = False) -> torch.Tensor:
    """IWAE bound per example, log (1/K) sum_k p(x, z_k) / q(z_k|x), [B]; L_1 is the ELBO.

    Score-function latents get the VIMCO leave-one-out signal; `dreg=True` gives reparameterised
    latents the doubly reparameterised gradient (encoder weights w~_k^2 instead of w~_k).
    """
    if k < 1:
        raise ValueError(f"k must be a positive number of samples, got {k}")
    log_w, z, score_lq = log_weights(model, x, k, estimator, dreg)
    bound = torch.logsumexp(log_w, 0) - math.log(k)  # L_K = log (1/K) sum_k w_k
    if dreg:
        w_norm = torch.softmax(log_w.detach(), 0)  # w~_k = w_k / sum_j w_j
        for t in z.values():
            if t.requires_grad:
                t.register_hook(lambda g, w=w_norm: g * w.view(*w.shape, *([1] * (g.dim() - w.dim()))))
        surrogate = (w_norm * log_w).sum(0)  # grad: sum_k w~_k grad log w_k, the z-path scaled once more by w~_k
        bound = bound.detach() + surrogate - surrogate.detach()
    if score_lq:
        signal = vimco_signal(log_w.detach())
        bound = bound + sum((lq - lq.detach()) * signal for lq in score_lq.values()).sum(0)
    return bound
