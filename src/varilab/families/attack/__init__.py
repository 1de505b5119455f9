"""`varilab attack`: the posterior collapse attack on a run's encoder, beside random noise of the same
L-infinity size, measured on what the model makes of the images (a VAE's reconstruction, a DiffuseVAE's
reconstruction and its refinement by the diffusion model, a latent diffusion model's reconstruction and its
SDEdit-style edit, a purifier's output), and optionally on a second run's model (transfer). Writes the perturbed
images, metrics.json and a page into a folder."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import registry
from ..inputs import as_images, image_shape, rows
from ..options import any_seed, between, option, positive_int
from ..protocol import Command

FILES = ("adversarial.npy", "control.npy", "metrics.json", "report.html")
DIRECTIONS = {"collapse": "PCA-: descend KL(q(z|x) || N(0, 1e-8 I)), shrinking the posterior to a point at 0",
              "push": "PCA+: ascend KL(q(z|x) || N(0, I)), pushing the posterior away from the prior"}
BATCH = 100  # images attacked together


def fraction(text) -> float:
    """'8/255' -> 0.0313..., '0.03' -> 0.03."""
    text = str(text)
    if "/" in text:
        a, b = text.split("/", 1)
        return float(a) / float(b)
    return float(text)


@dataclass
class AttackOptions:
    AXIS = "direction"  # every option applies to both directions
    direction: str = option("collapse", "; ".join(f"{k}: {v}" for k, v in DIRECTIONS.items()), choices=DIRECTIONS)
    eps: float = option(8 / 255, "the L-infinity radius on the images' [0, 1] range: a number or a fraction (8/255)",
                        parse=fraction, check=between(0, 1, open_lo=True))
    steps: int = option(40, "PGD steps", check=positive_int.upto(100_000))
    step_size: float | None = option(None, "the size of each sign step (default eps / 8)", parse=fraction,
                                     check=between(0, 1, open_lo=True))
    input: str | None = option(None, "images to attack, .npy in [0, 1] ([N, H, W] or rows [N, D]); default: the "
                               "run's test split")
    n: int = option(200, "attack the first n images", check=positive_int)
    target: str | None = option(None, "a second run folder: measure the same perturbed images on its model "
                                "(transfer)")
    refine_steps: int = option(20, "diffusevae: DDIM steps of the refinement; ldm: of the edit (from the same noise "
                               "for every variant of an image)", check=positive_int.upto(100_000))
    edit_strength: float = option(0.5, "ldm: the edit's strength, the time t in (0, 1] its latent is noised to before "
                                  "DDIM takes it back to 0 (SDEdit)", check=between(0, 1, open_lo=True))
    seed: int = option(0, "seed of the random control and of the refinement's noise",
                     check=any_seed)


def surface(run, opts: AttackOptions):
    """(encode, outputs) of a run's model: encode(x) -> posterior, outputs {name: f(x) -> [N, D]}."""
    import torch

    model = run.model
    if hasattr(model, "edit") and hasattr(model, "autoencoder"):  # latent diffusion: reconstruction, then an edit

        def edit(x):
            g = torch.Generator().manual_seed(opts.seed)
            noise = torch.randn(len(x), model.autoencoder.config.latent_dim, generator=g).to(x.device)  # the same draw
            return model.edit(x, noise, strength=opts.edit_strength, steps=opts.refine_steps)  # for every variant

        return model.encode, {"reconstruction": model.reconstruct, "edit": edit}
    if hasattr(model, "vae") and hasattr(model, "denoiser"):  # DiffuseVAE: reconstruction, then its refinement
        vae = model.vae

        def refine(x):
            g = torch.Generator().manual_seed(opts.seed)
            noise = torch.randn(len(x), x.shape[1], generator=g).to(x.device)  # the same x_T for every variant
            return model.sample(z=vae.encode(x).mean, steps=opts.refine_steps, sampler="ddim", noise=noise)[1]

        return vae.encode, {"reconstruction": _reconstruction(vae), "refinement": refine}
    if hasattr(model, "purify"):
        return model.encode, {"purified": model.purify}
    if hasattr(model, "encode") and hasattr(model, "decode"):
        if getattr(run.data, "c_train", None) is not None:
            raise ValueError(f"{run.dir} is a conditional {run.options.model}: its encoder needs a condition; attack an "
                             "unconditional model")
        return model.encode, {"reconstruction": _reconstruction(model)}
    raise ValueError(f"{run.dir}: a {run.options.model} has no encoder to attack"
                     + ("; `varilab robustness` attacks a classifier" if run.options.model == "classifier" else
                        "; attack a VAE, diffusevae, ldm or purifier run"))


def _reconstruction(vae):
    return lambda x: vae.decode(vae.encode(x).mean).mean  # E[x | z = E[z|x]]


