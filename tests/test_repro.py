"""The reproduction harness in quick mode: it writes JSON and a markdown table, and the finding holds.

`make test` runs the harness end to end on the cheap reproductions (linear VAE collapse, latent SDE Hurst) and the
ARD-VAE's first row in this process on less data; the other --quick runs, a minute or more each, are the slow forms
(`pytest -m slow`, `make test-all`, `make repro`). Parts of their findings have fast tests of their own: the attack's
effect over random noise and its transfer, and BPDA no weaker than gray-box, in test_attack_run.py; error regression
beating free running in test_sequence_run.py."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    """repro/NAME.py, imported."""
    spec = importlib.util.spec_from_file_location(f"repro_{name}_under_test", ROOT / f"repro/{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_linear_vae_collapse_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "repro/run.py"), "--quick", "--only", "linear_vae_collapse",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "linear_vae_collapse.json").read_text())
    assert result["held"] is True
    assert [r["active_units"] for r in result["rows"]] == [r["predicted_active"] for r in result["rows"]] == [5, 3]
    md = (tmp_path / "linear_vae_collapse.md").read_text()
    assert "| 0.8 | 5 | 5 | +0 |" in md and "the finding held" in md


@pytest.mark.slow
def test_ard_vae_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "repro/run.py"), "--quick", "--only", "ard_vae", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "ard_vae.json").read_text())
    assert result["rows"][0]["ard_relevant"] == 3
    disks = result["rows"][1]
    assert disks["true"] == 3 and disks["two_nn"] == pytest.approx(3.0, abs=0.5)  # measured without a model
    assert result["held"] == all(abs(r["ard_relevant"] - r["true"]) <= 1 for r in result["rows"])


def test_ard_vae_finds_three_dimensions_on_less_data(tmp_path):
    """The quick run's row (k = 3, 4,000 points, 40 epochs) on 2,000 points, in this process. (With 20 epochs one
    data seed in six still shows a fourth dimension; with 40, none does.)"""
    from varilab.data import load

    ds = load("linear-gaussian", spectrum=[6.0, 5.5, 5.0, 0.01], dim=16, n=2000, seed=3)  # as ard_vae.run builds it
    found, _, _ = _module("ard_vae").train_pair(ds, True, 40, [64], str(tmp_path))
    assert found == 3


def test_linear_mhvae_meets_the_closed_form_collapse_thresholds():
    """Dang et al.'s MHVAE optimum: both regimes, counts exact and encoder singular values within 5%."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("chc", ROOT / "repro/conditional_hierarchical_collapse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.hvae_sweep(quick=True)
    assert [(r["regime"], r["predicted_active"]) for r in rows] == [(1, 6), (1, 3), (2, 5)]
    assert all(r["active_units"] == r["predicted_active"] for r in rows)
    assert max(r["max_rel_error_lambda"] for r in rows) < 0.05


