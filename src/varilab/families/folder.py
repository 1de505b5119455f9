"""A run folder's mechanics, the same for every family: config.json (family, format version and the
options), the lock that lets one process write it, refusing to overwrite a run without --force (and, with
it, keeping the old run aside until the new one has a checkpoint), and the size check before allocating.
Metrics, weights and checkpoints are written by the trainer (varilab.train), atomically."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

from ..run_files import CHECKPOINT, CONFIG, METRICS, REPORT, STEPS, WEIGHTS
from . import options

FORMAT = 2  # 1: written before config.json recorded its format (VAE folders then recorded no family)
RUN_FILES = (CONFIG, METRICS, STEPS, WEIGHTS, CHECKPOINT, REPORT)
LOCK = ".lock"  # holds the PID and command of the process writing the folder
PREVIOUS = ".previous-run"  # the run that --force replaces, kept until the new one has a checkpoint


class RunBusy(FileExistsError):
    """Another process is writing the run folder."""


@contextlib.contextmanager
def lock(out: Path, command: str):
    """Hold the run folder's exclusive lock while writing it (an OS file lock: it goes with the process that
    holds it, so a killed process leaves no stale lock); a second writer is refused, naming the first."""
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes the folder and holds the lock
        yield
        return
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    fd = _hold(out / LOCK, out, command)
    try:
        for tmp in out.glob(".*.tmp"):  # left by writes that a killed process never finished
            tmp.unlink(missing_ok=True)
        yield
    finally:
        if created and [p.name for p in out.iterdir()] == [LOCK]:  # a command that failed before writing anything
            shutil.rmtree(out)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _hold(lock_file: Path, what: Path, command: str) -> int:
    """The exclusive lock on `lock_file` (its descriptor), naming this process in it; refused, naming the process
    that holds it."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise RunBusy(f"{what} is being written by process {holder}; wait for it to finish or stop it") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} (varilab {command})\n".encode(), 0)
    return fd


