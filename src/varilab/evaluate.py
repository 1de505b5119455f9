"""Test-split metrics of a trained run, in nats per test point."""
from __future__ import annotations

import torch

from .core import elbo_terms
from .run import Run
from .train import evaluate, test_inputs


def evaluate_run(run: Run, seed: int = 0) -> dict:
    """Mean ELBO, reconstruction log-likelihood and KL over the test split (Monte-Carlo with a fixed seed);
    for a linear-vae also the exact negative log-likelihood -log N(x; b, W W^T + sigma^2 I)."""
    device = next(run.model.parameters()).device
    x = test_inputs(run.data.x_test.to(device), run.data)
    torch.manual_seed(seed)
    m = evaluate(run.model, x, elbo_terms)
    result = {"data": run.data.name, "n_test": len(x), "elbo": m["elbo"], "recon": m["recon"], "kl": m["kl"]}
    if hasattr(run.model, "marginal"):
        with torch.no_grad():
            result["exact_nll"] = float(-run.model.marginal().log_prob(x).mean())
    return result
