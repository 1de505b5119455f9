"""A run folder that nothing corrupts: the lock, --force that never leaves the user with nothing, damaged
files, the complete NaN guard, strict input types, and kill -9 at random moments (docs/reliability.md)."""
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from varilab.cli import main

FAST = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--batch-size", "64", "--quiet"]


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err, pattern):
    lines = [line for line in err.strip().splitlines() if line]
    assert rc == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def varilab(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "varilab", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def run(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli(capsys, "train", "--out", out, *FAST)[0] == 0
    return out


def test_a_second_train_on_the_same_folder_is_refused_and_the_first_is_intact(tmp_path, capsys):
    out = tmp_path / "run"
    first = varilab("train", "--out", out, "--epochs", "25", "--hidden", "128", "--quiet")
    deadline = time.time() + 60
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:  # the first is training
        time.sleep(0.05)
    rc, _, err = cli(capsys, "train", "--out", out, "--model", "discrete-vae", "--force", *FAST)
    one_line_error(rc, err, rf"{re.escape(str(out))} is being written by process {first.pid} \(varilab train\)")
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert json.loads((out / "config.json").read_text())["model"] == "vae"
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == list(range(1, 26))
    rc, stdout, err = cli(capsys, "eval", out, "--json")
    assert rc == 0, err
    # once the first has finished, the lock is free again (it dies with its process: nothing stale)
    assert cli(capsys, "train", "--out", out, "--force", *FAST)[0] == 0


def test_force_with_bad_data_or_a_run_that_dies_at_once_keeps_the_old_run(run, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    x = np.ones((50, 4))
    x[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    rc, _, err = cli(capsys, "train", "--out", run, "--force", "--data", tmp_path / "nan.npy", *FAST)
    one_line_error(rc, err, "1 NaN")
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before
    # a new run that diverges in its first epoch: the old one is put back
    np.save(tmp_path / "huge.npy", np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32) * 1e19)
    rc, _, err = cli(capsys, "train", "--out", run, "--force", "--likelihood", "gaussian", "--data", tmp_path / "huge.npy",
                     *FAST)
    assert rc == 1 and "before any checkpoint" in err and "the earlier run" not in err  # --quiet
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert not (run / ".previous-run").exists()


def test_a_failed_train_leaves_no_stub(tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((10, 4, 2, 2)))
    rc, _, _ = cli(capsys, "train", "--out", tmp_path / "new", "--data", tmp_path / "bad.npy", *FAST)
    assert rc == 2 and not (tmp_path / "new").exists()


def test_a_train_that_fails_in_training_leaves_no_lock_and_no_config(tmp_path, capsys):
    """The default estimator cannot draw a discrete-vae's categorical latents: the run fails after config.json was
    written, and the folder it created goes with it."""
    rc, _, err = cli(capsys, "train", "--model", "discrete-vae", "--latent-dim", "3", "--hidden", "24", "--epochs", "1",
                     "--out", tmp_path / "dv", "--quiet")
    assert rc == 2 and "choose estimator 'score'" in err and not (tmp_path / "dv").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    rc, _, _ = cli(capsys, "train", "--model", "discrete-vae", "--latent-dim", "3", "--hidden", "24", "--epochs", "1",
                   "--out", tmp_path / "mine", "--quiet")
    assert rc == 2 and sorted(p.name for p in (tmp_path / "mine").iterdir()) == [".lock", "notes.txt"]


def test_a_folder_killed_before_its_first_checkpoint_takes_a_new_run(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"model": "vae"}')
    (out / "metrics.jsonl").write_text("")
    (out / ".config.json.abc.tmp").write_text("half")
    assert cli(capsys, "train", "--out", out, *FAST)[0] == 0  # no --force needed: nothing had trained
    assert not list(out.glob(".*.tmp"))  # temporary files of interrupted writes are cleaned


def test_sample_never_overwrites_a_file_without_force(run, tmp_path, capsys):
    target = tmp_path / "x.npy"
    np.save(target, np.arange(3))
    rc, _, err = cli(capsys, "sample", run, "--n", "4", "--out", target)
    one_line_error(rc, err, "x.npy exists; pass --force")
    assert np.load(target).tolist() == [0, 1, 2]
    assert cli(capsys, "sample", run, "--n", "4", "--out", target, "--force")[0] == 0
    assert np.load(target).shape == (4, 8, 8)


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_damaged_weights_give_one_line_for_every_command(run, capsys, damage):
    path = run / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    for command in (["eval", run, "--json"], ["diagnose", run], ["report", run, "--force"], ["sample", run]):
        rc, _, err = cli(capsys, *command)
        assert "model.safetensors" in one_line_error(rc, err, "model.safetensors: damaged or not a safetensors file")


@pytest.mark.parametrize("text", ["null", "[1, 2]", "{not json"])
def test_a_damaged_config_gives_one_line(run, capsys, text):
    (run / "config.json").write_text(text)
    rc, _, err = cli(capsys, "eval", run)
    assert "config.json" in one_line_error(rc, err, r"config.json: (expected a JSON object|not valid JSON)")


def test_a_damaged_sae_health_file_is_measured_again(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((600, 8)).astype(np.float32))
    out = tmp_path / "sae"
    assert cli(capsys, "train", "--model", "relu", "--data", tmp_path / "x.npy", "--features", "16", "--epochs", "1",
               "--batch-size", "100", "--out", out, "--quiet")[0] == 0
    good = json.loads((out / "health.json").read_text())
    (out / "health.json").write_text('{"l0": ')  # cut short
    rc, stdout, err = cli(capsys, "diagnose", out, "--json")
    assert rc == 0, err
    assert json.loads(stdout)["explained_variance"] == pytest.approx(good["explained_variance"])


def test_resume_on_a_truncated_checkpoint_gives_one_line(run, capsys):
    path = run / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    rc, _, err = cli(capsys, "train", "--out", run, "--resume", "--epochs", "3")
    assert "checkpoint.safetensors" in one_line_error(rc, err, "checkpoint.safetensors: damaged")


def test_a_torn_last_metrics_line_is_dropped_and_recomputed(run, capsys):
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])  # a kill in the middle of an append
    assert cli(capsys, "report", run, "--force")[0] == 0
    assert cli(capsys, "train", "--out", run, "--resume", "--epochs", "3", "--quiet")[0] == 0
    epochs = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [m["epoch"] for m in epochs] == [1, 2, 3] and epochs[1] == json.loads(lines[1])  # restored from the checkpoint
    metrics.write_text("oops\n" + metrics.read_text())
    rc, _, err = cli(capsys, "report", run, "--force")
    one_line_error(rc, err, "metrics.jsonl: line 1 is not a JSON object")


def test_a_nan_gradient_saves_nothing_non_finite(tmp_path):
    from varilab.checkpoint import load_checkpoint
    from varilab.core import vae_loss
    from varilab.data import load
    from varilab.models import build_model
    from varilab.train import TrainingDiverged, adam, fit

    ds = load("digits")
    model = build_model("vae", ds.x_dim, latent_dim=2, hidden=[16])
    calls = {"n": 0}
    steps_per_epoch = -(-len(ds.x_train) // 128)

    def objective(m, x, **kw):
        out = vae_loss(m, x)
        calls["n"] += m.training  # training steps only, not the test split's evaluation
        if calls["n"] == 2 * steps_per_epoch:  # the last step of epoch 2: a finite loss, a NaN gradient
            w = next(m.parameters())
            out["loss"] = out["loss"] + torch.sqrt(w.sum() * 0.0)  # d sqrt(u)/du at 0 is inf; times 0: NaN
        return out

    with pytest.raises(TrainingDiverged, match=r"weights became non-finite in epoch 2 .*checkpoint \(epoch 1\) is kept"):
        fit(model, ds, out=tmp_path, epochs=3, objective=objective, quiet=True)
    again = build_model("vae", ds.x_dim, latent_dim=2, hidden=[16])
    assert load_checkpoint(tmp_path / "checkpoint.safetensors", again, adam(again, 1e-3, torch.device("cpu")))["epoch"] == 1
    assert all(torch.isfinite(p).all() for p in again.parameters())
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(tmp_path / "model.safetensors").values())


def test_non_finite_weights_are_refused_and_json_output_never_holds_a_bare_nan(run, capsys):
    from safetensors.torch import load_file, save_file

    from varilab.commands import json_ready

    weights = load_file(run / "model.safetensors")
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, run / "model.safetensors")
    rc, _, err = cli(capsys, "eval", run, "--json")
    one_line_error(rc, err, r"model.safetensors: \d+ tensor\(s\) hold NaN or Inf")

    def refuse(name):
        raise ValueError(f"bare {name} in the output")

    result = json_ready({"elbo": float("nan"), "sweep": [{"nll": 1.5}, {"nll": float("-inf")}], "n": 3})
    assert json.loads(json.dumps(result, allow_nan=False), parse_constant=refuse) == {
        "elbo": None, "sweep": [{"nll": 1.5}, {"nll": None}], "n": 3,
        "non_finite": {"elbo": "nan", "sweep[1].nll": "-inf"}}