@contextlib.contextmanager
def file_lock(path: Path, command: str):
    """Hold the lock of one output file (.NAME.lock beside it) while a command decides to write it and writes it:
    of two commands writing one file, the second is refused, naming the first."""
    lock_file = path.parent / f".{path.name}.lock"
    fd = _hold(lock_file, path, command)
    try:
        yield
    finally:
        lock_file.unlink(missing_ok=True)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def available_memory() -> int:
    """Bytes a new allocation can take: free GPU memory when training on a GPU, else MemAvailable."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_memory(need: int, what: str, fix: str) -> None:
    """Refuse, before allocating, work whose arrays cannot fit: `what` would need about `need` bytes."""
    have = available_memory()
    if need > have:
        raise ValueError(f"{what} would need about {need / 2**30:,.1f} GiB but {have / 2**30:,.1f} GiB is available; "
                         f"{fix}")


def check_fits(build, what: str, extra_bytes: int = 0) -> None:
    """Refuse, before allocating anything, a model that cannot train here: `build()` runs on PyTorch's meta
    device (shapes only), and training needs about 16 bytes a parameter (float32 weights, gradients and
    Adam's two moments) plus `extra_bytes` (activations)."""
    import torch

    with torch.device("meta"):
        model = build()
    n = sum(t.numel() for t in model.parameters()) + sum(t.numel() for t in model.buffers())
    need, have = 16 * n + extra_bytes, available_memory()
    if need > have:
        raise ValueError(f"{what} would need about {need / 2**30:,.1f} GiB to train ({n:,} parameters"
                         + (f", {extra_bytes / 2**30:,.1f} GiB of activations" if extra_bytes else "")
                         + f") but {have / 2**30:,.1f} GiB is available; choose smaller sizes")


def holds_run(out: Path) -> bool:
    """Whether `out` holds a run that trained at least one epoch (a folder killed before its first
    checkpoint holds none, and a new run may take it without --force)."""
    return (out / CHECKPOINT).exists() or (out / WEIGHTS).exists()


def set_aside(out: Path, family) -> Path | None:
    """Move the run in `out` to out/.previous-run before --force replaces it (settle() drops it or brings it back)."""
    present = [n for n in RUN_FILES + tuple(family.files) if (out / n).exists()]
    if not present:
        return None
    keep = out / PREVIOUS
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir()
    for name in present:
        os.replace(out / name, keep / name)
    return keep


def discard(out: Path, family) -> None:
    """Remove the files a run wrote into `out` (config.json, logs, weights and the family's own): a run that failed
    before its first checkpoint leaves nothing behind (an earlier run set aside comes back through settle)."""
    for name in RUN_FILES + tuple(family.files):
        p = out / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def settle(out: Path) -> str | None:
    """After a run that replaced another (or a kill during one): drop the old run once the new one has a
    checkpoint, else put the old one back. Returns what was done, for a message."""
    keep = out / PREVIOUS
    if not keep.is_dir():
        return None
    if holds_run(out):
        shutil.rmtree(keep)
        return "replaced"
    for p in keep.iterdir():
        target = out / p.name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        os.replace(p, target)
    keep.rmdir()
    return "restored"


def writer(out: Path) -> str | None:
    """The process writing the folder ("123 (varilab train)"), or None when none holds its lock."""
    lock_file = Path(out) / LOCK
    if not lock_file.is_file():
        return None
    fd = os.open(lock_file, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.read(fd, 200).decode(errors="replace").strip() or "another process"
    finally:
        os.close(fd)


def check_readable(run_dir: Path, needed: str) -> None:
    """A run whose file `needed` is missing because a process is writing the folder (a train --force starting up)
    is busy, not damaged: say so."""
    if not (Path(run_dir) / needed).exists():
        holder = writer(run_dir)
        if holder:
            raise RunBusy(f"{run_dir} is being written by process {holder} and has no {needed} yet; wait for its "
                          "first epoch to end")


def read_config(run_dir: str | Path) -> dict:
    """config.json of a run folder, with "family" and "format" filled in for folders written before
    they were recorded."""
    path = Path(run_dir) / CONFIG
    check_readable(Path(run_dir), CONFIG)
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
        from ..checkpoint import read_header

        read_header(out / CHECKPOINT)  # a damaged or truncated checkpoint is refused before any work
        return
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    present = [f for f in RUN_FILES if (out / f).exists()]
    if present and not force and holds_run(out):
        raise FileExistsError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it "
                              "or --force to overwrite it")


@contextlib.contextmanager
def new_run(out: Path, family, force: bool, command: str):
    """Write a new run into `out` as `varilab train` does, for a command that makes runs (`varilab unlearn`): the
    folder locked; a run already there replaced only with --force, and kept aside until the new one holds weights;
    a failed command leaves no part of its run behind."""
    out = Path(out)
    with lock(out, command):
        settle(out)
        check_out_dir(out, False, force)
        set_aside(out, family)
        try:
            yield out
        except BaseException:
            if not holds_run(out):
                discard(out, family)
            raise
        finally:
            settle(out)


def begin(out: str | Path, family, opts, resume: bool, **extra) -> Path:
    """Start (or continue) writing a run: a fresh run first removes an old one's files; config.json records
    the family, the format and the options (with `extra` facts such as sizes derived from the data)."""
    from ..checkpoint import atomic_write

    out = Path(out)
    if not resume:
        for name in RUN_FILES + tuple(family.files):
            p = out / name
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    config = {"family": family.name, "format": FORMAT, **options.to_dict(opts), **extra}
    atomic_write(out / CONFIG, json.dumps(config, indent=2) + "\n")
    return out


def trained(run_dir: Path, model, ds):
    """`model` with the run's weights, in eval mode, on the GPU when there is one; weights that do not fit the
    data `ds` are an error naming it."""
    import torch

    from ..checkpoint import load_weights

    check_readable(run_dir, WEIGHTS)
    try:
        load_weights(run_dir / WEIGHTS, model)
    except ValueError as e:
        raise ValueError(f"data {ds.name} ({ds.x_dim} features per row) does not fit the run in {run_dir}: {e}") from None
    return model.eval().to("cuda" if torch.cuda.is_available() else "cpu")
