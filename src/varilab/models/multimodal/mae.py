"""A convolutional masked autoencoder over modalities (PHG-MAE, papers.md section 11).

A row holds every modality of a scene, flattened in the order of `MultiModalConfig.modalities`. The inputs are the
modalities other than the task; each forward pass in training keeps a random non-empty subset of them (`masking`),
zeroes the others and marks which are kept with one indicator plane each, and the network predicts every modality,
the task included, from what it sees: loss = sum_m lambda_m loss_m (squared error per pixel for an input modality,
cross-entropy per pixel for the task). The task modality is never an input, in training or at evaluation.

At inference the task's class probabilities are averaged (or their median taken) over E sampled subsets:
P_hat = mean_e softmax(f(x restricted to S_e)), an ensemble over hyper-edges drawn from one network."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .masking import sample_subsets


@dataclass(frozen=True)
class MultiModalConfig:
    modalities: tuple[tuple[str, int], ...]  # (name, channels) in the order of a row
    task: str  # the modality predicted and never seen: one channel of class indices
    classes: int  # the task's classes
    size: tuple[int, int]  # H, W
    width: int = 24  # channels of the first block (then 2x and 4x)
    p_mask: float = 0.5  # probability that an input modality is dropped in a training pass
    weights: tuple[float, ...] | None = None  # lambda_m per modality in row order (None: 1 each)

    def __post_init__(self):
        names = [name for name, _ in self.modalities]
        if self.task not in names:
            raise ValueError(f"the task {self.task!r} is not among the modalities {', '.join(names)}")
        if len(names) < 2:
            raise ValueError("a multi-modal MAE needs the task and at least one input modality")
        if self.weights is not None and len(self.weights) != len(names):
            raise ValueError(f"weights: {len(self.weights)} given for {len(names)} modalities")

    @property
    def inputs(self) -> tuple[tuple[str, int], ...]:
        return tuple((n, c) for n, c in self.modalities if n != self.task)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
                         nn.ReLU())


class MultiModalMAE(nn.Module):
    """A small U-Net: three blocks down (width, 2 width, 4 width), two up with skips, a 1 x 1 head per pixel."""

    def __init__(self, config: MultiModalConfig):
        super().__init__()
        self.config = c = config
        w = c.width
        c_in = sum(ch for _, ch in c.inputs) + len(c.inputs)  # the kept inputs and one indicator plane each
        self.down = nn.ModuleList([_block(c_in, w), _block(w, 2 * w), _block(2 * w, 4 * w)])
        self.up = nn.ModuleList([_block(6 * w, 2 * w), _block(3 * w, w)])
        self.head = nn.Conv2d(w, sum(ch for _, ch in c.inputs) + c.classes, 1)

    def split(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Rows [B, D] -> {modality: [B, C, H, W]}."""
        h, w = self.config.size
        parts = rows.split([ch * h * w for _, ch in self.config.modalities], dim=1)
        return {name: p.reshape(len(rows), ch, h, w) for (name, ch), p in zip(self.config.modalities, parts)}

    def forward(self, x: dict[str, torch.Tensor], keep: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predictions of every modality from the input modalities in x that `keep` [B, M_in] marks (the task's
        prediction: logits [B, classes, H, W]). Modalities not kept are zeroed; x's task entry is never read."""
        planes = []
        for j, (name, _) in enumerate(self.config.inputs):
            k = keep[:, j, None, None, None].to(x[name].dtype)
            planes += [x[name] * k, k.expand(-1, 1, *x[name].shape[2:])]
        # channels-last activations: the CPU's convolutions run about a quarter faster on them (same results)
        h = torch.cat(planes, 1).contiguous(memory_format=torch.channels_last)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h if i == 0 else F.max_pool2d(h, 2))
            skips.append(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = block(torch.cat([F.interpolate(h, size=skip.shape[2:]), skip], 1))
        out = self.head(h).split([ch for _, ch in self.config.inputs] + [self.config.classes], 1)
        return {**{name: o for (name, _), o in zip(self.config.inputs, out)}, self.config.task: out[-1]}

    def all_inputs(self, n: int, device=None) -> torch.Tensor:
        return torch.ones(n, len(self.config.inputs), dtype=torch.bool, device=device)

    def task_probabilities(self, rows: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """softmax of the task's logits [B, classes, H, W] from the kept inputs (default: all of them)."""
        keep = self.all_inputs(len(rows), rows.device) if keep is None else keep
        return self(self.split(rows), keep)[self.config.task].softmax(1)

    def ensemble(self, rows: torch.Tensor, members: int, generator: torch.Generator | None = None,
                 aggregate: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
        """(P_hat [B, classes, H, W], the members' variance [B, H, W]) over `members` sampled subsets per row:
        P_hat = mean_e (or median_e) softmax(f(x restricted to S_e)); the variance of the members' probabilities,
        averaged over classes."""
        if aggregate not in ("mean", "median"):
            raise ValueError(f"aggregate must be mean or median, got {aggregate!r}")
        x = self.split(rows)
        probs = torch.stack([self(x, sample_subsets(len(rows), len(self.config.inputs), self.config.p_mask,
                                                    generator, rows.device))[self.config.task].softmax(1)
                             for _ in range(members)])
        p = probs.mean(0) if aggregate == "mean" else probs.median(0).values
        return p / p.sum(1, keepdim=True), probs.var(0, unbiased=False).mean(1)


def mm_loss(model: MultiModalMAE, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The training objective: a random subset of inputs a row, loss = sum_m lambda_m loss_m, per modality logged."""
    c = model.config
    x = model.split(rows)
    keep = sample_subsets(len(rows), len(c.inputs), c.p_mask, device=rows.device)
    out = model(x, keep)
    terms = {name: F.mse_loss(out[name], x[name]) for name, _ in c.inputs}  # squared error per pixel
    target = x[c.task][:, 0].long()
    terms[c.task] = F.cross_entropy(out[c.task], target)  # cross-entropy per pixel
    if c.weights is None:
        loss = sum(terms.values())
    else:
        weights = dict(zip((n for n, _ in c.modalities), c.weights))
        loss = sum(weights[name] * t for name, t in terms.items())  # sum_m lambda_m loss_m
    with torch.no_grad():  # the target's logit is the largest (an argmax over dim 1 is ~100x slower on a CPU)
        logits = out[c.task]
        acc = (logits.gather(1, target[:, None]) >= logits.amax(1, keepdim=True)).float().mean()
    return {"loss": loss, "pixel_accuracy": acc, **{f"loss_{name}": t.detach() for name, t in terms.items()}}
