"""Sparse autoencoders on activations x [B, d] with F features (latents).

TopK: Gao et al. (2024), "Scaling and evaluating sparse autoencoders". BatchTopK: Bussmann et al. (2024).
ReLU + L1: Bricken et al. (2023), with the decoder-norm-weighted penalty of Conerly et al. (2024).
vSAE: "Analysis of Variational Sparse Autoencoders" (2025).

    pre = W_enc (x - b_dec) + b_enc,   z = sparsify(ReLU(pre)),   x_hat = W_dec z + b_dec

Layout: W_enc and W_dec are both stored [F, d]. Row j of W_dec is the decoder column d_j (the j-th
dictionary atom), so x_hat = sum_j z_j d_j + b_dec; the encoder starts as the decoder's transpose,
which in this layout is the same array.

Loss normalisation: each term is per token, summed over d (or over F for the KL and the L1), and
averaged over the batch: recon = mean_b ||x_b - x_hat_b||^2. This keeps the paper's recon + kappa KL
and recon + (1/32) aux in one unit; `input_norm` rescales x so that E||x||^2 = d (or 1), which fixes the
scale of these numbers (and the effective KL weight) across layers and models.

TopK trains through a sparse path: the encoder computes all pre-activations, but its backward
touches only the k chosen latents per token, and the decoder forward and backward read only the
chosen rows of W_dec.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..core.schedules import linear_warmup

KINDS = ("topk", "batchtopk", "relu", "vsae")
INPUT_NORMS = ("none", "d", "unit")  # E||x||^2 after scaling: unchanged, d (Anthropic's April update), 1 (dictionary_learning)


@dataclass
class SAEConfig:
    d: int  # activation width
    features: int = 3072  # F, the dictionary size
    k: int = 32  # active latents per token (TopK, vSAE), per token on average (BatchTopK)
    kind: str = "topk"  # "topk" | "batchtopk" | "relu" | "vsae"
    l1_coef: float = 5.0  # relu: lambda of lambda * sum_j |z_j| ||d_j||
    aux_k: int | None = None  # AuxK latents per token (topk, batchtopk); None: 2 * k
    aux_coef: float = 1 / 32  # alpha of recon + alpha * aux (Gao et al.)
    dead_window_tokens: int = 100_000  # a latent is dead when it has not fired in this many training tokens
    kl_coef: float = 1.0  # vsae: kappa, reached after the warm-up
    kl_warmup_steps: int | None = None  # vsae: kappa ramps linearly from 0 over this many steps (None: a tenth of total_steps)
    vsae_variance: str = "fixed"  # vsae: "fixed" (z = mu) or "learned" (z = mu + sigma * eps)
    vsae_encoder: str = "relu"  # vsae: mu = ReLU(pre) ("relu") or mu = pre, unconstrained ("linear")
    decoder_norm: str = "unit"  # "unit": columns kept at norm 1; "free": their norms train (as in "April update" SAEs)
    log_var_init: float = -2.0  # vsae "learned": initial log sigma^2 (the log-variance head starts constant)
    input_norm: str = "none"  # scale x by a constant fitted in `init_from_data`: "d" (E||x||^2 = d), "unit" (= 1) or "none"
    init_norm: float = 1.0  # norm of the decoder columns and encoder rows at initialisation (a unit-norm decoder
    # is back at norm 1 after the first step; the encoder keeps the scale it started from)
    grad_clip: float | None = None  # clip the global gradient norm to this before each step (None: no clipping)
    threshold_decay: float = 0.99  # batchtopk: EMA decay of the inference threshold
    total_steps: int | None = None  # vsae: the run's length in optimizer steps, for the kappa warm-up


def check_config(config: SAEConfig) -> None:
    if config.kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {config.kind!r}")
    if config.d < 1 or config.features < 1:
        raise ValueError(f"d and features must be positive, got d={config.d}, features={config.features}")
    if not 1 <= config.k <= config.features:
        raise ValueError(f"k must be in [1, features={config.features}], got {config.k}")
    if config.vsae_variance not in ("fixed", "learned"):
        raise ValueError(f"vsae_variance must be 'fixed' or 'learned', got {config.vsae_variance!r}")
    if config.vsae_encoder not in ("relu", "linear"):
        raise ValueError(f"vsae_encoder must be 'relu' or 'linear', got {config.vsae_encoder!r}")
    if config.decoder_norm not in ("unit", "free"):
        raise ValueError(f"decoder_norm must be 'unit' or 'free', got {config.decoder_norm!r}")
    if config.input_norm not in INPUT_NORMS:
        raise ValueError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {config.input_norm!r}")
    if not config.init_norm > 0 or (config.grad_clip is not None and not config.grad_clip > 0):
        raise ValueError(f"init_norm and grad_clip must be positive, got {config.init_norm} and {config.grad_clip}")
    if config.aux_k is not None and config.aux_k < 1:
        raise ValueError(f"aux_k must be a positive integer or None (2 * k), got {config.aux_k}")
    if config.kl_warmup_steps is not None and config.kl_warmup_steps < 0:
        raise ValueError(f"kl_warmup_steps must be a non-negative number of steps, got {config.kl_warmup_steps}")


@torch.no_grad()
def geometric_median(x: torch.Tensor, iters: int = 100, eps: float = 1e-8) -> torch.Tensor:
    """argmin_y sum_i ||x_i - y|| by Weiszfeld's iterations from the mean, [d] for x [N, d].

    y <- sum_i w_i x_i / sum_i w_i with w_i = 1 / max(||x_i - y||, eps).
    """
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must have shape [N, d] with N >= 1, got {list(x.shape)}")
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(eps)  # [N]
        y_next = (w[:, None] * x).sum(0) / w.sum()  # Weiszfeld: sum_i w_i x_i / sum_i w_i
        if torch.allclose(y_next, y, rtol=0.0, atol=eps):
            return y_next
        y = y_next
    return y


def kl_weight(step: int | None, warmup_steps: float | None, kappa: float) -> float:
    """kappa(t) = kappa * min(1, t / W): linear from 0 over the first W = `warmup_steps` steps; `kappa` itself
    when the step or W is unknown."""
    if step is None or warmup_steps is None:
        return kappa
    return linear_warmup(step, warmup_steps, 0.0, kappa)


def warmup_steps(config: SAEConfig, total_steps: int | None) -> float | None:
    """The vSAE's KL warm-up in steps: as configured, or a tenth of the run's steps."""
    if config.kl_warmup_steps is not None:
        return config.kl_warmup_steps
    return None if total_steps is None else 0.1 * total_steps


def _token_major(values: torch.Tensor, indices: torch.Tensor, features: int) -> torch.Tensor:
    """The codes as a sparse CSR matrix [B, F] with values[b, i] at (b, indices[b, i]); no copy of W needed."""
    b, k = indices.shape
    crow = torch.arange(0, b * k + 1, k, device=indices.device)
    with warnings.catch_warnings():  # "CSR support is in beta" (shown once per process otherwise)
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, indices.reshape(-1), values.reshape(-1), (b, features),
                                       check_invariants=False)


class _TopKEncoder(torch.autograd.Function):
    """values, indices of TopK(ReLU(W_enc (x - b_dec) + b_enc)), [B, k] each; the backward reaches only
    the chosen latents: dL/dW_enc[j] = sum_b g_bj (x_b - b_dec) over the tokens b that chose j."""

    @staticmethod
    def forward(ctx, x, b_dec, W_enc, b_enc, k):
        x_c = x - b_dec
        pre = torch.addmm(b_enc, x_c, W_enc.T)  # W_enc (x - b_dec) + b_enc, [B, F]
        values, indices = pre.topk(k, dim=-1, sorted=False)
        values = values.clamp_min(0.0).to(W_enc.dtype)  # TopK(ReLU(pre)) = ReLU(TopK(pre)): ReLU is monotone
        ctx.save_for_backward(x_c, W_enc, values, indices)
        ctx.mark_non_differentiable(indices)
        return values, indices

    @staticmethod
    def backward(ctx, grad_values, _grad_indices):
        x_c, W_enc, values, indices = ctx.saved_tensors
        g = (grad_values * (values > 0)).to(W_enc.dtype)  # through the ReLU, [B, k]
        features = W_enc.shape[0]
        need_x, need_b_dec, need_w, need_b = ctx.needs_input_grad[:4]
        grad_b_enc = torch.zeros(features, dtype=g.dtype, device=g.device).index_add_(0, indices.reshape(-1), g.reshape(-1))
        G = _token_major(g, indices, features)  # dL/dpre, sparse [B, F]
        grad_w = G.t() @ x_c if need_w else None  # [F, d], rows of unchosen latents stay 0
        grad_x = G @ W_enc if need_x else None  # W_enc^T g_b, [B, d]
        grad_b_dec = -(grad_b_enc @ W_enc) if need_b_dec else None  # -W_enc^T sum_b g_b
        return grad_x, grad_b_dec, grad_w, grad_b_enc if need_b else None, None


class _SparseDecoder(torch.autograd.Function):
    """sum_i values[b, i] * W_dec[indices[b, i]], [B, d]; forward and backward read only the chosen rows."""

    @staticmethod
    def forward(ctx, values, indices, W_dec):
        ctx.save_for_backward(values, indices, W_dec)
        return F.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")  # sum_j z_j d_j

    @staticmethod
    def backward(ctx, grad_out):
        values, indices, W_dec = ctx.saved_tensors
        Z = _token_major(values, indices, W_dec.shape[0])
        grad_w = Z.t() @ grad_out if ctx.needs_input_grad[2] else None  # dL/dd_j = sum_b z_bj g_b
        grad_values = None
        if ctx.needs_input_grad[0]:  # dL/dz_bj = <d_j, g_b> at the chosen (b, j) only
            grad_values = torch.sparse.sampled_addmm(Z, grad_out, W_dec.T, beta=0.0).values().view_as(values)
        return grad_values, None, grad_w


def topk_encode(x: torch.Tensor, b_dec: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices), [B, k] each, of TopK(ReLU(W_enc (x - b_dec) + b_enc)), with a sparse backward.
    Under autocast the dense matmul runs in the autocast dtype; values and gradients come back in W_enc's."""
    return _TopKEncoder.apply(x, b_dec, W_enc, b_enc, k)


