"""PV-RNN's mathematics: its KL is non-negative and zero exactly when prior and posterior agree; a time constant of
1 is a vanilla RNN; a layer without recurrence driven by a constant input reaches u (1 - (1 - 1/tau)^n); the
adaptive vectors belong to the training sequences alone."""
import math

import pytest
import torch

from varilab.models.pvrnn import MTRNNCell, PVRNN, PVRNNConfig, objective


def model(**kw):
    torch.manual_seed(0)
    return PVRNN(PVRNNConfig(x_dim=2, sequences=4, length=12, **kw))


def test_kl_is_non_negative_and_zero_when_the_posterior_is_the_prior():
    m = model()
    x = torch.randn(4, 12, 2).tanh()
    index = torch.arange(4)
    # adaptive vectors at 0 give q = N(tanh 0, exp(0)^2) = N(0, 1); prior heads at 0 give p = N(0, 1) at every t
    with torch.no_grad():
        for head in [*m.prior_mu, *m.prior_log_sigma]:
            head.weight.zero_()
            head.bias.zero_()
    r = m.run(m.adaptive(index), steps=12, batch=4)
    assert torch.equal(r["kl"], torch.zeros(4, 2, 12))
    assert objective(x, r, m.config)["kl"].item() == 0.0
    with torch.no_grad():  # any other posterior: KL > 0, never below
        for a in [*m.a_mu, *m.a_log_sigma]:
            a.normal_()
    r = m.run(m.adaptive(index), steps=12, batch=4)
    assert (r["kl"] > 0).all() and r["kl"].shape == (4, 2, 12) and r["sigma_p"].shape == (4, 2, 12)
    m = model()  # and with a trained-looking prior, still never below 0
    with torch.no_grad():
        for a in [*m.a_mu, *m.a_log_sigma]:
            a.normal_()
    assert (m.run(m.adaptive(index), steps=12, batch=4)["kl"] >= 0).all()


def test_a_time_constant_of_one_is_a_vanilla_rnn():
    torch.manual_seed(0)
    cell = MTRNNCell(d=5, z=2, up=3, tau=1.0)
    h, d, z, up = torch.randn(4, 5), torch.randn(4, 5).tanh(), torch.randn(4, 2), torch.randn(4, 3).tanh()
    h_new, d_new = cell(h, d, z, up)
    vanilla = cell.dd(d) + cell.dz(z) + cell.up(up)  # h_t = W_dd d_{t-1} + W_dz z_t + W_up d_up + b
    assert torch.allclose(h_new, vanilla, atol=1e-6) and torch.allclose(d_new, torch.tanh(vanilla))


@pytest.mark.parametrize("tau", [1.0, 2.0, 8.0, 30.0])
def test_a_constant_input_without_recurrence_reaches_its_closed_form(tau):
    cell = MTRNNCell(d=3, z=1, up=0, tau=tau)
    with torch.no_grad():
        cell.dd.weight.zero_()
        cell.dd.bias.copy_(torch.tensor([0.5, -1.0, 2.0]))  # u = b: no recurrence, no latent
        cell.dz.weight.zero_()
    u = cell.dd.bias.detach()
    h, d = torch.zeros(1, 3), torch.zeros(1, 3)
    for n in range(1, 40):
        h, d = cell(h, d, torch.zeros(1, 1))
        assert torch.allclose(h[0], u * (1 - (1 - 1 / tau) ** n), atol=1e-6)


def test_the_adaptive_vectors_are_the_training_sequences_own():
    m = model()
    assert [a.shape for a in m.a_mu] == [(4, 12, 2), (4, 12, 1)]
    x = torch.randn(2, 12, 2).tanh()
    loss = m.loss(x, torch.tensor([1, 3]))["loss"]
    loss.backward()
    grads = m.a_mu[0].grad
    assert grads[[1, 3]].abs().sum() > 0 and grads[[0, 2]].abs().sum() == 0  # only the batch's own vectors move
    with pytest.raises(IndexError):
        m.loss(x, torch.tensor([4, 5]))  # a sequence with no adaptive vectors of its own


def test_generation_draws_from_the_prior():
    m = model(w=(1.0, 1.0))
    g = torch.Generator().manual_seed(0)
    out = m.generate(3, 50, generator=g)
    assert out["x"].shape == (3, 50, 2) and out["x"].abs().max() <= 1
    assert torch.allclose(out["sigma_p"][:, :, 0], torch.ones(3, 2))  # N(0, I) at t = 1
    again = m.generate(3, 50, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out["x"], again["x"])
    assert math.isfinite(float(out["sigma_p"].mean()))


