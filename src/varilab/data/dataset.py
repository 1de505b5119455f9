"""The `Dataset` a run trains on, and the input checks every loader goes through."""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

BINARIZE = ("none", "fixed", "dynamic")


@dataclass
class Dataset:
    """Train and test arrays, flattened to [N, D] float32, with what is known about them.

    `binarize == "dynamic"` means the trainer draws x ~ Bernoulli(x) afresh for every batch;
    "fixed" data were binarised once when loaded.
    """

    name: str
    x_train: torch.Tensor  # [N, D]
    x_test: torch.Tensor  # [M, D]
    y_train: torch.Tensor | None = None  # [N] labels or [N, K] factors
    y_test: torch.Tensor | None = None
    image_shape: tuple[int, ...] | None = None  # (H, W) when the rows are images
    binarize: str = "none"
    factor_names: tuple[str, ...] | None = None
    c_train: torch.Tensor | None = None  # [N, C] conditions, for conditional models
    c_test: torch.Tensor | None = None
    condition: str = "none"
    train_rows: torch.Tensor | None = None  # [N] the source row of each training row (its index in the data as given)

    @property
    def x_dim(self) -> int:
        return self.x_train.shape[1]

    def summary(self) -> str:
        x = self.x_train
        shape = f"[{x.shape[0]}, {x.shape[1]}]" + (f" (images {self.image_shape})" if self.image_shape else "")
        cond = f", condition {self.condition} [{self.c_train.shape[1]}]" if self.c_train is not None else ""
        return (f"data {self.name}: train {shape}, test {self.x_test.shape[0]}{cond}, "
                f"range [{x.min().item():.4g}, {x.max().item():.4g}], mean {x.mean().item():.4g}"
                + (f", binarize={self.binarize}" if self.binarize != "none" else ""))


def check_array(x: np.ndarray, what: str) -> np.ndarray:
    """Validate a user or loader array: numeric, [N, D] or [N, H, W], finite. Returns float32."""
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{what}: expected a numeric array, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise ValueError(f"{what}: expected real numbers, got a complex array ({x.dtype}); pass its real part "
                         "or its magnitude explicitly")
    if x.ndim not in (2, 3):
        raise ValueError(f"{what}: expected an array of shape [N, D] or [N, H, W], got {x.ndim} "
                         f"dimension(s) with shape {list(x.shape)}")
    if x.shape[0] < 2 or any(s < 1 for s in x.shape[1:]):
        raise ValueError(f"{what}: expected at least 2 rows and non-empty rows, got shape {list(x.shape)}")
    if np.issubdtype(x.dtype, np.floating) and x.dtype.itemsize > 4:
        big = np.isfinite(x) & (np.abs(x) > np.finfo(np.float32).max)
        if big.any():
            where = tuple(int(i) for i in np.argwhere(big)[0])
            raise ValueError(f"{what}: {int(big.sum())} value(s) beyond float32's range (+-3.4e38), the first at "
                             f"index {list(where)}; rescale the data")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        rows = int(bad.reshape(len(x), -1).any(1).sum())
        raise ValueError(f"{what}: {n_nan} NaN and {n_inf} Inf value(s) in {rows} row(s), the first at "
                         f"index {list(where)}; remove or impute them before training")
    return x


def binarize_fixed(x: torch.Tensor, seed: int) -> torch.Tensor:
    """One Bernoulli draw per pixel, x_b ~ Bernoulli(x), made once with `seed` (static binarisation)."""
    g = torch.Generator().manual_seed(seed)
    return torch.bernoulli(x.clamp(0, 1), generator=g)


def make_dataset(name: str, x: np.ndarray, y: np.ndarray | None = None, *, test_fraction: float = 0.2,
                 seed: int = 0, binarize: str = "none", x_test: np.ndarray | None = None,
                 y_test: np.ndarray | None = None, factor_names=None) -> Dataset:
    """Split (unless a test set is given), flatten and binarise a checked array into a `Dataset`."""
    if binarize not in BINARIZE:
        raise ValueError(f"binarize must be one of {', '.join(BINARIZE)}, got {binarize!r}")
    x = check_array(x, name)
    image_shape = tuple(x.shape[1:]) if x.ndim == 3 else None
    if y is not None and len(y) != len(x):
        raise ValueError(f"{name}: {len(x)} rows in x but {len(y)} labels in y")
    if x_test is None:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
        n_test = max(1, int(round(len(x) * test_fraction)))
        perm = np.random.default_rng(seed).permutation(len(x))
        test_idx, train_idx = perm[:n_test], perm[n_test:]
        train_rows = torch.as_tensor(train_idx)
        x, x_test = x[train_idx], x[test_idx]
        if y is not None:
            y, y_test = y[train_idx], y[test_idx]
    else:
        x_test = check_array(x_test, f"{name} (test)")
        train_rows = torch.arange(len(x))
    flat = lambda a: torch.from_numpy(np.ascontiguousarray(a.reshape(len(a), -1)))  # noqa: E731
    to_t = lambda a: None if a is None else torch.as_tensor(np.asarray(a))  # noqa: E731
    xtr, xte = flat(x), flat(x_test)
    if binarize != "none":
        lo, hi = float(min(xtr.min(), xte.min())), float(max(xtr.max(), xte.max()))
        if lo < 0 or hi > 1:
            raise ValueError(f"{name}: binarisation needs values in [0, 1], found [{lo:.4g}, {hi:.4g}]; "
                             "rescale the data first")
    if binarize == "fixed":
        xtr, xte = binarize_fixed(xtr, seed), binarize_fixed(xte, seed + 1)
    return Dataset(name, xtr, xte, to_t(y), to_t(y_test), image_shape, binarize,
                   tuple(factor_names) if factor_names else None, train_rows=train_rows)


CONDITIONS = ("none", "label", "top-half")


def with_condition(ds: Dataset, condition: str) -> Dataset:
    """Attach a condition: "label" (one-hot of the class label) or "top-half" (the top half of each image is
    the condition and the bottom half becomes x, the image-completion task)."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {', '.join(CONDITIONS)}, got {condition!r}")
    if condition == "none":
        return ds
    if condition == "label":
        if ds.y_train is None or ds.y_train.ndim != 1:
            raise ValueError(f"{ds.name}: condition 'label' needs one integer label per row; this data has none")
        y = torch.cat([ds.y_train, ds.y_test]).double()
        if not (torch.isfinite(y).all() and (y == y.round()).all() and y.min() >= 0 and y.max() < 10_000):
            bad = y[~(torch.isfinite(y) & (y == y.round()) & (y >= 0) & (y < 10_000))][0].item()
            raise ValueError(f"{ds.name}: labels must be class indices 0, 1, 2, ... (whole numbers below 10,000), "
                             f"got {bad:g}")
        classes = int(max(ds.y_train.max(), ds.y_test.max())) + 1
        one_hot = lambda y: torch.nn.functional.one_hot(y.long(), classes).float()  # noqa: E731
        return replace(ds, c_train=one_hot(ds.y_train), c_test=one_hot(ds.y_test), condition=condition)
    if ds.image_shape is None:
        raise ValueError(f"{ds.name}: condition 'top-half' needs images ([N, H, W] data)")
    h, w = ds.image_shape
    cut = (h // 2) * w
    return replace(ds, x_train=ds.x_train[:, cut:].contiguous(), x_test=ds.x_test[:, cut:].contiguous(),
                   c_train=ds.x_train[:, :cut].contiguous(), c_test=ds.x_test[:, :cut].contiguous(),
                   image_shape=(h - h // 2, w), condition=condition)
