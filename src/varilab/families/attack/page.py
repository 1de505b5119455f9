"""The page `varilab attack` writes beside its images: the original, attacked and control images with what the
model makes of each, the perturbation itself, and the table of errors and posterior statistics."""
from __future__ import annotations

import html
from pathlib import Path

from ...checkpoint import atomic_write
from ...report import Page, Section, html_page, img, table
from ...report import plots
from ..options import settings

SHOWN = 10
VARIANTS = ("clean", "adversarial", "control")
LABELS = {"clean": "original", "adversarial": "attacked", "control": "random"}


def page(run, opts, metrics: dict, x, adv, ctl, outputs: dict, out: Path) -> Path:
    shape, k = run.data.image_shape, min(SHOWN, len(x))
    amplified = lambda d: (0.5 + d / (2 * opts.eps)).clamp(0, 1)  # noqa: E731  (-eps .. eps -> 0 .. 1)
    rows = [("original", x[:k]), ("attacked", adv[:k]), ("random +-eps", ctl[:k]),
            ("perturbation", amplified(adv[:k] - x[:k])), ("its control", amplified(ctl[:k] - x[:k]))]
    tops = {}  # the largest |change| of each output: what black stands for in its rows
    for name, by_variant in outputs.items():
        rows += [(f"{name} of {LABELS[v]}", by_variant[v][:k]) for v in VARIANTS]
        change = {v: (by_variant[v][:k] - by_variant["clean"][:k]).abs() for v in VARIANTS[1:]}
        top = tops[name] = max(float(c.max()) for c in change.values()) or 1.0
        rows += [(f"|change|, {LABELS[v]}", c / top) for v, c in change.items()]  # one scale for both
    rows = [(label, a.numpy()) for label, a in rows]
    figure = plots.image_rows(rows, shape) if shape else plots.vector_rows(rows[:2])
    sections = [Section("Images", img(figure, "original, attacked and control images and the model's outputs"),
                        f"The first {k} of {len(x)}. The perturbations are drawn from -eps (white) to +eps (black); "
                        "the control flips a fair coin per pixel. The |change| rows show how far each output moved from "
                        "the original's output, the attacked and random rows on one scale from white (no change) to "
                        "black: " + "; ".join(f"for the {name}, a change of {top:.3f} in a pixel value on [0, 1]"
                                              for name, top in tops.items()) + ".")]
    rows = []
    for name in outputs:
        rows += [(f"{name}: error vs original, clean", metrics[f"{name}_mse_vs_original_clean"]),
                 (f"{name}: error vs original, attacked", metrics[f"{name}_mse_vs_original_adversarial"]),
                 (f"{name}: error vs original, random noise", metrics[f"{name}_mse_vs_original_control"]),
                 (f"{name}: error vs clean {name}, attacked", metrics[f"{name}_mse_vs_clean_adversarial"]),
                 (f"{name}: error vs clean {name}, random noise", metrics[f"{name}_mse_vs_clean_control"]),
                 (f"{name}: attack's effect / random noise's", metrics[f"{name}_effect_over_control"])]
    for v in VARIANTS:
        rows += [(f"posterior: attack loss, {v}", metrics[f"loss_{v}"]), (f"posterior: KL(q || N(0, I)), {v}",
                                                                         metrics[f"kl_{v}"]),
                 (f"posterior: mean variance, {v}", metrics[f"posterior_var_{v}"])]
    sections.append(Section("Errors", table(rows), "Mean squared error per pixel over all images. The effect is the "
                            "error against the clean output with the attack over that with the random control."))
    if "target" in metrics:
        t = [(key.removeprefix("target_").replace("_", " "), value) for key, value in metrics.items()
             if key.startswith("target_")]
        sections.append(Section(f"Transfer to {metrics['target']}", table(t), "The same perturbed images, measured on "
                                "the second run's model (which the attack never saw)."))
    cost = [("images", metrics["images"]), ("seconds", metrics["seconds"]),
            ("seconds per image per step", metrics["seconds_per_image_step"]),
            ("largest |perturbation|, attack", metrics["linf_adversarial"]),
            ("largest |perturbation|, control", metrics["linf_control"]),
            ("mean L2 norm, attack", metrics["l2_adversarial"]), ("mean L2 norm, control", metrics["l2_control"]),
            ("model", f"{run.options.model} run {run.dir}")]
    own = {"refine_steps": ("diffusevae", "ldm"), "edit_strength": ("ldm",)}  # options of some targets only
    shown = [(k, v) for k, v in settings(opts) if k not in own or run.options.model in own[k]]
    sections += [Section("Cost and size", table(cost)), Section("Options", table(shown))]
    name, *others = outputs
    verdict = (f"The {opts.direction} attack at eps {opts.eps:.4g} changes the {name} {metrics[f'{name}_effect_over_control']:.1f} "
               f"times as much as random noise of the same size (mean squared error against the clean {name}: "
               f"{metrics[f'{name}_mse_vs_clean_adversarial']:.4g} against {metrics[f'{name}_mse_vs_clean_control']:.4g})"
               + "".join(f"; the {o} {metrics[f'{o}_effect_over_control']:.1f} times" for o in others) + ".")
    path = out / "report.html"
    atomic_write(path, html_page(Page(f"Posterior collapse attack ({opts.direction})", verdict, sections),
                                 f"folder <code>{html.escape(str(out))}</code>", out.name))
    return path
