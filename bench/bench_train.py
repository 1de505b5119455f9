"""VAE training on Fashion-MNIST: seconds per epoch for varilab's trainer and the loops a researcher
would otherwise write or use.

Model: MLP 784-512-16 (one hidden layer of 512 ReLU units each way), Bernoulli likelihood on the grey
levels, batch 100, Adam lr 1e-3, float32 unless a row says bf16. An epoch is a shuffled pass over the
60,000 training images plus the loss on the 10,000 test images.

- varilab: `varilab.train.fit` (fused Adam, malloc tuning, a checkpoint and metrics line per epoch);
  rows for its `precision="bf16"` and `compile=True` options.
- plain PyTorch: the same network and loss written by hand, the usual eager loop (torch.optim.Adam with
  its defaults); a bf16 row runs its forward pass under autocast.
- pythae 0.1.2: its `VAE` with this encoder and decoder (sigmoid output, reconstruction_loss="bce") and
  its `BaseTrainer`.
- Pyro 1.9.2: SVI with `TraceMeanField_ELBO` (closed-form KL) and `pyro.optim.Adam`.

The contenders run one after another in ABBA order (each twice unless --quick); a row's figure is the
median of its epochs after the first of each run (the first carries warm-up and, for --compile, the
compilation). The last column is the final test loss (negative ELBO per image), to show equal work.
Peak RSS: each contender alone in a fresh process training one epoch, with the data
resident (the peak is reset after loading them, so it excludes the decompression). The float32 matmul roofline is measured in the same process (a 2048 x 2048 product), and each row's
share of it counts the matmul FLOPs of its epoch.

Needs the peers (make bench installs them into .venv-bench); a peer that is not installed is reported
as missing, not skipped silently. Run alone: `python bench/bench_train.py [--quick]`.
"""
from __future__ import annotations

import contextlib
import logging
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from varilab.data import Dataset, load
from varilab.models import VAE, VAEConfig
from varilab.train import fit

import timing  # bench/timing.py (bench/ is on the path under bench/run.py and when run alone)

X_DIM, HIDDEN, LATENT, BATCH, LR = 784, 512, 16, 100, 1e-3
FULL = {"epochs": 3, "rounds": 2, "n_train": None, "n_test": None}
QUICK = {"epochs": 2, "rounds": 1, "n_train": 2000, "n_test": 500}
TARGET = 1.8  # varilab's default at least this many times faster than the plain eager loop and pythae


def data(plan) -> Dataset:
    """Fashion-MNIST; --quick uses generated 28 x 28 grey images instead, so it needs no data package."""
    if not plan["n_train"]:
        return load("fashion-mnist")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(plan["n_train"] + plan["n_test"], X_DIM, generator=g).pow(3)
    return Dataset("generated", x[: plan["n_train"]], x[plan["n_train"]:], image_shape=(28, 28))


def build(seed: int) -> VAE:
    torch.manual_seed(seed)
    return VAE(VAEConfig(x_dim=X_DIM, latent_dim=LATENT, hidden=(HIDDEN,)))


def epoch_flops(n_train: int, n_test: int) -> float:
    """Matmul FLOPs of one epoch: forward 2*B*sum(in*out); a training step ~3x that (backward), less
    the first layer's input gradient; the test pass is forward only."""
    layers = [(X_DIM, HIDDEN), (HIDDEN, 2 * LATENT), (LATENT, HIDDEN), (HIDDEN, X_DIM)]
    fwd = 2 * sum(a * b for a, b in layers)
    train = 3 * fwd - 2 * X_DIM * HIDDEN
    return n_train * train + n_test * fwd


