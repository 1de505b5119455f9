"""The benchmark harness in --quick mode: it runs the benchmarks, writes JSON and leaves the docs alone.

`make test` runs the harness on a few cheap benchmarks (FAST, diagnostics among them, whose agreement check is
asserted) and the step benchmark's equal-work check on its own; every benchmark in --quick mode is the slow form
(`pytest -m slow`, `make test-all`, `make bench`)."""
import datetime as dt
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALL = sorted(p.stem[len("bench_"):] for p in (ROOT / "bench").glob("bench_*.py"))
FAST = ["attack", "codec", "diagnostics", "scaling", "sde"]  # about 12 s together; all 13 of them about a minute


@pytest.mark.parametrize("only", [pytest.param(FAST, id="fast"), pytest.param(None, id="all", marks=pytest.mark.slow)])
def test_quick_harness_writes_json_and_keeps_docs(tmp_path, only):
    docs = ROOT / "docs" / "benchmarks.md"
    before = docs.read_bytes() if docs.exists() else None
    out = tmp_path / "r.json"
    select = [arg for name in only or [] for arg in ("--only", name)]
    proc = subprocess.run([sys.executable, str(ROOT / "bench/run.py"), "--quick", "--out", str(out), *select],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert {"cpu", "cores", "torch", "python"} <= data["machine"].keys()
    dt.datetime.fromisoformat(data["machine"]["date"])
    assert data["quick"] is True and "--quick" in data["command"]
    assert set(data["benchmarks"]) == set(only or ALL)
    for result in data["benchmarks"].values():
        assert "error" not in result
        for c in result["contenders"]:
            if "error" in c:  # a peer that only the benchmark environment (.venv-bench) has
                assert "not installed" in c["error"]
                continue
            assert 0 < c["p10_s"] <= c["median_s"] <= c["p90_s"]
        names = result.get("baselines", [result["baseline"]])  # one baseline, one a group, or each
        bases = ([c for c in result["contenders"] if c["name"] in names]
                 or [c for c in result["contenders"] if c["name"].endswith("/ plain PyTorch")])  # solver's own loop
        assert bases and all(b["ratio"] == 1.0 for b in bases)
    if only is None:  # the fast form checks the step benchmark's equal work below, without timing it
        step = data["benchmarks"]["step"]
        assert step["checks"]["equal_work"]["ok"] and step["checks"]["equal_work"]["loss_rel_diff"] <= 1e-4
    assert data["benchmarks"]["diagnostics"]["checks"]["same_values"]
    assert (docs.read_bytes() if docs.exists() else None) == before


def test_one_benchmark_run_alone_replaces_its_own_entry_and_keeps_the_others(tmp_path):
    out = tmp_path / "r.json"
    earlier = {"machine": {"date": "2026-01-01T00:00:00+00:00"}, "command": "python bench/run.py", "quick": True,
               "benchmarks": {"kept": {"title": "an earlier table"}, "scaling": {"title": "stale"}}}
    out.write_text(json.dumps(earlier))
    proc = subprocess.run([sys.executable, str(ROOT / "bench/run.py"), "--quick", "--out", str(out), "--only",
                           "scaling"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["benchmarks"]["kept"] == {"title": "an earlier table"}
    scaling = data["benchmarks"]["scaling"]
    assert scaling["title"] != "stale" and "--only" in scaling["measured"]["command"]
    assert data["machine"]["date"] == "2026-01-01T00:00:00+00:00"  # the page's header stays the full run's
    page = load_run().render({**data, "benchmarks": {"scaling": scaling}})
    assert "Measured on " in page and "--only scaling" in page


def load_run():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_step_benchmark_compares_equal_work(monkeypatch):
    """The step benchmark's own check, as `bench/run.py` records it: from the same weights and noise, varilab's loss
    and the hand-written one agree, and so do their gradients."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # bench/timing.py
    spec = importlib.util.spec_from_file_location("bench_step_under_test", ROOT / "bench/bench_step.py")
    bench_step = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_step)
    equal = bench_step.check_equal_work(bench_step.make_batches()[0])
    assert equal["ok"] and equal["loss_rel_diff"] <= 1e-4
