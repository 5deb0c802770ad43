"""Tables as CSV (UTF-8 with a byte-order mark, so that Excel reads the Chinese) or Excel."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any


def _cell(v: Any) -> Any:
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False)
    return v


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: dict[str, None] = {}
    for r in rows:
        cols.update(dict.fromkeys(r))
    return list(cols)


def to_csv(rows: Sequence[dict[str, Any]]) -> bytes:
    cols = columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(cols)
    for r in rows:
        w.writerow(["" if r.get(c) is None else _cell(r.get(c)) for c in cols])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(rows: Sequence[dict[str, Any]], *, title: str) -> bytes:
    from openpyxl import Workbook  # type: ignore[import-untyped]

    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = title[:31] or "sheet"
    cols = columns(rows)
    ws.append(cols)
    for r in rows:
        ws.append([_cell(r.get(c)) for c in cols])
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
