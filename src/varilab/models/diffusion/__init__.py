"""Diffusion models: the noise processes and time-dependent networks, their samplers, DiffuseVAE and its
ex-post latent prior, and a Gaussian mixture seen through a diffusion path (closed forms for tests)."""
