"""The variational core: objectives over `torch.distributions` posteriors and priors."""
from .objectives import elbo, elbo_terms, kl, vae_loss

__all__ = ["elbo", "elbo_terms", "kl", "vae_loss"]
