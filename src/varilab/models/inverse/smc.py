"""Weighted particles for p(x | y) oc p0(x) N(y; H x, r^2 I) with a diffusion prior: the particles follow the
prior's reverse dynamics and are reweighted toward the posterior (a sequential Monte Carlo reading of the
approximation-free ensemble posterior sampler).

Targets pi_t(x_t) oc p_t(x_t) g_t(x_t) from t = t_max down to 0, with twists
    log g_t(x_t) = log N(y; H x0_hat(x_t, t), (r^2 + rho_t^2) I),   rho_t^2 = sigma_t^2 / (alpha_t^2 + sigma_t^2),
(rho_t^2 the variance of x0 | x_t under a unit-variance Gaussian prior: flat at high noise, 0 at t = 0), and
g_0 = N(y; H x0, r^2 I), the likelihood itself. Particles start from N(0, I) with weights g_{t_max}; each step
moves them with the prior's reverse kernel x_s ~ p(x_s | x_t) and multiplies the weights by g_s(x_s) / g_t(x_t),
which is exact when the kernel is: only the score error, the discretisation and the finite N remain, and the
twists change the variance alone. Weights are kept as logarithms; when the effective sample size
ESS = 1 / sum_i w_i^2 falls below `resample_below` * N the particles of that observation are resampled
(systematic resampling) and their weights reset.

The default kernel is DDPM's ancestral step p(x_s | x_t) = N(m(x_t), v) with m from x0_hat(x_t, t). With
`guide=True` particles are proposed from N(m + v grad log g_t(x_t), v) instead, the twist's gradient taken
through the denoiser (a modified diffusion), and the weights carry the correction p(x_s | x_t) / q(x_s | x_t)
as well, so the target is unchanged. It costs a backward pass per step and is off by default: on the 2-D
mixture of the tests it raised the posterior-mean error at N = 10,000 from about 0.03 to 0.05. `kernel`
(a sampler x_s = kernel(x_t, t, s, x0_hat, generator), e.g. a mixture prior's exact `reverse_sample`)
replaces the ancestral step, unguided. All B * N particles go through the denoiser in one call per step.
"""
from __future__ import annotations

import math

import torch

from .inverse import _alpha_sigma, _predict, _times


