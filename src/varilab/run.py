"""A run folder on disk: its JSON config, the data and model it names, and the checks before training.

Files in a run folder: config.json, metrics.jsonl, model.safetensors, checkpoint.safetensors, report.html.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from . import data as vdata
from .checkpoint import atomic_write, load_weights
from .core import ESTIMATORS, MovingAverage, cyclical, hierarchical_loss, iwae_loss, linear_warmup, vae_loss
from .models import CONDITIONAL, MODELS, build_model
from .models.likelihoods import LIKELIHOODS, parse_obs_var
from .train import CHECKPOINT, METRICS, PRECISIONS, WEIGHTS

CONFIG = "config.json"
REPORT = "report.html"
RUN_FILES = (CONFIG, METRICS, WEIGHTS, CHECKPOINT, REPORT)


@dataclass
class RunConfig:
    model: str = "vae"
    data: str = "digits"
    latent_dim: int = 16
    hidden: list[int] = field(default_factory=lambda: [512])
    likelihood: str = "bernoulli"
    obs_var: float | str = 1.0
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    beta: float = 1.0
    seed: int = 0
    binarize: str = "none"
    test_fraction: float = 0.2
    objective: str = "elbo"  # or "iwae"
    samples: int = 1  # Monte-Carlo samples per data point (the K of IWAE)
    estimator: str = "reparam"  # gradient estimator of the latents: reparam, score, gumbel, straight-through
    baseline: str = "none"  # score function: none, moving-average, leave-one-out (VIMCO under iwae)
    temperature: float = 0.5  # gumbel / straight-through relaxation temperature
    categories: int = 10  # discrete-vae: classes per latent variable
    free_bits: float = 0.0  # nats per latent dimension (0: off)
    kl_warmup: int = 0  # epochs of linear KL warm-up from 0 to beta (0: off)
    kl_cycle: int = 0  # epochs per cycle of cyclical KL annealing (0: off)
    beta2: float = 1.0  # hvae: weight of the second level's KL
    latent_dim_2: int = 8  # hvae: size of z_2
    enc_var_1: float | None = None  # hvae: fixed encoder variance of z_1 (None: learned)
    pseudo_inputs: int = 100  # vampprior: number of pseudo-inputs
    condition: str = "none"  # cvae: "label" or "top-half"
    arch: str = "mlp"  # vae and its relatives: "mlp" or "conv"
    n: int | None = None  # generated data: number of samples
    spectrum: list[float] | None = None  # linear-gaussian: leading covariance eigenvalues
    dim: int | None = None  # linear-gaussian: data dimension
    size: int | None = None  # shapes: image side in pixels
    precision: str = "fp32"  # or "bf16": the forward pass under bfloat16 autocast
    compile: bool = False  # torch.compile the training step (eager when compiling fails)


KEYS = [f.name for f in dataclasses.fields(RunConfig)]
INTS = {"latent_dim", "epochs", "batch_size", "seed", "n", "dim", "size", "samples", "categories", "kl_warmup", "kl_cycle",
        "latent_dim_2", "pseudo_inputs"}
FLOATS = {"lr", "beta", "test_fraction", "temperature", "free_bits", "beta2", "enc_var_1"}
OBJECTIVES = ("elbo", "iwae")
BASELINES = ("none", "moving-average", "leave-one-out")


def _boolean(value) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).strip().lower() in ("true", "1", "yes"):
        return True
    if str(value).strip().lower() in ("false", "0", "no"):
        return False
    raise ValueError


def check_keys(d: dict, keys: list[str], where: str, what: str = "") -> None:
    """Refuse a key not in `keys`, naming the closest valid one (or all of them)."""
    for key in d:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; valid keys: {', '.join(keys)}"
            raise ValueError(f"{where}: unknown config key {key!r}{what}{hint}")


def config_from_dict(d: dict, where: str = "config") -> RunConfig:
    """Build a RunConfig, refusing unknown keys (with the closest valid one) and ill-typed values."""
    check_keys(d, KEYS, where)
    clean = {}
    for key, value in d.items():
        if value is None:
            continue
        try:
            if key in INTS:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                value = int(value)
            elif key in FLOATS:
                value = float(value)
            elif key == "hidden":
                value = [int(h) for h in (value.split(",") if isinstance(value, str) else value)]
            elif key == "spectrum":
                value = [float(v) for v in (value.split(",") if isinstance(value, str) else value)]
            elif key == "obs_var":
                value = parse_obs_var(value)
            elif key == "compile":
                value = _boolean(value)
            else:
                value = str(value)
        except (TypeError, ValueError) as e:
            if "obs_var" in str(e):
                raise ValueError(f"{where}: {e}") from None
            raise ValueError(f"{where}: {key} has an invalid value {value!r}") from None
        clean[key] = value
    cfg = RunConfig(**clean)
    choices = {"model": list(MODELS), "likelihood": list(LIKELIHOODS), "binarize": list(vdata.BINARIZE),
               "condition": list(vdata.CONDITIONS), "arch": ["mlp", "conv"], "objective": list(OBJECTIVES),
               "estimator": list(ESTIMATORS), "baseline": list(BASELINES), "precision": list(PRECISIONS)}
    for key, valid in choices.items():
        if getattr(cfg, key) not in valid:
            what = "unknown model" if key == "model" else f"{key} must be one of {', '.join(valid)}, got"
            raise ValueError(f"{what} {getattr(cfg, key)!r}" + (f"; choose one of {', '.join(valid)}" if key == "model" else ""))
    if cfg.latent_dim < 1:
        raise ValueError(f"{where}: latent_dim must be a positive integer, got {cfg.latent_dim}")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError(f"{where}: epochs and batch_size must be positive, got {cfg.epochs} and {cfg.batch_size}")
    if not cfg.lr > 0:
        raise ValueError(f"{where}: lr must be positive, got {cfg.lr}")
    if cfg.beta < 0:
        raise ValueError(f"{where}: beta must be non-negative, got {cfg.beta}")
    if cfg.samples < 1 or cfg.categories < 2 or cfg.kl_warmup < 0 or cfg.kl_cycle < 0 or cfg.free_bits < 0:
        raise ValueError(f"{where}: samples must be >= 1, categories >= 2, and kl_warmup, kl_cycle, free_bits >= 0")
    if not cfg.temperature > 0:
        raise ValueError(f"{where}: temperature must be positive, got {cfg.temperature}")
    if (cfg.model in CONDITIONAL) != (cfg.condition != "none"):
        raise ValueError(f"{where}: " + (f"model {cfg.model} needs --condition label or top-half" if cfg.model in CONDITIONAL
                                         else f"--condition {cfg.condition} applies only to the conditional models "
                                              f"({', '.join(CONDITIONAL)})"))
    if cfg.kl_warmup and cfg.kl_cycle:
        raise ValueError(f"{where}: choose kl_warmup or kl_cycle, not both")
    if cfg.baseline == "leave-one-out" and cfg.objective == "elbo" and cfg.samples < 2:
        raise ValueError(f"{where}: the leave-one-out baseline needs --samples 2 or more")
    return cfg


def read_config_file(path: str | Path) -> dict:
    """A JSON or TOML file of RunConfig keys (dashes allowed: latent-dim = latent_dim)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such config file")
    try:
        if path.suffix == ".toml":
            d = tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            d = json.loads(path.read_text())
        else:
            raise ValueError(f"{path}: config files are .json or .toml, got {path.suffix or 'no suffix'}")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a table of keys, got {type(d).__name__}")
    return {k.replace("-", "_"): v for k, v in d.items()}


