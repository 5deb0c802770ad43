"""Records -> rows for COPY (pure; no I/O).

A reading is one metric value of a telemetry record: a number, a flag or a text. A record whose
time cannot be stored (outside what PostgreSQL's timestamptz holds) is set aside as rejected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from anju.uplink import Record

HOUR_MS = 3_600_000
# timestamptz holds 4713 BC .. 294276 AD; keep to what Python's datetime holds, with margin.
_MIN_MS = -62_135_596_800_000 + 86_400_000
_MAX_MS = 253_402_300_799_000 - 86_400_000

ReadingRow = tuple[datetime, str, str, float | None, str | None, bool | None, bool]
EventRow = tuple[datetime, str, str, str, str, str, int, bool]
StatusRow = tuple[str, bool, Any, Any, datetime]


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def value_columns(v: Any) -> tuple[float | None, str | None, bool | None]:
    """(num, txt, flag) of a metric value."""
    if isinstance(v, bool):
        return None, None, v
    if isinstance(v, int | float):
        try:
            return float(v), None, None
        except OverflowError:  # an int beyond float: keep its digits
            return None, str(v), None
    if v is None:
        return None, None, None
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return None, text.replace("\x00", "\ufffd"), None


@dataclass(slots=True)
class Rows:
    readings: list[ReadingRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    statuses: list[StatusRow] = field(default_factory=list)
    rejected: list[Record] = field(default_factory=list)
    stored: list[Record] = field(default_factory=list)
    pairs: set[tuple[str, str]] = field(default_factory=set)
    newest_ms: int | None = None
    # (hour start ms, device) of readings before ``dirty_before_ms``
    dirty: set[tuple[int, str]] = field(default_factory=set)


def build_rows(records: list[Record], *, dirty_before_ms: int | None = None) -> Rows:
    """Rows of the records, in order; ``dirty_before_ms`` set when the rollups need marks."""
    out = Rows()
    readings = out.readings
    for r in records:
        if not _MIN_MS <= r.ts <= _MAX_MS or not _MIN_MS <= r.rx <= _MAX_MS:
            out.rejected.append(r)
            continue
        out.stored.append(r)
        ts = dt(r.ts)
        if r.kind == "t":
            if not r.metrics:
                continue
            dev, gt = r.device_id, r.gateway_timed
            for name, v in r.metrics.items():
                num, txt, flag = value_columns(v)
                readings.append((ts, dev, name, num, txt, flag, gt))
                out.pairs.add((dev, name))
            if out.newest_ms is None or r.ts > out.newest_ms:
                out.newest_ms = r.ts
            if dirty_before_ms is not None and r.ts < dirty_before_ms:
                out.dirty.add((r.ts - r.ts % HOUR_MS, dev))
        elif r.kind == "e":
            data = json.dumps(r.data or {}, ensure_ascii=False).replace("\\u0000", "\\ufffd")
            out.events.append(
                (
                    ts,
                    r.device_id,
                    r.event_type or "",
                    data,
                    r.gateway_id,
                    r.boot_id,
                    r.seq,
                    r.gateway_timed,
                )
            )
        else:
            s = r.status or {}
            out.statuses.append(
                (r.device_id, bool(s.get("online")), s.get("fw"), s.get("battery_pct"), dt(r.rx))
            )
    return out
