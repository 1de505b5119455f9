"""The trainer: exact resume, atomic checkpoints, the NaN guard, metrics on disk."""
import functools
import json

import pytest
import torch
from safetensors.torch import load_file

from varilab import checkpoint
from varilab.checkpoint import load_checkpoint, save_checkpoint
from varilab.core import vae_loss
from varilab.models import build_model
from varilab.train import CHECKPOINT, METRICS, STEPS, WEIGHTS, TrainingDiverged, fit, takes_step


def small_vae(x_dim, seed=0):
    torch.manual_seed(seed)
    return build_model("vae", x_dim, latent_dim=4, hidden=[32])


def weights(path):
    return load_file(str(path / WEIGHTS))


def test_resume_continues_exactly(tmp_path, digits_small):
    a, b = tmp_path / "straight", tmp_path / "resumed"
    fit(small_vae(64), digits_small, out=a, epochs=6, batch_size=64, seed=3, quiet=True)
    fit(small_vae(64), digits_small, out=b, epochs=3, batch_size=64, seed=3, quiet=True)
    # a fresh model object (different initial weights) must be fully overwritten by the checkpoint
    hist = fit(small_vae(64, seed=99), digits_small, out=b, epochs=6, batch_size=64, seed=3, resume=True, quiet=True)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0)
    assert [m["epoch"] for m in hist] == [1, 2, 3, 4, 5, 6]
    lines = (b / METRICS).read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4, 5, 6]
    straight = [json.loads(x)["loss"] for x in (a / METRICS).read_text().splitlines()]
    assert straight == pytest.approx([json.loads(x)["loss"] for x in lines], abs=1e-6)