def save_config(out: Path, cfg: RunConfig) -> None:
    atomic_write(out / CONFIG, json.dumps(dataclasses.asdict(cfg), indent=2) + "\n")


def load_config(run_dir: str | Path) -> RunConfig:
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: not a varilab run (no {CONFIG})")
    return config_from_dict(json.loads(path.read_text()), where=str(path))


def check_out_dir(out: Path, resume: bool, force: bool) -> None:
    """Refuse to overwrite a run unless --force; --resume needs a checkpoint."""
    if resume:
        if not (out / CHECKPOINT).exists():
            raise FileNotFoundError(f"{out}: nothing to resume (no {CHECKPOINT})")
        return
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a directory")
    present = [f for f in RUN_FILES if (out / f).exists()]
    if present and not force:
        raise FileExistsError(f"{out} already holds a run ({', '.join(present)}); pass --resume to continue it "
                              "or --force to overwrite it")


def clear_run(out: Path) -> None:
    """Remove the files of an earlier run in `out` (after `check_out_dir(..., force=True)`)."""
    for f in RUN_FILES:
        (out / f).unlink(missing_ok=True)


def load_data(cfg: RunConfig, spec: str | None = None) -> vdata.Dataset:
    return vdata.load(spec or cfg.data, binarize=cfg.binarize, test_fraction=cfg.test_fraction, seed=cfg.seed,
                      n=cfg.n, spectrum=cfg.spectrum, dim=cfg.dim, size=cfg.size, condition=cfg.condition)


