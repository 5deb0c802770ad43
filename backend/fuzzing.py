"""Fuzz target ``ingest`` (``anju fuzz ingest``, ``tests/test_fuzz_ingest.py``): uplink batches
of hostile content through ``Ingest`` into a real PostgreSQL.

Properties, per batch (a fresh boot id, so that every record is new): no exception escapes the
writers (both lane tasks still run); every record whose sequence number can be read is
confirmed; every record decoded is committed (in ``ingest_seen``) and handed to the rules;
every record rejected with a sequence number is in ``dead_letters``.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, Final

import psycopg

from anju import fuzz
from anju.uplink import Record, decode_parts, up_topic
from backend.db.migrate import migrate
from backend.ingest import Ingest
from backend.metrics import BackendMetrics

NEEDS_DB: Final = True
_WAIT_S: Final = 20.0


class _Harness:
    def __init__(self, db_url: str) -> None:
        migrate(db_url)
        self.db_url = db_url
        self.loop = asyncio.new_event_loop()
        self.acked: dict[str, set[int]] = {}
        self.to_rules: list[Record] = []
        self.changed = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-ingest")
        self.thread.start()
        self.ingest = Ingest(db_url, BackendMetrics(), batch_wait_ms=2)
        self.task = self._call(self._start())

    def _call(self, coro: Any, timeout: float = _WAIT_S) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> asyncio.Task[None]:
        self.changed = asyncio.Event()
        return asyncio.get_running_loop().create_task(self.ingest.run(self._committed))

    async def _committed(self, new: list[Record], acks: dict[str, list[int]]) -> None:
        self.to_rules.extend(new)
        for gw, seqs in acks.items():
            self.acked.setdefault(gw, set()).update(seqs)
        self.changed.set()

    async def _submit(self, payload: bytes, want: set[int]) -> None:
        await self.ingest.submit(up_topic(fuzz.GW), payload)
        async with asyncio.timeout(_WAIT_S):
            while not want <= self.acked.get(fuzz.GW, set()):
                self.changed.clear()
                await self.changed.wait()

    def check(self, example: fuzz.Batch) -> None:
        payload, _n, compressed = example
        boot = f"f{uuid.uuid4().hex[:12]}"
        payload = payload.replace(b'"b":"boot-a"', f'"b":"{boot}"'.encode())
        payload = payload.replace(b'"b":"boot-b"', f'"b":"{boot}b"'.encode())
        payload = fuzz.wire(payload, compressed)
        try:
            d = decode_parts(up_topic(fuzz.GW), payload)
        except ValueError:
            d = None
        want = set() if d is None else {r.seq for r in d.records}
        if d is not None:
            want |= {x.seq for x in d.rejected if x.seq is not None}
        self.to_rules.clear()
        self.acked.clear()  # (sequence numbers repeat across examples; boots do not)
        self._call(self._submit(payload, want))
        assert not self.task.done(), f"an ingest writer stopped: {self.task!r}"
        if d is None:
            return
        handed = {(r.boot_id, r.seq) for r in self.to_rules}
        for r in d.records:
            assert (r.boot_id, r.seq) in handed, f"record {r.seq} not handed to the rules"
        with psycopg.connect(self.db_url) as conn:
            seen = {
                (b, s)
                for b, s in conn.execute(
                    "SELECT boot_id, seq FROM ingest_records WHERE boot_id LIKE %s",
                    (boot + "%",),
                ).fetchall()
            }
            dead = {
                (b, s)
                for b, s in conn.execute(
                    "SELECT boot_id, seq FROM dead_letters WHERE boot_id LIKE %s",
                    (boot + "%",),
                ).fetchall()
            }
        for r in d.records:
            assert (r.boot_id, r.seq) in seen, f"record {r.seq} not committed"
        for x in d.rejected:
            if x.seq is not None:
                assert (x.boot_id, x.seq) in dead, f"rejected {x.seq} not dead-lettered"

    def close(self) -> None:
        async def stop() -> None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

        try:
            self._call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def prepare(db_url: str | None) -> fuzz.Fuzzing:
    assert db_url is not None
    h = _Harness(db_url)
    return fuzz.Fuzzing(fuzz.batches(), h.check, h.close, needs_db=True)
