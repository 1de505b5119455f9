"""RECOMBINER (He et al., 2023) and its mean-field ancestor COMBINER (Guo et al., 2023): an image is coded as one
sample of a variational posterior over the weights of a small implicit neural representation (INR), sent by
relative entropy coding (`varilab.codec.rec`) at about KL bits, with no quantisation.

The INR maps a pixel's coordinates u in [-1, 1]^2 to its value: features [sin, cos of pi f u for F frequencies f
from 1 to the Nyquist rate; the image's latent grid interpolated at u], `layers` hidden layers of GELU units, one
linear output. Each image's latent h [D] holds the INR's parameters (in h-space) and its grid's values.
- recombiner (`linear=True`): w_l = A_l h_l per layer, A_l [P_l, P_l] shared by the data set and learned by
  gradient, so q(h) = N(mu, diag sigma^2) gives the weights the full covariance A_l diag(sigma_l^2) A_l^T.
- combiner (`linear=False`): w = scale * h, scale fixed at each layer's initialisation std: mean-field on w.
The prior p(h) = N(m, diag s^2) is learned by coordinate ascent: the posteriors (and A) follow the gradient of
D + lambda R (D the mean squared error per pixel, R = KL(q || p) in bits per pixel) for `em_every` steps, then
m = mean_i mu_i and s^2 = mean_i (sigma_i^2 + (mu_i - m)^2) (moment matching), and again.

Coding: the dimensions are cut into blocks of about kappa bits of the training posteriors' mean KL (saved with the
weights), each sent as one index among 2^kappa shared-seed prior samples; after each block the posterior of the
blocks still to send is fine-tuned with the sent ones fixed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from ...codec import rec
from ...codec.tables import quantise

LN2 = math.log(2.0)
BUDGET_RATE = 0.05  # step of the blocks' log lambda multipliers while fitting a posterior to code


@dataclass
class RecombinerConfig:
    image_shape: tuple[int, int] = (28, 28)
    images: int = 1  # training images, each with its own posterior
    linear: bool = True  # recombiner's w = A h; False: combiner's mean-field w
    grid_channels: int = 2  # channels of each image's latent grid (side: image side / 4); 0: none
    fourier: int = 8  # F: frequencies of the Fourier features
    units: int = 24  # units of each hidden layer
    layers: int = 2  # hidden layers
    kappa: int = 12  # bits per coded block: 2^kappa candidates
    em_every: int = 100  # optimizer steps between moment-matching updates of the prior
    em_rounds: int = 5  # rounds of coordinate ascent: the prior is matched after each but the last
    rate_weight: float = 0.01  # lambda of D + lambda R
    lr: float = 1e-2  # Adam's rate for the test posteriors (training: the trainer's)
    fit_steps: int = 500  # Adam steps fitting a new image's posterior
    finetune_steps: int = 5  # Adam steps on the blocks still to send, after each sent block
    init_log_sigma: float = -4.0  # training posteriors start at the prior mean with log sigma = this
    code_seed: int = 0  # the seed encoder and decoder share


class Recombiner(nn.Module):
    def __init__(self, config: RecombinerConfig):
        super().__init__()
        c = self.config = config
        if c.kappa < 1 or c.kappa > 16:
            raise ValueError(f"kappa must lie in 1..16 bits (2^kappa candidates per block), got {c.kappa}")
        h, w = c.image_shape
        self.grid_side = (max(2, math.ceil(h / 4)), max(2, math.ceil(w / 4)))
        sizes = [4 * c.fourier + c.grid_channels] + [c.units] * c.layers + [1]
        self.shapes = list(zip(sizes[:-1], sizes[1:]))  # (in, out) of each layer
        self.layer_sizes = [(i + 1) * o for i, o in self.shapes]  # W [in, out] then b [out]
        self.n_weights = sum(self.layer_sizes)
        self.n_grid = c.grid_channels * self.grid_side[0] * self.grid_side[1]
        dim = self.n_weights + self.n_grid
        scale = torch.cat([torch.cat([torch.full((i * o,), (2.0 / i) ** 0.5), torch.full((o,), 0.1)])
                           for i, o in self.shapes] + [torch.ones(self.n_grid)])
        self.register_buffer("scale", scale)  # each weight's initialisation std: h ~ N(0, 1) is a He init
        g = torch.Generator().manual_seed(c.code_seed)
        self.register_buffer("prior_mean", torch.randn(dim, generator=g))  # m: a random initialisation in h-space
        self.register_buffer("prior_log_std", torch.zeros(dim))  # log s
        # A_l = diag(scale_l) (I + B_l / P_l): B_l = 0 starts at combiner's w = scale * h, and one Adam step moves
        # each weight by about lr * scale whatever the layer's size
        self.B = nn.ParameterList([nn.Parameter(torch.zeros(p, p)) for p in self.layer_sizes]) if c.linear else None
        self.mu = nn.Parameter(self.prior_mean.repeat(c.images, 1))  # posteriors start at the prior mean
        self.log_sigma = nn.Parameter(torch.full((c.images, dim), c.init_log_sigma))
        self.register_buffer("kl_mean", torch.zeros(dim))  # mean KL per dimension (bits) of the training posteriors
        self.register_buffer("log_sigma_mean", torch.full((dim,), c.init_log_sigma))  # and their mean log sigma
        self.register_buffer("blocks", torch.zeros(dim, dtype=torch.int64))  # block index of each dimension
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("tables", torch.as_tensor(quantise(np.ones((1, 2 ** c.kappa), np.float32))))  # uniform

    @property
    def dim(self) -> int:
        return self.n_weights + self.n_grid

    def split_layers(self, v: torch.Tensor) -> list[torch.Tensor]:
        return list(v[..., :self.n_weights].split(self.layer_sizes, -1))

    def prior(self) -> Normal:
        return Normal(self.prior_mean, self.prior_log_std.exp())

    def A(self) -> list[torch.Tensor]:
        """The matrices A_l [P_l, P_l] of w_l = A_l h_l (combiner: diag(scale_l))."""
        scales = self.split_layers(self.scale)
        if self.B is None:
            return [torch.diag(s) for s in scales]
        return [s[:, None] * (torch.eye(len(s), device=s.device) + b / len(s)) for s, b in zip(scales, self.B)]

    def weights(self, h: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's parameters [B, P_l] of latents h [B, D]: A_l h_l (recombiner) or scale * h (combiner)."""
        if self.B is None:
            return self.split_layers(h * self.scale)
        return [hl @ a.T for hl, a in zip(self.split_layers(h), self.A())]  # w_l = A_l h_l

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """The INR's input at every pixel [B, H W, 4F + C]: Fourier features and the latent grid interpolated."""
        H, W = self.config.image_shape
        u = torch.stack(torch.meshgrid(torch.linspace(-1, 1, H, device=h.device),
                                       torch.linspace(-1, 1, W, device=h.device), indexing="ij"), -1)  # [H, W, 2]
        f = math.pi * torch.logspace(0, math.log10(max(H, W) / 2), self.config.fourier, device=h.device)
        angles = (u[..., None] * f).reshape(H * W, -1)  # pi f u for both axes
        feats = torch.cat([angles.sin(), angles.cos()], -1).expand(len(h), -1, -1)
        if not self.n_grid:
            return feats
        grid = h[:, self.n_weights:].reshape(len(h), self.config.grid_channels, *self.grid_side)
        at = nn.functional.grid_sample(grid, u.flip(-1).expand(len(h), H, W, 2), align_corners=True)  # [B, C, H, W]
        return torch.cat([feats, at.flatten(2).transpose(1, 2)], -1)

    def render(self, h: torch.Tensor) -> torch.Tensor:
        """The images [B, 1, H, W] the INRs of latents h [B, D] draw."""
        y = self.features(h)
        for i, (w, (n_in, n_out)) in enumerate(zip(self.weights(h), self.shapes)):
            y = torch.baddbmm(w[:, None, n_in * n_out:], y, w[:, :n_in * n_out].reshape(-1, n_in, n_out))
            y = nn.functional.gelu(y) if i < len(self.shapes) - 1 else y
        return y.transpose(1, 2).reshape(len(h), 1, *self.config.image_shape)

    def kl_bits(self, mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
        """KL(q || p) per dimension in bits [B, D]."""
        return kl_divergence(Normal(mu, log_sigma.exp()), self.prior()) / LN2

    def loss(self, x: torch.Tensor, mu: torch.Tensor, log_sigma: torch.Tensor, fixed=None, rate_scale=None) -> dict:
        """D + lambda R averaged over images, h ~ q by reparameterisation; `fixed` = (mask [B, D], values): those
        dimensions are already sent (no KL, their value used); `rate_scale` [B, D] multiplies each dimension's
        lambda (the encoder's block budgets)."""
        h = mu + log_sigma.exp() * torch.randn_like(mu)
        kl = self.kl_bits(mu, log_sigma)
        if fixed is not None:
            h, kl = torch.where(fixed[0], fixed[1], h), kl.masked_fill(fixed[0], 0.0)
        pixels = x.shape[-1] * x.shape[-2]
        mse = (self.render(h) - x).pow(2).flatten(1).mean(1)
        bpp = kl.sum(1) / pixels
        rate = bpp if rate_scale is None else (kl * rate_scale).sum(1) / pixels
        return {"loss": (mse + self.config.rate_weight * rate).mean(), "mse": mse.mean(), "bpp": bpp.mean(),
                "kl": kl}

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Counts steps; every `em_every` steps of the first `em_rounds` - 1 rounds sets the prior by moment matching
        over all training posteriors (the last round fits the posteriors to the final prior); then the blocks follow
        the posteriors' KL."""
        self.steps += 1
        k, every = int(self.steps), self.config.em_every
        if k % every == 0 and k // every < self.config.em_rounds:
            self.match_prior()
        self.update_blocks()

    @torch.no_grad()
    def match_prior(self) -> None:
        m = self.mu.mean(0)  # m = mean_i mu_i
        var = (self.log_sigma.exp().pow(2) + (self.mu - m).pow(2)).mean(0)  # s^2 = mean_i (sigma_i^2 + (mu_i - m)^2)
        self.prior_mean.copy_(m)
        self.prior_log_std.copy_(0.5 * var.clamp_min(1e-12).log())

    @torch.no_grad()
    def update_blocks(self) -> None:
        self.kl_mean.copy_(self.kl_bits(self.mu, self.log_sigma).mean(0))
        self.log_sigma_mean.copy_(self.log_sigma.mean(0))
        self.blocks.copy_(torch.as_tensor(rec.partition(self.kl_mean.double().cpu().numpy(), self.config.kappa)))

    def start(self, n: int) -> tuple[nn.Parameter, nn.Parameter]:
        """Posteriors of n new images: the prior mean, with the training posteriors' mean log sigma."""
        mu = nn.Parameter(self.prior_mean.detach().repeat(n, 1))
        return mu, nn.Parameter(self.log_sigma_mean.detach().repeat(n, 1))

    def coding_work(self, images: int, decoding: bool = False) -> int:
        """Units of work (`on_step` calls) of coding or decoding `images` images: Adam steps and blocks."""
        blocks = int(self.blocks.max()) + 1
        return blocks if decoding else self.config.fit_steps + self.config.finetune_steps * (blocks - 1) + blocks

    def _step_done(self) -> None:
        if getattr(self, "on_step", None) is not None:  # a progress bar's update, set by whoever codes
            self.on_step(1)

    def fit(self, x: torch.Tensor, steps: int | None = None, state=None, fixed=None) -> tuple:
        """Posteriors (mu, log sigma, log budget multipliers [B, blocks]) of images x [B, 1, H, W] by Adam on
        D + lambda R, the model frozen. Each block's lambda is scaled by its own multiplier, which rises while the
        block's KL exceeds kappa and falls while it is below (dual ascent on KL_b = kappa): the posterior spends
        what the blocks x kappa coded bits buy, no more and no less."""
        mu, log_sigma, log_mult = state or (*self.start(len(x)), torch.zeros(len(x), int(self.blocks.max()) + 1))
        opt = torch.optim.Adam([mu, log_sigma], lr=self.config.lr)
        blocks = self.blocks.to(x.device)
        for _ in range(self.config.fit_steps if steps is None else steps):
            opt.zero_grad(set_to_none=True)
            out = self.loss(x, mu, log_sigma, fixed, log_mult.exp().to(x.device)[:, blocks])
            out["loss"].backward()
            opt.step()
            with torch.no_grad():  # log mult_b += eta (KL_b / kappa - 1)
                kl_b = torch.zeros_like(log_mult).index_add_(1, blocks.cpu(), out["kl"].detach().cpu())
                log_mult.add_(BUDGET_RATE * (kl_b / self.config.kappa - 1)).clamp_(-10, 10)
            self._step_done()
        return mu, log_sigma, log_mult

    def _prior64(self) -> Normal:
        """The prior in float64 on the CPU, where the candidates are drawn."""
        return Normal(self.prior_mean.double().cpu(), self.prior_log_std.double().cpu().exp())

    def _block_values(self, prior: Normal, image: int, block: int, dims: torch.Tensor) -> torch.Tensor:
        """The 2^kappa candidates of one image's block [N, d] in h-space, float64 on the CPU: m + s eps."""
        eps = rec.candidates(rec.seed_of(self.config.code_seed, image, block), 2 ** self.config.kappa, len(dims))
        return prior.loc[dims] + prior.scale[dims] * eps

    def code(self, x: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, float]:
        """(indices [B, blocks], the sent latents [B, D], the fitted posteriors' KL in bits): fits each image's
        posterior, then sends block after block, fine-tuning the rest after each."""
        frozen = [p.requires_grad for p in self.parameters()]
        for p in self.parameters():
            p.requires_grad_(False)
        try:
            mu, log_sigma, log_mult = self.fit(x)
            kl = float(self.kl_bits(mu, log_sigma).detach().sum())
            blocks = self.blocks.cpu()
            values = torch.zeros(len(x), self.dim, dtype=torch.float64)
            sent = torch.zeros(len(x), self.dim, dtype=torch.bool)
            picks = torch.zeros(len(x), int(blocks.max()) + 1, dtype=torch.int64)
            g, prior = torch.Generator().manual_seed(seed), self._prior64()
            for b in range(picks.shape[1]):
                dims = (blocks == b).nonzero()[:, 0]
                m, s = mu.detach().double().cpu()[:, dims], log_sigma.detach().double().cpu().exp()[:, dims]
                p = Normal(prior.loc[dims], prior.scale[dims])
                for i in range(len(x)):
                    cand = self._block_values(prior, i, b, dims)  # [N, d]
                    log_w = (Normal(m[i], s[i]).log_prob(cand) - p.log_prob(cand)).sum(-1)  # log q/p per candidate
                    picks[i, b] = rec.choose(log_w, g)
                    values[i, dims] = cand[picks[i, b]]
                sent[:, dims] = True
                self._step_done()
                if self.config.finetune_steps and b < picks.shape[1] - 1:
                    fixed = (sent.to(x.device), values.to(x.device, x.dtype))
                    mu, log_sigma, log_mult = self.fit(x, self.config.finetune_steps, (mu, log_sigma, log_mult), fixed)
            return picks, values.to(x.dtype), kl
        finally:
            for p, r in zip(self.parameters(), frozen):
                p.requires_grad_(r)

    @torch.no_grad()
    def latents_of(self, picks: torch.Tensor) -> torch.Tensor:
        """The sent latents [B, D] of indices [B, blocks], from the shared seed alone."""
        blocks, prior = self.blocks.cpu(), self._prior64()
        values = torch.zeros(len(picks), self.dim, dtype=torch.float64)
        for b in range(picks.shape[1]):
            dims = (blocks == b).nonzero()[:, 0]
            for i in range(len(picks)):
                values[i, dims] = self._block_values(prior, i, b, dims)[picks[i, b]]
            self._step_done()
        return values.to(self.prior_mean.dtype)

    # the codec family's interface: symbol rows, their tables, and images back from them
    def symbols(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int], float]:
        """(one row of block indices [1, N blocks], [N, blocks], the posteriors' KL in bits: the model's estimate)."""
        with torch.enable_grad():
            picks, _, kl = self.code(x)
        return picks.reshape(1, -1).to(self.tables.device), list(picks.shape), kl

    def table_rows(self) -> torch.Tensor:
        return self.tables

    @torch.no_grad()
    def from_symbols(self, rows: torch.Tensor, grid: list[int]) -> torch.Tensor:
        h = self.latents_of(rows.reshape(grid).cpu()).to(self.prior_mean.device)
        return self.render(h).clamp(0, 1)


def trainer_loss(bound, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss for `varilab.train.fit`, whose rows are flattened images and whose condition ([B, 1]) holds each
    image's index among the training images. Test images (index -1) have no posterior: they are scored by the
    squared error of the prior mean's image, so they never get, or touch, a posterior in training."""
    model, index = bound.model, bound.cond[:, 0].long()
    x = x.reshape(len(x), 1, *model.config.image_shape)
    if (index < 0).all():
        mse = (model.render(model.prior_mean.expand(len(x), -1)) - x).pow(2).mean()
        return {"loss": mse, "mse": mse}
    if (index < 0).any():
        raise ValueError("a batch mixes training images and images without a posterior")
    out = model.loss(x, model.mu[index], model.log_sigma[index])
    out.pop("kl")  # per dimension: not a scalar to log
    return {**out, "psnr": -10 * torch.log10(out["mse"].detach().clamp_min(1e-12))}
