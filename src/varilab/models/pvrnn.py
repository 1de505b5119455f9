"""PV-RNN (Ahmadi & Tani, 2019): a variational multiple-timescale RNN whose posterior comes from free adaptive
vectors, one per training sequence, time step and latent unit, instead of from an encoder. Data reach the latents
only through the prediction error's gradient.

Per layer l (the top layer first at every step, so each layer reads the one above at the same step):

    h_t = (1 - 1/tau) h_{t-1} + (1/tau) (W_dd d_{t-1} + W_dz z_t + W_up d_t^{l+1} + b),   d_t = tanh(h_t)
    p(z_t | d_{t-1}) = N(tanh(W_mu d_{t-1}), exp(W_sig d_{t-1})^2),  N(0, I) at t = 1
    q(z_t)           = N(tanh(A_mu[n, t]), exp(A_sig[n, t])^2)
    x_hat_t = tanh(W_x d_t^1 + b_x)

    loss = sum_t ||x_t - x_hat_t||^2 + sum_l w_l sum_{t > 1} KL_t^l / dim(z^l) + w_1 sum_l KL_1^l / dim(z^l)

The meta-prior w weighs the KL; conventions of public PV-RNN code are options of the config: biases of the
deterministic units drawn with a large variance and kept fixed (`bias_variance`), a share of each layer's units
twice as slow (`slow_share`), the squared error divided by the output's dimension (`recon="per-dim"`), and the
adaptive vectors set to the prior's trajectory before training (`posterior_from_prior`). `error_regression`
re-fits fresh adaptive vectors on a sliding window of a new sequence with the weights frozen, then predicts ahead
from the prior.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PVRNNConfig:
    x_dim: int
    sequences: int  # training sequences: one set of adaptive vectors each
    length: int  # time steps of a training sequence
    d: tuple[int, ...] = (20, 8)  # deterministic units per layer, the bottom (output) layer first
    z: tuple[int, ...] = (2, 1)  # latent units per layer
    tau: tuple[float, ...] = (2.0, 8.0)  # time constant per layer
    w: tuple[float, ...] = (0.01, 0.01)  # meta-prior per layer
    w1: float = 1.0  # the weight of the t = 1 KL (against N(0, I))
    bias_variance: float = 0.0  # > 0: the deterministic units' biases b ~ N(0, bias_variance), fixed; 0: trained
    slow_share: float = 0.0  # share of each layer's units (the last ones) with time constant 2 tau
    recon: str = "sum"  # "sum": sum_t ||x_t - x_hat_t||^2; "per-dim": divided by dim(x)


RECON = ("sum", "per-dim")


def kl_normal(mu_q, log_sigma_q, mu_p, log_sigma_p) -> torch.Tensor:
    """KL(N(mu_q, sigma_q^2) || N(mu_p, sigma_p^2)) per unit, from log standard deviations."""
    # ln(sigma_p / sigma_q) + (sigma_q^2 + (mu_q - mu_p)^2) / (2 sigma_p^2) - 1/2
    return (log_sigma_p - log_sigma_q + 0.5 * ((2 * log_sigma_q).exp() + (mu_q - mu_p) ** 2) * (-2 * log_sigma_p).exp()
            - 0.5)


class MTRNNCell(nn.Module):
    """One multiple-timescale layer: h_t = (1 - 1/tau) h_{t-1} + (1/tau)(W_dd d_{t-1} + W_dz z_t + W_up d_up + b)."""

    def __init__(self, d: int, z: int, up: int, tau: float, slow_share: float = 0.0, bias_variance: float = 0.0):
        super().__init__()
        if tau < 1:
            raise ValueError(f"a time constant must be at least 1, got {tau}")
        if not 0 <= slow_share <= 1 or bias_variance < 0:
            raise ValueError(f"need 0 <= slow_share <= 1 and bias_variance >= 0, got {slow_share} and {bias_variance}")
        slow = round(d * slow_share)
        self.tau = float(tau)  # the fast units'; the last `slow` units have 2 tau
        self.register_buffer("inv_tau", torch.tensor([1 / tau] * (d - slow) + [1 / (2 * tau)] * slow), persistent=False)
        self.dd = nn.Linear(d, d)
        self.dz = nn.Linear(z, d, bias=False)
        self.up = nn.Linear(up, d, bias=False) if up else None
        if bias_variance > 0:  # rich autonomous dynamics: b ~ N(0, v), never trained
            with torch.no_grad():
                self.dd.bias.normal_(0.0, bias_variance ** 0.5)
            self.dd.bias.requires_grad_(False)

    def forward(self, h, d, z, d_up=None):
        u = F.linear(d, self.dd.weight, self.dd.bias) + F.linear(z, self.dz.weight)  # weights read directly: the
        if self.up is not None:                                                       # unrolled loop calls this often
            u = u + F.linear(d_up, self.up.weight)
        h = h + self.inv_tau * (u - h)  # (1 - 1/tau) h + u / tau, tau per unit
        return h, torch.tanh(h)


class PVRNN(nn.Module):
    def __init__(self, config: PVRNNConfig):
        super().__init__()
        c = config
        if not (len(c.d) == len(c.z) == len(c.tau) == len(c.w)):
            raise ValueError(f"d, z, tau and w need one entry per layer, got {len(c.d)}, {len(c.z)}, {len(c.tau)} and "
                             f"{len(c.w)}")
        if c.recon not in RECON:
            raise ValueError(f"recon must be one of {RECON}, got {c.recon!r}")
        self.config, self.layers = c, len(c.d)
        ups = [c.d[i + 1] if i + 1 < self.layers else 0 for i in range(self.layers)]
        self.cells = nn.ModuleList(MTRNNCell(d, z, up, tau, c.slow_share, c.bias_variance)
                                   for d, z, up, tau in zip(c.d, c.z, ups, c.tau))
        self.prior_mu = nn.ModuleList(nn.Linear(d, z) for d, z in zip(c.d, c.z))
        self.prior_log_sigma = nn.ModuleList(nn.Linear(d, z) for d, z in zip(c.d, c.z))
        self.out = nn.Linear(c.d[0], c.x_dim)
        self.a_mu = nn.ParameterList(nn.Parameter(torch.zeros(c.sequences, c.length, z)) for z in c.z)
        self.a_log_sigma = nn.ParameterList(nn.Parameter(torch.zeros(c.sequences, c.length, z)) for z in c.z)

    def prior(self, layer: int, d_prev: torch.Tensor | None, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log sigma) of p(z_t | d_{t-1}) of one layer; N(0, I) at t = 1 (d_prev None)."""
        if d_prev is None:
            zeros = torch.zeros(batch, self.config.z[layer], device=self.out.weight.device)
            return zeros, zeros
        mu, ls = self.prior_mu[layer], self.prior_log_sigma[layer]
        return torch.tanh(F.linear(d_prev, mu.weight, mu.bias)), F.linear(d_prev, ls.weight, ls.bias)

    def initial_state(self, batch: int) -> tuple:
        """(h, d, started): zero states of every layer before the first step."""
        device = self.out.weight.device
        return ([torch.zeros(batch, n, device=device) for n in self.config.d],
                [torch.zeros(batch, n, device=device) for n in self.config.d], False)

    def run(self, posterior=None, steps: int | None = None, batch: int | None = None, generator=None,
            state: tuple | None = None, sample: bool = True, sigma: bool = True) -> dict:
        """Unroll the network for `steps` steps from `state` (default: the start). `posterior(layer, t) -> (mu_pre,
        log_sigma)` [B, z] gives q (z_t drawn from it), else z_t comes from the prior; `sample=False` takes the mean
        instead of a draw. Returns x_hat [B, T, x_dim], kl [B, layers, T] (zeros without a posterior), with `sigma`
        sigma_p [B, layers, T] (the prior's mean standard deviation) and noise [B, layers, T] (the standard deviation
        that a draw from the prior adds to the units' input W_dz z, root mean square over the units: sigma_p's scale is
        traded against W_dz's, this is not), and the state after the last step."""
        device = self.out.weight.device
        h, d, started = self.initial_state(batch) if state is None else state
        h, d = list(h), list(d)
        xs, kls, sigmas, noises = [], [], [], []
        cells = list(self.cells)
        for t in range(steps):
            kl_t, sig_t, noise_t, new_d = [], [], [], [None] * self.layers
            for l in reversed(range(self.layers)):  # the top layer first
                mu_p, ls_p = self.prior(l, d[l] if started else None, batch)
                if posterior is not None:
                    mu_pre, ls_q = posterior(l, t)
                    mu_q = torch.tanh(mu_pre)
                    z = mu_q + ls_q.exp() * torch.randn_like(mu_q) if sample else mu_q
                    kl_t.append(kl_normal(mu_q, ls_q, mu_p, ls_p).sum(-1) / self.config.z[l])  # per latent unit
                else:
                    eps = torch.randn(mu_p.shape, generator=generator, device="cpu").to(device) if sample else 0.0
                    z = mu_p + ls_p.exp() * eps
                    kl_t.append(torch.zeros(batch, device=device))
                if sigma:
                    sig_t.append(ls_p.exp().mean(-1))
                    w_dz2 = cells[l].dz.weight ** 2  # [d, z]
                    noise_t.append(((2 * ls_p).exp() @ w_dz2.T).mean(-1).sqrt())  # sqrt(mean_i sum_j W_ij^2 s_j^2)
                up = new_d[l + 1] if l + 1 < self.layers else None
                h[l], new_d[l] = cells[l].forward(h[l], d[l], z, up)
            d, started = new_d, True
            xs.append(torch.tanh(F.linear(d[0], self.out.weight, self.out.bias)))
            kls.append(torch.stack(kl_t[::-1], 1))
            if sigma:
                sigmas.append(torch.stack(sig_t[::-1], 1))
                noises.append(torch.stack(noise_t[::-1], 1))
        out = {"x_hat": torch.stack(xs, 1), "kl": torch.stack(kls, 2), "state": (h, d, started)}
        return {**out, "sigma_p": torch.stack(sigmas, 2), "noise": torch.stack(noises, 2)} if sigma else out

    @torch.no_grad()
    def posterior_from_prior(self) -> None:
        """Set every training sequence's adaptive vectors to the prior along the network's run on the prior's means:
        A_mu_t = atanh(mu_p,t), A_sig_t = ln sigma_p,t, so that q = p at every step before training."""
        n, edge = self.config.sequences, 1 - 1e-6
        h, d, started = self.initial_state(n)
        for t in range(self.config.length):
            new_d = [None] * self.layers
            for l in reversed(range(self.layers)):  # the top layer first, as in run()
                mu, ls = self.prior(l, d[l] if started else None, n)
                self.a_mu[l][:, t], self.a_log_sigma[l][:, t] = torch.atanh(mu.clamp(-edge, edge)), ls
                h[l], new_d[l] = self.cells[l](h[l], d[l], mu, new_d[l + 1] if l + 1 < self.layers else None)
            d, started = new_d, True

    def adaptive(self, index: torch.Tensor):
        """The posterior of training sequences `index` from their adaptive vectors (gathered once, [B, T, z])."""
        mu, log_sigma = [a[index] for a in self.a_mu], [a[index] for a in self.a_log_sigma]
        return lambda l, t: (mu[l][:, t], log_sigma[l][:, t])

    def loss(self, x: torch.Tensor, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The PV-RNN loss of training sequences x [B, T, D] with their indices [B]: squared prediction error plus
        the meta-prior-weighted KL, per sequence averaged over the batch."""
        r = self.run(self.adaptive(index), steps=x.shape[1], batch=len(x), sigma=False)
        return objective(x, r, self.config)

    @torch.no_grad()
    def generate(self, n: int, length: int, generator: torch.Generator | None = None) -> dict:
        """n sequences of `length` steps from the prior (z_t ~ p(z_t | d_{t-1})): x_hat, sigma_p and noise."""
        r = self.run(None, steps=length, batch=n, generator=generator)
        return {"x": r["x_hat"], "sigma_p": r["sigma_p"], "noise": r["noise"]}


def objective(x: torch.Tensor, r: dict, config: PVRNNConfig) -> dict[str, torch.Tensor]:
    """sum_t ||x_t - x_hat_t||^2 (/ dim(x) with recon="per-dim") + sum_l w_l sum_{t>1} KL_t^l + w_1 sum_l KL_1^l
    (KLs already per latent unit); "squared_error" is sum_t ||x_t - x_hat_t||^2 under either normalisation."""
    error = (x - r["x_hat"]).pow(2).sum((1, 2))  # [B]
    recon = error / x.shape[2] if config.recon == "per-dim" else error
    kl = r["kl"]  # [B, layers, T]
    w = torch.tensor(config.w, device=kl.device)
    weighted = (w[None, :] * kl[:, :, 1:].sum(-1)).sum(-1) + config.w1 * kl[:, :, 0].sum(-1)
    return {"loss": (recon + weighted).mean(), "recon": recon.mean(), "squared_error": error.mean(),
            "kl": kl.sum((1, 2)).mean(),
            **{f"kl_layer{l + 1}": kl[:, l].sum(-1).mean() for l in range(kl.shape[1])}}


def error_regression(model: PVRNN, x: torch.Tensor, window: int = 20, iterations: int = 30, ahead: int = 10,
                     lr: float = 0.1, w: tuple[float, ...] | None = None, progress=None) -> dict:
    """Recognise and predict new sequences x [B, T, D] online, the weights frozen.

    At each step t, fresh adaptive vectors of the window [t - window + 1, t] (those of earlier steps kept as fitted)
    take `iterations` Adam steps on the window's squared prediction error plus w * KL (the model's meta-prior
    unless `w` is given), the network run from its state at the window's start; then the prediction of x_{t+1 ..
    t+ahead} follows the prior's means from the state at t. Returns "prediction" [B, T, ahead, D] (NaN past the
    end), "error" (the mean squared error of every prediction that has a target, per step ahead [ahead]) and the
    fitted "a_mu", "a_log_sigma" (per layer, [B, T, z])."""
    b, T, _ = x.shape
    cfg, device = model.config, model.out.weight.device
    weights = torch.tensor(cfg.w if w is None else w, device=device)
    norm = x.shape[2] if cfg.recon == "per-dim" else 1  # the training loss's normalisation of the error
    flags = [p.requires_grad for p in model.parameters()]  # restored afterwards
    model.requires_grad_(False)
    a_mu = [torch.zeros(b, T, z, device=device) for z in cfg.z]
    a_ls = [torch.zeros(b, T, z, device=device) for z in cfg.z]
    prediction = torch.full((b, T, ahead, x.shape[2]), float("nan"), device=device)
    start, state = 0, model.initial_state(b)
    try:
        for t in range(T):
            s = max(0, t - window + 1)
            while start < s:  # slide: advance the window's starting state by one fitted step
                step = model.run(lambda l, i: (a_mu[l][:, start], a_ls[l][:, start]), steps=1, batch=b, state=state,
                                 sample=False, sigma=False)
                state, start = _detached(step["state"]), start + 1
            params = [v[:, s:t + 1].clone().requires_grad_(True) for v in (*a_mu, *a_ls)]
            opt = torch.optim.Adam(params, lr=lr)
            n = len(cfg.z)
            for _ in range(iterations):
                r = model.run(lambda l, i: (params[l][:, i], params[n + l][:, i]), steps=t + 1 - s, batch=b, state=state,
                              sigma=False)
                kl = r["kl"]  # [B, layers, window]
                loss = ((x[:, s:t + 1] - r["x_hat"]).pow(2).sum((1, 2)) / norm
                        + (weights[None, :] * kl.sum(-1)).sum(-1)).sum()  # the window's error plus w KL
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                for l in range(n):
                    a_mu[l][:, s:t + 1], a_ls[l][:, s:t + 1] = params[l], params[n + l]
                fit = model.run(lambda l, i: (a_mu[l][:, s + i], a_ls[l][:, s + i]), steps=t + 1 - s, batch=b,
                                state=state, sample=False, sigma=False)
                prediction[:, t] = model.run(None, steps=ahead, batch=b, state=fit["state"], sample=False,
                                             sigma=False)["x_hat"]
            if progress is not None:
                progress(t)
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
    return {"prediction": prediction, "error": prediction_error(x, prediction), "a_mu": a_mu, "a_log_sigma": a_ls}


@torch.no_grad()
def free_prediction(model: PVRNN, x: torch.Tensor, ahead: int = 10) -> dict:
    """The baseline without error regression: the network runs on the prior's means from the start, never seeing
    x, and predicts x_{t+1 .. t+ahead} from its state at each t. Same outputs as `error_regression`."""
    b, T, _ = x.shape
    prediction = torch.full((b, T, ahead, x.shape[2]), float("nan"), device=x.device)
    state = model.initial_state(b)
    for t in range(T):
        state = model.run(None, steps=1, batch=b, state=state, sample=False, sigma=False)["state"]
        prediction[:, t] = model.run(None, steps=ahead, batch=b, state=state, sample=False, sigma=False)["x_hat"]
    return {"prediction": prediction, "error": prediction_error(x, prediction)}


def prediction_error(x: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predictions made at each t of x_{t+k}, k = 1 .. ahead, over every (sequence, t)
    whose target exists, per k [ahead] (summed over dimensions)."""
    T, ahead = x.shape[1], prediction.shape[2]
    errors = []
    for k in range(1, ahead + 1):
        if T - k <= 0:
            errors.append(torch.tensor(float("nan")))
            continue
        errors.append((prediction[:, :T - k, k - 1] - x[:, k:]).pow(2).sum(-1).mean())
    return torch.stack(errors)


def _detached(state):
    h, d, started = state
    return [v.detach() for v in h], [v.detach() for v in d], started


def trainer_loss(bound, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss for `varilab.train.fit`, whose rows are flattened sequences [B, T * D] and whose condition
    (`core.conditioning.Conditioned.cond`, [B, 1]) holds each sequence's index among the training sequences; an
    index of -1 marks a sequence without adaptive vectors (a test sequence), scored by the squared error of the
    network run on its prior's means (no KL), so test sequences never get, or touch, adaptive vectors."""
    model, index = bound.model, bound.cond[:, 0].long()
    x = x.reshape(len(x), model.config.length, model.config.x_dim)
    if (index < 0).all():
        r = model.run(None, steps=x.shape[1], batch=len(x), sample=False, sigma=False)
        recon = (x - r["x_hat"]).pow(2).sum((1, 2))
        return {"loss": recon.mean(), "recon": recon.mean()}
    if (index < 0).any():
        raise ValueError("a batch mixes training sequences and sequences without adaptive vectors")
    return model.loss(x, index)
