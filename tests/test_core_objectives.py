"""Objectives against closed forms: pPCA's exact likelihood for IWAE, exact gradients for mixed estimators."""
import math

import pytest
import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal, OneHotCategorical

from varilab.core import (cyclical, elbo_terms, free_bits, iwae_bound, kl, kl_per_dim, linear_warmup,
                          log_likelihood, vae_loss)


class PPCA(nn.Module):
    """x = W z + m + noise, z ~ N(0, I); W has orthogonal columns so the exact posterior is diagonal.

    q(z|x) = N(M^-1 W^T (x - m), inflate * s2 M^-1) with M = W^T W + s2 I (exact when inflate = 1).
    """

    def __init__(self, d=6, k=2, s2=0.5, inflate=1.0, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        self.W = nn.Parameter(q[:, :k] * torch.tensor([2.0, 1.2], dtype=torch.float64)[:k])
        self.m = nn.Parameter(torch.randn(d, generator=g, dtype=torch.float64))
        self.s2, self.inflate = s2, inflate
        self.shift = nn.Parameter(torch.zeros(k, dtype=torch.float64))  # an encoder parameter to differentiate

    def prior(self):
        z = torch.zeros(self.W.shape[1], dtype=torch.float64)
        return Independent(Normal(z, torch.ones_like(z)), 1)

    def decode(self, z):
        return Independent(Normal(z @ self.W.T + self.m, math.sqrt(self.s2)), 1)

    def encode(self, x):
        M = self.W.T @ self.W + self.s2 * torch.eye(self.W.shape[1], dtype=torch.float64)  # diagonal
        m_inv = 1 / torch.diagonal(M)
        mean = (x - self.m) @ self.W * m_inv + self.shift
        std = torch.sqrt(self.inflate * self.s2 * m_inv).expand_as(mean)
        return Independent(Normal(mean, std), 1)

    def marginal(self):
        cov = self.W @ self.W.T + self.s2 * torch.eye(self.W.shape[0], dtype=torch.float64)
        return MultivariateNormal(self.m, cov)


def data(model, n=200, seed=1):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.marginal().sample((n,))


def test_iwae_with_the_exact_posterior_equals_log_px_for_every_k():
    model = PPCA()
    x = data(model)
    exact = model.marginal().log_prob(x)
    for k in (1, 10, 100, 1000):
        torch.testing.assert_close(iwae_bound(model, x, k), exact, atol=1e-4, rtol=0)


def test_iwae_rises_with_k_and_reaches_log_px_at_5000():
    model = PPCA(inflate=3.0)  # a proposal three times too wide
    x = data(model)
    exact = float(model.marginal().log_prob(x).mean().detach())
    torch.manual_seed(0)
    with torch.no_grad():
        bounds = [float(iwae_bound(model, x, k).mean()) for k in (1, 10, 100, 1000)]
    assert bounds == sorted(bounds) and bounds[0] < exact - 0.1
    ll = log_likelihood(model, x, k=5000)
    assert abs(-ll["nll"] - exact) < 0.02
    assert ll["elbo_gap"] > 0.1 and ll["nll_se"] > 0


def test_log_likelihood_chunks_respect_the_memory_cap(monkeypatch):
    import varilab.core.likelihood as L

    model = PPCA(inflate=2.0)
    x = data(model, n=300)
    shapes = []
    real = L.log_weights

    def spy(m, xb, k, *a, **kw):
        shapes.append((k, len(xb)))
        return real(m, xb, k, *a, **kw)

    monkeypatch.setattr(L, "log_weights", spy)
    torch.manual_seed(0)
    small = L.log_likelihood(model, x, k=500, max_elements=64 * 1000)
    assert max(k * b * 64 for k, b in shapes) <= 64 * 1000  # 64 = the width floor used for D = 6
    assert sum(k * b for k, b in shapes) == 500 * 300  # every sample of every point, once
    torch.manual_seed(0)
    big = L.log_likelihood(model, x, k=500)
    assert abs(small["nll"] - big["nll"]) < 3 * math.hypot(small["nll_se"], big["nll_se"]) / math.sqrt(300) + 0.01


def test_analytic_and_monte_carlo_kl_agree():
    g = torch.Generator().manual_seed(0)
    q = Independent(Normal(torch.randn(4, 3, generator=g), torch.rand(4, 3, generator=g) + 0.3), 1)
    p = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    exact = kl(q, p, analytic=True)  # [4]
    torch.manual_seed(0)
    mc = kl(q, p, q.sample((100_000,)), analytic=False)  # [100000, 4]
    se = mc.std(0) / math.sqrt(mc.shape[0])
    assert ((mc.mean(0) - exact).abs() < 3 * se).all()
    torch.testing.assert_close(kl_per_dim(q, p).sum(-1), exact)


def grad_of(fn, params):
    params = list(params)
    return torch.cat([g.flatten() for g in torch.autograd.grad(fn(), params)])


def test_dreg_and_vimco_agree_in_mean_with_the_iwae_gradient_and_dreg_has_lower_variance():
    model = PPCA(inflate=2.0)
    with torch.no_grad():
        model.shift.fill_(0.3)
    x = data(model, n=20)
    torch.manual_seed(0)
    reps = 300
    iwae = torch.stack([grad_of(lambda: iwae_bound(model, x, 8).sum(), [model.shift]) for _ in range(reps)])
    dreg = torch.stack([grad_of(lambda: iwae_bound(model, x, 8, dreg=True).sum(), [model.shift]) for _ in range(reps)])
    vimco = torch.stack([grad_of(lambda: iwae_bound(model, x, 8, estimator="score").sum(), [model.shift])
                         for _ in range(reps * 4)])
    for est in (dreg, vimco):
        se = torch.sqrt(est.var(0) / len(est) + iwae.var(0) / len(iwae))
        assert ((est.mean(0) - iwae.mean(0)).abs() < 4 * se).all(), (est.mean(0), iwae.mean(0), se)
    assert (dreg.var(0) < iwae.var(0)).all()
    # DReG changes the gradient only, never the value of the bound
    torch.manual_seed(5)
    v1 = iwae_bound(model, x, 8)
    torch.manual_seed(5)
    torch.testing.assert_close(iwae_bound(model, x, 8, dreg=True), v1)


class Mixed(nn.Module):
    """One x; a Gaussian latent z (2-d) and a categorical c (3 classes); x ~ N(A z + B c, I).

    The ELBO has a closed form, so its exact gradient comes from autograd:
    E_q log p(x|z,c) = -d/2 log 2pi - 1/2 sum_c q_c ||x - A mu - B_c||^2 - 1/2 tr(A diag(s^2) A^T).
    """

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.A = torch.randn(4, 2, generator=g, dtype=torch.float64)
        self.B = torch.randn(4, 3, generator=g, dtype=torch.float64)
        self.x = torch.randn(1, 4, generator=g, dtype=torch.float64)
        self.mu = nn.Parameter(torch.tensor([[0.3, -0.2]], dtype=torch.float64))
        self.log_s = nn.Parameter(torch.tensor([[-0.5, 0.1]], dtype=torch.float64))
        self.logits = nn.Parameter(torch.tensor([[0.2, -0.4, 0.5]], dtype=torch.float64))

    def encode(self, x):
        return {"z": Independent(Normal(self.mu, self.log_s.exp()), 1), "c": OneHotCategorical(logits=self.logits)}

    def prior(self):
        z = torch.zeros(2, dtype=torch.float64)
        return {"z": Independent(Normal(z, torch.ones_like(z)), 1),
                "c": OneHotCategorical(probs=torch.full((3,), 1 / 3, dtype=torch.float64))}

    def decode(self, latents):
        return Independent(Normal(latents["z"] @ self.A.T + latents["c"] @ self.B.T, 1.0), 1)

    def exact_elbo(self):
        q_c = torch.softmax(self.logits, -1)[0]
        resid = self.x - self.mu @ self.A.T - self.B.T  # [3, 4], one row per class
        recon = -2 * math.log(2 * math.pi) - 0.5 * (q_c * (resid**2).sum(-1)).sum() \
            - 0.5 * (self.A**2 @ (self.log_s.exp()[0] ** 2)).sum()
        q, p = self.encode(self.x), self.prior()
        return recon - kl(q["z"], p["z"]).sum() - kl(q["c"], p["c"]).sum()


@pytest.mark.parametrize("baseline", [None, "leave-one-out"])
def test_reparam_and_score_latents_in_one_objective_are_unbiased(baseline):
    model = Mixed()
    params = [model.mu, model.log_s, model.logits]
    exact = grad_of(model.exact_elbo, params)
    torch.manual_seed(0)
    est = {"z": "reparam", "c": "score"}
    grads = torch.stack([grad_of(lambda: elbo_terms(model, model.x, estimator=est, k=500, baseline=baseline)["elbo"].sum(),
                                 params) for _ in range(60)])
    se = grads.std(0) / math.sqrt(len(grads))
    assert ((grads.mean(0) - exact).abs() < 4 * se + 1e-9).all(), (grads.mean(0), exact, se)
    value = elbo_terms(model, model.x, estimator=est, k=20000)["elbo"]
    assert float(value.detach()) == pytest.approx(float(model.exact_elbo().detach()), abs=0.05)


def test_elbo_with_the_exact_posterior_is_log_px_and_beta_weighs_the_kl():
    model = PPCA()
    x = data(model, n=50)
    t = elbo_terms(model, x, k=2000)
    torch.testing.assert_close(t["elbo"], model.marginal().log_prob(x), atol=0.05, rtol=0)
    torch.manual_seed(0)
    t2 = elbo_terms(model, x, beta=2.0)
    torch.manual_seed(0)
    t1 = elbo_terms(model, x, beta=1.0)
    torch.testing.assert_close(t2["elbo"], t1["elbo"] - t1["kl"])
    loss = vae_loss(model, x)
    assert float(loss["loss"].detach()) == pytest.approx(-float(loss["recon"].detach()) + float(loss["kl"].detach()), abs=1e-9)


def test_free_bits_and_schedules():
    kl_dims = torch.tensor([[0.01, 1.0, 0.3], [0.03, 3.0, 0.1]])
    assert float(free_bits(kl_dims, 0.25)) == pytest.approx(0.25 + 2.0 + 0.25)
    assert [linear_warmup(s, 10) for s in (0, 5, 10, 20)] == [0.0, 0.5, 1.0, 1.0]
    assert [cyclical(s, 10, ramp=0.5) for s in (0, 2, 5, 9, 10, 12)] == [0.0, 0.4, 1.0, 1.0, 0.0, 0.4]
    with pytest.raises(ValueError, match="period must be positive"):
        cyclical(1, 0)


def test_estimator_for_an_unknown_latent_is_named():
    model = Mixed()
    with pytest.raises(ValueError, match=r"unknown latent\(s\) \['w'\]"):
        elbo_terms(model, model.x, estimator={"w": "score"})
    with pytest.raises(ValueError, match="IWAE needs densities"):
        iwae_bound(model, model.x, 4, estimator={"z": "reparam", "c": "gumbel"})


def test_fixed_prior_kl_path_equals_torch_closed_form():
    from varilab.core.objectives import _kl_normal_fixed_prior

    g = torch.Generator().manual_seed(0)
    q = Independent(Normal(torch.randn(5, 4, generator=g), torch.rand(5, 4, generator=g) + 0.2), 1)
    p = Independent(Normal(torch.randn(4, generator=g), torch.rand(4, generator=g) + 0.5), 1)
    torch.testing.assert_close(_kl_normal_fixed_prior(q, p), torch.distributions.kl_divergence(q, p))
    learned = Independent(Normal(torch.zeros(4, requires_grad=True), torch.ones(4)), 1)
    assert _kl_normal_fixed_prior(q, learned) is None  # a learned prior takes the general path


def test_fixed_prior_kl_path_with_log_scale_standard_prior_and_changed_buffers():
    from varilab.core.distributions import FixedPrior, diag_normal
    from varilab.core.objectives import _kl_normal_fixed_prior

    g = torch.Generator().manual_seed(1)
    mu, log_var = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    q = diag_normal(mu, log_var)
    torch.testing.assert_close(q.base_dist.log_scale, q.base_dist.scale.log())
    loc, scale = torch.zeros(3), torch.ones(3)
    prior = FixedPrior()
    p = prior(loc, scale)
    assert prior(loc, scale) is p  # unchanged buffers: the same object, constants computed once
    torch.testing.assert_close(_kl_normal_fixed_prior(q, p), torch.distributions.kl_divergence(q, p))
    # changed in place (as load_state_dict does): a new prior, and the KL follows the new values
    loc.fill_(0.5)
    scale.fill_(2.0)
    p2 = prior(loc, scale)
    assert p2 is not p
    torch.testing.assert_close(_kl_normal_fixed_prior(q, p2), torch.distributions.kl_divergence(q, p2))
    # a prior object whose tensors change after its constants were cached is not served stale ones
    loc.fill_(-1.0)
    torch.testing.assert_close(_kl_normal_fixed_prior(q, p2), torch.distributions.kl_divergence(q, p2))


def test_vae_prior_follows_its_buffers():
    from varilab.models import VAE, VAEConfig

    model = VAE(VAEConfig(x_dim=5, latent_dim=2, hidden=(4,)))
    p = model.prior()
    assert model.prior() is p
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["prior_scale"] = torch.full((2,), 3.0)
    model.load_state_dict(state)
    assert torch.equal(model.prior().base_dist.scale, torch.full((2,), 3.0))


def test_log_likelihood_reports_its_progress_over_every_point():
    from varilab.core import log_likelihood
    from varilab.models import VAE, VAEConfig

    torch.manual_seed(0)
    model, x = VAE(VAEConfig(x_dim=6, latent_dim=2, hidden=(8,))), torch.rand(50, 6)
    done = []
    log_likelihood(model, x, k=20, batch_size=16, progress=done.append)
    assert done == [16, 16, 16, 2]  # one call per chunk of points, all of them
