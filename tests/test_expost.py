"""The ex-post Gaussian mixture over a VAE's latents (DiffuseVAE's sampling prior)."""
import numpy as np
import pytest
import torch

from varilab.models.diffusion.expost import GaussianMixturePrior

WEIGHTS = torch.tensor([0.3, 0.7])
MEANS = torch.tensor([[-3.0, 1.0], [2.0, -1.0]])
TRILS = torch.tensor([[[1.0, 0.0], [0.5, 0.6]], [[0.4, 0.0], [-0.3, 1.2]]])


def draw_mixture(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    return MEANS[k] + (TRILS[k] @ torch.randn(n, 2, 1, generator=g)).squeeze(-1)


def mixture_moments():
    """Mean and covariance of the mixture: sum_k w_k m_k and sum_k w_k (S_k + m_k m_k^T) - m m^T."""
    mean = (WEIGHTS[:, None] * MEANS).sum(0)
    second = sum(w * (L @ L.T + torch.outer(m, m)) for w, m, L in zip(WEIGHTS, MEANS, TRILS))
    return mean, second - torch.outer(mean, mean)


def test_fit_recovers_a_known_mixture_and_its_density_matches_scikit_learn():
    from sklearn.mixture import GaussianMixture

    z = draw_mixture(4000)
    prior = GaussianMixturePrior.fit(z, components=2, seed=0)
    order = prior.loc[:, 0].argsort()  # component order is arbitrary
    w = prior.logits.softmax(0)[order].float()
    assert torch.allclose(w, WEIGHTS, atol=0.03)
    assert torch.allclose(prior.loc[order].float(), MEANS, atol=0.1)
    cov = (prior.scale_tril @ prior.scale_tril.transpose(1, 2))[order].float()
    assert torch.allclose(cov, TRILS @ TRILS.transpose(1, 2), atol=0.12)
    reference = GaussianMixture(2, covariance_type="full", random_state=0).fit(z.double().numpy())
    test = draw_mixture(200, seed=1)
    np.testing.assert_allclose(prior.log_prob(test).numpy(), reference.score_samples(test.double().numpy()),
                               rtol=1e-5, atol=1e-5)


def test_samples_are_reproducible_and_have_the_mixtures_moments():
    prior = GaussianMixturePrior(2, 2)
    prior.logits.copy_(WEIGHTS.log())
    prior.loc.copy_(MEANS)
    prior.scale_tril.copy_(TRILS)
    a = prior.sample(20000, generator=torch.Generator().manual_seed(3))
    b = prior.sample(20000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    mean, cov = mixture_moments()
    assert torch.allclose(a.mean(0), mean, atol=0.05)  # SE of the mean ~ 0.018
    assert torch.allclose(torch.cov(a.T), cov, atol=0.15)
    assert a.shape == (20000, 2)


def test_fit_refuses_bad_codes():
    with pytest.raises(ValueError, match="shape"):
        GaussianMixturePrior.fit(torch.randn(5, 2), components=10)
    z = torch.randn(50, 2)
    z[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        GaussianMixturePrior.fit(z, components=2)


def test_diffusevae_samples_its_latents_from_the_fitted_mixture():
    from varilab.models import build_model
    from varilab.models.diffusion.denoiser import Denoiser, DenoiserConfig
    from varilab.models.diffusion.diffusevae import DiffuseVAE

    torch.manual_seed(0)
    vae = build_model("vae", 64, latent_dim=2, hidden=[16])
    with torch.no_grad():  # an encoder whose codes sit far from N(0, I): mean (4, -4), tiny variance
        lin = vae.encoder[-1]  # the layer giving (mu, log var)
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([4.0, -4.0, -8.0, -8.0]))
    model = DiffuseVAE(vae, Denoiser(DenoiserConfig(x_dim=64, image_shape=(8, 8), channels=8, cond_channels=1, T=50)))
    with pytest.raises(ValueError, match="no ex-post mixture"):
        model.sample_latents(10, prior="expost")
    normal = model.sample_latents(4000, generator=torch.Generator().manual_seed(0))
    assert abs(float(normal.mean())) < 0.05 and abs(float(normal.std()) - 1) < 0.05
    model.fit_latent_prior(torch.rand(300, 64), components=2)
    z = model.sample_latents(4000, generator=torch.Generator().manual_seed(0))  # the mixture is now the default
    assert torch.allclose(z.mean(0), torch.tensor([4.0, -4.0]), atol=0.05) and float(z.std(0).max()) < 0.1
    assert torch.allclose(model.sample_latents(4000, prior="normal", generator=torch.Generator().manual_seed(0)), normal)
