"""Disentanglement metrics of a representation z [N, d] against ground-truth factor indices y [N, K].

Three standard scores, each with the estimator spelled out in its docstring (published numbers differ
by estimator, so compare only numbers computed the same way):

- `mig`: Mutual Information Gap, Chen, Li, Grosse & Duvenaud, "Isolating Sources of Disentanglement in
  Variational Autoencoders", NeurIPS 2018 (histogram estimator, as in disentanglement_lib);
- `dci`: Disentanglement, Completeness, Informativeness, Eastwood & Williams, "A Framework for the
  Quantitative Evaluation of Disentangled Representations", ICLR 2018 (extremely randomised trees in
  place of gradient-boosted trees);
- `factorvae_score`: Kim & Mnih, "Disentangling by Factorising", ICML 2018 (votes drawn from the data
  set instead of a simulator).

z may be the mean or the sampled representation of a VAE, as a torch tensor or numpy array; y holds an
integer class index per factor, e.g. the factor indices of `varilab.data.synthetic.shapes`. All
information quantities are in nats.

>>> import numpy as np
>>> y = np.random.default_rng(0).integers(4, size=(2000, 2))
>>> z = np.concatenate([y + 0.01 * np.random.default_rng(1).standard_normal(y.shape), np.zeros((2000, 1))], 1)
>>> round(mig(z, y)["mig"], 2)
1.0
"""
from __future__ import annotations

import numpy as np
from sklearn.ensemble import ExtraTreesClassifier

MIG_DEFINITION = (
    "MIG = mean_k (I(z_(1); y_k) - I(z_(2); y_k)) / H(y_k), where I(z_(1)) >= I(z_(2)) are the two largest "
    "mutual informations of factor k with any latent. Each latent is discretised into {bins} equal-width "
    "bins over its range [min, max] (a constant latent falls into one bin and has I = 0); I and H are the "
    "plug-in (histogram) estimates in nats, I = sum p(a,b) log p(a,b) / (p(a) p(b)), H = -sum p log p."
)
DCI_DEFINITION = (
    "Importance R[j, k] = impurity-based feature_importances_ of an ExtraTreesClassifier(n_estimators="
    "{n_estimators}, max_features=None, min_samples_leaf=5, random_state={seed}) predicting factor k from "
    "all latents, fitted on a random 80% of the points (columns of R sum to 1). Disentanglement "
    "D = sum_j rho_j (1 - H_K(P_j.)), P_jk = R_jk / sum_k R_jk, rho_j = sum_k R_jk / sum_jk R_jk, H_K the "
    "entropy in log base K. Completeness C = mean_k (1 - H_d(P~_.k)), P~_jk = R_jk / sum_j R_jk, H_d in log "
    "base d. Informativeness = mean_k test accuracy of the factor-k classifier on the held-out 20%."
)
FACTORVAE_DEFINITION = (
    "Latents with empirical variance < {prune} over the data are pruned as collapsed (Kim & Mnih's rule; "
    "the threshold is absolute, so it applies to the representation's own scale); the rest are divided by "
    "their standard deviation over the data. Each of {n_votes} votes picks a factor k uniformly, a value v "
    "of it uniformly among the values that occur at least twice, and {batch} points with y_k = v drawn "
    "with replacement from the data; the vote is (argmin_j Var_batch(z_j / s_j), k). A majority-vote "
    "classifier (latent j -> its most frequent factor among the first half of the votes; latents with no "
    "vote predict nothing) is scored by its accuracy on the second half."
)


# ----------------------------------------------------------------------------------------------- inputs
def _as_numpy(a) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor, without importing torch
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _check_inputs(z, y) -> tuple[np.ndarray, np.ndarray]:
    """Validate z [N, d] (finite reals) and y [N, K] (integers); return z as float64 and y re-coded
    per factor to 0..m_k - 1, so any integer labels work."""
    z, y = _as_numpy(z), _as_numpy(y)
    if z.ndim != 2:
        raise ValueError(f"z must be a 2-D array [N, d] of latent codes, got shape {z.shape}")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"y must be a 2-D array [N, K] of factor indices, got shape {y.shape}")
    if len(z) != len(y):
        raise ValueError(f"z and y must have the same number of points N, got {len(z)} and {len(y)}")
    if len(z) < 10:
        raise ValueError(f"need at least 10 points, got N = {len(z)}")
    if z.shape[1] == 0 or y.shape[1] == 0:
        raise ValueError(f"need at least one latent and one factor, got d = {z.shape[1]}, K = {y.shape[1]}")
    if not (np.issubdtype(y.dtype, np.integer) or y.dtype == bool):
        raise ValueError(f"y must hold integer class indices per factor, got dtype {y.dtype}")
    if not np.issubdtype(z.dtype, np.number) or np.issubdtype(z.dtype, np.complexfloating):
        raise ValueError(f"z must be real-valued, got dtype {z.dtype}")
    z = z.astype(np.float64)
    if not np.isfinite(z).all():
        raise ValueError(f"z must be finite, got {int((~np.isfinite(z)).sum())} NaN or infinite entries")
    codes = np.stack([np.unique(col, return_inverse=True)[1].ravel() for col in y.T], axis=1)
    single = [k for k in range(codes.shape[1]) if codes[:, k].max() == 0]
    if single:
        raise ValueError(f"every factor must take at least 2 values; factors {single} are constant")
    return z, codes


