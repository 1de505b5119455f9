"""Posterior collapse in conditional and hierarchical VAEs (Dang et al., 2023), linear models.

CVAE, q(z|y, c), p(y|z, c) = N(W z + U c + b, s^2 I): the latent models what the condition c does not
explain, so latent i collapses iff the i-th eigenvalue of the residual second moment
Sigma_yy - Sigma_yc Sigma_cc^-1 Sigma_cy is at most beta s^2. The more c predicts y, the smaller that
residual and the more latents collapse.

HVAE, x <- z_1 <- z_2 with the first level's encoder variance fixed: raising the second level's weight
beta_2 collapses first-level directions (we report the measured counts beside the regime-1 formula of
the paper, lambda_i > beta_2 s^2, whose assumptions our parameterisation only approximates).
"""
from __future__ import annotations

import numpy as np
import torch

from varilab.data import make_dataset
from varilab.diagnostics import diagnose
from varilab.models import build_model
from varilab.train import fit

LAMBDA = [8.0, 5.0, 3.0, 2.4, 1.6, 0.7, 0.4, 0.2]  # Cov(y); the first four directions are the ones c sees


def cvae_data(rho: float, n: int, seed: int = 0):
    """u ~ N(0, I_8), y = Q diag(sqrt(lambda)) u, c = sqrt(rho) u[:4] + sqrt(1 - rho) nu: Corr(c_j, u_j) = sqrt(rho)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    u = rng.standard_normal((n, 8))
    y = (u * np.sqrt(LAMBDA)) @ q.T
    c = np.sqrt(rho) * u[:, :4] + np.sqrt(1 - rho) * rng.standard_normal((n, 4))
    return y, c


def residual_eigenvalues(y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Eigenvalues of the Schur complement Sigma_yy - Sigma_yc Sigma_cc^-1 Sigma_cy (sample moments, centred)."""
    y, c = y - y.mean(0), c - c.mean(0)
    syy, syc, scc = y.T @ y / len(y), y.T @ c / len(y), c.T @ c / len(y)
    return np.sort(np.linalg.eigvalsh(syy - syc @ np.linalg.solve(scc, syc.T)))[::-1]


