"""Diffusion as one time-dependent field seen three ways: variational (DDPM's ELBO), score-based
(denoising score matching) and flow-based (flow matching of a velocity).

Every path here is Gaussian, x_t = alpha_t x0 + sigma_t eps with eps ~ N(0, I) and t in [0, 1]:
  VP / DDPM  (Ho et al., 2020):   alpha_t^2 = abar_t, sigma_t^2 = 1 - abar_t
  rectified flow (Liu et al., 2023; Lipman et al., 2023):  alpha_t = 1 - t, sigma_t = t
A network `net(x_t, t) -> prediction` predicts one of four equivalent quantities ("eps", "score",
"x0", "v"); `convert` moves between them exactly. The losses are plain functions returning a value
per example ([B]); the samplers live in `varilab.models.diffusion.samplers`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

KINDS = ("eps", "score", "x0", "v")


def _col(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-example coefficient [B] (or a scalar) shaped to broadcast against x [B, ...]."""
    return c.reshape(-1, *[1] * (x.dim() - 1)) if c.dim() == 1 else c


@dataclass
class VPSchedule:
    """DDPM's variance-preserving schedule: betas linear from `beta_start` to `beta_end` over T steps,
    abar_i = prod_{j<=i} (1 - beta_j), step i sitting at time t = i / T.

    The continuous-time view interpolates log abar linearly between the knots t = i / T, so that
    alpha_t^2 = abar_i exactly at every knot and alpha_t^2 + sigma_t^2 = 1 everywhere; between knots
    d log alpha_t^2 / dt = T log(1 - beta_i) (about -T beta_i, the VP SDE's beta(t)).
    """
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        if self.T < 1 or not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need T >= 1 and 0 < beta_start <= beta_end < 1, got T={self.T}, "
                             f"beta_start={self.beta_start}, beta_end={self.beta_end}")

    def betas(self) -> torch.Tensor:
        """beta_1..beta_T, [T] (float64)."""
        return torch.linspace(self.beta_start, self.beta_end, self.T, dtype=torch.float64)

    def alpha_bar(self) -> torch.Tensor:
        """abar_0..abar_T, [T + 1] (float64), with abar_0 = 1."""
        return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - self.betas(), 0)])

    def _knots(self, device) -> torch.Tensor:
        """log abar_0..log abar_T on `device`, computed once per schedule and device (samplers ask often)."""
        key = (self.T, self.beta_start, self.beta_end, str(device))
        cache = self.__dict__.setdefault("_cache", {})
        if key not in cache:
            cache[key] = self.alpha_bar().log().to(device)
        return cache[key]

    def _log_alpha2(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log alpha_t^2 and its slope in t, piecewise linear between the knots i / T."""
        t = torch.as_tensor(t, dtype=torch.float64)
        knots = self._knots(t.device)  # [T + 1]
        s = (t.clamp(0, 1) * self.T)
        i = s.floor().clamp(max=self.T - 1).long()
        slope = knots[i + 1] - knots[i]  # per unit of s = T t
        return knots[i] + (s - i) * slope, slope * self.T

    def alpha(self, t) -> torch.Tensor:
        return self._log_alpha2(t)[0].mul(0.5).exp()

    def sigma(self, t) -> torch.Tensor:
        return (-torch.expm1(self._log_alpha2(t)[0])).clamp(min=0).sqrt()  # sqrt(1 - alpha_t^2)

    def d_alpha(self, t) -> torch.Tensor:
        log_a2, slope = self._log_alpha2(t)
        return 0.5 * slope * log_a2.mul(0.5).exp()  # d alpha/dt = alpha * (1/2) d log alpha^2/dt

    def d_sigma(self, t) -> torch.Tensor:
        return -self.alpha(t) * self.d_alpha(t) / self.sigma(t)  # from alpha^2 + sigma^2 = 1

    def velocity_coefs(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, b_t) with v = a_t x0 + b_t eps: v = alpha_t eps - sigma_t x0 (Salimans & Ho, 2022)."""
        return -self.sigma(t), self.alpha(t)


@dataclass
class LinearInterpolant:
    """Rectified flow's straight path x_t = (1 - t) x0 + t eps; the velocity is u = eps - x0."""

    def alpha(self, t) -> torch.Tensor:
        return 1 - torch.as_tensor(t, dtype=torch.float64)

    def sigma(self, t) -> torch.Tensor:
        return torch.as_tensor(t, dtype=torch.float64).clone()

    def d_alpha(self, t) -> torch.Tensor:
        return -torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def d_sigma(self, t) -> torch.Tensor:
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def velocity_coefs(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, b_t) with u = a_t x0 + b_t eps = d x_t / dt: (-1, 1)."""
        return self.d_alpha(t), self.d_sigma(t)


def drift_and_diffusion(schedule, t) -> tuple[torch.Tensor, torch.Tensor]:
    """(f_t, g_t^2) of the forward SDE dx = f_t x dt + g_t dW whose marginals are x_t = alpha_t x0 + sigma_t eps:
    f = alpha'/alpha and g^2 = 2 sigma sigma' - 2 f sigma^2 (for VP, f = -beta/2 and g^2 = beta)."""
    a, s = schedule.alpha(t), schedule.sigma(t)
    f = schedule.d_alpha(t) / a
    return f, 2 * s * schedule.d_sigma(t) - 2 * f * s * s


def _coefs(schedule, t, x):
    """alpha_t, sigma_t, a_t, b_t in x's dtype and device, shaped to broadcast against x."""
    t = torch.as_tensor(t, dtype=torch.float64, device=x.device)
    a, b = schedule.velocity_coefs(t)
    return [_col(c.to(x.dtype), x) for c in (schedule.alpha(t), schedule.sigma(t), a, b)]


def convert(pred: torch.Tensor, frm: str, to: str, x_t: torch.Tensor, t, schedule) -> torch.Tensor:
    """The prediction `pred` of kind `frm` at (x_t, t) re-expressed as kind `to`, exactly.

    Kinds: "eps" (noise), "score" (grad log p_t = -eps / sigma_t), "x0" (the denoised data) and
    "v" (the schedule's velocity a_t x0 + b_t eps). `t` is a scalar or one time per example [B].
    Conversions divide by alpha_t (to x0 from eps or score) or sigma_t (from x0): avoid those at t = 1
    on the interpolant and at t = 0 respectively; "v" is finite everywhere.
    """
    for name, k in (("frm", frm), ("to", to)):
        if k not in KINDS:
            raise ValueError(f"{name} must be one of {KINDS}, got {k!r}")
    if frm == to:
        return pred
    alpha, sigma, a, b = _coefs(schedule, t, x_t)
    if frm == "v":  # [[alpha, sigma], [a, b]] has determinant alpha b - sigma a = 1 for both paths
        eps, x0 = alpha * pred - a * x_t, b * x_t - sigma * pred
    elif frm == "x0":
        eps, x0 = (x_t - alpha * pred) / sigma, pred  # eps = (x_t - alpha_t x0) / sigma_t
    else:
        eps = pred if frm == "eps" else -sigma * pred  # eps = -sigma_t score
        if to in ("eps", "score"):
            x0 = None
        elif frm == "eps":
            x0 = (x_t - sigma * eps) / alpha  # x0 = (x_t - sigma_t eps) / alpha_t
        else:
            x0 = (x_t + sigma * sigma * pred) / alpha  # Tweedie: E[x0|x_t] = (x_t + sigma_t^2 score) / alpha_t
    if to == "eps":
        return eps
    if to == "score":
        return -eps / sigma  # score = -eps / sigma_t
    if to == "x0":
        return x0
    return a * x0 + b * eps  # v = a_t x0 + b_t eps


def add_noise(x0: torch.Tensor, t, schedule, eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, eps) with x_t = alpha_t x0 + sigma_t eps."""
    eps = torch.randn_like(x0) if eps is None else eps
    alpha, sigma, _, _ = _coefs(schedule, t, x0)
    return alpha * x0 + sigma * eps, eps


def sample_times(schedule, n: int, device=None, t_min: float = 1e-3) -> torch.Tensor:
    """Training times [n]: t = i / T with i uniform on 1..T for a VPSchedule, else uniform on [t_min, 1 - t_min]."""
    if isinstance(schedule, VPSchedule):
        return torch.randint(1, schedule.T + 1, (n,), device=device).double() / schedule.T
    return t_min + (1 - 2 * t_min) * torch.rand(n, device=device, dtype=torch.float64)


def _check_batch(x0: torch.Tensor) -> None:
    if not isinstance(x0, torch.Tensor) or x0.dim() < 2:
        raise ValueError(f"x0 must be a tensor [B, ...] with a batch dimension, got "
                         f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}")


def _sq(d: torch.Tensor) -> torch.Tensor:
    return d.pow(2).flatten(1).sum(1)  # ||d||^2 per example, [B]


def eps_loss(net, x0: torch.Tensor, schedule) -> torch.Tensor:
    """DDPM's simplified loss ||eps - eps_theta(x_t, t)||^2 per example, [B] (Ho et al., 2020, eq. 14):
    the ELBO's per-step terms with their weights dropped."""
    _check_batch(x0)
    t = sample_times(schedule, x0.shape[0], x0.device)
    x_t, eps = add_noise(x0, t, schedule)
    return _sq(eps - net(x_t, t.to(x0.dtype)))  # L_simple = E ||eps - eps_theta(x_t, t)||^2


def score_matching_loss(net, x0: torch.Tensor, schedule) -> torch.Tensor:
    """Denoising score matching with weight sigma_t^2, per example [B] (Vincent, 2011; Song et al., 2021):
    sigma_t^2 ||s_theta(x_t, t) - grad log q(x_t|x0)||^2 with grad log q(x_t|x0) = -eps / sigma_t."""
    _check_batch(x0)
    t = sample_times(schedule, x0.shape[0], x0.device)
    x_t, eps = add_noise(x0, t, schedule)
    sigma = _col(schedule.sigma(t).to(x0.dtype), x0)
    return _sq(sigma * net(x_t, t.to(x0.dtype)) + eps)  # ||sigma_t s_theta + eps||^2


def flow_matching_loss(net, x0: torch.Tensor, schedule=None) -> torch.Tensor:
    """Conditional flow matching ||v_theta(x_t, t) - (a_t x0 + b_t eps)||^2 per example, [B]
    (Lipman et al., 2023); on the default LinearInterpolant the target is u = eps - x0."""
    _check_batch(x0)
    schedule = LinearInterpolant() if schedule is None else schedule
    t = sample_times(schedule, x0.shape[0], x0.device)
    x_t, eps = add_noise(x0, t, schedule)
    _, _, a, b = _coefs(schedule, t, x0)
    return _sq(net(x_t, t.to(x0.dtype)) - (a * x0 + b * eps))


def _normal_kl(m1, v1, m2, v2) -> torch.Tensor:
    """KL(N(m1, v1) || N(m2, v2)) elementwise."""
    return 0.5 * (torch.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1)


def ddpm_nll_bound(net, x0: torch.Tensor, schedule: VPSchedule, kind: str = "eps", n_steps: int | None = None,
                   reverse_var: str = "posterior", chunk: int = 65536) -> torch.Tensor:
    """The negative ELBO of the discrete-time DDPM, an upper bound on -log p(x0) in nats, per example [B]
    (Ho et al., 2020, eq. 5; Sohl-Dickstein et al., 2015):

        L = KL(q(x_T|x0) || N(0, I)) + sum_{i=2}^T E_q KL(q(x_{i-1}|x_i, x0) || p(x_{i-1}|x_i)) - E_q log p(x0|x1)

    Choices: p(x_{i-1}|x_i) = N(mu~_i(x_i, x0_hat), v_i I), the forward posterior's mean with x0 replaced
    by the network's x0_hat, so mu~ - mu_hat = c_i (x0 - x0_hat) with c_i = sqrt(abar_{i-1}) beta_i / (1 - abar_i).
    `reverse_var` picks Ho et al.'s two fixed variances: "posterior", v_i = beta~_i = beta_i (1 - abar_{i-1}) /
    (1 - abar_i) (exact when x0 is a point; each KL is then c_i^2 ||x0 - x0_hat||^2 / (2 beta~_i)), or "beta",
    v_i = beta_i (right when the data is broad on the noise scale, as in the first steps). The decoder is a
    Gaussian p(x0|x1) = N(x0_hat(x1), (1 - abar_1) / abar_1 I), the spread of x0 that x1 = sqrt(abar_1) x0 +
    sqrt(1 - abar_1) eps leaves (a density for continuous data, not Ho et al.'s discretised decoder).
    `n_steps=None` sums all T - 1 middle terms, each with its own x_i; an int K estimates the sum
    without bias from K uniform steps per example. Divide by D log 2 (`bits_per_dim`) for bits per dimension.
    """
    _check_batch(x0)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    T, B = schedule.T, x0.shape[0]
    abar = schedule.alpha_bar().to(x0.device)  # [T + 1]
    betas = schedule.betas().to(x0.device)  # betas[i - 1] = beta_i
    dev, dt = x0.device, x0.dtype

    # prior: KL(N(sqrt(abar_T) x0, 1 - abar_T) || N(0, 1)) per dimension
    prior = _normal_kl(abar[T].sqrt().to(dt) * x0, (1 - abar[T]).to(dt), torch.zeros((), dtype=dt, device=dev),
                       torch.ones((), dtype=dt, device=dev)).flatten(1).sum(1)

    def x0_hat(i: torch.Tensor, x0_rows: torch.Tensor):  # i [N] step indices; returns (x0_hat, x_i)
        t = i.double() / T
        x_i, _ = add_noise(x0_rows, t, schedule)
        return convert(net(x_i, t.to(dt)), kind, "x0", x_i, t, schedule), x_i

    # decoder: -log N(x0; x0_hat(x1), (1 - abar_1) / abar_1)
    one = torch.ones(B, dtype=torch.long, device=dev)
    mean, _ = x0_hat(one, x0)
    var = ((1 - abar[1]) / abar[1]).to(dt)
    decoder = (0.5 * (x0 - mean) ** 2 / var + 0.5 * torch.log(2 * math.pi * var)).flatten(1).sum(1)

    # middle terms, i = 2..T
    if T < 2:
        return prior + decoder
    if n_steps is None:
        steps, weight = torch.arange(2, T + 1, device=dev)[:, None].expand(T - 1, B), 1.0
    else:
        steps, weight = torch.randint(2, T + 1, (n_steps, B), device=dev), (T - 1) / n_steps
    if reverse_var not in ("posterior", "beta"):
        raise ValueError(f"reverse_var must be 'posterior' or 'beta', got {reverse_var!r}")
    c2 = abar[:-1] * betas.pow(2) / (1 - abar[1:]).pow(2)  # c_i^2, index i - 1
    beta_tilde = betas * (1 - abar[:-1]) / (1 - abar[1:])  # beta~_i, index i - 1
    v = beta_tilde if reverse_var == "posterior" else betas
    w = (c2 / (2 * v)).to(dt)
    # per dimension: KL(N(mu~, beta~) || N(mu_hat, v)) = log(v / beta~)/2 + (beta~ - v)/(2 v) + c^2 (x0 - x0_hat)^2/(2 v)
    const = (0.5 * torch.log(v / beta_tilde) + (beta_tilde - v) / (2 * v)).to(dt) * x0[0].numel()
    rows_per_chunk = max(1, chunk // B)
    middle = torch.zeros(B, dtype=dt, device=dev)
    for k in range(0, steps.shape[0], rows_per_chunk):
        i = steps[k:k + rows_per_chunk]  # [K', B]
        rows = x0.unsqueeze(0).expand(i.shape[0], *x0.shape).reshape(-1, *x0.shape[1:])
        xh, _ = x0_hat(i.reshape(-1), rows)
        kl_i = const[i.reshape(-1) - 1] + w[i.reshape(-1) - 1] * _sq(rows - xh)
        middle = middle + kl_i.reshape(i.shape).sum(0)
    return prior + decoder + weight * middle


def bits_per_dim(nats: torch.Tensor, x_dim: int) -> torch.Tensor:
    """Nats per example -> bits per dimension: nats / (D log 2)."""
    return nats / (x_dim * math.log(2))


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of times t [B] in [0, 1], [B, dim] (Vaswani et al., 2017; Ho et al., 2020):
    [sin(scale t w_k), cos(scale t w_k)] with w_k = 10000^(-k / (dim/2)); scale 1000 puts t on DDPM's step scale."""
    half = dim // 2
    w = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    arg = scale * t.float()[:, None] * w  # [B, half]
    return torch.cat([arg.sin(), arg.cos()], dim=1)


@dataclass
class DiffusionMLPConfig:
    x_dim: int
    hidden: int = 128
    depth: int = 3  # hidden layers
    time_dim: int = 64


class DiffusionMLP(nn.Module):
    """net(x_t, t) -> a prediction of x's shape [B, x_dim], from an MLP (SiLU) on [x_t, embed(t)];
    what it predicts (eps, score, x0 or v) is set by the loss it is trained with."""

    def __init__(self, config: DiffusionMLPConfig):
        super().__init__()
        if config.x_dim < 1 or config.depth < 1 or config.time_dim < 2 or config.time_dim % 2:
            raise ValueError(f"need x_dim >= 1, depth >= 1 and an even time_dim >= 2, got {config}")
        self.config = config
        self.time = nn.Sequential(nn.Linear(config.time_dim, config.hidden), nn.SiLU(),
                                  nn.Linear(config.hidden, config.hidden))
        sizes = [config.x_dim + config.hidden] + [config.hidden] * config.depth
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(config.hidden, config.x_dim)

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        if x_t.dim() != 2 or x_t.shape[1] != self.config.x_dim:
            raise ValueError(f"x_t must be [B, {self.config.x_dim}], got {tuple(x_t.shape)}")
        t = torch.as_tensor(t, device=x_t.device).expand(x_t.shape[0])
        emb = timestep_embedding(t, self.config.time_dim).to(self.out.weight.dtype)
        h = torch.cat([x_t, self.time(emb)], dim=1)
        for layer in self.layers:
            h = nn.functional.silu(layer(h))
        return self.out(h)
