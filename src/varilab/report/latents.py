"""Report sections for any model with latents: reconstructions and prior samples (for a model with
`decode` and `prior`), and the posterior-collapse diagnostics (for anything with `encode`)."""
from __future__ import annotations

import html

import torch

from ..core import sample_latent
from ..core.conditioning import bind
from . import plots
from .page import Section, img, table


@torch.no_grad()
def generation_sections(model, ds, x_test: torch.Tensor, n_show: int = 10) -> list[Section]:
    """Test inputs above their reconstructions, and decoder means of z ~ p(z). `x_test` is the test split as
    evaluated (on the model's device)."""
    device = x_test.device
    torch.manual_seed(0)
    x = x_test[:n_show]
    c = None if ds.c_test is None else ds.c_test[:n_show].to(device)
    bound = bind(model, c)
    recon = bound.decode(bound.encode(x).mean).mean  # decoder mean at the posterior mean
    n_samples = 3 * n_show if c is not None else max(n_show, 500)
    z = sample_latent(model, n_samples)
    samples = bind(model, None if c is None else c.repeat(3, 1)).decode(z).mean
    note = "Decoder means of z ~ p(z)."
    shape = ds.image_shape
    if c is not None:
        note = "Decoder means of z ~ p(z) given the condition of each column's test point."
        if ds.condition == "top-half":  # show the given top half above the generated bottom half
            x, recon, samples = (torch.cat([cc, t], 1) for cc, t in ((c, x), (c, recon), (c.repeat(3, 1), samples)))
            shape = (ds.image_shape[0] + ds.c_test.shape[1] // ds.image_shape[1], ds.image_shape[1])
            note = "The top half is the condition (from the test point); the bottom half is generated from z ~ p(z)."
    x, recon, samples = (t.float().cpu().numpy() for t in (x, recon, samples))
    if shape is not None:
        rec_fig = plots.image_rows([("input", x), ("reconstruction", recon)], shape)
        sample_fig = plots.image_rows([("", samples[i * n_show:(i + 1) * n_show]) for i in range(3)], shape)
    else:
        rec_fig = plots.vector_rows([("input", x[:5]), ("reconstruction", recon[:5])])
        x_all = ds.x_test[:2000].numpy()
        sample_fig = plots.scatter_pairs(x_all, samples) if ds.x_dim >= 2 else plots.vector_rows([("sample", samples[:5])])
        note = "First two coordinates of decoder means of z ~ p(z), over the test data."
    return [Section("Reconstructions", img(rec_fig, "reconstructions"),
                    "Test inputs above the decoder mean at the posterior mean."),
            Section("Samples from the prior", img(sample_fig, "prior samples"), note)]


@torch.no_grad()
def diagnostics_section(model, x: torch.Tensor, cond, image_shape, metrics: list[dict]) -> Section:
    """KL per dimension, activity, active/mixed/passive variables, traversals and I(x; z) on `x`."""
    from ..diagnostics import diagnose

    return Section("Latent diagnostics", "".join(diagnosis_parts(diagnose(model, x, cond=cond), model, cond,
                                                                 image_shape, metrics)))


def coordinate(i: int, shape: tuple) -> str:
    """The name of flat coordinate i of a latent of shape `shape`: z_3, or z[1, 2, 0] for a structured one."""
    if len(shape) <= 1:
        return f"z_{i}"
    return "z[" + ", ".join(str(int(j)) for j in torch.unravel_index(torch.tensor(i), shape)) + "]"


@torch.no_grad()
def diagnosis_parts(d, model=None, cond=None, image_shape=None, metrics: list[dict] = ()) -> list[str]:
    """The HTML of a Diagnosis: verdict, KL per dimension (per channel and per position for a structured latent),
    collapse over training (from `metrics`), mean vs sampled representations, traversals (a model with `decode`
    and a vector latent) and the summary table."""
    from ..diagnostics import sampled_representation, traversals

    post = d.posteriors
    shape = post.shape or (post.dim,)
    kinds = ["passive"] * post.dim
    for i in d.active:
        kinds[i] = "sharp"
    for i in d.mixed:
        kinds[i] = "mixed"
    parts = [f'<div class="verdict">{html.escape(d.verdict())}</div>', f'<p class="note">{html.escape(d.RELATION)}</p>']
    if len(shape) == 1:
        parts.append(img(plots.kl_bars(d.kl_per_dim.cpu().numpy(), d.activity.cpu().numpy(), kinds, d.threshold),
                         "KL per dimension"))
    else:
        parts += structured_parts(d, shape)
    if any("activity" in m for m in metrics):
        parts += ["<h3>Collapse over training</h3>", img(plots.activity_over_epochs(metrics, d.threshold), "activity over epochs")]
    sampled = sampled_representation(post, torch.Generator(device=post.mean.device).manual_seed(0))
    chosen = [("sharp", i) for i in sorted(d.active, key=lambda i: -float(d.kl_per_dim[i]))[:2]]
    chosen += [("mixed", i) for i in d.mixed[:1]] + [("passive", i) for i in d.passive[:1]]
    if chosen:
        examples = [(k, coordinate(i, shape), post.mean[:, i].cpu().numpy(), sampled[:, i].cpu().numpy())
                    for k, i in chosen]
        parts += ["<h3>Mean and sampled representations</h3>",
                  '<p class="note">Passive variables sit at 0 in the mean representation yet have unit variance in '
                  "the sampled one; sharp variables (Bonheme &amp; Grze&#347;'s active ones) look alike in both.</p>",
                  img(plots.mean_vs_sampled(examples), "mean vs sampled representations")]
    top = [int(i) for i in torch.argsort(d.kl_per_dim, descending=True)[:5]]
    if model is not None and hasattr(model, "decode") and post.gaussian and cond is None and len(shape) == 1:
        outs = traversals(model, post.mean[0], top, span=3.0, steps=9).float().cpu().numpy()
        rows = [(f"z_{i} ({float(d.kl_per_dim[i]):.2f} nats)", outs[r]) for r, i in enumerate(top)]
        parts += ["<h3>Traversals of the most informative latents</h3>",
                  '<p class="note">Decoder means as one latent moves from -3 to 3 with the others at the posterior '
                  "mean of the first test point.</p>", img(plots.traversal_grid(rows, image_shape, 3.0), "traversals")]
    rows = [("active units (Burda et al.)", d.active_units),
            ("variables by posterior variance: sharp / mixed / passive (Bonheme & Grzes)",
             f"{len(d.active)} / {len(d.mixed)} / {len(d.passive)}"),
            ("total KL = E_x KL(q(z|x) || p(z)), closed form (nats)", float(d.kl_per_dim.sum()))]
    if d.off_prior:
        rows.append(("inactive but off the prior: nats of KL spent", float(d.kl_per_dim[d.off_prior].sum())))
    if d.information is not None:
        # E_x KL = I(x; z) + KL(q(z) || p(z)): the two sum to the total up to their sampling error
        rows += [("its part I(x; z), one-sample estimate (nats)", d.information.mutual_information),
                 ("its part KL(q(z) || p(z)), one-sample estimate (nats)", d.information.marginal_kl)]
    parts.append(table(rows))
    return parts


def structured_parts(d, shape: tuple) -> list[str]:
    """A latent of shape [C, ...]: KL and active units per channel (figure and table), and KL per position."""
    kl = d.kl_per_dim.reshape(shape).cpu()
    per_channel = kl.flatten(1).sum(1)  # sum over positions, [C]
    active = (d.activity > d.threshold).cpu()  # active units (Burda et al.): Cov_x(E[z_i|x]) > threshold, [d]
    active_per_channel = active.reshape(shape).flatten(1).sum(1)  # [C]
    coords = int(kl[0].numel())
    rows = [(f"channel {c}", f"{float(per_channel[c]):.4f} nats, {int(active_per_channel[c])} of {coords:,} active units")
            for c in range(shape[0])]
    return [f'<p class="note">A structured latent of shape [{", ".join(map(str, shape))}]: the figures sum KL over '
            "positions per channel and over channels per position; every figure per coordinate is in "
            "<code>diagnose(...).to_dict()</code>.</p>",
            img(plots.kl_channels(per_channel.numpy(), active_per_channel.numpy(), coords), "KL per channel"),
            table(rows, head=("channel", "KL, active units")),
            img(plots.kl_maps(kl.numpy()), "KL map")]
