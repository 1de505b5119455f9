"""The posterior collapse attack (PCA) on varilab's VAEs, DiffuseVAE and a latent diffusion model, on Fashion-MNIST.

Two convolutional VAEs (`varilab train --model vae --arch conv`, 16 latents, Bernoulli likelihood) are trained
on the 60,000 Fashion-MNIST training images at 28 x 28 with seeds 0 and 1, and a DiffuseVAE (`--model
diffusevae`, at 14 x 14) beside them. The first 200 test images are attacked on VAE-A's encoder alone with
L-infinity PGD (40 sign steps of eps / 8) at eps 4/255, 8/255 and 16/255, in both directions: PCA- ("collapse",
the posterior pulled to a point at 0) and PCA+ ("push", pushed away from the prior). Every attack goes through
`varilab attack`'s code path; the control is random +-eps noise of the same L-infinity size.

Measured: the mean squared error of the model's output (VAE reconstruction E[x | z = E[z|x]]; DiffuseVAE's
reconstruction and its DDIM refinement from fixed noise) against the original image and against the output of
the clean image. The effect is the error against the clean output, attack over control. Transfer: VAE-A's
perturbed images on VAE-B, against VAE-B attacked directly (white-box) at the same eps.

Latent diffusion: the paper attacks the autoencoder of a latent diffusion model (Stable Diffusion's VAE, diffusers'
AutoencoderKL, 4-channel latents) and measures how the perturbation disrupts image editing. Here an `ldm` run (`--model
ldm`: a small AutoencoderKL with 4 x 7 x 7 latents, then a DDPM on its scaled latents) is trained on the same
Fashion-MNIST images, its encoder attacked the same way, and two outputs measured: the reconstruction D(E[z|x]) and an
SDEdit-style edit (the scaled latent mean noised to t = 0.5 with one fixed draw, 20 DDIM steps back to 0, decoded),
from the same noise for clean, attacked and control images.

Seeds: the collapse attack at 8/255 on five VAEs of seeds 0-4 (the same training), each on the first 1,000 test
images: the effect's mean over the seeds and its 95% interval (Student's t, 4 degrees of freedom).

The finding holds here when, at 8/255, the collapse attack's effect is at least 3 times the random noise's (the
five seeds' 95% interval above 3: a mean above 3 with the bar inside the interval is not shown), its transfer from
VAE-A to VAE-B keeps at least half of the white-box effect there, and, at the paper's headline setting (16/255, 40
steps), the collapse attack changes the latent diffusion model's edit at least 3 times as much as random noise (one
trained model: no interval over seeds).
"""
from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from scipy import stats

from varilab.families import registry
from varilab.families import diffusion as D
from varilab.families import vae as V
from varilab.families.attack import AttackOptions, attack

EPS = (4, 8, 16)  # / 255
DIRECTIONS = ("collapse", "push")
PAPER = "SD-1.5 VAE at 512 px, eps 16/255, 40 steps: edits disrupted for any prompt, transferring across LDMs"
# The edit's t. On this DDPM's linear schedule t = 0.5 keeps alpha_t^2 = 0.079 of the signal, as Stable Diffusion's
# img2img does at strength 0.7 on its scaled-linear schedule (0.083); t = 0.35 keeps 0.285, as its strength 0.5 (0.278).
EDIT_STRENGTH, MILD_EDIT = 0.5, 0.35


def attack_row(run, root: Path, name: str, **options) -> dict:
    out = root / name
    attack(run, AttackOptions(**options), out, quiet=True)
    m = json.loads((out / "metrics.json").read_text())
    shutil.rmtree(out)
    return m


