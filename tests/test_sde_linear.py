"""The augmented system's exact linear part (varilab.sde.linear) and the guided posterior built on it: the transition
is the matrix exponential, the backward messages are the likelihood of the later observations, and with the drift
off the guided posterior's ELBO is the exact log-likelihood."""
import math

import pytest
import torch

from varilab.models.latent_sde import LatentSDE, LatentSDEConfig
from varilab.sde import fbm, linear

D64 = torch.float64


def _system(d=2, k=4, hurst=0.3):
    gamma = fbm.rates(k)
    return fbm.omega(hurst, gamma), gamma, torch.linspace(0.6, 1.3, d, dtype=D64)


def _matrices(w, gamma, sigma):
    """The system's drift matrix B and noise loading G, written out: dz = B z dt + G dW."""
    d, k = len(sigma), len(w)
    n = d * (1 + k)
    b = torch.zeros(n, n, dtype=D64)
    for j in range(d):
        for i in range(k):
            b[j, d + j * k + i] = -sigma[j] * w[i] * gamma[i]  # dX_j = -sigma_j sum_k omega_k gamma_k Y_jk dt
            b[d + j * k + i, d + j * k + i] = -gamma[i]  # dY_jk = -gamma_k Y_jk dt
    return b, linear.loading(w, sigma)


def test_the_transition_is_the_matrix_exponential():
    w, gamma, sigma = _system()
    b, g = _matrices(w, gamma, sigma)
    n = len(b)
    taus = torch.tensor([0.0, 0.013, 0.4], dtype=D64)
    phis, qs = linear.transition(w, gamma, sigma, taus)
    for tau, phi, q in zip(taus, phis, qs):
        van_loan = torch.zeros(2 * n, 2 * n, dtype=D64)  # exp([[-B, G G^T], [0, B^T]] tau) holds Phi and Q
        van_loan[:n, :n], van_loan[:n, n:], van_loan[n:, n:] = -b, g @ g.T, b.T
        e = torch.linalg.matrix_exp(van_loan * tau)
        phi_ref = e[n:, n:].T
        torch.testing.assert_close(phi, phi_ref, atol=1e-9, rtol=0)
        torch.testing.assert_close(q, phi_ref @ e[:n, n:], atol=1e-9, rtol=0)
        torch.testing.assert_close((phi, q), linear.transition(w, gamma, sigma, tau))  # batched = one at a time
    phi0, q0 = linear.transition(w[:0], gamma[:0], sigma, 0.3)  # Brownian noise: X + sigma W_tau
    torch.testing.assert_close((phi0, q0), (torch.eye(2, dtype=D64), torch.diag(sigma ** 2 * 0.3)))


def test_the_messages_are_the_likelihood_of_the_later_observations():
    """log p(y_j.. | z at grid time j) = -z^T P z / 2 + h^T z + const, computed directly from the joint Gaussian."""
    w, gamma, sigma = _system(d=2, k=3, hurst=0.7)
    gen = torch.Generator().manual_seed(0)
    grid = torch.tensor([0.1, 0.25, 0.3, 0.6, 0.95], dtype=D64)
    values = torch.randn(2, 5, 3, generator=gen, dtype=D64)
    seen = torch.tensor([[1, 0, 1, 1, 1], [0, 1, 1, 0, 1]], dtype=D64)
    decoder, bias, noise = torch.randn(3, 2, generator=gen, dtype=D64), torch.randn(3, generator=gen, dtype=D64), 0.2
    P, h = linear.messages(grid, values, seen, w, gamma, sigma, decoder, bias, torch.tensor(noise, dtype=D64))
    n = P.shape[-1]
    dx = torch.zeros(3, n, dtype=D64)
    dx[:, :2] = decoder
    for s in range(2):
        for j in range(5):
            later = [i for i in range(j, 5) if seen[s, i]]
            rows = torch.cat([dx @ linear.transition(w, gamma, sigma, grid[i] - grid[j])[0] for i in later])  # mean
            cov = torch.zeros(len(rows), len(rows), dtype=D64)
            for a, i in enumerate(later):  # Cov(z_i, z_l) = Phi(t_l - t_i) Q(t_i - t_j) for t_i <= t_l
                for c, l in enumerate(later[a:], a):
                    block = dx @ linear.transition(w, gamma, sigma, grid[l] - grid[i])[0] @ \
                        linear.transition(w, gamma, sigma, grid[i] - grid[j])[1] @ dx.T
                    cov[3 * c:3 * c + 3, 3 * a:3 * a + 3] = block
                    cov[3 * a:3 * a + 3, 3 * c:3 * c + 3] = block.T
            cov += noise ** 2 * torch.eye(len(rows), dtype=D64)
            y = torch.cat([values[s, i] - bias for i in later])
            torch.testing.assert_close(P[s, j], rows.T @ torch.linalg.solve(cov, rows), atol=1e-9, rtol=1e-9)
            torch.testing.assert_close(h[s, j], rows.T @ torch.linalg.solve(cov, y), atol=1e-9, rtol=1e-9)


