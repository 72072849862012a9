"""Jobs as an aligned terminal table, a flow job's tree, or JSON for scripts; and the rows of
a SQL query as a table.

Job records come straight from the API, so every field may be missing, of the wrong type,
or hold control characters; a cell shows what it can and never lets the data drive the
terminal.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from jobsync.timestamps import format_iso_ms, parse_iso_ms

COLUMNS = ("ID", "TYPE", "STATUS", "FLOW", "CREATED", "DURATION", "SUCCESS", "ERRORS", "IGNORED")
_RIGHT = tuple(name in ("DURATION", "SUCCESS", "ERRORS", "IGNORED") for name in COLUMNS)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_MISSING = "-"


def to_json(value: Any) -> str:
    """Indented JSON, the records exactly as the API sent them."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def job_table(jobs: Sequence[Any]) -> str:
    """One aligned row per job under a header line."""
    return _table(COLUMNS, [job_row(job) for job in jobs], _RIGHT)


def result_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Rows of a query (e.g. DuckDB's `fetchall()`) under their column names; numbers to the
    right, NULL spelled out, times as ISO text."""
    right = tuple(
        all(_is_number(row[i]) for row in rows if row[i] is not None) and bool(rows)
        for i in range(len(columns))
    )
    cells = [tuple(_value(value) for value in row) for row in rows]
    return _table(tuple(_clean(str(c)) for c in columns), cells, right)


def job_tree(flow_job: Any, children: Sequence[Any]) -> str:
    """The flow job, then its export jobs, then its import jobs (each oldest first), the
    children drawn as branches under it."""
    order = {"export": 0, "import": 1}
    ranked = sorted(
        children,
        key=lambda job: (order.get(_type(job), 2), _created_ms(job) or 0),
    )
    rows = [job_row(flow_job)]
    for index, child in enumerate(ranked):
        row = job_row(child)
        branch = "└─ " if index == len(ranked) - 1 else "├─ "
        rows.append((branch + row[0], *row[1:]))
    return _table(COLUMNS, rows, _RIGHT)


def tree_document(flow_job: Any, children: Sequence[Any]) -> dict[str, Any]:
    """The tree for scripts: `{"flow": ..., "exports": [...], "imports": [...], "others": [...]}`
    (the reference's shape, plus children of any other type so none is dropped)."""
    kinds: dict[str, list[Any]] = {"exports": [], "imports": [], "others": []}
    for child in children:
        kind = {"export": "exports", "import": "imports"}.get(_type(child), "others")
        kinds[kind].append(child)
    return {"flow": flow_job, **kinds}


def job_row(job: Any) -> tuple[str, ...]:
    """The table cells of one job record."""
    if not isinstance(job, dict):
        return (f"<not a job: {_clean(repr(job))[:40]}>", *([_MISSING] * (len(COLUMNS) - 1)))
    created = _created_ms(job)
    return (
        _text(job.get("_id")),
        _text(job.get("type")),
        _text(job.get("status")),
        _text(job.get("_flowId")),
        _MISSING if created is None else format_iso_ms(created)[:19].replace("T", " "),
        format_duration(_duration_s(job)),
        _count(job.get("numSuccess")),
        _count(job.get("numError")),
        _count(job.get("numIgnore")),
    )


def format_duration(seconds: float | None) -> str:
    """`0.4s`, `12.3s`, `4m59s`, `2h03m`, `3d04h`; `-` when unknown."""
    if seconds is None or seconds < 0:
        return _MISSING
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    lines = []
    for row in (header, *rows):
        cells = [
            cell.rjust(width) if to_right else cell.ljust(width)
            for cell, width, to_right in zip(row, widths, right, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float | Decimal):
        return f"{value:.2f}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return _clean(str(value))


def _field(job: Any, name: str) -> Any:
    return job.get(name) if isinstance(job, dict) else None


def _type(job: Any) -> str | None:
    kind = _field(job, "type")
    return kind if isinstance(kind, str) else None


def _created_ms(job: Any) -> int | None:
    return _ms(_field(job, "createdAt"))


def _duration_s(job: dict[str, Any]) -> float | None:
    started, ended = _ms(job.get("startedAt")), _ms(job.get("endedAt"))
    if started is None or ended is None:
        return None
    return (ended - started) / 1000


def _ms(value: Any) -> int | None:
    try:
        return parse_iso_ms(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _count(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _MISSING
    return f"{value:,}" if isinstance(value, int) else f"{value:,g}"


def _text(value: Any) -> str:
    if value is None or value == "":
        return _MISSING
    return _clean(value if isinstance(value, str) else str(value))


def _clean(text: str) -> str:
    return _CONTROL.sub("?", text)
