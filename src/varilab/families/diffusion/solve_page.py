"""The page `varilab solve` writes beside its estimates: observation, estimate and truth, per-image PSNR and
SSIM against the pseudo-inverse, the residual over the steps and, for smc, the effective sample size."""
from __future__ import annotations

import html
from pathlib import Path

from ...checkpoint import atomic_write
from ...report import Page, Section, html_page, img, table
from ...report import plots
from ..options import settings

SHOWN = 10


def page(run, opts, metrics: dict, trace: dict, view, estimate, truth, out: Path) -> Path:


    shape = run.data.image_shape
    rows = [("observation (H^+ y)", view[:SHOWN]), ("estimate", estimate[:SHOWN])]
    if truth is not None:
        rows.append(("truth", truth[:SHOWN]))
    figure = plots.image_rows(rows, shape) if shape else plots.vector_rows([(k, v[:5]) for k, v in rows])
    sections = [Section("Images", img(figure, "observation, estimate and truth"),
                        f"The first {min(SHOWN, len(view))} of {len(view)}; the observation is shown through the "
                        "pseudo-inverse (missing pixels grey, small images enlarged).")]
    own = opts.method == "pinv"  # the pseudo-inverse is the baseline: not read against itself
    if truth is not None:
        sections.append(Section("Scores", _scores(metrics, own), "PSNR = 10 log10(1 / MSE) on the data's range [0, 1]; "
                                "SSIM is scikit-image's structural_similarity; means and standard deviations over "
                                "the images."))
    curves = [("residual ||y - H x0_hat|| / sqrt(M) (model scale)", "step", {"mean over images": trace["residual"]})]
    if "ess" in trace:
        ess = trace["ess"]
        curves.append((f"effective sample size of {opts.particles} particles", "step",
                       {"mean": [sum(e[i] for e in ess) / len(ess) for i in range(len(ess[0]))],
                        "lowest": [min(e[i] for e in ess) for i in range(len(ess[0]))]}))
    if "lambda" in trace:
        curves.append(("RED-Diff weight lambda_t", "step", {"lambda_t": trace["lambda"]}))
    if trace["residual"] and len(trace["residual"]) > 1:
        sections.append(Section("Over the steps", img(plots.lines(curves), "traces")))
    cost = [("images", metrics["images"]), ("seconds per image", metrics["seconds_per_image"]),
            ("denoiser calls per image", metrics["denoiser_calls_per_image"]),
            ("network evaluations per image", metrics["network_evaluations_per_image"]),
            ("noise sigma_y, data range", metrics["noise"]), ("noise on the model's range", metrics["noise_model_scale"]),
            ("operator", metrics["operator"]), ("prior", f"{run.options.model} run {run.dir}")]
    sections += [Section("Cost and setting", table(cost)), Section("Options", table(settings(opts)))]
    verdict = f"{opts.method} on {opts.task}: {metrics['images']} images, {metrics['seconds_per_image']:.2f} s each"
    if truth is not None and own:
        verdict += (f"; PSNR {metrics['psnr_mean']:.2f} dB" + (f", SSIM {metrics['ssim_mean']:.4f}" if "ssim_mean" in
                                                                metrics else "")
                    + " (the pseudo-inverse: the baseline the other methods are read against).")
    elif truth is not None:
        verdict += (f"; PSNR {metrics['psnr_mean']:.2f} dB against {metrics['pinv_psnr_mean']:.2f} dB for the "
                    "pseudo-inverse" + (f", SSIM {metrics['ssim_mean']:.4f} against {metrics['pinv_ssim_mean']:.4f}"
                                        if "ssim_mean" in metrics else "") + ".")
    warning = None
    if "ess" in trace and trace["ess"] and trace["ess"][0]:
        typical = degeneracy(trace["ess"])
        if typical < 2:
            warning = (f"The particles degenerated: the effective sample size over the steps has a median of "
                       f"{typical:.2f} of {opts.particles} (mean over images), so each step rests on about one "
                       "particle; more particles or a larger --noise keep more of them alive.")
    path = out / "report.html"
    title = f"Solving {opts.task} with {opts.method}"
    atomic_write(path, html_page(Page(title, verdict, sections, warning=warning),
                                 f"folder <code>{html.escape(str(out))}</code>",
                                 out.name))
    return path


def degeneracy(ess: list[list[float]]) -> float:
    """The median effective sample size over the steps, averaged over the images: near 1, the weights sit on one
    particle at most steps."""
    import statistics

    return sum(statistics.median(e) for e in ess) / len(ess)


def _scores(m: dict, own: bool = False) -> str:
    """The scores' tables; `own`: the run is the pseudo-inverse, so its baseline rows would repeat its own."""
    has_ssim = "ssim" in m
    summary = [("PSNR (dB)", f"{m['psnr_mean']:.2f} ± {m['psnr_std']:.2f}")]
    summary += [] if own else [("pseudo-inverse PSNR (dB)", f"{m['pinv_psnr_mean']:.2f} ± {m['pinv_psnr_std']:.2f}")]
    if has_ssim:
        summary += [("SSIM", f"{m['ssim_mean']:.4f} ± {m['ssim_std']:.4f}")]
        summary += [] if own else [("pseudo-inverse SSIM", f"{m['pinv_ssim_mean']:.4f} ± {m['pinv_ssim_std']:.4f}")]
    per_image = [(f"image {i}", f"PSNR {p:.2f} dB" + (f", SSIM {m['ssim'][i]:.4f}" if has_ssim else ""))
                 for i, p in enumerate(m["psnr"][:20])]
    return table(summary) + "<h3>Per image (the first 20)</h3>" + table(per_image)
