"""The gateway's store-and-forward outbox: SQLite in WAL mode.

A record is committed to disk (``synchronous=FULL``) before the gateway acknowledges it to the
device, and leaves the outbox only when the backend has confirmed that it is committed to the
database. Two lanes: events and statuses (lane 0) always go before the telemetry backlog (lane 1).
Records handed to the uplink but not confirmed within ``resend_after_ms`` are handed out again;
the backend drops the duplicates by (gateway, boot, seq).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

EVENTS: Final = 0
TELEMETRY: Final = 1

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    lane INTEGER NOT NULL,
    boot TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    sent_ms INTEGER
);
CREATE INDEX IF NOT EXISTS records_lane_seq ON records (lane, seq);
"""


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    events: int
    telemetry: int
    unconfirmed: int
    oldest_created_ms: int | None


class Outbox:
    """Thread-safe: the LAN callback appends, the sender takes, the uplink callback confirms."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, boot: str, items: Sequence[tuple[int, str]], now_ms: int) -> list[int]:
        """Store (lane, body) items durably in one transaction; return their sequence numbers."""
        seqs: list[int] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for lane, body in items:
                    cur = self._db.execute(
                        "INSERT INTO records (lane, boot, body, created_ms) VALUES (?, ?, ?, ?)",
                        (lane, boot, body, now_ms),
                    )
                    assert cur.lastrowid is not None
                    seqs.append(cur.lastrowid)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return seqs

    def take(self, limit: int, now_ms: int, resend_after_ms: int) -> list[tuple[int, str, str]]:
        """Up to ``limit`` (seq, boot, body) rows to send, events first; marks them as sent."""
        stale = now_ms - resend_after_ms
        rows: list[tuple[int, str, str]] = []
        with self._lock:
            for lane in (EVENTS, TELEMETRY):
                if len(rows) >= limit:
                    break
                rows.extend(
                    self._db.execute(
                        "SELECT seq, boot, body FROM records WHERE lane = ? "
                        "AND (sent_ms IS NULL OR sent_ms < ?) ORDER BY seq LIMIT ?",
                        (lane, stale, limit - len(rows)),
                    ).fetchall()
                )
            if rows:
                self._db.executemany(
                    "UPDATE records SET sent_ms = ? WHERE seq = ?", [(now_ms, r[0]) for r in rows]
                )
        return rows

    def confirm(self, seqs: Iterable[int]) -> int:
        """The backend has committed these records: drop them. Returns how many were here."""
        with self._lock:
            cur = self._db.executemany("DELETE FROM records WHERE seq = ?", [(s,) for s in seqs])
            return cur.rowcount

    def unsend_all(self) -> None:
        """The link dropped: everything handed out but unconfirmed is to be sent again."""
        with self._lock:
            self._db.execute("UPDATE records SET sent_ms = NULL WHERE sent_ms IS NOT NULL")

    def depth(self) -> OutboxDepth:
        with self._lock:
            ev, tel, unc, oldest = self._db.execute(
                "SELECT coalesce(sum(lane = 0), 0), coalesce(sum(lane = 1), 0), "
                "coalesce(sum(sent_ms IS NOT NULL), 0), min(created_ms) FROM records"
            ).fetchone()
        return OutboxDepth(int(ev), int(tel), int(unc), oldest)
