"""Collapse diagnostics against theory: the linear VAE's exact collapse threshold, Bonheme & Grzes's
mean vs sampled representations, closed-form KL, mutual information and relevance, on models that
varilab did not define."""
import doctest
import json
import math
import re
import time

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

import varilab.diagnostics as D
from varilab.data import load
from varilab.diagnostics import MeanLogVar, diagnose
from varilab.models import build_model
from varilab.train import fit

SPECTRUM = [9, 6, 4, 2.5, 1.5, 0.6, 0.3]  # padded with 0.3 up to dimension 20


@pytest.mark.parametrize("beta", [0.5, 1.0, 2.0])
def test_linear_vae_active_units_match_the_eigenvalues_above_beta(tmp_path, beta):
    """Lucas et al.: with observation variance s^2 = 1, latent i survives iff lambda_i > beta s^2."""
    ds = load("linear-gaussian", spectrum=SPECTRUM, dim=20, n=10_000, seed=0)
    torch.manual_seed(0)
    model = build_model("linear-vae", 20, latent_dim=10, obs_var=1.0)
    fit(model, ds, out=tmp_path, epochs=60, batch_size=500, lr=0.01, beta=beta, quiet=True)
    d = diagnose(model, ds.x_test)
    expected = sum(lam > beta for lam in SPECTRUM)  # 6, 5 and 4
    assert d.active_units == expected
    collapsed = [i for i in range(10) if d.activity[i] <= d.threshold]
    assert len(collapsed) == 10 - expected
    assert all(float(d.kl_per_dim[i]) < 0.01 for i in collapsed)


def test_passive_variables_of_a_beta_vae_on_shapes(tmp_path):
    """Bonheme & Grzes: passive variables have ~0 variance in the mean representation, ~1 in the sampled one."""
    ds = load("shapes", n=4000, size=32, seed=0)
    torch.manual_seed(0)
    model = build_model("vae", ds.x_dim, latent_dim=10, hidden=[256])
    fit(model, ds, out=tmp_path, epochs=40, batch_size=100, lr=2e-3, beta=4.0, quiet=True)
    d = diagnose(model, ds.x_test)
    v = d.variables
    assert d.passive and d.active, (d.active, d.passive, d.mixed)
    for i in d.passive:  # near-zero variance as means, near-unit variance as samples
        assert v.mean_rep_var[i] < 0.1
        assert 0.85 < v.sampled_rep_var[i] < 1.15
    for i in d.active:  # active ones carry the information in both representations
        assert v.mean_rep_var[i] > 0.3


class OwnModel(nn.Module):
    """A model written outside varilab: 3 informative latents, 3 that always output the prior."""

    def __init__(self):
        super().__init__()
        self.dec = nn.Linear(6, 4)

    def encode(self, x):
        informative = x[:, :3]
        mean = torch.cat([informative, torch.zeros_like(informative)], 1)
        std = torch.cat([torch.full_like(informative, 0.2), torch.ones_like(informative)], 1)
        return Independent(Normal(mean, std), 1)

    def decode(self, z):
        return Independent(Normal(self.dec(z), 1.0), 1)

    def prior(self):
        return Independent(Normal(torch.zeros(6), torch.ones(6)), 1)


def test_diagnostics_run_on_a_model_defined_here():
    x = torch.randn(5000, 4, generator=torch.Generator().manual_seed(0))
    model = OwnModel()
    d = diagnose(model, x)
    assert (d.active_units, d.active, d.passive, d.mixed) == (3, [0, 1, 2], [3, 4, 5], [])
    # KL(N(mu, 0.2^2) || N(0, 1)) = 0.5 (0.04 + mu^2 - 1 - log 0.04), averaged over x: mu^2 -> Var(x_i)
    expected = 0.5 * (0.04 + x[:, :3].pow(2).mean(0) - 1 - math.log(0.04))
    torch.testing.assert_close(d.kl_per_dim[:3], expected, rtol=1e-5, atol=1e-5)
    assert d.kl_per_dim[3:].abs().max() < 1e-6
    torch.testing.assert_close(d.activity[:3], x[:, :3].var(0))
    # relevance = prior variance * ||W[:, i]||^2 for a linear decoder; the decoder ignores nothing here
    torch.testing.assert_close(d.relevance, model.dec.weight.detach().pow(2).sum(0), rtol=1e-3, atol=1e-5)
    assert "3 of 6 latents are active units" in d.verdict()
    json.dumps(d.to_dict())  # plain types only
    # the encoder pass records no graph (OwnModel's weights require gradients)
    assert not d.posteriors.mean.requires_grad and not d.kl_per_dim.requires_grad


def test_mean_logvar_adapter_and_doctest():
    enc = MeanLogVar(lambda x: (x * 2.0, torch.full_like(x, math.log(0.5))))
    d = diagnose(enc, torch.randn(1000, 3, generator=torch.Generator().manual_seed(1)))
    assert d.active_units == 3 and d.relevance is None
    failures, tried = doctest.testmod(D, verbose=False)[:2]
    assert tried > 0 and failures == 0


