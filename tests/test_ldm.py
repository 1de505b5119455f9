"""The latent diffusion model (`--model ldm`): its autoencoder is diffusers' AutoencoderKL, read and written the way
diffusers reads and writes it; its KL term against the closed form; the scaling factor gives unit spread on the
training latents; the SDEdit-style DDIM edit against its one-step closed form, its limit at strength 0 and its
determinism; a run trains, saves, loads, samples, reports and is attacked through the command line, and the verbs it
has no version of answer in one line."""
import json

import numpy as np
import pytest
import torch

from pages import says_each_thing_once
from varilab.cli import main
from varilab.families import registry

diffusers = pytest.importorskip("diffusers", reason="the ldm model needs diffusers (varilab[ldm])")

from varilab.models.diffusion.denoiser import Denoiser, DenoiserConfig  # noqa: E402
from varilab.models.diffusion.ldm import AutoencoderConfig, KLAutoencoder, LatentDiffusion  # noqa: E402

TINY = AutoencoderConfig(image_shape=(8, 8), widths=(8, 16), groups=4, latent_channels=4)  # latents 4 x 4 x 4


def tiny_ldm(seed: int = 0, kl_weight: float = 1e-6) -> LatentDiffusion:
    torch.manual_seed(seed)
    ae = KLAutoencoder(AutoencoderConfig(image_shape=(8, 8), widths=(8, 16), groups=4, kl_weight=kl_weight))
    den = Denoiser(DenoiserConfig(x_dim=64, image_shape=(4, 4), channels=8, mults=(1,), T=100, unit_range=False))
    torch.nn.init.normal_(den.net.conv_out.weight, std=0.3)  # a zero-initialised output would predict eps = 0
    return LatentDiffusion(ae, den).eval()


def images(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 64, generator=torch.Generator().manual_seed(seed))


def test_the_autoencoder_is_diffusers_autoencoder_kl_and_reads_images_as_diffusers_does():
    ae = KLAutoencoder(TINY).eval()
    assert type(ae.net) is diffusers.AutoencoderKL
    cfg = ae.net.config
    assert (cfg.latent_channels, tuple(cfg.block_out_channels), cfg.norm_num_groups, cfg.in_channels) == (4, (8, 16), 4, 1)
    assert set(cfg.down_block_types) == {"DownEncoderBlock2D"} and set(cfg.up_block_types) == {"UpDecoderBlock2D"}
    x = images()
    with torch.no_grad():
        theirs = ae.net.encode(2 * x.reshape(-1, 1, 8, 8) - 1).latent_dist  # diffusers' images live on [-1, 1]
        q = ae.encode(x)
        assert q.batch_shape == (16,) and q.event_shape == (64,) and theirs.mean.shape == (16, 4, 4, 4)
        assert torch.equal(q.mean, theirs.mean.flatten(1)) and torch.allclose(q.stddev, theirs.std.flatten(1))
        z = torch.randn(16, 64)
        out = ae.net.decode(z.reshape(-1, 4, 4, 4)).sample
        assert torch.allclose(ae.decode(z), ((out + 1) / 2).clamp(0, 1).flatten(1))


def test_sides_that_are_not_multiples_of_the_downsampling_are_padded_and_cropped():
    torch.manual_seed(0)
    ae = KLAutoencoder(AutoencoderConfig(image_shape=(7, 6), widths=(8, 8, 8), groups=4)).eval()  # f = 4
    assert ae.config.latent_shape == (4, 2, 2)
    with torch.no_grad():
        assert ae.reconstruct(torch.rand(3, 42)).shape == (3, 42)
    with pytest.raises(ValueError, match=r"rows \[B, 42\]"):
        ae.encode(torch.rand(3, 64))