# ------------------------------------------------------------------------------------------------- MIG
def _discretise(z: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width histogram codes 0..bins-1 per latent over its range; constant latents -> all 0."""
    lo, width = z.min(0), np.ptp(z, axis=0)
    scaled = (z - lo) / np.where(width > 0, width, 1.0)
    return np.minimum((scaled * bins).astype(np.int64), bins - 1)  # c = min(floor(bins (z - min) / (max - min)), bins-1)


def _entropy(p: np.ndarray, axis=-1) -> np.ndarray:
    """Shannon entropy in nats of probabilities along `axis` (0 log 0 = 0)."""
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=axis)  # H = -sum p log p


def discrete_mutual_information(codes: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Plug-in I(c_j; y) in nats for every column j of `codes` [N, d] (ints >= 0) against one factor
    [N] (ints 0..m-1), from one joint histogram [d, a, m] built with a single bincount."""
    n, d = codes.shape
    a, m = int(codes.max()) + 1, int(factor.max()) + 1
    cell = (np.arange(d) * a * m + codes * m + factor[:, None]).ravel()
    p_joint = np.bincount(cell, minlength=d * a * m).reshape(d, a, m) / n  # p(c_j = a, y = b)
    p_code, p_factor = p_joint.sum(2, keepdims=True), p_joint.sum(1, keepdims=True)
    ratio = np.where(p_joint > 0, p_joint / np.where(p_joint > 0, p_code * p_factor, 1.0), 1.0)
    return np.maximum((p_joint * np.log(ratio)).sum((1, 2)), 0.0)  # I = sum p(a,b) log p(a,b) / (p(a) p(b))


def mig(z, y, bins: int = 20) -> dict:
    """Mutual Information Gap (Chen et al., 2018), disentanglement_lib-style histogram estimator.

    Each latent z_j is discretised into `bins` equal-width bins over its observed range [min_j, max_j]
    (a constant latent is one bin, so its MI is 0). With the plug-in estimates
    I(z_j; y_k) = sum_{a,b} p(a, b) log p(a, b) / (p(a) p(b)) and H(y_k) = -sum_b p(b) log p(b) (nats),

        MIG = (1/K) sum_k (I_(1)k - I_(2)k) / H(y_k),

    where I_(1)k >= I_(2)k are the largest and second largest I(z_j; y_k) over latents j. The plug-in
    MI of independent variables is biased upwards by about (bins - 1)(m_k - 1) / (2N) nats, which
    bounds how close to 1 a perfect code can score.

    Returns {"mig": float, "per_factor": [K], "mi": [d][K] (nats), "entropy": [K] (nats), "definition"}.
    """
    z, y = _check_inputs(z, y)
    if z.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 latents to form a gap, got d = {z.shape[1]}")
    if int(bins) != bins or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins}")
    codes = _discretise(z, int(bins))
    mi = np.stack([discrete_mutual_information(codes, f) for f in y.T], axis=1)  # [d, K]
    h = np.array([_entropy(np.bincount(f) / len(f)) for f in y.T])  # H(y_k)
    top = -np.sort(-mi, axis=0)[:2]  # I_(1)k, I_(2)k
    per_factor = (top[0] - top[1]) / h  # (I_(1) - I_(2)) / H(y_k)
    return {"mig": float(per_factor.mean()), "per_factor": per_factor.tolist(), "mi": mi.tolist(),
            "entropy": h.tolist(), "definition": MIG_DEFINITION.format(bins=int(bins))}


# ------------------------------------------------------------------------------------------------- DCI
def _normalised_entropy(p: np.ndarray, axis: int, base: int) -> np.ndarray:
    """Entropy of distributions along `axis` in log base `base` (0 for base 1, where there is one outcome)."""
    return _entropy(p, axis=axis) / np.log(base) if base > 1 else np.zeros(np.delete(p.shape, axis))


def _safe_normalise(r: np.ndarray, axis: int) -> np.ndarray:
    total = r.sum(axis, keepdims=True)
    return r / np.where(total > 0, total, 1.0)


