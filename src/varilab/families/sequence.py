"""The sequence family: PV-RNN, a variational multiple-timescale RNN with adaptive vectors and a meta-prior,
trained on sequences [sequences, time, dims] (the generated `switching` process or a .npy file), sampled from its
prior and used online by error regression (`varilab predict`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import folder
from .options import (Range, TrainOptions, any_seed, between, floats, ints, non_negative, option, positive, positive_int,
                      positive_ints)
from .protocol import Command, Family, Run
from .registry import register

MODELS = {"pvrnn": "PV-RNN: multiple-timescale RNN layers, a posterior of free adaptive vectors per training sequence "
                   "and step, the KL weighted by the meta-prior w"}

RECON = {"sum": "sum_t ||x_t - x_hat_t||^2, summed over dimensions", "per-dim": "the same divided by dim(x)"}
POSTERIOR_INIT = {"zero": "A = 0: q = N(0, 1) at every step", "prior": "q = p at every step, along the network's run "
                  "on the prior's means"}


@dataclass
class SequenceOptions(TrainOptions):
    DEFAULTS = {"data": "switching", "epochs": 1000, "batch_size": 16, "lr": 1e-2, "test_fraction": 1 / 3}
    HELP = {"data": "switching (generated circle / figure-eight sequences) or a .npy file [sequences, time, dims]",
            "test_fraction": "share of the sequences held out as test sequences", "batch_size": "sequences per batch",
            "lr": "Adam learning rate (the weights and the adaptive vectors; at 1e-3, 600 epochs of 16 switching "
                  "sequences left the training error 100 times higher)"}
    model: str = option("pvrnn", "the model", choices=MODELS)
    n: int = option(24, "switching: number of sequences", check=positive_int.upto(100_000))
    length: int = option(100, "switching: steps per sequence", check=Range(2, 100_000, integer=True, below="at least 2"))
    p_circle: float = option(0.7, "switching: probability that a 10-step segment is a circle",
                             check=between(0, 1))
    d: list[int] = option([20, 8], "deterministic units per layer, the bottom (output) layer first", parse=ints,
                          check=positive_ints.upto(4096))
    z: list[int] = option([2, 1], "latent units per layer", parse=ints, check=positive_ints.upto(4096))
    tau: list[float] = option([2.0, 8.0], "time constant per layer (1: a vanilla RNN)", parse=floats,
                              check=Range(1, 1e6, below="at least 1", each=True))
    meta_prior: list[float] = option([0.01], "the meta-prior w weighing each layer's KL per latent unit: one value "
                                     "for every layer, or one per layer", parse=floats,
                                     check=Range(0, 1e4, below="non-negative", each=True))
    w1: float = option(1.0, "the weight of the KL at t = 1 (against N(0, I))", check=non_negative.upto(1e4))
    bias_variance: float = option(0.0, "variance of the deterministic units' biases, drawn once and never trained "
                                  "(large values give rich autonomous dynamics); 0: trained biases",
                                  check=non_negative.upto(1e4))
    slow_share: float = option(0.0, "share of each layer's units whose time constant is twice the layer's tau",
                               check=between(0, 1))
    recon: str = option("sum", "the squared error's normalisation", choices=RECON)
    posterior_init: str = option("zero", "the adaptive vectors before training", choices=POSTERIOR_INIT)


def check(opts: SequenceOptions) -> tuple[float, ...]:
    """The meta-prior per layer; the per-layer lists must agree in length."""
    layers = len(opts.d)
    if len(opts.z) != layers or len(opts.tau) != layers:
        raise ValueError(f"--d, --z and --tau need one entry per layer: got {len(opts.d)}, {len(opts.z)} and "
                         f"{len(opts.tau)}")
    if len(opts.meta_prior) not in (1, layers):
        raise ValueError(f"--meta-prior takes one value or one per layer ({layers}), got {len(opts.meta_prior)}")
    return tuple(opts.meta_prior) * layers if len(opts.meta_prior) == 1 else tuple(opts.meta_prior)


def load_data(opts: SequenceOptions):
    from ..data.sequences import load

    return load(opts.data, n=opts.n, length=opts.length, p_circle=opts.p_circle, test_fraction=opts.test_fraction,
                seed=opts.seed)


def make_model(opts: SequenceOptions, data):
    import torch

    from ..models.pvrnn import PVRNN, PVRNNConfig

    torch.manual_seed(opts.seed)
    model = PVRNN(PVRNNConfig(x_dim=data.x_dim, sequences=len(data.x_train), length=data.length, d=tuple(opts.d),
                              z=tuple(opts.z), tau=tuple(opts.tau), w=check(opts), w1=opts.w1,
                              bias_variance=opts.bias_variance, slow_share=opts.slow_share, recon=opts.recon))
    if opts.posterior_init == "prior":
        model.posterior_from_prior()
    return model


def train(opts: SequenceOptions, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    import sys

    from ..models.pvrnn import trainer_loss
    from ..train import fit

    check(opts)
    if opts.data == "switching":  # [n, length, 2] generated, float32
        folder.check_memory(8 * opts.n * opts.length, f"{opts.n:,} switching sequences of {opts.length:,} steps",
                            "choose a smaller --n or --length")
    data = load_data(opts)
    units = sum(opts.d) + 4 * sum(opts.z)  # per step: d, and z's mean, scale, sample and prior
    folder.check_fits(lambda: make_model(opts, data), "a pvrnn of these sizes",
                      extra_bytes=4 * 4 * min(opts.batch_size, len(data.x_train)) * data.length * units)
    if data.x_train.abs().max() > 1:
        print(f"warning: {data.name} reaches {float(data.x_train.abs().max()):.4g}; PV-RNN's output is tanh, in "
              "[-1, 1]: scale the sequences into that range", file=sys.stderr)
    print(data.summary(), file=sys.stderr)
    model = make_model(opts, data)
    folder.begin(out, FAMILY, opts, resume)
    return fit(model, data.for_trainer(), out=out, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr,
               seed=opts.seed, resume=resume, quiet=quiet, objective=trainer_loss)


def load(run_dir: Path, opts: SequenceOptions, data: str | None = None, raw: dict | None = None) -> Run:
    if data is not None:
        raise ValueError("--data does not apply to a sequence run: its adaptive vectors belong to its own training "
                         "sequences; `varilab predict RUN --input SEQ.npy` takes new sequences")
    seqs = load_data(opts)
    return Run(run_dir, FAMILY, opts, folder.trained(run_dir, make_model(opts, seqs), seqs), seqs)


def generation(run: Run, n: int = 20, length: int | None = None, seed: int = 0) -> dict:
    """n sequences from the prior (x [n, T, D], sigma_p [n, layers, T]) on the CPU."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = run.model.generate(n, length or run.data.length, generator=g)
    return {k: v.cpu() for k, v in out.items()}


