"""A trainable diffusion model: one network, a forward process and the loss that defines what it predicts.

  model "ddpm", loss "eps"  the VP (DDPM) process, eps-prediction (the ELBO's simplified form)
  model "ddpm", loss "dsm"  the VP process, denoising score matching (the network is the score)
  model "flow", loss "flow" the linear interpolant, flow matching (the network is the velocity eps - x0)

Whatever it was trained as, `prediction(x_t, t, to=...)` gives eps, the score, x0 or the velocity through
`diffusion.convert`, so every sampler in `varilab.models.diffusion.samplers` runs on every model. Images in [0, 1] are
modelled on [-1, 1] (`to_model` / `from_model`). The network is a `UNet` for images and a
`DiffusionMLP` for vectors; `cond` (a conditioning image, DiffuseVAE) is passed through to the U-Net.
With `ema` > 0 the model keeps an exponential moving average of the network's weights (updated by the
trainer's `after_optimizer_step` hook) and samples and bounds from it, as DDPM and DiffuseVAE do.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from . import samplers
from .diffusion import (DiffusionMLP, DiffusionMLPConfig, LinearInterpolant, VPSchedule, add_noise, convert,
                        ddpm_nll_bound, sample_times, _coefs)
from .unet import UNet, UNetConfig

LOSSES = {"ddpm": ("eps", "dsm"), "flow": ("flow",)}
PREDICTS = {"eps": "eps", "dsm": "score", "flow": "v"}
SAMPLERS = ("ddpm", "ddim", "euler-maruyama", "pf-euler", "pf-heun")


@dataclass
class DenoiserConfig:
    x_dim: int
    image_shape: tuple[int, int] | None = None  # (H, W): a U-Net; None: an MLP
    process: str = "ddpm"  # "ddpm" (VP) or "flow" (linear interpolant)
    loss: str = "eps"  # ddpm: eps or dsm; flow: flow
    T: int = 1000  # ddpm: steps of the discrete schedule
    channels: int = 32  # U-Net width
    mults: tuple[int, ...] = field(default_factory=lambda: (1, 2, 2))
    hidden: int = 128  # MLP width
    depth: int = 3  # MLP hidden layers
    cond_channels: int = 0
    unit_range: bool = True  # data in [0, 1], modelled as 2x - 1
    ema: float = 0.0  # decay of an exponential moving average of the weights used for sampling (0: off)

    def __post_init__(self):
        if self.process not in LOSSES:
            raise ValueError(f"process must be one of {', '.join(LOSSES)}, got {self.process!r}")
        if self.loss not in LOSSES[self.process]:
            raise ValueError(f"the {self.process} model trains with loss {' or '.join(LOSSES[self.process])}, "
                             f"got {self.loss!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema is a decay in [0, 1), got {self.ema}")
        if self.cond_channels and self.image_shape is None:
            raise ValueError("a conditioning image needs image data (the U-Net)")


class Denoiser(nn.Module):
    def __init__(self, config: DenoiserConfig):
        super().__init__()
        self.config = c = config
        self.schedule = VPSchedule(T=c.T) if c.process == "ddpm" else LinearInterpolant()
        self.kind = PREDICTS[c.loss]
        if c.image_shape is not None:
            h, w = c.image_shape
            if c.x_dim % (h * w):
                raise ValueError(f"{c.x_dim} features do not make images of {h} x {w}")
            self.net = UNet(UNetConfig(image_shape=(h, w), in_channels=c.x_dim // (h * w), cond_channels=c.cond_channels,
                                       channels=c.channels, mults=c.mults))
        else:
            self.net = DiffusionMLP(DiffusionMLPConfig(x_dim=c.x_dim, hidden=c.hidden, depth=c.depth))
        self.ema_net = None
        if c.ema:  # a frozen copy; its weights are in the state dict, so checkpoints and resume keep them
            self.ema_net = copy.deepcopy(self.net).requires_grad_(False)
            self.register_buffer("ema_steps", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """theta_ema <- d theta_ema + (1 - d) theta with d = min(ema, (1 + n) / (10 + n)) after n updates
        (the warm-up keeps early averages from remembering the initial weights)."""
        if self.ema_net is None:
            return
        n = int(self.ema_steps)
        d = min(self.config.ema, (1 + n) / (10 + n))
        torch._foreach_lerp_(list(self.ema_net.parameters()), list(self.net.parameters()), 1 - d)
        self.ema_steps += 1

    def _sampling_net(self):
        return self.net if self.ema_net is None else self.ema_net

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x - 1 if self.config.unit_range else x

    def from_model(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1) if self.config.unit_range else x

    def forward(self, x_t: torch.Tensor, t, cond: torch.Tensor | None = None, ema: bool = False) -> torch.Tensor:
        """The raw network output (of kind `self.kind`); with ema=True from the averaged weights, if kept."""
        net = self._sampling_net() if ema else self.net
        return net(x_t, t) if cond is None else net(x_t, t, cond=cond)

    def prediction(self, x_t: torch.Tensor, t, cond=None, to: str = "eps") -> torch.Tensor:
        return convert(self(x_t, t, cond), self.kind, to, x_t, t, self.schedule)

    def loss(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The training loss on data x (in the data's range) as {"loss": batch mean}: per example
        ||eps - eps_hat||^2 (eps), ||sigma_t s_hat + eps||^2 (dsm) or ||v_hat - (a_t x0 + b_t eps)||^2 (flow)."""
        x0 = self.to_model(x)
        t = sample_times(self.schedule, x0.shape[0], x0.device)
        x_t, eps = add_noise(x0, t, self.schedule)
        out = self(x_t, t.to(x0.dtype), None if cond is None else self.to_model(cond))
        _, sigma, a, b = _coefs(self.schedule, t, x0)
        target = {"eps": eps, "dsm": -eps, "flow": a * x0 + b * eps}[self.config.loss]
        if self.config.loss == "dsm":
            out = sigma * out  # sigma_t^2 ||s_hat - (-eps / sigma_t)||^2 = ||sigma_t s_hat + eps||^2
        return {"loss": (out - target).pow(2).flatten(1).sum(1).mean()}

    @torch.no_grad()
    def sample(self, n: int, steps: int = 50, sampler: str = "ddim", cond: torch.Tensor | None = None,
               chain: bool = False, generator: torch.Generator | None = None, noise: torch.Tensor | None = None):
        """n samples in the data's range, [n, x_dim]; with chain=True also the states along the way,
        [steps + 1, n, x_dim] (mapped to the data's range)."""
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        device = next(self.parameters()).device
        x = torch.randn(n, self.config.x_dim, generator=generator, device=device) if noise is None else noise.to(device)
        c = None if cond is None else self.to_model(cond.to(device))
        pred = lambda x_t, t: self(x_t, t.to(x_t.dtype), c, ema=True)  # noqa: E731
        flow = self.config.process == "flow"
        common = dict(kind=self.kind, chain=chain)
        t_max = 1.0 - 1e-3 if flow and sampler in ("ddpm", "euler-maruyama") else 1.0  # g_t diverges at t = 1 there
        if sampler == "ddpm":
            out = samplers.ddpm(pred, self.schedule, x, steps=steps, t_max=t_max, generator=generator, **common)
        elif sampler == "ddim":
            out = samplers.ddim(pred, self.schedule, x, steps=steps, **common)
        elif sampler == "euler-maruyama":
            out = samplers.euler_maruyama(pred, self.schedule, x, steps=steps, t_max=t_max, generator=generator, **common)
        else:
            out = samplers.probability_flow(pred, self.schedule, x, steps=steps, solver=sampler[3:],
                                            t_min=0.0 if flow else 1e-3, **common)
        if chain:
            return self.from_model(out[0]), self.from_model(out[1])
        return self.from_model(out)

    @torch.no_grad()
    def nll_bound(self, x: torch.Tensor, n_steps: int | None = 100, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The DDPM's exact negative ELBO per example [B] in nats on the model's scale ([-1, 1] for images;
        subtract D log 2 for the density on [0, 1]); estimated without bias from n_steps steps per example."""
        if self.config.process != "ddpm":
            raise ValueError("the DDPM bound applies to the ddpm model, not to flow matching")
        c = None if cond is None else self.to_model(cond)

        def net(x_t, t):  # the bound evaluates stacked copies of the batch: repeat the condition to match
            return self(x_t, t, None if c is None else c.repeat(len(x_t) // len(c), 1), ema=True)

        return ddpm_nll_bound(net, self.to_model(x), self.schedule, kind=self.kind, n_steps=n_steps)
