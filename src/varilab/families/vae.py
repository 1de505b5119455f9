"""The VAE family: VAEs and their relatives (linear, discrete, VampPrior, conditional, hierarchical, ARD),
trained on the ELBO or the IWAE bound, evaluated in nats per test point, diagnosed for collapse."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from . import folder
from .attack import ATTACK
from .collapse import ActivityFlags, encoder_diagnosis
from .options import (Range, TrainOptions, floats, ints, non_negative, non_negative_int, option, positive, positive_int,
                      positive_ints)
from .protocol import Family, Run
from .registry import register

MODELS = {
    "vae": "MLP or convolutional VAE, Bernoulli or Gaussian (fixed or learned variance) likelihood",
    "linear-vae": "linear encoder and decoder, exact marginal likelihood",
    "discrete-vae": "categorical latents; train with --estimator score or gumbel",
    "vampprior": "MLP VAE with a VampPrior (mixture of posteriors at pseudo-inputs)",
    "cvae": "conditional VAE, on the class label or the top half of an image",
    "linear-cvae": "the linear conditional VAE of the theory",
    "hvae": "two-level hierarchical VAE, a beta per level, learned or fixed encoder variance",
    "linear-hvae": "the linear two-level hierarchical VAE of the theory",
    "ard-vae": "VAE with an ARD prior N(0, diag(tau)) re-estimated from the posterior",
}
NONLINEAR = tuple(m for m in MODELS if not m.startswith("linear-"))
LIKELIHOOD = ("vae", "vampprior", "cvae", "hvae", "ard-vae")
GAUSSIAN = LIKELIHOOD + ("linear-vae", "linear-cvae", "linear-hvae")
HIERARCHICAL = ("hvae", "linear-hvae")
CONDITIONAL = ("cvae", "linear-cvae")
MAX_K = 100_000  # importance samples per test point for --nll (10,000 points at K = 5,000 take minutes on a CPU)


def _obs_var(text):
    from ..models.likelihoods import parse_obs_var

    return parse_obs_var(text)


def gaussian(opts, model=None) -> bool:
    """Whether the observation model is Gaussian (a model without the --likelihood choice always is)."""
    return opts.model not in LIKELIHOOD or opts.likelihood == "gaussian"


def score(opts, model=None) -> bool:
    return opts.estimator == "score"


@dataclass
class VAEOptions(TrainOptions):
    DEFAULTS = {"data": "digits", "epochs": 50}
    model: str = option("vae", "the model", choices=MODELS)
    latent_dim: int = option(16, "number of latent dimensions", check=positive_int.upto(65_536))
    hidden: list[int] = option([512], "hidden layer sizes, comma-separated", parse=ints, check=positive_ints.upto(65_536),
                               models=NONLINEAR)
    likelihood: str = option("bernoulli", "observation model", choices=("bernoulli", "gaussian"), models=LIKELIHOOD)
    obs_var: float | str = option(1.0, "Gaussian observation variance: a number or 'learned'", parse=_obs_var,
                                  check=positive.upto(1e6, also=("learned",)), models=GAUSSIAN, when=gaussian)
    arch: str = option("mlp", "mlp, or conv (convolutional encoder and decoder, for images)", choices=("mlp", "conv"),
                       models=("vae", "vampprior", "ard-vae"))
    categories: int = option(10, "classes per categorical latent", check=Range(2, 1024, integer=True, below="at least 2"),
                             models=("discrete-vae",))
    pseudo_inputs: int = option(100, "number of pseudo-inputs", check=positive_int.upto(100_000), models=("vampprior",))
    condition: str = option("label", "what the model is conditioned on: the class label (one-hot) or the top half "
                            "of an image (it completes the bottom half)", choices=("label", "top-half"),
                            models=CONDITIONAL)
    latent_dim_2: int = option(8, "size of the second latent level", check=positive_int.upto(65_536), models=HIERARCHICAL)
    beta2: float = option(1.0, "weight of the second level's KL", check=non_negative.upto(1e4), models=HIERARCHICAL)
    enc_var_1: float | None = option(None, "fix the first level's encoder variance (default: learned)",
                                     check=positive, models=HIERARCHICAL)
    beta: float = option(1.0, "weight of the KL term", check=non_negative.upto(1e4))
    objective: str = option("elbo", "training objective", choices=("elbo", "iwae"))
    samples: int = option(1, "Monte-Carlo samples per data point; the K of iwae",
                         check=positive_int.upto(10_000))
    estimator: str = option("reparam", "gradient estimator of the latents",
                            choices=("reparam", "score", "gumbel", "straight-through"))
    baseline: str = option("none", "score-function baseline (VIMCO under iwae)",
                           choices=("none", "moving-average", "leave-one-out"), when=score)
    temperature: float = option(0.5, "gumbel / straight-through relaxation temperature", check=positive.upto(100),
                                models=("discrete-vae",))
    free_bits: float = option(0.0, "free bits per latent dimension, in nats (0: off)", check=non_negative.upto(1e3))
    kl_warmup_epochs: int = option(0, "epochs of linear KL warm-up from 0 to --beta (0: off)",
                                  check=non_negative_int.upto(100_000))
    kl_cycle_epochs: int = option(0, "epochs per cycle of cyclical KL annealing (0: off)",
                                 check=non_negative_int.upto(100_000))
    binarize: str = option("none", "binarise the data once (fixed) or per batch (dynamic)",
                           choices=("none", "fixed", "dynamic"))
    n: int | None = option(None, "generated data: number of samples (default 10000)", check=positive_int)
    spectrum: list[float] | None = option(None, "linear-gaussian: covariance eigenvalues, e.g. 9,6,4,2.5", parse=floats,
                                            check=Range(0, 1e6, open_lo=True, below="positive numbers", each=True))
    dim: int | None = option(None, "linear-gaussian: data dimension (the last eigenvalue repeats)",
                              check=positive_int.upto(65_536))
    size: int | None = option(None, "shapes: image side in pixels (default 32)", check=positive_int.upto(1024))
    precision: str = option("auto", "bf16 runs the forward pass under bfloat16 autocast; auto chooses it where the "
                            "device has native bfloat16, else fp32", choices=("auto", "fp32", "bf16"))
    compile: bool = option(False, "torch.compile the training step (eager, with a notice, when compiling fails)")
    diagnostics: bool = option(False, "log KL per dimension, activity and active units of the test split every epoch")


def check(opts: VAEOptions) -> None:
    """Constraints between options."""
    if opts.kl_warmup_epochs and opts.kl_cycle_epochs:
        raise ValueError("choose kl_warmup_epochs or kl_cycle_epochs, not both")
    if opts.baseline == "leave-one-out" and opts.objective == "elbo" and opts.samples < 2:
        raise ValueError("the leave-one-out baseline needs --samples 2 or more")
    if opts.objective == "iwae" and (opts.free_bits or opts.kl_warmup_epochs or opts.kl_cycle_epochs or opts.beta != 1.0):
        raise ValueError("beta, free_bits and KL schedules apply to the ELBO, not to --objective iwae")


def load_data(opts: VAEOptions, spec: str | None = None):
    from .. import data as vdata

    return vdata.load(spec or opts.data, binarize=opts.binarize, test_fraction=opts.test_fraction, seed=opts.seed,
                      n=opts.n, spectrum=opts.spectrum, dim=opts.dim, size=opts.size,
                      condition=opts.condition if opts.model in CONDITIONAL else "none")


def make_model(opts: VAEOptions, ds):
    import torch

    from ..models import build_model

    torch.manual_seed(opts.seed)  # the initial weights follow --seed
    return build_model(opts.model, ds.x_dim, cond_dim=None if ds.c_train is None else ds.c_train.shape[1],
                       arch=opts.arch, image_shape=ds.image_shape, latent_dim=opts.latent_dim, hidden=opts.hidden,
                       likelihood=opts.likelihood, obs_var=opts.obs_var, categories=opts.categories,
                       latent_dim_2=opts.latent_dim_2, enc_var_1=opts.enc_var_1, pseudo_inputs=opts.pseudo_inputs)


def make_objective(opts: VAEOptions, model, steps_per_epoch: int):
    """(objective, beta) for `fit`: the loss the options name and beta as a number or a schedule."""
    from ..core import MovingAverage, cyclical, hierarchical_loss, iwae_loss, linear_warmup, vae_loss

    if opts.objective == "iwae":
        return functools.partial(iwae_loss, k=opts.samples, estimator=opts.estimator), 1.0
    warmup, cycle = opts.kl_warmup_epochs * steps_per_epoch, opts.kl_cycle_epochs * steps_per_epoch
    if getattr(model, "levels", 1) > 1:
        if opts.estimator != "reparam" or opts.samples != 1 or opts.free_bits:
            raise ValueError("the hierarchical VAE trains with the reparameterised single-sample ELBO only")
        objective = functools.partial(hierarchical_loss, betas=[opts.beta, opts.beta2])
        if warmup:
            return objective, functools.partial(linear_warmup, warmup_steps=warmup)
        return (objective, functools.partial(cyclical, period=cycle)) if cycle else (objective, 1.0)
    baseline = {"none": None, "moving-average": MovingAverage(0.9), "leave-one-out": "leave-one-out"}[opts.baseline]
    objective = functools.partial(vae_loss, estimator=opts.estimator, k=opts.samples, baseline=baseline,
                                  temperature=opts.temperature, free_bits=opts.free_bits)
    if warmup:
        return objective, functools.partial(linear_warmup, warmup_steps=warmup, end=opts.beta)
    if cycle:
        return objective, functools.partial(cyclical, period=cycle, end=opts.beta)
    return functools.partial(objective, beta=opts.beta), opts.beta


def preflight(model, ds, batch_size: int) -> list[str]:
    """Check the data against the model's likelihood: errors raise, warnings are returned."""
    lo, hi = float(ds.x_train.min()), float(ds.x_train.max())
    # a config without a likelihood field has a fixed one: Gaussian where it has an observation variance
    likelihood = getattr(model.config, "likelihood", "gaussian" if hasattr(model.config, "obs_var") else "bernoulli")
    if likelihood == "bernoulli" and (lo < 0 or hi > 1):
        raise ValueError(f"a Bernoulli likelihood needs data in [0, 1], but {ds.name} ranges over [{lo:.4g}, {hi:.4g}]; "
                         "rescale it (e.g. divide 0-255 pixels by 255) or pass --likelihood gaussian")
    warnings = []
    if likelihood == "gaussian" and hi > 20 and lo >= 0:
        warnings.append(f"warning: {ds.name} ranges over [{lo:.4g}, {hi:.4g}], like raw pixels; a Gaussian likelihood "
                        "trains better on scaled data (divide by 255, or standardise)")
    if len(ds.x_train) < batch_size:
        warnings.append(f"warning: batch size {batch_size} exceeds the {len(ds.x_train)} training rows")
    return warnings


