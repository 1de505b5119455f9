"""`varilab solve`: recover x from y = H x + noise with a trained diffusion run as the prior, and write the
estimates and a page of them into a folder.

Everything the user gives and gets is on the data's own range (images in [0, 1]); the solvers work on the
model's range. For a model of images, x_m = 2 x - 1, so for a linear H
    y_m = 2 y - H 1 = H x_m + 2 n,   sigma_m = 2 sigma_y,
and both noise levels are recorded. Without --observed, the observation is simulated from --truth with the
seed: y = H x + sigma_y z on the data's range.
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .. import folder
from ..inputs import as_images, image_shape, read, rows
from ..options import any_seed, between, non_negative, option, positive, positive_int, unit_interval
from ..protocol import Command

METHODS = {"red-diff": "RED-Diff: a Gaussian q(x|y) fitted by Adam, the denoisers as an SNR-weighted regulariser",
           "dps": "diffusion posterior sampling: ancestral sampling guided by the likelihood's gradient",
           "smc": "weighted particles following the prior's reverse dynamics, reweighted toward the posterior",
           "pinv": "the pseudo-inverse H^+ y (no prior)"}
TASKS = {"inpaint": "keep the pixels of a mask (--mask M.npy, or a random one keeping --keep of them)",
         "denoise": "y = x + noise", "sr2": "2x2 average pooling", "sr4": "4x4 average pooling",
         "matrix": "y = A x for a dense --matrix A.npy [M, D]"}
STEPS = {"red-diff": 500, "dps": 500, "smc": 200}
FILES = ("estimate.npy", "observed.npy", "mask.npy", "particles.npy", "weights.npy", "metrics.json", "trace.json",
         "report.html")


@dataclass
class SolveOptions:
    AXIS = "method"  # which options apply follows the method (not an option itself: no annotation)
    method: str = option("red-diff", "the solver", choices=METHODS)
    task: str | None = option(None, "the degradation H: " + "; ".join(f"{k}: {v}" for k, v in TASKS.items()),
                              check=lambda v: None if v in TASKS else
                              f"must be given as --task, one of {', '.join(TASKS)}" + (f"; got {v!r}" if v else ""))
    observed: str | None = option(None, "the observation, .npy: one row per image, as the task makes it (inpaint: "
                                  "the observed pixels, or whole images with --mask)")
    truth: str | None = option(None, "clean data, .npy, on the data's range, or 'test' for the run's own test "
                               "split: scores the estimates; alone, the observation is simulated from it with --seed")
    mask: str | None = option(None, "inpaint: a .npy of 0/1 per pixel (1: observed), the shape of one image")
    keep: float = option(0.5, "inpaint without --mask: the share of pixels a random mask keeps", check=unit_interval)
    matrix: str | None = option(None, "matrix: A.npy of shape [M, D]")
    noise: float = option(0.05, "sigma_y, the observation noise's standard deviation on the data's range "
                          "(images: [0, 1])", check=non_negative.upto(100))
    steps: int | None = option(None, "solver steps (default 500; smc 200)", check=positive_int.upto(100_000),
                               models=("red-diff", "dps", "smc"))
    particles: int = option(16, "particles per image", check=positive_int.upto(100_000), models=("smc",))
    lam: float = option(0.25, "lambda of the weights lambda_t = lambda (sigma_t / alpha_t)^p", check=non_negative.upto(1e4),
                        models=("red-diff",))
    power: float = option(1.0, "p of the weights lambda (sigma_t / alpha_t)^p", check=between(-10, 10),
                        models=("red-diff",))
    lr: float = option(0.1, "Adam's learning rate on mu", check=positive.upto(100), models=("red-diff",))
    zeta: float = option(1.0, "the step size of the likelihood gradient", check=non_negative.upto(1e4), models=("dps",))
    sampler: str = option("ddpm", "ancestral (ddpm) or deterministic (ddim) steps", choices=("ddpm", "ddim"),
                          models=("dps",))
    n: int | None = option(None, "solve only the first n observations", check=positive_int)
    batch: int = option(16, "observations solved together (one progress bar each batch)",
                       check=positive_int.upto(100_000))
    seed: int = option(0, "random seed of the solver (and of the simulated observation and mask)",
                     check=any_seed)


def operator(opts: SolveOptions, run, generator):
    """The task's operator on flat data [B, D], and the mask it drew (or None)."""
    import torch

    from ...models.inverse import operators

    d, shape = run.data.x_dim, image_shape(run)
    for flag, value, task in (("--mask", opts.mask, "inpaint"), ("--matrix", opts.matrix, "matrix")):
        if value is not None and opts.task != task:
            raise ValueError(f"{flag} applies to --task {task}, not to --task {opts.task}")
    if opts.task == "inpaint":
        if opts.mask is None:
            mask = torch.rand(d, generator=generator) < opts.keep
            return operators.Mask(mask), mask
        m = read(opts.mask, "--mask")
        if m.size != d:
            raise ValueError(f"--mask {opts.mask} has {m.size} entries (shape {list(m.shape)}) but one data point of "
                             f"this run has {d}{f' (images {list(shape)})' if shape else ''}")
        return operators.Mask(torch.from_numpy(m.reshape(-1))), None
    if opts.task == "denoise":
        return operators.Identity(d), None
    if opts.task in ("sr2", "sr4"):
        if shape is None:
            raise ValueError(f"--task {opts.task} downsamples images; this run's data are vectors of {d}")
        return operators.AvgPool(shape, int(opts.task[2])), None
    if opts.matrix is None:
        raise ValueError("--task matrix needs --matrix A.npy of shape [M, D]")
    A = read(opts.matrix, "--matrix")
    if A.ndim != 2 or A.shape[1] != d:
        raise ValueError(f"--matrix {opts.matrix} has shape {list(A.shape)}; this run's data need [M, {d}]")
    return operators.Matrix(torch.from_numpy(A)), None


