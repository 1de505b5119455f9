"""Generated data with known structure: linear-Gaussian data of a chosen covariance spectrum, dSprites-like shapes
with known factors (shape, scale, rotation, x, y), and disks whose three factors (x, y, radius) are all continuous
and none circular, so the images lie on a manifold of dimension exactly 3."""
from __future__ import annotations

import math

import numpy as np

SHAPE_FACTORS = ("shape", "scale", "rotation", "x", "y")
DISK_FACTORS = ("x", "y", "radius")


def linear_gaussian(n: int, spectrum, dim: int | None = None, seed: int = 0):
    """x = Q diag(sqrt(lambda)) eps with eps ~ N(0, I) and Q a random rotation, so Cov(x) = Q diag(lambda) Q^T.

    `spectrum` gives the leading eigenvalues; when `dim` is larger, the last value repeats.
    Returns (x [n, dim], Q [dim, dim], eigenvalues [dim]).
    """
    lam = np.asarray(list(spectrum), dtype=np.float64)
    if lam.ndim != 1 or len(lam) == 0 or (lam <= 0).any():
        raise ValueError(f"spectrum must be a non-empty list of positive eigenvalues, got {list(spectrum)}")
    dim = len(lam) if dim is None else int(dim)
    if dim < len(lam):
        raise ValueError(f"dim ({dim}) is smaller than the number of eigenvalues given ({len(lam)})")
    lam = np.concatenate([lam, np.full(dim - len(lam), lam[-1])])
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    q = q * np.sign(np.diag(r))  # a Haar-random rotation
    eps = rng.standard_normal((n, dim))
    return (eps * np.sqrt(lam)) @ q.T, q, lam


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of canonical coordinates (u, v) in each shape: 0 square, 1 ellipse, 2 heart."""
    square = (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8)
    ellipse = (u / 1.0) ** 2 + (v / 0.55) ** 2 <= 1.0
    hu, hv = u * 1.15, -v * 1.15 + 0.2  # heart: (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0
    heart = (hu**2 + hv**2 - 1) ** 3 - hu**2 * hv**3 <= 0
    return np.select([shape == 0, shape == 1], [square, ellipse], heart)


def shapes(n: int = 10_000, size: int = 32, seed: int = 0):
    """Binary size x size images of a square, ellipse or heart at a random scale, rotation and position.

    The factors are drawn uniformly from grids like dSprites': shape 3, scale 6 in [0.5, 1],
    rotation 20 in [0, 2 pi), x 16 and y 16 positions. Returns (images [n, size, size], factor
    indices [n, 5], factor values [n, 5]).
    """
    if size < 8:
        raise ValueError(f"shapes: size must be at least 8 pixels, got {size}")
    grids = [np.arange(3.0), np.linspace(0.5, 1.0, 6), np.linspace(0, 2 * math.pi, 20, endpoint=False),
             np.linspace(0.2, 0.8, 16), np.linspace(0.2, 0.8, 16)]
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.integers(len(g), size=n) for g in grids], axis=1)  # [n, 5]
    val = np.stack([g[i] for g, i in zip(grids, idx.T)], axis=1)
    shape, scale, rot, cx, cy = (val[:, k, None, None] for k in range(5))
    coords = (np.arange(size) + 0.5) / size
    px, py = coords[None, None, :], coords[None, :, None]
    half = 0.2 * scale  # half-width of the shape at scale 1, in image units
    dx, dy = (px - cx) / half, (py - cy) / half
    u = np.cos(rot) * dx + np.sin(rot) * dy  # rotate the pixel grid by -rot into shape coordinates
    v = -np.sin(rot) * dx + np.cos(rot) * dy
    images = _inside(np.broadcast_to(shape, u.shape), u, v).astype(np.float32)
    return images, idx, val


def disks(n: int = 10_000, size: int = 32, seed: int = 0):
    """Grey size x size images of one disk, its centre x, y uniform in [0.3, 0.7] and its radius uniform in
    [0.1, 0.2] (image units), all continuous. A pixel's value is the disk's cover of it, read from a one-pixel
    linear ramp across the border: clip(0.5 + (radius - distance) * size, 0, 1), so an image moves smoothly with
    every factor. Returns (images [n, size, size], factor values [n, 3] in DISK_FACTORS' order)."""
    if size < 8:
        raise ValueError(f"disks: size must be at least 8 pixels, got {size}")
    rng = np.random.default_rng(seed)
    val = np.stack([rng.uniform(0.3, 0.7, n), rng.uniform(0.3, 0.7, n), rng.uniform(0.1, 0.2, n)], axis=1)
    coords = (np.arange(size) + 0.5) / size
    cx, cy, r = (val[:, k, None, None] for k in range(3))
    dist = np.sqrt((coords[None, None, :] - cx) ** 2 + (coords[None, :, None] - cy) ** 2)
    images = np.clip(0.5 + (r - dist) * size, 0.0, 1.0).astype(np.float32)
    return images, val
