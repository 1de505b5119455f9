"""DiffuseVAE (Pandey et al., 2022), first form: a VAE gives a low-dimensional latent z and a blurry image
x_hat = E[x|z]; a DDPM conditioned on x_hat, concatenated to x_t as an input channel, refines it.

Training is in two stages: the VAE on the data by its ELBO, then the conditional DDPM on pairs
(x, x_hat) where x_hat = E[x|z] at a fresh posterior sample z ~ q(z|x) for every batch, so that the
condition seen in training spreads like the one seen in generation, x_hat = E[x|z] with z ~ p(z). Sampling draws
z ~ p(z), decodes x_hat = E[x|z] and runs the conditional sampler from noise. With a deterministic
sampler (DDIM) and fixed noise, the refined sample is a function of z alone, so moving z moves it.

Optionally (`fit_latent_prior`), z is drawn instead from a Gaussian mixture fit after stage 1 to codes
z ~ q(z|x) of the training set, the ex-post density estimate of the paper's public code (`expost.py`).
"""
from __future__ import annotations

import torch
from torch import nn

from .denoiser import Denoiser
from .expost import GaussianMixturePrior

PRIORS = ("normal", "expost")


class DiffuseVAE(nn.Module):
    def __init__(self, vae: nn.Module, denoiser: Denoiser, latent_prior: GaussianMixturePrior | None = None):
        super().__init__()
        if denoiser.config.cond_channels != 1:
            raise ValueError("DiffuseVAE's denoiser takes the VAE output as one conditioning channel (cond_channels=1)")
        self.vae, self.denoiser, self.latent_prior = vae, denoiser, latent_prior

    @torch.no_grad()
    def fit_latent_prior(self, x: torch.Tensor, components: int = 10, seed: int = 0) -> GaussianMixturePrior:
        """Fit the ex-post mixture to z ~ q(z|x) over the rows of x and sample from it from now on."""
        g = torch.Generator().manual_seed(seed)
        device = next(self.parameters()).device
        codes = []
        for xb in x.split(4096):
            q = self.vae.encode(xb.to(device))
            eps = torch.randn(q.mean.shape, generator=g).to(q.mean.device)
            codes.append((q.mean + q.stddev * eps).cpu())  # z = mu + sigma eps, z ~ q(z|x)
        self.latent_prior = GaussianMixturePrior.fit(torch.cat(codes), components, seed).to(device)
        return self.latent_prior

    @torch.no_grad()
    def sample_latents(self, n: int, prior: str | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """n codes from p(z) (prior="normal") or the ex-post mixture ("expost"; the default when fitted)."""
        prior = prior or ("expost" if self.latent_prior is not None else "normal")
        if prior not in PRIORS:
            raise ValueError(f"unknown latent prior {prior!r}; choose {' or '.join(PRIORS)}")
        if prior == "expost":
            if self.latent_prior is None:
                raise ValueError("this DiffuseVAE has no ex-post mixture; fit one (train with --expost-gmm K)")
            return self.latent_prior.sample(n, generator=generator)
        p = self.vae.prior()
        device = p.base_dist.loc.device
        return p.base_dist.loc + p.base_dist.scale * torch.randn(n, p.event_shape[0], generator=generator, device=device)

    def after_optimizer_step(self) -> None:
        self.denoiser.after_optimizer_step()  # the denoiser's weight average, if it keeps one

    @torch.no_grad()
    def vae_output(self, z: torch.Tensor) -> torch.Tensor:
        """x_hat = E[x|z], the VAE decoder's mean, [B, D]."""
        return self.vae.decode(z).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, sample: bool = True) -> torch.Tensor:
        """x_hat = E[x|z] at z ~ q(z|x) (the training condition), or at the posterior mean with sample=False."""
        q = self.vae.encode(x)
        return self.vae_output(q.sample() if sample else q.mean)

    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The conditional DDPM's loss on data x, conditioned on `cond` or, by default, on reconstructions
        from fresh posterior samples."""
        return self.denoiser.loss(x, self.reconstruct(x) if cond is None else cond)

    @torch.no_grad()
    def sample(self, n: int | None = None, steps: int = 50, sampler: str = "ddim", z: torch.Tensor | None = None,
               noise: torch.Tensor | None = None, chain: bool = False, generator: torch.Generator | None = None,
               prior: str | None = None):
        """(vae_output, refined[, chain]): x_hat = E[x|z] for z from `prior` (see sample_latents; or the
        given z) and the DDPM's refinement of each, both [n, D] in the data's range."""
        device = next(self.parameters()).device
        if z is None:
            if n is None:
                raise ValueError("pass n, the number of samples, or z, the latents to decode")
            z = self.sample_latents(n, prior, generator)
        x_hat = self.vae_output(z.to(device))
        out = self.denoiser.sample(len(x_hat), steps=steps, sampler=sampler, cond=x_hat, chain=chain,
                                   generator=generator, noise=noise)
        return (x_hat, *out) if chain else (x_hat, out)