def observation(opts: SolveOptions, run, op, truth, generator):
    """y [N, M] on the data's range: read (whole images are cut to the mask for inpainting) or simulated."""
    import torch

    if opts.observed is None:
        if truth is None:
            raise ValueError("pass --observed Y.npy, or --truth X.npy (or --truth test, the run's test split) to "
                             "simulate the observation from clean data")
        y = op(truth)
        return y + opts.noise * torch.randn(y.shape, generator=generator)
    y = rows(opts.observed, "--observed")
    if y.shape[1] == op.out_dim:
        return y
    if opts.task == "inpaint" and y.shape[1] == op.in_dim:
        return op(y)  # whole images: keep the observed pixels
    whole = f" (or whole images of {op.in_dim} with --mask)" if opts.task == "inpaint" else ""
    raise ValueError(f"--observed {opts.observed} has {y.shape[1]} values per row; {op.name} gives {op.out_dim}{whole}")


def solve(run, opts: SolveOptions, out: Path, quiet: bool = False) -> tuple[dict, list[str]]:
    """Solve every observation, write the folder; (the metrics, the summary line)."""
    import numpy as np
    import torch

    from ...models.diffusion.denoiser import Denoiser

    model = run.model
    if not isinstance(model, Denoiser):
        why = {"ldm": "its denoiser models the autoencoder's latents, not the images"}.get(
            run.options.model, "its denoiser is conditioned on its VAE's output")
        raise ValueError(f"solve takes an unconditional ddpm or flow run as the prior; {run.dir} is a "
                         f"{run.options.model} ({why})")
    if opts.noise == 0 and opts.method == "smc":
        raise ValueError("smc weighs particles by the likelihood N(y; H x, sigma_y^2 I): --noise must be positive")
    g = torch.Generator().manual_seed(opts.seed)
    op, drawn_mask = operator(opts, run, g)
    truth = None
    if opts.truth == "test":  # the run's held-out data: nothing to export first
        truth = torch.as_tensor(run.data.x_test, dtype=torch.float32).reshape(len(run.data.x_test), -1)
    elif opts.truth is not None:
        truth = rows(opts.truth, "--truth")
        if truth.shape[1] != run.data.x_dim:
            raise ValueError(f"--truth {opts.truth} has {truth.shape[1]} values per row; this run's data have "
                             f"{run.data.x_dim}")
    y = observation(opts, run, op, truth, g)
    if opts.n is not None:
        y, truth = y[:opts.n], None if truth is None else truth[:opts.n]
    if truth is not None and len(truth) != len(y):
        raise ValueError(f"--truth has {len(truth)} rows but the observation has {len(y)}")
    _check_memory(opts, len(y), run.data.x_dim)
    scale = 2.0 if model.config.unit_range else 1.0  # x_m = 2 x - 1 for images
    y_m = scale * y - (op(torch.ones(1, op.in_dim)) if scale == 2.0 else 0.0)  # y_m = 2 y - H 1
    noise_m = scale * opts.noise
    started = time.perf_counter()
    result = run_solver(model, op, y_m, noise_m, opts, quiet)
    seconds = time.perf_counter() - started
    estimate = model.from_model(result["estimate"])
    view = model.from_model(op.pinv(y_m))  # what the observation shows, at full size
    out.mkdir(parents=True, exist_ok=True)
    shape = image_shape(run)
    np.save(out / "estimate.npy", as_images(estimate.numpy(), shape))
    np.save(out / "observed.npy", _observed_file(opts, op, y, shape))
    if drawn_mask is not None:
        np.save(out / "mask.npy", as_images(drawn_mask[None].numpy().astype(np.uint8), shape)[0])
    if "particles" in result:
        parts = as_images(model.from_model(result["particles"]).flatten(0, 1).numpy(), shape)  # [N P, ...]
        np.save(out / "particles.npy", parts.reshape(len(y), opts.particles, *parts.shape[1:]))
        np.save(out / "weights.npy", result["log_weights"].exp().numpy())
    metrics = {"method": opts.method, "task": opts.task, "operator": op.name, "images": len(y),
               "noise": opts.noise, "noise_model_scale": noise_m, "seconds": seconds,
               "seconds_per_image": seconds / len(y), "denoiser_calls_per_image": result["nfe"],
               "network_evaluations_per_image": result["nfe"] * (opts.particles if opts.method == "smc" else 1)}
    if truth is not None:
        metrics.update(scores(truth.numpy(), estimate.numpy(), view.numpy(), shape))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    (out / "trace.json").write_text(json.dumps(result["trace"]) + "\n")
    from .solve_page import page

    page(run, opts, metrics, result["trace"], view.numpy(), estimate.numpy(), None if truth is None else truth.numpy(),
         out)
    line = f"{opts.method} on {opts.task} ({op.name}), {len(y)} images, {seconds / len(y):.2f} s per image"
    if truth is not None:
        line += (f": PSNR {metrics['psnr_mean']:.2f} dB"
                 + ("" if opts.method == "pinv" else f" (pseudo-inverse {metrics['pinv_psnr_mean']:.2f})")
                 + (f", SSIM {metrics['ssim_mean']:.4f}" if "ssim_mean" in metrics else ""))
    return metrics, [line + f"; written to {out}"]


