"""The VAE family's models by name, and `build_model`. Every model is an `nn.Module` with `encode(x) -> Distribution`,
`decode(z) -> Distribution` and `prior() -> Distribution`; objectives come from `varilab.core`. The models' one-line
descriptions are the family's (varilab.families.vae.MODELS); this table says how to build each."""
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

# name -> (config dataclass, module class)
MODELS = {
    "vae": (VAEConfig, VAE),
    "linear-vae": (LinearVAEConfig, LinearVAE),
    "discrete-vae": (DiscreteVAEConfig, DiscreteVAE),
    "vampprior": (VampPriorConfig, VampPriorVAE),
    "cvae": (CVAEConfig, CVAE),
    "linear-cvae": (LinearCVAEConfig, CVAE),
    "hvae": (HVAEConfig, HVAE),
    "linear-hvae": (LinearHVAEConfig, HVAE),
    "ard-vae": (ARDVAEConfig, ARDVAE),
}


def build_model(name: str, x_dim: int, **options) -> nn.Module:
    """Build a model by name; options a family does not use are ignored (e.g. `hidden` for linear-vae)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    config_cls, model_cls = MODELS[name]
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
