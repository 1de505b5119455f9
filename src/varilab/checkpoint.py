"""Weights and training state on disk: safetensors only (nothing is unpickled), written atomically.

A checkpoint is one file: the model's tensors under "model.", the optimiser's under "optim.", any other
training state (an objective's moving average) under "state.", and a JSON header (epoch, step, optimiser
hyper-parameters). A write goes to a temporary file in the same
folder, is flushed to disk, then renamed over the old one, so a crash never leaves a broken file.
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` through a temporary file + fsync + rename (atomic on POSIX)."""
    path = Path(path)
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data  # a non-UTF-8 name: its bytes
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # the permissions a plain open() would give, not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a log file, one a line (none when it is missing). A last line cut short by a
    crash mid-append is dropped; a damaged line before it is a ValueError naming the file and line."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [(i, line) for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1) if line.strip()]
    rows = []
    for k, (i, line) in enumerate(lines):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError
        except ValueError:
            if k == len(lines) - 1:
                break  # a torn last line: the epoch it belonged to is recomputed or restored on resume
            raise ValueError(f"{path}: line {i} is not a JSON object of metrics") from None
        rows.append(row)
    return rows


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def save_weights(path: str | Path, model: nn.Module) -> None:
    atomic_write(path, st_save({k: _cpu(v) for k, v in model.state_dict().items()}))


def read_header(path: Path) -> dict:
    """The metadata of a safetensors file, reading only its header: 8 bytes of its length N (little-endian), N bytes
    of JSON, then the tensors' bytes, whose extent the header gives (so a truncated file is caught). Read by varilab
    rather than by safetensors' safe_open, which refuses a path that is not valid UTF-8. A damaged file is a
    ValueError naming it."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100 * 2**20:
                raise ValueError(f"a header of {n:,} bytes")
            header = json.loads(f.read(n))
            size = os.fstat(f.fileno()).st_size
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if size != 8 + n + end:
            raise ValueError(f"{size:,} bytes where the header promises {8 + n + end:,}")
        return header.get("__metadata__") or {}
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - any malformed header
        raise ValueError(f"{path}: damaged or not a safetensors file ({type(e).__name__}: {str(e)[:120]})") from None


def read_tensors(path: Path) -> tuple[dict, dict]:
    """(tensors, header metadata) of a safetensors file; a damaged file is a ValueError naming it."""
    header = read_header(path)
    return st_load(path.read_bytes()), header


def with_optional_state(model: nn.Module, tensors: dict) -> dict:
    """Fill the entries a model lists in `optional_state` ({name: value}) that older files lack, so that
    weights saved before a counter was added still load (the model reads the value as "unknown")."""
    own = model.state_dict()
    fill = {k: torch.full_like(own[k], v) for k, v in getattr(model, "optional_state", {}).items() if k not in tensors}
    return {**tensors, **fill}


def load_weights(path: str | Path, model: nn.Module) -> None:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no weights file")
    tensors, _ = read_tensors(path)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: {len(bad)} tensor(s) hold NaN or Inf ({bad[0]}); these weights are unusable, "
                         "so train the run again or resume it from a good checkpoint")
    own = model.state_dict()
    tensors = with_optional_state(model, tensors)
    missing, unexpected = sorted(own.keys() - tensors.keys()), sorted(tensors.keys() - own.keys())
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not fit the model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    for k, v in tensors.items():
        if v.shape != own[k].shape:
            raise ValueError(f"{path}: {k} has shape {list(v.shape)} but the model expects {list(own[k].shape)}")
    model.load_state_dict(tensors)


def save_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, meta: dict,
                    state: dict[str, torch.Tensor] | None = None) -> None:
    tensors = {f"model.{k}": _cpu(v) for k, v in model.state_dict().items()}
    tensors.update({f"state.{k}": _cpu(v) for k, v in (state or {}).items()})
    opt = optimizer.state_dict()
    scalars: dict[str, dict] = {}
    for i, state in opt["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{i}.{k}"] = _cpu(v)
            else:
                scalars.setdefault(str(i), {})[k] = v
    header = {"meta": json.dumps(meta), "param_groups": json.dumps(opt["param_groups"]),
              "optim_scalars": json.dumps(scalars)}
    atomic_write(path, st_save(tensors, metadata=header))


def load_checkpoint(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, torch.Tensor] | None = None) -> dict:
    """Restore model and optimiser in place, and fill `state` with the other training state saved beside them;
    return the meta dict saved with them."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    tensors, header = read_tensors(path)
    if "meta" not in header or "param_groups" not in header:
        raise ValueError(f"{path}: not a varilab checkpoint (its header has no training state)")
    model.load_state_dict(with_optional_state(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}))
    optim: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            optim.setdefault(int(i), {})[name] = v
    for i, extra in json.loads(header.get("optim_scalars", "{}")).items():
        optim.setdefault(int(i), {}).update(extra)
    optimizer.load_state_dict({"state": optim, "param_groups": json.loads(header["param_groups"])})
    if state is not None:
        state.update({k[6:]: v for k, v in tensors.items() if k.startswith("state.")})
    return json.loads(header["meta"])
