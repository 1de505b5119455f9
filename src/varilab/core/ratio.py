"""Compression ratio = raw size / code size, both in bytes.

>>> compression_ratio(raw_bytes(512), 4)
1536.0
"""
from __future__ import annotations


def raw_bytes(points: int, dims: int = 3, dtype_bytes: int = 4) -> int:
    """Bytes of an uncompressed point set: points * dims * dtype_bytes (512 float32 xyz points: 6,144)."""
    for name, v in (("points", points), ("dims", dims), ("dtype_bytes", dtype_bytes)):
        if int(v) != v or v < 1:
            raise ValueError(f"raw_bytes: expected {name} a positive integer, got {v!r}")
    return int(points) * int(dims) * int(dtype_bytes)


def compression_ratio(raw_bytes: float, code_bytes: float) -> float:
    """raw / code; code is counted after quantisation and entropy coding (bytes, fractional allowed: bits / 8)."""
    if not raw_bytes > 0 or not code_bytes > 0:
        raise ValueError(f"compression_ratio: expected positive raw and code sizes in bytes, "
                         f"got raw_bytes={raw_bytes!r}, code_bytes={code_bytes!r}")
    return float(raw_bytes) / float(code_bytes)