def _check_memory(opts: SolveOptions, n: int, d: int) -> None:
    """The estimates (and smc's particles, all kept) and a batch's network state: the U-Net's activations and their
    gradients, about 256 floats a value."""
    per_image = opts.particles if opts.method == "smc" else 1
    need = 4 * d * (n * per_image + 256 * min(opts.batch, n) * per_image)
    what = f"{n:,} images of {d:,} values" + (f" with {per_image:,} particles each" if per_image > 1 else "")
    folder.check_memory(need, what, "choose fewer --particles, a smaller --batch or fewer images (--n)")


def _observed_file(opts, op, y, shape):
    """The observation as the user would give it back: whole images with zeros where unobserved (inpaint), small
    images (super-resolution), images (denoise), rows [N, M] (matrix, or vector data)."""
    data = (op.adjoint(y) if opts.task == "inpaint" else y).numpy()
    if opts.task == "matrix":
        return data
    return as_images(data, shape, {"sr2": 2, "sr4": 4}.get(opts.task, 1))


def run_solver(model, op, y_m, noise_m: float, opts: SolveOptions, quiet: bool) -> dict:
    """The method on every observation, `opts.batch` at a time, on the model's device; on the CPU afterwards."""
    import torch
    from tqdm import tqdm

    from ...models.inverse import inverse, smc

    device = next(model.parameters()).device
    steps = opts.steps or STEPS.get(opts.method, 0)
    pred = lambda x_t, t: model(x_t, t.to(x_t.dtype), ema=True)  # noqa: E731 (the averaged weights sample)
    common = dict(kind=model.kind, generator=torch.Generator(device=device).manual_seed(opts.seed))
    t_max = 1.0 - 1e-3 if model.config.process == "flow" else 1.0  # alpha_1 = 0 on the straight path
    chunks, traces = [], []
    for a in range(0, len(y_m), opts.batch):
        yb = y_m[a:a + opts.batch].to(device)
        bar = tqdm(total=steps, desc=f"images {a + 1}-{a + len(yb)} of {len(y_m)}", unit="step", leave=False,
                   disable=quiet or opts.method == "pinv", file=sys.stderr)
        progress = lambda i: bar.update(1)  # noqa: E731
        if opts.method == "pinv":
            est, trace = inverse.pseudo_inverse(op, yb)
            extra = {}
        elif opts.method == "red-diff":
            est, trace = inverse.red_diff(pred, model.schedule, op, yb, steps=steps, lam=opts.lam, power=opts.power,
                                          lr=opts.lr, progress=progress, **common)
            extra = {}
        elif opts.method == "dps":
            est, trace = inverse.dps(pred, model.schedule, op, yb, steps=steps, zeta=opts.zeta, sampler=opts.sampler,
                                     t_max=t_max, progress=progress, **common)
            extra = {}
        else:
            est, trace = smc.smc(pred, model.schedule, op, yb, noise_m, particles=opts.particles, steps=steps,
                                 t_max=t_max, progress=progress, **common)
            extra = {"particles": trace.pop("particles").cpu(), "log_weights": trace.pop("log_weights").cpu()}
        bar.close()
        chunks.append({"estimate": est.detach().cpu(), **extra})
        traces.append((len(yb), trace))
    out = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    out["trace"] = merge_traces(traces)
    out["nfe"] = out["trace"]["nfe"][-1] if out["trace"]["nfe"] else 0
    return out


