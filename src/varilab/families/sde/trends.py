"""What a latent SDE run's per-epoch metrics say about its learned Hurst index: where it ended against the H the
built-in generator used, and whether it was still moving when training stopped."""
from __future__ import annotations

from ..windows import last_two

SHARE = 0.2  # the last fifth of the epochs against the fifth before it
MOVING = 0.01  # a change of H larger than this between the two is still moving
OFF = 0.05  # a learned H further than this from the generator's is reported as off


def true_hurst(opts) -> float | None:
    """The Hurst index the built-in generator used (fou, fbm), None for a file's data (unknown)."""
    return opts.true_hurst if opts.data in ("fou", "fbm") else None


def hurst_trend(history: list[dict], opts) -> str:
    """A note on a run that learns H under fractional noise: the learned H against the generator's where the data are
    generated (always said, off or not), and a change of H over the last fifth of the epochs beyond 0.01."""
    if getattr(opts, "noise", None) != "fbm" or getattr(opts, "hurst", None) != "learned":
        return ""
    values = [m["hurst"] for m in history if "hurst" in m]
    if not values:
        return ""
    parts = []
    truth = true_hurst(opts)
    if truth is not None:
        gap = values[-1] - truth
        parts.append(f"learned H {values[-1]:.3f} for data generated with H = {truth:g} ({gap:+.3f}"
                     + (": off by more than 0.05; on these data the learned H leans toward 1/2 under every drift and "
                        "observation-noise option tried, so read it as an ordering, not a measurement "
                        "(docs/families/sde.md)" if abs(gap) > OFF else "") + ")")
    ends = last_two(values, SHARE)
    if ends is not None:
        before, last, _ = ends
        if abs(last - before) > MOVING:
            parts.append(f"H was still moving when training stopped ({before:.3f} -> {last:.3f}: the mean over the "
                         f"last fifth of its {len(values)} epochs against the fifth before)")
    return "; ".join(parts)
