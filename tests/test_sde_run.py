"""The latent SDE family end to end: a small run on generated fractional OU series trains, evaluates (ELBO,
forecast error, H), samples from its prior and draws its page; bad input and misplaced flags are one line."""
import html
import json

import numpy as np
import pytest

from pages import says_each_thing_once
from varilab.cli import main

SMALL = ["--n", "10", "--steps", "20", "--epochs", "4", "--batch-size", "8", "--hidden", "8", "--context", "4",
         "--ou-processes", "3", "--dt", "0.02", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sde")
    assert main(["train", "--model", "latent-sde", "--data", "fou", "--true-hurst", "0.3", *SMALL,
                 "--out", str(root / "run")]) == 0
    return root / "run"


def test_eval_sample_and_report(run, capsys):
    assert main(["eval", str(run), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["train_series"] == 8 and e["test_series"] == 2 and e["noise"] == "fbm" and e["dt"] == 0.02
    assert 0 < e["hurst"] < 1 and e["hurst"] != 0.5  # learned: it moved from its start
    assert 0 <= e["approximation_error"] < 1 and np.isfinite(e["test_elbo"]) and e["prediction_mse"] > 0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 4 and all("hurst" in m for m in metrics)
    assert main(["sample", str(run), "--n", "3"]) == 0
    assert np.load(run / "samples.npy").shape == (3, 20, 1)
    assert main(["report", str(run)]) == 0
    page = html.unescape((run / "report.html").read_text())
    assert "Markov approximation" in page and "fixed step dt = 0.02" in page and page.count("<img") >= 5
    says_each_thing_once((run / "report.html").read_text())  # solver, dt and the approximation error once each
    assert (f"On this run's grid (20 points), the K = 3, r = 10 approximation at H = {e['hurst']:.3g} measures as H = "
            in page and "by DFA (exact fBM: " in page), page


def test_sample_on_any_grid(run, tmp_path, capsys):
    t = np.concatenate([np.linspace(0.01, 0.5, 40), np.linspace(0.6, 1.5, 31)])  # uneven, past the data's end
    np.save(tmp_path / "t.npy", t)
    assert main(["sample", str(run), "--n", "3", "--times", str(tmp_path / "t.npy"), "--out", str(tmp_path / "s.npy")]) == 0
    out = capsys.readouterr().out
    assert np.load(tmp_path / "s.npy").shape == (3, 71, 1)
    np.testing.assert_allclose(np.load(tmp_path / "s-times.npy"), t, rtol=1e-6)
    assert "On the requested grid (71 points), the K = 3, r = 10 approximation at H = " in out and "by DFA" in out
    assert main(["sample", str(run), "--n", "2", "--dt", "0.1", "--points", "7", "--out", str(tmp_path / "e.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "e-times.npy"), np.arange(1, 8) / 10, rtol=1e-6)
    assert main(["sample", str(run), "--n", "2", "--dt", "0.25"]) == 0  # up to the data's last time: 4 points
    assert np.load(run / "samples-0.25.npy").shape == (2, 4, 1) and "too few points for DFA" in capsys.readouterr().out


def test_bad_sample_grids_are_one_line(run, tmp_path, capsys):
    bad = {"two-d": np.zeros((3, 4)), "down": np.array([0.1, 0.3, 0.2]), "nan": np.array([0.1, np.nan, 0.3]),
           "one": np.array([0.5]), "long": np.arange(1, 100_002) / 100_001, "early": np.array([-0.5, 0.5]),
           "objects": np.array([0.1, "a"], dtype=object), "text": np.array(["0.1", "0.2"])}
    for name, array in bad.items():
        np.save(tmp_path / f"{name}.npy", array, allow_pickle=True)
    (tmp_path / "junk.npy").write_text("not an array")
    out = ["--out", str(tmp_path / "s.npy")]
    cases = [("two-d", "expected a 1-D array of times, got shape [3, 4]"), ("down", "times must increase strictly"),
             ("nan", "1 NaN or Inf time(s)"), ("one", "expected at least 2 times, got 1"),
             ("long", "100,001 times; at most 100,000"), ("early", "before the run's start t0 = 0"),
             ("objects", "not a readable .npy array"), ("text", "expected real numbers"),
             ("junk", "not a readable .npy array"), ("missing", "no such file")]
    for name, message in cases:
        argv = ["sample", str(run), "--times", str(tmp_path / f"{name}.npy"), *out]
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"--times {tmp_path / name}.npy" in err and message in err and len(err.strip().splitlines()) == 1, err
    for flags, message in [(["--dt", "0"], "dt must be positive, got 0.0"), (["--dt", "nan"], "dt must lie in (0, "),
                           (["--dt", "1e9"], "dt must be at most 1,000,000"),
                           (["--points", "1"], "points must be at least 2"), (["--dt", "1e5"], "leaves 0 point(s)"),
                           (["--dt", "1e5", "--points", "3"], "solver steps"),
                           (["--times", str(tmp_path / "down.npy"), "--dt", "0.1"], "leave out --dt and --points")]:
        assert main(["sample", str(run), *flags, *out]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "s.npy").exists()


def test_resume_continues_and_a_brownian_run_has_no_hurst_to_learn(run, tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(run), "--epochs", "5", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 5
    out = tmp_path / "bm"
    assert main(["train", "--model", "latent-sde", "--noise", "brownian", *SMALL, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["hurst"] == 0.5 and "approximation_error" not in e
    assert main(["sample", str(out), "--n", "2", "--points", "7"]) == 0  # Brownian noise: any grid, nothing to measure
    assert np.load(out / "samples-7.npy").shape == (2, 7, 1) and "DFA" not in capsys.readouterr().out


def test_bad_input_is_one_line(run, tmp_path, capsys):
    np.save(tmp_path / "v.npy", np.zeros((5, 8)))
    np.save(tmp_path / "t.npy", np.array([0, 1, 2, 3, 3, 5, 6, 7.0]))
    cases = [(["train", "--model", "latent-sde", "--data", str(tmp_path / "v.npy"), "--times", str(tmp_path / "t.npy"),
               "--out", str(tmp_path / "x")], "times must increase strictly"),
             (["train", "--model", "latent-sde", "--hurst", "1.3", "--out", str(tmp_path / "x")], "must lie in (0, 1)"),
             (["train", "--model", "latent-sde", "--dt", "0.05", "--out", str(tmp_path / "x")], "fastest OU process"),
             (["train", "--model", "latent-sde", "--data", str(tmp_path / "v.npy"), "--dt", "1e-6",
               "--out", str(tmp_path / "x")], "choose a larger --dt"),
             (["sample", str(run), "--steps", "5"], "--steps applies to diffusion runs, not to sde runs")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_posterior_that_loses_positive_definiteness_is_one_line(tmp_path, capsys, monkeypatch):
    """OU processes too alike (many on a fine grid of rates) can round the guided posterior's conditional covariance
    out of positive definiteness: the run stops with one line naming the options to change, not a traceback."""
    import torch

    real = torch.linalg.cholesky_ex

    def failing(a, **kw):
        chol, info = real(a, **kw)
        return chol, torch.ones_like(info)
    monkeypatch.setattr(torch.linalg, "cholesky_ex", failing)
    assert main(["train", "--model", "latent-sde", *SMALL, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # after the data's and the solver's lines, the error: one line
    assert last.startswith("varilab train: error: the guided posterior's conditional covariance lost positive "
                           "definiteness") and "--ou-processes" in last and "--ratio" in last, err
    assert "Traceback" not in err
