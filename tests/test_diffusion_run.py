"""The U-Net, the Denoiser, DiffuseVAE and diffusion run folders through the CLI."""
import json

import numpy as np
import pytest
import torch

from pages import says_each_thing_once
from varilab.families import registry
from varilab.families import diffusion as D
from varilab.cli import main
from varilab.models.diffusion.denoiser import Denoiser, DenoiserConfig
from varilab.models.diffusion.diffusevae import DiffuseVAE
from varilab.models.diffusion.unet import UNet, UNetConfig


@pytest.mark.parametrize("shape", [(8, 8), (7, 9)])
def test_unet_keeps_the_layout_pads_odd_sides_and_starts_at_zero(shape):
    torch.manual_seed(0)
    net = UNet(UNetConfig(image_shape=shape, channels=8, cond_channels=1))
    d = shape[0] * shape[1]
    x, c, t = torch.randn(3, d), torch.rand(3, d), torch.rand(3)
    assert net(x, t, cond=c).shape == (3, d)
    assert net(x.reshape(3, 1, *shape), t, cond=c).shape == (3, 1, *shape)
    assert torch.count_nonzero(net(x, t, cond=c)) == 0  # zero-initialised output convolution
    torch.nn.init.normal_(net.conv_out.weight)
    a, b = net(x, t, cond=c), net(x, t, cond=torch.rand(3, d))
    assert not torch.allclose(a, b)  # the condition reaches the output
    with pytest.raises(ValueError, match="cond"):
        net(x, t)
    with pytest.raises(ValueError, match="rows or"):
        net(torch.randn(3, d + 1), t, cond=c)


def test_unet_is_translation_aware_per_example():
    """Each example's output depends on that example only (no mixing across the batch)."""
    torch.manual_seed(0)
    net = UNet(UNetConfig(image_shape=(8, 8), channels=8))
    torch.nn.init.normal_(net.conv_out.weight)
    x, t = torch.randn(4, 64), torch.rand(4)
    y = net(x, t)
    x2 = x.clone()
    x2[3] = torch.randn(64)
    y2 = net(x2, t)
    assert torch.allclose(y[:3], y2[:3], atol=1e-6) and not torch.allclose(y[3], y2[3])


@pytest.mark.parametrize("process, loss", [("ddpm", "eps"), ("ddpm", "dsm"), ("flow", "flow")])
def test_denoiser_prediction_kinds_agree(process, loss):
    """Whatever the network predicts, eps, x0 and the score it implies satisfy x_t = alpha x0 + sigma eps."""
    torch.manual_seed(0)
    m = Denoiser(DenoiserConfig(x_dim=2, process=process, loss=loss, unit_range=False))
    x_t, t = torch.randn(5, 2), torch.full((5,), 0.4)
    eps, x0, score = (m.prediction(x_t, t, to=k) for k in ("eps", "x0", "score"))
    a, s = float(m.schedule.alpha(torch.tensor(0.4))), float(m.schedule.sigma(torch.tensor(0.4)))
    assert torch.allclose(a * x0 + s * eps, x_t, atol=1e-5)
    assert torch.allclose(score, -eps / s, atol=1e-5)


def test_denoiser_loss_is_minimised_by_the_exact_field_on_a_point_mass():
    """For data at one point m the optimal eps-prediction is (x_t - alpha m) / sigma; that field gives loss 0."""
    m = Denoiser(DenoiserConfig(x_dim=3, unit_range=False))
    point = torch.tensor([0.5, -1.0, 2.0])
    sched = m.schedule

    class Exact(torch.nn.Module):
        def forward(self, x_t, t):
            a, s = sched.alpha(t.double()).float()[:, None], sched.sigma(t.double()).float()[:, None]
            return (x_t - a * point) / s

    m.net = Exact()
    assert float(m.loss(point.expand(64, 3))["loss"]) < 1e-6


def test_diffusevae_latent_controls_the_refined_sample():
    """With DDIM and fixed noise the refinement is a function of z: along a path z_a -> z_b the refined sample
    moves away from refined(z_a) and towards refined(z_b)."""
    from varilab.models import build_model

    torch.manual_seed(0)
    vae = build_model("vae", 64, latent_dim=4, hidden=[32])
    den = Denoiser(DenoiserConfig(x_dim=64, image_shape=(8, 8), channels=8, cond_channels=1, T=100))
    torch.nn.init.normal_(den.net.conv_out.weight, std=0.3)
    model = DiffuseVAE(vae, den).eval()
    za, zb = torch.randn(1, 4), torch.randn(1, 4)
    lams = torch.linspace(0, 1, 6)[:, None]
    z = (1 - lams) * za + lams * zb
    noise = torch.randn(1, 64).expand(6, 64)
    x_hat, refined = model.sample(z=z, noise=noise, steps=20)
    again = model.sample(z=z, noise=noise, steps=20)[1]
    assert torch.equal(refined, again)  # deterministic
    to_a = (refined - refined[0]).norm(dim=1)
    to_b = (refined - refined[-1]).norm(dim=1)
    assert torch.all(to_a[1:] > to_a[:-1]) and torch.all(to_b[1:] < to_b[:-1])
    assert not torch.allclose(refined, x_hat)  # the DDPM does change the VAE output