def run(quick: bool = False) -> dict:
    if quick:
        vae = dict(data="digits", hidden=[128], epochs=15, batch_size=64)
        dvae = dict(data="digits", epochs=1, vae_epochs=15, channels=8, mults=[1], timesteps=100, batch_size=64)
        ldm = dict(data="digits", ae_widths=[8, 16], ae_groups=4, vae_epochs=10, epochs=3, channels=16, mults=[1],
                   timesteps=100, batch_size=64, lr=2e-3)
        n, steps, eps = 40, 10, (8,)
    else:
        vae = dict(data="fashion-mnist", arch="conv", epochs=10, batch_size=128)
        dvae = dict(data="fashion-mnist", downscale=2, epochs=6, vae_epochs=20, channels=16, batch_size=128)
        ldm = dict(data="fashion-mnist", ae_widths=[16, 32, 32], ae_groups=8, vae_epochs=2, epochs=4, batch_size=128,
                   lr=2e-3)
        n, steps, eps = 200, 40, EPS
    seeds, n_seeds = ((0, 1), 40) if quick else ((0, 1, 2, 3, 4), 1000)
    root = Path(tempfile.mkdtemp(prefix="varilab-repro-pca-"))
    try:
        for seed in seeds:
            V.train(V.VAEOptions(model="vae", latent_dim=16, seed=seed, **vae), root / f"vae{seed}", quiet=True)
        D.train(D.check(D.DiffusionOptions(model="diffusevae", **dvae)), root / "diffusevae", quiet=True)
        started = time.perf_counter()
        D.train(D.check(D.DiffusionOptions(model="ldm", **ldm)), root / "ldm", quiet=True)
        ldm_seconds = time.perf_counter() - started
        a, b, dv, ld = (registry.load(root / name) for name in ("vae0", "vae1", "diffusevae", "ldm"))
        ldm_model = {"train_seconds": ldm_seconds, "test_images": len(ld.data.x_test),
                     "latent_shape": list(ld.model.autoencoder.config.latent_shape),
                     **D.autoencoder_errors(ld.model, ld.data.x_test)}
        print(f"[posterior_collapse_attack] ldm trained in {ldm_seconds:.0f} s: reconstruction error "
              f"{ldm_model['reconstruction_mse']:.5f} on {len(ld.data.x_test):,} test images, scale "
              f"{ldm_model['scale']:.4f}", flush=True)
        rows = {}
        for e in eps:
            common = dict(eps=e / 255, steps=steps, n=n)
            for direction in DIRECTIONS:
                rows[("A", direction, e)] = attack_row(a, root, "a", direction=direction, target=str(root / "vae1"),
                                                       **common)
                rows[("B", direction, e)] = attack_row(b, root, "b", direction=direction, **common)
                rows[("DiffuseVAE", direction, e)] = attack_row(dv, root, "dv", direction=direction, **common)
                rows[("LDM", direction, e)] = attack_row(ld, root, "ldm", direction=direction,
                                                         edit_strength=EDIT_STRENGTH, **common)
                r, rl = rows[("A", direction, e)], rows[("LDM", direction, e)]
                print(f"[posterior_collapse_attack] {direction} {e}/255: A {r['reconstruction_effect_over_control']:.1f}x,"
                      f" A->B {r['target_reconstruction_effect_over_control']:.1f}x, DiffuseVAE refinement "
                      f"{rows[('DiffuseVAE', direction, e)]['refinement_effect_over_control']:.1f}x, LDM reconstruction "
                      f"{rl['reconstruction_effect_over_control']:.1f}x, edit {rl['edit_effect_over_control']:.1f}x",
                      flush=True)
        top = max(eps)  # 16/255, the paper's setting (8/255 in the quick form)
        rows[("LDM-mild", "collapse", top)] = attack_row(ld, root, "ldm", direction="collapse", eps=top / 255,
                                                         steps=steps, n=n, edit_strength=MILD_EDIT)
        by_seed = [attack_row(registry.load(root / f"vae{seed}"), root, "s", direction="collapse", eps=8 / 255,
                              steps=steps, n=n_seeds)["reconstruction_effect_over_control"] for seed in seeds]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def transfer(direction, e):  # A's perturbation on B over B attacked directly, both against B's clean output
        return (rows[("A", direction, e)]["target_reconstruction_mse_vs_clean_adversarial"]
                / rows[("B", direction, e)]["reconstruction_mse_vs_clean_adversarial"])

    at = 8
    mean = statistics.fmean(by_seed)
    half = float(stats.t.ppf(0.975, len(by_seed) - 1)) * statistics.stdev(by_seed) / len(by_seed) ** 0.5  # t_{0.975} s / sqrt(n)
    checks = {"collapse_effect_3x_random_at_8 (95% interval over seeds above 3)": mean - half >= 3,
              "collapse_transfer_keeps_half_at_8": transfer("collapse", at) >= 0.5,
              f"ldm_edit_collapse_effect_3x_random_at_{top} (one model)":
                  rows[("LDM", "collapse", top)]["edit_effect_over_control"] >= 3}
    table = ["| direction | eps | VAE-A: error vs original, clean / attack / noise | VAE-A: vs clean output, attack / "
             "noise | effect | VAE-A -> VAE-B: vs clean output, attack / noise | B white-box | transfer kept | "
             "DiffuseVAE refinement: vs clean output, attack / noise | effect |", "|---|---|---|---|---|---|---|---|---|---|"]
    for direction in DIRECTIONS:
        for e in eps:
            ra, rb, rd = (rows[(k, direction, e)] for k in ("A", "B", "DiffuseVAE"))
            table.append(
                f"| {direction} | {e}/255 | {ra['reconstruction_mse_vs_original_clean']:.4f} / "
                f"{ra['reconstruction_mse_vs_original_adversarial']:.4f} / {ra['reconstruction_mse_vs_original_control']:.4f}"
                f" | {ra['reconstruction_mse_vs_clean_adversarial']:.5f} / {ra['reconstruction_mse_vs_clean_control']:.5f}"
                f" | {ra['reconstruction_effect_over_control']:.1f}x | "
                f"{ra['target_reconstruction_mse_vs_clean_adversarial']:.5f} / "
                f"{ra['target_reconstruction_mse_vs_clean_control']:.5f} | {rb['reconstruction_mse_vs_clean_adversarial']:.5f}"
                f" | {transfer(direction, e):.2f} | {rd['refinement_mse_vs_clean_adversarial']:.5f} / "
                f"{rd['refinement_mse_vs_clean_control']:.5f} | {rd['refinement_effect_over_control']:.1f}x |")
    table += ["", f"| collapse at 8/255, {n_seeds:,} test images | " + " | ".join(f"seed {k}" for k in seeds)
              + " | mean | 95% interval |", "|---" * (len(seeds) + 3) + "|",
              "| effect (attack over noise) | " + " | ".join(f"{v:.2f}x" for v in by_seed)
              + f" | {mean:.2f}x | {mean - half:.2f}x to {mean + half:.2f}x |"]
    table += ["", "| latent diffusion: direction | eps | reconstruction: error vs original, clean / attack / noise | "
              "reconstruction: vs clean output, attack / noise | effect | edit: error vs original, clean / attack / noise"
              " | edit: vs clean edit, attack / noise | effect | posterior variance, clean / attack |",
              "|---|---|---|---|---|---|---|---|---|"]
    for direction in DIRECTIONS:
        for e in eps:
            r = rows[("LDM", direction, e)]
            table.append(
                f"| {direction} | {e}/255 | " + " / ".join(f"{r[f'reconstruction_mse_vs_original_{v}']:.4f}"
                                                          for v in ("clean", "adversarial", "control"))
                + f" | {r['reconstruction_mse_vs_clean_adversarial']:.5f} / {r['reconstruction_mse_vs_clean_control']:.5f}"
                f" | {r['reconstruction_effect_over_control']:.1f}x | "
                + " / ".join(f"{r[f'edit_mse_vs_original_{v}']:.4f}" for v in ("clean", "adversarial", "control"))
                + f" | {r['edit_mse_vs_clean_adversarial']:.5f} / {r['edit_mse_vs_clean_control']:.5f}"
                f" | {r['edit_effect_over_control']:.1f}x | {r['posterior_var_clean']:.2e} / "
                f"{r['posterior_var_adversarial']:.2e} |")
    table += ["", "| setting | autoencoder | images | latents | perturbation | what is measured |", "|---|---|---|---|---|---|",
              "| paper | Stable Diffusion 1.5's VAE (AutoencoderKL) | 512 x 512 RGB | 4 x 64 x 64 | 16/255, 40 steps "
              "| prompt-driven edits, and transfer across latent diffusion models |",
              f"| here | AutoencoderKL, widths {', '.join(map(str, ldm['ae_widths']))} | "
              f"{'8 x 8 digits' if quick else '28 x 28 Fashion-MNIST'} | {' x '.join(map(str, ldm_model['latent_shape']))}, "
              f"scaled by {ldm_model['scale']:.3f} | {', '.join(f'{e}/255' for e in eps)}, {steps} steps | the "
              f"reconstruction and an unconditional DDIM edit at strength {EDIT_STRENGTH} |"]
    notes = (f"VAEs: `varilab train --model vae --data {vae['data']}" + (" --arch conv" if not quick else "")
             + f" --latent-dim 16 --epochs {vae['epochs']} --seed 0` (VAE-A; VAE-B --seed 1; the seeds' table --seed 0 to "
             f"{seeds[-1]}). DiffuseVAE: `varilab train --model "
             f"diffusevae --data {dvae['data']}" + (" --downscale 2" if not quick else "")
             + f" --vae-epochs {dvae['vae_epochs']} --epochs {dvae['epochs']} --channels {dvae['channels']}`, attacked "
             f"on its own VAE, refined with 20 DDIM steps from the same noise for clean, attacked and control images. "
             f"{n} test images; {steps} PGD steps of eps / 8; errors are mean squared errors per pixel on [0, 1]. "
             "Transfer kept = (VAE-A's perturbation measured on VAE-B) / (VAE-B attacked directly), errors against "
             f"VAE-B's clean output. Paper: {PAPER}." + _seeds_note(by_seed, mean, half)
             + _ldm_note(ldm, ldm_model, quick, rows[("LDM-mild", "collapse", top)], top))
    return {"title": "The posterior collapse attack on VAEs, DiffuseVAE and a latent diffusion model (Fashion-MNIST)",
            "finding": "A perturbation of 8/255 that collapses a VAE encoder's posterior changes what the model makes of "
                       "the image at least 3 times as much as random noise of the same size, and keeps at least half "
                       "of that effect on a second VAE it never saw; at 16/255 (the paper's setting), collapsing the "
                       "posterior of a latent diffusion model's autoencoder changes its edits at least 3 times as much "
                       "as random noise.",
            "held": all(checks.values()), "checks": checks, "table": "\n".join(table), "notes": notes,
            "results": {**{f"{k}/{d}/{e}": {key: v for key, v in r.items() if isinstance(v, (int, float))}
                           for (k, d, e), r in rows.items()},
                        "collapse_8_by_seed": {"seeds": list(seeds), "images": n_seeds, "effect": by_seed,
                                               "mean": mean, "interval_95": [mean - half, mean + half]},
                        "ldm": ldm_model}}


