"""How close a restored image is to the truth: PSNR and SSIM per image, on the data's own range.

    PSNR = 10 log10(R^2 / MSE),  MSE = mean_i (x_i - x_hat_i)^2,  R the data range (1 for images in [0, 1])
    SSIM: scikit-image's `structural_similarity` (Wang et al., 2004; a uniform 7 x 7 window, the mean over
          the image of the local index), per channel for multi-channel images.

>>> import numpy as np
>>> x = np.zeros((1, 8, 8)); x[0, 2:6, 2:6] = 1
>>> round(float(psnr(x, x * 0.9)[0]), 2), float(ssim(x, x)[0])
(26.02, 1.0)
"""
from __future__ import annotations

import numpy as np


def psnr(truth: np.ndarray, estimate: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """PSNR in dB of each of N images (any shape [N, ...]); inf where they match exactly."""
    t, e = _pair(truth, estimate)
    mse = ((t - e) ** 2).reshape(len(t), -1).mean(1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(data_range ** 2 / mse)


def ssim(truth: np.ndarray, estimate: np.ndarray, data_range: float = 1.0) -> np.ndarray:
    """SSIM of each of N images [N, H, W] or [N, C, H, W] (sides of at least 7 pixels)."""
    from skimage.metrics import structural_similarity

    t, e = _pair(truth, estimate)
    if t.ndim not in (3, 4) or min(t.shape[-2:]) < 7:
        raise ValueError(f"SSIM takes images [N, H, W] or [N, C, H, W] with sides of 7 pixels or more, got {list(t.shape)}")
    multi = {"channel_axis": 0} if t.ndim == 4 else {}
    return np.array([structural_similarity(a, b, data_range=data_range, **multi) for a, b in zip(t, e)])


def _pair(truth, estimate) -> tuple[np.ndarray, np.ndarray]:
    t, e = np.asarray(truth, dtype=np.float64), np.asarray(estimate, dtype=np.float64)
    if t.shape != e.shape:
        raise ValueError(f"truth and estimate must have the same shape, got {list(t.shape)} and {list(e.shape)}")
    return t, e
