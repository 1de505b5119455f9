"""The trainer: one function, one plain loop.

Randomness is re-seeded at the start of every epoch from (seed, epoch, rank), so a checkpoint written
at an epoch boundary holds all the state needed to continue exactly: weights, optimiser and epoch. A
schedule (beta, an objective's own: a temperature, re-seeding) is a function of the global step, which
follows from the epoch; a model's counters are buffers, saved with its weights, and an objective's own
state (a moving-average baseline) is saved beside them (`stateful_parts`).
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import json
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import distributed
from .checkpoint import atomic_write, load_checkpoint, read_jsonl, save_checkpoint, save_weights
from .core import vae_loss
from .core.conditioning import bind, split
from .data import Dataset
from .perf import tune_malloc
from .run_files import CHECKPOINT, METRICS, STEPS, WEIGHTS  # noqa: F401  (re-exported: the trainer writes them)

CURVE_POINTS = 100  # about this many step lines per run

Objective = Callable[[nn.Module, torch.Tensor], dict]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the last good checkpoint is left as it was."""


class _Step(nn.Module):
    """objective(model, x) as a module, so DistributedDataParallel sees every parameter it touches."""

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x, cond=None, **kwargs):
        return self.objective(bind(self.model, cond), x, **kwargs)


class _Compiled(nn.Module):
    """torch.compile of a step module, falling back to the eager module (with a one-line notice) when
    compiling fails."""

    def __init__(self, step: nn.Module, quiet: bool):
        super().__init__()
        self.eager, self.quiet, self.failed = step, quiet, False
        self.compiled = torch.compile(step)

    def forward(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eager
                if isinstance(e, ValueError) and "dynamo" not in type(e).__module__:
                    raise  # the objective's own error (e.g. a distribution refusing NaN), not the compiler's
                self.failed = True
                if not self.quiet:
                    print(f"torch.compile failed ({type(e).__name__}); training continues in eager mode", file=sys.stderr)
        return self.eager(*args, **kwargs)


PRECISIONS = ("auto", "fp32", "bf16")


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether the device computes in bfloat16 natively (a GPU of compute capability 8 or more; a CPU with AMX
    bfloat16 matrix units), and what that was read from. AVX512_BF16 alone is not enough: on such a CPU a
    bfloat16 matrix product measured 1.7 times, and the VAE's training 1.2 times, the float32 time."""
    if device.type == "cuda":
        major = torch.cuda.get_device_capability(device)[0]
        return torch.cuda.is_bf16_supported() and major >= 8, f"GPU compute capability {major}.x"
    try:
        flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    except OSError:
        flags = []
    if "amx_bf16" in flags:
        return True, "the CPU has AMX bfloat16 units (amx_bf16)"
    return False, "the CPU has no AMX bfloat16 units (amx_bf16)" + (", only avx512_bf16" if "avx512_bf16" in flags else "")


def _bf16_slowdown(device: torch.device) -> float:
    """Time of a 512 x 512 matrix product in bfloat16 over float32 on `device` (a few milliseconds to measure)."""
    a = torch.randn(512, 512, device=device)
    times = []
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x  # warm-up
        t0 = time.perf_counter()
        for _ in range(10):
            x @ x
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return times[1] / times[0]


def resolve_precision(precision: str, device: torch.device) -> str:
    """"auto" is bf16 where the device has native bfloat16, else fp32; an explicit bf16 without native support
    runs as asked, with a one-line warning giving the reason and the measured cost."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return precision
    native, why = native_bf16(device)
    if precision == "auto":
        return "bf16" if native else "fp32"
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("precision bf16 needs a GPU with bfloat16 support; use fp32")
    if not native:
        print(f"warning: --precision bf16 without native bfloat16 ({why}): a bfloat16 matrix product measured "
              f"{_bf16_slowdown(device):.1f} times the float32 time here; --precision auto or fp32 is faster",
              file=sys.stderr)
    return precision


def precision_context(precision: str, device: torch.device):
    """A context factory for the forward pass: nothing for fp32, bfloat16 autocast for bf16 (auto: bf16 where
    the device has it natively)."""
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)


def adam(model: nn.Module, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam, fused into one kernel per parameter group where PyTorch has that for the device."""
    params = [p for p in model.parameters()]
    if device.type in ("cpu", "cuda") and all(p.is_floating_point() for p in params):
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, ValueError):
            pass
    return torch.optim.Adam(params, lr=lr)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % 2**63


