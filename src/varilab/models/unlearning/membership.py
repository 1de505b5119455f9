"""Membership inference after unlearning: can an attacker still tell that the forgotten rows D_f were trained on?

Both attacks come from the Adversarial Robustness Toolbox (ART; `pip install 'varilab[robust]'`), class
`art.attacks.inference.membership_inference.MembershipInferenceBlackBox` on the classifier wrapped in ART's
`PyTorchClassifier`. Each attack model is fitted on known members (a sample of the remaining training rows D_r) and
known non-members (half of the test rows), then scores the forgotten rows ("in") against the other half of the test
rows ("out"); the score is the ROC AUC of ART's membership probability, `infer(..., probabilities=True)`. A model
retrained without D_f gives the reference, about 0.5; an AUC near 1 says D_f is still recognisable.

- loss threshold: `input_type="loss"`, a logistic regression on the per-example cross-entropy alone, which makes it a
  monotone threshold on the loss. ART's own "lr" attack model also sees the one-hot label next to the loss (ART
  always appends it when labels are given, and a loss attack needs them), which adds a per-class offset and makes it
  no longer monotone in the loss; so the "lr" model is replaced by a pipeline that keeps column 0 (the loss) of
  ART's attack features and scales and fits it in float64 (ART's features are float32). (ART's documented
  `attack_model=` route cannot do this: it takes an ART classifier, and `ScikitlearnClassifier.fit` fails on the 1-d
  membership labels ART hands it.)
- black box: `input_type="prediction"`, ART's random forest ("rf") on the class probabilities and the one-hot label.
  The probabilities (softmax of the logits, passed as `pred=`) rather than the logits ART's `predict` returns for a
  logit model: a row's logits are defined up to a shift, which trees cannot see through. The forest is seeded (ART
  builds it with `random_state=None`). "rf" over "nn" (ART's 512-wide MLP: slow on a CPU and, at its default
  learning rate of 1e-4 for 100 epochs, far from converged on a few hundred rows) and over "gb" (sequential, no
  better here): it needs no scaling or tuning and is fast.

The plain loss AUC (ROC AUC of -loss, no attack model) is the check: the loss-threshold attack scores rows by a
monotone function of the same loss, so its AUC equals the loss AUC when the fitted slope is negative (lower loss ->
member, the usual case) and 1 - loss AUC when it is positive (the fit rows had members with the higher mean loss).
"""
from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

INSTALL = "pip install 'varilab[robust]'"
AUCS = ("loss_threshold_auc", "black_box_auc", "loss_auc")


