"""Range coding of symbol rows under integer tables, by constriction (`pip install 'varilab[codec]'`).

Row r of `symbols` [R, n] is coded with table `counts[r]` [K]; the stream is the coder's 32-bit words, little-endian.
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
    s, c = np.asarray(symbols), np.asarray(counts)
    if s.ndim != 2 or c.ndim != 2 or len(s) != len(c):
        raise ValueError(f"expected symbols [R, n] and counts [R, K], got {list(s.shape)} and {list(c.shape)}")
    if (c <= 0).any():
        raise ValueError("every symbol needs a positive count")
    if s.size and (s.min() < 0 or s.max() >= c.shape[1]):
        raise ValueError(f"symbols must lie in [0, {c.shape[1]}), got [{s.min()}, {s.max()}]")
    encoder = _constriction().stream.queue.RangeEncoder()
    for row, model in zip(s.astype(np.int32), _models(c)):
        encoder.encode(row, model)
    return encoder.get_compressed().astype("<u4").tobytes()


def decode(stream: bytes, counts, n: int) -> np.ndarray:
    """Symbols [R, n] back from `encode`'s stream under the same counts [R, K]."""
    c = np.asarray(counts)
    if len(stream) % 4:
        raise ValueError(f"a stream is whole 32-bit words; got {len(stream)} bytes")
    decoder = _constriction().stream.queue.RangeDecoder(np.frombuffer(stream, dtype="<u4").astype(np.uint32))
    return np.stack([decoder.decode(model, n) for model in _models(c)]) if len(c) else np.zeros((0, n), np.int32)
