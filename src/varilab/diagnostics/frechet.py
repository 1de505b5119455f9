"""Sample quality as the Frechet distance between Gaussian fits of two sets of features (Heusel et al., 2017):

    FD = ||m_a - m_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})

which is the squared 2-Wasserstein distance between N(m_a, S_a) and N(m_b, S_b). FID is this distance in the
features of an Inception network; offline, varilab computes it in the features of a classifier trained on the
same data and names it as such.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg


def gaussian_fit(features) -> tuple[np.ndarray, np.ndarray]:
    """(mean [F], covariance [F, F]) of features [N, F] in float64."""
    f = np.asarray(features.detach().cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be [N, F] with N >= 2, got shape {list(f.shape)}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or Inf")
    return f.mean(0), np.cov(f, rowvar=False)


def frechet_distance(a, b) -> float:
    """The Frechet distance between the Gaussian fits of feature sets a [N, F] and b [M, F]."""
    (ma, sa), (mb, sb) = gaussian_fit(a), gaussian_fit(b)
    if ma.shape != mb.shape:
        raise ValueError(f"feature widths differ: {ma.shape[0]} and {mb.shape[0]}")
    with warnings.catch_warnings():  # scipy warns when the product is near-singular; checked below
        warnings.simplefilter("ignore")
        root = linalg.sqrtm(sa @ sb)  # (S_a S_b)^{1/2}; its imaginary part is round-off for PSD inputs
        if not np.isfinite(root).all():  # a singular product: regularise as is customary
            eps = 1e-6 * np.eye(len(sa))
            root = linalg.sqrtm((sa + eps) @ (sb + eps))
    return float(((ma - mb) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(root.real))
