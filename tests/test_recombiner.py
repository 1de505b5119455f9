"""RECOMBINER and COMBINER: the linear reparameterisation's weight covariance, relative entropy coding (the chosen
sample approaches q as candidates grow; the coded length is blocks x kappa; the decoder regenerates exactly what
was sent), the blocks, and moment matching of the prior."""
import numpy as np
import pytest
import torch
from torch.distributions import Normal

from varilab.codec import rec
from varilab.models.codec.recombiner import Recombiner, RecombinerConfig


def _model(**kw):
    torch.manual_seed(0)
    cfg = dict(image_shape=(8, 8), images=6, fourier=2, units=6, layers=1, kappa=6, fit_steps=30, finetune_steps=2)
    return Recombiner(RecombinerConfig(**{**cfg, **kw}))


def test_the_weights_covariance_is_a_diag_sigma2_a_transpose():
    m = _model(grid_channels=0)
    with torch.no_grad():
        for b in m.B:
            b.normal_(0, 3.0)  # a learned-looking, far from diagonal A
    a = m.A()[0].double()
    sigma = torch.linspace(0.3, 1.5, len(a), dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    h = torch.randn(200_000, len(a), generator=g, dtype=torch.float64) * sigma  # h ~ N(0, diag sigma^2)
    w = h @ a.T
    empirical = w.T @ w / len(w)
    exact = a @ torch.diag(sigma ** 2) @ a.T
    assert torch.linalg.matrix_norm(empirical - exact) / torch.linalg.matrix_norm(exact) < 0.02
    off = exact - torch.diag(torch.diag(exact))
    assert torch.linalg.matrix_norm(off) > 0.1 * torch.linalg.matrix_norm(exact)  # truly not mean-field
    # and the model's own weights are A h: layer 0's parameters of a batch of latents
    hm = torch.randn(3, m.dim)
    torch.testing.assert_close(m.weights(hm)[0], hm[:, :m.layer_sizes[0]] @ m.A()[0].T)


def test_combiner_is_mean_field_on_the_weights():
    m = _model(linear=False, grid_channels=0)
    h = torch.randn(4, m.dim)
    torch.testing.assert_close(torch.cat(m.weights(h), -1), h * m.scale)
    assert m.B is None and all(torch.equal(a, torch.diag(torch.diag(a))) for a in m.A())


def test_importance_sampling_coding_approaches_q_as_candidates_grow():
    """One dimension, KL(q || p) = 6 bits, 2^(KL + t) candidates: the chosen samples' mean and std approach q's."""
    p, mean = Normal(0.0, 1.0), 2.5
    lo, hi = 1e-4, 1.0  # q's std for KL = 6 bits: KL = -log s + (s^2 + mean^2) / 2 - 1/2 nats, by bisection
    for _ in range(60):
        s = (lo + hi) / 2
        kl = (-np.log(s) + (s * s + mean ** 2) / 2 - 0.5) / np.log(2)
        lo, hi = (s, hi) if kl > 6 else (lo, s)
    q = Normal(mean, s)
    g = torch.Generator().manual_seed(1)
    errors = []
    for t in (0, 2, 4):
        picks = []
        for trial in range(400):
            x = rec.candidates(rec.seed_of(7, trial, t), 2 ** (6 + t), 1)[:, 0]
            picks.append(x[rec.choose(q.log_prob(x) - p.log_prob(x), g)])
        picks = torch.stack(picks)
        errors.append(abs(float(picks.mean()) - mean) + abs(float(picks.std()) - s))
    assert errors[2] < errors[0] and errors[2] < 0.1, errors  # the moments approach q's as t grows


def test_blocks_hold_at_most_kappa_bits_and_only_big_dimensions_stand_alone():
    kl = np.array([3.0, 4.0, 5.0, 20.0, 1.0, 1.0, 0.0, 11.9, 0.2])
    blocks = rec.partition(kl, 12.0)
    assert blocks.tolist() == [0, 0, 0, 1, 2, 2, 2, 3, 4]
    sums = np.bincount(blocks, kl)
    assert all(s <= 12 or np.sum(blocks == b) == 1 for b, s in enumerate(sums))
    with pytest.raises(ValueError, match="non-negative"):
        rec.partition([1.0, -1.0], 12)


def test_the_coded_length_is_blocks_times_kappa_and_the_decoder_regenerates_the_sent_latents():
    from varilab.codec import entropy

    m = _model()
    m.blocks.copy_(torch.as_tensor(rec.partition(np.full(m.dim, 0.5), m.config.kappa)))  # 12 dims a block
    x = torch.rand(3, 1, 8, 8)
    picks, values, kl = m.code(x)
    blocks = int(m.blocks.max()) + 1
    assert picks.shape == (3, blocks) and (picks < 2 ** m.config.kappa).all() and kl > 0
    stream = entropy.encode(picks.reshape(1, -1).numpy(), m.table_rows().numpy())
    assert abs(8 * len(stream) - 3 * blocks * m.config.kappa) <= 32  # blocks x kappa bits, up to the last word
    back = entropy.decode(stream, m.table_rows().numpy(), 3 * blocks)
    assert np.array_equal(back.reshape(3, blocks), picks.numpy())
    torch.testing.assert_close(m.latents_of(picks), values, rtol=0, atol=0)  # the shared seed alone
    # every dimension of every image is a candidate's: m + s eps with eps from its block's seed
    b0 = (m.blocks == 0).nonzero()[:, 0]
    eps = rec.candidates(rec.seed_of(0, 1, 0), 2 ** m.config.kappa, len(b0))[picks[1, 0]]
    torch.testing.assert_close(values[1, b0].double(), m.prior_mean.double()[b0] + m.prior_log_std.double().exp()[b0] * eps)


def test_moment_matching_sets_the_prior_to_the_posteriors_mixture_moments():
    m = _model()
    with torch.no_grad():
        m.mu.normal_()
        m.log_sigma.uniform_(-2, 0)
    m.match_prior()
    mix = (m.mu + m.log_sigma.exp() * torch.randn(20000, *m.mu.shape)).reshape(-1, m.dim)
    torch.testing.assert_close(m.prior_mean, m.mu.mean(0))
    torch.testing.assert_close(m.prior_log_std.exp(), mix.std(0), rtol=0.02, atol=0)  # s^2: the mixture's variance
