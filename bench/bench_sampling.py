"""DDIM sampling throughput (images per second, CPU): 50 deterministic DDIM steps (eta = 0) from Gaussian
noise to a batch of 28 x 28 single-channel images (64 per batch), through a randomly initialised U-Net.

- varilab: `Denoiser(DenoiserConfig(x_dim=784, image_shape=(28, 28), channels=32, mults=(1, 2, 2)))`
  and `.sample(n, steps=50, sampler="ddim")`: `varilab.models.diffusion.samplers.ddim` on the time grid t = 1, 0.98, ..., 0,
  the result mapped to [0, 1].
- plain PyTorch: the same U-Net module (`Denoiser.net`, the same weights) called in a 50-step DDIM loop
  written out by hand: x0 = (x - sigma_t eps) / alpha_t, x = alpha_s x0 + sigma_s eps, with alpha and sigma
  read from `VPSchedule.alpha_bar()` before the loop, and the same mapping to [0, 1].
- diffusers 0.42.1: `UNet2DModel` of the same layout (block_out_channels (32, 64, 64), one layer per block,
  DownBlock2D/UpBlock2D, no mid-block attention, 8 GroupNorm groups) and `DDIMScheduler` (the same linear
  betas, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing": the 50 noise levels that
  varilab walks, see tests/test_diffusers_interop.py), `unet(x, t).sample` and `scheduler.step(...)` per
  step, then the mapping to [0, 1] that its DDIMPipeline applies.

The two U-Nets have parameters of the same shapes (1,045,729 each): DDPM's layout in both. They differ only
in parameter-free details: diffusers applies SiLU to the time embedding before each block's projection
and orders its sinusoid cos, sin. Weights are random (speed does not depend on training); varilab's output
convolution, zero at initialisation for training, gets PyTorch's default random initialisation, so that
it does real work.

Each contender samples the same batch of noise, one full 50-step sampling per run, in alternating order
(ABBA) after a 2-step warm-up, all under `torch.inference_mode()`; a row's figure is its median over the
runs. Before timing, from the same weights and noise, varilab's sampler and the hand-written loop must
give the same raw samples (before the mapping to [0, 1]). Peak RSS: each contender alone in a fresh
process, sampling the batch with 3 steps (the memory of one step does not grow with the number of steps).
A peer that is not installed is reported as missing.

--quick is a smoke run: a batch of 2 and 10 steps, two rounds. Run alone:
`python bench/bench_sampling.py [--quick]`.
"""
from __future__ import annotations

import sys
import time

import torch

from varilab.models.diffusion import samplers
from varilab.models.diffusion.denoiser import Denoiser, DenoiserConfig
from varilab.models.diffusion.diffusion import VPSchedule

import timing  # bench/timing.py (bench/ is on the path under bench/run.py and when run alone)

H = W = 28
X_DIM, T, STEPS, SEED = H * W, 1000, 50, 0
FULL = {"batch": 64, "steps": STEPS, "rounds": 3, "check_batch": 4, "check_steps": STEPS}
QUICK = {"batch": 2, "steps": 10, "rounds": 2, "check_batch": 1, "check_steps": 10}  # a smoke run
WARMUP_STEPS, RSS_STEPS = 2, 3
CHECK_RTOL = 1e-4  # largest raw difference over the largest raw value, varilab's sampler against the hand loop
TARGET_RATIO = 1.05  # varilab's sampling at most 5% slower than the hand-written loop around the same U-Net

VARILAB, PLAIN, DIFFUSERS = "varilab", "plain PyTorch", "diffusers 0.42.1"
BASELINE = PLAIN


def build_denoiser() -> Denoiser:
    torch.manual_seed(SEED)
    model = Denoiser(DenoiserConfig(x_dim=X_DIM, image_shape=(H, W), channels=32, mults=(1, 2, 2)))
    model.net.conv_out.reset_parameters()  # zero-initialised for training: random here, so its work is real
    return model.eval()


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model scale [-1, 1] to images in [0, 1], as Denoiser.sample and diffusers' DDIMPipeline do."""
    return ((x + 1) / 2).clamp(0, 1)


