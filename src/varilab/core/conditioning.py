"""Conditional models: `encode(x, c)`, `decode(z, c)`, `prior()`. `Conditioned(model, c)` fixes the
condition of a batch, so every objective, estimator and diagnostic written for `encode(x)` and
`decode(z)` applies to conditional models unchanged."""
from __future__ import annotations

import itertools

import torch


class Conditioned:
    """model with its condition c [B, C] bound: encode(x) = model.encode(x, c), decode(z) = model.decode(z, c)."""

    def __init__(self, model, cond: torch.Tensor):
        self.model, self.cond = model, cond

    def encode(self, x):
        return self.model.encode(x, self.cond)

    def decode(self, z):
        return self.model.decode(z, self.cond)

    def prior(self):
        return self.model.prior()


def bind(model, cond: torch.Tensor | None):
    """The model itself when there is no condition, else the model with the condition bound."""
    return model if cond is None else Conditioned(model, cond)


def split(cond: torch.Tensor | None, size: int):
    """Chunks of the condition matching x.split(size), or an endless run of None."""
    return itertools.repeat(None) if cond is None else cond.split(size)
