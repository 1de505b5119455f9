"""Detrended fluctuation analysis (DFA-1) of paths on any increasing grid: the Hurst index is the slope of log F
against log window length, F^2 the mean square of each window's residual from its least-squares line in time. A
path is its own profile (its increments are the noise), so on an even grid this is DFA of the increments; for fBM,
F grows like length^H.

    F^2(s) = mean over windows w of s points of ||(I - P_w) x_w||^2 / s,   P_w: projection on span(1, t_w)
    length(s) = s (t_last - t_first) / (s - 1), s times the window's mean step (s steps on an even grid)

`expected_hurst` takes E F^2(s) = mean_w tr((I - P_w) C_ww) / s from a covariance C: DFA over infinitely many
paths, without sampling noise.
"""
from __future__ import annotations

import numpy as np

MIN_WINDOW = 4  # points in the smallest window
SIZES = 12  # window sizes at most, spread evenly in log
MIN_POINTS = 2 * (MIN_WINDOW + 1)  # two window sizes, the largest holding two windows


def sizes(points: int) -> np.ndarray:
    """The window sizes: whole numbers spread evenly in log from MIN_WINDOW to points // 2 (two windows)."""
    if points < MIN_POINTS:
        raise ValueError(f"DFA needs at least {MIN_POINTS} points, got {points}")
    return np.unique(np.geomspace(MIN_WINDOW, points // 2, SIZES).round().astype(int))


def _windows(times: np.ndarray, s: int) -> tuple[slice, np.ndarray, float]:
    """(the points the windows of s points cover, their centred times c [W, s], their mean length)."""
    w = len(times) // s
    tw = times[:w * s].reshape(w, s)
    length = float(((tw[:, -1] - tw[:, 0]) * s / (s - 1)).mean())
    return slice(0, w * s), tw - tw.mean(1, keepdims=True), length


def _slope(lengths: list[float], f2: list[float]) -> float:
    """H: the slope of log F = log F^2 / 2 against log length."""
    return float(np.polyfit(np.log(lengths), 0.5 * np.log(f2), 1)[0])


def hurst(paths, times) -> float:
    """The DFA estimate of H from paths [n, T] (or one path [T]) at `times` [T], F^2 pooled over the paths."""
    x, t = np.atleast_2d(np.asarray(paths, dtype=np.float64)), np.asarray(times, dtype=np.float64)
    lengths, f2 = [], []
    for s in sizes(len(t)):
        cover, c, length = _windows(t, s)
        xw = x[:, cover].reshape(len(x), -1, s)
        fit = xw.mean(-1, keepdims=True) + c * ((xw * c).sum(-1, keepdims=True) / (c * c).sum(-1, keepdims=True))
        lengths.append(length)
        f2.append(float(((xw - fit) ** 2).mean()))
    return _slope(lengths, f2)


def expected_hurst(cov, times) -> float:
    """H from E F^2 under the covariance `cov` [T, T] at `times` [T]: tr(C_ww) - 1^T C_ww 1 / s - c^T C_ww c / c^T c."""
    cov, t = np.asarray(cov, dtype=np.float64), np.asarray(times, dtype=np.float64)
    lengths, f2 = [], []
    for s in sizes(len(t)):
        cover, c, length = _windows(t, s)
        w = len(c)
        idx = np.arange(cover.stop).reshape(w, s)
        block = cov[idx[:, :, None], idx[:, None, :]]  # C_ww [W, s, s]
        residual = (np.trace(block, axis1=1, axis2=2) - block.sum((1, 2)) / s
                    - np.einsum("wi,wij,wj->w", c, block, c) / (c * c).sum(1))
        lengths.append(length)
        f2.append(float(residual.mean() / s))
    return _slope(lengths, f2)


__all__ = ["MIN_POINTS", "expected_hurst", "hurst", "sizes"]
