"""The latent SDE on torchsde: the Girsanov KL, the driving noise's law, irregular time grids, solvers, adjoint."""
import numpy as np
import pytest
import torch

from varilab.data.series import check_times, fractional, load
from varilab.models.latent_sde import LatentSDE, LatentSDEConfig, forecast, objective, union_grid
from varilab.sde import fbm


def _silent(model: LatentSDE, control: float = 0.0) -> LatentSDE:
    """No drift, a constant control `control`, sigma 1, X_0 = 0 under the prior (std e^-20)."""
    with torch.no_grad():
        for net in (model.drift, model.control):
            net[-1].weight.zero_()
            net[-1].bias.zero_()
        model.control[-1].bias.fill_(control)
        model.p0_log_std.fill_(-20.0)
    return model


def _series(n=4, steps=20):
    t = torch.linspace(0.05, 1, steps).expand(n, steps)
    return t, torch.randn(n, steps, 1, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("ou", [0, 3])
def test_girsanov_kl_is_half_the_integrated_squared_control(ou):
    t, y = _series()
    zero = _silent(LatentSDE(LatentSDEConfig(obs_dim=1, ou=ou, hurst=0.3 if ou else 0.5, posterior="plain")))
    assert torch.equal(zero.posterior(t, y)["kl_path"], torch.zeros(len(t)))  # u = 0: KL(Q || P) = 0
    c = 0.7
    const = _silent(LatentSDE(LatentSDEConfig(obs_dim=1, ou=ou, hurst=0.3 if ou else 0.5, posterior="plain")), control=c)
    torch.testing.assert_close(const.posterior(t, y)["kl_path"], torch.full((len(t),), 0.5 * c ** 2 * 1.0))  # c^2 T / 2


def test_brownian_noise_has_the_variance_of_brownian_motion():
    m = _silent(LatentSDE(LatentSDEConfig(obs_dim=1, ou=0, hurst=0.5, dt=0.01)))
    x = m.sample_prior(8000, torch.tensor([0.25, 0.5, 1.0]), generator=torch.Generator().manual_seed(0))["latent"]
    np.testing.assert_allclose(x[..., 0].var(0).numpy(), [0.25, 0.5, 1.0], rtol=0.05)


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_fractional_noise_has_the_variance_of_its_markov_approximation_and_of_fbm(hurst):
    m = _silent(LatentSDE(LatentSDEConfig(obs_dim=1, ou=4, hurst=hurst, dt=0.005)))
    times = torch.tensor([0.25, 0.5, 1.0])
    x = m.sample_prior(5000, times, generator=torch.Generator().manual_seed(0))["latent"][..., 0]
    markov = fbm.markov_variance(hurst, m.gamma, times.double()).numpy()
    np.testing.assert_allclose(x.var(0).numpy(), markov, rtol=0.06)
    np.testing.assert_allclose(markov, fbm.fbm_variance(hurst, times.double()).numpy(), rtol=0.05)


def test_the_elbo_reaches_the_hurst_index():
    t, y = _series()
    m = LatentSDE(LatentSDEConfig(obs_dim=1, ou=3))
    with torch.no_grad():
        m.control[-1].bias.fill_(0.3)  # a non-zero control, so the path depends on omega(H)
    torch.manual_seed(0)
    objective(m, t, y)["loss"].backward()
    assert m.hurst_logit.grad is not None and torch.isfinite(m.hurst_logit.grad) and m.hurst_logit.grad != 0
    fixed = LatentSDE(LatentSDEConfig(obs_dim=1, ou=3, hurst=0.3))
    objective(fixed, t, y)["loss"].backward()
    assert fixed.hurst_logit.grad is None and float(fixed.hurst()) == pytest.approx(0.3)


def test_series_with_their_own_times_meet_on_the_union_grid():
    times = torch.tensor([[0.1, 0.4, 0.9], [0.2, 0.4, 1.0]])
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])[..., None]
    grid, on_grid, mask = union_grid(times, values)
    assert grid.tolist() == pytest.approx([0.1, 0.2, 0.4, 0.9, 1.0])
    assert mask.tolist() == [[1, 0, 1, 1, 0], [0, 1, 1, 0, 1]]
    assert on_grid[..., 0].tolist() == [[1, 0, 2, 3, 0], [0, 4, 5, 0, 6]]
    m = LatentSDE(LatentSDEConfig(obs_dim=1, ou=2))
    r = m.posterior(times, values)
    assert r["observed"].tolist() == [3, 3] and torch.isfinite(r["elbo"]).all()


