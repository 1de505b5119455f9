"""Sparse autoencoders (varilab.models.sae) and their health metrics (varilab.diagnostics.sae)."""
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from varilab.diagnostics.sae import (FVU_WARNING, Firing, explained_variance, feature_density, fraction_alive,
                                     fraction_of_variance_unexplained, l0, log10_density,
                                     relative_reconstruction_bias, sae_health)
from varilab.models.sae import (SAE, SAEConfig, geometric_median, kl_weight, warmup_steps, normalize_decoder,
                                remove_parallel_grad, sparse_decode, topk_encode, train_step)


def make(kind="topk", d=16, features=64, k=4, seed=0, **options) -> SAE:
    torch.manual_seed(seed)
    return SAE(SAEConfig(d=d, features=features, k=k, kind=kind, **options))


def data(n=256, d=16, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) + 0.5


# ---- sparsity --------------------------------------------------------------------------------------

def test_topk_keeps_exactly_k_per_token():
    model = make(k=5)
    x = data()
    model.init_from_data(x)
    z = model.encode(x)
    assert z.shape == (256, 64)
    assert ((z != 0).sum(1) == 5).all()
    assert (z >= 0).all()
    pre = torch.relu((x - model.b_dec) @ model.W_enc.T + model.b_enc)
    kept = pre.topk(5, dim=1).values
    assert torch.allclose(z.sort(1, descending=True).values[:, :5], kept, atol=1e-6)  # the 5 largest, unchanged


def test_batchtopk_keeps_exactly_k_times_batch_and_learns_a_threshold():
    model = make("batchtopk", k=3)
    x = data(128)
    model.init_from_data(x)
    z = model.encode(x)  # training mode: top k * B over the batch
    assert int((z != 0).sum()) == 3 * 128
    assert (z != 0).sum(1).float().std() > 0  # not k per token
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(3):
        train_step(model, opt, data(128, seed=10 + step))
    theta = float(model.threshold)
    assert theta > 0
    model.eval()
    z = model.encode(x)
    a = torch.relu((x - model.b_dec) @ model.W_enc.T + model.b_enc)
    assert torch.equal(z, a * (a > theta))  # inference: ReLU(pre) above the threshold


def test_relu_sae_l1_is_weighted_by_decoder_norms():
    model = make("relu")
    x = data(32)
    with torch.no_grad():
        model.W_dec.mul_(2.0)  # columns of norm 2
    out = model.loss(x)
    z = model.encode(x)
    assert math.isclose(float(out["l1"]), float(2.0 * z.detach().sum(1).mean()), rel_tol=1e-5)
    assert math.isclose(float(out["loss"].detach()), float(out["recon"] + model.config.l1_coef * out["l1"]), rel_tol=1e-6)


# ---- decoder geometry ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["topk", "batchtopk", "relu", "vsae"])
def test_decoder_columns_stay_unit_norm_after_each_step(kind):
    model = make(kind)
    x = data()
    model.init_from_data(x)
    assert torch.allclose(model.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)
    assert torch.equal(model.W_enc, model.W_dec)  # encoder starts as the decoder's transpose ([F, d] both)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(5):
        before = model.W_dec.detach().clone()
        train_step(model, opt, x[step * 50:(step + 1) * 50], step, 5)
        assert not torch.equal(model.W_dec, before)
        assert torch.allclose(model.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)


def test_free_decoder_norms_follow_the_plain_gradient_step():
    """decoder_norm="free": no projection, no renormalisation; the step is Adam's own (checked against a copy
    stepped by hand), and the column norms leave 1."""
    model = make("vsae", decoder_norm="free", vsae_encoder="linear")
    x = data()
    model.init_from_data(x)
    twin = make("vsae", decoder_norm="free", vsae_encoder="linear")
    twin.load_state_dict(model.state_dict())
    opt, opt_twin = (torch.optim.Adam(m.parameters(), lr=1e-2) for m in (model, twin))
    train_step(model, opt, x[:50], 0, 5)
    opt_twin.zero_grad()
    twin.loss(x[:50], 0, 5)["loss"].backward()
    opt_twin.step()  # no hooks at all
    assert torch.allclose(model.W_dec, twin.W_dec, atol=1e-7)
    assert not torch.allclose(model.W_dec.norm(dim=1), torch.ones(64), atol=1e-4)


