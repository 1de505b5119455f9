"""How well the K-term Markov approximation matches exact fBM at H on a given grid of times: the Hurst index each
measures as by DFA (in expectation, from its covariance: `dfa.expected_hurst`), and the relative error of the
covariance of the approximation's increments (the noise) against exact fBM's.

    error = ||D (C_hat - C) D^T||_F / ||D C D^T||_F,   D: the differences B(t_1) - B(0), B(t_2) - B(t_1), ...

"Exact fBM" is the type-II (Riemann-Liouville) fBM the approximation targets; standard (type-I) fBM is measured
too. Times are counted from the noise's start (where B = 0); a grid of more than MAX_POINTS is measured on
MAX_POINTS of its points spread evenly by index (Cholesky-free, but the covariances are [T, T]).
"""
from __future__ import annotations

import numpy as np

from . import dfa, fbm

MAX_POINTS = 1000


def _increments(cov: np.ndarray) -> np.ndarray:
    """D C D^T: the covariance of the increments from B(0) = 0."""
    d = np.eye(len(cov)) - np.eye(len(cov), k=-1)
    return d @ cov @ d.T


def compare(hurst: float, k: int, ratio: float, times, start: float = 0.0, horizon: float = 1.0) -> dict:
    """The approximation (K OU processes, rates r^(j - (K+1)/2), weights optimal on [0, horizon]) against exact fBM
    at H on `times` after `start`: {hurst, ou, ratio, points, measured_points, dfa, dfa_exact, dfa_standard,
    covariance_error}; the DFA entries are None on fewer than dfa.MIN_POINTS points."""
    t = np.asarray(times, dtype=np.float64) - start
    t = t[t > 0]
    if not len(t):
        raise ValueError("the grid has no time after the noise's start")
    points = len(t)
    if points > MAX_POINTS:
        t = t[np.unique(np.linspace(0, points - 1, MAX_POINTS).round().astype(int))]
    approx = fbm.markov_covariance(hurst, fbm.rates(k, ratio), t, horizon)
    exact, standard = fbm.covariance(hurst, t), fbm.standard_covariance(hurst, t)
    noise = _increments(exact)
    out = {"hurst": float(hurst), "ou": k, "ratio": float(ratio), "points": points, "measured_points": len(t),
           "covariance_error": float(np.linalg.norm(_increments(approx) - noise) / np.linalg.norm(noise)),
           "dfa": None, "dfa_exact": None, "dfa_standard": None}
    if len(t) >= dfa.MIN_POINTS:
        out.update(dfa=dfa.expected_hurst(approx, t), dfa_exact=dfa.expected_hurst(exact, t),
                   dfa_standard=dfa.expected_hurst(standard, t))
    return out


def sentence(m: dict, where: str = "this run's grid") -> str:
    """One sentence of `compare`'s result: "On this run's grid (200 points), the K = 5, r = 10 approximation at
    H = 0.7 measures as H = 0.74 by DFA (exact fBM: 0.73); its increments' covariance is 4.9% off exact fBM's"."""
    grid = f"{where} ({m['points']:,} points" + (f", measured on {m['measured_points']:,} of them" if
                                                 m["measured_points"] < m["points"] else "") + ")"
    head = f"On {grid}, the K = {m['ou']}, r = {m['ratio']:g} approximation at H = {m['hurst']:.3g}"
    if m["dfa"] is None:
        body = f" has too few points for DFA (at least {dfa.MIN_POINTS}); its"
    else:
        body = (f" measures as H = {m['dfa']:.2f} by DFA (exact fBM: {m['dfa_exact']:.2f}, standard fBM: "
                f"{m['dfa_standard']:.2f}); its")
    return f"{head}{body} increments' covariance is {100 * m['covariance_error']:.2g}% off exact fBM's."


__all__ = ["MAX_POINTS", "compare", "sentence"]
