"""Start-up: `varilab --help`, `import varilab` and `import varilab.core` (which imports torch) against
`python -c "import torch"` alone, each a fresh process, alternating. Target: at most 0.3 s above torch."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import timing  # bench/timing.py (bench/ is on the path under bench/run.py)


CASES = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "varilab --help": [sys.executable, "-m", "varilab", "--help"],
    "python -c 'import varilab'": [sys.executable, "-c", "import varilab"],
    "python -c 'import varilab.core, varilab.train'": [sys.executable, "-c", "import varilab.core, varilab.train"],
}


def run(quick: bool = False) -> dict:
    reps = 1 if quick else 15
    times = {name: [] for name in CASES}
    for cmd in CASES.values():  # warm the file cache
        subprocess.run(cmd, capture_output=True, check=True, cwd=Path(__file__).resolve().parents[1])
    for _ in range(reps):
        for name, cmd in CASES.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            times[name].append(time.perf_counter() - t0)
    contenders = timing.contenders(times, "python -c 'import torch'")
    base = contenders[0]["median_s"]
    worst = max(c["median_s"] for c in contenders) - base
    return {"title": "Start-up time", "description": "Wall time of a fresh Python process for each command, median of "
            f"{reps} alternating runs.", "unit": "s", "baseline": "python -c 'import torch'", "contenders": contenders,
            "target": {"text": "every varilab start-up at most 0.3 s above importing torch", "metric": "seconds above torch",
                       "threshold": 0.3, "value": worst, "met": bool(worst <= 0.3)}}
