"""The `.vlc` file: self-describing, checked, and tied to the model that wrote it.

    magic  b"\x89VLC"         4 bytes (the high byte catches text-mode copies)
    version                  uint16, little-endian
    header length H          uint32
    header                   H bytes of UTF-8 JSON: {"model": sha256 of the weights, "meta": {...}} (shapes, rates)
    stream length S          uint64
    stream                   S bytes
    crc32                    uint32 of everything before it

`unpack` refuses, each with a one-line ValueError: a file that is not one, a newer version, a truncated or
corrupted one (length or checksum), and one written by another model.
"""
from __future__ import annotations

import hashlib
import json
import struct
import zlib

MAGIC, VERSION = b"\x89VLC", 1
_FIXED = struct.Struct("<4sHI")


def model_hash(weights: bytes) -> str:
    """The identity a file carries: sha256 of the model's weights file (safetensors bytes), hex."""
    return hashlib.sha256(weights).hexdigest()


def pack(model: str, meta: dict, stream: bytes) -> bytes:
    header = json.dumps({"model": model, "meta": meta}, sort_keys=True).encode()
    body = _FIXED.pack(MAGIC, VERSION, len(header)) + header + struct.pack("<Q", len(stream)) + stream
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes, model: str | None = None) -> tuple[dict, bytes]:
    """(meta, stream) of a `.vlc` file's bytes; with `model`, the file must have been written by that model."""
    if len(data) < 4 or data[:4] != MAGIC:
        raise ValueError("not a varilab compressed file (.vlc): its first bytes are not the format's magic")
    if len(data) < _FIXED.size:
        raise ValueError(f"truncated file: {len(data)} bytes, shorter than the format's fixed header")
    _, version, h = _FIXED.unpack_from(data)
    if version > VERSION:
        raise ValueError(f"written by a newer format, version {version}; this varilab reads up to version {VERSION}")
    at = _FIXED.size + h
    if len(data) < at + 8:
        raise ValueError(f"truncated file: {len(data)} bytes, the header alone needs {at + 8}")
    (s,) = struct.unpack_from("<Q", data, at)
    end = at + 8 + s
    if len(data) != end + 4:
        raise ValueError(f"truncated or extended file: {len(data)} bytes where the header promises {end + 4}")
    if struct.unpack_from("<I", data, end)[0] != zlib.crc32(data[:end]):
        raise ValueError("corrupted file: its checksum does not match its bytes")
    header = json.loads(data[_FIXED.size:at])
    if model is not None and header["model"] != model:
        raise ValueError(f"written by another model (weights {header['model'][:12]}..., this run's are "
                         f"{model[:12]}...): decode it with the run that wrote it")
    return header["meta"], data[at + 8:end]