def _ldm_note(ldm: dict, model: dict, quick: bool, mild: dict, top: int) -> str:
    from varilab.models.diffusion.diffusion import VPSchedule

    def kept(t: float) -> float:  # alpha_t^2, the share of the latent's signal variance left at time t
        return float(VPSchedule(T=ldm.get("timesteps", 1000)).alpha(t)) ** 2

    return (f" Latent diffusion: `varilab train --model ldm --data {ldm['data']} --ae-widths "
            f"{','.join(map(str, ldm['ae_widths']))} --ae-groups {ldm['ae_groups']} --vae-epochs {ldm['vae_epochs']} "
            f"--epochs {ldm['epochs']} --lr {ldm['lr']:g}" + (f" --channels {ldm['channels']} --mults 1 --timesteps "
                                                             f"{ldm['timesteps']}" if quick else "")
            + f"` ({model['train_seconds']:.0f} s here: the autoencoder with squared error and a KL weight of 1e-6, "
            f"then the DDPM on its latents scaled by {model['scale']:.4f}); its reconstruction error on the "
            f"{model['test_images']:,} test images is {model['reconstruction_mse']:.5f} per pixel. Attacked on its "
            f"autoencoder's encoder; the edit noises the scaled latent mean to t = {EDIT_STRENGTH} with one draw per "
            "image (the same for clean, attacked and control images) and takes it back to 0 with 20 DDIM steps. "
            f"t = {EDIT_STRENGTH} on this DDPM's linear schedule keeps alpha_t^2 = {kept(EDIT_STRENGTH):.3f} of the "
            "latent, as Stable Diffusion's img2img keeps at strength 0.7 on its scaled-linear schedule (0.083). A "
            f"milder edit, t = {MILD_EDIT} ({kept(MILD_EDIT):.3f} kept, as img2img's strength 0.5 keeps 0.278), "
            "outside the checks: the collapse "
            f"attack at {top}/255 changes it {mild['edit_effect_over_control']:.1f} times as much as random noise "
            f"({mild['edit_mse_vs_clean_adversarial']:.5f} against {mild['edit_mse_vs_clean_control']:.5f}).")


def _seeds_note(by_seed: list[float], mean: float, half: float) -> str:
    low, high = mean - half, mean + half
    where = ("above the bar: the effect reaches 3x" if low >= 3 else "below the bar: the effect falls short of 3x"
             if high < 3 else "around the bar: these seeds cannot tell whether the effect reaches 3x")
    return (f" Seeds: the effect at 8/255 ranges from {min(by_seed):.2f}x to {max(by_seed):.2f}x between VAEs of "
            f"different seeds (mean {mean:.2f}x, 95% interval {low:.2f}x to {high:.2f}x), {where}; VAE-A's effect on "
            "its first 200 images is the table's 8/255 row.")
