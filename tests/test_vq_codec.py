"""The multi-codebook vector-quantising codec: Gumbel-max sampling, the temperature limit, the rate as the coded
length, k-means initialisation and dead-code re-seeding."""
import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch.distributions import OneHotCategorical

from varilab.core.estimators import draw
from varilab.models.codec.vq_codec import VQCodec, VQCodecConfig, kmeans


def test_gumbel_max_draws_codes_with_the_softmax_frequencies():
    torch.manual_seed(0)
    logits = torch.tensor([2.0, 0.5, 0.0, -1.0, 1.0])
    hard, _ = draw(OneHotCategorical(logits=logits.expand(20000, 5)), "straight-through", temperature=0.7)
    counts = hard.sum(0).numpy()
    expected = torch.softmax(logits, 0).numpy() * len(hard)
    assert chisquare(counts, expected).pvalue > 1e-3
    assert (hard.sum(-1) == 1).all()


def test_a_vanishing_temperature_gives_one_hot_samples():
    torch.manual_seed(0)
    logits = torch.randn(2000, 8)
    peak = [float(draw(OneHotCategorical(logits=logits), "gumbel", temperature=t)[0].max(-1).values.mean())
            for t in (5.0, 1.0, 0.1, 1e-4)]
    assert peak == sorted(peak) and peak[0] < 0.5 and peak[-1] > 0.999  # the mass gathers on one code as tau -> 0


def _model(**kw):
    """A small codec; the Gumbel quantiser unless `quantiser` says otherwise."""
    torch.manual_seed(0)
    return VQCodec(VQCodecConfig(latent=8, groups=2, codes=16, hidden=8, **{"quantiser": "gumbel", **kw}))


@pytest.mark.parametrize("stages", [1, 2])
def test_shapes_and_the_rate_is_the_cross_entropy_of_the_codes(stages):
    m = _model(stages=stages)
    x = torch.rand(3, 1, 16, 16)
    xhat, bpp = m(x, tau=0.5)
    assert xhat.shape == x.shape and bpp.shape == (3,) and (bpp > 0).all()
    m.eval()
    with torch.no_grad():
        zq, codes, rate = m.quantise(m.vectors(x))
        log_p = torch.log_softmax(m.prior_logits, -1)  # [S, m, K]
        bits = sum(-log_p[s, torch.arange(2), codes[s]].sum(-1) / np.log(2) for s in range(stages))  # over groups
    torch.testing.assert_close(rate, bits)  # the rate is sum -log2 p(k) over the chosen codes
    assert len(codes) == stages and codes[0].shape == (3, 4, 4, 2)


def test_straight_through_is_hard_forward_with_gradients_to_the_encoder():
    m = _model(hard=True)
    x = torch.rand(2, 1, 16, 16)
    zq, picks, rate = m.quantise(m.vectors(x), tau=0.5)
    assert set(picks[0].unique().tolist()) <= {0.0, 1.0}
    (zq.sum() + rate.sum()).backward()
    assert m.encoder[0].weight.grad.abs().sum() > 0 and m.prior_logits.grad.abs().sum() > 0


def test_kmeans_initialisation_lowers_the_quantisation_error_and_dead_codes_are_reseeded():
    m = _model()
    x = torch.rand(16, 1, 16, 16)
    with torch.no_grad():
        z = m.vectors(x)
        before = (m.quantise(z)[0] - z).pow(2).mean()
        m.init_codebooks(x, generator=torch.Generator().manual_seed(0))
        after = (m.quantise(z)[0] - z).pow(2).mean()
    assert after < 0.5 * before
    m.usage.zero_()
    m.usage[0, 0, :4] = 0.25  # four live codes in group 0, none elsewhere
    assert m.reseed_dead(x, generator=torch.Generator().manual_seed(1)) == 2 * 16 - 4
    m.usage.zero_()
    m.usage[0, 0, :4] = 0.25  # four codes used equally: perplexity 4; all sixteen: 16
    m.usage[0, 1] = 1.0 / 16
    torch.testing.assert_close(m.perplexity(), torch.tensor([[4.0, 16.0]]))


def test_kmeans_finds_separated_clusters():
    gen = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [5.0, 5.0], [-5.0, 5.0]])
    v = (centres[:, None] + 0.1 * torch.randn(3, 50, 2, generator=gen)).reshape(-1, 2)
    found = kmeans(v, 3, generator=gen)
    assert torch.cdist(found, centres).min(0).values.max() < 0.1


