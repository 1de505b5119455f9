"""Solving y = H x + noise with a diffusion prior: the pseudo-inverse, RED-Diff and DPS.

Each solver is a plain function of a prediction function `pred(x_t, t) -> prediction` of kind "eps",
"score", "x0" or "v" (as the samplers take it), its schedule, an operator (`varilab.models.inverse.operators`) and
the observation y [B, M], all on the model's own scale. It returns the estimates [B, D] and a trace: per
step, the time, the data residual ||y - H x0_hat|| / sqrt(M) (mean over the batch) and the count of
denoiser evaluations so far ("nfe", per observation).

RED-Diff (Mardani et al., 2023): q(x0 | y) = N(mu, sigma^2 I) with sigma -> 0, fitted by Adam on mu from
mu = H^+ y over t running down from t_max; per step, with eps ~ N(0, I) and x_t = alpha_t mu + sigma_t eps,
    loss = v mean_m (y - H mu)_m^2 / 2 + lambda_t mean_d sg(eps_hat(x_t, t) - eps)_d mu_d,
    lambda_t = lambda (sigma_t / alpha_t)^p,
each term averaged over its own entries as the authors' code does (so that v = 1 weighs the data the same
on every task); the regulariser's gradient is lambda_t (eps_hat - eps) / D, and eps_hat is never
differentiated. For a Gaussian prior N(m, s^2 I) its expectation over t ~ U(t_min, t_max) vanishes at
    mu* = (v/M H^T H + c/D I)^-1 (v/M H^T y + c/D m),  c = E_t[lambda_t alpha_t sigma_t / (alpha_t^2 s^2 + sigma_t^2)],
which `order="random"` (t drawn uniformly each step) converges to; the paper's descending sweep
(`order="descending"`, the default) ends where lambda_t is small, so it settles in the range of H but not
in its null space.

DPS (Chung et al., 2023): ancestral (or DDIM) sampling with, after each step,
    x_s <- x_s - zeta grad_{x_t} ||y - H x0_hat(x_t, t)||,
the gradient taken through the denoiser, zeta a step size (the public code's `scale`; the paper's
zeta_t = zeta' / ||y - H x0_hat|| on the squared norm is the same step with zeta = 2 zeta').
"""
from __future__ import annotations

import math

import torch

from ..diffusion.diffusion import KINDS, convert
from ..diffusion.samplers import _grid as _times  # the uniform time grid from t_max down to t_min


def _predict(pred, kind: str, schedule, x: torch.Tensor, t: float, to: str) -> torch.Tensor:
    """The prediction at (x, t), re-expressed as kind `to`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    p = pred(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))
    return convert(p, kind, to, x, t, schedule)


def _alpha_sigma(schedule, ts: list[float]) -> tuple[list[float], list[float]]:
    """alpha_t and sigma_t at every time of a solver's grid, as floats, read once before its loop."""
    t = torch.tensor(ts, dtype=torch.float64)
    return schedule.alpha(t).tolist(), schedule.sigma(t).tolist()


def _residual(op, y: torch.Tensor, x0: torch.Tensor) -> float:
    """||y - H x0|| / sqrt(M), averaged over the batch."""
    return float((y - op(x0)).pow(2).mean(1).sqrt().mean())