def test_resume_drops_metrics_written_after_the_checkpoint(tmp_path, digits_small):
    out = tmp_path / "run"
    fit(small_vae(64), digits_small, out=out, epochs=2, batch_size=64, quiet=True)
    with open(out / METRICS, "a") as f:  # as if a crash hit between the metrics and checkpoint writes
        f.write(json.dumps({"epoch": 3, "loss": 0.0}) + "\n")
    fit(small_vae(64), digits_small, out=out, epochs=3, batch_size=64, resume=True, quiet=True)
    epochs = [json.loads(x)["epoch"] for x in (out / METRICS).read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_checkpoint_round_trip_restores_optimizer(tmp_path):
    model = small_vae(10)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    vae_loss(model, torch.rand(8, 10))["loss"].backward()
    opt.step()
    save_checkpoint(tmp_path / "c.safetensors", model, opt, {"epoch": 7})
    model2 = small_vae(10, seed=1)
    opt2 = torch.optim.Adam(model2.parameters(), lr=0.5)
    assert load_checkpoint(tmp_path / "c.safetensors", model2, opt2) == {"epoch": 7}
    assert opt2.param_groups[0]["lr"] == 0.01
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    for i in s1:
        for k in s1[i]:
            torch.testing.assert_close(s1[i][k], s2[i][k])
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def test_crash_during_checkpoint_write_keeps_the_old_file(tmp_path, monkeypatch):
    model = small_vae(10)
    opt = torch.optim.Adam(model.parameters())
    path = tmp_path / CHECKPOINT
    save_checkpoint(path, model, opt, {"epoch": 1})
    before = path.read_bytes()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, opt, {"epoch": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT]  # no temporary file left behind
    monkeypatch.undo()
    fresh = small_vae(10, seed=5)
    assert load_checkpoint(path, fresh, torch.optim.Adam(fresh.parameters()))["epoch"] == 1


def test_crash_inside_training_leaves_a_resumable_run(tmp_path, digits_small, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    real = checkpoint.atomic_write

    def flaky(path, data):
        if str(path).endswith(CHECKPOINT):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt  # killed while writing the epoch-3 checkpoint
        return real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write", flaky)
    with pytest.raises(KeyboardInterrupt):
        fit(small_vae(64), digits_small, out=out, epochs=5, batch_size=64, quiet=True)
    monkeypatch.undo()
    fresh = small_vae(64)
    assert load_checkpoint(out / CHECKPOINT, fresh, torch.optim.Adam(fresh.parameters()))["epoch"] == 2
    fit(small_vae(64), digits_small, out=out, epochs=5, batch_size=64, resume=True, quiet=True)
    ref = tmp_path / "ref"
    fit(small_vae(64), digits_small, out=ref, epochs=5, batch_size=64, quiet=True)
    for k, v in weights(ref).items():
        torch.testing.assert_close(weights(out)[k], v, atol=1e-6, rtol=0)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, digits_small):
    out, ref = tmp_path / "run", tmp_path / "ref"
    steps_per_epoch = -(-len(digits_small.x_train) // 64)
    calls = {"n": 0}

    def objective(model, x):
        calls["n"] += model.training  # the per-epoch test evaluation runs in eval mode
        logs = vae_loss(model, x)
        if calls["n"] == 2 * steps_per_epoch + 2:  # epoch 3, step 2
            logs["loss"] = logs["loss"] * float("nan")
        return logs

    with pytest.raises(TrainingDiverged, match=r"nan at epoch 3, step 2 of \d+.*epoch 2"):
        fit(small_vae(64), digits_small, out=out, epochs=5, batch_size=64, objective=objective, quiet=True)
    fit(small_vae(64), digits_small, out=ref, epochs=2, batch_size=64, quiet=True)
    for k, v in weights(ref).items():
        assert torch.equal(weights(out)[k], v)
    assert len((out / METRICS).read_text().splitlines()) == 2


def test_diverging_weights_are_reported_as_divergence(tmp_path):
    from varilab.data import make_dataset

    x = torch.randn(200, 5, generator=torch.Generator().manual_seed(0)).numpy()
    ds = make_dataset("gauss", x)
    torch.manual_seed(0)
    model = build_model("vae", 5, latent_dim=2, hidden=[8], likelihood="gaussian", obs_var="learned")
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, step \d+"):
        fit(model, ds, out=tmp_path / "r", epochs=3, batch_size=20, lr=1e30, quiet=True)


def test_training_lowers_the_loss_and_writes_the_run(tmp_path, digits_small):
    hist = fit(small_vae(64), digits_small, out=tmp_path, epochs=8, batch_size=32, lr=2e-3, quiet=True)
    assert hist[-1]["loss"] < hist[0]["loss"] - 3.0
    assert {"loss", "recon", "kl", "test_loss", "seconds", "epoch"} <= hist[-1].keys()
    assert hist[-1]["loss"] == pytest.approx(-hist[-1]["recon"] + hist[-1]["kl"], rel=1e-5)
    assert {p.name for p in tmp_path.iterdir()} >= {CHECKPOINT, WEIGHTS, METRICS}


def test_bad_hyperparameters_are_refused(tmp_path, digits_small):
    with pytest.raises(ValueError, match="batch_size"):
        fit(small_vae(64), digits_small, out=tmp_path, epochs=1, batch_size=0)


def test_trainer_uses_fused_adam_and_bf16_autocast_when_asked(tmp_path, digits_small):
    from varilab.train import adam

    assert adam(small_vae(64), 1e-3, torch.device("cpu")).defaults["fused"] is True
    seen = []
    dev = "cuda" if torch.cuda.is_available() else "cpu"  # where fit trains

    def watching(model, x, **kw):
        if torch.is_grad_enabled():  # training steps (the test split is evaluated in float32)
            seen.append((torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev)))
        return vae_loss(model, x, **kw)

    fp32 = fit(small_vae(64), digits_small, out=tmp_path / "fp32", epochs=4, batch_size=64, seed=1, quiet=True,
               objective=watching)
    assert not any(on for on, _ in seen)
    seen.clear()
    bf16 = fit(small_vae(64), digits_small, out=tmp_path / "bf16", epochs=4, batch_size=64, seed=1, quiet=True,
               objective=watching, precision="bf16")
    assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen)
    # same run in bfloat16: the weights stay float32 and the loss follows the float32 run closely
    assert all(v.dtype == torch.float32 for v in weights(tmp_path / "bf16").values())
    assert bf16[-1]["test_loss"] == pytest.approx(fp32[-1]["test_loss"], rel=0.02)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16"):
        fit(small_vae(64), digits_small, out=tmp_path / "x", epochs=1, quiet=True, precision="fp16")