def takes_step(objective: Callable) -> bool:
    """Whether an objective asks for the global step (a `step` parameter): it is then called as
    objective(model, x, step=k), k counting the optimiser steps from 0, and evaluated at the steps done."""
    try:
        return "step" in inspect.signature(objective).parameters
    except (TypeError, ValueError):  # a callable without a signature
        return False


def stateful_parts(objective: Callable) -> list:
    """The parts of an objective that carry state from one call to the next (a moving-average baseline): the
    objective itself or what a functools.partial binds, each with state_dict() and load_state_dict() of tensors,
    in a fixed order, so that the checkpoint holds their state. A model's own state is its buffers."""
    if isinstance(objective, functools.partial):
        bound = (objective.func, *objective.args, *objective.keywords.values())
        return [s for part in bound for s in stateful_parts(part)]
    keeps = callable(getattr(objective, "state_dict", None)) and callable(getattr(objective, "load_state_dict", None))
    return [objective] if keeps and not isinstance(objective, nn.Module) else []


def _state_of(parts: list) -> dict[str, torch.Tensor]:
    return {f"objective.{i}.{k}": v for i, part in enumerate(parts) for k, v in part.state_dict().items()}


def _restore(parts: list, state: dict[str, torch.Tensor], device: torch.device) -> None:
    for i, part in enumerate(parts):
        mine = f"objective.{i}."
        part.load_state_dict({k[len(mine):]: v.to(device) for k, v in state.items() if k.startswith(mine)})


