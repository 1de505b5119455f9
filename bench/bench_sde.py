"""Latent SDE training (seconds per step, CPU, one thread): `varilab.models.latent_sde` with fractional and with
Brownian noise, both solved by torchsde, against the same fractional model written out as a plain PyTorch loop; and
the guided posterior's cost over the plain one.

A step is `latent_sde.objective(model, t, y)["loss"]` (the negative ELBO per observed value), its backward pass and
an Adam step (lr 1e-3), on all 32 training series of `varilab.data.series.load("fou", n=40, steps=50, hurst=0.7,
test_fraction=0.2, seed=0)` at once (50 observations each on t_i = i / 50, the family's defaults). Every contender
has latent 1, hidden 32, context 16, dt 0.005 (four solver steps between observations), method "euler", float32, and
runs under `torch.set_num_threads(1)`.

- varilab, fractional noise (K = 5): `LatentSDE(LatentSDEConfig(obs_dim=1, ou=5, hidden=32, dt=0.005,
  posterior="plain"))`, H learned through omega(H), the (X, Y_1..Y_5, L) system solved by `torchsde.sdeint`, the
  control network alone steering it.
- varilab, Brownian noise (K = 0): the same with ou=0, hurst=0.5, the (X, L) system solved by torchsde; its ratio
  to the row above is the cost of the K extra states (and of omega(H)).
- plain loop, fractional noise (K = 5), the baseline: the K = 5 model's own modules and omega(H) (via
  `model.weights()`), its union grid and context (`union_grid`, `model.encode`), but no torchsde: a hand-written
  Euler-Maruyama loop over X, Y_k and the KL accumulator L with fixed step dt from t0 = 0 to 1, its own increments
  (randn * sqrt(dt)), the state read at the observation times (every one a step end, asserted), and the ELBO's
  terms written out.
- varilab, fractional noise (K = 5), guided posterior (the default): the first row's model with
  posterior="guided": the backward filter of the observations, then every Euler step's noise drawn from its exact
  conditional (the messages, covariances and Cholesky factors of all steps built in one batch) plus the network's
  correction. Its ratio to the first row is what
  the guided posterior costs.

Before timing, the two plain fractional losses are compared with both paths made deterministic (sigma = exp(-20),
the std of q(X_0) exp(-20), so the noise no longer moves X, and the control u = 0 as initialised, so the unit noise
of the Y_k cannot reach L): they must agree to 1e-4 relative. The contenders alternate (ABBA) after one warm-up
step each; figures are medians over rounds. --quick: 2 steps, one round. Run alone: `python bench/bench_sde.py
[--quick]`.
"""
from __future__ import annotations

import copy
import math
import sys
import time

import torch

from varilab.data.series import load
from varilab.models.latent_sde import LatentSDE, LatentSDEConfig, objective, union_grid

import timing  # bench/timing.py

SEED, LR = 0, 1e-3
FULL = {"steps": 20, "rounds": 5}
QUICK = {"steps": 2, "rounds": 1}
FRAC, BROWN, PLAIN, GUIDED = ("varilab, fractional noise (K = 5)", "varilab, Brownian noise (K = 0)",
                              "plain loop, fractional noise (K = 5)",
                              "varilab, fractional noise (K = 5), guided posterior")
MAX_K_COST, MAX_OVERHEAD, CHECK_RTOL = 2.0, 1.5, 1e-4


def build(**kw) -> LatentSDE:
    torch.manual_seed(SEED)
    return LatentSDE(LatentSDEConfig(obs_dim=1, hidden=32, context=16, latent=1, dt=0.005, method="euler", **kw))


