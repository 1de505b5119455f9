"""`varilab attack` and `varilab robustness` end to end on the digits: the attack writes its images, metrics and
page, stays in the eps-ball, beats random noise of the same size and is measured on a second run (transfer);
the purifier and classifier train, and robustness prints gray-box and BPDA rows that agree where they must;
bad input is one line and exit 2."""
import json
import re

import numpy as np
import pytest

from pages import says_each_thing_once
from varilab.cli import main


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two small VAEs of the 8 x 8 digits (seeds 0 and 1), a purifier and a classifier (a few epochs each)."""
    root = tmp_path_factory.mktemp("attack")
    for seed in (0, 1):
        assert main(["train", "--model", "vae", "--latent-dim", "8", "--hidden", "128", "--epochs", "15", "--seed",
                     str(seed), "--out", str(root / f"vae{seed}"), "--quiet"]) == 0
    assert main(["train", "--model", "purifier", "--hidden", "128", "--epochs", "15", "--out", str(root / "purifier"),
                 "--quiet"]) == 0
    assert main(["train", "--model", "classifier", "--width", "8", "--epochs", "12", "--out", str(root / "classifier"),
                 "--quiet"]) == 0
    return root


@pytest.mark.parametrize("direction", ["collapse", "push"])
def test_attack_writes_images_metrics_and_a_page_and_beats_random_noise(runs, tmp_path, capsys, direction):
    out = tmp_path / direction
    assert main(["attack", str(runs / "vae0"), "--direction", direction, "--eps", "16/255", "--steps", "10", "--n", "40",
                 "--target", str(runs / "vae1"), "--out", str(out), "--quiet"]) == 0
    line = capsys.readouterr().out
    assert f"{direction} attack at eps 0.06275 (10 steps) on 40 images" in line
    x = np.load(out / "adversarial.npy")
    control = np.load(out / "control.npy")
    assert x.shape == control.shape == (40, 8, 8) and x.min() >= 0 and x.max() <= 1
    m = json.loads((out / "metrics.json").read_text())
    assert m["linf_adversarial"] <= 16 / 255 + 1e-6 and m["linf_control"] <= 16 / 255 + 1e-6
    if direction == "collapse":  # the posterior shrank toward a point at 0
        assert m["loss_adversarial"] < m["loss_clean"] and m["posterior_var_adversarial"] < m["posterior_var_clean"]
    else:  # and here was pushed away from the prior
        assert m["kl_adversarial"] > m["kl_clean"]
    assert m["reconstruction_effect_over_control"] > (3 if direction == "collapse" else 2)  # push: 2.3 measured
    assert m["target_reconstruction_mse_vs_clean_adversarial"] > m["target_reconstruction_mse_vs_clean_control"]
    page = (out / "report.html").read_text()
    says_each_thing_once(page)
    assert "Transfer to" in page and f"{m['reconstruction_effect_over_control']:.1f} times" in page
    assert "The |change| rows show" in page
    assert re.search(r"black: for the reconstruction, a change of \d\.\d{3} in a pixel value on \[0, 1\]", page)
    assert "<th>eps</th>" in page and "refine_steps" not in page and "edit_strength" not in page  # a VAE's options


def test_a_given_file_of_images_is_attacked_and_bad_input_is_named(runs, tmp_path, capsys):
    from sklearn.datasets import load_digits

    images = (load_digits().images[:5] / 16).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    assert main(["attack", str(runs / "vae0"), "--input", str(tmp_path / "x.npy"), "--steps", "2",
                 "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert np.abs(np.load(tmp_path / "a" / "adversarial.npy") - images).max() <= 8 / 255 + 1e-6
    capsys.readouterr()
    np.save(tmp_path / "raw.npy", images * 255)
    cases = [(["--input", str(tmp_path / "raw.npy")], "attacks work on [0, 1]"),
             (["--eps", "0"], r"eps must lie in (0, 1], got 0.0"),
             (["--direction", "sideways"], "--direction must be one of collapse, push"),
             (["--out", str(tmp_path / "a")], "already holds a attack"),
             (["--out", str(runs / "vae1")], "holds a training run")]
    for args, message in cases:
        argv = ["attack", str(runs / "vae0"), "--steps", "1", "--out", str(tmp_path / "b"), "--quiet", *args]
        assert main(argv) == 2, args
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert main(["attack", str(runs / "purifier"), "--steps", "2", "--n", "10", "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0  # a purifier's encoder, straight through its quantiser
    assert "purified_effect_over_control" in json.loads((tmp_path / "p" / "metrics.json").read_text())
    capsys.readouterr()
    assert main(["attack", str(runs / "classifier"), "--out", str(tmp_path / "c")]) == 2
    assert "`varilab robustness` attacks a classifier" in capsys.readouterr().err


def test_an_empty_input_and_an_eps_outside_0_1_are_one_line_and_write_nothing(runs, tmp_path, capsys):
    """An empty --input array was a traceback; --eps 2 or inf (no L-infinity ball on [0, 1] images) ran silently."""
    np.save(tmp_path / "empty.npy", np.zeros((0, 64), dtype=np.float32))
    cases = [(["--input", str(tmp_path / "empty.npy")], r"--input .*empty.npy: an empty array \(shape \[0, 64\]\)"),
             (["--eps", "2"], r"eps must lie in \(0, 1\], got 2.0"), (["--eps", "inf"], r"eps must lie in \(0, 1\]"),
             (["--eps", "1/0"], "float division by zero")]
    for args, pattern in cases:
        assert main(["attack", str(runs / "vae0"), "--out", str(tmp_path / "o"), "--quiet", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(pattern, err[0]), (args, err)
    for args in (["--eps", "2"], ["--eps", "1/0"]):
        assert main(["robustness", str(runs / "purifier"), "--classifier", str(runs / "classifier"), *args]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_force_with_bad_input_keeps_the_earlier_result_byte_identical(runs, tmp_path, capsys):
    """attack --force whose input is refused (NaN, a target of another family) leaves the earlier result as it was."""
    out = tmp_path / "att"
    assert main(["attack", str(runs / "vae0"), "--out", str(out), "--n", "8", "--steps", "2", "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    assert set(before) == {"adversarial.npy", "control.npy", "metrics.json", "report.html"}
    bad = np.full((4, 64), np.nan, dtype=np.float32)
    np.save(tmp_path / "nan.npy", bad)
    capsys.readouterr()
    for extra in (["--input", str(tmp_path / "nan.npy")], ["--target", str(runs / "classifier")]):
        assert main(["attack", str(runs / "vae0"), "--out", str(out), "--n", "8", "--steps", "2", "--force", "--quiet",
                     *extra]) == 2, extra
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
        after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
        assert after == before and not (out / ".previous-attack").exists(), extra
    assert main(["attack", str(runs / "vae0"), "--out", str(out), "--n", "8", "--steps", "3", "--force", "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3 and not (out / ".previous-attack").exists()


def test_robustness_prints_gray_box_and_bpda_rows(runs, capsys):
    pytest.importorskip("art", reason="the Adversarial Robustness Toolbox (varilab[robust]) is not installed")
    results = {}
    for attack in ("fgsm", "pgd", "bpda"):
        steps = [] if attack == "fgsm" else ["--steps", "5"]
        assert main(["robustness", str(runs / "purifier"), "--classifier", str(runs / "classifier"), "--attack", attack,
                     "--eps", "0.2", "--n", "100", "--json", *steps]) == 0
        results[attack] = json.loads(capsys.readouterr().out)
    g, b = results["pgd"], results["bpda"]
    assert g["clean_accuracy"] > 0.8  # the classifier learned the digits
    assert g["clean_accuracy"] == b["clean_accuracy"] and g["clean_accuracy_purified"] == b["clean_accuracy_purified"]
    from varilab.families.robust import purification_cost

    assert bool(g["purification_warning"]) == (g["clean_accuracy"] - g["clean_accuracy_purified"] > 0.05)
    said = purification_cost(0.975, 0.518)  # the issue's digits: the defaults' purifier halves the accuracy
    assert "costs 45.7 points of clean accuracy (0.9750 -> 0.5180)" in said and purification_cost(0.9, 0.87) == ""
    assert g["robust_accuracy"] < g["clean_accuracy"] - 0.3  # the classifier alone breaks
    assert b["robust_accuracy"] is None and b["robust_accuracy_purified"] <= g["robust_accuracy_purified"]
    assert 0 <= g["unchanged_points"] <= g["unchanged_codes"] <= 1 and g["max_perturbation"] <= 0.2 + 1e-6
    assert results["fgsm"]["steps"] == 1
    assert main(["robustness", str(runs / "purifier"), "--classifier", str(runs / "classifier"), "--attack", "bpda",
                 "--eps", "0.1", "--steps", "3", "--n", "50", "--sample", "true", "--draws", "3"]) == 0
    text = capsys.readouterr().out
    assert "adaptive (BPDA)" in text and "stochastic: 3 draws per image" in text and "unchanged codes:" in text


def test_robustness_and_attack_refuse_runs_they_do_not_take(runs, capsys):
    cases = [(["robustness", str(runs / "vae0"), "--classifier", str(runs / "classifier")], "`varilab robustness` does not apply to vae runs"),
             (["robustness", str(runs / "purifier"), "--classifier", str(runs / "vae0")], "is a vae run, not a classifier"),
             (["robustness", str(runs / "purifier")], "--classifier RUN2"),
             (["robustness", str(runs / "purifier"), "--classifier", str(runs / "classifier"), "--attack", "fgsm",
               "--steps", "3"], "--steps applies to --attack pgd or bpda, not to fgsm")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_purifier_eval_reports_its_lipschitz_bound_and_codes(runs, capsys):
    assert main(["eval", str(runs / "purifier")]) == 0
    text = capsys.readouterr().out
    values = dict(line.split() for line in text.strip().splitlines())
    assert 15 < float(values["lipschitz_bound"]) < 17  # the default bound, 16, up to the power iteration's error
    assert float(values["code_values_used_mean"]) > 1.5 and int(values["distinct_codes"]) > 10  # the codes live
    assert main(["report", str(runs / "purifier")]) == 0
    page = (runs / "purifier" / "report.html").read_text()
    says_each_thing_once(page)
    assert "Purified test images" in page and "Latent diagnostics" in page and "Two measures: an active unit" in page
    assert f"varilab robustness {runs / 'purifier'} --classifier" in page  # where its robustness is measured
    assert main(["report", str(runs / "classifier")]) == 0
    assert "Test accuracy" in (runs / "classifier" / "report.html").read_text()
    says_each_thing_once((runs / "classifier" / "report.html").read_text())
