"""Label-Agnostic Forgetting (LAF, Shen et al., 2024): unlearn part of a trained classifier's training data
without their labels, by moving its representations.

Stage 1 (done by the caller): two VAEs on the original representations phi0(x), V_r on the remaining rows D_r and
V_f on the rows to forget D_f. Then rounds of an epoch over D_f, each forget batch paired with a random remaining
batch of its size, and two steps on the pair that move only the extractor phi (the last linear layer stays fixed):
  2. L_UE: forgotten representations should look typical under V_r and atypical under V_f, while remaining ones keep
     their likelihood under V_r (`unlearning_loss`);
  3. L_RA: InfoNCE between phi(x_r) and phi0(x_r) of the same remaining sample, plus the forgotten rows' cosine to
     their own original representations, so that they leave them (`alignment_loss`).
Stage 4 (optional): cross-entropy on a few labelled remaining rows, the only labels LAF ever reads.

Every mini-batch is drawn by `split.batches` (kind "forgotten", "remaining" or "labelled"), so a record shows that
no forgotten row enters a step on the remaining data.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...core import elbo_terms
from ..robust.classifier import Classifier
from .infonce import info_nce
from .split import Split, batches


@dataclass
class LAFConfig:
    steps: int = 80  # steps of stage 2 (each followed by one of stage 3), in whole rounds over the forgotten rows
    epochs: int | None = None  # rounds instead (an epoch over the forgotten rows each); None: as many as `steps` needs
    lr: float = 1e-3  # Adam's learning rate for the extractor in stages 2 and 3
    batch_size: int = 128  # rows per step in every stage (a forget batch is paired with a remaining batch of its size)
    min_steps: int = 8  # at least this many steps a round: smaller forget batches where the forgotten rows are few
    temperature: float = 0.2  # InfoNCE's temperature tau in stage 3
    keep_weight: float = 10.0  # weight of L_UE's "keep" term (remaining representations keep their V_r likelihood)
    away_weight: float = 1.0  # weight of L_RA's term that moves forgotten representations off their originals
    repair_epochs: int = 5  # epochs of stage 4 (cross-entropy on the labelled rows) when labelled rows are given
    repair_lr: float = 1e-3  # Adam's learning rate for the whole classifier in stage 4
    elbo_samples: int = 1  # latent samples per ELBO in L_UE (more: a less noisy loss, more compute)

    def __post_init__(self):
        for name in ("steps", "batch_size", "elbo_samples", "min_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"LAFConfig.{name} must be at least 1, got {getattr(self, name)!r}")
        for name in ("epochs", "repair_epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"LAFConfig.{name} must be at least 0, got {getattr(self, name)!r}")
        for name in ("keep_weight", "away_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"LAFConfig.{name} must be at least 0, got {getattr(self, name)!r}")
        for name in ("lr", "repair_lr", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LAFConfig.{name} must be positive, got {getattr(self, name)!r}")


def _elbo(vae: nn.Module, h: torch.Tensor, samples: int = 1) -> torch.Tensor:
    """The VAE's per-row ELBO [B] of representations h [B, D]."""
    return elbo_terms(vae, h, k=samples)["elbo"]


