"""ARD-VAE: the number of relevant latent dimensions, found from a 32-latent model.

On linear-Gaussian data with k = 3, 5, 8 true dimensions (k large eigenvalues over a small noise floor), on disks
(three continuous, non-circular factors: x, y, radius) and on the shapes data, an ARD-VAE with 32 latents should
report the data's dimension (within +-1): the axes that cover 99% of tau_j * E||d mean(x|z)/d z_j||^2. A beta-VAE's
active-unit count is shown beside it, and the data's dimension measured without a model (two-NN, MLE) beside both.

The shapes' dimension is counted, not taken as their 5 factors: a smooth code of them needs 2 coordinates for the
shape (3 categories), 1 for scale, 2 for rotation (a circle), 1 each for x and y: 7. Their manifold (each shape's
piece) is 4-dimensional.
"""
from __future__ import annotations

import torch

from varilab.data import load
from varilab.diagnostics import diagnose, relevant_dims
from varilab.diagnostics.intrinsic import intrinsic_dimension
from varilab.models import build_model
from varilab.train import fit


def shape_factors(ds) -> dict:
    """The shapes' factors on the test split as regressors. Rotation enters as sin and cos of 1, 2 and 4 times the
    angle (one per shape's symmetry: heart, ellipse, square), so a circular code would show up."""
    import math

    import numpy as np

    y = ds.y_test.numpy().astype(int)
    theta = y[:, 2] * 2 * math.pi / 20
    one_hot = np.eye(3)[y[:, 0]]
    rotation = np.concatenate([one_hot[:, [s]] * f(k * theta)[:, None]
                               for s, k in enumerate((4, 2, 1)) for f in (np.sin, np.cos)], 1)
    return {"shape": one_hot, "scale": y[:, 1:2], "rotation": rotation, "x": y[:, 3:4], "y": y[:, 4:5]}


def disk_factors(ds) -> dict:
    y = ds.y_test.numpy()
    return {"x": y[:, 0:1], "y": y[:, 1:2], "radius": y[:, 2:3]}


def factor_probe(model, ds, dims: list[int], groups: dict) -> list[dict]:
    """For each relevant latent j, the factor that best explains E[z_j|x] on the test split by linear least
    squares, with its R^2 (and rotation's, where there is one)."""
    import numpy as np

    with torch.no_grad():
        mu = model.encode(ds.x_test).mean.numpy()

    def r2(features, target):
        a = np.c_[features.astype(float), np.ones(len(target))]
        coef, *_ = np.linalg.lstsq(a, target, rcond=None)
        return float(1 - ((target - a @ coef) ** 2).sum() / ((target - target.mean()) ** 2).sum())

    out = []
    for j in dims:
        scores = {g: r2(f, mu[:, j]) for g, f in groups.items()}
        best = max(scores, key=scores.get)
        out.append({"latent": j, "factor": best, "r2": scores[best], "r2_rotation": scores.get("rotation", 0.0)})
    return out


def train_pair(ds, gaussian: bool, epochs: int, hidden: list[int], out: str, probe=None):
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
    rel = relevant_dims(d.relevance)
    result = (len(rel), au, sorted(ard.tau.tolist(), reverse=True)[:10])
    return (*result, factor_probe(ard, ds, rel, probe(ds))) if probe else result