@pytest.mark.slow
def test_attack_and_purifier_reproductions_quick(tmp_path):
    """Both reproductions run end to end on the digits (their MNIST and Fashion-MNIST thresholds are for
    `make repro`): the attack beats random noise and transfers, the purifier helps gray-box and BPDA is no
    weaker than gray-box, and the markdown holds every row."""
    proc = subprocess.run([sys.executable, str(ROOT / "repro/run.py"), "--quick", "--only", "posterior_collapse_attack",
                           "purifier_robustness", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pca = json.loads((tmp_path / "posterior_collapse_attack.json").read_text())
    a = pca["results"]["A/collapse/8"]
    assert a["reconstruction_effect_over_control"] > 3 and a["linf_adversarial"] <= 8 / 255 + 1e-6
    assert a["target_reconstruction_mse_vs_clean_adversarial"] > a["target_reconstruction_mse_vs_clean_control"]
    assert pca["results"]["DiffuseVAE/collapse/8"]["refinement_effect_over_control"] > 1
    assert (tmp_path / "posterior_collapse_attack.md").read_text().count("/255 |") == 4  # collapse and push, VAEs and ldm
    ldm = pca["results"]["LDM/collapse/8"]
    assert ldm["edit_effect_over_control"] > 0 and ldm["linf_adversarial"] <= 8 / 255 + 1e-6
    assert pca["checks"]["ldm_edit_collapse_effect_3x_random_at_8 (one model)"] == (ldm["edit_effect_over_control"] >= 3)
    assert 0 < pca["results"]["ldm"]["reconstruction_mse"] < 0.1
    seeds = pca["results"]["collapse_8_by_seed"]
    assert seeds["seeds"] == [0, 1] and seeds["effect"][0] == pytest.approx(a["reconstruction_effect_over_control"])
    low, high = seeds["interval_95"]
    assert low < seeds["mean"] < high
    assert pca["checks"]["collapse_effect_3x_random_at_8 (95% interval over seeds above 3)"] == (low >= 3)
    pur = json.loads((tmp_path / "purifier_robustness.json").read_text())["results"]
    pgd, bpda = pur["0.2/pgd"], pur["0.2/bpda"]
    assert pgd["robust_accuracy_purified"] > pgd["robust_accuracy"] + 0.1
    assert bpda["robust_accuracy_purified"] <= pgd["robust_accuracy_purified"]
    assert (tmp_path / "purifier_robustness.md").read_text().count("| 0.2 |") == 3


def _quick(name: str, out) -> dict:
    """`repro/run.py --quick --only NAME` in a fresh process; its JSON result."""
    proc = subprocess.run([sys.executable, str(ROOT / "repro/run.py"), "--quick", "--only", name, "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads((out / f"{name}.json").read_text())


@pytest.mark.slow
def test_pvrnn_meta_prior_reproduction_quick(tmp_path):
    """The PV-RNN reproduction end to end on short sequences (its thresholds are for `make repro`): every w is
    trained, generated from and followed by error regression, which beats running free at every w; every convention
    of public PV-RNN code is run at the three w, and the defaults' runs are measured on their way."""
    result = _quick("pvrnn_meta_prior", tmp_path)
    assert set(result["results"]) == {"0.0001", "0.01", "1"}
    assert result["checks"]["error_regression_beats_free_at_every_w"] is True
    assert all(0 < r["sigma_p"] < 2 and 0 <= r["p_circle_gap"] <= 1.5 for r in result["results"].values())
    assert len(result["why"]) == 6 and all(set(r) == {"0.0001", "0.01", "1"} for r in result["why"].values())
    assert result["why"]["as built (the defaults)"]["1"]["sigma_p"] == result["results"]["1"]["sigma_p"]
    assert [len(c) for c in result["training_length"].values()] == [2, 2, 2]
    assert result["training_length"]["1"][-1]["sigma_p"] == result["results"]["1"]["sigma_p"]  # the last is the sweep's
    page = (tmp_path / "pvrnn_meta_prior.md").read_text()
    assert page.count("\n| 0.0001 |") == 1 and "| all four (with --recon per-dim) |" in page and "| 4 training sequences" in page
    assert "Cause. sigma_p" in page and "noise reaching the units goes from" in page


def test_latent_sde_hurst_reproduction_quick(tmp_path):
    """The latent SDE reproduction end to end on a few short series (its thresholds are for `make repro`): each true H
    trains a fractional and a Brownian model, and the approximation errors fall with K."""
    result = _quick("latent_sde_hurst", tmp_path)
    assert set(result["results"]) == {"0.2", "0.5", "0.8"}
    assert result["checks"]["approximation_error_falls_with_k"] is True
    assert all(0 < r["fbm"]["hurst"] < 1 and r["brownian"]["hurst"] == 0.5 for r in result["results"].values())
    assert (tmp_path / "latent_sde_hurst.md").read_text().count("\n| ") == 4  # header and three H rows


@pytest.mark.slow
def test_squeeze3d_reproduction_quick(tmp_path):
    """The Squeeze3D reproduction end to end on tiny autoencoders (its threshold is for `make repro`): G and E train,
    a squeeze3d run per code length is measured on held-out and out-of-distribution shapes beside the baselines. Its
    commands and numbers have fast tests in test_pointcloud_run.py."""
    pytest.importorskip("trimesh")
    result = _quick("squeeze3d_pointclouds", tmp_path)
    assert set(result["results"]) == {"8", "16"}
    for bits, r in result["results"].items():
        assert r["held_out"]["bytes_per_shape"] == int(bits) / 8 and r["out_of_distribution"]["shapes"] == 6
        assert r["held_out"]["coordinates_over_squeeze3d"] > 0
    assert (tmp_path / "squeeze3d_pointclouds.md").read_text().count("\n| ") == 5  # header and 2 x 2 rows


@pytest.mark.slow
def test_laf_unlearning_reproduction_quick(tmp_path):
    """The LAF reproduction end to end on digits (its thresholds are for `make repro`): every method forgets class 0
    and a random 10% of one classifier; retraining never predicts the class it never saw, the original does, and the
    sweep of LAF's rounds and the table of accuracy by class are written."""
    result = _quick("laf_unlearning", tmp_path)
    c = result["results"]["class:0"]
    assert set(c) == {"original", "retrain", "laf", "laf+labels", "finetune", "ascent", "random-labels"}
    assert c["retrain"]["accuracy_forgotten"] <= 0.05 and c["original"]["accuracy_forgotten"] >= 0.8
    assert c["retrain"]["time_vs_retrain"] == 1.0 and c["laf"]["time_vs_retrain"] > 0
    assert [r["rounds"] for r in result["sweep"]] == [1, 4]
    assert len(result["by_class"]["original"]) == 10
    text = (tmp_path / "laf_unlearning.md").read_text()
    assert "LAF's trade-off" in text and "Test accuracy by class" in text


@pytest.mark.slow
def test_phg_mae_reproduction_quick(tmp_path):
    """The PHG-MAE reproduction end to end on a few scenes (its thresholds are for `make repro`): a teacher, its
    ensembles of 4, 8 and 16, every subset and a student under 50,000 parameters are measured."""
    result = _quick("phg_mae", tmp_path)
    mean = result["results"]["mean"]
    assert {"miou_all_inputs", "miou_ensemble_4", "miou_ensemble_8", "miou_ensemble_16", "student_miou"} <= set(mean)
    assert mean["student_parameters"] <= 50_000 and len(result["results"]["per_seed"][0]["subsets"]) == 7
    assert all(0 <= mean[k] <= 1 for k in mean if "miou" in k or k.startswith("subset_"))
    assert set(result["results"]["disagreement"]) == {"all_inputs", "ensemble_8"}  # two seeds' predictions compared
    assert all(0 <= v <= 1 for v in result["results"]["disagreement"].values())
    assert len(result["results"]["disagreement_drop_interval"]) == 2
    held = result["checks"]["ensemble of 8 gains at least 1 mIoU point"] or result["checks"][
        "or: within 1 point, and the seeds' predictions disagree less with the ensemble"]
    assert result["held"] == (held and mean["miou_ensemble_8"] - mean["student_miou"] <= 0.02)


@pytest.mark.slow
def test_learned_codec_vs_webp_quick(tmp_path):
    """The learned-codec-against-WebP experiment end to end on 200 images (its verdict is for `make repro`): two arms
    of the ceiling and two lambdas of the hyperprior are trained and coded into files, WebP's and JPEG's curves are
    measured, and the hyperprior is read at WebP's rates inside 0.5-2 bits per pixel."""
    pytest.importorskip("constriction")
    result = _quick("learned_codec_vs_webp", tmp_path)
    assert len(result["results"]) == 4 and all(e["codes_round_trip"] for e in result["results"].values())
    assert len(result["webp"]) == 10 and len(result["hyperprior"]) == 2
    rates = [r for r, _ in result["webp"]]
    assert rates == sorted(rates)  # WebP's rate rises with its quality
    assert set(result["bd_rate"]) == {"hyperprior", "JPEG"}
    assert "| at WebP's rate (bpp) |" in (tmp_path / "learned_codec_vs_webp.md").read_text()
