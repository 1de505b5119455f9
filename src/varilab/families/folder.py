"""A run folder's mechanics, the same for every family: config.json (family, format version and the
options), refusing to overwrite a run without --force, and clearing an old run once a new one starts.
Metrics, weights and checkpoints are written by the trainer (varilab.train), atomically."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..checkpoint import atomic_write
from ..report import REPORT
from ..train import CHECKPOINT, METRICS, STEPS, WEIGHTS
from . import options

CONFIG = "config.json"
FORMAT = 2  # 1: written before config.json recorded its format (VAE folders then recorded no family)
RUN_FILES = (CONFIG, METRICS, STEPS, WEIGHTS, CHECKPOINT, REPORT)


def read_config(run_dir: str | Path) -> dict:
    """config.json of a run folder, with "family" and "format" filled in for folders written before
    they were recorded."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a varilab run (no {CONFIG})")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of options, got {type(raw).__name__}")
    raw.setdefault("family", "vae")  # format 1 VAE folders
    raw.setdefault("format", 1)
    if raw["format"] > FORMAT:
        raise ValueError(f"{path}: written in run-folder format {raw['format']}, newer than this varilab's {FORMAT}; "
                         "upgrade varilab")
    return raw


def check_out_dir(out: Path, resume: bool, force: bool) -> None:
    """Refuse to overwrite a run unless --force; --resume needs a checkpoint."""
    if resume:
        if not (out / CHECKPOINT).exists():
            raise FileNotFoundError(f"{out}: nothing to resume (no {CHECKPOINT})")
        return
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    present = [f for f in RUN_FILES if (out / f).exists()]
    if present and not force:
        raise FileExistsError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it "
                              "or --force to overwrite it")


def begin(out: str | Path, family, opts, resume: bool, **extra) -> Path:
    """Start (or continue) writing a run: a fresh run first removes an old one's files; config.json records
    the family, the format and the options (with `extra` facts such as sizes derived from the data)."""
    out = Path(out)
    if not resume:
        for name in RUN_FILES + tuple(family.files):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    config = {"family": family.name, "format": FORMAT, **options.to_dict(opts), **extra}
    atomic_write(out / CONFIG, json.dumps(config, indent=2) + "\n")
    return out
