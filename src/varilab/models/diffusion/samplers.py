"""Samplers for Gaussian-path diffusion models: each takes a prediction function `pred(x_t, t) ->
prediction` of kind "eps", "score", "x0" or "v" (see `varilab.models.diffusion.diffusion.convert`), a schedule
(`VPSchedule` or `LinearInterpolant`), the starting state x and a number of steps.

  ddpm                 ancestral sampling (Ho et al., 2020) on any time grid
  ddim                 deterministic DDIM, eta = 0 (Song, Meng & Ermon, 2021), with `invert=True` to encode
  euler_maruyama       the reverse-time SDE (Anderson, 1982; Song et al., 2021)
  probability_flow     the probability-flow ODE with Euler or Heun steps (Song et al., 2021; Karras et al., 2022)

Time runs on a uniform grid from t_max down to t_min. Each returns the final samples, or
(samples, chain [steps + 1, *x.shape]) with `chain=True`.
"""
from __future__ import annotations

import torch

from .diffusion import KINDS, _coefs, convert, drift_and_diffusion


def _grid(steps: int, t_max: float, t_min: float) -> list[float]:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not 0 <= t_min < t_max <= 1:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64).tolist()


def _field(pred, kind: str, schedule):
    """(x, t) -> (eps_hat, x0_hat) from a prediction of kind `kind`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def both(x, t):
        p = pred(x, torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device))
        return convert(p, kind, "eps", x, t, schedule), convert(p, kind, "x0", x, t, schedule)
    return both


def _finish(x, chain, keep):
    return (x, torch.stack(chain)) if keep else x


def ddpm(pred, schedule, x: torch.Tensor, steps: int = 1000, kind: str = "eps", t_max: float = 1.0,
         chain: bool = False, generator: torch.Generator | None = None):
    """Ancestral sampling: x_s ~ q(x_s | x_t, x0 = x0_hat(x_t, t)) from t = t_max down to 0; returns x_0.

    q(x_s|x_t, x0) = N(alpha_{t|s} sigma_s^2/sigma_t^2 x_t + alpha_s sigma_{t|s}^2/sigma_t^2 x0, sigma_{t|s}^2 sigma_s^2/sigma_t^2)
    with alpha_{t|s} = alpha_t/alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2. On a VPSchedule
    with steps = T this is DDPM's sampler with variance beta~_t; the last step returns the mean x0_hat.
    """
    field, ts, out = _field(pred, kind, schedule), _grid(steps, t_max, 0.0), [x]
    for t, s in zip(ts[:-1], ts[1:]):
        _, x0 = field(x, t)
        a_t, s_t, _, _ = _coefs(schedule, t, x)
        a_s, s_s, _, _ = _coefs(schedule, s, x)
        a_ts = a_t / a_s
        var_ts = s_t ** 2 - a_ts ** 2 * s_s ** 2  # sigma_{t|s}^2
        mean = a_ts * s_s ** 2 / s_t ** 2 * x + a_s * var_ts / s_t ** 2 * x0
        std = (var_ts * s_s ** 2 / s_t ** 2).clamp(min=0).sqrt()
        x = mean + std * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        out.append(x)
    return _finish(x, out, chain)


def ddim(pred, schedule, x: torch.Tensor, steps: int = 50, kind: str = "eps", t_max: float = 1.0,
         t_min: float = 0.0, invert: bool = False, chain: bool = False):
    """Deterministic DDIM (eta = 0): x_s = alpha_s x0_hat + sigma_s eps_hat, from t_max to t_min; returns x_{t_min}.

    `invert=True` runs the same update from t_min up to t_max, encoding data to noise (the latent that
    decodes back to x); starting at t = 0 needs a kind that is finite there ("eps", "score" or "v").
    """
    field, ts, out = _field(pred, kind, schedule), _grid(steps, t_max, t_min), [x]
    if invert:
        ts = ts[::-1]
    for t, s in zip(ts[:-1], ts[1:]):
        eps, x0 = field(x, t)
        a_s, s_s, _, _ = _coefs(schedule, s, x)
        x = a_s * x0 + s_s * eps  # x_s = alpha_s x0_hat + sigma_s eps_hat
        out.append(x)
    return _finish(x, out, chain)


def euler_maruyama(pred, schedule, x: torch.Tensor, steps: int = 500, kind: str = "eps", t_max: float = 1.0,
                   t_min: float = 1e-3, chain: bool = False, generator: torch.Generator | None = None):
    """Euler–Maruyama for the reverse SDE dx = [f_t x - g_t^2 score] dt + g_t dW_bar, from t_max to t_min;
    returns x_{t_min}. On the LinearInterpolant g_t^2 = 2t/(1-t) diverges at t = 1: start below it."""
    field, ts, out = _field(pred, kind, schedule), _grid(steps, t_max, t_min), [x]
    for t, s in zip(ts[:-1], ts[1:]):
        eps, _ = field(x, t)
        _, sigma, _, _ = _coefs(schedule, t, x)
        f, g2 = [c.to(x.dtype) for c in drift_and_diffusion(schedule, torch.tensor(t, dtype=torch.float64))]
        h = t - s  # > 0, time runs backwards
        drift = f * x + g2 * eps / sigma  # f x - g^2 score, score = -eps / sigma
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x - drift * h + (g2 * h).sqrt() * noise  # x_s = x_t - (f x - g^2 score) h + g sqrt(h) z
        out.append(x)
    return _finish(x, out, chain)


def probability_flow(pred, schedule, x: torch.Tensor, steps: int = 50, kind: str = "eps", solver: str = "heun",
                     t_max: float = 1.0, t_min: float = 1e-3, chain: bool = False):
    """The probability-flow ODE dx/dt = alpha'_t x0_hat + sigma'_t eps_hat (= f_t x - g_t^2 score / 2),
    integrated from t_max to t_min with `solver` "euler" or "heun" (2nd order, two evaluations per step;
    a step ending where sigma = 0 is an Euler step, as the field need not be finite there);
    returns x_{t_min}. On the LinearInterpolant the velocity is u = eps - x0 (rectified flow)."""
    if solver not in ("euler", "heun"):
        raise ValueError(f"solver must be 'euler' or 'heun', got {solver!r}")
    field, ts, out = _field(pred, kind, schedule), _grid(steps, t_max, t_min), [x]

    def velocity(x, t):
        eps, x0 = field(x, t)
        tt = torch.tensor(t, dtype=torch.float64)
        return schedule.d_alpha(tt).to(x.dtype) * x0 + schedule.d_sigma(tt).to(x.dtype) * eps

    for t, s in zip(ts[:-1], ts[1:]):
        d = velocity(x, t)
        x_euler = x + (s - t) * d
        if solver == "heun" and float(schedule.sigma(torch.tensor(s, dtype=torch.float64))) > 0:
            x = x + (s - t) * 0.5 * (d + velocity(x_euler, s))  # trapezoid on the Euler guess
        else:
            x = x_euler
        out.append(x)
    return _finish(x, out, chain)
