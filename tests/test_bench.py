"""The benchmark harness in --quick mode: it runs every benchmark, writes JSON and leaves the docs alone."""
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_harness_writes_json_and_keeps_docs(tmp_path):
    docs = ROOT / "docs" / "benchmarks.md"
    before = docs.read_bytes() if docs.exists() else None
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/run.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert {"cpu", "cores", "torch", "python"} <= data["machine"].keys()
    dt.datetime.fromisoformat(data["machine"]["date"])
    assert data["quick"] is True and "--quick" in data["command"]
    names = {p.stem[len("bench_"):] for p in (ROOT / "bench").glob("bench_*.py")}
    assert set(data["benchmarks"]) == names
    for result in data["benchmarks"].values():
        assert "error" not in result
        for c in result["contenders"]:
            if "error" in c:  # a peer that only the benchmark environment (.venv-bench) has
                assert "not installed" in c["error"]
                continue
            assert 0 < c["p10_s"] <= c["median_s"] <= c["p90_s"]
        bases = ([c for c in result["contenders"] if c["name"] == result["baseline"]]  # one baseline, or each
                 or [c for c in result["contenders"] if c["name"].endswith("/ plain PyTorch")])  # solver's own loop
        assert bases and all(b["ratio"] == 1.0 for b in bases)
    step = data["benchmarks"]["step"]
    assert step["checks"]["equal_work"]["ok"] and step["checks"]["equal_work"]["loss_rel_diff"] <= 1e-4
    assert data["benchmarks"]["diagnostics"]["checks"]["same_values"]
    assert (docs.read_bytes() if docs.exists() else None) == before
