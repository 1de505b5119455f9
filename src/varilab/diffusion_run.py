"""A diffusion run folder (`varilab train --model ddpm|flow|diffusevae`): its configuration, training with
the shared trainer, and loading for sampling and reports.

The folder holds what every run holds (config.json with `"family": "diffusion"`, metrics.jsonl,
model.safetensors, checkpoint.safetensors). A DiffuseVAE run also holds `vae/`, a complete VAE run
folder (stage 1, usable with `varilab diagnose` and `report` like any VAE run); the top level then holds
the conditional DDPM (stage 2).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from . import data as vdata
from .checkpoint import atomic_write, load_weights
from .data import Dataset
from .models.denoiser import LOSSES, Denoiser, DenoiserConfig
from .models.diffusevae import DiffuseVAE
from .models.expost import GaussianMixturePrior
from .train import CHECKPOINT, PRECISIONS, WEIGHTS, fit, read_metrics

MODELS = ("ddpm", "flow", "diffusevae")
CONFIG = "config.json"
VAE_DIR = "vae"


@dataclass
class DiffusionRunConfig:
    model: str = "ddpm"  # ddpm, flow or diffusevae
    data: str = "digits"
    loss: str | None = None  # ddpm and diffusevae: eps (default) or dsm; flow: flow
    timesteps: int = 1000  # T of the DDPM schedule
    channels: int = 32  # U-Net width
    mults: list[int] = field(default_factory=lambda: [1, 2])  # U-Net width multiplier per resolution level
    hidden: list[int] = field(default_factory=lambda: [128])  # vectors: the MLP's width (its first entry)
    depth: int = 3  # vectors: the MLP's hidden layers
    downscale: int = 1  # images: average-pool by this factor (Fashion-MNIST 28 x 28 -> 14 x 14 with 2)
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    test_fraction: float = 0.2
    n: int | None = None  # generated data: number of samples
    size: int | None = None  # shapes: image side
    latent_dim: int = 16  # diffusevae: the VAE's latent size
    vae_hidden: list[int] = field(default_factory=lambda: [512])  # diffusevae: the VAE's MLP
    vae_epochs: int = 50  # diffusevae: epochs of stage 1
    beta: float = 1.0  # diffusevae: the VAE's KL weight
    expost_gmm: int = 0  # diffusevae: sample z from a K-component mixture fit to q(z|x) after stage 1 (0: z ~ N(0, I))
    ema: float = 0.0  # decay of the weight average that samples (e.g. 0.999; 0: off)
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self):
        if self.model not in MODELS:
            raise ValueError(f"unknown model {self.model!r}; the diffusion models are {', '.join(MODELS)}")
        process = "flow" if self.model == "flow" else "ddpm"
        if self.loss is None:
            self.loss = LOSSES[process][0]
        if self.loss not in LOSSES[process]:
            raise ValueError(f"--loss {self.loss} does not apply to {self.model}; choose {' or '.join(LOSSES[process])}")
        for key in ("timesteps", "channels", "depth", "downscale", "epochs", "batch_size", "latent_dim", "vae_epochs"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)}")
        if self.expost_gmm < 0 or (self.expost_gmm and self.model != "diffusevae"):
            raise ValueError(f"expost_gmm (the latent mixture's components) applies to diffusevae and must be >= 0, "
                             f"got {self.expost_gmm} for {self.model}")
        if not self.lr > 0 or not 0 < self.test_fraction < 1 or self.beta < 0:
            raise ValueError("lr must be positive, test_fraction in (0, 1) and beta non-negative")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def process(self) -> str:
        return "flow" if self.model == "flow" else "ddpm"


KEYS = [f.name for f in dataclasses.fields(DiffusionRunConfig)]


def config_from_dict(d: dict, where: str = "config") -> DiffusionRunConfig:
    from .run import check_keys

    check_keys(d, KEYS, where, " for a diffusion model")
    clean = {}
    for key, value in d.items():
        if value is None:
            continue
        if key in ("mults", "hidden", "vae_hidden") and isinstance(value, str):
            value = [int(v) for v in value.split(",") if v.strip()]
        clean[key] = value
    return DiffusionRunConfig(**clean)


def load_config(run_dir: str | Path) -> DiffusionRunConfig:
    raw = json.loads((Path(run_dir) / CONFIG).read_text())
    return config_from_dict({k: v for k, v in raw.items() if k != "family"}, where=str(Path(run_dir) / CONFIG))


def is_diffusion_run(run_dir: str | Path) -> bool:
    p = Path(run_dir) / CONFIG
    return p.exists() and json.loads(p.read_text()).get("family") == "diffusion"


def downscale(ds: Dataset, factor: int) -> Dataset:
    """Images average-pooled by `factor` in each direction (sides must divide)."""
    if factor == 1:
        return ds
    if ds.image_shape is None:
        raise ValueError(f"--downscale applies to images; {ds.name} holds vectors")
    h, w = ds.image_shape
    if h % factor or w % factor:
        raise ValueError(f"--downscale {factor} does not divide the {h} x {w} images of {ds.name}")

    def pool(x):
        return F.avg_pool2d(x.reshape(-1, 1, h, w), factor).reshape(len(x), -1)

    return dataclasses.replace(ds, name=f"{ds.name}/{factor}", x_train=pool(ds.x_train), x_test=pool(ds.x_test),
                               image_shape=(h // factor, w // factor))


def load_data(cfg: DiffusionRunConfig) -> Dataset:
    ds = vdata.load(cfg.data, test_fraction=cfg.test_fraction, seed=cfg.seed, n=cfg.n, size=cfg.size)
    return downscale(ds, cfg.downscale)


def _unit_range(ds: Dataset) -> bool:
    return ds.image_shape is not None and float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) <= 1


def make_denoiser(cfg: DiffusionRunConfig, ds: Dataset, cond_channels: int = 0) -> Denoiser:
    if ds.image_shape is not None and not _unit_range(ds):
        raise ValueError(f"{ds.name}: image data for diffusion must lie in [0, 1] (it is modelled as 2x - 1); "
                         f"it ranges over [{float(ds.x_train.min()):.4g}, {float(ds.x_train.max()):.4g}]")
    torch.manual_seed(cfg.seed)
    return Denoiser(DenoiserConfig(x_dim=ds.x_dim, image_shape=ds.image_shape, process=cfg.process, loss=cfg.loss,
                                   T=cfg.timesteps, channels=cfg.channels, mults=tuple(cfg.mults), hidden=cfg.hidden[0],
                                   depth=cfg.depth, cond_channels=cond_channels, unit_range=ds.image_shape is not None,
                                   ema=cfg.ema))


def make_vae(cfg: DiffusionRunConfig, ds: Dataset):
    from .models import build_model

    torch.manual_seed(cfg.seed)
    return build_model("vae", ds.x_dim, latent_dim=cfg.latent_dim, hidden=cfg.vae_hidden, likelihood="bernoulli")


def _objective(model, x, **_):
    return model.loss(x)  # DiffuseVAE draws its condition x_hat from its VAE, batch by batch


def _vae_run_config(cfg: DiffusionRunConfig) -> dict:
    """The stage-1 VAE as a plain `varilab train` run config (so `vae/` is an ordinary run folder)."""
    return {"model": "vae", "data": cfg.data, "latent_dim": cfg.latent_dim, "hidden": cfg.vae_hidden,
            "likelihood": "bernoulli", "epochs": cfg.vae_epochs, "batch_size": cfg.batch_size, "lr": cfg.lr,
            "beta": cfg.beta, "seed": cfg.seed, "test_fraction": cfg.test_fraction, "n": cfg.n, "size": cfg.size,
            "precision": cfg.precision}


def _stage_done(folder: Path, epochs: int) -> bool:
    if not (folder / CHECKPOINT).exists():
        return False
    done = read_metrics(folder)
    return bool(done) and done[-1]["epoch"] >= epochs


def train(cfg: DiffusionRunConfig, out: str | Path, quiet: bool = False, resume: bool = False) -> list[dict]:
    """Train the run's model(s) into `out`; a DiffuseVAE run trains its VAE in out/vae first."""
    out = Path(out)
    ds = load_data(cfg)
    out.mkdir(parents=True, exist_ok=True)  # on resume, the config records the new number of epochs
    atomic_write(out / CONFIG, json.dumps({"family": "diffusion", **dataclasses.asdict(cfg)}, indent=2) + "\n")
    if cfg.model != "diffusevae":
        model = make_denoiser(cfg, ds)
        return fit(model, ds, out=out, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, objective=_objective,
                   seed=cfg.seed, resume=resume and (out / CHECKPOINT).exists(), quiet=quiet,
                   precision=cfg.precision, compile=cfg.compile)
    from .core import vae_loss
    from .run import config_from_dict as vae_config, save_config

    vae_dir = out / VAE_DIR
    vae = make_vae(cfg, ds)
    if not (resume and _stage_done(vae_dir, cfg.vae_epochs)):  # a fresh run never reuses an old VAE
        if not (resume and (vae_dir / CHECKPOINT).exists()):
            vae_dir.mkdir(parents=True, exist_ok=True)
            save_config(vae_dir, vae_config(_vae_run_config(cfg)))
        if not quiet:
            print(f"stage 1 of 2: the VAE ({cfg.vae_epochs} epochs) in {vae_dir}", flush=True)
        fit(vae, ds, out=vae_dir, epochs=cfg.vae_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
            objective=lambda m, x, **_: vae_loss(m, x, beta=cfg.beta), seed=cfg.seed,
            resume=resume and (vae_dir / CHECKPOINT).exists(), quiet=quiet, precision=cfg.precision)
    load_weights(vae_dir / WEIGHTS, vae)
    model = DiffuseVAE(vae.eval(), make_denoiser(cfg, ds, cond_channels=1))
    for p in model.vae.parameters():
        p.requires_grad_(False)
    if cfg.expost_gmm:
        model.fit_latent_prior(ds.x_train, cfg.expost_gmm, cfg.seed)  # kept in the weights file
    if not quiet:
        print(f"stage 2 of 2: the DDPM conditioned on the VAE's reconstructions ({cfg.epochs} epochs)", flush=True)
    return fit(model, ds, out=out, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, objective=_objective,
               seed=cfg.seed, resume=resume and (out / CHECKPOINT).exists(), quiet=quiet, precision=cfg.precision,
               compile=cfg.compile)