def matmul_peak(dtype=torch.float32, n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


# --- contenders: each returns (seconds of each epoch, final test loss per image) -----------------

def run_varilab(ds, epochs, seed, **options):
    with tempfile.TemporaryDirectory() as out:
        hist = fit(build(seed), ds, out=out, epochs=epochs, batch_size=BATCH, lr=LR, seed=seed, quiet=True, **options)
        return _epoch_times(out, hist), hist[-1]["test_loss"]


def _epoch_times(out, hist):
    # fit's own "seconds" covers the training pass, the test pass and the metrics; the checkpoint write
    # after it is small (4 MB of weights and optimizer state) and left out
    return [m["seconds"] for m in hist]


class HandVAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1, self.enc2 = nn.Linear(X_DIM, HIDDEN), nn.Linear(HIDDEN, 2 * LATENT)
        self.dec1, self.dec2 = nn.Linear(LATENT, HIDDEN), nn.Linear(HIDDEN, X_DIM)


def hand_loss(m: HandVAE, x):
    mu, log_var = m.enc2(torch.relu(m.enc1(x))).chunk(2, -1)
    z = mu + torch.exp(0.5 * log_var) * torch.randn_like(mu)
    logits = m.dec2(torch.relu(m.dec1(z)))
    recon = F.binary_cross_entropy_with_logits(logits.float(), x, reduction="none").sum(-1)
    kl = -0.5 * (1 + log_var - mu.pow(2) - log_var.exp()).float().sum(-1)
    return (recon + kl).mean()


def run_plain(ds, epochs, seed, bf16=False):
    torch.manual_seed(seed)
    model = HandVAE()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    x, xt = ds.x_train, ds.x_test
    times, test = [], float("nan")
    for _ in range(epochs):
        t0 = time.perf_counter()
        for idx in torch.randperm(len(x)).split(BATCH):
            with amp():
                loss = hand_loss(model, x[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            test = sum(float(hand_loss(model, xb)) * len(xb) for xb in xt.split(1000)) / len(xt)
        times.append(time.perf_counter() - t0)
    return times, test


def run_pythae(ds, epochs, seed):
    from pythae.data.datasets import BaseDataset
    from pythae.models import VAE as PVAE, VAEConfig as PVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder
    from pythae.trainers import BaseTrainer, BaseTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(X_DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))

        def forward(self, x):
            mu, log_var = self.net(x.reshape(len(x), -1)).chunk(2, -1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, X_DIM))

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    class Clock(TrainingCallback):
        def __init__(self):
            self.times, self.t0 = [], None

        def on_epoch_begin(self, training_config, **kw):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, training_config, **kw):
            self.times.append(time.perf_counter() - self.t0)

    logging.getLogger("pythae").setLevel(logging.ERROR)
    torch.manual_seed(seed)
    model = PVAE(PVAEConfig(input_dim=(X_DIM,), latent_dim=LATENT, reconstruction_loss="bce"),
                 encoder=Encoder(), decoder=Decoder())
    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        cfg = BaseTrainerConfig(output_dir=out, num_epochs=epochs, learning_rate=LR, per_device_train_batch_size=BATCH,
                                per_device_eval_batch_size=1000, optimizer_cls="Adam", no_cuda=True, seed=seed)
        trainer = BaseTrainer(model, train_dataset=BaseDataset(ds.x_train, torch.zeros(len(ds.x_train))),
                              eval_dataset=BaseDataset(ds.x_test, torch.zeros(len(ds.x_test))), training_config=cfg,
                              callbacks=[clock])
        with contextlib.redirect_stdout(None):
            trainer.train()
    model.eval()
    with torch.no_grad():
        test = sum(float(model({"data": xb}).loss) * len(xb) for xb in ds.x_test.split(1000)) / len(ds.x_test)
    return clock.times, test


def run_pyro(ds, epochs, seed):
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, TraceMeanField_ELBO

    pyro.clear_param_store()
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(X_DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT))
    dec = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, X_DIM))

    def model(x):
        pyro.module("decoder", dec)
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=dec(z), validate_args=False).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", enc)
        with pyro.plate("data", len(x)):
            mu, log_var = enc(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(mu, torch.exp(0.5 * log_var)).to_event(1))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), loss=TraceMeanField_ELBO())
    times, test = [], float("nan")
    for _ in range(epochs):
        t0 = time.perf_counter()
        for idx in torch.randperm(len(ds.x_train)).split(BATCH):
            svi.step(ds.x_train[idx])
        test = sum(svi.evaluate_loss(xb) for xb in ds.x_test.split(1000)) / len(ds.x_test)
        times.append(time.perf_counter() - t0)
    return times, test