def test_silent_inputs_are_refused(tmp_path, capsys):
    np.save(tmp_path / "c.npy", np.ones((20, 3)) + 1j)
    rc, _, err = cli(capsys, "train", "--data", tmp_path / "c.npy", "--out", tmp_path / "a", *FAST)
    one_line_error(rc, err, "complex array")
    big = np.ones((20, 3))
    big[4, 2] = 1e39
    np.save(tmp_path / "big.npy", big)
    rc, _, err = cli(capsys, "train", "--data", tmp_path / "big.npy", "--out", tmp_path / "b", *FAST)
    one_line_error(rc, err, r"1 value\(s\) beyond float32's range .* index \[4, 2\]")
    cfg = tmp_path / "c.json"
    cfg.write_text('{"epochs": true}')
    rc, _, err = cli(capsys, "train", "--config", cfg, "--out", tmp_path / "c")
    one_line_error(rc, err, "--epochs: invalid int value: 'true'")
    rc, _, err = cli(capsys, "data", "collect", "--tokens", "0", "--out", tmp_path / "acts")
    one_line_error(rc, err, "--tokens: must be a positive integer, got 0")
    assert not (tmp_path / "acts").exists()
    acts = tmp_path / "acts2"
    acts.mkdir()
    (acts / "cursor.json").write_text(json.dumps({"text": 1, "tokens": 5, "shards": [{"file": "../x.npy", "tokens": 5}]}))
    rc, _, err = cli(capsys, "train", "--model", "topk", "--data", acts, "--out", tmp_path / "d")
    one_line_error(rc, err, "shard '../x.npy' is not a file name inside")


