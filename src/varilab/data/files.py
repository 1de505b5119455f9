"""User arrays from disk: `.npy`, `.npz` (key `x`, optional `y`) or `.csv` (numbers only, optional header)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SUFFIXES = (".npy", ".npz", ".csv")


def file_suffix(path: Path, suffixes) -> str:
    """The lower-case suffix of an existing file that is one of `suffixes`; one error naming the file otherwise."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected one of {', '.join(suffixes)}")
    suffix = path.suffix.lower()
    if suffix not in suffixes:
        raise ValueError(f"{path}: unsupported file type {suffix or '(none)'}; use one of {', '.join(suffixes)}")
    return suffix


def read_array(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read x (and y when the file has it). Never unpickles: object arrays are refused."""
    path = Path(path)
    suffix = file_suffix(path, SUFFIXES)
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if "x" not in f.files:
                    raise ValueError(f"{path}: expected an array named 'x' in the .npz, found {sorted(f.files)}")
                return f["x"], (f["y"] if "y" in f.files else None)
        return _read_csv(path), None
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot read it as {suffix}: {e}") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot read it: {e.strerror or e}") from None


def _read_csv(path: Path) -> np.ndarray:
    with open(path) as f:
        first = f.readline()
    try:
        [float(v) for v in first.strip().split(",")]
        skip = 0
    except ValueError:
        skip = 1  # a header row
    return np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2, dtype=np.float64)
