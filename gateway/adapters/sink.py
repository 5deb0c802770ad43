"""The adapters' way into the outbox: group commit in a thread of its own, then a callback per
submission (the GB/T 26875.3 server sends its confirm there), then the sender is woken.

A submission may carry a dedup key (``mid``, ``digest``): the outbox stores it in the same
transaction as the records (its ``lan_seen`` table, which the LAN intake uses for MQTT packet
ids 1-65535; adapter keys start at 2**40 so they never meet) and skips a submission whose key
and digest are already there. So a frame repeated by a UITD that missed our confirm is not
stored twice, even across a gateway crash between commit and confirm.

Queue policy: at most ``queue_max`` submissions wait; when full, ``submit`` waits (the adapter's
connection stops reading: TCP back-pressure towards that device only, since each connection
also has its own window). Nothing is dropped. A failing commit (disk full) is retried with
backoff; nothing is confirmed meanwhile.

Supervision (``gateway.supervise``): the committer marks the ``adapters`` part on every turn
(at least every half second) and not while a commit cannot store, so a stuck sink stops the
watchdog pings like a stuck LAN committer. An unexpected exception while storing is logged,
counted (``anju_gateway_thread_errors_total{thread="adapters"}``) and the same group stored
again (its keys make a repeat harmless; nothing was confirmed); one in a confirm callback is
logged and counted and the next callback runs (that UITD resends the unconfirmed frame). Beyond
``supervision.max_errors`` a minute the gateway fails (exit 2); nothing is confirmed that was
not stored.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from anju.backoff import backoff
from gateway.clock import SystemClock
from gateway.outbox import LANE_NAMES, AppendResult, Incoming, Outbox
from gateway.supervise import Progress, Restarts

log = logging.getLogger("anju.gateway.adapters")

KEY_BASE: Final = 1 << 40
PART: Final = "adapters"


def dedup_key(source: bytes, serial: int, content: bytes) -> tuple[int, bytes]:
    """(mid, digest) for a frame: the key names the (UITD, serial number) slot, the digest the
    frame's content, so that a reused serial number with new content is stored."""
    slot = hashlib.blake2b(source + serial.to_bytes(2, "little"), digest_size=5).digest()
    digest = hashlib.blake2b(source + content, digest_size=16).digest()
    return KEY_BASE + int.from_bytes(slot, "big"), digest


@dataclass(slots=True)
class Submission:
    items: Sequence[tuple[int, str]]
    done: Callable[[], None]
    mid: int = 0
    digest: bytes | None = None


class AdapterSink:
    """Owns the adapters' committer thread; ``start``/``stop``/``submit``."""

    def __init__(
        self,
        outbox: Outbox,
        boot_id: str,
        clock: SystemClock,
        on_stored: Callable[[], None],
        *,
        commit_max: int = 500,
        queue_max: int = 4096,
        on_commit: Callable[[list[int], int], None] | None = None,
        progress: Progress | None = None,
        on_error: Callable[[], object] | None = None,
        max_errors: int = 5,
    ) -> None:
        self.outbox = outbox
        self.boot_id = boot_id
        self.clock = clock
        self.on_stored = on_stored
        self.on_commit = on_commit  # (records per lane, duplicates) after each commit
        self.commit_max = commit_max
        self.errors = 0  # store failures (disk full, I/O)
        self.progress = progress or Progress(60.0, ())
        self.progress.add(PART)
        self.restarts = Restarts(
            PART, self.progress, on_error or (lambda: None), max_errors=max_errors
        )
        self._queue: queue.Queue[Submission | None] = queue.Queue(queue_max)
        self._thread = threading.Thread(target=self._loop, name="gw-adapters-commit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Commit (and confirm) what was submitted, then stop."""
        if self._thread.is_alive():
            try:
                self._queue.put(None, timeout=5)
            except queue.Full:  # the committer is stuck or gone: nothing more to wait for
                return
            self._thread.join(30)

    def submit(self, sub: Submission) -> None:
        self._queue.put(sub)  # waits when full: back-pressure, nothing dropped

    def _loop(self) -> None:
        stopping = False
        while not stopping and not self.progress.failed:
            self.progress.beat(PART)
            try:
                first = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if first is None:
                break
            group = [first]
            while len(group) < self.commit_max:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                group.append(nxt)
            if not self._commit(group):
                return  # the gateway failed: nothing of the group confirmed

    def _commit(self, group: list[Submission]) -> bool:
        msgs = [
            Incoming(s.items, s.mid, s.digest, s.digest is not None)
            for s in group
            if s.items or s.digest is not None
        ]
        res = self._store(msgs)
        if res is None:
            return False
        for s in group:
            try:
                s.done()
            except Exception as exc:  # a bug in one confirm: that UITD resends, others go on
                if not self.restarts.allow(exc):
                    return False
        try:
            if self.on_commit is not None:
                per_lane = [0] * len(LANE_NAMES)
                for m in msgs:
                    for lane, _ in m.items:
                        per_lane[lane] += 1
                self.on_commit(per_lane, res.duplicates)
            self.on_stored()
        except Exception as exc:  # stored and confirmed already: only a figure is lost
            return self.restarts.allow(exc)
        return True

    def _store(self, msgs: list[Incoming]) -> AppendResult | None:
        """Store the group, again until it is stored; None when the gateway failed."""
        delays = backoff(0.2, 5.0)
        while True:
            try:
                return self.outbox.append(
                    self.boot_id, msgs, self.clock.wall_ms(), self.clock.stamp()
                )
            except sqlite3.OperationalError as exc:  # disk full, I/O error: do not confirm
                # No progress mark meanwhile: a sink that cannot store is not healthy.
                self.errors += 1
                delay = next(delays)
                log.error("adapters: cannot store in the outbox (%s); again in %.1f s", exc, delay)
            except Exception as exc:  # a bug: counted; nothing confirmed, the group again
                if not self.restarts.allow(exc):
                    return None
                delay = next(delays)
            if self.progress.failed:
                return None
            threading.Event().wait(delay)
