"""The point-cloud VAE and the Squeeze3D mapping networks (issue 34): shapes, the closed-form KL, a tiny AE overfits,
linear E and G are inverted exactly by least squares, and the code is `bits` integer bits with a straight-through
gradient."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from varilab.core.chamfer import chamfer
from varilab.models.pointcloud import (PointCloudAE, PointCloudAEConfig, Squeeze3D, Squeeze3DConfig, fit_linear_maps,
                                       pointcloud_ae_loss, squeeze3d_loss, trainer_loss)


def small_ae(seed=0, points=64, latent=4, width=64, beta=1e-3):
    torch.manual_seed(seed)
    return PointCloudAE(PointCloudAEConfig(points=points, latent=latent, width=width, beta=beta))


def test_encode_decode_and_sample_shapes():
    model = small_ae()
    x = torch.randn(5, 100, 3)  # any number of input points
    q = model.encode(x)
    assert q.batch_shape == (5,) and q.event_shape == (4,)
    assert model.decode(q.rsample()).shape == (5, 64, 3)
    a = model.sample(3, torch.Generator().manual_seed(1))
    b = model.sample(3, torch.Generator().manual_seed(1))
    assert a.shape == (3, 64, 3) and torch.equal(a, b)
    assert torch.allclose(model.encode(x[:, torch.randperm(100)]).mean, q.mean, atol=1e-6)  # order invariant
    with pytest.raises(ValueError, match=r"\[B, N, 3\]"):
        model.encode(torch.randn(5, 100, 2))
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        model.decode(torch.randn(5, 3))


def test_kl_matches_the_closed_form_against_the_standard_normal():
    model = small_ae()
    x = torch.randn(6, 32, 3)
    q = model.encode(x)
    mu, var = q.mean, q.variance
    closed = 0.5 * (mu.pow(2) + var - var.log() - 1).sum(-1)  # KL(N(mu, var) || N(0, I))
    r = pointcloud_ae_loss(model, x)
    assert torch.allclose(r["kl"], closed.mean(), rtol=1e-5, atol=1e-6)


def test_a_tiny_autoencoder_overfits_four_clouds():
    torch.manual_seed(0)
    clouds = torch.randn(4, 64, 3) * torch.tensor([1.0, 0.5, 0.2])  # four fixed anisotropic clouds
    model = small_ae(beta=1e-4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        before = chamfer(clouds, model.decode(model.encode(clouds).mean)).mean()
    for _ in range(200):
        opt.zero_grad()
        trainer_loss(model, clouds.flatten(1))["loss"].backward()  # rows as `fit` hands them
        opt.step()
    with torch.no_grad():
        after = chamfer(clouds, model.decode(model.encode(clouds).mean)).mean()
    print(f"Chamfer {float(before):.4f} -> {float(after):.4f}")
    assert after < before / 10, (float(before), float(after))


def test_least_squares_inverts_linear_encoder_and_generator_exactly():
    """G(l) = A l + a (as 8 points), E(x) = C x + d; e = C A l + C a + d; C A has full column rank, so the
    least-squares affine map e -> l recovers l (no quantisation)."""
    g = torch.Generator().manual_seed(0)
    k, e_dim, points, n = 4, 6, 8, 64
    randn = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    A, a = randn(points * 3, k), randn(points * 3)
    C, d = randn(e_dim, points * 3), randn(e_dim)
    assert torch.linalg.matrix_rank(C @ A) == k
    l = randn(n, k)
    obj = (l @ A.T + a).unflatten(1, (points, 3))  # G(l)  [n, 8, 3]
    e = obj.flatten(1) @ C.T + d  # E(G(l))  [n, 6]
    W, b = fit_linear_maps(e, l)
    residual = (e @ W + b - l).abs().max()
    assert residual < 1e-8, float(residual)
    l_new = randn(16, k)  # and on latents it was not fitted on
    e_new = (l_new @ A.T + a) @ C.T + d
    assert (e_new @ W + b - l_new).abs().max() < 1e-8


def squeeze(bits=16, code_dims=4, chamfer_weight=0.0):
    encoder, generator = small_ae(seed=1), small_ae(seed=2)
    torch.manual_seed(3)
    return Squeeze3D(Squeeze3DConfig(bits=bits, code_dims=code_dims, hidden=32, chamfer_weight=chamfer_weight),
                     encoder, generator)


@pytest.mark.parametrize("bits, code_dims", [(16, 4), (8, 4), (12, 3), (32, 4)])
def test_symbols_are_integers_in_range_and_count_bits(bits, code_dims):
    model = squeeze(bits, code_dims)
    per_dim = model.config.bits_per_dim
    assert per_dim * code_dims == bits and model.levels == 2 ** per_dim
    e = torch.randn(200, 4) * 5  # spread, so the sigmoid reaches both ends
    s = model.to_symbols(e)
    assert s.dtype == torch.long and s.shape == (200, code_dims)
    assert s.min() >= 0 and s.max() < 2 ** per_dim
    x = torch.randn(7, 50, 3)
    symbols = model.compress(x)
    assert symbols.dtype == torch.long and symbols.shape == (7, code_dims)
    assert torch.equal(model.decompress(symbols), model.decompress(symbols))
    assert torch.equal(model.compress(x), symbols)
    assert model.decompress(symbols).shape == (7, 64, 3)


def test_bits_must_split_evenly_and_symbols_are_checked():
    with pytest.raises(ValueError, match="multiple of code_dims"):
        squeeze(bits=10, code_dims=4)
    model = squeeze()
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        model.from_symbols(torch.tensor([[0, 1, 2, 16]]))
    with pytest.raises(ValueError, match="integers"):
        model.from_symbols(torch.zeros(1, 4))


def test_quantiser_forwards_bin_centres_and_passes_the_gradient_straight_through():
    model = squeeze()
    e = torch.randn(9, 4)
    q = model.quantise(e)
    assert torch.allclose(q, (model.to_symbols(e) + 0.5) / 16)  # Q(u) = (s + 1/2) / L
    assert torch.allclose(model.g(q), model.from_symbols(model.to_symbols(e)))
    r = squeeze3d_loss(model, model.draw_latents(16, torch.Generator().manual_seed(0)))
    r["loss"].backward()
    grads = [p.grad for p in model.f.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in grads)
    assert sum(float(gr.abs().sum()) for gr in grads) > 0  # floor alone would give zero
    assert all(p.grad is None for p in [*model.encoder.parameters(), *model.generator.parameters()])  # frozen


class LinearEncoder(nn.Module):
    """E(x) = N(C vec(x) + d, I): any module with `encode(x) -> Distribution` and `config.latent` serves as E."""

    def __init__(self, points, latent):
        super().__init__()
        self.config = SimpleNamespace(latent=latent)
        self.map = nn.Linear(points * 3, latent)

    def encode(self, x):
        return Independent(Normal(self.map(x.flatten(1)), 1.0), 1)


def test_squeeze3d_loss_falls_on_generator_samples_and_the_chamfer_term_is_optional():
    model = squeeze(chamfer_weight=0.1)
    r = squeeze3d_loss(model, model.draw_latents(8))
    assert set(r) == {"loss", "latent", "chamfer"} and r["loss"] > r["latent"]
    torch.manual_seed(1)
    encoder = LinearEncoder(64, 8)
    torch.manual_seed(3)
    model = Squeeze3D(Squeeze3DConfig(hidden=32), encoder, small_ae(seed=2))
    opt = torch.optim.Adam([*model.f.parameters(), *model.g.parameters()], lr=1e-2)
    latents = model.draw_latents(128, torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = float(squeeze3d_loss(model, latents)["loss"])  # about 4 = E||l||^2: nothing learned yet
    for _ in range(300):
        opt.zero_grad()
        squeeze3d_loss(model, latents)["loss"].backward()
        opt.step()
    with torch.no_grad():
        assert float(squeeze3d_loss(model, latents)["loss"]) < first / 2
    with pytest.raises(ValueError, match=r"\[B, 4\]"):
        squeeze3d_loss(model, torch.randn(8, 5))


def test_the_shared_trainer_fits_both_with_their_losses(tmp_path):
    from varilab.data.dataset import Dataset
    from varilab.train import fit

    torch.manual_seed(0)
    rows = torch.randn(24, 64, 3).flatten(1)  # clouds as `fit` holds them: [N, points * 3]
    generator = small_ae()
    h = fit(generator, Dataset(name="clouds", x_train=rows[:16], x_test=rows[16:]), out=tmp_path / "g", epochs=2,
            batch_size=8, objective=trainer_loss, quiet=True)
    assert {"loss", "chamfer", "kl", "test_chamfer"} <= set(h[-1])
    model = Squeeze3D(Squeeze3DConfig(hidden=32), small_ae(seed=1), generator)
    latents = model.draw_latents(24, torch.Generator().manual_seed(0))  # the only data Squeeze3D trains on
    frozen = [p.clone() for p in generator.parameters()]
    h = fit(model, Dataset(name="latents", x_train=latents[:16], x_test=latents[16:]), out=tmp_path / "s", epochs=2,
            batch_size=8, objective=squeeze3d_loss, quiet=True)
    assert math.isfinite(h[-1]["test_latent"])
    assert all(torch.equal(a, b) for a, b in zip(frozen, generator.parameters()))  # G is not trained


def test_the_fold_decoder_bends_a_fixed_sphere_and_an_unknown_decoder_is_refused():
    torch.manual_seed(0)
    model = PointCloudAE(PointCloudAEConfig(points=50, latent=4, width=32, decoder="fold"))
    x = torch.randn(3, 80, 3)
    assert model.decode(model.encode(x).mean).shape == (3, 50, 3)
    assert torch.allclose(model.template.norm(dim=-1), torch.ones(50), atol=1e-5)  # points on the unit sphere
    assert "template" not in model.state_dict()  # rebuilt from the config, not stored
    assert trainer_loss(model, x.flatten(1))["loss"].isfinite()
    with pytest.raises(ValueError, match="decoder must be one of mlp, fold"):
        PointCloudAE(PointCloudAEConfig(decoder="conv"))


def test_encoded_pairs_give_the_same_loss_as_encoding_at_every_step():
    """E and G are frozen, so [l, mean of E(G(l))] rows made once train f and g exactly as G(l) encoded each step."""
    import torch

    from varilab.models.pointcloud.autoencoder import PointCloudAE, PointCloudAEConfig
    from varilab.models.pointcloud.squeeze3d import Squeeze3D, Squeeze3DConfig, encoded_pairs, squeeze3d_loss

    torch.manual_seed(0)
    cfg = PointCloudAEConfig(points=32, latent=4, width=16)
    model = Squeeze3D(Squeeze3DConfig(bits=8, code_dims=2, hidden=8), PointCloudAE(cfg), PointCloudAE(cfg))
    l = torch.randn(10, 4)
    rows = encoded_pairs(model, l, batch=3)  # in batches of 3: the same as all at once
    assert rows.shape == (10, 8) and torch.equal(rows[:, :4], l)
    a, b = squeeze3d_loss(model, l), squeeze3d_loss(model, rows)
    assert torch.allclose(a["loss"], b["loss"], atol=1e-6) and torch.allclose(a["latent"], b["latent"], atol=1e-6)
    with pytest.raises(ValueError, match=r"\[B, 4\] or \[latent, E's mean\] pairs \[B, 8\]"):
        squeeze3d_loss(model, torch.zeros(2, 5))


@pytest.mark.parametrize("decoder", ["mlp", "fold"])
def test_compress_and_decompress_in_chunks_equal_one_pass_over_all_shapes(decoder):
    model = squeeze()
    if decoder == "fold":
        torch.manual_seed(0)
        model = Squeeze3D(model.config, small_ae(1), PointCloudAE(PointCloudAEConfig(points=64, latent=4, width=64,
                                                                                     decoder="fold"))).eval()
    x = torch.randn(7, 64, 3)
    symbols = model.compress(x, batch=3)  # chunks of 3, 3 and 1
    assert torch.equal(symbols, model.compress(x, batch=len(x)))
    assert torch.allclose(model.decompress(symbols, batch=2), model.decompress(symbols, batch=len(x)), atol=1e-6)
    assert torch.allclose(model.generator.reconstruct(x, batch=3), model.generator.reconstruct(x, batch=7), atol=1e-6)
