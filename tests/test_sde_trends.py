"""A latent SDE run learning H says where its H ended against the H its built-in data were generated with, and when
H was still moving as training stopped; the page draws the true H on the learned-H curve."""
from types import SimpleNamespace

from varilab.families.sde.trends import hurst_trend


def _opts(**kw):
    return SimpleNamespace(**{"noise": "fbm", "hurst": "learned", "data": "fou", "true_hurst": 0.7, **kw})


def test_the_learned_h_against_the_generators_and_a_drift_at_the_end():
    falling = [{"epoch": i + 1, "hurst": 0.75 - 0.015 * i} for i in range(10)]  # 0.75 .. 0.615
    said = hurst_trend(falling, _opts())
    assert "learned H 0.615 for data generated with H = 0.7 (-0.085: off by more than 0.05; on these data" in said
    assert "H was still moving when training stopped (0.653 -> 0.623" in said
    steady = [{"epoch": i + 1, "hurst": 0.69} for i in range(10)]
    assert hurst_trend(steady, _opts()) == "learned H 0.690 for data generated with H = 0.7 (-0.010)"
    assert "generated with" not in hurst_trend(falling, _opts(data="series.npy"))  # a file's truth is unknown
    assert hurst_trend(falling, _opts(hurst="0.7")) == "" and hurst_trend(falling, _opts(noise="brownian")) == ""


def test_the_page_draws_the_true_h_and_the_last_line_says_it(tmp_path, capsys):
    from varilab.cli import main

    out = tmp_path / "sde"
    assert main(["train", "--model", "latent-sde", "--n", "8", "--steps", "10", "--epochs", "3", "--dt", "0.01",
                 "--true-hurst", "0.3", "--out", str(out), "--quiet"]) == 0
    assert "for data generated with H = 0.3" in capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "The data were generated with H = 0.3." in page and "Learned H " in page
    warning = page.split('<div class="warn">')[1].split("</div>")[0]
    assert warning.startswith(("Learned H ", "This run stopped while")), warning  # no "None" before the trend
