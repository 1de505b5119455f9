"""What `varilab unlearn --forget` names, as positions in a classifier run's training rows: every row of a class
(class:K), rows of the data as given (indices:FILE.npy, each a row the run trained on), or a seeded random share
(random:SHARE)."""
from __future__ import annotations

from pathlib import Path

FORMS = "class:K, indices:FILE.npy or random:SHARE"


def forget_rows(spec: str, y_train, y_test, train_rows, seed: int):
    """(positions [F] into the training rows, sorted; one line saying what they are; the class K or None).
    `train_rows` [N]: each training row's index in the data as given."""
    kind, _, value = str(spec).partition(":")
    if kind == "class":
        return _class(value, y_train, y_test)
    if kind == "random":
        return _random(value, len(y_train), seed), f"a random {float(value):.4g} of the training rows", None
    if kind == "indices":
        return _indices(value, train_rows), f"the rows listed in {value}", None
    raise ValueError(f"--forget {spec!r}: expected {FORMS}")


def _class(value: str, y_train, y_test):
    import torch

    try:
        k = int(value)
    except ValueError:
        raise ValueError(f"--forget class:{value}: expected a class index, e.g. class:0") from None
    classes = sorted({int(c) for c in torch.cat([y_train, y_test]).unique()})
    if k not in classes:
        raise ValueError(f"--forget class:{k}: the data have no class {k}; their classes are "
                         f"{', '.join(map(str, classes))}")
    rows = (y_train == k).nonzero().squeeze(1)
    if len(rows) == len(y_train):
        raise ValueError(f"--forget class:{k}: every training row is of class {k}; nothing would remain")
    return rows, f"every training row of class {k} ({len(rows):,})", k


def _random(value: str, n: int, seed: int):
    import torch

    try:
        share = float(value)
    except ValueError:
        share = float("nan")
    if not 0 < share < 1:
        raise ValueError(f"--forget random:{value}: the share must lie in (0, 1), e.g. random:0.1")
    count = round(share * n)
    if not 1 <= count < n:
        raise ValueError(f"--forget random:{value}: {count} of the run's {n:,} training rows; choose a share that "
                         "forgets at least one row and keeps at least one")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:count].sort().values


def _indices(value: str, train_rows):
    import numpy as np
    import torch

    path = Path(value)
    if path.suffix.lower() != ".npy":
        raise ValueError(f"--forget indices:{value}: expected an .npy file of row indices")
    if not path.is_file():
        raise ValueError(f"--forget indices:{value}: no such file")
    try:
        idx = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"--forget indices:{value}: not a readable .npy file ({e})") from None
    if idx.size == 0:
        return torch.zeros(0, dtype=torch.long)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"--forget indices:{value}: expected a 1-D array of integer row indices, got {idx.dtype} "
                         f"of shape {list(idx.shape)}")
    rows = train_rows.numpy()
    last = max(int(rows.max()), 0)
    bad = idx[(idx < 0)]
    if bad.size:
        raise ValueError(f"--forget indices:{value}: index {int(bad[0])} is negative; rows count from 0")
    uniq, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"--forget indices:{value}: row {int(uniq[counts > 1][0])} is listed "
                         f"{int(counts[counts > 1][0])} times; list each row once")
    position = np.full(max(last, int(idx.max())) + 1, -1, dtype=np.int64)
    position[rows] = np.arange(len(rows))
    found = position[idx]
    if (found < 0).any():
        first = int(idx[found < 0][0])
        where = (f"beyond the last training row ({last})" if first > last
                 else "not among the run's training rows (a test row)")
        raise ValueError(f"--forget indices:{value}: row {first} is {where} ({int((found < 0).sum()):,} such rows)")
    if len(found) == len(rows):
        raise ValueError(f"--forget indices:{value}: every training row is listed; nothing would remain")
    return torch.as_tensor(np.sort(found))
