"""Shared by the benchmarks: one contender row per list of timings, ratios against a baseline."""
from __future__ import annotations

import os
import statistics
import time

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


def abba(fns: dict[tuple[str, str], object], arg, warm_arg, rounds: int, per: float) -> dict[str, list[float]]:
    """Seconds per unit (`per` units of work per call) of each (group, contender) function on `arg`, called in
    alternating order (ABBA) after one warm-up call each on `warm_arg`; keys "group / contender"."""
    import time

    names = list(fns)
    times = {f"{g} / {c}": [] for g, c in names}
    for key in names:
        fns[key](warm_arg)
    for r in range(rounds):
        for key in (names if r % 2 == 0 else names[::-1]):
            t0 = time.perf_counter()
            fns[key](arg)
            times[f"{key[0]} / {key[1]}"].append((time.perf_counter() - t0) / per)
    return times


def per_group(times: dict[str, list[float]], groups, baseline: str = "plain PyTorch") -> tuple[list[dict], dict]:
    """(contender rows, {row name: ratio}): each group's rows against its own `baseline` contender."""
    rows, ratios = [], {}
    for group in groups:
        part = contenders({k: v for k, v in times.items() if k.startswith(group + " /")}, f"{group} / {baseline}")
        for row in part:
            row.pop("peak_rss_mb")
            rows.append(row)
            ratios[row["name"]] = row["ratio"]
    return rows, ratios


def status_mb(field: str) -> float:
    """A /proc/self/status field in MB (VmHWM: this process's peak resident memory; VmRSS: now)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024


def child_peak_rss(script: str, name: str, *args: str, timeout: float = 600) -> float | None:
    """Peak RSS (MB) of a fresh process running `script --rss-child name *args`, which prints
    {"peak_rss_mb": ...} last; None if it failed. Each contender alone, so none inherits another's memory."""
    import json
    import subprocess
    import sys

    try:
        out = subprocess.run([sys.executable, script, "--rss-child", name, *args], capture_output=True, text=True,
                             timeout=timeout, check=True).stdout
        return float(json.loads(out.strip().splitlines()[-1])["peak_rss_mb"])
    except (subprocess.SubprocessError, OSError, ValueError, KeyError, IndexError):
        return None


def print_peak_rss() -> None:
    """The last line a --rss-child process prints (VmHWM, not ru_maxrss, which Linux carries over exec)."""
    import json

    print(json.dumps({"peak_rss_mb": status_mb("VmHWM")}))


def reset_peak_rss() -> None:
    """Start VmHWM afresh from the current RSS (Linux: writing 5 to /proc/self/clear_refs), so that a
    child's peak measures its contender's work, not the loading of data every contender shares."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def main(doc: str, run, rss_child=None) -> None:
    """The command line of a benchmark run alone: `[--quick]` prints run(quick) as JSON; with `rss_child`,
    `--rss-child NAME [--quick]` runs that contender alone (rss_child(name, quick)) and prints its peak RSS."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    if rss_child is not None:
        ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if rss_child is not None and args.rss_child:
        rss_child(args.rss_child, args.quick)
        print_peak_rss()
        return
    print(json.dumps(run(args.quick), indent=2))


def _cpu_ticks() -> tuple[int, int] | None:
    """(total, busy) clock ticks of all CPUs so far, from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            v = [int(a) for a in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(v), sum(v) - v[3] - v[4]


def other_cpu_busy(fn):
    """Run fn(); return (its result, the fraction of all CPUs that other processes kept busy meanwhile)."""
    before, own0 = _cpu_ticks(), time.process_time()
    result = fn()
    after, own1 = _cpu_ticks(), time.process_time()
    if before is None or after is None:
        return result, None
    total, busy = after[0] - before[0], after[1] - before[1]
    own = (own1 - own0) * os.sysconf("SC_CLK_TCK")
    return result, round(max(0.0, (busy - own) / max(total, 1)), 3)