def test_the_kl_term_equals_the_closed_form_times_its_weight():
    torch.manual_seed(0)
    ae = KLAutoencoder(AutoencoderConfig(image_shape=(8, 8), widths=(8, 16), groups=4, kl_weight=0.37))
    x = images(8)
    out = ae.loss(x)
    q = ae.encode(x)
    mu, var = q.mean.double(), q.variance.double()
    kl = 0.5 * (mu ** 2 + var - 1 - var.log()).sum(1)  # KL(N(mu, var) || N(0, 1)), per image
    assert torch.allclose(out["kl"].double(), kl.mean(), rtol=1e-5)
    assert torch.allclose(out["kl"], ae.posterior(x).kl().mean(), rtol=1e-5)  # diffusers' own KL
    assert torch.allclose(out["loss"].double(), out["reconstruction"].double() + 0.37 * kl.mean(), rtol=1e-5)
    assert float(out["kl"].detach()) > 1  # not a vanishing term that any weight would pass


def test_the_scaling_factor_gives_the_training_latents_unit_spread():
    model = tiny_ldm()
    with torch.no_grad():  # spread the latent means three times wider than a fresh network's (about 1)
        model.autoencoder.net.quant_conv.weight[:4] *= 3
        model.autoencoder.net.quant_conv.bias[:4] *= 3
    x = images(600)
    before = torch.cat([model.latents(xb) for xb in x.split(100)])
    scale = model.fit_scale(x, seed=3, batch=128)
    assert abs(float(before.std()) - 1) > 0.2  # the raw latents are far from unit spread
    assert float(model.scale) == pytest.approx(scale)
    torch.manual_seed(1)  # a fresh draw z ~ q(z|x) over the same images
    after = torch.cat([model.latents(xb) for xb in x.split(100)])
    assert float(after.std()) == pytest.approx(1.0, abs=0.01)
    assert "scale" in model.state_dict()  # saved with the weights


