"""A PV-RNN report reads what `varilab predict` kept instead of running error regression, draws the test sequences'
free-running error on axes of its own, and judges "still improving" on the smoothed training loss."""
import json
import time

import pytest

from pages import says_each_thing_once
from varilab.cli import main
from varilab.commands import still_improving


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pvrnn-report") / "run"
    assert main(["train", "--model", "pvrnn", "--n", "12", "--length", "30", "--epochs", "30", "--lr", "0.03",
                 "--batch-size", "8", "--out", str(out), "--quiet"]) == 0
    return out


def test_the_report_runs_no_error_regression_and_reads_what_predict_kept(run, monkeypatch, capsys):
    from varilab.families import sequence
    from varilab.report import plots

    def refuse(*a, **k):
        raise AssertionError("the report ran error regression")

    panels = []
    draw = plots.metric_curves
    monkeypatch.setattr(sequence, "error_regression", refuse, raising=False)
    monkeypatch.setattr("varilab.models.pvrnn.error_regression", refuse)
    monkeypatch.setattr(plots, "metric_curves", lambda metrics, p, **k: panels.append(p) or draw(metrics, p, **k))
    t0 = time.perf_counter()
    assert main(["report", str(run), "--force"]) == 0
    assert time.perf_counter() - t0 < 10
    page = (run / "report.html").read_text()
    says_each_thing_once(page)
    assert f"varilab predict {run}" in page and "No prediction kept yet" in page
    # the training loss (error + w KL) and the free-running test error on axes of their own
    keys = {p[0]: p for p in panels[0]}
    assert keys["loss"][2] is False and "test_loss" in keys and "running free" in keys["test_loss"][1]
    monkeypatch.undo()
    capsys.readouterr()

    assert main(["predict", str(run), "--window", "4", "--iterations", "3", "--ahead", "3", "--n", "2", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    kept = json.loads((run / "prediction.json").read_text())
    assert kept["free_error"] == r["free_error"] and kept["error_regression_error"] == r["error_regression_error"]
    assert (kept["window"], kept["iterations"], kept["sequences"], kept["ahead"]) == (4, 3, 2, 3)
    monkeypatch.setattr("varilab.models.pvrnn.error_regression", refuse)
    assert main(["report", str(run), "--force"]) == 0
    page = (run / "report.html").read_text()
    assert "error regression with window 4 and 3 Adam steps" in page and "No prediction kept yet" not in page
    assert f"{r['error_regression_error'][0]:.4f} with it" in page and f"{r['free_error'][0]:.4f} without" in page


def test_a_prediction_of_other_sequences_is_not_kept(run, tmp_path, capsys):
    import numpy as np

    (run / "prediction.json").unlink(missing_ok=True)
    np.save(tmp_path / "new.npy", np.zeros((2, 12, 2), np.float32))
    assert main(["predict", str(run), "--input", str(tmp_path / "new.npy"), "--method", "free"]) == 0
    assert not (run / "prediction.json").exists()
    (run / "prediction.json").write_text("{not json")  # a damaged file: the page says how to make a new one
    assert main(["report", str(run), "--force"]) == 0
    assert "No prediction kept yet" in (run / "report.html").read_text()


def test_still_improving_reads_the_smoothed_training_loss_not_a_noisy_free_running_error():
    import random

    rng = random.Random(0)
    flat = [{"epoch": e, "loss": 1.6 + 0.01 * rng.random(), "test_loss": rng.uniform(23, 37)} for e in range(1, 251)]
    assert still_improving(flat) != ""  # the free-running error's swings read as progress at the default key
    assert still_improving(flat, key="loss") == ""
    falling = [{"epoch": e, "loss": 10 / e, "test_loss": 30.0} for e in range(1, 251)]
    note = still_improving(falling, key="loss")
    assert "mean loss over the last 25 of its 250 epochs fell" in note
    from varilab.families import sequence

    assert sequence.FAMILY.improving_on == "loss"
