"""A convolutional image codec whose latent vectors are split into m groups, each quantised by its own codebook of K
codes (McQuic's multi-codebook probabilistic vector quantisation, without a context model), with the rate from
learned code frequencies.

For group g at each latent position, the code k is drawn from q(k | z) = softmax(-||z - c_k||^2 / tau_d) (the
distance logits), in training by the Gumbel-softmax relaxation with temperature tau (or straight-through, hard
forward and relaxed backward: `varilab.core.estimators`), at coding time by argmax. The code frequencies p_g =
softmax(pi_g) are the entropy model: rate R = E_q[-log2 p_g(k)] bits per vector, the cross-entropy of the codes
under it, which is what a range coder spends. Objective D + lambda R, D the mean squared error per pixel and R in bits
per pixel. With `stages` > 1 each stage quantises what the earlier ones left (residual quantisation).

Codebooks start from k-means on the first batch's latent vectors (`init_codebooks`), and codes unused for a while
are re-seeded with latent vectors of the current batch (`reseed_dead`); usage is tracked as an exponential average.

With `quantiser` "ema" training picks the nearest code as coding does (no train/test mismatch), passes the
encoder's gradient straight through, adds a commitment loss ||z - sg(c_k)||^2 (`commitment`), and moves each code to
the exponential average of the vectors assigned to it (online k-means, `after_optimizer_step`); codes whose averaged
count falls below `restart_below` / K restart at the worst-served vectors, and the code frequencies are the averaged
counts. The rate is still -log2 p(k) of the picked codes, with the gradient of E_q[-log2 p(k)] for the encoder.
A usage penalty (`usage_gap`) is log2 K - H(the batch's soft usage) of each codebook beyond `usage_margin` bits, the
soft picks taken on each codebook's own scale (distances over the group's mean nearest-code distance).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import OneHotCategorical

from ...codec.tables import quantise
from ...core.estimators import draw

LN2 = 0.6931471805599453


@dataclass
class VQCodecConfig:
    channels: int = 1  # image channels
    latent: int = 64  # channels of a latent vector, split into `groups` equal parts
    groups: int = 4  # m: codebooks per stage
    codes: int = 64  # K: codes per codebook
    stages: int = 1  # residual quantisation stages
    hidden: int = 64
    downsample: int = 2  # stride-2 convolutions: latents on a grid 2^downsample times coarser than the image
    hard: bool = False  # straight-through (hard forward) instead of the relaxed Gumbel-softmax in training
    # "gumbel": codes drawn from q(k | z) in training (relaxed or straight-through), codebooks learned by gradient;
    # "ema": the nearest code in training as at coding time, the encoder's gradient passed straight through,
    # codebooks the exponential averages of their assigned vectors (k-means online) with restarts of unused codes
    quantiser: str = "ema"
    ema_decay: float = 0.99
    restart_below: float = 0.3  # ema: a code whose averaged count is under this share of a uniform 1/K restarts
    usage_margin: float = 0.5  # ema: bits of usage gap log2 K - H a codebook keeps before the usage penalty acts


def _encoder(c: VQCodecConfig) -> nn.Sequential:
    layers, width = [], c.channels
    for _ in range(c.downsample):
        layers += [nn.Conv2d(width, c.hidden, 4, 2, 1), nn.ReLU()]
        width = c.hidden
    return nn.Sequential(*layers, nn.Conv2d(width, c.latent, 3, 1, 1))


def _decoder(c: VQCodecConfig) -> nn.Sequential:
    layers = [nn.Conv2d(c.latent, c.hidden, 3, 1, 1), nn.ReLU()]
    for i in range(c.downsample):
        last = i == c.downsample - 1
        layers += [nn.ConvTranspose2d(c.hidden, c.channels if last else c.hidden, 4, 2, 1)]
        layers += [] if last else [nn.ReLU()]
    return nn.Sequential(*layers, nn.Sigmoid())


class VQCodec(nn.Module):
    def __init__(self, config: VQCodecConfig):
        super().__init__()
        c = self.config = config
        if c.latent % c.groups:
            raise ValueError(f"latent {c.latent} must split into {c.groups} equal groups")
        if c.codes < 2 or c.groups < 1 or c.stages < 1 or c.downsample < 1:
            raise ValueError(f"need K >= 2 codes, at least one group, stage and downsampling; got K = {c.codes}, "
                             f"m = {c.groups}, stages {c.stages}, downsample {c.downsample}")
        self.encoder, self.decoder = _encoder(c), _decoder(c)
        width = c.latent // c.groups
        self.codebooks = nn.Parameter(torch.randn(c.stages, c.groups, c.codes, width) * 0.1)  # c_k [S, m, K, D/m]
        self.prior_logits = nn.Parameter(torch.zeros(c.stages, c.groups, c.codes))  # pi: code frequencies
        self.log_sharpness = nn.Parameter(torch.zeros(()))  # 1 / tau_d of the distance logits
        self.register_buffer("usage", torch.full((c.stages, c.groups, c.codes), 1.0 / c.codes))
        # the entropy coder's integer tables [S, m, K], saved with the weights (`freeze_tables`)
        self.register_buffer("tables", torch.ones(c.stages, c.groups, c.codes, dtype=torch.int64))
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))  # by k-means (`init_codebooks`)
        if c.quantiser not in ("gumbel", "ema"):
            raise ValueError(f"unknown quantiser {c.quantiser!r}; choose gumbel or ema")
        if c.quantiser == "ema":  # sum_n 1[k_n = k] and sum_n 1[k_n = k] z_n, exponentially averaged [S, m, K(, D/m)]
            self.codebooks.requires_grad_(False)
            self.prior_logits.requires_grad_(False)  # log of the codes' averaged counts: their frequencies, learned
            self.register_buffer("ema_count", torch.ones(c.stages, c.groups, c.codes))
            self.register_buffer("ema_sum", self.codebooks.detach().clone())
        self.commitment = None  # mean ||z - sg(c_k)||^2 of the last training forward (ema), for the objective
        self.usage_gap = None  # and log2 K - the entropy of its codes' soft usage, for a usage penalty
        self._pending = []  # (stage, vectors, one-hot codes) of the last training forward, for `after_optimizer_step`

    def vectors(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's latent vectors of images [B, C, H, W], grouped: [B, h, w, m, D/m]."""
        z = self.encoder(x).permute(0, 2, 3, 1)
        return z.reshape(*z.shape[:3], self.config.groups, -1)

    def distances(self, z: torch.Tensor, stage: int) -> torch.Tensor:
        """||z - c_k||^2 to each code of the stage's codebooks, [..., m, K]."""
        c = self.codebooks[stage]  # ||z||^2 - 2 z.c + ||c||^2 without the [..., m, K, D/m] differences
        d2 = z.pow(2).sum(-1, keepdim=True) - 2 * torch.einsum("...gd,gkd->...gk", z, c) + c.pow(2).sum(-1)
        return d2.clamp_min(0)

    def logits(self, z: torch.Tensor, stage: int) -> torch.Tensor:
        """log q(k | z) up to a constant: -||z - c_k||^2 * sharpness, [..., m, K]."""
        return -self.distances(z, stage) * self.log_sharpness.exp()

    def quantise(self, z: torch.Tensor, tau: float | None = None):
        """(quantised vectors like z, codes [S, ..., m] or one-hot samples [S, ..., m, K], rate in bits per vector
        summed over groups and stages [...]). tau None: argmax codes (coding); else Gumbel-softmax samples."""
        if self.config.quantiser == "ema" and tau is not None:
            return self._quantise_ema(z)
        out, rest, picks, rate = torch.zeros_like(z), z, [], z.new_zeros(z.shape[:-2])
        for s in range(self.config.stages):
            logits = self.logits(rest, s)
            log_p = torch.log_softmax(self.prior_logits[s], -1)  # log p_g(k)
            if tau is None:
                k = logits.argmax(-1)
                onehot = nn.functional.one_hot(k, self.config.codes).to(z.dtype)
                picks.append(k)
                rate = rate - (onehot * log_p).sum((-1, -2)) / LN2  # -log2 p(k), what the coder spends
            else:
                q = OneHotCategorical(logits=logits, validate_args=False)
                onehot, _ = draw(q, "straight-through" if self.config.hard else "gumbel", temperature=tau)
                picks.append(onehot)
                rate = rate - (q.probs * log_p).sum((-1, -2)) / LN2  # E_q[-log2 p(k)]: the cross-entropy
            chosen = torch.einsum("...gk,gkd->...gd", onehot, self.codebooks[s])  # the picked codes [..., m, D/m]
            out, rest = out + chosen, rest - chosen
            if self.training:
                with torch.no_grad():  # exponential average of how often each code is picked
                    freq = onehot.detach().reshape(-1, self.config.groups, self.config.codes).mean(0)
                    self.usage[s].mul_(0.99).add_(0.01 * freq)
        return out, picks, rate

    def _quantise_ema(self, z: torch.Tensor):
        """Training forward of the "ema" quantiser: the nearest code (what coding picks), the encoder's gradient
        straight through; the rate is -log2 p(k) of the picked codes, what the coder spends, with the gradient of
        the cross-entropy under q(k | z) = softmax(logits) added for the encoder (zero in value)."""
        codes, rest, picks, rate, commit, spread = torch.zeros_like(z), z, [], z.new_zeros(z.shape[:-2]), 0.0, 0.0
        self._pending = []
        for s in range(self.config.stages):
            d2 = self.distances(rest, s)
            logits = -d2 * self.log_sharpness.exp()
            log_p = torch.log_softmax(self.prior_logits[s], -1)
            k = logits.argmax(-1)
            onehot = nn.functional.one_hot(k, self.config.codes).to(z.dtype)
            hard = -(onehot * log_p).sum((-1, -2)) / LN2
            q = torch.softmax(logits, -1)
            soft = -(q * log_p.detach()).sum((-1, -2)) / LN2
            t = d2.detach().min(-1).values.reshape(-1, self.config.groups).mean(0)  # each group's mean error [m]
            q_z = torch.softmax(-d2 / t.clamp_min(1e-12)[:, None], -1)  # soft picks on each codebook's own scale
            mean_q = q_z.reshape(-1, *q_z.shape[-2:]).mean(0)  # the batch's soft usage of each code [m, K]
            gap = (mean_q * mean_q.clamp_min(1e-12).log2()).sum(-1) + math.log2(self.config.codes)  # per codebook [m]
            spread = spread + (gap - self.config.usage_margin).clamp_min(0).mean()  # only the gap beyond the margin
            rate = rate + hard + (soft - soft.detach())
            picks.append(onehot)
            c = self.codebooks[s, torch.arange(self.config.groups, device=k.device), k].detach()  # [..., m, D/m]
            commit = commit + (rest - c).pow(2).mean()
            self._pending.append((s, rest.detach().reshape(-1, *rest.shape[-2:]),
                                  onehot.reshape(-1, *onehot.shape[-2:])))
            codes, rest = codes + c, rest - c
            with torch.no_grad():
                self.usage[s].mul_(0.99).add_(0.01 * onehot.reshape(-1, *onehot.shape[-2:]).mean(0))
        self.commitment = commit
        self.usage_gap = spread / self.config.stages  # max(0, log2 K - H(batch usage) - margin) in bits, mean of m
        return z + (codes - z).detach(), picks, rate  # forward the codes' sum, backward the identity

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """The "ema" quantiser's codebook update from the last training batch: counts and sums averaged with
        `ema_decay`, c_k = sum / count (Laplace-smoothed counts); a code whose average count falls below
        `restart_below` of a uniform share restarts at the batch vector served worst (farthest from its code). The
        code frequencies p = softmax(pi) are the averaged counts: pi = log count."""
        if self.config.quantiser != "ema" or not self._pending:
            return
        decay, K = self.config.ema_decay, self.config.codes
        for s, v, onehot in self._pending:  # v [N, m, D/m], onehot [N, m, K]
            self.ema_count[s].mul_(decay).add_((1 - decay) * onehot.sum(0))
            self.ema_sum[s].mul_(decay).add_((1 - decay) * torch.einsum("ngk,ngd->gkd", onehot, v))
            n = self.ema_count[s].sum(-1, keepdim=True)
            count = (self.ema_count[s] + 1e-5) / (n + K * 1e-5) * n
            self.codebooks[s] = self.ema_sum[s] / count[..., None]
            dead = self.ema_count[s] < n / K * self.config.restart_below
            if dead.any():
                err = (v - torch.einsum("ngk,gkd->ngd", onehot, self.codebooks[s])).pow(2).sum(-1)  # [N, m]
                for g in dead.any(-1).nonzero().flatten().tolist():
                    ks = dead[g].nonzero().flatten()
                    far = err[:, g].topk(min(len(ks), len(v))).indices
                    ks = ks[:len(far)]
                    self.codebooks[s, g, ks] = v[far, g]
                    self.ema_count[s, g, ks] = n[g, 0] / K
                    self.ema_sum[s, g, ks] = v[far, g] * (n[g, 0] / K)
            self.prior_logits[s] = self.ema_count[s].clamp_min(1e-3).log()
        self._pending = []

    def decode_vectors(self, zq: torch.Tensor) -> torch.Tensor:
        return self.decoder(zq.reshape(*zq.shape[:3], -1).permute(0, 3, 1, 2))

    def forward(self, x: torch.Tensor, tau: float | None = None):
        """(reconstruction, rate in bits per pixel [B])."""
        zq, _, rate = self.quantise(self.vectors(x), tau)
        pixels = x.shape[-1] * x.shape[-2]
        return self.decode_vectors(zq), rate.sum((1, 2)) / pixels

    @torch.no_grad()
    def init_codebooks(self, x: torch.Tensor, iters: int = 10, generator: torch.Generator | None = None) -> None:
        """k-means (k-means++ seeding, `iters` Lloyd steps) of each group's latent vectors of x, stage by stage on
        the residuals."""
        rest = self.vectors(x).reshape(-1, self.config.groups, self.config.latent // self.config.groups)
        for s in range(self.config.stages):
            for g in range(self.config.groups):
                self.codebooks[s, g] = kmeans(rest[:, g], self.config.codes, iters, generator)
            k = self.logits(rest, s).argmax(-1)
            if self.config.quantiser == "ema":  # the averages start at the k-means clusters' counts and sums
                onehot = nn.functional.one_hot(k, self.config.codes).to(rest.dtype)
                self.ema_count[s] = onehot.sum(0) + 1e-3
                self.ema_sum[s] = self.codebooks[s] * self.ema_count[s][..., None]
                self.prior_logits[s] = self.ema_count[s].log()
            rest = rest - self.codebooks[s, torch.arange(self.config.groups), k]
        self.initialised.fill_(True)

    @torch.no_grad()
    def reseed_dead(self, x: torch.Tensor, below: float = 0.1, generator: torch.Generator | None = None) -> int:
        """Codes used less than `below` / K of the time (exponential average) take random latent vectors of x.
        Returns how many were re-seeded."""
        z = self.vectors(x).reshape(-1, self.config.groups, self.config.latent // self.config.groups)
        dead = self.usage < below / self.config.codes
        for s, g, k in dead.nonzero().tolist():
            self.codebooks[s, g, k] = z[torch.randint(len(z), (1,), generator=generator).item(), g]
            self.usage[s, g, k] = 1.0 / self.config.codes
        return int(dead.sum())

    @torch.no_grad()
    def freeze_tables(self) -> None:
        """The integer tables of the code frequencies softmax(pi), computed once in float64 (`varilab.codec.tables`
        rule), kept in the `tables` buffer so they are saved with the weights: coding never recomputes them."""
        p = torch.softmax(self.prior_logits.detach().double(), -1).cpu().numpy()
        self.tables.copy_(torch.as_tensor(quantise(p), device=self.tables.device))

    # the codec family's interface: symbol rows, their tables, and images back from them
    @torch.no_grad()
    def symbols(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int], float]:
        """(rows [S m, N h w] of code indices, the latent grid [N, h, w], the model's estimate of the bits)."""
        _, codes, rate = self.quantise(self.vectors(x))
        k = torch.stack(codes)  # [S, N, h, w, m]
        return k.permute(0, 4, 1, 2, 3).reshape(self.config.stages * self.config.groups, -1), list(k.shape[1:4]), \
            float(rate.sum())

    def table_rows(self) -> torch.Tensor:
        return self.tables.reshape(-1, self.config.codes)

    @torch.no_grad()
    def from_symbols(self, rows: torch.Tensor, grid: list[int]) -> torch.Tensor:
        s, g = self.config.stages, self.config.groups
        k = rows.reshape(s, g, *grid).permute(0, 2, 3, 4, 1)  # [S, N, h, w, m]
        zq = sum(self.codebooks[i, torch.arange(g, device=k.device), k[i]] for i in range(s))
        return self.decode_vectors(zq)

    def perplexity(self) -> torch.Tensor:
        """exp(entropy) of each codebook's usage [S, m]: K when every code is used equally, 1 when one code is."""
        p = self.usage / self.usage.sum(-1, keepdim=True)
        return torch.exp(-(p * p.clamp_min(1e-12).log()).sum(-1))


def kmeans(v: torch.Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """k centres of the rows of v [N, D] by k-means++ seeding and Lloyd steps (an empty cluster keeps its centre)."""
    if len(v) < k:
        raise ValueError(f"k-means needs at least k = {k} vectors, got {len(v)}")
    centres = [v[torch.randint(len(v), (1,), generator=generator).item()]]
    d2 = (v - centres[0]).pow(2).sum(-1)
    for _ in range(k - 1):  # the next centre with probability proportional to the squared distance to the nearest
        i = torch.multinomial(d2 / d2.sum() if d2.sum() > 0 else torch.ones_like(d2), 1, generator=generator).item()
        centres.append(v[i])
        d2 = torch.minimum(d2, (v - v[i]).pow(2).sum(-1))
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(v, c).argmin(-1)
        sums = torch.zeros_like(c).index_add_(0, assign, v)
        counts = torch.bincount(assign, minlength=k).to(v.dtype)[:, None]
        c = torch.where(counts > 0, sums / counts.clamp_min(1), c)
    return c
