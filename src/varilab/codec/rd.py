"""Comparing rate-distortion curves: a codec's quality at another's rate."""
from __future__ import annotations

import numpy as np


def quality_at(rates, qualities, rate: float) -> float:
    """The quality (e.g. PSNR) a curve of (rate, quality) points reaches at `rate`: linear interpolation between
    the two points around it, or along the nearest two ends' line outside the curve's range (say so when
    reporting). Needs at least two points of distinct rates."""
    r, q = np.asarray(rates, dtype=np.float64), np.asarray(qualities, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1 or len(np.unique(r)) < 2:
        raise ValueError(f"a curve needs at least two points of distinct rates, got rates {r.tolist()}")
    order = np.argsort(r)
    r, q = r[order], q[order]
    i = int(np.clip(np.searchsorted(r, rate) - 1, 0, len(r) - 2))
    while r[i + 1] == r[i]:  # repeated rates: step to a pair that spans some rate
        i = i + 1 if i + 2 < len(r) else i - 1
    return float(q[i] + (q[i + 1] - q[i]) * (rate - r[i]) / (r[i + 1] - r[i]))


def inside(rates, rate: float) -> bool:
    """Whether `rate` lies within the curve's range (no extrapolation needed)."""
    return float(np.min(rates)) <= rate <= float(np.max(rates))
