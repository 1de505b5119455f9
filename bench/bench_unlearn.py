"""Unlearning (CPU): LAF's wall time against retraining from scratch and fine-tuning, each forgetting class 0 of the
same trained classifier (Fashion-MNIST, the CNN of `varilab train --model classifier --width 16`, 2 epochs), through
`varilab.families.robust.unlearn.one` (what `varilab unlearn --method M` runs, without the membership attacks); and one
LAF step (a stage-2 step on L_UE with both representation VAEs, then a stage-3 step on InfoNCE and the forgotten rows'
cosine to their originals) against the same two
losses and Adam steps written out by hand in plain PyTorch around the same modules (the ELBO of each VAE from its
encoder and decoder, the KL in closed form, InfoNCE as a cross-entropy of cosines). Before timing, from the same weights
and noise, the two steps must give the same losses. The methods run once each in alternating order over the rounds;
the steps alternate (ABBA) after a warm-up. --quick: digits, 1 round, 20 steps. Run alone:
`python bench/bench_unlearn.py [--quick]`."""
from __future__ import annotations

import contextlib
import copy
import io
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import timing  # bench/timing.py

FULL = {"data": "fashion-mnist", "epochs": 2, "rounds": 3, "steps": 200}
QUICK = {"data": "digits", "epochs": 2, "rounds": 1, "steps": 20}
METHODS = ("retrain", "laf", "finetune")


def _classifier(plan: dict, root: Path):
    from varilab.cli import main
    from varilab.families import registry

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--model", "classifier", "--data", plan["data"], "--width", "16", "--epochs",
                     str(plan["epochs"]), "--out", str(root / "clf"), "--quiet"]) == 0
    return registry.load(root / "clf")


def _methods(run, root: Path, rounds: int) -> dict:
    """Seconds of each method (a fresh output folder a call), in alternating order over the rounds."""
    from varilab.families.robust.forget import forget_rows
    from varilab.families.robust.unlearn import UnlearnOptions, one, train_rows
    from varilab.models.unlearning.split import Split

    y = run.data.y_train.long()
    forget, _, _ = forget_rows("class:0", y, run.data.y_test.long(), train_rows(run), 0)
    split = Split(run.data.x_train, y, forget)
    opts = UnlearnOptions(forget="class:0")
    times = {m: [] for m in METHODS}
    for r in range(rounds):
        for m in (METHODS if r % 2 == 0 else METHODS[::-1]):
            out = Path(tempfile.mkdtemp(dir=root))
            t0 = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):
                one(run, opts, m, split, out, quiet=True)
            times[m].append(time.perf_counter() - t0)
    return times


def _hand_elbo(vae, h):
    """One-sample ELBO [B] of a Gaussian-likelihood MLP VAE, written out: log N(h; dec(z), s^2 I) - KL(q || N(0, I))."""
    mu, log_var = vae.encoder(h).chunk(2, -1)
    z = mu + (0.5 * log_var).exp() * torch.randn_like(mu)  # z = mu + sigma eps
    mean, lv = vae.decoder(z), vae.obs_log_var
    log_px = -0.5 * (((h - mean) ** 2) / lv.exp() + lv + math.log(2 * math.pi)).sum(-1)
    kl = 0.5 * (mu ** 2 + log_var.exp() - 1 - log_var).sum(-1)  # KL(N(mu, s^2) || N(0, 1)) per latent, summed
    return log_px - kl


def _hand_step(model, vae_r, vae_f, x_f, x_r, phi0_f, phi0_r, opt_ue, opt_ra, tau):
    """Stage 2 then stage 3, by hand: (L_UE, L_RA)."""
    h_f, h_r = model.represent(x_f), model.represent(x_r)
    d = h_f.shape[1]
    likely_r = _hand_elbo(vae_r, h_f)
    with torch.no_grad():
        before = _hand_elbo(vae_r, phi0_r)
    forget = (F.relu((_hand_elbo(vae_f, h_f) - likely_r) / d) + F.relu((before.mean() - likely_r) / d)).mean()
    ue = forget + 10.0 * F.relu((before - _hand_elbo(vae_r, h_r)) / d).mean()  # keep_weight 10
    opt_ue.zero_grad(set_to_none=True)
    ue.backward()
    opt_ue.step()
    a = F.normalize(model.represent(x_r), dim=1)
    ra = F.cross_entropy(a @ F.normalize(phi0_r, dim=1).T / tau, torch.arange(len(a)))
    ra = ra + F.cosine_similarity(model.represent(x_f), phi0_f, dim=1).mean()  # away_weight 1
    opt_ra.zero_grad(set_to_none=True)
    ra.backward()
    opt_ra.step()
    return ue.item(), ra.item()


