"""The gateway's store-and-forward outbox: one SQLite file in WAL mode, ``synchronous=FULL``.

- **Durable before accepted.** LAN messages are appended in groups, one transaction per group;
  the caller acknowledges them to the LAN broker only after ``append`` returns (the commit is
  on disk). A redelivered QoS 1 message (MQTT DUP flag) whose packet id and digest are already
  stored is not stored twice (table ``lan_seen``).
- **Leaves only when confirmed.** ``confirm`` deletes records the backend has committed.
- **Two lanes.** Events and statuses (lane 0) are read before telemetry (lane 1).
- **Bounded.** When the pages in use exceed ``max_bytes`` the oldest telemetry is deleted until
  the file is under 95 % of the budget; the budget never deletes events. Every deleted reading
  is counted (``dropped_telemetry`` in table ``meta``, kept across restarts).
- **Fair.** Each device may hold at most ``device_events_max`` events (and statuses) and
  ``device_event_bytes_max`` bytes of them; beyond either, *that device's* oldest events are
  deleted, so one device flooding events during an outage cannot fill the disk: the events of
  other devices are never touched. Deletions are counted per device (table ``dropped_events``,
  kept across restarts).
- **Clock.** Records stored while the gateway's clock was not known to be right carry
  ``untimed = 1``, the kernel boot id and ``clk_off`` (wall minus monotonic at receipt).
  ``restamp`` corrects their times once the clock is set; ``release_untimed`` flags them.

Thread-safe: one connection behind a lock. The sender keeps its own cursors (what it has read),
so reading does not write.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

EVENTS: Final = 0
TELEMETRY: Final = 1
LANE_NAMES: Final = ("events", "telemetry")

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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS lan_seen (mid INTEGER PRIMARY KEY, digest BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS dropped_events (dev TEXT PRIMARY KEY, n INTEGER NOT NULL);
"""
_COLUMNS: Final = {
    "untimed": "INTEGER NOT NULL DEFAULT 0",
    "kboot": "TEXT",
    "clk_off": "INTEGER",
    "dev": "TEXT",  # the device of an event (lane 0); NULL for telemetry
}
Row = tuple[int, str, str]  # (seq, boot, body)


@dataclass(slots=True)  # (not frozen: one per LAN message, and a frozen __init__ costs 4x)
class Incoming:
    """One LAN message's valid items: (lane, body) pairs; ``mid``/``digest`` for QoS 1."""

    items: Sequence[tuple[int, str]]
    mid: int = 0
    digest: bytes | None = None
    dup: bool = False


@dataclass(frozen=True, slots=True)
class ClockStamp:
    """The gateway's clock when a group was received."""

    trusted: bool
    kernel_boot: str
    offset_ms: int  # wall clock minus monotonic clock


@dataclass(frozen=True, slots=True)
class AppendResult:
    seqs: list[int]
    duplicates: int  # redelivered LAN messages already stored
    dropped: int  # telemetry deleted to stay within the disk budget
    dropped_events: dict[str, int] = field(default_factory=dict)  # by device, over its share


@dataclass(frozen=True, slots=True)
class OutboxDepth:
    events: int
    telemetry: int
    oldest_created_ms: int | None
    dropped_telemetry: int
    untimed: int
    dropped_events: dict[str, int] = field(default_factory=dict)  # by device


def _device_of(body: str) -> str:
    try:
        dev = json.loads(body).get("d")
    except (ValueError, AttributeError):
        return "?"
    return dev if isinstance(dev, str) else "?"


_BLOB_LEN: Final = "length(CAST(body AS BLOB))"


