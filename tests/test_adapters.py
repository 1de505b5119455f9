"""Diagnosing the encoders people have: a plain Normal, image latents [N, C, H, W], dict outputs, diagonal
Gaussian duck types; KL per coordinate against the closed form; verdict words that match the figures."""
import re
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import Normal

from varilab.diagnostics import diagnose


def closed_form_kl(mu, log_var):
    """KL(N(mu, sigma^2) || N(0, 1)) = (sigma^2 + mu^2 - 1 - log sigma^2) / 2, averaged over points: [...]."""
    return (0.5 * (log_var.exp() + mu ** 2 - 1 - log_var)).mean(0)


def encoder(shape, seed=0):
    """x [N, ...] -> (mu, log_var) of a latent of `shape`: fixed random linear maps, a few coordinates silent."""
    g = torch.Generator().manual_seed(seed)
    d = int(torch.tensor(shape).prod())
    w, b = torch.randn(6, d, generator=g), 0.3 * torch.randn(d, generator=g) - 1.0
    mask = (torch.arange(d) % 3 != 0).float()  # every third coordinate ignores x

    def fn(x):
        h = x.reshape(len(x), -1)[:, :6] @ w
        return (mask * h).reshape(len(x), *shape), (b + 0 * h).reshape(len(x), *shape)

    return fn


X = torch.randn(400, 6, generator=torch.Generator().manual_seed(1))


def test_a_plain_normal_of_batch_shape_n_d_is_diagnosed():
    fn = encoder((5,))
    d = diagnose(lambda x: Normal(fn(x)[0], (0.5 * fn(x)[1]).exp()), X)
    mu, lv = fn(X)
    torch.testing.assert_close(d.kl_per_dim, closed_form_kl(mu, lv), atol=1e-5, rtol=0)
    assert d.posteriors.shape == (5,) and d.active_units == 3  # coordinates 0 and 3 ignore x


def test_image_latents_are_reported_per_coordinate_channel_and_position():
    fn = encoder((2, 3, 3))
    x = X.reshape(400, 1, 2, 3)  # an image-shaped input is taken as it is
    d = diagnose(lambda x: Normal(fn(x)[0], (0.5 * fn(x)[1]).exp()), x)
    mu, lv = fn(x)
    exact = closed_form_kl(mu, lv)  # [2, 3, 3]
    torch.testing.assert_close(d.kl_per_dim, exact.flatten(), atol=1e-5, rtol=0)
    out = d.to_dict()
    assert out["latent_shape"] == [2, 3, 3]
    torch.testing.assert_close(torch.tensor(out["kl_per_channel"]), exact.flatten(1).sum(1), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tensor(out["kl_map"]), exact.sum(0), atol=1e-4, rtol=0)
    assert d.relevance is None  # a decoder takes the structured latent, not the flat one


def test_dict_outputs_and_diagonal_gaussian_duck_types_are_diagnosed():
    fn = encoder((4,))
    mu, lv = fn(X)
    exact = closed_form_kl(mu, lv)
    pythae_like = diagnose(lambda x: {"embedding": fn(x)[0], "log_covariance": fn(x)[1]}, X)
    torch.testing.assert_close(pythae_like.kl_per_dim, exact, atol=1e-5, rtol=0)

    class DiagonalGaussian:  # the shape of diffusers' DiagonalGaussianDistribution
        def __init__(self, mean, logvar):
            self.mean, self.logvar = mean, logvar
            self.std = (0.5 * logvar).exp()

    class AutoencoderLike:  # encode(x) -> an output holding .latent_dist, as diffusers' AutoencoderKL
        def encode(self, x):
            return SimpleNamespace(latent_dist=DiagonalGaussian(*fn(x)))

    diffusers_like = diagnose(AutoencoderLike(), X)
    torch.testing.assert_close(diffusers_like.kl_per_dim, exact, atol=1e-5, rtol=0)


def test_unusable_outputs_and_wrong_shapes_get_one_clear_error():
    with pytest.raises(TypeError, match=r"mapping with keys \['z'\].*MeanLogVar"):
        diagnose(lambda x: {"z": x}, X)
    with pytest.raises(TypeError, match="returned Tensor; diagnostics take a torch.distributions posterior"):
        diagnose(lambda x: x, X)
    with pytest.raises(ValueError, match=r"must give a posterior of shape \[400, \.\.\.\]"):
        diagnose(lambda x: Normal(torch.zeros(3), torch.ones(3)), X)


