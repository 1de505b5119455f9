"""Attacks on variational encoders and the quantised-latent purifier, against closed forms: the posterior
collapse loss and its gradient, its minimiser, the projection, the quantiser's idempotence and the Lipschitz
guarantee that a small enough perturbation never changes a code; our PGD equals ART's step for step."""
import math

import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

from varilab.models.robust.attacks import collapse_loss, pgd, posterior_attack, project, random_sign
from varilab.models.robust.classifier import Classifier
from varilab.models.robust.purifier import Purifier, PurifierConfig, codes, edge_distance, quantise


def posterior(mu, log_var):
    return Independent(Normal(mu, (0.5 * log_var).exp()), 1)


@pytest.mark.parametrize("v", [1e-8, 0.3, 1.0])
def test_collapse_loss_and_its_gradient_equal_the_closed_form(v):
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    log_var = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    loss = collapse_loss(posterior(mu, log_var), v)
    # L = KL(q || N(0, v I)) - d/2 ln v
    prior = Independent(Normal(torch.zeros(5, dtype=torch.float64), math.sqrt(v) * torch.ones(5, dtype=torch.float64)), 1)
    expected = kl_divergence(posterior(mu, log_var), prior) - 2.5 * math.log(v)
    assert torch.allclose(loss, expected, rtol=1e-10)
    d_mu, d_lv = torch.autograd.grad(loss.sum(), (mu, log_var))
    # dL/dmu = mu / v;  dL/d ln sigma^2 = 1/2 (-1 + sigma^2 / v)
    assert torch.allclose(d_mu, mu.detach() / v, rtol=1e-10)
    assert torch.allclose(d_lv, 0.5 * (-1 + log_var.detach().exp() / v), rtol=1e-10)


def test_collapse_loss_is_minimal_at_mu_zero_and_variance_v():
    v = 0.25
    mu = torch.full((1, 4), 0.7, requires_grad=True)
    log_var = torch.zeros(1, 4, requires_grad=True)
    opt = torch.optim.Adam([mu, log_var], lr=0.05)
    for _ in range(2000):
        opt.zero_grad()
        collapse_loss(posterior(mu, log_var), v).sum().backward()
        opt.step()
    assert mu.abs().max() < 1e-3
    assert torch.allclose(log_var.exp(), torch.full((1, 4), v), atol=1e-3)
    best = collapse_loss(posterior(torch.zeros(1, 4), torch.full((1, 4), math.log(v))), v)
    assert torch.allclose(best, torch.tensor([-2.0 * math.log(v)]))  # d/2 (-ln v - 1 + 1)


def test_collapse_loss_reads_image_latents_and_duck_types():
    g = torch.Generator().manual_seed(1)
    mu, log_var = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)

    class DiagonalGaussian:  # like diffusers' DiagonalGaussianDistribution
        def __init__(self, mean, logvar):
            self.mean, self.logvar = mean, logvar

    flat = collapse_loss(posterior(mu.reshape(3, -1), log_var.reshape(3, -1)), 1.0)
    assert torch.allclose(collapse_loss(Normal(mu, (0.5 * log_var).exp()), 1.0), flat, rtol=1e-6)
    assert torch.allclose(collapse_loss(DiagonalGaussian(mu, log_var), 1.0), flat, rtol=1e-6)
    assert torch.allclose(collapse_loss({"mu": mu, "log_var": log_var}, 1.0), flat, rtol=1e-6)


def conv_encoder(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Unflatten(1, (1, 8, 8)), torch.nn.Conv2d(1, 8, 3, 2, 1), torch.nn.Tanh(),
                              torch.nn.Flatten(), torch.nn.Linear(128, 8))
    return lambda x: posterior(*net(x).chunk(2, -1))


