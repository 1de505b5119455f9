"""Comparing rate-distortion curves: a codec's quality at another's rate."""
from __future__ import annotations

import numpy as np


def quality_at(rates, qualities, rate: float) -> float:
    """The quality (e.g. PSNR) a curve of (rate, quality) points reaches at `rate`: linear interpolation between
    the two points around it, or along the nearest two ends' line outside the curve's range (say so when
    reporting); a curve of one rate is flat."""
    r, q = np.asarray(rates, dtype=np.float64), np.asarray(qualities, dtype=np.float64)
    if r.shape != q.shape or r.ndim != 1 or not len(r):
        raise ValueError(f"a curve needs points: rates {r.tolist()} and qualities {q.tolist()}")
    if len(np.unique(r)) < 2:
        return float(q.max())
    order = np.argsort(r)
    r, q = r[order], q[order]
    i = int(np.clip(np.searchsorted(r, rate) - 1, 0, len(r) - 2))
    while r[i + 1] == r[i]:  # repeated rates: step to a pair that spans some rate
        i = i + 1 if i + 2 < len(r) else i - 1
    return float(q[i] + (q[i + 1] - q[i]) * (rate - r[i]) / (r[i + 1] - r[i]))


def inside(rates, rate: float) -> bool:
    """Whether `rate` lies within the curve's range (no extrapolation needed)."""
    return float(np.min(rates)) <= rate <= float(np.max(rates))


def front(rates, qualities, pad: bool = False) -> tuple[list[float], list[float]]:
    """The upper rate-distortion envelope of a codec's runs: the points no other point beats with less or equal rate
    and higher quality, by rate. A baseline run at several settings is read along its best curve.

    pad: when a run spent more bits than the best point without beating it, the curve goes on flat to that run's
    rate: any codec reaches its best quality at a higher rate by padding its files, and the baseline was tried
    there. Beyond the highest rate any run spent, nothing is known (`inside` says so)."""
    points = sorted(zip(map(float, rates), map(float, qualities)), key=lambda p: (p[0], -p[1]))
    kept: list[tuple[float, float]] = []
    for r, q in points:
        if not kept or q > kept[-1][1]:
            kept.append((r, q))
    if pad and points[-1][0] > kept[-1][0]:
        kept.append((points[-1][0], kept[-1][1]))
    return [r for r, _ in kept], [q for _, q in kept]


def bd_rate(rates_ref, qualities_ref, rates, qualities) -> float:
    """The Bjontegaard delta rate of a curve against a reference, in percent: the mean difference of log rate over
    the qualities both curves reach, each curve's log rate fitted as a polynomial of quality (cubic from four points,
    else of degree points - 1, as in VCEG-M33). Negative: the curve needs that much less rate for the same quality.

    BD-rate = 100 (exp((1 / (b - a)) int_a^b (P(q) - P_ref(q)) dq) - 1), P a curve's fit of ln rate on [a, b],
    the overlap of the two quality ranges."""
    fits, ranges = [], []
    for r, q in ((rates_ref, qualities_ref), (rates, qualities)):
        r, q = np.asarray(r, dtype=np.float64), np.asarray(q, dtype=np.float64)
        if r.shape != q.shape or r.ndim != 1 or len(np.unique(q)) < 2 or (r <= 0).any():
            raise ValueError(f"a curve needs two or more qualities and positive rates: rates {r.tolist()}, "
                             f"qualities {q.tolist()}")
        fits.append(np.polynomial.Polynomial.fit(q, np.log(r), min(3, len(np.unique(q)) - 1)).convert())
        ranges.append((float(q.min()), float(q.max())))
    lo, hi = max(a for a, _ in ranges), min(b for _, b in ranges)
    if hi <= lo:
        raise ValueError("the curves share no quality range: {:.2f}-{:.2f} and {:.2f}-{:.2f}".format(*ranges[0],
                                                                                                  *ranges[1]))
    ref, own = (f.integ() for f in fits)
    mean = ((own(hi) - own(lo)) - (ref(hi) - ref(lo))) / (hi - lo)
    return float(100 * np.expm1(mean))
