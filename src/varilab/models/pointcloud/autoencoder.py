"""A point-cloud VAE: a PointNet-lite encoder (Qi et al., 2017) and an MLP decoder to a fixed number of points.

q(l|x) = N(mu(x), diag sigma^2(x)) with [mu, log sigma^2] = MLP(max_n phi(x_n)), phi a shared per-point MLP
3 -> 64 -> 128 -> 256;  p(l) = N(0, I);  x_hat = G(l) = MLP(l) reshaped to [points, 3] (decoder "mlp"), or
x_hat_n = MLP([l, s_n]) for the points s_n of a fixed unit sphere (decoder "fold", FoldingNet-style, Yang et al. 2018).
loss = Chamfer(x, G(l)) + beta KL(q(l|x) || p(l)), l ~ q(l|x) reparameterised.
Squeeze3D (papers.md section 17) uses one as the generator G and a second, trained from another seed, as the
independent encoder E. Chamfer is a per-point mean of squared distances, so beta is small.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributions import Independent

from ...core.chamfer import chamfer
from ...core.distributions import FixedPrior, diag_normal
from ...core.objectives import kl
from ..vae.vae import mlp

POINT_WIDTHS = (3, 64, 128, 256)  # the shared per-point MLP phi
DECODERS = ("mlp", "fold")
CHUNK = 256  # clouds encoded or decoded at once outside training: the point features are CHUNK x N x 256 floats


def fibonacci_sphere(n: int) -> torch.Tensor:
    """n nearly evenly spread points on the unit sphere [n, 3]: the fold decoder's fixed template."""
    i = torch.arange(n, dtype=torch.float32) + 0.5
    polar, azimuth = torch.acos(1 - 2 * i / n), math.pi * (1 + 5 ** 0.5) * i
    return torch.stack([polar.sin() * azimuth.cos(), polar.sin() * azimuth.sin(), polar.cos()], -1)


@dataclass
class PointCloudAEConfig:
    points: int = 512  # points the decoder puts out
    latent: int = 16
    width: int = 256  # hidden width of the encoder's head and of the decoder
    beta: float = 1e-4  # KL weight against the per-point Chamfer
    decoder: str = "mlp"  # "mlp": latent -> width -> width -> points * 3; "fold": a fixed sphere of points, each
    #                       concatenated with the latent, through a shared MLP (latent + 3) -> width -> width -> 3


def check_points(x, name: str = "x") -> torch.Tensor:
    """x as point clouds [B, N, 3] (N >= 1), or a ValueError naming what was received."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of point clouds [B, N, 3], got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != 3 or x.shape[1] < 1:
        raise ValueError(f"{name} must be point clouds of shape [B, N, 3] with N >= 1, got {list(x.shape)}")
    return x


class PointCloudAE(nn.Module):
    def __init__(self, config: PointCloudAEConfig):
        super().__init__()
        if config.points < 1 or config.latent < 1 or config.width < 1:
            raise ValueError(f"points, latent and width must be positive integers, got points={config.points}, "
                             f"latent={config.latent}, width={config.width}")
        if config.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {config.decoder!r}")
        if not config.beta >= 0:
            raise ValueError(f"beta must be >= 0, got {config.beta}")
        self.config = config
        k, w = config.latent, config.width
        self.point_net = mlp(list(POINT_WIDTHS))  # phi: [B, N, 3] -> [B, N, 256]
        self.head = mlp([POINT_WIDTHS[-1], w, 2 * k])
        if config.decoder == "mlp":
            self.decoder = mlp([k, w, w, 3 * config.points])
        else:
            self.decoder = mlp([k + 3, w, w, 3])
            self.register_buffer("template", fibonacci_sphere(config.points), persistent=False)
        self.register_buffer("prior_loc", torch.zeros(k))
        self.register_buffer("prior_scale", torch.ones(k))
        self._prior = FixedPrior()

    def encode(self, x: torch.Tensor) -> Independent:
        """q(l|x) for point clouds x [B, N, 3] (any N: the max-pool makes it order and count invariant)."""
        h = torch.relu(self.point_net(check_points(x))).amax(1)  # max_n phi(x_n)  [B, 256]
        mu, log_var = self.head(h).chunk(2, -1)
        return diag_normal(mu, log_var)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): latents [B, latent] -> point clouds [B, points, 3]."""
        if z.dim() != 2 or z.shape[-1] != self.config.latent:
            raise ValueError(f"z must be latents of shape [B, {self.config.latent}], got {list(z.shape)}")
        if self.config.decoder == "mlp":
            return self.decoder(z).unflatten(-1, (self.config.points, 3))
        t = self.template.expand(len(z), -1, -1)  # [B, points, 3]
        return self.decoder(torch.cat([z[:, None].expand(-1, t.shape[1], -1), t], -1))

    def prior(self) -> Independent:
        return self._prior(self.prior_loc, self.prior_scale)  # p(l) = N(0, I)

    @torch.no_grad()
    def means(self, x: torch.Tensor, batch: int = CHUNK) -> torch.Tensor:
        """The posterior means of clouds x [B, N, 3] -> [B, latent], `batch` clouds at a time (the point features
        take batch x N x 256 floats)."""
        return torch.cat([self.encode(xb).mean for xb in check_points(x).split(batch)])

    @torch.no_grad()
    def decode_all(self, z: torch.Tensor, batch: int = CHUNK) -> torch.Tensor:
        """G(z) for latents [B, latent], `batch` at a time (the folding decoder's features are batch x points x width)."""
        return torch.cat([self.decode(zb) for zb in z.split(batch)])

    def reconstruct(self, x: torch.Tensor, batch: int = CHUNK) -> torch.Tensor:
        """G(mean of q(l|x)) for clouds x [B, N, 3], in chunks."""
        return self.decode_all(self.means(x, batch), batch)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n clouds G(l), l ~ N(0, I) drawn with `generator` (the global generator when None): [n, points, 3]."""
        if n < 1:
            raise ValueError(f"n must be a positive integer, got {n}")
        l = torch.randn(n, self.config.latent, generator=generator, device=self.prior_loc.device)
        return self.decode(l)


def pointcloud_ae_loss(model: PointCloudAE, x: torch.Tensor, beta: float | None = None) -> dict[str, torch.Tensor]:
    """Batch mean of Chamfer(x, G(l)) + beta KL(q(l|x) || N(0, I)), l ~ q(l|x); beta defaults to the config's."""
    beta = model.config.beta if beta is None else beta
    q = model.encode(x)
    recon = chamfer(x, model.decode(q.rsample()))  # [B]
    kl_q = kl(q, model.prior())  # [B], closed form
    return {"loss": (recon + beta * kl_q).mean(), "chamfer": recon.detach().mean(), "kl": kl_q.detach().mean()}


def trainer_loss(model: PointCloudAE, x: torch.Tensor, beta: float | None = None) -> dict[str, torch.Tensor]:
    """The loss for `varilab.train.fit`, whose rows are flattened clouds [B, N * 3] (or clouds [B, N, 3]); `fit`
    passes beta when it follows a schedule."""
    if x.dim() == 2:
        if x.shape[1] % 3:
            raise ValueError(f"rows of flattened point clouds need a width divisible by 3, got {x.shape[1]}")
        x = x.unflatten(1, (-1, 3))
    return pointcloud_ae_loss(model, x, beta)
