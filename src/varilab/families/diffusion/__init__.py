"""The diffusion family (`ddpm`, `flow`, `diffusevae`, `ldm`): one time-dependent network trained as a DDPM, by
score matching or by flow matching, sampled by any sampler; DiffuseVAE trains a VAE in RUN/vae (an
ordinary VAE run folder) and then a DDPM conditioned on its reconstructions; latent diffusion trains an autoencoder
(diffusers' AutoencoderKL) in RUN/vae (its logs, weights and checkpoint: loaded with the run, not a run of its own)
and then a DDPM on its scaled latents."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from .. import folder, vae
from ..attack import ATTACK
from ..options import TrainOptions, between, ints, non_negative, non_negative_int, option, positive_int, positive_ints
from ..protocol import Family, Run
from ..registry import register
from .solve import SOLVE

MODELS = {"ddpm": "denoising diffusion (U-Net on images, MLP on vectors), eps-prediction or score matching",
          "flow": "rectified flow: flow matching on the straight path x_t = (1 - t) x0 + t eps",
          "diffusevae": "a VAE, then a DDPM that refines its reconstructions (DiffuseVAE)",
          "ldm": "latent diffusion: an AutoencoderKL (Stable Diffusion's VAE, small), then a DDPM on its latents"}
VAE_DIR = "vae"
LOSSES = {"ddpm": ("eps", "dsm"), "flow": ("flow",)}


def unet(opts, model=None) -> bool:
    """Whether the trained model's denoiser is a U-Net (images) rather than an MLP (vectors); None: not known."""
    config = getattr(getattr(model, "denoiser", model), "config", None)
    return model is None or getattr(config, "image_shape", None) is not None


def mlp(opts, model=None) -> bool:
    return model is None or not unet(opts, model)


@dataclass
class DiffusionOptions(TrainOptions):
    DEFAULTS = {"data": "digits", "epochs": 50}
    model: str = option("ddpm", "the model", choices=MODELS)
    loss: str | None = option(None, "eps (default) or dsm (denoising score matching) for ddpm, diffusevae and ldm; "
                              "flow for flow", choices=("eps", "dsm", "flow", None))
    timesteps: int = option(1000, "steps T of the noise schedule", check=positive_int.upto(100_000),
                            models=("ddpm", "diffusevae", "ldm"))
    channels: int = option(32, "images: U-Net width (ldm: of the U-Net on the latents)", check=positive_int.upto(4096),
                          when=unet)
    mults: list[int] = option([1, 2], "images: U-Net width multipliers per level, comma-separated", parse=ints,
                              check=positive_ints.upto(64), when=unet)
    hidden: list[int] = option([128], "vectors: the MLP's width (its first entry)", parse=ints,
                                 check=positive_ints.upto(65_536), when=mlp)
    depth: int = option(3, "vectors: hidden layers of the MLP", check=positive_int.upto(1000), when=mlp)
    downscale: int = option(1, "images: average-pool by this factor", check=positive_int.upto(1024), when=unet)
    n: int | None = option(None, "generated data: number of samples", check=positive_int)
    size: int | None = option(None, "shapes: image side in pixels", check=positive_int.upto(1024))
    latent_dim: int = option(16, "the VAE's latent size", check=positive_int.upto(65_536), models=("diffusevae",))
    vae_hidden: list[int] = option([512], "the VAE's hidden sizes, comma-separated", parse=ints,
                                   check=positive_ints.upto(65_536), models=("diffusevae",))
    vae_epochs: int = option(50, "epochs of the first stage (diffusevae: the VAE; ldm: the autoencoder)",
                             check=positive_int.upto(100_000), models=("diffusevae", "ldm"))
    beta: float = option(1.0, "the VAE's KL weight", check=non_negative.upto(1e4), models=("diffusevae",))
    expost_gmm: int = option(0, "sample z from a Gaussian mixture of this many components fit to the VAE's codes of "
                             "the training set (0: z ~ N(0, I))", check=non_negative_int.upto(1000), models=("diffusevae",))
    ae_widths: list[int] = option([32, 64, 64], "the autoencoder's block widths, comma-separated (AutoencoderKL's "
                                  "block_out_channels); each level but the last halves the image's sides",
                                  parse=ints, check=positive_ints.upto(4096), models=("ldm",))
    ae_groups: int = option(16, "GroupNorm groups of the autoencoder (must divide every width)",
                            check=positive_int.upto(4096), models=("ldm",))
    latent_channels: int = option(4, "channels of the autoencoder's latent (Stable Diffusion: 4)",
                                  check=positive_int.upto(4096), models=("ldm",))
    kl_weight: float = option(1e-6, "the autoencoder's KL weight against its per-image squared error on [-1, 1] "
                              "(Stable Diffusion's first stage: 1e-6)", check=non_negative.upto(1e4), models=("ldm",))
    ema: float = option(0.999, "decay of the moving average of the weights that samples (0: off); without it a "
                        "2-D three-mode mixture's sampled mode weights were off by 0.06-0.08, with 0.999 by under 0.02",
                        check=between(0, 1, open_hi=True))
    precision: str = option("auto", "bf16 runs the forward pass under bfloat16 autocast; auto chooses it where the "
                            "device has native bfloat16, else fp32", choices=("auto", "fp32", "bf16"))
    compile: bool = option(False, "torch.compile the training step (eager, with a notice, when compiling fails)")


