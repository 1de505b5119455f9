"""Relative entropy coding by importance sampling over shared-seed candidates (Havasi et al., 2019; RECOMBINER's
coder): a sample of q is sent in about KL(q || p) bits, with no quantisation.

The latent is split into blocks of about kappa bits of KL each (`partition`). For a block, encoder and decoder draw
the same 2^kappa candidates x_n ~ p from a seed both know (`candidates`); the encoder picks n with probability
softmax_n(log q(x_n) - log p(x_n)) (`choose`) and sends n in kappa bits; the decoder regenerates x_n. Coded length:
blocks x kappa bits, whatever the block's KL.
"""
from __future__ import annotations

import numpy as np
import torch

SEED_STRIDE = 1_000_003  # seeds of (code seed, image, block) never collide for fewer than 10^6 blocks per image


def partition(kl_bits, kappa: float) -> np.ndarray:
    """Block index of each dimension [D]: dimensions in order, a new block whenever the next one's KL (bits, [D])
    would take the current block's sum above kappa. Every block but single-dimension ones holds at most kappa."""
    kl = np.asarray(kl_bits, dtype=np.float64)
    if kl.ndim != 1 or not np.isfinite(kl).all() or (kl < 0).any():
        raise ValueError("KL per dimension must be a finite, non-negative vector")
    blocks, block, total = np.zeros(len(kl), np.int64), 0, 0.0
    for i, v in enumerate(kl):
        if total > 0 and total + v > kappa:
            block, total = block + 1, 0.0
        blocks[i], total = block, total + v
    return blocks


def seed_of(code_seed: int, image: int, block: int) -> int:
    return (code_seed * SEED_STRIDE + image) * SEED_STRIDE + block


def candidates(seed: int, n: int, dims: int) -> torch.Tensor:
    """The n shared standard-normal candidates [n, dims] of one block, float64, drawn on the CPU from `seed` so
    that every machine, thread count and device regenerates the same numbers."""
    return torch.randn(n, dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def choose(log_weights: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index n ~ softmax(log_weights) per row of [..., N] (the encoder's random choice; the decoder never makes it)."""
    p = torch.softmax(log_weights.double(), -1).reshape(-1, log_weights.shape[-1])
    return torch.multinomial(p.cpu(), 1, generator=generator)[:, 0].reshape(log_weights.shape[:-1])