def fitted(run: Run) -> dict:
    """The training sequences run through their own adaptive vectors (draws seeded): the rollout, with its KL."""
    import torch

    m, x = run.model, run.data.x_train
    torch.manual_seed(0)
    with torch.no_grad():
        return m.run(m.adaptive(torch.arange(len(x), device=m.out.weight.device)), steps=run.data.length,
                     batch=len(x), sigma=False)


def evaluate(run: Run) -> dict:
    """Training sequences: squared error and KL per layer under their adaptive vectors; test sequences: the error of
    the network run on its prior's means; generation: the mean prior standard deviation per layer."""
    import torch

    from ..models.pvrnn import objective

    m, seqs = run.model, run.data
    fit = objective(seqs.x_train.to(m.out.weight.device), fitted(run), m.config)
    test = seqs.x_test.to(m.out.weight.device)
    with torch.no_grad():
        free = m.run(None, steps=seqs.length, batch=len(test), sample=False, sigma=False)["x_hat"]
    gen = generation(run)
    return {"data": seqs.name, "train_sequences": len(seqs.x_train), "test_sequences": len(test),
            "train_recon": float(fit["squared_error"]) / (seqs.length * seqs.x_dim),
            **{f"kl_layer{l + 1}": float(fit[f"kl_layer{l + 1}"]) for l in range(m.layers)},
            "test_free_running_mse": float((test - free).pow(2).mean()),
            **{f"sigma_p_layer{l + 1}": float(gen["sigma_p"][:, l, 1:].mean()) for l in range(m.layers)}}