def _exact_log_lik(model: LatentSDE, times: torch.Tensor, values: torch.Tensor, decay=None) -> float:
    """log N(y; 0, C + s^2 I) with C_il = Cov(X_ti, X_tl) of the linear system started at X_0 = 0."""
    w, gamma = model.weights()
    sigma = model.sigma()
    cov = torch.zeros(len(times), len(times), dtype=D64)
    for i, ti in enumerate(times):
        for c, tc in enumerate(times[i:], i):
            v = (linear.transition(w, gamma, sigma, tc - ti, decay)[0]
                 @ linear.transition(w, gamma, sigma, ti, decay)[1])[0, 0]
            cov[i, c] = cov[c, i] = v
    cov += model.log_obs_noise.exp() ** 2 * torch.eye(len(times), dtype=D64)
    return float(torch.distributions.MultivariateNormal(torch.zeros(len(times), dtype=D64), cov).log_prob(values))


@pytest.mark.parametrize("ou,hurst,steps,theta", [(0, 0.5, None, 0), (3, 0.3, None, 0), (3, 0.8, None, 0),
                                                   (3, 0.3, 1, 0), (3, 0.7, None, 2.0)])
def test_the_guided_elbo_of_a_linear_model_is_its_exact_log_likelihood(ou, hurst, steps, theta):
    """A linear drift (off, or -theta X), X_0 = 0: the backward filter is exact, so the guided posterior is the true
    one and the ELBO's mean over paths is log p(y) (up to Euler's error and Monte Carlo), whether every step is drawn
    from its conditional or only the last before each observation (torchsde solving the others under the guide's
    control); the plain posterior (u = 0 as initialised) is far below it."""
    torch.manual_seed(0)
    elbos = {}
    for posterior in ("guided", "plain"):
        m = LatentSDE(LatentSDEConfig(obs_dim=1, ou=ou, hurst=hurst, dt=0.005, obs_noise=0.1, learn_obs_noise=False,
                                      posterior=posterior, conditional_steps=steps,
                                      drift="linear" if theta else "mlp")).double()
        with torch.no_grad():
            if theta:
                m.drift.log_theta.fill_(math.log(theta))
            else:
                m.drift[-1].weight.zero_()
                m.drift[-1].bias.zero_()
            m.log_sigma.fill_(math.log(0.8))
            m.guide_log_decay.fill_(-30.0)  # the guide's X reverts at ~0, like the prior without drift
            m.p0_log_std.fill_(-20.0)  # X_0 = 0 under the prior and the posterior
            m.q0.weight.zero_()
            m.q0.bias.copy_(torch.tensor([0.0, -20.0]))
            times = torch.tensor([0.0, 0.1, 0.17, 0.3, 0.5], dtype=D64)  # the first at t0: a step of length 0
            values = torch.tensor([0.05, 0.3, -0.2, 0.1, 0.5], dtype=D64)
            elbo = m.posterior(times.repeat(200, 1), values[None, :, None].repeat(200, 1, 1))["elbo"]
        elbos[posterior] = (float(elbo.mean()), float(elbo.std()) / math.sqrt(len(elbo)))
    with torch.no_grad():
        exact = _exact_log_lik(m, times, values, torch.tensor([float(theta)], dtype=D64) if theta else None)
    mean, se = elbos["guided"]
    assert abs(mean - exact) < 4 * se + 0.1, (mean, se, exact)
    assert elbos["plain"][0] < exact - 2, (elbos, exact)
