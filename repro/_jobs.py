"""Reproductions' runs of the CLI, two at a time (one thread each on a two-core machine), and the split a codec run
of a file codes."""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys


def varilab(*args: str) -> list[str]:
    return [sys.executable, "-m", "varilab", *args]


def train_then_eval(out: str, *train_args: str) -> str:
    """A shell line: `varilab train ... --out OUT` quietly, then `varilab eval OUT --json`."""
    train = varilab("train", *train_args, "--out", out, "--force", "--quiet")
    return " ".join(map(shlex.quote, train)) + " > /dev/null && " + " ".join(
        map(shlex.quote, varilab("eval", out, "--json")))


def run_all(lines: dict, workers: int = 2) -> dict:
    """{key: the JSON its shell line printed last}, the lines run `workers` at a time, one thread each, the next line
    starting as soon as any running one ends; a failure raises with the line's last error."""
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

    def one(line):
        return subprocess.run(["sh", "-c", line], env=env, capture_output=True, text=True)

    with ThreadPoolExecutor(workers) as pool:
        done = dict(zip(lines, pool.map(one, lines.values())))
    for key, proc in done.items():
        if proc.returncode:
            raise RuntimeError(f"{key}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    return {key: json.loads(proc.stdout.strip().splitlines()[-1]) for key, proc in done.items()}


def codec_split(path) -> tuple:
    """(train, test) images [N, H, W] of an .npy file as the codec family splits it (seed 0, 20% held out)."""
    from varilab.data import load

    ds = load(str(path), test_fraction=0.2, seed=0)
    shape = ds.image_shape
    return ds.x_train.numpy().reshape(-1, *shape), ds.x_test.numpy().reshape(-1, *shape)