def diagnose(run: Run) -> tuple[dict, list[str]]:
    """KL per layer and per time step of the training sequences; in generation, the mean prior standard deviation
    per layer and step, and the noise a draw from the prior adds to the units' input (sigma_p through W_dz)."""
    m = run.model
    r = fitted(run)
    kl = r["kl"].mean(0).cpu()  # [layers, T], per latent unit
    gen = generation(run)
    sigma, noise = gen["sigma_p"].mean(0), gen["noise"].mean(0)  # [layers, T]
    result = {"kl_per_layer": kl.sum(-1).tolist(), "kl_per_step": kl.tolist(),
              "sigma_p_per_layer": sigma[:, 1:].mean(-1).tolist(), "sigma_p_per_step": sigma.tolist(),
              "noise_per_layer": noise[:, 1:].mean(-1).tolist(), "meta_prior": list(m.config.w)}
    lines = [f"{'layer':>5} {'w':>8} {'KL per unit and sequence':>25} {'mean sigma_p in generation':>27} "
             f"{'noise reaching the units':>25}"]
    lines += [f"{l + 1:>5} {m.config.w[l]:>8.3g} {result['kl_per_layer'][l]:>25.4f} {result['sigma_p_per_layer'][l]:>27.4f} "
              f"{result['noise_per_layer'][l]:>25.4f}" for l in range(m.layers)]
    lines.append("noise reaching the units: sqrt(mean_i sum_j W_dz,ij^2 sigma_p,j^2), what a draw from the prior adds to "
                 "the units' input; a broad sigma_p behind small W_dz is a latent the network does not listen to")
    return result, lines


METHODS = {"error-regression": "re-fit fresh adaptive vectors on a sliding window of each new sequence (weights "
                                "frozen), then predict from the prior's means",
           "free": "no error regression: the network runs on its prior's means and never sees the sequence"}
ER = ("error-regression",)
PER_LAYER = ("kl_layer", "sigma_p_layer")  # eval's figures per layer: the page's per-layer table shows them


@dataclass
class PredictOptions:
    AXIS = "method"
    method: str = option("error-regression", "how the sequence is followed", choices=METHODS)
    input: str | None = option(None, "sequences to follow, .npy [sequences, time, dims]; default: the run's test "
                               "sequences")
    window: int = option(20, "steps in the sliding window", check=positive_int.upto(100_000), models=ER)
    iterations: int = option(30, "Adam steps on the window's adaptive vectors per time step", check=positive_int.upto(10_000),
                             models=ER)
    lr: float = option(0.1, "Adam learning rate of the adaptive vectors", check=positive.upto(100), models=ER)
    ahead: int = option(10, "steps predicted ahead from each time step", check=positive_int.upto(100_000))
    n: int | None = option(None, "follow only the first n sequences", check=positive_int)
    out: str | None = option(None, "save the predictions, .npy [sequences, time, ahead, dims] (NaN past the end)")
    seed: int = option(0, "random seed of the posterior draws", check=any_seed)


