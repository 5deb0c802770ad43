"""Anchors of the audit chain: its head (``n``, ``hash``, time), kept where the backend cannot
rewrite it, so that a cut tail or rewritten history is found (``backend.audit``).

Every ``PERIOD_S`` the backend reads the chain's head and, when it moved, appends it as one JSON
line ``{"n": 42, "hash": "...", "at": "2026-11-28T23:59:00.000Z"}`` to the anchor file (opened
append-only, fsync'd; ``ANJU_AUDIT_ANCHOR_FILE``), and publishes the same object retained on
the backend's broker at ``anju/audit/head`` (QoS 1), where departments' systems can keep it as
witnesses. A witness's copies, one message a line, are an anchor file ``anju alerts verify-audit
--anchors`` reads. On a deployment the file belongs on storage the backend's user can only
append to (``chattr +a``, another host, write-once media).

The backend also checks, each period, that the entry it anchored last still has the hash it
anchored: a cut tail or a rewrite is logged at once (CRITICAL), not only when someone verifies.
Entries written after the last anchor are not anchored yet: a tail cut within one period of
the head is not detected (by design: the alarm path writes no anchor of its own).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import aiomqtt
import psycopg
from psycopg_pool import AsyncConnectionPool

from anju.errors import AnjuError
from backend.audit import GENESIS, Anchor

log = logging.getLogger("anju.audit")

HEAD_TOPIC: Final = "anju/audit/head"
PERIOD_S: Final = 10.0

Publish = Callable[[str, bytes], Awaitable[bool]]

_HEAD_QUERY: Final = (
    "SELECT (SELECT n FROM alert_audit ORDER BY n DESC LIMIT 1),"
    " (SELECT hash FROM alert_audit ORDER BY n DESC LIMIT 1),"
    " (SELECT hash FROM alert_audit WHERE n = %s)"
)


class AnchorFileError(AnjuError):
    """An anchor file that cannot be read as anchors; names the file and line."""

    def __init__(self, path: Path, line: int, detail: str) -> None:
        super().__init__(f"{path}:{line}: {detail}")
        self.path = path
        self.line = line


def to_json(a: Anchor) -> str:
    return json.dumps({"n": a.n, "hash": a.hash, "at": a.at}, separators=(",", ":"))


def parse_anchor(text: str) -> Anchor:
    """One anchor from its JSON text; ``ValueError`` saying what is wrong."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("expected a JSON object")
    n, hash_, at = doc.get("n"), doc.get("hash"), doc.get("at")
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError("n: expected an entry number (an integer >= 0)")
    if not isinstance(hash_, str) or len(hash_) != 64:
        raise ValueError("hash: expected 64 hex digits")
    if not isinstance(at, str):
        raise ValueError("at: expected an RFC 3339 time")
    return Anchor(n, hash_, at)


def read_anchors(path: Path) -> list[Anchor]:
    """The anchors of a file (none if it does not exist). A last line without its newline (a
    write cut short by a crash) is left out; any other line that is not an anchor is an
    error naming the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise AnchorFileError(path, 0, f"cannot read: {exc}") from exc
    lines = text.split("\n")
    torn = lines.pop()  # "" when the file ends with a newline
    if torn:
        log.warning("%s: last line incomplete (a write cut short?), left out", path)
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(parse_anchor(line))
        except ValueError as exc:
            raise AnchorFileError(path, i, f"not an anchor: {exc}") from exc
    return out


def append_anchor(path: Path, a: Anchor) -> None:
    """Append one anchor line, opened append-only, and fsync it (and the folder when the file
    is new)."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (to_json(a) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if new:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def mqtt_publisher(client_of: Callable[[], aiomqtt.Client | None]) -> Publish:
    """Publishes retained, QoS 1, on whichever session ``client_of`` gives; False when there is
    none or the broker is away (tried again next period)."""

    async def publish(topic: str, payload: bytes) -> bool:
        client = client_of()
        if client is None:
            return False
        try:
            await client.publish(topic, payload, qos=1, retain=True)
        except aiomqtt.MqttError as exc:
            log.info("audit head not published (%s); again next period", exc)
            return False
        return True

    return publish


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditAnchor:
    """The periodic anchor: file (when configured) and retained message (when a publisher is
    given). Run it as a named task; it ends only when cancelled."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        path: Path | None,
        publish: Publish | None = None,
        *,
        period_s: float = PERIOD_S,
    ) -> None:
        self.pool = pool
        self.path = path
        self.publish = publish
        self.period_s = period_s
        self.last: Anchor | None = None  # the last anchor written (or read back at start)
        self.published: tuple[int, str] | None = None
        self.alarms = 0  # times the chain was found shorter or rewritten under an anchor

    async def run(self) -> None:
        if self.path is not None:
            try:
                found = await asyncio.to_thread(read_anchors, self.path)
            except AnchorFileError as exc:  # reported by verification; anchoring goes on
                log.critical("audit anchor file unreadable: %s", exc)
                found = []
            self.last = found[-1] if found else None
        while True:
            try:
                await self.once()
            except psycopg.Error as exc:
                log.warning("audit anchor: cannot read the chain's head (%s)", exc)
            except OSError as exc:
                log.error("audit anchor: cannot append to %s (%s)", self.path, exc)
            await asyncio.sleep(self.period_s)

    async def once(self) -> Anchor | None:
        """Anchor the head if it moved; the anchor written, if any."""
        last_n = self.last.n if self.last else 0
        async with self.pool.connection() as conn:
            cur = await conn.execute(_HEAD_QUERY, (last_n,))
            row = await cur.fetchone()
        assert row is not None
        n, hash_, then = int(row[0] or 0), str(row[1] or GENESIS), row[2]
        if self.last is not None and self.last.n > 0 and then != self.last.hash:
            self.alarms += 1
            log.critical(
                "the audit chain no longer holds entry %d as anchored at %s (%s): its tail was"
                " cut or its history rewritten; run `anju alerts verify-audit`",
                self.last.n,
                self.last.at,
                "missing" if then is None else "another hash",
            )
        written = None
        if n > 0 and (self.last is None or (self.last.n, self.last.hash) != (n, hash_)):
            written = Anchor(n, hash_, _now())
            if self.path is not None:
                await asyncio.to_thread(append_anchor, self.path, written)
            self.last = written
        if self.publish is not None and self.last is not None:
            head = (self.last.n, self.last.hash)
            if head != self.published and await self.publish(
                HEAD_TOPIC, to_json(self.last).encode()
            ):
                self.published = head
        return written


def anchors_for(path: Path | None) -> list[Anchor]:
    """``read_anchors`` of an optional path."""
    return [] if path is None else read_anchors(path)