def test_the_verdict_names_collapsed_inactive_off_prior_and_active_latents_in_good_grammar():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 1, generator=g)

    def enc(x):  # z_0 carries x; z_1 is the prior (collapsed); z_2 has a constant mean and sigma 0.1
        mu = torch.cat([x, torch.zeros_like(x), torch.full_like(x, 0.5)], 1)
        sigma = torch.cat([torch.full_like(x, 0.1), torch.ones_like(x), torch.full_like(x, 0.1)], 1)
        return Normal(mu, sigma)

    d = diagnose(enc, x)
    wasted = 0.5 * (0.01 + 0.25 - 1 - torch.log(torch.tensor(0.01)))  # KL of z_2: no information, 2.43 nats
    assert d.off_prior == [2] and d.active_units == 1 and d.passive == [1]
    text = d.verdict()
    assert text.startswith("1 of 3 latents is an active unit; 1 has collapsed to the prior; 1 is inactive but off the prior, "
                           f"spending {float(wasted):.2f} nats of KL without carrying information")
    assert not re.search(r"\b1 are\b", text)


def test_the_report_of_an_image_latent_shows_kl_per_channel_and_a_kl_map(tmp_path):
    """A [3, 2, 2] latent: channel 0 carries x everywhere, channel 1 is the prior, channel 2 carries x at position
    (0, 0) only. The page's channel table equals the closed form, with the right active counts, beside the map."""
    from varilab.report import diagnosis_report

    def fn(x):
        x = x.reshape(len(x), -1)
        h = x[:, :4].reshape(len(x), 1, 2, 2)
        corner = torch.zeros(len(x), 1, 2, 2)
        corner[:, 0, 0, 0] = x[:, 4]
        mu = torch.cat([h, torch.zeros_like(h), corner], 1)
        lv = torch.cat([torch.full_like(h, -2.0), torch.zeros_like(h), torch.full_like(h, -1.0)], 1)
        return mu, lv

    x = X.reshape(400, 1, 1, 6)  # an image-shaped input
    d = diagnose(lambda x: Normal(fn(x)[0], (0.5 * fn(x)[1]).exp()), x)
    exact = closed_form_kl(*fn(x)).flatten(1).sum(1)  # per channel, [3]
    page = diagnosis_report(d, tmp_path / "latents.html").read_text()
    rows = dict(re.findall(r"<th>(channel \d)</th><td>([^<]*)</td>", page))
    assert list(rows) == ["channel 0", "channel 1", "channel 2"]
    for c in range(3):
        nats, active = re.fullmatch(r"([\d.]+) nats, (\d) of 4 active units", rows[f"channel {c}"]).groups()
        assert float(nats) == pytest.approx(float(exact[c]), abs=1e-4)
        assert int(active) == (4, 0, 1)[c]
    assert 'alt="KL per channel"' in page and 'alt="KL map"' in page and "latent shape [3, 2, 2]" in page
    assert d.verdict() in page.replace("&#x27;", "'")
    with pytest.raises(FileExistsError, match="pass force=True"):
        diagnosis_report(d, tmp_path / "latents.html")


class ModelOutput(dict):
    """pythae's encoder output as pythae defines it (`pythae.models.base.base_utils.ModelOutput`): a dict whose keys
    are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class PythaeLikeEncoder(torch.nn.Module):
    """An encoder module the way pythae writes them: forward(x) -> ModelOutput(embedding, log_covariance), no encode."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        mu, log_var = self.fn(x)
        return ModelOutput(embedding=mu, log_covariance=log_var)


def test_an_encoder_module_returning_a_pythae_model_output_is_diagnosed_as_it_is_and_through_mean_log_var():
    from varilab.diagnostics import MeanLogVar

    fn = encoder((5,))
    exact = closed_form_kl(*fn(X))
    direct = diagnose(PythaeLikeEncoder(fn), X)  # pythae: diagnose(model.encoder, x)
    wrapped = diagnose(MeanLogVar(PythaeLikeEncoder(fn)), X)  # what the error used to advise
    for d in (direct, wrapped):
        torch.testing.assert_close(d.kl_per_dim, exact, atol=1e-5, rtol=0)
        assert d.active_units == 3
    with pytest.raises(TypeError, match=r"MeanLogVar\(fn\): fn\(x\) returned str; it must return \(mean, log_var\)"):
        diagnose(MeanLogVar(lambda x: "mean"), X)
    with pytest.raises(TypeError, match=r"Linear has no encode\(x\) method and its forward returned Tensor"):
        diagnose(torch.nn.Linear(6, 3), X)