def read_metrics(out: str | Path, name: str = METRICS) -> list[dict]:
    return read_jsonl(Path(out) / name)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, objective: Objective, batch_size: int = 1024,
             cond: torch.Tensor | None = None) -> dict[str, float]:
    """Means of the objective's outputs over x, in batches (weighted by batch size)."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for xb, cb in zip(x.split(batch_size), split(cond, batch_size)):
        for k, v in objective(bind(model, cb), xb).items():  # a per-example [B] value is summed, a scalar is a batch mean
            v = torch.as_tensor(v)
            sums[k] = sums.get(k, 0.0) + (float(v.sum()) if v.ndim else float(v) * len(xb))
    model.train(was_training)
    return {k: v / len(x) for k, v in sums.items()}


def fit(model: nn.Module, data: Dataset, *, out: str | Path, epochs: int = 10, batch_size: int = 128,
        lr: float = 1e-3, beta: float | Callable[[int], float] = 1.0, objective: Objective | None = None,
        seed: int = 0, resume: bool = False, quiet: bool = False, diagnostics: bool = False,
        precision: str = "fp32", compile: bool = False) -> list[dict]:
    """Train `model` on `data` with Adam, writing metrics, weights and a checkpoint to `out` each epoch.

    `objective(model, x)` returns a dict with a scalar "loss" (and any other scalars to log); the
    default is the negative beta-ELBO. `beta` may be a schedule, step -> beta (see core.schedules):
    the objective is then called as objective(model, x, beta=schedule(step)). An objective with a `step`
    parameter is given the global step (`takes_step`), so its own schedules resume where they stopped.

    With `diagnostics=True` each epoch's metrics also hold the test split's KL per latent dimension,
    activity Cov_x(E_q[z_i|x]) and active-unit count, so collapse over training can be followed.

    Speed: Adam is the fused implementation where the device has one, and malloc keeps freed buffers
    (varilab.perf). `precision="bf16"` runs the forward pass under bfloat16 autocast (weights, gradients
    and the optimizer stay float32). `compile=True` compiles the objective with torch.compile and falls
    back to eager with a one-line notice when that fails; it is off by default because on CPU it measured
    slower than eager for the MLP VAE (docs/benchmarks.md).

    Under torchrun each process takes its share of every global
    batch of `batch_size` and gradients are averaged (DDP). Returns the metrics of every epoch.
    """
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"epochs and batch_size must be positive integers and lr positive, "
                         f"got epochs={epochs}, batch_size={batch_size}, lr={lr}")
    schedule = beta if callable(beta) else None
    objective = objective or (vae_loss if schedule else functools.partial(vae_loss, beta=beta))
    stepped, parts = takes_step(objective), stateful_parts(objective)
    out = Path(out)
    rank, world, device = distributed.init()
    tune_malloc()  # reuse freed step buffers instead of page-faulting them back (varilab.perf)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    model.to(device)
    optimizer = adam(model, lr, device)
    autocast = precision_context(precision, device)
    start = 0
    history: list[dict] = []
    n_batches = -(-len(data.x_train) // batch_size)
    log_every = max(1, epochs * n_batches // CURVE_POINTS)
    if resume:
        state: dict[str, torch.Tensor] = {}
        meta = load_checkpoint(out / CHECKPOINT, model, optimizer, state)
        _restore(parts, state, device)
        start = meta["epoch"]
        # the logs as of the checkpoint: lines written after it dropped, and the checkpoint's own epoch
        # restored from it when a crash came between the checkpoint and the log append
        history = [m for m in read_metrics(out) if m["epoch"] <= start]
        steps = [m for m in read_metrics(out, STEPS) if m["step"] <= start * n_batches]
        if "metrics" in meta and (not history or history[-1]["epoch"] < start):
            history.append(meta["metrics"])
            steps += [m for m in meta.get("steps", []) if not steps or m["step"] > steps[-1]["step"]]
        if rank == 0:
            _write_metrics(out, history)
            atomic_write(out / STEPS, "".join(json.dumps(m) + "\n" for m in steps))
    step_fn: nn.Module = _Step(model, objective)
    # a model may constrain its own updates: before_optimizer_step() after backward, after_optimizer_step() after it
    before_step = getattr(model, "before_optimizer_step", None)
    after_step = getattr(model, "after_optimizer_step", None)
    if world > 1:
        step_fn = nn.parallel.DistributedDataParallel(step_fn, device_ids=[device] if device.type == "cuda" else None)
    if compile:
        step_fn = _Compiled(step_fn, quiet or rank != 0)
    x_train = data.x_train.to(device)
    x_test = test_inputs(data.x_test.to(device), data)  # binarised once when training binarises dynamically
    c_train = None if data.c_train is None else data.c_train.to(device)
    c_test = None if data.c_test is None else data.c_test.to(device)
    n = len(x_train)
    show_bar = not quiet and rank == 0 and sys.stderr.isatty()
    bar = _progress(start, epochs, show_bar)
    try:
        for epoch in range(start, epochs):
            torch.manual_seed(epoch_seed(seed, epoch, rank))
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))).to(device)
            t0 = time.perf_counter()
            step_lines = []
            sums = torch.zeros(0, device=device)
            keys: list[str] = []
            batches = perm.split(batch_size)
            for step, idx in enumerate(batches):
                scale = 1.0
                if world > 1:  # this rank's share; loss scaled so the DDP average equals the global-batch mean
                    if len(idx) < world:
                        continue
                    shard = idx.tensor_split(world)[rank]
                    scale = len(shard) * world / len(idx)
                    idx = shard
                xb = x_train[idx]
                if data.binarize == "dynamic":
                    xb = torch.bernoulli(xb)  # a fresh binarisation x ~ Bernoulli(pixel intensity) per batch
                try:
                    kwargs = {"beta": schedule(epoch * len(batches) + step)} if schedule else {}
                    if stepped:
                        kwargs["step"] = epoch * len(batches) + step
                    if c_train is not None:
                        kwargs["cond"] = c_train[idx]
                    with autocast():
                        logs = step_fn(xb, **kwargs)
                except ValueError:  # a distribution refusing non-finite parameters is divergence too
                    if all(torch.isfinite(p).all() for p in model.parameters()):
                        raise
                    logs = {"loss": torch.tensor(float("nan"), device=device)}
                loss = logs["loss"]
                finite = torch.isfinite(loss.detach()).float()
                if world > 1:
                    finite = distributed.all_sum(finite) / world
                if finite.item() < 1.0:
                    raise TrainingDiverged(
                        f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1} of {len(batches)}; training "
                        + (f"stopped and the last good checkpoint (epoch {epoch}) is kept in {out}"
                           if epoch > 0 else "stopped before any checkpoint was written"))
                optimizer.zero_grad(set_to_none=True)
                (loss * scale).backward()
                if before_step is not None:
                    before_step()  # e.g. an SAE removes the gradient along its unit-norm decoder columns
                optimizer.step()
                if after_step is not None:
                    after_step()  # e.g. an SAE renormalises its decoder columns
                vals = torch.stack([torch.as_tensor(v, device=device).detach().float() for v in logs.values()]) * len(xb)
                if not keys:
                    keys, sums = list(logs), torch.zeros(len(logs), device=device)
                sums += vals
                done = epoch * len(batches) + step + 1
                if rank == 0 and done % log_every == 0:
                    step_lines.append({"step": done, "epoch": epoch + (step + 1) / len(batches),
                                       **{k: float(v) for k, v in zip(keys, vals / len(xb))}})
            count = torch.tensor(float(n), device=device)
            sums = distributed.all_sum(sums)
            metrics = {"epoch": epoch + 1, **{k: float(v) for k, v in zip(keys, sums / count)}}
            if schedule:
                metrics["beta"] = schedule((epoch + 1) * len(batches) - 1)
            bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
            if bad:  # a finite loss with a non-finite gradient: never save such weights
                raise TrainingDiverged(
                    f"the weights became non-finite in epoch {epoch + 1} ({bad[0]}" + (f" and {len(bad) - 1} more" if len(bad) > 1
                                                                                      else "")
                    + ") although the loss stayed finite: a NaN or Inf gradient; training "
                    + (f"stopped and the last good checkpoint (epoch {epoch}) is kept in {out}"
                       if epoch > 0 else "stopped before any checkpoint was written"))
            if rank == 0:
                test_objective = _at_step(objective, (epoch + 1) * len(batches), schedule, stepped)
                test = evaluate(model, x_test, test_objective, cond=c_test)
                metrics.update({f"test_{k}": v for k, v in test.items()})
                if diagnostics:
                    metrics.update(_collapse_metrics(model, x_test, c_test))
                metrics["seconds"] = time.perf_counter() - t0
                save_checkpoint(out / CHECKPOINT, model, optimizer, {"epoch": epoch + 1, "seed": seed, "metrics": metrics,
                                                                     "steps": step_lines}, _state_of(parts))
                save_weights(out / WEIGHTS, model)
                with open(out / METRICS, "a") as f:
                    f.write(json.dumps(metrics) + "\n")
                with open(out / STEPS, "a") as f:
                    f.write("".join(json.dumps(m) + "\n" for m in step_lines))
                _report_epoch(bar, metrics, epochs, quiet)
            history.append(metrics)
            distributed.barrier()
    except BaseException:
        distributed.settle(barrier=False)  # every rank may be leaving: no collective, only the wait
        raise
    distributed.settle()
    if bar is not None:
        bar.close()
    return history


def _at_step(objective: Objective, done: int, schedule, stepped: bool) -> Objective:
    """The objective as evaluated after `done` steps: beta and the objective's own schedules at that step."""
    kwargs = ({"beta": schedule(done)} if schedule else {}) | ({"step": done} if stepped else {})
    return functools.partial(objective, **kwargs) if kwargs else objective


