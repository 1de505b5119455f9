"""Time series observed at known times: a user's `.npy` [series, time] or [series, time, dims] with an optional
times array ([time], shared, or [series, time], each series its own grid), and generated fractional processes.

`fbm`: exact type-II fractional Brownian motion (Cholesky, `varilab.sde.fbm`) observed with Gaussian noise.
`fou`: the fractional Ornstein-Uhlenbeck process dX = -theta X dt + sigma dB_H, X_0 = 0, stepped on the exact fBM
increments of the grid, observed with Gaussian noise. Both on t_i = i / steps, i = 1 .. steps; with `observed` < 1
each series keeps its own random share of those times.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .sequences import check_sequences, npy_file, split

GENERATED = ("fou", "fbm")


def fractional(kind: str, n: int, steps: int, hurst: float, noise: float = 0.05, observed: float = 1.0,
               theta: float = 1.0, sigma: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(times [n, T], values [n, T, 1]) of `fbm` or `fou` paths observed with noise of std `noise`."""
    from ..sde.fbm import fbm_paths

    if kind not in GENERATED:
        raise ValueError(f"unknown generated series {kind!r}; choose one of {', '.join(GENERATED)}")
    if n < 1 or steps < 2 or not 0 < observed <= 1 or noise < 0:
        raise ValueError(f"need n >= 1, steps >= 2, observed in (0, 1] and noise >= 0; got {n}, {steps}, {observed}, "
                         f"{noise}")
    t = np.arange(1, steps + 1) / steps
    b = fbm_paths(hurst, t, n, seed=seed)
    if kind == "fbm":
        x = b
    else:
        db = np.diff(np.concatenate([np.zeros((n, 1)), b], 1), axis=1)
        x = np.zeros((n, steps))
        prev = np.zeros(n)
        for i in range(steps):  # X_i = X_{i-1} - theta X_{i-1} dt + sigma (B_i - B_{i-1})
            prev = prev - theta * prev / steps + sigma * db[:, i]
            x[:, i] = prev
    rng = np.random.default_rng(seed + 1)
    y = x + noise * rng.standard_normal(x.shape)
    times = np.broadcast_to(t, (n, steps))
    if observed < 1:
        keep = max(2, int(round(observed * steps)))
        idx = np.sort(np.stack([rng.choice(steps, keep, replace=False) for _ in range(n)]), 1)
        times, y = np.take_along_axis(times, idx, 1), np.take_along_axis(y, idx, 1)
    return times.astype(np.float32), y[..., None].astype(np.float32)


def check_times(times, series: int, steps: int, what: str) -> np.ndarray:
    """Times [T] or [series, T]: real, finite and strictly increasing along each series. Returns [series, T]."""
    t = np.asarray(times)
    if t.dtype == object or not np.issubdtype(t.dtype, np.number) or np.iscomplexobj(t):
        raise ValueError(f"{what}: expected real numbers, got dtype {t.dtype}")
    if t.ndim == 1:
        t = np.broadcast_to(t, (series, len(t)))
    if t.ndim != 2 or t.shape != (series, steps):
        raise ValueError(f"{what}: expected times of shape [{steps}] or [{series}, {steps}] to match the values, got "
                         f"{list(np.asarray(times).shape)}")
    if not np.isfinite(t).all():
        raise ValueError(f"{what}: {int((~np.isfinite(t)).sum())} NaN or Inf time(s)")
    bad = np.argwhere(np.diff(t, axis=1) <= 0)
    if len(bad):
        s, i = (int(v) for v in bad[0])
        raise ValueError(f"{what}: times must increase strictly along each series; series {s} goes from {t[s, i]:g} "
                         f"to {t[s, i + 1]:g} at step {i + 1}")
    return t.astype(np.float32)


@dataclass
class TimeSeries:
    """Training and test series: times [S, T] and values [S, T, D] float32 tensors."""

    name: str
    t_train: "torch.Tensor"
    y_train: "torch.Tensor"
    t_test: "torch.Tensor"
    y_test: "torch.Tensor"

    @property
    def dims(self) -> int:
        return self.y_train.shape[2]

    x_dim = dims  # the name run folders report

    @property
    def steps(self) -> int:
        return self.y_train.shape[1]

    @property
    def start(self) -> float:
        return 0.0 if float(self.t_train.min()) > 0 else float(min(self.t_train.min(), self.t_test.min()))

    @property
    def end(self) -> float:
        return float(max(self.t_train.max(), self.t_test.max()))

    def summary(self) -> str:
        return (f"data {self.name}: {len(self.y_train)} training and {len(self.y_test)} test series of {self.steps} "
                f"observations and {self.dims} dimension(s) on [{float(self.t_train.min()):.4g}, "
                f"{float(self.t_train.max()):.4g}], values in [{float(self.y_train.min()):.4g}, "
                f"{float(self.y_train.max()):.4g}]")

    def for_trainer(self):
        """A `Dataset` for `varilab.train.fit`: each row is a series' times, then its values (`models.latent_sde.unpack`)."""
        import torch

        from .dataset import Dataset

        pack = lambda t, y: torch.cat([t, y.flatten(1)], 1)  # noqa: E731
        return Dataset(self.name, pack(self.t_train, self.y_train), pack(self.t_test, self.y_test))


def load(spec: str, times: str | None = None, n: int = 40, steps: int = 100, hurst: float = 0.7, noise: float = 0.05,
         observed: float = 1.0, test_fraction: float = 0.2, seed: int = 0) -> TimeSeries:
    """"fou" or "fbm" (generated: n series) or a .npy file [series, time(, dims)] with optional `times` (.npy [time]
    or [series, time]; default 0, 1, 2, ...), split by series (a seeded shuffle)."""
    import torch

    if spec in GENERATED:
        if times is not None:
            raise ValueError(f"--times applies to a .npy file; {spec} makes its own times")
        t, y = fractional(spec, n, steps, hurst, noise, observed, seed=seed)
        name = f"{spec} (H = {hurst:g})"
    else:
        path = npy_file(spec, "series data are 'fou', 'fbm' or a .npy file [series, time(, dims)]")
        raw = np.load(path, allow_pickle=False)
        y = check_sequences(raw[..., None] if np.ndim(raw) == 2 else raw, str(path))
        if times is None:
            t = np.broadcast_to(np.arange(y.shape[1], dtype=np.float32), y.shape[:2])
        else:
            if not Path(times).exists():
                raise FileNotFoundError(f"--times {times}: no such file")
            t = check_times(np.load(times, allow_pickle=False), y.shape[0], y.shape[1], f"--times {times}")
        name = path.stem
    tr, te = split(len(y), test_fraction, seed, "series")
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return TimeSeries(name, as_t(t[tr]), as_t(y[tr]), as_t(t[te]), as_t(y[te]))