@pytest.mark.parametrize("direction", ["collapse", "push"])
def test_attack_stays_in_the_ball_and_in_unit_range_and_moves_the_loss_its_way(direction):
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(32, 64, generator=g) > 0.5).float()  # pixels at 0 and 1: clipping to [0, 1] is active
    x[:, :8] = 0.5
    encode, eps = conv_encoder(), 8 / 255
    x_adv = posterior_attack(encode, x, eps, steps=10, direction=direction)
    assert (x_adv - x).abs().max() <= eps + 1e-7
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    v = 1e-8 if direction == "collapse" else 1.0
    before, after = collapse_loss(encode(x), v), collapse_loss(encode(x_adv), v)
    control = collapse_loss(encode(random_sign(x, eps, torch.Generator().manual_seed(1))), v)
    if direction == "collapse":
        assert (after < before).all() and (after.mean() - before.mean()) < 3 * (control.mean() - before.mean())
    else:
        assert (after > before).all() and (after - before).mean() > 2 * (control - before).abs().mean()


def test_projection_and_the_random_control():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(50, 30, generator=g)
    far = x + 3 * torch.randn(50, 30, generator=g)
    p = project(far, x, 0.1)
    assert (p - x).abs().max() <= 0.1 + 1e-7 and p.min() >= 0 and p.max() <= 1
    inside = (far - x).abs().le(0.1) & far.ge(0) & far.le(1)
    assert torch.equal(p[inside], far[inside])  # points already feasible stay where they are
    r = random_sign(x, 0.05, torch.Generator().manual_seed(2))
    free = (x > 0.05) & (x < 0.95)
    assert torch.allclose((r - x).abs()[free], torch.full_like(x[free], 0.05), atol=1e-6)
    assert 0.45 < float(((r - x) > 0)[free].float().mean()) < 0.55


def test_bad_attack_inputs_are_named():
    encode = conv_encoder()
    with pytest.raises(ValueError, match="eps must be positive"):
        posterior_attack(encode, torch.rand(2, 64), 0.0)
    with pytest.raises(ValueError, match=r"images in \[0, 1\]"):
        posterior_attack(encode, 255 * torch.rand(2, 64), 0.1)
    with pytest.raises(ValueError, match="direction must be one of collapse, push"):
        posterior_attack(encode, torch.rand(2, 64), 0.1, direction="up")


def test_quantiser_is_idempotent_and_codes_its_levels():
    m = 5 * torch.randn(10_000, dtype=torch.float64)
    for levels, radius in [(5, 2.0), (2, 1.0), (7, 0.3)]:
        q = quantise(m, levels, radius)
        assert torch.equal(quantise(q, levels, radius), q)
        values = torch.linspace(-radius, radius, levels, dtype=torch.float64)
        assert torch.allclose(q, values[codes(m, levels, radius).long()])
        nearest = values[(m.clamp(-radius, radius).unsqueeze(-1) - values).abs().argmin(-1)]
        assert torch.allclose(q, nearest)


def test_a_perturbation_below_margin_over_lipschitz_never_changes_a_linear_code():
    g = torch.Generator().manual_seed(0)
    levels, radius = 5, 2.0
    W = torch.randn(16, 64, generator=g, dtype=torch.float64) / 4
    L = float(torch.linalg.matrix_norm(W, ord=2))
    worst = torch.linalg.svd(W).Vh[0]  # the input direction W stretches most
    x = torch.rand(4000, 64, generator=g, dtype=torch.float64)
    mu = x @ W.T
    margin = edge_distance(mu, levels, radius).amin(-1, keepdim=True)
    random_dir = torch.randn(4000, 64, generator=g, dtype=torch.float64)
    for direction in (random_dir / random_dir.norm(dim=-1, keepdim=True), worst.expand(4000, 64)):
        for sign in (1, -1):
            delta = sign * 0.99 * margin / L * direction
            assert torch.equal(codes((x + delta) @ W.T, levels, radius), codes(mu, levels, radius))
    # the bound is tight: for one latent (L = ||w||), 1.01 margin / L toward the nearest edge changes every code
    w = W[:1]
    m1 = x @ w.T
    step = 2 * radius / (levels - 1)
    edges = -radius + step * (torch.arange(levels - 1, dtype=torch.float64) + 0.5)
    nearest = edges[(m1 - edges).abs().argmin(-1)].unsqueeze(-1)
    toward = torch.sign(nearest - m1) * w / w.norm()
    beyond = x + 1.01 * edge_distance(m1, levels, radius) / w.norm() * toward
    assert (codes(beyond @ w.T, levels, radius) != codes(m1, levels, radius)).all()