def test_remove_parallel_grad_leaves_only_the_orthogonal_part():
    model = make()
    g = torch.randn_like(model.W_dec)
    model.W_dec.grad = g.clone()
    remove_parallel_grad(model)
    dots = (model.W_dec.grad * model.W_dec).sum(1)
    assert dots.abs().max() < 1e-6
    parallel = (g * model.W_dec).sum(1, keepdim=True) * model.W_dec
    assert torch.allclose(model.W_dec.grad + parallel, g, atol=1e-6)
    with torch.no_grad():
        model.W_dec.mul_(torch.rand(64, 1) + 0.5)
    normalize_decoder(model)
    assert torch.allclose(model.W_dec.norm(dim=1), torch.ones(64), atol=1e-6)


# ---- vSAE ------------------------------------------------------------------------------------------

def test_vsae_fixed_variance_kl_is_half_squared_norm_of_mu():
    model = make("vsae")
    x = data(32)
    with torch.no_grad():
        mu = torch.relu((x - model.b_dec) @ model.W_enc.T + model.b_enc)
        t = model.terms(x)
    assert math.isclose(float(t["kl"]), float(0.5 * mu.pow(2).sum(1).mean()), rel_tol=1e-6)


def test_vsae_unselected_latent_gets_no_recon_gradient_and_exactly_kappa_mu_from_kl():
    kappa = 0.37
    model = make("vsae", kl_coef=kappa)
    with torch.no_grad():
        model.b_enc.normal_(0.0, 0.3)
    x = data(1)  # one token: the KL gradient on b_enc[j] is kappa * mu_j itself, not a batch mean
    mu = torch.relu((x - model.b_dec) @ model.W_enc.T + model.b_enc).detach()[0]
    chosen = set(mu.topk(4).indices.tolist())
    unselected = [j for j in range(64) if j not in chosen and mu[j] > 0]
    assert len(unselected) > 5
    t = model.terms(x)
    g_rec, = torch.autograd.grad(t["recon"], model.b_enc, retain_graph=True)
    g_kl, = torch.autograd.grad(kappa * t["kl"], model.b_enc, retain_graph=True)
    g_all, = torch.autograd.grad(model.loss(x)["loss"], model.b_enc)
    for j in unselected:
        assert g_rec[j] == 0.0
        assert g_kl[j] == kappa * mu[j]
        assert g_all[j] == kappa * mu[j]
    assert all(g_rec[j] != 0 for j in chosen)


def test_linear_vsae_encoder_keeps_signs_and_the_kl_reaches_every_latent():
    """With mu = pre (no ReLU) the codes are the k largest |mu| with their signs, and the KL gradient
    kappa * mu_j reaches every unselected latent, negative ones included (ReLU would stop it at 0)."""
    kappa = 0.5
    model = make("vsae", kl_coef=kappa, vsae_encoder="linear")
    with torch.no_grad():
        model.b_enc.normal_(0.0, 0.3)
    x = data(1)
    pre = ((x - model.b_dec) @ model.W_enc.T + model.b_enc).detach()[0]
    chosen = pre.abs().topk(4).indices
    z = model.encode(x)[0].detach()
    assert torch.equal(z.nonzero().flatten().sort().values, chosen.sort().values)
    assert torch.allclose(z[chosen], pre[chosen]) and (z[chosen] < 0).any()  # signed codes
    g_kl, = torch.autograd.grad(kappa * model.terms(x)["kl"], model.b_enc)
    assert torch.allclose(g_kl, kappa * pre, rtol=1e-5, atol=1e-7)  # every latent, of either sign
    with pytest.raises(ValueError, match="vsae_encoder"):
        make("vsae", vsae_encoder="gelu")


def test_topk_on_abs_z_equals_topk_on_z_when_nonnegative():
    z = torch.relu(torch.randn(50, 40, generator=torch.Generator().manual_seed(3)))
    a, b = z.abs().topk(6, dim=1), z.topk(6, dim=1)
    assert torch.equal(a.indices.sort(1).values, b.indices.sort(1).values)
    assert torch.equal(a.values, b.values)
    model = make("vsae", k=6)
    x = data(50)
    with torch.no_grad():
        mu = torch.relu((x - model.b_dec) @ model.W_enc.T + model.b_enc)
        v, i = mu.topk(6, dim=1)
        assert torch.equal(model.encode(x), torch.zeros_like(mu).scatter(1, i, v))


