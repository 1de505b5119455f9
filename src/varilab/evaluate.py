"""Test-split metrics of a trained run, in nats per test point."""
from __future__ import annotations

import functools

import torch

from .core import elbo_terms, hierarchical_elbo_terms, log_likelihood
from .run import Run
from .train import evaluate, test_inputs


def evaluate_run(run: Run, seed: int = 0, nll_k: list[int] | None = None) -> dict:
    """Mean ELBO, reconstruction log-likelihood and KL over the test split (Monte-Carlo with a fixed seed);
    for a linear-vae also the exact negative log-likelihood -log N(x; b, W W^T + sigma^2 I).

    With `nll_k`, the importance-sampled NLL for each K: "nll", "nll_se" and "elbo_gap" for the largest
    K, and "nll_sweep" (one entry per K) when several are given.
    """
    device = next(run.model.parameters()).device
    x = test_inputs(run.data.x_test.to(device), run.data)
    cond = None if run.data.c_test is None else run.data.c_test.to(device)
    torch.manual_seed(seed)
    if getattr(run.model, "levels", 1) > 1:
        m = evaluate(run.model, x, hierarchical_elbo_terms)
    else:
        m = evaluate(run.model, x, functools.partial(elbo_terms, estimator="score"), cond=cond)  # plain sampling
    result = {"data": run.data.name, "n_test": len(x), **{k: m[k] for k in m if k == "elbo" or k == "recon" or k.startswith("kl")}}
    if hasattr(run.model, "marginal") and cond is None:
        with torch.no_grad():
            result["exact_nll"] = float(-run.model.marginal().log_prob(x).mean())
    if nll_k:
        sweep = []
        for k in sorted(set(nll_k)):
            torch.manual_seed(seed)
            ll = log_likelihood(run.model, x, k=k, cond=cond)
            sweep.append({"k": k, "nll": ll["nll"], "nll_se": ll["nll_se"], "elbo_gap": ll["elbo_gap"]})
        result.update({key: sweep[-1][key] for key in ("nll", "nll_se", "elbo_gap")})
        result["k"] = sweep[-1]["k"]
        if len(sweep) > 1:
            result["nll_sweep"] = sweep
    return result