def sparse_decode(values: torch.Tensor, indices: torch.Tensor, W_dec: torch.Tensor) -> torch.Tensor:
    """W_dec z for codes given as (values, indices) [B, k] and W_dec [F, d]: sum_i values_i d_{indices_i}, [B, d].
    Computed in W_dec's dtype (under autocast too: the gather and the sparse products are cheap)."""
    return _SparseDecoder.apply(values.to(W_dec.dtype), indices, W_dec)


def scatter_codes(values: torch.Tensor, indices: torch.Tensor, features: int) -> torch.Tensor:
    """Dense codes z [B, F] from (values, indices) [B, k]."""
    return values.new_zeros(len(values), features).scatter(1, indices, values)


class SAE(nn.Module):
    """A sparse autoencoder of kind "topk", "batchtopk", "relu" or "vsae" (see SAEConfig).

    `encode(x)` gives the sparse codes z [B, F], `decode(z)` the reconstruction, `forward(x)` both in
    turn (x_hat), `loss(x, step, total_steps)` the training objective. Call `init_from_data` on a sample
    before training (b_dec at the geometric median), and train with `train_step`.
    """

    optional_state = {"batches_since_fired": -1}  # absent from weights saved before it was kept: unknown

    def __init__(self, config: SAEConfig):
        super().__init__()
        check_config(config)
        self.config = config
        d, f = config.d, config.features
        W = torch.randn(f, d)
        W = config.init_norm * W / W.norm(dim=1, keepdim=True)  # decoder columns d_j of norm init_norm (1 by default)
        self.W_dec = nn.Parameter(W)  # [F, d]
        self.W_enc = nn.Parameter(W.clone())  # [F, d]: W_enc = W_dec^T at initialisation
        self.b_enc = nn.Parameter(torch.zeros(f))
        self.b_dec = nn.Parameter(torch.zeros(d))
        if config.kind == "vsae" and config.vsae_variance == "learned":
            self.W_logvar = nn.Parameter(torch.zeros(f, d))  # log sigma^2 = W_logvar (x - b_dec) + b_logvar
            self.b_logvar = nn.Parameter(torch.full((f,), float(config.log_var_init)))
        self.register_buffer("input_scale", torch.tensor(1.0))
        self.register_buffer("tokens_since_fired", torch.zeros(f, dtype=torch.long))
        self.register_buffer("batches_since_fired", torch.zeros(f, dtype=torch.long))  # sae-lens's count; -1: unknown
        self.register_buffer("threshold", torch.tensor(-1.0))  # batchtopk inference threshold; < 0: not yet set
        self.register_buffer("steps_done", torch.tensor(0, dtype=torch.long))  # optimizer steps so far (checkpointed)

    # ---- set-up -------------------------------------------------------------------------------
    @torch.no_grad()
    def init_from_data(self, x: torch.Tensor, iters: int = 100) -> None:
        """Fit the input scale s so that E||s x||^2 = d (input_norm "d") or 1 ("unit"), then b_dec = geometric median of s x."""
        x = _check_x(x, self.config.d)
        if self.config.input_norm != "none":
            target = self.config.d if self.config.input_norm == "d" else 1.0
            self.input_scale.fill_(float((target / x.pow(2).sum(1).mean()).sqrt()))  # s = sqrt(target / E||x||^2)
        self.b_dec.copy_(geometric_median(x * self.input_scale, iters))

    # ---- codes ---------------------------------------------------------------------------------
    def _pre(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x - self.b_dec, self.W_enc, self.b_enc)  # W_enc (x - b_dec) + b_enc, [B, F]

    def _batch_topk(self, a: torch.Tensor) -> torch.Tensor:
        """Keep the k * B largest entries of a [B, F] over the whole batch (BatchTopK)."""
        chosen = a.flatten().topk(self.config.k * len(a), sorted=False).indices
        mask = torch.zeros(a.numel(), dtype=torch.bool, device=a.device).index_fill_(0, chosen, True)
        return a * mask.view_as(a)

    def _vsae(self, x: torch.Tensor):
        """mu = ReLU(pre) (or pre), z (mu, or mu + sigma * eps while training with learned variance), KL per token [B]."""
        mu = self._pre(x)  # [B, F]
        if self.config.vsae_encoder == "relu":
            mu = torch.relu(mu)
        if self.config.vsae_variance == "fixed":
            return mu, mu, 0.5 * mu.pow(2).sum(-1)  # KL = 0.5 ||mu||^2
        log_var = F.linear(x - self.b_dec, self.W_logvar, self.b_logvar)
        z = mu + (0.5 * log_var).exp() * torch.randn_like(mu) if self.training else mu  # z = mu + sigma * eps
        kl = 0.5 * (mu.pow(2) + log_var.exp() - 1.0 - log_var).sum(-1)  # 0.5 sum_j mu^2 + sigma^2 - 1 - log sigma^2
        return mu, z, kl

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Sparse codes z [B, F] (BatchTopK in eval mode: ReLU(pre) above the threshold learned in training)."""
        c = self.config
        x = _check_x(x, c.d) * self.input_scale
        if c.kind == "topk":
            values, indices = topk_encode(x, self.b_dec, self.W_enc, self.b_enc, c.k)
            return scatter_codes(values, indices, c.features)
        if c.kind == "relu":
            return torch.relu(self._pre(x))
        if c.kind == "batchtopk":
            a = torch.relu(self._pre(x))
            if not self.training and self.threshold >= 0:
                return a * (a > self.threshold)
            return self._batch_topk(a)
        _, z, _ = self._vsae(x)
        indices = z.abs().topk(c.k, dim=-1, sorted=False).indices  # TopK on |z|
        return scatter_codes(z.gather(1, indices), indices, c.features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """x_hat = (W_dec z + b_dec) / s, [B, d], in the units of the input (s = 1 when input_norm is "none")."""
        return (z @ self.W_dec + self.b_dec) / self.input_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction x_hat = decode(encode(x)), [B, d]."""
        return self.decode(self.encode(x))

    # ---- dead latents ----------------------------------------------------------------------------
    def dead_latents(self) -> torch.Tensor:
        """Bool [F]: latents that have not fired in the last `dead_window_tokens` training tokens."""
        return self.tokens_since_fired >= self.config.dead_window_tokens

    def dead_latents_sae_lens(self, window_batches: int) -> torch.Tensor | None:
        """Bool [F], sae-lens's definition: more than `window_batches` training batches since the last batch in
        which the latent fired. None for weights saved before this count was kept."""
        if (self.batches_since_fired < 0).any():
            return None
        return self.batches_since_fired > window_batches

    @torch.no_grad()
    def _record_firing(self, last: torch.Tensor, n_tokens: int) -> None:
        """Token-exact, as `diagnostics.sae.Firing`: a latent whose last firing in this batch of B tokens was at
        position p has fired B - 1 - p tokens ago; one that did not fire adds B (last: long [F], -1 if silent).
        The batch count is sae-lens's: 0 where it fired in this batch, else +1 (left at -1 where unknown)."""
        self.tokens_since_fired.copy_(torch.where(last >= 0, n_tokens - 1 - last, self.tokens_since_fired + n_tokens))
        known = self.batches_since_fired >= 0
        self.batches_since_fired.copy_(torch.where(known, torch.where(last >= 0, 0, self.batches_since_fired + 1), -1))

    def _aux(self, x: torch.Tensor, e: torch.Tensor, dead: torch.Tensor) -> tuple[torch.Tensor, int]:
        """AuxK: (mean_b ||e_b - W_dec TopK_aux(ReLU(dead pre-activations))_b||^2 with e detached, the number
        of distinct dead latents it used in this batch)."""
        dead_ids = dead.nonzero().squeeze(1)
        if len(dead_ids) == 0 or self.config.aux_coef == 0:
            return e.new_zeros(()), 0
        k_aux = min(self.config.aux_k or 2 * self.config.k, len(dead_ids))
        values, idx = topk_encode(x, self.b_dec, self.W_enc[dead_ids], self.b_enc[dead_ids], k_aux)
        e_hat = sparse_decode(values, dead_ids[idx], self.W_dec)  # W_dec z_aux, no bias
        used = int(torch.unique(idx[values > 0]).numel())
        return (e.detach() - e_hat).pow(2).sum(-1).mean(), used  # target e = x - x_hat, detached

    # ---- objective -------------------------------------------------------------------------------
    def terms(self, x: torch.Tensor, step: int | None = None, total_steps: int | None = None) -> dict:
        """The differentiable loss terms (scalars, batch means) and the dead-latent count; updates
        `tokens_since_fired` in training mode. The objective is recon + aux_coef * aux (topk, batchtopk),
        recon + l1_coef * l1 (relu) or recon + kappa(t) * kl (vsae)."""
        c = self.config
        x = _check_x(x, c.d) * self.input_scale
        dead = self.dead_latents()  # as of the start of this batch
        out = {}
        if c.kind in ("topk", "vsae"):
            if c.kind == "topk":
                values, indices = topk_encode(x, self.b_dec, self.W_enc, self.b_enc, c.k)
            else:
                _, z, kl = self._vsae(x)
                indices = z.abs().topk(c.k, dim=-1, sorted=False).indices  # TopK on |z|; KL was over all F
                values = z.gather(1, indices)
                out["kl"], out["kappa"] = kl.mean(), kl_weight(step, warmup_steps(c, total_steps), c.kl_coef)
            x_hat = sparse_decode(values, indices, self.W_dec) + self.b_dec
            on = values != 0  # [B, k]
            position = torch.arange(len(x), device=x.device)[:, None].expand_as(indices)
            last = torch.full((c.features,), -1, dtype=torch.long, device=x.device)
            last.scatter_reduce_(0, indices[on], position[on], reduce="amax")  # [F] last firing in the batch
            out["l0"] = (values != 0).sum(-1).float().mean()
        else:
            a = torch.relu(self._pre(x))
            z = self._batch_topk(a) if c.kind == "batchtopk" else a
            x_hat = z @ self.W_dec + self.b_dec
            last = torch.where(z != 0, torch.arange(len(x), device=x.device)[:, None], -1).amax(0)  # [F]
            out["l0"] = (z != 0).sum(-1).float().mean()
            if c.kind == "relu":
                out["l1"] = (z * self.W_dec.norm(dim=1)).sum(-1).mean()  # sum_j |z_j| ||d_j||  (z >= 0)
            elif self.training:
                self._update_threshold(z)
        e = x - x_hat
        out["recon"] = e.pow(2).sum(-1).mean()  # mean_b ||x_b - x_hat_b||^2
        if c.kind in ("topk", "batchtopk"):
            out["aux"], out["aux_latents"] = self._aux(x, e, dead)
        out["dead"] = int(dead.sum())
        if self.training:
            self._record_firing(last, len(x))
        return out

    def loss(self, x: torch.Tensor, step: int | None = None, total_steps: int | None = None) -> dict:
        """{"loss": the scalar to minimise, plus detached "recon", "l0" and "aux" / "l1" / "kl" as the kind has,
        "kappa" (vsae), "dead" (latents dead before this batch) and "aux_latents" (topk, batchtopk: dead
        latents AuxK used in this batch)}."""
        step = int(self.steps_done) if step is None else step
        total_steps = self.config.total_steps if total_steps is None else total_steps
        t = self.terms(x, step, total_steps)
        c = self.config
        if c.kind == "relu":
            loss = t["recon"] + c.l1_coef * t["l1"]  # ||x - x_hat||^2 + lambda sum_j |z_j| ||d_j||
        elif c.kind == "vsae":
            loss = t["recon"] + t["kappa"] * t["kl"]  # ||x - x_hat||^2 + kappa(t) KL
        else:
            loss = t["recon"] + c.aux_coef * t["aux"]  # ||x - x_hat||^2 + alpha ||e - e_hat||^2
        return {"loss": loss, **{n: v.detach() if torch.is_tensor(v) else v for n, v in t.items()}}

    # ---- the trainer's hooks (varilab.train.fit) ---------------------------------------------------
    def before_optimizer_step(self) -> None:
        if self.config.decoder_norm == "unit":
            remove_parallel_grad(self)
        if self.config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.config.grad_clip)  # g <- g min(1, c / ||g||)

    def after_optimizer_step(self) -> None:
        if self.config.decoder_norm == "unit":
            normalize_decoder(self)
        self.steps_done += 1

    @torch.no_grad()
    def _update_threshold(self, z: torch.Tensor) -> None:
        """theta <- EMA of the smallest positive activation that BatchTopK kept in this batch."""
        kept = z[z > 0]
        if kept.numel() == 0:
            return
        smallest = kept.min()
        if self.threshold < 0:
            self.threshold.copy_(smallest)
        else:
            self.threshold.lerp_(smallest, 1.0 - self.config.threshold_decay)


