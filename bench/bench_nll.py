"""Test log-likelihood by importance sampling (IWAE estimate, K = 1,000) on the same trained weights:
varilab's `log_likelihood` against pythae's `VAE.get_nll`.

The VAE (784-512-16, Bernoulli) is trained with varilab on Fashion-MNIST for a few epochs; pythae's
VAE gets the same weights (its decoder ends in a sigmoid, as its "bce" likelihood needs). Both
estimate -log p(x) with K = 1,000 importance samples from q(z|x), float32; a third row runs varilab's
estimate under bfloat16 autocast. varilab runs on all 10,000 test images. pythae's `get_nll` loops over
the points one by one (its time is linear in their number), so it runs on the first 500 and its time
is scaled to 10,000; on those 500 the two float32 estimates must agree within their Monte-Carlo error.
Peak RSS: each contender alone in a fresh process, estimating on those 500 points (untrained weights),
counted from after the data set was loaded.

--quick runs 200 generated points with K = 100. Run alone: `python bench/bench_nll.py [--quick]`.
"""
from __future__ import annotations

import tempfile
import time

import torch
from torch import nn

from varilab.core import log_likelihood
from varilab.data import Dataset, load
from varilab.models import VAE, VAEConfig
from varilab.train import fit

import timing  # bench/timing.py (bench/ is on the path under bench/run.py and when run alone)

X_DIM, HIDDEN, LATENT = 784, 512, 16
FULL = {"k": 1000, "n_test": None, "epochs": 3, "n_peer": 500}
QUICK = {"k": 100, "n_test": 200, "epochs": 1, "n_peer": 20}
TARGET = 3.0  # varilab at least 3 times faster than pythae at equal K, float32
AGREE_NATS = 0.1  # |difference of the two mean estimates| allowed, beyond 4 standard errors of the difference

VARILAB, VARILAB_BF16, PYTHAE = "varilab", "varilab bf16", "pythae 0.1.2 get_nll"


def data(plan) -> Dataset:
    if plan["n_test"] is None:
        return load("fashion-mnist")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1000 + plan["n_test"], X_DIM, generator=g).pow(3)
    return Dataset("generated", x[:1000], x[1000:], image_shape=(28, 28))


def trained(ds: Dataset, epochs: int) -> VAE:
    torch.manual_seed(0)
    model = VAE(VAEConfig(x_dim=X_DIM, latent_dim=LATENT, hidden=(HIDDEN,)))
    with tempfile.TemporaryDirectory() as out:
        fit(model, ds, out=out, epochs=epochs, batch_size=100, quiet=True)
    return model.cpu().eval()


