"""Inverse-problem solvers (seconds per image, CPU): RED-Diff, DPS and smc on 50% inpainting of 14 x 14 images,
each at the same number of network evaluations per image, against a hand-written loop of the same algorithm
around the same U-Net.

- varilab: `varilab.models.inverse.inverse.red_diff`, `inverse.dps` and `smc.smc` (16 particles; all of them through
  the U-Net in one call per step), given the prediction function of a `Denoiser` (14 x 14, width 16,
  multipliers 1, 2; random weights: speed does not depend on training) and an `operators.Mask`.
- plain PyTorch: each algorithm written out as one loop, with alpha_t and sigma_t read from `VPSchedule`
  before it and the mask applied by indexing: RED-Diff (Adam on mu, descending t, detached eps-hat), DPS
  (ancestral step, then the gradient of ||y - H x0_hat|| through the U-Net) and smc (ancestral moves,
  twists, log-weights, systematic resampling below half the particles).

Every contender spends EVALS network evaluations per image: RED-Diff and DPS run EVALS steps, smc
EVALS / 16 steps of 16 particles. Before timing, from the same weights, observation and random seed, each
varilab solver and its hand-written loop must give the same estimate. Runs alternate (ABBA) after a warm-up;
a row's figure is its median over the runs. --quick is a smoke run: 1 image, 16 evaluations, one round.
Run alone: `python bench/bench_inverse.py [--quick]`.
"""
from __future__ import annotations

import math
import sys
import time

import torch

from varilab.models.inverse import inverse, smc
from varilab.models.diffusion.denoiser import Denoiser, DenoiserConfig
from varilab.models.inverse.operators import Mask

import timing  # bench/timing.py

H = W = 14
D, PARTICLES, SEED = H * W, 16, 0
FULL = {"images": 8, "evals": 320, "rounds": 7}
QUICK = {"images": 1, "evals": 16, "rounds": 1}
TARGET_RATIO = 1.05
CHECK_ATOL = 1e-4


def build():
    torch.manual_seed(SEED)
    model = Denoiser(DenoiserConfig(x_dim=D, image_shape=(H, W), channels=16, mults=(1, 2)))
    model.net.conv_out.reset_parameters()  # zero at initialisation for training: random here, so its work is real
    model.eval().requires_grad_(False)
    mask = torch.rand(D, generator=torch.Generator().manual_seed(1)) < 0.5
    return model, Mask(mask), mask


def observation(n: int, mask) -> torch.Tensor:
    x = torch.rand(n, D, generator=torch.Generator().manual_seed(2)) * 2 - 1
    return x[:, mask] + 0.1 * torch.randn(n, int(mask.sum()), generator=torch.Generator().manual_seed(3))


def coefs(model, ts):
    s = model.schedule
    t = torch.tensor(ts, dtype=torch.float64)
    return s.alpha(t).tolist(), s.sigma(t).tolist()


# --- hand-written loops ---------------------------------------------------------------------------------

