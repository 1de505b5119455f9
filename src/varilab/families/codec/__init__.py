"""The codec family: learned image compression into real bitstreams. `vq-codec` quantises latent vectors with m
codebooks of K codes (`varilab.models.codec.vq_codec`), `factorized` rounds each latent (`varilab.models.codec.factorized`), and
`recombiner` / `combiner` send a sample of a posterior over an implicit neural representation's weights by relative
entropy coding (`varilab.models.codec.recombiner`). `varilab compress` range-codes the symbols under integer tables saved
with the weights into a checked `.vlc` file, and `varilab decompress` turns one back into images."""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import folder
from ..options import Range, TrainOptions, between, non_negative, non_negative_int, option, positive, positive_int, unit_interval
from ..protocol import Family, Run
from ..registry import register
from .files import COMPRESS, DECOMPRESS, CompressOptions, DecompressOptions, decode, encode, images
from .metrics import evaluated
from .trends import rate_trend

__all__ = ["CodecOptions", "CompressOptions", "DecompressOptions", "FAMILY", "decode", "encode", "images"]

MODELS = {"vq-codec": "convolutional codec: m codebooks of K codes per latent vector, rate from learned code "
                      "frequencies, objective D + lambda R",
          "factorized": "the baseline: scalar quantisation of each latent, a learned density per channel (Balle et "
                        "al., 2017), objective D + lambda R",
          "hyperprior": "mean-scale hyperprior (Balle et al., 2018; Minnen et al., 2018): each latent coded under a "
                        "Gaussian whose mean and scale come from a coded hyper latent, objective D + lambda R with the "
                        "side information counted",
          "recombiner": "RECOMBINER: a posterior over an INR's weights w = A h (A shared, learned) with latent grids, "
                        "coded by relative entropy coding at about KL bits",
          "combiner": "COMBINER, the mean-field variant: a factorised posterior over the INR's weights, no grids"}
VQ = ("vq-codec",)
FACTORIZED = ("factorized",)
HYPER = ("hyperprior",)
SCALAR = FACTORIZED + HYPER  # latents rounded to integers under a learned density
CONV = VQ + SCALAR
INR = ("recombiner", "combiner")


def gumbel(opts, model=None) -> bool:
    return opts.quantiser == "gumbel"


def ema(opts, model=None) -> bool:
    return opts.quantiser == "ema"


RATE_WEIGHT_HELP = ("lambda of D + lambda R (D: mean squared error per pixel, R: bits per pixel; recombiner: "
                    "R = KL(q || p), beta). Typical rates: at 0.01 on the 8x8 digits, vq-codec about 5.1 and the "
                    "hyperprior about 1.3 bits per pixel (30 epochs); the hyperprior on Fashion-MNIST about 2.1 at "
                    "1e-4 and 1.4 at 1e-3 (3,750 steps); a lower lambda buys PSNR only once the model has trained long "
                    "enough to use the bits")


