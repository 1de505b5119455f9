"""The report page of a diffusion run: samples from two samplers beside test data, the denoising chain,
DiffuseVAE's VAE outputs beside their refinements, the DDPM's bound in bits per dimension, training
curves and the configuration."""
from __future__ import annotations

import dataclasses
import html
import time
from pathlib import Path

import numpy as np

from ..train import read_metrics
from . import plots
from .html import CSS, _img, _table

N_SHOW = 10


def _rows_figure(rows, shape):
    rows = [(label, np.asarray(a)) for label, a in rows]
    return plots.image_rows(rows, shape) if shape else plots.vector_rows(rows[:2])


def render(run_dir: str | Path) -> str:
    from .. import diffusion_run as D
    from ..models.diffusevae import DiffuseVAE

    run = D.load(run_dir)
    cfg, shape = run.config, run.data.image_shape
    metrics = read_metrics(run.dir)
    x_test = run.data.x_test[:N_SHOW].numpy()
    ddim = D.sample(run, N_SHOW, 50, "ddim", seed=0, chain=True)
    ancestral = D.sample(run, N_SHOW, 100, "ddpm", seed=1)
    sections = []
    if isinstance(run.model, DiffuseVAE):
        rows = [("VAE output", ddim["vae"].numpy()), ("refined (DDIM 50)", ddim["samples"].numpy())]
        sections.append(("VAE output and its refinement", "Each column: z drawn from the VAE prior, the VAE's decoded "
                         "mean x_hat = E[x|z], and the DDPM's refinement of it.", _rows_figure(rows, shape)))
    rows = [("test data", x_test), ("DDIM, 50 steps", ddim["samples"].numpy()),
            ("ancestral, 100 steps", ancestral["samples"].numpy())]
    sections.append(("Samples", "Test images above samples from two samplers.", _rows_figure(rows, shape)))
    chain = ddim["chain"]  # [51, n, D]
    picks = np.linspace(0, chain.shape[0] - 1, 8).round().astype(int)
    chain_rows = [(f"sample {i + 1}", chain[picks, i].numpy()) for i in range(min(4, chain.shape[1]))]
    if shape:
        sections.append(("Denoising chain", "The DDIM state x_t at eight evenly spaced steps, from noise (left) to the "
                         "sample (right), mapped to the data's range.", plots.image_rows(chain_rows, shape)))
    elif run.data.x_dim >= 2:
        many = D.sample(run, 1000, 50, "ddim", seed=2)["samples"].numpy()
        sections.append(("Samples against test data", "The first two coordinates.",
                         plots.scatter_pairs(run.data.x_test[:1000].numpy(), many)))
    rows = [("model", cfg.model), ("data", f"{run.data.name}: {run.data.x_dim} features"
                                   + (f", images {shape[0]} x {shape[1]}" if shape else "")),
            ("loss", {"eps": "eps-prediction ||eps - eps_hat||^2", "dsm": "denoising score matching",
                      "flow": "flow matching (rectified flow)"}[cfg.loss]),
            ("trained parameters", sum(p.numel() for p in run.model.parameters() if p.requires_grad))]
    if metrics:
        rows += [("epochs", metrics[-1]["epoch"]), ("final train loss", metrics[-1]["loss"]),
                 ("final test loss", metrics[-1].get("test_loss", float("nan")))]
    verdict = f"{cfg.model} on {run.data.name}"
    if cfg.process == "ddpm":
        b = D.bound_bits_per_dim(run)
        what = "conditional DDPM bound on -log p(x | x_hat)" if isinstance(run.model, DiffuseVAE) else "DDPM bound"
        rows += [(f"{what}, bits/dim ({b['points']} test points, {b['steps']} steps each)",
                  f"{b['bits_per_dim']:.3f} +- {b['bits_per_dim_se']:.3f}")]
        verdict += f": {what} {b['bits_per_dim']:.3f} bits per dimension"
    curves = _img(plots.metric_curves(metrics, ["loss"]), "training curves") if metrics else "<p>No metrics.</p>"
    body = "".join(f"<h2>{html.escape(t)}</h2><p class=\"note\">{html.escape(note)}</p>{_img(fig, t)}"
                   for t, note, fig in sections)
    config_rows = list(dataclasses.asdict(cfg).items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>varilab report: {html.escape(run.dir.name)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(cfg.model)} diffusion model</h1>
<p class="sub">run folder <code>{html.escape(str(run.dir))}</code> · written {time.strftime("%Y-%m-%d %H:%M")}</p>
<div class="verdict">{html.escape(verdict)}.</div>
<h2>Summary</h2>{_table(rows)}
<p class="note">The bound is the DDPM's negative ELBO (Ho et al., 2020, eq. 5) with the reverse variance beta~ and a
Gaussian decoder, estimated without bias from uniformly drawn steps; bits per dimension are of the density on the
data's own scale.</p>
{body}
<h2>Training curves</h2>{curves}
<h2>Configuration</h2>{_table(config_rows)}
</body></html>
"""
