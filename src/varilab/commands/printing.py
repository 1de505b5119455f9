"""What a command prints: a result as `key  value` lines and tables, or as JSON (NaN and Inf made null and named)."""
from __future__ import annotations

import json
import math


def shown(result: dict, lines: list[str], as_json: bool) -> str:
    """What a command prints: its lines, or its result as one JSON object."""
    return json.dumps(json_ready(result), allow_nan=False) if as_json else "\n".join(lines)


def value(v) -> str:
    """A value as the text output writes it: a float to 4 decimals, or 3 significant digits where 4 decimals would
    show 0.0000 (1.6e-05, as --json has it); lists and mappings with each number so; anything else as it is."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        return f"{v:.3g}" if v != 0 and abs(v) < 1e-3 and math.isfinite(v) else f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {value(x)}" for k, x in v.items()) + "}"
    return str(v)


def table_lines(result: dict) -> list[str]:
    """A result as lines: `key  value` for each number, word or list, the keys aligned, then each list of rows as a
    table."""
    lines, tables = [], []
    plain = {k: v for k, v in result.items() if not (isinstance(v, list) and v and all(isinstance(r, dict) for r in v))}
    width = max((len(k) for k in plain), default=0)
    for k, v in result.items():
        if k in plain:
            lines.append(f"{k:>{width}}  {value(v)}")
        else:
            tables.append((k, v))
    for k, rows in tables:
        cols = list(rows[0])
        cells = [[value(r.get(c)) for c in cols] for r in rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        lines += ["", k, "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths))]
        lines += ["  ".join(f"{x:>{w}}" for x, w in zip(row, widths)) for row in cells]
    return lines


def json_ready(result):
    """`result` with every NaN or Inf replaced by null, and "non_finite" naming each replaced key and its value,
    so that --json output is JSON (which has no NaN)."""
    found = {}

    def clean(v, key):
        if isinstance(v, float) and not math.isfinite(v):
            found[key] = str(v)
            return None
        if isinstance(v, dict):
            return {k: clean(x, f"{key}.{k}" if key else k) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x, f"{key}[{i}]") for i, x in enumerate(v)]
        return v

    out = clean(result, "")
    return {**out, "non_finite": found} if found else out
