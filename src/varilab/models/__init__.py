"""Model families by name. Every model is an `nn.Module` with `encode(x) -> Distribution`,
`decode(z) -> Distribution` and `prior() -> Distribution`; objectives come from `varilab.core`."""
from __future__ import annotations

import dataclasses

from torch import nn

from .ard_vae import ARDVAE, ARDVAEConfig
from .cvae import CVAE, CVAEConfig, LinearCVAEConfig
from .discrete_vae import DiscreteVAE, DiscreteVAEConfig
from .hvae import HVAE, HVAEConfig, LinearHVAEConfig
from .linear_vae import LinearVAE, LinearVAEConfig
from .vae import VAE, VAEConfig
from .vampprior import VampPriorConfig, VampPriorVAE

# name -> (config dataclass, module class, one-line description)
MODELS = {
    "vae": (VAEConfig, VAE, "MLP VAE, Bernoulli or Gaussian (fixed or learned variance) likelihood"),
    "linear-vae": (LinearVAEConfig, LinearVAE, "linear encoder and decoder, exact marginal likelihood"),
    "discrete-vae": (DiscreteVAEConfig, DiscreteVAE, "categorical latents; train with --estimator score or gumbel"),
    "vampprior": (VampPriorConfig, VampPriorVAE, "MLP VAE with a VampPrior (mixture of posteriors at pseudo-inputs)"),
    "cvae": (CVAEConfig, CVAE, "conditional VAE; needs --condition label or top-half"),
    "linear-cvae": (LinearCVAEConfig, CVAE, "the linear conditional VAE of the theory"),
    "hvae": (HVAEConfig, HVAE, "two-level hierarchical VAE, a beta per level, learned or fixed encoder variance"),
    "linear-hvae": (LinearHVAEConfig, HVAE, "the linear two-level hierarchical VAE of the theory"),
    "ard-vae": (ARDVAEConfig, ARDVAE, "VAE with an ARD prior N(0, diag(tau)) re-estimated from the posterior"),
}


def build_model(name: str, x_dim: int, **options) -> nn.Module:
    """Build a model by name; options a family does not use are ignored (e.g. `hidden` for linear-vae)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    config_cls, model_cls, _ = MODELS[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    latent_dim = options.get("latent_dim", 1)
    if int(latent_dim) < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
    hidden = options.get("hidden")
    if hidden is not None and any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden layer sizes must be positive, got {list(hidden)}")
    kwargs = {k: v for k, v in options.items() if k in fields and v is not None}
    if "image_shape" in kwargs:
        kwargs["image_shape"] = tuple(kwargs["image_shape"])
    if "hidden" in kwargs:
        kwargs["hidden"] = tuple(int(h) for h in kwargs["hidden"])
    return model_cls(config_cls(x_dim=x_dim, **kwargs))


CONDITIONAL = ("cvae", "linear-cvae")

__all__ = ["MODELS", "CONDITIONAL", "CVAE", "CVAEConfig", "LinearCVAEConfig", "ARDVAE", "ARDVAEConfig", "HVAE", "HVAEConfig", "LinearHVAEConfig", "VampPriorConfig",
           "VampPriorVAE", "DiscreteVAE", "DiscreteVAEConfig", "LinearVAE", "LinearVAEConfig", "VAE", "VAEConfig", "build_model"]