@dataclass
class CodecOptions(TrainOptions):
    DEFAULTS = {"data": "digits", "epochs": 30, "batch_size": 64, "lr": 2e-3}
    # INR codecs: an epoch is one Adam step of every training posterior; a batch, every training image
    PER_MODEL = {**{m: {"epochs": 1000, "batch_size": None, "lr": 1e-2} for m in INR},
                 "hyperprior": {"latent": 8, "downsample": 1, "support": 63}}
    HELP = {"data": "images in [0, 1]: digits, fashion-mnist, mnist-5k or an .npy [N, H, W]",
            "test_fraction": "share of the images held out as the test split",
            "batch_size": "images per batch (recombiner, combiner: every training image when not given)",
            "seed": "random seed for data, split and initialisation"}
    model: str = option("vq-codec", "the model", choices=MODELS)
    groups: int = option(4, "m: codebooks per stage (the latent vector splits into m parts)",
                         check=positive_int.upto(256),
                         models=VQ)
    codes: int = option(64, "K: codes per codebook", check=Range(2, 65_536, integer=True, below="at least 2"),
                        models=VQ)
    stages: int = option(1, "residual quantisation stages", check=positive_int.upto(16), models=VQ)
    latent: int = option(32, "channels of a latent vector (vq-codec: a multiple of --groups)", check=positive_int.upto(4096),
                         models=CONV)
    support: int = option(15, "L: the latents' codes lie in [-L, L]", check=positive_int.upto(10_000), models=SCALAR)
    mixtures: int = option(3, "logistics in each channel's density (hyperprior: of the hyper latent's)",
                           check=positive_int.upto(64), models=SCALAR)
    transform: str = option("relu", "the convolutional transforms", models=SCALAR, choices={
        "relu": "--downsample stride-2 convolutions with ReLU between (the vq-codec's)",
        "gdn": "four convolutions of kernel 5 per side with GDN between, the first --downsample strided (Balle et "
               "al.)"})
    hidden: int = option(64, "channels of the convolutions", check=positive_int.upto(4096), models=CONV)
    downsample: int = option(1, "stride-2 convolutions (latents 2^downsample times coarser than the image; 0 with "
                             "the GDN transforms: none)", check=non_negative_int.upto(10), models=CONV)
    units: int = option(24, "units of each of the INR's hidden layers", check=positive_int.upto(4096), models=INR)
    layers: int = option(2, "the INR's hidden layers", check=positive_int.upto(64), models=INR)
    fourier: int = option(8, "frequencies of the INR's Fourier features (1 to the Nyquist rate)", check=positive_int.upto(1024),
                          models=INR)
    grid_channels: int = option(2, "channels of each image's latent grid (side: a quarter of the image's); 0: none",
                                check=non_negative_int.upto(256), models=("recombiner",))
    kappa: int = option(12, "bits per coded block: 2^kappa shared-seed candidates each",
                        check=between(1, 16, integer=True), models=INR)
    em_rounds: int = option(5, "coordinate-ascent rounds: the prior is moment-matched after each 1/rounds of "
                            "the epochs", check=positive_int.upto(10_000), models=INR)
    fit_steps: int = option(500, "Adam steps fitting the posterior of an image to compress", check=positive_int,
                            models=INR)
    finetune_steps: int = option(5, "Adam steps on the blocks still to send after each sent block",
                                 check=non_negative_int.upto(100_000), models=INR)
    hard: bool = option(False, "straight-through (hard codes forward, relaxed gradients) instead of Gumbel-softmax",
                        models=VQ, when=gumbel)
    quantiser: str = option("ema", "how codes are picked in training", models=VQ, choices={
        "gumbel": "drawn from softmax(-||z - c_k||^2 * sharpness), Gumbel-softmax or --hard straight-through; "
                  "codebooks learned by gradient, unused codes re-seeded every --reseed-every steps",
        "ema": "the nearest code, as at coding time, gradient straight through to the encoder; codebooks the "
               "exponential averages of their vectors, unused codes restarted at the worst-served vectors"})
    ema_decay: float = option(0.99, "decay of the codebooks' exponential averages (--quantiser ema)",
                              check=unit_interval, models=VQ, when=ema)
    restart_below: float = option(0.3, "a code used less than this share of 1/K (exponential average) restarts "
                                  "at a worst-served latent vector (--quantiser ema)", check=unit_interval, models=VQ,
                                  when=ema)
    usage_weight: float = option(0.003, "weight of the usage penalty log2 K - H(the batch's soft code usage), in bits: "
                                 "pushes codebooks towards even use (--quantiser ema)",
                                 check=non_negative.upto(1e4), models=VQ, when=ema)
    usage_margin: float = option(0.5, "bits of usage gap each codebook keeps before the usage penalty acts on it: "
                                 "a codebook whose soft usage has perplexity above K / 2^margin is left alone",
                                 check=non_negative.upto(64), models=VQ, when=ema)
    commitment: float = option(0.25, "weight of the commitment loss mean ||z - sg(c_k)||^2 (--quantiser ema)",
                               check=non_negative.upto(1e4), models=VQ, when=ema)
    rate_weight: float = option(0.01, RATE_WEIGHT_HELP, check=non_negative.upto(1e4))
    tau_start: float = option(1.0, "Gumbel-softmax temperature at the start, annealed geometrically", check=positive.upto(100),
                              models=VQ, when=gumbel)
    tau_end: float = option(0.1, "Gumbel-softmax temperature at the end", check=positive.upto(100), models=VQ,
                            when=gumbel)
    reseed_every: int = option(50, "steps between re-seeding codes unused for a while", check=positive_int, models=VQ,
                               when=gumbel)