CONTENDERS = {
    "varilab": lambda ds, e, s: run_varilab(ds, e, s),
    "varilab bf16": lambda ds, e, s: run_varilab(ds, e, s, precision="bf16"),
    "varilab --compile": lambda ds, e, s: run_varilab(ds, e, s, compile=True),
    "plain PyTorch": lambda ds, e, s: run_plain(ds, e, s),
    "plain PyTorch bf16": lambda ds, e, s: run_plain(ds, e, s, bf16=True),
    "pythae 0.1.2": run_pythae,
    "Pyro 1.9.2 SVI": run_pyro,
}
BASELINE = "plain PyTorch"


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t_start = time.perf_counter()
    ds = data(plan)
    peaks = [matmul_peak()]
    flops = epoch_flops(len(ds.x_train), len(ds.x_test))
    names = list(CONTENDERS) if not quick else ["varilab", "plain PyTorch", "pythae 0.1.2", "Pyro 1.9.2 SVI"]
    order = []
    for r in range(plan["rounds"]):
        order += names if r % 2 == 0 else names[::-1]
    times = {n: [] for n in names}
    tests = {n: [] for n in names}
    missing = {}
    for i, name in enumerate(order):
        if name in missing:
            continue
        try:
            t, test = CONTENDERS[name](ds, plan["epochs"], i)
        except ImportError as e:
            missing[name] = f"not installed ({e.name}); make bench installs it into .venv-bench"
            continue
        times[name] += t[1:]  # the first epoch of each run is warm-up
        tests[name].append(test)
    peaks.append(matmul_peak())
    peak = max(peaks)  # the better of two readings, before and after the contenders
    base = statistics.median(times[BASELINE])
    rows = []
    for name in names:
        if name in missing:
            rows.append({"name": name, "error": missing[name]})
            continue
        ts = times[name]
        med = statistics.median(ts)
        rows.append({"name": name, "median_s": med, "p10_s": min(ts), "p90_s": max(ts), "ratio": med / base,
                     "speedup": base / med, "test_loss": statistics.mean(tests[name]),
                     "roofline_fp32": flops / med / peak, "runs": len(tests[name]), "epochs_timed": len(ts)})
    for r in rows:  # peak memory: each contender alone in a fresh process, one epoch on the same data
        if "median_s" in r:
            r["peak_rss_mb"] = timing.child_peak_rss(__file__, r["name"], *(["--quick"] if quick else []))
    by = {r["name"]: r for r in rows}
    v = by["varilab"]
    peers = [by[n] for n in ("plain PyTorch", "pythae 0.1.2") if "median_s" in by.get(n, {})]
    speedups = {p["name"]: p["median_s"] / v["median_s"] for p in peers}
    met = bool(speedups) and all(s >= TARGET for s in speedups.values())
    eager_share = by[BASELINE]["roofline_fp32"]
    notes = [f"Float32 matmul peak measured in this run: {peak / 1e9:.0f} GFLOP/s (2048 x 2048 product); an epoch is "
             f"{flops / 1e9:.0f} GFLOP of matmuls. The plain eager loop reaches {eager_share:.0%} of that peak, so "
             f"no float32 trainer can be more than {1 / eager_share:.2f} times faster than it here."]
    tl = [r["test_loss"] for r in rows if "test_loss" in r]
    notes.append("Final test loss (negative ELBO per image, nats) after the same epochs: "
                 + ", ".join(f"{r['name']} {r['test_loss']:.2f}" for r in rows if "test_loss" in r)
                 + f" (spread {max(tl) - min(tl):.2f}).")
    return {
        "title": "VAE training on Fashion-MNIST (784-512-16, batch 100, CPU): seconds per epoch",
        "description": __doc__.split("\n\n")[1].replace("\n", " ") + " " + __doc__.split("\n\n")[3].replace("\n", " "),
        "unit": "s/epoch",
        "columns": [{"key": "speedup", "header": "speed-up over plain PyTorch", "format": "{:.2f}x"},
                    {"key": "roofline_fp32", "header": "share of fp32 matmul peak", "format": "{:.0%}"},
                    {"key": "test_loss", "header": "final test loss (nats)", "format": "{:.2f}"}],
        "baseline": BASELINE,
        "contenders": rows,
        "target": {"text": f"varilab's default at least {TARGET} times faster than the plain eager loop and pythae "
                           "in float32",
                   "metric": "speedup", "threshold": TARGET, "value": min(speedups.values()) if speedups else None,
                   "speedups": speedups, "met": met},
        "notes": notes,
        "settings": {"epochs_per_run": plan["epochs"], "rounds": plan["rounds"], "n_train": len(ds.x_train),
                     "n_test": len(ds.x_test), "batch_size": BATCH, "threads": torch.get_num_threads(),
                     "peak_fp32_flops": peak, "epoch_flops": flops},
        "seconds": time.perf_counter() - t_start,
    }


def _rss_child(name: str, quick: bool) -> None:
    ds = data(QUICK if quick else FULL)
    timing.reset_peak_rss()  # the data stay resident; the peak is what training adds on top
    CONTENDERS[name](ds, 1, 0)


if __name__ == "__main__":
    timing.main(__doc__, run, _rss_child)
