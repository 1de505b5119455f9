"""InfoNCE (van den Oord et al., 2018) between two views of a batch: each anchor's positive is the row of the same
index in the other view, and the other rows of the batch are its negatives; similarity is the cosine over a
temperature. LAF's stage 3 aligns a new representation with the original one of the same sample by it."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(anchors: torch.Tensor, positives: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """mean_i -log softmax_j(cos(a_i, p_j) / tau)[i] for anchors and positives [B, D]; a scalar.

    With identical positives and mutually orthogonal rows it is log(1 + (B - 1) e^{-1/tau}): below log B at every
    tau, 0 in the limit tau -> 0 and log B in the limit tau -> infinity."""
    if anchors.dim() != 2 or positives.dim() != 2 or anchors.shape != positives.shape:
        raise ValueError(f"info_nce needs anchors and positives of one shape [B, D], got {tuple(anchors.shape)} and "
                         f"{tuple(positives.shape)}")
    if len(anchors) == 0:
        raise ValueError("info_nce needs a batch of at least one row, got an empty one")
    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, got {temperature!r}")
    logits = F.normalize(anchors, dim=1) @ F.normalize(positives, dim=1).T / temperature  # s_ij = cos(a_i, p_j) / tau
    return F.cross_entropy(logits, torch.arange(len(anchors), device=anchors.device))  # mean_i -log softmax_j(s_ij)[i]
