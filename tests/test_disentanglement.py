"""Disentanglement metrics (MIG, DCI, FactorVAE score) on representations whose answer is known: a code
that copies the factors, rotations that mix them, pure noise, and hand-computed tiny examples."""
import doctest
import math
import time

import numpy as np
import pytest
import torch
from scipy.linalg import hadamard
from sklearn.metrics import mutual_info_score

from varilab.diagnostics import disentanglement as dmod
from varilab.diagnostics.disentanglement import dci, dci_from_importance, disentanglement, factorvae_score, mig

N = 5000
SIZES = (5, 6, 7, 8)  # values per factor


@pytest.fixture(scope="module")
def factors():
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(m, size=N) for m in SIZES], axis=1)  # [N, 4]


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(1).standard_normal((N, 2))


@pytest.fixture(scope="module")
def standardised(factors):
    return (factors - factors.mean(0)) / factors.std(0)


def haar_rotation(k, seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((k, k)))
    return q * np.sign(np.diag(r))


@pytest.fixture(scope="module")
def scores(factors, noise, standardised):
    """All metrics for the four representations, computed once."""
    rng = np.random.default_rng(2)
    codes = {
        "disentangled": np.concatenate([factors + 0.01 * rng.standard_normal(factors.shape), noise], 1),
        "haar": np.concatenate([standardised @ haar_rotation(len(SIZES), 3), noise], 1),
        # every latent weighs every factor by +-1/2: the most entangled rotation there is
        "hadamard": np.concatenate([standardised @ (hadamard(4) / 2), noise], 1),
        "noise": rng.standard_normal((N, len(SIZES) + 2)),
    }
    return {name: disentanglement(z, factors, seed=0) for name, z in codes.items()}


def mig_ceiling(bins=20):
    """Best MIG a perfect code can reach here: I_(1) = H(y_k) exactly (distinct values never share a bin,
    since value spacing 1 > bin width (m - 1)/20), while I_(2) is the plug-in MI of an independent
    latent, biased upwards by about (bins - 1)(m - 1)/(2N) nats."""
    return np.mean([1 - (bins - 1) * (m - 1) / (2 * N) / math.log(m) for m in SIZES])


# ---------------------------------------------------------------------------------------- (a) disentangled
def test_disentangled_code_scores_near_the_maximum(scores):
    s = scores["disentangled"]
    ceiling = mig_ceiling()  # ~0.992
    assert 0.98 < ceiling < 1
    assert s["mig"]["mig"] > ceiling - 0.01  # leave room for a second-largest MI one sd above its bias
    assert s["mig"]["mig"] <= 1.0
    mi, h = np.array(s["mig"]["mi"]), np.array(s["mig"]["entropy"])
    np.testing.assert_allclose(np.diag(mi[:4]), h, rtol=1e-12)  # I(z_k; y_k) = H(y_k) exactly
    np.testing.assert_allclose(h, np.log(SIZES), atol=0.01)  # uniform factors
    assert s["dci"]["disentanglement"] > 0.95 and s["dci"]["completeness"] > 0.95
    assert s["dci"]["informativeness"] > 0.99
    r = np.array(s["dci"]["importance"])
    assert (r[4:] < 0.01).all()  # the noise latents are never useful
    assert s["factorvae"]["score"] > 0.95
    assert s["factorvae"]["classifier"][:4] == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------ (b) entangled
@pytest.mark.parametrize("rotation", ["haar", "hadamard"])
def test_rotated_code_scores_clearly_lower(scores, rotation):
    a, b = scores["disentangled"], scores[rotation]
    assert b["mig"]["mig"] < 0.5 * a["mig"]["mig"]
    assert b["dci"]["disentanglement"] < 0.5 * a["dci"]["disentanglement"]
    assert b["dci"]["completeness"] < 0.5 * a["dci"]["completeness"]
    assert b["dci"]["informativeness"] > 0.9  # the information is all still there, only mixed
    assert b["factorvae"]["score"] <= a["factorvae"]["score"]


def test_factorvae_is_at_chance_when_every_latent_mixes_every_factor_equally(scores):
    """With z = y H/2, fixing any factor lowers every rotated latent's variance by the same 1/4, so the
    argmin is a coin toss among them: the score is near chance 1/K = 0.25, and MIG and D near 0."""
    s = scores["hadamard"]
    assert s["factorvae"]["score"] < 0.4
    assert s["mig"]["mig"] < 0.05
    assert s["dci"]["disentanglement"] < 0.1


