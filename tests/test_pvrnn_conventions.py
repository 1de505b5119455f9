"""The conventions of public PV-RNN code, each an option: fixed biases of a chosen variance, a share of units twice as
slow, the squared error per output dimension, and adaptive vectors that start at the prior."""
import math

import pytest
import torch

from varilab.models.pvrnn import MTRNNCell, PVRNN, PVRNNConfig, objective


def model(**kw):
    torch.manual_seed(0)
    return PVRNN(PVRNNConfig(x_dim=3, sequences=4, length=12, **kw))


def test_fixed_biases_have_the_chosen_variance_and_are_never_trained():
    torch.manual_seed(0)
    cell = MTRNNCell(d=4000, z=1, up=0, tau=2.0, bias_variance=10.0)
    b = cell.dd.bias.detach()
    # the sample variance of n normal draws has standard error v sqrt(2 / (n - 1)): 0.22 here; 4 of them
    assert abs(float(b.var()) - 10.0) < 4 * 10.0 * math.sqrt(2 / 3999)
    assert abs(float(b.mean())) < 4 * math.sqrt(10.0 / 4000)
    assert not cell.dd.bias.requires_grad and cell.dd.weight.requires_grad
    assert MTRNNCell(d=8, z=1, up=0, tau=2.0).dd.bias.requires_grad  # the default: trained biases
    assert float(MTRNNCell(d=4000, z=1, up=0, tau=2.0).dd.bias.detach().var()) < 0.01  # PyTorch's U(+-1/sqrt(d))

    m = model(bias_variance=10.0)
    before = [c.dd.bias.detach().clone() for c in m.cells]
    weights = [c.dd.weight.detach().clone() for c in m.cells]
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    for _ in range(3):
        loss = m.loss(torch.randn(4, 12, 3).tanh(), torch.arange(4))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(b0, c.dd.bias) for b0, c in zip(before, m.cells))
    assert not any(torch.equal(w0, c.dd.weight) for w0, c in zip(weights, m.cells))


@pytest.mark.parametrize("tau", [2.0, 8.0])
def test_slow_units_reach_a_constant_input_with_twice_the_time_constant(tau):
    cell = MTRNNCell(d=6, z=1, up=0, tau=tau, slow_share=0.5)
    with torch.no_grad():
        cell.dd.weight.zero_()
        cell.dd.bias.copy_(torch.tensor([0.5, -1.0, 2.0, 0.5, -1.0, 2.0]))  # u = b: no recurrence, no latent
        cell.dz.weight.zero_()
    u = cell.dd.bias.detach()
    taus = torch.tensor([tau] * 3 + [2 * tau] * 3)  # the last half slow
    h, d = torch.zeros(1, 6), torch.zeros(1, 6)
    for n in range(1, 30):
        h, d = cell(h, d, torch.zeros(1, 1))
        assert torch.allclose(h[0], u * (1 - (1 - 1 / taus) ** n), atol=1e-6)  # h_n = u (1 - (1 - 1/tau_i)^n)
    assert cell.inv_tau.tolist() == [1 / tau] * 3 + [1 / (2 * tau)] * 3
    assert MTRNNCell(d=5, z=1, up=0, tau=tau, slow_share=0.4).inv_tau.tolist() == [1 / tau] * 3 + [1 / (2 * tau)] * 2
    assert "inv_tau" not in cell.state_dict()  # derived from the config, not saved


def test_the_squared_error_per_dimension_against_a_hand_computation():
    x = torch.randn(4, 12, 3).tanh()
    for recon, divide in (("sum", 1), ("per-dim", 3)):
        m = model(recon=recon, w=(0.5, 0.25))
        torch.manual_seed(1)
        r = m.run(m.adaptive(torch.arange(4)), steps=12, batch=4)
        out = objective(x, r, m.config)
        error = sum(float(((x[b, t] - r["x_hat"][b, t].detach()) ** 2).sum()) for b in range(4) for t in range(12)) / 4
        kl = r["kl"].detach()  # [B, layers, T], per latent unit
        weighted = float((0.5 * kl[:, 0, 1:].sum(-1) + 0.25 * kl[:, 1, 1:].sum(-1) + kl[:, :, 0].sum(-1)).mean())
        assert out["squared_error"].item() == pytest.approx(error, rel=1e-5)
        assert out["recon"].item() == pytest.approx(error / divide, rel=1e-5)
        assert out["loss"].item() == pytest.approx(error / divide + weighted, rel=1e-5)
    with pytest.raises(ValueError, match="recon must be one of"):
        model(recon="mean")


