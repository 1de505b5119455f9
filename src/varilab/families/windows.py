"""Where a run's per-epoch curve ended: the mean of its last share of epochs against the share before, so that
epoch-to-epoch noise does not read as a trend (still improving, a rate still rising, H still moving)."""
from __future__ import annotations


def last_two(values: list[float], share: float) -> tuple[float, float, int] | None:
    """(mean of the share before the last, mean of the last share, epochs in a share), or None when a share holds
    fewer than two epochs."""
    back = round(share * len(values))
    if back < 2:
        return None
    return sum(values[-2 * back:-back]) / back, sum(values[-back:]) / back, back