def importance_and_accuracy(z: np.ndarray, y: np.ndarray, seed: int = 0,
                            n_estimators: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """R [d, K] (ExtraTrees impurity importances, fitted on a random 80%) and test accuracy [K] on the rest."""
    n = len(z)
    perm = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(0.2 * n)))
    test, train = perm[:n_test], perm[n_test:]
    r, acc = np.zeros((z.shape[1], y.shape[1])), np.zeros(y.shape[1])
    for k in range(y.shape[1]):  # one classifier per factor
        trees = ExtraTreesClassifier(n_estimators=n_estimators, max_features=None, min_samples_leaf=5,
                                     random_state=seed)
        trees.fit(z[train], y[train, k])
        r[:, k], acc[k] = trees.feature_importances_, trees.score(z[test], y[test, k])
    return r, acc


def dci_from_importance(r: np.ndarray) -> dict:
    """Disentanglement and completeness of an importance matrix R [d, K] (Eastwood & Williams, 2018)."""
    r = np.abs(np.asarray(r, dtype=np.float64))
    if r.ndim != 2:
        raise ValueError(f"importance must be a 2-D matrix [d, K], got shape {r.shape}")
    d, k = r.shape
    p_latent = _safe_normalise(r, axis=1)  # P_jk = R_jk / sum_k R_jk
    d_j = np.where(r.sum(1) > 0, 1 - _normalised_entropy(p_latent, axis=1, base=k), 0.0)  # D_j = 1 - H_K(P_j.)
    rho = r.sum(1) / r.sum() if r.sum() > 0 else np.zeros(d)  # rho_j = sum_k R_jk / sum_jk R_jk
    p_factor = _safe_normalise(r, axis=0)  # P~_jk = R_jk / sum_j R_jk
    c_k = np.where(r.sum(0) > 0, 1 - _normalised_entropy(p_factor, axis=0, base=d), 0.0)  # C_k = 1 - H_d(P~_.k)
    return {"disentanglement": float(rho @ d_j),  # D = sum_j rho_j D_j
            "completeness": float(c_k.mean()),  # C = (1/K) sum_k C_k
            "disentanglement_per_latent": d_j.tolist(), "completeness_per_factor": c_k.tolist(),
            "latent_weight": rho.tolist()}


