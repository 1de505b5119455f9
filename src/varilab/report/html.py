"""One self-contained HTML page per run: figures inlined as base64 PNG, styles inline, no external URL."""
from __future__ import annotations

import base64
import dataclasses
import html
import time

import torch

from ..evaluate import evaluate_run
from ..run import Run
from ..train import read_metrics, test_inputs
from . import plots

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;padding:0 20px;
color:#1d2430;line-height:1.45}
h1{font-size:24px;margin-bottom:2px}h2{font-size:18px;margin-top:30px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
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
def _figures(run: Run, n_show: int = 10) -> tuple[bytes, bytes]:
    model, ds = run.model, run.data
    device = next(model.parameters()).device
    torch.manual_seed(0)
    x = test_inputs(ds.x_test.to(device), ds)[:n_show]
    recon = model.decode(model.encode(x).mean).mean  # decoder mean at the posterior mean
    prior = model.prior()
    samples = model.decode(prior.sample((max(n_show, 500),))).mean
    x, recon, samples = (t.float().cpu().numpy() for t in (x, recon, samples))
    if ds.image_shape is not None:
        rec_fig = plots.image_rows([("input", x), ("reconstruction", recon)], ds.image_shape)
        sample_fig = plots.image_rows([("", samples[i * n_show:(i + 1) * n_show]) for i in range(3)], ds.image_shape)
    else:
        rec_fig = plots.vector_rows([("input", x[:5]), ("reconstruction", recon[:5])])
        x_all = ds.x_test[:2000].numpy()
        sample_fig = plots.scatter_pairs(x_all, samples) if ds.x_dim >= 2 else plots.vector_rows([("sample", samples[:5])])
    return rec_fig, sample_fig


def render(run: Run) -> str:
    """The report page of a run as an HTML string."""
    metrics = read_metrics(run.dir)
    final = evaluate_run(run)
    cfg = run.config
    rec_fig, sample_fig = _figures(run)
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
    samples_note = ("Decoder means of z ~ p(z)." if run.data.image_shape
                    else "First two coordinates of decoder means of z ~ p(z), over the test data.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>varilab report: {html.escape(run.dir.name)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(cfg.model)} on {html.escape(run.data.name)}</h1>
<p class="sub">run folder <code>{html.escape(str(run.dir))}</code> · written {time.strftime("%Y-%m-%d %H:%M")}</p>
<div class="verdict">{html.escape(verdict)}</div>
<h2>Training curves</h2>{curves}
<h2>Reconstructions</h2><p class="note">Test inputs above the decoder mean at the posterior mean.</p>{_img(rec_fig, "reconstructions")}
<h2>Samples from the prior</h2><p class="note">{samples_note}</p>{_img(sample_fig, "prior samples")}
<div class="grid"><div><h2>Final metrics</h2>{_table(metric_rows)}</div>
<div><h2>Configuration</h2>{_table(config_rows)}</div></div>
</body></html>
"""
