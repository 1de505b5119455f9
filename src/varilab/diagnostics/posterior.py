"""One pass of the encoder over a data set, kept as per-point posterior means, variances and KLs.

Works on anything with `encode(x)`, or a function x -> posterior, returning what `adapters.as_posterior`
accepts (a factorised posterior of any shape, flattened to a vector of coordinates), or an encoder module whose
forward does (pythae's `model.encoder`); `prior()` is optional and defaults to N(0, I). `MeanLogVar` adapts a plain
callable returning (mean, log-variance), or a mapping with mean and log-variance keys (pythae's ModelOutput).
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from ..core.conditioning import split
from ..core.distributions import diag_normal
from .adapters import as_posterior, mean_log_var

NO_ENCODE = ("pass a function x -> posterior, or wrap a (mean, log_var) function in "
             "varilab.diagnostics.MeanLogVar")


class MeanLogVar(nn.Module):
    """Adapter: a function x -> (mean, log_var), or x -> a mapping with mean and log-variance keys (pythae's
    ModelOutput with `embedding` and `log_covariance`), as a model with encode(x) -> N(mean, diag exp(log_var))."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def encode(self, x):
        out = self.fn(x)
        if isinstance(out, Mapping):
            return diag_normal(*mean_log_var(out))
        if not isinstance(out, (tuple, list)) or len(out) != 2 or not all(map(torch.is_tensor, out)):
            got = type(out).__name__ + (f" of {len(out)} items" if isinstance(out, (tuple, list)) else "")
            raise TypeError(f"MeanLogVar(fn): fn(x) returned {got}; it must return (mean, log_var), two tensors "
                            "[N, d], or a mapping with mean and log-variance keys")
        return diag_normal(*out)


def standard_normal(d: int, device=None) -> Independent:
    z = torch.zeros(d, device=device)
    return Independent(Normal(z, torch.ones_like(z), validate_args=False), 1)


def _base(q: Distribution) -> Distribution:
    return q.base_dist if isinstance(q, Independent) else q


def _kl_dims(base: Distribution, prior: Distribution) -> torch.Tensor:
    """KL(q(z_i|x) || p(z_i)) per dimension; a prior that is not factorised (a mixture, e.g. a VampPrior)
    is replaced by the Gaussian with its per-dimension mean and variance."""
    pb = _base(prior)
    try:
        return kl_divergence(base, pb)
    except NotImplementedError:
        return kl_divergence(base, Normal(prior.mean, prior.variance.sqrt(), validate_args=False))


@dataclass
class Posteriors:
    """Per-point posterior statistics over a data set: mean and variance of q(z|x), KL per dimension."""

    mean: torch.Tensor  # [N, d]  E_q[z|x]
    var: torch.Tensor  # [N, d]  Var_q[z|x]
    kl: torch.Tensor  # [N, d]  KL(q(z_i|x) || p(z_i))
    prior_var: torch.Tensor  # [d]
    gaussian: bool  # q(z|x) is a diagonal Gaussian (enables the closed-form aggregate density)
    prior_mean: torch.Tensor  # [d]
    shape: tuple = ()  # the latent's own shape, e.g. (d,) or (C, H, W) for image latents (d = its product)

    @property
    def dim(self) -> int:
        return self.mean.shape[1]


def model_device(model, default: torch.device) -> torch.device:
    """The device of a module's first parameter or buffer; `default` for anything else."""
    if isinstance(model, nn.Module):
        for t in itertools.chain(model.parameters(), model.buffers()):
            return t.device
    return default


def _encoder(model):
    """model.encode; else the model itself: a function x -> posterior (lambda x: vae.encode(x).latent_dist) or an
    encoder module whose forward returns one (pythae's model.encoder, returning a ModelOutput)."""
    if hasattr(model, "encode"):
        return model.encode
    if not isinstance(model, nn.Module) and callable(model):
        return model
    if isinstance(model, nn.Module):
        def forward(x, *cond):  # a whole model without encode (pythae's VAE takes a dict) is named, not traced
            try:
                return model(x, *cond)
            except (TypeError, KeyError, IndexError, AttributeError) as e:
                raise TypeError(f"{type(model).__name__} has no encode(x) method and calling it on x failed "
                                f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); {NO_ENCODE}") from None
        return forward
    raise TypeError(f"{type(model).__name__} has no encode(x) method and is not callable; {NO_ENCODE}")


def _posterior(model, out, n: int) -> tuple[Distribution, tuple]:
    """as_posterior(out, n); a module without encode(x) whose forward returns no posterior (a decoder, a whole model)
    is named as such."""
    if hasattr(model, "encode") or not isinstance(model, nn.Module):
        return as_posterior(out, n)
    try:
        return as_posterior(out, n)
    except TypeError:
        raise TypeError(f"{type(model).__name__} has no encode(x) method and its forward returned "
                        f"{type(out).__name__}, not a posterior; {NO_ENCODE}") from None


@torch.no_grad()
def encode_dataset(model, x: torch.Tensor, batch_size: int = 4096, cond: torch.Tensor | None = None) -> Posteriors:
    """Encode x in batches; needs a factorised posterior over a vector latent (batch shape [B], event [d]).
    A conditional model gets its conditions `cond` [N, C] alongside."""
    encode = _encoder(model)
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    means, variances, kls = [], [], []
    prior, gaussian = None, True
    device = model_device(model, x.device)  # a model on the GPU gets its data there, batch by batch
    for xb, cb in zip(x.split(batch_size), split(cond, batch_size)):
        xb, cb = xb.to(device), None if cb is None else cb.to(device)
        try:
            out = encode(xb) if cb is None else encode(xb, cb)
        except RuntimeError as e:  # a shape mismatch inside the user's network: name it at the boundary
            raise ValueError(f"encode(x) failed on a batch of shape {list(xb.shape)} ({str(e).splitlines()[0][:160]}); "
                             "x must have the shape the model takes, [N, ...]") from None
        q, shape = _posterior(model, out, len(xb))
        base = _base(q)
        if getattr(model, "levels", 1) > 1:  # z_1 of a hierarchical VAE: its prior is p(z_1|z_2), z_2 ~ q(z_2|z_1)
            prior = model.prior_down(1, model.encode_up(1, q.sample()).sample())
            gaussian = False
        elif prior is None:
            prior = model.prior() if hasattr(model, "prior") else standard_normal(q.event_shape[0], xb.device)
        if prior.event_shape.numel() != q.event_shape[0]:
            raise ValueError(f"the posterior has {q.event_shape[0]} coordinates (latent shape {list(shape)}) but the "
                             f"model's prior has {prior.event_shape.numel()}; x of shape {list(xb.shape[1:])} per point "
                             "is probably not what the model takes")
        gaussian = gaussian and isinstance(base, Normal)
        means.append(base.mean.expand(q.batch_shape + q.event_shape))
        variances.append(base.variance.expand(q.batch_shape + q.event_shape))
        kls.append(_kl_dims(base, prior).expand(q.batch_shape + q.event_shape))
    if isinstance(model, nn.Module):
        model.train(was_training)
    pb = _base(prior)
    d = means[0].shape[1]
    if not isinstance(pb, Normal):
        gaussian = False
    prior_mean = prior.mean.reshape(-1, d).mean(0)
    prior_var = prior.variance.reshape(-1, d).mean(0)
    mean = torch.cat(means)
    return Posteriors(mean, torch.cat(variances), torch.cat(kls), prior_var.to(mean.dtype), gaussian,
                      prior_mean.to(mean.dtype), shape)
