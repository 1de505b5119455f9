"""A latent SDE (Li et al., 2020) whose noise is Brownian or Markov-approximate fractional Brownian motion
(Daems et al., 2024), on torchsde.

Prior, per latent dimension, driven by B_hat = sum_k omega_k Y_k (K OU processes sharing one Brownian W; K = 0
gives plain Brownian noise, dB_hat = dW):

    dX   = [mu_theta(X) - sigma sum_k omega_k gamma_k Y_k] dt + sigma (sum_k omega_k) dW
    dY_k = -gamma_k Y_k dt + dW,   Y_k(0) = 0

The posterior changes the drift of W by a control u_phi(t, X, Y, context), dW = u dt + dW~ (Girsanov), so

    dX   = [... + sigma (sum_k omega_k) u] dt + ...,   dY_k = [-gamma_k Y_k + u] dt + dW~
    KL(Q || P) over paths = E_Q int 0.5 ||u||^2 dt   (accumulated as one more state, L)
    ELBO = E_Q sum_i log N(y_i; D X_{t_i}, s^2) - KL(q(X_0) || p(X_0)) - E_Q L_T

The noise is additive (sigma is a learned constant per dimension), so torchsde's Euler-Maruyama, Milstein and
SRK (strong order 1.5) all apply. H is learned through omega(H) (`varilab.sde.fbm`) unless fixed. The context is a
GRU run backwards over the observations on the batch's union time grid (so series may have their own times), with
the next observation itself and the time left until it.

Two posteriors. "plain": the control network alone, the whole path solved by torchsde (Li et al.'s latent SDE).
"guided" (the default): the linear part of the system (X reverting at a rate decay, the rest of mu left out) is
solved exactly (`varilab.sde.linear`), so a backward filter gives beta_t(z), the likelihood of all later
observations, and each Euler step's noise is drawn from its exact conditional given beta at the step's end, shifted
by the network's correction u sqrt(dt); each step's KL(q || N(0, I)) is the path KL and the likelihood at each
observation is in closed form over that step's noise. decay is the linear drift's own theta (`drift="linear"`:
the posterior is then exact up to Euler's error), else a learned variational parameter. With `conditional_steps` =
N only the last N steps before each observation are drawn so; torchsde solves the others, with the control
G^T grad log beta added to the network's. A fixed-step Girsanov posterior cannot shrink a step's variance, which
the true posterior does close to an observation, so it loses about sum_k (1/r_k - 1 + log r_k) / 2 nats per step
(r_k: the variance ratio), more for rough noise and small observation noise; that loss depends on H and biases the
learned H.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from ..sde import fbm, linear

METHODS = ("euler", "milstein", "srk")
POSTERIORS = ("guided", "plain")
DRIFTS = ("mlp", "linear")
HURST_SCALE = 10.0


@dataclass
class LatentSDEConfig:
    obs_dim: int
    latent: int = 1  # latent dimensions, each with its own W (and K OU processes)
    ou: int = 5  # K: OU processes per dimension; 0 = Brownian noise
    hurst: float | None = None  # fixed H, or None to learn it (from 0.5)
    ratio: float = fbm.DEFAULT_RATIO  # the grid gamma_k = r^(k - (K + 1)/2)
    start: float = 0.0  # t0: the SDE starts here, Y(t0) = 0
    horizon: float = 1.0  # T of the weights' criterion int_t0^(t0+T) (B_H - B_hat)^2 dt
    hidden: int = 64
    context: int = 16
    dt: float = 0.01  # the solver's fixed step
    method: str = "euler"
    adjoint: bool = False  # gradients by torchsde's stochastic adjoint instead of through the solver's steps
    obs_noise: float = 0.1  # the observation noise s: its initial value when learned, else its value
    learn_obs_noise: bool = True
    drift: str = "mlp"  # mu(X): an MLP, or "linear": b - theta X (theta >= 0 per dimension; fOU's class)
    posterior: str = "guided"  # "guided": guide + network, exact conditional steps; "plain": the network alone
    conditional_steps: int | None = None  # guided: steps before each observation drawn from their exact conditional
    # (None: all of them, no torchsde; the others are torchsde's, steered by the guide)


def union_grid(times: torch.Tensor, values: torch.Tensor):
    """Series with their own times [B, T] and values [B, T, D] on the batch's sorted union grid: (grid [U],
    values [B, U, D] zero where unobserved, mask [B, U])."""
    grid, inverse = torch.unique(times, sorted=True, return_inverse=True)
    b, t, d = values.shape
    on_grid = values.new_zeros(b, len(grid), d)
    mask = values.new_zeros(b, len(grid))
    rows = torch.arange(b, device=values.device)[:, None].expand(b, t)
    on_grid[rows, inverse] = values
    mask[rows, inverse] = 1.0
    return grid, on_grid, mask


class LinearDrift(nn.Module):
    """mu(X) = b - theta X per dimension, theta = exp(log_theta) >= 0 (from 1): the drift of an (fractional)
    Ornstein-Uhlenbeck process. The guided posterior's linear system then reverts at theta itself."""

    def __init__(self, d: int):
        super().__init__()
        self.log_theta, self.bias = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))

    def theta(self) -> torch.Tensor:
        return self.log_theta.exp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias - self.theta() * x


