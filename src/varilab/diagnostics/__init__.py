"""Posterior-collapse diagnostics for any model with `encode(x)` (or a function x -> posterior): a
torch.distributions posterior of any shape, a diagonal Gaussian duck type, or a mapping (see adapters.py).

>>> import torch
>>> from varilab.diagnostics import MeanLogVar, diagnose
>>> enc = MeanLogVar(lambda x: (torch.cat([x[:, :2], 0 * x[:, 2:]], 1), torch.cat([-4 + 0 * x[:, :2], 0 * x[:, 2:]], 1)))
>>> d = diagnose(enc, torch.randn(500, 5, generator=torch.Generator().manual_seed(0)))
>>> d.active_units, d.active, d.passive
(2, [0, 1], [2, 3, 4])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real

import torch

from .collapse import (Variables, active_units, activity, classify, correlation, kl_per_dim,
                       sampled_representation)
from .information import Information, aggregate_information
from .adapters import as_posterior
from .posterior import MeanLogVar, Posteriors, encode_dataset, standard_normal
from .relevance import ard_relevance, decoder_sensitivity, relevant_dims, traversals


OFF_PRIOR = 0.1  # nats: an inactive latent with at least this KL has not collapsed to the prior


@dataclass
class Diagnosis:
    kl_per_dim: torch.Tensor  # [d] nats
    activity: torch.Tensor  # [d] Cov_x(E_q[z_i|x])
    active_units: int
    threshold: float
    variables: Variables
    information: Information | None
    relevance: torch.Tensor | None  # [d] or None without a decoder
    posteriors: Posteriors

    @property
    def active(self) -> list[int]:
        return self.variables.active

    @property
    def passive(self) -> list[int]:
        return self.variables.passive

    @property
    def mixed(self) -> list[int]:
        return self.variables.mixed

    @property
    def off_prior(self) -> list[int]:
        """Inactive latents (activity at most the threshold) whose posterior still sits off the prior: they carry
        no information about x yet cost at least OFF_PRIOR nats of KL each (e.g. a constant mean, sigma 0.1)."""
        return [i for i in range(len(self.activity))
                if self.activity[i] <= self.threshold and self.kl_per_dim[i] >= OFF_PRIOR]

    RELATION = ("Two measures: an active unit (Burda et al.) is a latent whose posterior mean moves with x, "
                "Var_x E[z_i|x] above the threshold; a sharp, mixed or passive variable (Bonheme & Grzes's active, "
                "mixed, passive) is read from its posterior variance, narrow at most inputs, at some, or near the "
                "prior's: a latent can move its mean a little (an active unit) while its variance stays near 1 "
                "(passive).")

    def verdict(self) -> str:
        d, n, off = self.posteriors.dim, self.active_units, self.off_prior
        collapsed = d - n - len(off)

        def count(k, one, many):
            return f"{k} {one if k == 1 else many}"

        parts = [f"{n} of {d} latents {'is an active unit' if n == 1 else 'are active units'}"]
        if collapsed:
            parts.append(count(collapsed, "has", "have") + " collapsed to the prior")
        if off:
            wasted = float(self.kl_per_dim[off].sum())  # KL - I(x; z_i), with I ~ 0 for an inactive latent
            parts.append(count(len(off), "is", "are") + f" inactive but off the prior, spending {wasted:.2f} nats of "
                         "KL without carrying information")
        v = self.variables
        parts.append(f"by their posterior variance {len(v.active)} {'is' if len(v.active) == 1 else 'are'} sharp, "
                     f"{len(v.mixed)} mixed and {len(v.passive)} passive")
        return "; ".join(parts) + f" (total KL {float(self.kl_per_dim.sum()):.2f} nats)."

    def to_dict(self) -> dict:
        """Plain lists and floats, for JSON."""
        v = self.variables
        out = {
            "latent_dim": self.posteriors.dim, "kl_per_dim": self.kl_per_dim.tolist(),
            "kl_total": float(self.kl_per_dim.sum()), "active_units": self.active_units,
            "activity": self.activity.tolist(), "threshold": self.threshold,
            "sharp": v.active, "passive": v.passive, "mixed": v.mixed, "share_sharp": v.share_active.tolist(),
            "mean_rep_var": v.mean_rep_var.tolist(), "sampled_rep_var": v.sampled_rep_var.tolist(),
            "mean_posterior_var": v.mean_posterior_var.tolist(), "verdict": self.verdict(),
        }
        out["off_prior"] = self.off_prior
        shape = self.posteriors.shape
        if len(shape) > 1:  # a structured latent, e.g. [C, H, W]: KL per channel, and per position of each
            kl = self.kl_per_dim.reshape(shape)
            out.update(latent_shape=list(shape), kl_per_channel=kl.flatten(1).sum(1).tolist(),
                       kl_map=kl.sum(0).tolist())
        if self.information is not None:
            out.update(mutual_information=self.information.mutual_information,
                       marginal_kl=self.information.marginal_kl, average_kl=self.information.average_kl)
        if self.relevance is not None:
            out["relevance"] = self.relevance.tolist()
            out["relevant_dims"] = relevant_dims(self.relevance)
        return out


COUNTS = {"relevance_points": "the posterior means the decoder's relevance is measured on; default 256",
          "information_points": "the points the I(x; z) estimate uses; default 10000"}


def _refuse(name: str, expected: str, value, why: str):
    raise ValueError(f"diagnose: {name} must be {expected}, got {value!r} ({why})")


def _check_numbers(threshold, seed, **counts) -> None:
    """Each numeric argument checked before any work: one ValueError naming it, what it takes and what it got."""
    if isinstance(threshold, bool) or not isinstance(threshold, Real) or not math.isfinite(threshold) or threshold < 0:
        _refuse("threshold", "a finite number >= 0", threshold,
                "a latent is active when Cov_x(E_q[z_i|x]) exceeds it; default 0.01")
    if isinstance(seed, bool) or not isinstance(seed, Integral):
        _refuse("seed", "an integer", seed, "it seeds the draws of the I(x; z) estimate; default 0")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            _refuse(name, "an integer >= 1", value, COUNTS[name])


def diagnose(model, x: torch.Tensor, threshold: float = 0.01, seed: int = 0, relevance_points: int = 256,
             information_points: int = 10_000, cond: torch.Tensor | None = None) -> Diagnosis:
    """All collapse diagnostics of `model` on data x [N, ...], from one pass of the encoder (any posterior
    `adapters.as_posterior` accepts; a structured latent is reported per coordinate, per channel and per position).
    A conditional model gets its conditions `cond` [N, C]; its decoder relevance is then skipped."""
    if not torch.is_tensor(x) or x.ndim < 2:
        raise ValueError(f"x must be a tensor of shape [N, ...] (one row per data point), got "
                         f"{list(x.shape) if torch.is_tensor(x) else type(x).__name__}")
    if len(x) < 2:
        raise ValueError("diagnostics need at least 2 data points")
    _check_numbers(threshold=threshold, seed=seed, relevance_points=relevance_points,
                   information_points=information_points)
    post = encode_dataset(model, x, cond=cond)
    g = torch.Generator(device=post.mean.device).manual_seed(104_729 + seed)  # a stream unlike a data seed of 0
    n_active, a = active_units(post, threshold)
    info = aggregate_information(post, information_points, generator=g) if post.gaussian else None
    vector = len(post.shape) == 1  # the decoder takes the flat latent
    rel = ard_relevance(model, post, relevance_points) if hasattr(model, "decode") and cond is None and vector else None
    return Diagnosis(kl_per_dim(post), a, n_active, threshold, classify(post), info, rel, post)


__all__ = ["Diagnosis", "Information", "as_posterior", "MeanLogVar", "Posteriors", "Variables", "active_units", "activity",
           "aggregate_information", "ard_relevance", "classify", "correlation", "decoder_sensitivity", "diagnose",
           "encode_dataset", "kl_per_dim", "relevant_dims", "sampled_representation", "standard_normal", "traversals"]