def hand_red_diff(model, mask, y, steps, lam=0.25, lr=0.1):
    g = torch.Generator().manual_seed(SEED)
    ts = torch.linspace(0.999, 0.001, steps, dtype=torch.float64).tolist()
    alpha, sigma = coefs(model, ts)
    mu = torch.zeros(len(y), D)
    mu[:, mask] = y
    mu.requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99))
    for t, a, s in zip(ts, alpha, sigma):
        eps = torch.randn(mu.shape, generator=g)
        with torch.no_grad():
            eps_hat = model.net(a * mu + s * eps, torch.full((len(y),), t))
        loss = (y - mu[:, mask]).pow(2).mean(1) / 2 + lam * (s / a) * ((eps_hat - eps) * mu).mean(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    return mu.detach()


def hand_dps(model, mask, y, steps, zeta=1.0):
    g = torch.Generator().manual_seed(SEED)
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    alpha, sigma = coefs(model, ts)
    x = torch.randn(len(y), D, generator=g)
    for k in range(steps):
        a_t, s_t, a_s, s_s = alpha[k], sigma[k], alpha[k + 1], sigma[k + 1]
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            eps = model.net(x, torch.full((len(y),), ts[k]))
            x0 = (x - s_t * eps) / a_t
            norm = (y - x0[:, mask]).pow(2).sum(1).sqrt()
            grad = torch.autograd.grad(norm.sum(), x)[0]
        a_ts = a_t / a_s
        var = s_t ** 2 - a_ts ** 2 * s_s ** 2
        mean = a_ts * s_s ** 2 / s_t ** 2 * x.detach() + a_s * var / s_t ** 2 * x0.detach()
        std = math.sqrt(max(var * s_s ** 2 / s_t ** 2, 0.0))
        x = mean + std * torch.randn(x.shape, generator=g) - zeta * grad
    return x.detach()


def hand_smc(model, mask, y, steps, r=0.1):
    g = torch.Generator().manual_seed(SEED)
    b, n = len(y), PARTICLES
    ts = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64).tolist()
    alpha, sigma = coefs(model, ts)
    y_rep = y.repeat_interleave(n, 0)
    rows = torch.arange(b)[:, None] * n

    def x0_and_log_g(x, k):
        eps = model.net(x, torch.full((len(x),), ts[k]))
        x0 = (x - sigma[k] * eps) / alpha[k]
        var = r ** 2 + sigma[k] ** 2 / (alpha[k] ** 2 + sigma[k] ** 2)
        return x0, (-(y_rep - x0[:, mask]).pow(2).sum(1) / (2 * var)).reshape(b, n)

    x = torch.randn(b * n, D, generator=g)
    x0, log_g = x0_and_log_g(x, 0)
    log_w = log_g.clone()
    for k in range(steps):
        w = torch.softmax(log_w.double(), 1)
        low = 1 / w.pow(2).sum(1) < 0.5 * n
        if low.any():
            cdf = torch.cumsum(w[low], 1)
            cdf[:, -1] = 1.0
            u = (torch.rand(int(low.sum()), 1, generator=g, dtype=torch.float64) + torch.arange(n)) / n
            idx = torch.arange(n).expand(b, n).clone()
            idx[low] = torch.searchsorted(cdf, u).clamp(max=n - 1)
            flat = (rows + idx).reshape(-1)
            x, x0, log_g = x[flat], x0[flat], log_g.reshape(-1)[flat].reshape(b, n)
            log_w = torch.where(low[:, None], torch.zeros_like(log_w), log_w)
        a_t, s_t, a_s, s_s = alpha[k], sigma[k], alpha[k + 1], sigma[k + 1]
        a_ts = a_t / a_s
        var = s_t ** 2 - a_ts ** 2 * s_s ** 2
        mean = a_ts * s_s ** 2 / s_t ** 2 * x + a_s * var / s_t ** 2 * x0
        x = mean + math.sqrt(max(var * s_s ** 2 / s_t ** 2, 0.0)) * torch.randn(x.shape, generator=g)
        if k + 1 < steps:
            x0, log_g_s = x0_and_log_g(x, k + 1)
        else:
            x0, log_g_s = x, (-(y_rep - x[:, mask]).pow(2).sum(1) / (2 * r ** 2)).reshape(b, n)
        log_w, log_g = log_w + log_g_s - log_g, log_g_s
    w = torch.softmax(log_w.double(), 1)
    return (w[..., None] * x.reshape(b, n, D).double()).sum(1).float()


# --- contenders ----------------------------------------------------------------------------------------

