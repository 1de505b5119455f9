"""Membership-inference AUCs through ART (varilab.models.unlearning.membership): an overfit classifier's training
rows are recognised, exchangeable rows are not, the loss-threshold attack is the plain loss threshold, bad input is
refused."""
import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

pytest.importorskip("art")

from varilab.models.unlearning.membership import membership_aucs  # noqa: E402

D, C = 20, 5


def _rows(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, D, generator=g), torch.randint(0, C, (n,), generator=g)


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(D, 128), nn.ReLU(), nn.Linear(128, C))


def _losses(model, x, y) -> np.ndarray:
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y, reduction="none").numpy()


@pytest.fixture(scope="module")
def overfit():
    """An MLP that memorised 200 random rows with random labels (training loss ~0), and 200 fresh rows."""
    x, y = _rows(200, seed=1)
    model = _mlp(seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend (several times slower on a busy machine)
    try:
        for _ in range(500):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.01
    model.eval()
    return model, (x, y), _rows(200, seed=2)


@pytest.fixture(scope="module")
def overfit_aucs(overfit):
    """Fitted on half the training rows vs half the fresh rows; scored: the other half of the training rows
    ("forgotten", in fact still in the model) vs the other fresh rows."""
    model, (x, y), (xt, yt) = overfit
    return membership_aucs(model, (x[:100], y[:100]), (xt[:100], yt[:100]), (x[100:], y[100:]),
                           (xt[100:], yt[100:]), seed=0)


@pytest.fixture(scope="module")
def untrained():
    """An untrained MLP (train mode, to check that it comes back so) and four sets of 1000 random rows: all
    exchangeable. The attack has nothing to go on (a slope near 0), and in this draw the members it is fitted on
    happen to have the higher mean loss, so its threshold runs the other way. With many rows, float32 probabilities
    from the loss attack (ART's) would tie rows with different losses, and its AUC would miss by ~1e-6."""
    model = _mlp(seed=4)
    sets = [_rows(1000, seed=10 + i) for i in range(4)]
    return model, sets, membership_aucs(model, *sets, seed=0)


def test_overfit_model_is_recognised(overfit_aucs):
    assert overfit_aucs["rows"] == {"members": 100, "nonmembers": 100, "forgotten": 100, "test_out": 100}
    for key in ("loss_threshold_auc", "black_box_auc", "loss_auc"):
        assert overfit_aucs[key] > 0.9, (key, overfit_aucs)


def test_rows_never_trained_on_score_about_half(overfit):
    """Same overfit model and attack fit, but the "forgotten" rows are fresh rows, exchangeable with test_out."""
    model, (x, y), (xt, yt) = overfit
    fresh, out = _rows(300, seed=5), _rows(300, seed=6)
    aucs = membership_aucs(model, (x, y), (xt, yt), fresh, out, seed=0)
    assert aucs["rows"] == {"members": 200, "nonmembers": 200, "forgotten": 300, "test_out": 300}
    for key in ("loss_threshold_auc", "black_box_auc", "loss_auc"):
        assert abs(aucs[key] - 0.5) < 0.1, (key, aucs)


def test_untrained_model_scores_about_half(untrained):
    model, _, aucs = untrained
    for key in ("loss_threshold_auc", "black_box_auc", "loss_auc"):
        assert abs(aucs[key] - 0.5) < 0.1, (key, aucs)
    assert model.training  # its mode restored


def test_loss_auc_is_roc_of_minus_loss(overfit, overfit_aucs):
    model, (x, y), (xt, yt) = overfit
    l_in, l_out = _losses(model, x[100:], y[100:]), _losses(model, xt[100:], yt[100:])
    expected = roc_auc_score(np.r_[np.ones(100), np.zeros(100)], -np.r_[l_in, l_out])
    assert overfit_aucs["loss_auc"] == pytest.approx(expected, abs=1e-12)


def test_loss_threshold_attack_is_the_loss_threshold(overfit, overfit_aucs, untrained):
    """ART's loss attack is a logistic regression on the loss alone, so a monotone function of it: its AUC is the loss
    AUC when its slope is negative and 1 - the loss AUC when positive. The slope's sign is that of (mean loss of the
    members it is fitted on) - (mean loss of the non-members): negative for the overfit model."""
    assert abs(overfit_aucs["loss_threshold_auc"] - overfit_aucs["loss_auc"]) < 1e-9
    model, (members, nonmembers, _, _), aucs = untrained
    gap = _losses(model, *members).mean() - _losses(model, *nonmembers).mean()
    assert gap > 0  # the draw the fixture promises: the threshold runs the other way
    assert abs(aucs["loss_threshold_auc"] - (1 - aucs["loss_auc"])) < 1e-9, (gap, aucs)


def test_rows_are_balanced_capped_and_seeded(untrained):
    model, (m, n, f, t), _ = untrained
    aucs = membership_aucs(model, m, (n[0][:150], n[1][:150]), f, (t[0][:70], t[1][:70]), seed=1, max_rows=500)
    assert aucs["rows"] == {"members": 150, "nonmembers": 150, "forgotten": 70, "test_out": 70}
    again = membership_aucs(model, m, (n[0][:150], n[1][:150]), f, (t[0][:70], t[1][:70]), seed=1, max_rows=500)
    assert again == aucs
    capped = membership_aucs(model, m, (n[0][:150], n[1][:150]), f, (t[0][:70], t[1][:70]), seed=1, max_rows=60)
    assert capped["rows"] == {"members": 60, "nonmembers": 60, "forgotten": 60, "test_out": 60}
    numpy_sets = [(x.numpy(), y.numpy()) for x, y in (m, n, f, t)]
    assert membership_aucs(model, *numpy_sets, seed=5, max_rows=100) == membership_aucs(model, m, n, f, t, seed=5,
                                                                                          max_rows=100)


def test_empty_forgotten_set_gives_none(untrained):
    model, (m, n, f, t), _ = untrained
    aucs = membership_aucs(model, m, n, (f[0][:0], f[1][:0]), t)
    assert aucs["loss_threshold_auc"] is None and aucs["black_box_auc"] is None and aucs["loss_auc"] is None
    assert aucs["rows"] == {"members": 1000, "nonmembers": 1000, "forgotten": 0, "test_out": 0}
    assert membership_aucs(model, m, n, (np.zeros((0, D), np.float32), np.array([])), t)["loss_auc"] is None


@pytest.mark.parametrize("where", [0, 2, 3])
def test_non_finite_rows_raise(untrained, where):
    model, sets, _ = untrained
    sets = [(x.clone(), y) for x, y in sets]
    sets[where][0][7, 3] = float("nan") if where != 3 else float("inf")
    with pytest.raises(ValueError, match="not finite"):
        membership_aucs(model, *sets)


@pytest.mark.parametrize("label", [C, -1])
def test_labels_out_of_range_raise(untrained, label):
    model, sets, _ = untrained
    sets = [(x, y.clone()) for x, y in sets]
    sets[1][1][4] = label
    with pytest.raises(ValueError, match="labels outside"):
        membership_aucs(model, *sets)
    sets[1] = (sets[1][0], sets[1][1].float())
    with pytest.raises(ValueError, match="integer"):
        membership_aucs(model, *sets)


def test_missing_art_names_the_install(untrained, monkeypatch):
    model, sets, _ = untrained
    monkeypatch.setitem(sys.modules, "art.attacks.inference.membership_inference", None)
    with pytest.raises(ImportError, match=r"pip install 'varilab\[robust\]'"):
        membership_aucs(model, *sets)
