"""Chamfer distance between point sets, in chunks so that the [B, N, M] distance table never sits whole in memory.

Definition (the common one in point-cloud autoencoder papers):
    CD(A, B) = mean_{a in A} min_{b in B} |a - b|^2 + mean_{b in B} min_{a in A} |a - b|^2
Squared distances, a sum of the two means. It is symmetric, zero when the sets are equal and blind to point order.

>>> a = torch.zeros(1, 2, 3)
>>> b = torch.zeros(1, 1, 3); b[..., 0] = 1.0
>>> chamfer(a, b)
tensor([2.])
"""
from __future__ import annotations

import torch

REDUCTIONS = ("none", "mean", "sum")


def chamfer(a: torch.Tensor, b: torch.Tensor, reduction: str = "none", max_elements: int = 2**22) -> torch.Tensor:
    """Chamfer distance of each pair of sets: a [B, N, D], b [B, M, D] -> [B] (reduction "none"), or its mean / sum.

    `max_elements` caps the rows * N * M distances computed at once (floats).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[2]:
        raise ValueError(f"chamfer: expected a [B, N, D] and b [B, M, D] with the same B and D, "
                         f"got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[1] == 0 or b.shape[1] == 0:
        raise ValueError(f"chamfer: expected at least one point in each set, got {tuple(a.shape)} and {tuple(b.shape)}")
    rows = max(1, max_elements // (a.shape[1] * b.shape[1]))
    out = torch.cat([_chamfer(a[i:i + rows], b[i:i + rows]) for i in range(0, a.shape[0], rows)])
    return out if reduction == "none" else (out.mean() if reduction == "mean" else out.sum())


def _chamfer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # The nearest neighbours are found on |a|^2 + |b|^2 - 2 a.b (matrix products, no gradient: the [B, N, M] table
    # never enters the autograd graph); the matched pairs' squared distances are then taken from the differences
    # themselves (that form cancels badly when the sets nearly meet), so identical sets give exactly 0, a zero distance
    # has gradient 0, not NaN, and the gradient is the exact formula's (that of min_b |a - b|^2 at its argmin).
    # Rounding in the search can only pick a neighbour whose distance ties the nearest's to ~1e-7 |a|^2.
    with torch.no_grad():
        d2 = torch.cdist(a.detach(), b.detach(), compute_mode="use_mm_for_euclid_dist")
        to_b, to_a = d2.argmin(dim=2), d2.argmin(dim=1)  # [B, N] nearest b of each a; [B, M] nearest a of each b
    nearest_b = b.gather(1, to_b.unsqueeze(-1).expand(-1, -1, b.shape[2]))
    nearest_a = a.gather(1, to_a.unsqueeze(-1).expand(-1, -1, a.shape[2]))
    return (a - nearest_b).square().sum(2).mean(1) + (b - nearest_a).square().sum(2).mean(1)  # mean_a min_b + mean_b min_a


def percentiles(values: torch.Tensor, qs=(50, 90, 99)) -> dict[int, float]:
    """{q: the q-th percentile} of per-shape distances (e.g. `chamfer(...)`), linear interpolation."""
    v = values.detach().double().flatten()
    if v.numel() == 0:
        raise ValueError("percentiles: expected at least one value, got none")
    return {int(q): float(torch.quantile(v, q / 100.0)) for q in qs}