def make_model(cfg: RunConfig, x_dim: int, cond_dim: int | None = None, image_shape=None) -> nn.Module:
    torch.manual_seed(cfg.seed)  # the initial weights follow --seed
    return build_model(cfg.model, x_dim, cond_dim=cond_dim, arch=cfg.arch, image_shape=image_shape, latent_dim=cfg.latent_dim, hidden=cfg.hidden,
                       likelihood=cfg.likelihood, obs_var=cfg.obs_var, categories=cfg.categories,
                       latent_dim_2=cfg.latent_dim_2, enc_var_1=cfg.enc_var_1, pseudo_inputs=cfg.pseudo_inputs)


def make_objective(cfg: RunConfig, steps_per_epoch: int):
    """(objective, beta) for `fit`: the loss the config names and beta as a number or a schedule."""
    if cfg.objective == "iwae":
        if cfg.free_bits or cfg.kl_warmup or cfg.kl_cycle or cfg.beta != 1.0:
            raise ValueError("beta, free_bits and KL schedules apply to the ELBO, not to --objective iwae")
        return functools.partial(iwae_loss, k=cfg.samples, estimator=cfg.estimator), 1.0
    if cfg.model in ("hvae", "linear-hvae"):
        if cfg.estimator != "reparam" or cfg.samples != 1 or cfg.free_bits:
            raise ValueError("the hierarchical VAE trains with the reparameterised single-sample ELBO only")
        objective = functools.partial(hierarchical_loss, betas=[cfg.beta, cfg.beta2])
        if cfg.kl_warmup:
            return objective, functools.partial(linear_warmup, warmup_steps=cfg.kl_warmup * steps_per_epoch)
        if cfg.kl_cycle:
            return objective, functools.partial(cyclical, period=cfg.kl_cycle * steps_per_epoch)
        return objective, 1.0
    baseline = {"none": None, "moving-average": MovingAverage(0.9), "leave-one-out": "leave-one-out"}[cfg.baseline]
    objective = functools.partial(vae_loss, estimator=cfg.estimator, k=cfg.samples, baseline=baseline,
                                  temperature=cfg.temperature, free_bits=cfg.free_bits)
    if cfg.kl_warmup:
        return objective, functools.partial(linear_warmup, warmup_steps=cfg.kl_warmup * steps_per_epoch, end=cfg.beta)
    if cfg.kl_cycle:
        return objective, functools.partial(cyclical, period=cfg.kl_cycle * steps_per_epoch, end=cfg.beta)
    return functools.partial(objective, beta=cfg.beta), cfg.beta


def preflight(cfg: RunConfig, ds: vdata.Dataset) -> list[str]:
    """Check the data against the likelihood: errors raise, warnings are returned."""
    lo, hi = float(ds.x_train.min()), float(ds.x_train.max())
    likelihood = "gaussian" if cfg.model in ("linear-vae", "linear-hvae") else cfg.likelihood
    if likelihood == "bernoulli" and (lo < 0 or hi > 1):
        raise ValueError(f"a Bernoulli likelihood needs data in [0, 1], but {ds.name} ranges over [{lo:.4g}, {hi:.4g}]; "
                         "rescale it (e.g. divide 0-255 pixels by 255) or pass --likelihood gaussian")
    warnings = []
    if likelihood == "gaussian" and hi > 20 and lo >= 0:
        warnings.append(f"warning: {ds.name} ranges over [{lo:.4g}, {hi:.4g}], like raw pixels; a Gaussian likelihood "
                        "trains better on scaled data (divide by 255, or standardise)")
    if len(ds.x_train) < cfg.batch_size:
        warnings.append(f"warning: batch size {cfg.batch_size} exceeds the {len(ds.x_train)} training rows")
    return warnings


def cond_dim(ds: vdata.Dataset) -> int | None:
    return None if ds.c_train is None else ds.c_train.shape[1]


@dataclass
class Run:
    dir: Path
    config: RunConfig
    model: nn.Module
    data: vdata.Dataset


def load_run(run_dir: str | Path, data: str | None = None) -> Run:
    """The config, trained weights and data of a finished (or stopped) run."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    ds = load_data(cfg, data)
    model = make_model(cfg, ds.x_dim, cond_dim(ds), ds.image_shape)
    try:
        load_weights(run_dir / WEIGHTS, model)
    except ValueError as e:
        raise ValueError(f"data {ds.name} ({ds.x_dim} features per row) does not fit the run in {run_dir}: {e}") from None
    model.eval()
    return Run(run_dir, cfg, model.to("cuda" if torch.cuda.is_available() else "cpu"), ds)
