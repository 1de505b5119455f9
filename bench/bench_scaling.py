"""Scaling of varilab's trainer: seconds per epoch as the data grows (10,000 to 60,000 Fashion-MNIST
images, latent dimension 16) and as the latent dimension grows (16 to 256, 10,000 images); MLP
784-512-d, batch 100, float32. Each point is the median of the epochs after the first of one run
(2 epochs, or 3 for the smallest runs). Linear cost means seconds per epoch proportional to the number
of images, and nearly flat in the latent dimension (the 784 x 512 layers dominate). --quick uses
generated images and smaller sizes. Run alone: `python bench/bench_scaling.py [--quick]`.
"""
from __future__ import annotations

import statistics
import tempfile
import time

import torch

from varilab.data import Dataset, load
from varilab.models import VAE, VAEConfig
from varilab.train import fit

FULL = {"sizes": [10_000, 30_000, 60_000], "dims": [16, 64, 256], "n_dim": 10_000}
QUICK = {"sizes": [500, 1_000], "dims": [16, 64], "n_dim": 500}


def images(quick: bool) -> Dataset:
    if not quick:
        return load("fashion-mnist")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1_200, 784, generator=g).pow(3)
    return Dataset("generated", x[:1_000], x[1_000:], image_shape=(28, 28))


def seconds_per_epoch(ds: Dataset, n: int, latent: int) -> float:
    sub = Dataset(ds.name, ds.x_train[:n], ds.x_test[:1_000], image_shape=ds.image_shape)
    torch.manual_seed(0)
    model = VAE(VAEConfig(x_dim=784, latent_dim=latent, hidden=(512,)))
    epochs = 3 if n <= 10_000 else 2
    with tempfile.TemporaryDirectory() as out:
        hist = fit(model, sub, out=out, epochs=epochs, batch_size=100, quiet=True)
    return statistics.median(m["seconds"] for m in hist[1:])


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t0 = time.perf_counter()
    ds = images(quick)
    rows = []
    for n in plan["sizes"]:
        s = seconds_per_epoch(ds, n, 16)
        rows.append({"name": f"{n:,} images, d = 16", "median_s": s, "p10_s": s, "p90_s": s, "per_1k_images": s / n * 1e3})
    for d in plan["dims"][1:]:
        s = seconds_per_epoch(ds, plan["n_dim"], d)
        rows.append({"name": f"{plan['n_dim']:,} images, d = {d}", "median_s": s, "p10_s": s, "p90_s": s,
                     "per_1k_images": s / plan["n_dim"] * 1e3})
    base = rows[0]["median_s"]
    for r in rows:
        r["ratio"], r["peak_rss_mb"] = r["median_s"] / base, None
    per = [r["per_1k_images"] for r in rows[: len(plan["sizes"])]]
    linear = max(per) / min(per)
    return {
        "title": "Scaling of the trainer with data size and latent dimension (CPU)",
        "description": __doc__.split("\n\n")[0].replace("\n", " "),
        "unit": "s/epoch",
        "baseline": rows[0]["name"],
        "contenders": rows,
        "columns": [{"key": "per_1k_images", "header": "seconds per 1,000 images", "format": "{:.3f}"}],
        "target": {"text": "linear cost in the data size: seconds per 1,000 images within 25% across sizes",
                   "metric": "max/min seconds per 1,000 images", "threshold": 1.25, "value": linear,
                   "met": bool(linear <= 1.25)},
        "notes": [f"Seconds per 1,000 images across data sizes vary by a factor {linear:.2f}; going from d = 16 to "
                  f"d = {plan['dims'][-1]} multiplies the epoch time by "
                  f"{rows[-1]['median_s'] / seconds_at(rows, plan['n_dim'], 16):.2f}."],
        "settings": {"batch_size": 100, "hidden": 512, "threads": torch.get_num_threads()},
        "seconds": time.perf_counter() - t0,
    }


def seconds_at(rows: list[dict], n: int, d: int) -> float:
    return next(r["median_s"] for r in rows if r["name"] == f"{n:,} images, d = {d}")


if __name__ == "__main__":
    import timing  # bench/timing.py

    timing.main(__doc__, run)