def process(opts: DiffusionOptions) -> str:
    return "flow" if opts.model == "flow" else "ddpm"


def check(opts: DiffusionOptions) -> DiffusionOptions:
    """The loss follows the process (eps for a DDPM, flow for a flow) unless chosen; a wrong one is refused; an
    ldm's GroupNorm groups divide its autoencoder's widths."""
    allowed = LOSSES[process(opts)]
    if opts.loss is None:
        opts = dataclasses.replace(opts, loss=allowed[0])
    if opts.loss not in allowed:
        raise ValueError(f"--loss {opts.loss} does not apply to {opts.model}; choose {' or '.join(allowed)}")
    if opts.model == "ldm" and any(w % opts.ae_groups for w in opts.ae_widths):
        raise ValueError(f"--ae-groups {opts.ae_groups} must divide every --ae-widths value, got "
                         f"{','.join(map(str, opts.ae_widths))}; choose widths that are multiples of it")
    return opts


def downscale(ds, factor: int):
    """Images average-pooled by `factor` in each direction (sides must divide)."""
    from torch.nn import functional as F

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


def load_data(opts: DiffusionOptions):
    from ... import data as vdata

    ds = vdata.load(opts.data, test_fraction=opts.test_fraction, seed=opts.seed, n=opts.n, size=opts.size)
    return downscale(ds, opts.downscale)


def check_unit_range(ds) -> None:
    if not (float(ds.x_train.min()) >= 0 and float(ds.x_train.max()) <= 1):
        raise ValueError(f"{ds.name}: image data for diffusion must lie in [0, 1] (it is modelled as 2x - 1); "
                         f"it ranges over [{float(ds.x_train.min()):.4g}, {float(ds.x_train.max()):.4g}]")


def make_denoiser(opts: DiffusionOptions, ds, cond_channels: int = 0):
    import torch

    from ...models.diffusion.denoiser import Denoiser, DenoiserConfig

    unit = ds.image_shape is not None
    if unit:
        check_unit_range(ds)
    torch.manual_seed(opts.seed)
    return Denoiser(DenoiserConfig(x_dim=ds.x_dim, image_shape=ds.image_shape, process=process(opts), loss=opts.loss,
                                   T=opts.timesteps, channels=opts.channels, mults=tuple(opts.mults),
                                   hidden=opts.hidden[0], depth=opts.depth, cond_channels=cond_channels,
                                   unit_range=unit, ema=opts.ema))


def make_vae(opts: DiffusionOptions, ds):
    import torch

    from ...models import build_model

    torch.manual_seed(opts.seed)
    return build_model("vae", ds.x_dim, latent_dim=opts.latent_dim, hidden=opts.vae_hidden, likelihood="bernoulli")