def test_diffusion_runs_train_sample_resume_and_report(tmp_path, capsys):
    out = tmp_path / "dvae"
    assert main(["train", "--model", "diffusevae", "--data", "digits", "--epochs", "1", "--vae-epochs", "2",
                 "--channels", "8", "--timesteps", "100", "--expost-gmm", "3", "--quiet", "--out", str(out)]) == 0
    assert (out / "vae" / "model.safetensors").exists() and (out / "model.safetensors").exists()
    from safetensors.torch import load_file

    saved = load_file(out / "model.safetensors")
    assert saved["latent_prior.loc"].shape == (3, 16)  # the ex-post mixture travels with the weights
    mixture = registry.load(out).model.latent_prior
    assert torch.equal(mixture.loc, saved["latent_prior.loc"]) and float(mixture.loc.abs().sum()) > 0
    assert json.loads((out / "config.json").read_text())["family"] == "diffusion"
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", "--quiet"]) == 0
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]  # the VAE stage was finished and is not redone
    assert len((out / "vae" / "metrics.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    assert main(["sample", str(out), "--steps", "5", "--n", "3", "--out", str(tmp_path / "s.npy")]) == 0
    s, v = np.load(tmp_path / "s.npy"), np.load(tmp_path / "s-vae.npy")
    assert s.shape == v.shape == (3, 8, 8) and 0 <= s.min() and s.max() <= 1
    assert main(["sample", str(out), "--steps", "5", "--n", "3", "--prior", "normal", "--out", str(tmp_path / "n.npy")]) == 0
    assert not np.allclose(np.load(tmp_path / "n-vae.npy"), v)  # z from N(0, I), not from the mixture
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    says_each_thing_once(page)
    assert "VAE output and its refinement" in page and "bits/dim" in page and "http" not in page.split("<body>")[1]
    capsys.readouterr()
    assert main(["eval", str(out), "--json"]) == 0
    e = json.loads(capsys.readouterr().out)  # one definition: the page's bits/dim is eval's, on the same points
    assert f"{e['bits_per_dim']:.3f} +- {e['bits_per_dim_se']:.3f}" in page and "256 test points" in page
    assert main(["diagnose", str(out / "vae"), "--json"]) == 0  # stage 1 is an ordinary VAE run


@pytest.mark.parametrize("model, extra", [("ddpm", ["--loss", "dsm"]), ("flow", [])])
def test_ddpm_and_flow_runs_learn_and_sample(tmp_path, model, extra):
    out = tmp_path / model
    assert main(["train", "--model", model, "--data", "digits", "--epochs", "3", "--channels", "8", "--quiet",
                 "--out", str(out), *extra]) == 0
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert losses[-1] < losses[0]
    run = registry.load(out)
    shown = dict(run.settings)  # the page's configuration table: the U-Net's options, not the MLP's
    assert {"channels", "mults", "downscale"} <= set(shown) and not {"hidden", "depth"} & set(shown)
    for sampler in ("ddpm", "ddim", "euler-maruyama", "pf-euler", "pf-heun"):
        x = D.sample(run, 4, steps=4, sampler=sampler)["samples"]
        assert x.shape == (4, 64) and torch.isfinite(x).all()


def test_diffusion_on_vectors_uses_the_mlp(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.array([[-2.0, 0.0], [2.0, 0.0]])
    x = centres[rng.integers(0, 2, 4000)] + 0.3 * rng.standard_normal((4000, 2))
    np.save(tmp_path / "mix.npy", x.astype(np.float32))
    out = tmp_path / "run"
    assert main(["train", "--model", "flow", "--data", str(tmp_path / "mix.npy"), "--epochs", "60", "--hidden", "64",
                 "--batch-size", "128", "--lr", "3e-3", "--quiet", "--out", str(out)]) == 0
    run = registry.load(out)
    assert type(run.model.net).__name__ == "DiffusionMLP"
    shown = dict(run.settings)  # the page's configuration table: the MLP's options, not the U-Net's
    assert shown["hidden"] == [64] and "depth" in shown and not {"channels", "mults", "downscale"} & set(shown)
    s = D.sample(run, 2000, steps=30, sampler="pf-heun")["samples"].numpy()
    right = (s[:, 0] > 0).mean()
    assert abs(right - 0.5) < 0.08 and abs(np.abs(s[:, 0]).mean() - 2.0) < 0.15 and abs(s[:, 1].std() - 0.3) < 0.06


def test_diffusion_cli_errors(tmp_path, capsys):
    assert main(["train", "--model", "ddpm", "--loss", "flow", "--out", str(tmp_path / "a")]) == 2
    assert "does not apply to ddpm" in capsys.readouterr().err
    assert main(["train", "--model", "vae", "--channels", "8", "--out", str(tmp_path / "b")]) == 2
    assert "applies to the diffusion models" in capsys.readouterr().err
    assert main(["train", "--model", "ddpm", "--downscale", "3", "--out", str(tmp_path / "c")]) == 2
    assert "does not divide" in capsys.readouterr().err
    assert main(["train", "--model", "ddpm", "--epochs", "1", "--channels", "8", "--quiet", "--out", str(tmp_path / "d")]) == 0
    assert main(["sample", str(tmp_path / "d"), "--sampler", "euler"]) == 2
    assert "sampler must be one of ddpm, ddim, euler-maruyama, pf-euler, pf-heun, got 'euler'" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "d"), "--channels", "16"]) == 2
    assert "--channels is 16 but the run was started with 8; a resumed run keeps" in capsys.readouterr().err
    assert main(["sample", str(tmp_path)]) == 2
    assert "not a varilab run (no config.json)" in capsys.readouterr().err


