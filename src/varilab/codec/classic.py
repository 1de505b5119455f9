"""JPEG and WebP through Pillow, the baselines a compression result is read against: each image coded on its own at
one quality, the bits per pixel counted from the bytes Pillow writes, and the quality searched to match a rate."""
from __future__ import annotations

import io

import numpy as np

FORMATS = {"jpeg": "JPEG", "webp": "WEBP"}


def _check(images) -> np.ndarray:
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"expected grey images [N, H, W] in [0, 1], got shape {list(x.shape)}")
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError("pixel values must be finite and lie in [0, 1]")
    return x


def code(images, fmt: str, quality: int) -> tuple[np.ndarray, int]:
    """(decoded images [N, H, W] in [0, 1], total bytes) of grey images [N, H, W] in [0, 1], each coded by Pillow's
    `fmt` (jpeg or webp) at `quality` (1..100) from its 8-bit rounding."""
    from PIL import Image

    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    x = _check(images)
    out, total = np.empty_like(x), 0
    for i, img in enumerate(np.rint(x * 255).astype(np.uint8)):
        buf = io.BytesIO()
        Image.fromarray(img, mode="L").save(buf, FORMATS[fmt], quality=int(quality))
        total += buf.tell()
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("L"), dtype=np.float64) / 255
    return out, total


def at_rate(images, fmt: str, bpp: float) -> dict:
    """The quality whose bits per pixel come closest to `bpp` (bisection over 1..100, rate rising with quality):
    {"quality", "bpp", "mse", "psnr", "images", "limit"}. "limit" is None when `bpp` lies within the format's reach,
    "lowest" when even quality 1 spends more (tiny images: headers alone), "highest" when quality 100 spends less;
    the bisection ends on that quality then."""
    x = _check(images)
    pixels = x.size
    lo, hi, best = 1, 100, None
    while lo <= hi:
        q = (lo + hi) // 2
        decoded, total = code(x, fmt, q)
        rate = 8 * total / pixels
        if best is None or abs(rate - bpp) < abs(best["bpp"] - bpp):
            mse = float(((decoded - x) ** 2).mean())
            best = {"quality": q, "bpp": rate, "mse": mse, "psnr": -10 * np.log10(max(mse, 1e-12)), "images": decoded}
        lo, hi = (q + 1, hi) if rate < bpp else (lo, q - 1)
    best["limit"] = ("lowest" if best["quality"] == 1 and best["bpp"] > bpp else
                     "highest" if best["quality"] == 100 and best["bpp"] < bpp else None)
    return best


def ssim(images, reference) -> float:
    """Mean SSIM (scikit-image) of grey images [N, H, W] against `reference`, data range 1, a 7-pixel window (or the
    largest odd one the sides allow)."""
    from skimage.metrics import structural_similarity

    x, ref = _check(images), _check(reference)
    if x.shape != ref.shape:
        raise ValueError(f"images {list(x.shape)} and reference {list(ref.shape)} differ in shape")
    win = min(7, min(x.shape[1:]) - (1 - min(x.shape[1:]) % 2))
    return float(np.mean([structural_similarity(a, b, data_range=1.0, win_size=win) for a, b in zip(x, ref)]))


MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001)  # the first three of MS-SSIM's five scale weights (Wang et al., 2003)


def ms_ssim(images, reference) -> float:
    """Mean MS-SSIM (torchmetrics) of grey images [N, H, W] against `reference`, data range 1, over three scales:
    the standard five need sides of 161 pixels, three fit sides above 16 (a Gaussian window of std 1.5)."""
    import torch
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as msssim

    x, ref = _check(images), _check(reference)
    if x.shape != ref.shape:
        raise ValueError(f"images {list(x.shape)} and reference {list(ref.shape)} differ in shape")
    w = torch.tensor(MS_SSIM_BETAS, dtype=torch.float64)
    return float(msssim(torch.as_tensor(x)[:, None], torch.as_tensor(ref)[:, None], data_range=1.0, kernel_size=5,
                        betas=tuple((w / w.sum()).tolist())))


def trivial(images) -> dict:
    """What needs no learning, on grey images [N, H, W] in [0, 1]: each pixel rounded to k bits (the nearest of 2^k
    levels i / (2^k - 1), black and white among them; rate k bits per pixel, no coding) for k = 1..8, and the lossless
    rate of the 8-bit pixels
    under their own histogram (the entropy H = -sum_v p_v log2 p_v, what an order-0 coder spends).
    {"bits": {k: psnr}, "lossless_bpp": H}."""
    x = _check(images)
    out = {}
    for k in range(1, 9):
        top = 2 ** k - 1  # q(x) = round(x (2^k - 1)) / (2^k - 1)
        q = np.rint(x * top) / top
        out[k] = float(-10 * np.log10(max(float(((q - x) ** 2).mean()), 1e-12)))
    counts = np.bincount(np.rint(x * 255).astype(np.int64).ravel(), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return {"bits": out, "lossless_bpp": float(-(p * np.log2(p)).sum())}


def beaten_by_trivial(bpp: float, psnr: float, images) -> str:
    """A sentence when a coded file is worse than what needs no learning on these images: a k-bit rounding of the
    pixels at no more rate and at least its PSNR, or a rate above the pixels' lossless order-0 entropy; else ''."""
    t = trivial(images)
    better = [(k, q) for k, q in t["bits"].items() if k <= bpp and q >= psnr]
    if better:
        k, q = better[0]
        return (f"{bpp:.2f} bits per pixel at {psnr:.2f} dB is worse than rounding each pixel to {k} bit"
                f"{'s' if k > 1 else ''} ({k} bit{'s' if k > 1 else ''} per pixel, {q:.2f} dB)" + (f", and above the pixels' lossless entropy "
                                                       f"({t['lossless_bpp']:.2f} bits per pixel)"
                                                       if bpp > t["lossless_bpp"] else ""))
    if bpp > t["lossless_bpp"]:
        return (f"{bpp:.2f} bits per pixel is above the pixels' lossless entropy ({t['lossless_bpp']:.2f} bits per "
                "pixel under their own histogram): coding them exactly would cost less")
    return ""
