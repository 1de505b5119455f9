"""Posterior collapse in conditional and hierarchical VAEs (Dang et al., 2023), linear models.

CVAE, q(z|y, c), p(y|z, c) = N(W z + U c + b, s^2 I): the latent models what the condition c does not
explain, so latent i collapses iff the i-th eigenvalue of the residual second moment
Sigma_yy - Sigma_yc Sigma_cc^-1 Sigma_cy is at most beta s^2. The more c predicts y, the smaller that
residual and the more latents collapse.

MHVAE, x <- z_1 <- z_2 with the first level's encoder variance s_1^2 fixed and q(z_2|z_1)'s learned: while
s_1^2 >= beta_2 / beta_1, first-level direction i is active iff theta_i^2 > beta_2 s^2, so raising the second
level's weight beta_2 collapses first-level directions; below that, z_1 keeps theta_i > sqrt(beta_1) s_1.
Both are checked, counts and encoder singular values, against the closed-form optimum.
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
    table += [f"| linear MHVAE, z_1 (beta_1 = 1, s_1^2 = {r['enc_var_1']:g}, regime {r['regime']}) | - | {r['beta2']:g} | "
              f"{r['predicted_active']} | {r['active_units']} | {r['difference']:+d} |" for r in hvae_rows]
    regime1 = [r["active_units"] for r in hvae_rows if r["regime"] == 1]
    hvae_exact = all(r["difference"] == 0 and r["max_rel_error_lambda"] < 0.05 for r in hvae_rows)
    hvae_monotone = all(b <= a for a, b in zip(regime1, regime1[1:])) and regime1[-1] < regime1[0]
    return {"title": "Posterior collapse in linear conditional and hierarchical VAEs (Dang et al.)",
            "finding": "a linear CVAE keeps exactly the latents whose residual eigenvalue (after regressing the output on "
                       "the condition) exceeds beta s^2, so collapse grows with the input-output correlation; in the "
                       "linear MHVAE with a fixed first-level encoder variance s_1^2 >= beta_2 / beta_1, the "
                       "second-level weight beta_2 sets the first level's threshold (theta_i^2 > beta_2), so raising it "
                       "collapses first-level latents, while below that regime z_1 keeps theta_i > sqrt(beta_1) s_1",
            "held": bool(cvae_ok and hvae_monotone and hvae_exact), "table": "\n".join(table), "rows": rows,
            "hvae_rows": hvae_rows,
            "checks": {"cvae_counts_exact_and_monotone": cvae_ok, "hvae_counts_and_singular_values_match_theory": hvae_exact,
                       "hvae_collapse_grows_with_beta2": hvae_monotone},
            "notes": f"CVAE data: y in R^8 with covariance eigenvalues {LAMBDA} in a random basis; the condition c in R^4 sees "
                     "the first four directions with correlation sqrt(rho). Theory: eigenvalues of the training split's "
                     "residual second moment. Model: linear-cvae (8 latents, s^2 = 1), Adam lr 0.01, batch 500, "
                     f"{epochs} epochs on {n} samples. Active unit: Cov_x(E[z_i|x]) > 0.01 on the test split. MHVAE: "
                     f"linear-hvae on linear-gaussian data (dimension 10, eigenvalues {HVAE_SPECTRUM} over a floor "
                     "of 0.01), z_1 and z_2 of size 6, q(z_1|x) variance s_1^2 fixed, q(z_2|z_1) variance learned "
                     "(a constant), p(z_1|z_2) and p(x|z_1) of variance 1, p(z_2) = N(0, I) (the paper's "
                     "eta_enc = eta_dec = 1), float64, 1000 Adam steps (lr 0.02) then L-BFGS on the exact expected "
                     "loss (models.hvae.linear_expected_loss, checked against the Monte-Carlo ELBO in the tests). "
                     "Theory: the optimum of Dang et al.'s Theorem for the learnable-Sigma_2 MHVAE on the training "
                     "split's eigenvalues (repro mhvae_theory); regime 1 is s_1^2 >= beta_2 / beta_1. Measured: "
                     "directions with Cov_x(E[z_1|x]) eigenvalue > 0.01 on the test split (z_1's space is "
                     "rotation-invariant, so axes would over-count), and the largest relative error of the encoder's "
                     "singular values on whitened data against the theory: "
                     + ", ".join(f"{r['max_rel_error_lambda']:.3f}" for r in hvae_rows) + ". Earlier versions did not "
                     "reproduce this: their HVAE objective took the closed-form KL(q(z_1|x) || p(z_1|z_2)) at a z_2 "
                     "drawn from the same z_1, which is not the ELBO (now fixed in core.hierarchical), and their "
                     "q(z_2|z_1) variance depended on z_1."}


HVAE_SPECTRUM = [9.0, 6.0, 4.0, 2.5, 1.5, 0.6]
HVAE_SWEEP = [(6.0, 0.5), (6.0, 1.0), (6.0, 2.0), (6.0, 3.0), (6.0, 5.0), (1.0, 2.2), (1.0, 4.0)]  # (s_1^2, beta_2)


def mhvae_theory(theta2: np.ndarray, s1: float, beta1: float, beta2: float) -> np.ndarray:
    """Singular values of the first-level encoder map on whitened data at the optimum of the linear MHVAE
    (Dang et al., 2023, learnable q(z_2|z_1) variance, q(z_1|x) variance s_1^2 fixed; eta_enc = eta_dec = 1).

    theta_i^2 are the data's second-moment eigenvalues. If s_1^2 >= beta_2 / beta_1:
    lambda_i = s_1 / sqrt(beta_2) sqrt(max(0, theta_i^2 - beta_2)), so direction i is active iff theta_i^2 > beta_2.
    Otherwise, where s_1^2 theta_i^2 / beta_2 < beta_2 / beta_1 (z_2 collapsed there):
    lambda_i = sqrt(max(0, s_1 / sqrt(beta_1) (theta_i - sqrt(beta_1) s_1))), active iff theta_i > sqrt(beta_1) s_1;
    elsewhere the first formula again."""
    theta = np.sqrt(theta2)
    first = np.sqrt(s1 / beta2 * np.clip(theta2 - beta2, 0, None))  # s_1 is a variance here: sqrt(s_1^2 / beta_2 ...)
    if s1 >= beta2 / beta1:
        return first
    sd1 = np.sqrt(s1)
    second = np.sqrt(np.clip(sd1 / np.sqrt(beta1) * (theta - np.sqrt(beta1) * sd1), 0, None))
    return np.where(s1 * theta2 / beta2 < beta2 / beta1, second, first)


def train_hvae_exact(model, cov: torch.Tensor, mean: torch.Tensor, betas, steps: int) -> None:
    """Adam to the basin, then L-BFGS to the optimum, on the closed-form expected loss."""
    from varilab.models.vae.hvae import linear_expected_loss

    enc1, dec1 = model.enc1[0], model.dec1[0]
    params = [enc1.weight, dec1.weight, model.enc2[0].weight, model.dec2[0].weight, model.enc_log_var_2]

    def loss():
        with torch.no_grad():  # the biases at their optimum (see linear_expected_loss)
            enc1.bias.copy_(-enc1.weight @ mean)
        return linear_expected_loss(model, cov, betas)

    with torch.no_grad():
        dec1.bias.copy_(mean)
        model.enc2[0].bias.zero_()
        model.dec2[0].bias.zero_()
    opt = torch.optim.Adam(params, lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()
    lbfgs = torch.optim.LBFGS(params, max_iter=1000, tolerance_grad=1e-10, tolerance_change=1e-14,
                              line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        value = loss()
        value.backward()
        return value

    lbfgs.step(closure)
    loss()


def hvae_sweep(quick: bool) -> list[dict]:
    from varilab.data import load

    ds = load("linear-gaussian", spectrum=HVAE_SPECTRUM, dim=10, n=6000 if quick else 20_000, seed=1)
    x = ds.x_train.double()
    mean = x.mean(0)
    cov = (x - mean).T @ (x - mean) / len(x)
    lam = np.sort(np.linalg.eigvalsh(cov.numpy()))[::-1][:6]
    rows = []
    sweep = [(6.0, 0.5), (6.0, 3.0), (1.0, 4.0)] if quick else HVAE_SWEEP
    for s1, beta2 in sweep:
        torch.manual_seed(0)
        model = build_model("linear-hvae", 10, latent_dim=6, latent_dim_2=6, enc_var_1=s1, obs_var=1.0).double()
        model.obs_log_var.requires_grad_(False)
        train_hvae_exact(model, cov, mean, (1.0, beta2), 300 if quick else 1000)
        with torch.no_grad():  # z_1's space is rotation-invariant here, so count directions, not axes
            mu = model.encode(ds.x_test.double()).mean
        act = int((np.linalg.eigvalsh(np.cov(mu.numpy().T)) > 0.01).sum())
        theory = mhvae_theory(lam, s1, 1.0, beta2)
        a1 = model.enc1[0].weight.detach()
        measured = np.sort(np.sqrt(np.clip(np.linalg.eigvalsh((a1 @ cov @ a1.T).numpy()), 0, None)))[::-1]
        on = theory > 0
        rel_err = float(np.max(np.abs(measured[on] - theory[on]) / theory[on])) if on.any() else 0.0
        predicted = int(on.sum())
        rows.append({"enc_var_1": s1, "beta2": beta2, "regime": 1 if s1 >= beta2 else 2, "predicted_active": predicted,
                     "active_units": act, "difference": act - predicted, "lambda_theory": theory.tolist(),
                     "lambda_measured": measured.tolist(), "max_rel_error_lambda": rel_err})
    return rows