def predict(run: Run, opts: PredictOptions) -> tuple[dict, list[str]]:
    """Follow sequences online and predict `ahead` steps from every step; the error with the chosen method and,
    beside it, without error regression."""
    import sys

    import numpy as np
    import torch
    from tqdm import tqdm

    from ..data.sequences import check_sequences
    from ..models.pvrnn import error_regression, free_prediction

    if opts.input is None:
        x = run.data.x_test
    else:
        if not Path(opts.input).exists():
            raise FileNotFoundError(f"--input {opts.input}: no such file")
        x = torch.from_numpy(check_sequences(np.load(opts.input, allow_pickle=False), f"--input {opts.input}"))
    if x.shape[2] != run.data.x_dim:
        raise ValueError(f"--input has {x.shape[2]} dimensions per step; the run models {run.data.x_dim}")
    x = x[:opts.n].to(run.model.out.weight.device)
    out = None if opts.out is None else Path(opts.out)
    if out is not None and out.suffix != ".npy":
        raise ValueError(f"--out must be a .npy file, got {out}")
    units = sum(run.options.d) + 2 * sum(run.options.z)  # per step and step ahead: the states of every layer
    folder.check_memory(4 * len(x) * x.shape[1] * opts.ahead * (x.shape[2] + units),
                        f"predicting {opts.ahead:,} steps ahead of {len(x):,} sequences of {x.shape[1]:,} steps",
                        "choose a smaller --ahead or fewer sequences (--n)")
    free = free_prediction(run.model, x, opts.ahead)
    result = {"sequences": len(x), "steps": x.shape[1], "ahead": opts.ahead, "method": opts.method,
              "free_error": free["error"].tolist()}
    chosen = free
    if opts.method == "error-regression":
        torch.manual_seed(opts.seed)
        bar = tqdm(total=x.shape[1], desc="error regression", unit="step", leave=False, file=sys.stderr,
                   disable=not sys.stderr.isatty())
        chosen = error_regression(run.model, x, opts.window, opts.iterations, opts.ahead, opts.lr,
                                  progress=lambda t: bar.update(1))
        bar.close()
        result.update(window=opts.window, iterations=opts.iterations,
                      error_regression_error=chosen["error"].tolist())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, chosen["prediction"].cpu().numpy())
        result["out"] = str(out)
    lines = [f"{len(x)} sequences of {x.shape[1]} steps; squared error of the prediction k steps ahead (summed over "
             "dimensions, mean over sequences and steps)",
             f"{'k':>4} {'without error regression':>25}" + (f" {'with':>10}" if opts.method != "free" else "")]
    for k in range(opts.ahead):
        lines.append(f"{k + 1:>4} {result['free_error'][k]:>25.4f}"
                     + (f" {result['error_regression_error'][k]:>10.4f}" if opts.method != "free" else ""))
    return result, lines


def report(run: Run):
    """Generated trajectories beside training ones, sigma_p and KL over time, per-layer figures, and the prediction
    error with and without error regression as the last `varilab predict RUN` kept it (the page runs no error
    regression itself)."""
    from ..report import Page, Section, img, metrics_table, plots, table

    e = evaluate(run)
    diag, _ = diagnose(run)
    gen = generation(run, 3)
    layers = run.model.layers
    traj = plots.trajectories([("training sequences", run.data.x_train.numpy()), ("test sequences",
                                                                               run.data.x_test.numpy()),
                               ("generated from the prior", gen["x"].numpy())])
    sigma = {f"layer {l + 1}": diag["sigma_p_per_step"][l][1:] for l in range(layers)}
    kl = {f"layer {l + 1}": diag["kl_per_step"][l] for l in range(layers)}
    kept = kept_prediction(run)
    panels = [("mean sigma_p in generation", "step", sigma), ("KL per latent unit (training sequences)", "step", kl)]
    if kept is not None:
        errors = {"no error regression": kept["free_error"]}
        if "error_regression_error" in kept:
            errors["error regression"] = kept["error_regression_error"]
        panels.append((f"prediction error of {kept['ahead']} steps ahead", "steps ahead k", errors))
        how = (f"Prediction on {kept['sequences']} test sequences as `varilab predict` kept it"
               + (f": error regression with window {kept['window']} and {kept['iterations']} Adam steps per time step."
                  if "error_regression_error" in kept else " (without error regression)."))
    else:
        how = (f"No prediction kept yet: `varilab predict {run.dir}` follows the test sequences by error regression and "
               "adds the prediction error with and without it to this page.")
    sections = [Section("Trajectories", img(traj, "training, test and generated trajectories"),
                        "The first three of each, in the plane of the first two dimensions."),
                Section("Over time", img(plots.lines(panels), "sigma_p, KL and prediction"), how),
                Section("Per layer", table([(f"layer {l + 1}", run.model.config.w[l], diag["kl_per_layer"][l],
                                             diag["sigma_p_per_layer"][l], diag["noise_per_layer"][l])
                                            for l in range(layers)],
                                           ("layer", "w", "KL per sequence", "sigma_p in generation",
                                            "noise reaching the units")),
                        "The noise reaching the units is sigma_p through W_dz: a broad sigma_p behind small W_dz is a "
                        "latent the network does not listen to."),
                Section("Final metrics", metrics_table({k: v for k, v in e.items() if not k.startswith(PER_LAYER)},
                                                       run.settings))]  # the per-layer table has them
    verdict = (f"Training error {e['train_recon']:.4f} per step and dimension under the adaptive vectors; on the test "
               f"sequences, running free from the start, {e['test_free_running_mse']:.4f} per step and dimension.")
    if kept is not None:
        verdict += (f" One step ahead (summed over dimensions, `varilab predict`): {kept['free_error'][0]:.4f} without "
                    "error regression" + (f", {kept['error_regression_error'][0]:.4f} with it."
                                          if "error_regression_error" in kept else "."))
    curves = [("loss", "training loss: squared error + w KL", False), ("recon", "training squared error", False),
              ("kl", "KL per latent unit", False), ("test_loss", "test sequences running free", False, None,
                                                            "squared error, summed over steps and dimensions")]
    return Page(f"pvrnn on {run.data.name}", verdict, sections, curves)


