"""varilab.sde.fbm against quadrature, Monte Carlo and the closed forms of fBM."""
import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.special import gamma as gamma_fn

from varilab.sde import fbm

GAMMA = torch.tensor([0.5, 2.0, 8.0], dtype=torch.float64)


def _ou_paths(gamma, n, steps, horizon=1.0, seed=0):
    """OU processes sharing one driver W, W linear within each of `steps` cells (so each cell's response is exact:
    Y <- e^(-g dt) Y + (1 - e^(-g dt)) / (g dt) dW): Y [n, steps + 1, K] and the increments dW [n, steps]."""
    g = torch.Generator().manual_seed(seed)
    dt = horizon / steps
    dw = torch.randn(n, steps, generator=g, dtype=torch.float64) * dt ** 0.5
    decay, gain = torch.exp(-gamma * dt), -torch.expm1(-gamma * dt) / (gamma * dt)
    y = torch.zeros(n, len(gamma), dtype=torch.float64)
    ys = [y]
    for i in range(steps):
        y = decay * y + gain * dw[:, i:i + 1]
        ys.append(y)
    return torch.stack(ys, 1), dw


def _trapezoid(v, horizon):
    """int_0^T of v [..., steps + 1] on the uniform grid."""
    return (v[..., 1:] + v[..., :-1]).sum(-1) * horizon / (2 * (v.shape[-1] - 1))


def test_gram_matches_quadrature_and_monte_carlo():
    a = fbm.gram(GAMMA, 1.0)
    quadrature = np.array([[quad(lambda t: (1 - np.exp(-(gi + gj) * t)) / (gi + gj), 0, 1)[0] for gj in GAMMA.tolist()]
                           for gi in GAMMA.tolist()])
    np.testing.assert_allclose(a.numpy(), quadrature, rtol=1e-10)
    y, _ = _ou_paths(GAMMA, 50_000, 200)
    mc = _trapezoid(torch.einsum("nti,ntj->ijt", y, y) / len(y), 1.0)  # int_0^1 E[Y_i Y_j] dt
    np.testing.assert_allclose(a.numpy(), mc.numpy(), rtol=0.01)


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_cross_matches_quadrature_and_monte_carlo(hurst):
    b = fbm.cross(hurst, GAMMA, 1.0)
    al = hurst - 0.5  # E[B_H(t) Y_k(t)] = Gamma(H + 1/2)^-1 int_0^t u^(H - 1/2) e^(-g u) du; b_k = its integral over t
    quadrature = [quad(lambda u: (1 - u) * np.exp(-g * u), 0, 1, weight="alg", wvar=(al, 0))[0] / gamma_fn(hurst + 0.5)
                  for g in GAMMA.tolist()]
    np.testing.assert_allclose(b.numpy(), quadrature, rtol=1e-8)
    # Monte Carlo: B_H on the grid from the same increments, its kernel integrated exactly over each cell
    steps, n = 200, 50_000
    y, dw = _ou_paths(GAMMA, n, steps)
    t = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    lag = (t[1:, None] - t[None, :-1]).clamp_min(0)  # [t_n, left edge of cell m]
    # W linear within a cell: B_H(t_n) = sum_m dW_m (1/dt) int_cell (t_n - s)^(H - 1/2) ds / Gamma(H + 1/2)
    kernel = (lag ** (hurst + 0.5) - (lag - 1 / steps).clamp_min(0) ** (hurst + 0.5)) / gamma_fn(hurst + 1.5) * steps
    bh = torch.cat([torch.zeros(n, 1, dtype=torch.float64), dw @ kernel.T], 1)  # [n, steps + 1]
    mc = _trapezoid((bh[:, :, None] * y).mean(0).T, 1.0)  # [K]
    np.testing.assert_allclose(b.numpy(), mc.numpy(), rtol=0.01)


@pytest.mark.parametrize("hurst", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_relative_error_lies_in_0_1_and_does_not_increase_with_k(hurst):
    """K = 1 .. 10 on the default grid. Past K ~ 6, cond(A) reaches 1e14 and float64 resolves the error only to
    ~1e-5 of c (1 - b^T A^-1 b / c cancels), so "does not increase" is checked to that floor."""
    errors = [float(fbm.relative_error(hurst, fbm.rates(k))) for k in range(1, 11)]
    assert all(0 <= e < 1 for e in errors)
    assert all(later <= earlier + 1e-5 for earlier, later in zip(errors, errors[1:])), errors
    assert errors[7] < 0.5 * errors[1] or errors[7] < 1e-5  # K = 8 well below K = 2
    assert errors[-1] < (0.06 if hurst < 0.2 else 1e-3)


def test_variance_formula_matches_cholesky_samples():
    t = np.linspace(0.05, 1, 20)
    for hurst in (0.2, 0.5, 0.8):
        paths = fbm.fbm_paths(hurst, t, 40_000, seed=1)
        np.testing.assert_allclose(paths.var(0), fbm.fbm_variance(hurst, t).numpy(), rtol=0.03)


def test_hurst_one_half_is_brownian_motion():
    t = np.linspace(0.1, 1, 10)
    np.testing.assert_allclose(fbm.covariance(0.5, t), np.minimum.outer(t, t), rtol=1e-12)
    np.testing.assert_allclose(fbm.fbm_variance(0.5, t).numpy(), t, rtol=1e-12)
    gamma = fbm.rates(6)
    assert float(fbm.relative_error(0.5, gamma)) < 1e-6
    np.testing.assert_allclose(fbm.markov_variance(0.5, gamma, torch.tensor([1.0])).numpy(), [1.0], rtol=1e-3)


def test_omega_is_differentiable_in_hurst():
    gamma = fbm.rates(4)
    h = torch.tensor(0.35, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h: fbm.omega(h, gamma), (h,), eps=1e-5, atol=1e-6, rtol=1e-4)
    a, x = torch.tensor([0.7, 1.9], dtype=torch.float64, requires_grad=True), torch.tensor([0.3, 4.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: fbm.lower_gamma_p(a, x), (a,), eps=1e-6, atol=1e-7)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Hurst"):
        fbm.covariance(1.2, [0.5, 1.0])
    with pytest.raises(ValueError, match="increasing"):
        fbm.covariance(0.3, [0.5, 0.2])
    with pytest.raises(ValueError, match="at least one OU"):
        fbm.rates(0)
