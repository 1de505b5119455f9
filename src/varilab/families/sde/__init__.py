"""The latent SDE family: a latent SDE on torchsde whose driving noise is Brownian or Markov-approximate fractional
Brownian motion with a learned (or fixed) Hurst index, trained on time series observed with noise at their own
times (generated fractional processes or a .npy file)."""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from .. import folder
from ..options import Range, TrainOptions, between, non_negative, option, positive, positive_int, unit_interval
from ..protocol import Family, Run
from ..registry import register
from .trends import hurst_trend

MODELS = {"latent-sde": "latent SDE on torchsde: a controlled posterior SDE, the Girsanov KL, Brownian or "
                        "Markov-approximate fractional noise"}
NOISES = {"fbm": "fractional: K OU processes sharing one Brownian driver, weighted by omega(H)",
          "brownian": "plain Brownian motion (K = 0, H = 1/2)"}
SOLVERS = {"euler": "Euler-Maruyama (strong order 1/2; 1 for additive noise)", "milstein": "Milstein",
           "srk": "stochastic Runge-Kutta (strong order 1.5 for additive noise)"}
POSTERIORS = {"guided": "each step's noise drawn from its exact conditional given all later observations (a backward "
                        "filter through the exact linear part), plus the control network's correction",
              "plain": "the control network alone over the whole path (Li et al., 2020), as in torchsde's example"}
DRIFTS = {"mlp": "an MLP of X", "linear": "b - theta X per dimension (the Ornstein-Uhlenbeck class; the guided "
                                         "posterior is then exact up to Euler's error)"}
MAX_SOLVER_STEPS = 100_000


_hurst = between(0, 1, open_lo=True, open_hi=True, also=("learned",))
_learned_or_positive = positive.upto(1e3, also=("learned",))
_all_or_count = positive_int.upto(MAX_SOLVER_STEPS, also=("all",))


@dataclass
class SDEOptions(TrainOptions):
    DEFAULTS = {"data": "fou", "epochs": 400, "batch_size": 32, "lr": 1e-2}
    HELP = {"data": "fou or fbm (generated fractional Ornstein-Uhlenbeck or Brownian paths on (0, 1]) or a .npy file "
                    "[series, time] or [series, time, dims]", "batch_size": "series per batch",
            "test_fraction": "share of the series held out as test series",
            "seed": "random seed for data, split, initialisation and the Brownian paths"}
    model: str = option("latent-sde", "the model", choices=MODELS)
    times: str | None = option(None, ".npy of observation times for a data file: [time] shared or [series, time] "
                               "each series its own (default 0, 1, 2, ...)")
    n: int = option(40, "fou/fbm: number of series", check=positive_int.upto(1_000_000))
    steps: int = option(50, "fou/fbm: observations per series on t = 1/steps .. 1", check=Range(2, MAX_SOLVER_STEPS, integer=True, below="at least 2"))
    true_hurst: float = option(0.7, "fou/fbm: the Hurst index of the generated noise", check=unit_interval)
    data_noise: float = option(0.05, "fou/fbm: standard deviation of the noise on the generated observations",
                               check=non_negative.upto(1e3))
    observed: float = option(1.0, "fou/fbm: share of the grid each series keeps, at its own random times (1: all)",
                             check=between(0, 1, open_lo=True))
    noise: str = option("fbm", "the driving noise", choices=NOISES)
    hurst: str = option("learned", "the model's Hurst index: learned (from 1/2) or a fixed value in (0, 1)",
                        check=_hurst)
    ou_processes: int = option(5, "K, the OU processes per latent dimension approximating fBM (--noise fbm)",
                               check=positive_int.upto(64))
    ratio: float = option(10.0, "r of the OU rates' geometric grid gamma_k = r^(k - (K+1)/2)",
                          check=between(1, 1e6, open_lo=True))
    observation_noise: str = option("learned", "the likelihood's standard deviation s in y ~ N(D X, s^2): learned "
                                    "(from 0.1) or a fixed value", check=_learned_or_positive)
    latent: int = option(1, "latent dimensions", check=positive_int.upto(1024))
    hidden: int = option(32, "hidden units of the drift and control networks",
                        check=positive_int.upto(16_384))
    context: int = option(16, "units of the GRU that summarises the observations for the control",
                          check=positive_int.upto(16_384))
    dt: float = option(0.005, "the solver's fixed step, in the data's time units (every solve: training, evaluation, "
                       "sampling); keep a few steps between observations so the posterior can steer between them",
                       check=positive.upto(1e6))
    method: str = option("euler", "the torchsde solver", choices=SOLVERS)
    drift: str = option("mlp", "the prior's drift mu(X)", choices=DRIFTS)
    posterior: str = option("guided", "the posterior SDE's control", choices=POSTERIORS)
    conditional_steps: str = option("all", "guided: the solver steps before each observation drawn from their exact "
                                    "conditional, 'all' or a count (torchsde solves the others)", check=_all_or_count)
    adjoint: bool = option(False, "gradients by torchsde's stochastic adjoint (memory constant in the number of "
                           "steps, slower) instead of backpropagation through the solver")


