"""KL weight schedules: beta as a function of the training step."""
from __future__ import annotations


def linear_warmup(step: int, warmup_steps: int, start: float = 0.0, end: float = 1.0) -> float:
    """beta rises linearly from `start` to `end` over `warmup_steps`, then stays at `end` (Bowman et al., 2016)."""
    if warmup_steps <= 0:
        return end
    return start + (end - start) * min(1.0, step / warmup_steps)


def cyclical(step: int, period: int, ramp: float = 0.5, end: float = 1.0) -> float:
    """Cyclical annealing (Fu et al., 2019): in each period beta rises linearly over the first `ramp`
    share of it, then holds at `end`."""
    if period <= 0 or not 0 < ramp <= 1:
        raise ValueError(f"period must be positive and ramp in (0, 1], got period={period}, ramp={ramp}")
    phase = (step % period) / period
    return end * min(1.0, phase / ramp)