def test_the_edit_is_one_ddim_step_in_closed_form_and_the_reconstruction_at_strength_zero():
    model = tiny_ldm()
    model.scale.fill_(1.7)
    x, noise = images(6), torch.randn(6, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        t = 0.5
        z0 = 1.7 * model.encode(x).mean
        alpha, sigma = float(model.denoiser.schedule.alpha(t)), float(model.denoiser.schedule.sigma(t))
        z_t = alpha * z0 + sigma * noise
        eps = model.denoiser(z_t, torch.full((6,), t), ema=True)
        expected = model.decode((z_t - sigma * eps) / alpha / 1.7)  # x0_hat = (z_t - sigma eps_hat) / alpha
        edit = model.edit(x, noise, strength=t, steps=1)
        assert torch.allclose(edit, expected, atol=1e-5)
        recon = model.reconstruct(x)
        assert (edit - recon).abs().max() > 0.05  # at t = 0.5 the edit redraws the image
        near_zero = model.edit(x, noise, strength=1e-6, steps=5)
        assert (near_zero - recon).abs().max() < 2e-3
        assert torch.equal(model.edit(x, noise, strength=0.5, steps=10), model.edit(x.clone(), noise.clone(), 0.5, 10))
        assert not torch.allclose(model.edit(x, noise, 0.5, 10), model.edit(x, -noise, 0.5, 10))
    for strength in (0.0, 1.5):
        with pytest.raises(ValueError, match="strength"):
            model.edit(x, noise, strength=strength)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ldm")
    out = root / "ldm"
    from sklearn.datasets import load_digits

    np.save(root / "digits.npy", (load_digits().images[:200] / 16).astype(np.float32))  # 200 of them: a fast run
    assert main(["train", "--model", "ldm", "--data", str(root / "digits.npy"), "--ae-widths", "8,16", "--ae-groups", "4",
                 "--vae-epochs", "2", "--epochs", "1", "--channels", "8", "--mults", "1", "--timesteps", "100",
                 "--batch-size", "64", "--quiet", "--out", str(out)]) == 0
    return out


def test_a_run_saves_loads_samples_and_evaluates(run, capsys):
    assert (run / "vae" / "model.safetensors").exists() and (run / "model.safetensors").exists()
    from safetensors.torch import load_file

    saved = load_file(run / "model.safetensors")
    a, b = registry.load(run).model, registry.load(run).model
    assert float(a.scale) == float(saved["scale"]) != 1.0  # the scaling factor travels with the weights
    noise = torch.randn(4, 64)
    data = registry.load(run).data.x_test[:4]
    assert torch.equal(a.edit(data, noise), b.edit(data, noise))
    assert main(["sample", str(run), "--n", "5", "--sampler", "ddim", "--steps", "10"]) == 0
    samples = np.load(run / "samples-ddim-10.npy")
    assert samples.shape == (5, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"test_loss", "reconstruction_mse", "latent_kl", "scale"} <= set(result) and result["scale"] == float(a.scale)


@pytest.mark.slow
def test_a_run_reports(run):
    """The page (edits at three strengths, 150 sampling steps: about a minute on two busy cores)."""
    assert main(["report", str(run)]) == 0
    assert "Reconstructions and edits" in (run / "report.html").read_text()
    says_each_thing_once((run / "report.html").read_text())


def test_attack_on_an_ldm_run_measures_the_edit_and_stays_in_the_ball(run, tmp_path, capsys):
    out = tmp_path / "attack"
    assert main(["attack", str(run), "--eps", "8/255", "--steps", "3", "--n", "12", "--edit-strength", "0.4",
                 "--refine-steps", "4", "--out", str(out), "--quiet"]) == 0
    assert "; edit " in capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    assert m["edit_effect_over_control"] > 0 and m["reconstruction_effect_over_control"] > 0
    assert m["edit_mse_vs_clean_adversarial"] > 0 and m["loss_adversarial"] < m["loss_clean"]
    x = registry.load(run).data.x_test[:12].numpy().reshape(-1, 8, 8)
    adv, ctl = np.load(out / "adversarial.npy"), np.load(out / "control.npy")
    for a in (adv, ctl):
        assert a.min() >= 0 and a.max() <= 1 and np.abs(a - x).max() <= 8 / 255 + 1e-6
    assert m["linf_adversarial"] <= 8 / 255 + 1e-6
    assert "edit: error vs clean edit, attacked" in (out / "report.html").read_text()
    says_each_thing_once((out / "report.html").read_text())
    assert main(["attack", str(run), "--edit-strength", "0", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "edit_strength must lie in (0, 1], got 0.0" in err[0]


@pytest.mark.parametrize("argv, message", [
    (["diagnose"], "`varilab diagnose` does not apply to diffusion runs"),
    (["solve", "--task", "denoise", "--truth", "x.npy"], "its denoiser models the autoencoder's latents"),
    (["sample", "--prior", "normal"], "ldm draws its latents from its DDPM"),
    (["sample", "--steps", "101"], "exceeds the 100 timesteps")])
def test_verbs_an_ldm_run_has_no_version_of_answer_in_one_line(run, tmp_path, capsys, argv, message):
    if argv[0] == "solve":
        argv = [*argv, "--out", str(tmp_path / "s")]
    assert main([argv[0], str(run), *argv[1:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_bad_autoencoder_sizes_are_refused_before_training(tmp_path, capsys):
    assert main(["train", "--model", "ldm", "--ae-widths", "8,12", "--ae-groups", "8", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ae-groups 8 must divide every --ae-widths value" in err[0]
    assert not (tmp_path / "r").exists()


def test_resume_continues_the_ddpm_on_the_same_latents_and_refuses_a_longer_first_stage(run, tmp_path, capsys):
    import shutil

    out = tmp_path / "r"
    shutil.copytree(run, out)
    scale = float(registry.load(out).model.scale)
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and float(registry.load(out).model.scale) == scale
    capsys.readouterr()
    assert main(["train", "--resume", "--out", str(out), "--vae-epochs", "3", "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--vae-epochs 3 cannot continue the autoencoder now" in err[0]
    assert json.loads((out / "config.json").read_text())["vae_epochs"] == 2