def pseudo_inverse(op, y: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """H^+ y, with no prior."""
    x = op.pinv(op.check(y))
    return x, {"t": [], "residual": [_residual(op, y, x)], "nfe": [0]}


def red_diff(pred, schedule, op, y: torch.Tensor, kind: str = "eps", steps: int = 1000, lam: float = 0.25,
             power: float = 1.0, lr: float = 0.1, v: float = 1.0, order: str = "descending", t_max: float = 0.999,
             t_min: float = 0.001, init: torch.Tensor | None = None, average_last: int = 1,
             generator: torch.Generator | None = None, progress=None) -> tuple[torch.Tensor, dict]:
    """RED-Diff's mu [B, D] after `steps` Adam steps (betas 0.9, 0.99), one per time (the mean of the last
    `average_last` iterates; 1: the last one), and its trace (also the weights lambda_t). `progress(step)` is
    called after each step (a progress bar's update)."""
    if not 1 <= average_last <= steps:
        raise ValueError(f"average_last must lie in [1, steps={steps}], got {average_last}")
    if order not in ("descending", "random"):
        raise ValueError(f"order must be 'descending' or 'random', got {order!r}")
    y = op.check(y)
    mu = (op.pinv(y) if init is None else init).detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99))
    if order == "descending":
        ts = torch.linspace(t_max, t_min, steps, dtype=torch.float64).tolist()
    else:
        ts = (t_min + (t_max - t_min) * torch.rand(steps, dtype=torch.float64, generator=generator)).tolist()
    trace = {"t": ts, "lambda": [], "residual": [], "nfe": []}
    tail = torch.zeros_like(mu, requires_grad=False)
    alphas, sigmas = _alpha_sigma(schedule, ts)
    for i, (t, alpha, sigma) in enumerate(zip(ts, alphas, sigmas)):
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        with torch.no_grad():
            x_t = alpha * mu + sigma * eps  # x_t = alpha_t mu + sigma_t eps
            eps_hat = _predict(pred, kind, schedule, x_t, t, "eps")  # never differentiated
        lam_t = lam * (sigma / alpha) ** power  # lambda (sigma_t / alpha_t)^p
        fit = v * (y - op(mu)).pow(2).mean(1) / 2  # v mean_m (y - H mu)^2 / 2, [B]
        reg = lam_t * ((eps_hat - eps) * mu).mean(1)  # lambda_t mean_d sg(eps_hat - eps) mu, [B]
        opt.zero_grad(set_to_none=True)
        (fit + reg).sum().backward()  # a sum over the batch: each observation's mu gets its own gradient
        opt.step()
        if i >= steps - average_last:
            tail += mu.detach() / average_last
        trace["lambda"].append(lam_t)
        trace["residual"].append(float(fit.detach().mul(2 / v).sqrt().mean()))
        trace["nfe"].append(i + 1)
        if progress:
            progress(i + 1)
    return tail, trace


def dps(pred, schedule, op, y: torch.Tensor, kind: str = "eps", steps: int = 1000, zeta: float = 1.0,
        sampler: str = "ddpm", t_max: float = 1.0, generator: torch.Generator | None = None,
        progress=None) -> tuple[torch.Tensor, dict]:
    """One DPS sample per observation, [B, D], from x_{t_max} ~ N(0, I) down to t = 0, and its trace."""
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")
    y = op.check(y)
    x = torch.randn(len(y), op.in_dim, generator=generator, dtype=y.dtype, device=y.device)
    ts = _times(steps, t_max, 0.0)
    trace = {"t": ts[:-1], "residual": [], "nfe": []}
    alphas, sigmas = _alpha_sigma(schedule, ts)
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            p = pred(x, torch.full((len(x),), t, dtype=x.dtype, device=x.device))
            x0 = convert(p, kind, "x0", x, t, schedule)
            norm = (y - op(x0)).pow(2).sum(1).sqrt()  # ||y - H x0_hat(x_t)||, [B]
            grad = torch.autograd.grad(norm.sum(), x)[0]
        x0, eps = x0.detach(), convert(p.detach(), kind, "eps", x.detach(), t, schedule)
        x = x.detach()
        a_t, s_t, a_s, s_s = alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1]
        if sampler == "ddim":
            x_s = a_s * x0 + s_s * eps
        else:  # q(x_s | x_t, x0 = x0_hat), as samplers.ddpm
            a_ts = a_t / a_s
            var_ts = s_t ** 2 - a_ts ** 2 * s_s ** 2
            mean = a_ts * s_s ** 2 / s_t ** 2 * x + a_s * var_ts / s_t ** 2 * x0
            std = math.sqrt(max(var_ts * s_s ** 2 / s_t ** 2, 0.0))
            x_s = mean + std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x_s - zeta * grad
        trace["residual"].append(float(norm.detach().mean()) / math.sqrt(op.out_dim))
        trace["nfe"].append(i + 1)
        if progress:
            progress(i + 1)
    return x.detach(), trace