def test_mutual_information_of_a_linear_gaussian_encoder():
    """q(z|x) = N(a x, s^2), x ~ N(0, 1): q(z) = N(0, a^2 + s^2), I = 0.5 log((a^2 + s^2) / s^2)."""
    a, s2 = 1.5, 0.25
    x = torch.randn(10_000, 1, generator=torch.Generator().manual_seed(0))
    d = diagnose(MeanLogVar(lambda x: (a * x, torch.full_like(x, math.log(s2)))), x)
    info = d.information
    v = a**2 + s2
    assert info.mutual_information == pytest.approx(0.5 * math.log(v / s2), abs=0.03)
    assert info.marginal_kl == pytest.approx(0.5 * (v - 1 - math.log(v)), abs=0.03)
    # ELBO surgery: E_x KL(q(z|x) || p(z)) = I + KL(q(z) || p(z))
    assert info.mutual_information + info.marginal_kl == pytest.approx(info.average_kl, abs=0.03)


def test_sampled_correlation_identity_and_passive_decorrelation():
    """Corr_sampled(i, j) = Cov(mu_i, mu_j) / sqrt((Var mu_i + E s_i^2)(Var mu_j + E s_j^2))."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(200_000, 1, generator=g)
    mean = torch.cat([base + 0.3 * torch.randn(200_000, 1, generator=g), 0.05 * base], 1)  # dim 1 passive-like
    var = torch.stack([torch.full((200_000,), 0.1), torch.full((200_000,), 0.99)], 1)
    post = D.Posteriors(mean, var, torch.zeros_like(mean), torch.ones(2), True, torch.zeros(2))
    sampled = D.sampled_representation(post, g)
    c_mean, c_sampled = D.correlation(mean)[0, 1], D.correlation(sampled)[0, 1]
    cov = ((mean - mean.mean(0)).prod(1)).mean()
    predicted = cov / torch.sqrt((mean.var(0) + var.mean(0)).prod())
    assert abs(float(c_sampled - predicted)) < 0.01
    assert c_mean > 0.9 and abs(float(c_sampled)) < 0.1  # correlated as means, decorrelated as samples


def test_traversals_move_only_the_chosen_axis():
    model = OwnModel()
    out = D.traversals(model, torch.zeros(6), [0, 4], span=2.0, steps=5)
    assert out.shape == (2, 5, 4)
    w = model.dec.weight.detach()
    torch.testing.assert_close(out[1, -1] - out[1, 0], 4.0 * w[:, 4])


def test_diagnostics_are_fast_on_10000_points_and_64_latents():
    torch.manual_seed(0)
    model = build_model("vae", 784, latent_dim=64, hidden=[512])
    x = torch.rand(10_000, 784)
    diagnose(model, x[:500])  # warm-up
    t0 = time.perf_counter()
    d = diagnose(model, x)
    elapsed = time.perf_counter() - t0
    assert d.posteriors.dim == 64
    assert elapsed < 6.0  # 2 s on an idle 2-core CPU (see docs/benchmarks.md); generous for a shared CI box


def test_bad_inputs_are_named():
    with pytest.raises(TypeError, match="has no encode"):
        diagnose(nn.Linear(3, 3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"the posterior has 8 coordinates .* prior has 6; x of shape \[2, 2\]"):
        diagnose(OwnModel(), torch.zeros(5, 2, 2))
    with pytest.raises(ValueError, match=r"encode\(x\) failed on a batch of shape \[5, 2\] .* the shape the model takes"):
        diagnose(MeanLogVar(lambda x: nn.Linear(3, 4)(x).chunk(2, 1)), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"shape \[N, \.\.\.\]"):
        diagnose(OwnModel(), torch.zeros(5))


def test_frechet_distance_matches_the_gaussian_closed_form():
    """Commuting covariances: FD = ||m_a - m_b||^2 + sum (sqrt(a_i) - sqrt(b_i))^2; samples converge to it."""
    import numpy as np

    from varilab.diagnostics.frechet import frechet_distance

    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    va, vb = np.array([4.0, 1.0, 0.5, 0.2]), np.array([1.0, 1.0, 2.0, 0.2])
    ma, mb = np.array([1.0, 0, 0, 0]), np.array([0, 0.5, 0, 0])
    exact = ((ma - mb) ** 2).sum() + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    a = ma + (rng.standard_normal((200_000, 4)) * np.sqrt(va)) @ q.T
    b = mb + (rng.standard_normal((200_000, 4)) * np.sqrt(vb)) @ q.T
    assert abs(frechet_distance(a, b) - exact) < 0.03 * exact
    assert frechet_distance(a, a) < 1e-6


@pytest.mark.parametrize("argument, value, expected", [
    ("information_points", 0, "an integer >= 1"), ("information_points", -5, "an integer >= 1"),
    ("information_points", 2.5, "an integer >= 1"), ("relevance_points", 0, "an integer >= 1"),
    ("relevance_points", True, "an integer >= 1"), ("threshold", -0.1, "a finite number >= 0"),
    ("threshold", float("nan"), "a finite number >= 0"), ("threshold", float("inf"), "a finite number >= 0"),
    ("threshold", "0.01", "a finite number >= 0"), ("seed", 1.5, "an integer"), ("seed", None, "an integer"),
])
def test_a_meaningless_number_is_refused_at_the_boundary_naming_the_argument_expected_and_received(argument, value,
                                                                                                 expected):
    """diagnose(..., information_points=0) once failed inside torch.cat; every numeric argument is checked first."""
    enc = MeanLogVar(lambda x: (x, torch.zeros_like(x)))
    with pytest.raises(ValueError, match=rf"^diagnose: {argument} must be {expected}, got {re.escape(repr(value))}"):
        diagnose(enc, torch.randn(20, 3), **{argument: value})
