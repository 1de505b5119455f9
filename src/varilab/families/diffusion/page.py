"""The report page of a diffusion run: samples from two samplers beside test data, the denoising chain,
DiffuseVAE's VAE outputs beside their refinements, and the DDPM's bound in bits per dimension; an ldm's page shows
reconstructions and edits of test images instead of the chain and the bound."""
from __future__ import annotations

import numpy as np

from ...report import Page, Section, img, plots, table
from ...checkpoint import read_jsonl
from ...train import METRICS

N_SHOW = 10
LOSS = {"eps": "eps-prediction ||eps - eps_hat||^2", "dsm": "denoising score matching",
        "flow": "flow matching (rectified flow)"}
BOUND_NOTE = ("The bound is the DDPM's negative ELBO (Ho et al., 2020, eq. 5) with the reverse variance beta~ and a "
              "Gaussian decoder, estimated without bias from uniformly drawn steps; bits per dimension are of the "
              "density on the data's own scale, the same figure `varilab eval` prints (256 test points, 20 steps "
              "each, seed 0). It can be negative: a continuous density on [0, 1] may exceed 1 where the data "
              "concentrate (8x8 digits take only 17 grey values, and their background is exactly 0), so -log2 p(x) "
              "per dimension falls below zero; it is no code length until the data are discretised.")


def _rows_figure(rows, shape):
    rows = [(label, np.asarray(a)) for label, a in rows]
    return plots.image_rows(rows, shape) if shape else plots.vector_rows(rows[:2])


def page(run, sample, bound_bits_per_dim) -> Page:
    """The page of a diffusion run; `sample` and `bound_bits_per_dim` are the family's."""
    opts, shape = run.options, run.data.image_shape
    metrics = read_jsonl(run.dir / METRICS)
    ddim = sample(run, N_SHOW, seed=0, sampler="ddim", steps=50, chain=True)
    ancestral = sample(run, N_SHOW, seed=1, sampler="ddpm", steps=100)
    sections = []
    if "vae" in ddim:
        rows = [("VAE output", ddim["vae"].numpy()), ("refined (DDIM 50)", ddim["samples"].numpy())]
        sections.append(Section("VAE output and its refinement", img(_rows_figure(rows, shape), "refinement"),
                                "Each column: z drawn from the VAE prior, the VAE's decoded mean x_hat = E[x|z], and "
                                "the DDPM's refinement of it."))
    rows = [("test data", run.data.x_test[:N_SHOW].numpy()), ("DDIM, 50 steps", ddim["samples"].numpy()),
            ("ancestral, 100 steps", ancestral["samples"].numpy())]
    sections.append(Section("Samples", img(_rows_figure(rows, shape), "samples"),
                            "Test images above samples from two samplers."))
    chain = ddim["chain"]  # [51, n, D]
    picks = np.linspace(0, chain.shape[0] - 1, 8).round().astype(int)
    if shape:
        chain_rows = [(f"sample {i + 1}", chain[picks, i].numpy()) for i in range(min(4, chain.shape[1]))]
        sections.append(Section("Denoising chain", img(plots.image_rows(chain_rows, shape), "chain"),
                                "The DDIM state x_t at eight evenly spaced steps, from noise (left) to the sample "
                                "(right), mapped to the data's range."))
    elif run.data.x_dim >= 2:
        many = sample(run, 1000, seed=2, sampler="ddim", steps=50)["samples"].numpy()
        sections.append(Section("Samples against test data", img(plots.scatter_pairs(run.data.x_test[:1000].numpy(),
                                                                                      many), "scatter"),
                                "The first two coordinates."))
    # the options themselves are the configuration table's: these rows say what they made
    rows = [("data (as loaded)", f"{run.data.name}: {run.data.x_dim} features"
             + (f", images {shape[0]} x {shape[1]}" if shape else "")),
            ("objective", LOSS[opts.loss]), ("trained parameters", sum(p.numel() for p in run.model.parameters()
                                                                      if p.requires_grad))]
    if metrics:
        rows += [("epochs trained", metrics[-1]["epoch"]), ("final train loss", metrics[-1]["loss"]),
                 ("final test loss", metrics[-1].get("test_loss", float("nan")))]
    verdict = f"{opts.model} on {run.data.name}"
    if opts.model != "flow":
        b = bound_bits_per_dim(run)
        what = "conditional DDPM bound on -log p(x | x_hat)" if "vae" in ddim else "DDPM bound"
        rows.append((f"{what}, bits/dim ({b['points']} test points, {b['steps']} steps each)",
                     f"{b['bits_per_dim']:.3f} +- {b['bits_per_dim_se']:.3f}"))
        verdict += f": {what} {b['bits_per_dim']:.3f} bits per dimension"
    sections.insert(0, Section("Summary", table(rows), BOUND_NOTE if opts.model != "flow" else ""))
    return Page(f"{opts.model} diffusion model", verdict + ".", sections)