def hand_loss(m: LatentSDE, times: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The model's negative ELBO per observed value, by a plain Euler-Maruyama loop over (X, Y_1..Y_K, L)."""
    c = m.config
    d, k, dt = c.latent, c.ou, c.dt
    grid, on_grid, mask = union_grid(times, values)
    context, next_time = m.encode(grid, on_grid, mask)  # [B, U, context + obs + 1], [B, U]
    n = round((float(grid[-1]) - c.start) / dt)
    ts = c.start + dt * torch.arange(n + 1, dtype=grid.dtype)  # step ends t_i = t0 + i dt, the grid's times among them
    at = torch.round((grid - c.start) / dt).long()
    assert torch.allclose(ts[at], grid, atol=1e-6), "every grid time must be a step end"
    nxt = torch.searchsorted(grid, ts[:-1], right=True).clamp_max(len(grid) - 1).tolist()  # first grid time after t_i
    b = len(values)
    q0_mean, q0_log_std = m.q0(context[:, 0, :c.context]).chunk(2, -1)
    x = q0_mean + q0_log_std.exp() * torch.randn_like(q0_mean)  # X_0 ~ q(X_0) = N(m_q, s_q^2), reparameterised
    w, gamma = m.weights()  # omega(H) [K], gamma [K]
    sigma = m.sigma()
    sw = w.sum() if k else 1.0  # sum_k omega_k (1 for Brownian noise)
    y, kl_path, xs = x.new_zeros(b, d, k), x.new_zeros(b), []
    for i in range(n):
        t, j = ts[i], nxt[i]
        left = (next_time[:, j:j + 1] - t).clamp_min(0)  # time until the next observation
        u = m.control(torch.cat([x, y.flatten(1), context[:, j], left, t.expand(b, 1)], 1))  # u(t, X, Y, context)
        dw = torch.randn(b, d) * math.sqrt(dt)  # dW ~ N(0, dt)
        x, y, kl_path = (
            x + (m.drift(x) - sigma * (y * (w * gamma)).sum(-1) + sigma * sw * u) * dt + sigma * sw * dw,  # dX
            y + (-gamma * y + u[..., None]) * dt + dw[..., None],  # dY_k = (-gamma_k Y_k + u) dt + dW
            kl_path + 0.5 * u.pow(2).sum(-1) * dt)  # dL = 0.5 ||u||^2 dt
        xs.append(x)  # X at t_{i+1}
    mean, s = m.decoder(torch.stack(xs, 1)[:, at - 1]), m.log_obs_noise.exp()  # X at the grid times
    log_lik = ((-0.5 * ((on_grid - mean) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum(-1) * mask).sum(-1)
    s_q, s_p = q0_log_std.exp(), m.p0_log_std.exp()
    kl0 = (torch.log(s_p / s_q) + (s_q ** 2 + (q0_mean - m.p0_mean) ** 2) / (2 * s_p ** 2) - 0.5).sum(-1)  # KL(q || p)
    elbo = log_lik - kl0 - kl_path  # log p(y | X) - KL(q(X_0) || p(X_0)) - L_T
    return -elbo.sum() / mask.sum()


def check(model: LatentSDE, t: torch.Tensor, y: torch.Tensor) -> dict:
    """Both losses with the paths made deterministic: sigma and the std of q(X_0) exp(-20), control u = 0."""
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.log_sigma.fill_(-20.0)
        m.q0.weight[m.config.latent:].zero_()  # log std of q(X_0) = -20 whatever the context
        m.q0.bias[m.config.latent:].fill_(-20.0)
        assert not m.control[-1].weight.any() and not m.control[-1].bias.any(), "the control must start at u = 0"
        torch.manual_seed(1)
        ours = float(objective(m, t, y)["loss"])
        torch.manual_seed(1)
        theirs = float(hand_loss(m, t, y))
    rel = abs(ours - theirs) / abs(theirs)
    return {"loss_varilab": ours, "loss_plain": theirs, "rel_diff": rel, "rtol": CHECK_RTOL, "ok": rel < CHECK_RTOL}


def trainer(model: LatentSDE, loss_fn, t: torch.Tensor, y: torch.Tensor):
    """A function running `steps` Adam steps of loss_fn(model, t, y)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR)

    def steps(count: int) -> None:
        for _ in range(count):
            loss = loss_fn(model, t, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return steps


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t_start, threads = time.perf_counter(), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load("fou", n=40, steps=50, hurst=0.7, test_fraction=0.2, seed=SEED)
        t, y = data.t_train, data.y_train
        frac, brown = build(ou=5, posterior="plain"), build(ou=0, hurst=0.5, posterior="plain")
        plain = copy.deepcopy(frac)  # the same weights as the varilab K = 5 row
        guided = build(ou=5, posterior="guided")
        same = check(frac, t, y)
        varilab_loss = lambda m, tt, yy: objective(m, tt, yy)["loss"]  # noqa: E731
        fns = {("SDE step", FRAC): trainer(frac, varilab_loss, t, y),
               ("SDE step", BROWN): trainer(brown, varilab_loss, t, y),
               ("SDE step", PLAIN): trainer(plain, hand_loss, t, y),
               ("SDE step", GUIDED): trainer(guided, varilab_loss, t, y)}
        times, other_busy = timing.other_cpu_busy(
            lambda: timing.abba(fns, plan["steps"], 1, plan["rounds"], plan["steps"]))
    finally:
        torch.set_num_threads(threads)
    rows = timing.contenders({k.split(" / ", 1)[1]: v for k, v in times.items()}, PLAIN)
    med = {r["name"]: r["median_s"] for r in rows}
    k_cost, overhead, guide_cost = med[FRAC] / med[BROWN], med[FRAC] / med[PLAIN], med[GUIDED] / med[FRAC]
    notes = [f"Deterministic paths (sigma and the std of q(X_0) exp(-20), u = 0): losses {same['loss_varilab']:.6g} "
             f"(varilab) and {same['loss_plain']:.6g} (plain loop), relative difference {same['rel_diff']:.1e}: "
             + ("they agree." if same["ok"] else "**they differ**."),
             f"K = 5 over K = 0: {k_cost:.2f}x; varilab K = 5 over the plain loop: {overhead:.2f}x; the guided "
             f"posterior over the plain one: {guide_cost:.2f}x (reported, no target)."]
    print(f"[bench] sde: K cost {k_cost:.3f}, varilab / plain {overhead:.3f}, guided / plain posterior "
          f"{guide_cost:.3f}", file=sys.stderr)
    return {
        "title": "Latent SDE training step, 32 fOU series of 50 observations (CPU, one thread)",
        "description": " ".join(" ".join(__doc__.split("\n\n")[i].split()) for i in (0, 1, 2, 3)),
        "unit": "s/step",
        "baseline": PLAIN,
        "contenders": rows,
        "target": {"text": f"the K = 5 fractional model costs at most {MAX_K_COST:g}x the Brownian one per step, and "
                           f"varilab's step is within {MAX_OVERHEAD:g}x of the hand-written loop",
                   "k_cost": k_cost, "overhead": overhead, "guide_cost": guide_cost,
                   "met": bool(k_cost <= MAX_K_COST and overhead <= MAX_OVERHEAD)},
        "notes": notes,
        "checks": {"same_loss_deterministic": same, "other_cpu_busy_while_timing": other_busy},
        "settings": {**plan, "threads": 1, "batch": len(t), "observations": t.shape[1], "lr": LR},
        "seconds": time.perf_counter() - t_start,
    }


if __name__ == "__main__":
    timing.main(__doc__, run)