def run(quick: bool = False) -> dict:
    rhos = [0.0, 0.75] if quick else [0.0, 0.4, 0.75, 0.9]  # residual eigenvalues stay >= 0.2 from beta = 1
    n, epochs = (6000, 40) if quick else (20_000, 80)
    beta = 1.0
    rows = []
    for rho in rhos:
        y, c = cvae_data(rho, n)
        ds = make_dataset("linear-cvae", np.concatenate([y, c], 1), seed=0)
        ds.c_train, ds.c_test = ds.x_train[:, 8:].contiguous(), ds.x_test[:, 8:].contiguous()
        ds.x_train, ds.x_test, ds.condition = ds.x_train[:, :8].contiguous(), ds.x_test[:, :8].contiguous(), "given"
        theta = residual_eigenvalues(ds.x_train.double().numpy(), ds.c_train.double().numpy())
        torch.manual_seed(0)
        model = build_model("linear-cvae", 8, cond_dim=4, latent_dim=8, obs_var=1.0)
        fit(model, ds, out=f"/tmp/varilab-repro-cvae/{rho}", epochs=epochs, batch_size=500, lr=0.01, beta=beta, quiet=True)
        d = diagnose(model, ds.x_test, cond=ds.c_test)
        predicted = int((theta > beta).sum())
        rows.append({"model": "linear CVAE", "rho": rho, "beta": beta, "residual_eigenvalues": theta.tolist(),
                     "predicted_active": predicted, "active_units": d.active_units, "difference": d.active_units - predicted})
    counts = [r["active_units"] for r in rows]
    cvae_ok = all(r["difference"] == 0 for r in rows) and all(b <= a for a, b in zip(counts, counts[1:]))
    hvae_rows = hvae_sweep(quick)
    table = ["| model | input-output correlation rho | beta_2 | theory: active latents | measured active units | difference |",
             "|---|---|---|---|---|---|"]
    table += [f"| linear CVAE (beta = 1) | {r['rho']:g} | - | {r['predicted_active']} | {r['active_units']} | "
              f"{r['difference']:+d} |" for r in rows]
    table += [f"| linear HVAE, z_1 (beta_1 = 1, encoder variance 1 fixed) | - | {r['beta2']:g} | {r['predicted_active']} | "
              f"{r['active_units']} | {r['difference']:+d} |" for r in hvae_rows]
    hvae_counts = [r["active_units"] for r in hvae_rows]
    hvae_monotone = all(b <= a for a, b in zip(hvae_counts, hvae_counts[1:])) and hvae_counts[-1] < hvae_counts[0]
    notes_hvae = ("" if hvae_monotone else " The HVAE part did not reproduce: with our parameterisation (p(z_1|z_2) of "
                  "unit variance, first-level encoder variance fixed, beta_2 on KL(q(z_2|z_1) || p(z_2))) raising beta_2 "
                  "collapses z_2, not z_1; matching the paper's MHVAE parameterisation (its eta_enc prior scales and "
                  "which variances are learned) is the next step.")
    return {"title": "Posterior collapse in linear conditional and hierarchical VAEs (Dang et al.)",
            "finding": "a linear CVAE keeps exactly the latents whose residual eigenvalue (after regressing the output on "
                       "the condition) exceeds beta s^2, so collapse grows with the input-output correlation; in a "
                       "linear HVAE, raising beta_2 collapses first-level latents",
            "held": bool(cvae_ok and hvae_monotone), "table": "\n".join(table), "rows": rows, "hvae_rows": hvae_rows,
            "checks": {"cvae_counts_exact_and_monotone": cvae_ok, "hvae_collapse_grows_with_beta2": hvae_monotone},
            "notes": f"CVAE data: y in R^8 with covariance eigenvalues {LAMBDA} in a random basis; the condition c in R^4 sees "
                     "the first four directions with correlation sqrt(rho). Theory: eigenvalues of the training split's "
                     "residual second moment. Model: linear-cvae (8 latents, s^2 = 1), Adam lr 0.01, batch 500, "
                     f"{epochs} epochs on {n} samples. HVAE: linear-hvae on linear-gaussian data with eigenvalues "
                     f"{HVAE_SPECTRUM}, z_1 of size 6 with encoder variance fixed at 1, z_2 of size 6, s^2 = 1; the "
                     "'theory' column is the paper's regime-1 count lambda_i > beta_2 s^2, stated for its own "
                     "parameterisation (prior variances eta_enc), which ours matches only approximately. "
                     "Active unit: Cov_x(E[z_i|x]) > 0.01 on the test split." + notes_hvae}


HVAE_SPECTRUM = [9.0, 6.0, 4.0, 2.5, 1.5, 0.6]


def hvae_sweep(quick: bool) -> list[dict]:
    from varilab.core import hierarchical_loss
    import functools

    from varilab.data import load

    ds = load("linear-gaussian", spectrum=HVAE_SPECTRUM, dim=10, n=6000 if quick else 20_000, seed=1)
    lam = np.sort(np.linalg.eigvalsh(np.cov(ds.x_train.numpy().T)))[::-1]
    rows = []
    for beta2 in ([0.5, 3.0] if quick else [0.5, 1.0, 2.0, 3.0, 5.0]):
        torch.manual_seed(0)
        model = build_model("linear-hvae", 10, latent_dim=6, latent_dim_2=6, enc_var_1=1.0, obs_var=1.0)
        objective = functools.partial(hierarchical_loss, betas=[1.0, beta2])
        fit(model, ds, out=f"/tmp/varilab-repro-hvae/{beta2}", epochs=40 if quick else 80, batch_size=500, lr=0.01,
            objective=objective, quiet=True)
        act = diagnose(model, ds.x_test).active_units
        predicted = int((lam[:6] > beta2).sum())
        rows.append({"beta2": beta2, "predicted_active": predicted, "active_units": act, "difference": act - predicted})
    return rows
