"""The grid `varilab sample` draws an sde run's prior paths on: the data's (the union of the training series'
times), a .npy file of times (`--times`), or an even grid (`--dt` and/or `--points`; what is left out comes from
the data's range (t0, end]):

    --dt D --points N:  t0 + D, t0 + 2 D, .., t0 + N D
    --dt D:             the same up to the data's last time, N = floor((end - t0) / D)
    --points N:         t0 + (end - t0) i / N, i = 1 .. N
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

MAX_POINTS = 100_000  # the sde family's --points declares the same bound



def read_times(path: str) -> np.ndarray:
    """A .npy of times [T] (float64): real, finite, strictly increasing, 2 to MAX_POINTS of them; anything else is
    one ValueError naming the file."""
    what = f"--times {path}"
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: no such file")
    try:
        t = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # not a .npy, truncated, or an object array (pickle refused)
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{what}: not a readable .npy array of numbers ({why})") from None
    if not isinstance(t, np.ndarray) or not np.issubdtype(t.dtype, np.number) or np.iscomplexobj(t):
        raise ValueError(f"{what}: expected real numbers, got dtype {getattr(t, 'dtype', type(t).__name__)}")
    if t.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of times, got shape {list(t.shape)}")
    if len(t) < 2:
        raise ValueError(f"{what}: expected at least 2 times, got {len(t)}")
    if len(t) > MAX_POINTS:
        raise ValueError(f"{what}: {len(t):,} times; at most {MAX_POINTS:,} (draw longer grids in pieces)")
    t = t.astype(np.float64)
    if not np.isfinite(t).all():
        raise ValueError(f"{what}: {int((~np.isfinite(t)).sum())} NaN or Inf time(s), the first at index "
                         f"{int(np.argmax(~np.isfinite(t)))}")
    bad = np.flatnonzero(np.diff(t) <= 0)
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"{what}: times must increase strictly; they go from {t[i]:g} to {t[i + 1]:g} at index {i + 1}")
    return t


def even(start: float, end: float, dt: float | None, points: int | None) -> np.ndarray:
    """The even grid of --dt and/or --points after t0 = start (the module's table)."""
    if dt is None:
        return start + (end - start) * np.arange(1, points + 1) / points
    if points is None:
        n = math.floor((end - start) / dt + 1e-9)
        if n < 2:
            raise ValueError(f"--dt {dt:g} leaves {n} point(s) over the data's range ({start:g}, {end:g}]; choose a "
                             f"smaller --dt or give --points")
        if n > MAX_POINTS:
            raise ValueError(f"--dt {dt:g} makes {n:,} points over the data's range ({start:g}, {end:g}]; at most "
                             f"{MAX_POINTS:,} (choose a larger --dt or give --points)")
        points = n
    return start + dt * np.arange(1, points + 1)


def requested(start: float, end: float, times: str | None, dt: float | None, points: int | None) -> np.ndarray | None:
    """The grid the sample flags ask for (float64), or None for the data's own."""
    if times is not None and (dt is not None or points is not None):
        raise ValueError("--times gives the grid itself; leave out --dt and --points")
    if times is not None:
        t = read_times(times)
        if t[0] < start:
            raise ValueError(f"--times {times}: the first time {t[0]:g} is before the run's start t0 = {start:g}, "
                             f"where the prior begins")
        return t
    if dt is None and points is None:
        return None
    return even(start, end, dt, points)


__all__ = ["MAX_POINTS", "even", "read_times", "requested"]
