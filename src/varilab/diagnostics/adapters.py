"""What encoders return, as a diagonal posterior over a flat latent vector [N, d] plus the latent's shape.

Accepted without glue:
- a `torch.distributions` posterior of any shape [N, ...]: `Independent(Normal(mu, sigma), 1)`, a plain
  `Normal(mu, sigma)` of batch shape [N, d], image latents [N, C, H, W];
- an object with `.mean` and `.logvar` / `.log_var` / `.std` / `.var` (a diffusers `DiagonalGaussianDistribution`),
  or one holding it as `.latent_dist` (a diffusers `AutoencoderKLOutput`);
- a mapping with a mean key (`mean`, `mu`, `loc`, `embedding`) and a log-variance key (`log_var`, `logvar`,
  `log_covariance`), such as pythae's encoder output (a ModelOutput, from `model.encoder` itself).
Anything else is a TypeError that names the adapter to use (`varilab.diagnostics.MeanLogVar`).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.distributions import Distribution, Independent, Normal

MEAN_KEYS = ("mean", "mu", "loc", "embedding")
LOG_VAR_KEYS = ("log_var", "logvar", "log_covariance")
HOW = ("a torch.distributions posterior, an object with .mean and .logvar or .std (e.g. a diffusers "
       "DiagonalGaussianDistribution), a mapping with mean and log-variance keys, or (mean, log_var) through "
       "varilab.diagnostics.MeanLogVar(fn)")


def _normal(mean: torch.Tensor, std: torch.Tensor, n: int) -> tuple[Independent, tuple]:
    """N(mean, diag std^2) over the flattened latent, [n, d], and the latent's own shape."""
    mean, std = torch.broadcast_tensors(mean, std)
    if mean.ndim < 2 or mean.shape[0] != n:
        raise ValueError(f"the encoder's mean for {n} points must have shape [{n}, ...], got {list(mean.shape)}")
    shape = tuple(mean.shape[1:])
    flat = Normal(mean.reshape(n, -1), std.reshape(n, -1), validate_args=False)
    return Independent(flat, 1), shape


def mean_log_var(out: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, log-variance) of a mapping with a mean key and a log-variance key, such as pythae's ModelOutput."""
    mean = next((out[k] for k in MEAN_KEYS if k in out), None)
    log_var = next((out[k] for k in LOG_VAR_KEYS if k in out), None)
    if mean is None or log_var is None:
        raise TypeError(f"encode(x) returned a mapping with keys {list(out.keys())}, without a mean key "
                        f"({', '.join(MEAN_KEYS)}) and a log-variance key ({', '.join(LOG_VAR_KEYS)}); use "
                        "varilab.diagnostics.MeanLogVar(lambda x: (mean, log_var))")
    return mean, log_var


def as_posterior(out, n: int) -> tuple[Distribution, tuple]:
    """(posterior with batch shape [n] and event shape [d], the latent's shape, e.g. (d,) or (C, H, W))."""
    out = getattr(out, "latent_dist", out)  # diffusers' AutoencoderKLOutput
    if isinstance(out, Distribution):
        full = tuple(out.batch_shape + out.event_shape)
        if len(full) < 2 or full[0] != n:
            raise ValueError(f"encode(x) of {n} points must give a posterior of shape [{n}, ...], got batch shape "
                             f"{list(out.batch_shape)} and event shape {list(out.event_shape)}")
        if len(out.batch_shape) == 1 and len(out.event_shape) == 1:
            return out, full[1:]
        base = out.base_dist if isinstance(out, Independent) else out
        if isinstance(base, Normal):
            return _normal(base.loc.expand(full), base.scale.expand(full), n)
        if len(full) == 2 and out.event_shape == ():
            return Independent(out, 1), full[1:]  # e.g. Bernoulli(logits [n, d])
        raise TypeError(f"a {type(base).__name__} posterior of shape {list(full)} cannot be flattened to [{n}, d]; "
                        "give a vector latent (event shape [d])")
    if isinstance(out, Mapping):
        mean, log_var = mean_log_var(out)
        return _normal(mean, (0.5 * log_var).exp(), n)  # sigma = exp(log_var / 2)
    mean = getattr(out, "mean", None)
    if torch.is_tensor(mean):
        for name, to_std in (("logvar", lambda v: (0.5 * v).exp()), ("log_var", lambda v: (0.5 * v).exp()),
                             ("std", lambda v: v), ("var", lambda v: v.sqrt())):
            value = getattr(out, name, None)
            if torch.is_tensor(value):
                return _normal(mean, to_std(value), n)
    raise TypeError(f"encode(x) returned {type(out).__name__}; diagnostics take {HOW}")
