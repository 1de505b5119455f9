"""The latent SDE family end to end: a small run on generated fractional OU series trains, evaluates (ELBO,
forecast error, H), samples from its prior and draws its page; bad input and misplaced flags are one line."""
import json

import numpy as np
import pytest

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
    page = (run / "report.html").read_text()
    assert "Markov approximation" in page and "fixed step dt = 0.02" in page and page.count("<img") >= 5


def test_resume_continues_and_a_brownian_run_has_no_hurst_to_learn(run, tmp_path, capsys):
    assert main(["train", "--resume", "--out", str(run), "--epochs", "5", "--quiet"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 5
    out = tmp_path / "bm"
    assert main(["train", "--model", "latent-sde", "--noise", "brownian", *SMALL, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["hurst"] == 0.5 and "approximation_error" not in e


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