def train(opts: VAEOptions, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    import sys

    from ..train import fit

    check(opts)
    ds = load_data(opts)
    widths = ds.x_dim + 2 * sum(opts.hidden) + 4 * opts.latent_dim  # floats a sample keeps for backward, about
    folder.check_fits(lambda: make_model(opts, ds), f"a {opts.model} of these sizes",
                      extra_bytes=3 * 4 * opts.batch_size * opts.samples * widths)
    print(ds.summary(), file=sys.stderr)
    model = make_model(opts, ds)
    for w in preflight(model, ds, opts.batch_size):
        print(w, file=sys.stderr)
    objective, beta = make_objective(opts, model, -(-len(ds.x_train) // opts.batch_size))
    folder.begin(out, FAMILY, opts, resume)
    return fit(model, ds, out=out, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr, beta=beta,
               objective=objective, seed=opts.seed, resume=resume, quiet=quiet, diagnostics=opts.diagnostics,
               precision=opts.precision, compile=opts.compile)


def load(run_dir: Path, opts: VAEOptions, data: str | None = None, raw: dict | None = None) -> Run:
    ds = load_data(opts, data)
    return Run(run_dir, FAMILY, opts, folder.trained(run_dir, make_model(opts, ds), ds), ds)


def _test_split(run: Run):
    from ..train import test_inputs

    device = next(run.model.parameters()).device
    x = test_inputs(run.data.x_test.to(device), run.data)
    return x, None if run.data.c_test is None else run.data.c_test.to(device)


@dataclass
class NLLFlags:
    """`varilab eval`'s flags of a VAE run."""
    nll: bool = option(False, "add the importance-sampled negative log-likelihood")
    k: list[int] = option([1000], "importance samples for --nll; a list (1,10,100,1000) adds the sweep", parse=ints,
                          check=positive_ints.upto(MAX_K))


def evaluate(run: Run, nll: bool = False, k: list[int] = (1000,), seed: int = 0) -> dict:
    """Mean ELBO, reconstruction log-likelihood and KL over the test split (Monte-Carlo with a fixed seed);
    for a linear-vae also the exact negative log-likelihood -log N(x; b, W W^T + sigma^2 I).

    With `nll`, the importance-sampled NLL for each K of `k`: "nll", "nll_se" and "elbo_gap" for the largest
    K, and "nll_sweep" (one entry per K) when several are given.
    """
    nll_k = list(k) if nll else None
    import torch

    from ..core import elbo_terms, hierarchical_elbo_terms, log_likelihood
    from ..train import evaluate as mean_over

    if nll_k and max(nll_k) > MAX_K:
        raise ValueError(f"--k {max(nll_k):,} would draw {max(nll_k) * len(run.data.x_test):,} samples (K x "
                         f"{len(run.data.x_test):,} test points); the bound is K <= {MAX_K:,}")
    x, cond = _test_split(run)
    torch.manual_seed(seed)
    if getattr(run.model, "levels", 1) > 1:
        m = mean_over(run.model, x, hierarchical_elbo_terms)
    else:
        m = mean_over(run.model, x, functools.partial(elbo_terms, estimator="score"), cond=cond)  # plain sampling
    result = {"data": run.data.name, "n_test": len(x), **{k: m[k] for k in m if k in ("elbo", "recon") or k.startswith("kl")}}
    if hasattr(run.model, "marginal") and cond is None:
        with torch.no_grad():
            result["exact_nll"] = float(-run.model.marginal().log_prob(x).mean())
    if nll_k:
        import sys

        from tqdm import tqdm

        sweep = []
        bar = tqdm(total=len(x) * len(set(nll_k)), unit="pt", desc="NLL", leave=False, disable=not sys.stderr.isatty())
        for k in sorted(set(nll_k)):
            torch.manual_seed(seed)
            ll = log_likelihood(run.model, x, k=k, cond=cond, progress=bar.update)
            sweep.append({"k": k, "nll": ll["nll"], "nll_se": ll["nll_se"], "elbo_gap": ll["elbo_gap"]})
        bar.close()
        result.update({key: sweep[-1][key] for key in ("nll", "nll_se", "elbo_gap", "k")})
        if len(sweep) > 1:
            result["nll_sweep"] = sweep
    return result


def diagnose(run: Run, threshold: float = 0.01) -> tuple[dict, list[str]]:
    x, cond = _test_split(run)
    return encoder_diagnosis(run.model, x, cond, threshold)


def report(run: Run):
    from ..checkpoint import read_jsonl
    from ..report import Page, Section, table
    from ..report.latents import diagnostics_section, generation_sections
    from ..train import METRICS

    metrics = read_jsonl(run.dir / METRICS)
    final = evaluate(run)
    x, cond = _test_split(run)
    last = metrics[-1] if metrics else {}
    verdict = (f"After {last.get('epoch', 0)} epochs, the test ELBO is {final['elbo']:.2f} nats per point: "
               f"reconstruction {final['recon']:.2f}, KL {final['kl']:.2f}.")
    rows = [("test ELBO (nats/point)", final["elbo"]), ("test reconstruction log p(x|z)", final["recon"]),
            ("test KL(q(z|x) || p(z))", final["kl"]), ("test points", final["n_test"])]
    if "exact_nll" in final:
        verdict += f" The exact negative log-likelihood is {final['exact_nll']:.2f} nats per point."
        rows.append(("exact NLL (nats/point)", final["exact_nll"]))
    if metrics:
        rows += [("final train loss", last["loss"]), ("epochs trained", last["epoch"]),
                 ("training time (s)", sum(m.get("seconds", 0.0) for m in metrics))]
    rows.append(("data (as loaded)", run.data.summary().removeprefix("data ")))
    sections = generation_sections(run.model, run.data, x)
    sections += [diagnostics_section(run.model, x, cond, run.data.image_shape, metrics), Section("Final metrics", table(rows))]
    curves = [("loss", "loss (negative ELBO, nats)"), ("recon", "reconstruction log p(x|z)"), ("kl", "KL(q(z|x) || p(z))")]
    return Page(f"{run.options.model} on {run.data.name}", verdict, sections, curves)


def sample(run: Run, n: int, seed: int = 0) -> dict:
    """Decoder means of z ~ p(z) (not for conditional models, whose prior needs a condition)."""
    import torch

    from ..core import sample_latent

    if run.options.model in CONDITIONAL:
        raise ValueError(f"a {run.options.model} samples given a condition; `varilab report` shows its conditional samples")
    torch.manual_seed(seed)
    with torch.no_grad():
        x = run.model.decode(sample_latent(run.model, n)).mean
    return {"samples": x.float().cpu()}


def upgrade(raw: dict) -> dict:
    """Format 1 folders named the KL schedules in epochs without saying so, and held every option."""
    raw = dict(raw)
    for old in ("kl_warmup", "kl_cycle"):
        if old in raw:
            raw[f"{old}_epochs"] = raw.pop(old)
    if raw.get("condition") == "none":
        raw.pop("condition")
    return raw


FAMILY = register(Family("vae", MODELS, VAEOptions, train=train, load=load, evaluate=evaluate, diagnose=diagnose,
                         report=report, sample=sample, flags={"evaluate": NLLFlags, "diagnose": ActivityFlags},
                         commands={"attack": ATTACK}, upgrade=upgrade))
