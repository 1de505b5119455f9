"""Each family's default run on its built-in data, as a new user first meets it: `varilab train --model M` with every
option at its default, then `eval` and `report` of the run, and the family's own page-writing commands (an attack,
a solve, robustness, unlearning) with theirs. Every command is a fresh process, timed alone; its peak memory is the
largest resident set of the process (os.wait4). Target: every default training run within 5 minutes on this
machine.

    python bench/run.py --only defaults           # the table in docs/benchmarks.md; the runs kept in runs/defaults
    python bench/bench_defaults.py --runs DIR     # the same runs, their pages listed (docs/screenshot.sh --all)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT_S = 300.0  # the 5-minute bound on a default training run
ACTS = "acts"  # the SAE's activation folder, collected with `varilab data collect`'s defaults

# (family, step name, arguments of `varilab`, the folder it writes): {runs} is the runs folder. Under --reuse only the
# `report` steps and the steps whose folder is missing run (a page is rewritten; a run is trained once).
def trained(model: str, *flags: str) -> list[tuple[str, list[str], str | None]]:
    """`varilab train --model MODEL` with its defaults (and `flags`), then `eval` and `report` of the run."""
    run = "{runs}/" + model
    return [("train", ["train", "--model", model, *flags, "--out", run], model), ("eval", ["eval", run], None),
            ("report", ["report", run, "--force"], None)]


JOURNEYS: dict[str, list[tuple[str, list[str], str | None]]] = {
    "vae": trained("vae") + [("attack", ["attack", "{runs}/vae", "--out", "{runs}/vae-attack", "--force"], "vae-attack")],
    "sae": [("data collect", ["data", "collect", "--out", "{runs}/" + ACTS], ACTS),
            *trained("topk", "--data", "{runs}/" + ACTS)],
    "diffusion": trained("ddpm") + [("solve", ["solve", "{runs}/ddpm", "--task", "inpaint", "--truth", "test", "--out",
                                               "{runs}/ddpm-solve", "--force"], "ddpm-solve")],
    "codec": trained("vq-codec"),
    "multimodal": trained("mm-mae"),
    "pointcloud": trained("pointcloud-ae"),
    "robust": [("train classifier", ["train", "--model", "classifier", "--out", "{runs}/classifier"], "classifier"),
               *trained("purifier")[:2],
               ("robustness", ["robustness", "{runs}/purifier", "--classifier", "{runs}/classifier"], None),
               trained("purifier")[2],
               ("unlearn", ["unlearn", "{runs}/classifier", "--forget", "class:0", "--out", "{runs}/unlearn", "--force"],
                "unlearn"),
               ("report unlearn", ["report", "{runs}/unlearn", "--force"], None)],
    "sde": trained("latent-sde"),
    "sequence": trained("pvrnn"),
}
QUICK = {"vae": [("train", ["train", "--model", "vae", "--epochs", "2", "--out", "{runs}/vae"], "vae"),
                 ("report", ["report", "{runs}/vae", "--force"], None)]}


def varilab() -> list[str]:
    """The varilab a user has after `make`: .venv's, else this interpreter's."""
    venv = ROOT / ".venv" / "bin" / "python"
    return [str(venv) if venv.exists() else sys.executable, "-m", "varilab"]


def timed(args: list[str], log: Path) -> tuple[float, float, int]:
    """(seconds, peak resident memory in MB, exit status) of one command, its output in `log`."""
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([*varilab(), *args], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, usage.ru_maxrss / 1024, proc.returncode  # ru_maxrss: KiB on Linux


def pages(runs: Path) -> list[Path]:
    """Every page the journeys write, in the journeys' order."""
    found = []
    for steps in JOURNEYS.values():
        for _, _, folder in steps:
            if folder and (runs / folder / "report.html").exists():
                found.append(runs / folder / "report.html")
    return found


