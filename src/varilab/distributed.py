"""Data-parallel training through torch.distributed, started by `torchrun --nproc_per_node N`.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them training is single-process.
"""
from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment, (0, 1, 0) when absent."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def init() -> tuple[int, int, torch.device]:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on CUDA)."""
    rank, size, local = world()
    if torch.cuda.is_available():
        if size > 1 and local >= torch.cuda.device_count():
            raise RuntimeError(f"torchrun started more processes per node than this machine has GPUs "
                               f"({torch.cuda.device_count()}): use --nproc_per_node {torch.cuda.device_count()}, "
                               "or CUDA_VISIBLE_DEVICES= to train on the CPU")
        device = torch.device("cuda", local if size > 1 else torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    if size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, size, device


def all_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(t)
    return t


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def settle(barrier: bool = True, wait: float = 0.2) -> None:
    """End a run's collectives so that the process can exit cleanly.

    gloo's worker threads release a finished collective's tensors a moment after the call returns, and
    releasing a tensor takes the GIL. If that happens while the interpreter is finalising, the process
    aborts ("terminate called without an active exception"); DDP keeps the group and its threads alive
    past destroy_process_group(), so they cannot be stopped. Sleeping (which frees the GIL) lets them drop
    what they hold; the closing barrier holds no tensors. After an exception only the wait is done, since
    a rank that failed alone would leave the others hanging in a barrier.
    """
    if not dist.is_initialized():
        return
    time.sleep(wait)
    if barrier:
        dist.barrier()
