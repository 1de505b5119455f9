"""The HTML report of a run: given a loaded run and the page its family describes, write one
self-contained file. The report knows nothing of families; they hand it their sections as data."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import atomic_write
from .page import Page, Section, img, number, render, table

REPORT = "report.html"


def write_report(run, page: Page, out: str | Path | None = None, force: bool = False) -> Path:
    """Write the page of `run` (default `run.dir/report.html`); refuses to overwrite unless `force`."""
    path = Path(out) if out else Path(run.dir) / REPORT
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    atomic_write(path, render(run, page))
    return path


__all__ = ["Page", "Section", "img", "number", "render", "table", "write_report", "REPORT"]
