"""A codec run says on its last line and its page when its test rate was still rising at the end, and whether the
extra bits bought any quality."""
import pytest

from varilab import cli
from varilab.commands import verbs
from varilab.families.codec import FAMILY
from varilab.families.codec.trends import rate_trend


def _history(bpp, psnr):
    return [{"epoch": i + 1, "test_bpp": b, "test_psnr": q} for i, (b, q) in enumerate(zip(bpp, psnr))]


def test_a_rising_rate_is_named_with_what_the_quality_did():
    rising = [4.6 + 0.08 * i for i in range(10)]  # the last fifth's mean 5.28 against 5.12: +3%
    flat = rate_trend(_history(rising, [26.3] * 10))
    assert "5.120 -> 5.280" in flat and "buy no quality" in flat and "+0.00 dB" in flat
    gaining = rate_trend(_history(rising, [20 + i for i in range(10)]))
    assert "trades rate for quality" in gaining and "+2.00 dB" in gaining
    assert rate_trend(_history([5.0 - 0.01 * i for i in range(10)], [26.3] * 10)) == ""  # falling: nothing
    assert rate_trend(_history([5.0, 5.0, 5.0, 5.2], [20] * 4)) == ""  # too few epochs to judge
    assert rate_trend(_history([5.0] * 8 + [5.1, 5.1], [20] * 10)) == ""  # 2%: within the bound


def test_the_trend_reaches_the_last_line_and_the_page(tmp_path, monkeypatch, capsys):
    pytest.importorskip("constriction")
    monkeypatch.setattr(FAMILY, "trends", lambda history, opts: f"seen {len(history)} epochs of a {opts.model}")
    out = tmp_path / "r"
    assert cli.main(["train", "--model", "factorized", "--data", "digits", "--epochs", "2", "--latent", "2",
                     "--hidden", "4", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("; seen 2 epochs of a factorized")
    assert cli.main(["report", str(out)]) == 0
    assert "Seen 2 epochs of a factorized." in (out / "report.html").read_text()


def test_a_page_warning_is_its_own_or_the_still_improving_note_then_the_trend():
    assert verbs.warning(None, "", "learned H 0.606") == "Learned H 0.606."  # the trend alone: no "None" before it
    assert verbs.warning(None, "", "") is None
    assert verbs.warning(None, "still improving", "rising") == "This run stopped while still improving. Rising."
    assert verbs.warning("Worse than rounding.", "still improving", "rising") == "Worse than rounding. Rising."
