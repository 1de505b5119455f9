"""Classifier attacks and the evaluation of a purifier against them, as a careful reviewer would run it.

FGSM and L-infinity PGD come from the Adversarial Robustness Toolbox (ART; `pip install 'varilab[robust]'`):
- gray-box: the attack sees the classifier alone; the purifier then cleans its output before classification;
- BPDA (the adaptive attack): PGD on classifier(purify(x)), differentiated straight through the quantiser (the
  one non-differentiable step, whose backward pass is the identity) and through everything else exactly.
A stochastic purifier (z drawn from q rather than its mean) is attacked by expectation over transformation,
the classifier's probabilities averaged over several draws, and scored by its mean accuracy over draws.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

ATTACKS = {"fgsm": "fast gradient sign method, one step of size eps (gray-box)",
           "pgd": "L-infinity projected gradient descent, --steps sign steps of 2.5 eps / steps (gray-box)",
           "bpda": "PGD through the purifier, straight through its quantiser (the adaptive attack)"}
INSTALL = "pip install 'varilab[robust]' (the Adversarial Robustness Toolbox, adversarial-robustness-toolbox==1.20.1)"


class Purified(nn.Module):
    """classifier(purify(x)); with `draws` > 1 and a stochastic purifier, the log of the mean of the classifier's
    probabilities over draws (expectation over transformation), so its gradient is the EOT gradient."""

    def __init__(self, purifier: nn.Module, classifier: nn.Module, draws: int = 1, sample: bool = False):
        super().__init__()
        self.purifier, self.classifier, self.draws, self.sample = purifier, classifier, draws, sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.sample:
            return self.classifier(self.purifier.purify(x))
        logp = torch.stack([self.classifier(self.purifier.purify(x, sample=True)).log_softmax(-1)
                            for _ in range(self.draws)])
        return torch.logsumexp(logp, 0) - np.log(self.draws)  # log (1/K) sum_k p(y | purify_k(x))


def art_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float, steps: int = 20,
               classes: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """x_adv from ART's FGSM ("fgsm") or PGD ("pgd") on `model` (rows or images in [0, 1] -> logits), untargeted,
    against the true labels y."""
    try:
        from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        raise ModuleNotFoundError(f"classifier attacks need the Adversarial Robustness Toolbox: {INSTALL}") from None
    device = next(model.parameters()).device
    modes = {m: m.training for m in model.modules()}  # each module's own mode, restored afterwards
    model.eval()
    classes = classes or int(y.max()) + 1
    est = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=classes,
                            clip_values=(0.0, 1.0), device_type="gpu" if device.type == "cuda" else "cpu")
    if attack == "fgsm":
        art = FastGradientMethod(est, norm=np.inf, eps=eps, batch_size=batch_size)
    elif attack == "pgd":
        art = ProjectedGradientDescent(est, norm=np.inf, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps,
                                       batch_size=batch_size, verbose=False)
    else:
        raise ValueError(f"attack must be fgsm or pgd, got {attack!r}")
    x_adv = art.generate(x.detach().cpu().numpy(), y=y.cpu().numpy())
    for m, mode in modes.items():
        m.train(mode)
    return torch.from_numpy(x_adv).to(x.device)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    hits = sum(int((model(xb).argmax(-1) == yb).sum()) for xb, yb in zip(x.split(batch_size), y.split(batch_size)))
    return hits / len(x)


@torch.no_grad()
def purified_accuracy(purifier, classifier, x, y, sample: bool = False, draws: int = 1, seed: int = 0) -> float:
    """Accuracy of classifier(purify(x)); for a stochastic purifier, the mean over `draws` draws."""
    if not sample:
        return accuracy(Purified(purifier, classifier), x, y)
    torch.manual_seed(seed)
    return float(np.mean([accuracy(Purified(purifier, classifier, 1, True), x, y) for _ in range(draws)]))


@torch.no_grad()
def unchanged_codes(purifier, x: torch.Tensor, x_adv: torch.Tensor) -> tuple[float, float]:
    """(share of latent coordinates, share of points) whose quantised code is the same for x and x_adv."""
    same = purifier.code(x) == purifier.code(x_adv)
    return float(same.float().mean()), float(same.all(-1).float().mean())


def robustness(purifier, classifier, x: torch.Tensor, y: torch.Tensor, attack: str, eps: float, steps: int = 20,
               draws: int = 8, sample: bool = False, seed: int = 0) -> dict:
    """Clean and robust accuracy of `classifier` with and without `purifier` under `attack` at `eps`, and the
    share of unchanged codes. FGSM and PGD are gray-box (crafted on the classifier alone); BPDA is PGD crafted on
    classifier(purify(x)) itself, with EOT over `draws` draws when `sample` makes the purifier stochastic."""
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(ATTACKS)}, got {attack!r}")
    purifier.eval()
    classifier.eval()
    torch.manual_seed(seed)
    classes = getattr(classifier, "classes", None)
    crafted = classifier if attack != "bpda" else Purified(purifier, classifier, draws, sample).eval()
    x_adv = art_attack(crafted, x, y, "fgsm" if attack == "fgsm" else "pgd", eps, steps, classes)
    coords, points = unchanged_codes(purifier, x, x_adv)
    return {"attack": attack, "eps": eps, "steps": steps if attack != "fgsm" else 1, "n": len(x),
            "stochastic": sample, "draws": draws if sample else 1,
            "clean_accuracy": accuracy(classifier, x, y),
            "clean_accuracy_purified": purified_accuracy(purifier, classifier, x, y, sample, draws, seed),
            "robust_accuracy": accuracy(classifier, x_adv, y) if attack != "bpda" else None,
            "robust_accuracy_purified": purified_accuracy(purifier, classifier, x_adv, y, sample, draws, seed),
            "unchanged_codes": coords, "unchanged_points": points,
            "max_perturbation": float((x_adv - x).abs().max())}