EDIT_STRENGTHS = (0.3, 0.5, 0.7)


def ldm_page(run, sample, autoencoder_errors) -> Page:
    """The page of a latent diffusion run: test images, their reconstructions and DDIM edits at three strengths (one
    noise draw), samples from two samplers, and the autoencoder's errors beside the DDPM's losses."""
    import torch

    opts, shape, model = run.options, run.data.image_shape, run.model
    metrics = read_jsonl(run.dir / METRICS)
    stage = read_jsonl(run.dir / "vae" / METRICS)  # the autoencoder's own log (RUN/vae)
    device = next(model.parameters()).device
    x = run.data.x_test[:N_SHOW].to(device)
    noise = torch.randn(len(x), model.autoencoder.config.latent_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rows = [("test data", x), ("reconstruction", model.reconstruct(x))]
        rows += [(f"edit, strength {s}", model.edit(x, noise.to(device), strength=s, steps=20)) for s in EDIT_STRENGTHS]
    sections = [Section("Reconstructions and edits", img(_rows_figure([(k, v.cpu().numpy()) for k, v in rows], shape),
                                                         "edits"),
                        "Each column: a test image, its reconstruction D(E[z|x]), and SDEdit-style edits: the scaled "
                        "latent mean noised to time t (the strength) with one noise draw, taken back to 0 by 20 DDIM "
                        "steps and decoded. The larger t, the more the DDPM redraws the image.")]
    rows = [("test data", run.data.x_test[N_SHOW:2 * N_SHOW].numpy()),
            ("DDIM, 50 steps", sample(run, N_SHOW, seed=0, sampler="ddim", steps=50)["samples"].numpy()),
            ("ancestral, 100 steps", sample(run, N_SHOW, seed=1, sampler="ddpm", steps=100)["samples"].numpy())]
    sections.append(Section("Samples", img(_rows_figure(rows, shape), "samples"),
                            "Test images above samples: scaled latents drawn by the DDPM, then decoded."))
    ae = model.autoencoder.config
    errors = autoencoder_errors(model, run.data.x_test[:1000].to(device))
    table_rows = [("networks", "AutoencoderKL, then a DDPM on its scaled latents"),
                  ("data (as loaded)", f"{run.data.name}: images {shape[0]} x {shape[1]}"),
                  ("autoencoder", f"widths {list(ae.widths)}, {ae.groups} GroupNorm groups, latents "
                                  f"{' x '.join(map(str, ae.latent_shape))}, KL weight {ae.kl_weight:g}"),
                  ("autoencoder parameters", sum(p.numel() for p in model.autoencoder.parameters())),
                  ("DDPM parameters", sum(p.numel() for p in model.denoiser.parameters() if p.requires_grad)),
                  ("scaling factor c = 1 / std(z), training latents", errors["scale"]),
                  ("reconstruction error per pixel, 1,000 test images", errors["reconstruction_mse"]),
                  ("KL(q(z|x) || N(0, I)) per image, nats", errors["latent_kl"])]
    if stage:
        table_rows += [("autoencoder epochs trained", stage[-1]["epoch"]),
                       ("autoencoder test loss (squared error + weighted KL, [-1, 1])", stage[-1].get("test_loss"))]
    if metrics:
        table_rows += [("DDPM epochs trained", metrics[-1]["epoch"]), ("DDPM final train loss", metrics[-1]["loss"]),
                       ("DDPM final test loss", metrics[-1].get("test_loss", float("nan")))]
    sections.insert(0, Section("Summary", table(table_rows), "Errors are on the images' [0, 1] range."))
    verdict = (f"ldm on {run.data.name}: reconstruction error {errors['reconstruction_mse']:.4f} per pixel, latents "
               f"{' x '.join(map(str, ae.latent_shape))} scaled by {errors['scale']:.3g}.")
    return Page("ldm latent diffusion model", verdict, sections)
