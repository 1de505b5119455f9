"""One training step of the MLP VAE through varilab's API, against the same step written in plain PyTorch.

Model: 784-512-16, one hidden layer of 512 ReLU units each way, Bernoulli likelihood, batch 128,
float32, CPU, Adam (lr 1e-3), PyTorch's default number of threads. A step is forward, backward and
the Adam update.

- "varilab": `VAE(VAEConfig(x_dim=784, latent_dim=16, hidden=(512,)))` and
  `vae_loss(model, x)["loss"]`.
- "plain PyTorch": four `nn.Linear` layers, the reparameterisation, BCE-with-logits summed over
  pixels and the closed-form Gaussian KL, averaged over the batch, all written out by hand.

Both start from the same weights, get the same batches (random binary vectors, fixed seed) and run
in one process, alternating step by step (ABBA order, so neither always runs first), after a
warm-up. Before timing, both losses and gradients are computed from the same weights and the same
noise and must agree, so the comparison is of equal work. Peak RSS is measured separately, each
contender alone in a fresh process.

Run it alone: `python bench/bench_step.py [--quick]`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from varilab.core import vae_loss
from varilab.models import VAE, VAEConfig
from varilab.perf import tune_malloc

import timing  # bench/timing.py (bench/ is on the path under bench/run.py and when run alone)

X_DIM, HIDDEN, LATENT, BATCH, LR = 784, 512, 16, 128, 1e-3
SEED, DATA_SEED, N_BATCHES = 0, 1234, 16
TARGET_RATIO = 1.05  # varilab's median step time at most 5% above the hand-written one
LOSS_RTOL = 1e-4  # losses at initialisation, same weights and noise
GRAD_RTOL, GRAD_ATOL = 1e-4, 1e-6

VARILAB, PLAIN = "varilab", "plain PyTorch"
DEVICE = torch.device("cpu")  # `--device cuda` times the same step on a GPU (not part of make bench)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()

# (warm-up steps, timed steps) per contender, and the steps each contender runs in the RSS process
FULL = {"warmup": 300, "steps": 3000, "rss_steps": 100}
QUICK = {"warmup": 20, "steps": 100, "rss_steps": 10}


class HandVAE(nn.Module):
    """The same network written by hand: encoder 784 -> 512 -> 2*16, decoder 16 -> 512 -> 784."""

    def __init__(self):
        super().__init__()
        self.enc_hidden = nn.Linear(X_DIM, HIDDEN)
        self.enc_out = nn.Linear(HIDDEN, 2 * LATENT)
        self.dec_hidden = nn.Linear(LATENT, HIDDEN)
        self.dec_out = nn.Linear(HIDDEN, X_DIM)


def hand_loss(model: HandVAE, x: torch.Tensor) -> torch.Tensor:
    """The negative ELBO, averaged over the batch, with nothing but tensor operations."""
    mu, log_var = model.enc_out(torch.relu(model.enc_hidden(x))).chunk(2, dim=-1)
    std = torch.exp(0.5 * log_var)
    z = mu + std * torch.randn_like(std)  # reparameterisation
    logits = model.dec_out(torch.relu(model.dec_hidden(z)))
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)  # -log p(x|z)
    kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).sum(-1)  # KL(N(mu, sigma^2) || N(0, I))
    return (recon + kl).mean()


def varilab_loss(model: VAE, x: torch.Tensor) -> torch.Tensor:
    return vae_loss(model, x)["loss"]


def build_varilab() -> VAE:
    torch.manual_seed(SEED)
    return VAE(VAEConfig(x_dim=X_DIM, latent_dim=LATENT, hidden=(HIDDEN,))).to(DEVICE)


def build_hand(like: VAE | None = None) -> HandVAE:
    """A HandVAE from the same seed; with `like`, its weights are then copied from that VAE."""
    torch.manual_seed(SEED)
    model = HandVAE().to(DEVICE)
    if like is not None:
        with torch.no_grad():
            for mine, theirs in zip(_layers(model), _varilab_layers(like)):
                mine.weight.copy_(theirs.weight)
                mine.bias.copy_(theirs.bias)
    return model.to(DEVICE)


def _layers(model: HandVAE) -> list[nn.Linear]:
    return [model.enc_hidden, model.enc_out, model.dec_hidden, model.dec_out]


def _varilab_layers(model: VAE) -> list[nn.Linear]:
    layers = [m for m in [*model.encoder, *model.decoder] if isinstance(m, nn.Linear)]
    if [(m.in_features, m.out_features) for m in layers] != [(X_DIM, HIDDEN), (HIDDEN, 2 * LATENT),
                                                              (LATENT, HIDDEN), (HIDDEN, X_DIM)]:
        raise RuntimeError(f"varilab's VAE is not the 784-512-16 network this benchmark compares: {layers}")
    return layers


def make_batches() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(DATA_SEED)
    return [torch.bernoulli(torch.full((BATCH, X_DIM), 0.5), generator=g).to(DEVICE) for _ in range(N_BATCHES)]


def check_equal_work(x: torch.Tensor) -> dict:
    """Same weights, same noise: the two losses and all their gradients must agree."""
    vl = build_varilab()
    hand = build_hand()
    same_init = all(torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
                    for a, b in zip(_layers(hand), _varilab_layers(vl)))
    hand = build_hand(like=vl)
    torch.manual_seed(SEED + 1)
    loss_v = varilab_loss(vl, x)
    torch.manual_seed(SEED + 1)
    loss_h = hand_loss(hand, x)
    loss_v.backward()
    loss_h.backward()
    lv, lh = loss_v.item(), loss_h.item()
    abs_diff = abs(lv - lh)
    rel_diff = abs_diff / max(abs(lh), 1e-12)
    grad_diffs = []
    grads_ok = True
    for a, b in zip(_varilab_layers(vl), _layers(hand)):
        for ga, gb in ((a.weight.grad, b.weight.grad), (a.bias.grad, b.bias.grad)):
            grad_diffs.append(float((ga - gb).abs().max()))
            grads_ok &= bool(torch.allclose(ga, gb, rtol=GRAD_RTOL, atol=GRAD_ATOL))
    return {
        "same_init_from_seed": bool(same_init),
        "loss_varilab": lv,
        "loss_plain": lh,
        "loss_abs_diff": abs_diff,
        "loss_rel_diff": rel_diff,
        "loss_rtol": LOSS_RTOL,
        "grad_max_abs_diff": max(grad_diffs),
        "grad_rtol": GRAD_RTOL,
        "grad_atol": GRAD_ATOL,
        "ok": bool(rel_diff <= LOSS_RTOL and grads_ok),
    }


def _stepper(model: nn.Module, loss_fn):
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def step(x: torch.Tensor) -> None:
        loss = loss_fn(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def time_interleaved(warmup: int, steps: int, batches: list[torch.Tensor]) -> dict[str, np.ndarray]:
    vl = build_varilab()
    hand = build_hand(like=vl)
    run = {VARILAB: _stepper(vl, varilab_loss), PLAIN: _stepper(hand, hand_loss)}
    times = {name: np.empty(steps) for name in run}
    order = [VARILAB, PLAIN]
    torch.manual_seed(SEED + 2)
    for i in range(warmup + steps):
        x = batches[i % len(batches)]
        for name in (order if i % 2 == 0 else order[::-1]):  # ABBA: neither always goes first
            _sync()
            t0 = time.perf_counter()
            run[name](x)
            _sync()
            dt = time.perf_counter() - t0
            if i >= warmup:
                times[name][i - warmup] = dt
    return times


def ratio_interval(num: np.ndarray, den: np.ndarray, reps: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of median(num) / median(den), resampling the interleaved pairs together."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(reps, len(num)))
    r = np.median(num[idx], axis=1) / np.median(den[idx], axis=1)
    lo, hi = np.percentile(r, [2.5, 97.5])
    return float(lo), float(hi)


def memory_mb(contender: str, steps: int) -> dict[str, float | None]:
    """Peak RSS of a fresh process that builds one contender and runs `steps` steps, and its RSS
    once Python, PyTorch and varilab are imported (before the model and data exist)."""
    try:
        out = subprocess.run([sys.executable, __file__, "--rss-child", contender, "--steps", str(steps)],
                             capture_output=True, text=True, timeout=300, check=True).stdout
        got = json.loads(out.strip().splitlines()[-1])
        return {"peak_rss_mb": float(got["peak_rss_mb"]), "import_rss_mb": float(got["import_rss_mb"])}
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError):
        return {"peak_rss_mb": None, "import_rss_mb": None}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def _rss_child(contender: str, steps: int) -> None:
    import_rss = _status_mb("VmRSS")
    tune_malloc()  # as in the timed run
    batches = make_batches()
    if contender == VARILAB:
        step = _stepper(build_varilab(), varilab_loss)
    else:
        step = _stepper(build_hand(), hand_loss)  # same seed, same initial weights
    for i in range(steps):
        step(batches[i % len(batches)])
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over exec, so it would report the
    # parent's peak (the harness after earlier benchmarks) instead of this process's own.
    print(json.dumps({"peak_rss_mb": _status_mb("VmHWM"), "import_rss_mb": import_rss}))


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t_start = time.perf_counter()
    batches = make_batches()
    equal = check_equal_work(batches[0])
    # first with the process's default malloc, then with the setting varilab's trainer applies
    untuned = time_interleaved(plan["warmup"], plan["steps"], batches)
    tuned = tune_malloc()
    times, other = timing.other_cpu_busy(lambda: time_interleaved(plan["warmup"], plan["steps"], batches))
    mem = {name: memory_mb(name, plan["rss_steps"]) if DEVICE.type == "cpu" else
           {"peak_rss_mb": None, "import_rss_mb": None} for name in (VARILAB, PLAIN)}

    base = float(np.median(times[PLAIN]))
    contenders = []
    for name in (VARILAB, PLAIN):
        t = times[name]
        p10, p25, med, p75, p90 = (float(v) for v in np.percentile(t, [10, 25, 50, 75, 90]))
        contenders.append({"name": name, "median_s": med, "p10_s": p10, "p90_s": p90, "p25_s": p25,
                           "p75_s": p75, "mean_s": float(t.mean()), "steps": int(len(t)),
                           "ratio": med / base, **mem[name]})
    ratio = contenders[0]["ratio"]
    lo, hi = ratio_interval(times[VARILAB], times[PLAIN])
    u_v, u_p = float(np.median(untuned[VARILAB])), float(np.median(untuned[PLAIN]))
    u_lo, u_hi = ratio_interval(untuned[VARILAB], untuned[PLAIN])
    notes = [f"Both contenders are timed after `varilab.perf.tune_malloc()` ({'applied' if tuned else 'not available here'}), "
             "the setting varilab's trainer uses. Before it, with the process's default malloc, in the same process "
             f"and the same number of steps: varilab {u_v * 1e3:.2f} ms, plain PyTorch {u_p * 1e3:.2f} ms, ratio "
             f"{u_v / u_p:.3f} (95% interval {u_lo:.3f}-{u_hi:.3f}); that ratio moves by a few percent from run to run "
             "with where the allocator places the buffers."]
    paired = float(np.median(times[VARILAB] / times[PLAIN]))
    return {
        "title": f"One training step of the MLP VAE (784-512-16, Bernoulli, batch 128, {DEVICE.type.upper()})",
        "description": ("Forward, backward and Adam step of the same network: through `varilab.models.VAE` and "
                        "`varilab.core.vae_loss`, and written by hand in plain PyTorch (`nn.Linear`, the "
                        "reparameterisation, BCE-with-logits and the closed-form Gaussian KL). Same weights, same "
                        "batches (random binary vectors), float32, PyTorch's default threads; the two alternate "
                        "step by step in one process after a warm-up, with the malloc setting varilab's trainer "
                        "uses (see the note). Peak RSS: each alone in a fresh process; "
                        "it includes the Python and PyTorch runtime."),
        "unit": "s/step",
        "baseline": PLAIN,
        "contenders": contenders,
        "target": {
            "text": f"varilab's step at most {TARGET_RATIO - 1:.0%} slower than plain PyTorch "
                    f"(median ratio <= {TARGET_RATIO})",
            "metric": "ratio", "threshold": TARGET_RATIO, "value": ratio,
            "interval_95": [lo, hi], "paired_median_ratio": paired,
            "met": bool(ratio <= TARGET_RATIO),
        },
        "checks": {"equal_work": equal, "other_cpu_busy_while_timing": other},
        "notes": notes,
        "default_malloc": {"median_s": {VARILAB: u_v, PLAIN: u_p}, "ratio": u_v / u_p, "interval_95": [u_lo, u_hi],
                           "tune_malloc_applied": tuned},
        "settings": {"x_dim": X_DIM, "hidden": [HIDDEN], "latent_dim": LATENT, "batch_size": BATCH,
                     "likelihood": "bernoulli", "optimizer": f"Adam(lr={LR})", "dtype": "float32",
                     "device": str(DEVICE) if DEVICE.type == "cpu" else torch.cuda.get_device_name(DEVICE), "threads": torch.get_num_threads(), "data": "random binary vectors",
                     "warmup_steps": plan["warmup"], "timed_steps": plan["steps"],
                     "rss_steps": plan["rss_steps"], "order": "alternating, ABBA"},
        "seconds": time.perf_counter() - t_start,
    }


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu (the benchmark) or cuda (the same step on a GPU)")
    ap.add_argument("--rss-child", choices=[VARILAB, PLAIN], help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=10, help=argparse.SUPPRESS)
    args = ap.parse_args()
    DEVICE = torch.device(args.device)
    if args.rss_child:
        _rss_child(args.rss_child, args.steps)
    else:
        print(json.dumps(run(args.quick), indent=2))