def systematic_resample(log_w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices [B, N] drawn by systematic resampling from the normalised weights softmax(log_w) of each row."""
    b, n = log_w.shape
    w = torch.softmax(log_w.double(), dim=1)
    cdf = torch.cumsum(w, dim=1)
    cdf[:, -1] = 1.0
    u = (torch.rand(b, 1, generator=generator, dtype=torch.float64, device=log_w.device)
         + torch.arange(n, dtype=torch.float64, device=log_w.device)) / n  # one uniform per row, N strata
    return torch.searchsorted(cdf, u).clamp(max=n - 1)


def ess(log_w: torch.Tensor) -> torch.Tensor:
    """Effective sample size 1 / sum_i w_i^2 of each row's normalised weights, [B]."""
    return 1.0 / torch.softmax(log_w.double(), dim=1).pow(2).sum(1)


def ancestral_moments(x: torch.Tensor, x0: torch.Tensor, a_t: float, s_t: float, a_s: float, s_s: float):
    """Mean and standard deviation of DDPM's reverse step q(x_s | x_t, x0 = x0_hat) from t (alpha a_t, sigma s_t)
    to s < t, as `samplers.ddpm` takes it."""
    a_ts = a_t / a_s
    var_ts = s_t ** 2 - a_ts ** 2 * s_s ** 2  # sigma_{t|s}^2
    mean = a_ts * s_s ** 2 / s_t ** 2 * x + a_s * var_ts / s_t ** 2 * x0
    return mean, math.sqrt(max(var_ts * s_s ** 2 / s_t ** 2, 0.0))


def smc(pred, schedule, op, y: torch.Tensor, r: float, kind: str = "eps", particles: int = 16, steps: int = 100,
        kernel=None, guide: bool = False, resample_below: float = 0.5, t_max: float = 1.0,
        prior_var: float = 1.0, generator: torch.Generator | None = None, progress=None) -> tuple[torch.Tensor, dict]:
    """The weighted posterior mean [B, D] and {"particles" [B, N, D], "log_weights" [B, N] (normalised),
    "ess" [steps + 1][B], "resampled" (steps at which each observation was resampled), "t", "residual", "nfe"}.
    r is the observation noise's standard deviation on the model's scale (> 0)."""
    if not r > 0:
        raise ValueError(f"smc weighs particles by the likelihood N(y; H x, r^2 I): r must be positive, got {r}")
    if particles < 1 or not 0 <= resample_below <= 1:
        raise ValueError(f"need particles >= 1 and resample_below in [0, 1], got {particles} and {resample_below}")
    if guide and kernel is not None:
        raise ValueError("guide=True proposes from the ancestral kernel shifted by the twist's gradient; a custom "
                         "kernel is used as it is (guide=False)")
    y = op.check(y)
    b, n, d = len(y), particles, op.in_dim
    y_rep = y.repeat_interleave(n, 0)  # [B N, M], particle-major within each observation

    ts = _times(steps, t_max, 0.0)
    alphas, sigmas = _alpha_sigma(schedule, ts)

    def log_twist(x0, k):
        """log g at time ts[k] up to a constant, [B, N], and the squared residuals ||y - H x0||^2, [B N]."""
        a, s = alphas[k], sigmas[k]
        var = r ** 2 + prior_var * s ** 2 / (a ** 2 * prior_var + s ** 2)  # r^2 + rho_t^2
        sq = (y_rep - op(x0)).pow(2).sum(1)
        return (-sq / (2 * var)).reshape(b, n), sq

    def predict(x, k):
        """(x0_hat(x_t), log g_t(x_t), ||y - H x0_hat||^2, grad_x log g_t(x_t) or None) at t = ts[k]: one denoiser
        call, and one backward if guided."""
        if not guide:
            x0 = _predict(pred, kind, schedule, x, ts[k], "x0")
            return (x0, *log_twist(x0, k), None)
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            x0 = _predict(pred, kind, schedule, x, ts[k], "x0")
            log_g, sq = log_twist(x0, k)
            grad = torch.autograd.grad(log_g.sum(), x)[0]
        return x0.detach(), log_g.detach(), sq.detach(), grad

    x = torch.randn(b * n, d, generator=generator, dtype=y.dtype, device=y.device)
    x0, log_g, _, grad = predict(x, 0)
    log_w = log_g.clone()
    now = ess(log_w)
    trace = {"t": ts, "ess": [now.tolist()], "resampled": [[] for _ in range(b)], "residual": [], "nfe": [1]}
    rows = torch.arange(b, device=y.device)[:, None] * n
    m = op.out_dim
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        low = now < resample_below * n
        if low.any():  # resample the observations whose weights have degenerated
            idx = torch.arange(n, device=y.device).expand(b, n).clone()
            idx[low] = systematic_resample(log_w[low], generator)
            flat = (rows + idx).reshape(-1)
            x, x0, log_g = x[flat], x0[flat], log_g.reshape(-1)[flat].reshape(b, n)
            grad = None if grad is None else grad[flat]
            log_w = torch.where(low[:, None], torch.zeros_like(log_w), log_w)
            for j in low.nonzero().flatten().tolist():
                trace["resampled"][j].append(i)
        correction = 0.0
        if kernel is not None:
            x = kernel(x, t, s, x0, generator)  # x_s ~ the prior's reverse kernel
        else:
            mean, std = ancestral_moments(x, x0, alphas[i], sigmas[i], alphas[i + 1], sigmas[i + 1])
            z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            if grad is not None and std > 0:  # propose from N(mean + v grad log g_t, v); weigh by p / q
                shift = std ** 2 * grad
                x = mean + shift + std * z
                # log p(x_s|x_t) - log q(x_s|x_t) = (|z|^2 - |z + shift / std|^2) / 2 with x_s = mean + shift + std z
                correction = (-(z * shift).sum(1) / std - shift.pow(2).sum(1) / (2 * std ** 2)).reshape(b, n)
            else:
                x = mean + std * z
        if s > 0:
            x0, log_g_s, sq, grad = predict(x, i + 1)  # one call for all B N particles
            trace["nfe"].append(trace["nfe"][-1] + 1)
        else:
            x0, sq = x, (y_rep - op(x)).pow(2).sum(1)
            log_g_s = (-sq / (2 * r ** 2)).reshape(b, n)  # g_0: the likelihood
            trace["nfe"].append(trace["nfe"][-1])
        log_w = log_w + log_g_s - log_g + correction  # w <- w g_s(x_s) p(x_s|x_t) / (g_t(x_t) q(x_s|x_t))
        log_g = log_g_s
        now = ess(log_w)
        trace["ess"].append(now.tolist())
        trace["residual"].append(float((sq / m).sqrt().mean()))
        if progress:
            progress(i + 1)
    log_w = torch.log_softmax(log_w.double(), dim=1)
    parts = x.reshape(b, n, d)
    estimate = (log_w.exp()[..., None] * parts.double()).sum(1).to(y.dtype)
    return estimate, {**trace, "particles": parts, "log_weights": log_w}