def _check_x(x: torch.Tensor, d: int) -> torch.Tensor:
    if not torch.is_tensor(x) or x.ndim != 2 or x.shape[1] != d:
        shape = list(x.shape) if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"x must be a tensor of activations [B, d={d}], got {shape}")
    return x


@torch.no_grad()
def remove_parallel_grad(model: SAE) -> None:
    """Remove from each decoder column's gradient its component along the column:
    g_j <- g_j - (g_j . d_j) d_j / ||d_j||^2 (call between backward and the optimizer step)."""
    W, g = model.W_dec, model.W_dec.grad
    if g is None:
        return
    g.sub_((g * W).sum(1, keepdim=True) / W.pow(2).sum(1, keepdim=True) * W)


@torch.no_grad()
def normalize_decoder(model: SAE) -> None:
    """d_j <- d_j / ||d_j||: unit-norm decoder columns (call after each optimizer step)."""
    model.W_dec.div_(model.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12))


def train_step(model: SAE, optimizer: torch.optim.Optimizer, x: torch.Tensor, step: int | None = None,
               total_steps: int | None = None) -> dict:
    """One update: loss, backward, remove_parallel_grad (and gradient clipping), optimizer step, normalize_decoder.
    Returns `model.loss`'s dict."""
    optimizer.zero_grad(set_to_none=True)
    out = model.loss(x, step, total_steps)
    out["loss"].backward()
    model.before_optimizer_step()  # remove_parallel_grad, clip
    optimizer.step()
    model.after_optimizer_step()  # normalize_decoder, count the step
    return out
