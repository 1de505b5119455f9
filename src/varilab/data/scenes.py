"""Procedural multi-modal scenes: 32 x 32 images of overlapping disks, squares and triangles, each with a random
colour and depth, painted far to near. Four modalities of one scene share its pixels:

    rgb       [3, H, W]  the colours over a dark background, with a little pixel noise
    depth     [1, H, W]  the depth of the nearest shape at each pixel (1 where there is none): the z-order
    edges     [1, H, W]  1 where a pixel's nearest shape differs from a 4-neighbour's, else 0
    semantic  [1, H, W]  the class of the nearest shape (0 background, 1 disk, 2 square, 3 triangle): the task

Generated from a seed, so a data set is its options. A user's own scenes are a `.npz` of named modalities
[N, C, H, W] of one spatial size (`read_modalities`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

MODALITIES = {"rgb": 3, "depth": 1, "edges": 1, "semantic": 1}  # name -> channels, in the order of a row
CLASSES = ("background", "disk", "square", "triangle")


def scenes(n: int, size: int = 32, seed: int = 0, shapes: tuple[int, int] = (2, 5),
           noise: float = 0.0) -> dict[str, np.ndarray]:
    """n scenes of `size` x `size` pixels, each of shapes[0] to shapes[1] shapes: {modality: float32 [n, C, H, W]}.
    noise > 0 makes the inputs read like experts' outputs: rgb and depth gain Gaussian noise of that scale, and each
    edge pixel is flipped with probability noise / 2 (the task stays exact)."""
    if n < 1 or size < 8:
        raise ValueError(f"scenes need n >= 1 and size >= 8, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    out = {name: np.zeros((n, c, size, size), np.float32) for name, c in MODALITIES.items()}
    for i in range(n):
        rgb = np.broadcast_to(rng.uniform(0.0, 0.25, 3)[:, None, None], (3, size, size)).copy()
        depth, semantic = np.ones((size, size)), np.zeros((size, size))
        instance = np.zeros((size, size), np.int64)
        k = int(rng.integers(shapes[0], shapes[1] + 1))
        for j, z in enumerate(np.sort(rng.uniform(0.1, 0.9, k))[::-1]):  # far to near: the nearest is painted last
            kind = int(rng.integers(1, len(CLASSES)))
            cx, cy = rng.uniform(0.15 * size, 0.85 * size, 2)
            r = rng.uniform(0.1, 0.25) * size
            inside = _shape(kind, xx - cx, yy - cy, r)
            rgb[:, inside] = rng.uniform(0.35, 1.0, 3)[:, None]
            depth[inside], semantic[inside], instance[inside] = z, kind, j + 1
        edge = np.zeros((size, size), bool)
        edge[1:] |= instance[1:] != instance[:-1]
        edge[:-1] |= instance[:-1] != instance[1:]
        edge[:, 1:] |= instance[:, 1:] != instance[:, :-1]
        edge[:, :-1] |= instance[:, :-1] != instance[:, 1:]
        out["rgb"][i] = np.clip(rgb + rng.normal(0.0, 0.02, rgb.shape), 0.0, 1.0)
        out["depth"][i, 0], out["edges"][i, 0], out["semantic"][i, 0] = depth, edge, semantic
    if noise > 0:  # drawn after every scene, so a noisy set has the clean set's scenes
        for name in ("rgb", "depth"):
            out[name] += rng.normal(0.0, noise, out[name].shape).astype(np.float32)
        flip = rng.random(out["edges"].shape) < noise / 2
        out["edges"][flip] = 1.0 - out["edges"][flip]
    return out


def _shape(kind: int, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """The pixels inside a disk (1), an axis-aligned square (2) or an upright triangle (3) of size r at offsets dx, dy."""
    if kind == 1:
        return dx ** 2 + dy ** 2 <= r ** 2
    if kind == 2:
        return (np.abs(dx) <= 0.8 * r) & (np.abs(dy) <= 0.8 * r)
    return (dy <= r) & (np.abs(dx) <= (dy + r) / 2)  # apex at (0, -r), base 2r wide at dy = r


def read_modalities(path: str | Path, task: str) -> dict[str, np.ndarray]:
    """A user's `.npz` of named modalities, each [N, C, H, W] (or [N, H, W] for one channel), checked in one line
    each: one N and one H x W for all, finite numbers, and the task modality among them, one channel of classes."""
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file():
        raise ValueError(f"{path}: expected a .npz file of named modalities [N, C, H, W]")
    with np.load(path, allow_pickle=False) as f:
        arrays = {name: np.asarray(f[name], np.float32) for name in f.files}
    if task not in arrays:
        raise ValueError(f"{path}: the task modality {task!r} is missing; it holds {', '.join(sorted(arrays))}")
    if len(arrays) < 2:
        raise ValueError(f"{path}: needs the task and at least one input modality, found only {task!r}")
    arrays = check_modalities(arrays, str(path))
    t = arrays[task]
    if t.shape[1] != 1 or (t != np.round(t)).any() or t.min() < 0:
        raise ValueError(f"{path}: the task modality {task!r} must be one channel of class indices 0, 1, 2, ...")
    return arrays


def check_modalities(arrays: dict[str, np.ndarray], where: str) -> dict[str, np.ndarray]:
    """Named modalities [N, C, H, W] (a [N, H, W] one gains its channel axis), one N and one H x W for all, finite."""
    shape, out = None, {}
    for name, a in arrays.items():
        a = out[name] = a[:, None] if a.ndim == 3 else a
        if a.ndim != 4:
            raise ValueError(f"{where}: modality {name!r} has shape {a.shape}; expected [N, C, H, W] or [N, H, W]")
        if shape is not None and (a.shape[0], *a.shape[2:]) != shape:
            raise ValueError(f"{where}: modality {name!r} is {a.shape[0]} x {a.shape[2]} x {a.shape[3]} (N x H x W) "
                             f"but the others are {shape[0]} x {shape[1]} x {shape[2]}")
        shape = (a.shape[0], *a.shape[2:])
        if not np.isfinite(a).all():
            raise ValueError(f"{where}: modality {name!r} holds NaN or infinite values")
    return out