def test_weight_average_follows_its_formula_samples_from_it_and_resumes_exactly(tmp_path):
    """EMA: theta_ema <- d theta_ema + (1 - d) theta, d = min(decay, (1 + n) / (10 + n)); kept through resume."""
    torch.manual_seed(0)
    m = Denoiser(DenoiserConfig(x_dim=2, unit_range=False, ema=0.9, hidden=8, depth=1))
    expected = [p.detach().clone() for p in m.net.parameters()]
    opt = torch.optim.SGD(m.net.parameters(), lr=0.1)
    for n in range(5):
        opt.zero_grad()
        m.loss(torch.randn(16, 2))["loss"].backward()
        opt.step()
        m.after_optimizer_step()
        d = min(0.9, (1 + n) / (10 + n))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, m.net.parameters())]
    for e, p in zip(expected, m.ema_net.parameters()):
        assert torch.allclose(e, p, atol=1e-6)
    assert not all(torch.allclose(a, b) for a, b in zip(m.net.parameters(), m.ema_net.parameters()))
    x_t, t = torch.randn(4, 2), torch.full((4,), 0.5)
    assert torch.allclose(m(x_t, t, ema=True), m.ema_net(x_t, t)) and not torch.allclose(m(x_t, t), m(x_t, t, ema=True))

    args = ["--model", "ddpm", "--data", "digits", "--channels", "8", "--timesteps", "100", "--ema", "0.99", "--quiet"]
    assert main(["train", *args, "--epochs", "2", "--out", str(tmp_path / "straight")]) == 0
    assert main(["train", *args, "--epochs", "1", "--out", str(tmp_path / "resumed")]) == 0
    assert main(["train", "--resume", "--out", str(tmp_path / "resumed"), "--epochs", "2", "--quiet"]) == 0
    a, b = registry.load(tmp_path / "straight").model, registry.load(tmp_path / "resumed").model
    assert int(a.ema_steps) == int(b.ema_steps) > 0
    for p, q in zip(a.ema_net.parameters(), b.ema_net.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_default_ddpm_samples_a_three_mode_mixture_with_the_right_weights(tmp_path):
    """Weights 0.5 / 0.3 / 0.2, well separated; 8,000 samples put the standard error of a weight under 0.006,
    so 0.03 is five of them. The default moving average of the weights is what gets it there."""
    rng = np.random.default_rng(0)
    w, centres = np.array([0.5, 0.3, 0.2]), np.array([[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]])
    k = rng.choice(3, size=6000, p=w)
    np.save(tmp_path / "mix.npy", (centres[k] + 0.5 * rng.standard_normal((6000, 2))).astype(np.float32))
    out = tmp_path / "ddpm"
    assert main(["train", "--model", "ddpm", "--data", str(tmp_path / "mix.npy"), "--quiet", "--out", str(out)]) == 0
    run = registry.load(out)
    assert run.options.ema == 0.999 and run.options.epochs == 50  # the defaults
    for sampler, steps in (("ddim", 50), ("ddpm", 100)):
        s = D.sample(run, 8000, seed=1, steps=steps, sampler=sampler)["samples"].numpy()
        share = np.bincount(((s[:, None] - centres[None]) ** 2).sum(-1).argmin(1), minlength=3) / len(s)
        assert np.abs(share - w).max() < 0.03, (sampler, share)
