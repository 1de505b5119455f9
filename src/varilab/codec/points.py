"""The baselines a point-cloud codec is measured against, each a function of one shape [N, 3] and a budget:

- Draco (Google's point-cloud codec, through DracoPy): every point quantised to `bits` per coordinate over the shape's
  bounding cube, then entropy coded; fewer bytes by keeping fewer points first (`keep`).
- Coordinate quantisation: `k` points kept (an even subsample), each coordinate uniform on [-radius, radius] to `b`
  bits, packed with no header; the most points whose bits fit the budget, at the bits per coordinate that decode
  closest to the shape (that choice is the file's first byte).

Shapes are expected centred and scaled into the ball of `radius` (the point-cloud data's normalisation); points
outside are clipped by the coordinate quantiser, as any fixed-range quantiser would."""
from __future__ import annotations

import numpy as np


def subsample(points: np.ndarray, keep: int) -> np.ndarray:
    """`keep` of the shape's points, evenly spread over its order (all of them when keep >= N)."""
    n = len(points)
    if keep >= n:
        return points
    return points[np.linspace(0, n - 1, keep).round().astype(int)]


def draco_encode(points: np.ndarray, bits: int, keep: int | None = None, level: int = 10) -> bytes:
    """A Draco point-cloud file of the shape: `bits` per coordinate (1 to 30), `keep` points (all when None)."""
    import DracoPy

    if not 1 <= bits <= 30:
        raise ValueError(f"Draco quantises to 1 to 30 bits per coordinate, got {bits}")
    pts = subsample(np.asarray(points, np.float32), keep or len(points))
    return DracoPy.encode(pts, quantization_bits=bits, compression_level=level)


def draco_decode(data: bytes) -> np.ndarray:
    import DracoPy

    return np.asarray(DracoPy.decode(data).points, dtype=np.float32).reshape(-1, 3)


def quantise(points: np.ndarray, bits: int, radius: float = 1.0) -> np.ndarray:
    """Integer codes 0 .. 2^bits - 1 of coordinates on [-radius, radius]: q = round((x + r) / (2r) (2^b - 1))."""
    levels = 2**bits - 1
    return np.rint((np.clip(points, -radius, radius) + radius) / (2 * radius) * levels).astype(np.int64)


def dequantise(codes: np.ndarray, bits: int, radius: float = 1.0) -> np.ndarray:
    return (codes / (2**bits - 1) * 2 * radius - radius).astype(np.float32)  # x = q / (2^b - 1) 2r - r


def coords_encode(points: np.ndarray, budget: int, radius: float = 1.0, score=None) -> bytes:
    """The coordinate baseline's file in at most `budget` bytes: one byte (b - 1, and the points its padding would
    add), then k points x 3 coordinates x b bits. Each b from 1 to 16 keeps as many points as fit; the b whose decoding is closest to the shape by
    `score(decoded, shape)` (lower is better) wins. Without room for one point at 1 bit, it is an error."""
    payload = 8 * (budget - 1)
    if payload < 3:
        raise ValueError(f"a budget of {budget} bytes holds no point (one byte names the bits, a point needs 3 bits)")
    best = None
    for b in range(1, 17):
        k = min(len(points), payload // (3 * b))
        if k < 1:
            break
        body = _pack(quantise(subsample(points, k), b, radius).ravel(), b)
        spare = 8 * len(body) // (3 * b) - k  # whole points the padding bits would add; the header drops them
        data = bytes([(b - 1) | spare << 4]) + body
        err = score(coords_decode(data, radius), points) if score else -k * b
        if best is None or err < best[0]:
            best = (err, data)
    return best[1]


def coords_decode(data: bytes, radius: float = 1.0) -> np.ndarray:
    b, spare = (data[0] & 15) + 1, data[0] >> 4
    codes = _unpack(data[1:], b)
    k = len(codes) // 3 - spare
    return dequantise(codes[:3 * k].reshape(k, 3), b, radius)


def _pack(codes: np.ndarray, bits: int) -> bytes:
    """Codes of `bits` bits each, most significant bit first, zero-padded to whole bytes."""
    bitsarr = ((codes[:, None] >> np.arange(bits - 1, -1, -1)) & 1).astype(np.uint8).ravel()
    return np.packbits(bitsarr).tobytes()


def _unpack(data: bytes, bits: int) -> np.ndarray:
    bitsarr = np.unpackbits(np.frombuffer(data, np.uint8))
    n = len(bitsarr) // bits
    weights = 1 << np.arange(bits - 1, -1, -1)
    return (bitsarr[:n * bits].reshape(n, bits).astype(np.int64) * weights).sum(1)