@pytest.mark.parametrize("args", [["--latent-dim", "65536", "--hidden", "65536,65536"],
                                  ["--model", "topk", "--features", "4194304"], ["--model", "recombiner", "--units", "4096"],
                                  ["--model", "pvrnn", "--d", "4096,4096", "--length", "20000"],
                                  ["--model", "latent-sde", "--latent", "1024"]])
def test_a_model_that_cannot_fit_is_refused_within_a_second(tmp_path, capsys, args):
    np.save(tmp_path / "acts.npy", np.random.default_rng(0).standard_normal((200, 1024)).astype(np.float32))
    data = ["--data", tmp_path / "acts.npy"] if "topk" in args else []
    cli(capsys, "train", "--out", tmp_path / "r", *args, *data)  # the first call also imports and builds parsers
    t0 = time.perf_counter()
    rc, _, err = cli(capsys, "train", "--out", tmp_path / "r", *args, *data)
    assert time.perf_counter() - t0 < 1.0
    one_line_error(rc, err, r"would need about [\d,.]+ GiB to train \([\d,]+ parameters.* GiB is available")
    assert not (tmp_path / "r").exists()


def test_samples_and_importance_samples_beyond_bounds_are_refused_within_a_second(run, capsys):
    for args, pattern in ((["sample", run, "--n", "100000000"], r"would need about [\d,.]+ GiB"),
                          (["sample", run, "--n", "-1"], "--n: must be a positive integer, got -1"),
                          (["eval", run, "--nll", "--k", "100000000"], r"k must be at most 100,000")):
        cli(capsys, *args)  # the first call also imports
        t0 = time.perf_counter()
        rc, _, err = cli(capsys, *args)
        assert time.perf_counter() - t0 < 1.0
        one_line_error(rc, err, pattern)


