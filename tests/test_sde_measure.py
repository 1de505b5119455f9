"""varilab.sde.measure and varilab.sde.dfa: exact fBM samplers against their closed-form covariances, the
approximation's covariance against its exact OU steps, DFA recovering H, and the measure telling a good
approximation (large K) from a poor one (K = 1)."""
import numpy as np
import pytest
import torch

from varilab.sde import dfa, fbm, linear, measure


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_standard_fbm_sampler_matches_its_closed_form_covariance(hurst):
    t = np.linspace(0.1, 1, 10)
    paths = fbm.gaussian_paths(fbm.standard_covariance(hurst, t), 40_000, seed=3)
    s, u = t[:, None], t[None, :]
    closed = 0.5 * (s ** (2 * hurst) + u ** (2 * hurst) - np.abs(u - s) ** (2 * hurst))
    np.testing.assert_allclose(paths.T @ paths / len(paths), closed, atol=0.02)


def test_markov_covariance_matches_the_exact_ou_steps():
    """B_hat = sum_k omega_k Y_k stepped exactly (`linear.transition` with sigma = 1: X is B_hat) on an uneven grid."""
    hurst, gamma = 0.3, fbm.rates(4, 10.0)
    t = np.array([0.05, 0.1, 0.3, 0.35, 0.8, 1.2])
    w = fbm.omega(hurst, gamma, 1.0)
    phi, q = linear.transition(w, gamma, torch.ones(1, dtype=torch.float64), torch.from_numpy(np.diff(t, prepend=0.0)))
    g = torch.Generator().manual_seed(0)
    z, xs = torch.zeros(50_000, 5, dtype=torch.float64), []
    for p, c in zip(phi, q):
        e, v = torch.linalg.eigh(c)  # Q is nearly singular (one driver for all): a square root by its eigenvectors
        z = z @ p.T + torch.randn(z.shape, generator=g, dtype=torch.float64) @ (v * e.clamp_min(0).sqrt()).T
        xs.append(z[:, 0])
    x = torch.stack(xs, 1).numpy()
    cov = fbm.markov_covariance(hurst, gamma, t, 1.0)
    np.testing.assert_allclose(x.T @ x / len(x), cov, atol=0.03 * cov.max())
    own = fbm.markov_covariance(hurst, gamma, t, horizon=t.max())  # markov_variance's weights: optimal on [0, max t]
    np.testing.assert_allclose(np.diag(own), fbm.markov_variance(hurst, gamma, torch.from_numpy(t)).numpy(), rtol=1e-10)


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_dfa_of_paths_agrees_with_its_expectation_and_finds_h_of_standard_fbm(hurst):
    t = np.arange(1, 401) / 400
    cov = fbm.standard_covariance(hurst, t)
    expected = dfa.expected_hurst(cov, t)
    assert abs(expected - hurst) < 0.05, expected
    assert abs(dfa.hurst(fbm.gaussian_paths(cov, 400, seed=1), t) - expected) < 0.02
    # any grid: the windows' lengths are in time (on 400 uniform random times, 0.365 and 0.748 at H = 0.3 and 0.7)
    uneven = np.sort(np.random.default_rng(0).uniform(0, 1, 400))
    assert abs(dfa.expected_hurst(fbm.covariance(hurst, uneven), uneven) - hurst) < 0.07
    with pytest.raises(ValueError, match="DFA needs at least 10 points"):
        dfa.hurst(np.zeros((2, 9)), np.arange(1, 10))


@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_the_measure_is_near_exact_for_many_ou_processes_and_off_for_one(hurst):
    t = np.arange(1, 201) / 200
    good, poor = measure.compare(hurst, 8, 10.0, t), measure.compare(hurst, 1, 10.0, t)
    assert abs(good["dfa"] - good["dfa_exact"]) < 0.02 and good["covariance_error"] < 0.03, good
    assert abs(poor["dfa"] - poor["dfa_exact"]) > 0.15 and poor["covariance_error"] > 0.5, poor
    assert abs(good["dfa_exact"] - good["dfa_standard"]) < 0.01  # the two fBMs scale alike on the grid


def test_the_sentence_names_the_grid_and_thins_long_grids():
    m = measure.compare(0.7, 5, 10.0, np.arange(1, 3001) / 3000, horizon=1.0)
    assert m["points"] == 3000 and m["measured_points"] == measure.MAX_POINTS
    text = measure.sentence(m, "the requested grid")
    assert text.startswith("On the requested grid (3,000 points, measured on 1,000 of them), the K = 5, r = 10 "
                           "approximation at H = 0.7 measures as H = ") and "by DFA (exact fBM: " in text
    few = measure.compare(0.7, 5, 10.0, [0.0, 0.5, 1.0])  # the start itself is no point of the noise
    assert few["points"] == 2 and few["dfa"] is None and "too few points for DFA" in measure.sentence(few)


def test_the_points_flag_and_a_times_file_share_one_bound():
    from varilab.families import sde
    from varilab.families.sde import grid

    assert sde.MAX_POINTS == grid.MAX_POINTS == sde.SampleFlags.__dataclass_fields__["points"].metadata["check"].hi
