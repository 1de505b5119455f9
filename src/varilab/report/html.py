"""One self-contained HTML page per run: figures inlined as base64 PNG, styles inline, no external URL."""
from __future__ import annotations

import base64
import dataclasses
import html
import time

import torch

from ..core import sample_latent
from ..core.conditioning import bind
from ..evaluate import evaluate_run
from ..run import Run
from ..train import read_metrics, test_inputs
from . import plots

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;padding:0 20px;
color:#1d2430;line-height:1.45}
h1{font-size:24px;margin-bottom:2px}h3{font-size:15px;margin:20px 0 6px}h2{font-size:18px;margin-top:30px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5b6575;margin-top:0}.verdict{background:#f2f6fc;border-left:4px solid #1f5fa8;padding:10px 14px;margin:16px 0}
table{border-collapse:collapse;font-size:14px}td,th{padding:4px 14px 4px 0;text-align:left;border-bottom:1px solid #eef1f5}
th{color:#5b6575;font-weight:600}td.num{font-variant-numeric:tabular-nums;text-align:right}
img{max-width:100%;height:auto}.grid{display:flex;gap:40px;flex-wrap:wrap}.note{color:#5b6575;font-size:13px}
"""


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _table(rows: list[tuple[str, object]], head: tuple[str, str] | None = None) -> str:
    def cell(v):
        if isinstance(v, float):
            return f'<td class="num">{v:.4f}</td>'
        return f"<td>{html.escape(str(v))}</td>"

    h = f"<tr><th>{html.escape(head[0])}</th><th>{html.escape(head[1])}</th></tr>" if head else ""
    return "<table>" + h + "".join(f"<tr><th>{html.escape(k)}</th>{cell(v)}</tr>" for k, v in rows) + "</table>"


@torch.no_grad()
def _figures(run: Run, n_show: int = 10) -> tuple[bytes, bytes, str]:
    model, ds = run.model, run.data
    device = next(model.parameters()).device
    torch.manual_seed(0)
    x = test_inputs(ds.x_test.to(device), ds)[:n_show]
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
    return rec_fig, sample_fig, note


@torch.no_grad()
def _diagnostics_section(run: Run, metrics: list[dict]) -> str:
    from ..diagnostics import diagnose, sampled_representation, traversals

    model, ds = run.model, run.data
    device = next(model.parameters()).device
    x = test_inputs(ds.x_test.to(device), ds)
    cond = None if ds.c_test is None else ds.c_test.to(device)
    d = diagnose(model, x, cond=cond)
    kinds = ["passive"] * d.posteriors.dim
    for i in d.active:
        kinds[i] = "active"
    for i in d.mixed:
        kinds[i] = "mixed"
    parts = [f'<div class="verdict">{html.escape(d.verdict())}</div>',
             _img(plots.kl_bars(d.kl_per_dim.cpu().numpy(), d.activity.cpu().numpy(), kinds, d.threshold), "KL per dimension")]
    if any("activity" in m for m in metrics):
        parts += ["<h3>Collapse over training</h3>", _img(plots.activity_over_epochs(metrics, d.threshold), "activity over epochs")]
    post = d.posteriors
    sampled = sampled_representation(post, torch.Generator(device=post.mean.device).manual_seed(0))
    chosen = [("active", i) for i in sorted(d.active, key=lambda i: -float(d.kl_per_dim[i]))[:2]]
    chosen += [("mixed", i) for i in d.mixed[:1]] + [("passive", i) for i in d.passive[:1]]
    if chosen:
        examples = [(k, i, post.mean[:, i].cpu().numpy(), sampled[:, i].cpu().numpy()) for k, i in chosen]
        parts += ["<h3>Mean and sampled representations</h3>",
                  '<p class="note">Passive variables sit at 0 in the mean representation yet have unit variance in '
                  "the sampled one; active variables look alike in both (Bonheme &amp; Grze&#347;).</p>",
                  _img(plots.mean_vs_sampled(examples), "mean vs sampled representations")]
    top = [int(i) for i in torch.argsort(d.kl_per_dim, descending=True)[:5]]
    if hasattr(model, "decode") and post.gaussian and cond is None:
        z0 = post.mean[0]
        outs = traversals(model, z0, top, span=3.0, steps=9).float().cpu().numpy()
        rows = [(f"z_{i} ({float(d.kl_per_dim[i]):.2f} nats)", outs[r]) for r, i in enumerate(top)]
        parts += ["<h3>Traversals of the most informative latents</h3>",
                  '<p class="note">Decoder means as one latent moves from -3 to 3 with the others at the posterior '
                  "mean of the first test point.</p>", _img(plots.traversal_grid(rows, ds.image_shape, 3.0), "traversals")]
    rows = [("active units (Burda et al.)", d.active_units), ("active / mixed / passive", f"{len(d.active)} / {len(d.mixed)} / {len(d.passive)}")]
    if d.information is not None:
        rows += [("I(x; z) (nats)", d.information.mutual_information), ("KL(q(z) || p(z)) (nats)", d.information.marginal_kl),
                 ("E_x KL(q(z|x) || p(z)) (nats)", d.information.average_kl)]
    parts.append(_table(rows))
    return "".join(parts)


def render(run: Run) -> str:
    """The report page of a run as an HTML string."""
    metrics = read_metrics(run.dir)
    final = evaluate_run(run)
    cfg = run.config
    rec_fig, sample_fig, samples_note = _figures(run)
    diagnostics = _diagnostics_section(run, metrics)
    last = metrics[-1] if metrics else {}
    verdict = (f"After {last.get('epoch', 0)} epochs, the test ELBO is {final['elbo']:.2f} nats per point: "
               f"reconstruction {final['recon']:.2f}, KL {final['kl']:.2f}.")
    if "exact_nll" in final:
        verdict += f" The exact negative log-likelihood is {final['exact_nll']:.2f} nats per point."
    metric_rows = [("test ELBO (nats/point)", final["elbo"]), ("test reconstruction log p(x|z)", final["recon"]),
                   ("test KL(q(z|x) || p(z))", final["kl"]), ("test points", final["n_test"])]
    if "exact_nll" in final:
        metric_rows.append(("exact NLL (nats/point)", final["exact_nll"]))
    if metrics:
        metric_rows += [("final train loss", last["loss"]), ("epochs", last["epoch"]),
                        ("training time (s)", sum(m.get("seconds", 0.0) for m in metrics))]
    config_rows = [(k, ",".join(f"{e:g}" if isinstance(e, float) else str(e) for e in v) if isinstance(v, list)
                    else f"{v:g}" if isinstance(v, float) else v)
                   for k, v in dataclasses.asdict(cfg).items() if v is not None]
    config_rows.append(("data (as loaded)", run.data.summary().removeprefix("data ")))
    curves = _img(plots.training_curves(metrics), "training curves") if metrics else "<p>No metrics recorded.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>varilab report: {html.escape(run.dir.name)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(cfg.model)} on {html.escape(run.data.name)}</h1>
<p class="sub">run folder <code>{html.escape(str(run.dir))}</code> · written {time.strftime("%Y-%m-%d %H:%M")}</p>
<div class="verdict">{html.escape(verdict)}</div>
<h2>Training curves</h2>{curves}
<h2>Reconstructions</h2><p class="note">Test inputs above the decoder mean at the posterior mean.</p>{_img(rec_fig, "reconstructions")}
<h2>Samples from the prior</h2><p class="note">{samples_note}</p>{_img(sample_fig, "prior samples")}
<h2>Latent diagnostics</h2>{diagnostics}
<div class="grid"><div><h2>Final metrics</h2>{_table(metric_rows)}</div>
<div><h2>Configuration</h2>{_table(config_rows)}</div></div>
</body></html>
"""
