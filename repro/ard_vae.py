"""ARD-VAE: the number of relevant latent dimensions, found from a 32-latent model.

On linear-Gaussian data with k = 3, 5, 8 true dimensions (k large eigenvalues over a small noise floor)
and on the shapes data (5 factors), an ARD-VAE with 32 latents should report k relevant dimensions
(within +-1): the axes that cover 99% of tau_j * E||d mean(x|z)/d z_j||^2. A beta-VAE's active-unit
count is shown beside it.
"""
from __future__ import annotations

import torch

from varilab.data import load
from varilab.diagnostics import diagnose, relevant_dims
from varilab.models import build_model
from varilab.train import fit


def train_pair(ds, gaussian: bool, epochs: int, hidden: list[int], out: str) -> tuple[int, int, list[float]]:
    options = dict(likelihood="gaussian", obs_var=0.05) if gaussian else {}
    torch.manual_seed(0)
    ard = build_model("ard-vae", ds.x_dim, latent_dim=32, hidden=hidden, **options)
    ard.config.refresh_points = min(5000, len(ds.x_train) // 2)
    fit(ard, ds, out=f"{out}/ard", epochs=epochs, batch_size=100, lr=2e-3, quiet=True)
    d = diagnose(ard, ds.x_test)
    torch.manual_seed(0)
    vae = build_model("vae", ds.x_dim, latent_dim=32, hidden=hidden, **options)
    fit(vae, ds, out=f"{out}/vae", epochs=epochs, batch_size=100, lr=2e-3, quiet=True)
    au = diagnose(vae, ds.x_test).active_units
    return len(relevant_dims(d.relevance)), au, sorted(ard.tau.tolist(), reverse=True)[:10]


def run(quick: bool = False) -> dict:
    rows = []
    ks = [3] if quick else [3, 5, 8]
    for k in ks:
        ds = load("linear-gaussian", spectrum=[6.0 - 0.5 * i for i in range(k)] + [0.01], dim=16,
                  n=4000 if quick else 10_000, seed=k)
        found, au, tau = train_pair(ds, True, 40 if quick else 60, [64], f"/tmp/varilab-repro-ard/lg{k}")
        rows.append({"data": f"linear-gaussian, k = {k}", "true": k, "ard_relevant": found, "vae_active_units": au,
                     "top_tau": tau})
    if not quick:
        ds = load("shapes", n=10_000, size=32, seed=0)
        found, au, tau = train_pair(ds, False, 40, [256], "/tmp/varilab-repro-ard/shapes")
        rows.append({"data": "shapes (5 factors)", "true": 5, "ard_relevant": found, "vae_active_units": au,
                     "top_tau": tau})
    held = all(abs(r["ard_relevant"] - r["true"]) <= 1 for r in rows)
    table = ["| data | true dimensions | ARD-VAE relevant dimensions (ours) | difference | beta-VAE (beta = 1) active units |",
             "|---|---|---|---|---|"]
    table += [f"| {r['data']} | {r['true']} | {r['ard_relevant']} | {r['ard_relevant'] - r['true']:+d} | "
              f"{r['vae_active_units']} |" for r in rows]
    return {"title": "ARD-VAE: finding the number of relevant latent dimensions",
            "finding": "a 32-latent ARD-VAE reports the true number of dimensions within +-1",
            "held": bool(held), "table": "\n".join(table), "rows": rows,
            "notes": "Linear-Gaussian data: 16 dimensions, k eigenvalues 6, 5.5, ... over a floor of 0.01, Gaussian "
                     "likelihood with variance 0.05. ARD-VAE: prior N(0, diag tau), tau_j = mean of mu_j(x)^2 over about "
                     "5,000 encoded training points, refreshed every such batch of points; relevant dimensions = the "
                     "fewest axes covering 99% of tau_j E||d mean(x|z)/d z_j||^2 on 256 test points. Both models: MLP, "
                     "Adam 2e-3, batch 100. The paper reports this on image data sets rather than as a table we can "
                     "copy; the reference column is the known number of generating dimensions."}