@dataclass
class SampleFlags:
    """`varilab sample`'s flags of a sequence run."""
    length: int | None = option(None, "steps per sequence (default: the training length)",
                                check=positive_int.upto(1_000_000))


def sample(run: Run, n: int, seed: int = 0, length: int | None = None) -> dict:
    steps = length or run.data.length
    folder.check_memory(4 * n * steps * (run.data.x_dim + sum(run.options.d) + 2 * sum(run.options.z)),
                        f"{n:,} sequences of {steps:,} steps", "draw fewer (--n) or shorter (--length) sequences")
    return {"samples": generation(run, n, length, seed)["x"]}


PREDICTION = "prediction.json"  # the last `varilab predict RUN` of the run's own test sequences: the report reads it


def predict_and_keep(run: Run, opts: PredictOptions) -> tuple[dict, list[str]]:
    """`varilab predict`: predict; on the run's own test sequences, keep the errors in RUN/prediction.json for the
    report (written whole, under the run's lock)."""
    import json

    from ..checkpoint import atomic_write

    result, lines = predict(run, opts)
    if opts.input is None:
        kept = {"method": opts.method, "sequences": len(run.data.x_test[:opts.n]), "ahead": opts.ahead,
                "window": opts.window, "iterations": opts.iterations, "lr": opts.lr, "seed": opts.seed,
                **{k: v for k, v in result.items() if k.endswith("_error")}}
        with folder.lock(run.dir, "predict"):
            atomic_write(run.dir / PREDICTION, json.dumps(kept, indent=1) + "\n")
        lines.append(f"kept for the report in {run.dir / PREDICTION}")
    return result, lines


def kept_prediction(run: Run) -> dict | None:
    """What the last `varilab predict RUN` of the test sequences kept, or None (none yet, or unreadable)."""
    import json

    path = run.dir / PREDICTION
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, dict) and isinstance(kept.get("free_error"), list) else None


PREDICT = Command("follow new sequences by error regression and predict ahead", PredictOptions, predict_and_keep,
                  choices=METHODS, about_run="the sequence run (varilab train --model pvrnn)", writes_file=True)
FAMILY = register(Family("sequence", MODELS, SequenceOptions, train=train, load=load, evaluate=evaluate,
                         diagnose=diagnose, report=report, sample=sample, flags={"sample": SampleFlags},
                         commands={"predict": PREDICT}, files=(PREDICTION,), improving_on="loss"))