def _lib_step(model, vae_r, vae_f, x_f, x_r, phi0_f, phi0_r, opt_ue, opt_ra, tau):
    """The same through varilab.models.unlearning.laf's losses."""
    from varilab.models.unlearning.laf import LAFConfig, alignment_loss, unlearning_loss

    config = LAFConfig()
    ue = unlearning_loss(model, phi0_r, x_f, x_r, vae_r, vae_f, keep_weight=config.keep_weight)["loss"]
    opt_ue.zero_grad(set_to_none=True)
    ue.backward()
    opt_ue.step()
    ra = alignment_loss(model, x_r, phi0_r, tau, x_f, phi0_f, config.away_weight)
    opt_ra.zero_grad(set_to_none=True)
    ra.backward()
    opt_ra.step()
    return ue.item(), ra.item()


def _steps(run, steps: int, rounds: int):
    """Seconds per LAF step, varilab's and by hand, each on its own copy of the model; and the equal-work check."""
    from varilab.models.unlearning.laf import LAFConfig
    from varilab.models.vae.vae import VAE, VAEConfig

    config = LAFConfig()
    torch.manual_seed(0)
    vae_r, vae_f = (VAE(VAEConfig(x_dim=128, latent_dim=16, hidden=(256,), likelihood="gaussian")).eval()
                    .requires_grad_(False) for _ in range(2))
    x = run.data.x_train
    g = torch.Generator().manual_seed(0)
    b = config.batch_size
    rows_f, rows_r = torch.randint(len(x), (steps, b), generator=g), torch.randint(len(x), (steps, b), generator=g)
    with torch.no_grad():
        phi0 = run.model.represent(x[rows_r.flatten()]).reshape(steps, b, -1)
        phi0_f = run.model.represent(x[rows_f.flatten()]).reshape(steps, b, -1)

    def contender(step_fn):
        model = copy.deepcopy(run.model).train()
        params = model.extractor_parameters()
        opt_ue, opt_ra = torch.optim.Adam(params, lr=config.lr), torch.optim.Adam(params, lr=config.lr)
        return lambda i: step_fn(model, vae_r, vae_f, x[rows_f[i]], x[rows_r[i]], phi0_f[i], phi0[i], opt_ue, opt_ra,
                                 config.temperature)

    checks = [contender(_lib_step), contender(_hand_step)]
    losses = []
    for fn in checks:
        torch.manual_seed(1)
        losses.append([fn(i) for i in range(3)])
    same = all(math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) for la, lb in zip(*losses) for a, b in zip(la, lb))
    lib, hand = contender(_lib_step), contender(_hand_step)
    fns = {("LAF step", "varilab"): lambda n: [lib(i) for i in range(n)],
           ("LAF step", "plain PyTorch"): lambda n: [hand(i) for i in range(n)]}
    return timing.abba(fns, steps, 2, rounds * 2, steps), {"losses_varilab": losses[0], "losses_plain": losses[1],
                                                           "ok": same}


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t_start, threads = time.perf_counter(), torch.get_num_threads()
    root = Path(tempfile.mkdtemp(prefix="varilab-bench-unlearn-"))
    clf = _classifier(plan, root)
    (times, other_busy) = timing.other_cpu_busy(lambda: _methods(clf, root, plan["rounds"]))
    step_times, equal = _steps(clf, plan["steps"], plan["rounds"])
    rows = timing.contenders({f"unlearn / {m}": v for m, v in times.items()}, "unlearn / retrain")
    step_rows, _ = timing.per_group(step_times, ("LAF step",))
    for row in rows:
        row.pop("peak_rss_mb", None)
    ratio = {r["name"]: r["ratio"] for r in rows + step_rows}
    print(f"[bench] unlearn: LAF / retrain {ratio['unlearn / laf']:.3f}, LAF step varilab / plain "
          f"{ratio['LAF step / varilab']:.3f}", file=sys.stderr)
    return {
        "title": f"Unlearning class 0 of a {plan['data']} classifier: LAF, retraining and fine-tuning; one LAF step "
                 "(CPU)",
        "description": " ".join(__doc__.split("\n\n")[0].split()),
        "unit": "s",
        "baseline": "unlearn / retrain, and LAF step / plain PyTorch",
        "baselines": ["unlearn / retrain", "LAF step / plain PyTorch"],
        "contenders": rows + step_rows,
        "notes": [f"Seconds per call for the methods (one call forgets class 0 of {len(clf.data.x_train):,} training "
                  "rows); seconds per step for the LAF step (stage 2 and stage 3, batches of 128).",
                  "Equal work: from the same weights and noise, the first three steps' (L_UE, L_RA) are "
                  + ", ".join(f"({a[0]:.5g}, {a[1]:.5g})" for a in equal["losses_varilab"]) + " through varilab and "
                  + ", ".join(f"({a[0]:.5g}, {a[1]:.5g})" for a in equal["losses_plain"]) + " by hand: "
                  + ("they agree (relative tolerance 1e-4)." if equal["ok"] else "**they do not agree**.")],
        "checks": {"other_cpu_busy_while_timing": other_busy, "equal_work_steps": equal},
        "settings": {**plan, "threads": threads},
        "seconds": time.perf_counter() - t_start,
    }


if __name__ == "__main__":
    timing.main(__doc__, run)