@pytest.mark.parametrize("method", ["euler", "milstein", "srk"])
def test_every_solver_runs_and_forecasts(method):
    t, y = _series()
    m = LatentSDE(LatentSDEConfig(obs_dim=1, ou=2, method=method, dt=0.02))
    assert torch.isfinite(objective(m, t, y)["loss"])
    f = forecast(m, t, y, split=0.5, draws=3)
    assert np.isfinite(f["mse"]) and f["future"].sum() == len(t) * int((t[0] > 0.5).sum())


def test_the_adjoint_gives_the_gradient_of_backpropagation():
    t, y = _series(steps=10)
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(0)
        m = LatentSDE(LatentSDEConfig(obs_dim=1, ou=2, dt=0.005, adjoint=adjoint, posterior="plain"))
        with torch.no_grad():
            m.control[-1].bias.fill_(0.3)
        torch.manual_seed(1)
        objective(m, t, y)["loss"].backward()
        grads.append(torch.cat([p.grad.flatten() for p in (m.log_sigma, m.drift[0].weight, m.control[0].weight)]))
    assert torch.linalg.norm(grads[1] - grads[0]) < 0.05 * torch.linalg.norm(grads[0])


def test_bad_configurations_are_refused():
    with pytest.raises(ValueError, match="solver method"):
        LatentSDE(LatentSDEConfig(obs_dim=1, method="rk4"))
    with pytest.raises(ValueError, match="Hurst"):
        LatentSDE(LatentSDEConfig(obs_dim=1, hurst=1.5))
    with pytest.raises(ValueError, match="fastest OU process"):
        LatentSDE(LatentSDEConfig(obs_dim=1, ou=5, ratio=10, dt=0.05))


def test_series_data_are_checked():
    with pytest.raises(ValueError, match="increase strictly.*series 1"):
        check_times(np.array([[0.0, 1.0, 2.0], [0.0, 2.0, 1.0]]), 2, 3, "--times t.npy")
    with pytest.raises(ValueError, match="NaN"):
        check_times(np.array([0.0, np.nan, 2.0]), 2, 3, "--times t.npy")
    with pytest.raises(ValueError, match=r"shape \[3\] or \[2, 3\]"):
        check_times(np.zeros((2, 4)), 2, 3, "--times t.npy")
    t, y = fractional("fou", 3, 50, 0.3, observed=0.5, seed=2)
    assert t.shape == (3, 25) and y.shape == (3, 25, 1) and (np.diff(t, axis=1) > 0).all()
    assert not np.array_equal(t[0], t[1])  # each series its own times


def test_a_user_file_with_its_own_times_loads(tmp_path):
    values = np.cumsum(np.random.default_rng(0).standard_normal((6, 12)), 1)
    times = np.sort(np.random.default_rng(1).uniform(0, 5, (6, 12)), 1)
    np.save(tmp_path / "v.npy", values)
    np.save(tmp_path / "t.npy", times)
    s = load(str(tmp_path / "v.npy"), str(tmp_path / "t.npy"), test_fraction=1 / 3)
    assert s.y_train.shape == (4, 12, 1) and s.t_test.shape == (2, 12) and s.start == 0.0
    bad = values.copy()
    bad[2, 3] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match="NaN"):
        load(str(tmp_path / "bad.npy"))


@pytest.mark.parametrize("ou", [0, 3])
def test_the_diffusion_product_equals_the_diffusion_matrix_times_the_noise(ou):
    from varilab.models.latent_sde import _SDE

    m = LatentSDE(LatentSDEConfig(obs_dim=1, latent=2, ou=ou, hurst=0.3 if ou else 0.5))
    sde, z, v = _SDE(m), torch.randn(4, m.state_size()), torch.randn(4, 2)
    torch.testing.assert_close(sde.g_prod(0.0, z, v), torch.bmm(sde.g(0.0, z), v[..., None])[..., 0])