def autoencoder_config(opts: DiffusionOptions, ds):
    """The ldm's AutoencoderKL sizes for the images of `ds`."""
    from ...models.diffusion.ldm import AutoencoderConfig

    if ds.image_shape is None:
        raise ValueError(f"the ldm model's autoencoder takes images; {ds.name} holds vectors of {ds.x_dim}")
    h, w = ds.image_shape
    return AutoencoderConfig(image_shape=(h, w), channels=ds.x_dim // (h * w), widths=tuple(opts.ae_widths),
                             latent_channels=opts.latent_channels, groups=opts.ae_groups, kl_weight=opts.kl_weight)


def make_autoencoder(opts: DiffusionOptions, ds):
    import torch

    from ...models.diffusion.ldm import KLAutoencoder

    config = autoencoder_config(opts, ds)
    check_unit_range(ds)
    torch.manual_seed(opts.seed)
    return KLAutoencoder(config)


def make_ldm(opts: DiffusionOptions, ds, autoencoder=None):
    """A LatentDiffusion: the autoencoder (given, or fresh) and a DDPM U-Net on its [C, h, w] latents."""
    import torch

    from ...models.diffusion.denoiser import Denoiser, DenoiserConfig
    from ...models.diffusion.ldm import LatentDiffusion

    autoencoder = make_autoencoder(opts, ds) if autoencoder is None else autoencoder
    c, h, w = autoencoder.config.latent_shape
    torch.manual_seed(opts.seed)
    denoiser = Denoiser(DenoiserConfig(x_dim=c * h * w, image_shape=(h, w), process=process(opts), loss=opts.loss,
                                       T=opts.timesteps, channels=opts.channels, mults=tuple(opts.mults),
                                       unit_range=False, ema=opts.ema))
    return LatentDiffusion(autoencoder, denoiser)


def _objective(model, x, **_):
    return model.loss(x)  # DiffuseVAE draws its condition x_hat from its VAE, batch by batch


def _vae_options(opts: DiffusionOptions):
    """The stage-1 VAE as the VAE family's options (so `vae/` is an ordinary VAE run folder)."""
    return vae.VAEOptions(model="vae", data=opts.data, latent_dim=opts.latent_dim, hidden=opts.vae_hidden,
                      epochs=opts.vae_epochs, batch_size=opts.batch_size, lr=opts.lr, beta=opts.beta, seed=opts.seed,
                      test_fraction=opts.test_fraction, n=opts.n, size=opts.size, precision=opts.precision)


def _stage_done(stage: Path, epochs: int) -> bool:
    from ...checkpoint import read_jsonl
    from ...train import CHECKPOINT, METRICS

    done = read_jsonl(stage / METRICS) if (stage / CHECKPOINT).exists() else []
    return bool(done) and done[-1]["epoch"] >= epochs