@dataclass
class DiffusionRun:
    dir: Path
    config: DiffusionRunConfig
    model: Denoiser | DiffuseVAE
    data: Dataset


def load(run_dir: str | Path) -> DiffusionRun:
    """The config, trained model and data of a diffusion run folder."""
    run_dir = Path(run_dir)
    if not is_diffusion_run(run_dir):
        raise ValueError(f"{run_dir}: not a diffusion run (its {CONFIG} has no \"family\": \"diffusion\")")
    cfg = load_config(run_dir)
    if not (run_dir / WEIGHTS).exists():
        raise FileNotFoundError(f"{run_dir}: no trained weights ({WEIGHTS}); train it first")
    ds = load_data(cfg)
    if cfg.model == "diffusevae":
        vae = make_vae(cfg, ds)
        mixture = GaussianMixturePrior(cfg.expost_gmm, cfg.latent_dim) if cfg.expost_gmm else None
        model = DiffuseVAE(vae, make_denoiser(cfg, ds, cond_channels=1), mixture)
    else:
        model = make_denoiser(cfg, ds)
    load_weights(run_dir / WEIGHTS, model)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return DiffusionRun(run_dir, cfg, model.eval().to(device), ds)


def sample(run: DiffusionRun, n: int, steps: int, sampler: str, seed: int = 0, chain: bool = False,
           prior: str | None = None) -> dict:
    """{"samples": [n, D]} (and "vae" for DiffuseVAE, "chain" [steps + 1, n, D] with chain=True), on the CPU.
    DiffuseVAE draws z from `prior`: "normal" (p(z)) or "expost" (the fitted mixture, its default if fitted)."""
    device = next(run.model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    if isinstance(run.model, DiffuseVAE):
        out = run.model.sample(n, steps=steps, sampler=sampler, chain=chain, generator=g, prior=prior)
        result = {"vae": out[0], "samples": out[1]}
        if chain:
            result["chain"] = out[2]
    else:
        if prior is not None:
            raise ValueError(f"--prior chooses the latent prior of a diffusevae run; {run.config.model} has no latent")
        out = run.model.sample(n, steps=steps, sampler=sampler, chain=chain, generator=g)
        result = {"samples": out[0], "chain": out[1]} if chain else {"samples": out}
    return {k: v.cpu() for k, v in result.items()}


def bound_bits_per_dim(run, points: int = 128, n_steps: int = 20, seed: int = 0) -> dict:
    """The DDPM's negative ELBO on test points (unbiased over steps), in nats on the model's scale and in
    bits per dimension of the density on the data's own scale (images: [0, 1], so D log 2 less)."""
    model = run.model.denoiser if isinstance(run.model, DiffuseVAE) else run.model
    device = next(model.parameters()).device
    x = run.data.x_test[:points].to(device)
    torch.manual_seed(seed)
    cond = run.model.reconstruct(x) if isinstance(run.model, DiffuseVAE) else None
    nats = model.nll_bound(x, n_steps=n_steps, cond=cond)
    d = x.shape[1]
    shift = d * math.log(2) if model.config.unit_range else 0.0
    per_dim = (nats - shift) / (d * math.log(2))
    return {"nats_model_scale": float(nats.mean()), "bits_per_dim": float(per_dim.mean()),
            "bits_per_dim_se": float(per_dim.std() / math.sqrt(len(per_dim))), "points": len(x), "steps": n_steps}


def evaluate_run(run: DiffusionRun, points: int = 1000, seed: int = 0) -> dict:
    """Test-split loss of the trained objective and, for the DDPM family, the bound in bits per dimension."""
    from .train import evaluate

    device = next(run.model.parameters()).device
    torch.manual_seed(seed)
    result = {"test_loss": evaluate(run.model, run.data.x_test[:points].to(device), _objective)["loss"]}
    if run.config.process == "ddpm":
        b = bound_bits_per_dim(run, points=min(points, 256))
        result.update({"bits_per_dim": b["bits_per_dim"], "bits_per_dim_se": b["bits_per_dim_se"]})
    return result


__all__ = ["DiffusionRunConfig", "MODELS", "config_from_dict", "train", "load", "sample", "is_diffusion_run",
           "downscale", "bound_bits_per_dim", "evaluate_run", "load_config"]
