"""The intrinsic dimension of a data set, measured without a model: the yardstick for a count of relevant latents.

two-NN (Facco et al., 2017): with r1 <= r2 a point's distances to its two nearest neighbours, mu = r2 / r1 follows
the Pareto law P(mu > m) = m^(-d) on a d-dimensional manifold of locally uniform density, so d is read from the
ratios alone. MLE (Levina and Bickel, 2004): d = [mean_j log(r_k / r_j)]^(-1) over a point's k nearest
neighbours, averaged. Both are scikit-dimension's estimators; repeated rows (a distance of 0) are dropped first.
"""
from __future__ import annotations

import numpy as np

METHODS = ("twonn", "mle")
INSTALL = "pip install scikit-dimension==0.5.0 (or: make .venv/.installed)"


def intrinsic_dimension(x, method: str = "twonn", max_points: int = 5000, seed: int = 0) -> float:
    """The intrinsic dimension of rows x [N, D] (any array; images are flattened) by `method` on at most
    `max_points` distinct rows drawn with `seed`."""
    if method not in METHODS:
        raise ValueError(f"unknown intrinsic-dimension method {method!r}; choose one of {', '.join(METHODS)}")
    try:
        import skdim
    except ImportError as e:
        raise ImportError(f"intrinsic dimension needs scikit-dimension: {INSTALL}") from e
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if not np.isfinite(x).all():
        raise ValueError("intrinsic dimension: the rows hold NaN or infinite values")
    x = np.unique(x, axis=0)  # a repeated row has a nearest neighbour at distance 0: log(r2 / r1) is undefined
    if len(x) < 20:
        raise ValueError(f"intrinsic dimension needs at least 20 distinct rows, got {len(x)}")
    if len(x) > max_points:
        x = x[np.random.default_rng(seed).choice(len(x), max_points, replace=False)]
    estimator = skdim.id.TwoNN() if method == "twonn" else skdim.id.MLE()
    return float(estimator.fit(x).dimension_)
