"""One self-contained HTML page per run: figures inlined as base64 PNG, styles inline, no external URL.

The page is given a loaded run (its folder and its settings) and the sections its family wrote, as data;
this module adds the parts every run has: the training curves and the configuration table.
"""
from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..checkpoint import read_jsonl

CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:24px auto;padding:0 20px;
color:#1d2430;line-height:1.45}
h1{font-size:24px;margin-bottom:2px}h3{font-size:15px;margin:20px 0 6px}h2{font-size:18px;margin-top:30px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
.sub{color:#5b6575;margin-top:0}.verdict{background:#f2f6fc;border-left:4px solid #1f5fa8;padding:10px 14px;margin:16px 0}
.warn{background:#fdf6e7;border-left:4px solid #d9a40d;padding:10px 14px;margin:16px 0}
table{border-collapse:collapse;font-size:14px}td,th{padding:4px 14px 4px 0;text-align:left;border-bottom:1px solid #eef1f5}
th{color:#5b6575;font-weight:600}td.num{font-variant-numeric:tabular-nums;text-align:right}
img{max-width:100%;height:auto}.grid{display:flex;gap:40px;flex-wrap:wrap}.note{color:#5b6575;font-size:13px}
"""


@dataclass
class Section:
    """A titled part of the page: a note under the title and a body of HTML (figures, tables)."""
    title: str
    body: str
    note: str = ""


@dataclass
class Page:
    """What a family tells the page: its heading, a one-paragraph verdict, its sections and the logged
    quantities to draw as training curves (a key, or (key, title))."""
    title: str
    verdict: str
    sections: list[Section] = field(default_factory=list)
    curves: list = field(default_factory=lambda: ["loss"])
    warning: str | None = None


def img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def number(v) -> str:
    """Numbers alike in every table: integers with thousands separators, reals with 4 significant decimals."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.4f}" if v == 0 or 1e-3 <= abs(v) < 1e6 else f"{v:.4g}"
    return str(v)


def listed(v) -> str:
    """A list as a table cell: each real as `number` writes it, integers bare, nested lists in brackets
    ([[14.449592, 13.528477]] -> "[14.4496, 13.5285]")."""
    return ", ".join(f"[{listed(e)}]" if isinstance(e, (list, tuple)) else str(e) if isinstance(e, int) and
                     not isinstance(e, bool) else number(e) for e in v)  # integers bare: "1, 2000", not "1, 2,000"


def table(rows: list[tuple], head: tuple[str, ...] | None = None) -> str:
    """Rows of (label, value, ...) under an optional head of as many titles."""
    def cell(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f'<td class="num">{number(v)}</td>'
        if isinstance(v, (list, tuple)):
            v = listed(v)
        if isinstance(v, dict):
            v = ", ".join(f"{k}: {listed([x]) if isinstance(x, (int, float)) else x}" for k, x in v.items())
        return f"<td>{html.escape(number(v))}</td>"

    h = "<tr>" + "".join(f"<th>{html.escape(t)}</th>" for t in head) + "</tr>" if head else ""
    return "<table>" + h + "".join(f"<tr><th>{html.escape(str(row[0]))}</th>" + "".join(cell(v) for v in row[1:])
                                   + "</tr>" for row in rows) + "</table>"


def metrics_table(metrics, settings=(), names: dict | None = None) -> str:
    return table(metrics_rows(metrics, settings, names))


def metrics_rows(metrics, settings=(), names: dict | None = None) -> list[tuple]:
    """A page's final-metrics rows from an eval dict (or (key, value) pairs): an entry that the configuration table
    (`settings`, the run's (option, value) pairs) shows with the same value is left out, since a page says each thing
    once, and a figure not measured (None) is left out; `names` relabels an entry whose key would read as an option of another meaning (scenes -> test scenes; data
    -> data (as loaded), where eval names the data more fully than --data)."""
    given, names = dict(settings), {"data": "data (as loaded)", **(names or {})}
    items = metrics.items() if isinstance(metrics, dict) else metrics
    return [(names.get(k, k), v) for k, v in items if v is not None and not (k in given and _same(given[k], v))]


def _same(shown, value) -> bool:
    """Whether a configuration cell (numbers as written: 0.001, 8/255, 64) holds `value`."""
    from fractions import Fraction

    if shown == value:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(shown, str):
        try:
            return abs(float(Fraction(shown)) - value) <= 1e-4 * abs(value)
        except (ValueError, ZeroDivisionError):
            return False
    return False


def render(run, page: Page) -> str:
    """The page of `run` (anything with `.dir` and `.settings`, a list of (option, value)) as an HTML string."""
    from . import plots

    epochs = read_jsonl(Path(run.dir) / "metrics.jsonl")
    steps = read_jsonl(Path(run.dir) / "steps.jsonl")
    keys = [k for k in page.curves if (k if isinstance(k, str) else k[0]) in (epochs[0] if epochs else {})]
    curves = (img(plots.metric_curves(epochs, keys, steps=steps), "training curves") if epochs and keys
              else "<p>No metrics recorded.</p>")
    return html_page(page, f"run folder <code>{html.escape(str(run.dir))}</code>", Path(run.dir).name,
                     [Section("Training curves", curves)] + page.sections + [Section("Configuration", table(run.settings))])


def html_page(page: Page, subtitle_html: str, name: str, sections: list[Section] | None = None) -> str:
    """A self-contained HTML page: heading, verdict, warning and sections (default: the page's own)."""
    warning = f'<div class="warn">{html.escape(page.warning)}</div>' if page.warning else ""
    body = "".join(f"<h2>{html.escape(s.title)}</h2>" + (f'<p class="note">{html.escape(s.note)}</p>' if s.note else "")
                   + s.body for s in (page.sections if sections is None else sections))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>varilab report: {html.escape(name)}</title>
<style>{CSS}</style></head><body>
<h1>{html.escape(page.title)}</h1>
<p class="sub">{subtitle_html} · written {time.strftime("%Y-%m-%d %H:%M")}</p>
<div class="verdict">{html.escape(page.verdict)}</div>{warning}
{body}
</body></html>
"""