def load_data(opts: SDEOptions):
    from ...data.series import load

    return load(opts.data, opts.times, n=opts.n, steps=opts.steps, hurst=opts.true_hurst,
                noise=opts.data_noise, observed=opts.observed, test_fraction=opts.test_fraction, seed=opts.seed)


def make_model(opts: SDEOptions, data):
    import torch

    from ...models.latent_sde import LatentSDE, LatentSDEConfig

    solver_steps = (data.end - data.start) / opts.dt
    if solver_steps > MAX_SOLVER_STEPS:
        raise ValueError(f"--dt {opts.dt:g} takes {solver_steps:.3g} solver steps over the data's times [{data.start:g}, "
                         f"{data.end:g}]; choose a larger --dt (at most {MAX_SOLVER_STEPS:,} steps)")
    torch.manual_seed(opts.seed)
    fractional = opts.noise == "fbm"
    hurst = (None if opts.hurst == "learned" else float(opts.hurst)) if fractional else 0.5
    learned = opts.observation_noise == "learned"
    return LatentSDE(LatentSDEConfig(
        obs_dim=data.dims, latent=opts.latent, ou=opts.ou_processes if fractional else 0, hurst=hurst, ratio=opts.ratio,
        start=data.start, horizon=data.end - data.start, hidden=opts.hidden, context=opts.context, dt=opts.dt,
        method=opts.method, drift=opts.drift, posterior=opts.posterior, adjoint=opts.adjoint, learn_obs_noise=learned,
        conditional_steps=None if opts.conditional_steps == "all" else int(opts.conditional_steps),
        obs_noise=0.1 if learned else float(opts.observation_noise)))


def solver_text(opts: SDEOptions) -> str:
    """Who takes the posterior's steps: torchsde, the exact conditionals, or both."""
    if opts.posterior == "plain":
        return f"torchsde {opts.method}" + (", stochastic adjoint" if opts.adjoint else "")
    if opts.conditional_steps == "all":
        return f"guided posterior: every Euler step from its exact conditional (prior samples: torchsde {opts.method})"
    return (f"guided posterior: the last {opts.conditional_steps} Euler step(s) before each observation from their "
            f"exact conditional, torchsde {opts.method} between" + (", stochastic adjoint" if opts.adjoint else ""))


def solver_line(opts: SDEOptions, data) -> str:
    return (f"solver: {solver_text(opts)}; fixed step dt = {opts.dt:g} ({(data.end - data.start) / opts.dt:.0f} "
            f"steps over [{data.start:g}, {data.end:g}])")


def train(opts: SDEOptions, out: Path, resume: bool = False, quiet: bool = False) -> list[dict]:
    from ...models.latent_sde import trainer_loss
    from ...train import fit

    if opts.data in ("fou", "fbm"):  # [n, steps] generated, float32, and the noise's K OU paths
        folder.check_memory(4 * opts.n * opts.steps * (1 + opts.ou_processes),
                            f"{opts.n:,} series of {opts.steps:,} observations", "choose a smaller --n or --steps")
    data = load_data(opts)
    n = opts.latent * (1 + (opts.ou_processes if opts.noise == "fbm" else 0))  # the Markov state's size
    grid = (data.end - data.start) / opts.dt + data.steps
    guided = 12 * min(opts.batch_size, len(data.y_train)) * grid * n * n if opts.posterior == "guided" else 0  # messages [B, U, N, N]
    folder.check_fits(lambda: make_model(opts, data), "a latent SDE of these sizes", extra_bytes=int(guided))
    model = make_model(opts, data)
    print(data.summary(), file=sys.stderr)
    print(solver_line(opts, data), file=sys.stderr)
    folder.begin(out, FAMILY, opts, resume)
    return fit(model, data.for_trainer(), out=out, epochs=opts.epochs, batch_size=opts.batch_size, lr=opts.lr,
               seed=opts.seed, resume=resume, quiet=quiet, objective=trainer_loss)


def load(run_dir: Path, opts: SDEOptions, data: str | None = None, raw: dict | None = None) -> Run:
    if data is not None:
        opts = dataclasses.replace(opts, data=data)
    series = load_data(opts)
    return Run(run_dir, FAMILY, opts, folder.trained(run_dir, make_model(opts, series), series), series)


def _device(run: Run):
    return run.model.log_sigma.device


def test_elbo(run: Run, draws: int = 8, seed: int = 0) -> dict:
    """The test series' ELBO (mean of `draws` posterior paths per series): per series and per observed value."""
    import torch

    m, s = run.model, run.data
    t, y = s.t_test.to(_device(run)), s.y_test.to(_device(run))
    torch.manual_seed(seed)
    with torch.no_grad():
        r = m.posterior(t.repeat_interleave(draws, 0), y.repeat_interleave(draws, 0))
    elbo = r["elbo"].reshape(len(t), draws).mean(1)
    kl = (r["kl0"] + r["kl_path"]).reshape(len(t), draws).mean(1)
    return {"test_elbo": float(elbo.mean()), "test_elbo_per_value": float(elbo.sum() / (len(t) * s.steps * s.dims)),
            "test_kl": float(kl.mean())}


