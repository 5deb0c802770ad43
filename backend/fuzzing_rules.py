"""Fuzz target ``rules`` (``anju fuzz rules``, ``tests/test_fuzz_rules.py``): records of hostile
content through the uplink decoder, the rule engine and the alert store, on a real PostgreSQL.

Properties, per sequence of records: no exception escapes the engine, the keeper or the
rule-state writer; every record decoded is evaluated (its metrics are in its device's state);
every alert change the engine returns is stored with its audit entry (none dropped); every
device state is stored.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Final

import psycopg
from hypothesis import strategies as st
from psycopg_pool import AsyncConnectionPool

from anju import fuzz
from anju.uplink import UplinkDecodeError, decode_record
from backend.alerting.engine import Engine
from backend.alerting.testing import T0, sample_city
from backend.db.migrate import migrate
from backend.desk import Keeper, StateWriter
from backend.metrics import BackendMetrics
from backend.store import AlertStore, Pending

NEEDS_DB: Final = True
_WAIT_S: Final = 30.0
_DEVICES: Final = tuple(sorted(sample_city().devices))
_METRICS: Final = ("smoke", "door", "floor", "pressure_kpa", "battery_pct", "temp_c", "x\x00")


class _NoDelivery:
    """The keeper's next step, left out: delivery has its own tests."""

    async def enqueue(self, pending: Pending, rx_ms: int | None = None) -> None:
        return None


@st.composite
def raw_records(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Records as a gateway's batch carries them (before decoding), in time order."""
    out = []
    t = T0
    for seq in range(1, draw(st.integers(1, 12)) + 1):
        t += draw(st.integers(0, 120_000))
        kind = draw(st.sampled_from(("t", "t", "e", "s")))
        rec: dict[str, Any] = {
            "seq": seq,
            "b": "boot",
            "d": draw(st.sampled_from(_DEVICES)),
            "k": kind,
            "ts": t + draw(st.sampled_from((0, 0, 8 * 3_600_000, -400_000))),
            "rx": t,
        }
        payload = draw(
            st.dictionaries(
                st.one_of(st.sampled_from(_METRICS), fuzz.texts),
                st.one_of(fuzz.values, st.booleans(), st.floats(-50, 2000)),
                max_size=4,
            )
        )
        if kind == "t":
            rec["m"] = payload
        elif kind == "e":
            rec["e"] = draw(st.sampled_from(("alarm", "fault", "trapped", "fire", "x\x00")))
            rec["x"] = payload
        else:
            rec["s"] = {"online": draw(st.booleans()), **payload}
        out.append(rec)
    return out


class _Harness:
    def __init__(self, db_url: str) -> None:
        migrate(db_url)
        self.db_url = db_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-rules")
        self.thread.start()
        self.pool = AsyncConnectionPool(db_url, min_size=1, max_size=2, open=False)
        self._call(self.pool.open(wait=True, timeout=30))
        store = AlertStore(self.pool)
        self.keeper = Keeper(store, _NoDelivery(), BackendMetrics())  # type: ignore[arg-type]
        self.states = StateWriter(store, BackendMetrics())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(_WAIT_S)

    def _audited(self) -> int:
        with psycopg.connect(self.db_url) as conn:
            row = conn.execute("SELECT count(*) FROM alert_audit").fetchone()
            return int(row[0]) if row else 0

    def check(self, raws: list[dict[str, Any]]) -> None:
        engine = Engine(sample_city(), now_ms=T0)
        with psycopg.connect(self.db_url) as conn:
            # Each example starts with a fresh engine: the alerts of the last are closed.
            conn.execute("UPDATE alerts SET state = 'resolved'")
        before = self._audited()
        changes = []
        for raw in raws:
            try:
                rec = decode_record("gw-c0", raw)
            except UplinkDecodeError:
                continue  # rejected at the boundary, with a reason
            got = engine.feed(rec, rec.rx + 5)
            changes += got
            st_ = engine.states.get(rec.device_id)
            if rec.kind == "t" and rec.metrics and st_ is not None:
                for k in rec.metrics:
                    assert k in st_.values, f"metric {k!r} of seq {rec.seq} not evaluated"
        changes += engine.tick(raws[-1]["rx"] + 600_000)
        for ch in changes:
            self._call(self.keeper.keep(ch, None))
        assert self._audited() - before == len(changes), "an alert change was dropped"
        docs = {
            k: json.dumps(v, separators=(",", ":"), ensure_ascii=False)
            for k, v in engine.snapshot(set(engine.states)).items()
        }
        self._call(self.states.write(docs))
        with psycopg.connect(self.db_url) as conn:
            keys = {k for (k,) in conn.execute("SELECT key FROM alert_rule_state").fetchall()}
        assert set(docs) <= keys, "a rule state was not stored"

    def close(self) -> None:
        try:
            self._call(self.pool.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


def prepare(db_url: str | None) -> fuzz.Fuzzing:
    assert db_url is not None
    h = _Harness(db_url)
    return fuzz.Fuzzing(raw_records(), h.check, h.close, needs_db=True)
