"""What a command prints: a result as `key  value` lines and tables, or as JSON (NaN and Inf made null and named)."""
from __future__ import annotations

import json
import math

def shown(result: dict, lines: list[str], as_json: bool) -> str:
    """What a command prints: its lines, or its result as one JSON object."""
    return json.dumps(json_ready(result), allow_nan=False) if as_json else "\n".join(lines)


def table_lines(result: dict) -> list[str]:
    """A result as lines: `key  value` for each number or word, then each list of rows as a table."""
    lines, tables = [], []
    for k, v in result.items():
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            tables.append((k, v))
        else:
            lines.append(f"{k:>10}  {v:.4f}" if isinstance(v, float) else f"{k:>10}  {v}")
    for k, rows in tables:
        cols = list(rows[0])
        lines += ["", k, " ".join(f"{c:>12}" for c in cols)]
        lines += [" ".join(f"{r.get(c):>12.4f}" if isinstance(r.get(c), float) else f"{r.get(c)!s:>12}" for c in cols)
                  for r in rows]
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
