"""Attacks on a variational encoder, as plain functions of any `encode(x) -> posterior`.

The posterior collapse attack (PCA) perturbs an image within an L-infinity ball so that
the encoder's posterior q(z|x) = N(mu, diag sigma^2) moves against the Gaussian N(0, v I):

    L(x) = 1/2 sum_i ( -ln sigma_i^2 - 1 + (mu_i^2 + sigma_i^2) / v )  =  KL(q || N(0, v I)) - d/2 ln v

- "collapse" (PCA-): v = 1e-8, descent; the posterior shrinks to a point at 0, so the decoder (and any
  diffusion model reading the latent) sees a code that carries nothing of the image;
- "push" (PCA+): v = 1, ascent; the posterior is pushed away from the prior, off the codes the decoder knows.

Steps are projected gradient steps on the sign of the gradient (L-infinity PGD): x <- Proj(x -+ a sign(grad L)),
Proj clipping to ||x - x0||_inf <= eps and to [0, 1]. `random_sign` is the control of equal L-infinity norm.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Callable

import torch

from ...diagnostics.adapters import MEAN_KEYS, as_posterior

DIRECTIONS = {"collapse": (1e-8, False), "push": (1.0, True)}  # direction -> (v, ascend)


def collapse_loss(posterior, v: float) -> torch.Tensor:
    """L = 1/2 sum_i (-ln sigma_i^2 - 1 + (mu_i^2 + sigma_i^2) / v) per example, [N], for any posterior that
    `diagnostics.adapters.as_posterior` reads (a diagonal Gaussian over a vector or an image-shaped latent)."""
    n = _batch_size(posterior)
    q, _ = as_posterior(posterior, n)
    mu, var = q.mean, q.variance
    return 0.5 * (-var.log() - 1 + (mu * mu + var) / v).sum(-1)


def _batch_size(out) -> int:
    """The number of points an encoder's output describes (the first dimension of its mean)."""
    out = getattr(out, "latent_dist", out)
    if isinstance(out, torch.distributions.Distribution):
        return (out.batch_shape + out.event_shape)[0]
    if isinstance(out, Mapping):
        return next(out[k] for k in (*MEAN_KEYS, *out) if k in out).shape[0]
    return out.mean.shape[0]


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """The nearest point to x_adv with ||x_adv - x||_inf <= eps and every value in [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def pgd(loss: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float, steps: int, step_size: float,
        ascend: bool = True, random_start: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """L-infinity projected gradient descent (or ascent) with sign steps: x_{k+1} = Proj(x_k +- a sign(grad loss)).

    `loss(x)` returns one value per example ([N]); examples do not interact, so the gradient of the sum is each
    example's own. With `random_start` the walk starts from a uniform point of the ball. Returns x_adv, detached."""
    _check_attack(x, eps, steps, step_size)
    x = x.detach()
    x_adv = x.clone()
    if random_start:
        u = torch.rand(x.shape, generator=generator, device="cpu").to(x.device)
        x_adv = project(x + eps * (2 * u - 1), x, eps)
    sign = 1.0 if ascend else -1.0
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(x_adv).sum(), x_adv)
        x_adv = project(x_adv.detach() + sign * step_size * grad.sign(), x, eps)
    return x_adv.detach()


def posterior_attack(encode: Callable, x: torch.Tensor, eps: float, steps: int = 40, step_size: float | None = None,
                     direction: str = "collapse") -> torch.Tensor:
    """The posterior collapse attack on `encode` (PCA- for "collapse", PCA+ for "push"); the step defaults to
    eps / 8 (2/255 at eps = 16/255, the public code's setting)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    v, ascend = DIRECTIONS[direction]
    return pgd(lambda xa: collapse_loss(encode(xa), v), x, eps, steps, step_size or eps / 8, ascend=ascend)


def random_sign(x: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The control: x + eps * s with independent random signs s = +-1, clipped to [0, 1]."""
    s = torch.randint(0, 2, x.shape, generator=generator, device="cpu").to(x.device) * 2.0 - 1.0
    return project(x + eps * s, x, eps)


def _check_attack(x: torch.Tensor, eps: float, steps: int, step_size: float) -> None:
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if steps < 1 or not step_size > 0:
        raise ValueError(f"steps must be a positive integer and the step size positive, got {steps} and {step_size}")
    if not torch.isfinite(x).all():
        raise ValueError("the images hold NaN or Inf values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"attacks work on images in [0, 1], but these range over [{lo:.4g}, {hi:.4g}]; "
                         "divide 0-255 pixels by 255")
