"""What the codec family's runs code: images [N, 1, H, W] in [0, 1], from the run's test split or an .npy; its
`varilab compress` and `varilab decompress` are the shared ones (`families.coding`) over this medium."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from .. import coding
from ..inputs import read
from ..protocol import Run


def images(ds, split: str = "train"):
    """A split of the run's data as images [N, 1, H, W]."""
    x = ds.x_train if split == "train" else ds.x_test
    return x.reshape(len(x), 1, *ds.image_shape)


def run_images(run: Run, spec: str):
    import torch

    if spec == "test":
        return images(run.data, "test")
    if not spec:
        raise ValueError("--input is required: an .npy of images or 'test'")
    x = read(spec, "--input")  # real, finite, not empty
    given = list(x.shape)
    if x.ndim == 3:
        x = x[:, None]
    shape = tuple(run.data.image_shape)
    if x.ndim != 4 or x.shape[1] != 1 or tuple(x.shape[2:]) != shape:
        raise ValueError(f"--input {spec}: expected images [N, {shape[0]}, {shape[1]}] like the run's, got {given}")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"--input {spec}: pixel values must lie in [0, 1]")
    return torch.as_tensor(x, dtype=torch.float32)


@contextmanager
def progress(run: Run, images: int, decoding: bool):
    """A progress bar on stderr over a model's coding work, where the model reports it (RECOMBINER's posterior fits
    and blocks: minutes); nothing for models that code in a blink."""
    m = run.model
    if not hasattr(m, "coding_work"):
        yield
        return
    from tqdm import tqdm

    what = "decoding blocks" if decoding else "fitting and coding posteriors"
    with tqdm(total=m.coding_work(images, decoding), desc=what, unit="step", leave=False, file=sys.stderr,
              disable=not sys.stderr.isatty()) as bar:
        m.on_step = bar.update
        try:
            yield
        finally:
            m.on_step = None


def symbols(run: Run, x):
    with progress(run, len(x), False):
        return run.model.symbols(x)


def from_symbols(run: Run, rows, grid):
    with progress(run, grid[0], True):
        return run.model.from_symbols(rows, grid)


def item(run: Run) -> list[int]:
    return [1, *run.data.image_shape]


IMAGES = coding.Medium("images", run_images, item, "pixel", lambda x: x.shape[0] * x.shape[-1] * x.shape[-2],
                       "images.npy", "images to compress: an .npy [N, H, W] or [N, 1, H, W] in [0, 1], or 'test' for "
                       "the run's test split", symbols=symbols, from_symbols=from_symbols)
COMPRESS, DECOMPRESS = coding.commands(IMAGES, "the codec run (varilab train --model vq-codec)")
CompressOptions, DecompressOptions = COMPRESS.options, DECOMPRESS.options


def encode(run: Run, x):
    return coding.encode(run, x, IMAGES)


def encoded(run: Run, x):
    return coding.encoded(run, x, IMAGES)


def decode(run: Run, data: bytes):
    """(images [N, 1, H, W], symbol rows) of a .vlc file's bytes written by this run's model."""
    return coding.decode(run, data, item(run), IMAGES)