def _collapse_metrics(model: nn.Module, x: torch.Tensor, cond=None, max_points: int = 2000) -> dict:
    from .diagnostics import active_units, encode_dataset, kl_per_dim

    post = encode_dataset(model, x[:max_points], cond=None if cond is None else cond[:max_points])
    n, a = active_units(post)
    return {"active_units": n, "activity": a.tolist(), "kl_per_dim": kl_per_dim(post).tolist()}


def test_inputs(x_test: torch.Tensor, data: Dataset) -> torch.Tensor:
    """The test set as evaluated: binarised once with a fixed seed when training binarises dynamically."""
    if data.binarize != "dynamic":
        return x_test
    g = torch.Generator(device=x_test.device).manual_seed(12345)
    return torch.bernoulli(x_test, generator=g)


def _write_metrics(out: Path, history: list[dict]) -> None:
    atomic_write(out / METRICS, "".join(json.dumps(m) + "\n" for m in history))


def _progress(start: int, epochs: int, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=epochs, initial=start, unit="epoch", dynamic_ncols=True, file=sys.stderr)


def _report_epoch(bar, m: dict, epochs: int, quiet: bool) -> None:
    text = f"loss {m['loss']:.4g}" + (f" test {m['test_loss']:.4g}" if "test_loss" in m else "")
    if bar is not None:
        bar.set_postfix_str(text)
        bar.update(1)
    elif not quiet and (m["epoch"] == epochs or m["epoch"] % max(1, epochs // 10) == 0):
        print(f"epoch {m['epoch']}/{epochs}: {text} ({m['seconds']:.2f}s)", file=sys.stderr, flush=True)
