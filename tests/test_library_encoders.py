"""diagnose on the encoders of other libraries, with one line of glue each: a diffusers AutoencoderKL (image
latents [N, 4, h, w] through `latent_dist`) and a pythae VAE (a dict-like output with `embedding` and
`log_covariance`). KL per coordinate equals the closed form from the library's own mean and log-variance,
and the total equals the library's own KL.

These run in the benchmark environment (`.venv-bench`, made by `make bench`), where the libraries are
installed: `.venv-bench/bin/python -m pytest tests/test_library_encoders.py`. Elsewhere they are skipped.
"""
from __future__ import annotations

import re

import pytest
import torch

from varilab.diagnostics import diagnose
from varilab.report import diagnosis_report


def closed_form(mu, log_var):
    """KL(N(mu, exp(log_var)) || N(0, 1)) per coordinate, averaged over points."""
    return (0.5 * (log_var.exp() + mu ** 2 - 1 - log_var)).mean(0).flatten()


def test_diffusers_autoencoder_kl_is_diagnosed_through_its_latent_dist(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=(8, 16),
                                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                                  norm_num_groups=4, sample_size=16).eval()
    x = torch.rand(64, 1, 16, 16)
    d = diagnose(lambda x: vae.encode(x).latent_dist, x)  # the one line of glue
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
        own_kl = dist.kl().mean()  # the library's KL to N(0, I), summed over the latent, per image
    assert d.posteriors.shape == (4, 8, 8)
    torch.testing.assert_close(d.kl_per_dim, closed_form(dist.mean, dist.logvar), atol=1e-5, rtol=0)
    assert float(d.kl_per_dim.sum()) == pytest.approx(float(own_kl), rel=1e-5)
    per_channel = closed_form(dist.mean, dist.logvar).reshape(4, -1).sum(1)
    torch.testing.assert_close(torch.tensor(d.to_dict()["kl_per_channel"]), per_channel, atol=1e-4, rtol=0)
    page = diagnosis_report(d, tmp_path / "vae.html").read_text()  # its page: KL per channel and a KL map
    shown = [float(v) for v in re.findall(r"<th>channel \d</th><td>([\d.]+) nats", page)]
    assert shown == pytest.approx(per_channel.tolist(), abs=1e-4)
    assert 'alt="KL map"' in page and "latent shape [4, 8, 8]" in page


def test_pythae_vae_is_diagnosed_through_its_encoder_output():
    pytest.importorskip("pythae")
    from pythae.models import VAE, VAEConfig

    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(1, 8, 8), latent_dim=6)).eval()
    x = torch.rand(200, 1, 8, 8)
    d = diagnose(lambda x: model.encoder(x), x)  # the one line of glue
    with torch.no_grad():
        out = model.encoder(x)
        mu, log_var = out["embedding"], out["log_covariance"]
        own_kl = (-0.5 * torch.sum(1 + log_var - mu.pow(2) - log_var.exp(), dim=-1)).mean()  # pythae's VAE loss term
    torch.testing.assert_close(d.kl_per_dim, closed_form(mu, log_var), atol=1e-5, rtol=0)
    assert float(d.kl_per_dim.sum()) == pytest.approx(float(own_kl), rel=1e-5)


def test_a_pythae_encoder_module_is_diagnosed_as_it_is_and_through_mean_log_var():
    """pythae's `model.encoder` returns a ModelOutput (an OrderedDict with `embedding` and `log_covariance`):
    diagnose takes the module itself, and MeanLogVar (which the error once advised) takes it too."""
    pytest.importorskip("pythae")
    from pythae.models import VAE, VAEConfig

    from varilab.diagnostics import MeanLogVar

    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(1, 8, 8), latent_dim=6)).eval()
    x = torch.rand(200, 1, 8, 8)
    with torch.no_grad():
        out = model.encoder(x)
    exact = closed_form(out["embedding"], out["log_covariance"])
    for d in (diagnose(model.encoder, x), diagnose(MeanLogVar(model.encoder), x)):
        torch.testing.assert_close(d.kl_per_dim, exact, atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match=r"VAE has no encode\(x\) method and calling it on x failed"):
        diagnose(model, x)  # the whole model takes pythae's dict input: named, with what to pass instead
