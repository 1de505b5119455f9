"""Sequence data [sequences, time, dims]: a user's array, checked like every other input, and a generated
process whose probabilistic structure is known.

`switching`: 2-D sequences made of 10-step segments, each one cycle of either a circle A (centre (0.4, 0),
radius 0.4) or a figure-eight B (0.8 (sin theta, sin theta cos theta)), both starting and ending at the origin,
so a sequence is smooth wherever it switches; each segment is A with probability `p_circle`, independently.
Over one cycle the circle's mean x is 0.4 and the figure-eight's is 0, which gives `p_circle_estimate`: the share
of A in any long stretch, whatever its phase, is mean(x) / 0.4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIRCLE_MEAN_X = 0.4


def switching(n: int, length: int, p_circle: float = 0.7, period: int = 10, noise: float = 0.0, seed: int = 0):
    """(x [n, length, 2] float32, segment labels [n, length] with 1 for the circle, 0 for the figure-eight)."""
    if not 0 <= p_circle <= 1:
        raise ValueError(f"p_circle must lie in [0, 1], got {p_circle}")
    if n < 1 or length < 1 or period < 2:
        raise ValueError(f"need n >= 1, length >= 1 and period >= 2, got {n}, {length} and {period}")
    rng = np.random.default_rng(seed)
    segments = -(-length // period)
    is_a = rng.random((n, segments)) < p_circle
    labels = np.repeat(is_a, period, axis=1)[:, :length]
    theta = 2 * math.pi * (np.arange(length) % period + 1) / period  # one cycle per segment, back at 0 at its end
    circle = np.stack([0.4 - 0.4 * np.cos(theta), 0.4 * np.sin(theta)], -1)
    eight = np.stack([0.8 * np.sin(theta), 0.8 * np.sin(theta) * np.cos(theta)], -1)
    x = np.where(labels[..., None], circle[None], eight[None])
    if noise > 0:
        x = x + noise * rng.standard_normal(x.shape)
    return x.astype(np.float32), labels.astype(np.int64)


def p_circle_estimate(x: np.ndarray) -> float:
    """The share of circle cycles in sequences x [..., time, 2] of the switching process: mean(x) / 0.4."""
    return float(np.asarray(x)[..., 0].mean() / CIRCLE_MEAN_X)


def check_sequences(x, what: str) -> np.ndarray:
    """A user's sequences: numeric, real, finite, [sequences, time, dims] with at least 2 sequences and 2 steps."""
    x = np.asarray(x)
    if x.dtype == object or np.iscomplexobj(x) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise ValueError(f"{what}: expected real numbers, got dtype {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"{what}: expected sequences of shape [sequences, time, dims], got {x.ndim} dimension(s) "
                         f"with shape {list(x.shape)}" + ("; one sequence of [time, dims] needs a leading axis of 1"
                                                          if x.ndim == 2 else ""))
    if x.shape[0] < 1 or x.shape[1] < 2 or x.shape[2] < 1:
        raise ValueError(f"{what}: expected at least 1 sequence of 2 steps and 1 dimension, got {list(x.shape)}")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        s, t, d = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what}: {int(bad.sum())} NaN or Inf value(s), the first in sequence {s} at step {t} "
                         f"(dimension {d}); a shorter sequence cannot be padded with NaN: cut all to one length")
    return x


@dataclass
class Sequences:
    """Training and test sequences [S, T, D] float32 tensors, split by sequence."""

    name: str
    x_train: "torch.Tensor"
    x_test: "torch.Tensor"
    labels_test: np.ndarray | None = None  # the switching process's segment labels of the test sequences

    @property
    def x_dim(self) -> int:
        return self.x_train.shape[2]

    @property
    def length(self) -> int:
        return self.x_train.shape[1]

    def summary(self) -> str:
        x = self.x_train
        return (f"data {self.name}: {x.shape[0]} training and {self.x_test.shape[0]} test sequences of {x.shape[1]} "
                f"steps and {x.shape[2]} dimensions, range [{float(x.min()):.4g}, {float(x.max()):.4g}]")

    def for_trainer(self):
        """A `Dataset` for `varilab.train.fit`: rows are flattened sequences; the condition holds each training
        sequence's index (its adaptive vectors) and -1 for test sequences, which have none."""
        import torch

        from .dataset import Dataset

        s, t = len(self.x_train), len(self.x_test)
        return Dataset(self.name, self.x_train.reshape(s, -1), self.x_test.reshape(t, -1),
                       c_train=torch.arange(float(s))[:, None], c_test=torch.full((t, 1), -1.0), condition="index")


def npy_file(spec: str, accepted: str) -> Path:
    """The path of a user's .npy file, or an error saying what is `accepted` or that the file is missing."""
    path = Path(spec)
    if path.suffix != ".npy":
        raise ValueError(f"{accepted}, got {spec!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def split(count: int, test_fraction: float, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(training, test) indices of `count` rows: a seeded shuffle, the last `test_fraction` of it held out."""
    n_test = int(round(test_fraction * count))
    if n_test < 1 or n_test >= count:
        raise ValueError(f"{count} {what} cannot be split with test_fraction {test_fraction:g}: both parts need at "
                         f"least one")
    order = np.random.default_rng(seed).permutation(count)
    return order[:-n_test], order[-n_test:]


def load(spec: str, n: int = 24, length: int = 100, p_circle: float = 0.7, test_fraction: float = 1 / 3,
         seed: int = 0) -> Sequences:
    """"switching" (generated: n sequences of `length` steps) or a .npy file [sequences, time, dims], split into
    training and test sequences (a seeded shuffle; the last `test_fraction` of them are the test sequences)."""
    import torch

    labels = None
    if spec == "switching":
        x, labels = switching(n, length, p_circle, seed=seed)
    else:
        path = npy_file(spec, "sequence data are 'switching' or a .npy file [sequences, time, dims]")
        x = check_sequences(np.load(path, allow_pickle=False), str(path))
    train, test = split(len(x), test_fraction, seed, "sequences")
    return Sequences(Path(spec).stem if spec != "switching" else spec, torch.from_numpy(x[train]),
                     torch.from_numpy(x[test]), None if labels is None else labels[test])