class Outbox:
    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int | None = None,
        device_events_max: int | None = None,
        device_event_bytes_max: int | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.device_events_max = device_events_max
        self.device_event_bytes_max = device_event_bytes_max
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA journal_size_limit=8388608")
        self._db.executescript(_SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(records)")}
        for name, decl in _COLUMNS.items():
            if name not in have:
                self._db.execute(f"ALTER TABLE records ADD COLUMN {name} {decl}")
        self._db.execute(
            "UPDATE records SET dev = json_extract(body, '$.d') WHERE lane = 0 AND dev IS NULL"
        )
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS records_dev ON records (dev, seq) WHERE lane = 0"
        )
        self._page_size = int(self._db.execute("PRAGMA page_size").fetchone()[0])
        counts = dict(self._db.execute("SELECT lane, count(*) FROM records GROUP BY lane"))
        self._depth = [int(counts.get(EVENTS, 0)), int(counts.get(TELEMETRY, 0))]
        self._untimed = int(
            self._db.execute("SELECT count(*) FROM records WHERE untimed = 1").fetchone()[0]
        )
        self._dropped = self._meta("dropped_telemetry")
        self._dev: dict[str, list[int]] = {}  # device -> [events held, their bytes]
        self._last_seq = [
            int(
                self._db.execute("SELECT max(seq) FROM records WHERE lane = ?", (lane,)).fetchone()[
                    0
                ]
                or 0
            )
            for lane in (EVENTS, TELEMETRY)
        ]  # (one index probe each)
        self._load_device_shares()

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the file; gives up (the process is going down) if a writer holds it longer."""
        if not self._lock.acquire(timeout=timeout_s):
            return
        try:
            self._db.close()
        finally:
            self._lock.release()

    # ---- appending ------------------------------------------------------------------------

    def append(
        self,
        boot: str,
        messages: Sequence[Incoming] | Sequence[tuple[int, str]],
        now_ms: int,
        clock: ClockStamp | None = None,
    ) -> AppendResult:
        """Store every message's items in one committed transaction."""
        msgs = [m if isinstance(m, Incoming) else Incoming([m]) for m in messages]
        untimed = 0 if clock is None or clock.trusted else 1
        kboot = None if clock is None else clock.kernel_boot
        off = None if clock is None else clock.offset_ms
        seqs: list[int] = []
        dups = 0
        added = [0, 0]
        dev_added: dict[str, list[int]] = {}
        last_seq = list(self._last_seq)
        db = self._db
        with self._lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                seen: dict[int, bytes] = {}  # lan_seen rows of this group, in order
                rows: list[tuple[int, str, str, int, int, str | None, int | None, str | None]] = []
                for m in msgs:
                    if m.digest is not None:
                        if m.dup:
                            earlier = seen.get(m.mid)
                            if earlier is None:
                                row = db.execute(
                                    "SELECT digest FROM lan_seen WHERE mid = ?", (m.mid,)
                                ).fetchone()
                                earlier = None if row is None else bytes(row[0])
                            if earlier == m.digest:
                                dups += 1
                                continue
                        seen.pop(m.mid, None)
                        seen[m.mid] = m.digest
                    for lane, body in m.items:
                        dev = None
                        if lane == EVENTS:
                            dev = _device_of(body)
                            share = dev_added.setdefault(dev, [0, 0])
                            share[0] += 1
                            share[1] += len(body.encode())
                        rows.append((lane, boot, body, now_ms, untimed, kboot, off, dev))
                        added[lane] += 1
                if seen:
                    # An update in place where the packet id was seen before (REPLACE would
                    # delete the row and insert it again).
                    db.executemany(
                        "INSERT INTO lan_seen (mid, digest) VALUES (?, ?)"
                        " ON CONFLICT (mid) DO UPDATE SET digest = excluded.digest",
                        seen.items(),
                    )
                if rows:
                    # One statement for the group. Inside this transaction nobody else
                    # writes, so AUTOINCREMENT gives the rows consecutive sequence numbers.
                    db.executemany(
                        "INSERT INTO records (lane, boot, body, created_ms, untimed, kboot,"
                        " clk_off, dev) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                    last = int(db.execute("SELECT last_insert_rowid()").fetchone()[0])
                    seqs = list(range(last - len(rows) + 1, last + 1))
                    for row, seq in zip(rows, seqs, strict=True):
                        last_seq[row[0]] = seq
                evicted = self._enforce_device_shares(dev_added) if dev_added else {}
                dropped = self._enforce_budget()
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            evicted_n = 0
            for dev, (n, nbytes) in dev_added.items():
                share = self._dev.setdefault(dev, [0, 0])
                share[0] += n
                share[1] += nbytes
            dropped_events: dict[str, int] = {}
            for dev, (n, nbytes, n_untimed) in evicted.items():
                share = self._dev[dev]
                share[0] -= n
                share[1] -= nbytes
                evicted_n += n
                self._untimed -= n_untimed
                dropped_events[dev] = n
            self._last_seq = last_seq
            self._depth[EVENTS] += added[EVENTS] - evicted_n
            self._depth[TELEMETRY] += added[TELEMETRY] - dropped
            self._untimed += untimed * len(seqs)
            self._dropped += dropped
        return AppendResult(seqs, dups, dropped, dropped_events)

    def _load_device_shares(self) -> None:
        self._dev = {
            str(dev): [int(n), int(nbytes or 0)]
            for dev, n, nbytes in self._db.execute(
                f"SELECT dev, count(*), sum({_BLOB_LEN}) FROM records WHERE lane = 0 GROUP BY dev"
            )
        }

    def _enforce_device_shares(self, added: dict[str, list[int]]) -> dict[str, list[int]]:
        """Inside the append transaction: delete the oldest events of each device just added
        to that holds more than its share. Returns {device: [events, bytes, untimed] deleted}."""
        max_n = self.device_events_max
        max_b = self.device_event_bytes_max
        if max_n is None and max_b is None:
            return {}
        out: dict[str, list[int]] = {}
        for dev, (n_add, b_add) in added.items():
            held = self._dev.get(dev, [0, 0])
            n, nbytes = held[0] + n_add, held[1] + b_add
            gone = [0, 0, 0]
            while (max_n is not None and n > max_n) or (max_b is not None and nbytes > max_b):
                over = n - max_n if max_n is not None and n > max_n else 0
                rows = self._db.execute(
                    f"DELETE FROM records WHERE seq IN (SELECT seq FROM records WHERE lane = 0"
                    f" AND dev = ? ORDER BY seq LIMIT ?) RETURNING {_BLOB_LEN}, untimed",
                    (dev, max(1, over)),
                ).fetchall()
                if not rows:
                    break
                for size, was_untimed in rows:
                    n -= 1
                    nbytes -= int(size)
                    gone[0] += 1
                    gone[1] += int(size)
                    gone[2] += int(was_untimed)
            if gone[0]:
                out[dev] = gone
                self._db.execute(
                    "INSERT INTO dropped_events (dev, n) VALUES (?, ?) "
                    "ON CONFLICT (dev) DO UPDATE SET n = n + excluded.n",
                    (dev, gone[0]),
                )
        return out

    def used_bytes(self) -> int:
        """Bytes of the database's pages in use (the budget's measure; the WAL is extra)."""
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages - free) * self._page_size

    def _enforce_budget(self) -> int:
        """Inside the append transaction: delete the oldest telemetry while over budget."""
        if self.max_bytes is None or self.used_bytes() <= self.max_bytes:
            return 0
        target = int(self.max_bytes * 0.95)
        dropped = 0
        while (used := self.used_bytes()) > target:
            n = self._depth[TELEMETRY] - dropped
            if n <= 0:
                break  # only events left: they are never dropped
            per_row = max(64, used // max(1, sum(self._depth)))
            chunk = max(64, min(n, (used - target) // per_row + 1))
            cur = self._db.execute(
                "DELETE FROM records WHERE seq IN (SELECT seq FROM records WHERE lane = 1 "
                "ORDER BY seq LIMIT ?)",
                (chunk,),
            )
            dropped += cur.rowcount
            if cur.rowcount == 0:
                break
        if dropped:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('dropped_telemetry', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                (dropped,),
            )
        return dropped

    # ---- reading and confirming -----------------------------------------------------------

    def read(self, lane: int, after_seq: int, limit: int) -> list[Row]:
        """Up to ``limit`` records of a lane after ``after_seq``, oldest first (no writes)."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, boot, body FROM records WHERE lane = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (lane, after_seq, limit),
            ).fetchall()

    def read_seqs(self, seqs: Sequence[int]) -> list[Row]:
        """The records among ``seqs`` that are still here (for resending)."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, boot, body FROM records WHERE seq IN "
                "(SELECT value FROM json_each(?)) ORDER BY lane, seq",
                (json.dumps(list(seqs)),),
            ).fetchall()

    def confirm(self, seqs: Sequence[int]) -> int:
        """The backend has committed these records: delete them. Returns how many were here.

        Deleting does not need to reach the disk at once: a lost delete only means a
        duplicate resend, which the backend drops. So this runs with ``synchronous=NORMAL``.
        """
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                lanes = self._db.execute(
                    "DELETE FROM records WHERE seq IN (SELECT value FROM json_each(?)) "
                    f"RETURNING lane, untimed, dev, CASE WHEN lane = 0 THEN {_BLOB_LEN} END",
                    (json.dumps(list(seqs)),),
                ).fetchall()
            finally:
                self._db.execute("PRAGMA synchronous=FULL")
            for lane, untimed, dev, size in lanes:
                self._depth[lane] -= 1
                self._untimed -= untimed
                if lane == EVENTS:
                    share = self._dev.get(dev)
                    if share is not None:
                        share[0] -= 1
                        share[1] -= int(size)
                        if share[0] <= 0:
                            del self._dev[dev]
        return len(lanes)

    # ---- the clock ------------------------------------------------------------------------

    def has_untimed(self) -> bool:
        return self._untimed > 0

    def restamp(self, kernel_boot: str, offset_ms: int) -> int:
        """The clock is now right: correct the times of records received earlier in this kernel
        boot (their wall time was off by ``offset_ms - clk_off``). Returns how many."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                n = self._db.execute(
                    "UPDATE records SET untimed = 0, body = json_set(body,"
                    " '$.rx', json_extract(body, '$.rx') + (? - clk_off),"
                    " '$.ts', CASE WHEN json_extract(body, '$.gt') THEN"
                    " json_extract(body, '$.ts') + (? - clk_off)"
                    " ELSE json_extract(body, '$.ts') END)"
                    " WHERE untimed = 1 AND kboot = ?",
                    (offset_ms, offset_ms, kernel_boot),
                ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._untimed -= n
            if n:
                self._load_device_shares()  # the bodies of events changed length
        return n

    def release_untimed(self, flag: str = "gateway_clock") -> int:
        """Give up correcting: mark untimed records' times as unverified (``tq``) and let them
        go (used when the kernel rebooted before the clock was set, or after ``hold_max_s``)."""
        with self._lock:
            n = self._db.execute(
                "UPDATE records SET untimed = 0, body = json_set(body, '$.tq', ?) "
                "WHERE untimed = 1",
                (flag,),
            ).rowcount
            self._untimed -= n
            if n:
                self._load_device_shares()
        return n

    # ---- status ---------------------------------------------------------------------------

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def get_meta(self, key: str) -> int:
        with self._lock:
            return self._meta(key)

    def set_meta(self, key: str, value: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def last_seq(self, lane: int) -> int:
        """The newest sequence number stored in a lane (from memory, no query): the sender
        reads a lane only when this is past its cursor."""
        return self._last_seq[lane]

    def lane_depth(self, lane: int) -> int:
        """Records held in a lane (from memory, no query)."""
        return self._depth[lane]

    def device_events(self, device_id: str) -> int:
        """Events (and statuses) a device holds in the outbox (from memory)."""
        share = self._dev.get(device_id)
        return share[0] if share else 0

    def depth(self) -> OutboxDepth:
        """Counts kept in memory, plus the oldest record's time (one indexed row)."""
        with self._lock:
            row = self._db.execute("SELECT created_ms FROM records ORDER BY seq LIMIT 1").fetchone()
            return OutboxDepth(
                events=self._depth[EVENTS],
                telemetry=self._depth[TELEMETRY],
                oldest_created_ms=int(row[0]) if row else None,
                dropped_telemetry=self._dropped,
                untimed=self._untimed,
                dropped_events=_dropped_events(self._db),
            )


def read_depth(path: Path) -> OutboxDepth:
    """Depth of an outbox file, read-only (for ``anju gateway status`` beside a running gateway)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        counts = dict(db.execute("SELECT lane, count(*) FROM records GROUP BY lane"))
        oldest = db.execute("SELECT created_ms FROM records ORDER BY seq LIMIT 1").fetchone()
        dropped = db.execute("SELECT value FROM meta WHERE key = 'dropped_telemetry'").fetchone()
        untimed = db.execute("SELECT count(*) FROM records WHERE untimed = 1").fetchone()
        try:
            by_device = _dropped_events(db)
        except sqlite3.OperationalError:  # an outbox written before the table existed
            by_device = {}
    finally:
        db.close()
    return OutboxDepth(
        events=int(counts.get(EVENTS, 0)),
        telemetry=int(counts.get(TELEMETRY, 0)),
        oldest_created_ms=int(oldest[0]) if oldest else None,
        dropped_telemetry=int(dropped[0]) if dropped else 0,
        untimed=int(untimed[0]),
        dropped_events=by_device,
    )


def _dropped_events(db: sqlite3.Connection) -> dict[str, int]:
    return {str(d): int(n) for d, n in db.execute("SELECT dev, n FROM dropped_events ORDER BY dev")}