def split_time(run: Run) -> float:
    """Forecasts condition on the first half of the time range and predict the second."""
    return run.data.start + 0.5 * (run.data.end - run.data.start)


def evaluate(run: Run) -> dict:
    """The test ELBO, the held-out prediction error (forecast of the second half of each test series from its first),
    the Hurst index and, for fractional noise, the Markov approximation's relative error at it."""
    import torch

    from ...models.latent_sde import forecast
    from ...sde import fbm

    m, s, o = run.model, run.data, run.options
    torch.manual_seed(1)
    f = forecast(m, s.t_test.to(_device(run)), s.y_test.to(_device(run)), split_time(run))
    h = float(m.hurst().detach())
    out = {"data": s.name, "train_series": len(s.y_train), "test_series": len(s.y_test), **test_elbo(run),
           "prediction_mse": f["mse"], "prediction_split": split_time(run), "hurst": h, "noise": o.noise,
           "sigma": m.sigma().tolist(), "observation_noise": m.log_obs_noise.exp().item(),
           "solver": o.method, "dt": o.dt}
    if m.config.ou:
        out.update(ou_processes=m.config.ou,
                   approximation_error=float(fbm.relative_error(h, m.gamma, m.config.horizon)))
    return out


MAX_POINTS = 100_000  # of a sampling grid (grid.MAX_POINTS, the limit of a --times file)
_spacing = positive.upto(1e6)  # a grid that ends beyond MAX_SOLVER_STEPS solver steps is refused when sampling
_points = Range(2, MAX_POINTS, integer=True, below="at least 2")


@dataclass
class SampleFlags:
    """`varilab sample`'s flags of an sde run: the grid its prior paths are drawn on (default: the data's times)."""
    FILE_NAME = ("dt", "points")  # the flags that name the samples' file: samples-0.01-200.npy
    times: str | None = option(None, ".npy of strictly increasing times [T] to draw the paths at (2 to 100,000 "
                               "times, none before the run's start)")
    dt: float | None = option(None, "the step of an even grid t0 + dt, t0 + 2 dt, .. up to --points points or the "
                              "data's last time (the solver keeps the run's own --dt)", check=_spacing)
    points: int | None = option(None, "points of the even grid: --points N with --dt, or spread evenly over the "
                                "data's range", check=_points)


def sample(run: Run, n: int, seed: int = 0, times: str | None = None, dt: float | None = None,
           points: int | None = None) -> dict:
    """n prior paths, decoded, on the data's grid (the union of the training series' times) or the one the flags ask
    for (`grid.requested`), and their times. With fractional noise, "note": how well the Markov approximation matches
    exact fBM at the model's H on that grid (`varilab.sde.measure`)."""
    import torch

    from ...sde import measure
    from . import grid

    m, o = run.model, run.options
    asked = grid.requested(m.config.start, run.data.end, times, dt, points)
    t = torch.unique(run.data.t_train).double() if asked is None else torch.from_numpy(asked)
    steps = (float(t[-1]) - m.config.start) / o.dt
    if steps > MAX_SOLVER_STEPS:
        raise ValueError(f"the grid ends at {float(t[-1]):g}, {steps:.3g} solver steps of the run's dt = {o.dt:g} after "
                         f"its start {m.config.start:g}; at most {MAX_SOLVER_STEPS:,}")
    ts = t.to(m.log_sigma.dtype)
    if (ts.diff() <= 0).any():
        i = int((ts.diff() <= 0).nonzero()[0, 0])
        raise ValueError(f"the grid's times {float(t[i]):.9g} and {float(t[i + 1]):.9g} are one time in the model's "
                         f"{str(ts.dtype).removeprefix('torch.')}; space them further apart")
    g = torch.Generator().manual_seed(seed)
    out = {"samples": m.sample_prior(n, ts.to(_device(run)), generator=g)["mean"].cpu(), "times": ts}
    notes = []
    if m.config.ou:
        where = "this run's grid" if asked is None else "the requested grid"
        notes.append(measure.sentence(measure.compare(float(m.hurst().detach()), m.config.ou, m.config.ratio, t.numpy(),
                                                      m.config.start, m.config.horizon), where))
    if asked is not None and float(t.diff().min()) < o.dt * (1 - 1e-6):
        notes.append(f"The grid is finer than the solver's step dt = {o.dt:g} (the run's): torchsde interpolates "
                     f"linearly between its steps.")
    return {**out, "note": " ".join(notes)} if notes else out


def report(run: Run):
    from .page import page

    return page(run, evaluate, split_time, sample, solver_text)


FAMILY = register(Family("sde", MODELS, SDEOptions, train=train, load=load, evaluate=evaluate, report=report,
                         sample=sample, flags={"sample": SampleFlags}, trends=hurst_trend,
                         why_not={"diagnose": "`varilab eval` reports a latent SDE's KL, ELBO and Hurst index"}))
