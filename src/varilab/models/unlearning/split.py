"""The data an unlearning method sees: a classifier's training rows, which of them to forget, and mini-batches over
chosen rows with a record of the rows each step saw (so a test can check that no forgotten row enters a step on the
remaining data)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch


@dataclass
class Split:
    """x [N, D] and labels y [N] of every training row; `forget` [F] the rows to forget (indices into x), `remain`
    the others. `record`, when a list, receives (kind, rows) for every step of every method: kind is "remaining",
    "forgotten" or "labelled"."""
    x: torch.Tensor
    y: torch.Tensor
    forget: torch.Tensor
    record: list | None = field(default=None, repr=False)

    def __post_init__(self):
        keep = torch.ones(len(self.x), dtype=torch.bool)
        keep[self.forget] = False
        self.remain = keep.nonzero().squeeze(1)

    def log(self, kind: str, rows: torch.Tensor) -> None:
        if self.record is not None:
            self.record.append((kind, rows.clone()))


def batches(split: Split, kind: str, rows: torch.Tensor, batch_size: int,
            generator: torch.Generator) -> Iterator[torch.Tensor]:
    """The rows in a random order, `batch_size` at a time (the last batch smaller), each logged as `kind`."""
    order = rows[torch.randperm(len(rows), generator=generator)]
    for b in order.split(batch_size):
        split.log(kind, b)
        yield b
