"""Modality dropout: which input modalities a forward pass sees. Each of m modalities is kept with probability
1 - p_mask independently, and a draw that keeps none is drawn again, so a subset S is seen with the renormalised
Bernoulli product P(S) = (1 - p)^|S| p^(m - |S|) / (1 - p^m) over the non-empty subsets (a hyper-edge of PHG-MAE)."""
from __future__ import annotations

import itertools

import torch


def sample_subsets(n: int, m: int, p_mask: float, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> torch.Tensor:
    """n draws of the kept modalities: a boolean [n, m], at least one True per row."""
    if m < 1 or not 0.0 <= p_mask < 1.0:
        raise ValueError(f"modality dropout needs m >= 1 modalities and p_mask in [0, 1), got m={m}, p_mask={p_mask}")
    keep = torch.rand(n, m, generator=generator) >= p_mask  # kept with probability 1 - p_mask
    empty = ~keep.any(1)
    while empty.any():  # rejection: the renormalised product over non-empty subsets
        keep[empty] = torch.rand(int(empty.sum()), m, generator=generator) >= p_mask
        empty = ~keep.any(1)
    return keep.to(device)


def subset_probabilities(m: int, p_mask: float) -> dict[tuple[bool, ...], float]:
    """P(S) for each non-empty subset S of m modalities, as a tuple of kept flags (closed form)."""
    z = 1.0 - p_mask ** m  # 1 - P(nothing kept)
    return {s: (1 - p_mask) ** sum(s) * p_mask ** (m - sum(s)) / z
            for s in itertools.product((False, True), repeat=m) if any(s)}