def test_the_purifier_reports_a_true_lipschitz_bound_and_keeps_codes_within_it():
    torch.manual_seed(0)
    model = Purifier(PurifierConfig(x_dim=64, latent_dim=6, hidden=(32,), levels=5, radius=1.0, lipschitz=4.0))
    model.train()
    for _ in range(20):  # let the power iteration settle, as training does
        model.mean(torch.rand(8, 64))
    model.eval()
    bound = model.lipschitz_bound()
    assert 2.0 < bound < 4.8  # each of the 2 layers has norm close to 4 ** (1 / 2)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(500, 64, generator=g)
    x.requires_grad_(True)
    jac_norm = torch.autograd.functional.jacobian(lambda r: model.mean(r).sum(0), x[:50]).permute(1, 0, 2)
    assert (torch.linalg.matrix_norm(jac_norm, ord=2) <= bound * (1 + 1e-5)).all()  # ||J(x)|| <= L at every x
    x = x.detach()
    delta = torch.randn(500, 64, generator=g)
    delta = 0.99 * model.margin(x).unsqueeze(-1) / bound * delta / delta.norm(dim=-1, keepdim=True)
    assert torch.equal(model.code(x + delta), model.code(x))
    out = model.purify(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(model.purify(x + delta), out)  # same code, same output


def test_the_quantiser_passes_gradients_straight_through():
    torch.manual_seed(0)
    model = Purifier(PurifierConfig(x_dim=16, latent_dim=3, hidden=(8,))).eval()
    x = torch.rand(4, 16, requires_grad=True)
    (g_purify,) = torch.autograd.grad(model.purify(x).sum(), x)
    z = model.encode(x).mean.detach().requires_grad_(True)  # BPDA: d decode(Q(mu))/dx := d decode(z)/dz * dmu/dx
    (g_z,) = torch.autograd.grad(model.decode(z).mean.sum(), z)
    mu = model.mean(x)
    (g_expected,) = torch.autograd.grad(mu, x, grad_outputs=g_z)
    assert g_purify.abs().sum() > 0 and torch.allclose(g_purify, g_expected, atol=1e-6)


def test_our_pgd_on_a_classifier_takes_arts_steps():
    pytest.importorskip("art", reason="the Adversarial Robustness Toolbox (varilab[robust]) is not installed")
    from varilab.models.robust.robustness import art_attack

    torch.manual_seed(0)
    model = Classifier((8, 8), 10).eval()
    x, y = torch.rand(64, 64), torch.randint(0, 10, (64,))
    eps, steps = 0.1, 10
    ours = pgd(lambda xa: torch.nn.functional.cross_entropy(model(xa), y, reduction="none"), x, eps, steps,
               2.5 * eps / steps)
    theirs = art_attack(model, x, y, "pgd", eps, steps, 10)
    assert (ours - x).abs().max() > 0.09  # the attack moved the images
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_a_stochastic_purifier_is_attacked_through_the_mean_of_its_draws():
    from varilab.models.robust.robustness import Purified

    torch.manual_seed(0)
    purifier = Purifier(PurifierConfig(x_dim=64, latent_dim=4, hidden=(16,))).eval()
    clf = Classifier((8, 8), 10).eval()
    x = torch.rand(5, 64)
    torch.manual_seed(3)
    eot = Purified(purifier, clf, draws=6, sample=True)(x)
    torch.manual_seed(3)
    probs = torch.stack([clf(purifier.purify(x, sample=True)).softmax(-1) for _ in range(6)])
    assert torch.allclose(eot.exp(), probs.mean(0), atol=1e-6)  # log (1/K) sum_k p(y | purify_k(x))
    assert not torch.allclose(probs[0], probs[1])  # the draws differ: one draw would not do
    assert torch.equal(Purified(purifier, clf)(x), clf(purifier.purify(x)))  # deterministic: one pass
