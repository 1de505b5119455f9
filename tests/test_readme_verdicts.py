"""The README's table of families gives every reproduction's verdict, and each is the one its page records."""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_gives_every_reproductions_verdict_as_its_page_records_it():
    text = (ROOT / "README.md").read_text()
    found = dict(re.findall(r"\]\(docs/repro/(\w+)\.md\) \((held|did not hold)\)", text))
    pages = {p.stem for p in (ROOT / "docs" / "repro").glob("*.json")}
    assert set(found) == pages, "a reproduction without its verdict in the README, or a verdict without its page"
    for name, verdict in found.items():
        held = json.loads((ROOT / "docs" / "repro" / f"{name}.json").read_text())["held"]
        assert verdict == ("held" if held else "did not hold"), f"{name}: README says {verdict}, its page {held}"