def merge_traces(traces: list[tuple[int, dict]]) -> dict:
    """One trace for all batches: the residual as a mean weighted by batch size; per-image lists joined."""
    n = sum(b for b, _ in traces)
    first = traces[0][1]
    merged = {"t": first["t"], "nfe": first["nfe"],
              "residual": [sum(b * tr["residual"][i] for b, tr in traces) / n for i in range(len(first["residual"]))]}
    if "lambda" in first:
        merged["lambda"] = first["lambda"]
    if "ess" in first:  # smc: [steps + 1][B] per batch -> per image [N][steps + 1]
        merged["ess"] = [[step[j] for step in tr["ess"]] for _, tr in traces for j in range(len(tr["ess"][0]))]
        merged["resampled"] = [r for _, tr in traces for r in tr["resampled"]]
    return merged


def scores(truth, estimate, view, shape) -> dict:
    """Per-image PSNR (and SSIM for images of 7 pixels a side or more) of the estimate and of the pseudo-inverse,
    with their means and standard deviations over the images."""
    from ...diagnostics.restoration import psnr, ssim

    out = {}
    for name, x in (("", estimate), ("pinv_", view)):
        out[f"{name}psnr"] = psnr(truth, x).tolist()
        if shape is not None and min(shape[1:]) >= 7:
            out[f"{name}ssim"] = ssim(as_images(truth, shape), as_images(x, shape)).tolist()
    for key in list(out):
        values = [v for v in out[key] if math.isfinite(v)]
        out[f"{key}_mean"] = sum(values) / len(values) if values else float("inf")
        out[f"{key}_std"] = (sum((v - out[f"{key}_mean"]) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
    return out


SOLVE = Command("recover images from degraded observations, the diffusion run the prior", SolveOptions, solve,
                choices=METHODS, about_run="the diffusion run folder whose model is the prior", writes=FILES,
                models=("ddpm", "flow", "diffusevae"))