def test_adaptive_vectors_from_the_prior_give_zero_kl_along_the_prior_run():
    m = model()
    with torch.no_grad():  # a prior far from N(0, I), so that q = p is not the zero initialisation
        for head in [*m.prior_mu, *m.prior_log_sigma]:
            head.weight.normal_(0, 1.0)
            head.bias.normal_(0, 0.5)
    index = torch.arange(4)
    assert m.run(m.adaptive(index), steps=12, batch=4, sample=False)["kl"].max() > 0.05  # before: q = N(0, 1) != p
    m.posterior_from_prior()
    r = m.run(m.adaptive(index), steps=12, batch=4, sample=False)
    assert r["kl"].abs().max() < 1e-4  # q = p at every step and layer
    free = m.run(None, steps=12, batch=4, sample=False, sigma=False)["x_hat"]
    assert torch.allclose(r["x_hat"], free, atol=1e-5)  # the posterior's means follow the prior's run
    assert torch.equal(m.a_mu[0][0], m.a_mu[0][3]) and torch.equal(m.a_log_sigma[1][:, 0], torch.zeros(4, 1))


def test_the_conventions_travel_through_the_command_line_and_a_saved_run(tmp_path):
    from varilab.families import registry
    from varilab.families import sequence as S

    opts = S.SequenceOptions(n=6, length=10, epochs=3, bias_variance=10.0, slow_share=0.5, recon="per-dim",
                             posterior_init="prior")
    fresh = S.make_model(opts, S.load_data(opts))
    S.train(opts, tmp_path / "run", quiet=True)
    run = registry.load(tmp_path / "run")
    c = run.model.config
    assert (c.bias_variance, c.slow_share, c.recon) == (10.0, 0.5, "per-dim")
    assert all(torch.equal(a.dd.bias, b.dd.bias) for a, b in zip(fresh.cells, run.model.cells))  # fixed, and saved
    assert float(fresh.cells[0].dd.bias.var()) > 3  # drawn with variance 10 (20 units)
    assert run.model.cells[1].inv_tau.tolist() == [1 / 8] * 4 + [1 / 16] * 4


def test_the_error_per_dimension_is_the_sums_meta_prior_times_the_dimension_under_adam():
    """error / X + w KL = (error + X w KL) / X, and Adam's steps do not change when the loss is scaled: training with
    --recon per-dim at w follows training with --recon sum at X w (X = 3 here), step for step."""
    x, index = torch.randn(4, 12, 3).tanh(), torch.arange(4)
    runs = []
    for recon, w in (("per-dim", 0.1), ("sum", 0.3), ("sum", 0.1)):
        m = model(recon=recon, w=(w, w), w1=3.0 if w == 0.3 else 1.0)  # the t = 1 KL's weight scales with the rest
        opt = torch.optim.Adam(m.parameters(), lr=1e-2, eps=1e-12)
        for step in range(5):
            torch.manual_seed(step)  # the same posterior draws in every run
            loss = m.loss(x, index)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        runs.append(torch.cat([p.detach().flatten() for p in m.parameters()]))
    assert torch.allclose(runs[0], runs[1], atol=1e-5)
    assert not torch.allclose(runs[0], runs[2], atol=1e-3)  # at the same w, the two normalisations differ


def test_the_noise_reaching_the_units_is_sigma_p_through_w_dz():
    """noise = sqrt(mean_i sum_j W_dz,ij^2 sigma_p,j^2): a closed form with a constant prior, the spread of W_dz z over
    draws of z, and unchanged when z's scale is traded against W_dz's (sigma_p alone is not)."""
    m = model()
    with torch.no_grad():
        for head in m.prior_log_sigma:
            head.weight.zero_()
            head.bias.fill_(math.log(0.5))  # sigma_p = 0.5 at every t > 1
        m.cells[0].dz.weight.copy_(torch.arange(40.0).reshape(20, 2) / 40)
    r = m.run(None, steps=5, batch=3)
    w = m.cells[0].dz.weight.detach()
    expected = float(((w ** 2).sum(1) * 0.25).mean().sqrt())
    assert torch.allclose(r["noise"][:, 0, 1:], torch.full((3, 4), expected), atol=1e-6)
    assert torch.allclose(r["sigma_p"][:, :, 1:], torch.full((3, 2, 4), 0.5), atol=1e-6)
    draws = torch.randn(200_000, 2) * 0.5 @ w.T  # W_dz z for z ~ N(0, 0.5^2 I): its per-unit spread
    assert abs(float(draws.var(0).mean().sqrt()) - expected) < 0.01 * expected
    with torch.no_grad():  # z twice as wide, W_dz half as large: the same network input, sigma_p doubled
        m.prior_log_sigma[0].bias.fill_(math.log(1.0))
        m.cells[0].dz.weight.mul_(0.5)
    r2 = m.run(None, steps=5, batch=3)
    assert torch.allclose(r2["noise"][:, 0, 1:], r["noise"][:, 0, 1:], atol=1e-6)
    assert torch.allclose(r2["sigma_p"][:, 0, 1:], 2 * r["sigma_p"][:, 0, 1:], atol=1e-6)
