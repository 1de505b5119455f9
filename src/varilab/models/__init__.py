"""The networks and their losses, one sub-package per family with three or more files (vae, diffusion, inverse,
robust, codec) and flat files elsewhere (sae, pvrnn, latent_sde, likelihoods). The VAE family's models are
re-exported here: `from varilab.models import VAE, VAEConfig`."""
from .vae import *  # noqa: F401,F403