def load_data(opts: CodecOptions):
    from ...data import load

    ds = load(opts.data, test_fraction=opts.test_fraction, seed=opts.seed)
    if ds.image_shape is None:
        raise ValueError(f"--data {opts.data}: the codec needs images ([N, H, W]), got rows of {ds.x_dim} values")
    side = 2 ** opts.downsample if opts.model in CONV else 1
    if any(s % side for s in ds.image_shape):
        raise ValueError(f"--downsample {opts.downsample} needs image sides divisible by {side}, got {ds.image_shape}")
    if opts.model in CONV and opts.downsample == 0 and not (opts.model in SCALAR and opts.transform == "gdn"):
        raise ValueError("--downsample 0 needs the GDN transforms: --transform gdn (factorized, hyperprior)")
    if ds.x_train.min() < 0 or ds.x_train.max() > 1:
        raise ValueError(f"--data {opts.data}: pixel values must lie in [0, 1]")
    return ds


def make_model(opts: CodecOptions, ds):
    import torch

    from ...models.codec.vq_codec import VQCodec, VQCodecConfig

    torch.manual_seed(opts.seed)
    if opts.model in INR:
        from ...models.codec.recombiner import Recombiner, RecombinerConfig

        return Recombiner(RecombinerConfig(
            image_shape=tuple(ds.image_shape), images=len(ds.x_train), linear=opts.model == "recombiner",
            grid_channels=opts.grid_channels if opts.model == "recombiner" else 0, fourier=opts.fourier,
            units=opts.units, layers=opts.layers, kappa=opts.kappa, em_every=max(1, opts.epochs // opts.em_rounds), em_rounds=opts.em_rounds,
            rate_weight=opts.rate_weight, lr=opts.lr, fit_steps=opts.fit_steps, finetune_steps=opts.finetune_steps,
            code_seed=opts.seed))
    if opts.model == "factorized":
        from ...models.codec.factorized import Factorized, FactorizedConfig

        return Factorized(FactorizedConfig(channels=1, latent=opts.latent, hidden=opts.hidden, transform=opts.transform,
                                           downsample=opts.downsample, support=opts.support, mixtures=opts.mixtures))
    if opts.model == "hyperprior":
        from ...models.codec.hyperprior import Hyperprior, HyperpriorConfig

        return Hyperprior(HyperpriorConfig(channels=1, latent=opts.latent, hidden=opts.hidden, transform=opts.transform,
                                           downsample=opts.downsample, support=opts.support, mixtures=opts.mixtures))
    return VQCodec(VQCodecConfig(channels=1, latent=opts.latent, groups=opts.groups, codes=opts.codes,
                                 stages=opts.stages, hidden=opts.hidden, downsample=opts.downsample, hard=opts.hard,
                                 quantiser=opts.quantiser, ema_decay=opts.ema_decay,
                                 restart_below=opts.restart_below, usage_margin=opts.usage_margin))


def tau_at(opts: CodecOptions, step: int, steps_total: int) -> float:
    """The Gumbel-softmax temperature at a global step: tau_start (tau_end / tau_start)^min(1, step / (steps - 1))."""
    return opts.tau_start * (opts.tau_end / opts.tau_start) ** min(1.0, step / max(1, steps_total - 1))


def objective(opts: CodecOptions, steps_total: int):
    """D + lambda R with tau annealed from tau_start to tau_end over training; codes unused for a while are
    re-seeded every `reseed_every` steps; the integer tables follow the code frequencies. Both schedules are
    functions of the trainer's global step (`step`, the steps done when evaluating), so a resumed run follows
    them from where it stopped."""

    def loss(model, x, step: int = 0, **unused):
        imgs = x.reshape(len(x), 1, *model.image_shape)
        logged = {}
        if opts.model == "vq-codec":
            tau = tau_at(opts, step, steps_total)
            if not bool(model.initialised):
                model.init_codebooks(imgs)
            elif model.training and opts.quantiser == "gumbel" and step and step % opts.reseed_every == 0:
                model.reseed_dead(imgs)
            logged = {"tau": tau, "perplexity": model.perplexity().mean()}
        else:
            tau = 1.0  # the factorized model: uniform noise in training (any tau)
        xhat, bpp = model(imgs, tau=tau if model.training else None)
        logged.update(getattr(model, "parts", {}))  # hyperprior: the side information's and the latents' bpp
        mse = (xhat - imgs).pow(2).mean()
        loss = mse + opts.rate_weight * bpp.mean()
        if model.training and opts.model == "vq-codec" and opts.quantiser == "ema":
            loss = loss + opts.commitment * model.commitment + opts.usage_weight * model.usage_gap
            logged.update(commitment=model.commitment, usage_gap=model.usage_gap)
        model.freeze_tables()
        return {"loss": loss, "mse": mse, "bpp": bpp.mean(),
                "psnr": -10 * math.log10(max(float(mse.detach()), 1e-12)), **logged}

    return loss


def indexed(ds):
    """The data set with each training image's index as its condition (its posterior) and -1 for test images."""
    import dataclasses

    import torch

    return dataclasses.replace(ds, c_train=torch.arange(float(len(ds.x_train)))[:, None],
                               c_test=torch.full((len(ds.x_test), 1), -1.0), condition="index")


def train(opts: CodecOptions, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    from ...train import fit

    if opts.model == "vq-codec" and opts.latent % opts.groups:
        raise ValueError(f"--latent {opts.latent} must be a multiple of --groups {opts.groups}")
    ds = load_data(opts)
    folder.check_fits(lambda: make_model(opts, ds), f"a {opts.model} of these sizes")
    model = make_model(opts, ds)
    model.image_shape = ds.image_shape
    print(ds.summary(), file=sys.stderr)
    folder.begin(out, FAMILY, opts, resume)
    o = opts
    if opts.model in INR:
        from ...models.codec.recombiner import trainer_loss

        return fit(model, indexed(ds), out=out, epochs=o.epochs, batch_size=o.batch_size or len(ds.x_train), lr=o.lr,
                   seed=o.seed, resume=resume, quiet=quiet, objective=trainer_loss)
    steps = o.epochs * math.ceil(len(ds.x_train) / o.batch_size)
    return fit(model, ds, out=out, epochs=o.epochs, batch_size=o.batch_size, lr=o.lr, seed=o.seed,
               resume=resume, quiet=quiet, objective=objective(o, steps))


def load(run_dir: Path, opts: CodecOptions, data: str | None = None, raw: dict | None = None) -> Run:
    import dataclasses

    if data is not None:
        opts = dataclasses.replace(opts, data=data)
    ds = load_data(opts)
    model = folder.trained(run_dir, make_model(opts, ds), ds)
    model.image_shape = ds.image_shape
    return Run(run_dir, FAMILY, opts, model, ds)


def evaluate(run: Run) -> dict:
    """On the test split: distortion (MSE, PSNR, SSIM) of the decoded file, bits per pixel of the bytes actually written
    beside the model's estimate, the decoded codes checked against the encoder's, and each codebook's perplexity."""
    return evaluated(run)[0]


def report(run: Run):
    from .page import page

    return page(run)


FAMILY = register(Family("codec", MODELS, CodecOptions, train=train, load=load, evaluate=evaluate, report=report,
                         commands={"compress": COMPRESS, "decompress": DECOMPRESS},
                         why_not={"diagnose": "`varilab eval` reports the codebooks' perplexity"}, trends=rate_trend))
