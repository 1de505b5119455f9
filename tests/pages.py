"""Reading a report page in tests: its table rows, and the rows it shows twice."""
from __future__ import annotations

import collections
import html
import re

ROW = re.compile(r"<tr><th>(.*?)</th>(.*?)</tr>", re.S)


def text(cell: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell)).split())


def rows(page: str) -> list[tuple[str, str]]:
    """(label, cells) of every labelled table row on the page, in order."""
    return [(text(label), text(cells)) for label, cells in ROW.findall(page)]


def repeated(page: str) -> dict[str, int]:
    """Labels that more than one row of the page carries (case aside), with their counts: a page says each thing once."""
    counts = collections.Counter(label.lower() for label, _ in rows(page))
    return {label: n for label, n in counts.items() if n > 1}


def says_each_thing_once(page: str) -> None:
    twice = repeated(page)
    assert not twice, f"rows the page shows more than once: {twice}"