def test_the_switching_process_has_its_stated_probability_and_shapes():
    import numpy as np

    from varilab.data.sequences import check_sequences, p_circle_estimate, switching

    x, labels = switching(400, 100, p_circle=0.7, seed=0)
    assert x.shape == (400, 100, 2) and labels.shape == (400, 100)
    assert abs(labels.mean() - 0.7) < 0.02
    assert abs(p_circle_estimate(x) - labels.mean()) < 1e-5  # exact: every segment is a whole cycle
    assert abs(p_circle_estimate(x[:, 3:93]) - labels[:, 3:93].mean()) < 0.02  # and close at any phase
    assert np.abs(x[:, 9::10]).max() < 1e-6  # each segment ends at the origin, where the next begins
    assert np.abs(np.diff(x, axis=1)).max() < 0.5  # smooth across switches
    bad = x[:3].copy()
    bad[1, 5, 0] = np.nan
    with pytest.raises(ValueError, match="sequence 1 at step 5"):
        check_sequences(bad, "seq.npy")
    with pytest.raises(ValueError, match=r"\[sequences, time, dims\].*leading axis"):
        check_sequences(x[0], "seq.npy")


def test_error_regression_fits_a_new_sequence_with_the_weights_frozen():
    from varilab.models.pvrnn import error_regression, free_prediction

    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    torch.manual_seed(0)
    x = 0.5 * torch.sin(torch.arange(12.0)[None, :, None] / 2 + torch.tensor([0.0, 1.0])).expand(2, 12, 2)
    er = error_regression(m, x, window=4, iterations=20, ahead=3, lr=0.1)
    free = free_prediction(m, x, ahead=3)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # frozen, and left as it was
    assert all(p.requires_grad for p in m.parameters())
    assert er["prediction"].shape == (2, 12, 3, 2) and er["error"].shape == (3,)
    assert [a.shape for a in er["a_mu"]] == [(2, 12, 2), (2, 12, 1)]
    assert er["a_mu"][0].abs().sum() > 0  # the new sequence's own vectors moved, not the training ones
    assert m.a_mu[0].abs().sum() == 0
    assert er["error"][0] < free["error"][0]  # one step ahead, seeing the data helps


def test_the_shared_trainer_fits_pvrnn_and_keeps_test_sequences_out(tmp_path):
    import numpy as np

    from varilab.data import make_dataset
    from varilab.data.sequences import switching
    from varilab.models.pvrnn import trainer_loss
    from varilab.train import fit

    x, _ = switching(12, 30, seed=0)
    ds = make_dataset("switching", x[:8].reshape(8, -1), None, x_test=x[8:].reshape(4, -1), test_fraction=0.2, seed=0)
    ds.c_train = torch.arange(8.0)[:, None]  # each training sequence's index: its adaptive vectors
    ds.c_test = torch.full((4, 1), -1.0)  # test sequences have none
    torch.manual_seed(0)
    m = PVRNN(PVRNNConfig(x_dim=2, sequences=8, length=30))
    history = fit(m, ds, out=tmp_path / "run", epochs=60, batch_size=8, lr=0.03, objective=trainer_loss, quiet=True)
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert history[-1]["test_recon"] > 0 and "test_kl" not in history[-1]
    assert m.a_mu[0].shape[0] == 8 and m.a_mu[0].abs().sum() > 0
    assert (tmp_path / "run" / "checkpoint.safetensors").exists()
    assert np.isfinite([h["loss"] for h in history]).all()


def test_the_closed_form_kl_is_torchs():
    from torch.distributions import Normal, kl_divergence

    from varilab.models.pvrnn import kl_normal

    g = torch.Generator().manual_seed(0)
    mq, lq, mp, lp = (torch.randn(50, 3, generator=g, dtype=torch.float64) for _ in range(4))
    expected = kl_divergence(Normal(mq, lq.exp()), Normal(mp, lp.exp()))
    assert torch.allclose(kl_normal(mq, lq, mp, lp), expected, rtol=1e-10)
    assert kl_normal(mq, lq, mq, lq).abs().max() < 1e-12  # zero, up to rounding, when q = p
