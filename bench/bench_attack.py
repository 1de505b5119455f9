"""Attacks (seconds per image per PGD step, CPU): the posterior collapse attack on a convolutional VAE encoder
(28 x 28, 16 latents) and L-infinity PGD on the small CNN classifier (28 x 28, 10 classes), each against the
same loop written by hand, and the classifier's PGD against the Adversarial Robustness Toolbox's.

- varilab: `varilab.models.robust.attacks.posterior_attack(vae.encode, x, eps, steps)` (PCA-, v = 1e-8) and
  `attacks.pgd(cross-entropy of the classifier, x, eps, steps, 2.5 eps / steps)`.
- plain PyTorch: the same sign-gradient loop written out around the same network: the loss from the encoder's
  mean and log-variance (or the logits), autograd, a sign step and the projection by min, max and clamp.
- ART: `ProjectedGradientDescent` (norm inf, no random start) on `PyTorchClassifier` around the same classifier,
  which moves the images between NumPy and torch every step (installed in .venv-bench).

Random weights (speed does not depend on training), 64 images of uniform noise, eps 8/255, 20 steps. Before
timing, each varilab attack and its hand-written loop (and ART's PGD) must give the same images. Runs alternate
(ABBA) after a warm-up; a row's figure is its median over the runs. --quick: 8 images, 3 steps, one round.
Run alone: `python bench/bench_attack.py [--quick]`.
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

from varilab.models import VAE, VAEConfig
from varilab.models.robust.attacks import pgd, posterior_attack
from varilab.models.robust.classifier import Classifier

import timing  # bench/timing.py

SEED, EPS = 0, 8 / 255
FULL = {"images": 64, "steps": 20, "rounds": 7}
QUICK = {"images": 8, "steps": 3, "rounds": 1}
TARGET_RATIO = 1.05


def build():
    torch.manual_seed(SEED)
    vae = VAE(VAEConfig(x_dim=784, latent_dim=16, arch="conv", image_shape=(28, 28))).eval().requires_grad_(False)
    clf = Classifier((28, 28), 10).eval()
    return vae, clf


def data(n: int):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)


# --- hand-written loops ---------------------------------------------------------------------------------

def hand_pca(vae, x, steps, v=1e-8):
    a = EPS / 8
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        mu, log_var = vae.encoder(x_adv).chunk(2, dim=-1)
        loss = 0.5 * (-log_var - 1 + (mu * mu + log_var.exp()) / v).sum()
        (g,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() - a * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    return x_adv


def hand_pgd(clf, x, y, steps):
    a = 2.5 * EPS / steps
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(clf(x_adv), y, reduction="sum"), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + a * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    return x_adv


def art_pgd(clf, x, y, steps):
    from varilab.models.robust.robustness import art_attack

    return art_attack(clf, x, y, "pgd", EPS, steps, classes=10, batch_size=len(x))


def contenders(vae, clf, y, steps) -> dict:
    ce = lambda xa: F.cross_entropy(clf(xa), y, reduction="none")  # noqa: E731
    fns = {("posterior collapse attack", "varilab"): lambda x: posterior_attack(vae.encode, x, EPS, steps),
           ("posterior collapse attack", "plain PyTorch"): lambda x: hand_pca(vae, x, steps),
           ("classifier PGD", "varilab"): lambda x: pgd(ce, x, EPS, steps, 2.5 * EPS / steps),
           ("classifier PGD", "plain PyTorch"): lambda x: hand_pgd(clf, x, y, steps)}
    try:
        import art  # noqa: F401  (the Adversarial Robustness Toolbox: .venv-bench, or varilab[robust])

        fns[("classifier PGD", "ART")] = lambda x: art_pgd(clf, x, y, steps)
    except ImportError:
        pass
    return fns


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t_start = time.perf_counter()
    vae, clf = build()
    x, y = data(plan["images"])
    fns = contenders(vae, clf, y, plan["steps"])
    check = {}
    for algo in ("posterior collapse attack", "classifier PGD"):  # the same images from every contender
        ref = fns[(algo, "plain PyTorch")](x)
        for (a, who), fn in fns.items():
            if a == algo and who != "plain PyTorch":
                diff = float((fn(x) - ref).abs().max())
                check[f"{algo} / {who}"] = {"max_abs_diff": diff, "ok": diff <= 1e-6}
    per = len(x) * plan["steps"]
    times, other_busy = timing.other_cpu_busy(lambda: timing.abba(fns, x, x, plan["rounds"], per))
    rows, ratios = timing.per_group(times, ("posterior collapse attack", "classifier PGD"))
    pca = ratios["posterior collapse attack / varilab"]
    if "classifier PGD / ART" in ratios:
        art_note = (f"ART's PGD took {ratios['classifier PGD / ART'] / ratios['classifier PGD / varilab']:.1f} times "
                    "varilab's time on the same classifier.")
    else:
        art_note = "ART is not installed here (it is in .venv-bench and varilab[robust])."
    notes = ["Same images before timing: " + ", ".join(f"{k} {'agrees' if c['ok'] else '**differs**'} (max "
                                                      f"|difference| {c['max_abs_diff']:.1e})" for k, c in check.items())
             + ".", "Ratios are over each attack's own hand-written loop: " +
             ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()) + ".", art_note]
    print("[bench] attack ratios: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()), file=sys.stderr)
    return {
        "title": f"Attacks, {plan['images']} images of 28 x 28 per call, {plan['steps']} PGD steps (CPU)",
        "description": " ".join(" ".join(__doc__.split("\n\n")[i].split()) for i in (0, 1, 2)),
        "unit": "s/image/step",
        "baseline": "each attack's plain PyTorch loop",
        "contenders": rows,
        "target": {"text": f"the posterior collapse attack at most {TARGET_RATIO} times its hand-written loop's time",
                   "metric": "ratio", "threshold": TARGET_RATIO, "value": pca, "met": bool(pca <= TARGET_RATIO)},
        "notes": notes,
        "checks": {"same_images": check, "ratios": ratios, "other_cpu_busy_while_timing": other_busy},
        "settings": {**plan, "eps": EPS, "threads": torch.get_num_threads()},
        "seconds": time.perf_counter() - t_start,
    }


def _rss_child(name: str, quick: bool) -> None:
    vae, clf = build()
    x, y = data(8)
    algo, contender = name.split(" / ")
    contenders(vae, clf, y, 3)[(algo, contender)](x)


if __name__ == "__main__":
    timing.main(__doc__, run, _rss_child)
