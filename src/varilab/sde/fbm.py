"""Fractional Brownian motion (type II, Riemann-Liouville) and its Markov approximation by Ornstein-Uhlenbeck
processes sharing one Brownian driver (Daems et al., 2024).

    B_H(t) = (1 / Gamma(H + 1/2)) int_0^t (t - s)^(H - 1/2) dW_s,    Var B_H(t) = t^(2H) / (2H Gamma(H + 1/2)^2)
    B_hat(t) = sum_k omega_k Y_k(t),    dY_k = -gamma_k Y_k dt + dW_t,  Y_k(0) = 0,  gamma_k = r^(k - (K + 1)/2)

The weights omega = A^{-1} b minimise E int_0^T (B_H - B_hat)^2 dt in closed form; everything here is float64 and
differentiable in H (torch's regularised incomplete gamma has no derivative in its first argument, so
`lower_gamma_p` supplies one), so H can be learned through omega(H).
"""
from __future__ import annotations


import numpy as np
import torch

DEFAULT_RATIO = 10.0  # r of the geometric grid; see `rates`


def _as64(v) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float64)


def check_hurst(hurst) -> None:
    h = float(hurst)
    if not 0 < h < 1:
        raise ValueError(f"the Hurst index must lie in (0, 1), got {h}")


class _LowerGammaP(torch.autograd.Function):
    """P(a, x) = gamma(a, x) / Gamma(a), with dP/da by a central difference (float64, relative step 1e-6)."""

    @staticmethod
    def forward(ctx, a, x):
        ctx.save_for_backward(a, x)
        return torch.special.gammainc(a, x)

    @staticmethod
    def backward(ctx, grad):
        a, x = ctx.saved_tensors
        h = 1e-6 * a.abs().clamp_min(1.0)
        da = (torch.special.gammainc(a + h, x) - torch.special.gammainc(a - h, x)) / (2 * h)
        dx = torch.exp((a - 1) * torch.log(x) - x - torch.lgamma(a))  # dP/dx = x^(a-1) e^-x / Gamma(a)
        ga = (grad * da).sum_to_size(a.shape) if ctx.needs_input_grad[0] else None
        gx = (grad * dx).sum_to_size(x.shape) if ctx.needs_input_grad[1] else None
        return ga, gx


