"""Posterior-collapse diagnostics for any model with `encode(x) -> torch.distributions.Distribution`.

>>> import torch
>>> from varilab.diagnostics import MeanLogVar, diagnose
>>> enc = MeanLogVar(lambda x: (torch.cat([x[:, :2], 0 * x[:, 2:]], 1), torch.cat([-4 + 0 * x[:, :2], 0 * x[:, 2:]], 1)))
>>> d = diagnose(enc, torch.randn(500, 5, generator=torch.Generator().manual_seed(0)))
>>> d.active_units, d.active, d.passive
(2, [0, 1], [2, 3, 4])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .collapse import (Variables, active_units, activity, classify, correlation, kl_per_dim,
                       sampled_representation)
from .information import Information, aggregate_information
from .posterior import MeanLogVar, Posteriors, encode_dataset, standard_normal
from .relevance import ard_relevance, decoder_sensitivity, relevant_dims, traversals


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

    def verdict(self) -> str:
        d, n = self.posteriors.dim, self.active_units
        text = f"{n} of {d} latents are active; {d - n} {'has' if d - n == 1 else 'have'} collapsed to the prior"
        if self.mixed:
            text += f"; {len(self.mixed)} are mixed (active for some inputs only)"
        return text + f" (total KL {float(self.kl_per_dim.sum()):.2f} nats)."

    def to_dict(self) -> dict:
        """Plain lists and floats, for JSON."""
        v = self.variables
        out = {
            "latent_dim": self.posteriors.dim, "kl_per_dim": self.kl_per_dim.tolist(),
            "kl_total": float(self.kl_per_dim.sum()), "active_units": self.active_units,
            "activity": self.activity.tolist(), "threshold": self.threshold,
            "active": v.active, "passive": v.passive, "mixed": v.mixed, "share_active": v.share_active.tolist(),
            "mean_rep_var": v.mean_rep_var.tolist(), "sampled_rep_var": v.sampled_rep_var.tolist(),
            "mean_posterior_var": v.mean_posterior_var.tolist(), "verdict": self.verdict(),
        }
        if self.information is not None:
            out.update(mutual_information=self.information.mutual_information,
                       marginal_kl=self.information.marginal_kl, average_kl=self.information.average_kl)
        if self.relevance is not None:
            out["relevance"] = self.relevance.tolist()
            out["relevant_dims"] = relevant_dims(self.relevance)
        return out


def diagnose(model, x: torch.Tensor, threshold: float = 0.01, seed: int = 0, relevance_points: int = 256,
             information_points: int = 10_000, cond: torch.Tensor | None = None) -> Diagnosis:
    """All collapse diagnostics of `model` on data x [N, D], from one pass of the encoder.
    A conditional model gets its conditions `cond` [N, C]; its decoder relevance is then skipped."""
    if x.ndim != 2:
        raise ValueError(f"x must have shape [N, D], got {list(x.shape)}")
    if len(x) < 2:
        raise ValueError("diagnostics need at least 2 data points")
    post = encode_dataset(model, x, cond=cond)
    g = torch.Generator(device=post.mean.device).manual_seed(104_729 + seed)  # a stream unlike a data seed of 0
    n_active, a = active_units(post, threshold)
    info = aggregate_information(post, information_points, generator=g) if post.gaussian else None
    rel = ard_relevance(model, post, relevance_points) if hasattr(model, "decode") and cond is None else None
    return Diagnosis(kl_per_dim(post), a, n_active, threshold, classify(post), info, rel, post)


__all__ = ["Diagnosis", "Information", "MeanLogVar", "Posteriors", "Variables", "active_units", "activity",
           "aggregate_information", "ard_relevance", "classify", "correlation", "decoder_sensitivity", "diagnose",
           "encode_dataset", "kl_per_dim", "relevant_dims", "sampled_representation", "standard_normal", "traversals"]
