"""A small convolutional classifier of images (rows [N, H*W] or [N, 1, H, W]), the target of the classifier
attacks: two 3x3 convolutions with ReLU and 2x2 max-pooling, then a hidden layer of 128 units."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Classifier(nn.Module):
    def __init__(self, image_shape: tuple[int, int], classes: int, width: int = 32):
        super().__init__()
        h, w = image_shape
        if h < 4 or w < 4:
            raise ValueError(f"the classifier needs images of at least 4 x 4 pixels, got {h} x {w}")
        self.image_shape, self.classes = (h, w), classes
        self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Flatten())
        self.head = nn.Sequential(nn.Linear(2 * width * (h // 4) * (w // 4), 128), nn.ReLU(), nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, classes]."""
        return self.head(self.features(x.reshape(-1, 1, *self.image_shape)))


def classifier_loss(bound, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy and accuracy for the trainer, which binds the one-hot labels as the condition
    (core.conditioning.Conditioned: `.model`, `.cond`)."""
    logits, y = bound.model(x), bound.cond.argmax(-1)
    return {"loss": F.cross_entropy(logits, y), "accuracy": (logits.argmax(-1) == y).float().mean()}