def test_compile_falls_back_to_eager_with_a_notice(tmp_path, digits_small, monkeypatch, capsys):
    def broken_compile(module, **kw):
        def fail(*a, **k):
            raise RuntimeError("inductor found no C++ compiler")
        return fail

    eager = fit(small_vae(64), digits_small, out=tmp_path / "eager", epochs=2, batch_size=64, seed=2, quiet=True)
    monkeypatch.setattr(torch, "compile", broken_compile)
    fell = fit(small_vae(64), digits_small, out=tmp_path / "fell", epochs=2, batch_size=64, seed=2, compile=True)
    assert "torch.compile failed (RuntimeError); training continues in eager mode" in capsys.readouterr().err
    assert fell[-1]["loss"] == eager[-1]["loss"]  # the failed attempt drew no random numbers


def test_compiled_training_matches_eager_in_expectation(tmp_path, digits_small):
    # inductor draws its own random numbers, so the runs differ sample by sample, not in what they learn
    kw = dict(epochs=3, batch_size=64, quiet=True)
    eager = [fit(small_vae(64, seed=s), digits_small, out=tmp_path / f"e{s}", seed=s, **kw)[-1]["test_loss"] for s in (0, 1)]
    compiled = fit(small_vae(64), digits_small, out=tmp_path / "c", seed=0, compile=True, **kw)[-1]["test_loss"]
    spread = abs(eager[0] - eager[1])
    assert abs(compiled - eager[0]) < max(3 * spread, 0.02 * eager[0])


def _dying(objective, at, model, x, step=0, **kwargs):
    """The objective, killed (KeyboardInterrupt) when the trainer asks for global step `at`."""
    if model.training and step == at:
        raise KeyboardInterrupt
    return objective(model, x, **kwargs, **({"step": step} if takes_step(objective) else {}))


def _logged(path, name):
    return [{k: v for k, v in json.loads(x).items() if k != "seconds"} for x in (path / name).read_text().splitlines()]


def _gumbel_codec(ds, seed=0):
    """A small vq-codec with the Gumbel quantiser and its objective: tau annealed and codes re-seeded by step."""
    from varilab.families.codec import CodecOptions, objective
    from varilab.models.codec.vq_codec import VQCodec, VQCodecConfig

    torch.manual_seed(seed)
    model = VQCodec(VQCodecConfig(latent=8, groups=2, codes=8, hidden=16, downsample=1, quantiser="gumbel"))
    model.image_shape = ds.image_shape
    opts = CodecOptions(model="vq-codec", quantiser="gumbel", reseed_every=3)
    return model, objective(opts, 4 * -(-len(ds.x_train) // 64))


def _score_vae(ds, seed=0):
    """A VAE trained by the score-function estimator with a moving-average baseline: state in the objective."""
    from varilab.core import MovingAverage

    return small_vae(64, seed), functools.partial(vae_loss, estimator="score", baseline=MovingAverage(0.9))


@pytest.mark.parametrize("make", [_gumbel_codec, _score_vae], ids=["vq-codec-gumbel", "score-vae-moving-average"])
def test_a_run_killed_mid_epoch_resumes_its_objectives_schedule_and_state(tmp_path, digits_small, make):
    a, b = tmp_path / "straight", tmp_path / "killed"
    model, objective = make(digits_small)
    fit(model, digits_small, out=a, epochs=4, batch_size=64, seed=3, quiet=True, objective=objective)
    model, objective = make(digits_small)
    at = 2 * -(-len(digits_small.x_train) // 64) + 2  # the third step of epoch 3, after a checkpoint and a reseed
    with pytest.raises(KeyboardInterrupt):
        fit(model, digits_small, out=b, epochs=4, batch_size=64, seed=3, quiet=True,
            objective=functools.partial(_dying, objective, at))
    model, objective = make(digits_small, seed=99)  # a new process: fresh weights, schedule and state
    fit(model, digits_small, out=b, epochs=4, batch_size=64, seed=3, quiet=True, resume=True, objective=objective)
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys() and [k for k in wa if not torch.equal(wa[k], wb[k])] == []
    assert _logged(b, METRICS) == _logged(a, METRICS)  # the vq-codec's tau and test_tau among them
    assert _logged(b, STEPS) == _logged(a, STEPS)  # and each step's tau