def images(run, opts: AttackOptions):
    """The images to attack, rows [N, D] in [0, 1]."""
    import torch

    x = run.data.x_test if opts.input is None else rows(opts.input, "--input")
    if x.shape[1] != run.data.x_dim:
        raise ValueError(f"--input {opts.input} has {x.shape[1]} values per image; this run's data have {run.data.x_dim}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"the images range over [{lo:.4g}, {hi:.4g}]; attacks work on [0, 1] (divide 0-255 pixels "
                         "by 255)")
    return x[:opts.n].to(torch.float32)


def perturb(encode, x, opts: AttackOptions, quiet: bool = True):
    """(adversarial, control) images, BATCH at a time."""
    import torch
    from tqdm import tqdm

    from ...models.robust.attacks import posterior_attack, random_sign

    g = torch.Generator().manual_seed(opts.seed)
    adv, ctl = [], []
    for xb in tqdm(x.split(BATCH), desc="attack", unit="batch", leave=False, disable=quiet, file=sys.stderr):
        adv.append(posterior_attack(encode, xb, opts.eps, opts.steps, opts.step_size, opts.direction).cpu())
        ctl.append(random_sign(xb, opts.eps, g).cpu())
    return torch.cat(adv), torch.cat(ctl)


def measure(run, opts: AttackOptions, x, adv, ctl, prefix: str = "") -> tuple[dict, dict]:
    """(metrics, outputs): what the model makes of clean, attacked and control images: per output, the mean squared error against
    the original image and against the output of the clean image, and the attack's effect over the control's;
    per posterior, the attack's loss, KL(q || N(0, I)) and the mean posterior variance; outputs holds
    {output name: {variant: images}}."""
    import torch

    from ...diagnostics.adapters import as_posterior
    from ...models.robust.attacks import DIRECTIONS as LOSSES, collapse_loss

    encode, outputs = surface(run, opts)
    device = next(run.model.parameters()).device
    v = LOSSES[opts.direction][0]
    m, shown = {}, {}
    with torch.no_grad():
        for variant, data in (("clean", x), ("adversarial", adv), ("control", ctl)):
            post = [encode(b.to(device)) for b in data.split(BATCH)]
            q = [as_posterior(p, len(b))[0] for p, b in zip(post, data.split(BATCH))]
            m[f"{prefix}loss_{variant}"] = float(torch.cat([collapse_loss(p, v) for p in post]).mean())
            m[f"{prefix}kl_{variant}"] = float(torch.cat([collapse_loss(p, 1.0) for p in post]).mean())  # KL(q || N(0, I))
            m[f"{prefix}posterior_var_{variant}"] = float(torch.cat([qq.variance.mean(-1) for qq in q]).mean())
        for name, f in outputs.items():
            out = {k: torch.cat([f(b.to(device)).cpu() for b in data.split(BATCH)])
                   for k, data in (("clean", x), ("adversarial", adv), ("control", ctl))}
            for k in out:
                m[f"{prefix}{name}_mse_vs_original_{k}"] = float(((out[k] - x) ** 2).mean())
            for k in ("adversarial", "control"):
                m[f"{prefix}{name}_mse_vs_clean_{k}"] = float(((out[k] - out["clean"]) ** 2).mean())
            m[f"{prefix}{name}_effect_over_control"] = (m[f"{prefix}{name}_mse_vs_clean_adversarial"]
                                                        / max(m[f"{prefix}{name}_mse_vs_clean_control"], 1e-12))
            shown[name] = out
    return m, shown


def attack(run, opts: AttackOptions, out: Path, quiet: bool = False) -> tuple[dict, list[str]]:
    """Attack the run's encoder, write the folder; (the metrics, the summary line)."""
    import numpy as np

    encode, outputs = surface(run, opts)
    x = images(run, opts)
    device = next(run.model.parameters()).device
    started = time.perf_counter()
    adv, ctl = perturb(lambda xb: encode(xb.to(device)), x, opts, quiet)
    seconds = time.perf_counter() - started
    metrics = {"direction": opts.direction, "eps": opts.eps, "steps": opts.steps,
               "step_size": opts.step_size or opts.eps / 8, "images": len(x), "run": str(run.dir),
               "seconds": seconds, "seconds_per_image_step": seconds / (len(x) * opts.steps),
               "linf_adversarial": float((adv - x).abs().max()), "linf_control": float((ctl - x).abs().max()),
               "l2_adversarial": float((adv - x).flatten(1).norm(dim=1).mean()),
               "l2_control": float((ctl - x).flatten(1).norm(dim=1).mean())}
    own, shown = measure(run, opts, x, adv, ctl)
    metrics.update(own)
    if opts.target is not None:
        target = registry.load(opts.target)
        if target.data.x_dim != run.data.x_dim:
            raise ValueError(f"--target {opts.target} models {target.data.x_dim} values per image; {run.dir} models "
                             f"{run.data.x_dim}")
        metrics["target"] = str(opts.target)
        metrics.update(measure(target, opts, x, adv, ctl, prefix="target_")[0])
    out.mkdir(parents=True, exist_ok=True)
    shape = image_shape(run)
    np.save(out / "adversarial.npy", as_images(adv.numpy(), shape))
    np.save(out / "control.npy", as_images(ctl.numpy(), shape))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    from .page import page

    page(run, opts, metrics, x, adv, ctl, shown, out)
    name, *others = outputs
    return metrics, [
        f"{opts.direction} attack at eps {opts.eps:.4g} ({opts.steps} steps) on {len(x)} images: {name} error "
            f"against the clean {name} {metrics[f'{name}_mse_vs_clean_adversarial']:.4g}, random noise "
            f"{metrics[f'{name}_mse_vs_clean_control']:.4g} ({metrics[f'{name}_effect_over_control']:.1f}x)"
            + "".join(f"; {o} {metrics[f'{o}_effect_over_control']:.1f}x" for o in others)
            + (f"; on --target {metrics[f'target_{name}_effect_over_control']:.1f}x" if opts.target and
               f"target_{name}_effect_over_control" in metrics else "") + f"; written to {out}"]


ATTACK = Command("the posterior collapse attack on a run's encoder, beside random noise", AttackOptions, attack,
                 choices=DIRECTIONS, about_run="the run whose encoder is attacked (a VAE, diffusevae, ldm or purifier "
                 "run)",
                 writes=FILES)
