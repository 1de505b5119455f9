"""Shared by the benchmarks: one contender row per list of timings, ratios against a baseline."""
from __future__ import annotations

import statistics

import numpy as np


def contenders(times: dict[str, list[float]], baseline: str) -> list[dict]:
    """{"name", "median_s", "p10_s", "p90_s", "ratio", "peak_rss_mb", "runs"} per contender, in order."""
    base = statistics.median(times[baseline])
    rows = []
    for name, ts in times.items():
        q10, q90 = np.percentile(ts, [10, 90])
        rows.append({"name": name, "median_s": statistics.median(ts), "p10_s": float(q10), "p90_s": float(q90),
                     "ratio": statistics.median(ts) / base, "peak_rss_mb": None, "runs": len(ts)})
    return rows