class _SDE(nn.Module):
    """The augmented (X, Y_1..Y_K, L) system for torchsde: additive noise, Ito. With `messages` (the backward
    filter of the observations, `varilab.sde.linear.messages`), the control adds the guide G^T grad log beta."""
    noise_type, sde_type = "additive", "ito"

    def __init__(self, model: "LatentSDE", context=None, grid=None, until: float | None = None,
                 observations: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.m, self.context, self.grid, self.until = model, context, grid, until
        self.w, self.gamma = model.weights()  # [K] each; computed once per solve
        self.load = linear.loading(self.w, model.sigma())  # G [N, d]
        self.messages, self.observations, self.table, self.decay = None, observations, None, None
        if observations is not None:
            d = model.decoder
            # the guide's mean reversion of X [d]: the drift's own for a linear drift (the guide is then exact)
            linear_drift = isinstance(model.drift, LinearDrift)
            self.decay = model.drift.theta() if linear_drift else model.guide_log_decay.exp()
            self.messages = linear.messages(grid, *observations, self.w, self.gamma, model.sigma(), d.weight, d.bias,
                                            model.log_obs_noise.exp(), self.decay)

    def split(self, z):
        """(X [B, d], Y [B, d, K]) of the augmented state."""
        d, k = self.m.config.latent, self.m.config.ou
        return z[:, :d], z[:, d:d + d * k].reshape(len(z), d, k)

    def control(self, t, z, drift, guide: bool = True):
        if self.context is None or (self.until is not None and float(t) > self.until):
            return torch.zeros_like(drift)
        # the first grid time after t (its context summarises the observations from there on); torchsde sums its
        # time in float32, which lands just short of a grid time (0.29999998 for 0.3), hence the 1e-3 dt margin
        after = (t + 1e-3 * self.m.config.dt).reshape(1).to(self.grid.dtype)
        i = min(int(torch.searchsorted(self.grid, after, right=True)), len(self.grid) - 1)
        context, next_time = self.context
        left = (next_time[:, i:i + 1] - t).clamp_min(0)  # time until the next observation (0 when there is none)
        x, y = self.split(z)
        u = self.m.control(torch.cat([x, y.flatten(1), context[:, i], left, t.expand(len(x), 1)], 1))
        if not guide or self.messages is None or float(t) >= float(self.grid[i]):
            return u
        return u + self.guide(t, z, drift, i)

    def plan(self, starts: list[float], index: list[int]) -> None:
        """Tabulate the guide at the step start times `starts` (whose next grid time is grid[index]), where Euler
        and Milstein evaluate the drift: G^T grad log beta_t(z) = a - B (r tau) - C z with r the drift's rest
        (`rest`), a = G^T M h_i, B = G^T M P_i (on X), C = G^T M P_i Phi and M = Phi^T (I + P_i Q)^-1
        (`linear.back`, batched over steps)."""
        d = self.load.shape[1]
        if not starts:
            return
        tau = self.grid[index] - torch.tensor(starts, dtype=self.grid.dtype, device=self.grid.device)
        phi, q = linear.transition(self.w, self.gamma, self.m.sigma(), tau, self.decay)  # [S, N, N]
        P, h = self.messages[0][:, index], self.messages[1][:, index]  # [B, S, N, N], [B, S, N]
        gm = self.load.T @ linear.pull(P, phi, q)  # G^T M [B, S, d, N]
        per_step = torch.cat([gm @ h[..., None], -gm @ P[..., :d] * tau[:, None, None], -gm @ P @ phi], -1)
        self.table = (starts, per_step.unbind(1))  # [a, -B tau, -C] per step; unbind: one backward for all steps
        self.cursor = (0, starts[0])

    def guide(self, t, z, drift, i):
        """G^T grad log beta_t(z) = G^T (h_t - P_t z): the control under which the linear system (the rest of the
        drift frozen at its current value for the time tau until grid time i) is exactly conditioned on the
        observations from there on (for Brownian noise, one observation and s -> 0: the Brownian bridge). Read from
        the plan's table when t is one of its step starts, else computed."""
        n = self.load.shape[0]
        if self.table is not None:
            first, t0 = self.cursor
            s = first + round((float(t) - t0) / self.m.config.dt)
            starts, table = self.table
            if s < len(starts) and abs(starts[s] - float(t)) < 1e-3 * self.m.config.dt:
                return (table[s] @ torch.cat([torch.ones_like(drift[:, :1]), self.rest(drift, z), z[:, :n]], 1)
                        [..., None])[..., 0]
        tau = self.grid[i] - t
        shift = torch.cat([self.rest(drift, z) * tau, drift.new_zeros(len(drift), n - drift.shape[1])], 1)
        P, h = linear.back(self.messages[0][:, i], self.messages[1][:, i],
                           *linear.transition(self.w, self.gamma, self.m.sigma(), tau, self.decay), shift)
        return (h - (P @ z[:, :n, None])[..., 0]) @ self.load

    def rest(self, mu, z):
        """The drift the guide's linear system leaves out, mu(X) + decay X, frozen until the next observation."""
        return mu + self.decay * z[:, :len(self.decay)]

    def drift(self, x, y, mu, u):
        """The augmented drift for control u: dX = [mu(X) - sigma sum_k omega_k gamma_k Y_k + sigma (sum_k omega_k) u]
        dt, dY_k = (-gamma_k Y_k + u) dt, dL = 0.5 ||u||^2 dt."""
        sigma, sw = self.m.sigma(), self.w.sum() if self.m.config.ou else 1.0
        dx = mu - sigma * (y * (self.w * self.gamma)).sum(-1) + sigma * sw * u
        dy = -self.gamma * y + u[..., None]
        return torch.cat([dx, dy.flatten(1), 0.5 * u.pow(2).sum(-1, keepdim=True)], 1)

    def f(self, t, z):
        x, y = self.split(z)
        mu = self.m.drift(x)
        return self.drift(x, y, mu, self.control(t, z, mu))

    def prepare(self, steps: list[tuple[float, float, int]]) -> None:
        """Tabulate, batched over the conditional steps (t, h, j), all that does not depend on the state: the message
        at each step's end t + h, moved back from grid time j through tau = t_j - t - h (`linear.back`: P' = M P Phi,
        h' = M (h - P c) with M = Phi^T (I + P Q)^-1 and c = (mu(X) tau, 0), the drift frozen), and the
        conditional's covariance (I + c^T P' c)^-1 for c = G sqrt(h), with its Cholesky factor."""
        d = self.load.shape[1]
        t, h, j = (torch.tensor(v, dtype=self.grid.dtype, device=self.grid.device) for v in zip(*steps))
        tau = (self.grid[j.long()] - t - h).clamp_min(0)
        phi, q = linear.transition(self.w, self.gamma, self.m.sigma(), tau, self.decay)  # [S, N, N]
        P, hv = self.messages[0][:, j.long()], self.messages[1][:, j.long()]  # [B, S, N, N], [B, S, N]
        mm = linear.pull(P, phi, q)  # M [B, S, N, N]
        P = mm @ P @ phi
        c = self.load * h.sqrt()[:, None, None]  # [S, N, d]
        S = torch.eye(d, dtype=q.dtype, device=q.device) + c.transpose(-1, -2) @ P @ c
        chol, info = torch.linalg.cholesky_ex(0.5 * (S + S.transpose(-1, -2)))
        if bool((info > 0).any()):  # rounding in the messages: rates too close for this many OU processes
            raise ValueError(f"the guided posterior's conditional covariance lost positive definiteness (K = "
                             f"{self.gamma.numel()} OU processes a latent, rates {float(self.gamma.min()):.3g}"
                             f" .. {float(self.gamma.max()):.3g}): the processes are too alike to tell apart in floating "
                             "point; use fewer --ou-processes or a larger --ratio (the defaults: 5 and 10)")
        tables = {"c": c.expand(len(P), -1, -1, -1), "P": P, "h": (mm @ hv[..., None])[..., 0],
                  "H": mm @ self.messages[0][:, j.long()][..., :d] * tau[:, None, None],
                  "cov": torch.cholesky_inverse(chol), "root": torch.linalg.inv(chol).transpose(-1, -2),
                  "logdet": 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1)}
        names = list(tables)
        self.steps = [dict(zip(names, row)) for row in zip(*(v.unbind(1) for v in tables.values()))]

    def step(self, z, t: float, h: float, j: int, k: int):
        """Euler step k (of length h from t towards grid time j >= t + h), its noise xi drawn from the exact
        conditional given beta_(t+h), the message of grid time j's and all later observations (`prepare`):
        q = N(S c^T (h' - P' m) + u sqrt(h), S) with S = (I + c^T P' c)^-1, c = G sqrt(h), m the uncontrolled step's
        mean and u the control network's correction. KL(q || N(0, I)) joins the path KL (for no later observation it
        is the Girsanov u^2 h / 2). A step ending at grid time j also returns E_q log N(y_j; D X_j + bias, s^2 I) in
        closed form for the series observed there (else 0)."""
        m, d, n = self.m, self.m.config.latent, self.load.shape[0]
        values, seen = self.observations
        tab = self.steps[k]
        x, y = self.split(z)
        mu = m.drift(x)
        u = self.control(torch.tensor(t, dtype=z.dtype, device=z.device), z, mu, guide=False)
        mean = z + self.drift(x, y, mu, torch.zeros_like(u)) * h
        target = tab["h"] - (tab["H"] @ self.rest(mu, z)[..., None])[..., 0] - (tab["P"] @ mean[:, :n, None])[..., 0]
        loc = (tab["cov"] @ (target[:, None] @ tab["c"]).transpose(-1, -2))[..., 0] + u * h ** 0.5
        xi = loc + (tab["root"] @ torch.randn_like(x)[..., None])[..., 0]
        kl = 0.5 * (tab["cov"].diagonal(dim1=-2, dim2=-1).sum(-1) + loc.pow(2).sum(-1) - d + tab["logdet"])
        z = mean + self.g_prod(t, z, xi * h ** 0.5) + torch.cat([mean.new_zeros(len(z), n), kl[:, None]], 1)
        if float(self.grid[j]) - t - h > 1e-3 * self.m.config.dt:
            return z, z.new_zeros(len(z))
        cx = tab["c"][:, :d]  # the step's noise on X [B, d, d]
        dc = m.decoder.weight @ cx  # D c_X [B, obs, d]
        s2 = m.log_obs_noise.exp().pow(2)
        fit = Normal(m.decoder(mean[:, :d] + (cx @ loc[..., None])[..., 0]), s2.sqrt()).log_prob(values[:, j]).sum(-1)
        fit = fit - (dc @ tab["cov"] @ dc.transpose(-1, -2)).diagonal(dim1=-2, dim2=-1).sum(-1) / (2 * s2)
        return z, fit * seen[:, j]

    def g(self, t, z):
        return torch.cat([self.load, z.new_zeros(1, self.load.shape[1])], 0).expand(len(z), -1, -1)  # L: no noise

    def g_prod(self, t, z, v):
        """g(t, z) v without forming g: (sigma (sum_k omega_k) v, v for each Y_k, 0), what the solvers step with."""
        k = self.m.config.ou
        sw = self.w.sum() if k else 1.0
        parts = [self.m.sigma() * sw * v] + ([v.repeat_interleave(k, 1)] if k else []) + [v.new_zeros(len(v), 1)]
        return torch.cat(parts, 1)

    def f_and_g_prod(self, t, z, v):
        return self.f(t, z), self.g_prod(t, z, v)


