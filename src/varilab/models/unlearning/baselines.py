"""The baselines LAF is compared with, each a few epochs of Adam on a trained classifier: fine-tuning on the
remaining rows, gradient ascent on the forgotten rows, and training on the forgotten rows under random labels beside
the remaining ones. (Retraining from scratch on the remaining rows is the trainer's own job.) Each modifies the model
in place and returns its per-epoch metrics; with nothing to forget each returns [] and leaves the model as it was."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .split import Split, batches


@dataclass
class BaselineConfig:
    epochs: int = 1  # passes over the rows the method steps on
    lr: float = 1e-3  # Adam's step size
    batch_size: int = 128


def _steps(model: nn.Module, config: BaselineConfig, seed: int, epoch_fn) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = []
    model.train()
    for epoch in range(1, config.epochs + 1):
        losses = [_step(opt, loss) for loss in epoch_fn(g)]
        history.append({"epoch": epoch, "loss": sum(losses) / max(len(losses), 1)})
    model.eval()
    return history


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def finetune(model: nn.Module, split: Split, config: BaselineConfig, seed: int = 0) -> list[dict]:
    """Cross-entropy on the remaining rows only: forgetting by the forgotten rows' absence (catastrophic forgetting)."""
    if len(split.forget) == 0:
        return []
    dev = _device(model)

    def epoch(g):
        for rows in batches(split, "remaining", split.remain, config.batch_size, g):
            yield F.cross_entropy(model(split.x[rows].to(dev)), split.y[rows].to(dev))
    return _steps(model, config, seed, epoch)


def ascent(model: nn.Module, split: Split, config: BaselineConfig, seed: int = 0) -> list[dict]:
    """Gradient ascent on the forgotten rows' cross-entropy (minimising -CE): the loss is unbounded, so the method is
    as good as its step size and its number of steps."""
    if len(split.forget) == 0:
        return []
    dev = _device(model)

    def epoch(g):
        for rows in batches(split, "forgotten", split.forget, config.batch_size, g):
            yield -F.cross_entropy(model(split.x[rows].to(dev)), split.y[rows].to(dev))  # ascend CE(f(x_f), y_f)
    return _steps(model, config, seed, epoch)


def random_labels(model: nn.Module, split: Split, config: BaselineConfig, seed: int = 0,
                  classes: int | None = None) -> list[dict]:
    """Each step: cross-entropy on a batch of remaining rows with their labels plus a batch of forgotten rows, each
    under a label drawn uniformly from the other classes (drawn afresh every step)."""
    if len(split.forget) == 0:
        return []
    dev = _device(model)
    classes = classes or int(split.y.max()) + 1
    share = max(1, round(config.batch_size * len(split.forget) / len(split.x)))  # forgotten rows a step, pro rata

    def epoch(g):
        forgotten = _cycle(split, g, share)
        for rows in batches(split, "remaining", split.remain, config.batch_size, g):
            f = next(forgotten)
            shift = torch.randint(1, classes, (len(f),), generator=g)
            wrong = (split.y[f] + shift) % classes  # uniform over the classes other than the true one
            yield (F.cross_entropy(model(split.x[rows].to(dev)), split.y[rows].to(dev), reduction="sum")
                   + F.cross_entropy(model(split.x[f].to(dev)), wrong.to(dev), reduction="sum")) / (len(rows) + len(f))
    return _steps(model, config, seed, epoch)


def _cycle(split: Split, g: torch.Generator, size: int):
    while True:
        yield from batches(split, "forgotten", split.forget, size, g)