def test_vsae_learned_variance_kl_matches_the_gaussian_closed_form():
    model = make("vsae", vsae_variance="learned")
    with torch.no_grad():
        model.W_logvar.normal_(0.0, 0.1)
    x = data(16)
    with torch.no_grad():
        x_c = x - model.b_dec
        mu = torch.relu(x_c @ model.W_enc.T + model.b_enc)
        log_var = x_c @ model.W_logvar.T + model.b_logvar
        expected = kl_divergence(Normal(mu, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(1).mean()
        kl = model.terms(x)["kl"]
    assert math.isclose(float(kl), float(expected), rel_tol=1e-5)
    model.eval()
    assert ((model.encode(x) != 0).sum(1) == 4).all()  # z = mu at inference: deterministic codes
    assert torch.equal(model.encode(x), model.encode(x))


def test_kappa_warmup_is_linear_over_the_first_tenth_of_steps():
    total, kappa = 1000, 2.0
    warm = warmup_steps(SAEConfig(d=4, kind="vsae"), total)
    assert warm == 100 and warmup_steps(SAEConfig(d=4, kind="vsae", kl_warmup_steps=30), total) == 30
    for step in range(0, 101, 5):
        assert math.isclose(kl_weight(step, warm, kappa), kappa * step / 100, rel_tol=1e-12, abs_tol=1e-15)
    assert kl_weight(100, warm, kappa) == kappa
    assert kl_weight(700, warm, kappa) == kappa
    assert kl_weight(None, None, kappa) == kappa
    model = make("vsae", kl_coef=kappa)
    x = data(8)
    assert model.loss(x, step=25, total_steps=total)["kappa"] == 0.5
    out = model.loss(x, step=50, total_steps=total)
    assert math.isclose(float(out["loss"].detach()), float(out["recon"] + 1.0 * out["kl"]), rel_tol=1e-6)


# ---- geometric median ------------------------------------------------------------------------------

def test_geometric_median_beats_the_mean_with_outliers_and_matches_a_known_case():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(200, 5, generator=g), 50 + torch.randn(10, 5, generator=g)])
    med = geometric_median(x, iters=200)
    cost = lambda y: float((x - y).norm(dim=1).sum())  # noqa: E731
    assert cost(med) < cost(x.mean(0)) - 1.0
    assert med.norm() < 1.0  # the bulk, not the outliers (the mean is near 2.4 * (1, ..., 1))
    # four points of a convex quadrilateral: the median is where the diagonals cross, (4/7, 12/7)
    quad = torch.tensor([[0.0, 0.0], [4.0, 0.0], [1.0, 3.0], [0.0, 2.0]], dtype=torch.float64)
    assert torch.allclose(geometric_median(quad, iters=2000, eps=1e-12),
                          torch.tensor([4 / 7, 12 / 7], dtype=torch.float64), atol=1e-6)


def test_init_from_data_puts_b_dec_at_the_geometric_median_and_normalises():
    x = data(300) * 7.0
    model = make(input_norm="d")
    model.init_from_data(x)
    s = float(model.input_scale)
    assert math.isclose(float((s * x).pow(2).sum(1).mean()), 16.0, rel_tol=1e-5)  # E||s x||^2 = d
    assert torch.allclose(model.b_dec, geometric_median(s * x), atol=1e-5)
    twin = make(input_norm="d")  # same weights (same seed), fitted to data 100 times larger
    twin.init_from_data(100 * x)
    with torch.no_grad():
        assert torch.allclose(twin(100 * x), 100 * model(x), rtol=1e-4, atol=1e-3)  # x_hat in input units
    unit = make(input_norm="unit")
    unit.init_from_data(x)
    assert math.isclose(float((unit.input_scale * x).pow(2).sum(1).mean()), 1.0, rel_tol=1e-5)  # E||s x||^2 = 1
    plain = make()
    plain.init_from_data(x)
    assert float(plain.input_scale) == 1.0


