"""The telemetry lane: readings in large COPY transactions, and the dead letters.

- Queue (``ingest_telemetry`` in anju_backend_queue_*): ``put`` waits up to ``put_wait_s`` for
  room (``policy="wait"``), then sheds that batch's telemetry (``policy="shed"``, and
  ``anju_ingest_shed_total{lane="t"}``), unacknowledged: the gateway still holds it and sends
  it again, and the reader stays free for the events behind it.
- Gathers up to ``batch_max`` records or ``wait_s``.
- On plain PostgreSQL, marks late readings' hours dirty for the rollups.
- Tests and ``anju chaos`` only: ``ANJU_BACKEND_EXIT_AFTER_COMMIT_FILE`` names a file; when it
  exists after a commit that stored new records, the process deletes it and exits at once
  (``writer.EXIT_AFTER_COMMIT_CODE``), before the rules and the acknowledgement: the gateway
  sends the records again and the dedupe must drop them. Unset, nothing is looked at; setting
  it logs a warning at start.
- Evaluated exactly once: its records are marked evaluated (``ingest_evaluated``) in the
  transaction that stores the rule state of their evaluation (``backend.desk.StateWriter``,
  with ``mark_evaluated``); a duplicate committed but never evaluated (a backend killed
  between its commit and its rules) goes to the rules again; records that never go to the
  rules (refused, a time out of range) are marked in their own transaction. Records handed
  to the rules by this process are not handed again while their mark is on its way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from anju.uplink import Record
from backend.db.migrate import StorageMode
from backend.db.rows import Rows
from backend.db.seqset import SeqSet
from backend.ingest.writer import (
    EXIT_AFTER_COMMIT_ENV,
    Common,
    Cursor,
    Flush,
    Item,
    LaneWriter,
    key,
    mark_evaluated,
)

log = logging.getLogger("anju.ingest")

_HANDED_MAX = 100_000  # (gateway, boot) pairs


class TelemetryLane(LaneWriter):
    name = "t"
    queue_name = "ingest_telemetry"

    def __init__(
        self, common: Common, *, queue_max: int, batch_max: int, wait_s: float, put_wait_s: float
    ) -> None:
        super().__init__(common, queue_max=queue_max, batch_max=batch_max, wait_s=wait_s)
        self.put_wait_s = put_wait_s
        # Records handed to the rules by this process, by (gateway, boot): a duplicate in
        # it is not evaluated again while its mark is on its way to ``ingest_evaluated``.
        self._handed: dict[tuple[str, str], SeqSet] = {}
        path = os.environ.get(EXIT_AFTER_COMMIT_ENV)
        if path:
            self.exit_after_commit = Path(path)
            log.warning(
                "%s=%s: the backend exits after a commit, before its acknowledgement, when"
                " that file exists (tests only)",
                EXIT_AFTER_COMMIT_ENV,
                path,
            )

    async def put(self, items: list[Item]) -> None:
        if items:
            await self._on_own_loop(self._put(items))

    async def _put(self, items: list[Item]) -> None:
        try:
            self.queue.put_nowait(items)
        except asyncio.QueueFull:
            self.metrics.queue_overflow.labels(self.queue_name, "wait").inc()
            try:
                await asyncio.wait_for(self.queue.put(items), self.put_wait_s)
            except TimeoutError:
                self.metrics.queue_overflow.labels(self.queue_name, "shed").inc()
                self.metrics.shed.labels(self.name).inc()
                return
        self._depth()

    def _for_rules(self, flush: Flush, new: list[Record], *, uncertain: bool) -> list[Record]:
        """The new records and the duplicates never evaluated (after a connection lost
        mid-commit, what did commit is among them), but what this process handed before."""
        return self._hand(new + self.again)

    def _hand(self, records: list[Record]) -> list[Record]:
        out = []
        handed = self._handed
        if len(handed) > _HANDED_MAX:
            handed.clear()
        for r in records:
            k = (r.gateway_id, r.boot_id)
            seqs = handed.get(k)
            if seqs is None:
                seqs = handed[k] = SeqSet()
            if r.seq in seqs:
                continue
            seqs.add_range(r.seq, r.seq + 1)
            out.append(r)
        return out

    async def _unevaluated(
        self, cur: Cursor, records: list[Record], new: list[Record]
    ) -> list[Record]:
        fresh = {key(r) for r in new}
        dups = [r for r in records if key(r) not in fresh]
        keys = sorted({(r.gateway_id, r.boot_id) for r in dups})
        await cur.execute(
            "SELECT gateway_id, boot_id, evaluated FROM ingest_evaluated WHERE lane = 't' AND"
            " (gateway_id, boot_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        done = {
            (g, b): SeqSet.of((rg.lower, rg.upper) for rg in mr)
            for g, b, mr in await cur.fetchall()
        }
        empty = SeqSet()
        return [r for r in dups if r.seq not in done.get((r.gateway_id, r.boot_id), empty)]

    async def _done_with(self, cur: Cursor, rows: Rows, new: list[Record], only_mark: bool) -> None:
        # Seen and never for the rules (refused, a time out of range): done with.
        done = list(new) if only_mark else rows.rejected
        if done:
            await mark_evaluated(cur, self.name, [key(r) for r in done])

    async def _dirty_before(self, cur: Cursor) -> int | None:
        if self.mode is not StorageMode.PLAIN:
            return None
        await cur.execute(
            "SELECT extract(epoch FROM dirty_from) * 1000 FROM rollup_watermark"
            " WHERE name = 'hourly' FOR SHARE"
        )
        row = await cur.fetchone()
        return int(row[0]) if row else None