@pytest.mark.parametrize("seed, distinct", [(3, 4), (4, 3)])
def test_factorvae_only_sees_each_factors_most_aligned_latent(factors, standardised, noise, seed, distinct):
    """A known blind spot: for z = y_std Q, fixing factor k leaves latent j with variance 1 - Q_kj^2, so
    the vote goes to argmax_j Q_kj^2 and the score is about (#distinct such latents) / K, whatever the
    mixing. The Haar rotation of seed 3 has distinct ones (score ~1 while MIG and DCI call it entangled,
    see above); seed 4 sends two factors to one latent (score ~3/4)."""
    q = haar_rotation(len(SIZES), seed)
    assert len(set((q**2).argmax(1))) == distinct
    score = factorvae_score(np.concatenate([standardised @ q, noise], 1), factors)["score"]
    assert abs(score - distinct / len(SIZES)) < 0.1


# ----------------------------------------------------------------------------------------------- (c) noise
def test_noise_code_scores_at_chance(scores):
    s = scores["noise"]
    assert s["mig"]["mig"] < 0.05
    assert s["factorvae"]["score"] < 0.6
    assert s["dci"]["disentanglement"] < 0.2
    assert s["dci"]["informativeness"] < 1.5 / min(SIZES)  # about 1 / m_k


# ------------------------------------------------------------------------------------- (d) hand computation
def test_mig_copy_of_a_binary_factor_against_a_constant_latent_has_gap_one():
    y = np.repeat([0, 1], 6)
    z = np.stack([y.astype(float), np.full(12, 3.0)], axis=1)  # the constant latent must not crash
    out = mig(z, y)
    assert out["mi"] == [[pytest.approx(math.log(2))], [0.0]]
    assert out["entropy"] == [pytest.approx(math.log(2))]
    assert out["mig"] == pytest.approx(1.0)


def test_mig_against_hand_computed_partial_information():
    """y = 0000011111, z_1 = 0000111111: p(z_1, y) = [[.4, 0], [.1, .5]], so
    I(z_1; y) = .4 log(.4/.2) + .1 log(.1/.3) + .5 log(.5/.3) and MIG = (log 2 - I(z_1; y)) / log 2."""
    y = np.repeat([0, 1], 5)
    z = np.stack([y * 10.0, (np.arange(10) >= 4) * -2.0], axis=1)
    i1 = 0.4 * math.log(2) + 0.1 * math.log(1 / 3) + 0.5 * math.log(5 / 3)
    out = mig(z, y, bins=2)
    np.testing.assert_allclose(np.array(out["mi"])[:, 0], [math.log(2), i1], rtol=1e-12)
    assert out["mig"] == pytest.approx((math.log(2) - i1) / math.log(2), rel=1e-12)


def test_mig_mi_matches_sklearn_on_histogram_codes(factors):
    """The vectorised contingency MI equals sklearn's on np.histogram edges (disentanglement_lib's binning)."""
    rng = np.random.default_rng(5)
    z = np.concatenate([factors[:, :2] + rng.standard_normal((N, 2)), rng.exponential(size=(N, 2))], 1)
    out = mig(z, factors, bins=12)
    ref = np.array([[mutual_info_score(np.digitize(zj, np.histogram(zj, 12)[1][:-1]), yk)
                     for yk in factors.T] for zj in z.T])
    np.testing.assert_allclose(np.array(out["mi"]), ref, atol=1e-12)


def test_dci_from_hand_made_importance_matrices():
    one_to_one = dci_from_importance(np.array([[1.0, 0], [0, 1], [0, 0]]))
    assert one_to_one["disentanglement"] == pytest.approx(1) and one_to_one["completeness"] == pytest.approx(1)
    assert one_to_one["latent_weight"] == [0.5, 0.5, 0.0]  # the unused latent carries no weight
    one_for_all = dci_from_importance(np.array([[1.0, 1.0], [0, 0]]))  # one latent serves both factors
    assert one_for_all["disentanglement"] == pytest.approx(0) and one_for_all["completeness"] == pytest.approx(1)
    # D_0 = 1 - H_2(3/4, 1/4), weight 1/1.2; D_1 = 1, weight 0.2/1.2
    mixed = dci_from_importance(np.array([[0.75, 0.25], [0.0, 0.2]]))
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert mixed["disentanglement"] == pytest.approx((1 - h) / 1.2 + 0.2 / 1.2)
    h1 = -(0.25 / 0.45 * math.log2(0.25 / 0.45) + 0.2 / 0.45 * math.log2(0.2 / 0.45))
    assert mixed["completeness"] == pytest.approx((1 + 1 - h1) / 2)


