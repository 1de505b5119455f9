"""`varilab solve` end to end on a small DDPM of the digits: every method writes its estimates, metrics, trace
and page; the noise is stated on the data's range and doubled on the model's; a written observation solves to
the same estimate as the simulated one; bad input is one line and exit 2."""
import json
import re

import numpy as np
import pytest

from pages import says_each_thing_once
from varilab.cli import main


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A DDPM of the 8 x 8 digits (one epoch, a narrow U-Net: enough to exercise every path), and 12 test digits."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("solve")
    assert main(["train", "--model", "ddpm", "--data", "digits", "--epochs", "1", "--channels", "8", "--mults", "1",
                 "--timesteps", "100", "--out", str(root / "ddpm"), "--quiet"]) == 0
    np.save(root / "truth.npy", (load_digits().images[-12:] / 16).astype(np.float32))
    return root


def solve(prior, out, *args):
    return main(["solve", str(prior / "ddpm"), "--truth", str(prior / "truth.npy"), "--out", str(out), "--quiet",
                 "--batch", "8", *args])


@pytest.mark.parametrize("method, task", [("pinv", "sr2"), ("red-diff", "inpaint"), ("dps", "denoise"), ("smc", "inpaint")])
def test_every_method_writes_estimates_metrics_and_a_page(prior, tmp_path, capsys, method, task):
    out = tmp_path / method
    steps = [] if method == "pinv" else ["--steps", "20"]
    assert solve(prior, out, "--method", method, "--task", task, *steps) == 0
    line = capsys.readouterr().out
    baseline = "" if method == "pinv" else r" \(pseudo-inverse [\d.]+\)"  # pinv is not read against itself
    assert re.search(rf"{method} on {task} .* 12 images, .*PSNR [\d.]+ dB{baseline}, SSIM", line)
    estimate = np.load(out / "estimate.npy")
    assert estimate.shape == (12, 8, 8) and 0 <= estimate.min() and estimate.max() <= 1
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["psnr"]) == len(m["ssim"]) == 12 and m["noise"] == 0.05 and m["noise_model_scale"] == 0.1
    assert m["denoiser_calls_per_image"] == (0 if method == "pinv" else 20)
    page = (out / "report.html").read_text()
    says_each_thing_once(page)
    assert "Per image" in page and f"{m['psnr_mean']:.2f}" in page
    if method == "smc":
        assert np.load(out / "particles.npy").shape == (12, 16, 8, 8)
        w = np.load(out / "weights.npy")
        assert w.shape == (12, 16) and np.allclose(w.sum(1), 1)
        assert len(json.loads((out / "trace.json").read_text())["ess"]) == 12 and "effective sample size" not in line
        assert m["network_evaluations_per_image"] == 20 * 16
    if method == "pinv":  # the pseudo-inverse is its own baseline: the page does not compare it with itself
        assert m["psnr"] == m["pinv_psnr"]
        assert "pseudo-inverse PSNR" not in page and "the baseline the other methods are read against" in page
    else:
        assert "pseudo-inverse PSNR" in page
    ess = json.loads((out / "trace.json").read_text()).get("ess")
    if ess is not None:  # this small prior's particles collapse onto one at most steps: the page says so
        typical = sum(sorted(e)[len(e) // 2] if len(e) % 2 else sum(sorted(e)[len(e) // 2 - 1:len(e) // 2 + 1]) / 2
                      for e in ess) / len(ess)
        assert ("The particles degenerated" in page) == (typical < 2)
        assert typical >= 2 or f"median of {typical:.2f} of 16" in page


def test_the_noise_is_on_the_data_range_and_a_saved_observation_solves_the_same(prior, tmp_path, capsys):
    from sklearn.datasets import load_digits

    truth = load_digits().images[-12:] / 16
    a = tmp_path / "a"
    assert solve(prior, a, "--method", "red-diff", "--task", "inpaint", "--steps", "10", "--noise", "0.2") == 0
    mask = np.load(a / "mask.npy").astype(bool)
    observed = np.load(a / "observed.npy")
    assert mask.shape == (8, 8) and 0.3 < mask.mean() < 0.7
    residual = (observed - truth)[:, mask]  # y - H x on the data's range: the simulated noise itself
    assert abs(residual.std() - 0.2) < 0.03 and (observed[:, ~mask] == 0).all()
    assert json.loads((a / "metrics.json").read_text())["noise_model_scale"] == pytest.approx(0.4)
    b = tmp_path / "b"
    assert main(["solve", str(prior / "ddpm"), "--method", "red-diff", "--task", "inpaint", "--steps", "10",
                 "--observed", str(a / "observed.npy"), "--mask", str(a / "mask.npy"), "--noise", "0.2",
                 "--out", str(b), "--quiet", "--batch", "8"]) == 0
    np.testing.assert_allclose(np.load(b / "estimate.npy"), np.load(a / "estimate.npy"), atol=1e-6)
    assert not (b / "metrics.json").read_text().count("psnr")  # no truth given: no scores


def error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_bad_input_is_one_line_and_exit_2(prior, tmp_path, capsys):
    run, out = str(prior / "ddpm"), str(tmp_path / "o")
    np.save(tmp_path / "mask.npy", np.ones((5, 5)))
    nan = np.zeros((3, 64), dtype=np.float32)
    nan[1, 7] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "wide.npy", np.zeros((3, 50), dtype=np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 64), dtype=np.float32))
    np.save(tmp_path / "A.npy", np.ones((5, 50), dtype=np.float32))
    cases = [
        (["--task", "matrix", "--matrix", str(tmp_path / "A.npy"), "--observed", str(tmp_path / "wide.npy")],
         r"--matrix .* has shape \[5, 50\]; this run's data need \[M, 64\]"),
        (["--task", "inpaint", "--mask", str(tmp_path / "mask.npy"), "--observed", str(tmp_path / "wide.npy")],
         r"--mask .* has 25 entries .* one data point of this run has 64 \(images \[1, 8, 8\]\)"),
        (["--task", "denoise", "--observed", str(tmp_path / "nan.npy")], r"1 NaN or Inf value\(s\), the first at index \[1, 7\]"),
        (["--task", "sr2", "--observed", str(tmp_path / "wide.npy")], r"has 50 values per row; 2x super-resolution .* gives 16"),
        (["--task", "denoise"], "pass --observed Y.npy, or --truth X.npy"),
        (["--observed", str(tmp_path / "wide.npy")], "task must be given as --task, one of inpaint, denoise"),
        (["--method", "pinv", "--task", "denoise", "--steps", "3", "--observed", str(tmp_path / "wide.npy")],
         "--steps applies to --method red-diff or dps or smc, not to pinv"),
        (["--method", "smc", "--task", "denoise", "--noise", "0", "--truth", str(prior / "truth.npy")], "--noise must be positive"),
        (["--task", "denoise", "--observed", str(tmp_path / "empty.npy")], r"--observed .*: an empty array \(shape \[0, 64\]\)"),
        (["--task", "denoise", "--truth", str(tmp_path / "empty.npy")], r"--truth .*: an empty array"),
        (["--task", "denoise", "--truth", str(prior / "truth.npy"), "--steps", "1e9"], "invalid int value"),
        (["--method", "smc", "--task", "denoise", "--truth", str(prior / "truth.npy"), "--particles", "100000",
          "--batch", "100000"], r"with 100,000 particles each would need about [\d,.]+ GiB"),
    ]
    for args, pattern in cases:
        assert main(["solve", run, "--out", out, "--quiet", *args]) == 2, args
        assert re.search(pattern, error_line(capsys)), args
    assert main(["train", "--model", "vae", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "vae"), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["solve", str(tmp_path / "vae"), "--task", "denoise", "--out", out, "--observed", str(tmp_path / "nan.npy")]) == 2
    assert "it applies to diffusion runs (ddpm, flow, diffusevae)" in error_line(capsys)
    assert solve(prior, tmp_path / "twice", "--method", "pinv", "--task", "denoise") == 0
    capsys.readouterr()
    assert solve(prior, tmp_path / "twice", "--method", "pinv", "--task", "denoise") == 2
    assert "already holds a solve" in error_line(capsys)
    assert solve(prior, tmp_path / "twice", "--method", "pinv", "--task", "denoise", "--force") == 0


def test_the_runs_own_test_split_is_the_truth_without_an_export(prior, tmp_path, capsys):
    from varilab.families.registry import load

    out = tmp_path / "t"
    assert main(["solve", str(prior / "ddpm"), "--truth", "test", "--task", "sr2", "--method", "pinv", "-n", "5",
                 "--noise", "0", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["psnr"]) == 5
    x = load(prior / "ddpm").data.x_test[:5].numpy().reshape(5, 8, 8)
    view = np.load(out / "estimate.npy")  # pinv of 2x2 pooling: each 2x2 block holds its block's mean
    np.testing.assert_allclose(view, x.reshape(5, 4, 2, 4, 2).mean((2, 4)).repeat(2, 1).repeat(2, 2), atol=1e-5)