def test_init_norm_sets_both_weight_norms_and_grad_clip_bounds_the_step():
    model = make("vsae", init_norm=0.1, grad_clip=0.5, decoder_norm="free")
    assert torch.allclose(model.W_dec.norm(dim=1), torch.full((64,), 0.1), atol=1e-6)
    assert torch.equal(model.W_enc, model.W_dec)  # the encoder still starts as the decoder's transpose
    x = 50 * data(64)  # large inputs: an unclipped gradient norm far above 0.5
    model.loss(x)["loss"].backward()
    raw = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    assert raw > 5.0
    model.before_optimizer_step()
    clipped = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    assert math.isclose(float(clipped), 0.5, rel_tol=1e-4)  # g <- g * 0.5 / ||g||


# ---- AuxK ------------------------------------------------------------------------------------------

def _planted(seed=0, atoms=128, d=32):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(atoms, d, generator=g)
    return A / A.norm(dim=1, keepdim=True), g


def _tokens(A, g, n, active=4):
    """Each token a positive combination of `active` planted atoms, coefficients in [0.5, 1.5]."""
    idx = torch.rand(n, len(A), generator=g).topk(active, dim=1).indices
    c = torch.zeros(n, len(A)).scatter(1, idx, 0.5 + torch.rand(n, active, generator=g))
    return c @ A


def _train_planted(aux_coef, steps=1000):
    """TopK SAE (F = 128 = number of atoms, k = 4) from a crowded start: every decoder column begins within
    ~14 degrees of one direction u, so most latents lose every top-k race and die within the window.
    Adam's beta2 = 0.99 so that, in so short a run, a freshly dead latent's small AuxK gradient is not
    damped by the second-moment memory of its large gradients while alive."""
    A, g = _planted()
    torch.manual_seed(0)
    model = SAE(SAEConfig(d=32, features=128, k=4, aux_coef=aux_coef, dead_window_tokens=2048))
    with torch.no_grad():
        u = torch.randn(32)
        W = model.W_dec + 4.0 * u / u.norm()  # cos(d_j, u) ~ 4 / sqrt(17)
        W = W / W.norm(dim=1, keepdim=True)
        model.W_dec.copy_(W)
        model.W_enc.copy_(W)
    model.init_from_data(_tokens(A, g, 2048))
    opt = torch.optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.99))
    for step in range(steps):
        train_step(model, opt, _tokens(A, g, 256))
    recovery = float((A @ model.W_dec.detach().T).max(1).values.mean())  # mean_i max_j cos(a_i, d_j)
    return model, recovery, _tokens(A, g, 4096)


def test_auxk_revives_dead_latents_and_recovers_the_planted_dictionary():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same numbers on every machine
    try:
        with_aux, rec_aux, x_test = _train_planted(1 / 32)
        without, rec_plain, _ = _train_planted(0.0)
    finally:
        torch.set_num_threads(threads)
    alive_aux = fraction_alive(with_aux.tokens_since_fired, 2048)
    alive_plain = fraction_alive(without.tokens_since_fired, 2048)
    assert alive_aux > alive_plain + 0.3, (alive_aux, alive_plain)
    assert rec_aux > 0.9, rec_aux
    assert rec_plain < 0.9, rec_plain  # without AuxK the dead latents never learn their atoms
    health = sae_health(with_aux, x_test, window_tokens=2048)
    assert health["fraction_alive"] > sae_health(without, x_test, window_tokens=2048)["fraction_alive"]
    assert health["fvu"] < 0.3 and health["warning"] is None


# ---- the sparse TopK path against the dense reference ----------------------------------------------

