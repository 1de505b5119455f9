"""kill -9 at random moments, then `train --resume`, until the run ends: its weights and every log line equal an
uninterrupted run's, for the models whose training keeps state beyond its weights (the vq-codec's tau schedule and code
re-seeding, the latent SDE's Brownian paths, the recombiner's prior updates)."""
import json
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch


def varilab(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "varilab", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path)


# each model's small arguments, and the epochs of its fast (2 kills) and full (10 kills) forms; the vq-codec's tau
# schedule and code re-seeding, the latent SDE's Brownian paths and the recombiner's prior updates all follow the step
KILLED = {
    "vae": (["--hidden", "64", "--latent-dim", "4", "--batch-size", "64"], 8, 30),
    "vq-codec-gumbel": (["--model", "vq-codec", "--quantiser", "gumbel", "--hidden", "16", "--latent", "8", "--groups",
                         "2", "--codes", "8", "--batch-size", "64", "--reseed-every", "5"], 6, 30),
    "latent-sde": (["--model", "latent-sde", "-n", "16", "--steps", "10", "--hidden", "8", "--context", "4", "--dt",
                    "0.05", "--ou-processes", "3", "--ratio", "4", "--batch-size", "4"], 6, 80),
    "recombiner": (["--model", "recombiner", "--units", "8", "--layers", "1", "--fourier", "2", "--kappa", "4",
                    "--em-rounds", "3", "--fit-steps", "5"], 20, 60),
}


# `make test` runs the vae's fast form (2 kills); the vq-codec's schedule and state after a resume are checked in
# process by tests/test_train.py (test_a_run_killed_mid_epoch_resumes_its_objectives_schedule_and_state), and every
# model's chain runs with 2 and with 10 kills under -m slow
FAST = ("vae",)


def _logged(path):
    """The log lines of a run without their timings."""
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in _lines(path)]


@pytest.mark.parametrize("model, epochs, kills", [
    p for name, (_, fast, full) in KILLED.items()
    for p in (pytest.param(name, fast, 2, id=f"{name}-fast", marks=() if name in FAST else pytest.mark.slow),
              pytest.param(name, full, 10, id=f"{name}-full", marks=pytest.mark.slow))])
def test_kill_minus_9_at_random_moments_then_resume_ends_as_an_uninterrupted_run(tmp_path, model, epochs, kills):
    args = [*KILLED[model][0], "--epochs", str(epochs), "--quiet"]
    straight, lines_at = varilab("train", "--out", tmp_path / "straight", *args), []
    while straight.poll() is None:  # the time from one epoch's line to the next (its checkpoint included)
        if len(_lines(tmp_path / "straight/metrics.jsonl")) > len(lines_at):
            lines_at.append(time.perf_counter())
        time.sleep(0.002)
    assert straight.wait(timeout=300) == 0, straight.stderr.read()
    epoch_s = float(np.median(np.diff(lines_at))) if len(lines_at) > 2 else 0.05
    out, rng = tmp_path / "killed", random.Random(0)
    killed, done = 0, lambda: len(_lines(out / "metrics.jsonl"))
    while killed < kills:
        resume = ["--resume"] if (out / "checkpoint.safetensors").exists() else []
        start = done()
        proc = varilab("train", "--out", out, *args, *resume)
        while proc.poll() is None and done() <= start:  # kill while it trains: after its next epoch line,
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5 * epoch_s))  # at a random moment within the epoch and a half that follow
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed += 1
    if not (_lines(out / "metrics.jsonl") and json.loads(_lines(out / "metrics.jsonl")[-1])["epoch"] == epochs):
        proc = varilab("train", "--out", out, *args, "--resume")
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert killed == kills
    metrics = _logged(out / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == list(range(1, epochs + 1))  # no missing or repeated line
    a, b = _weights(tmp_path / "straight/model.safetensors"), _weights(out / "model.safetensors")
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    # every logged value too: each epoch's line (the vq-codec's tau among them) and each step's line
    assert metrics == _logged(tmp_path / "straight/metrics.jsonl")
    assert _logged(out / "steps.jsonl") == _logged(tmp_path / "straight/steps.jsonl")
    assert not list(out.glob(".*.tmp"))
