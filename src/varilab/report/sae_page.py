"""The report page of an SAE run: training curves, health (with the pinned definitions), the
feature-density histogram and the configuration."""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

from ..train import read_metrics
from . import plots
from .html import CSS, _img, _table

DEFINITIONS = (
    "L0 = mean number of non-zero codes per token. FVU = sum_n ||x_n - x_hat_n||^2 / sum_n ||x_n - x_bar||^2 over the "
    "held-out tokens (x_bar their mean); explained variance = 1 - FVU. A latent is alive when it fired within the last "
    "{window:,} training tokens (fraction alive, training), or at least once on the held-out tokens. Embedding recovered "
    "= 1 - D(SAE) / D(zero ablation), D the mean cosine distance between MiniLM's sentence embedding with the layer's "
    "word-piece activations replaced and the clean one, on held-out text.")


def render(run_dir: str | Path) -> str:
    from .. import sae_run

    run_dir = Path(run_dir)
    saved = run_dir / sae_run.HEALTH
    h = json.loads(saved.read_text()) if saved.exists() else sae_run.health(run_dir)
    raw = json.loads((run_dir / "config.json").read_text())
    metrics = read_metrics(run_dir)
    emb = h["embedding"].get("embedding_recovered")
    verdict = (f"{h['kind']} SAE, F = {h['features']:,}, k = {h['k']}: explained variance {h['explained_variance']:.3f}, "
               f"L0 {h['l0']:.1f}, fraction alive {h['alive_in_training']:.3f}"
               + (f", embedding recovered {emb:.3f}" if emb is not None else "") + ".")
    if h.get("warning"):
        verdict += " " + h["warning"] + "."
    rows = [("explained variance (held-out)", h["explained_variance"]), ("FVU (held-out)", h["fvu"]), ("L0", h["l0"]),
            ("relative reconstruction bias (1: codes not shrunk)", h.get("relative_reconstruction_bias", "-")),
            (f"fraction alive (last {h['dead_window_tokens']:,} training tokens)", h["alive_in_training"]),
            ("fraction that fired on the held-out tokens", 1 - h["dead"] / h["features"]),
            ("held-out tokens", h["test_tokens"])]
    if emb is not None:
        rows += [("embedding recovered", emb), ("cosine distance, SAE patched", h["embedding"]["distance_sae"]),
                 ("cosine distance, zero-ablated", h["embedding"]["distance_zero"]),
                 ("held-out sequences", h["embedding"]["sequences"])]
    else:
        rows.append(("embedding recovered", h["embedding"].get("skipped", "-")))
    keys = [k for k in ("loss", "recon", "aux", "kl", "l1", "l0", "dead") if metrics and k in metrics[0]]
    curves = _img(plots.metric_curves(metrics, keys), "training curves") if metrics else "<p>No metrics recorded.</p>"
    density = _img(plots.density_histogram(h["log10_density"]), "feature density")
    config_rows = [(k, v) for k, v in raw.items()]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>varilab report: {html.escape(run_dir.name)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(h['kind'])} sparse autoencoder</h1>
<p class="sub">run folder <code>{html.escape(str(run_dir))}</code> · written {time.strftime("%Y-%m-%d %H:%M")}</p>
<div class="verdict">{html.escape(verdict)}</div>
<h2>Health</h2>{_table(rows)}
<p class="note">{html.escape(DEFINITIONS.format(window=h['dead_window_tokens']))}</p>
<h2>Feature density</h2><p class="note">Share of held-out tokens on which each latent fires, log10; latents that never
fired sit at the left edge.</p>{density}
<h2>Training curves</h2>{curves}
<h2>Configuration</h2>{_table(config_rows)}
</body></html>
"""