def test_sparse_topk_gradients_match_the_dense_reference():
    torch.manual_seed(0)
    B, d, F, k = 64, 32, 256, 8
    model = SAE(SAEConfig(d=d, features=F, k=k, dead_window_tokens=100))
    x = torch.randn(B, d) * 2 + 1
    model.init_from_data(x)
    with torch.no_grad():
        model.b_enc.normal_(-0.2, 0.1)
        model.W_dec.add_(0.1 * torch.randn(F, d))  # columns off unit norm: the general case
        x[0] = model.b_dec  # pre = b_enc: fewer than k positive, so some chosen values are ReLU zeros
    model.tokens_since_fired[::3] = 1000  # a third of the latents dead: AuxK is on
    out = model.loss(x)
    assert 0 < int((model.encode(x)[0] != 0).sum()) < k
    params = [model.W_enc, model.b_enc, model.W_dec, model.b_dec]
    sparse = torch.autograd.grad(out["loss"], params)

    W_enc, b_enc, W_dec, b_dec = params
    pre = torch.relu((x - b_dec) @ W_enc.T + b_enc)  # dense reference, autograd throughout
    v, i = pre.topk(k, dim=1)
    x_hat = torch.zeros_like(pre).scatter(1, i, v) @ W_dec + b_dec
    e = x - x_hat
    dead = torch.zeros(F, dtype=torch.bool)
    dead[::3] = True
    va, ia = pre.masked_fill(~dead, -1.0).topk(2 * k, dim=1)
    e_hat = torch.zeros_like(pre).scatter(1, ia, va) @ W_dec
    recon, aux = e.pow(2).sum(1).mean(), (e.detach() - e_hat).pow(2).sum(1).mean()
    dense = torch.autograd.grad(recon + aux / 32, params)
    assert math.isclose(float(out["recon"]), float(recon.detach()), rel_tol=1e-5)
    assert math.isclose(float(out["aux"]), float(aux.detach()), rel_tol=1e-5) and float(aux.detach()) > 0
    assert out["dead"] == len(range(0, F, 3)) and 0 < out["aux_latents"] <= out["dead"]
    for name, a, b in zip(["W_enc", "b_enc", "W_dec", "b_dec"], sparse, dense):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5), (name, float((a - b).abs().max()))


def test_sparse_decode_and_encode_gradients_in_double_precision():
    gen = torch.Generator().manual_seed(0)
    args = [torch.randn(*s, generator=gen, dtype=torch.float64, requires_grad=True) for s in [(5, 4), (4,), (12, 4), (12,)]]
    W_dec = torch.randn(12, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, b, W, c, D: sparse_decode(*topk_encode(x, b, W, c, 3), D), [*args, W_dec])


@pytest.mark.parametrize("kind", ["topk", "batchtopk", "vsae"])
def test_bf16_autocast_forward_gives_float32_gradients(kind):
    model = make(kind, dead_window_tokens=10)
    model.tokens_since_fired[::2] = 100  # AuxK on for the TopK kinds
    x = data(32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.loss(x)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and all(p.grad.dtype == torch.float32 for p in model.parameters())


def test_dead_latent_counter_is_token_exact_and_agrees_with_the_diagnostics():
    """One definition of a dead latent, in tokens: tokens since its last firing (a latent that fired on the last
    token has 0; one that never fired counts every token), dead when that reaches the window. Training's
    counter and diagnostics.sae.Firing count the same, also when a last firing falls inside a batch."""
    from varilab.diagnostics.sae import Firing

    model = make(features=64, k=2)
    x = data(300)
    model.init_from_data(x)
    firing = Firing(64)
    for xb in x.split(100):
        model.loss(xb)
        firing.update(model.encode(xb))
    assert torch.equal(model.tokens_since_fired, firing.since)
    inside = firing.fired & (firing.since % 100 != 0) & (firing.since > 0)
    assert inside.any()  # last firings that straddle a batch boundary are counted to the token
    window = int(firing.since[inside][0])  # a window ending exactly at such a latent's last firing
    assert torch.equal(model.tokens_since_fired >= window, ~firing.alive(window))
    assert torch.equal(model.batches_since_fired, firing.batches_since)  # sae-lens's count, batch by batch
    before = model.tokens_since_fired.clone()
    model.eval()
    model.loss(x)
    assert torch.equal(model.tokens_since_fired, before)  # eval mode leaves it alone


def test_config_errors_name_the_choices():
    with pytest.raises(ValueError, match="topk, batchtopk, relu, vsae"):
        SAE(SAEConfig(d=4, kind="jumprelu"))
    with pytest.raises(ValueError, match=r"k must be in \[1, features=8\]"):
        SAE(SAEConfig(d=4, features=8, k=9))
    with pytest.raises(ValueError, match=r"\[B, d=4\]"):
        make(d=4).encode(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="none, d, unit"):
        SAE(SAEConfig(d=4, input_norm="l2"))
    with pytest.raises(ValueError, match="init_norm and grad_clip must be positive"):
        SAE(SAEConfig(d=4, grad_clip=0.0))
    with pytest.raises(ValueError, match="decoder_norm must be 'unit' or 'free'"):
        SAE(SAEConfig(d=4, decoder_norm="tied"))


# ---- health metrics --------------------------------------------------------------------------------

def test_fvu_and_explained_variance_by_hand():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0]])  # mean (2, 2); sum ||x - mean||^2 = 1 + 5 + 4 = 10
    assert float(fraction_of_variance_unexplained(x, x.mean(0).expand_as(x))) == pytest.approx(1.0)
    assert float(fraction_of_variance_unexplained(x, x)) == 0.0
    x_hat = x + torch.tensor([[1.0, 0.0], [0.0, -1.0], [1.0, 1.0]])  # squared error 1 + 1 + 2 = 4
    assert float(fraction_of_variance_unexplained(x, x_hat)) == pytest.approx(4 / 10)
    assert float(explained_variance(x, x_hat)) == pytest.approx(6 / 10)