def solvers(model, op, mask, evals: int) -> dict:
    """name -> y -> estimate [B, D]; equal network evaluations per image for all."""
    pred = lambda x, t: model.net(x, t.to(x.dtype))  # noqa: E731 (the raw network, as the hand loops call it)
    gen = lambda: torch.Generator().manual_seed(SEED)  # noqa: E731
    k = evals // PARTICLES
    return {
        ("RED-Diff", "varilab"): lambda y: inverse.red_diff(pred, model.schedule, op, y, steps=evals, generator=gen())[0],
        ("RED-Diff", "plain PyTorch"): lambda y: hand_red_diff(model, mask, y, evals),
        ("DPS", "varilab"): lambda y: inverse.dps(pred, model.schedule, op, y, steps=evals, generator=gen())[0],
        ("DPS", "plain PyTorch"): lambda y: hand_dps(model, mask, y, evals),
        ("smc", "varilab"): lambda y: smc.smc(pred, model.schedule, op, y, 0.1, particles=PARTICLES, steps=k,
                                              generator=gen())[0],
        ("smc", "plain PyTorch"): lambda y: hand_smc(model, mask, y, k),
    }


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t_start = time.perf_counter()
    model, op, mask = build()
    fns = solvers(model, op, mask, plan["evals"])
    y = observation(plan["images"], mask)
    check = {}
    for algo in ("RED-Diff", "DPS", "smc"):  # same weights, observation and seed: the same estimate
        ours, hand = fns[(algo, "varilab")](y[:1]), fns[(algo, "plain PyTorch")](y[:1])
        diff = float((ours - hand).abs().max())
        check[algo] = {"max_abs_diff": diff, "ok": diff <= CHECK_ATOL * max(1.0, float(hand.abs().max()))}
    times, other_busy = timing.other_cpu_busy(lambda: timing.abba(fns, y, y[:1], plan["rounds"], len(y)))
    rows, by_row = timing.per_group(times, ("RED-Diff", "DPS", "smc"))
    ratios = {algo: by_row[f"{algo} / varilab"] for algo in ("RED-Diff", "DPS", "smc")}
    worst = max(ratios.values())
    notes = [f"Equal work: {plan['evals']} network evaluations per image for every contender (smc: "
             f"{plan['evals'] // PARTICLES} steps of {PARTICLES} particles, one U-Net call per step for all of them).",
             "Same estimates before timing: " + ", ".join(
                 f"{a} {'agrees' if c['ok'] else '**differs**'} (max |difference| {c['max_abs_diff']:.1e})"
                 for a, c in check.items()) + ".",
             "Ratios are each solver's varilab time over its own hand-written loop: " +
             ", ".join(f"{a} {v:.3f}" for a, v in ratios.items()) + "."]
    print("[bench] inverse ratios: " + ", ".join(f"{a} {v:.3f}" for a, v in ratios.items()), file=sys.stderr)
    return {
        "title": f"Inverse-problem solvers, 50% inpainting of 14 x 14 images, {plan['evals']} network evaluations "
                 f"per image, {plan['images']} images per call (CPU)",
        "description": " ".join(" ".join(__doc__.split("\n\n")[i].split()) for i in (0, 1, 2)),
        "unit": "s/image",
        "baseline": "each solver's plain PyTorch loop",
        "contenders": rows,
        "target": {"text": f"each varilab solver at most {TARGET_RATIO} times its hand-written loop's time",
                   "metric": "ratio", "threshold": TARGET_RATIO, "value": worst, "met": bool(worst <= TARGET_RATIO)},
        "notes": notes,
        "checks": {"same_estimates": check, "ratios": ratios, "other_cpu_busy_while_timing": other_busy},
        "settings": {**plan, "particles": PARTICLES, "threads": torch.get_num_threads()},
        "seconds": time.perf_counter() - t_start,
    }


def _rss_child(name: str, quick: bool) -> None:
    model, op, mask = build()
    algo, contender = name.split(" / ")
    solvers(model, op, mask, 32)[(algo, contender)](observation(2, mask))


if __name__ == "__main__":
    timing.main(__doc__, run, _rss_child)