def unlearning_loss(model: Classifier, phi0_h_r: torch.Tensor, x_f: torch.Tensor, x_r: torch.Tensor,
                    vae_r: nn.Module, vae_f: nn.Module, samples: int = 1,
                    keep_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """L_UE for a forget batch x_f and a remaining batch x_r whose original representations are phi0_h_r.

    Our reading of the paper's stage 2, in ELBOs per representation dimension d (ELBO_r under V_r, ELBO_f under V_f):
      forget = mean_f [relu(ELBO_f(h_f) - ELBO_r(h_f)) + relu(mean_r ELBO_r(phi0 h_r) - ELBO_r(h_f))] / d
      keep   = mean_r relu(ELBO_r(phi0 h_r) - ELBO_r(h_r)) / d,     loss = forget + keep_weight * keep.
    Each hinge stops at its goal: a forgotten row needs to be no likelier under V_r than a typical remaining one.
    Returns {"loss", "forget", "keep"}, scalars ("keep" unweighted).
    """
    h_f, h_r = model.represent(x_f), model.represent(x_r)
    d = h_f.shape[1]
    likely_r = _elbo(vae_r, h_f, samples)  # ELBO_r(h_f)
    with torch.no_grad():
        before = _elbo(vae_r, phi0_h_r, samples)
    forget = (F.relu((_elbo(vae_f, h_f, samples) - likely_r) / d)
              + F.relu((before.mean() - likely_r) / d)).mean()
    keep = F.relu((before - _elbo(vae_r, h_r, samples)) / d).mean()
    return {"loss": forget + keep_weight * keep, "forget": forget, "keep": keep}


def alignment_loss(model: Classifier, x_r: torch.Tensor, phi0_h_r: torch.Tensor, temperature: float = 0.2,
                   x_f: torch.Tensor | None = None, phi0_h_f: torch.Tensor | None = None,
                   away_weight: float = 1.0) -> torch.Tensor:
    """L_RA: InfoNCE between phi(x_r) and the original phi0(x_r) of the same rows (the batch's others are negatives),
    plus away_weight * mean_f cos(phi(x_f), phi0(x_f)) when forgotten rows x_f are given: their original
    representations are what the new ones move away from."""
    loss = info_nce(model.represent(x_r), phi0_h_r, temperature)
    if x_f is not None and away_weight:
        loss = loss + away_weight * F.cosine_similarity(model.represent(x_f), phi0_h_f, dim=1).mean()
    return loss


@contextmanager
def _frozen(*modules: nn.Module):
    """The modules in eval mode with no parameter requiring a gradient; their former state comes back after."""
    state = [(m, m.training, [(p, p.requires_grad) for p in m.parameters()]) for m in modules]
    for m in modules:
        m.eval().requires_grad_(False)
    try:
        yield
    finally:
        for m, training, params in state:
            m.train(training)
            for p, flag in params:
                p.requires_grad_(flag)


def _rng_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


def laf(model: Classifier, split: Split, vae_r: nn.Module, vae_f: nn.Module, config: LAFConfig | None = None, *,
        labelled: torch.Tensor | None = None, seed: int = 0,
        on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Unlearn `split.forget` from `model` in place by LAF; returns one dict of mean losses per epoch.

    Rounds of an epoch over the forgotten rows (batches of config.batch_size, or smaller so that a round has
    config.min_steps steps), each forget batch paired with a random remaining batch of the same size and a step of stage 2 (keys "ue", "forget", "keep") then one of stage 3 (key "ra") on the pair, one dict of
    mean losses per round with "stage": "unlearn"; then `config.repair_epochs` epochs of stage 4 (cross-entropy on the rows
    `labelled`, indices into split.x of remaining rows; key "ce"), one dict each with "stage": "repair". The labels
    split.y are read at the labelled rows only. With no row to forget, returns [] and leaves the model unchanged.
    The VAEs are frozen (eval mode, no gradient to their parameters) while LAF runs. `seed` fixes the batches and the
    ELBO's latent samples (the global generator is left as it was); `on_epoch` receives each dict as it is made.
    """
    config = config or LAFConfig()
    if len(split.forget) == 0:
        return []
    if len(split.remain) == 0:
        raise ValueError("LAF needs remaining rows (stage 2 pairs each forget batch with remaining ones); all rows "
                         "are to be forgotten")
    if labelled is not None:
        labelled = torch.as_tensor(labelled, dtype=torch.long).reshape(-1)
        if torch.isin(labelled, split.forget).any():
            raise ValueError("the labelled rows of stage 4 must be remaining rows; some are rows to forget")
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=_rng_devices(device)), _frozen(vae_r, vae_f):
        torch.manual_seed(seed)
        original = copy.deepcopy(model).eval().requires_grad_(False)  # phi0, computed a batch at a time

        def phi0(rows: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return original.represent(split.x[rows].to(device))

        history: list[dict] = []

        def report(m: dict) -> None:
            m["epoch"] = len(history)
            history.append(m)
            if on_epoch is not None:
                on_epoch(m)

        params = model.extractor_parameters()
        opt_ue, opt_ra = torch.optim.Adam(params, lr=config.lr), torch.optim.Adam(params, lr=config.lr)  # one a stage
        size = forget_batch(len(split.forget), config)
        model.train()
        for _ in range(rounds(len(split.forget), config)):
            sums = {"ue": 0.0, "forget": 0.0, "keep": 0.0, "ra": 0.0}
            steps = 0
            for b_f in batches(split, "forgotten", split.forget, size, gen):
                b_r = next(batches(split, "remaining", split.remain, len(b_f), gen))  # a random remaining batch
                x_f, x_r, h0_r = split.x[b_f].to(device), split.x[b_r].to(device), phi0(b_r)
                t = unlearning_loss(model, h0_r, x_f, x_r, vae_r, vae_f, config.elbo_samples, config.keep_weight)
                _step(opt_ue, t["loss"])
                ra = alignment_loss(model, x_r, h0_r, config.temperature, x_f, phi0(b_f), config.away_weight)
                _step(opt_ra, ra)
                for k in ("forget", "keep"):
                    sums[k] += t[k].item()
                sums["ue"] += t["loss"].item()
                sums["ra"] += ra.item()
                steps += 1
            report({"stage": "unlearn", **{k: v / steps for k, v in sums.items()}})
        if labelled is not None and len(labelled) and config.repair_epochs > 0:
            opt = torch.optim.Adam(model.parameters(), lr=config.repair_lr)
            for _ in range(config.repair_epochs):
                ce, steps = 0.0, 0
                for b in batches(split, "labelled", labelled, config.batch_size, gen):
                    ce += _step(opt, F.cross_entropy(model(split.x[b].to(device)), split.y[b].to(device).long()))
                    steps += 1
                report({"stage": "repair", "ce": ce / steps})
        model.zero_grad(set_to_none=True)
    model.eval()
    return history


def forget_batch(forgotten: int, config: LAFConfig) -> int:
    """Rows of a forget batch: config.batch_size, or fewer so that a round has config.min_steps steps."""
    return min(config.batch_size, -(-forgotten // config.min_steps))  # ceil(|D_f| / min_steps) at most


def rounds(forgotten: int, config: LAFConfig) -> int:
    """LAF's rounds over `forgotten` rows: config.epochs, or the fewest whole rounds that make config.steps steps."""
    if config.epochs is not None:
        return config.epochs
    per_round = -(-forgotten // forget_batch(forgotten, config))
    return max(1, -(-config.steps // per_round))  # ceil(steps / steps a round)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()
