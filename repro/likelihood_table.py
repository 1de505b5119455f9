"""Test log-likelihood of the VAE family on binarised images (Burda et al., 2016; pythae's benchmarks).

VAE, IWAE (K = 5 and 50), VampPrior and the two-level hierarchical VAE on dynamically binarised mnist-5k
and on binarised Fashion-MNIST; test NLL estimated with K = 5,000 importance samples. The finding holds
when IWAE beats the VAE and the hierarchical VAE beats the one-level VAE on both sets.
"""
from __future__ import annotations

import functools

import torch

from varilab.core import hierarchical_loss, iwae_loss, log_likelihood, vae_loss
from varilab.data import available, load
from varilab.models import build_model
from varilab.train import fit, test_inputs

MODELS = [("VAE", "vae", "elbo", 1), ("IWAE (K = 5)", "vae", "iwae", 5), ("IWAE (K = 50)", "vae", "iwae", 50),
          ("VampPrior", "vampprior", "elbo", 1), ("HVAE (2 levels)", "hvae", "elbo", 1)]


def objective(kind: str, model_name: str, k: int):
    if model_name == "hvae":
        return hierarchical_loss
    if kind == "iwae":
        return functools.partial(iwae_loss, k=k)
    return vae_loss


def run(quick: bool = False) -> dict:
    sets = [("mnist-5k", "dynamic", 60, 1000)]
    if available("fashion-mnist")[0]:
        sets.append(("fashion-mnist", "dynamic", 6, 1000))
    if quick:
        sets = [("mnist-5k", "dynamic", 2, 100)]
    k_test = 200 if quick else 5000
    rows = []
    for data, binarize, epochs, n_test in sets:
        ds = load(data, binarize=binarize, seed=0)
        x_test = test_inputs(ds.x_test, ds)[:n_test]
        for label, name, kind, k in MODELS:
            torch.manual_seed(0)
            model = build_model(name, ds.x_dim, latent_dim=32, hidden=[512], latent_dim_2=16)
            fit(model, ds, out=f"/tmp/varilab-repro-ll/{data}/{label}", epochs=epochs, batch_size=100, lr=1e-3,
                objective=objective(kind, name, k), quiet=True)
            model.eval()
            torch.manual_seed(1)
            ll = log_likelihood(model, x_test, k=k_test)
            rows.append({"data": data, "model": label, "nll": ll["nll"], "nll_se": ll["nll_se"], "epochs": epochs,
                         "n_test": len(x_test), "k_test": k_test})
    by = {(r["data"], r["model"]): r["nll"] for r in rows}
    held = all(by[(d, "IWAE (K = 50)")] < by[(d, "VAE")] and by[(d, "HVAE (2 levels)")] < by[(d, "VAE")]
               for d, *_ in sets)
    table = ["| data | model | test NLL (nats, ours) | +- SE | reference | difference |", "|---|---|---|---|---|---|"]
    table += [f"| {r['data']} | {r['model']} | {r['nll']:.2f} | {r['nll_se']:.2f} | - | - |" for r in rows]
    names = ", ".join(d for d, *_ in sets)
    return {"title": "Test log-likelihood of the VAE family",
            "finding": "IWAE (K = 50) and the two-level hierarchical VAE reach a lower test NLL than the VAE",
            "held": bool(held), "table": "\n".join(table), "rows": rows,
            "notes": f"Data: {names}, binarised dynamically for training (x ~ Bernoulli(pixel) per batch) and once, "
                     "with a fixed seed, for testing. Models: 784-512-32 MLPs (HVAE: z_2 of 16 on top), Adam 1e-3, batch "
                     f"100; epochs: {', '.join(f'{d} {e}' for d, _, e, _ in sets)}. NLL: importance sampling with the "
                     f"encoder as proposal, K = {k_test}, on the first {', '.join(str(n) for *_, n in sets)} test images. "
                     "Reference numbers (Burda et al.: VAE 86.76, IWAE K=50 84.78 nats on the full 60,000-image "
                     "MNIST with a different architecture) are not comparable to a 5,000-image training set or to "
                     "Fashion-MNIST, so the reference column is left empty and the finding is judged by the ordering."}
