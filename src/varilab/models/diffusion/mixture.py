"""A Gaussian-mixture data distribution p0 = sum_k pi_k N(m_k, S_k) seen through a Gaussian path
x_t = alpha_t x0 + sigma_t eps: everything a diffusion solver needs, in closed form, to be checked against.

  marginal at t     p_t = sum_k pi_k N(alpha_t m_k, alpha_t^2 S_k + sigma_t^2 I)
  denoiser          E[x0 | x_t] = sum_k r_k(x_t) (m_k + alpha_t S_k C_k^-1 (x_t - alpha_t m_k)),  C_k = alpha_t^2 S_k + sigma_t^2 I
                    with r_k(x_t) the responsibilities under p_t; eps_hat = (x_t - alpha_t E[x0|x_t]) / sigma_t
  reverse kernel    p(x_s | x_t), s < t: a mixture with weights r_k(x_t) and components
                    N(L_k (C_s,k^-1 alpha_s m_k + a x_t / v), L_k),  L_k = (C_s,k^-1 + a^2 / v I)^-1,
                    a = alpha_t / alpha_s, v = sigma_t^2 - a^2 sigma_s^2
  posterior         y = A x0 + N(0, r^2 I): sum_k pi'_k N(m'_k, S'_k) with S'_k = (S_k^-1 + A^T A / r^2)^-1,
                    m'_k = S'_k (S_k^-1 m_k + A^T y / r^2), pi'_k oc pi_k N(y; A m_k, A S_k A^T + r^2 I)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class GaussianMixture:
    weights: torch.Tensor  # [K], summing to 1
    means: torch.Tensor  # [K, D]
    covs: torch.Tensor  # [K, D, D]

    def __post_init__(self):
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covs.shape != (k, d, d):
            raise ValueError(f"weights [K], means [K, D] and covs [K, D, D] must agree, got {list(self.weights.shape)}, "
                             f"{list(self.means.shape)} and {list(self.covs.shape)}")
        self.weights = self.weights.double() / self.weights.sum()
        self.means, self.covs = self.means.double(), self.covs.double()

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x [n, D], component [n])."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        return self.means[k] + (torch.linalg.cholesky(self.covs)[k] @ z[:, :, None])[..., 0], k

    def _eye(self) -> torch.Tensor:
        return torch.eye(self.dim, dtype=torch.float64)

    def marginal(self, alpha: float, sigma: float) -> "GaussianMixture":
        """p_t for x_t = alpha x0 + sigma eps."""
        return GaussianMixture(self.weights, alpha * self.means, alpha ** 2 * self.covs + sigma ** 2 * self._eye())

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; m_k, S_k) for every point and component, [N, K] (one einsum, not N K small solves)."""
        prec = torch.linalg.inv(self.covs)  # [K, D, D]
        diff = x.double()[:, None, :] - self.means  # [N, K, D]
        maha = torch.einsum("nkd,kde,nke->nk", diff, prec, diff)
        log_det = torch.linalg.slogdet(self.covs)[1]  # [K]
        return -0.5 * (maha + log_det + self.dim * math.log(2 * math.pi))

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """r_k(x) oc pi_k N(x; m_k, S_k), [N, K]."""
        return torch.softmax(self.component_log_prob(x) + self.weights.log(), dim=1)

    def denoise(self, x_t: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """E[x0 | x_t] [N, D] (Tweedie's formula under the mixture), in x_t's dtype."""
        p_t = self.marginal(alpha, sigma)
        r = p_t.responsibilities(x_t)  # [N, K]
        gain = alpha * self.covs @ torch.linalg.inv(p_t.covs)  # alpha S_k C_k^-1, [K, D, D]
        resid = x_t.double()[:, None, :] - p_t.means  # [N, K, D]
        per_k = self.means + torch.einsum("kde,nke->nkd", gain, resid)  # [N, K, D]
        return (r[..., None] * per_k).sum(1).to(x_t.dtype)

    def eps(self, x_t: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """The exact noise prediction (x_t - alpha E[x0 | x_t]) / sigma."""
        return (x_t - alpha * self.denoise(x_t, alpha, sigma)) / sigma

    def reverse_sample(self, x_t: torch.Tensor, alpha_t: float, sigma_t: float, alpha_s: float, sigma_s: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """x_s ~ p(x_s | x_t) exactly, for s < t (at alpha_s = 1, sigma_s = 0 it samples x0 | x_t)."""
        a = alpha_t / alpha_s
        v = sigma_t ** 2 - a ** 2 * sigma_s ** 2  # variance of x_t | x_s
        p_s = self.marginal(alpha_s, sigma_s)
        r = self.marginal(alpha_t, sigma_t).responsibilities(x_t)  # [N, K]
        k = torch.multinomial(r, 1, generator=generator)[:, 0]  # [N]
        prec = torch.linalg.inv(p_s.covs) + a ** 2 / v * self._eye()  # [K, D, D]
        cov = torch.linalg.inv(prec)
        shift = (cov @ torch.linalg.inv(p_s.covs) @ p_s.means[..., None])[..., 0]  # L_k C_s,k^-1 alpha_s m_k, [K, D]
        z = torch.randn(len(x_t), self.dim, dtype=torch.float64, generator=generator)
        x = x_t.double()
        out = torch.empty_like(x)
        for j in range(len(self.weights)):  # one component at a time: a D x D map for all its points
            on = k == j
            out[on] = shift[j] + (a / v) * x[on] @ cov[j].T + z[on] @ torch.linalg.cholesky(cov[j]).T
        return out.to(x_t.dtype)

    def posterior(self, A: torch.Tensor, y: torch.Tensor, r: float) -> "GaussianMixture":
        """p(x0 | y) for y = A x0 + N(0, r^2 I), y [M]."""
        A, y = A.double(), y.double()
        prec = torch.linalg.inv(self.covs) + A.T @ A / r ** 2
        covs = torch.linalg.inv(prec)
        means = (covs @ ((torch.linalg.inv(self.covs) @ self.means[..., None])[..., 0] + A.T @ y / r ** 2)[..., None])[..., 0]
        evidence = GaussianMixture(self.weights, self.means @ A.T, A @ self.covs @ A.T + r ** 2 * torch.eye(len(y), dtype=torch.float64))
        log_w = self.weights.log() + evidence.component_log_prob(y[None])[0]  # pi_k N(y; A m_k, A S_k A^T + r^2 I)
        return GaussianMixture(torch.softmax(log_w, 0), means, 0.5 * (covs + covs.transpose(1, 2)))

    def mean(self) -> torch.Tensor:
        return (self.weights[:, None] * self.means).sum(0)



def sliced_w2(x: torch.Tensor, y: torch.Tensor, wx: torch.Tensor | None = None, projections: int = 64,
              seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between weighted samples x [N, D] (weights wx, summing to 1; uniform if
    None) and samples y [M, D]: sqrt(mean over random directions of W2^2 of the 1-D projections), each 1-D W2^2
    the integral over u in (0, 1) of (F_x^-1(u) - F_y^-1(u))^2 on a grid of 1,000 quantiles."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(projections, x.shape[1], generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    u = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    wx = torch.full((len(x),), 1.0 / len(x), dtype=torch.float64) if wx is None else wx.double()
    total = 0.0
    for d in dirs:
        px, py = x.double() @ d, y.double() @ d
        ox = torch.argsort(px)
        cx = torch.cumsum(wx[ox], 0)
        qx = px[ox][torch.searchsorted(cx, u * cx[-1]).clamp(max=len(x) - 1)]
        qy = torch.quantile(py, u)
        total += float(((qx - qy) ** 2).mean())
    return math.sqrt(total / projections)
