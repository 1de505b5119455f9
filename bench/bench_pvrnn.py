"""PV-RNN training (seconds per epoch, CPU): `varilab.train.fit` on `varilab.models.pvrnn.PVRNN` against a
hand-written PyTorch loop of the same network, and error regression's seconds per time step.

- varilab: `fit(model, sequences.for_trainer(), objective=pvrnn.trainer_loss)`, one epoch at a time, with all that
  an epoch of varilab does: the step, the test sequences' free-running error, metrics, weights and a checkpoint.
- plain PyTorch: the same network written out with its weights as tensors (MTRNN update, prior, posterior from the
  adaptive vectors, closed-form KL, squared error), Adam, the same batches; nothing written to disk.

16 training and 8 test sequences of 100 steps (the switching process), 2 layers d = (20, 8), z = (2, 1), tau =
(2, 8), w = 0.01, batch 16 (one step per epoch, as in the reproduction). Before timing, from the same weights and
noise, both losses must agree. Error regression: `pvrnn.error_regression` on the 8 test sequences, window 20, 30
Adam steps per time step. Runs alternate (ABBA) after a warm-up; figures are medians. --quick: 3 epochs, one round,
error regression on 10 steps. Run alone: `python bench/bench_pvrnn.py [--quick]`.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import torch

from varilab.data.sequences import load
from varilab.models.pvrnn import PVRNN, PVRNNConfig, error_regression, trainer_loss
from varilab.train import fit

import timing  # bench/timing.py

SEED = 0
FULL = {"epochs": 20, "rounds": 5, "er_steps": 100}
QUICK = {"epochs": 3, "rounds": 1, "er_steps": 10}
TARGET_RATIO = 1.1


def build():
    data = load("switching", n=24, length=100, seed=SEED)
    torch.manual_seed(SEED)
    cfg = PVRNNConfig(x_dim=2, sequences=len(data.x_train), length=100, w=(0.01, 0.01))
    return data, PVRNN(cfg)


def hand_loss(p: dict, x: torch.Tensor, idx: torch.Tensor, cfg: PVRNNConfig) -> torch.Tensor:
    """The PV-RNN loss written out: p holds the weights as tensors, named as in the module's state dict."""
    b, T, _ = x.shape
    L = len(cfg.d)
    h = [torch.zeros(b, n) for n in cfg.d]
    d = [torch.zeros(b, n) for n in cfg.d]
    recon, kl = 0.0, 0.0
    for t in range(T):
        new_d = [None] * L
        for l in reversed(range(L)):
            if t == 0:
                mu_p = ls_p = torch.zeros(b, cfg.z[l])
            else:
                mu_p = torch.tanh(d[l] @ p[f"prior_mu.{l}.weight"].T + p[f"prior_mu.{l}.bias"])
                ls_p = d[l] @ p[f"prior_log_sigma.{l}.weight"].T + p[f"prior_log_sigma.{l}.bias"]
            mu_q, ls_q = torch.tanh(p[f"a_mu.{l}"][idx, t]), p[f"a_log_sigma.{l}"][idx, t]
            z = mu_q + ls_q.exp() * torch.randn_like(mu_q)
            k = (ls_p - ls_q + 0.5 * ((2 * ls_q).exp() + (mu_q - mu_p) ** 2) * (-2 * ls_p).exp() - 0.5).sum(-1)
            kl = kl + (cfg.w1 if t == 0 else cfg.w[l]) * k / cfg.z[l]
            u = d[l] @ p[f"cells.{l}.dd.weight"].T + p[f"cells.{l}.dd.bias"] + z @ p[f"cells.{l}.dz.weight"].T
            if l + 1 < L:
                u = u + new_d[l + 1] @ p[f"cells.{l}.up.weight"].T
            h[l] = (1 - 1 / cfg.tau[l]) * h[l] + u / cfg.tau[l]
            new_d[l] = torch.tanh(h[l])
        d = new_d
        recon = recon + (x[:, t] - torch.tanh(d[0] @ p["out.weight"].T + p["out.bias"])).pow(2).sum(-1)
    return (recon + kl).mean()