def levels(steps: int) -> list[int]:
    """Step indices i of the uniform grid t = i / T from 1 down to 0 (steps dividing T: knots only)."""
    return [round(T * (steps - k) / steps) for k in range(steps + 1)]


def hand_ddim(net, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Raw samples [B, C, H, W] from `steps` DDIM steps around `net`, written out by hand."""
    abar = VPSchedule(T=T).alpha_bar()
    idx = levels(steps)
    alpha = [float(abar[i].sqrt()) for i in idx]
    sigma = [float((1 - abar[i]).sqrt()) for i in idx]
    x = noise.reshape(-1, 1, H, W)
    for k in range(steps):
        eps = net(x, torch.full((len(x),), idx[k] / T))
        x0 = (x - sigma[k] * eps) / alpha[k]
        x = alpha[k + 1] * x0 + sigma[k + 1] * eps
    return x


# --- contenders: each returns sample(noise [B, 784], steps) -> images in [0, 1] -----------------------

def varilab_sampler(model: Denoiser):
    return lambda noise, steps: model.sample(len(noise), steps=steps, sampler="ddim", noise=noise)


def plain_sampler(model: Denoiser):
    return lambda noise, steps: to_unit(hand_ddim(model.net, noise, steps)).reshape(len(noise), -1)


def diffusers_unet_and_scheduler():
    from diffusers import DDIMScheduler, UNet2DModel

    torch.manual_seed(SEED)
    unet = UNet2DModel(sample_size=H, in_channels=1, out_channels=1, block_out_channels=(32, 64, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3,
                       add_attention=False, norm_num_groups=8).eval()
    scheduler = DDIMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    return unet, scheduler


def diffusers_sampler(unet, scheduler):
    def sample(noise, steps):
        scheduler.set_timesteps(steps)
        x = noise.reshape(-1, 1, H, W)
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t).sample, t, x).prev_sample
        return to_unit(x).reshape(len(noise), -1)
    return sample


def make(name: str, model: Denoiser | None = None):
    """(sample function, parameter count) of a contender; ImportError where its library is missing."""
    if name == DIFFUSERS:
        unet, scheduler = diffusers_unet_and_scheduler()
        return diffusers_sampler(unet, scheduler), sum(p.numel() for p in unet.parameters())
    model = model or build_denoiser()
    fn = varilab_sampler(model) if name == VARILAB else plain_sampler(model)
    return fn, sum(p.numel() for p in model.parameters())


def noise(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, X_DIM, generator=torch.Generator().manual_seed(seed))


def check_equal_work(model: Denoiser, plan) -> dict:
    """From the same weights and noise, the sampler that `Denoiser.sample` runs and the hand loop give the
    same raw samples (before the mapping to [0, 1], where random weights saturate most pixels)."""
    z, steps = noise(plan["check_batch"], seed=2), plan["check_steps"]
    with torch.inference_mode():
        ours = samplers.ddim(lambda x, t: model(x, t.to(x.dtype)), model.schedule, z, steps=steps, kind=model.kind)
        hand = hand_ddim(model.net, z, steps).reshape(len(z), -1)
    scale = float(hand.abs().max())
    diff = float((ours - hand).abs().max())
    return {"steps": steps, "batch": len(z), "max_abs_diff": diff, "max_abs_value": scale,
            "rel_diff": diff / max(scale, 1e-12), "rtol": CHECK_RTOL, "ok": bool(diff <= CHECK_RTOL * scale)}


def run(quick: bool) -> dict:
    plan = QUICK if quick else FULL
    t_start = time.perf_counter()
    model = build_denoiser()
    fns, params, missing = {}, {}, {}
    for name in (VARILAB, PLAIN, DIFFUSERS):
        try:
            fns[name], params[name] = make(name, model)
        except ImportError as e:
            missing[name] = f"not installed ({e.name}); make bench installs it into .venv-bench"
    equal = check_equal_work(model, plan)
    names = list(fns)
    z = noise(plan["batch"])
    times = {n: [] for n in names}
    outputs = {}

    def timed():
        with torch.inference_mode():
            for name in names:
                fns[name](z, WARMUP_STEPS)
            for r in range(plan["rounds"]):
                for name in (names if r % 2 == 0 else names[::-1]):  # ABBA: none always goes first
                    t0 = time.perf_counter()
                    outputs[name] = fns[name](z, plan["steps"])
                    times[name].append(time.perf_counter() - t0)

    _, other_busy = timing.other_cpu_busy(timed)
    by_name = {r["name"]: r for r in timing.contenders(times, BASELINE)}
    rows = []
    for name in (VARILAB, PLAIN, DIFFUSERS):
        if name in missing:
            rows.append({"name": name, "error": missing[name]})
            continue
        r = by_name[name]
        r.pop("peak_rss_mb")
        rows.append({**r, "images_per_s": plan["batch"] / r["median_s"], "ms_per_step": 1e3 * r["median_s"] / plan["steps"],
                     "params": params[name]})
    for r in rows:
        if "median_s" in r:
            r["peak_rss_mb"] = timing.child_peak_rss(__file__, r["name"], *(["--quick"] if quick else []))
    by = {r["name"]: r for r in rows}
    ratio = by[VARILAB]["ratio"]
    peer = (f", diffusers' UNet2DModel {params[DIFFUSERS]:,} (ratio {params[DIFFUSERS] / params[VARILAB]:.3f})."
            if DIFFUSERS in params else "; diffusers is not installed.")
    notes = [f"Parameters: varilab's U-Net {params[VARILAB]:,}" + peer,
             f"Equal work: from the same weights and noise (batch {equal['batch']}, {equal['steps']} steps) varilab's "
             f"sampler and the hand-written loop differ by at most {equal['max_abs_diff']:.1e} on raw values up to "
             f"{equal['max_abs_value']:.3g} (tolerance {CHECK_RTOL:.0e} of that): "
             + ("they agree." if equal["ok"] else "**they do not agree**.")]
    if VARILAB in outputs and PLAIN in outputs:
        same = float((outputs[VARILAB] - outputs[PLAIN]).abs().max())
        notes.append(f"The timed batches of varilab and the hand-written loop, mapped to [0, 1], differ by at most "
                     f"{same:.1e}.")
    else:
        same = None
    print("[bench] sampling parameters: " + ", ".join(f"{n} {p:,}" for n, p in params.items()), file=sys.stderr)
    return {
        "title": f"DDIM sampling throughput ({plan['steps']} steps, 28 x 28 x 1, batch {plan['batch']}, U-Net of "
                 "about 1.05 M parameters, CPU)",
        "description": " ".join(" ".join(__doc__.split("\n\n")[i].split()) for i in (1, 2, 3)),
        "unit": "s/batch",
        "baseline": BASELINE,
        "contenders": rows,
        "columns": [{"key": "images_per_s", "header": "images/s", "format": "{:,.1f}"},
                    {"key": "ms_per_step", "header": "ms per step", "format": "{:.1f}"}],
        "target": {"text": f"varilab's DDIM sampling at most {TARGET_RATIO} times the hand-written loop's time "
                           "(same U-Net, same weights)",
                   "metric": "ratio", "threshold": TARGET_RATIO, "value": ratio, "met": bool(ratio <= TARGET_RATIO)},
        "notes": notes,
        "checks": {"equal_samples": equal, "timed_outputs_max_abs_diff": same,
                   "params": params, "other_cpu_busy_while_timing": other_busy},
        "settings": {"batch": plan["batch"], "steps": plan["steps"], "rounds": plan["rounds"],
                     "warmup_steps": WARMUP_STEPS, "threads": torch.get_num_threads(), "T": T},
        "seconds": time.perf_counter() - t_start,
    }


def _rss_child(name: str, quick: bool) -> None:
    """One contender alone: the batch of the plan, sampled with RSS_STEPS steps."""
    fn, _ = make(name)
    with torch.inference_mode():
        fn(noise((QUICK if quick else FULL)["batch"]), RSS_STEPS)


if __name__ == "__main__":
    timing.main(__doc__, run, _rss_child)