def train(opts: DiffusionOptions, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    """Train the run's model(s) into `out`; a DiffuseVAE run trains its VAE in out/vae first, an ldm run its
    autoencoder."""
    import sys

    from ...checkpoint import load_weights
    from ...core import vae_loss
    from ...models.diffusion.diffusevae import DiffuseVAE
    from ...train import CHECKPOINT, WEIGHTS, fit

    opts = check(opts)
    ds = load_data(opts)
    build = (lambda: make_ldm(opts, ds)) if opts.model == "ldm" else (lambda: make_denoiser(opts, ds))
    folder.check_fits(build, f"a {opts.model} network of these sizes")
    if (opts.model == "ldm" and resume and (out / CHECKPOINT).exists()
            and not _stage_done(out / VAE_DIR, opts.vae_epochs)):  # stage 2's latents came from the autoencoder as it is
        raise ValueError(f"{out}: the DDPM has trained on this autoencoder's latents, so --vae-epochs {opts.vae_epochs} "
                         "cannot continue the autoencoder now; train a new run for a longer first stage")
    print(ds.summary(), file=sys.stderr)
    common = dict(batch_size=opts.batch_size, lr=opts.lr, seed=opts.seed, quiet=quiet, precision=opts.precision)
    if opts.model == "ldm":
        return _train_ldm(opts, ds, out, resume, quiet, common)
    if opts.model != "diffusevae":
        model = make_denoiser(opts, ds)
        folder.begin(out, FAMILY, opts, resume)
        return fit(model, ds, out=out, epochs=opts.epochs, objective=_objective, resume=resume, compile=opts.compile,
                   **common)
    first, stage = make_vae(opts, ds), out / VAE_DIR
    folder.begin(out, FAMILY, opts, resume)
    if not (resume and _stage_done(stage, opts.vae_epochs)):
        again = resume and (stage / CHECKPOINT).exists()
        folder.begin(stage, vae.FAMILY, _vae_options(opts), again)
        if not quiet:
            print(f"stage 1 of 2: the VAE ({opts.vae_epochs} epochs) in {stage}", flush=True)
        fit(first, ds, out=stage, epochs=opts.vae_epochs, objective=lambda m, x, **_: vae_loss(m, x, beta=opts.beta),
            resume=again, **common)
    load_weights(stage / WEIGHTS, first)
    model = DiffuseVAE(first.eval(), make_denoiser(opts, ds, cond_channels=1))
    for p in model.vae.parameters():
        p.requires_grad_(False)
    if opts.expost_gmm:
        model.fit_latent_prior(ds.x_train, opts.expost_gmm, opts.seed)  # kept in the weights file
    if not quiet:
        print(f"stage 2 of 2: the DDPM conditioned on the VAE's reconstructions ({opts.epochs} epochs)", flush=True)
    return fit(model, ds, out=out, epochs=opts.epochs, objective=_objective, resume=resume and (out / CHECKPOINT).exists(),
               compile=opts.compile, **common)


def _train_ldm(opts: DiffusionOptions, ds, out: Path, resume: bool, quiet: bool, common: dict) -> list[dict]:
    """Stage 1, the autoencoder, in out/vae (logs, weights, checkpoint; resumed there); then the scaling factor
    c = 1 / std(z) of the training latents; stage 2, the DDPM on c z, with the autoencoder frozen."""
    from ...checkpoint import load_weights
    from ...train import CHECKPOINT, WEIGHTS, fit

    first, stage = make_autoencoder(opts, ds), out / VAE_DIR
    folder.begin(out, FAMILY, opts, resume)
    if not (resume and _stage_done(stage, opts.vae_epochs)):
        if not quiet:
            print(f"stage 1 of 2: the autoencoder ({opts.vae_epochs} epochs) in {stage}", flush=True)
        fit(first, ds, out=stage, epochs=opts.vae_epochs, objective=_objective,
            resume=resume and (stage / CHECKPOINT).exists(), **common)
    load_weights(stage / WEIGHTS, first)
    model = make_ldm(opts, ds, first.eval())
    for p in model.autoencoder.parameters():
        p.requires_grad_(False)
    scale = model.fit_scale(ds.x_train, opts.seed)  # kept in the weights file (resume restores the same value)
    if not quiet:
        print(f"stage 2 of 2: the DDPM on the scaled latents {list(first.config.latent_shape)} (scale {scale:.4g}, "
              f"{opts.epochs} epochs)", flush=True)
    return fit(model, ds, out=out, epochs=opts.epochs, objective=_objective, resume=resume and (out / CHECKPOINT).exists(),
               compile=opts.compile, **common)


def load(run_dir: Path, opts: DiffusionOptions, data: str | None = None, raw: dict | None = None) -> Run:
    """The options, trained model and data of a diffusion run folder."""
    import torch

    from ...checkpoint import load_weights
    from ...models.diffusion.diffusevae import DiffuseVAE
    from ...models.diffusion.expost import GaussianMixturePrior
    from ...train import WEIGHTS

    if data is not None:
        raise ValueError("--data applies to the VAE family; a diffusion run is evaluated on its own test split")
    opts = check(opts)
    if not (run_dir / WEIGHTS).exists():
        raise FileNotFoundError(f"{run_dir}: no trained weights ({WEIGHTS}); train it first")
    ds = load_data(opts)
    if opts.model == "diffusevae":
        mixture = GaussianMixturePrior(opts.expost_gmm, opts.latent_dim) if opts.expost_gmm else None
        model = DiffuseVAE(make_vae(opts, ds), make_denoiser(opts, ds, cond_channels=1), mixture)
    elif opts.model == "ldm":
        model = make_ldm(opts, ds)
    else:
        model = make_denoiser(opts, ds)
    load_weights(run_dir / WEIGHTS, model)
    return Run(run_dir, FAMILY, opts, model.eval().to("cuda" if torch.cuda.is_available() else "cpu"), ds)


@dataclass
class SampleFlags:
    """`varilab sample`'s flags of a diffusion run."""
    FILE_NAME = ("sampler", "steps")  # the flags that name the samples' file: samples-ddim-50.npy
    sampler: str | None = option(None, "ddpm (ancestral), ddim, euler-maruyama, pf-euler or pf-heun (probability-flow "
                                 "ODE); default ddim", choices=("ddpm", "ddim", "euler-maruyama", "pf-euler", "pf-heun", None))
    steps: int | None = option(None, "sampler steps (default 50; at most the model's T)",
                                check=positive_int.upto(100_000))
    prior: str | None = option(None, "diffusevae: draw z from N(0, I) or the fitted mixture (default: the mixture if "
                               "fitted)", choices=("normal", "expost", None))


def sample(run: Run, n: int, seed: int = 0, sampler: str | None = None, steps: int | None = None,
           prior: str | None = None, chain: bool = False) -> dict:
    """{"samples": [n, D]} (and "vae" for DiffuseVAE, "chain" [steps + 1, n, D] with chain=True), on the CPU.
    DiffuseVAE draws z from `prior`: "normal" (p(z)) or "expost" (the fitted mixture, its default if fitted).
    An ldm draws its scaled latents and decodes them (no chain: its states are latents, not images)."""
    import torch

    from ...models.diffusion.diffusevae import DiffuseVAE
    from ...models.diffusion.ldm import LatentDiffusion

    steps, sampler = steps or 50, sampler or "ddim"
    check_steps(run, steps)
    device = next(run.model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    if isinstance(run.model, DiffuseVAE):
        out = run.model.sample(n, steps=steps, sampler=sampler, chain=chain, generator=g, prior=prior)
        result = {"samples": out[1], "vae": out[0], **({"chain": out[2]} if chain else {})}
    elif prior is not None:
        raise ValueError(f"--prior chooses the latent prior of a diffusevae run; {run.options.model} "
                         + ("draws its latents from its DDPM" if isinstance(run.model, LatentDiffusion) else
                            "has no latent"))
    elif isinstance(run.model, LatentDiffusion):
        if chain:
            raise ValueError("an ldm's sampling chain holds latents, not images; sample without chain")
        result = {"samples": run.model.sample(n, steps=steps, sampler=sampler, generator=g)}
    else:
        if prior is not None:
            raise ValueError(f"--prior chooses the latent prior of a diffusevae run; {run.options.model} has no latent")
        out = run.model.sample(n, steps=steps, sampler=sampler, chain=chain, generator=g)
        result = {"samples": out[0], "chain": out[1]} if chain else {"samples": out}
    return {k: v.cpu() for k, v in result.items()}


def check_steps(run: Run, steps: int) -> None:
    """A DDPM samples with at most its T steps (a flow's ODE takes any number up to the declared bound)."""
    model = getattr(run.model, "denoiser", run.model)  # a DiffuseVAE's or an ldm's DDPM
    limit = getattr(model.config, "T", None)
    if limit and steps > limit and model.config.process != "flow":
        raise ValueError(f"--steps {steps:,} exceeds the {limit:,} timesteps this {run.options.model} was trained "
                         f"with; choose --steps {limit} or fewer")


BOUND_POINTS = 256  # test points of the bound, in `eval` and on the page alike


def bound_bits_per_dim(run: Run, points: int = BOUND_POINTS, n_steps: int = 20, seed: int = 0) -> dict:
    """The DDPM's negative ELBO on test points (unbiased over steps), in nats on the model's scale and in
    bits per dimension of the density on the data's own scale (images: [0, 1], so D log 2 less). Not for an ldm,
    whose DDPM models latents: its bound is no density of the images."""
    import torch

    from ...models.diffusion.diffusevae import DiffuseVAE

    if run.options.model == "ldm":
        raise ValueError("an ldm's DDPM models the autoencoder's latents: its bound is no density of the images")

    model = run.model.denoiser if isinstance(run.model, DiffuseVAE) else run.model
    x = run.data.x_test[:points].to(next(model.parameters()).device)
    torch.manual_seed(seed)
    cond = run.model.reconstruct(x) if isinstance(run.model, DiffuseVAE) else None
    nats = model.nll_bound(x, n_steps=n_steps, cond=cond)
    d = x.shape[1]
    shift = d * math.log(2) if model.config.unit_range else 0.0
    per_dim = (nats - shift) / (d * math.log(2))
    return {"nats_model_scale": float(nats.mean()), "bits_per_dim": float(per_dim.mean()),
            "bits_per_dim_se": float(per_dim.std() / math.sqrt(len(per_dim))), "points": len(x), "steps": n_steps}


def evaluate(run: Run, points: int = 1000, seed: int = 0) -> dict:
    """Test-split loss of the trained objective and, for the DDPM family, the bound in bits per dimension; for an
    ldm the latent DDPM's loss, the autoencoder's reconstruction error and KL, and the latents' scaling factor."""
    import torch

    from ...train import evaluate as mean_over

    torch.manual_seed(seed)
    x = run.data.x_test[:points].to(next(run.model.parameters()).device)
    result = {"test_loss": mean_over(run.model, x, _objective)["loss"]}
    if run.options.model == "ldm":
        return {**result, **autoencoder_errors(run.model, x)}
    if process(run.options) == "ddpm":
        b = bound_bits_per_dim(run, points=min(points, BOUND_POINTS))
        result.update({"bits_per_dim": b["bits_per_dim"], "bits_per_dim_se": b["bits_per_dim_se"]})
    return result


def autoencoder_errors(model, x) -> dict:
    """An ldm's autoencoder on images x: the mean squared error per pixel of D(E[z|x]) on [0, 1], KL(q(z|x) || N(0, I))
    per image in nats, and the scaling factor c."""
    import torch
    from torch.distributions import Independent, Normal, kl_divergence

    with torch.no_grad():
        mse, kl = [], []
        for xb in x.split(500):
            q = model.encode(xb)
            mse.append(((model.decode(q.mean) - xb) ** 2).mean(1))
            prior = Independent(Normal(torch.zeros_like(q.mean), torch.ones_like(q.mean)), 1)
            kl.append(kl_divergence(q, prior))
    return {"reconstruction_mse": float(torch.cat(mse).mean()), "latent_kl": float(torch.cat(kl).mean()),
            "scale": float(model.scale)}


def report(run: Run):
    from .page import ldm_page, page

    if run.options.model == "ldm":
        return ldm_page(run, sample, autoencoder_errors)
    return page(run, sample, bound_bits_per_dim)


FAMILY = register(Family("diffusion", MODELS, DiffusionOptions, train=train, load=load, evaluate=evaluate,
                         report=report, sample=sample, flags={"sample": SampleFlags},
                         commands={"solve": SOLVE, "attack": ATTACK}, resumable=("epochs", "vae_epochs"),
                         files=(VAE_DIR,),
                         why_not={"diagnose": "a diffusion model's noise has no learned posterior to diagnose; "
                                              "`varilab eval` gives its bound in bits/dim, a diffusevae run's VAE "
                                              "is diagnosed with `varilab diagnose RUN/vae`, and an ldm's autoencoder "
                                              "from Python: varilab.diagnostics.diagnose(run.model.encode, x)"}))