def test_precision_auto_takes_bf16_only_where_it_is_native_and_bf16_without_it_warns(monkeypatch, capsys):
    from varilab import train

    cpu = torch.device("cpu")
    monkeypatch.setattr(train, "native_bf16", lambda device: (False, "the CPU has no AMX bfloat16 units (amx_bf16)"))
    assert train.resolve_precision("auto", cpu) == "fp32" and capsys.readouterr().err == ""
    assert train.resolve_precision("bf16", cpu) == "bf16"
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.match(
        r"warning: --precision bf16 without native bfloat16 \(the CPU has no AMX .*\): a bfloat16 matrix product "
        r"measured [\d.]+ times the float32 time here", err)
    monkeypatch.setattr(train, "native_bf16", lambda device: (True, "the CPU has AMX bfloat16 units (amx_bf16)"))
    assert train.resolve_precision("auto", cpu) == "bf16" and capsys.readouterr().err == ""
    monkeypatch.undo()
    native, why = train.native_bf16(cpu)  # this machine, read from /proc/cpuinfo
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert native == ("amx_bf16" in flags) and "CPU" in why


def test_values_that_were_accepted_silently_are_refused_in_one_line(tmp_path, capsys):
    """Issue 33, item 8: each of these ran (or fell back to a default) without a word."""
    import shutil

    before = Path(__file__).parent / "fixtures" / "before32"
    for name in ("vae", "diffusion"):
        shutil.copytree(before / name, tmp_path / name)
    config = json.loads((tmp_path / "vae" / "config.json").read_text())
    shutil.copytree(tmp_path / "vae", tmp_path / "vae-extra")
    (tmp_path / "vae-extra" / "config.json").write_text(json.dumps({**config, "latent_dims": 3}))
    x = np.random.default_rng(0).random((60, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "float-labels.npz", x=x, y=np.linspace(0, 2.5, 60))
    np.save(tmp_path / "complex.npy", np.ones((60, 8), dtype=np.complex64))
    cases = [(["sample", tmp_path / "diffusion", "--steps", "0"], "steps must be a positive integer, got 0"),
             (["sample", tmp_path / "diffusion", "--steps", "100000"], "exceeds the 100 timesteps this diffusevae"),
             (["diagnose", tmp_path / "vae", "--threshold", "-1"], "threshold must be non-negative, got -1.0"),
             (["diagnose", tmp_path / "vae", "--threshold", "nan"], r"threshold must lie in \[0, "),
             (["eval", tmp_path / "vae-extra"], r"config.json: unknown config key 'latent_dims' \(did you mean 'latent_dim'"),
             (["train", "--model", "classifier", "--data", tmp_path / "float-labels.npz", "--out", tmp_path / "c"],
              r"labels must be class indices 0, 1, 2, ... \(whole numbers below 10,000\), got \d"),
             (["train", "--model", "topk", "--data", tmp_path / "complex.npy", "--out", tmp_path / "s"],
              "activations must be real numbers, got dtype complex64")]
    for args, pattern in cases:
        rc, _, err = cli(capsys, *args)
        one_line_error(rc, err, pattern)
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists()


def test_a_run_in_a_non_utf8_folder_or_being_replaced_is_not_called_damaged(tmp_path, capsys):
    """Issue 33, item 9: a run folder whose name is not UTF-8 was "damaged" (safetensors refused its path); a report
    started while `train --force` sets up its new run said "no weights file"."""
    import os
    import shutil

    from varilab.families import folder

    before = Path(__file__).parent / "fixtures" / "before32" / "vae"
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/r\xff\xfe"))
    shutil.copytree(before, odd)
    for verb in ("eval", "diagnose"):
        rc, _, err = cli(capsys, verb, odd)
        assert rc == 0 and "damaged" not in err, (verb, err)
    done = subprocess.run([sys.executable, "-m", "varilab", "report", odd], capture_output=True,  # a process of its
                          env={**os.environ, "LC_ALL": "C.UTF-8"})  # own: the line it prints holds the folder's bytes
    assert done.returncode == 0 and done.stdout.strip() == bytes(odd / "report.html"), done.stderr
    assert (odd / "report.html").stat().st_size > 10_000
    busy = tmp_path / "busy"
    shutil.copytree(before, busy)
    (busy / "model.safetensors").unlink()  # as `train --force` leaves it before its first epoch ends
    with folder.lock(busy, "train"):
        for verb in ("report", "eval"):
            rc, _, err = cli(capsys, verb, busy)
            one_line_error(rc, err, rf"is being written by process {os.getpid()} \(varilab train\) and has no "
                                    "model.safetensors yet")
        shutil.move(busy / "config.json", tmp_path / "config.json")
        rc, _, err = cli(capsys, "eval", busy)
        one_line_error(rc, err, "has no config.json yet")
