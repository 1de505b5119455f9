"""The sequence family end to end: a small PV-RNN on the switching sequences trains, evaluates, diagnoses per layer
and step, samples at any length, and follows new sequences by error regression; bad sequences and flags of other
families are one line and exit 2."""
import json

import numpy as np
import pytest

from varilab.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pvrnn")
    assert main(["train", "--model", "pvrnn", "--n", "12", "--length", "30", "--epochs", "40", "--lr", "0.03",
                 "--batch-size", "8", "--meta-prior", "0.01", "--out", str(root / "run"), "--quiet"]) == 0
    return root


def test_eval_diagnose_and_sample(run, capsys):
    assert main(["eval", str(run / "run"), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)
    assert e["train_sequences"] == 8 and e["test_sequences"] == 4
    assert e["train_recon"] < e["test_free_running_mse"]  # the adaptive vectors fit their own sequences
    assert 0 < e["sigma_p_layer1"] and 0 < e["sigma_p_layer2"]
    assert main(["diagnose", str(run / "run"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["kl_per_layer"]) == 2 and len(d["kl_per_step"][0]) == 30 and min(d["kl_per_layer"]) > 0
    assert d["meta_prior"] == [0.01, 0.01] and len(d["sigma_p_per_step"][1]) == 30
    assert main(["sample", str(run / "run"), "--n", "3", "--length", "45"]) == 0
    x = np.load(run / "run" / "samples.npy")
    assert x.shape == (3, 45, 2) and np.abs(x).max() <= 1
    assert main(["report", str(run / "run")]) == 0
    page = (run / "run" / "report.html").read_text()
    assert "Trajectories" in page and "No prediction kept yet" in page and page.count("<img") >= 3


def test_predict_by_error_regression_and_without(run, tmp_path, capsys):
    out = tmp_path / "pred.npy"
    assert main(["predict", str(run / "run"), "--window", "5", "--iterations", "5", "--ahead", "3", "--n", "2",
                 "--out", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["error_regression_error"]) == len(r["free_error"]) == 3
    assert r["error_regression_error"][0] < r["free_error"][0]  # seeing the sequence helps one step ahead
    p = np.load(out)
    assert p.shape == (2, 30, 3, 2) and np.isnan(p[:, -1, 0]).sum() == 0 and np.isfinite(p).all()
    seqs = np.zeros((2, 20, 2), np.float32)
    seqs[1, 4, 1] = np.nan
    np.save(tmp_path / "bad.npy", seqs)
    cases = [(["predict", str(run / "run"), "--input", str(tmp_path / "bad.npy")], "sequence 1 at step 4"),
             (["predict", str(run / "run"), "--method", "free", "--window", "3"], "--window applies to --method "
                                                                                   "error-regression, not to free"),
             (["sample", str(run / "run"), "--steps", "5"], "--steps applies to diffusion runs, not to sequence runs"),
             (["eval", str(run / "run"), "--data", "digits"], "--data does not apply to a sequence run"),
             (["train", "--model", "pvrnn", "--d", "20,8", "--z", "2", "--out", str(tmp_path / "x")],
              "--d, --z and --tau need one entry per layer")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_predict_replaces_an_out_file_only_with_force(run, tmp_path, capsys):
    out = tmp_path / "p.npy"
    out.write_bytes(b"mine")
    args = ["predict", str(run / "run"), "--method", "free", "--ahead", "2", "--n", "1", "--out", str(out)]
    assert main(args) == 2
    assert "exists; pass --force" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert main(args + ["--force"]) == 0 and np.load(out).shape[:1] == (1,)


def test_other_families_refuse_the_sequence_flags(run, tmp_path, capsys):
    assert main(["train", "--model", "vae", "--epochs", "1", "--out", str(tmp_path / "vae"), "--quiet"]) == 0
    capsys.readouterr()
    for argv, message in [(["sample", str(tmp_path / "vae"), "--length", "5"], "--length applies to sequence runs, not to vae runs"),
                          (["predict", str(tmp_path / "vae")], "does not apply to vae runs")]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
