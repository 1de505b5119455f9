"""What a codec run's per-epoch test metrics say about where training left it: a file rate still rising at the end,
and a rate that rose while the quality did not."""
from __future__ import annotations

from ..windows import last_two

SHARE = 0.2  # the last fifth of the epochs against the fifth before it
RISE = 0.02  # a rate 2% higher is rising
STALL = 0.1  # dB: a quality gain below this buys nothing


def rate_trend(history: list[dict], opts=None) -> str:
    """A note when the mean test rate of the last fifth of the epochs is more than 2% above the fifth before: how
    much it rose and what the PSNR did meanwhile; nothing for runs of fewer than 10 epochs or without a test rate."""
    rows = [m for m in history if "test_bpp" in m and "test_psnr" in m]
    rate = last_two([m["test_bpp"] for m in rows], SHARE)
    if rate is None:
        return ""
    r0, r1, _ = rate
    if r1 <= r0 * (1 + RISE):
        return ""
    q0, q1, _ = last_two([m["test_psnr"] for m in rows], SHARE)
    gain = q1 - q0
    what = (f"its test rate was still rising at the end ({r0:.3f} -> {r1:.3f} bits per pixel: the mean over the last "
            f"fifth of its {len(rows)} epochs against the fifth before)")
    if gain < STALL:
        return (f"{what} while the PSNR moved {gain:+.2f} dB: the extra bits buy no quality; a larger --rate-weight "
                "holds the rate down")
    return f"{what}, the PSNR {gain:+.2f} dB: it trades rate for quality as it trains; --rate-weight sets the balance"