def hand_epochs(p: dict, opt, data, cfg, epochs: int, batch: int = 16) -> None:
    x = data.x_train
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for idx in perm.split(batch):
            loss = hand_loss(p, x[idx], idx, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t_start = time.perf_counter()
    data, model = build()
    cfg = model.config
    params = {k: v.detach().clone().requires_grad_(True) for k, v in model.state_dict().items()}
    idx = torch.arange(len(data.x_train))
    torch.manual_seed(1)
    ours = float(model.loss(data.x_train, idx)["loss"])
    torch.manual_seed(1)
    theirs = float(hand_loss(params, data.x_train, idx, cfg))
    same = {"loss_varilab": ours, "loss_plain": theirs, "rel_diff": abs(ours - theirs) / abs(theirs)}
    same["ok"] = same["rel_diff"] < 1e-5
    opt = torch.optim.Adam(params.values(), lr=1e-3)
    ds = data.for_trainer()
    work = Path(tempfile.mkdtemp(prefix="varilab-bench-pvrnn-"))
    done = {"epochs": 0}

    def varilab_epochs(_):
        start = done["epochs"]
        done["epochs"] += plan["epochs"]
        fit(model, ds, out=work, epochs=done["epochs"], batch_size=16, objective=trainer_loss, quiet=True,
            resume=start > 0)

    fns = {("PV-RNN epoch", "varilab"): varilab_epochs,
           ("PV-RNN epoch", "plain PyTorch"): lambda _: hand_epochs(params, opt, data, cfg, plan["epochs"])}
    times, other_busy = timing.other_cpu_busy(lambda: timing.abba(fns, None, None, plan["rounds"], plan["epochs"]))
    rows, ratios = timing.per_group(times, ("PV-RNN epoch",))
    test = data.x_test
    t0 = time.perf_counter()
    error_regression(model, test[:, :plan["er_steps"]], window=20, iterations=30, ahead=10)
    er_per_step = (time.perf_counter() - t0) / plan["er_steps"]
    ratio = ratios["PV-RNN epoch / varilab"]
    notes = [f"Same loss from the same weights and noise: {ours:.6g} (varilab) and {theirs:.6g} (plain) "
             f"(relative difference {same['rel_diff']:.1e}): " + ("they agree." if same["ok"] else "**they differ**."),
             f"varilab's epochs include its per-epoch work (the test sequences' error, metrics, weights, checkpoint, "
             f"and a resume per timed call); the plain loop writes nothing.",
             f"Error regression on {len(test)} test sequences (window 20, 30 Adam steps per time step): "
             f"{er_per_step:.3f} s per time step."]
    print(f"[bench] pvrnn ratio {ratio:.3f}; error regression {er_per_step:.3f} s per step", file=sys.stderr)
    return {
        "title": "PV-RNN training, 16 sequences of 100 steps, batch 16 (CPU)",
        "description": " ".join(" ".join(__doc__.split("\n\n")[i].split()) for i in (0, 1, 2)),
        "unit": "s/epoch",
        "baseline": "PV-RNN epoch / plain PyTorch",
        "contenders": rows,
        "target": {"text": f"varilab at most {TARGET_RATIO} times the hand-written loop's time per epoch",
                   "metric": "ratio", "threshold": TARGET_RATIO, "value": ratio, "met": bool(ratio <= TARGET_RATIO)},
        "notes": notes,
        "checks": {"same_loss": same, "error_regression_s_per_step": er_per_step,
                   "other_cpu_busy_while_timing": other_busy},
        "settings": {**plan, "threads": torch.get_num_threads()},
        "seconds": time.perf_counter() - t_start,
    }


if __name__ == "__main__":
    timing.main(__doc__, run)
