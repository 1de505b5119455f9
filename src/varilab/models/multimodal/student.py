"""A student distilled from a multi-modal MAE's ensemble (PHG-MAE): a small network of the same shape that sees
every input modality and learns the ensemble's class probabilities P_hat = mean_e softmax(f(x restricted to S_e)),
drawn once per training scene. Its rows carry P_hat after the scene: [modalities..., P_hat (classes x H x W)]."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .mae import MultiModalMAE


def soft_targets(teacher: MultiModalMAE, rows: torch.Tensor, members: int, seed: int = 0,
                 batch: int = 256) -> torch.Tensor:
    """The teacher's ensemble probabilities [N, classes * H * W] of rows [N, D], `members` subsets per row."""
    g = torch.Generator().manual_seed(seed)
    dev = next(teacher.parameters()).device
    teacher.eval()
    with torch.no_grad():
        return torch.cat([teacher.ensemble(b.to(dev), members, g)[0].reshape(len(b), -1).cpu()
                          for b in rows.split(batch)])


def distill_loss(model: MultiModalMAE, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy of the student's task prediction (every input kept) against the soft targets at the end of each
    row: -sum_c P_hat_c log softmax(f(x))_c per pixel, averaged; the agreement of the two argmaxes is logged."""
    c = model.config
    h, w = c.size
    scene, target = rows[:, :-c.classes * h * w], rows[:, -c.classes * h * w:].reshape(len(rows), c.classes, h, w)
    logits = model(model.split(scene), model.all_inputs(len(rows), rows.device))[c.task]
    loss = -(target * F.log_softmax(logits, 1)).sum(1).mean()  # -sum_c P_hat_c log p_c, per pixel
    return {"loss": loss, "agreement": (logits.argmax(1) == target.argmax(1)).float().mean()}
