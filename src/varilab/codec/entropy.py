"""Range coding of symbol rows under integer tables, by constriction (`pip install 'varilab[codec]'`).

Row r of `symbols` [R, n] is coded with table `counts[r]` [K]; the stream is the coder's 32-bit words, little-endian.
A `Writer` and a `Reader` code several parts into one stream in order, each part either rows under a table each or
symbols under a table each picked by an index the decoder computes from the parts already read (a hyperprior's
scales): those are coded table by table, in the order of the index's values.
constriction rescales each table to its own fixed point deterministically, so equal integer tables give equal
streams on every machine.
"""
from __future__ import annotations

import numpy as np

INSTALL = "pip install 'varilab[codec]' (constriction==0.5.0)"


def _constriction():
    try:
        import constriction
    except ImportError as e:  # an optional extra, like the SAE one
        raise ImportError(f"entropy coding needs constriction: {INSTALL}") from e
    return constriction


def _models(counts: np.ndarray):
    c = _constriction()
    return [c.stream.model.Categorical(row.astype(np.float64), perfect=False) for row in counts]


def encode(symbols, counts) -> bytes:
    """The range-coded stream of symbols [R, n] (int, each < K) under counts [R, K] (int, positive)."""
    writer = Writer()
    writer.rows(symbols, counts)
    return writer.stream()


def decode(stream: bytes, counts, n: int) -> np.ndarray:
    """Symbols [R, n] back from `encode`'s stream under the same counts [R, K]."""
    return Reader(stream).rows(counts, n)


class Writer:
    """Parts of one stream, in order: `rows` (symbols [R, n] under counts [R, K]) and `indexed` (symbols [n], each
    under tables[index[i]])."""

    def __init__(self):
        self._encoder = _constriction().stream.queue.RangeEncoder()

    def rows(self, symbols, counts) -> None:
        s, c = np.asarray(symbols), np.asarray(counts)
        _check(s, c)
        for row, model in zip(s.astype(np.int32), _models(c)):
            self._encoder.encode(row, model)

    def indexed(self, symbols, index, tables) -> None:
        s, i, t = np.asarray(symbols).ravel(), np.asarray(index).ravel(), np.asarray(tables)
        if s.shape != i.shape or (i.size and (i.min() < 0 or i.max() >= len(t))):
            raise ValueError(f"expected one table index in [0, {len(t)}) per symbol, got {i.size} for {s.size}")
        _check(s[None], t[:1])
        models = _models(t)
        for k in np.unique(i):
            self._encoder.encode(s[i == k].astype(np.int32), models[k])

    def stream(self) -> bytes:
        return self._encoder.get_compressed().astype("<u4").tobytes()


class Reader:
    """A `Writer`'s parts back, read in the order they were written."""

    def __init__(self, stream: bytes):
        if len(stream) % 4:
            raise ValueError(f"a stream is whole 32-bit words; got {len(stream)} bytes")
        words = np.frombuffer(stream, dtype="<u4").astype(np.uint32)
        self._decoder = _constriction().stream.queue.RangeDecoder(words)

    def rows(self, counts, n: int) -> np.ndarray:
        c = np.asarray(counts)
        return np.stack([self._decoder.decode(m, n) for m in _models(c)]) if len(c) else np.zeros((0, n), np.int32)

    def indexed(self, index, tables) -> np.ndarray:
        i, models = np.asarray(index).ravel(), _models(np.asarray(tables))
        out = np.zeros(i.size, np.int32)
        for k in np.unique(i):
            out[i == k] = self._decoder.decode(models[k], int((i == k).sum()))
        return out


def _check(s: np.ndarray, c: np.ndarray) -> None:
    if s.ndim != 2 or c.ndim != 2 or len(s) != len(c):
        raise ValueError(f"expected symbols [R, n] and counts [R, K], got {list(s.shape)} and {list(c.shape)}")
    if (c <= 0).any():
        raise ValueError("every symbol needs a positive count")
    if s.size and (s.min() < 0 or s.max() >= c.shape[1]):
        raise ValueError(f"symbols must lie in [0, {c.shape[1]}), got [{s.min()}, {s.max()}]")
