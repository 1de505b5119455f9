"""Squeeze3D (papers.md section 17): a frozen encoder E and a frozen generator G as an extreme compressor.

c = Q(f(E(x))) with trainable f: E's latent -> code_dims values in (0, 1), each quantised to 2^bits_per_dim levels;
x_hat = G(g(c)) with trainable g: code -> G's latent. Trained only on the generator's own samples:
l ~ N(0, I), obj = G(l), e = mean of E(obj), loss = ||g(Q(f(e))) - l||^2 (+ chamfer_weight Chamfer(G(g(.)), obj)).

Bits rule: `bits` is split evenly over `code_dims` scalars, bits_per_dim = bits / code_dims (bits must be a multiple
of code_dims), so the code is exactly `bits` bits: 16 bits = 4 dims x 4 bits = 16 levels each. Q is uniform on
(0, 1): symbol s = floor(u * L) (L = 2^bits_per_dim), decoded as the bin centre (s + 1/2) / L; in training the
forward pass uses that centre and the gradient passes straight through to u. The ratio (raw size / code size) is
varilab.core.compression_ratio.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...core.chamfer import chamfer
from ..vae.vae import mlp
from .autoencoder import CHUNK

MAX_BITS_PER_DIM = 16  # symbols and bin centres stay exact in float32


@dataclass
class Squeeze3DConfig:
    bits: int = 16  # total code length
    code_dims: int = 4  # scalars in the code; bits_per_dim = bits / code_dims
    hidden: int = 128  # width of f's and g's two hidden layers
    chamfer_weight: float = 0.0  # weight of Chamfer(G(l_hat), G(l)); 0: the latent loss alone (cheaper, and exact
    # in l means exact in G(l)); set > 0 to spend the code on what G's output is sensitive to

    @property
    def bits_per_dim(self) -> int:
        return self.bits // self.code_dims


def _check_config(c: Squeeze3DConfig) -> None:
    if c.code_dims < 1 or c.hidden < 1:
        raise ValueError(f"code_dims and hidden must be positive integers, "
                         f"got code_dims={c.code_dims}, hidden={c.hidden}")
    if c.bits < c.code_dims or c.bits % c.code_dims:
        raise ValueError(f"bits must be a positive multiple of code_dims (each code scalar gets bits / code_dims "
                         f"bits), got bits={c.bits}, code_dims={c.code_dims}; choose code_dims dividing {c.bits}")
    if c.bits_per_dim > MAX_BITS_PER_DIM:
        raise ValueError(f"at most {MAX_BITS_PER_DIM} bits per code scalar, got {c.bits_per_dim} "
                         f"(bits={c.bits}, code_dims={c.code_dims}); raise code_dims")
    if not c.chamfer_weight >= 0:
        raise ValueError(f"chamfer_weight must be >= 0, got {c.chamfer_weight}")


class Squeeze3D(nn.Module):
    """The mapping networks f and g between a frozen encoder E (`encode(x) -> Distribution`, `config.latent`) and a
    frozen generator G (`decode(l) -> [B, N, 3]`, `config.latent`), e.g. two `PointCloudAE`s."""

    def __init__(self, config: Squeeze3DConfig, encoder: nn.Module, generator: nn.Module):
        super().__init__()
        _check_config(config)
        self.config = config
        self.levels = 2 ** config.bits_per_dim  # L
        self.encoder, self.generator = encoder.requires_grad_(False).eval(), generator.requires_grad_(False).eval()
        e, l, h = encoder.config.latent, generator.config.latent, config.hidden
        self.f = mlp([e, h, h, config.code_dims])  # e -> logits of u in (0, 1)
        self.g = mlp([config.code_dims, h, h, l])  # code -> l

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # E and G stay frozen
        self.generator.eval()
        return self

    def _u(self, e: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.f(e))  # u = sigmoid(f(e)) in (0, 1)  [B, code_dims]

    def _symbols(self, u: torch.Tensor) -> torch.Tensor:
        return (u * self.levels).floor().clamp(0, self.levels - 1).long()  # s = floor(u L)

    def _centres(self, symbols: torch.Tensor) -> torch.Tensor:
        return (symbols.to(self.g[0].weight.dtype) + 0.5) / self.levels  # Q(u) = (s + 1/2) / L

    def quantise(self, e: torch.Tensor) -> torch.Tensor:
        """Q(f(e)) with the straight-through gradient: the bin centres forward, d/du = identity backward."""
        u = self._u(e)
        return u + (self._centres(self._symbols(u)) - u).detach()

    def to_symbols(self, e: torch.Tensor) -> torch.Tensor:
        """E's latents [B, e] -> integer symbols [B, code_dims], each in [0, 2^bits_per_dim)."""
        return self._symbols(self._u(e))

    def from_symbols(self, symbols: torch.Tensor) -> torch.Tensor:
        """Integer symbols [B, code_dims] -> G's latents g(Q) [B, l]."""
        if symbols.dtype.is_floating_point or symbols.dim() != 2 or symbols.shape[1] != self.config.code_dims:
            raise ValueError(f"symbols must be integers of shape [B, {self.config.code_dims}], "
                             f"got {symbols.dtype} {list(symbols.shape)}")
        if symbols.numel() and (symbols.min() < 0 or symbols.max() >= self.levels):
            raise ValueError(f"symbols must lie in [0, {self.levels}), got values in "
                             f"[{int(symbols.min())}, {int(symbols.max())}]")
        return self.g(self._centres(symbols))

    @torch.no_grad()
    def compress(self, x: torch.Tensor, batch: int = CHUNK) -> torch.Tensor:
        """Point clouds [B, N, 3] -> symbols [B, code_dims]: Q(f(mean of E(x))), `batch` shapes at a time (E's
        per-point features take B x N x width floats)."""
        return self.to_symbols(self.encoder.means(x, batch))

    @torch.no_grad()
    def decompress(self, symbols: torch.Tensor, batch: int = CHUNK) -> torch.Tensor:
        """Symbols [B, code_dims] -> point clouds G(g(Q)) [B, points, 3], `batch` shapes at a time."""
        return self.generator.decode_all(self.from_symbols(symbols), batch)

    @torch.no_grad()
    def draw_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n generator latents l ~ N(0, I) [n, l]: the only training data Squeeze3D needs."""
        return torch.randn(n, self.generator.config.latent, generator=generator, device=self.g[0].weight.device)


@torch.no_grad()
def encoded_pairs(model: Squeeze3D, l: torch.Tensor, batch: int = CHUNK) -> torch.Tensor:
    """Rows [n, l + e] of generator latents and E's means of their shapes, [l, mean of E(G(l))]: E and G are frozen,
    so a fixed sample set is encoded once instead of at every step."""
    parts = [torch.cat([lb, model.encoder.encode(model.generator.decode(lb)).mean], -1) for lb in l.split(batch)]
    return torch.cat(parts)


def squeeze3d_loss(model: Squeeze3D, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss for `varilab.train.fit` on rows of generator latents l [B, l] (`Squeeze3D.draw_latents`), or of
    [l, e] pairs (`encoded_pairs`): mean of ||g(Q(f(e))) - l||^2 + chamfer_weight Chamfer(G(l_hat), G(l)),
    e = mean of E(G(l)), E and G frozen."""
    k, m = model.generator.config.latent, model.encoder.config.latent
    if rows.dim() != 2 or rows.shape[1] not in (k, k + m):
        raise ValueError(f"squeeze3d_loss trains on generator latents [B, {k}] or [latent, E's mean] pairs "
                         f"[B, {k + m}], got {list(rows.shape)}")
    l, e = rows[:, :k], rows[:, k:]
    obj = None
    if e.shape[1] == 0:
        with torch.no_grad():
            obj = model.generator.decode(l)  # obj = G(l)
            e = model.encoder.encode(obj).mean  # e = E(obj)
    l_hat = model.g(model.quantise(e))  # l_hat = g(Q(f(e)))
    latent = (l_hat - l).pow(2).sum(-1)  # ||l_hat - l||^2  [B]
    out = {"latent": latent.detach().mean()}
    loss = latent
    if model.config.chamfer_weight > 0:
        if obj is None:
            with torch.no_grad():
                obj = model.generator.decode(l)
        ch = chamfer(model.generator.decode(l_hat), obj)  # Chamfer(G(l_hat), obj)  [B]
        loss = loss + model.config.chamfer_weight * ch
        out["chamfer"] = ch.detach().mean()
    return {"loss": loss.mean(), **out}


def fit_linear_maps(e: torch.Tensor, l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares affine map from E's latents e [n, e] to G's latents l [n, l], in float64: (W [e, l], b [l]) with
    l ~ e W + b. This is g for linear E and G without quantisation (f the identity): when l -> E(G(l)) is injective
    (C A of full column rank for G(l) = A l + a, E(x) = C x + d) it recovers l exactly."""
    if e.dim() != 2 or l.dim() != 2 or len(e) != len(l):
        raise ValueError(f"e and l must be matrices with the same number of rows, "
                         f"got {list(e.shape)} and {list(l.shape)}")
    if len(e) < e.shape[1] + 1:
        raise ValueError(f"an affine map from {e.shape[1]} dims needs at least {e.shape[1] + 1} pairs, got {len(e)}")
    e1 = torch.cat([e.double(), torch.ones(len(e), 1, dtype=torch.float64, device=e.device)], 1)  # [e, 1]
    sol = torch.linalg.lstsq(e1, l.double(), driver="gelsd" if e.device.type == "cpu" else None).solution
    return sol[:-1], sol[-1]  # min_{W,b} ||e W + b - l||^2
