"""The convolutional transforms of learned image codecs (Balle et al., 2017/2018): four convolutions of kernel 5 per
side with generalised divisive normalisation between them,

    GDN:  y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2),     IGDN (the decoder's):  y_i = x_i * sqrt(...),

of which the first `downsample` (analysis) or the last `downsample` (synthesis) have stride 2."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LAYERS = 4  # convolutions per side, as in the published transforms


class GDN(nn.Module):
    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = inverse  # beta = b^2 + 1e-6 and gamma = g^2 (elementwise): positive, and smooth at zero
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(0.1 ** 0.5 * torch.eye(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta, gamma = self.beta.pow(2) + 1e-6, self.gamma.pow(2)
        norm = F.conv2d(x * x, gamma[:, :, None, None], beta).sqrt()  # sqrt(beta_i + sum_j gamma_ij x_j^2)
        return x * norm if self.inverse else x / norm


def check(downsample: int) -> None:
    if not 0 <= downsample <= LAYERS:
        raise ValueError(f"the GDN transforms have {LAYERS} convolutions per side: --downsample must lie in [0, "
                         f"{LAYERS}], got {downsample}")


def analysis(channels: int, hidden: int, latent: int, downsample: int) -> nn.Sequential:
    check(downsample)
    layers = []
    for i in range(LAYERS):
        last = i == LAYERS - 1
        layers.append(nn.Conv2d(channels if i == 0 else hidden, latent if last else hidden, 5, 2 if i < downsample else 1, 2))
        layers += [] if last else [GDN(hidden)]
    return nn.Sequential(*layers)


def synthesis(latent: int, hidden: int, channels: int, downsample: int) -> nn.Sequential:
    check(downsample)
    layers = []
    for i in range(LAYERS):
        width, out = latent if i == 0 else hidden, channels if i == LAYERS - 1 else hidden
        up = i >= LAYERS - downsample
        layers.append(nn.ConvTranspose2d(width, out, 5, 2, 2, output_padding=1) if up else nn.Conv2d(width, out, 5, 1, 2))
        layers += [] if i == LAYERS - 1 else [GDN(hidden, inverse=True)]
    return nn.Sequential(*layers)


def transforms(c) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) of a codec config with channels, hidden, latent, downsample and transform ("gdn": these;
    "relu": the vq-codec's --downsample stride-2 convolutions with ReLU between and a sigmoid at the end)."""
    if c.transform == "gdn":
        return (analysis(c.channels, c.hidden, c.latent, c.downsample),
                synthesis(c.latent, c.hidden, c.channels, c.downsample))
    if c.transform == "relu":
        from .vq_codec import VQCodecConfig, _decoder, _encoder

        shape = VQCodecConfig(channels=c.channels, latent=c.latent, hidden=c.hidden, downsample=c.downsample, groups=1)
        return _encoder(shape), _decoder(shape)
    raise ValueError(f"unknown transform {c.transform!r}; choose relu or gdn")