def test_relative_reconstruction_bias_is_the_shrinkage_factor():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 4.0]])
    assert float(relative_reconstruction_bias(x, 0.6 * x)) == pytest.approx(0.6)
    # gamma = sum ||x_hat||^2 / sum x_hat . x; here x_hat = (x_1, 0): (1 + 9 + 4) / (1 + 9 + 4) = 1, unbiased
    assert float(relative_reconstruction_bias(x, x * torch.tensor([1.0, 0.0]))) == pytest.approx(1.0)
    assert sae_health(_Fixed(lambda z: 0.6 * z), x, window_tokens=2)["relative_reconstruction_bias"] == pytest.approx(0.6)


def test_l0_density_and_fraction_alive_by_hand():
    z = torch.tensor([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 3.0], [5.0, 1.0, 0.0, 1.0]])
    assert float(l0(z)) == pytest.approx((2 + 1 + 3) / 3)
    assert torch.allclose(feature_density(z), torch.tensor([1 / 3, 2 / 3, 0.0, 1.0]))
    assert torch.allclose(log10_density(feature_density(z)), torch.tensor([math.log10(1 / 3), math.log10(2 / 3), -10.0, 0.0]))
    assert fraction_alive(torch.tensor([0, 5, 10, 99]), window=10) == 0.5