def dci(z, y, seed: int = 0, *, n_estimators: int = 50) -> dict:
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams, 2018), with
    extremely randomised trees in place of the gradient-boosted trees of disentanglement_lib.

    For each factor k an sklearn ExtraTreesClassifier(n_estimators=50, max_features=None,
    min_samples_leaf=5, random_state=seed) predicts y_k from all latents, fitted on a random 80% of the
    points. max_features=None lets every split consider every latent, so importance is not handed to
    uninformative latents merely because the informative one was not drawn. The importance matrix
    R [d, K] holds the impurity-based feature_importances_ (each column sums to 1, or 0 if no split).

        P_jk = R_jk / sum_k R_jk,     D_j = 1 - H_K(P_j.) = 1 + sum_k P_jk log_K P_jk,
        rho_j = sum_k R_jk / sum_jk R_jk,     D = sum_j rho_j D_j,
        P~_jk = R_jk / sum_j R_jk,    C_k = 1 - H_d(P~_.k),    C = (1/K) sum_k C_k,
        I = (1/K) sum_k accuracy_k on the held-out 20%.

    (Eastwood & Williams report informativeness as a prediction error; here it is an accuracy, higher is
    better.) Returns {"disentanglement", "completeness", "informativeness", "importance": [d][K],
    "informativeness_per_factor", "disentanglement_per_latent", "completeness_per_factor",
    "latent_weight", "definition"}.
    """
    z, y = _check_inputs(z, y)
    if int(n_estimators) != n_estimators or n_estimators < 1:
        raise ValueError(f"n_estimators must be a positive integer, got {n_estimators}")
    r, acc = importance_and_accuracy(z, y, seed=seed, n_estimators=int(n_estimators))
    out = dci_from_importance(r)
    out.update(informativeness=float(acc.mean()), informativeness_per_factor=acc.tolist(),
               importance=r.tolist(), definition=DCI_DEFINITION.format(n_estimators=n_estimators, seed=seed))
    return out


# ------------------------------------------------------------------------------------------- FactorVAE
def _value_groups(y: np.ndarray, min_count: int = 2):
    """Points grouped by (factor, value): the sort order of each factor [K, N] flattened, and for every
    group with at least `min_count` points its start in that flat array, its size and its factor."""
    n, k = y.shape
    order = np.argsort(y, axis=0, kind="stable").T  # [K, N]: points sorted by y_k
    starts, sizes, factors = [], [], []
    for f in range(k):  # K is small; the points themselves are never looped over
        count = np.bincount(y[:, f])
        start = f * n + np.cumsum(count) - count
        keep = count >= min_count
        starts.append(start[keep]), sizes.append(count[keep]), factors.append(np.full(keep.sum(), f))
    return order.ravel(), np.concatenate(starts), np.concatenate(sizes), np.concatenate(factors)


def factorvae_votes(z: np.ndarray, y: np.ndarray, n_votes: int, batch: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """All votes at once: (argmin_j within-batch variance of the normalised latents, fixed factor k)."""
    order, start, size, factor = _value_groups(y)
    n_groups = np.bincount(factor, minlength=y.shape[1])
    if (n_groups == 0).any():
        raise ValueError("FactorVAE score needs every factor to have a value shared by at least 2 points; "
                         f"factors {np.flatnonzero(n_groups == 0).tolist()} have none")
    first_group = np.cumsum(n_groups) - n_groups
    k = rng.integers(y.shape[1], size=n_votes)  # factor fixed in each vote
    g = first_group[k] + (rng.random(n_votes) * n_groups[k]).astype(np.int64)  # a value of it
    pick = (rng.random((n_votes, batch)) * size[g, None]).astype(np.int64)  # with replacement
    idx = order[start[g, None] + pick]  # [n_votes, batch] points sharing y_k = v
    var = z[idx].var(axis=1, ddof=1)  # Var_batch(z_j / s_j), [n_votes, d]
    return var.argmin(1), k  # vote = (argmin_j Var_batch(z_j / s_j), k)


def factorvae_score(z, y, n_votes: int = 800, batch: int = 64, seed: int = 0, *,
                    prune: float = 0.05) -> dict:
    """FactorVAE score (Kim & Mnih, 2018), with votes sampled from the given data set (no simulator).

    1. Prune collapsed latents: keep j with empirical variance Var(z_j) >= `prune` (0.05, the paper's
       rule; the threshold is absolute, so it is meaningful for a representation whose active latents
       have roughly unit scale, e.g. a VAE's mean representation; constant latents are always
       dropped). Divide each kept latent by its standard deviation s_j over the data.
    2. Each of `n_votes` votes: pick a factor k uniformly, a value v of it uniformly among the values
       that occur at least twice, and `batch` points with y_k = v drawn with replacement; the vote is
       (argmin_j Var_batch(z_j / s_j), k), with the unbiased (ddof=1) batch variance.
    3. The majority-vote classifier maps latent j to argmax_k V_jk, where V_jk counts the votes (j, k)
       among the first n_votes // 2 votes (a latent with no such vote predicts nothing, so its test
       votes count as errors). score = its accuracy on the remaining votes.

    Chance level is about 1/K. Returns {"score", "train_accuracy", "n_votes", "batch", "active",
    "votes": [d_active][K] counts of the training votes, "classifier": [d_active] factor per kept latent
    (-1 if none), "definition"}.
    """
    z, y = _check_inputs(z, y)
    if int(n_votes) != n_votes or n_votes < 2:
        raise ValueError(f"n_votes must be an integer >= 2 (half train, half test), got {n_votes}")
    if int(batch) != batch or batch < 2:
        raise ValueError(f"batch must be an integer >= 2 to form a variance, got {batch}")
    variance = z.var(0)
    active = np.flatnonzero((variance >= prune) & (variance > 0))  # prune collapsed latents: Var(z_j) < 0.05
    if len(active) == 0:
        raise ValueError(f"all {z.shape[1]} latents have variance below prune={prune}; "
                         f"largest variance is {variance.max():.3g}")
    zn = z[:, active] / np.sqrt(variance[active])  # z_j / s_j
    j, k = factorvae_votes(zn, y, int(n_votes), int(batch), np.random.default_rng(seed))
    n_train = int(n_votes) // 2
    counts = np.zeros((len(active), y.shape[1]), dtype=np.int64)
    np.add.at(counts, (j[:n_train], k[:n_train]), 1)  # V_jk = #{train votes (j, k)}
    classifier = np.where(counts.sum(1) > 0, counts.argmax(1), -1)  # j -> argmax_k V_jk
    correct = classifier[j] == k
    return {"score": float(correct[n_train:].mean()),  # accuracy of j -> argmax_k V_jk on the test votes
            "train_accuracy": float(correct[:n_train].mean()),
            "n_votes": int(n_votes), "batch": int(batch), "active": active.tolist(),
            "votes": counts.tolist(), "classifier": classifier.tolist(),
            "definition": FACTORVAE_DEFINITION.format(prune=prune, n_votes=int(n_votes), batch=int(batch))}


def disentanglement(z, y, seed: int = 0) -> dict:
    """All three metrics with their default settings: {"mig": mig(z, y), "dci": dci(z, y, seed),
    "factorvae": factorvae_score(z, y, seed=seed)}."""
    return {"mig": mig(z, y), "dci": dci(z, y, seed=seed), "factorvae": factorvae_score(z, y, seed=seed)}
