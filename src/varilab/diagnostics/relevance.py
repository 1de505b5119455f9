"""ARD relevance and latent traversals: what each latent does to the decoder's output.

relevance_i = tau_i * E_x || d mean(x|z) / d z_i ||^2 at z = E_q[z|x], with tau_i the prior variance
(ARD: an axis matters when its prior is wide and the decoder listens to it).
"""
from __future__ import annotations

import torch

from .posterior import Posteriors


@torch.no_grad()
def decoder_sensitivity(decode, z: torch.Tensor, h: float = 1e-2, chunk: int = 65_536) -> torch.Tensor:
    """E_x || d mean(x|z)/d z_i ||^2 per dimension by central differences, [d]; `decode(z)` returns a Distribution
    (its mean is used) or the decoded tensor itself (a point-cloud generator's points)."""
    n, d = z.shape
    eye = torch.eye(d, device=z.device, dtype=z.dtype) * h
    total = torch.zeros(d, device=z.device, dtype=z.dtype)
    rows = max(1, chunk // (2 * d))
    for zb in z.split(rows):
        shifted = torch.cat([zb[None] + eye[:, None], zb[None] - eye[:, None]])  # [2d, B, d]
        decoded = decode(shifted.reshape(-1, d))
        mean = decoded if isinstance(decoded, torch.Tensor) else decoded.mean
        out = mean.reshape(2, d, len(zb), -1)
        total += ((out[0] - out[1]) / (2 * h)).pow(2).sum(-1).sum(-1)
    return total / n


def ard_relevance(model, post: Posteriors, max_points: int = 1000) -> torch.Tensor:
    """tau_i * E_x ||d mean / d z_i||^2 on up to `max_points` posterior means, [d]."""
    z = post.mean[:max_points]
    return post.prior_var * decoder_sensitivity(model.decode, z)


@torch.no_grad()
def traversals(model, z0: torch.Tensor, dims: list[int], span: float = 3.0, steps: int = 9) -> torch.Tensor:
    """Decoder means along each chosen axis from z0 [d], z_i in prior-std units -span..span: [len(dims), steps, D]."""
    grid = torch.linspace(-span, span, steps, device=z0.device)
    z = z0.repeat(len(dims), steps, 1)  # [n_dims, steps, d]
    for row, i in enumerate(dims):
        z[row, :, i] = grid
    out = model.decode(z.reshape(-1, z0.shape[0])).mean
    return out.reshape(len(dims), steps, -1)


def relevant_dims(relevance: torch.Tensor, share: float = 0.99) -> list[int]:
    """The fewest axes whose relevance adds up to `share` of the total, largest first."""
    order = torch.argsort(relevance, descending=True)
    cum = torch.cumsum(relevance[order], 0) / relevance.sum().clamp_min(1e-30)
    n = min(len(order), int((cum < share).sum()) + 1)
    return sorted(int(i) for i in order[:n])