def lower_gamma_p(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The regularised lower incomplete gamma P(a, x), differentiable in a and x."""
    return _LowerGammaP.apply(*torch.broadcast_tensors(_as64(a), _as64(x)))


def rates(k: int, ratio: float = DEFAULT_RATIO) -> torch.Tensor:
    """The geometric grid gamma_j = r^(j - (K + 1)/2), j = 1 .. K, centred on 1 (float64)."""
    if k < 1:
        raise ValueError(f"the Markov approximation needs at least one OU process, got K = {k}")
    if not ratio > 1:
        raise ValueError(f"the grid's ratio r must exceed 1, got {ratio}")
    j = torch.arange(1, k + 1, dtype=torch.float64)
    return ratio ** (j - (k + 1) / 2)


def fbm_variance(hurst, t) -> torch.Tensor:
    """Var B_H(t) = t^(2H) / (2H Gamma(H + 1/2)^2) of type-II fBM."""
    h, t = _as64(hurst), _as64(t)
    return t ** (2 * h) / (2 * h * torch.exp(2 * torch.lgamma(h + 0.5)))


def gram(gamma: torch.Tensor, horizon: float) -> torch.Tensor:
    """A_ij = int_0^T E[Y_i Y_j] dt = (T + (exp(-(g_i + g_j) T) - 1) / (g_i + g_j)) / (g_i + g_j)."""
    s = gamma[:, None] + gamma[None, :]
    return (horizon + torch.expm1(-s * horizon) / s) / s


def cross(hurst, gamma: torch.Tensor, horizon: float) -> torch.Tensor:
    """b_k = int_0^T E[B_H Y_k] dt = T g^-(H+1/2) P(H+1/2, g T) - (H+1/2) g^-(H+3/2) P(H+3/2, g T)."""
    a = _as64(hurst) + 0.5
    return (horizon * gamma ** -a * lower_gamma_p(a, gamma * horizon)
            - a * gamma ** -(a + 1) * lower_gamma_p(a + 1, gamma * horizon))


def fbm_energy(hurst, horizon: float) -> torch.Tensor:
    """c = int_0^T Var B_H(t) dt = T^(2H+1) / (2H (2H+1) Gamma(H + 1/2)^2)."""
    h = _as64(hurst)
    return horizon ** (2 * h + 1) / (2 * h * (2 * h + 1) * torch.exp(2 * torch.lgamma(h + 0.5)))


def omega(hurst, gamma: torch.Tensor, horizon: float = 1.0) -> torch.Tensor:
    """The optimal weights omega = A^{-1} b (float64; A is ill-conditioned, so solved, never inverted)."""
    return torch.linalg.solve(gram(gamma, horizon), cross(hurst, gamma, horizon))


def relative_error(hurst, gamma: torch.Tensor, horizon: float = 1.0) -> torch.Tensor:
    """E int_0^T (B_H - B_hat)^2 dt / E int_0^T B_H^2 dt at the optimal weights: 1 - b^T omega / c, in [0, 1)."""
    b = cross(hurst, gamma, horizon)
    error = 1 - b @ torch.linalg.solve(gram(gamma, horizon), b) / fbm_energy(hurst, horizon)
    return error.clamp_min(0.0)  # it is >= 0 (a least-squares residual); rounding can leave -1e-15 where it is ~0


def covariance(hurst: float, times) -> np.ndarray:
    """Cov(B_H(s), B_H(t)) of type-II fBM on `times` (all > 0), float64: for s <= t, with a = H - 1/2 and c = t - s,
    Gamma(H + 1/2)^-2 int_0^s (c + v)^a v^a dv = Gamma(H + 1/2)^-2 c^a s^(a+1) / (a+1) 2F1(-a, a+1; a+2; -s/c)."""
    from scipy.special import gamma as gamma_fn
    from scipy.special import hyp2f1

    check_hurst(hurst)
    t = np.asarray(times, dtype=np.float64)
    if t.ndim != 1 or (t <= 0).any() or (np.diff(t) <= 0).any():
        raise ValueError("times must be a strictly increasing 1-D array of positive times")
    a = hurst - 0.5
    s, u = np.minimum.outer(t, t), np.maximum.outer(t, t)
    c = u - s
    with np.errstate(divide="ignore", invalid="ignore"):
        off = c ** a * s ** (a + 1) / (a + 1) * hyp2f1(-a, a + 1, a + 2, -s / c)
    cov = np.where(c > 0, off, s ** (2 * a + 1) / (2 * a + 1))
    return cov / gamma_fn(hurst + 0.5) ** 2


def standard_covariance(hurst: float, times) -> np.ndarray:
    """Cov(B_H(s), B_H(t)) = (s^(2H) + t^(2H) - |t - s|^(2H)) / 2 of standard (type-I, Mandelbrot-van Ness) fBM."""
    check_hurst(hurst)
    t = np.asarray(times, dtype=np.float64)
    return 0.5 * (t[:, None] ** (2 * hurst) + t[None, :] ** (2 * hurst) - np.abs(t[:, None] - t[None, :]) ** (2 * hurst))


def markov_covariance(hurst, gamma: torch.Tensor, times, horizon: float = 1.0) -> np.ndarray:
    """Cov(B_hat(s), B_hat(t)) of the approximation with the weights optimal on [0, horizon]: for s <= t,
    sum_ij omega_i omega_j e^(-g_j (t - s)) (1 - e^(-(g_i + g_j) s)) / (g_i + g_j)  (float64)."""
    w = omega(hurst, gamma, horizon).detach().numpy()
    g = gamma.detach().numpy()
    t = np.asarray(times, dtype=np.float64)
    s, u = np.minimum.outer(t, t), np.maximum.outer(t, t)
    pair = g[:, None] + g[None, :]
    cov = np.zeros_like(s)
    for i in range(len(g)):  # K^2 terms of [T, T] each
        for j in range(len(g)):
            cov += w[i] * w[j] * np.exp(-g[j] * (u - s)) * -np.expm1(-pair[i, j] * s) / pair[i, j]
    return cov


def gaussian_paths(cov: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """n draws [n, T] of the centred Gaussian with covariance `cov` [T, T], by its Cholesky factor (float64)."""
    jitter = 1e-12 * np.trace(cov) / len(cov)
    chol = np.linalg.cholesky(cov + jitter * np.eye(len(cov)))
    return np.random.default_rng(seed).standard_normal((n, len(cov))) @ chol.T


def fbm_paths(hurst: float, times, n: int, seed: int = 0) -> np.ndarray:
    """n exact type-II fBM paths at `times` [n, len(times)] (float64), by the Cholesky factor of the covariance."""
    return gaussian_paths(covariance(hurst, times), n, seed)


def markov_variance(hurst, gamma: torch.Tensor, t) -> torch.Tensor:
    """Var B_hat(t) = sum_ij omega_i omega_j (1 - exp(-(g_i + g_j) t)) / (g_i + g_j), the approximation's own, with
    the weights optimal on [0, max t]."""
    w = omega(hurst, gamma, float(torch.as_tensor(t).max()))
    s = gamma[:, None] + gamma[None, :]
    t = _as64(t)[..., None, None]
    return (w[:, None] * w[None, :] * -torch.expm1(-s * t) / s).sum((-1, -2))


__all__ = ["DEFAULT_RATIO", "check_hurst", "covariance", "cross", "fbm_energy", "fbm_paths", "fbm_variance",
           "gaussian_paths", "gram", "lower_gamma_p", "markov_covariance", "markov_variance", "omega", "rates",
           "relative_error", "standard_covariance"]