def journeys(runs: Path, which: dict, reuse: bool, say=print) -> list[dict]:
    """Run every step; one record per step: family, step, command, seconds, peak_mb, status (None when reused)."""
    runs.mkdir(parents=True, exist_ok=True)
    records = []
    for family, steps in which.items():
        for step, args, folder in steps:
            args = [a.format(runs=runs) for a in args]
            command = "varilab " + " ".join(a.replace(str(runs), "runs/defaults") for a in args)
            if reuse and args[0] != "report" and (folder is None or (runs / folder).exists()):
                records.append({"family": family, "step": step, "command": command, "seconds": None,
                                "peak_mb": None, "status": None})
                continue
            log = runs / f"{family}-{step.replace(' ', '-')}.log"
            seconds, peak, status = timed(args, log)
            say(f"[defaults] {family} {step}: {seconds:.1f} s, {peak:.0f} MB, exit {status}", file=sys.stderr, flush=True)
            if status != 0:
                raise RuntimeError(f"`{command}` exited {status}; its output: {log}\n{log.read_text()[-2000:]}")
            records.append({"family": family, "step": step, "command": command, "seconds": seconds, "peak_mb": peak,
                            "status": status, "last_line": last_line(log), "what": what(runs / folder) if folder else ""})
    return records


def what(folder: Path) -> str:
    """A trained run's model, data and epochs as its config.json has them ("" for other folders)."""
    import json

    try:
        c = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    data = Path(str(c.get("data"))).name if c.get("data") else ""
    return f"{c.get('model', '?')} on {data}, {c.get('epochs', '?')} epochs" if "epochs" in c else ""


def last_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run(quick: bool = False) -> dict:
    runs = ROOT / "runs" / ("defaults-quick" if quick else "defaults")
    records = journeys(runs, QUICK if quick else JOURNEYS, reuse=False)
    contenders = [{"name": f"{r['family']}: {r['step']}", "median_s": r["seconds"], "p10_s": r["seconds"],
                   "p90_s": r["seconds"], "ratio": r["seconds"] / LIMIT_S, "peak_rss_mb": r["peak_mb"], "runs": 1,
                   "command": r["command"], "what": r.get("what") or ""} for r in records]
    trains = [r for r in records if r["step"].startswith("train")]
    worst = max(r["seconds"] for r in trains)
    return {"title": "Each family's default run on its built-in data (CPU)",
            "description": "One fresh process per command, run alone, every option at its default (`varilab train "
                           "--model M`, no other flag; the SAE's activations collected by `varilab data collect "
                           "--out runs/defaults/acts` with its defaults: 500,000 MiniLM tokens of block 3), then "
                           "`eval`, `report` and the family's page-writing commands on the run (`unlearn` with its "
                           "one required option, `--forget class:0`; `solve` with `--task inpaint --truth test`). "
                           "One run each "
                           "(the spread is not measured); peak RSS is the process's largest resident set. The ratio "
                           "is the time over the 5-minute bound a default training run must keep. The commands: "
                           "`JOURNEYS` in bench/bench_defaults.py; the runs stay in runs/defaults "
                           "(`docs/screenshot.sh --all` screenshots their pages).",
            "unit": "s", "baseline": "5 minutes", "contenders": contenders,
            "columns": [{"key": "what", "header": "the run", "format": "{}"}],
            "target": {"text": "every family's default training run within 5 minutes", "metric": "slowest training run, s",
                       "threshold": LIMIT_S, "value": worst, "met": bool(worst <= LIMIT_S)},
            "records": records}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Each family's default run; prints the pages written, one per line.")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "defaults", help="the runs folder")
    ap.add_argument("--reuse", action="store_true", help="keep the runs already in --runs (train only the missing ones); rewrite their pages")
    ap.add_argument("--family", action="append", choices=sorted(JOURNEYS), help="only this family (repeatable)")
    args = ap.parse_args(argv)
    which = {f: s for f, s in JOURNEYS.items() if not args.family or f in args.family}
    journeys(args.runs.resolve(), which, args.reuse)
    for page in pages(args.runs.resolve()):
        print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
