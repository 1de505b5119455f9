"""The variational core: objectives over `torch.distributions` posteriors and priors, and the
gradient estimators chosen per latent."""
from .chamfer import chamfer
from .estimators import ESTIMATORS, MovingAverage, draw, leave_one_out, score_term, vimco_signal
from .hierarchical import hierarchical_elbo_terms, hierarchical_log_weights, hierarchical_loss, sample_latent
from .likelihood import log_likelihood
from .objectives import elbo, elbo_terms, free_bits, iwae_bound, iwae_loss, kl, kl_per_dim, log_weights, negative_elbo_terms, nll, vae_loss
from .ratio import compression_ratio, raw_bytes
from .schedules import cyclical, linear_warmup

__all__ = ["ESTIMATORS", "MovingAverage", "chamfer", "compression_ratio", "cyclical", "draw", "elbo", "elbo_terms", "hierarchical_elbo_terms", "hierarchical_log_weights", "hierarchical_loss", "free_bits", "iwae_bound", "iwae_loss", "kl",
           "kl_per_dim", "leave_one_out", "linear_warmup", "log_likelihood", "log_weights", "negative_elbo_terms", "nll", "raw_bytes", "sample_latent", "score_term",
           "vae_loss", "vimco_signal"]