def run(quick: bool = False) -> dict:
    rows = []
    ks = [3] if quick else [3, 5, 8]
    for k in ks:
        ds = load("linear-gaussian", spectrum=[6.0 - 0.5 * i for i in range(k)] + [0.01], dim=16,
                  n=4000 if quick else 10_000, seed=k)
        found, au, tau = train_pair(ds, True, 40 if quick else 60, [64], f"/tmp/varilab-repro-ard/lg{k}")
        rows.append({"data": f"linear-gaussian, k = {k}", "true": k, "ard_relevant": found, "vae_active_units": au,
                     "top_tau": tau})
    ds = load("disks", n=3000 if quick else 10_000, size=32, seed=0)
    found, au, tau, probe = train_pair(ds, False, 15 if quick else 40, [256], "/tmp/varilab-repro-ard/disks",
                                       probe=disk_factors)
    rows.append({"data": "disks (x, y, radius)", "true": 3, "ard_relevant": found, "vae_active_units": au,
                 "top_tau": tau, "probe": probe, **_measured(ds)})
    if not quick:
        ds = load("shapes", n=10_000, size=32, seed=0)
        found, au, tau, probe = train_pair(ds, False, 40, [256], "/tmp/varilab-repro-ard/shapes",
                                            probe=shape_factors)
        rows.append({"data": "shapes (5 factors: 2 + 1 + 2 + 1 + 1 coordinates)", "true": 7, "ard_relevant": found,
                     "vae_active_units": au, "top_tau": tau, "probe": probe, **_measured(ds)})
    held = all(abs(r["ard_relevant"] - r["true"]) <= 1 for r in rows)
    table = ["| data | true dimensions | two-NN / MLE (no model) | ARD-VAE relevant dimensions (ours) | difference | "
             "beta-VAE (beta = 1) active units |", "|---|---|---|---|---|---|"]
    table += [f"| {r['data']} | {r['true']} | {_pair(r)} | {r['ard_relevant']} | "
              f"{r['ard_relevant'] - r['true']:+d} | {r['vae_active_units']} |" for r in rows]
    return {"title": "ARD-VAE: finding the number of relevant latent dimensions",
            "finding": "a 32-latent ARD-VAE reports the true number of dimensions within +-1",
            "held": bool(held), "table": "\n".join(table), "rows": rows,
            "notes": "Linear-Gaussian data: 16 dimensions, k eigenvalues 6, 5.5, ... over a floor of 0.01, Gaussian "
                     "likelihood with variance 0.05. ARD-VAE: prior N(0, diag tau), tau_j = mean of mu_j(x)^2 over about "
                     "5,000 encoded training points, refreshed every such batch of points; relevant dimensions = the "
                     "fewest axes covering 99% of tau_j E||d mean(x|z)/d z_j||^2 on 256 test points. Both models: MLP, "
                     "Adam 2e-3, batch 100. The paper reports this on image data sets rather than as a table we can "
                     "copy; the reference column is the known number of generating dimensions (for the shapes, the "
                     "coordinates a smooth code of their factors needs). Two-NN and MLE: scikit-dimension's "
                     "estimators on at most 5,000 distinct training rows; they need a continuum of nearby points, "
                     "which the disks are and the shapes (binary pixels, factors on grids of 3 to 20 values: "
                     "neighbours sit a whole grid step apart) are not, so on the shapes they overshoot."
                     + _probe_note(rows)}


def _pair(r: dict) -> str:
    return f"{r['two_nn']:.2f} / {r['mle']:.2f}" if "two_nn" in r else "–"


def _measured(ds) -> dict:
    """The data's intrinsic dimension without a model: two-NN and MLE on the training rows."""
    return {m.replace("twonn", "two_nn"): intrinsic_dimension(ds.x_train.numpy(), m) for m in ("twonn", "mle")}


def _probe_note(rows: list[dict]) -> str:
    """Which factor each relevant latent tracks, per data set with a probe."""
    out = ""
    for r in (r for r in rows if "probe" in r):
        probe = r["probe"]
        counts = {}
        for p in probe:
            counts[p["factor"]] = counts.get(p["factor"], 0) + 1
        out += (f" {r['data'].split(' (')[0].capitalize()}: which factor each relevant latent tracks (linear probe on "
                "the test split, best factor and R^2): " + ", ".join(f"z{p['latent']} {p['factor']} {p['r2']:.2f}"
                                                                    for p in probe)
                + " (" + ", ".join(f"{n} x {f}" for f, n in sorted(counts.items())) + ").")
        if r["data"].startswith("shapes"):
            out += (f" The largest R^2 of rotation (sin and cos at each shape's symmetry) is "
                    f"{max(p['r2_rotation'] for p in probe):.2f}: the count matches the coordinates a code of the "
                    "factors needs, but the axes are not that code: position and scale are spread non-linearly over "
                    "more axes than their count, and rotation (a few pixels at this size) is barely encoded.")
    return out