def test_factorvae_prunes_collapsed_latents(factors, noise):
    rng = np.random.default_rng(6)
    collapsed = np.stack([np.zeros(N), 0.1 * rng.standard_normal(N)], 1)  # variance 0 and 0.01 < 0.05
    z = np.concatenate([collapsed, factors + 0.01 * rng.standard_normal(factors.shape), noise], 1)
    out = factorvae_score(z, factors, seed=1)
    assert out["active"] == [2, 3, 4, 5, 6, 7]
    assert out["score"] > 0.95 and out["n_votes"] == 800
    unpruned = factorvae_score(z, factors, seed=1, prune=0.0)  # a constant latent cannot be normalised
    assert unpruned["active"] == [1, 2, 3, 4, 5, 6, 7] and unpruned["score"] > 0.95


def test_torch_input_and_seeds_are_reproducible(factors):
    rng = np.random.default_rng(7)
    z = factors[:2000] + 0.5 * rng.standard_normal((2000, 4))
    a = factorvae_score(z, factors[:2000], n_votes=200, seed=3)
    b = factorvae_score(torch.from_numpy(z).float(), torch.from_numpy(factors[:2000]), n_votes=200, seed=3)
    assert a["score"] == b["score"] and a["votes"] == b["votes"]
    assert dci(z, factors[:2000], seed=1)["importance"] == dci(z, factors[:2000], seed=1)["importance"]


# ---------------------------------------------------------------------------------------- (e) validation
@pytest.mark.parametrize("z, y, match", [
    (np.zeros((20, 2)), np.zeros((19, 1), int), "same number of points N, got 20 and 19"),
    (np.zeros((20, 2)), np.zeros((20, 1)), "integer class indices.*float64"),
    (np.zeros((20, 2, 1)), np.zeros((20, 1), int), r"2-D array \[N, d\].*\(20, 2, 1\)"),
    (np.full((20, 2), np.nan), np.repeat([0, 1], 10), "finite"),
    (np.zeros((20, 2)), np.stack([np.repeat([0, 1], 10), np.zeros(20, int)], 1), r"factors \[1\] are constant"),
    (np.zeros((5, 2)), np.arange(5), "at least 10 points, got N = 5"),
])
@pytest.mark.parametrize("metric", [mig, dci, factorvae_score])
def test_bad_inputs_raise_value_error(metric, z, y, match):
    with pytest.raises(ValueError, match=match):
        metric(z, y)


def test_bad_settings_raise_value_error():
    y = np.repeat([0, 1], 10)
    z = np.random.default_rng(0).standard_normal((20, 2))
    with pytest.raises(ValueError, match="at least 2 latents.*d = 1"):
        mig(z[:, :1], y)
    with pytest.raises(ValueError, match="bins must be an integer >= 2, got 1"):
        mig(z, y, bins=1)
    with pytest.raises(ValueError, match="n_votes must be an integer >= 2"):
        factorvae_score(z, y, n_votes=1)
    with pytest.raises(ValueError, match="batch must be an integer >= 2"):
        factorvae_score(z, y, batch=1)
    with pytest.raises(ValueError, match="all 2 latents have variance below prune=10"):
        factorvae_score(z, y, prune=10)
    with pytest.raises(ValueError, match=r"value shared by at least 2 points; factors \[1\]"):
        factorvae_score(z, np.stack([y, np.arange(20)], 1))


# -------------------------------------------------------------------------------------------- the rest
def test_results_state_their_definitions(scores):
    s = scores["noise"]
    assert "20 equal-width bins" in s["mig"]["definition"]
    assert "ExtraTreesClassifier(n_estimators=50" in s["dci"]["definition"]
    assert "variance < 0.05" in s["factorvae"]["definition"]
    assert np.array(s["mig"]["mi"]).shape == (6, 4) and np.array(s["dci"]["importance"]).shape == (6, 4)


def test_module_doctest():
    assert doctest.testmod(dmod).failed == 0


def test_disentanglement_is_fast_on_shapes_sized_input():
    """N=5000, d=10, K=5 with the shapes factor sizes (3, 6, 20, 16, 16), within a few seconds."""
    rng = np.random.default_rng(8)
    y = np.stack([rng.integers(m, size=N) for m in (3, 6, 20, 16, 16)], 1)
    z = np.concatenate([y + 0.3 * rng.standard_normal(y.shape), rng.standard_normal((N, 5))], 1)
    start = time.perf_counter()
    out = disentanglement(z, y)
    assert time.perf_counter() - start < 6
    assert out["mig"]["mig"] > 0.5 and out["dci"]["disentanglement"] > 0.8 and out["factorvae"]["score"] > 0.95