def test_firing_streams_tokens_since_last_fired():
    f = Firing(3)
    f.update(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    f.update(torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    assert f.tokens == 5
    assert f.since.tolist() == [4, 1, 5]
    assert f.counts.tolist() == [1, 2, 0]
    assert f.fired.tolist() == [True, True, False]
    assert f.fraction_alive(window=2) == pytest.approx(1 / 3)
    assert f.fraction_alive(window=5) == pytest.approx(2 / 3)
    assert f.fraction_alive(window=100) == pytest.approx(2 / 3)  # never fired is dead, whatever the window


class _Fixed(torch.nn.Module):
    """A stand-in SAE: codes are the input (first d latents) and the reconstruction is `out(z)`."""

    def __init__(self, out):
        super().__init__()
        self.out = out

    def encode(self, x):
        return torch.cat([x, torch.zeros(len(x), 2)], 1)

    def decode(self, z):
        return self.out(z[:, :-2])


def test_sae_health_reports_and_warns():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    perfect = sae_health(_Fixed(lambda z: z), x, window_tokens=2, batch_size=2)
    assert perfect["fvu"] == 0.0 and perfect["explained_variance"] == 1.0 and perfect["warning"] is None
    assert perfect["l0"] == pytest.approx(4 / 5)
    assert perfect["density"].tolist() == pytest.approx([3 / 5, 1 / 5, 0.0, 0.0])
    assert perfect["fraction_alive"] == 0.25  # latent 0 fired in the last 2 tokens, 1 three tokens ago, 2 and 3 never
    assert perfect["dead"] == 3 and perfect["tokens"] == 5
    far = sae_health(_Fixed(lambda z: z + 10.0), x + 0.0, window_tokens=10)  # offset: worse than the mean
    assert far["fvu"] > 1 and far["warning"] == FVU_WARNING
    model = make(d=2, features=8, k=2)
    model.train()
    sae_health(model, x, window_tokens=5)
    assert model.training and int(model.tokens_since_fired.sum()) == 0  # mode restored, no counting


def test_a_last_firing_that_straddles_the_window_is_dead_by_tokens_and_alive_by_sae_lens_batches():
    """The planted stream (tests/planted_sae.py): training's counters and the diagnostics' Firing give the same
    dead latents, token-exact [1, 3, 5] and sae-lens's batch count [3, 5]."""
    from planted_sae import BATCH, DEAD_SAE_LENS, DEAD_TOKENS, LENS_WINDOW, WINDOW, planted_sae, stream

    from varilab.diagnostics.sae import Firing

    model, firing = planted_sae().train(), Firing(6)
    for xb in stream().split(BATCH):
        model.loss(xb)
        firing.update(model.encode(xb))
    assert model.dead_latents().nonzero().flatten().tolist() == DEAD_TOKENS
    assert (~firing.alive(WINDOW)).nonzero().flatten().tolist() == DEAD_TOKENS
    assert model.tokens_since_fired.tolist() == [1, 20, 19, 80, 0, 49]
    assert model.dead_latents_sae_lens(LENS_WINDOW).nonzero().flatten().tolist() == DEAD_SAE_LENS
    assert firing.dead_sae_lens(LENS_WINDOW).nonzero().flatten().tolist() == DEAD_SAE_LENS
    assert model.batches_since_fired.tolist() == [0, 2, 2, 10, 0, 6]


def test_weights_saved_before_the_batch_counter_load_with_it_unknown(tmp_path):
    from safetensors.torch import save_file

    from varilab.checkpoint import load_weights

    model = make(features=16, k=2)
    old = {k: v for k, v in model.state_dict().items() if k != "batches_since_fired"}
    save_file(old, tmp_path / "old.safetensors")
    loaded = make(features=16, k=2)
    load_weights(tmp_path / "old.safetensors", loaded)
    assert (loaded.batches_since_fired == -1).all() and loaded.dead_latents_sae_lens(10) is None
    loaded.train()
    loaded.loss(data(50))
    assert (loaded.batches_since_fired == -1).all()  # still unknown after more training, never a wrong count
    assert torch.equal(loaded.W_enc, model.W_enc)


class _Foreign:
    """An SAE varilab did not train, not even an nn.Module: encode and decode only. On the one-hot planted stream
    (tests/planted_sae.py) latent j fires exactly on the tokens x_n = e_j."""

    def encode(self, x):
        return torch.relu(x)

    def decode(self, z):
        return z


def test_sae_health_counts_dead_latents_as_sae_lens_does_for_an_sae_varilab_did_not_train():
    """sae_health(model, batches, sae_lens_window=W) gives sae-lens's dead mask for any object with encode and decode,
    the mask varilab's own training counter gives on the same batches (a run's `diagnose --sae-lens-window`)."""
    from planted_sae import BATCH, DEAD_SAE_LENS, DEAD_TOKENS, LENS_WINDOW, WINDOW, planted_sae, stream

    batches = list(stream().split(BATCH))
    own = planted_sae()
    for xb in batches:  # varilab's training counter, as a run keeps it
        own.loss(xb)
    expected = own.dead_latents_sae_lens(LENS_WINDOW)
    for x in (stream(), batches):  # activations split into batches of batch_size, or the batches themselves
        h = sae_health(_Foreign(), x, window_tokens=WINDOW, batch_size=BATCH, sae_lens_window=LENS_WINDOW)
        assert torch.equal(h["dead_sae_lens_mask"], expected)
        assert h["dead_sae_lens_mask"].nonzero().flatten().tolist() == DEAD_SAE_LENS and h["dead_sae_lens"] == 2
        assert h["sae_lens_window_batches"] == LENS_WINDOW and h["batch_tokens"] == BATCH
        assert h["dead"] == len(DEAD_TOKENS) and h["fvu"] == 0.0  # the token window's count, beside it
    assert "dead_sae_lens" not in sae_health(_Foreign(), stream(), window_tokens=WINDOW)  # only when asked
    with pytest.raises(ValueError, match=r"sae_lens_window must be a number of batches >= 0, got -1"):
        sae_health(_Foreign(), stream(), sae_lens_window=-1)
    with pytest.raises(TypeError, match=r"sae_health needs encode\(x\) and decode\(z\); Linear has no encode"):
        sae_health(torch.nn.Linear(6, 6), stream())