def test_the_factorized_baseline_tables_are_its_quantised_density():
    from varilab.models.codec.factorized import Factorized, FactorizedConfig

    torch.manual_seed(0)
    m = Factorized(FactorizedConfig(latent=3, hidden=8, support=6, mixtures=2))
    m.freeze_tables()
    t = m.tables.numpy()
    assert t.shape == (3, 13) and (t.sum(-1) == 2 ** 16).all() and (t >= 1).all()
    with torch.no_grad():
        k = torch.arange(-5, 6, dtype=torch.float32)
        p = (m.cdf(k[:, None].expand(11, 3) + 0.5) - m.cdf(k[:, None].expand(11, 3) - 0.5)).T.numpy()
    np.testing.assert_allclose(t[:, 1:-1] / 2 ** 16, p, atol=2e-4)  # inner codes: the CDF differences
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    xhat, bpp = m(x, tau=1.0)
    bpp.sum().backward()  # the noisy latents' bits reach the encoder
    assert xhat.shape == x.shape and m.encoder[0].weight.grad.abs().sum() > 0
    rows, grid, bits = m.symbols(x.detach())
    assert rows.shape == (3, 2 * 4 * 4) and grid == [2, 4, 4] and bits > 0
    assert rows.min() >= 0 and rows.max() <= 12
    with torch.no_grad():
        direct = m.decoder(m.codes(m.latents(x)).float().permute(0, 3, 1, 2))
    torch.testing.assert_close(m.from_symbols(rows, grid), direct)


@pytest.mark.parametrize("stages", [1, 2])
def test_the_ema_quantiser_trains_with_the_codes_coding_picks_and_the_rate_they_cost(stages):
    m = _model(stages=stages, quantiser="ema", ema_decay=0.5)
    x = torch.rand(8, 1, 16, 16)
    m.init_codebooks(x)
    z = m.vectors(x)
    zq, picks, rate = m.quantise(z, tau=0.5)
    zc, codes, coded = m.quantise(z)  # coding: argmax
    assert torch.allclose(zq, zc) and all(torch.equal(p.argmax(-1), k) for p, k in zip(picks, codes))
    assert torch.allclose(rate, coded)  # the rate's value is -log2 p(k) of the picked codes, what the coder spends
    (zq.sum() + rate.sum() + m.commitment).backward()
    assert m.encoder[0].weight.grad.abs().sum() > 0 and m.codebooks.grad is None
    before = m.codebooks.clone()
    m.after_optimizer_step()  # online k-means: each used code moves towards the mean of its vectors
    assert not torch.equal(before, m.codebooks)
    p = torch.softmax(m.prior_logits, -1)
    assert torch.allclose(p, m.ema_count / m.ema_count.sum(-1, keepdim=True), atol=1e-4)  # frequencies = counts


def test_the_code_posterior_is_the_responsibility_of_an_isotropic_gaussian_mixture():
    """softmax_k(-||z - c_k||^2 * sharpness) is Bayes' rule for z ~ sum_k (1/K) N(c_k, I / (2 sharpness))."""
    from torch.distributions import MultivariateNormal

    m = _model()
    with torch.no_grad():
        m.log_sharpness.fill_(0.7)
    z = torch.randn(5, 2, 4)  # 5 vectors, m = 2 groups of 4
    q = torch.softmax(m.logits(z, 0), -1)  # [5, 2, K]
    var = 1 / (2 * m.log_sharpness.exp().detach())
    for g in range(2):
        log_lik = MultivariateNormal(m.codebooks[0, g].detach(), var * torch.eye(4)).log_prob(z[:, g, None])  # [5, K]
        torch.testing.assert_close(q[:, g].detach(), torch.softmax(log_lik, -1), atol=1e-5, rtol=0)


def test_the_usage_penalty_is_the_gap_beyond_a_margin_of_log_k_minus_the_entropy_of_scale_free_soft_usage():
    m = _model(quantiser="ema", usage_margin=0.0)
    x = torch.rand(8, 1, 16, 16)
    m.init_codebooks(x)
    z = m.vectors(x)

    def gaps(z, codebooks):  # log2 K - H(mean softmax(-||z - c_k||^2 / each group's mean error)), per codebook
        d2 = (z[..., None, :] - codebooks).pow(2).sum(-1).reshape(-1, 2, 16)
        q = torch.softmax(-d2 / d2.min(-1).values.mean(0)[:, None], -1).mean(0)
        return np.log2(16) + (q * q.log2()).sum(-1)

    m.quantise(z, tau=0.5)
    with torch.no_grad():
        expected = gaps(z, m.codebooks[0])
    torch.testing.assert_close(m.usage_gap.detach(), expected.mean())
    assert 0 < float(m.usage_gap.detach()) <= np.log2(16)
    m.usage_gap.backward()
    assert m.encoder[0].weight.grad.abs().sum() > 0  # the vectors move to spread the usage
    assert m.log_sharpness.grad is None or float(m.log_sharpness.grad.abs()) == 0  # not by blurring q
    with torch.no_grad():
        m.codebooks.mul_(3.0)  # a group's scale does not hide its skew
        m.quantise(3.0 * z, tau=0.5)
        torch.testing.assert_close(m.usage_gap, expected.mean())
        m.config.usage_margin = float(expected.min() + expected.max()) / 2  # only the codebook over the margin counts
        m.quantise(3.0 * z, tau=0.5)
        torch.testing.assert_close(m.usage_gap, (expected - m.config.usage_margin).clamp_min(0).mean())
        assert float(m.usage_gap) > 0