def pythae_copy(model: VAE):
    """pythae's VAE with model's weights: same layers, a sigmoid after the decoder."""
    from pythae.models import VAE as PVAE, VAEConfig as PVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Encoder(BaseEncoder):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            mu, log_var = self.net(x.reshape(len(x), -1)).chunk(2, -1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)))

    import copy
    enc, dec = copy.deepcopy(model.encoder), copy.deepcopy(model.decoder)
    p = PVAE(PVAEConfig(input_dim=(X_DIM,), latent_dim=LATENT, reconstruction_loss="bce"),
             encoder=Encoder(enc), decoder=Decoder(dec))
    return p.eval()


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t_start = time.perf_counter()
    ds = data(plan)
    model = trained(ds, plan["epochs"])
    x, k = ds.x_test, plan["k"]
    rows, est = [], {}

    def timed(name, fn):
        t0 = time.perf_counter()
        nll, se = fn()
        rows.append({"name": name, "median_s": time.perf_counter() - t0, "nll": nll, "nll_se": se, "points": len(x)})
        est[name] = (nll, se)

    torch.manual_seed(1)
    timed(VARILAB, lambda: (lambda r: (r["nll"], r["nll_se"]))(log_likelihood(model, x, k=k)))

    def bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            r = log_likelihood(model, x, k=k)
        return r["nll"], r["nll_se"]

    timed(VARILAB_BF16, bf16)
    try:
        peer = pythae_copy(model)
    except ImportError as e:
        rows.append({"name": PYTHAE, "error": f"not installed ({e.name}); make bench installs it into .venv-bench"})
        peer = None
    if peer is not None:
        few = x[: plan["n_peer"]]

        def pythae_nll():
            with torch.no_grad():  # get_nll itself records the graph; no gradients are needed here
                return -float(peer.get_nll(few, n_samples=k, batch_size=100)), None
        torch.manual_seed(2)
        timed(PYTHAE, pythae_nll)
        rows[-1]["measured_s"], rows[-1]["points"] = rows[-1]["median_s"], len(few)
        rows[-1]["median_s"] *= len(x) / len(few)  # linear in the number of points: one loop iteration each
        torch.manual_seed(3)
        est["varilab on the same points"] = (log_likelihood(model, few, k=k)["nll"], None)
    # rows: one timing each (a single pass over the test set is long enough to time)
    for r in rows:
        if "median_s" in r:
            r["p10_s"] = r["p90_s"] = r["median_s"]
            r["peak_rss_mb"] = timing.child_peak_rss(__file__, r["name"], *(["--quick"] if quick else []))
    ref = next(r for r in rows if r["name"] == VARILAB)
    base_name = PYTHAE if peer is not None else VARILAB
    base = next(r for r in rows if r["name"] == base_name)["median_s"]
    for r in rows:
        if "median_s" in r:
            r["ratio"] = r["median_s"] / base
            r["speedup_over_varilab"] = ref["median_s"] / r["median_s"]
    checks, target = {}, {"text": f"varilab at least {TARGET:.0f} times faster than pythae's get_nll at equal K, "
                                  "float32, with estimates agreeing within their Monte-Carlo error",
                          "metric": "speedup", "threshold": TARGET, "value": None, "met": False}
    if peer is not None:
        # the MC error of the difference: varilab's per-point SE bounds each estimator's noise from above
        diff = abs(est["varilab on the same points"][0] - est[PYTHAE][0])
        speed = base / ref["median_s"]
        agree = diff <= AGREE_NATS
        checks = {"nll_difference": diff, "tolerance_nats": AGREE_NATS, "agree": agree,
                  "bf16_difference": abs(est[VARILAB_BF16][0] - est[VARILAB][0])}
        target.update(value=speed, met=bool(speed >= TARGET and agree))
    return {
        "title": f"Test log-likelihood, IWAE estimate with K = {k:,} on {len(x):,} test points (CPU)",
        "description": __doc__.split("\n\n")[1].replace("\n", " "),
        "unit": "s per pass",
        "baseline": base_name,
        "contenders": rows,
        "columns": [{"key": "nll", "header": "-log p(x) (nats)", "format": "{:.2f}"},
                    {"key": "points", "header": "points estimated", "format": "{:,}"},
                    {"key": "speedup_over_varilab", "header": "speed relative to varilab", "format": "{:.2f}x"}],
        "target": target,
        "checks": checks,
        "notes": [_note(rows, est, checks, plan, ref)],
        "settings": {"k": k, "n_test": len(x), "train_epochs": plan["epochs"], "threads": torch.get_num_threads()},
        "seconds": time.perf_counter() - t_start,
    }


def _rss_child(name: str, plan: dict) -> None:
    """One contender alone, on the first n_peer points (the same for each), then its peak RSS."""
    model = VAE(VAEConfig(x_dim=X_DIM, latent_dim=LATENT, hidden=(HIDDEN,))).eval()
    x = data(plan).x_test[: plan["n_peer"]].clone()
    timing.reset_peak_rss()  # leave out loading the data set
    if name == PYTHAE:
        with torch.no_grad():
            pythae_copy(model).get_nll(x, n_samples=plan["k"], batch_size=100)
    elif name == VARILAB_BF16:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_likelihood(model, x, k=plan["k"])
    else:
        log_likelihood(model, x, k=plan["k"])


def _note(rows, est, checks, plan, ref) -> str:
    text = (f"-log p(x) over all test points: varilab {est[VARILAB][0]:.3f} (standard error over points "
            f"{ref['nll_se']:.3f}), varilab bf16 {est[VARILAB_BF16][0]:.3f}.")
    if checks:
        text += (f" On the first {plan['n_peer']} points: pythae {est[PYTHAE][0]:.3f}, varilab "
                 f"{est['varilab on the same points'][0]:.3f}, a difference of {checks['nll_difference']:.3f} nats "
                 f"(allowed {AGREE_NATS}): " + ("they agree." if checks["agree"] else "**they do not agree**.")
                 + f" pythae's time was measured on those points ({rows[-1]['measured_s']:.1f} s) and scaled.")
    return text


if __name__ == "__main__":
    timing.main(__doc__, run, lambda name, quick: _rss_child(name, QUICK if quick else FULL))
