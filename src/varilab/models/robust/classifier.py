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

    # The feature extractor phi (the convolutions and the hidden layer) and the last linear layer on top of it: what
    # unlearning by representations (LAF) changes and what it leaves alone.
    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """phi(x): the hidden layer's activations [N, 128]."""
        return self.head[1](self.head[0](self.features(x.reshape(-1, 1, *self.image_shape))))

    def classify(self, h: torch.Tensor) -> torch.Tensor:
        """Logits [N, classes] of representations h [N, 128]: forward(x) == classify(represent(x))."""
        return self.head[2](h)

    def extractor_parameters(self) -> list[nn.Parameter]:
        return [*self.features.parameters(), *self.head[0].parameters()]


def classifier_loss(bound, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy and accuracy for the trainer, which binds the one-hot labels as the condition
    (core.conditioning.Conditioned: `.model`, `.cond`)."""
    logits, y = bound.model(x), bound.cond.argmax(-1)
    return {"loss": F.cross_entropy(logits, y), "accuracy": (logits.argmax(-1) == y).float().mean()}
