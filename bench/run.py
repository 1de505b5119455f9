"""Run every benchmark in bench/ and write the results, and for a full run docs/benchmarks.md.

    python bench/run.py                  # full run (`make bench`): bench/results.json and docs/benchmarks.md
    python bench/run.py --quick          # a few seconds per benchmark; never touches docs/benchmarks.md
    python bench/run.py --only step      # one benchmark, merged into bench/results.json; the page is rewritten
    python bench/run.py --render-only    # rewrite docs/benchmarks.md from an existing results file

A benchmark is a module bench/bench_<name>.py with `run(quick: bool) -> dict`; they run in the
order of their names. The dict holds "title", "description", "unit", "baseline" (the name of the
contender that ratios are taken against), "contenders" (a list of {"name", "median_s", "p10_s",
"p90_s", "ratio", "peak_rss_mb", ...}), "target" ({"text", "met", ...}) and anything else the
benchmark wants to record ("checks", "settings", ...).
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "results.json"
QUICK_OUT = BENCH_DIR / "results-quick.json"
DOCS = ROOT / "docs" / "benchmarks.md"
sys.path.insert(0, str(BENCH_DIR))  # benchmarks share bench/timing.py


def discover() -> dict[str, Path]:
    """name -> file of every bench/bench_<name>.py, in a fixed (sorted) order."""
    return {p.stem[len("bench_"):]: p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # a real module for code that looks itself up (pythae pickles its classes by module)
    spec.loader.exec_module(module)
    if not callable(getattr(module, "run", None)):
        raise TypeError(f"{path} has no run(quick) function")
    return module


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    import torch

    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    try:
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    info["cpu_busy_at_start"] = cpu_busy()
    return info


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Fraction of all CPUs busy over the next `seconds` (from /proc/stat): other work on the machine."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v[:8]), v[3] + v[4]  # total, idle + iowait
    try:
        t0, i0 = read()
        time.sleep(seconds)
        t1, i1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return round(1 - (i1 - i0) / max(t1 - t0, 1), 3)


def command_line() -> str:
    return shlex.join([Path(sys.executable).name, *sys.argv])


def run_all(names: list[str], files: dict[str, Path], quick: bool) -> tuple[dict, bool]:
    results, ok = {}, True
    for name in names:
        print(f"[bench] {name} ({'quick' if quick else 'full'}) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        try:
            result = load(name, files[name]).run(quick=quick)
            result.setdefault("seconds", time.perf_counter() - t0)
        except Exception:  # one failing benchmark is recorded; the others still run
            ok = False
            result = {"error": traceback.format_exc()}
            print(result["error"], file=sys.stderr)
        else:
            print(f"[bench] {name}: {summary(result)} ({result['seconds']:.1f} s)", file=sys.stderr, flush=True)
        results[name] = result
    return results, ok


def summary(result: dict) -> str:
    target = result.get("target", {})
    parts = [f"{c['name']} {fmt_time(c['median_s'])} (x{c['ratio']:.3f})" if "median_s" in c else f"{c['name']} missing"
             for c in result.get("contenders", [])]
    if target:
        parts.append("target met" if target.get("met") else "target NOT met")
    return ", ".join(parts)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------- docs/benchmarks.md

def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 1:
        return f"{seconds:.3f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds * 1e6:.1f} us"


def fmt_mb(mb: float | None) -> str:
    return "-" if mb is None else f"{mb:.0f} MB"


def render(data: dict) -> str:
    m = data["machine"]
    lines = [
        "# Benchmarks",
        "",
        "How fast varilab runs against a plain baseline: the same computation written by hand (in PyTorch, or",
        "in numpy and scipy), or for start-up, importing PyTorch alone. Each benchmark alternates its",
        "contenders, so that they share the machine's conditions, and reports the median time with its spread",
        "(10th to 90th percentile). The ratio is a contender's median over the baseline's median (the baseline",
        "is named in each table's header): 1.00 is no overhead. Peak RSS is shown where a benchmark measures it.",
        "",
        "Reproduce with:",
        "",
        "```bash",
        "make bench",
        "```",
        "",
        "It writes `bench/results.json` and this page. `python bench/run.py --only NAME` runs one benchmark",
        "and puts its table in place of the earlier one, dated. `python bench/run.py --quick` is a smoke run of a",
        "few seconds per benchmark and leaves this page alone. Timings depend on the machine and on what else",
        "runs on it: compare ratios, not absolute times, across machines.",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores (PyTorch threads: {m.get('torch_threads', '?')})",
        f"- PyTorch {m.get('torch', '?')}, Python {m.get('python', '?')}",
        f"- Platform: {m.get('platform', '?')}",
        f"- Date: {m.get('date', '?')}",
    ]
    if m.get("cpu_busy_at_start") is not None:
        lines.append(f"- CPU busy with other work just before the run: {m['cpu_busy_at_start']:.0%}")
    lines += [
        f"- Command: `make bench` (`{data.get('command', 'python bench/run.py')}`)",
        "",
    ]
    for name, r in data["benchmarks"].items():
        lines += [f"## {r.get('title', name)}", ""]
        if "error" in r:
            lines += ["This benchmark failed:", "", "```", r["error"].rstrip(), "```", ""]
            continue
        if r.get("description"):
            lines += [r["description"], ""]
        measured = r.get("measured", {})
        if measured and measured.get("date") != m.get("date"):
            lines += [f"Measured on {measured['date']} on the same machine, with `{measured['command']}`.", ""]
        baseline = r.get("baseline", "plain PyTorch")
        extra = r.get("columns", [])  # [{"key", "header", "format"}]: more figures per contender
        lines += [f"| contender | median | spread (p10-p90) | ratio to {baseline} | peak RSS |"
                  + "".join(f" {c['header']} |" for c in extra),
                  "| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(extra)]
        for c in r.get("contenders", []):
            if "median_s" not in c:
                lines.append(f"| {c['name']} | {c.get('error', 'no figure')} | | | |" + " |" * len(extra))
                continue
            spread = "one run" if c.get("runs") == 1 else f"{fmt_time(c.get('p10_s'))} - {fmt_time(c.get('p90_s'))}"
            lines.append(f"| {c['name']} | {fmt_time(c.get('median_s'))} | {spread} | "
                         f"{c['ratio']:.3f} | {fmt_mb(c.get('peak_rss_mb'))} |"
                         + "".join(f" {x['format'].format(c[x['key']]) if c.get(x['key']) is not None else '-'} |"
                                   for x in extra))
        lines.append("")
        imports = [c["import_rss_mb"] for c in r.get("contenders", []) if c.get("import_rss_mb")]
        if imports:
            lines += [f"Of the peak RSS, about {max(imports):.0f} MB is the process right after importing Python, "
                      "PyTorch and varilab, before any model or data exist.", ""]
        t = r.get("target")
        if t:
            detail = []
            if "value" in t:
                detail.append(f"measured {t['value']:.3f}")
            if "interval_95" in t:
                lo, hi = t["interval_95"]
                detail.append(f"95% interval {lo:.3f}-{hi:.3f}")
            if "paired_median_ratio" in t:
                detail.append(f"median of step-by-step ratios {t['paired_median_ratio']:.3f}")
            verdict = "met" if t.get("met") else "**not met**"
            lines += [f"Target: {t['text']}: {verdict}" + (f" ({', '.join(detail)})." if detail else "."), ""]
        for note in r.get("notes", []):
            lines += [note, ""]
        eq = r.get("checks", {}).get("equal_work")
        if eq:
            lines += [f"Equal work: from the same weights and noise the two losses are {eq['loss_varilab']:.6g} "
                      f"and {eq['loss_plain']:.6g} (relative difference {eq['loss_rel_diff']:.1e}, tolerance "
                      f"{eq['loss_rtol']:.0e}); the largest gradient difference is {eq['grad_max_abs_diff']:.1e}: "
                      + ("they agree." if eq["ok"] else "**they do not agree**."), ""]
        s = r.get("settings", {})
        if "timed_steps" in s:
            lines += [f"{s['timed_steps']} timed steps per contender after {s.get('warmup_steps', 0)} warm-up steps.",
                      ""]
        other = r.get("checks", {}).get("other_cpu_busy_while_timing")
        if other is not None:
            lines += [f"Other processes kept {other:.0%} of the CPUs busy while the steps were timed"
                      + (" (timings noisy)." if other > 0.05 else "."), ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    files = discover()
    ap = argparse.ArgumentParser(description="Run varilab's benchmarks.")
    ap.add_argument("--quick", action="store_true", help="a few seconds per benchmark; docs are not written")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"results file (default {DEFAULT_OUT.relative_to(ROOT)}; "
                         f"{QUICK_OUT.relative_to(ROOT)} with --quick)")
    ap.add_argument("--no-docs", action="store_true", help=f"do not rewrite {DOCS.relative_to(ROOT)}")
    ap.add_argument("--only", action="append", choices=sorted(files), metavar="NAME",
                    help=f"run only this benchmark (repeatable): {', '.join(files)}")
    ap.add_argument("--render-only", action="store_true",
                    help=f"rewrite {DOCS.relative_to(ROOT)} from the results file without running anything")
    args = ap.parse_args(argv)
    out = args.out or (QUICK_OUT if args.quick else DEFAULT_OUT)

    if args.render_only:
        data = json.loads(out.read_text())
        if data.get("quick"):
            print(f"{out} holds a quick run; docs are written from full runs only", file=sys.stderr)
            return 2
        DOCS.write_text(render(data))
        print(f"wrote {DOCS}", file=sys.stderr)
        return 0

    names = [n for n in files if not args.only or n in args.only]
    if not names:
        print(f"no benchmarks found in {BENCH_DIR}", file=sys.stderr)
        return 2
    data = {"machine": machine(), "command": command_line(), "quick": args.quick}
    busy = data["machine"].get("cpu_busy_at_start")
    if busy is not None and busy > 0.1:
        print(f"[bench] warning: the CPUs were {busy:.0%} busy with other work before starting; "
              "timings will be noisy", file=sys.stderr)
    results, ok = run_all(names, files, args.quick)
    for result in results.values():  # a benchmark merged into an earlier run's file keeps its own date and command
        result.setdefault("measured", {"date": data["machine"]["date"], "command": data["command"]})
    if args.only and out.exists():
        earlier = json.loads(out.read_text())
        if earlier.get("quick") == args.quick:
            data = {**earlier, "benchmarks": {**earlier.get("benchmarks", {}), **results}}
            results = data["benchmarks"]
    data["benchmarks"] = results
    try:
        data["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    write_json(out, data)
    print(f"[bench] wrote {out}", file=sys.stderr)
    if args.quick or args.no_docs or not ok:
        why = "--quick" if args.quick else "--no-docs" if args.no_docs else "a benchmark failed"
        print(f"[bench] {DOCS.relative_to(ROOT)} left as it was ({why})", file=sys.stderr)
    else:
        DOCS.write_text(render(data))
        print(f"[bench] wrote {DOCS}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
