"""What a command reads from the user and writes back, the same for every family that takes arrays: a numeric file
checked in one line, rows [N, D], and rows shown again as the run's images."""
from __future__ import annotations


def read(path: str, what: str):
    """A numeric, real, finite array from .npy/.npz/.csv, as float32; one clear error otherwise."""
    import numpy as np

    from ..data.files import read_array

    x = np.asarray(read_array(path)[0])
    if x.dtype == object or np.iscomplexobj(x) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{what} {path}: expected real numbers, got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError(f"{what} {path}: an empty array (shape {list(x.shape)}); give at least one")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        where = [int(i) for i in np.argwhere(bad)[0]]
        raise ValueError(f"{what} {path}: {int(bad.sum())} NaN or Inf value(s), the first at index {where}")
    return x


def rows(path: str, what: str):
    """A file of one row per data point, as a tensor [N, D] (a single point [D] becomes one row)."""
    import torch

    x = torch.from_numpy(read(path, what))
    return x.reshape(len(x), -1) if x.ndim > 1 else x[None]


def as_images(a, shape, factor: int = 1):
    """Rows [N, C H W] as images [N, H/f, W/f] (one channel) or [N, C, H/f, W/f]; rows as they are without a shape."""
    if shape is None:
        return a
    c, h, w = shape
    side = (h // factor, w // factor)
    return a.reshape(len(a), *(side if c == 1 else (c, *side)))


def image_shape(run) -> tuple[int, int, int] | None:
    shape = run.data.image_shape
    if shape is None:
        return None
    h, w = shape
    return run.data.x_dim // (h * w), h, w