def membership_aucs(model: nn.Module, members, nonmembers, forgotten, test_out, *, seed: int = 0,
                    max_rows: int = 2000, batch_size: int = 1024) -> dict:
    """Membership-inference AUCs of the forgotten rows against held-out test rows.

    `model` maps rows x [N, D] (float32, in [0, 1]) to logits [N, C]; each of `members`, `nonmembers` (the rows the
    attacks are fitted on: known members, e.g. remaining training rows, and known non-members, e.g. half of the test
    rows) and `forgotten`, `test_out` (the rows scored, "in" against "out") is a pair (x [N, D], integer labels y [N]),
    torch tensors or numpy arrays. Each set is subsampled (seeded by `seed`) to at most `max_rows` rows, and members /
    nonmembers, forgotten / test_out to the same size (the smaller one).

    Returns {"loss_threshold_auc", "black_box_auc", "loss_auc": float, "rows": {set: rows used}}:
    - loss_threshold_auc: ART's `MembershipInferenceBlackBox(input_type="loss")`, a logistic regression on the
      per-example loss (a monotone threshold), forgotten vs test_out;
    - black_box_auc: ART's `MembershipInferenceBlackBox(input_type="prediction", attack_model_type="rf")`, a random
      forest on the class probabilities and the label, forgotten vs test_out;
    - loss_auc: ROC AUC of -loss, forgotten vs test_out, no attack model (equal to loss_threshold_auc, or to
      1 - loss_threshold_auc where the fitted threshold runs the other way).
    With no forgotten rows the AUCs are None. The model is run on the CPU in eval mode and returned to its device and
    modes afterwards; it is not trained.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    sets = {"members": members, "nonmembers": nonmembers, "forgotten": forgotten, "test_out": test_out}
    sets = {name: _rows(name, pair) for name, pair in sets.items()}
    dims = {name: x.shape[1] for name, (x, _) in sets.items()}
    if len(set(dims.values())) > 1:
        raise ValueError(f"the sets have rows of different widths: {dims}")
    for name in ("members", "nonmembers", "test_out"):
        if len(sets[name][0]) == 0:
            raise ValueError(f"{name} is empty: the attacks need known members, known non-members and test rows")

    device = next(model.parameters(), torch.empty(0)).device
    modes = {m: m.training for m in model.modules()}  # each module's own mode, restored afterwards
    model.eval()
    model.to("cpu")
    try:
        classes = _logits(model, sets["members"][0][:1], batch_size).shape[1]
        for name, (_, y) in sets.items():
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
                raise ValueError(f"{name} has labels outside 0..{classes - 1} (the model has {classes} classes): "
                                 f"min {int(y.min())}, max {int(y.max())}")

        rng = np.random.default_rng(seed)
        n_fit = min(len(sets["members"][0]), len(sets["nonmembers"][0]), max_rows)
        n_score = min(len(sets["forgotten"][0]), len(sets["test_out"][0]), max_rows)
        rows = {"members": n_fit, "nonmembers": n_fit, "forgotten": n_score, "test_out": n_score}
        if n_score == 0:
            return {**dict.fromkeys(AUCS), "rows": rows}
        sub = {}
        for name, (x, y) in sets.items():
            keep = torch.from_numpy(np.sort(rng.choice(len(x), size=rows[name], replace=False)))
            sub[name] = (x[keep], y[keep])

        logits = {name: _logits(model, x, batch_size) for name, (x, _) in sub.items()}
        for name, z in logits.items():
            if not torch.isfinite(z).all():
                raise ValueError(f"the model gives non-finite logits on {name}")
        loss = {name: nn.functional.cross_entropy(logits[name], sub[name][1], reduction="none").numpy()
                for name in sub}
        probs = {name: z.softmax(-1).numpy() for name, z in logits.items()}
        data = {name: (x.numpy(), y.numpy()) for name, (x, y) in sub.items()}

        from sklearn.metrics import roc_auc_score
        truth = np.r_[np.ones(n_score), np.zeros(n_score)]
        loss_auc = float(roc_auc_score(truth, -np.r_[loss["forgotten"], loss["test_out"]]))
        threshold_auc, black_box_auc = _art_aucs(model, data, probs, classes, seed, truth)
    finally:
        model.to(device)
        for m, mode in modes.items():
            m.train(mode)
    return {"loss_threshold_auc": threshold_auc, "black_box_auc": black_box_auc, "loss_auc": loss_auc, "rows": rows}


def _art_aucs(model, data, probs, classes, seed, truth) -> tuple[float, float]:
    """The two ART attacks, fitted on members vs nonmembers, scored forgotten vs test_out (see the module doc)."""
    with _quiet("art"):  # its import logs too (art.config: ART_DATA_PATH)
        return _fit_and_score(model, data, probs, classes, seed, truth)


def _fit_and_score(model, data, probs, classes, seed, truth) -> tuple[float, float]:
    try:  # ART, and scikit-learn (a dependency of varilab and of ART)
        from art.attacks.inference.membership_inference import MembershipInferenceBlackBox
        from art.estimators.classification import PyTorchClassifier
        from sklearn.compose import ColumnTransformer
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler
    except ImportError:
        raise ImportError(f"membership inference needs the Adversarial Robustness Toolbox: {INSTALL}") from None

    (mx, my), (nx, ny) = data["members"], data["nonmembers"]
    est = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=(mx.shape[1],), nb_classes=classes,
                            clip_values=(0.0, 1.0), device_type="cpu")

    # Loss threshold. ART computes the losses itself (PyTorchClassifier has no compute_loss_from_predictions) and
    # feeds its attack model the float32 columns [loss, one-hot label]: keep the loss alone, and scale it and fit
    # in float64 (ART's scaler and so the logistic regression would run in float32, whose probabilities tie
    # rows with different losses when the slope is small).
    threshold = MembershipInferenceBlackBox(est, input_type="loss", attack_model_type="lr", scaler_type=None)
    lr = make_pipeline(ColumnTransformer([("loss", "passthrough", [0])]), FunctionTransformer(_float64),
                       StandardScaler(), LogisticRegression())
    threshold.attack_model = lr
    threshold.fit(x=mx, y=my, test_x=nx, test_y=ny)
    if lr.n_features_in_ != 1 + classes:  # the layout this relies on: the loss, then the one-hot label
        raise RuntimeError(f"ART's loss attack gave its model {lr.n_features_in_} features, expected 1 + {classes}"
                           " (the loss, then the one-hot label): has MembershipInferenceBlackBox changed?")
    scores = [threshold.infer(*data[name], probabilities=True).reshape(-1) for name in ("forgotten", "test_out")]
    threshold_auc = float(roc_auc_score(truth, np.concatenate(scores)))

    # Black box: a random forest on the class probabilities and the one-hot label.
    black_box = MembershipInferenceBlackBox(est, input_type="prediction", attack_model_type="rf")
    black_box.attack_model.set_params(random_state=seed)
    black_box.fit(x=mx, y=my, test_x=nx, test_y=ny, pred=probs["members"], test_pred=probs["nonmembers"])
    scores = [black_box.infer(*data[name], pred=probs[name], probabilities=True).reshape(-1)
              for name in ("forgotten", "test_out")]
    black_box_auc = float(roc_auc_score(truth, np.concatenate(scores)))
    return threshold_auc, black_box_auc


def _rows(name: str, pair) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) as CPU tensors, float32 [N, D] and int64 [N], checked: 2-d finite x, 1-d integer y of the same length."""
    try:
        x, y = pair
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair (x, y)") from None
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach().cpu()
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).detach().cpu()
    if x.ndim != 2:
        raise ValueError(f"{name}: x must be rows [N, D], got shape {tuple(x.shape)}")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"{name}: y must be labels [N] with N = {len(x)} rows of x, got shape {tuple(y.shape)}")
    if len(y) and (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool):
        raise ValueError(f"{name}: y must be integer class labels, got {y.dtype}")
    x = x.to(torch.float32)
    bad = (~torch.isfinite(x)).any(1)
    if bad.any():
        raise ValueError(f"{name}: {int(bad.sum())} rows of x are not finite (NaN or inf), the first at row "
                         f"{int(bad.nonzero()[0])}")
    return x, y.to(torch.int64)


def _float64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


@torch.no_grad()
def _logits(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """model(x) [N, C], float32 on the CPU, `batch_size` rows at a time."""
    if len(x) == 0:
        return torch.empty(0, 0)
    return torch.cat([model(b).float() for b in x.split(batch_size)])


@contextmanager
def _quiet(logger: str):
    """The logger's INFO and WARNING messages dropped for the duration (ART logs through "art.*")."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)
