"""Integer probability tables: the only thing encoder and decoder must agree on, so they are computed once, in
float64 numpy from the model's weights, by a rule with no ties left to the platform, and saved with the weights.

counts = floor(p * (total - K)) + 1 for every symbol (so each keeps a code), then the remaining units go to the
largest remainders, ties broken by the lower symbol index; the counts of each row sum to exactly `total`.
"""
from __future__ import annotations

import numpy as np

PRECISION = 16  # rows sum to 2^16: finer than any learned frequency needs, coarse enough for constriction's 24 bits


def quantise(probabilities, precision: int = PRECISION) -> np.ndarray:
    """Rows of probabilities [..., K] (non-negative, finite, each summing to > 0) as int64 counts summing to 2^precision."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] < 1:
        raise ValueError(f"expected probabilities [..., K], got shape {list(p.shape)}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    sums = p.sum(-1, keepdims=True)
    if (sums <= 0).any():
        raise ValueError("every row of probabilities needs a positive sum")
    total, k = 1 << precision, p.shape[-1]
    if k > total:
        raise ValueError(f"{k} symbols cannot each get a count out of 2^{precision}")
    scaled = p / sums * (total - k)
    counts = np.floor(scaled).astype(np.int64) + 1
    left = total - counts.sum(-1)  # [...]: units still to give, fewer than K
    order = np.argsort(-(scaled - np.floor(scaled)), axis=-1, kind="stable")  # largest remainder first, ties by index
    rank = np.argsort(order, axis=-1, kind="stable")
    counts += rank < left[..., None]
    return counts


def code_length(symbols, counts) -> float:
    """The ideal code length in bits of `symbols` [..., n] under integer tables `counts` [..., K]: sum -log2 p."""
    c = np.asarray(counts, dtype=np.float64)
    p = c / c.sum(-1, keepdims=True)
    s = np.asarray(symbols)
    return float(-np.log2(np.take_along_axis(p, s, -1)).sum())