class LatentSDE(nn.Module):
    def __init__(self, config: LatentSDEConfig):
        super().__init__()
        c = self.config = config
        if c.method not in METHODS:
            raise ValueError(f"unknown solver method {c.method!r}; choose one of {', '.join(METHODS)}")
        if c.drift not in DRIFTS:
            raise ValueError(f"unknown drift {c.drift!r}; choose one of {', '.join(DRIFTS)}")
        if c.posterior not in POSTERIORS:
            raise ValueError(f"unknown posterior {c.posterior!r}; choose one of {', '.join(POSTERIORS)}")
        if c.conditional_steps is not None and c.conditional_steps < 1:
            raise ValueError(f"conditional_steps must be at least 1 (or None for all), got {c.conditional_steps}")
        if c.ou < 0 or c.latent < 1 or not c.dt > 0 or not c.horizon > 0:
            raise ValueError(f"need K >= 0, at least one latent dimension, and a positive step and horizon; got K = "
                             f"{c.ou}, latent {c.latent}, dt {c.dt}, horizon {c.horizon}")
        if c.hurst is not None:
            fbm.check_hurst(c.hurst)
        fastest = c.ratio ** ((c.ou - 1) / 2) if c.ou else 0.0
        if c.dt * fastest >= 2:  # Y <- (1 - gamma dt) Y + dW grows unless gamma dt < 2
            raise ValueError(f"the fastest OU process (gamma = {fastest:.4g}) needs a solver step dt < 2 / gamma = "
                             f"{2 / fastest:.3g} to stay stable, got dt = {c.dt:g}: lower dt, the ratio or K")
        h, d = c.hidden, c.latent
        self.drift = (nn.Sequential(nn.Linear(d, h), nn.Softplus(), nn.Linear(h, h), nn.Softplus(), nn.Linear(h, d))
                      if c.drift == "mlp" else LinearDrift(d))
        self.log_sigma = nn.Parameter(torch.zeros(d))
        # H = 0.01 + 0.98 sigmoid(HURST_SCALE * hurst_logit): the scale lets Adam move H faster (on H = 0.8 data,
        # unscaled H went from 0.5 to 0.62 in 450 steps; scaled by 10 it reached 0.86 by step 400)
        self.hurst_logit = nn.Parameter(torch.zeros(()), requires_grad=c.hurst is None)
        # the guided posterior's linear system lets X revert to 0 at rate exp(guide_log_decay), a variational
        # parameter, from 1 / horizon
        self.guide_log_decay = nn.Parameter(torch.full((c.latent,), -math.log(c.horizon)),
                                            requires_grad=c.posterior == "guided" and c.drift == "mlp")
        self.encoder = nn.GRU(c.obs_dim + 1, c.context, batch_first=True)
        self.q0 = nn.Linear(c.context, 2 * d)
        self.p0_mean, self.p0_log_std = nn.Parameter(torch.zeros(d)), nn.Parameter(torch.zeros(d))
        inputs = d + d * c.ou + c.context + c.obs_dim + 3  # X, Y, the GRU, the next observation, its flag, time left, t
        self.control = nn.Sequential(nn.Linear(inputs, h), nn.Softplus(), nn.Linear(h, h), nn.Softplus(), nn.Linear(h, d))
        nn.init.zeros_(self.control[-1].weight)  # start from u = 0: the posterior is the prior
        nn.init.zeros_(self.control[-1].bias)
        self.decoder = nn.Linear(d, c.obs_dim)
        if d == c.obs_dim:
            with torch.no_grad():
                self.decoder.weight.copy_(torch.eye(d))
                self.decoder.bias.zero_()
        self.log_obs_noise = nn.Parameter(torch.tensor(float(c.obs_noise)).log(), requires_grad=c.learn_obs_noise)
        self.register_buffer("gamma", fbm.rates(c.ou, c.ratio) if c.ou else torch.zeros(0, dtype=torch.float64),
                             persistent=False)

    def hurst(self) -> torch.Tensor:
        if self.config.hurst is not None:
            return torch.tensor(self.config.hurst, dtype=torch.float64)
        return 0.01 + 0.98 * torch.sigmoid(HURST_SCALE * self.hurst_logit.double())

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(omega(H), gamma) in the model's dtype; empty for Brownian noise."""
        dtype = self.log_sigma.dtype
        if not self.config.ou:
            return self.gamma.to(dtype), self.gamma.to(dtype)
        w = fbm.omega(self.hurst(), self.gamma, self.config.horizon)
        return w.to(dtype), self.gamma.to(dtype)

    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp()

    def state_size(self) -> int:
        return self.config.latent * (1 + self.config.ou) + 1

    def encode(self, grid: torch.Tensor, values: torch.Tensor, mask: torch.Tensor):
        """(context [B, U, context + obs_dim + 1], next time [B, U]) at each grid time: the GRU's summary of the
        observations from that time on, the next observed value at or after it with a flag saying there is one,
        and that observation's time (the grid's last time when there is none)."""
        inputs = torch.cat([values * mask[..., None], mask[..., None]], -1)
        out, _ = self.encoder(inputs.flip(1))
        u = len(grid)
        index = torch.where(mask > 0, torch.arange(u, device=mask.device), u)  # u: not observed here
        nxt = index.flip(1).cummin(1).values.flip(1)  # the next observed grid index at or after each time
        has = (nxt < u).to(values.dtype)
        nxt = nxt.clamp_max(u - 1)
        value = values.gather(1, nxt[..., None].expand(-1, -1, values.shape[2])) * has[..., None]
        next_time = torch.where(has > 0, grid[nxt], grid[-1])
        return torch.cat([out.flip(1), value, has[..., None]], -1), next_time

    def _brownian(self, t0: float, t1: float, z0: torch.Tensor, generator=None):
        """torchsde's Brownian path on [t0, t1], its entropy drawn from torch's RNG (so seeds and resume hold)."""
        import torchsde

        seed = int(torch.randint(2 ** 31 - 1, (1,), generator=generator))
        return torchsde.BrownianInterval(t0=t0, t1=t1, size=(len(z0), self.config.latent), dtype=z0.dtype,
                                         device=z0.device, dt=self.config.dt, entropy=seed,
                                         levy_area_approximation="space-time" if self.config.method == "srk" else "none")

    def _sdeint(self, sde: _SDE, z0: torch.Tensor, ts: torch.Tensor, generator=None) -> torch.Tensor:
        """torchsde's solve of `sde` from z0 at ts[0], states [len(ts), B, state]."""
        import torchsde

        bm = self._brownian(ts[0], ts[-1], z0, generator)
        if self.config.adjoint and torch.is_grad_enabled():  # the adjoint sees only tensors listed here
            params = tuple(p for p in self.parameters() if p.requires_grad)
            extra = tuple(v for v in (*(sde.context or ()), *(sde.messages or ()), sde.w, sde.load)
                          if v is not None and v.requires_grad)
            return torchsde.sdeint_adjoint(sde, z0, ts, bm=bm, method=self.config.method, dt=self.config.dt,
                                           adjoint_params=params + extra)
        return torchsde.sdeint(sde, z0, ts, bm=bm, method=self.config.method, dt=self.config.dt)

    def _solve(self, sde: _SDE, z0: torch.Tensor, grid: torch.Tensor, generator=None) -> torch.Tensor:
        """States [B, U, state] at the grid times, the solve starting at t0 (prepended unless the grid starts there)."""
        t0 = torch.tensor([self.config.start], dtype=grid.dtype, device=grid.device)
        prepend = bool(grid[0] > t0[0])
        ts = torch.cat([t0, grid]) if prepend else grid
        if len(ts) == 1:
            return z0[:, None]
        zs = self._sdeint(sde, z0, ts, generator).transpose(0, 1)
        return zs[:, 1:] if prepend else zs

    def _solve_guided(self, sde: _SDE, z0: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The guided posterior: torchsde solves up to `conditional_steps` steps before each grid time, and
        `_SDE.step` takes those steps, each drawn from its exact conditional. Returns (states [B, U, state], the
        expected log-likelihood summed per series)."""
        dt, t, segments, starts, index = self.config.dt, self.config.start, [], [], []
        for j, tj in enumerate(grid.tolist()):  # torchsde's step start times, for the guide's table
            cs = self.config.conditional_steps
            hand = tj - t if cs is None else min(cs * dt, tj - t)
            hand = tj - t if tj - t - hand < 1e-3 * dt else hand  # no sliver of a segment for torchsde
            n = max(0, math.ceil((tj - hand - t) / dt - 1e-3))  # torchsde's steps t, t + dt, .. up to tj - hand
            segments.append((t, tj - hand, len(starts)))
            starts += [t + k * dt for k in range(n)]
            index += [j] * n
            t = tj
        sde.plan(starts, index)
        hand = []  # the conditional steps (t, h, j): dt each, the first shorter when a stretch is no multiple of dt
        for j, ((t, end, first), tj) in enumerate(zip(segments, grid.tolist())):
            t, mine = end, []
            while tj - t > 1e-3 * dt:
                h = tj - t - dt * (math.ceil((tj - t) / dt - 1e-3) - 1)
                mine.append((t, h, j))
                t += h
            hand.append(mine or [(end, 0.0, j)])  # none: an observation at the start time, a step of length 0
        sde.prepare([s for mine in hand for s in mine])
        z, states, fit, k = z0, [], z0.new_zeros(len(z0)), 0
        for j, ((t, end, first), mine) in enumerate(zip(segments, hand)):
            if end > t:
                sde.cursor = (first, t)
                z = self._sdeint(sde, z, torch.tensor([t, end], dtype=z.dtype, device=z.device))[-1]
            for t, h, _ in mine:
                z, terms = sde.step(z, t, h, j, k)
                fit, k = fit + terms, k + 1
            states.append(z)
        return torch.stack(states, 1), fit

    def posterior(self, times: torch.Tensor, values: torch.Tensor, until: float | None = None) -> dict:
        """One posterior path per series: the ELBO's terms per series and the path on the union grid. With `until`,
        only observations up to that time are seen and the control stops there (the prior continues)."""
        grid, on_grid, mask = union_grid(times, values)
        seen = mask if until is None else mask * (grid <= until)[None].to(mask.dtype)
        context = self.encode(grid, on_grid, seen)
        q0_mean, q0_log_std = self.q0(context[0][:, 0, :self.config.context]).chunk(2, -1)
        q0 = Normal(q0_mean, q0_log_std.exp())
        x0 = q0.rsample()
        z0 = torch.cat([x0, x0.new_zeros(len(x0), self.state_size() - self.config.latent)], 1)
        if self.config.posterior == "guided":
            sde = _SDE(self, context, grid, until, (on_grid, seen))
            zs, log_lik = self._solve_guided(sde, z0, grid)
        else:
            zs = self._solve(_SDE(self, context, grid, until), z0, grid)
        mean = self.decoder(zs[..., :self.config.latent])
        if self.config.posterior != "guided":
            log_lik = (Normal(mean, self.log_obs_noise.exp()).log_prob(on_grid).sum(-1) * seen).sum(-1)
        kl0 = kl_divergence(q0, Normal(self.p0_mean, self.p0_log_std.exp())).sum(-1)
        kl_path = zs[:, -1, -1]
        return {"grid": grid, "mean": mean, "mask": mask, "values": on_grid, "log_lik": log_lik, "kl0": kl0,
                "kl_path": kl_path, "elbo": log_lik - kl0 - kl_path, "observed": seen.sum(-1)}

    @torch.no_grad()
    def sample_prior(self, n: int, times: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """n paths from the prior at sorted `times` [U]: latent X [n, U, latent] and the decoded mean [n, U, obs]."""
        p0 = Normal(self.p0_mean, self.p0_log_std.exp())
        x0 = p0.mean + p0.stddev * torch.randn(n, self.config.latent, generator=generator, device="cpu").to(
            self.p0_mean.device)
        z0 = torch.cat([x0, x0.new_zeros(n, self.state_size() - self.config.latent)], 1)
        zs = self._solve(_SDE(self), z0, times, generator)
        x = zs[..., :self.config.latent]
        return {"latent": x, "mean": self.decoder(x)}


def objective(model: LatentSDE, times: torch.Tensor, values: torch.Tensor) -> dict[str, torch.Tensor]:
    """The negative ELBO per observed value (mean over series), with the ELBO's terms per series and H logged."""
    r = model.posterior(times, values)
    per_value = r["elbo"].sum() / r["observed"].sum().clamp_min(1)
    return {"loss": -per_value, "elbo": r["elbo"].mean(), "log_lik": r["log_lik"].mean(),
            "kl": (r["kl0"] + r["kl_path"]).mean(),
            "hurst": model.hurst().detach().float(), "sigma": model.sigma().mean().detach(),
            "obs_noise": model.log_obs_noise.exp().detach()}


def unpack(rows: torch.Tensor, steps: int, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [B, steps + steps * dims] (each series' times, then its values) as (times [B, T], values [B, T, D])."""
    return rows[:, :steps], rows[:, steps:].reshape(len(rows), steps, dims)


def trainer_loss(model: LatentSDE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss for `varilab.train.fit`, whose rows are series packed by `varilab.data.series`."""
    times, values = unpack(x, x.shape[1] // (1 + model.config.obs_dim), model.config.obs_dim)
    return objective(model, times, values)


@torch.no_grad()
def forecast(model: LatentSDE, times: torch.Tensor, values: torch.Tensor, split: float, draws: int = 16) -> dict:
    """Condition on the observations at times <= split, continue with the prior, and score the mean of `draws`
    paths on the observations after split: squared error per value (mean), the mean path and its spread."""
    b = len(times)
    rep = lambda v: v.repeat_interleave(draws, 0)  # noqa: E731
    r = model.posterior(rep(times), rep(values), until=split)
    mean = r["mean"].reshape(b, draws, *r["mean"].shape[1:])
    future = ((r["grid"] > split)[None] * r["mask"][::draws]).bool()
    err = (mean.mean(1) - r["values"][::draws]).pow(2).mean(-1)
    return {"grid": r["grid"], "mean": mean.mean(1), "std": mean.std(1), "future": future,
            "mse": float(err[future].mean()) if future.any() else float("nan")}

